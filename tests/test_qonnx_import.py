"""QONNX import of a Brevitas network: the shipped file, the error per unsupported op or
quantizer setting, and the per-node agreement with qonnx's execution."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from model import golden, qonnx_import
from sim.seed import test_seed

MODELS = Path(__file__).resolve().parent.parent / "models"
BREVITAS = MODELS / "fmnist_brevitas_w4a4"


def _random_pixels(model: golden.IntModel, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.manifest["input"]["pixel_max"] + 1, (n, *model.input_shape))



def test_import_of_shipped_brevitas_file_equals_shipped_model():
    manifest, arrays, report = qonnx_import.import_qonnx(BREVITAS.with_suffix(".onnx"))
    shipped = golden.load(BREVITAS.with_suffix(".npz"))
    assert manifest["nodes"] == shipped.manifest["nodes"]
    assert sorted(arrays) == sorted(shipped.arrays)
    for k, v in arrays.items():
        assert np.array_equal(v, shipped.arrays[k]), k
    model = golden.IntModel(manifest, arrays)
    golden.validate(model)
    x = _random_pixels(model, 4, test_seed())
    for node, v in golden.run(model, x).items():
        assert np.array_equal(v, golden.run(shipped, x)[node])
    # The report covers every node and bounds every difference by one LSB.
    assert [r["node"] for r in report] == [n["name"] for n in manifest["nodes"]]
    assert all(r["max_diff_lsb"] <= 1 for r in report)
    assert [n["where"] for n in manifest["nodes"]].count("accel") == 4


def test_imported_model_agrees_with_qonnx_execution():
    """The golden model on the imported file against qonnx's execution of the QONNX file, per
    node: never more than one LSB apart on the first conv (the report's bound, same inputs)."""
    from model.qonnx_check import qonnx_run
    model = golden.load(BREVITAS.with_suffix(".npz"))
    report = {r["node"]: r for r in model.manifest["meta"]["qonnx_report"]}
    qmodel = qonnx_import.load_qonnx(BREVITAS.with_suffix(".onnx"))
    x = _random_pixels(model, 8, test_seed())
    first = model.nodes[0]["name"]
    ref = qonnx_run(qmodel, (x / 255.0).astype(np.float32), [report[first]["onnx_tensor"]])
    q = ref[report[first]["onnx_tensor"]] / np.asarray(report[first]["scales"]).reshape(1, -1,
                                                                                        1, 1)
    gold = golden.run(model, x, upto=first)[first]
    assert np.abs(np.floor(q + 0.5) - gold).max() <= report[first]["max_diff_lsb"]


def _edited(tmp_path, edit) -> Path:
    """The shipped QONNX file with ``edit(model_proto)`` applied, saved under tmp_path."""
    m = onnx.load(str(BREVITAS.with_suffix(".onnx")))
    edit(m)
    path = tmp_path / "edited.onnx"
    onnx.save(m, str(path))
    return path


def _first(m, op, skip=0):
    return [n for n in m.graph.node if n.op_type == op][skip]


def _set_attr(node, name, value):
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def test_import_names_an_unsupported_op(tmp_path):
    def to_sigmoid(m):
        _first(m, "Relu").op_type = "Sigmoid"
    with pytest.raises(qonnx_import.QonnxImportError,
                       match=r"node 'Sigmoid_0' \(Sigmoid\): op Sigmoid is not supported "
                             r"\(supported: Quant, .*Conv"):
        qonnx_import.import_qonnx(_edited(tmp_path, to_sigmoid))


def _act_quant(m):
    """The activation Quant after the first Relu."""
    relu = _first(m, "Relu")
    return next(n for n in m.graph.node if n.op_type == "Quant" and n.input[0] == relu.output[0])


@pytest.mark.parametrize("edit, message", [
    (lambda m: _set_attr(_act_quant(m), "rounding_mode", "CEIL"),
     r"\(Quant\): rounding mode CEIL is not supported \(supported: ROUND, HALF_EVEN, HALF_UP, "
     r"FLOOR\)"),
    (lambda m: _set_attr(_act_quant(m), "narrow", 1),
     r"\(Quant\): an unsigned narrow-range quantizer is not supported"),
    (lambda m: _set_attr(_first(m, "Quant", 1), "narrow", 0),
     r"\(Quant\): weight quantizer signed=True narrow=False bits=8 is not supported"),
])
def test_import_names_an_unsupported_quantizer(tmp_path, edit, message):
    with pytest.raises(qonnx_import.QonnxImportError, match=message):
        qonnx_import.import_qonnx(_edited(tmp_path, edit))


def test_import_refuses_a_zero_point(tmp_path):
    def zero_point(m):
        q = _act_quant(m)
        name = q.input[2] + "_edited"
        m.graph.initializer.append(numpy_helper.from_array(np.float32(1.0), name))
        q.input[2] = name
    with pytest.raises(qonnx_import.QonnxImportError, match="zero point .* is not supported"):
        qonnx_import.import_qonnx(_edited(tmp_path, zero_point))


def test_floor_rounding_is_exact(tmp_path):
    """FLOOR maps onto the hardware's rounding exactly (the bias takes the half LSB): the
    report says so, and only the multipliers' approximation remains."""
    def floor(m):
        _set_attr(_act_quant(m), "rounding_mode", "FLOOR")
    _, _, report = qonnx_import.import_qonnx(_edited(tmp_path, floor))
    assert report[0]["rounding"] == "FLOOR"
    assert "ties" not in report[0]["why"]
    assert report[2]["rounding"] == "ROUND" and "ties" in report[2]["why"]


def test_imported_model_compiles_and_runs_exactly_on_default():
    """The imported network's accelerator part compiles for `default` (W4A4), and the
    compiler's functional model of the program equals the golden model on every layer."""
    from compiler.compile import compile_model, execute
    from contract.config import get_config
    model = golden.load(BREVITAS.with_suffix(".npz"))
    program = compile_model(model, get_config("default"))
    x = _random_pixels(model, 2, test_seed())
    gold = golden.run(model, x)
    out = execute(program, gold[program.input_name])
    assert set(out) == {n["name"] for n in model.nodes if n["where"] == "accel"}
    for name, v in out.items():
        assert np.array_equal(v, gold[name]), f"seed {test_seed()}: layer {name} differs"


def test_matmul_classifier_imports_like_gemm(tmp_path):
    """qonnx's GemmToMatMul turns the classifier into MatMul + Add: the same fc node."""
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    model = qonnx_import.load_qonnx(BREVITAS.with_suffix(".onnx"))
    with pytest.warns(UserWarning, match="GemmToMatMul"):
        model = model.transform(GemmToMatMul())
    model.save(str(tmp_path / "matmul.onnx"))
    manifest, arrays, _ = qonnx_import.import_qonnx(tmp_path / "matmul.onnx")
    shipped = golden.load(BREVITAS.with_suffix(".npz"))
    fc, want = manifest["nodes"][-1], shipped.nodes[-1]
    assert fc["op"] == "fc" and fc["inputs"] == want["inputs"]
    for k in ("weight", "bias"):
        assert np.array_equal(arrays[f"{fc['name']}/{k}"], shipped.array(want["name"], k))
