#!/usr/bin/env python3
"""Build the CIM accelerator for a board: Verilog, constraints, Vivado scripts, register
header, the compiled model, and a report (see docs/build.md).

    python build.py --board vu13p [--config default] [--model PATH] [--out DIR]
                    [--package PKG] [--speed GRADE] [--clock-mhz F] [--estimate]
    python build.py --board sim --config tiny --model models/digits_cnn_w4a4.npz

Runs Vivado (and so writes the bitstream) when ``vivado`` is on PATH and the board file's
pins are real; otherwise it says which script to run where. The work is in ``hw/flow.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.partition import PARTITIONS
from contract.config import CONFIGS, get_config
from gateware.cache import DEFAULT_DIR
from hw import estimate, timing
from hw.flow import REPO, BuildError, build, format_performance
from hw.platform import board_names, load_board
from hw.system import format_system

SIM = "sim"
DEFAULT_MODEL = "models/resnet14_fmnist_w4a4.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Boards: " + ", ".join([SIM, *board_names()])
                                 + ". Configurations: " + ", ".join(CONFIGS) + ".")
    ap.add_argument("--board", default="vu13p",
                    help=f"a board of hw/boards/, or {SIM!r} for the simulation top only "
                         "(default: vu13p)")
    ap.add_argument("--config", default="default", help="hardware configuration (default: "
                                                        "default)")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"integer model file to compile (default: {DEFAULT_MODEL})")
    ap.add_argument("--partition", default="file", choices=list(PARTITIONS),
                    help="which layers the compiled program runs on the accelerator: "
                         + "; ".join(f"{k}: {v}" for k, v in PARTITIONS.items())
                         + " (default: file)")
    ap.add_argument("--out", type=Path, help="output folder (default: build/<board>)")
    ap.add_argument("--package", help="FPGA package (default: the board file's)")
    ap.add_argument("--speed", help="speed grade, e.g. 2-e (default: the board file's)")
    ap.add_argument("--clock-mhz", type=float,
                    help="clock for the FPS figure (default: the board clock; 100 for sim)")
    ap.add_argument("--estimate", action="store_true",
                    help="Yosys resource and timing estimate against the device's capacity "
                         "(minutes for large configurations; cached)")
    ap.add_argument("--no-vivado", action="store_true",
                    help="do not run Vivado even when it is on PATH")
    ap.add_argument("--cache", type=Path, default=DEFAULT_DIR,
                    help="cache folder for emitted Verilog and estimates (default: "
                         "build/cache)")
    args = ap.parse_args(argv)

    try:
        config = get_config(args.config)
        board = None
        if args.board != SIM:
            try:
                board = load_board(args.board).with_part(package=args.package,
                                                         speed=args.speed)
            except ValueError as e:
                if "unknown board" in str(e):
                    raise ValueError(f"{e}, {SIM}") from None
                raise
        elif args.package or args.speed:
            raise ValueError(f"--package and --speed need an FPGA board, not {SIM!r}")
        if args.clock_mhz is not None and not args.clock_mhz > 0:
            raise ValueError(f"--clock-mhz must be positive, not {args.clock_mhz}")
    except ValueError as e:
        ap.error(str(e))
    clock_mhz = args.clock_mhz or (board.clock_hz / 1e6 if board else 100.0)
    out = args.out or REPO / "build" / args.board
    try:
        report = build(board=board, config=config, model_path=Path(args.model), out=out,
                       cache=args.cache, clock_mhz=clock_mhz, estimate=args.estimate,
                       run_vivado=not args.no_vivado, partition_name=args.partition)
    except BuildError as e:
        print(f"build.py: error: {e}", file=sys.stderr)
        return 1

    print()
    print(format_performance(report["performance"], args.model, config))
    print()
    print(format_system(report["system"]))
    e = report["energy"]
    print()
    print(f"Energy per frame, a model (not a measurement; {e['table']['node']}, "
          f"python -m compiler.energy): {e['frame_pj'] / 1e6:.3f} uJ"
          + (f", {e['pj_per_mac']:.3f} pJ per MAC" if e["pj_per_mac"] is not None else ""))
    if "estimate" in report:
        e = report["estimate"]
        print()
        print(f"Resource estimate (Yosys {e['yosys'].split()[1]} synth_xilinx -family xcup, "
              f"not Vivado):")
        print(estimate.format_design(e, e["capacity"], device=board.device.upper()))
        if e.get("timing"):
            print()
            print("Timing estimate (hw/timing.py: the longest paths between registers of Yosys's "
                  "netlist, UltraScale+ -2 delay model; only Vivado closes timing):")
            print(timing.format_timing(e["timing"]))
    print()
    print(f"Artifacts in {out} (report.json lists them; report.html shows the report).")
    if board:
        v = report["vivado"]
        print(f"Bitstream: {v['bitstream']}" if v["bitstream"] else f"No bitstream: {v['reason']}")
        if board.placeholder_pins:
            print(f"Note: {board.path.name} has placeholder pins "
                  f"({', '.join(board.placeholder_pins)}): edit them for a real board.")
    if report.get("estimate", {}).get("over"):
        print(f"build.py: error: configuration {config.name!r} does not fit the "
              f"{board.device.upper()}: {', '.join(report['estimate']['over'])} over capacity "
              "(estimate above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
