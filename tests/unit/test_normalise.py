from __future__ import annotations

from decimal import Decimal

import pytest

from postback_hub.service.errors import BadRequest
from postback_hub.service.normalise import fingerprint, normalise
from postback_hub.service.record import CallbackRecord, Revenue
from postback_hub.service.wire import Pairs, parse_urlencoded

ADID = "0123456789abcdef0123456789abcdef"
RECEIVED = 1_700_000_999_000


def norm(pairs: Pairs, aliases: dict[str, str] | None = None) -> CallbackRecord:
    return normalise(
        pairs,
        app="demo",
        aliases=aliases or {},
        default_environment="production",
        received_at_millis=RECEIVED,
    )


def base(**extra: str) -> Pairs:
    pairs = [("activity_kind", "install"), ("adid", ADID), ("created_at", "1700000000")]
    return pairs + list(extra.items())


def test_install_is_normalised() -> None:
    record = norm(
        base(
            idfa="AEBE52E7-03EE-455A-B3C4-E57283966239",
            environment="sandbox",
            country="DE",
            is_organic="0",
            session_count="3",
            installed_at="1700000000",
            tracker_name="Net::Camp::Ad::Cr",
        )
    )
    assert record.activity_kind == "install"
    assert record.environment == "sandbox"
    assert record.created_at == "2023-11-14T22:13:20.000Z"
    assert record.received_at == "2023-11-14T22:29:59.000Z"
    assert record.device == {"adid": ADID, "idfa": "AEBE52E7-03EE-455A-B3C4-E57283966239"}
    assert record.attributes == {
        "country": "de",
        "is_organic": False,
        "session_count": 3,
        "installed_at": "2023-11-14T22:13:20.000Z",
        "tracker_name": "Net::Camp::Ad::Cr",
    }
    assert record.partition_key == f"demo:{ADID}".encode()


def test_created_at_milli_wins_over_seconds() -> None:
    record = norm(base(created_at_milli="1700000000123"))
    assert record.created_at == "2023-11-14T22:13:20.123Z"


def test_missing_created_at_falls_back_to_receipt_time() -> None:
    record = norm([("activity_kind", "session"), ("adid", ADID)])
    assert record.created_at == record.received_at


@pytest.mark.parametrize(
    "idfa", ["00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000"]
)
def test_all_zero_idfa_is_absent(idfa: str) -> None:
    record = norm(base(idfa=idfa))
    assert "idfa" not in record.device


def test_a_zero_idfa_alone_is_no_device_id() -> None:
    with pytest.raises(BadRequest) as caught:
        norm([("activity_kind", "install"), ("idfa", "00000000-0000-0000-0000-000000000000")])
    assert (caught.value.code, caught.value.field) == ("missing_field", "adid")


def test_device_key_falls_back_to_an_advertising_id() -> None:
    record = norm([("activity_kind", "install"), ("gps_adid", "38400000-8cf0-11bd-b23e")])
    assert record.partition_key == b"demo:38400000-8cf0-11bd-b23e"


@pytest.mark.parametrize(
    ("pairs", "amount", "currency"),
    [
        ([("revenue_float", "1.99"), ("currency", "eur")], Decimal("1.99"), "EUR"),
        ([("revenue", "199"), ("currency", "usd")], Decimal("1.99"), "USD"),
        ([("revenue", "12345.5")], Decimal("123.455"), None),
        ([("revenue", "100"), ("revenue_float", "0.99")], Decimal("0.99"), None),
        ([("revenue_float", "0.1")], Decimal("0.1"), None),
    ],
)
def test_revenue_is_an_exact_decimal(pairs: Pairs, amount: Decimal, currency: str | None) -> None:
    event = [("activity_kind", "event"), ("adid", ADID), ("event", "abc123")]
    record = norm([*event, *pairs])
    assert record.revenue == Revenue(amount, currency)
    assert isinstance(record.revenue.amount, Decimal)


def test_revenue_serialises_as_decimal_text() -> None:
    record = norm(base(revenue="100"))
    assert record.to_dict()["revenue"] == {"amount": "1.00", "currency": None}


def test_partner_parameters_parsed_when_json_object_else_raw() -> None:
    good = norm(base(partner_parameters='{"campaign":"x","n":"1"}'))
    assert good.partner_parameters == {"campaign": "x", "n": "1"}
    raw = norm(base(partner_parameters="{not json", publisher_parameters="[1,2]"))
    assert raw.partner_parameters == "{not json"
    assert raw.publisher_parameters == "[1,2]"


def test_unknown_keys_are_kept_verbatim_and_lists_when_repeated() -> None:
    record = norm([*base(my_key="", other="{x}"), ("tag", "a"), ("tag", "b"), ("tag", "a")])
    assert record.custom == {"my_key": "", "other": "{x}", "tag": ["a", "b", "a"]}
    assert norm([*base(), ("k", "1"), ("k", "1")]).custom == {"k": ["1", "1"]}


def test_absent_empty_and_unreplaced_placeholders_are_alike() -> None:
    record = norm(base(city="", region="{region}", country="{country}"))
    assert record.attributes == {}


def test_repeated_canonical_first_wins_and_all_values_are_kept() -> None:
    record = norm([*base(), ("city", "Berlin"), ("city", "Berlin"), ("city", "Paris")])
    assert record.attributes["city"] == "Berlin"
    assert record.repeated == {"city": ["Berlin", "Paris"]}


@pytest.mark.parametrize("key", ["environment", "activity_kind", "event", "adid", "idfa"])
def test_conflicting_values_of_routing_fields_fail_safe(key: str) -> None:
    pairs = [*base(event="t", environment="production", idfa="A-1"), (key, "something-else")]
    with pytest.raises(BadRequest) as caught:
        norm(pairs)
    assert (caught.value.code, caught.value.field) == ("conflicting_values", key)


def test_revenue_in_cents_is_exact_at_any_size() -> None:
    record = norm(base(revenue="123456789012345678901234567"))
    assert record.revenue is not None
    assert record.to_dict()["revenue"]["amount"] == "1234567890123456789012345.67"
    with pytest.raises(BadRequest):
        norm(base(revenue="1" * 28))


def test_json_too_deep_to_store_is_kept_as_text() -> None:
    deep = '{"a":' * 300 + "1" + "}" * 300
    record = norm(base(partner_parameters=deep))
    assert record.partner_parameters == deep
    record.to_json()


def test_activities_without_any_time_do_not_collide() -> None:
    pairs = [("activity_kind", "session"), ("adid", ADID)]
    first = normalise(
        pairs, app="demo", aliases={}, default_environment="production", received_at_millis=1
    )
    later = normalise(
        pairs,
        app="demo",
        aliases={},
        default_environment="production",
        received_at_millis=3_600_001,
    )
    assert first.fingerprint != later.fingerprint


def test_hashed_ids_alone_are_not_a_device_key() -> None:
    with pytest.raises(BadRequest) as caught:
        norm([("activity_kind", "install"), ("idfa_md5", "9f89c84a559f573636a47ff8daed0d33")])
    assert caught.value.field == "adid"


def test_aliases_map_template_keys_and_errors_name_the_wire_key() -> None:
    aliases = {"adjust_tracker": "tracker", "ts": "created_at"}
    record = norm(
        [("activity_kind", "install"), ("adid", ADID), ("adjust_tracker", "abc"), ("ts", "1")],
        aliases,
    )
    assert record.attributes["tracker"] == "abc"
    assert record.created_at == "1970-01-01T00:00:01.000Z"
    with pytest.raises(BadRequest) as caught:
        norm([("activity_kind", "install"), ("adid", ADID), ("ts", "soon")], aliases)
    assert caught.value.field == "ts"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("created_at", "17e8"),
        ("created_at", "-5"),
        ("created_at", "99999999999999"),
        ("created_at_milli", "1.5"),
        ("installed_at", "yesterday"),
        ("session_count", "3.5"),
        ("is_organic", "maybe"),
        ("revenue", "1,99"),
        ("revenue_float", "NaN"),
        ("revenue_usd", "Infinity"),
        ("currency", "EURO"),
        ("country", "deu"),
        ("environment", "staging"),
        ("activity_kind", "Install!"),
    ],
)
def test_malformed_values_are_rejected_naming_the_field(key: str, value: str) -> None:
    pairs = [(k, v) for k, v in base() if k != key] + [(key, value)]
    with pytest.raises(BadRequest) as caught:
        norm(pairs)
    assert caught.value.code == "invalid_value"
    assert caught.value.field == key


@pytest.mark.parametrize(
    ("pairs", "field"),
    [
        ([("adid", ADID)], "activity_kind"),
        ([("activity_kind", "install")], "adid"),
        ([("activity_kind", "event"), ("adid", ADID)], "event"),
        ([("activity_kind", "event"), ("adid", ADID), ("event", "")], "event"),
    ],
)
def test_missing_required_fields(pairs: Pairs, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        norm(pairs)
    assert (caught.value.code, caught.value.field) == ("missing_field", field)


@pytest.mark.parametrize(
    "kind",
    [
        "install",
        "session",
        "event",
        "reattribution",
        "rejected_install",
        "rejected_reattribution",
        "click",
        "impression",
        "uninstall",
        "reinstall",
        "reattribution_reinstall",
        "install_update",
        "att_update",
        "ad_revenue",
        "cost_updated",
        "sk_install",
        "a_kind_adjust_adds_next_year",
    ],
)
def test_every_activity_kind_is_accepted(kind: str) -> None:
    record = norm([("activity_kind", kind.upper()), ("adid", ADID), ("event", "tok1")])
    assert record.activity_kind == kind


def test_fingerprint_is_stable_and_covers_identity_fields() -> None:
    first = norm(parse_urlencoded(b"activity_kind=event&adid=A&event=tok&created_at=1&city=x"))
    again = norm(parse_urlencoded(b"city=y&event=tok&created_at=1&adid=A&activity_kind=event"))
    assert first.fingerprint == again.fingerprint
    assert len(first.fingerprint) == 32
    variants = {
        fingerprint("demo", "A", "event", 1000, "tok", None, None),
        fingerprint("demo", "A", "event", 1001, "tok", None, None),
        fingerprint("demo", "A", "event", 1000, "tok2", None, None),
        fingerprint("demo", "B", "event", 1000, "tok", None, None),
        fingerprint("demo", "A", "install", 1000, "tok", None, None),
        fingerprint("demo", "A", "event", 1000, "tok", "r1", None),
        fingerprint("demo", "A", "event", 1000, "tok", None, "n1"),
        fingerprint("other", "A", "event", 1000, "tok", None, None),
    }
    assert len(variants) == 8
    assert first.fingerprint == fingerprint("demo", "A", "event", 1000, "tok", None, None)


def test_record_round_trips_through_json() -> None:
    record = norm(
        base(revenue_float="2.50", currency="jpy", partner_parameters='{"a":"1"}', foo="bar")
    )
    assert CallbackRecord.from_json(record.to_json()) == record


def test_unknown_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="schema"):
        CallbackRecord.from_dict({"schema": 99})
