"""Log set-up: one line per event, as text (the default) or as JSON objects.

JSON lines (`GRIDBOT_LOG_FORMAT=json`) are for a log collector (journald → Loki, Vector,
Fluent Bit): each line is one object with `time` (UTC, ISO 8601), `level`, `logger` and
`message`, and `exception` when there is one, so a traceback never spans lines. What is
logged is the same in both formats: no message text or personal data at INFO and above.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Their INFO lines are one per update or sweep: noise in a log kept for years.
NOISY = ("aiogram.event", "apscheduler", "aiohttp.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def setup(level: int, fmt: str = "text") -> None:
    """Configure the root logger of the command line (a no-op when it already has handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
