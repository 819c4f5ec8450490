from __future__ import annotations

from pathlib import Path

import pytest

from postback_hub.cli import main
from postback_hub.consumers.module.config import ModuleDestination
from postback_hub.consumers.registry import load_settings, parse_settings
from postback_hub.service.settings import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "postback-hub.sample.toml"


def test_sample_configuration_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSTBACK_HUB_DEMO_SECRET", "x")
    monkeypatch.delenv("POSTBACK_HUB_ACME_TOKEN", raising=False)  # acme is disabled
    # The demo partner id is a file relative to the configuration file, wherever we run.
    monkeypatch.chdir("/")
    config = tmp_path / "postback-hub.toml"
    config.write_text(SAMPLE.read_text())
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "backinapp-partner-id").write_text("partner-7\n")
    settings = load_settings(config)
    backinapp = settings.destination("backinapp", ModuleDestination)
    assert backinapp.apps["demo"].credential.reveal() == "partner-7"
    assert settings.destinations["backinapp"].dry_run
    assert settings.apps["demo"].aliases == {"adjust_tracker": "tracker"}
    assert settings.apps["demo"].secret.reveal() == "x"


def test_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    settings = parse_settings({"apps": {"a": {"secret": {"file": str(secret_file)}}}})
    assert settings.apps["a"].secret.reveal() == "from-file"


def test_every_problem_is_reported_with_its_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    document = {
        "kafka": {"produce_timeout_s": 0, "bogus": 1},
        "receiver": {"trusted_proxies": ["not-a-cidr"]},
        "apps": {
            "ok": {"secret": {"env": "NOT_SET_ANYWHERE"}},
            "bad": {"secret": {"env": "X", "file": "/y"}, "aliases": {"k": "no_such_field"}},
            "bad key!": {"secret": {"env": "X"}},
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(document)
    text = "\n".join(caught.value.problems)
    assert "kafka.produce_timeout_s:" in text
    assert "kafka.bogus:" in text
    assert "receiver.trusted_proxies" in text
    assert "apps.bad.secret:" in text
    assert "apps.bad.aliases:" in text
    assert "no_such_field" in text
    assert "apps.bad key!.[key]: String should match pattern" in text
    assert len(caught.value.problems) >= 6


def test_unresolvable_secrets_are_all_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_ONE", raising=False)
    document = {
        "apps": {
            "a": {"secret": {"env": "MISSING_ONE"}},
            "b": {"secret": {"file": "/nonexistent/secret"}},
        }
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(document)
    assert caught.value.problems == [
        "apps.a.secret: environment variable MISSING_ONE is not set or empty",
        "apps.b.secret: cannot read /nonexistent/secret: No such file or directory",
    ]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[kafka]\nproduce_timeout_s = "soon"\n[apps.x]\nsecret = {env = "UNSET_VAR_FOR_TEST"}\n'
    )
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: kafka.produce_timeout_s:" in err
    assert "apps.x.secret" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    assert main(["check-config", str(broken)]) == 1
    assert "line 1" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text("")
    assert main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
