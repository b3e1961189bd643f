"""Evaluate integer models with the bit-exact golden model.

    python -m model.evaluate                      # every shipped model under models/
    python -m model.evaluate --model m.npz --dataset fashion-mnist --data-dir DIR

Prints each model's layer graph (where each node runs, shapes, bits, MACs) and its top-1
accuracy on the test split of its dataset, computed with integer arithmetic only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import data, golden

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def node_macs(node: dict) -> int:
    if node["op"] == "conv":
        c, h, w = node["shape"]
        return c * h * w * node["in_channels"] * node["kernel"] ** 2
    if node["op"] == "fc":
        return node["in_features"] * node["out_features"]
    return 0


def summary(model: golden.IntModel) -> str:
    """A readable table of the layer graph."""
    rows = [("node", "op", "where", "inputs", "output", "bits W/A", "MACs")]
    total = {"mcu": 0, "accel": 0}
    for n in model.nodes:
        macs = node_macs(n)
        total[n["where"]] += macs
        bits = ""
        if n["op"] == "conv":
            bits = f"{n['w_bits']}/{'s' if n['out_signed'] else 'u'}{n['out_bits']}"
        elif n["op"] == "fc":
            bits = f"{n['w_bits']}/-"
        rows.append((n["name"], n["op"], n["where"], ",".join(n["inputs"]),
                     "x".join(map(str, n["shape"])), bits, f"{macs:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"MACs per frame: accelerator {total['accel']:,}, MCU {total['mcu']:,}")
    return "\n".join(lines)


def fit_images(x: np.ndarray, shape: tuple) -> np.ndarray:
    """Zero-pad dataset images to the model's input size (e.g. 28x28 -> 32x32)."""
    if x.shape[1] != shape[0] or x.shape[2] > shape[1] or x.shape[3] > shape[2]:
        raise data.DatasetError(f"dataset images {x.shape[1:]} do not fit the model input "
                                f"{shape}")
    if shape[1] != shape[2]:
        raise data.DatasetError(f"only square model inputs are supported, not {shape}")
    return data.pad_images(x, shape[1]) if x.shape[2:] != shape[1:] else x


def model_inputs(model: golden.IntModel, count: int, *, dataset: str | None = None,
                 data_dir: str | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` input images (N, C, H, W) uint8 for ``model`` and what they are: the first
    test images of ``dataset`` (by default the one the model records), zero-padded to its
    input; without a dataset, random pixels of its input shape and range from ``seed``.
    :class:`~model.data.DatasetError` names a dataset whose images do not fit the model."""
    dataset = dataset or model.manifest.get("meta", {}).get("dataset")
    if dataset:
        xs, _, _ = data.load_dataset(dataset, "test", data_dir, limit=count)
        return fit_images(xs, model.input_shape), f"the first {count} {dataset} test images"
    hi = int(model.manifest["input"]["pixel_max"])
    xs = np.random.default_rng(seed).integers(0, hi + 1, size=(count, *model.input_shape))
    return xs.astype(np.uint8), (f"{count} random {list(model.input_shape)} inputs in 0..{hi} "
                                 f"(seed {seed}; the model records no dataset)")


def evaluate(model_path: Path, dataset: str | None, data_dir: str | None,
             limit: int | None, adc: golden.AdcModel | None = None, *,
             progress: bool = False) -> dict:
    """Top-1 accuracy of ``model_path`` with the golden model; ``progress``: a progress bar
    over the test images on stderr."""
    model = golden.load(model_path)
    meta = model.manifest.get("meta", {})
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise data.DatasetError(f"{model_path} does not record its dataset; pass --dataset")
    x, y, info = data.load_dataset(dataset, "test", data_dir, limit=limit,
                                   seed=meta.get("seed", 0))
    x = fit_images(x, model.input_shape)
    t0 = time.time()
    with tqdm(total=len(x), unit="img", desc=Path(model_path).name, disable=not progress,
              leave=False) as bar:
        acc = golden.accuracy(model, x, y, adc=adc, progress=bar.update)
    return dict(model=str(model_path), dataset=dataset, test_images=len(x), golden_acc=acc,
                adc=None if adc is None else dict(rows=adc.rows, bits=adc.bits),
                seconds=round(time.time() - t0, 2), summary=summary(model),
                float_acc=meta.get("float_acc"), fakequant_acc=meta.get("fakequant_acc"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="model file (repeatable); default: all "
                   f"shipped models in {MODELS_DIR}")
    p.add_argument("--dataset", choices=data.DATASETS, default=None,
                   help="default: the dataset recorded in the model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--adc-bits", type=int, default=None,
                   help="model a partial-sum ADC of this many bits on the accelerator's convs")
    p.add_argument("--adc-rows", type=int, default=64,
                   help="CIM array rows per ADC partial sum (with --adc-bits; default 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    adc = None
    if args.adc_bits is not None:
        try:
            adc = golden.AdcModel(rows=args.adc_rows, bits=args.adc_bits)
        except ValueError as e:
            p.error(str(e))
    paths = [Path(m) for m in args.model] if args.model else sorted(MODELS_DIR.glob("*.npz"))
    if not paths:
        print(f"error: no models given and none found in {MODELS_DIR}", file=sys.stderr)
        return 2
    results = []
    for path in paths:
        try:
            r = evaluate(path, args.dataset, args.data_dir, args.limit, adc,
                         progress=not args.no_progress)
        except (golden.ModelFormatError, data.DatasetError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        adc_text = "" if adc is None else f", {adc.bits}-bit ADC per {adc.rows} rows"
        print(f"\n== {path} on {r['dataset']} ({r['test_images']} test images{adc_text})")
        print(r.pop("summary"))
        extra = "".join(f", {k.replace('_acc', '')} {r[k]:.2%}" for k in
                        ("float_acc", "fakequant_acc") if r[k] is not None)
        print(f"golden integer top-1: {r['golden_acc']:.2%} ({r['seconds']} s){extra}")
        results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
