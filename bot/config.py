"""Settings from environment variables (prefix GRIDBOT_) and an optional `.env` file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LOCALES = ("zh_CN", "en")


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

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        if value not in LOCALES:
            raise ValueError(f"must be one of {', '.join(LOCALES)}")
        return value
