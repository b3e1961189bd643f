"""Fuzzing the file loaders: mutated model files and firmware blobs through every loader.

``python -m tests.fuzz_files --count N --seed S --out DIR`` (``--smoke``: a short run).

Each case takes the shipped digits model (``models/digits_cnn_w4a4.npz``) or one of its
blobs for the ``tiny`` configuration (the ACCEL partition's, or the MCU partition's with
every conv on the 64-bit rule), mutates it, and runs it through

- model files: :func:`model.golden.load` (with ``validate`` and the content hash), the golden
  model on a fixed batch, :func:`compiler.compile_model` and :func:`compiler.execute` (held
  against the golden model layer by layer), :func:`compiler.firmware_blob.build_blob` and
  :func:`~compiler.firmware_blob.check_blob` on what it builds;
- blobs: :func:`~compiler.firmware_blob.check_blob` and the firmware's own check
  (``cim_model_open``, ``cim_load_model``) in the host build (:mod:`tests.firmware_host`),
  which must give the same status; a blob both accept is run on its test images, the
  accelerator behind the driver checking every descriptor as the sequencer does.

Outcomes: ``refused`` (a clean error: ModelFormatError, BlobError, CompileError or a
firmware status), ``identical`` (accepted, the same results), ``new model`` (accepted with
other results after a mutation that recomputed the checksum or CRC and changed only values
the file is free to hold: array values, blob data sections, the layer program, a maxpool's
window, a RQ_GENERIC conv's shift), and the failures: ``SILENT`` (other results from a file
whose checksum was not recomputed, or from a header, op or manifest-structure word that
disagrees with the contents), ``DISAGREE`` (the loaders disagree: Python and C status,
compiler and golden model, a built blob its own check refuses, an illegal bus access) and
``TRACEBACK`` (any other exception). Every failing case is written to
``DIR/<n>-<outcome>/`` with the mutated file and what was done; the exit status is 1 if
there was one. Cases are numbered and seeded from ``(seed, n)``, so ``--first n --count 1``
reruns case ``n`` alone.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes as C
import json
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

import compiler
from compiler import firmware_blob as fb
from contract import program as fmt
from contract.config import get_config
from model import golden, modelfile

from . import firmware_host as fh

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "digits_cnn_w4a4.npz"
CONFIG = "tiny"
FAILURES = ("SILENT", "DISAGREE", "TRACEBACK")
TARGETS = ("model", "blob", "mcu blob")      # the ACCEL and the MCU partition's blobs
OUTCOMES = ("refused", "identical", "new model", *FAILURES)


class Case:
    """One mutation: what was done, whether the checksum was recomputed, and whether the
    change may legitimately give other results (``free``)."""

    def __init__(self, target: str, what: str, data: bytes, rehashed: bool, free: bool):
        self.target, self.what, self.data = target, what, data
        self.rehashed, self.free = rehashed, free


# ----------------------------------------------------------------------------- values


def _odd_value(rng, v):
    """A replacement for a JSON value: another type, a nearby or extreme number."""
    choices = [None, True, "x", [], {}, [v], {"v": v}, 0, -1, 1, 2**70, 1.5, float("nan"),
               -(2**31), str(v)]
    if isinstance(v, bool):
        choices += [not v]
    elif isinstance(v, int):
        choices += [v + 1, v - 1, v * 2, -v, v // 2, float(v)]
    elif isinstance(v, float):
        choices += [v * 2, -v, 0.0, float("inf"), int(v)]
    elif isinstance(v, list) and v:
        choices += [v[:-1], v + [v[-1]], v[::-1], v[0], [*v[1:], v[0]]]
    elif isinstance(v, str):
        choices += [v + "_", "", "input", v.upper()]
    return choices[rng.integers(len(choices))]


def _word_value(rng, v: int, others: list[int]) -> int:
    choices = [v + 1, v - 1, v + 8, v - 8, v * 2, v // 2, 0, 1, 0xFFFFFFFF, 0x80000000,
               int(rng.integers(0, 1 << 32)), int(others[rng.integers(len(others))])]
    return choices[rng.integers(len(choices))] & 0xFFFFFFFF


def _paths(obj, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


# ----------------------------------------------------------------------------- model files


def _write_model(manifest: dict, arrays: dict, rehash: bool) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.npz"
        if rehash:
            modelfile.save(p, manifest, arrays)
        else:
            blob = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
            with open(p, "wb") as f:
                np.savez_compressed(f, manifest=blob, **arrays)
        return p.read_bytes()


# Manifest paths whose values the file may change freely (with its checksum): scales, the
# training record, class names. Every other edit is to the model's structure.
_FREE_KEYS = {"scale", "meta", "spec", "requant", "classes"}


def model_case(rng, base_bytes: bytes, manifest: dict, arrays: dict) -> Case:
    kind = ["flip", "truncate", "manifest", "manifest", "manifest", "swap", "cast", "reshape",
            "values", "add-remove"][rng.integers(10)]
    rehash = bool(rng.integers(2))
    if kind == "flip":
        b = bytearray(base_bytes)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        return Case("model", "flip bytes", bytes(b), False, False)
    if kind == "truncate":
        n = int(rng.integers(len(base_bytes)))
        return Case("model", f"truncate to {n} bytes", base_bytes[:n], False, False)
    m = json.loads(json.dumps(manifest))
    a = {k: v.copy() for k, v in arrays.items()}
    names = sorted(a)
    free = False
    if kind == "manifest":
        paths = [p for p, _ in _paths(m) if p and p[-1] != modelfile.HASH_FIELD]
        path = paths[rng.integers(len(paths))]
        parent, key = _get(m, path[:-1]), path[-1]
        op = ["set", "set", "delete", "add"][rng.integers(4)]
        old = parent[key]
        if op == "delete":
            del parent[key]
            what = f"manifest: delete {list(path)}"
        elif op == "add" and isinstance(parent, dict):
            parent[f"extra{rng.integers(100)}"] = _odd_value(rng, old)
            what = f"manifest: add a key beside {list(path)}"
        else:
            parent[key] = _odd_value(rng, old)
            what = f"manifest: {list(path)} = {parent[key]!r} (was {old!r})"
        free = any(p in _FREE_KEYS for p in path if isinstance(p, str))
    elif kind == "swap":
        x, y = (names[i] for i in rng.choice(len(names), 2, replace=False))
        a[x], a[y] = a[y], a[x]
        what = f"swap arrays {x} and {y}"
        free = a[x].shape == a[y].shape     # only values change: a different model
    elif kind == "cast":
        x = names[rng.integers(len(names))]
        dt = ["int8", "int16", "int32", "int64", "uint8", "uint64", "float32", "bool",
              ">i4"][rng.integers(9)]
        a[x] = a[x].astype(dt)
        what = f"cast {x} to {dt}"
        free = True     # values either kept (same results) or changed (a different model)
    elif kind == "reshape":
        x = names[rng.integers(len(names))]
        v = a[x]
        how = rng.integers(4)
        if how == 0:
            a[x] = v.reshape(-1)
        elif how == 1:
            a[x] = v[:-1] if len(v) > 1 else v[:0]
        elif how == 2:
            a[x] = np.concatenate([v, v[:1]])
        else:
            a[x] = v.reshape(1, *v.shape)
        what = f"reshape {x} from {v.shape} to {a[x].shape}"
    elif kind == "values":
        x = names[rng.integers(len(names))]
        v = a[x].reshape(-1)
        i = int(rng.integers(v.size))
        old = int(v[i])
        new = [old + 1, old - 1, -old, 0, int(np.iinfo(v.dtype).max),
               int(np.iinfo(v.dtype).min)][rng.integers(6)]
        v[i] = new
        what = f"{x}[{i}] = {new} (was {old})"
        free = True
    else:
        if rng.integers(2):
            x = names[rng.integers(len(names))]
            del a[x]
            what = f"remove array {x}"
        else:
            x = ["ghost/weight", "conv1/extra", "fc/mult", "conv2"][rng.integers(4)]
            a[x] = np.zeros(3, np.int8)
            what = f"add array {x}"
    return Case("model", what + (", hash recomputed" if rehash else ""),
                _write_model(m, a, rehash), rehash, free)


class ModelRunner:
    """The base model's results and the loaders run on a mutated file."""

    def __init__(self, tmp: Path, lib):
        self.tmp, self.lib = tmp, lib
        self.config = get_config(CONFIG)
        self.base = golden.load(MODEL)
        rng = np.random.default_rng(0)
        self.x = rng.integers(0, self.base.manifest["input"]["pixel_max"] + 1,
                              (3, *self.base.input_shape))
        self.want = golden.run(self.base, self.x)

    def run(self, case: Case) -> tuple[str, str]:
        path = self.tmp / "case.npz"
        path.write_bytes(case.data)
        try:
            model = golden.load(path)
        except golden.ModelFormatError as e:
            return "refused", str(e)
        got = golden.run(model, self.x)
        same = sorted(got) == sorted(self.want) and all(
            np.array_equal(got[k], self.want[k]) for k in got)
        try:
            program = compiler.compile_model(model, self.config)
        except compiler.CompileError as e:
            note = f"loaded; compiler refused: {e}"
        else:
            out = compiler.execute(program, got[program.input_name])
            bad = [n for n in program.names if not np.array_equal(out[n], got[n])]
            if bad:
                return "DISAGREE", f"compiler.execute differs from golden on {bad}"
            note = "loaded and compiled"
            try:
                blob = fb.build_blob(model, self.config, self.x.astype(np.uint8))
            except (fb.BlobError, compiler.CompileError) as e:
                note += f"; blob refused: {e}"
            else:
                try:
                    fb.check_blob(blob, self.config)
                except fb.BlobError as e:
                    return "DISAGREE", f"build_blob made a blob check_blob refuses: {e}"
        if same:
            return "identical", note
        if case.rehashed and case.free:
            return "new model", note
        return "SILENT", note + "; results differ"


# ----------------------------------------------------------------------------- blobs


def _recrc(b: bytearray) -> bytes:
    b[fb.CRC_START - 4:fb.CRC_START] = zlib.crc32(bytes(b[fb.CRC_START:])).to_bytes(4, "little")
    return bytes(b)


def _regions(blob: bytes) -> list[tuple[int, int, str]]:
    """(start, end, class) of every byte range: header, ops, program, data, records."""
    h = fb.parse_header(blob)
    ops = fb.parse_ops(blob)
    n = h["images_count"]
    out = [(0, fb.HEADER_BYTES, "header"),
           (h["ops_offset"], h["ops_offset"] + 4 * fb.OP_WORDS * len(ops), "op"),
           (h["program_offset"], h["program_offset"] + 4 * h["program_words"], "program")]
    data = [(h["weights_offset"], 4 * h["weight_words"]),
            (h["params_offset"], 4 * h["param_words"]),
            (h["images_offset"], n * h["in_channels"] * h["in_height"] * h["in_width"]),
            (h["labels_offset"], 4 * n), (h["expected_offset"], 8 * n * h["classes"])]
    records = []
    for op in ops:
        kind = fb.OP_KINDS[op["kind"] - 1]
        if kind == "CONV":
            cpairs = (op["out_c"] + 1) // 2
            data.append((op["weights_offset"], cpairs * (16 if op["w_bytes"] == 2 else 8)
                         * op["steps"]))
            records.append((op["params_offset"], 2 * cpairs * fb.RQ_RECORD_BYTES))
        elif kind == "FC":
            data += [(op["weights_offset"], op["out_c"] * op["in_c"]),
                     (op["params_offset"], 8 * op["out_c"])]
    out += [(off, off + size, "data") for off, size in data]
    # The CONV requantization records: their res_mult words and (RQ_GENERIC) multipliers
    # are checked, their biases are data.
    out += [(off, off + size, "records") for off, size in records]
    return out


def _region(regions, i: int) -> tuple[str, int]:
    """The class of byte ``i`` and where its region starts."""
    for start, end, cls in regions:
        if start <= i < end:
            return cls, start
    return "padding", i


# Op fields a blob may change with its CRC and stay self-consistent: a maxpool's window, a
# RQ_GENERIC conv's shift (nothing else in the blob depends on it).
_FREE_OP_FIELDS = {"kernel", "stride", "pad"}
_FREE_HEADER_FIELDS = {"pixel_max"}


def blob_case(rng, good: bytes, regions, target: str = "blob") -> Case:
    kind = ["flip", "flip", "truncate", "header", "header", "op", "op", "descriptor",
            "data", "flip-recrc"][rng.integers(10)]
    h = fb.parse_header(good)
    if kind == "descriptor" and not h["program_words"]:
        kind = "op"                                 # an MCU blob has no layer program
    if kind == "flip":
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        return Case(target, "flip bytes", bytes(b), False, False)
    if kind == "truncate":
        n = int(rng.integers(len(good)))
        if rng.integers(2):
            b = bytearray(good[:n])
            if n >= fb.HEADER_BYTES:
                b[12:16] = n.to_bytes(4, "little")      # total_bytes
                return Case(target, f"truncate to {n} bytes, total_bytes and CRC fixed",
                            _recrc(b), True, False)
        return Case(target, f"truncate to {n} bytes", good[:n], False, False)
    b = bytearray(good)
    if kind == "header":
        names = [f.name for f in fb.HEADER_FIELDS if f.name not in ("crc32",)]
        name = names[rng.integers(len(names))]
        at = fb.field_offsets(fb.HEADER_FIELDS)[name]
        old = h[name]
        new = _word_value(rng, old, list(h.values()))
        b[at:at + 4] = new.to_bytes(4, "little")
        return Case(target, f"header {name} = {new} (was {old}), CRC recomputed", _recrc(b),
                    True, name in _FREE_HEADER_FIELDS)
    if kind == "op":
        ops = fb.parse_ops(good)
        k = int(rng.integers(len(ops)))
        name = fb.OP_FIELDS[rng.integers(len(fb.OP_FIELDS))].name
        old = ops[k][name]
        new = _word_value(rng, old, list(ops[k].values()))
        at = h["ops_offset"] + 4 * k * fb.OP_WORDS + fb.field_offsets(fb.OP_FIELDS)[name]
        b[at:at + 4] = new.to_bytes(4, "little")
        kind_name = fb.OP_KINDS[ops[k]["kind"] - 1]
        free = (kind_name == "MAXPOOL" and name in _FREE_OP_FIELDS
                or kind_name == "CONV" and name == "shift"
                and ops[k]["rq_mode"] == fb.RQ_MODES.index("GENERIC") + 1)
        return Case(target, f"op {k} ({kind_name}) {name} = {new} (was {old}), "
                    "CRC recomputed", _recrc(b), True, free)
    if kind == "descriptor":
        words = np.frombuffer(good, "<u4", h["program_words"], h["program_offset"]).copy()
        words = words.reshape(-1, fmt.DESC_WORDS)
        k = int(rng.integers(len(words)))
        d = fmt.Descriptor.unpack(words[k])
        f = fmt.FIELDS[rng.integers(len(fmt.FIELDS))]
        old = getattr(d, f.name)
        new = _word_value(rng, old, [old]) & ((1 << f.bits) - 1)
        w, bit = fmt.LAYOUT[f.name]
        mask = ((1 << f.bits) - 1) << bit
        words[k, w] = (int(words[k, w]) & ~mask) | (new << bit)
        at = h["program_offset"]
        b[at:at + words.nbytes] = words.astype("<u4").tobytes()
        # The descriptors' extents are cross-checked with the header; their other fields
        # are the program's own (the sequencer checks them when it runs).
        return Case(target, f"descriptor {k} {f.name} = {new} (was {old}), CRC recomputed",
                    _recrc(b), True, True)
    i = int(rng.integers(fb.HEADER_BYTES, len(b)))
    if kind == "data":
        data = [r for r in regions if r[2] == "data" and r[1] > r[0]]
        start, end, _ = data[rng.integers(len(data))]
        i = int(rng.integers(start, end))
    b[i] ^= 1 << int(rng.integers(8))
    cls, start = _region(regions, i)
    if cls == "records":
        rel = (i - start) % fb.RQ_RECORD_BYTES
        cls = "data" if rel < 8 else "records"
    return Case(target, f"flip byte {i} ({cls}), CRC recomputed", _recrc(b), True,
                cls in ("data", "program"))


class CheckingFake(fh.FakeAccelerator):
    """The fake accelerator with the sequencer's descriptor check
    (:func:`contract.program.check_descriptor`), stopping with its error code as the
    hardware does; an exception in the fake is kept (it cannot cross the C callback)."""

    crash: str | None = None

    def start(self):
        try:
            dw = fmt.DESC_WORDS
            prog, code = self.mem["PROG"], fmt.ErrorCode.PROGRAM
            for i in range(len(prog) // dw):
                d = fmt.Descriptor.unpack(prog[i * dw:(i + 1) * dw])
                code = fmt.check_descriptor(d, self.config)
                if code or d.last:
                    break
            if code:
                self.starts += 1
                self.error_code = int(code)
                self._finish(error=True)
                self.error_code = 0
                return
            super().start()
        except Exception:   # noqa: BLE001 - reported as the case's outcome
            self.crash = traceback.format_exc()
            self._finish(error=True)


class BlobRunner:
    def __init__(self, lib, model: golden.IntModel, partition: str = "accel"):
        self.lib = lib
        self.config = get_config(CONFIG)
        rng = np.random.default_rng(1)
        x = rng.integers(0, model.manifest["input"]["pixel_max"] + 1,
                         (2, *model.input_shape)).astype(np.uint8)
        # The MCU blob with RQ_GENERIC convs too (residual, res_mult in the records).
        self.good = fb.build_blob(model, self.config, x, [1, 2], partition=partition,
                                  fast_requant=partition == "accel")
        self.regions = _regions(self.good)
        status, self.want, note = self._c(self.good)
        assert status == "OK", (status, note)

    def _c(self, blob: bytes):
        """(status, logits per image, note) from the firmware on the fake accelerator."""
        lib = self.lib
        mem = fh.Buffer(blob)
        model = fh.Model()
        st = fh.status(lib.cim_model_open(C.byref(model), mem.addr, len(blob)))
        if st != "OK":
            return st, None, "cim_model_open"
        fake = CheckingFake(self.config)
        dev, hal = fh.Dev(), fake.hal()
        assert fh.status(lib.cim_init(C.byref(dev), C.byref(hal))) == "OK"
        st = fh.status(lib.cim_load_model(C.byref(dev), C.byref(model)))
        if st != "OK":
            return st, None, "cim_load_model"
        h = fb.parse_header(blob)
        ws = fh.Buffer(h["workspace_bytes"], fb.WORKSPACE_ALIGN)
        net = fh.Net()
        st = fh.status(lib.cim_net_init(C.byref(net), C.byref(dev), C.byref(model), ws.addr,
                                        ws.size))
        if st != "OK":
            return st, None, "cim_net_init"
        net.timeout_polls = 100
        logits = []
        for i in range(h["images_count"]):
            at = h["images_offset"] + i * h["in_channels"] * h["in_height"] * h["in_width"]
            cls = C.c_uint32()
            st = fh.status(lib.cim_net_run(C.byref(net), mem.addr + at, C.byref(cls)))
            if fake.crash:
                raise RuntimeError(f"the fake accelerator failed:\n{fake.crash}")
            if fake.errors:
                return "BUS", None, "; ".join(fake.errors[:3])
            if st != "OK":
                return "RUN_" + st, None, f"cim_net_run on image {i}: hw_error {dev.hw_error}"
            logits.append(np.ctypeslib.as_array(lib.cim_net_logits(C.byref(net)),
                                                (h["classes"],)).copy())
        return "OK", logits, "ran"

    def run(self, case: Case) -> tuple[str, str]:
        try:
            fb.check_blob(case.data, self.config)
            py = "OK"
        except fb.BlobError as e:
            py, why = e.status, str(e)
        c_status, logits, note = self._c(case.data)
        if c_status == "BUS":
            return "DISAGREE", f"the driver made an illegal bus access: {note}"
        opened = "OK" if c_status.startswith("RUN_") else c_status
        if py != opened:
            return "DISAGREE", f"check_blob says {py}, the firmware {c_status} ({note})"
        if c_status != "OK":
            return "refused", f"{c_status} ({note})" + (f": {why}" if py != "OK" else "")
        same = len(logits) == len(self.want) and all(
            np.array_equal(a, b) for a, b in zip(logits, self.want))
        if same:
            return "identical", note
        if case.rehashed and case.free:
            return "new model", note
        return "SILENT", "opened and ran with other logits"


# ----------------------------------------------------------------------------- driver


def _save(out: Path, n: int, outcome: str, case: Case, detail: str) -> Path:
    d = out / f"{n:06d}-{outcome}"
    d.mkdir(parents=True, exist_ok=True)
    (d / ("case.npz" if case.target == "model" else "case.bin")).write_bytes(case.data)
    (d / "case.json").write_text(json.dumps(dict(case=n, target=case.target, what=case.what,
                                                 rehashed=case.rehashed, free=case.free,
                                                 outcome=outcome, detail=detail), indent=1))
    return d


def fuzz(count: int, seed: int, out: Path, first: int = 0, log=print) -> Counter:
    """Run cases ``first .. first + count - 1``; return the counts of (target, outcome)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lib = fh.build_library(tmp / "fw", CONFIG)
        models = ModelRunner(tmp, lib)
        blobs = {"blob": BlobRunner(lib, models.base),
                 "mcu blob": BlobRunner(lib, models.base, "mcu")}
        base_bytes = MODEL.read_bytes()
        manifest, arrays = modelfile.read(MODEL)
        counts: Counter = Counter()
        for n in range(first, first + count):
            rng = np.random.default_rng([seed, n])
            target = "model" if rng.integers(2) else TARGETS[1 + rng.integers(2)]
            try:
                case = (model_case(rng, base_bytes, manifest, arrays) if target == "model"
                        else blob_case(rng, blobs[target].good, blobs[target].regions,
                                       target))
            except Exception:   # noqa: BLE001 - a harness bug, reported like any
                counts[(target, "TRACEBACK")] += 1
                log(f"case {n}: the mutation itself failed:\n{traceback.format_exc()}")
                continue
            # Written before the run, removed after: a crash of the C code leaves it.
            pending = _save(out, n, "pending", case, "running")
            try:
                with contextlib.redirect_stderr(sys.stdout):
                    outcome, detail = (models if target == "model"
                                       else blobs[target]).run(case)
            except Exception:   # noqa: BLE001 - any other exception is a finding
                outcome, detail = "TRACEBACK", traceback.format_exc()
            for f in pending.iterdir():
                f.unlink()
            pending.rmdir()
            counts[(target, outcome)] += 1
            if outcome in FAILURES:
                d = _save(out, n, outcome, case, detail)
                last = detail.strip().splitlines()[-1] if detail.strip() else ""
                log(f"case {n}: {outcome}: {case.what}\n  {last}\n  -> {d}")
    return counts


def table(counts: Counter) -> str:
    rows = [f"{'outcome':<12}" + "".join(f"{t:>10}" for t in (*TARGETS, "total"))]
    for o in (*OUTCOMES, "all"):
        n = [sum(v for (t, oo), v in counts.items() if t == x and o in (oo, "all"))
             for x in TARGETS]
        rows.append(f"{o:<12}" + "".join(f"{v:>10}" for v in (*n, sum(n))))
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz_files",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=5000, help="cases to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, default=0, help="number of the first case")
    p.add_argument("--out", type=Path, default=ROOT / "fuzz_out",
                   help="failing cases are kept here")
    p.add_argument("--smoke", action="store_true", help="a short run (200 cases)")
    args = p.parse_args(argv)
    count = 200 if args.smoke else args.count
    t0 = time.time()
    counts = fuzz(count, args.seed, args.out, args.first)
    failed = sum(counts[(t, o)] for t in TARGETS for o in FAILURES)
    print(f"\nfile fuzzing: {count} cases (seed {args.seed}, first {args.first}) in "
          f"{time.time() - t0:.0f} s\n{table(counts)}")
    if failed:
        print(f"{failed} failing cases kept in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
