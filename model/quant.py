"""Quantizers and the integer requantization rule shared by training, export and the golden model.

Why not Brevitas: Brevitas expresses the fake-quant half of this (per-channel weight quantizers,
learned activation clipping), but the hardware's integer contract is a *single* rounding step
that takes the conv accumulator, the folded BatchNorm and the residual branch together::

    y   = acc * M[c] + B[c] + res * R[c]          # signed 64-bit; M 16-bit, R 24-bit
    out = clamp((y + 2**(S - 1)) >> S, lo, hi)    # round half up, then saturate

Brevitas has no layer with that semantics (its residual adds requantize each branch first and
its export is QONNX, not this fixed-point form), so the quantizers here are written out, and
the fixed-point conversion (:func:`requant_multipliers`) is shared by the PyTorch integer mode
and the exporter so that the golden model, which only reads the exported file, can be held
against the PyTorch model bit for bit.

Rounding everywhere is *half up*: ``floor(x + 0.5)``. ``torch.round`` rounds half to even,
which an adder-and-shift datapath cannot do cheaply, so it is never used.
"""

from __future__ import annotations

import math

import torch

from contract.arith import (
    BIAS_LIMIT,
    MAX_SHIFT,
    MULT_BITS,
    RES_MULT_BITS,
    act_range,
    weight_qmax,
)

# Dynamic threshold: the clipping threshold of a weight channel is re-estimated from the float
# weights on every forward pass as min(max|w|, k * std(w)). Few-level grids lose more to the
# coarse step than to clipping rare large weights, so k shrinks with the bit width; from five
# bits on, the full range is kept.
_THRESHOLD_SIGMAS = {2: 2.0, 3: 2.5, 4: 3.0}


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 0.5)``, the rounding the hardware implements."""
    return torch.floor(x + 0.5)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return round_half_up(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Half-up rounding with a straight-through gradient."""
    return _RoundSTE.apply(x)


def check_bits(bits: int, what: str) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"{what} must be an integer from 1 to 8, not {bits!r}")
    return bits


def weight_threshold(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel clipping threshold, re-estimated from the float weights (no grad)."""
    flat = w.detach().flatten(1)
    amax = flat.abs().amax(1)
    k = _THRESHOLD_SIGMAS.get(bits)
    if k is None:
        t = amax
    else:
        t = torch.minimum(amax, k * flat.std(1, unbiased=False))
    return torch.clamp(t, min=1e-8)


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric weight quantization.

    Returns ``(q, scale)``: ``q`` holds integers (as floats, with a straight-through gradient
    to ``w`` inside the clipping range) and ``scale`` has shape ``(Cout,)``; the fake-quantized
    weight is ``q * scale``. One bit gives binary weights ``+-1`` (sign, zero maps to +1) with
    the mean magnitude as scale, as in XNOR-style binary networks; more bits give the narrow
    grid ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``.
    """
    shape = (-1,) + (1,) * (w.dim() - 1)
    if bits == 1:
        scale = w.detach().flatten(1).abs().mean(1).clamp(min=1e-8)
        sign = torch.where(w >= 0, 1.0, -1.0)
        # Straight-through estimator clipped to |w| <= 1 (as in BinaryConnect).
        ste = w * (w.abs() <= 1).to(w.dtype).detach()
        q = (sign - ste).detach() + ste
        return q, scale
    qmax = weight_qmax(bits)
    scale = weight_threshold(w, bits) / qmax
    v = w / scale.view(shape)
    q = torch.clamp(round_ste(v), -qmax, qmax)
    return q, scale


class ActQuant(torch.nn.Module):
    """Activation quantizer with a learnable clipping value ``alpha`` (PACT).

    Unsigned (after ReLU): ``q = clamp(floor(x / s + 0.5), 0, 2**b - 1)`` with
    ``s = alpha / (2**b - 1)``. Signed (the residual branch of a downsampling block, which has
    no ReLU): the narrow symmetric grid with ``s = alpha / (2**(b-1) - 1)``. The gradient reaches
    ``alpha`` through the clip (PACT) and through the step size (as in LSQ).
    """

    def __init__(self, bits: int, *, signed: bool = False, alpha: float = 4.0):
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.signed = signed
        self.lo, self.hi = act_range(bits, signed)
        self.alpha = torch.nn.Parameter(torch.tensor(float(alpha)))

    def scale(self) -> torch.Tensor:
        return self.alpha.abs() / self.hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized (real-valued) output."""
        a = self.alpha.abs()
        lo = -a if self.signed else torch.zeros_like(a)
        y = torch.maximum(torch.minimum(x, a), lo)
        s = a / self.hi
        return round_ste(y / s) * s

    def calibrate(self, x: torch.Tensor) -> None:
        """Initialise ``alpha`` from observed float activations (a high quantile)."""
        q = 0.999 if self.bits >= 6 else 0.99
        v = x.detach().abs() if self.signed else x.detach().clamp(min=0)
        v = v.flatten()
        if v.numel() > 1_000_000:
            v = v[torch.randperm(v.numel(), device=v.device)[:1_000_000]]
        a = float(torch.quantile(v.float(), q))
        with torch.no_grad():
            self.alpha.fill_(max(a, 1e-3))


def choose_shift(max_abs: float, bits: int = MULT_BITS) -> int:
    """Largest shift ``S <= MAX_SHIFT`` with ``round(max_abs * 2**S)`` inside the signed
    ``bits``-bit range."""
    limit = (1 << (bits - 1)) - 1
    if max_abs <= 0:
        return MAX_SHIFT
    s = math.floor(math.log2(limit / max_abs))
    while s >= 0 and round(max_abs * 2.0**s) > limit:  # guard against log2 rounding
        s -= 1
    if s < 0:
        raise ValueError(
            f"requantization factor {max_abs:.4g} does not fit a {bits}-bit multiplier "
            "even with shift 0; the output scale is far too small for this layer"
        )
    return min(s, MAX_SHIFT)


def requant_multipliers(
    mult: torch.Tensor, bias: torch.Tensor, res_mult: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Turn real per-channel factors into the fixed-point ``(M, B, R, S)`` of the hardware.

    ``mult`` (accumulator to output LSBs), ``bias`` (in output LSBs) and ``res_mult`` (residual
    LSBs to output LSBs) are float tensors of shape ``(C,)``. One shift ``S`` serves the whole
    layer, chosen as large as the multipliers' widths allow. Everything is returned as int64.
    """
    mult = mult.detach().double()
    s = choose_shift(float(mult.abs().max()))
    if res_mult is not None:
        res_mult = res_mult.detach().double()
        s = min(s, choose_shift(float(res_mult.abs().max()), RES_MULT_BITS))
    m = round_half_up(mult * 2.0**s).long()
    b = round_half_up(bias.detach().double() * 2.0**s).long()
    if int(b.abs().max()) >= BIAS_LIMIT:
        raise ValueError(
            f"requantization bias {float(bias.abs().max()):.4g} LSBs overflows the 48-bit bias "
            "register; the layer's BatchNorm shift is out of proportion to its output scale"
        )
    r = None if res_mult is None else round_half_up(res_mult * 2.0**s).long()
    return m, b, r, s


def requantize(
    acc: torch.Tensor,
    m: torch.Tensor,
    b: torch.Tensor,
    shift: int,
    lo: int,
    hi: int,
    res: torch.Tensor | None = None,
    r: torch.Tensor | None = None,
) -> torch.Tensor:
    """The hardware requantization on int64 tensors laid out ``(N, C, ...)``."""
    shape = (1, -1) + (1,) * (acc.dim() - 2)
    y = acc * m.view(shape) + b.view(shape)
    if res is not None:
        y = y + res * r.view(shape)
    y = (y + (1 << (shift - 1))) >> shift if shift > 0 else y
    return torch.clamp(y, lo, hi)
