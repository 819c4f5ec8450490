"""The X support commands against the strict fake X."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from postback_hub.cli import main
from postback_hub.consumers.registry import load_settings
from tests.fake_x import FakeX
from tests.support import (
    NO_BROKER,
    SECRET,
    SECRET_ENV,
    X_KEY_B64,
    settings_document,
    write_config,
    x_conversions,
    x_destination,
)
from tests.unit.test_x import independent_hash

pytestmark = pytest.mark.integration

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


@pytest.fixture(autouse=True)
def _app_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def _config(tmp_path: Path, fake: FakeX) -> Path:
    app = {"account_id": "18ce54d4x5t", "event_tags_file": str(tmp_path / "tags.json")}
    document = settings_document(
        NO_BROKER, "callbacks", 0, destinations={"x": x_destination(fake.url, app)}
    )
    return write_config(tmp_path / "config.toml", document)


async def test_hash_prints_the_formula(
    tmp_path: Path, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake_x)
    assert (
        await asyncio.to_thread(main, ["x", "hash", IDFA, "--app", "demo", "--config", str(config)])
        == 0
    )
    assert capsys.readouterr().out.strip() == independent_hash(X_KEY_B64, IDFA)


async def test_attribution_is_asked_with_a_valid_signature(
    tmp_path: Path, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, fake_x)
    fake_x.attributed.add(independent_hash(X_KEY_B64, IDFA))
    args = ["x", "attribution", "--app", "demo", "--config", str(config), "--device-id", IDFA]
    args += ["--type", "INSTALL", "--time", "2026-11-23T10:00:00.000Z"]
    assert await asyncio.to_thread(main, args) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["data"]["twitter_attribution"]["attribution_type"] == "PROMOTED"
    assert fake_x.calls[-1].path == "/12/conversion_attribution"
    assert fake_x.conversions() == []  # asking records nothing


async def test_event_tags_sync_adopts_xs_windows(
    tmp_path: Path, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_x.event_tags = [
        {
            "app_store_identifier": "333903271",
            "conversion_type": "PURCHASE",
            "deleted": False,
            "post_engagement_attribution_window": 30,
            "post_view_attribution_window": 7,
        },
        {
            "app_store_identifier": "333903271",
            "conversion_type": "INSTALL",
            "deleted": True,
            "post_engagement_attribution_window": 1,
            "post_view_attribution_window": 0,
        },
        {
            "app_store_identifier": "com.other",
            "conversion_type": "SIGN_UP",
            "deleted": False,
            "post_engagement_attribution_window": 7,
            "post_view_attribution_window": 1,
        },
    ]
    config = _config(tmp_path, fake_x)
    args = ["x", "event-tags", "sync", "--app", "demo", "--config", str(config)]
    assert await asyncio.to_thread(main, args) == 0
    assert "PURCHASE: click_window=30 view_through_window=7" in capsys.readouterr().out
    saved = json.loads((tmp_path / "tags.json").read_text())
    assert saved["windows"] == {"PURCHASE": [30, 7]}
    destination = x_conversions(load_settings(config))
    assert destination._windows["demo"]["PURCHASE"] == (30, 7)


async def test_event_tags_sync_does_not_adopt_windows_x_would_refuse(
    tmp_path: Path, fake_x: FakeX, capsys: pytest.CaptureFixture[str]
) -> None:
    def tag(kind: str, click: object, view: object) -> dict[str, object]:
        return {
            "id": kind.lower(),
            "app_store_identifier": "333903271",
            "conversion_type": kind,
            "deleted": False,
            "post_engagement_attribution_window": click,
            "post_view_attribution_window": view,
        }

    fake_x.event_tags = [
        tag("PURCHASE", 7, 14),  # click below view-through
        tag("SIGN_UP", None, 1),
        tag("LOGIN", 7, 1),
    ]
    config = _config(tmp_path, fake_x)
    # A file the destination would refuse to start with can still be replaced.
    (tmp_path / "tags.json").write_text(json.dumps({"windows": {"PURCHASE": [7, 14]}}))
    args = ["x", "event-tags", "sync", "--app", "demo", "--config", str(config)]
    assert await asyncio.to_thread(main, args) == 1
    errors = capsys.readouterr().err
    assert "tag 'purchase' not adopted: the click window (7) must be >=" in errors
    assert "tag 'sign_up' not adopted: click window None is not one of" in errors
    saved = json.loads((tmp_path / "tags.json").read_text())
    assert saved["windows"] == {"LOGIN": [7, 1]}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--time", "2026-11-23T10:00:00Z"], "write UTC with milliseconds"),
        (["--time", "2026-13-23T10:00:00.000Z"], "write UTC with milliseconds"),
        (["--time", "٢٠٢٦-11-23T10:00:00.000Z"], "write UTC with milliseconds"),
        (["--click-window", "7", "--view-through-window", "14"], "must be >="),
    ],
)
async def test_attribution_refuses_what_x_would_refuse(
    tmp_path: Path, fake_x: FakeX, extra: list[str], message: str
) -> None:
    config = _config(tmp_path, fake_x)
    args = ["x", "attribution", "--app", "demo", "--config", str(config), "--device-id", IDFA]
    args += ["--type", "INSTALL", "--time", "2026-11-23T10:00:00.000Z", *extra]
    with pytest.raises(SystemExit, match=message):
        await asyncio.to_thread(main, args)
    assert fake_x.calls == []
