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
    (tmp_path / ".data" / "kpi-token").write_text("kpi-demo-token\n")
    settings = load_settings(config)
    assert settings.kpi.tokens["demo"].secret.reveal() == "kpi-demo-token"
    assert settings.kpi.database_url == f"sqlite:///{tmp_path / '.data' / 'kpi.sqlite3'}"
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


def test_file_secrets_are_relative_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "secrets").mkdir(parents=True)
    (tmp_path / "conf" / "secrets" / "demo").write_text("next-to-the-config\n")
    config = tmp_path / "conf" / "hub.toml"
    config.write_text('[apps.demo]\nsecret = {file = "secrets/demo"}\n')
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    settings = load_settings(config)
    assert settings.apps["demo"].secret.reveal() == "next-to-the-config"
    assert "next-to-the-config" not in repr(settings)


def test_unknown_keys_get_a_suggestion_and_no_internal_path_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUGGEST_SECRET", "x")
    document = {
        "receiver": {"prot": 8080},
        "apps": {"demo": {"secret": {"env": "SUGGEST_SECRET"}, "default_enviroment": "sandbox"}},
        "destinations": {
            "bia": {
                "type": "module",
                "concurency": 4,
                "template": {"url": "https://partner.test/pb", "parms": {}},
                "apps": {"demo": {"credential": {"env": "SUGGEST_SECRET"}}},
            }
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(document)
    assert sorted(caught.value.problems) == sorted(
        [
            "receiver.prot: unknown key; did you mean 'port'?",
            "apps.demo.default_enviroment: unknown key; did you mean 'default_environment'?",
            "destinations.bia.concurency: unknown key; did you mean 'concurrency'?",
            "destinations.bia.template.parms: unknown key; did you mean 'params'?",
        ]
    )


def test_a_disabled_destination_needs_no_secrets_and_secrets_never_print(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRINT_SECRET", "hunter2-value")
    monkeypatch.delenv("NOT_YET_ISSUED", raising=False)
    settings = parse_settings(
        {
            "apps": {"demo": {"secret": {"env": "PRINT_SECRET"}}},
            "destinations": {
                "later": {
                    "type": "module",
                    "enabled": False,
                    "template": {"url": "https://partner.test/pb"},
                    "apps": {"demo": {"credential": {"env": "NOT_YET_ISSUED"}}},
                }
            },
        }
    )
    assert "hunter2-value" not in repr(settings)
    assert "hunter2-value" not in str(settings.model_dump())
    assert repr(settings.apps["demo"].secret) == "Secret(env:PRINT_SECRET)"
