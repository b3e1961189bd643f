"""Hold an imported model against the QONNX file it came from, on a dataset's test split.

    python -m model.qonnx_check models/fmnist_brevitas_w4a4.onnx models/fmnist_brevitas_w4a4.npz

Runs the QONNX graph with ``qonnx``'s executor (``qonnx.core.onnx_exec.execute_onnx``, node by
node; ONNX Runtime for the standard ops, qonnx's own ``Quant``) and the imported file with the
golden model on the same images, and prints both accuracies and, per node, the fraction of
output values where the golden integer equals the QONNX tensor divided by its scale (rounded),
and the fraction within one LSB: end to end (each side on its own inputs, so a value one LSB
off in one layer moves later layers) and local (the golden node on the QONNX graph's own
quantized inputs, which the import report's per-node bound applies to).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import data, evaluate, golden
from .qonnx_import import load_qonnx


def qonnx_run(model, x: np.ndarray, tensors: list[str], batch: int = 500) -> dict:
    """The named tensors of the QONNX graph on pixel codes ``x`` (fed as ``x / 255``... as the
    graph's input quantizer expects: codes times its scale)."""
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    inp = model.graph.input[0].name
    out: dict[str, list] = {t: [] for t in tensors}
    models = {}
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if len(xb) not in models:
            models[len(xb)] = model.transform(ChangeBatchSize(len(xb))).transform(InferShapes())
        ctx = execute_onnx(models[len(xb)], {inp: xb}, return_full_exec_context=True)
        for t in tensors:
            out[t].append(ctx[t])
    return {t: np.concatenate(v) for t, v in out.items()}


def input_scale(model) -> float:
    """The scale of the graph input's quantizer (the real value of one pixel code)."""
    node = model.find_consumer(model.graph.input[0].name)
    return float(np.asarray(model.get_initializer(node.input[1])).item())


def check(qonnx_path: str | Path, npz_path: str | Path, dataset: str | None = None,
          limit: int | None = None, data_dir: str | None = None) -> dict:
    model = load_qonnx(qonnx_path)
    imported = golden.load(npz_path)
    meta = imported.manifest.get("meta", {})
    report = {r["node"]: r for r in meta.get("qonnx_report", [])}
    dataset = dataset or meta.get("dataset")
    x, y, _ = data.load_dataset(dataset, "test", data_dir, limit=limit)
    x = evaluate.fit_images(x, imported.input_shape)
    xf = (x.astype(np.float64) * input_scale(model)).astype(np.float32)
    names = {n["name"]: report[n["name"]]["onnx_tensor"] for n in imported.nodes}
    ref = qonnx_run(model, xf, list(names.values()))
    out = imported.manifest["output"]
    env = {}
    for i in range(0, len(x), 500):
        for k, v in golden.run(imported, x[i:i + 500]).items():
            env.setdefault(k, []).append(v)
    env = {k: np.concatenate(v) for k, v in env.items()}
    codes = {"input": x.astype(np.int64)}
    for n in imported.nodes:
        scale = np.asarray(report[n["name"]]["scales"])
        shape = (1, -1) + (1,) * (env[n["name"]].ndim - 2)
        q = ref[names[n["name"]]].reshape(env[n["name"]].shape) / scale.reshape(shape)
        codes[n["name"]] = np.floor(q + 0.5).astype(np.int64)
    nodes = []
    for n in imported.nodes:
        diff = np.abs(codes[n["name"]] - env[n["name"]])
        local = np.abs(codes[n["name"]] - golden.run_node(
            imported, n, *(codes[i] for i in n["inputs"])))
        nodes.append(dict(node=n["name"], op=n["op"], values=int(diff.size),
                          exact=float((diff == 0).mean()), within_1=float((diff <= 1).mean()),
                          max_diff=float(diff.max()), local_exact=float((local == 0).mean()),
                          local_within_1=float((local <= 1).mean()),
                          local_max=float(local.max()),
                          bound_lsb=report[n["name"]]["max_diff_lsb"]))
    qpred = ref[names[out]].reshape(len(x), -1).argmax(1)
    gpred = env[out].argmax(1)
    return dict(qonnx=str(qonnx_path), model=str(npz_path), dataset=dataset,
                test_images=len(x), qonnx_acc=float((qpred == y).mean()),
                golden_acc=float((gpred == y).mean()),
                same_prediction=float((qpred == gpred).mean()), nodes=nodes)


def format_check(r: dict) -> str:
    lines = [f"{r['dataset']}, {r['test_images']} test images: qonnx execution "
             f"{r['qonnx_acc']:.2%}, golden (imported) {r['golden_acc']:.2%}, same prediction "
             f"{r['same_prediction']:.2%}",
             f"{'':36}{'end to end':^26}{'local (same inputs)':^26}",
             f"{'node':14} {'op':8} {'values':>12} {'exact':>9} {'<= 1 LSB':>9} {'max':>6} "
             f"{'exact':>9} {'<= 1 LSB':>9} {'max':>6}"]
    for n in r["nodes"]:
        lines.append(f"{n['node']:14} {n['op']:8} {n['values']:>12,} {n['exact']:>9.4%} "
                     f"{n['within_1']:>9.4%} {n['max_diff']:>6.0f} {n['local_exact']:>9.4%} "
                     f"{n['local_within_1']:>9.4%} {n['local_max']:>6.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.qonnx_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("qonnx")
    p.add_argument("model")
    p.add_argument("--dataset", default=None, help="default: the one recorded in the model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    try:
        r = check(args.qonnx, args.model, args.dataset, args.limit, args.data_dir)
    except (golden.ModelFormatError, data.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_check(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
