"""The calibration search over AHB-Lite on the RTL, in the Amaranth simulator.

The driver's search (:func:`model.calibration.calibrate`, which ``cim_calibrate()`` of the
firmware equals) runs on the device model of a configuration with calibration rows
(``cal_rows``; the device: ``offset_sigma``, ``offset_seed``), and every operation it takes is
replayed over the bus on :class:`~gateware.top.CIMTop` built for the same device: the row
writes into the ``CAL`` window, ``CTRL.CAL_EVAL``, and the ``CMP`` window's words read back.
Every comparator word the RTL answers must equal the model's, so the driver takes the same
decisions on the RTL. The bus transfers go back to back (pipelined, zero wait states: the
lower bound :attr:`model.calibration.CalibrationResult.cycles` counts), and the cycles from
the first address phase to the last data phase are the RTL's measure of the search::

    python -m sim.cal_pysim --config default:adc_bits=6,cal_rows=8,cal_step=64,offset_sigma=128

The MCU's instructions between the transfers are not counted (nor are they in the model).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from contract.config import HwConfig, get_config
from model.calibration import CalibrationResult, OffsetArray, calibrate

from .pysim_ahb import ahb, rd, wr

__all__ = ["CalRun", "run"]


class _LoggedArray(OffsetArray):
    """The device model, logging the driver's operations in order."""

    def __init__(self, *args):
        super().__init__(*args)
        self.log = []

    def write_row(self, macro, row, bits):
        super().write_row(macro, row, bits)
        self.log.append(("write", macro, row, np.asarray(bits, bool).copy()))

    def compare(self):
        high = super().compare()
        self.log.append(("compare", high.copy()))
        return high


@dataclass(frozen=True)
class CalRun:
    """What :func:`run` found."""

    result: CalibrationResult
    """The search as the model counts it (cells, evaluations, rows and words)."""
    bus_cycles: int
    """RTL cycles of the search: until the last data phase ends, from the first address
    phase's cycle (a cycle per transfer with no wait state)."""
    mismatches: list
    """``(address, rtl, model)`` of every comparator word the RTL read otherwise."""
    errors: list
    """Addresses of transfers the slave answered with ERROR (none expected)."""
    tails: int
    """Unmapped window tails probed (each must answer ERROR; any that did not is in
    ``errors`` as ``("tail", address)``)."""


def _row_words(bits: np.ndarray, words: int) -> list[int]:
    flat = np.asarray(bits, bool).reshape(-1)
    value = int(sum(int(b) << k for k, b in enumerate(flat)))
    return [(value >> (32 * j)) & 0xFFFF_FFFF for j in range(words)]


def run(config: HwConfig, *, probe_tails: bool = True) -> CalRun:
    """Run the search on the model and replay it over the bus on the RTL (module
    docstring). ``probe_tails``: also access the first unmapped word after the ``CAL`` and
    ``CMP`` windows, where a window does not fill its space (each must answer ERROR)."""
    from amaranth.sim import Simulator

    from gateware.top import CIMTop

    if not config.cal_rows:
        raise ValueError(f"configuration {config.name} has no calibration rows: set cal_rows "
                         f"(e.g. '{config.name}:adc_bits=6,cal_rows=8')")
    array = _LoggedArray(config.adc_offsets, config.calibration)
    result = calibrate(array, strict=False)
    top = CIMTop(config=config)
    rm = top.regmap
    cal_win, cmp_win, ctrl = rm.window("CAL"), rm.window("CMP"), rm.register("CTRL")
    rw = config.cal_row_words
    items, expect = [], []
    for op in array.log:
        if op[0] == "write":
            _, macro, row, bits = op
            base = cal_win.offset + 4 * (macro * config.cal_rows + row) * rw
            items += [wr(base + 4 * j, w) for j, w in enumerate(_row_words(bits, rw))]
        else:
            items.append(wr(ctrl.offset, ctrl.field("CAL_EVAL").mask))
            for mac in range(config.macros):
                for j, w in enumerate(_row_words(op[1][mac], rw)):
                    expect.append((len(items), w))
                    items.append(rd(cmp_win.offset + 4 * (mac * rw + j)))
    searched = len(items)
    if probe_tails:
        if cal_win.end < cal_win.offset + cal_win.size:
            items.append(wr(cal_win.end, 1))
        if cmp_win.end < cmp_win.offset + cmp_win.size:
            items.append(rd(cmp_win.end))
    out = {}

    async def bench(ctx):
        out["res"] = await ahb(ctx, top, items)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    res = out["res"]
    errors = [res[i].t.addr for i in range(searched) if not res[i].ok]
    errors += [("tail", r.t.addr) for r in res[searched:] if not r.error]
    mismatches = [(res[i].t.addr, res[i].rdata, w) for i, w in expect if res[i].rdata != w]
    # Cycle 0 is the first address phase and R.cycle the cycle a data phase ended in: with
    # the transfers back to back (no wait state), the last one's is the number of transfers.
    bus_cycles = res[searched - 1].cycle
    return CalRun(result=result, bus_cycles=bus_cycles, mismatches=mismatches, errors=errors,
                  tails=len(items) - searched)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.cal_pysim", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny:adc_bits=3,cal_rows=8,cal_step=64,"
                    "offset_sigma=128", help="a configuration with calibration rows "
                    "(default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        cfg = get_config(args.config)
        print(f"{cfg.name}: building and simulating the RTL (minutes for a large "
              f"configuration)", flush=True)
        t0 = time.monotonic()
        out = run(cfg)
    except ValueError as e:
        ap.error(str(e))
    r = out.result
    print(f"{cfg.macros} macros x {cfg.cols} columns x {cfg.w_bits} weight bits, "
          f"{cfg.cal_rows} rows of {cfg.calibration.step:g} LSB: {r.evaluations} evaluations, "
          f"{r.row_writes} row writes ({r.words_written} words), {r.words_read} words read, "
          f"{int(r.out_of_range.sum())} bit-columns out of range")
    print(f"bus and array cycles: RTL {out.bus_cycles}, model {r.cycles} "
          f"[{time.monotonic() - t0:.0f} s]")
    if out.mismatches or out.errors:
        for addr, got, want in out.mismatches[:5]:
            print(f"MISMATCH comparator word {addr:#x}: RTL {got:#010x}, model {want:#010x}")
        for addr in out.errors[:5]:
            print(f"ERROR response: {addr}")
        return 1
    print("every comparator word equal to the model's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
