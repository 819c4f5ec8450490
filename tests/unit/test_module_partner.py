"""Module partner routing and request mapping, over every switch and activity kind."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from postback_hub.consumers.delivery import HttpRequest, MappingError, Skip
from postback_hub.consumers.module.config import ModuleDestination, ModulePartnerApp
from postback_hub.consumers.module.partner import ModulePartner, context, route
from postback_hub.consumers.module.template import VARIABLES, TemplateError, check, render
from postback_hub.consumers.redact import describe_request
from postback_hub.service.fields import FIELD_KINDS, Kind
from postback_hub.service.normalise import normalise
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import ConfigError, Settings
from tests.support import NO_BROKER, make_settings, module_partner

ADID = "0123456789abcdef0123456789abcdef"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


def record(kind: str = "install", **fields: str) -> CallbackRecord:
    pairs = [("activity_kind", kind), ("adid", ADID), ("idfa", IDFA), ("created_at", "1700000000")]
    pairs += list(fields.items())
    return normalise(
        pairs, app="demo", aliases={}, default_environment="production", received_at_millis=1
    )


def settings(app: dict[str, Any] | None = None, template: dict[str, Any] | None = None) -> Settings:
    return make_settings(
        NO_BROKER,
        "callbacks",
        0,
        apps={"demo": {"secret": {"env": "MODULE_TEST_SECRET"}}},
        destinations={
            "bia": {
                "type": "module",
                "template": template
                or {
                    "url": "https://partner.test/pb/{credential}",
                    "sandbox_url": "https://sandbox.partner.test/pb/{credential}",
                    "params": {
                        "kind": "{activity_kind}",
                        "idfa": "{idfa}",
                        "event": "{partner_event_name}",
                        "revenue": "{revenue}",
                        "revenue_float": "{revenue_float}",
                        "currency": "{currency}",
                        "revenue_usd": "{revenue_usd}",
                        "pp": "{partner_parameters}",
                        "reattr": "{is_reattribution}",
                        "city": "{city}",
                        "ts": "{created_at_unix}",
                        "tracker": "{tracker_name}",
                        "mine": "{custom.my_key}",
                        "fixed": "v1",
                    },
                },
                "apps": {"demo": {"credential": {"env": "MODULE_TEST_PARTNER"}, **(app or {})}},
            }
        },
    )


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODULE_TEST_SECRET", "s")
    monkeypatch.setenv("MODULE_TEST_PARTNER", "p/1 ")


def query(request: HttpRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.full_url).query).items()}


def partner(**app: Any) -> ModulePartner:
    return module_partner(settings(app))


LINKS = {"event_links": {"tok_buy": "purchase", "tok_buy2": "purchase"}}


@pytest.mark.parametrize(
    ("kind", "app", "fields", "skip"),
    [
        ("install", {}, {}, None),
        ("reattribution", {}, {}, None),
        ("session", {}, {}, "sessions_off"),
        ("session", {"forward_sessions": True}, {}, None),
        ("event", LINKS, {"event": "tok_other"}, "event_not_linked"),
        ("event", LINKS, {"event": "tok_buy"}, None),
        ("event", LINKS, {"event": "tok_buy2"}, None),
        ("rejected_install", {}, {}, None),
        ("rejected_install", {"forward_rejected_installs": False}, {}, "rejected_installs_off"),
        ("rejected_reattribution", {}, {}, None),
        (
            "rejected_reattribution",
            {"forward_rejected_reattributions": False},
            {},
            "rejected_reattributions_off",
        ),
        ("click", {}, {}, "kind_not_forwarded"),
        ("ad_revenue", {}, {}, "kind_not_forwarded"),
        ("uninstall", {}, {}, "kind_not_forwarded"),
        (
            "install",
            {"attributions_only": True, "network_names": ["BackInApp"]},
            {"tracker_name": "Other Net::c"},
            "not_attributed_to_partner",
        ),
        (
            "install",
            {"attributions_only": True, "network_names": ["BackInApp"]},
            {"tracker_name": "backinapp::c"},
            None,
        ),
        (
            "install",
            {"attributions_only": True, "network_names": ["BackInApp"]},
            {"network_name": "BackInApp", "tracker_name": "x::y"},
            None,
        ),
    ],
)
def test_routing(kind: str, app: dict[str, Any], fields: dict[str, str], skip: str | None) -> None:
    if kind == "event":
        fields = {"event": "tok_buy", **fields}
    result = partner(**app).prepare(record(kind, **fields))
    if skip is None:
        assert isinstance(result, HttpRequest)
    else:
        assert result == Skip(skip)


def test_app_not_activated_for_this_partner() -> None:
    assert route(record(), None) == Skip("app_not_activated")


def test_install_request_is_rendered_and_encoded() -> None:
    request = partner().prepare(
        record(city="São Paulo", tracker_name="Net::Camp & Co", my_key="a b", revenue="199")
    )
    assert isinstance(request, HttpRequest)
    assert request.method == "GET"
    assert request.full_url.startswith("https://partner.test/pb/p%2F1%20?")
    assert query(request) == {
        "kind": "install",
        "idfa": IDFA,
        "reattr": "0",
        "city": "São Paulo",
        "ts": "1700000000",
        "tracker": "Net::Camp & Co",
        "mine": "a b",
        "fixed": "v1",
    }


def test_revenue_only_with_linked_events_and_forwarding_on() -> None:
    event = record("event", event="tok_buy", revenue_float="4.99", currency="eur")
    off = partner(**LINKS).prepare(event)
    assert isinstance(off, HttpRequest)
    assert "revenue" not in query(off)
    assert "currency" not in query(off)
    on = partner(forward_revenue=True, **LINKS).prepare(event)
    assert isinstance(on, HttpRequest)
    # As Adjust's placeholders: {revenue} in cents, {revenue_float} in whole units.
    assert query(on)["revenue"] == "499"
    assert query(on)["revenue_float"] == "4.99"
    assert query(on)["currency"] == "EUR"
    assert query(on)["event"] == "purchase"
    # Revenue on an install is never forwarded: only linked events carry it, in any form.
    install = partner(forward_revenue=True, **LINKS).prepare(
        record(revenue_float="1.0", currency="EUR", revenue_usd="1.1")
    )
    assert isinstance(install, HttpRequest)
    assert not {"revenue", "revenue_float", "currency", "revenue_usd"} & set(query(install))


def test_forward_revenue_needs_a_linked_event() -> None:
    with pytest.raises(ConfigError, match="forward_revenue"):
        settings({"forward_revenue": True})


def test_partner_parameters_only_when_on() -> None:
    with_pp = record(partner_parameters='{"a":"1"}')
    off = partner().prepare(with_pp)
    on = partner(forward_partner_parameters=True).prepare(with_pp)
    assert isinstance(off, HttpRequest)
    assert isinstance(on, HttpRequest)
    assert "pp" not in query(off)
    assert orjson.loads(query(on)["pp"]) == {"a": "1"}


def test_reattribution_flag() -> None:
    request = partner().prepare(record("reattribution"))
    assert isinstance(request, HttpRequest)
    assert query(request)["reattr"] == "1"


def test_sandbox_goes_to_the_sandbox_url_or_nowhere() -> None:
    request = partner().prepare(record(environment="sandbox"))
    assert isinstance(request, HttpRequest)
    assert request.url.startswith("https://sandbox.partner.test/")
    without = module_partner(
        settings(template={"url": "https://partner.test/pb", "params": {"k": "{adid}"}})
    )
    assert without.prepare(record(environment="sandbox")) == Skip("sandbox_without_sandbox_url")
    production = without.prepare(record())
    assert isinstance(production, HttpRequest)
    assert production.full_url.startswith("https://partner.test/pb?")


def test_form_and_json_bodies() -> None:
    form = module_partner(
        settings(
            template={
                "method": "POST",
                "url": "https://partner.test/x",
                "encoding": "form",
                "params": {"a": "{adid}", "c": "{city}"},
                "headers": {"X-Partner": "{credential}"},
            }
        ),
    ).prepare(record(city="Zürich"))
    assert isinstance(form, HttpRequest)
    assert form.body is not None
    assert parse_qs(form.body.decode()) == {"a": [ADID], "c": ["Zürich"]}
    assert form.headers == {
        "X-Partner": "p/1 ",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    as_json = module_partner(
        settings(
            template={
                "method": "POST",
                "url": "https://partner.test/x",
                "encoding": "json",
                "params": {"a": "{adid}", "n": "{session_count}"},
            }
        ),
    ).prepare(record(session_count="4"))
    assert isinstance(as_json, HttpRequest)
    assert as_json.body is not None
    assert orjson.loads(as_json.body) == {"a": ADID, "n": "4"}


def test_url_placeholder_without_value_is_a_mapping_error() -> None:
    destination = module_partner(
        settings(template={"url": "https://partner.test/{gps_adid}", "params": {}})
    )
    with pytest.raises(MappingError):
        destination.prepare(record())


@pytest.mark.parametrize("template", ["{nope}", "{idfa!r}", "{idfa:>4}", "{unclosed", "{custom.}"])
def test_template_errors(template: str) -> None:
    with pytest.raises(TemplateError):
        check(template)


def test_template_literal_braces_and_missing_values() -> None:
    assert render("{{x}}={adid}", {"adid": "1"}) == "{x}=1"
    assert render("{adid}-{idfa}", {"adid": "1"}) is None
    assert render("{custom.k}", {"custom.k": "a/b"}, url_encode=True) == "a%2Fb"


def test_config_rejects_unknown_placeholders_and_switch_combinations() -> None:
    with pytest.raises(ConfigError, match="unknown placeholder"):
        settings(template={"url": "https://p.test/", "params": {"a": "{no_such}"}})
    with pytest.raises(ConfigError, match="network_names"):
        settings({"attributions_only": True})
    with pytest.raises(ConfigError, match="GET request"):
        settings(template={"url": "https://p.test/", "encoding": "json"})
    assert ModulePartnerApp.model_fields["forward_sessions"].default is False


def test_dry_run_description_masks_ids_ip_and_credential() -> None:
    rec = record(ip_address="198.51.100.7", user_agent="Mozilla/5.0 (X)")
    request = partner().prepare(rec)
    assert isinstance(request, HttpRequest)
    text = str(describe_request(request, rec, ["p/1 "]))
    for secret in (ADID, IDFA, "198.51.100.7", "p%2F1%20", "p/1 "):
        assert secret not in text
    assert "********" in text


def test_every_placeholder_a_template_may_name_has_a_value_when_everything_is_on() -> None:
    """A placeholder that passes the configuration check but never gets a value would
    silently drop its parameter (or dead-letter everything, in a URL)."""
    pairs = [("activity_kind", "event"), ("event", "tok_buy"), ("currency", "EUR")]
    for name, kind in FIELD_KINDS.items():
        if name in {"activity_kind", "event", "currency", "environment", "created_at_milli"}:
            continue
        pairs.append((name, EXAMPLES[kind]))
    full = normalise(
        pairs, app="demo", aliases={}, default_environment="production", received_at_millis=1
    )
    app = settings(
        {"forward_revenue": True, "forward_partner_parameters": True, **LINKS}
    ).destinations["bia"]
    assert isinstance(app, ModuleDestination)
    values = context(full, app.apps["demo"], "p1")
    assert VARIABLES - set(values) == set()
    assert values["installed_at_unix"] == "1700000000"
    assert values["event"] == "tok_buy"


EXAMPLES = {
    Kind.STRING: "x",
    Kind.DEVICE_ID: "6D92078A-8246-4BA4-AE5B-76104861E7DD",
    Kind.TIMESTAMP: "1700000000",
    Kind.TIMESTAMP_MILLI: "1700000000000",
    Kind.INTEGER: "7",
    Kind.DECIMAL: "1.5",
    Kind.FLAG: "1",
    Kind.CURRENCY: "USD",
    Kind.COUNTRY: "de",
    Kind.JSON_OBJECT: '{"a":"1"}',
    Kind.ENVIRONMENT: "production",
    Kind.ACTIVITY_KIND: "event",
}


def test_publisher_parameters_are_not_offered_to_partners() -> None:
    template = {"url": "https://partner.test/pb", "params": {"p": "{publisher_parameters}"}}
    with pytest.raises(ConfigError, match="publisher_parameters"):
        settings(template=template)


@pytest.mark.parametrize(
    "sandbox_url",
    [
        "https://partner.test/pb/{credential} ",
        "HTTPS://Partner.TEST:443/pb/{credential}/",
    ],
)
def test_sandbox_url_must_not_be_the_production_url(sandbox_url: str) -> None:
    template = {"url": "https://partner.test/pb/{credential}", "sandbox_url": sandbox_url}
    with pytest.raises(ConfigError, match="sandbox_url"):
        settings(template=template)
    # Another path on the same host is the partner's business.
    template["sandbox_url"] = "https://partner.test/sandbox/{credential}"
    settings(template=template)
