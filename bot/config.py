"""Settings from environment variables (prefix GRIDBOT_) and an optional `.env` file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LOCALES = ("zh_CN", "en")
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDBOT_", env_file=".env", extra="ignore")

    bot_token: SecretStr | None = None
    api_url: str = "https://api.telegram.org"
    database_url: str = "sqlite+aiosqlite:///gridbot.db"
    locale: str = "zh_CN"
    sweep_seconds: float = Field(default=30, gt=0)
    # Sent outbox messages (names, texts) are deleted this many days after they were written.
    outbox_retention_days: float = Field(default=90, gt=0)
    templates_dir: Path = DEFAULT_TEMPLATES
    # `gridbot webhook`: the public HTTPS address registered with Telegram, the secret Telegram
    # sends back on every request, and where this process listens (behind the reverse proxy).
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    listen: str = "127.0.0.1:8080"
    log_format: Literal["text", "json"] = "text"
    # A TrueType/OpenType font with Chinese glyphs for /stats' chart; unset: the font of the
    # mplfonts package, else one matplotlib finds on the system (bot/ledger/charts.py).
    chart_font: Path | None = None
    # A font file with Chinese glyphs for `gridbot poster`; unset: a CJK font of the system
    # (Noto Sans CJK, WenQuanYi), or the mplfonts package's (bot/ops/posters.py).
    poster_font: Path | None = None

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        if value not in LOCALES:
            raise ValueError(f"must be one of {', '.join(LOCALES)}")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL (Telegram posts only to HTTPS)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_chars(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's rule for secret_token: 1-256 characters A-Z, a-z, 0-9, _ and -.
        if value is not None and not WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        listen_address(value)
        return value


def listen_address(value: str) -> tuple[str, int]:
    """`host:port` (`[::1]:8080` for IPv6) as a host and a port number."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
    return host, int(port)
