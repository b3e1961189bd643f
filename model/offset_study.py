"""Accuracy against per-column ADC offset spread: uncalibrated, calibrated, ideal.

    python -m model.offset_study --model models/resnet14_fmnist_w4a4.npz --limit 1000 \\
        --out results/offsets

For every offset spread ``sigma`` (LSB of the partial-sum ADC) one device is drawn (its
bit-column offsets Gaussian, from ``--seed``), calibrated with each ``--cal`` setting of
calibration rows (:func:`model.calibration.calibrate`, seed 002's binary search), and the
integer golden model runs the test images on the device before and after calibration. The
ideal rows are the same ADC without offsets, and the exact array (no ADC). Writes
``offsets.csv`` and ``offsets.png`` into ``--out``; ``docs/offsets.md`` explains the model.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from contract.arith import AdcOffsets, offset_codes
from contract.config import get_config

from . import data, golden
from .calibration import CalibrationRows, OffsetArray, calibrate
from .evaluate import fit_images

FIELDS = ("sigma_lsb", "mode", "cal_rows", "cal_step_lsb", "accuracy", "images",
          "offset_rms_lsb", "shifted_bit_columns", "out_of_range", "evaluations", "row_writes",
          "cycles", "seconds")


def parse_cal(text: str) -> CalibrationRows:
    """``ROWS:STEP``, e.g. ``8:0.5``: rows per bit-column and LSB per row."""
    rows, sep, step = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return CalibrationRows(rows=int(rows), step=float(step))
    except ValueError as e:
        detail = f": {e}" if str(e) else ""
        raise argparse.ArgumentTypeError(f"calibration {text!r} must be ROWS:STEP, e.g. 8:0.5"
                                         f"{detail}") from None


def _accuracy(model, x, y, adc, cache, batch, progress=False):
    """Top-1 accuracy on the device ``adc``; devices whose ADCs shift the same codes compute
    the same results, so they are evaluated once."""
    codes = None if adc is None or adc.offsets is None else offset_codes(adc.offsets.values)
    if codes is not None and not codes.any():
        codes = None                        # no code moves: the ADC without offsets
    key = None if adc is None else (
        adc.rows, adc.bits, None if codes is None else hashlib.sha1(codes.tobytes()).hexdigest())
    if key not in cache:
        t0 = time.time()
        with tqdm(total=len(x), unit="img", disable=not progress, leave=False) as bar:
            acc = golden.accuracy(model, x, y, batch=batch, adc=adc, progress=bar.update)
        cache[key] = (acc, time.time() - t0)
    return cache[key]


def study(model_path, *, sigmas, cals, adc_bits, adc_rows, config, seed, dataset=None,
          data_dir=None, limit=None, batch=250, log=print, progress=False) -> list[dict]:
    """The study's rows (see :data:`FIELDS`); ``progress``: a progress bar over the test images
    of each evaluation, on stderr."""
    model = golden.load(model_path)
    meta = model.manifest.get("meta", {})
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise data.DatasetError(f"{model_path} does not record its dataset; pass --dataset")
    x, y, _ = data.load_dataset(dataset, "test", data_dir, limit=limit)
    x = fit_images(x, model.input_shape)
    w_bits = {n["w_bits"] for n in model.nodes if n["op"] == "conv" and n["where"] == "accel"}
    if len(w_bits) != 1:
        raise ValueError(f"the accelerator's convs must share one weight width, not {w_bits}")
    w_bits = w_bits.pop()
    cfg = get_config(config)
    cache: dict = {}
    rows = []

    def add(sigma, mode, cal, acc_s, dev=None, res=None):
        acc, secs = acc_s
        codes = None if dev is None else offset_codes(dev.values)
        rows.append(dict(
            sigma_lsb=sigma, mode=mode, cal_rows=cal.rows if cal else "",
            cal_step_lsb=cal.step if cal else "", accuracy=round(acc, 6), images=len(x),
            offset_rms_lsb="" if dev is None else round(float(np.sqrt((dev.lsb() ** 2).mean())),
                                                        4),
            shifted_bit_columns="" if codes is None else round(float((codes != 0).mean()), 6),
            out_of_range="" if res is None else int(res.out_of_range.sum()),
            evaluations="" if res is None else res.evaluations,
            row_writes="" if res is None else res.row_writes,
            cycles="" if res is None else res.cycles, seconds=round(secs, 1)))
        log(", ".join(f"{k}={v}" for k, v in rows[-1].items() if v != ""))

    add(0.0, "exact", None, _accuracy(model, x, y, None, cache, batch, progress))
    add(0.0, "ideal", None, _accuracy(model, x, y, golden.AdcModel(adc_rows, adc_bits), cache,
                                      batch, progress))
    for sigma in sigmas:
        dev = AdcOffsets.gaussian(sigma=sigma, macros=cfg.macros, cols=cfg.cols,
                                  w_bits=w_bits, seed=seed)
        add(sigma, "uncalibrated", None,
            _accuracy(model, x, y, golden.AdcModel(adc_rows, adc_bits, dev), cache, batch,
                      progress), dev)
        for cal in cals:
            array = OffsetArray(dev, cal)
            res = calibrate(array, strict=False)
            after = array.residual()
            add(sigma, "calibrated", cal, _accuracy(
                model, x, y, golden.AdcModel(adc_rows, adc_bits, after), cache, batch,
                progress), after,
                res)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for mode, style in (("exact", ":"), ("ideal", "--")):
        acc = [r["accuracy"] for r in rows if r["mode"] == mode]
        label = "exact array" if mode == "exact" else "ideal ADC (no offset)"
        ax.axhline(100 * acc[0], color="grey", ls=style, label=label)
    series = [("uncalibrated", None)] + sorted({(r["mode"], (r["cal_rows"], r["cal_step_lsb"]))
                                                for r in rows if r["mode"] == "calibrated"})
    for mode, cal in series:
        sel = [r for r in rows if r["mode"] == mode
               and (cal is None or (r["cal_rows"], r["cal_step_lsb"]) == cal)]
        s = [r["sigma_lsb"] for r in sel]
        label = mode if cal is None else f"calibrated, {cal[0]} rows x {cal[1]:g} LSB"
        ax.plot(s, [100 * r["accuracy"] for r in sel], "o-", label=label)
        bx.plot(s, [100 * r["shifted_bit_columns"] for r in sel], "o-", label=label)
    ax.set(xlabel="offset sigma (LSB of the partial-sum ADC)", ylabel="top-1 accuracy (%)",
           title=title)
    bx.set(xlabel="offset sigma (LSB of the partial-sum ADC)",
           ylabel="bit-columns whose code is shifted (%)", title="ADC codes moved by offsets")
    for a in (ax, bx):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.offset_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/resnet14_fmnist_w4a4.npz")
    p.add_argument("--dataset", choices=data.DATASETS, default=None,
                   help="default: the dataset recorded in the model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--sigmas", default="0.1,0.25,0.5,1,2",
                   help="offset spreads in LSB, comma-separated (default %(default)s)")
    p.add_argument("--cal", action="append", type=parse_cal, default=None,
                   help="calibration rows ROWS:STEP (LSB per row), repeatable; default 8:0.5, "
                        "8:1 and 16:0.25")
    p.add_argument("--adc-bits", type=int, default=6)
    p.add_argument("--adc-rows", type=int, default=64)
    p.add_argument("--config", default="default",
                   help="hardware configuration whose macros and columns the device has")
    p.add_argument("--seed", type=int, default=0, help="device seed (the offsets' draw)")
    p.add_argument("--out", default="results/offsets")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
        if any(not np.isfinite(s) or s < 0 for s in sigmas):
            raise ValueError
    except ValueError:
        p.error(f"--sigmas must be comma-separated numbers >= 0, not {args.sigmas!r}")
    try:
        golden.AdcModel(args.adc_rows, args.adc_bits)
        get_config(args.config)
    except ValueError as e:
        p.error(str(e))
    cals = args.cal or [CalibrationRows(8, 0.5), CalibrationRows(8, 1.0),
                        CalibrationRows(16, 0.25)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = study(args.model, sigmas=sigmas, cals=cals, adc_bits=args.adc_bits,
                     adc_rows=args.adc_rows, config=args.config, seed=args.seed,
                     dataset=args.dataset, data_dir=args.data_dir, limit=args.limit,
                     progress=not args.no_progress)
    except (golden.ModelFormatError, data.DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(out / "offsets.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    title = (f"{Path(args.model).stem}, {rows[0]['images']} test images, {args.adc_bits}-bit "
             f"ADC / {args.adc_rows} rows")
    plot(rows, out / "offsets.png", title)
    print(f"wrote {out / 'offsets.csv'} and {out / 'offsets.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
