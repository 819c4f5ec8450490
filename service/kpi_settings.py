"""Configuration of the KPI store and the KPI API (``[kpi]`` in the configuration).

The store is one database shared by the rollup sink (which writes) and the API
(which reads), chosen by URL: ``sqlite:///relative/path.sqlite3``,
``sqlite:////absolute/path.sqlite3`` (SQLAlchemy's convention) or
``postgresql://user@host:port/dbname``. API tokens are our own, each a secret
scoped to apps; they are never Adjust's user tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from postback_hub.service.secrets import BASE_DIR, Secret

# Beside the configuration file, like {file} secrets: for the sample configuration that
# is deploy/.data/ (what `make run` uses); production sets an absolute path or PostgreSQL.
DEFAULT_DATABASE_URL = "sqlite:///.data/kpi.sqlite3"
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KpiToken(_Strict):
    """One API token: ``Authorization: Token token=...`` or ``?user_token=...``."""

    secret: Secret
    # App keys (of [apps]) this token may read; "*" for every app.
    apps: Annotated[list[str], Field(min_length=1)]


class KpiSettings(_Strict):
    # A relative SQLite path is relative to the configuration file.
    database_url: str = Field(default=DEFAULT_DATABASE_URL, validate_default=True)
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8090
    # The reporting currency (result_set.currency) of every app, unless `currencies` says
    # otherwise. Revenue in another currency is never converted (see the README).
    currency: Currency = "USD"
    currencies: dict[str, Currency] = Field(default_factory=dict)
    # App key -> its display name (result_set.name); the key itself by default.
    app_names: dict[str, str] = Field(default_factory=dict)
    tokens: dict[str, KpiToken] = Field(default_factory=dict)

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: str, info: ValidationInfo) -> str:
        if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            base = (info.context or {}).get(BASE_DIR)
            if not path.is_absolute() and base is not None:
                return f"sqlite:///{Path(base) / path}"
            return url
        if url.startswith(("postgresql://", "postgres://")):
            return url
        raise ValueError("expected sqlite:///path or postgresql://user@host/dbname")

    def currency_of(self, app: str) -> str:
        return self.currencies.get(app, self.currency)
