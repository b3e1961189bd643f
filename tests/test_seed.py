"""The run's seed has one definition (:mod:`sim.seed`): its parsing, and that nothing else in
the repository reads ``CIM_TEST_SEED`` from the environment."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest
from sim import seed

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, want", [(None, seed.DEFAULT_SEED), ("", seed.DEFAULT_SEED),
                                        ("7", 7), (" 42 ", 42), ("0", 0)])
def test_seed_from_environment(monkeypatch, text, want):
    if text is None:
        monkeypatch.delenv(seed.ENV, raising=False)
    else:
        monkeypatch.setenv(seed.ENV, text)
    assert seed.test_seed() == want


@pytest.mark.parametrize("text", ["abc", "1.5", "-3", "0x10", "١٢"])
def test_bad_seed_is_a_clear_error(monkeypatch, text):
    monkeypatch.setenv(seed.ENV, text)
    with pytest.raises(ValueError, match=f"CIM_TEST_SEED must be a non-negative integer, "
                                         f"not {re.escape(repr(text))}"):
        seed.test_seed()


def test_failed_report_names_the_seed(monkeypatch):
    monkeypatch.setenv(seed.ENV, "99")
    for failed in (True, False):
        report = SimpleNamespace(failed=failed, sections=[])
        hook = conftest.pytest_runtest_makereport(None, None)
        next(hook)
        with pytest.raises(StopIteration) as stop:
            hook.send(report)
        assert stop.value.value is report
        assert report.sections == ([("seed", "rerun with CIM_TEST_SEED=99")] if failed else [])


def test_one_definition():
    """Only sim/seed.py reads the variable; every other mention only passes it on or names
    it (a reader with its own default is what this guards against)."""
    reads = re.compile(r"(environ\.get\(|environ\[|getenv\()\s*['\"]CIM_TEST_SEED")
    files = [*REPO.glob("*.py")]
    for folder in ("gateware", "hw", "model", "sim", "tests"):
        files += (REPO / folder).rglob("*.py")
    assert len(files) > 50
    readers = [str(f.relative_to(REPO)) for f in files if reads.search(f.read_text())]
    assert readers == [], f"{readers}: use sim.seed.test_seed()"
