"""Configuration: one TOML file, secrets from environment variables or files.

``load_settings`` either returns a fully validated :class:`Settings` with every
secret resolved, or raises :class:`ConfigError` listing *every* problem with its
location (``apps.demo.secret.env: ...``), so ``postback-hub check-config`` can
print them all at once instead of one per attempt.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from postback_hub.service.adjust_settings import AdjustSettings, AppBinding
from postback_hub.service.fields import CANONICAL_FIELDS
from postback_hub.service.kpi_settings import KpiSettings
from postback_hub.service.privacy_settings import PrivacySettings, privacy_conflicts
from postback_hub.service.reconcile_settings import ReconcileSettings
from postback_hub.service.secrets import BASE_DIR, Secret, unresolved

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
    # A record larger than this is refused with 413 (it could never be stored);
    # keep it under the topic's max.message.bytes (1 MB by default).
    max_record_bytes: Annotated[int, Field(ge=10_000, le=64 * 1024 * 1024)] = 1_000_000
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 0
    client_id: str = "postback-hub"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: Secret | None = None
    sasl_password: Secret | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> Self:
        if self.sasl_mechanism is not None and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError("sasl_mechanism needs sasl_username and sasl_password")
        return self


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
    # Connection limits (see README "In front of the receiver"). An idle keep-alive
    # connection closes after keepalive_timeout_s; keep it above a load balancer's
    # idle timeout so the balancer closes first.
    keepalive_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    # From a request head's first byte to its last: then 408 and close (slowloris).
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    # Reading a POST body: then 408.
    body_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    # Header lines of one request, in bytes (the request line is bounded by
    # max_request_bytes): more is a 431 and close.
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 32 * 1024
    # Open connections per worker (also kept under the open-file limit); past it a
    # new connection is answered 503 with Retry-After and closed.
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    # Instances share the port only within one deployment (service/port_claim.py):
    # by default the configuration file's path; name it to share across files.
    deployment: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None

    _norm_proxies = field_validator("trusted_proxies", mode="before")(_networks)


class AppSettings(_Strict):
    """One Adjust app, reachable at ``/v1/adjust/{key}``."""

    secret: Secret
    # Also accepted while Adjust's templates move to the new secret.
    previous_secret: Secret | None = None
    secret_param: str = "secret"  # noqa: S105 - the parameter's name, not a secret
    # Source addresses allowed to call; empty allows any (the secret still applies).
    allow_cidrs: list[IPNetwork] = Field(default_factory=list)
    # Incoming key -> canonical field, for templates that rename placeholders.
    aliases: dict[str, str] = Field(default_factory=dict)
    # Used when a callback carries no {environment}.
    default_environment: Literal["production", "sandbox"] = "production"
    # This app's Adjust app token and report settings (see service/adjust_settings.py).
    adjust: AppBinding | None = None
    # Personal fields dropped or keyed-hashed before storage (service/privacy_settings.py).
    privacy: PrivacySettings | None = None

    _norm_cidrs = field_validator("allow_cidrs", mode="before")(_networks)

    @field_validator("aliases")
    @classmethod
    def _aliases_target_canonical(cls, aliases: dict[str, str]) -> dict[str, str]:
        unknown = sorted(target for target in aliases.values() if target not in CANONICAL_FIELDS)
        if unknown:
            raise ValueError(f"not canonical field names: {', '.join(unknown)}")
        return aliases


class DestinationBase(_Strict):
    """What every destination shares, whatever its type. Each type's own model (in its
    package under ``consumers``) extends this and is registered by its ``type``."""

    type: str
    enabled: bool = True
    # Log what would be sent (device ids masked) instead of sending it.
    dry_run: bool = False
    health_port: Annotated[int, Field(ge=0, le=65535)] | None = None

    def referenced_apps(self) -> Iterable[str]:
        """Keys of ``[apps]`` this destination's configuration names (checked at load)."""
        apps = getattr(self, "apps", None)
        return list(apps) if isinstance(apps, dict) else []

    def raw_fields(self, app: str) -> Mapping[str, str]:
        """Record fields this destination sends on as received for ``app``, each with what
        needs it; the loader refuses an app whose privacy options drop or hash one."""
        return {}


DESTINATION_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,48}$")
DestinationKey = Annotated[str, StringConstraints(pattern=DESTINATION_KEY.pattern)]


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    apps: dict[AppKey, AppSettings] = Field(default_factory=dict)
    # Each value is an instance of its type's registered model (see parse_settings).
    destinations: dict[DestinationKey, DestinationBase] = Field(default_factory=dict)
    kpi: KpiSettings = Field(default_factory=KpiSettings)
    adjust: AdjustSettings = Field(default_factory=AdjustSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)

    @model_validator(mode="wrap")
    @classmethod
    def _bindings_name_accounts(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # A wrap validator, so an unknown account is reported with the other problems
        # (an "after" validator would not run while any field is invalid).
        unknown = _unknown_accounts(data)
        try:
            settings = handler(data)
        except ValidationError as exc:
            if not unknown:
                raise
            try:
                combined = ValidationError.from_exception_data(exc.title, [*exc.errors(), *unknown])  # type: ignore[list-item]
            except (KeyError, TypeError, ValueError):
                raise exc from None
            raise combined from None
        if unknown:
            raise ValidationError.from_exception_data(cls.__name__, unknown)
        return settings

    @model_validator(mode="after")
    def _shutdown_outlasts_produce(self) -> Self:
        # Otherwise requests waiting for the broker are cut off at shutdown.
        if self.receiver.shutdown_timeout_s < self.kafka.produce_timeout_s:
            raise ValueError("receiver.shutdown_timeout_s must be >= kafka.produce_timeout_s")
        return self

    def app_secrets(self, app: str) -> list[str]:
        """The secrets a callback for ``app`` may carry: current, then previous."""
        settings = self.apps[app]
        secrets = [settings.secret.reveal()]
        if settings.previous_secret is not None:
            secrets.append(settings.previous_secret.reveal())
        return secrets

    def destination(self, name: str, kind: type[_D]) -> _D:
        """``[destinations.NAME]`` as its type's model; raises KeyError or TypeError."""
        config = self.destinations[name]
        if not isinstance(config, kind):
            raise TypeError(f"destination {name} is {config.type}, not {kind.__name__}")
        return config


_D = TypeVar("_D", bound=DestinationBase)


def _unknown_accounts(data: Any) -> list[InitErrorDetails]:
    """``apps.KEY.adjust.account`` values naming no ``[adjust.accounts.NAME]`` (raw input)."""
    if not isinstance(data, dict) or not isinstance(data.get("apps"), dict):
        return []
    adjust = data.get("adjust")
    accounts = adjust.get("accounts") if isinstance(adjust, dict) else None
    names = set(accounts) if isinstance(accounts, dict) else set()
    known = ", ".join(sorted(names)) or "none configured"
    errors: list[InitErrorDetails] = []
    for key, app in data["apps"].items():
        binding = app.get("adjust") if isinstance(app, dict) else None
        account = binding.get("account") if isinstance(binding, dict) else None
        if isinstance(account, str) and account not in names:
            message = "no [adjust.accounts.{account}] (known: {known})"
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "unknown_adjust_account", message, {"account": account, "known": known}
                    ),
                    loc=("apps", key, "adjust", "account"),
                    input=account,
                )
            )
    return errors


def _location(loc: tuple[int | str, ...], prefix: str = "") -> str:
    parts = [prefix] if prefix else []
    parts += [str(part) for part in loc]
    return ".".join(parts) or "(top level)"


def _problem(error: ErrorDetails, prefix: str, model: type[BaseModel]) -> str:
    where = _location(error["loc"], prefix)
    if error["type"] == "extra_forbidden" and error["loc"]:
        known = _fields_at(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        if close:
            return f"{where}: unknown key; did you mean {close[0]!r}?"
        return f"{where}: unknown key (known: {', '.join(sorted(known))})"
    return f"{where}: {error['msg']}"


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model that ``loc`` points into (for suggestions)."""
    current, key_next = model, False
    for part in loc:
        if key_next:  # a key of a table such as [apps.NAME]: the model stays
            key_next = False
            continue
        field = current.model_fields.get(str(part))
        nested = _model_in(field.annotation) if field is not None else None
        if field is None or nested is None:
            return []
        current, key_next = nested, _is_table(field.annotation)
    return [] if key_next else list(current.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def _is_table(annotation: Any) -> bool:
    if get_origin(annotation) in (dict, list):
        return True
    return any(_is_table(arg) for arg in get_args(annotation) if get_origin(arg) is not None)


def parse_settings(
    document: dict[str, Any],
    destination_types: Mapping[str, type[DestinationBase]],
    *,
    app_secrets: bool = True,
    base_dir: Path | None = None,
) -> Settings:
    """Validate a parsed document; raise ConfigError with every problem at once.

    Each ``[destinations.NAME]`` table is validated by the model registered for its
    ``type`` in ``destination_types`` (the kernel knows no destination type itself).
    Relative ``{file = ...}`` secrets are read from ``base_dir``. Tools that only read
    Kafka (``tail``, ``dlq``) pass ``app_secrets=False``: only Kafka's own secrets must
    then be readable. A disabled destination's secrets need not be readable either.
    """
    context = {BASE_DIR: base_dir}
    problems: list[str] = []
    raw_destinations = document.get("destinations", {})
    kernel_document = {key: value for key, value in document.items() if key != "destinations"}
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(kernel_document, context=context)
    except ValidationError as exc:
        problems.extend(_problem(error, "", Settings) for error in exc.errors())
    destinations: dict[str, DestinationBase] = {}
    if not isinstance(raw_destinations, dict):
        problems.append("destinations: must be a table of [destinations.NAME] tables")
        raw_destinations = {}
    known = ", ".join(sorted(destination_types))
    for name, raw in raw_destinations.items():
        where = f"destinations.{name}"
        if not DESTINATION_KEY.match(name):
            problems.append(f"{where}: a destination name is lower-case letters, digits, - and _")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a table")
            continue
        kind = raw.get("type")
        model = destination_types.get(kind) if isinstance(kind, str) else None
        if model is None:
            problems.append(f"{where}.type: unknown destination type {kind!r} (known: {known})")
            continue
        try:
            destinations[name] = model.model_validate(raw, context=context)
        except ValidationError as exc:
            problems.extend(_problem(error, where, model) for error in exc.errors())
    if settings is not None:
        for name, destination in destinations.items():
            unknown = sorted(set(destination.referenced_apps()) - set(settings.apps))
            if unknown:
                problems.append(f"destinations.{name}.apps: no such app: {', '.join(unknown)}")
            for app_key in destination.referenced_apps() if destination.enabled else ():
                app = settings.apps.get(app_key)
                if app is not None and app.privacy is not None:
                    where = f"destinations.{name}.apps.{app_key}"
                    needed = destination.raw_fields(app_key)
                    problems.extend(privacy_conflicts(where, app_key, app.privacy, needed))
        settings = settings.model_copy(update={"destinations": destinations})
    problems.extend(_secret_problems(kernel_document, destinations, context, app_secrets))
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def _secret_problems(
    document: dict[str, Any],
    destinations: dict[str, DestinationBase],
    context: dict[str, Any],
    app_secrets: bool,
) -> list[str]:
    """Unreadable secrets of every part in use, even when other parts are invalid."""
    scopes: list[tuple[str, BaseModel]] = []

    def section(prefix: str, model: type[BaseModel], raw: Any) -> None:
        with contextlib.suppress(ValidationError):  # invalid: reported by the schema
            scopes.append((prefix, model.model_validate(raw or {}, context=context)))

    section("kafka", KafkaSettings, document.get("kafka"))
    if app_secrets:
        section("kpi", KpiSettings, document.get("kpi"))
        apps = document.get("apps")
        for key, raw in (apps if isinstance(apps, dict) else {}).items():
            section(f"apps.{key}", AppSettings, raw)
        scopes += [
            (f"destinations.{name}", destination)
            for name, destination in destinations.items()
            if destination.enabled  # a disabled destination's secrets need not exist yet
        ]
    return [
        f"{location}: {secret.problem}"
        for prefix, model in scopes
        for location, secret in unresolved(model, prefix)
    ]


def read_document(path: Path) -> dict[str, Any]:
    """The TOML document of a configuration file, or ConfigError saying why not."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None


def load_settings(
    path: Path,
    destination_types: Mapping[str, type[DestinationBase]],
    *,
    app_secrets: bool = True,
) -> Settings:
    """A configuration file, validated (see :func:`parse_settings`)."""
    return parse_settings(
        read_document(path),
        destination_types,
        app_secrets=app_secrets,
        base_dir=path.resolve().parent,
    )
