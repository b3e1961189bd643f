"""The trained models shipped in models/: valid files, bit-exact on real images, accurate."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import data, evaluate, golden, nets

MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED = {
    # name: (dataset, test images checked here, accuracy floor on them)
    "resnet14_fmnist_w4a4": ("fashion-mnist", 500, 0.90),
    "digits_cnn_w4a4": ("digits", 360, 0.95),
}


def _test_images(dataset, n, shape):
    try:
        x, y, _ = data.load_dataset(dataset, "test", limit=n)
    except data.DatasetError as e:
        pytest.skip(f"dataset not installed: {e}")
    return evaluate.fit_images(x, shape), y


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_is_bit_exact_and_accurate(name):
    dataset, n, floor = SHIPPED[name]
    model = golden.load(MODELS / f"{name}.npz")
    assert model.manifest["meta"]["dataset"] == dataset
    x, y = _test_images(dataset, n, model.input_shape)
    gold = golden.run(model, x)

    ck = torch.load(MODELS / f"{name}.pt", map_location="cpu", weights_only=True)
    net = nets.build(nets.NetSpec.from_dict(ck["spec"]))
    net.load_state_dict(ck["model"])
    net.eval().set_mode("integer")
    with torch.no_grad():
        _, ref = net(torch.from_numpy(x), collect=True)
    for layer, r in ref.items():
        assert np.array_equal(gold[layer], r.numpy()), f"{name}: layer {layer} differs"

    acc = float((gold[model.manifest["output"]].argmax(1) == y).mean())
    assert acc >= floor, f"{name}: {acc:.3f} on the first {n} test images"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_metrics_meet_the_targets(name):
    m = json.loads((MODELS / f"{name}.json").read_text())
    if name.startswith("resnet14"):
        assert m["golden_acc"] >= 0.92
        assert m["float_acc"] - m["golden_acc"] <= 0.01
        assert m["spec"]["w_bits"] == 4 and m["spec"]["a_bits"] == 4
    else:
        assert m["golden_acc"] >= 0.95
    assert m["golden_acc"] == m["torch_integer_acc"]
    model = golden.load(MODELS / f"{name}.npz")
    assert model.manifest["spec"] == m["spec"]
