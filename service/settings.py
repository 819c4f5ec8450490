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
from urllib.parse import urlsplit

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

from postback_hub.service.fields import CANONICAL_FIELDS

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
    # A record larger than this is refused with 413 (it could never be stored);
    # keep it under the topic's max.message.bytes (1 MB by default).
    max_record_bytes: Annotated[int, Field(ge=10_000, le=64 * 1024 * 1024)] = 1_000_000
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
    # Also accepted while Adjust's templates move to the new secret.
    previous_secret: SecretRef | None = None
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


class RetrySettings(_Strict):
    """Retry in process briefly, then park on a retry topic; dead-letter past max_age_s."""

    attempts: Annotated[int, Field(ge=1, le=100)] = 5
    in_process_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    backoff_initial_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # One retry topic per delay; a message climbs the tiers and stays on the last.
    park_delays_s: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [30.0, 300.0, 1800.0, 7200.0]
    )
    max_age_s: Annotated[float, Field(gt=0)] = 86_400.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if self.park_delays_s != sorted(self.park_delays_s):
            raise ValueError("park_delays_s must be in increasing order")
        return self


class BreakerSettings(_Strict):
    """Opens after consecutive failures; one probe request after open_s decides."""

    failure_threshold: Annotated[int, Field(ge=1, le=10_000)] = 10
    open_s: Annotated[float, Field(gt=0, le=3600)] = 15.0


class DestinationBase(_Strict):
    """What every destination's consumer has: its group, limits, retries, de-duplication."""

    enabled: bool = True
    # Log the exact request (device ids masked) instead of sending it.
    dry_run: bool = False
    # Deliveries in flight at once; one device's activities are still sent one at a time.
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 32
    rate_limit_per_s: Annotated[float, Field(gt=0)] | None = None
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    dedup_window_s: Annotated[float, Field(ge=0)] = 86_400.0
    # Where a new consumer group starts on the callbacks topic.
    start_from: Literal["earliest", "latest"] = "earliest"
    # A timeout after the request was sent: it may have been processed.
    # "retry" (at-least-once) or "dead_letter" (never twice; replay after checking).
    on_ambiguous: Literal["retry", "dead_letter"] = "retry"
    health_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    @model_validator(mode="after")
    def _never_twice_needs_marks(self) -> Self:
        if self.on_ambiguous == "dead_letter" and self.dedup_window_s == 0:
            raise ValueError("on_ambiguous = dead_letter needs de-duplication (dedup_window_s > 0)")
        return self


def _same_endpoint(first: str, second: str) -> bool:
    """Whether two template URLs name the same endpoint, up to case, default port and a
    trailing slash (a sandbox URL like that would reach production)."""

    def key(url: str) -> tuple[str, str, int | None, str, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port or {"http": 80, "https": 443}.get(scheme)
        except ValueError:  # a placeholder where the port goes
            port = None
        return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"), parts.query

    return key(first) == key(second)


class RequestTemplate(_Strict):
    """The partner's HTTP request, with ``{placeholders}`` (see consumers.template)."""

    method: Literal["GET", "POST"] = "GET"
    url: str
    # Sandbox callbacks go here; without it they are never sent.
    sandbox_url: str | None = None
    encoding: Literal["query", "form", "json"] = "query"
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_placeholders(self) -> Self:
        from postback_hub.consumers.template import check

        for text in [
            self.url,
            self.sandbox_url or "",
            *self.params.values(),
            *self.headers.values(),
        ]:
            check(text)
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.sandbox_url is not None and _same_endpoint(self.sandbox_url, self.url):
            # Sandbox traffic must never reach the partner's production endpoint.
            raise ValueError("sandbox_url must not be the production url")
        if self.method == "GET" and self.encoding != "query":
            raise ValueError("a GET request carries its parameters in the query (encoding = query)")
        return self


class ModulePartnerApp(_Strict):
    """One app's settings for a BackInApp-style module partner."""

    # The partner's credential (BackInApp: the partner id): {credential} in the template.
    credential: SecretRef
    forward_sessions: bool = False
    # Adjust event token -> partner event name. Only linked events are sent.
    event_links: dict[str, str] = Field(default_factory=dict)
    forward_revenue: bool = False
    forward_partner_parameters: bool = False
    # Send only activities this partner is credited with (network_names match).
    attributions_only: bool = False
    network_names: list[str] = Field(default_factory=list)
    forward_rejected_installs: bool = True
    forward_rejected_reattributions: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.forward_revenue and not self.event_links:
            raise ValueError("forward_revenue needs at least one linked event (event_links)")
        if self.attributions_only and not self.network_names:
            raise ValueError("attributions_only needs network_names")
        return self


class ModuleDestination(DestinationBase):
    type: Literal["module"]
    template: RequestTemplate
    apps: dict[str, ModulePartnerApp] = Field(default_factory=dict)


ConversionType = Literal[
    "PURCHASE",
    "SIGN_UP",
    "INSTALL",
    "RE_ENGAGE",
    "UPDATE",
    "TUTORIAL_COMPLETE",
    "RESERVATION",
    "ADD_TO_CART",
    "ADD_TO_WISHLIST",
    "LOGIN",
    "CHECKOUT_INITIATED",
    "SEARCH",
    "LEVEL_ACHIEVED",
    "ACHIEVEMENT_UNLOCKED",
    "CONTENT_VIEW",
    "SHARE",
    "INVITE",
    "ADDED_PAYMENT_INFO",
    "SPENT_CREDITS",
    "RATED",
]
CLICK_WINDOWS = (1, 7, 14, 30)
VIEW_THROUGH_WINDOWS = (0, 1, 7, 14, 30)


def window_bucket(hours: int, buckets: tuple[int, ...]) -> int:
    """Hours rounded up to X's day buckets: 2..7 days -> 7, 8..14 -> 14, 15..30 -> 30."""
    days = -(-hours // 24)  # ceiling
    for bucket in buckets:
        if days <= bucket:
            return bucket
    raise ValueError(f"{hours} hours is longer than X's longest window ({buckets[-1]} days)")


class XWindows(_Strict):
    """Attribution windows of one conversion type: days (X's values) or hours (rounded up)."""

    click_days: int | None = None
    click_hours: Annotated[int, Field(ge=1)] | None = None
    view_through_days: int | None = None
    view_through_hours: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if self.click_days is not None and self.click_hours is not None:
            raise ValueError("give click_days or click_hours, not both")
        if self.view_through_days is not None and self.view_through_hours is not None:
            raise ValueError("give view_through_days or view_through_hours, not both")
        if self.click_days is not None and self.click_days not in CLICK_WINDOWS:
            raise ValueError(f"click_days must be one of {CLICK_WINDOWS}")
        if (
            self.view_through_days is not None
            and self.view_through_days not in VIEW_THROUGH_WINDOWS
        ):
            raise ValueError(f"view_through_days must be one of {VIEW_THROUGH_WINDOWS}")
        click, view = self.resolved()
        if click < view:
            raise ValueError(
                f"the click window ({click}) must be >= the view-through window ({view})"
            )
        return self

    def resolved(self) -> tuple[int, int]:
        """(click_window, view_through_window) in X's day buckets; X's defaults are 14 and 1."""
        if self.click_hours is not None:
            click = window_bucket(self.click_hours, CLICK_WINDOWS)
        else:
            click = self.click_days if self.click_days is not None else 14
        if self.view_through_hours is not None:
            view = (
                0
                if self.view_through_hours == 0
                else window_bucket(self.view_through_hours, VIEW_THROUGH_WINDOWS)
            )
        else:
            view = self.view_through_days if self.view_through_days is not None else 1
        return click, view


class XApp(_Strict):
    """One app's link to X's mobile app conversion tracking."""

    app_id: str  # the store id X knows the app by: 333903271 or com.example.app
    os_type: Literal["IOS", "ANDROID"]
    account_id: str | None = None  # the advertiser account (event-tags sync)
    consumer_key: SecretRef
    consumer_secret: SecretRef
    access_token: SecretRef
    access_token_secret: SecretRef
    # As X issues it: base64. The development key hashes sandbox callbacks.
    hmac_key: SecretRef
    hmac_key_development: SecretRef | None = None
    # Sandbox callbacks go to this base URL (with the development key), or nowhere.
    sandbox_base_url: str | None = None
    # Device id normalisation before hashing (unconfirmed by X): default as reported.
    normalisation: Literal["as_reported", "lower", "upper", "lower_no_hyphens"] = "as_reported"
    send_extra_device_ids: bool = False
    # Adjust event token -> conversion type. Unmapped events are not sent.
    event_conversions: dict[str, ConversionType] = Field(default_factory=dict)
    session_conversion: ConversionType | None = None
    windows: dict[ConversionType, XWindows] = Field(default_factory=dict)
    # Privacy: X gets the device IP only when this is on.
    send_device_ip: bool = False
    # Partner parameters carrying number_items and level.
    number_items_parameter: str | None = None
    level_parameter: str | None = None
    # Windows adopted from X by `postback-hub x event-tags sync` (JSON), over `windows`.
    event_tags_file: Path | None = None


class XDestination(DestinationBase):
    type: Literal["x"]
    base_url: str = "https://ads-api.x.com"
    api_version: str = "12"
    # X documents no de-duplication: a timeout after sending is dead-lettered, not retried.
    on_ambiguous: Literal["retry", "dead_letter"] = "dead_letter"
    # After a 401/403 an app's conversions are dead-lettered without a request for this
    # long, so bad credentials never cause a retry storm.
    auth_failure_cooldown_s: Annotated[float, Field(ge=0)] = 300.0
    apps: dict[str, XApp] = Field(default_factory=dict)


DestinationSettings = Annotated[ModuleDestination | XDestination, Field(discriminator="type")]
DestinationKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,48}$")]


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    apps: dict[AppKey, AppSettings] = Field(default_factory=dict)
    destinations: dict[DestinationKey, DestinationSettings] = Field(default_factory=dict)

    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _shutdown_outlasts_produce(self) -> Self:
        # Otherwise requests waiting for the broker are cut off at shutdown.
        if self.receiver.shutdown_timeout_s < self.kafka.produce_timeout_s:
            raise ValueError("receiver.shutdown_timeout_s must be >= kafka.produce_timeout_s")
        return self

    def app_secrets(self, app: str) -> list[str]:
        """The secrets a callback for ``app`` may carry: current, then previous."""
        secrets = [self.secret(f"apps.{app}.secret")]
        if f"apps.{app}.previous_secret" in self._secrets:
            secrets.append(self.secret(f"apps.{app}.previous_secret"))
        return secrets

    @model_validator(mode="after")
    def _destination_apps_exist(self) -> Self:
        for name, destination in self.destinations.items():
            unknown = sorted(set(destination.apps) - set(self.apps))
            if unknown:
                raise ValueError(f"destinations.{name}.apps: no such app: {', '.join(unknown)}")
        return self

    def secret(self, location: str) -> str:
        """A resolved secret by its location, e.g. ``apps.demo.secret``."""
        return self._secrets[location]


def _secret_refs(document: dict[str, Any], with_apps: bool = True) -> dict[str, Any]:
    """Every secret reference (a table of only ``env``/``file``) by its location.

    Read from the raw document so that secrets can be checked even when other
    parts of the file are invalid: all problems in one report. Without
    ``with_apps`` only Kafka's own secrets are collected.
    """
    refs: dict[str, Any] = {}

    def walk(node: Any, location: str) -> None:
        if not isinstance(node, dict):
            return
        if node and set(node) <= {"env", "file"}:
            refs[location] = node
            return
        for key, child in node.items():
            walk(child, f"{location}.{key}" if location else str(key))

    walk(document.get("kafka"), "kafka")
    if with_apps:
        walk(document.get("apps"), "apps")
        destinations = document.get("destinations")
        if isinstance(destinations, dict):
            for name, destination in destinations.items():
                # A disabled destination's credentials need not exist yet.
                if isinstance(destination, dict) and destination.get("enabled", True) is not False:
                    walk(destination, f"destinations.{name}")
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
