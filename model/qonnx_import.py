"""Import a QONNX model (as Brevitas exports it) into the integer model file.

    python -m model.qonnx_import in.onnx out.npz [--dataset fashion-mnist]

The graph is parsed and cleaned with ``qonnx`` (``ModelWrapper``, ``cleanup_model``: shapes
inferred, constants folded except the quantizers); then every quantized tensor (the output of
an activation ``Quant``) becomes one tensor of our graph, and the float operations between two
of them become one node:

- ``Quant`` on the graph input: the input pixel codes (unsigned, zero point 0, <= 8 bits;
  ``pixel_max = 2**bits - 1``).
- ``Conv`` (quantized weights: ``Quant`` signed narrow-range zero-point-0 2..8 bits, or
  ``BipolarQuant`` for 1 bit; per-tensor or per-output-channel scale; optional constant bias)
  followed by any of ``BatchNormalization``, ``Mul``/``Div``/``Add``/``Sub`` by constants, at
  most one ``Add`` of an earlier quantized tensor (the residual, per-tensor or per-channel
  scale), an optional ``Relu``, and the output ``Quant``: one ``conv`` node. The real
  requantization factors (``s_in * s_w[c] * gain[c] / s_out[c]`` and so on) become the
  integer multipliers and the shift of ``contract.arith.requantize`` with
  :func:`model.quant.requant_multipliers`, the exporter's own conversion.
- ``MaxPool`` -> ``maxpool``; ``GlobalAveragePool`` or ``ReduceMean`` over H, W -> ``avgpool``
  (an exact sum, the 1/(H*W) in the scale); ``Flatten``/``Reshape`` to ``[N, C]`` after it are
  no-ops; ``Gemm`` or ``MatMul`` (+ ``Add`` bias) with per-tensor quantized weights -> ``fc``.

Activation quantizers map onto the output clamp: unsigned (not narrow) -> ``out_bits`` unsigned;
``Relu`` + signed ``b`` bits -> unsigned ``b - 1`` bits (the same range); signed narrow without
``Relu`` -> ``out_signed``. Rounding: ``FLOOR`` is exact (the bias absorbs the hardware's half
LSB); ``ROUND`` (half to even) and ``HALF_UP`` (half away from zero) differ from the hardware's
half up only on exact ties. :func:`import_qonnx` returns a report per node: the largest
difference between the integer result and the real-valued QONNX graph, given the same inputs,
and why.

Anything else (another op, a zero point, a per-channel scale where one scale is needed, a
quantizer range the hardware cannot clamp to, grouped or dilated convolutions, ...) raises
:class:`QonnxImportError` naming the ONNX node, its op and what is supported. Nothing is
approximated silently.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from onnx import helper

from contract.arith import act_range, out_size, weight_qmax

from . import export, quant

SUPPORTED_OPS = ("Quant", "BipolarQuant", "Conv", "BatchNormalization", "Relu", "Add", "Sub",
                 "Mul", "Div", "MaxPool", "GlobalAveragePool", "ReduceMean", "Flatten",
                 "Reshape", "Gemm", "MatMul", "Identity", "Dropout")
ROUNDING = {"ROUND": "ties", "HALF_EVEN": "ties", "HALF_UP": "ties", "FLOOR": "exact"}
FC_BIAS_LIMIT = 2**40


class QonnxImportError(ValueError):
    """The QONNX model uses something the integer model or the hardware cannot express."""


@dataclass
class QTensor:
    """A quantized tensor of our graph: real value = integer * scale (per channel)."""

    name: str                # our node, or "input"
    scale: np.ndarray        # (C,) float64
    lo: int
    hi: int
    shape: tuple             # (C, H, W) or (C,)
    flat: bool = False       # the ONNX tensor is (N, C) rather than (N, C, 1, 1)

    @property
    def per_tensor(self) -> bool:
        return bool(np.all(self.scale == self.scale[0]))


@dataclass
class Pending:
    """A conv's float output before its quantizer: ``v = A * acc + B + R * res``."""

    node: dict
    weight: np.ndarray
    a: np.ndarray
    b: np.ndarray
    in_q: QTensor
    res: QTensor | None = None
    r: np.ndarray | None = None
    relu: bool = False
    onnx_nodes: list = field(default_factory=list)


@dataclass
class PendingFc:
    """A ``MatMul`` classifier waiting for its bias ``Add``."""

    node: dict
    weight: np.ndarray
    s_acc: float
    in_q: QTensor
    onnx_nodes: list


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def load_qonnx(path: str | Path):
    """The QONNX file as a cleaned-up ``qonnx`` ModelWrapper (shapes inferred, constants
    folded, quantizers kept, unique node names)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    try:
        model = ModelWrapper(str(path))
    except Exception as e:  # noqa: BLE001 - onnx raises several types for unreadable files
        raise QonnxImportError(f"{path}: not a readable ONNX file ({e})") from e
    return cleanup_model(model, preserve_qnt_ops=True)


class _Importer:
    def __init__(self, model, source: str):
        self.m = model
        self.source = source
        self.refs: dict[str, object] = {}     # ONNX tensor -> QTensor | Pending | PendingFc
        self.nodes: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.report: list[dict] = []

    # ------------------------------------------------------------------ helpers

    def fail(self, node, msg: str):
        name = node.name if node is not None else "graph"
        op = f" ({node.op_type})" if node is not None else ""
        raise QonnxImportError(f"{self.source}: node {name!r}{op}: {msg}")

    def const(self, tensor: str) -> np.ndarray | None:
        """The value of a tensor computed from initializers only (a folded constant or a
        quantizer on one, evaluated with qonnx's own executor), else None."""
        v = self.m.get_initializer(tensor)
        if v is not None:
            return np.asarray(v)
        prod = self.m.find_producer(tensor)
        if prod is None or prod.op_type not in ("Quant", "BipolarQuant"):
            return None
        ins = [self.const(i) for i in prod.input]
        if any(i is None for i in ins):
            return None
        from qonnx.core.onnx_exec import execute_node
        ctx = dict(zip(prod.input, ins))
        ctx[prod.output[0]] = None
        execute_node(prod, ctx, self.m.graph, 1)
        return np.asarray(ctx[prod.output[0]])

    def quant_params(self, node) -> dict:
        """Scale, zero point, bit width and settings of a Quant/BipolarQuant node."""
        a = _attrs(node)
        vals = [self.const(i) for i in node.input[1:]]
        if any(v is None for v in vals):
            self.fail(node, "scale, zero point and bit width must be constants")
        if node.op_type == "BipolarQuant":
            return dict(scale=vals[0].astype(np.float64), bipolar=True, bits=1)
        scale, zp, bits = (v.astype(np.float64) for v in vals)
        rounding = a.get("rounding_mode", b"ROUND")
        rounding = (rounding.decode() if isinstance(rounding, bytes) else rounding).upper()
        if np.any(zp != 0):
            self.fail(node, f"zero point {zp.flatten()[:4]} is not supported (supported: zero "
                            "point 0, symmetric quantization)")
        if bits.size != 1 or bits.item() != int(bits.item()) or not 1 <= bits.item() <= 8:
            self.fail(node, f"bit width {bits.flatten()[:4]} is not supported (supported: an "
                            "integer from 1 to 8)")
        if np.any(scale <= 0):
            self.fail(node, "scales must be positive")
        return dict(scale=scale, bipolar=False, bits=int(bits.item()),
                    signed=bool(a.get("signed", 1)), narrow=bool(a.get("narrow", 0)),
                    rounding=rounding)

    def channel_scale(self, node, scale: np.ndarray, channels: int, axis: int) -> np.ndarray:
        """A scale broadcast to ``(channels,)``: per tensor, or per channel along ``axis``."""
        if scale.size == 1:
            return np.full(channels, float(scale.item()))
        shape = [1] * scale.ndim
        if scale.ndim > axis:
            shape[axis] = channels
        if list(scale.shape) != shape:
            self.fail(node, f"scale of shape {list(scale.shape)} is not supported (supported: "
                            f"one scale, or one per channel along axis {axis})")
        return scale.reshape(channels)

    def weight(self, node, tensor: str, out_axis: int):
        """Integer weights, their per-output-channel scale ``(Cout,)`` and bit width."""
        prod = self.m.find_producer(tensor)
        if prod is None or prod.op_type not in ("Quant", "BipolarQuant"):
            self.fail(node, f"weights {tensor!r} are not quantized (supported: a Quant or "
                            "BipolarQuant node on the weights)")
        qp = self.quant_params(prod)
        wq = self.const(tensor)
        if wq is None:
            self.fail(prod, "the weights must be constant")
        cout = wq.shape[out_axis]
        s = self.channel_scale(prod, qp["scale"], cout, out_axis)
        shape = [1] * wq.ndim
        shape[out_axis] = cout
        q = wq.astype(np.float64) / s.reshape(shape)
        if qp["bipolar"]:
            bits, qmax = 1, 1
        else:
            bits = qp["bits"]
            if not qp["signed"] or not qp["narrow"] or bits < 2:
                self.fail(prod, f"weight quantizer signed={qp['signed']} narrow="
                                f"{qp['narrow']} bits={bits} is not supported (supported: "
                                "signed narrow-range 2..8 bits, or BipolarQuant for 1 bit)")
            qmax = weight_qmax(bits)
        qi = np.rint(q)
        if np.abs(q - qi).max(initial=0) > 1e-3 or np.abs(qi).max(initial=0) > qmax:
            self.fail(prod, "the quantized weights are not integers on the quantizer's grid")
        return qi.astype(np.int64), s, bits

    def qtensor(self, node, i: int = 0) -> QTensor:
        ref = self.refs.get(node.input[i])
        if not isinstance(ref, QTensor):
            what = ("an unquantized tensor" if ref is None else
                    "a conv output before its quantizer")
            self.fail(node, f"input {node.input[i]!r} is {what} (supported: a tensor quantized "
                            "by an activation Quant node)")
        return ref

    def add_node(self, node: dict, arrays: dict, scale: np.ndarray, report: dict,
                 onnx_tensor: str) -> None:
        """Append our node; ``scale`` per channel (the manifest keeps the largest), the
        report keeps all and the ONNX tensor our node's output equals (divided by them)."""
        scale = np.atleast_1d(scale)
        report.update(onnx_tensor=onnx_tensor, scales=[float(v) for v in scale])
        node["scale"] = float(scale.max())
        node["arrays"] = sorted(arrays)
        for k, v in arrays.items():
            self.arrays[f"{node['name']}/{k}"] = v
        self.nodes.append(node)
        self.report.append(dict(node=node["name"], op=node["op"], **report))

    # ------------------------------------------------------------------ the walk

    def run(self) -> tuple[dict, dict, list]:
        g = self.m.graph
        if len(g.input) != 1 or len(g.output) != 1:
            self.fail(None, f"the graph must have one input and one output, not "
                            f"{len(g.input)} and {len(g.output)}")
        inp = g.input[0].name
        ishape = self.m.get_tensor_shape(inp)
        if ishape is None or len(ishape) != 4 or ishape[0] != 1:
            self.fail(None, f"input {inp!r} has shape {ishape}; supported: [1, C, H, W]")
        self.input_shape = [int(d) for d in ishape[1:]]
        self.graph_input = inp
        for node in g.node:
            if node.op_type in ("Quant", "BipolarQuant") and self.const(node.output[0]) \
                    is not None:
                continue                                   # a weight quantizer
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                self.fail(node, f"op {node.op_type} is not supported (supported: "
                                f"{', '.join(SUPPORTED_OPS)})")
            handler(node)
        out = g.output[0].name
        ref = self.refs.get(out)
        if isinstance(ref, PendingFc):
            ref = self.finish_fc(ref, np.zeros(ref.weight.shape[0]), None, out)
        if not isinstance(ref, QTensor) or not self.nodes or \
                ref.name != self.nodes[-1]["name"]:
            self.fail(None, f"the graph output {out!r} must be the last layer's output (a "
                            "quantized tensor or the classifier's logits)")
        self.assign_where()
        if not hasattr(self, "pixel_max"):
            self.fail(None, "the graph input is not quantized")
        manifest = dict(
            format=export.FORMAT, version=export.VERSION,
            input=dict(shape=self.input_shape, pixel_max=self.pixel_max),
            requant=export.REQUANT, nodes=self.nodes, output=self.nodes[-1]["name"],
            classes=[], spec=dict(source="qonnx"), meta={})
        return manifest, self.arrays, self.report

    def assign_where(self) -> None:
        """The partition of the shipped networks: the first conv and the maxpools right after
        it on the MCU (it reads 8-bit pixels), the run of convs after it on the accelerator,
        everything from the first non-conv after that run on the MCU."""
        stage = 0
        for n in self.nodes:
            if stage == 0 and n["op"] == "conv":
                n["where"], stage = "mcu", 1
            elif stage == 1 and n["op"] == "maxpool":
                n["where"] = "mcu"
            elif stage in (1, 2) and n["op"] == "conv":
                n["where"], stage = "accel", 2
            else:
                n["where"] = "mcu"
                stage = 3 if stage >= 1 else stage

    def alias(self, node, ref) -> None:
        self.refs[node.output[0]] = ref

    def op_Identity(self, node):
        self.alias(node, self.refs.get(node.input[0]))

    op_Dropout = op_Identity

    def op_Quant(self, node):
        src = node.input[0]
        qp = self.quant_params(node)
        if src == self.graph_input:
            if qp["signed"] or qp["narrow"]:
                self.fail(node, "the input quantizer must be unsigned and not narrow (pixels "
                                "are unsigned codes 0..2**bits - 1)")
            c = self.input_shape[0]
            s = self.channel_scale(node, qp["scale"], c, 1)
            if not np.all(s == s[0]):
                self.fail(node, "the input needs one scale for all channels")
            self.pixel_max = (1 << qp["bits"]) - 1
            self.alias(node, QTensor("input", s, 0, self.pixel_max, tuple(self.input_shape)))
            return
        ref = self.refs.get(src)
        if not isinstance(ref, Pending):
            self.fail(node, f"input {src!r} is not the output of a Conv chain (supported: an "
                            "activation Quant on the graph input or after a Conv, BatchNorm, "
                            "residual Add, Relu)")
        if len(self.m.find_consumers(src)) != 1:
            self.fail(node, f"tensor {src!r} feeds several nodes")
        self.finish_conv(node, ref, qp)

    def op_BipolarQuant(self, node):
        self.fail(node, "bipolar activations are not supported (supported: BipolarQuant on "
                        "weights; activations are unsigned)")

    def op_Conv(self, node):
        a = _attrs(node)
        x = self.qtensor(node)
        if x.lo < 0:
            self.fail(node, f"input {node.input[0]!r} is signed; the conv takes unsigned "
                            "activations")
        if not x.per_tensor:
            self.fail(node, f"input {node.input[0]!r} has a per-channel scale; a conv input "
                            "needs one scale (the requantization multiplier is per output "
                            "channel)")
        w, s_w, bits = self.weight(node, node.input[1], 0)
        cout, cin, kh, kw = w.shape
        ks = list(a.get("kernel_shape", [kh, kw]))
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(node, "grouped or dilated convolutions are not supported (supported: "
                            "group 1, dilation 1)")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.fail(node, "auto_pad is not supported (supported: explicit pads)")
        if kh != kw or ks != [kh, kw] or strides[0] != strides[1] or len(set(pads)) != 1 \
                or pads[0] >= kh:
            self.fail(node, f"kernel {ks}, strides {strides}, pads {pads} are not supported "
                            "(supported: square kernel, equal strides, the same padding on "
                            "all sides, smaller than the kernel)")
        if cin != x.shape[0]:
            self.fail(node, f"weights for {cin} input channels, input has {x.shape[0]}")
        bias = np.zeros(cout)
        if len(node.input) > 2 and node.input[2]:
            bias = self.const(node.input[2])
            if bias is None:
                self.fail(node, "the bias must be constant")
            bias = bias.astype(np.float64).reshape(cout)
        hw = [out_size(d, kh, strides[0], pads[0]) for d in x.shape[1:]]
        conv = dict(name=node.name, op="conv", inputs=[x.name], shape=[cout, *hw],
                    in_channels=cin, out_channels=cout, kernel=kh, stride=strides[0],
                    padding=pads[0], w_bits=bits)
        self.alias(node, Pending(conv, w, x.scale[0] * s_w, bias, x, onnx_nodes=[node.name]))

    def pending(self, node, i: int = 0) -> Pending | None:
        """The conv chain on input ``i`` of ``node`` (None if it is not one), now extended by
        ``node``."""
        ref = self.refs.get(node.input[i])
        if not isinstance(ref, Pending):
            return None
        if len(self.m.find_consumers(node.input[i])) != 1:
            self.fail(node, f"tensor {node.input[i]!r} (a conv output before its quantizer) "
                            "feeds several nodes")
        if ref.relu:
            self.fail(node, "only a Quant may follow the Relu of a conv chain (the hardware "
                            "clamps after the sum)")
        ref.onnx_nodes.append(node.name)
        return ref

    def channel_const(self, node, value: np.ndarray, c: int) -> np.ndarray:
        v = value.astype(np.float64)
        if v.size == 1:
            return np.full(c, float(v.item()))
        if list(v.shape) in ([c], [1, c, 1, 1], [c, 1, 1]):
            return v.reshape(c)
        self.fail(node, f"constant of shape {list(v.shape)} is not supported (supported: a "
                        "scalar or one value per channel)")

    def affine(self, node, p: Pending, mul=None, add=None):
        if mul is not None:
            p.a, p.b = p.a * mul, p.b * mul
            if p.r is not None:
                p.r = p.r * mul
        if add is not None:
            p.b = p.b + add
        self.alias(node, p)

    def op_BatchNormalization(self, node):
        p = self.pending(node)
        if p is None:
            self.fail(node, "BatchNormalization must follow a Conv (supported: folded into "
                            "the conv's requantization)")
        c = p.a.size
        vals = [self.const(i) for i in node.input[1:5]]
        if any(v is None for v in vals):
            self.fail(node, "BatchNormalization parameters must be constant")
        g, beta, mean, var = (v.astype(np.float64).reshape(c) for v in vals)
        eps = float(_attrs(node).get("epsilon", 1e-5))
        k = g / np.sqrt(var + eps)
        self.affine(node, p, k, beta - k * mean)

    def binary(self, node):
        """``(conv chain, constant)`` for a commutative op with one constant side."""
        for i in (0, 1):
            c = self.const(node.input[1 - i])
            if c is not None and isinstance(self.refs.get(node.input[i]), Pending):
                return self.pending(node, i), c
        return None, None

    def op_Mul(self, node):
        p, c = self.binary(node)
        if p is None:
            self.fail(node, "supported: a conv chain times a constant")
        self.affine(node, p, mul=self.channel_const(node, c, p.a.size))

    def op_Div(self, node):
        c = self.const(node.input[1])
        p = self.pending(node) if c is not None else None
        if p is None:
            self.fail(node, "supported: a conv chain divided by a constant")
        self.affine(node, p, mul=1.0 / self.channel_const(node, c, p.a.size))

    def op_Sub(self, node):
        c = self.const(node.input[1])
        p = self.pending(node) if c is not None else None
        if p is None:
            self.fail(node, "supported: a conv chain minus a constant")
        self.affine(node, p, add=-self.channel_const(node, c, p.a.size))

    def op_Add(self, node):
        refs = [self.refs.get(i) for i in node.input]
        if isinstance(refs[0], PendingFc) or isinstance(refs[1], PendingFc):
            i = 0 if isinstance(refs[0], PendingFc) else 1
            b = self.const(node.input[1 - i])
            if b is None:
                self.fail(node, "the classifier's bias must be constant")
            fc = refs[i]
            fc.onnx_nodes.append(node.name)
            self.alias(node, self.finish_fc(fc, b.astype(np.float64).reshape(-1), node,
                                                    node.output[0]))
            return
        p, c = self.binary(node)
        if p is not None:
            self.affine(node, p, add=self.channel_const(node, c, p.a.size))
            return
        kinds = [type(r).__name__ for r in refs]
        if kinds.count("Pending") == 1 and kinds.count("QTensor") == 1:
            i = kinds.index("Pending")
            p, res = self.pending(node, i), refs[1 - i]
            if p.res is not None:
                self.fail(node, "a conv takes one residual; this is a second one")
            if list(res.shape) != p.node["shape"]:
                self.fail(node, f"residual {node.input[1 - i]!r} of shape {list(res.shape)} "
                                "does not match the conv output")
            p.res, p.r = res, res.scale.copy()
            self.alias(node, p)
            return
        self.fail(node, "supported Adds: a conv chain plus a constant (bias), plus one earlier "
                        "quantized tensor (the residual, added before the conv's quantizer), "
                        "or the classifier plus its bias; an Add of two quantized tensors "
                        "needs a second rounding the hardware does not have")

    def op_Relu(self, node):
        ref = self.refs.get(node.input[0])
        if isinstance(ref, QTensor) and ref.lo >= 0:
            self.alias(node, ref)                          # a no-op on unsigned codes
            return
        p = self.pending(node)
        if p is None:
            self.fail(node, "supported: Relu in a conv chain, or on unsigned quantized tensors")
        p.relu = True
        self.alias(node, p)

    def finish_conv(self, qnode, p: Pending, qp: dict) -> None:
        name, cout = p.node["name"], p.a.size
        if qp["bipolar"]:
            self.fail(qnode, "bipolar activations are not supported")
        bits, signed, narrow, rounding = qp["bits"], qp["signed"], qp["narrow"], qp["rounding"]
        if rounding not in ROUNDING:
            self.fail(qnode, f"rounding mode {rounding} is not supported (supported: "
                             f"{', '.join(ROUNDING)})")
        if not signed and narrow:
            self.fail(qnode, "an unsigned narrow-range quantizer is not supported (supported: "
                             "unsigned 0..2**bits - 1)")
        if signed and p.relu:
            if bits < 2:
                self.fail(qnode, "Relu + signed 1-bit quantizer is not supported")
            out_bits, out_signed = bits - 1, False        # Relu + signed b bits: 0..2**(b-1)-1
        elif signed:
            if not narrow or bits < 2:
                self.fail(qnode, f"signed quantizer narrow={narrow} bits={bits} without Relu is "
                                 "not supported (supported: signed narrow-range, 2..8 bits: "
                                 "the hardware clamps to -(2**(b-1)-1)..2**(b-1)-1)")
            out_bits, out_signed = bits, True
        else:
            out_bits, out_signed = bits, False
        s_out = self.channel_scale(qnode, qp["scale"], cout, 1)
        mult, bias = p.a / s_out, p.b / s_out
        res_mult = None if p.res is None else p.r / s_out
        floor = rounding == "FLOOR"
        if floor:
            bias = bias - 0.5      # floor(v) = floor((v - 1/2) + 1/2): the hardware's rounding
        try:
            m, b, r, shift = quant.requant_multipliers(
                torch.from_numpy(mult), torch.from_numpy(bias),
                None if res_mult is None else torch.from_numpy(res_mult))
        except ValueError as e:
            self.fail(qnode, f"the requantization of conv {name!r} does not fit: {e}")
        m, b = m.numpy(), b.numpy()
        lo, hi = act_range(out_bits, out_signed)
        node = dict(p.node, out_bits=out_bits, out_signed=out_signed, shift=shift)
        arrays = dict(weight=p.weight.astype(np.int8), mult=m.astype(np.int32),
                      bias=b.astype(np.int64))
        if p.res is not None:
            node["inputs"] = [p.in_q.name, p.res.name]
            arrays["res_mult"] = r.numpy().astype(np.int32)
        # Worst-case distance, in output LSBs, of the fixed-point value from the real one.
        acc_max = np.abs(p.weight).reshape(cout, -1).sum(1) * max(abs(p.in_q.lo), p.in_q.hi)
        err = acc_max * np.abs(m - mult * 2.0**shift) + np.abs(b - bias * 2.0**shift)
        if p.res is not None:
            err = err + max(abs(p.res.lo), abs(p.res.hi)) * np.abs(r.numpy() - res_mult *
                                                                   2.0**shift)
        err = float(err.max()) / 2.0**shift
        ties = ROUNDING[rounding] == "ties" and not (rounding == "HALF_UP" and not out_signed)
        why = []
        if err > 0:
            why.append(f"the {quant.MULT_BITS}-bit multipliers and the shift {shift} move the "
                       f"value by at most {err:.2e} LSB, which changes the rounding only "
                       "within that distance of a rounding boundary")
        if ties:
            why.append(f"{rounding} rounds exact ties differently from the hardware's half up")
        bound = 0 if not why else max(1, math.ceil(err))
        self.add_node(node, arrays, s_out,
                      dict(onnx_nodes=p.onnx_nodes + [qnode.name], max_diff_lsb=bound,
                           scale_error_lsb=err, rounding=rounding,
                           why="; ".join(why) or "exact"), qnode.output[0])
        self.alias(qnode, QTensor(name, s_out, lo, hi, tuple(node["shape"])))

    def op_MaxPool(self, node):
        x = self.qtensor(node)
        a = _attrs(node)
        ks, st = list(a.get("kernel_shape")), list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if x.lo < 0 or len(x.shape) != 3:
            self.fail(node, "max pooling needs an unsigned [C, H, W] input")
        if ks[0] != ks[1] or st[0] != st[1] or len(set(pads)) != 1 or pads[0] >= ks[0] or \
                a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(node, f"kernel {ks}, strides {st}, pads {pads} are not supported "
                            "(supported: square, equal strides, equal padding smaller than the "
                            "kernel, ceil_mode 0, dilation 1)")
        hw = tuple(out_size(d, ks[0], st[0], pads[0]) for d in x.shape[1:])
        node_d = dict(name=node.name, op="maxpool", inputs=[x.name], shape=[x.shape[0], *hw],
                      kernel=ks[0], stride=st[0], padding=pads[0])
        self.add_node(node_d, {}, x.scale,
                      dict(onnx_nodes=[node.name], max_diff_lsb=0, scale_error_lsb=0.0,
                           rounding="-", why="exact"), node.output[0])
        self.alias(node, QTensor(node.name, x.scale, x.lo, x.hi, tuple(node_d["shape"])))

    def avgpool(self, node):
        x = self.qtensor(node)
        if len(x.shape) != 3:
            self.fail(node, "average pooling needs a [C, H, W] input")
        c, h, w = x.shape
        node_d = dict(name=node.name, op="avgpool", inputs=[x.name], shape=[c])
        scale = x.scale / (h * w)
        self.add_node(node_d, {}, scale,
                      dict(onnx_nodes=[node.name], max_diff_lsb=0, scale_error_lsb=0.0,
                           rounding="-", why="exact (an integer sum; 1/(H*W) is in the scale)"),
                      node.output[0])
        self.alias(node, QTensor(node.name, scale, x.lo * h * w, x.hi * h * w, (c,)))

    def op_GlobalAveragePool(self, node):
        self.avgpool(node)

    def op_ReduceMean(self, node):
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.const(node.input[1])
        if axes is None or sorted(int(i) for i in np.asarray(axes).flatten()) not in \
                ([2, 3], [-2, -1]):
            self.fail(node, "supported: ReduceMean over the two spatial axes (global average "
                            "pooling)")
        self.avgpool(node)
        if not _attrs(node).get("keepdims", 1):
            self.refs[node.output[0]].flat = True

    def op_Flatten(self, node):
        x = self.qtensor(node)
        if len(x.shape) != 1:
            self.fail(node, f"flattening a {list(x.shape)} tensor is not supported (supported: "
                            "after global average pooling)")
        self.alias(node, QTensor(x.name, x.scale, x.lo, x.hi, x.shape, flat=True))

    def op_Reshape(self, node):
        x = self.qtensor(node)
        oshape = self.m.get_tensor_shape(node.output[0])
        if len(x.shape) != 1 or oshape is None or list(oshape)[1:] != list(x.shape):
            self.fail(node, f"reshape to {oshape} is not supported (supported: [N, C, 1, 1] -> "
                            "[N, C] after global average pooling)")
        self.alias(node, QTensor(x.name, x.scale, x.lo, x.hi, x.shape, flat=True))

    def fc_start(self, node, weight: np.ndarray, s_w: np.ndarray, bits: int) -> PendingFc:
        x = self.qtensor(node)
        if len(x.shape) != 1 or not x.flat:
            self.fail(node, f"the classifier's input has shape {list(x.shape)} (supported: "
                            "[N, C] after global average pooling and Flatten/Reshape)")
        if not x.per_tensor or not np.all(s_w == s_w[0]):
            self.fail(node, "per-channel scales are not supported here (supported: one scale "
                            "for the input and one for the weights, so that all logits share "
                            "one scale)")
        if weight.shape[1] != x.shape[0]:
            self.fail(node, f"weights for {weight.shape[1]} inputs, input has {x.shape[0]}")
        fc = dict(name=node.name, op="fc", inputs=[x.name], shape=[weight.shape[0]],
                  in_features=weight.shape[1], out_features=weight.shape[0], w_bits=bits)
        return PendingFc(fc, weight, float(x.scale[0] * s_w[0]), x, [node.name])

    def finish_fc(self, fc: PendingFc, bias: np.ndarray, node, out: str) -> QTensor:
        b = np.floor(bias / fc.s_acc + 0.5)
        if np.abs(b).max(initial=0) > FC_BIAS_LIMIT:
            self.fail(node, "the classifier's bias does not fit 2**40 accumulator LSBs")
        err = float(np.abs(b - bias / fc.s_acc).max(initial=0))
        self.add_node(fc.node, dict(weight=fc.weight.astype(np.int8), bias=b.astype(np.int64)),
                      fc.s_acc, dict(onnx_nodes=fc.onnx_nodes, max_diff_lsb=0 if err == 0
                                     else 1, scale_error_lsb=err, rounding="-",
                                     why="exact" if err == 0 else
                                     f"the bias is rounded to the accumulator's LSB (at most "
                                     f"{err:.2f} LSB; the logits are not rounded otherwise)"),
                      out)
        return QTensor(fc.node["name"], np.array([fc.s_acc]), -(2**62), 2**62,
                       tuple(fc.node["shape"]), flat=True)

    def op_Gemm(self, node):
        a = _attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            self.fail(node, "supported: Gemm with transA 0, alpha 1, beta 1")
        trans_b = bool(a.get("transB", 0))
        w, s_w, bits = self.weight(node, node.input[1], 0 if trans_b else 1)
        w = w if trans_b else w.T
        fc = self.fc_start(node, w, s_w, bits)
        bias = np.zeros(w.shape[0])
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node.input[2])
            if c is None:
                self.fail(node, "the bias must be constant")
            bias = np.broadcast_to(c.astype(np.float64).reshape(-1), (w.shape[0],))
        self.alias(node, self.finish_fc(fc, bias, node, node.output[0]))

    def op_MatMul(self, node):
        w, s_w, bits = self.weight(node, node.input[1], 1)
        self.alias(node, self.fc_start(node, w.T, s_w, bits))


def import_qonnx(path: str | Path) -> tuple[dict, dict, list[dict]]:
    """``(manifest, arrays, report)`` for the QONNX file at ``path``; ``report`` has one entry
    per node: ``max_diff_lsb`` (the largest difference from the real-valued graph on the same
    inputs), ``scale_error_lsb`` and ``why``. Raises :class:`QonnxImportError`."""
    model = load_qonnx(path)
    imp = _Importer(model, str(path))
    manifest, arrays, report = imp.run()
    manifest["meta"] = dict(source=Path(path).name, qonnx_report=report)
    return manifest, arrays, report


def format_report(report: list[dict]) -> str:
    rows = [("node", "op", "ONNX nodes", "max diff", "scale err (LSB)", "why")]
    for r in report:
        rows.append((r["node"], r["op"], ",".join(r["onnx_nodes"]), f"{r['max_diff_lsb']} LSB",
                     f"{r['scale_error_lsb']:.1e}", r["why"]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5]
                     for r in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.qonnx_import", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("qonnx", help="QONNX file (.onnx), e.g. from brevitas.export.export_qonnx")
    p.add_argument("out", help="integer model file to write (.npz)")
    p.add_argument("--dataset", default=None, help="dataset to record (for model.evaluate)")
    args = p.parse_args(argv)
    try:
        manifest, arrays, report = import_qonnx(args.qonnx)
    except QonnxImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dataset:
        from . import data
        manifest["meta"]["dataset"] = args.dataset
        manifest["classes"] = list(data.dataset_info(args.dataset).classes)
    export.save(args.out, manifest, arrays)
    print(format_report(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

