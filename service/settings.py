"""Configuration: one TOML file, secrets from environment variables or files.

``load_settings`` either returns a fully validated :class:`Settings` with every
secret resolved, or raises :class:`ConfigError` listing *every* problem with its
location (``apps.demo.secret.env: ...``), so ``postback-hub check-config`` can
print them all at once instead of one per attempt.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from service.fields import CANONICAL_FIELDS

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The {app} path segment: URL-safe without escaping.
AppKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ConfigError(Exception):
    """Every problem found in a configuration, each as ``location: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret lives: ``{env = "NAME"}`` or ``{file = "/run/secrets/x"}``, never inline."""

    env: Annotated[str, StringConstraints(min_length=1)] | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    def read(self) -> str:
        """The secret's value; raises ``ValueError`` saying what is missing."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set or empty")
            return value
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read {self.file}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"{self.file} is empty")
        return value


def _networks(value: Any) -> Any:
    if isinstance(value, list):
        return [ipaddress.ip_network(item, strict=False) for item in value]
    return value


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "callbacks"
    # Created when missing at start-up (a production cluster usually pre-creates it).
    create_topic: bool = True
    topic_partitions: Annotated[int, Field(ge=1, le=10_000)] = 12
    topic_replication_factor: Annotated[int, Field(ge=1, le=10)] = 1
    # The bound on how long a callback waits for the broker's ack before a 503.
    produce_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 0
    client_id: str = "postback-hub"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: SecretRef | None = None
    sasl_password: SecretRef | None = None


class ReceiverSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # 0 means one process per core.
    workers: Annotated[int, Field(ge=0, le=256)] = 0
    max_request_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 1024 * 1024
    retry_after_s: Annotated[int, Field(ge=1, le=86_400)] = 30
    # Peers allowed to set X-Forwarded-For (your load balancers). Empty: trust none.
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    # After SIGTERM, /readyz turns false this long before the listener closes,
    # so a load balancer stops routing here first.
    shutdown_drain_s: Annotated[float, Field(ge=0, le=300)] = 0.0
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    _norm_proxies = field_validator("trusted_proxies", mode="before")(_networks)


class AppSettings(_Strict):
    """One Adjust app, reachable at ``/v1/adjust/{key}``."""

    secret: SecretRef
    secret_param: str = "secret"  # noqa: S105 - the parameter's name, not a secret
    # Source addresses allowed to call; empty allows any (the secret still applies).
    allow_cidrs: list[IPNetwork] = Field(default_factory=list)
    # Incoming key -> canonical field, for templates that rename placeholders.
    aliases: dict[str, str] = Field(default_factory=dict)
    # Used when a callback carries no {environment}.
    default_environment: Literal["production", "sandbox"] = "production"

    _norm_cidrs = field_validator("allow_cidrs", mode="before")(_networks)

    @field_validator("aliases")
    @classmethod
    def _aliases_target_canonical(cls, aliases: dict[str, str]) -> dict[str, str]:
        unknown = sorted(target for target in aliases.values() if target not in CANONICAL_FIELDS)
        if unknown:
            raise ValueError(f"not canonical field names: {', '.join(unknown)}")
        return aliases


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    apps: dict[AppKey, AppSettings] = Field(default_factory=dict)

    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    def secret(self, location: str) -> str:
        """A resolved secret by its location, e.g. ``apps.demo.secret``."""
        return self._secrets[location]


def _secret_refs(document: dict[str, Any], with_apps: bool = True) -> dict[str, Any]:
    """Where secrets are referenced, read from the raw document so that secrets can be
    checked even when other parts of the file are invalid (all problems in one report)."""
    refs: dict[str, Any] = {}
    apps = document.get("apps") if with_apps else None
    if isinstance(apps, dict):
        for key, app in apps.items():
            if isinstance(app, dict) and "secret" in app:
                refs[f"apps.{key}.secret"] = app["secret"]
    kafka = document.get("kafka")
    if isinstance(kafka, dict):
        for name in ("sasl_username", "sasl_password"):
            if kafka.get(name) is not None:
                refs[f"kafka.{name}"] = kafka[name]
    return refs


def _resolve_secrets(document: dict[str, Any], with_apps: bool) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    problems: list[str] = []
    for location, raw in _secret_refs(document, with_apps).items():
        try:
            ref = SecretRef.model_validate(raw)
        except ValidationError:
            continue  # reported by the schema validation
        try:
            values[location] = ref.read()
        except ValueError as exc:
            problems.append(f"{location}: {exc}")
    return values, problems


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_settings(document: dict[str, Any], *, app_secrets: bool = True) -> Settings:
    """Validate a parsed document and resolve its secrets; raise ConfigError with all problems.

    Tools that only read Kafka (``tail``, ``dlq``) pass ``app_secrets=False`` so an
    operator needs no callback secrets to run them.
    """
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(document)
    except ValidationError as exc:
        problems.extend(f"{_location(error['loc'])}: {error['msg']}" for error in exc.errors())
    secrets, secret_problems = _resolve_secrets(document, app_secrets)
    problems.extend(secret_problems)
    if problems or settings is None:
        raise ConfigError(problems)
    settings._secrets.update(secrets)
    return settings


def load_settings(path: Path, *, app_secrets: bool = True) -> Settings:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    return parse_settings(document, app_secrets=app_secrets)
