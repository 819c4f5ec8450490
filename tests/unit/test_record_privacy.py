"""Per-app privacy options: the pure step the receiver applies before Kafka, and the
configuration checks that keep destinations from losing a field they need."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson
import pytest

from postback_hub.consumers.registry import parse_settings
from postback_hub.service.intake import RawCallback, intake
from postback_hub.service.privacy_settings import PrivacySettings
from postback_hub.service.record_privacy import keyed_hash, privacy_step
from postback_hub.service.secrets import Secret
from postback_hub.service.settings import AppSettings, ConfigError
from tests.support import SECRET, SECRET_ENV, module_destination, settings_document, x_destination

KEY = "0123456789abcdef0123456789abcdef"  # 32 bytes
KEY_ENV = "POSTBACK_HUB_TEST_PRIVACY_KEY"
ADID = "0123456789abcdef0123456789abcdef"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IDFV = "3B7F2A10-0C1D-4E5F-8A9B-C0D1E2F3A4B5"
IP = "198.51.100.23"
OTHER_IP = "198.51.100.99"
AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"


def _hmac_hex(key: str, value: str) -> str:
    """HMAC-SHA256 written out from its definition (RFC 2104), not with hmac."""
    block = key.encode().ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + value.encode()).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).hexdigest()


def _raw(query: str) -> RawCallback:
    return RawCallback(query.encode(), "", b"", None, None, 1_700_000_000_500)


QUERY = (
    f"secret={SECRET}&activity_kind=install&adid={ADID}&idfa={IDFA}&idfv={IDFV}"
    f"&ip_address={IP}&ip_address={OTHER_IP}&user_agent={AGENT}&country=de"
    "&created_at_milli=1700000000123"
)


def _through_intake(privacy: dict[str, Any] | None) -> Any:
    app = AppSettings(
        secret=Secret.of(SECRET),
        privacy=None if privacy is None else PrivacySettings.model_validate(privacy),
    )
    step = privacy_step(app.privacy)
    return intake("demo", app, [SECRET], _raw(QUERY), 1 << 20, step)


def test_keyed_hash_is_hmac_sha256_in_hex() -> None:
    # RFC 4231, test case 2.
    assert keyed_hash(b"Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert keyed_hash(KEY.encode(), IDFV) == _hmac_hex(KEY, IDFV)


def test_dropped_and_hashed_fields_never_reach_the_stored_record() -> None:
    plain = _through_intake(None)
    private = _through_intake(
        {
            "drop": ["ip_address", "user_agent"],
            "hash": ["adid", "idfv"],
            "hash_key": Secret.of(KEY),
        }
    )
    assert plain.attributes["ip_address"] == IP
    assert plain.repeated["ip_address"] == [IP, OTHER_IP]

    assert private.device == {
        "adid": _hmac_hex(KEY, ADID),
        "idfa": IDFA,
        "idfv": _hmac_hex(KEY, IDFV),
    }
    assert "ip_address" not in private.attributes
    assert "user_agent" not in private.attributes
    assert "ip_address" not in private.repeated
    assert private.attributes["country"] == "de"  # other fields as they were
    stored = private.to_json() + private.partition_key
    for raw in (ADID, IDFV, IP, OTHER_IP, "Mozilla"):
        assert raw.encode() not in stored
    # The Kafka key is the hashed adid: one per device, whatever the callback.
    assert private.partition_key == f"demo:{_hmac_hex(KEY, ADID)}".encode()
    # Computed from the ids as received: Adjust's retries keep matching.
    assert private.fingerprint == plain.fingerprint
    again = _through_intake({"hash": ["adid", "idfv"], "hash_key": Secret.of(KEY)})
    assert again.device["adid"] == private.device["adid"]


def test_a_hashed_attribute_and_its_repeats_are_hashed() -> None:
    record = _through_intake({"hash": ["ip_address"], "hash_key": Secret.of(KEY)})
    assert record.attributes["ip_address"] == _hmac_hex(KEY, IP)
    assert record.repeated["ip_address"] == [_hmac_hex(KEY, IP), _hmac_hex(KEY, OTHER_IP)]
    assert record.device["adid"] == ADID


def test_the_step_leaves_its_input_record_as_it_was() -> None:
    record = _through_intake(None)
    before = orjson.dumps(record.to_dict())
    step = privacy_step(
        PrivacySettings(drop=["user_agent"], hash=["idfa"], hash_key=Secret.of(KEY))
    )
    assert step is not None
    changed = step.apply(record)
    assert orjson.dumps(record.to_dict()) == before
    assert changed.device["idfa"] == _hmac_hex(KEY, IDFA)


@pytest.mark.parametrize(
    "options", [None, PrivacySettings(), PrivacySettings(hash_key=Secret.of(KEY))]
)
def test_no_step_at_all_when_the_options_change_nothing(options: PrivacySettings | None) -> None:
    assert privacy_step(options) is None


# ---------------------------------------------------------------- configuration


def _problems(
    monkeypatch: pytest.MonkeyPatch,
    privacy: dict[str, Any],
    destinations: dict[str, Any] | None = None,
) -> list[str]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("POSTBACK_HUB_TEST_PARTNER", "partner-1")
    document = settings_document(
        "127.0.0.1:9092",
        "t",
        apps={"demo": {"secret": {"env": SECRET_ENV}, "privacy": privacy}},
        destinations=destinations,
    )
    try:
        parse_settings(document)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv(KEY_ENV, KEY)
    return {"env": KEY_ENV}


def test_valid_options_load(monkeypatch: pytest.MonkeyPatch, key_env: dict[str, str]) -> None:
    privacy = {
        "drop": ["ip_address", "idfa_md5"],
        "hash": ["idfv", "user_agent"],
        "hash_key": key_env,
    }
    assert _problems(monkeypatch, privacy) == []


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        (
            {"drop": ["postal_code"]},
            "apps.demo.privacy.drop: Value error, not a field these options apply to: postal_code",
        ),
        (
            {"drop": ["gps_adid"]},
            "apps.demo.privacy.drop: Value error, gps_adid identifies the device (the Kafka key"
            " and per-device order need it): hash it instead",
        ),
        ({"hash": ["idfv"]}, "apps.demo.privacy: Value error, hash needs hash_key"),
        (
            {"drop": ["user_agent"], "hash": ["user_agent"], "hash_key": {"env": KEY_ENV}},
            "apps.demo.privacy: Value error, user_agent both dropped and hashed: choose one",
        ),
        ({"hashes": ["idfv"]}, "apps.demo.privacy.hashes: unknown key; did you mean 'hash'?"),
    ],
)
def test_invalid_options_are_named(
    monkeypatch: pytest.MonkeyPatch, privacy: dict[str, Any], expected: str
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    problems = _problems(monkeypatch, privacy)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_short_or_missing_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "short-key-7")
    problems = _problems(monkeypatch, {"hash": ["idfv"], "hash_key": {"env": KEY_ENV}})
    assert len(problems) == 1
    assert "hash_key must be at least 16 bytes" in problems[0]
    assert "short-key-7" not in problems[0]
    monkeypatch.delenv(KEY_ENV)
    problems = _problems(monkeypatch, {"hash": ["idfv"], "hash_key": {"env": KEY_ENV}})
    assert problems == [
        f"apps.demo.privacy.hash_key: environment variable {KEY_ENV} is not set or empty"
    ]


def test_x_needs_the_device_ip_it_is_told_to_send(
    monkeypatch: pytest.MonkeyPatch, key_env: dict[str, str]
) -> None:
    x = x_destination("http://127.0.0.1:1", app={"send_device_ip": True})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"drop": ["ip_address"]}, "apps.demo.privacy.drop removes it"),
        ({"hash": ["ip_address"], "hash_key": key_env}, "apps.demo.privacy.hash replaces it"),
    ]
    for option, change in cases:
        problems = _problems(monkeypatch, option, {"x": x})
        assert len(problems) == 1, problems
        assert problems[0].startswith(
            "destinations.x.apps.demo: send_device_ip = true needs ip_address as received, but "
            + change
        )
    # Without send_device_ip, X never reads the IP: dropping it is fine.
    x_quiet = x_destination("http://127.0.0.1:1")
    assert _problems(monkeypatch, {"drop": ["ip_address"]}, {"x": x_quiet}) == []


def test_x_needs_the_raw_advertising_id_of_its_platform(
    monkeypatch: pytest.MonkeyPatch, key_env: dict[str, str]
) -> None:
    ios = x_destination("http://127.0.0.1:1")
    problems = _problems(monkeypatch, {"hash": ["idfa"], "hash_key": key_env}, {"x": ios})
    assert problems == [
        "destinations.x.apps.demo: X's hashed_device_id (its own HMAC of the IOS id) needs idfa"
        " as received, but apps.demo.privacy.hash replaces it with a keyed hash"
    ]
    # The other platform's id is not X's concern for an iOS app.
    assert _problems(monkeypatch, {"hash": ["gps_adid"], "hash_key": key_env}, {"x": ios}) == []
    android = x_destination(
        "http://127.0.0.1:1", app={"os_type": "ANDROID", "app_id": "com.example.app"}
    )
    problems = _problems(monkeypatch, {"hash": ["gps_adid"], "hash_key": key_env}, {"x": android})
    assert len(problems) == 1
    assert "needs gps_adid as received" in problems[0]


def test_a_module_template_needs_the_fields_it_sends(
    monkeypatch: pytest.MonkeyPatch, key_env: dict[str, str]
) -> None:
    module = module_destination(
        "http://127.0.0.1:1",
        template={
            "url": "http://127.0.0.1:1/pb/{credential}",
            "params": {"adid": "{adid}", "ua": "{user_agent}"},
            "headers": {"X-Forwarded-For": "{ip_address}"},
        },
    )
    privacy = {"drop": ["ip_address", "user_agent"], "hash": ["adid"], "hash_key": key_env}
    problems = _problems(monkeypatch, privacy, {"bia": module})
    assert sorted(problems) == [
        "destinations.bia.apps.demo: the template's {adid} needs adid as received, but"
        " apps.demo.privacy.hash replaces it with a keyed hash",
        "destinations.bia.apps.demo: the template's {ip_address} needs ip_address as received,"
        " but apps.demo.privacy.drop removes it",
        "destinations.bia.apps.demo: the template's {user_agent} needs user_agent as received,"
        " but apps.demo.privacy.drop removes it",
    ]
    # Fields the template does not send, or a disabled destination: no conflict.
    assert _problems(monkeypatch, {"hash": ["idfv"], "hash_key": key_env}, {"bia": module}) == []
    disabled = {**module, "enabled": False}
    assert _problems(monkeypatch, privacy, {"bia": disabled}) == []


def test_the_step_keeps_every_other_field_of_the_record() -> None:
    query = (
        f"secret={SECRET}&activity_kind=event&event=tok_buy&adid={ADID}&ip_address={IP}"
        "&ip_address=198.51.100.1&revenue_float=4.99&currency=eur&created_at_milli=1700000000123"
        "&partner_parameters=%7B%22a%22%3A%221%22%7D&publisher_parameters=p1&my_key=v"
    )
    app = AppSettings(secret=Secret.of(SECRET))
    record = intake("demo", app, [SECRET], _raw(query), 1 << 20)
    # Every field set, so a field the step forgot to carry over would show below.
    unset = [f.name for f in dataclasses.fields(record) if getattr(record, f.name) in (None, {})]
    assert unset == []
    step = privacy_step(PrivacySettings(hash=["adid"], hash_key=Secret.of(KEY)))
    assert step is not None
    changed = step.apply(record)
    for field in dataclasses.fields(record):
        if field.name != "device":
            assert getattr(changed, field.name) == getattr(record, field.name), field.name
    assert changed.device == {"adid": _hmac_hex(KEY, ADID)}
