"""Addresses from the command line and the environment over the configuration file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postback_hub import cli
from postback_hub.service.settings import ConfigError
from tests.support import SECRET, SECRET_ENV, settings_document, write_config


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    for variable in cli._OVERRIDES.values():
        monkeypatch.delenv(variable, raising=False)
    return write_config(tmp_path / "config.toml", settings_document("10.0.0.1:9092", "t", 8080))


def _loaded(argv: list[str]) -> tuple[str, int, str]:
    settings = cli._load(cli.build_parser().parse_args(argv))
    return settings.receiver.host, settings.receiver.port, settings.kafka.bootstrap_servers


def test_the_file_alone(config: Path) -> None:
    assert _loaded(["serve", "--config", str(config)]) == ("127.0.0.1", 8080, "10.0.0.1:9092")


def test_the_environment_over_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTBACK_HUB_PORT", "18080")
    monkeypatch.setenv("POSTBACK_HUB_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    assert _loaded(["run", "--config", str(config)]) == ("127.0.0.1", 18080, "127.0.0.1:19092")


def test_flags_over_the_environment_and_inherited_by_children(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTBACK_HUB_PORT", "18080")
    argv = ["run", "--config", str(config), "--port", "28080", "--host", "0.0.0.0"]
    argv += ["--bootstrap-servers", "127.0.0.1:29092"]
    assert _loaded(argv) == ("0.0.0.0", 28080, "127.0.0.1:29092")
    # This process's environment is untouched; the children get the overrides in theirs.
    assert os.environ["POSTBACK_HUB_PORT"] == "18080"
    assert "POSTBACK_HUB_BOOTSTRAP_SERVERS" not in os.environ
    children = cli.child_environment(cli.build_parser().parse_args(argv))
    assert children == {
        "POSTBACK_HUB_HOST": "0.0.0.0",
        "POSTBACK_HUB_PORT": "28080",
        "POSTBACK_HUB_BOOTSTRAP_SERVERS": "127.0.0.1:29092",
    }
    # A worker started by the supervisor (no flags) reads them from that environment.
    for variable, value in children.items():
        monkeypatch.setenv(variable, value)
    assert _loaded(["worker", "--config", str(config)]) == ("0.0.0.0", 28080, "127.0.0.1:29092")


def test_a_bad_port_in_the_environment_is_a_configuration_error(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTBACK_HUB_PORT", "80x")
    with pytest.raises(ConfigError, match="POSTBACK_HUB_PORT: not a port number"):
        _loaded(["serve", "--config", str(config)])
