"""The built wheel, installed into a fresh virtual environment outside the checkout, is a
working postback-hub: one top-level import name, the commands run, and the local broker
finds the files it ships (nothing resolves into the checkout or to a missing file)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from postback_hub.service.localkafka import KAFKA_VERSION, free_port
from tests.support import wait_http_ok

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "postback-hub.sample.toml"
JARS = REPO / "deploy" / ".cache" / f"kafka-{KAFKA_VERSION}" / "lib"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("postback_hub-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel; its dependencies come from this environment's
    site-packages through a path entry (no network, and no editable finder: a plain
    directory on the path runs no .pth file of its own)."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
        entry = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt")))
    assert b"postback-hub = postback_hub.cli:main" in entry
    script = home / "bin" / "postback-hub"
    script.write_text(
        f"#!{python}\nimport sys\nfrom postback_hub.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    return home


def _run(home: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(home / "bin" / "postback-hub"), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_wheel_has_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"postback_hub"}
    for shipped in (
        "postback_hub/service/openapi.json",
        "postback_hub/service/localkafka_files/pom.xml",
        "postback_hub/service/localkafka_files/server.properties.template",
        "postback_hub/service/localkafka_files/log4j.properties",
        "postback_hub/py.typed",
    ):
        assert shipped in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    with zipfile.ZipFile(wheel) as archive:
        assert "License-Expression: LicenseRef-Proprietary" in archive.read(metadata).decode()


def test_installed_commands_run_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import postback_hub; print(postback_hub.__file__)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where
    assert "postback-hub" in _run(installed, "--help", cwd=tmp_path)
    config = tmp_path / "postback-hub.toml"
    shutil.copy(SAMPLE, config)
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "backinapp-partner-id").write_text("partner-7\n")
    (tmp_path / ".data" / "kpi-token").write_text("kpi-demo-token\n")
    out = _run(
        installed, "check-config", str(config), cwd=tmp_path, env={"POSTBACK_HUB_DEMO_SECRET": "s"}
    )
    assert "OK" in out


async def test_installed_serve_answers_health(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:{free_port()}"\n'
        f"[receiver]\nport = {port}\nworkers = 1\n"
        '[apps.demo]\nsecret = {env = "WHEEL_TEST_SECRET"}\n'
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, then polled over HTTP
        [str(installed / "bin" / "postback-hub"), "serve", "--config", str(config)],
        cwd=tmp_path,
        env={**os.environ, "WHEEL_TEST_SECRET": "s"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_installed_kafka_up_finds_what_it_ships(installed: Path, tmp_path: Path) -> None:
    assert JARS.is_dir(), "make test fetches the broker's jars first (postback-hub kafka fetch)"
    env = {"POSTBACK_HUB_KAFKA_CACHE": str(JARS), "HOME": str(tmp_path)}
    data = tmp_path / "kafka-data"
    ports = ["--port", str(free_port()), "--controller-port", str(free_port())]
    out = _run(installed, "kafka", "up", "--data-dir", str(data), *ports, cwd=tmp_path, env=env)
    try:
        assert f"Kafka {KAFKA_VERSION} listening" in out
    finally:
        _run(installed, "kafka", "down", "--data-dir", str(data), cwd=tmp_path, env=env)
