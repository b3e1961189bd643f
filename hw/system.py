"""The system's figures end to end: MCU, bus and accelerator cycles per frame for every
partition of a model (:mod:`compiler.partition`), and the frames per second they give with
every clock at the reference's 10 MHz.

The MCU's side is measured, never modelled here: the firmware in the loop
(``sim/tb_firmware.py``: the real Cortex-M4 ELF in the emulator, the RTL on Verilator) counts
the instructions it executes and turns them into core cycles with the Cortex-M4 cycle table
(``sim/m4_cycles.py``; ``firmware/README.md`` says where that estimate can be off). One run
per partition writes its report (``CIM_SIM_REPORT``); ``python -m hw.system --record`` keeps
the per-frame means of that report in ``models/measured/system_<model>_<config>.json`` (or
``build/measured/``), which ``build.py`` reads into ``report.json``'s ``system`` key.

Per partition, per frame (means over the run's frames):

* ``mcu_cycles``: the core computing (its own layers, packing and unpacking tensors, the
  driver), estimated core cycles;
* ``bus_cycles``: the core's transfers to the accelerator's AHB window, wait states included;
* ``wait_cycles``: the core waiting for the accelerator (interrupt or polling);
* ``accel_cycles``: the accelerator's busy cycles (its ``CYCLES_TOTAL`` counter) and the
  analytic model's figure for the same program;
* ``latency_cycles``: one frame alone, start to logits; ``throughput_cycles``: frames back
  to back. Where the firmware runs one frame at a time (``file``, ``stem``, ``mcu``) both are
  the measured cycles per frame. In ``whole`` the core writes frame n + 1's image into the
  image buffer while the accelerator computes frame n: the throughput is the measured
  cycles per frame of that loop, the latency the core's work, its bus transfers and the
  accelerator's busy cycles one after the other (what a frame alone takes);
* ``end_to_end_fps_10mhz``: ``10e6 / throughput_cycles``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from compiler import CompileError, compile_model, partition
from compiler.cycles import network_cycles
from compiler.partition import PARTITIONS
from contract.config import HwConfig, get_config
from model import golden

__all__ = ["REFERENCE_MHZ", "record", "system_report"]

REPO = Path(__file__).resolve().parent.parent
REFERENCE_MHZ = 10.0
MEASURED_DIRS = ("build/measured", "models/measured")


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def system_name(model_path: Path | str, config: str) -> str:
    return f"system_{Path(model_path).stem}_{config}.json"


def system_path(model_path: Path | str, config: str, root: Path = REPO) -> Path:
    """The first of :data:`MEASURED_DIRS` that has a record, else the first of them."""
    paths = [root / d / system_name(model_path, config) for d in MEASURED_DIRS]
    return next((p for p in paths if p.exists()), paths[0])


def record(fil_report: Path, partition_name: str, out: Path | None = None,
           command: str | None = None) -> Path:
    """Keep the per-frame means of a firmware-in-the-loop report (``CIM_SIM_REPORT`` of
    ``sim/tb_firmware.py``) as partition ``partition_name`` of the model's system record;
    returns the record's path. :class:`ValueError` for a report of a failed run or without
    the cycle estimate."""
    rep = json.loads(Path(fil_report).read_text())
    if partition_name not in PARTITIONS:
        raise ValueError(f"unknown partition {partition_name!r}; valid: {', '.join(PARTITIONS)}")
    for key in ("model", "config", "frame_mean", "stages", "correct", "images"):
        if key not in rep:
            raise ValueError(f"{fil_report}: no {key!r}: not a report of sim/tb_firmware.py with "
                             "the cycle estimate")
    if rep["correct"] != rep["images"]:
        raise ValueError(f"{fil_report}: {rep['correct']} of {rep['images']} frames were correct; "
                         "only a run with every logit equal to the golden model is recorded")
    model_path = Path(rep["model"])
    out = out or REPO / MEASURED_DIRS[0] / system_name(model_path, rep["config"])
    data = json.loads(out.read_text()) if out.exists() else {}
    sha = _sha(REPO / model_path if not model_path.is_absolute() else model_path)
    if data.get("model_sha256") not in (None, sha):
        data = {}            # a record of another version of the model: start again
    mean = rep["frame_mean"]
    data.update(model=str(model_path), model_sha256=sha, config=rep["config"],
                clock_mhz=REFERENCE_MHZ)
    data.setdefault("partitions", {})[partition_name] = {
        "images": rep["images"], "all_logits_exact": True, "wait": rep.get("wait"),
        "instructions": round(mean["instructions"]),
        "mcu_cycles": round(mean["compute_cycles"]), "bus_cycles": round(mean["bus_cycles"]),
        "wait_cycles": round(mean["wait_cycles"]), "accel_cycles": round(mean["accel_cycles"]),
        "frame_cycles": round(mean["cycles"]),
        "stages": {k: round(v["cycles"]) for k, v in rep["stages"].items()
                   if k != "LOAD" and v["cycles"]},
        "command": command,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return out


def _accel_analytic(model: golden.IntModel, config: HwConfig) -> tuple[int, str | None]:
    """Analytic accelerator cycles per frame of a partitioned model (0 with no accelerator
    layers), and why it does not compile, if it does not."""
    if not any(n["where"] == "accel" for n in model.nodes):
        return 0, None
    try:
        return sum(c.cycles for c in network_cycles(compile_model(model, config))), None
    except (CompileError, ValueError) as e:
        return None, str(e)


def system_report(model_path: Path, config: HwConfig, root: Path = REPO) -> dict:
    """``report.json``'s ``system`` key: per partition the analytic accelerator cycles and the
    measured end-to-end figures (module docstring), or why they are missing."""
    model = golden.load(model_path)
    path = system_path(model_path, config.name, root)
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    data, note = {}, f"not measured (no {shown})"
    if path.exists():
        data = json.loads(path.read_text())
        note = f"measured ({shown})"
        if data.get("config") != config.name:
            data, note = {}, f"not used: {shown} is for configuration {data.get('config')!r}"
        elif data.get("model_sha256") != _sha(model_path):
            data, note = {}, f"not used: {shown} measured another version of the model (stale)"
    out = {"clock_mhz": REFERENCE_MHZ, "source": note,
           "method": "firmware in the loop (sim/tb_firmware.py) on the RTL, Cortex-M4 cycles "
                     "estimated from the executed instructions (sim/m4_cycles.py)",
           "partitions": {}}
    for name, what in PARTITIONS.items():
        try:
            accel, why = _accel_analytic(partition(model, name), config)
        except ValueError as e:
            accel, why = None, str(e)
        m = data.get("partitions", {}).get(name)
        row = {"what": what, "accel_cycles_analytic": accel, "compile_error": why,
               "measured": m is not None}
        if m:
            row.update({k: m[k] for k in ("images", "instructions", "mcu_cycles", "bus_cycles",
                                          "wait_cycles", "accel_cycles", "stages", "command")})
            row["latency_cycles"] = row["throughput_cycles"] = m["frame_cycles"]
            if name == "whole":     # frames overlap: a frame alone is its parts in a row
                row["latency_cycles"] = m["mcu_cycles"] + m["bus_cycles"] + m["accel_cycles"]
            row["end_to_end_fps_10mhz"] = round(REFERENCE_MHZ * 1e6 / m["frame_cycles"], 2)
        out["partitions"][name] = row
    fps = {k: v["end_to_end_fps_10mhz"] for k, v in out["partitions"].items() if v["measured"]}
    if fps:
        best = max(fps, key=fps.get)
        out["best"] = {"partition": best, "end_to_end_fps_10mhz": fps[best]}
        out["end_to_end_fps_10mhz"] = fps[best]
        if "mcu" in fps:
            out["speedup_over_mcu_alone"] = {k: round(v / fps["mcu"], 2) for k, v in fps.items()}
    return out


def format_system(sysrep: dict) -> str:
    """The ``system`` part of the report as a text table."""
    L = [f"System, end to end, every clock at {sysrep['clock_mhz']:g} MHz "
         f"({sysrep['source']}):",
         f"{'partition':<7} {'MCU':>10} {'bus':>7} {'wait':>8} {'accel (RTL)':>11} "
         f"{'accel (model)':>13} {'latency':>10} {'throughput':>10} {'FPS':>8}"]

    def cell(v, fmt=","):
        return "-" if v is None else format(v, fmt)

    for name, r in sysrep["partitions"].items():
        L.append(f"{name:<7} {cell(r.get('mcu_cycles')):>10} {cell(r.get('bus_cycles')):>7} "
                 f"{cell(r.get('wait_cycles')):>8} {cell(r.get('accel_cycles')):>11} "
                 f"{cell(r['accel_cycles_analytic']):>13} {cell(r.get('latency_cycles')):>10} "
                 f"{cell(r.get('throughput_cycles')):>10} "
                 f"{cell(r.get('end_to_end_fps_10mhz'), ',.1f'):>8}")
    if "speedup_over_mcu_alone" in sysrep:
        L.append("speed-up over the MCU alone: " + ", ".join(
            f"{k} {v:g}x" for k, v in sysrep["speedup_over_mcu_alone"].items()))
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", type=Path, metavar="FIL_REPORT",
                    help="keep a firmware-in-the-loop report (CIM_SIM_REPORT) as a partition's "
                         "measurement")
    ap.add_argument("--partition", default="file", help="the partition the report ran "
                    f"({', '.join(PARTITIONS)}; default: file)")
    ap.add_argument("--out", type=Path, help="the record to write (default: "
                    "build/measured/system_<model>_<config>.json)")
    ap.add_argument("--command", help="the command that produced the report (kept with it)")
    ap.add_argument("--model", default="models/resnet14_fmnist_w4a4.npz")
    ap.add_argument("--config", default="default")
    args = ap.parse_args(argv)
    try:
        if args.record:
            print(f"wrote {record(args.record, args.partition, args.out, args.command)}")
            return 0
        print(format_system(system_report(Path(args.model), get_config(args.config))))
    except (ValueError, OSError, golden.ModelFormatError) as e:
        print(f"hw.system: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
