"""QONNX export of our integer models, held against the golden model in qonnx's executor and
ONNX Runtime."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from model import export, golden, nets, qonnx_export
from model.testnets import random_net, small_specs
from sim.seed import test_seed

MODELS = Path(__file__).resolve().parent.parent / "models"


def _random_pixels(model: golden.IntModel, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.manifest["input"]["pixel_max"] + 1, (n, *model.input_shape))


def _models():
    yield "digits_cnn_w4a4", golden.load(MODELS / "digits_cnn_w4a4.npz")
    for w_bits, a_bits, i in ((1, 2, 2), (3, 8, 0)):
        net, _ = random_net(small_specs(w_bits, a_bits)[i], seed=40 + i)
        model = golden.IntModel(*export.to_manifest(net))
        golden.validate(model)
        yield f"random W{w_bits}A{a_bits} #{i}", model


def test_export_runs_bit_exact_in_qonnx_and_onnxruntime():
    """Every node's output in qonnx's executor equals golden.run; ONNX Runtime on the QCDQ form
    gives the same logits."""
    import onnxruntime as ort
    from qonnx.core.onnx_exec import execute_onnx
    seed = test_seed()
    for name, model in _models():
        x = _random_pixels(model, 3, seed)
        wrapper = qonnx_export.to_wrapper(model, batch=len(x))
        onnx.checker.check_model(wrapper.model)
        ctx = execute_onnx(wrapper, {"input": x.astype(np.float32)},
                           return_full_exec_context=True)
        gold = golden.run(model, x)
        for node, want in gold.items():
            got = ctx[node].reshape(want.shape)
            assert np.array_equal(got, want), f"seed {seed} {name}: node {node} differs"
        sess = ort.InferenceSession(qonnx_export.to_qcdq(wrapper).model.SerializeToString())
        logits = sess.run(None, {"input": x.astype(np.float32)})[0]
        out = model.manifest["output"]
        assert np.array_equal(logits, gold[out]), f"seed {seed} {name}: ONNX Runtime differs"


def test_export_refuses_inexact_float32_accumulators():
    """64 channels x 3 x 3 x 127 x 255 > 2**24: float32 could round the Conv's sum."""
    net, _ = random_net(nets.NetSpec(arch="resnet14", width=0.25, w_bits=8, a_bits=8), seed=3)
    model = golden.IntModel(*export.to_manifest(net))
    model.arrays["layer3_1_conv1/weight"][:] = 127
    with pytest.raises(qonnx_export.QonnxExportError, match="'layer3_1_conv1'.*2\\*\\*24"):
        qonnx_export.to_qonnx(model)
