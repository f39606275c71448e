"""The one refusal of the domain: a code naming the text that explains it to the person."""

from __future__ import annotations

from markupsafe import Markup

from bot.texts import Texts


class DomainError(Exception):
    """A refusal; `code` names the labels.j2 block that explains it to the person."""

    def __init__(self, code: str, /, **context: object) -> None:
        super().__init__(code)
        self.code = code
        self.context = context

    def explain(self, texts: Texts) -> Markup:
        """What the person is told, as HTML (`.unescape()` for a button's alert)."""
        return texts.label(f"err_{self.code}", **self.context)
