"""`postback-hub adjust ...` against the strict fake App Automation API.

Every command's stdout, stderr and log records are collected and, after each
test, searched for the API and signature tokens: none may ever appear.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomlkit

from postback_hub.adjust.automation import AutomationClient
from postback_hub.adjust.http import RedirectRefused, RetriesExhausted, RetryPolicy
from postback_hub.cli import main
from postback_hub.consumers.registry import load_settings
from tests.fake_adjust_automation import API_TOKEN, SIGNATURE_TOKEN, FakeAutomation, OtherHost
from tests.support import NO_BROKER, SECRET, SECRET_ENV, settings_document, x_destination

pytestmark = pytest.mark.integration

TOKEN_ENV = "POSTBACK_HUB_TEST_ADJUST_API_TOKEN"
SIGNATURE_ENV = "POSTBACK_HUB_TEST_ADJUST_SIGNATURE_TOKEN"
IOS_TOKEN = "ios4app7token"
ANDROID_TOKEN = "andr0idtoken1"
TEMPLATE = "templ8te0app1"

Transcript = list[str]


@pytest.fixture
def transcript(caplog: pytest.LogCaptureFixture) -> Iterator[Transcript]:
    """Every output and log line of the commands a test runs; checked for tokens at the end."""
    lines: Transcript = []
    caplog.set_level(logging.DEBUG)
    yield lines
    everything = "\n".join(lines) + "\n" + "\n".join(r.getMessage() for r in caplog.records)
    everything += "\n" + caplog.text
    for token in (API_TOKEN, SIGNATURE_TOKEN):
        assert token not in everything
        assert token[4:] not in everything  # not even without its prefix


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(TOKEN_ENV, API_TOKEN)
    monkeypatch.setenv(SIGNATURE_ENV, SIGNATURE_TOKEN)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAutomation]:
    fake = await FakeAutomation().start()
    fake.add_app(
        IOS_TOKEN,
        "333903271",
        "ios",
        name="Demo iOS",
        channel_setup={"facebook": {"app_id": "123456789"}},
        channels=["twitter", "facebook"],
    )
    fake.add_app(ANDROID_TOKEN, "com.example.app", "android", name="Demo Android")
    fake.add_app(
        TEMPLATE,
        "com.example.template",
        "android",
        name="Template",
        channel_setup={"snapchat": {"snap_app_id": "snap-1"}},
    )
    yield fake
    await fake.stop()


@pytest.fixture
async def other_host() -> AsyncIterator[OtherHost]:
    host = await OtherHost().start()
    yield host
    await host.stop()


def _document(fake: FakeAutomation, **binding: Any) -> dict[str, Any]:
    account = {
        "api_token": {"env": TOKEN_ENV},
        "signature_token": {"env": SIGNATURE_ENV},
        "automation_url": fake.url,
        "report": {"utc_offset": "+00:00", "attribution_types": ["click", "engaged_ad"]},
    }
    document = settings_document(
        NO_BROKER,
        "callbacks",
        0,
        destinations={"x": x_destination("http://127.0.0.1:1")},
        adjust={"accounts": {"main": account}},
    )
    document["apps"]["demo"]["adjust"] = {
        "account": "main",
        "app_token": IOS_TOKEN,
        "attribution_types": ["click", "engaged_ad"],
        **binding,
    }
    return document


def _write(path: Path, document: dict[str, Any]) -> Path:
    # Tables, not inline tables (as tests.support writes), like an operator's file.
    path.write_text(tomlkit.dumps(document))
    return path


def _config(tmp_path: Path, fake: FakeAutomation, **binding: Any) -> Path:
    return _write(tmp_path / "config.toml", _document(fake, **binding))


async def _run(
    args: list[str], transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, args)
    captured = capsys.readouterr()
    transcript += [captured.out, captured.err]
    return code, captured.out, captured.err


# ------------------------------------------------------------------ app show


async def test_show_by_token_and_by_store_id(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, out, _ = await _run(
        ["adjust", "app", "show", "--config", str(config), "--app-token", IOS_TOKEN],
        transcript,
        capsys,
    )
    assert code == 0
    assert "store id:    333903271" in out
    assert 'facebook.app_id = "123456789"' in out
    args = ["adjust", "app", "show", "--config", str(config), "--json"]
    code, out, _ = await _run(
        [*args, "--store-id", "com.example.app", "--platform", "android"], transcript, capsys
    )
    assert code == 0
    assert json.loads(out)["app"]["adjust_app_token"] == ANDROID_TOKEN
    assert fake.calls[-1].query == {"store_id": "com.example.app", "platform": "android"}
    assert all(call.authorized for call in fake.calls)


async def test_show_unknown_app_says_so(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, out, err = await _run(
        ["adjust", "app", "show", "--config", str(config), "--app-token", "nosuchapp", "--json"],
        transcript,
        capsys,
    )
    assert code == 1
    assert json.loads(out) == {"error": "no app with app token nosuchapp on account main"}
    assert err.strip() == "adjust: no app with app token nosuchapp on account main"


async def test_a_wrong_token_is_one_line_saying_what_to_do(
    tmp_path: Path,
    fake: FakeAutomation,
    transcript: Transcript,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "an-old-token-that-was-reset")
    config = _config(tmp_path, fake)
    code, _, err = await _run(
        ["adjust", "app", "show", "--config", str(config), "--app-token", IOS_TOKEN],
        transcript,
        capsys,
    )
    assert code == 1
    assert err.count("\n") == 1
    assert "401, the API token of account main is invalid or was reset" in err
    assert f"env:{TOKEN_ENV}" in err
    assert "an-old-token-that-was-reset" not in err
    assert not fake.calls[0].authorized


async def test_an_app_the_user_cannot_see_is_a_403_message(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.forbidden.add(ANDROID_TOKEN)
    config = _config(tmp_path, fake)
    code, _, err = await _run(
        ["adjust", "app", "show", "--config", str(config), "--app-token", ANDROID_TOKEN],
        transcript,
        capsys,
    )
    assert code == 1
    assert f"403, this Adjust user cannot see or change app {ANDROID_TOKEN}" in err


async def test_an_unset_token_is_named_before_any_request(
    tmp_path: Path,
    fake: FakeAutomation,
    transcript: Transcript,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    config = _config(tmp_path, fake)
    code, _, err = await _run(
        ["adjust", "app", "show", "--config", str(config), "--app-token", IOS_TOKEN],
        transcript,
        capsys,
    )
    assert code == 2
    assert f"adjust.accounts.main.api_token: environment variable {TOKEN_ENV} is not set" in err
    assert fake.calls == []


async def test_a_429_is_retried_after_its_retry_after(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_next = [(429, {"Retry-After": "1"}), (503, {})]
    config = _config(tmp_path, fake)
    code, out, _ = await _run(
        ["adjust", "app", "show", "--config", str(config), "--app-token", IOS_TOKEN],
        transcript,
        capsys,
    )
    assert code == 0
    assert "Demo iOS" in out
    assert [(c.path, c.status) for c in fake.calls] == [
        (f"/api/app/{IOS_TOKEN}", s) for s in (429, 503, 200)
    ]


async def test_the_client_waits_what_retry_after_asks_and_gives_up_in_bounds(
    fake: FakeAutomation, transcript: Transcript
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = load_settings(_config_path_for_client(fake))
    account = settings.adjust.accounts["main"]
    fake.fail_next = [(429, {"Retry-After": "7"}), (502, {}), (429, {"Retry-After": "3"})]
    async with aiohttp.ClientSession() as session:
        client = AutomationClient.for_account(session, "main", account, sleep=sleep)
        client.http.rng = random.Random(3)
        app = await client.app_by_token(IOS_TOKEN)
        assert app is not None
        assert [c.status for c in fake.calls] == [429, 502, 429, 200]
        assert len(waits) == 3
        assert 7.0 <= waits[0] <= 7.7
        assert waits[1] <= 1.0  # the second retry's backoff ceiling (0.5 * 2)
        assert 3.0 <= waits[2] <= 3.3

        fake.fail_next = [(503, {})] * 10
        fake.calls.clear()
        client = AutomationClient.for_account(
            session, "main", account, sleep=sleep, policy=RetryPolicy(attempts=4)
        )
        with pytest.raises(RetriesExhausted, match="still failing \\(503\\) after 4 attempts"):
            await client.app_by_token(IOS_TOKEN)
        assert len(fake.calls) == 4

        fake.fail_next = [(429, {"Retry-After": "86400"})]
        fake.calls.clear()
        with pytest.raises(RetriesExhausted, match="asks to wait 86400s; try again later"):
            await client.app_by_token(IOS_TOKEN)
        assert len(fake.calls) == 1
    transcript.append("client-level test: messages checked by pytest.raises")


def _config_path_for_client(fake: FakeAutomation) -> Path:
    import tempfile

    directory = Path(tempfile.mkdtemp())
    return _write(directory / "config.toml", _document(fake))


async def test_a_redirect_is_refused_and_never_carries_the_token(
    tmp_path: Path,
    fake: FakeAutomation,
    other_host: OtherHost,
    transcript: Transcript,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.redirect_to = other_host.url + "?next=/secret-path"
    config = _config(tmp_path, fake)
    for args in (
        ["app", "show", "--app-token", IOS_TOKEN],
        ["app", "channels", "--app", "demo"],
        [
            "app",
            "create",
            "--name",
            "N",
            "--store-id",
            "s.t",
            "--platform",
            "ios",
            "--template-app-token",
            TEMPLATE,
        ],
    ):
        code, _, err = await _run(["adjust", *args, "--config", str(config)], transcript, capsys)
        assert code == 1
        assert "with a redirect to localhost; not followed" in err
        assert "secret-path" not in err
        assert "/collect" not in err
    assert other_host.headers == []  # never called, so never with the token
    assert len(fake.calls) == 3


async def test_a_redirect_is_a_typed_error_without_details(fake: FakeAutomation) -> None:
    fake.redirect_to = "https://evil.example/steal?token=x"
    settings = load_settings(_config_path_for_client(fake))
    async with aiohttp.ClientSession() as session:
        client = AutomationClient.for_account(session, "main", settings.adjust.accounts["main"])
        with pytest.raises(RedirectRefused) as caught:
            await client.channels(IOS_TOKEN)
    assert "evil.example" in str(caught.value)
    assert "steal" not in repr(caught.value)
    assert API_TOKEN not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or API_TOKEN not in repr(caught.value.__context__)


# ------------------------------------------------------------------ app channels


async def test_channels_by_token_and_by_app_key(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, out, _ = await _run(
        ["adjust", "app", "channels", "--config", str(config), "--app", "demo", "--json"],
        transcript,
        capsys,
    )
    assert code == 0
    assert json.loads(out)["channels"] == ["facebook", "twitter"]
    code, out, _ = await _run(
        ["adjust", "app", "channels", "--config", str(config), "--app-token", ANDROID_TOKEN],
        transcript,
        capsys,
    )
    assert code == 0
    assert f"app {ANDROID_TOKEN} has no channel with an active tracker" in out


# ------------------------------------------------------------------ app import


async def test_import_prints_a_fragment_that_check_config_accepts(
    tmp_path: Path,
    fake: FakeAutomation,
    transcript: Transcript,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _config(tmp_path, fake)
    code, out, _ = await _run(
        [
            "adjust",
            "app",
            "import",
            "--config",
            str(config),
            "--store-id",
            "com.example.app",
            "--platform",
            "android",
            "--as",
            "shop",
        ],
        transcript,
        capsys,
    )
    assert code == 0
    assert "[apps.shop.adjust]" in out
    assert f'app_token = "{ANDROID_TOKEN}"' in out
    assert "[destinations.x.apps.shop]" in out
    assert 'app_id = "com.example.app"' in out
    assert 'os_type = "ANDROID"' in out
    combined = tmp_path / "combined.toml"
    combined.write_text(config.read_text() + "\n" + out)
    monkeypatch.setenv("POSTBACK_HUB_SHOP_SECRET", "shop-secret")
    code, _, problems = await _run(["check-config", str(combined)], transcript, capsys)
    assert code == 0, out + problems
    settings = load_settings(combined)
    binding = settings.apps["shop"].adjust
    assert binding is not None
    assert binding.app_token == ANDROID_TOKEN
    assert binding.attribution_types == ["click", "engaged_ad"]
    x_app = settings.destinations["x"].apps["shop"]  # type: ignore[attr-defined]
    assert (x_app.app_id, x_app.os_type) == ("com.example.app", "ANDROID")
    # A new X app reuses the destination's credential references, never values.
    assert x_app.consumer_key.source == "env:XT_CONSUMER_KEY"


async def test_import_write_keeps_the_files_comments(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    original = "# operators' notes: keep me\n" + config.read_text().replace(
        "[apps.locked]", "# the locked app\n[apps.locked]"
    )
    config.write_text(original)
    code, _, err = await _run(
        [
            "adjust",
            "app",
            "import",
            "--config",
            str(config),
            "--store-id",
            "333903271",
            "--platform",
            "ios",
            "--as",
            "demo",
            "--write",
        ],
        transcript,
        capsys,
    )
    assert code == 0, err
    text = config.read_text()
    assert text.startswith("# operators' notes: keep me\n")
    assert "# the locked app\n" in text
    settings = load_settings(config)
    binding = settings.apps["demo"].adjust
    assert binding is not None
    assert binding.app_token == IOS_TOKEN
    x_app = settings.destinations["x"].apps["demo"]  # type: ignore[attr-defined]
    assert (x_app.app_id, x_app.os_type) == ("333903271", "IOS")


async def test_import_of_an_unknown_store_id_fails(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    before = config.read_text()
    code, _, err = await _run(
        [
            "adjust",
            "app",
            "import",
            "--config",
            str(config),
            "--store-id",
            "nope",
            "--platform",
            "ios",
            "--as",
            "x1",
            "--write",
        ],
        transcript,
        capsys,
    )
    assert code == 1
    assert "no app with store id nope on ios on account main" in err
    assert config.read_text() == before


# ------------------------------------------------------------------ app create


def _setup_file(tmp_path: Path, setup: dict[str, Any]) -> Path:
    path = tmp_path / "channel_setup.json"
    path.write_text(json.dumps(setup))
    return path


async def test_create_dry_run_shows_the_exact_request_masked_and_sends_nothing(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    setup = {"facebook": {"app_id": "42"}}
    code, out, _ = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "New",
            "--store-id",
            "com.new.app",
            "--platform",
            "android",
            "--template-app-token",
            TEMPLATE,
            "--channel-setup",
            str(_setup_file(tmp_path, setup)),
            "--dry-run",
            "--json",
        ],
        transcript,
        capsys,
    )
    assert code == 0
    shown = json.loads(out)["request"]
    assert shown == {
        "method": "POST",
        "url": f"{fake.url}/app",
        "headers": {"AdjustAuthorization": "Token ***", "Content-Type": "application/json"},
        "body": {
            "name": "New",
            "store_id": "com.new.app",
            "platform": "android",
            "bundle_id": "com.new.app",
            "template_app_token": TEMPLATE,
            "channel_setup": setup,
        },
    }
    assert [c.method for c in fake.calls] == []


async def test_create_from_a_template_follows_the_ticket_to_completed(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    setup = {"facebook": {"app_id": "42"}}
    code, out, _ = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "New",
            "--store-id",
            "com.new.app",
            "--platform",
            "android",
            "--template-app-token",
            TEMPLATE,
            "--channel-setup",
            str(_setup_file(tmp_path, setup)),
            "--poll-interval-s",
            "0.01",
        ],
        transcript,
        capsys,
    )
    assert code == 0, out
    assert "ticket NEW\nticket OPENED\nticket COMPLETED" in out
    assert "partners: succeeded facebook; failed -" in out
    created = next(a for a in fake.apps.values() if a["store_id"] == "com.new.app")
    assert created["channel_setup"] == setup
    polls = [c for c in fake.calls if c.path.startswith("/api/status/")]
    assert len(polls) == 3


async def test_a_failed_ticket_exits_1_with_the_failing_section(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_tickets = True
    config = _config(tmp_path, fake)
    code, out, _ = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "New",
            "--store-id",
            "com.new.app",
            "--platform",
            "android",
            "--template-app-token",
            TEMPLATE,
            "--poll-interval-s",
            "0.01",
            "--json",
        ],
        transcript,
        capsys,
    )
    assert code == 1
    ticket = json.loads(out)["ticket"]
    assert ticket["status"] == "FAILED"
    assert ticket["sections"]["partners"]["detail"].startswith("Could not be started")
    assert ticket["sections"]["events"]["successes"] == ["purchase"]


async def test_adjust_refusing_a_create_is_a_400_message(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, _, err = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "New",
            "--store-id",
            "com.new.app",
            "--platform",
            "android",
            "--template-app-token",
            "unknownTemplate",
        ],
        transcript,
        capsys,
    )
    assert code == 1
    assert "400, Adjust refused the request as invalid" in err
    assert "(Adjust says: template_app_token: no such app)" in err


async def test_an_update_shows_the_change_and_replaces_the_setup_whole(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.apps[IOS_TOKEN]["channel_setup"] = {
        "facebook": {"app_id": "1"},
        "snapchat": {"snap_app_id": "s"},
    }
    new = {"facebook": {"app_id": "2"}, "google": {"link_id": "g"}}
    config = _config(tmp_path, fake)
    args = [
        "adjust",
        "app",
        "create",
        "--config",
        str(config),
        "--name",
        "Demo iOS",
        "--store-id",
        "333903271",
        "--platform",
        "ios",
        "--force-update",
        "--channel-setup",
        str(_setup_file(tmp_path, new)),
        "--poll-interval-s",
        "0.01",
    ]
    code, out, _ = await _run([*args, "--dry-run"], transcript, capsys)
    assert code == 0
    assert '~ facebook.app_id: "1" -> "2"' in out
    assert '+ google.link_id = "g"' in out
    assert '- snapchat.snap_app_id = "s"' in out
    assert fake.apps[IOS_TOKEN]["channel_setup"]["snapchat"] == {"snap_app_id": "s"}
    code, out, _ = await _run(args, transcript, capsys)
    assert code == 0, out
    assert fake.apps[IOS_TOKEN]["channel_setup"] == new
    post = next(c for c in fake.calls if c.method == "POST")
    assert post.body["force_update"] is True
    assert post.body["channel_setup"] == new


async def test_an_update_without_a_setup_file_resends_the_current_setup(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, out, _ = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "Renamed",
            "--store-id",
            "333903271",
            "--platform",
            "ios",
            "--force-update",
            "--no-follow",
        ],
        transcript,
        capsys,
    )
    assert code == 0, out
    assert "channel_setup changes:\n  none" in out
    post = next(c for c in fake.calls if c.method == "POST")
    assert post.body["channel_setup"] == {"facebook": {"app_id": "123456789"}}
    assert fake.apps[IOS_TOKEN]["name"] == "Renamed"


async def test_a_signature_hash_is_sent_with_the_signature_token(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, _, err = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "Demo Android",
            "--store-id",
            "com.example.app",
            "--platform",
            "android",
            "--force-update",
            "--android-signature-hash",
            "45:a7:2b",
            "--no-follow",
        ],
        transcript,
        capsys,
    )
    assert code == 0, err
    post = next(c for c in fake.calls if c.method == "POST")
    assert post.status == 200  # the fake answers 403 without a valid SignatureAuthorization
    assert post.body["android_signature_hash"] == "45:a7:2b"


async def test_create_checks_its_arguments_before_sending(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    bad = tmp_path / "bad.json"
    bad.write_text('{"facebook": "not a table"}')
    code, _, err = await _run(
        [
            "adjust",
            "app",
            "create",
            "--config",
            str(config),
            "--name",
            "N",
            "--store-id",
            "a.b",
            "--platform",
            "ios",
            "--template-app-token",
            TEMPLATE,
            "--channel-setup",
            str(bad),
        ],
        transcript,
        capsys,
    )
    assert code == 2
    assert "channel_setup.facebook must be a table of parameters" in err
    assert fake.calls == []


# ------------------------------------------------------------------ check


async def test_check_agrees_when_everything_matches(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake)
    code, out, _ = await _run(["adjust", "check", "--config", str(config)], transcript, capsys)
    assert code == 0, out
    assert f"demo: OK (app token {IOS_TOKEN}, account main)" in out
    assert "destination x: channel twitter is active" in out
    assert "destination x sends IOS 333903271" in out


async def test_check_finds_a_platform_mismatch_and_a_missing_channel(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    # The binding names the Android app, while the X destination sends iOS.
    config = _config(tmp_path, fake, app_token=ANDROID_TOKEN, utc_offset="+05:30")
    code, out, _ = await _run(
        ["adjust", "check", "--config", str(config), "--json"], transcript, capsys
    )
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    problems = report["apps"]["demo"]["problems"]
    assert (
        "platform: Adjust has android, destination x sends os_type IOS (expected ANDROID)"
        in problems
    )
    assert "destination x: Adjust lists no active channel twitter for this app" in problems
    warnings = report["apps"]["demo"]["warnings"]
    assert warnings == [
        'report settings differ from account main\'s usual: utc_offset = "+05:30" (usual "+00:00")'
    ]


async def test_check_finds_a_store_id_mismatch_and_a_missing_app(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.apps[IOS_TOKEN]["store_id"] = "999"
    config = _config(tmp_path, fake)
    code, out, _ = await _run(["adjust", "check", "--config", str(config)], transcript, capsys)
    assert code == 1
    assert "store id: Adjust has 999, destination x sends app_id 333903271" in out
    del fake.apps[IOS_TOKEN]
    code, out, _ = await _run(["adjust", "check", "--config", str(config)], transcript, capsys)
    assert code == 1
    assert f"problem: app token {IOS_TOKEN} does not exist on account main" in out


async def test_check_uses_the_configured_channel_of_a_module_partner(
    tmp_path: Path, fake: FakeAutomation, transcript: Transcript, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import module_destination

    document = _document(fake)
    document["destinations"]["bia"] = module_destination("http://127.0.0.1:1")
    document["adjust"]["channels"] = {"bia": "backinapp"}
    config = _write(tmp_path / "config.toml", document)
    code, out, _ = await _run(["adjust", "check", "--config", str(config)], transcript, capsys)
    assert code == 1
    assert "destination bia: Adjust lists no active channel backinapp for this app" in out
    fake.channels[IOS_TOKEN].append("backinapp")
    code, out, _ = await _run(["adjust", "check", "--config", str(config)], transcript, capsys)
    assert code == 0, out
