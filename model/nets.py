"""Quantized networks as layer graphs: ResNet14 and a small CNN for the 8x8 digits set.

A network is an ordered list of named nodes (conv, maxpool, avgpool, fc), each with its input
names. The same graph is trained, run in integer mode, exported and executed by the golden
model, so node names are the keys every intermediate tensor is compared by.

Every node runs in one of three modes, set for the whole network with :meth:`QuantNet.set_mode`:

``float``
    no quantization (float pre-training and the float baseline);
``fakequant``
    quantization-aware training: weights and activations are rounded to their integer grids
    (values stay real, ``q * scale``), with straight-through gradients;
``integer``
    inference on integers exactly as the hardware computes (float64 convolutions are exact
    here because every partial sum stays far below 2**53), using the fixed-point
    requantization of :mod:`model.quant`. Outputs are integer tensors; requires eval mode.

Every node's ``where`` says which part of the system runs it: ``mcu`` (the Cortex-M4: conv1,
maxpool, average pooling and the classifier) or ``accel`` (the CIM accelerator).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import quant

MODES = ("float", "fakequant", "integer")
ARCHS = ("resnet14", "digits_cnn")


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network (stored in checkpoints and exported models)."""

    arch: str = "resnet14"
    in_channels: int = 1
    image_size: int = 32
    num_classes: int = 10
    pixel_max: int = 255
    width: float = 1.0
    blocks: tuple[int, ...] = (2, 2, 2)
    w_bits: int = 4
    a_bits: int = 4
    first_bits: int = 8
    last_bits: int = 8
    res_bits: int = 8
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {ARCHS}")
        for name in ("w_bits", "a_bits", "first_bits", "last_bits", "res_bits"):
            quant.check_bits(getattr(self, name), name)
        if self.res_bits < 2:
            raise ValueError("res_bits must be at least 2 (the shortcut branch is signed)")
        if self.width <= 0:
            raise ValueError(f"width must be positive, not {self.width}")
        if not 1 <= self.pixel_max <= 255:
            raise ValueError(f"pixel_max must be 1..255 (8-bit input), not {self.pixel_max}")
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        object.__setattr__(self, "classes", tuple(self.classes))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = list(self.blocks)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown network spec fields {sorted(unknown)}")
        return cls(**d)


class QConv(nn.Module):
    """Conv2d (no bias) + BatchNorm + output quantizer, with an optional residual input that
    is added before the output quantizer (and before the ReLU that an unsigned output implies).
    """

    op = "conv"

    def __init__(self, cin, cout, k, stride, pad, *, w_bits, out_bits, out_signed=False,
                 where="accel"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = quant.ActQuant(out_bits, signed=out_signed)
        self.w_bits = quant.check_bits(w_bits, "weight bits")
        self.where = where
        self.mode = "float"

    @property
    def relu(self) -> bool:
        return not self.act.signed

    def quantized_weight(self):
        return quant.quantize_weight(self.conv.weight, self.w_bits)

    def forward(self, x, res=None):
        if self.mode == "integer":
            return self._integer(x, res)
        if self.mode == "float":
            z = self.bn(self.conv(x))
            if res is not None:
                z = z + res
            return F.relu(z) if self.relu else z
        q, s = self.quantized_weight()
        w = q * s.view(-1, 1, 1, 1)
        c = self.conv
        z = self.bn(F.conv2d(x, w, None, c.stride, c.padding))
        if res is not None:
            z = z + res
        return self.act(z)

    def fold(self, s_in: float, s_res: float | None = None):
        """Fixed-point requantization ``(q, M, B, R, S, s_out)`` for input scale ``s_in``."""
        q, s_w = self.quantized_weight()
        bn = self.bn
        g = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        s_out = float(self.act.scale().detach())
        mult = g * s_in * s_w.double() / s_out
        bias = (bn.bias.detach().double() - g * bn.running_mean.double()) / s_out
        res_mult = None
        if s_res is not None:
            res_mult = torch.full_like(mult, s_res / s_out)
        m, b, r, shift = quant.requant_multipliers(mult, bias, res_mult)
        return q.detach().round().long(), m, b, r, shift, s_out

    def _integer(self, x, res):
        (xi, s_in) = x
        q, m, b, r, shift, s_out = self.fold(s_in, None if res is None else res[1])
        c = self.conv
        acc = F.conv2d(xi.double(), q.double(), None, c.stride, c.padding).round().long()
        out = quant.requantize(acc, m, b, shift, self.act.lo, self.act.hi,
                               None if res is None else res[0], r)
        return out, s_out


class MaxPool(nn.Module):
    op = "maxpool"

    def __init__(self, k, stride, pad, where="mcu"):
        super().__init__()
        self.k, self.stride, self.pad, self.where = k, stride, pad, where
        self.mode = "float"

    def forward(self, x):
        if self.mode == "integer":
            xi, s = x
            # Inputs are unsigned (post-ReLU), so -inf padding and zero padding agree.
            return F.max_pool2d(xi.double(), self.k, self.stride, self.pad).long(), s
        return F.max_pool2d(x, self.k, self.stride, self.pad)


class AvgPool(nn.Module):
    """Global average pooling. In integer mode the output is the plain sum over H x W; the
    division is folded into the scale (and so into the classifier)."""

    op = "avgpool"

    def __init__(self, where="mcu"):
        super().__init__()
        self.where = where
        self.mode = "float"

    def forward(self, x):
        if self.mode == "integer":
            xi, s = x
            return xi.sum(dim=(2, 3)), s / (xi.shape[2] * xi.shape[3])
        return x.mean(dim=(2, 3))


class QLinear(nn.Module):
    """Classifier with a per-tensor weight scale and a bias quantized at the accumulator's
    scale, so the integer logits ``acc + bias`` share one scale and their argmax is the
    class. (Per-channel scales would need a requantization before the argmax.)"""

    op = "fc"

    def __init__(self, cin, cout, *, w_bits, where="mcu"):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.w_bits = quant.check_bits(w_bits, "weight bits")
        self.where = where
        self.mode = "float"

    def quantized_weight(self):
        w = self.fc.weight
        q, s = quant.quantize_weight(w.reshape(1, -1), self.w_bits)
        return q.reshape(w.shape), s[0]

    def forward(self, x):
        if self.mode == "float":
            return self.fc(x)
        if self.mode == "integer":
            xi, s_in = x
            q, b, s_acc = self.integer_params(s_in)
            acc = (xi.double() @ q.double().t()).round().long()
            return acc + b, s_acc
        q, s = self.quantized_weight()
        # The bias stays float here: integer mode rounds it to the accumulator's scale
        # (input scale / (H*W) x weight scale), a step far below one logit LSB of interest.
        return x @ (q * s).t() + self.fc.bias

    def integer_params(self, s_in: float):
        q, s = self.quantized_weight()
        s_acc = s_in * float(s)
        b = quant.round_half_up(self.fc.bias.detach().double() / s_acc).long()
        return q.detach().round().long(), b, s_acc


class QuantNet(nn.Module):
    """A quantized network as an ordered graph of named nodes.

    ``forward(x)`` takes raw integer pixels ``(N, C, H, W)`` (uint8 or any integer-valued
    tensor, ``0..pixel_max``) and returns logits: real in float/fakequant mode, integers in
    integer mode. ``forward(x, collect=True)`` returns ``(logits, {node: output})``.
    """

    def __init__(self, spec: NetSpec, nodes: list[tuple[str, nn.Module, list[str]]]):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        self.inputs: dict[str, list[str]] = {}
        for name, mod, inputs in nodes:
            for i in inputs:
                if i != "input" and i not in self.layers:
                    raise ValueError(f"node {name!r} reads {i!r} before it is defined")
            self.layers[name] = mod
            self.inputs[name] = list(inputs)
        self.mode = "float"

    @property
    def output(self) -> str:
        return list(self.layers)[-1]

    def set_mode(self, mode: str) -> QuantNet:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.mode = mode
        for m in self.layers.values():
            m.mode = mode
        return self

    def forward(self, x, collect: bool = False):
        if self.mode == "integer":
            if self.training:
                raise RuntimeError("integer mode needs eval(): it uses BatchNorm running stats")
            env = {"input": (x.long(), 1.0 / self.spec.pixel_max)}
        else:
            env = {"input": x.float() / self.spec.pixel_max}
        for name, mod in self.layers.items():
            env[name] = mod(*(env[i] for i in self.inputs[name]))
        out = env[self.output]
        if self.mode == "integer":
            out = out[0]
            if collect:
                env = {k: v[0] for k, v in env.items()}
        if collect:
            del env["input"]
            return out, env
        return out

    def act_quantizers(self) -> dict[str, quant.ActQuant]:
        return {n: m.act for n, m in self.layers.items() if isinstance(m, QConv)}

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Initialise every activation clip from float-mode activations on a batch ``x``."""
        mode, training = self.mode, self.training
        self.eval().set_mode("float")
        _, env = self(x, collect=True)
        for name, aq in self.act_quantizers().items():
            aq.calibrate(env[name])
        self.set_mode(mode).train(training)


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def resnet14(spec: NetSpec) -> QuantNet:
    """ResNet14 as DESIGN.md gives it: conv1 7x7/2 + BN + ReLU + maxpool 3x3/2 on the MCU,
    three stages of BasicBlocks (64/128/256 channels x width, strides 1/2/2, 1x1 conv + BN
    shortcuts where the shape changes) on the accelerator, then average pooling and FC."""
    a, w = spec.a_bits, spec.w_bits
    c0 = _ch(64, spec.width)
    nodes = [
        ("conv1", QConv(spec.in_channels, c0, 7, 2, 3, w_bits=spec.first_bits, out_bits=a,
                        where="mcu"), ["input"]),
        ("maxpool", MaxPool(3, 2, 1), ["conv1"]),
    ]
    prev, cin = "maxpool", c0
    for si, nblocks in enumerate(spec.blocks):
        cout = _ch(64 << si, spec.width)
        for bi in range(nblocks):
            stride = 2 if (si > 0 and bi == 0) else 1
            p = f"layer{si + 1}_{bi}"
            shortcut = prev
            if stride != 1 or cin != cout:
                shortcut = f"{p}_shortcut"
                nodes.append((shortcut, QConv(cin, cout, 1, stride, 0, w_bits=w,
                                              out_bits=spec.res_bits, out_signed=True), [prev]))
            nodes.append((f"{p}_conv1", QConv(cin, cout, 3, stride, 1, w_bits=w, out_bits=a),
                          [prev]))
            nodes.append((f"{p}_conv2", QConv(cout, cout, 3, 1, 1, w_bits=w, out_bits=a),
                          [f"{p}_conv1", shortcut]))
            prev, cin = f"{p}_conv2", cout
    nodes += [
        ("avgpool", AvgPool(), [prev]),
        ("fc", QLinear(cin, spec.num_classes, w_bits=spec.last_bits), ["avgpool"]),
    ]
    return QuantNet(spec, nodes)


def digits_cnn(spec: NetSpec) -> QuantNet:
    """A small CNN for 8x8 inputs (the scikit-learn digits): conv1 3x3 on the MCU, a 3x3
    conv, a stride-2 3x3 conv and one residual block on the accelerator, then pooling + FC."""
    a, w = spec.a_bits, spec.w_bits
    c1, c2 = _ch(16, spec.width), _ch(32, spec.width)
    nodes = [
        ("conv1", QConv(spec.in_channels, c1, 3, 1, 1, w_bits=spec.first_bits, out_bits=a,
                        where="mcu"), ["input"]),
        ("conv2", QConv(c1, c2, 3, 1, 1, w_bits=w, out_bits=a), ["conv1"]),
        ("conv3", QConv(c2, c2, 3, 2, 1, w_bits=w, out_bits=a), ["conv2"]),
        ("block_conv1", QConv(c2, c2, 3, 1, 1, w_bits=w, out_bits=a), ["conv3"]),
        ("block_conv2", QConv(c2, c2, 3, 1, 1, w_bits=w, out_bits=a), ["block_conv1", "conv3"]),
        ("avgpool", AvgPool(), ["block_conv2"]),
        ("fc", QLinear(c2, spec.num_classes, w_bits=spec.last_bits), ["avgpool"]),
    ]
    return QuantNet(spec, nodes)


def build(spec: NetSpec) -> QuantNet:
    return {"resnet14": resnet14, "digits_cnn": digits_cnn}[spec.arch](spec)
