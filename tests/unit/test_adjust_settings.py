"""[adjust.accounts.NAME] and [apps.KEY.adjust]: every field checked, every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postback_hub.cli import main
from postback_hub.consumers.registry import load_settings, parse_settings
from postback_hub.service.adjust_settings import AppBinding, checked_utc_offset
from postback_hub.service.settings import ConfigError
from tests.support import write_config

TOKEN_ENV = "POSTBACK_HUB_TEST_ADJUST_TOKEN"


def _binding(**overrides: Any) -> dict[str, Any]:
    return {
        "account": "main",
        "app_token": "abc123def456",
        "attribution_types": ["click", "engaged_ad"],
        **overrides,
    }


def _document(**apps: dict[str, Any]) -> dict[str, Any]:
    return {
        "adjust": {"accounts": {"main": {"api_token": {"env": TOKEN_ENV}}}},
        "apps": {
            key: {"secret": {"env": TOKEN_ENV}, "adjust": binding} for key, binding in apps.items()
        },
    }


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "adjust-api-token-value")


def _problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(document)
    return caught.value.problems


def test_a_full_binding_loads_with_adjusts_meanings() -> None:
    settings = parse_settings(
        _document(
            demo=_binding(
                utc_offset="+05:45",
                attribution_source="first",
                attribution_status="installed",
                ad_revenue_sources=["applovin_max_sdk", "ironsource_sdk"],
                currency="EUR",
                sandbox=True,
            )
        )
    )
    binding = settings.apps["demo"].adjust
    assert binding is not None
    assert binding.utc_offset == "+05:45"
    assert binding.reattributed() == "false"
    assert binding.attribution_types == ["click", "engaged_ad"]
    account = settings.adjust.accounts["main"]
    assert account.api_token.reveal() == "adjust-api-token-value"
    assert account.automation_url == "https://settings.adjust.com/api"
    assert account.report_service_url == "https://automate.adjust.com/reports-service"
    assert account.kpi_service_url == "https://api.adjust.com/kpis/v1"
    assert account.pull_backend == "report_service"
    assert "adjust-api-token-value" not in repr(settings)


@pytest.mark.parametrize(
    ("status", "reattributed"), [("all", "all"), ("installed", "false"), ("reattributed", "true")]
)
def test_attribution_status_maps_to_reattributed(status: str, reattributed: str) -> None:
    binding = AppBinding.model_validate(_binding(attribution_status=status))
    assert binding.reattributed() == reattributed


@pytest.mark.parametrize("offset", ["+00:00", "-03:30", "+05:30", "+05:45", "+12:45", "+14:00"])
def test_real_offsets_are_accepted(offset: str) -> None:
    assert checked_utc_offset(offset) == offset


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        ("05:30", "write [+-]HH:MM"),
        ("+5:30", "write [+-]HH:MM"),
        ("+05:15", "not a UTC offset in use"),
        ("+15:00", "not a UTC offset in use"),
        ("-13:00", "not a UTC offset in use"),
        ("-00:00", "write +00:00"),
        ("+\u0660\u0665:\u0663\u0660", "write [+-]HH:MM"),  # Arabic-Indic digits,
    ],
)
def test_impossible_offsets_are_refused(offset: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("+", r"\+")):
        checked_utc_offset(offset)


def test_attribution_types_are_required_explicitly() -> None:
    binding = _binding()
    del binding["attribution_types"]
    assert _problems(_document(demo=binding)) == [
        "apps.demo.adjust.attribution_types: Field required"
    ]


def test_every_problem_of_every_binding_is_reported_at_once() -> None:
    document = _document(
        a=_binding(utc_offset="+05:15", currency="usd", attribution_types=["view"]),
        b=_binding(account="gone", app_token="has-dash", attribution_status="some"),
        c=_binding(attribution_source="last", ad_revenue_sources=["x", "x"], sandbox="maybe"),
    )
    document["adjust"]["accounts"]["main"]["automation_url"] = "http://settings.example.com/api"
    document["adjust"]["accounts"]["main"]["pull_backend"] = "csv"
    problems = _problems(document)
    where = sorted(problem.split(":", 1)[0] for problem in problems)
    assert where == sorted(
        [
            "apps.a.adjust.utc_offset",
            "apps.a.adjust.currency",
            "apps.a.adjust.attribution_types.0",
            "apps.b.adjust.account",
            "apps.b.adjust.app_token",
            "apps.b.adjust.attribution_status",
            "apps.c.adjust.attribution_source",
            "apps.c.adjust.ad_revenue_sources",
            "apps.c.adjust.sandbox",
            "adjust.accounts.main.automation_url",
            "adjust.accounts.main.pull_backend",
        ]
    )
    text = "\n".join(problems)
    assert "write it upper-case" in text
    assert "apps.b.adjust.account: no [adjust.accounts.gone] (known: main)" in text
    assert "use https://" in text


def test_unknown_account_is_reported_when_everything_else_is_valid() -> None:
    assert _problems(_document(demo=_binding(account="other"))) == [
        "apps.demo.adjust.account: no [adjust.accounts.other] (known: main)"
    ]


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    problems = _problems(_document(demo=_binding(utc_ofset="+01:00")))
    assert problems == ["apps.demo.adjust.utc_ofset: unknown key; did you mean 'utc_offset'?"]


def test_currency_must_be_a_real_iso_code() -> None:
    assert "not an ISO 4217 currency code" in _problems(_document(demo=_binding(currency="XYZ")))[0]


def test_account_tokens_are_secrets_never_values() -> None:
    document = _document(demo=_binding())
    document["adjust"]["accounts"]["main"]["api_token"] = "the-token-itself"
    problems = _problems(document)
    assert problems[0].startswith("adjust.accounts.main.api_token:")
    assert "the-token-itself" not in "\n".join(problems)


def test_an_unset_account_token_does_not_stop_the_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv("OTHER_SECRET", "s")
    document = _document(demo=_binding())
    document["apps"]["demo"]["secret"] = {"env": "OTHER_SECRET"}
    settings = parse_settings(document)
    assert settings.adjust.accounts["main"].api_token.problem is not None


def test_check_config_prints_every_binding_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = _document(a=_binding(utc_offset="+5"), b=_binding(account="nope"))
    config = write_config(tmp_path / "bad.toml", document)
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}: apps.a.adjust.utc_offset:" in err
    assert f"{config}: apps.b.adjust.account: no [adjust.accounts.nope]" in err
    assert "2 problem(s) found" in err


def test_the_sample_configuration_binds_demo_to_an_account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sample = Path(__file__).resolve().parents[2] / "deploy" / "postback-hub.sample.toml"
    monkeypatch.setenv("POSTBACK_HUB_DEMO_SECRET", "x")
    monkeypatch.delenv("POSTBACK_HUB_ADJUST_API_TOKEN", raising=False)
    config = tmp_path / "postback-hub.toml"
    config.write_text(sample.read_text())
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "backinapp-partner-id").write_text("partner-7\n")
    (tmp_path / ".data" / "kpi-token").write_text("kpi-demo-token\n")
    settings = load_settings(config)
    binding = settings.apps["demo"].adjust
    assert binding is not None
    assert (binding.account, binding.app_token) == ("main", "abc123def456")
    account = settings.adjust.accounts["main"]
    assert account.api_token.source == "env:POSTBACK_HUB_ADJUST_API_TOKEN"
    assert account.api_token.problem is not None  # unset: only the adjust commands need it
    assert account.report is not None
    assert settings.adjust.channels == {"backinapp": "backinapp"}
