"""pytest hooks for ``tests/`` and ``sim/``: the seed of the run (:mod:`sim.seed`) heads the
session and is named in the report of every failed test, so any failure can be replayed."""

import pytest

from sim.seed import ENV, test_seed


def pytest_configure(config):
    try:
        test_seed()
    except ValueError as e:    # a clear error before any test module reads it
        raise pytest.UsageError(str(e)) from None


def pytest_report_header(config):
    return f"{ENV}={test_seed()} (the seed of every random choice; set it to change them)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append(("seed", f"rerun with {ENV}={test_seed()}"))
    return report
