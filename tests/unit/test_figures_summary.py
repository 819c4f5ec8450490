"""`make test` shows pytest's progress and, at the end, the figures the fault scenarios
record (tests/figures.py), which pytest's output capture used to swallow."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = """
import pytest

def test_broker_fault(record_figures):
    record_figures("broker SIGKILL", {"sent": 120, "acknowledged": 118, "duplicates_x": 0})

def test_catch_up(record_figures):
    record_figures(
        "module consumer SIGKILL during catch-up",
        {"backlog": 3000, "duplicates_partner": 41, "bound": 288},
    )
    assert False, "the figures must be shown for a failing scenario too"

def test_without_figures():
    pass
"""


def test_the_run_ends_with_every_recorded_figure_in_its_own_section(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_scenarios=SCENARIOS)
    result = pytester.runpytest("-p", "tests.figures", "-p", "no:asyncio")

    result.assert_outcomes(passed=2, failed=1)
    lines = result.stdout.lines
    headers = [
        i for i, line in enumerate(lines) if re.fullmatch(r"=+ fault scenario figures =+", line)
    ]
    assert len(headers) == 1
    start = headers[0]
    broker = "[broker SIGKILL] sent=120, acknowledged=118, duplicates_x=0"
    catch_up = (
        "[module consumer SIGKILL during catch-up] backlog=3000, duplicates_partner=41, bound=288"
    )
    assert lines[start + 1 : start + 3] == [broker, catch_up]
    # Progress stays visible: one character per test, before the figures.
    progress = next(i for i, line in enumerate(lines) if line.startswith("test_scenarios.py .F."))
    assert progress < start
    # The final "N passed, M failed" line still closes the run.
    assert re.fullmatch(r"=+ 1 failed, 2 passed.* =+", lines[-1])


def test_no_section_when_no_test_recorded_figures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("-p", "tests.figures", "-p", "no:asyncio")

    result.assert_outcomes(passed=1)
    assert not any("fault scenario figures" in line for line in result.stdout.lines)


def test_the_suite_itself_loads_the_figures_plugin(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin("tests.figures")


def test_make_test_runs_pytest_without_quieting_it() -> None:
    """The progress of `make test` is pytest's own: neither the Makefile's call nor the
    project's addopts may make it quiet."""
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"
    ].get("addopts", "")
    makefile = (ROOT / "Makefile").read_text()
    calls = [line for line in makefile.splitlines() if "$(BIN)/pytest" in line]
    assert calls, "the Makefile no longer runs pytest"
    for words in [shlex.split(addopts), *(shlex.split(call) for call in calls)]:
        quiet = [w for w in words if w in ("-q", "--quiet") or re.fullmatch(r"-q+", w)]
        assert not quiet, words
