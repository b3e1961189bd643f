"""Simulation speed of the cocotb benches, and one ResNet14 frame on Verilator.

    python -m sim.bench                    # both simulators; ResNet14 on default (Verilator)
    python -m sim.bench --no-default       # the tiny configuration only

For each simulator it runs the network bench (:mod:`sim.tb_network`) on the ``tiny``
configuration with the shipped digits model, and on Verilator also the ``default``
configuration with the shipped ResNet14 on Fashion-MNIST, and prints a table:

* Verilog: generating ``cim_top.v`` (:func:`gateware.top.verilog`; the time it took when
  :mod:`gateware.cache` made the entry in use);
* build: compiling it for the simulator (``cached`` when an earlier build was reused; its
  recorded time in brackets);
* idle: cycles per second of wall time with the bus idle (the simulator itself, plus the
  monitor's sampling of every cycle);
* load: the model's program, weight and parameter words written over AHB, in bus cycles
  per second of wall time (the bench's Python drives and checks every cycle);
* compute: accelerator cycles per second while it runs (busy cycles over the wall time from
  START to done);
* frame: wall time of one frame including loading the model over AHB: load + input +
  run + read back of every readable layer output (the first image).

Numbers depend on the machine and its load; the benches print theirs too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contract.config import get_config
from gateware.cache import emitted

from . import runner

CASES = [
    ("tiny", "models/digits_cnn_w4a4.npz", runner.SIMULATORS),
    ("default", "models/resnet14_fmnist_w4a4.npz", ("verilator",)),
]


def _build_seconds(b: runner.Build) -> str:
    if not b.cached:
        return f"{b.seconds:.1f}"
    rec = json.loads((b.folder / "build.json").read_text())
    return f"cached ({rec.get('seconds', 0):.1f})"


def measure(target: str, model: str, sim: str, images: int, seed: int | None) -> dict:
    out = runner.BUILD_ROOT / "bench" / f"{sim}-{target}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    r = runner.run(target, sim, "sim.tb_network", seed=seed,
                   env={"CIM_SIM_MODEL": model, "CIM_SIM_IMAGES": str(images),
                        "CIM_SIM_REPORT": str(out)})
    rep = json.loads(out.read_text())
    first = rep["images"][0]
    load = rep["load"]
    return dict(
        sim=sim, target=target, model=Path(model).stem, build=_build_seconds(r["build"]),
        verilog=emitted(get_config(target), name=runner.DUT_NAME)[1]["emit_seconds"],
        idle_rate=rep["idle"]["cycles"] / rep["idle"]["seconds"],
        load_words=load["words"], load_rate=load["cycles"] / load["seconds"],
        compute_rate=first["busy_cycles"] / first["run_seconds"],
        busy_cycles=first["busy_cycles"],
        frame=load["seconds"] + first["seconds"], load_seconds=load["seconds"])


def table(rows: list[dict]) -> str:
    head = ("simulator", "config", "model", "Verilog s", "build s", "idle cyc/s",
            "load cyc/s", "compute cyc/s", "busy cycles", "frame s (load)")
    lines = [head]
    for r in rows:
        lines.append((r["sim"], r["target"], r["model"], f"{r['verilog']:.0f}", r["build"],
                      f"{r['idle_rate']:,.0f}", f"{r['load_rate']:,.0f}",
                      f"{r['compute_rate']:,.0f}",
                      f"{r['busy_cycles']:,}", f"{r['frame']:.1f} ({r['load_seconds']:.1f})"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    fmt = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |"
           for line in lines]
    fmt.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(fmt)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", action="append", choices=runner.SIMULATORS,
                    help="simulator (repeatable; default: every installed one)")
    ap.add_argument("--images", type=int, default=1, help="images per case (default 1)")
    ap.add_argument("--seed", type=int, help="default: sim.seed.test_seed() (CIM_TEST_SEED)")
    ap.add_argument("--no-default", action="store_true",
                    help="skip ResNet14 on the default configuration (about 4 minutes)")
    a = ap.parse_args(argv)
    sims = a.sim or [s for s in runner.SIMULATORS if runner.missing_tool(s) is None]
    rows = []
    for target, model, case_sims in CASES:
        if target == "default" and a.no_default:
            continue
        for sim in case_sims:
            if sim not in sims:
                continue
            print(f"sim.bench: {model} on {target}, {sim} ...", flush=True)
            rows.append(measure(target, model, sim, a.images, a.seed))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
