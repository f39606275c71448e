"""Jinja2 rendering of every text a person reads, from `templates/<locale>/`.

Messages are whole templates (`case_card.j2`); short strings such as button labels and status
names are blocks of `labels.j2`, looked up by name. Autoescape is on because every message is
sent with Telegram's HTML parse mode, so user text can never become markup.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024


class Texts:
    def __init__(self, templates_dir: Path, locale: str, timezone: str = "Asia/Shanghai",
                 *, _zones: dict[str, Texts] | None = None) -> None:
        self.templates_dir = templates_dir
        self.locale = locale
        self.tz = ZoneInfo(timezone)
        # The `local` filter and the `label` global are bound to this object, so each time
        # zone needs an environment of its own: a copy sharing the environment would still
        # render times in the zone of the first.
        self._env = Environment(
            loader=FileSystemLoader(str(templates_dir / locale)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self._env.filters["local"] = self.local_time
        self._env.globals["label"] = self.label
        self._labels: dict[str, str] | None = None
        # One Texts per time zone, made once and shared, so templates compile once per zone.
        self._zones = _zones if _zones is not None else {}
        self._zones[timezone] = self

    def with_timezone(self, timezone: str) -> Texts:
        """These texts with times shown in `timezone` (the registry's)."""
        found = self._zones.get(timezone)
        if found is None:
            found = Texts(self.templates_dir, self.locale, timezone, _zones=self._zones)
        return found

    def local_time(self, when: datetime | None, fmt: str = "%m-%d %H:%M") -> str:
        if when is None:
            return ""
        return when.astimezone(self.tz).strftime(fmt)

    def render(self, template: str, /, **context: Any) -> str:
        text = self._env.get_template(f"{template}.j2").render(**context)
        return text.strip()

    def _label_index(self) -> dict[str, str]:
        """Which labels file holds each block: labels.j2, then each part's labels_*.j2 in
        name order. Built once per Texts; a block in two files is an error."""
        if self._labels is None:
            index: dict[str, str] = {}
            names = sorted(n for n in self._env.list_templates(extensions=["j2"])
                           if n.startswith("labels_"))
            for file in ["labels.j2", *names]:
                for block in self._env.get_template(file).blocks:
                    if block in index:
                        raise ValueError(f"label {block!r} is in {index[block]} and {file} "
                                         f"({self.locale})")
                    index[block] = file
            self._labels = index
        return self._labels

    def label(self, name: str, /, **context: Any) -> Markup:
        """A block of the labels files as HTML: a status name, a refusal, a short phrase.

        Markup, so a template that shows it does not escape it a second time.
        """
        file = self._label_index().get(name)
        if file is None:
            raise KeyError(f"labels.j2 ({self.locale}) has no block {name!r}")
        template = self._env.get_template(file)
        return Markup("".join(template.blocks[name](template.new_context(context))).strip())

    def plain(self, name: str, /, **context: Any) -> str:
        """A label as plain text, for what Telegram does not parse: buttons, alerts, menus."""
        return self.label(name, **context).unescape()

    def has_label(self, name: str) -> bool:
        return name in self._label_index()

    def template_names(self) -> list[str]:
        return sorted(n.removesuffix(".j2") for n in self._env.list_templates(extensions=["j2"]))
