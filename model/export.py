"""Export a trained :class:`~model.nets.QuantNet` to the integer model file.

File format (``FORMAT``, version ``VERSION``; written and read by :mod:`model.modelfile`): a
NumPy ``.npz`` archive (a zip; every member has a CRC, so corruption is detected) holding

``manifest``
    UTF-8 JSON as a uint8 array: ``format``, ``version``, ``input`` (shape ``[C, H, W]``,
    ``pixel_max``; pixels are unsigned 8-bit integers), ``requant`` (the rule, see below),
    ``nodes`` (the layer graph in execution order), ``output`` (the last node), ``classes``,
    ``spec`` (to rebuild the PyTorch network), free-form ``meta`` (training record) and
    ``content_sha256``: the SHA-256 of everything else in the file, manifest and arrays
    (:func:`model.modelfile.content_sha256`), so that a file changed after export is refused
    instead of computed (version 2; version 1 had no hash).
``<node>/<array>``
    the integer arrays of each node, listed by name in the node's ``arrays``.

Node fields (all nodes: ``name``, ``op``, ``inputs``, ``where`` = ``mcu`` | ``accel``,
``shape`` = output ``[C, H, W]`` or ``[C]``, ``scale`` = real value of one output LSB):

``conv``
    ``in_channels``, ``out_channels``, ``kernel``, ``stride``, ``padding``, ``w_bits``,
    ``out_bits``, ``out_signed``, ``shift``; arrays ``weight`` int8 ``(Cout, Cin, k, k)``,
    ``mult`` int32 ``(Cout,)`` (16-bit range), ``bias`` int64 ``(Cout,)`` (48-bit range) and,
    when ``inputs`` has a second (residual) entry, ``res_mult`` int32 ``(Cout,)`` (24-bit
    range). Output::

        acc = sum(x * weight)                                       # zero padding
        y   = acc * mult[c] + bias[c] (+ res * res_mult[c])
        out = clamp((y + 2**(shift-1)) >> shift, lo, hi)            # round half up

    with ``[lo, hi] = [0, 2**out_bits - 1]`` (unsigned: the clamp at 0 is the ReLU) or
    ``[-(2**(out_bits-1) - 1), 2**(out_bits-1) - 1]`` (signed, no ReLU).
``maxpool``
    ``kernel``, ``stride``, ``padding`` (inputs are unsigned, so padding never wins).
``avgpool``
    global: the integer *sum* over H x W (the 1/(H*W) lives in ``scale``).
``fc``
    ``in_features``, ``out_features``, ``w_bits``; arrays ``weight`` int8 ``(out, in)``,
    ``bias`` int64 ``(out,)``. Output ``logits = x @ weight.T + bias`` (one scale for all
    logits, so the argmax is the class).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import nets
from .modelfile import FORMAT, VERSION, save
from .quant import MULT_BITS, RES_MULT_BITS

__all__ = ["FORMAT", "REQUANT", "VERSION", "export", "save", "to_manifest"]

REQUANT = dict(mult_bits=MULT_BITS, res_mult_bits=RES_MULT_BITS, bias_bits=48, rounding="half_up",
               rule="clamp((acc*mult + bias + res*res_mult + 2**(shift-1)) >> shift, lo, hi)")
"""The manifest's informative ``requant`` entry."""


@torch.no_grad()
def to_manifest(net: nets.QuantNet, meta: dict | None = None) -> tuple[dict, dict]:
    """Build ``(manifest, arrays)`` for ``net`` from its current (eval-mode) parameters."""
    spec = net.spec
    training, mode = net.training, net.mode
    net.eval().set_mode("integer")
    dummy = torch.zeros((1, spec.in_channels, spec.image_size, spec.image_size),
                        dtype=torch.long)
    _, env = net(dummy, collect=True)
    scales = {"input": 1.0 / spec.pixel_max}
    nodes, arrays = [], {}
    for name, mod in net.layers.items():
        inputs = net.inputs[name]
        node = dict(name=name, op=mod.op, inputs=inputs, where=mod.where,
                    shape=list(env[name].shape[1:]))
        if isinstance(mod, nets.QConv):
            s_res = scales[inputs[1]] if len(inputs) > 1 else None
            q, m, b, r, shift, s_out = mod.fold(scales[inputs[0]], s_res)
            c = mod.conv
            node.update(in_channels=c.in_channels, out_channels=c.out_channels,
                        kernel=c.kernel_size[0], stride=c.stride[0], padding=c.padding[0],
                        w_bits=mod.w_bits, out_bits=mod.act.bits, out_signed=mod.act.signed,
                        shift=shift)
            arrs = dict(weight=q.numpy().astype(np.int8), mult=m.numpy().astype(np.int32),
                        bias=b.numpy().astype(np.int64))
            if r is not None:
                arrs["res_mult"] = r.numpy().astype(np.int32)
            scales[name] = s_out
        elif isinstance(mod, nets.MaxPool):
            node.update(kernel=mod.k, stride=mod.stride, padding=mod.pad)
            arrs = {}
            scales[name] = scales[inputs[0]]
        elif isinstance(mod, nets.AvgPool):
            arrs = {}
            h, w = env[inputs[0]].shape[2:]
            scales[name] = scales[inputs[0]] / (h * w)
        elif isinstance(mod, nets.QLinear):
            q, b, s_acc = mod.integer_params(scales[inputs[0]])
            node.update(in_features=mod.fc.in_features, out_features=mod.fc.out_features,
                        w_bits=mod.w_bits)
            arrs = dict(weight=q.numpy().astype(np.int8), bias=b.numpy().astype(np.int64))
            scales[name] = s_acc
        else:  # pragma: no cover - every node type of nets is listed above
            raise TypeError(f"cannot export node {name!r} of type {type(mod).__name__}")
        node["scale"] = scales[name]
        node["arrays"] = sorted(arrs)
        for k, v in arrs.items():
            arrays[f"{name}/{k}"] = v
        nodes.append(node)
    net.set_mode(mode).train(training)
    manifest = dict(
        format=FORMAT, version=VERSION,
        input=dict(shape=[spec.in_channels, spec.image_size, spec.image_size],
                   pixel_max=spec.pixel_max),
        requant=dict(REQUANT),
        nodes=nodes, output=nodes[-1]["name"], classes=list(spec.classes),
        spec=spec.to_dict(), meta=meta or {},
    )
    return manifest, arrays


def export(net: nets.QuantNet, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``net`` as an integer model file at ``path``."""
    return save(path, *to_manifest(net, meta))
