"""Accuracy sweeps, every point an independent job on a Dask cluster.

    python -m model.sweep bits --bits 2,3,4,8 --grid full --width 0.25 --limit 10000
    python -m model.sweep adc --model models/resnet14_fmnist_w4a4.npz --adc-bits 2,3,4,5,6 \\
        --adc-rows 16,32,64,128 --limit 2000
    python -m model.sweep bits ... --scheduler tcp://host:8786   # fan out over a cluster

``bits``: per weight/activation bit pair a QAT run (:mod:`model.train`) and the golden model
on the test split. The float phase does not depend on the bit widths, so one float run, a job
of its own, serves every pair: Dask hands its checkpoint to the QAT jobs (``--init-float``).

``adc``: a fixed model file evaluated by the golden model with a partial-sum ADC
(:class:`contract.arith.AdcModel`) per (ADC bits, rows per conversion) pair, plus the exact
reference. A pair whose ADC cannot clip (``2**bits - 1 >=
rows``) is computed exactly, which it equals by the ADC rule.

Each point is submitted to a ``dask.distributed`` client: a ``LocalCluster`` of ``--workers``
processes by default, or the scheduler named by ``--scheduler`` (its workers need this
repository importable and the data sets at the same paths). A finished point is written to
``OUT/points/<key>.json``, the key being a hash of every parameter that determines its result,
so an interrupted or extended sweep only runs the points it lacks. Training runs keep their
checkpoints under ``--runs`` (per point), so an interrupted run resumes mid-training when it
lands on the same machine. Writes ``OUT/<sweep>.csv`` and ``OUT/<sweep>.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import data

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ("bits", "adc")
GRIDS = ("full", "diagonal", "cross")

# The columns of each sweep's CSV, in order.
COLUMNS = {
    "bits": ("w_bits", "a_bits", "golden_acc", "float_acc", "fakequant_acc",
             "float_to_integer_gap", "test_images", "seconds"),
    "adc": ("adc_bits", "adc_rows", "golden_acc", "clips", "test_images", "seconds"),
}


class SweepError(Exception):
    """A sweep that cannot run as asked (bad arguments, a point that failed)."""


# ----------------------------------------------------------------------------- points


def point_key(params: dict) -> str:
    """A file name for a point: readable parameters plus a hash of all of them."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    if params["sweep"] == "float":
        label = "float"
    elif params["sweep"] == "bits":
        label = f"w{params['w_bits']}a{params['a_bits']}"
    else:
        label = "exact" if params["adc_bits"] is None else \
            f"adc{params['adc_bits']}b-{params['adc_rows']}r"
    return f"{label}-{digest}"


def cache_path(out: Path, params: dict) -> Path:
    return out / "points" / f"{point_key(params)}.json"


def load_cached(out: Path, params: dict) -> dict | None:
    """The cached result of a point, or None when it has not run (or its file is from other
    parameters or unreadable, e.g. written half by a killed process)."""
    path = cache_path(out, params)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("params") != params:
        return None
    return rec.get("result")


def store(out: Path, params: dict, result: dict) -> Path:
    path = cache_path(out, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(params=params, result=result), indent=2) + "\n")
    tmp.replace(path)  # atomic: a killed sweep leaves no half-written point
    return path


def bit_pairs(bits: Sequence[int], grid: str, center: int = 4) -> list[tuple[int, int]]:
    """(w_bits, a_bits) pairs: the ``full`` grid, its ``diagonal``, or the ``cross`` (the
    diagonal plus every pair with ``center`` weight or activation bits)."""
    if grid == "full":
        return [(w, a) for w in bits for a in bits]
    pairs = [(b, b) for b in bits]
    if grid == "cross":
        pairs += [(w, a) for w in bits for a in bits if w != a and center in (w, a)]
    return sorted(pairs)


# ----------------------------------------------------------------------------- jobs
# These run on the Dask workers: module-level functions of plain arguments.


def _train(params: dict, run: Path, extra: list[str]) -> None:
    """``python -m model.train`` with the point's parameters into ``run`` (log in
    ``run/train.log``); SweepError with the log's tail when it fails."""
    from . import train

    run.mkdir(parents=True, exist_ok=True)
    argv = ["--arch", params["arch"], "--dataset", params["dataset"], "--out", str(run),
            "--width", str(params["width"]), "--blocks", ",".join(map(str, params["blocks"])),
            "--w-bits", str(params["w_bits"]), "--a-bits", str(params["a_bits"]),
            "--recipe", params["recipe"], "--float-epochs", str(params["float_epochs"]),
            "--qat-epochs", str(params["qat_epochs"]), "--seed", str(params["seed"]),
            "--device", params["device"], "--threads", str(params["threads"]),
            "--no-progress", "--resume"]
    if params["limit"] is not None:
        argv += ["--limit", str(params["limit"])]
    if params["data_dir"] is not None:
        argv += ["--data-dir", params["data_dir"]]
    log = run / "train.log"
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        rc = train.main(argv + extra)
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SweepError(f"training into {run} failed (exit {rc}):\n  " + "\n  ".join(tail))


def float_point(params: dict, run_dir: str) -> dict:
    """The float phase every bit pair of a sweep starts from (it does not depend on the bit
    widths); returns its checkpoint (weights and state), which Dask hands to the QAT jobs."""
    import torch

    run = Path(run_dir)
    _train(dict(params, qat_epochs=0), run, [])
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    return dict(spec=ck["spec"], model=ck["model"], state=ck["state"], rng=ck["rng"],
                optimizer=None)


def train_point(params: dict, run_dir: str, float_init: dict | None = None) -> dict:
    """QAT and evaluation of one bit pair with :mod:`model.train`, from the shared float
    network ``float_init`` (a checkpoint) when given; returns its metrics."""
    import torch

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    extra = []
    if float_init is not None:
        torch.save(float_init, run / "float_init.pt")
        extra = ["--init-float", str(run / "float_init.pt")]
    t0 = time.time()
    _train(params, run, extra)
    m = json.loads((run / "metrics.json").read_text())
    return dict(w_bits=params["w_bits"], a_bits=params["a_bits"], golden_acc=m["golden_acc"],
                float_acc=m["float_acc"], fakequant_acc=m["fakequant_acc"],
                float_to_integer_gap=m["float_to_integer_gap"], test_images=m["test_images"],
                seconds=round(time.time() - t0, 1), training=m.get("training"))


def adc_point(params: dict, model_path: str) -> dict:
    """Evaluate the model file with one ADC setting (None: exact) on the test images."""
    from . import evaluate, golden

    model = golden.load(model_path)
    x, y, _ = data.load_dataset(params["dataset"], "test", params["data_dir"],
                                limit=params["limit"])
    x = evaluate.fit_images(x, model.input_shape)
    bits, rows = params["adc_bits"], params["adc_rows"]
    clips = bits is not None and (1 << bits) - 1 < rows
    adc = golden.AdcModel(rows=rows, bits=bits) if clips else None
    t0 = time.time()
    acc = golden.accuracy(model, x, y, adc=adc)
    return dict(adc_bits=bits, adc_rows=rows, golden_acc=acc, clips=clips,
                test_images=len(x), seconds=round(time.time() - t0, 1))


# ----------------------------------------------------------------------------- running


def make_client(scheduler: str | None, workers: int, processes: bool = True):
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster (closed with the
    client) with ``workers`` single-threaded workers."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except OSError as e:
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from e
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                           dashboard_address=":0")
    return Client(cluster)


@dataclass(frozen=True)
class Prerequisite:
    """A job that points take as an argument: submitted once, and only if a point that needs
    it runs; the points get its result (Dask moves it to their workers)."""

    key: str
    fn: Callable
    args: tuple


def run_points(client, jobs: list[tuple[dict, Callable, tuple]], out: Path, *,
               progress: bool = True) -> tuple[list[dict], list[str]]:
    """Run every job ``(params, function, args)`` whose point is not cached; return the
    results of all points (in ``jobs`` order) and the error messages of failed ones. An
    argument that is a :class:`Prerequisite` is replaced by its job's result."""
    from dask.distributed import as_completed

    results: dict[int, dict] = {}
    todo = []
    for i, (params, _fn, _args) in enumerate(jobs):
        cached = load_cached(out, params)
        if cached is not None:
            results[i] = cached
        else:
            todo.append(i)
    print(f"{len(jobs)} points: {len(results)} cached, {len(todo)} to run on "
          f"{len(client.scheduler_info()['workers'])} Dask workers", flush=True)
    errors = []
    if todo:
        futures, prereqs = {}, {}

        def resolve(a):
            if not isinstance(a, Prerequisite):
                return a
            if a.key not in prereqs:
                prereqs[a.key] = client.submit(a.fn, *a.args, key=f"{a.key}-{uuid.uuid4()}")
            return prereqs[a.key]

        for k, i in enumerate(todo):
            params, fn, args = jobs[i]
            args = tuple(resolve(a) for a in args)
            # A fresh task key per submission: a scheduler may remember a failed try's key.
            # Points run in the order of ``jobs`` where workers are fewer than points.
            fut = client.submit(fn, params, *args, key=f"{point_key(params)}-{uuid.uuid4()}",
                                priority=len(todo) - k)
            futures[fut] = i
        bar = tqdm(total=len(todo), desc=out.name, unit="point", disable=not progress,
                   file=sys.stdout)
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            params = jobs[i][0]
            try:
                res = fut.result()
            except Exception as e:  # a failed point is reported; the others go on
                errors.append(f"{point_key(params)}: {e}")
                bar.update(1)
                if not progress:
                    print(f"[{done}/{len(todo)}] {point_key(params)} failed", flush=True)
                continue
            store(out, params, res)
            results[i] = res
            bar.update(1)
            line = f"{point_key(params).rsplit('-', 1)[0]}: {res['golden_acc']:.2%}"
            bar.set_postfix_str(line)
            if not progress:  # a line per point instead of the bar (logs, batch jobs)
                print(f"[{done}/{len(todo)}] {line} ({res['seconds']} s)", flush=True)
        bar.close()
    return [results[i] for i in sorted(results)], errors


def write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore",
                           lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in columns})
    return path


def plot_lines(path: Path, lines: dict[str, list[tuple[int, float]]], *, xlabel: str,
               legend: str, title: str, reference: tuple[str, float] | None = None) -> Path:
    """A PNG of accuracy lines ``{label: [(x, accuracy)]}`` against integer ``x``, with an
    optional dashed ``(label, accuracy)`` reference line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, pts in lines.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=label)
    if reference is not None:
        ax.axhline(100 * reference[1], color="grey", ls="--", lw=1, label=reference[0])
    ax.set_xticks(sorted({p[0] for pts in lines.values() for p in pts}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy, integer golden model (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title=legend, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: reproducible bytes
    plt.close(fig)
    return path


def plot_bits(path: Path, rows: list[dict], title: str) -> Path:
    """Golden accuracy against activation bits, one line per weight bit width, and the mean
    float accuracy the QAT runs started from."""
    lines = {f"W{wb}": [(r["a_bits"], r["golden_acc"]) for r in rows if r["w_bits"] == wb]
             for wb in sorted({r["w_bits"] for r in rows})}
    floats = [r["float_acc"] for r in rows if r.get("float_acc") is not None]
    ref = ("float", sum(floats) / len(floats)) if floats else None
    return plot_lines(path, lines, xlabel="activation bits", legend="weight bits",
                      title=title, reference=ref)


def plot_adc(path: Path, rows: list[dict], title: str) -> Path:
    """Golden accuracy against ADC bits, one line per rows per conversion, exact as a line."""
    adc = [r for r in rows if r["adc_bits"] is not None]
    lines = {f"{n} rows": [(r["adc_bits"], r["golden_acc"]) for r in adc if r["adc_rows"] == n]
             for n in sorted({r["adc_rows"] for r in adc})}
    exact = [r["golden_acc"] for r in rows if r["adc_bits"] is None]
    return plot_lines(path, lines, xlabel="ADC bits per partial sum", legend="rows per conversion",
                      title=title, reference=("exact", exact[0]) if exact else None)


# ----------------------------------------------------------------------------- sweeps


def int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return sorted(set(vals))


def bits_jobs(args) -> tuple[list, str]:
    for b in args.bits:
        if not 2 <= b <= 8:
            raise SweepError(f"--bits: {b} is outside 2..8 (the accelerator's weight and "
                             "activation widths the sweep covers)")
    common = dict(sweep="bits", arch=args.arch, dataset=args.dataset, width=args.width,
                  blocks=list(args.blocks), recipe=args.recipe, float_epochs=args.float_epochs,
                  qat_epochs=args.qat_epochs, limit=args.limit, seed=args.seed)
    # Where and how fast a point runs does not change its result (up to floating-point
    # order), so device, threads and data folder are passed but not hashed.
    runtime = dict(device=args.device, threads=args.threads, data_dir=args.data_dir)
    # The float phase does not depend on the bit widths: one run serves every point.
    fparams = dict(common, sweep="float", w_bits=4, a_bits=4)
    fkey = point_key(fparams)
    pre = Prerequisite(fkey, float_point, (dict(fparams, **runtime),
                                           str(Path(args.runs) / fkey)))
    jobs = []
    for w, a in bit_pairs(args.bits, args.grid):
        params = dict(common, w_bits=w, a_bits=a)
        run_dir = Path(args.runs) / point_key(params)
        jobs.append((params, _bits_job, (runtime, str(run_dir), pre)))
    limit = f"first {args.limit} train images" if args.limit else "full train split"
    title = (f"{args.arch} width {args.width:g} on {args.dataset}\n({limit}, "
             f"{args.float_epochs} float + {args.qat_epochs} QAT epochs, recipe {args.recipe})")
    return jobs, title


def _bits_job(params: dict, runtime: dict, run_dir: str, float_init: dict) -> dict:
    return train_point(dict(params, **runtime), run_dir, float_init)


def adc_jobs(args) -> tuple[list, str]:
    from . import golden
    from .modelfile import HASH_FIELD

    try:
        model = golden.load(args.model)
        for b in args.adc_bits:
            for r in args.adc_rows:
                golden.AdcModel(rows=r, bits=b)
    except (golden.ModelFormatError, ValueError) as e:
        raise SweepError(str(e)) from e
    dataset = args.dataset or model.manifest.get("meta", {}).get("dataset")
    if dataset is None:
        raise SweepError(f"{args.model} does not record its dataset; pass --dataset")
    # The model is identified by its content hash, so a retrained file is a new sweep.
    ident = model.manifest.get(HASH_FIELD) or hashlib.sha256(
        Path(args.model).read_bytes()).hexdigest()
    common = dict(sweep="adc", model=Path(args.model).name, model_hash=ident, dataset=dataset,
                  limit=args.limit)
    # Fewest bits first: where workers are few, an interrupted sweep has the coarse grid.
    points = [(None, None)] + [(b, r) for b in args.adc_bits for r in args.adc_rows]
    jobs = []
    for b, r in points:
        params = dict(common, adc_bits=b, adc_rows=r)
        jobs.append((params, _adc_job, (args.data_dir, str(Path(args.model).resolve()))))
    images = f"first {args.limit} test images" if args.limit else "full test split"
    title = f"{Path(args.model).name}\non {dataset} ({images})"
    return jobs, title


def _adc_job(params: dict, data_dir: str | None, model_path: str) -> dict:
    return adc_point(dict(params, data_dir=data_dir), model_path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m model.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sweep", required=True)

    def common(sp):
        sp.add_argument("--out", default=None, help="results folder (default results/SWEEP)")
        sp.add_argument("--scheduler", default=None,
                        help="address of a Dask scheduler (tcp://host:port); default: a "
                             "LocalCluster on this machine")
        sp.add_argument("--workers", type=int, default=1,
                        help="LocalCluster worker processes (default 1)")
        sp.add_argument("--data-dir", default=None, help="folder holding the dataset files")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    b = sub.add_parser("bits", help="accuracy against weight/activation bits (trains)")
    common(b)
    b.add_argument("--bits", type=int_list, default=[2, 3, 4, 8],
                   help="bit widths, comma-separated (default 2,3,4,8)")
    b.add_argument("--grid", choices=GRIDS, default="full",
                   help="full: every (W, A) pair; diagonal: W = A; cross: the diagonal and "
                        "the pairs with 4 weight or activation bits")
    b.add_argument("--arch", choices=("resnet14", "digits_cnn"), default="resnet14")
    b.add_argument("--dataset", choices=data.DATASETS, default="fashion-mnist")
    b.add_argument("--width", type=float, default=0.25)
    b.add_argument("--blocks", type=int_list, default=None,
                   help="BasicBlocks per stage (default 2,2,2)")
    b.add_argument("--recipe", default="default", help="model.train recipe")
    b.add_argument("--float-epochs", type=int, default=3)
    b.add_argument("--qat-epochs", type=int, default=3)
    b.add_argument("--limit", type=int, default=None, help="first N train images only")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="training device of every point (default cpu)")
    b.add_argument("--threads", type=int, default=1, help="torch threads per point")
    b.add_argument("--runs", default=None,
                   help="folder of the per-point training runs (default runs/sweep-bits)")

    a = sub.add_parser("adc", help="accuracy of a model against partial-sum ADC bits and rows")
    common(a)
    a.add_argument("--model", default=str(ROOT / "models" / "resnet14_fmnist_w4a4.npz"))
    a.add_argument("--dataset", choices=data.DATASETS, default=None,
                   help="default: the dataset recorded in the model")
    a.add_argument("--adc-bits", type=int_list, default=[2, 3, 4, 5, 6])
    a.add_argument("--adc-rows", type=int_list, default=[16, 32, 64, 128])
    a.add_argument("--limit", type=int, default=None, help="first N test images only")

    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.out is None:
        args.out = str(Path("results") / args.sweep)
    if args.sweep == "bits":
        args.blocks = args.blocks or [2, 2, 2]
        args.runs = args.runs or str(Path("runs") / "sweep-bits")
    return args


def main(argv=None, *, processes: bool = True) -> int:
    """Run a sweep. ``processes=False`` runs the LocalCluster's workers as threads of this
    process (for tests)."""
    args = parse_args(argv)
    out = Path(args.out)
    try:
        jobs, title = bits_jobs(args) if args.sweep == "bits" else adc_jobs(args)
        client = make_client(args.scheduler, args.workers, processes)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        rows, errors = run_points(client, jobs, out, progress=not args.no_progress)
    finally:
        cluster = None if args.scheduler else client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    if rows:
        csv_path = write_csv(out / f"{args.sweep}.csv", COLUMNS[args.sweep], rows)
        plot = plot_bits if args.sweep == "bits" else plot_adc
        png = plot(out / f"{args.sweep}.png", rows, title)
        print(f"wrote {csv_path} and {png} ({len(rows)} of {len(jobs)} points)")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    # Through the package, so that the jobs pickle as model.sweep.* (importable on workers),
    # not as __main__.*.
    from model import sweep

    sys.exit(sweep.main())
