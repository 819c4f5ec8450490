"""The pure parts of the App Automation client and commands: requests, answers, diffs."""

from __future__ import annotations

from typing import Any

import pytest

from postback_hub.adjust.automation import (
    CreateRequest,
    UnexpectedAnswer,
    channel_setup_diff,
    masked_request,
    parse_app,
    parse_channels,
    parse_ticket,
)
from postback_hub.adjust.commands import differing_settings, import_fragment
from postback_hub.service.adjust_settings import AppBinding, ReportSettings

_APP = {
    "name": "Test App Name",
    "platform": "android",
    "store_id": "test.bundle.app",
    "adjust_app_token": "p77yk727r18g",
    "additional_info": {"overrides": {}},
    "channel_setup": {"facebook": {"app_id": "123456789"}},
    "cross_promo_token": "hgj3li1",
    "android_signature_hash": "FF:FF",
}


def test_an_app_answer_as_adjust_documents_it() -> None:
    app = parse_app(_APP)
    assert (app.app_token, app.platform, app.store_id) == (
        "p77yk727r18g",
        "android",
        "test.bundle.app",
    )
    assert app.channel_setup == {"facebook": {"app_id": "123456789"}}


@pytest.mark.parametrize(
    "answer", [[], {"platform": "ios", "store_id": "1"}, {**_APP, "channel_setup": [1]}]
)
def test_an_app_answer_of_another_shape_is_refused(answer: Any) -> None:
    with pytest.raises(UnexpectedAnswer):
        parse_app(answer)


def test_channels_as_a_bare_list_or_an_object() -> None:
    assert parse_channels(["unityads", "tapjoy", "tapjoy"]) == ["tapjoy", "unityads"]
    assert parse_channels({"channels": ["facebook"]}) == ["facebook"]
    with pytest.raises(UnexpectedAnswer):
        parse_channels({"channels": [1]})


def test_ticket_sections_successes_failures_and_details() -> None:
    status = parse_ticket(
        {
            "status": "failed",
            "kind": "migration",
            "result": {
                "events": {"successes": ["purchase"], "failures": []},
                "partners": {"section": "partners", "detail": "Could not be started"},
            },
        }
    )
    assert status.status == "FAILED"
    assert status.finished
    events, partners = status.sections
    assert events.successes == ("purchase",)
    assert partners.detail == "Could not be started"
    assert not parse_ticket({"status": "OPENED"}).finished
    with pytest.raises(UnexpectedAnswer, match="unknown ticket status"):
        parse_ticket({"status": "PAUSED"})


def test_the_diff_names_every_added_removed_and_changed_parameter() -> None:
    current = {"facebook": {"app_id": "1"}, "snapchat": {"snap_app_id": "s"}, "x": {}}
    new = {"facebook": {"app_id": "2"}, "google": {"link_id": "g"}, "x": {}}
    assert channel_setup_diff(current, new) == [
        '~ facebook.app_id: "1" -> "2"',
        '+ google.link_id = "g"',
        '- snapchat.snap_app_id = "s"',
    ]
    assert channel_setup_diff(new, new) == []


def test_a_create_request_is_checked_before_it_is_sent() -> None:
    def request(**overrides: Any) -> CreateRequest:
        fields: dict[str, Any] = {
            "name": "App",
            "store_id": "com.a",
            "platform": "android",
            "bundle_id": "com.a",
            "template_app_token": "tmpl1",
            **overrides,
        }
        return CreateRequest(**fields)

    assert request().body() == {
        "name": "App",
        "store_id": "com.a",
        "platform": "android",
        "bundle_id": "com.a",
        "template_app_token": "tmpl1",
    }
    with pytest.raises(ValueError, match="platform"):
        request(platform="windows")
    with pytest.raises(ValueError, match="name must not be empty"):
        request(name=" ")
    with pytest.raises(ValueError, match=r"template_app_token .* or force_update"):
        request(template_app_token=None)
    with pytest.raises(ValueError, match="letters and digits"):
        request(template_app_token="a/../b")
    update = request(template_app_token=None, force_update=True, editors=("a@x", "b@x"))
    assert update.body()["force_update"] is True
    assert update.body()["editors"] == "a@x,b@x"


def test_the_dry_run_request_masks_every_token() -> None:
    request = CreateRequest(
        "A", "1", "ios", "b", template_app_token="t1", android_signature_hash="h"
    )
    shown = masked_request("https://settings.adjust.com/api/", request, signature=True)
    assert shown["url"] == "https://settings.adjust.com/api/app"
    assert shown["headers"]["AdjustAuthorization"] == "Token ***"
    assert shown["headers"]["SignatureAuthorization"] == "Token ***"


def test_import_fragment_for_x_follows_store_id_and_platform() -> None:
    app = parse_app({**_APP, "platform": "ios", "store_id": "id333903271"})
    document = {
        "apps": {"demo": {"secret": {"env": "S"}}},
        "destinations": {"x": {"apps": {"demo": {"consumer_key": {"env": "CK"}}}}},
    }
    fragment = import_fragment(document, "shop", "main", None, app, ["x"])
    assert fragment["apps"]["shop"]["secret"] == {"env": "POSTBACK_HUB_SHOP_SECRET"}
    binding = fragment["apps"]["shop"]["adjust"]
    assert binding["app_token"] == "p77yk727r18g"
    assert binding["attribution_types"] == ["click", "engaged_ad"]
    x_app = fragment["destinations"]["x"]["apps"]["shop"]
    assert (x_app["app_id"], x_app["os_type"]) == ("333903271", "IOS")
    assert x_app["consumer_key"] == {"env": "CK"}
    assert x_app["hmac_key"] == {"env": "POSTBACK_HUB_X_SHOP_HMAC_KEY"}
    existing = import_fragment(document, "demo", "main", None, app, ["x"])
    assert existing["apps"]["demo"] == {"adjust": binding}  # the app's secret is left alone
    assert existing["destinations"]["x"]["apps"]["demo"] == {
        "app_id": "333903271",
        "os_type": "IOS",
    }


def test_settings_that_differ_from_the_accounts_usual_are_named() -> None:
    usual = ReportSettings(attribution_types=["click"], currency="EUR")
    binding = AppBinding(
        account="main", app_token="a1", attribution_types=["click"], currency="USD", sandbox=True
    )
    assert differing_settings(binding, usual) == [
        'currency = "USD" (usual "EUR")',
        "sandbox = true (usual false)",
    ]
