"""Export an integer model file as QONNX, bit-exact, for Netron, ``qonnx`` and ONNX Runtime.

    python -m model.qonnx_export models/digits_cnn_w4a4.npz digits.onnx [--qcdq digits_qcdq.onnx]

The graph computes on the integer codes, exactly as :mod:`model.golden` does: every tensor is
a float32 tensor of integers, marked by a QONNX ``Quant`` node of scale 1 with the tensor's
bit width and signedness (the input pixels, each conv's weights and output); each tensor's
real scale (the value of one LSB) is in the node's ``doc_string`` and in the model's metadata
(``cim.scales``, JSON). A conv is ``Conv`` on the codes (exact in float32: the exporter
checks that every accumulator stays below 2**24), then the requantization of
``contract.arith.requantize`` in int64 (``Mul``, ``Add``; the floor shift as
``(z - Mod(z, 2**S)) / 2**S``; ``Clip``), then ``Cast`` back to float. Max pooling is
``MaxPool``, the average pooling's integer sum ``ReduceSum`` and the classifier ``Gemm`` plus
an int64 bias; the output is the int64 logits. So ``qonnx``'s executor
(``qonnx.core.onnx_exec.execute_onnx``) returns every node's output equal to ``golden.run``
bit for bit. ``--qcdq`` also writes the ONNX Runtime form: qonnx's ``QuantToQCDQ`` turns the
``Quant`` nodes into ``QuantizeLinear``/``Clip``/``DequantizeLinear`` (standard ONNX), after
folding the weight quantizers into the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.arith import act_range, weight_qmax

from . import golden

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13
FLOAT_EXACT = 2**24


class QonnxExportError(ValueError):
    """A node cannot be written as an exact float32/int64 ONNX computation."""


class _Graph:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, domain: str = "", doc: str = "",
             **attrs) -> str:
        n = helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs)
        if doc:
            n.doc_string = doc
        self.nodes.append(n)
        return output

    def quant(self, x: str, out: str, bits: int, signed: bool, narrow: bool, doc: str) -> str:
        """A QONNX Quant of scale 1: states the tensor's integer type, changes no valid code."""
        p = out + "_q"
        return self.node("Quant", [x, self.const(p + "_scale", np.float32(1.0)),
                                   self.const(p + "_zeropt", np.float32(0.0)),
                                   self.const(p + "_bitwidth", np.float32(bits))],
                         out, QONNX_DOMAIN, doc, signed=int(signed), narrow=int(narrow),
                         rounding_mode="ROUND")


def _ranges(model: golden.IntModel) -> dict[str, tuple[int, int]]:
    r = {"input": (0, model.manifest["input"]["pixel_max"])}
    for n in model.nodes:
        lo, hi = r[n["inputs"][0]]
        if n["op"] == "conv":
            r[n["name"]] = act_range(n["out_bits"], n["out_signed"])
        elif n["op"] == "maxpool":
            r[n["name"]] = (lo, hi)
        elif n["op"] == "avgpool":
            c, h, w = _shape(model, n["inputs"][0])
            r[n["name"]] = (lo * h * w, hi * h * w)
        else:
            big = n["in_features"] * weight_qmax(n["w_bits"]) * max(abs(lo), abs(hi)) + 2**40
            r[n["name"]] = (-big, big)
    return r


def _shape(model, name):
    return tuple(model.input_shape) if name == "input" else tuple(model.node(name)["shape"])


def to_qonnx(model: golden.IntModel) -> onnx.ModelProto:
    """The QONNX graph of ``model`` (see the module docstring)."""
    g = _Graph()
    ranges = _ranges(model)
    pmax = model.manifest["input"]["pixel_max"]
    scales = {"input": 1.0 / pmax}
    g.quant("input", "input_codes", pmax.bit_length(), False, False,
            f"pixel codes 0..{pmax}; real value = code * {scales['input']:.6g}")
    names = {"input": "input_codes"}
    for n in model.nodes:
        name, x = n["name"], names[n["inputs"][0]]
        xlo, xhi = ranges[n["inputs"][0]]
        doc = f"{n['op']} ({n['where']}); real value = code * {n['scale']:.6g}"
        scales[name] = n["scale"]
        if n["op"] == "conv":
            w = model.array(name, "weight")
            bound = int(np.abs(w).reshape(len(w), -1).sum(1).max()) * max(abs(xlo), abs(xhi))
            if bound >= FLOAT_EXACT:
                raise QonnxExportError(f"node {name!r}: accumulator bound {bound} is not exact "
                                       "in float32 (2**24)")
            wt = g.const(f"{name}_weight", w.astype(np.float32))
            if n["w_bits"] == 1:
                wq = g.node("BipolarQuant", [wt, g.const(f"{name}_wscale", np.float32(1.0))],
                            f"{name}_wq", QONNX_DOMAIN, "binary weights +-1")
            else:
                wq = g.quant(wt, f"{name}_wq", n["w_bits"], True, True,
                             f"{n['w_bits']}-bit narrow-range weights")
            k, s, p = n["kernel"], n["stride"], n["padding"]
            acc = g.node("Conv", [x, wq], f"{name}_acc", kernel_shape=[k, k], strides=[s, s],
                         pads=[p] * 4)
            acc = g.node("Cast", [acc], f"{name}_acc_i", to=TensorProto.INT64)

            def per_channel(arr, what, name=name):
                return g.const(f"{name}_{what}", arr.astype(np.int64).reshape(1, -1, 1, 1))

            y = g.node("Mul", [acc, per_channel(model.array(name, "mult"), "mult")],
                       f"{name}_y0")
            y = g.node("Add", [y, per_channel(model.array(name, "bias"), "bias")], f"{name}_y1")
            if len(n["inputs"]) == 2:
                res = g.node("Cast", [names[n["inputs"][1]]], f"{name}_res_i",
                             to=TensorProto.INT64)
                res = g.node("Mul", [res, per_channel(model.array(name, "res_mult"),
                                                      "res_mult")], f"{name}_res_y")
                y = g.node("Add", [y, res], f"{name}_y2")
            sh = n["shift"]
            z = g.node("Add", [y, g.const(f"{name}_half", np.int64(1 << (sh - 1)))],
                       f"{name}_z")
            d = g.const(f"{name}_div", np.int64(1 << sh))
            # Div on integers truncates towards zero; z - Mod(z, d) (Mod takes the divisor's
            # sign) is a multiple of d, so the division is exact: the floor of the contract.
            rem = g.node("Mod", [z, d], f"{name}_rem", fmod=0)
            q = g.node("Div", [g.node("Sub", [z, rem], f"{name}_zr"), d], f"{name}_shifted")
            lo, hi = act_range(n["out_bits"], n["out_signed"])
            q = g.node("Clip", [q, g.const(f"{name}_lo", np.int64(lo)),
                                g.const(f"{name}_hi", np.int64(hi))], f"{name}_clip")
            q = g.node("Cast", [q], f"{name}_codes", to=TensorProto.FLOAT)
            out = g.quant(q, name, n["out_bits"], n["out_signed"], n["out_signed"], doc)
        elif n["op"] == "maxpool":
            k, s, p = n["kernel"], n["stride"], n["padding"]
            out = g.node("MaxPool", [x], name, doc=doc, kernel_shape=[k, k], strides=[s, s],
                         pads=[p] * 4)
        elif n["op"] == "avgpool":
            lo, hi = ranges[name]
            if max(abs(lo), abs(hi)) >= FLOAT_EXACT:
                raise QonnxExportError(f"node {name!r}: sum bound is not exact in float32")
            out = g.node("ReduceSum", [x, g.const(f"{name}_axes", np.array([2, 3]))], name,
                         doc=doc + "; the integer sum (1/(H*W) is in the scale)", keepdims=0)
        else:
            w = model.array(name, "weight")
            bound = int(np.abs(w).sum(1).max()) * max(abs(xlo), abs(xhi))
            if bound >= FLOAT_EXACT or x.endswith("_logits"):
                raise QonnxExportError(f"node {name!r}: accumulator bound {bound} is not exact "
                                       "in float32 (2**24)")
            wq = g.quant(g.const(f"{name}_weight", w.astype(np.float32)), f"{name}_wq",
                         n["w_bits"], True, True, f"{n['w_bits']}-bit weights")
            acc = g.node("Gemm", [x, wq], f"{name}_acc", transB=1)
            acc = g.node("Cast", [acc], f"{name}_acc_i", to=TensorProto.INT64)
            out = g.node("Add", [acc, g.const(f"{name}_bias", model.array(name, "bias")
                                               .astype(np.int64))], name,
                         doc=doc + "; int64 logits")
        names[name] = out
    c, h, w = model.input_shape
    last = model.nodes[-1]
    out_type = TensorProto.INT64 if last["op"] == "fc" else TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, "cim_int_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info(names[last["name"]], out_type, [1, *last["shape"]])],
        g.inits)
    m = helper.make_model(graph, producer_name="cim-accel model.qonnx_export",
                          opset_imports=[helper.make_opsetid("", OPSET),
                                         helper.make_opsetid(QONNX_DOMAIN, 1)])
    m.ir_version = 8
    helper.set_model_props(m, {"cim.scales": json.dumps(scales),
                               "cim.source": Path(model.path).name})
    return m


def to_wrapper(model: golden.IntModel, batch: int = 1):
    """The exported graph as a ``qonnx`` ModelWrapper with shapes inferred for ``batch``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    w = ModelWrapper(to_qonnx(model))
    if batch != 1:
        w = w.transform(ChangeBatchSize(batch))
    return w.transform(InferShapes())


def to_qcdq(wrapper):
    """The ONNX Runtime form: the weight quantizers folded into their (integer) weights with
    qonnx's ``FoldConstants``, then qonnx's ``QuantToQCDQ`` (standard QuantizeLinear, Clip,
    DequantizeLinear in place of the activations' ``Quant`` nodes)."""
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ
    return wrapper.transform(FoldConstants(exclude_op_types=[])).transform(QuantToQCDQ())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.qonnx_export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="integer model file (.npz)")
    p.add_argument("out", help="QONNX file to write (.onnx)")
    p.add_argument("--qcdq", default=None, help="also write the ONNX Runtime (QCDQ) form here")
    args = p.parse_args(argv)
    try:
        w = to_wrapper(golden.load(args.model))
    except (golden.ModelFormatError, QonnxExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w.save(args.out)
    if args.qcdq:
        to_qcdq(w).save(args.qcdq)
    print(f"wrote {args.out}" + (f" and {args.qcdq}" if args.qcdq else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
