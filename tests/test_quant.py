"""The quantizers and the fixed-point requantization rule."""

import math

import numpy as np
import pytest
import torch

from model import golden, quant


def test_round_half_up_not_to_even():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1.49])
    assert quant.round_half_up(x).tolist() == [-2, -1, 0, 1, 2, 3, 1]


@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_requantize_rounds_half_up_and_saturates(impl):
    acc = np.array([[-3, -1, 1, 3, 1000, -1000]], dtype=np.int64)
    m = np.array([1] * 6)
    b = np.zeros(6, dtype=np.int64)
    if impl == "torch":
        out = quant.requantize(torch.from_numpy(acc), torch.from_numpy(m).long(),
                               torch.from_numpy(b), 1, -7, 7).numpy()
    else:
        out = golden.requantize(acc, m, b, 1, -7, 7)
    # -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2, then saturation to [-7, 7].
    assert out.tolist() == [[-1, 0, 1, 2, 7, -7]]


def test_requantize_residual_term():
    acc = np.array([[[10]], [[0]]], dtype=np.int64).reshape(1, 2, 1, 1)
    res = np.array([3, -5]).reshape(1, 2, 1, 1)
    out = golden.requantize(acc, np.array([4, 4]), np.array([2, 2]), 2, 0, 255, res,
                            np.array([8, 8]))
    # (10*4 + 2 + 3*8 + 2) >> 2 = 17; (0 + 2 - 40 + 2) >> 2 = -9 -> ReLU clamp 0.
    assert out.ravel().tolist() == [17, 0]


@pytest.mark.parametrize("value", [1e-6, 0.003, 0.7, 1.0, 3.9, 1000.0, 32767.0])
def test_choose_shift_uses_the_full_multiplier(value):
    s = quant.choose_shift(value)
    m = round(value * 2**s)
    assert m <= 2 ** (quant.MULT_BITS - 1) - 1
    if s < quant.MAX_SHIFT:
        assert round(value * 2 ** (s + 1)) > 2 ** (quant.MULT_BITS - 1) - 1
    assert abs(m / 2**s - value) <= 2 ** -(s + 1) + 1e-12


def test_choose_shift_rejects_huge_factor():
    with pytest.raises(ValueError, match="16-bit multiplier"):
        quant.choose_shift(1e6)


def test_requant_multipliers_relative_error():
    rng = np.random.default_rng(1)
    mult = torch.from_numpy(rng.uniform(-0.02, 0.02, 64))
    bias = torch.from_numpy(rng.uniform(-30, 30, 64))
    m, b, r, s = quant.requant_multipliers(mult, bias, torch.full((64,), 0.5))
    assert int(m.abs().max()) <= 2 ** (quant.MULT_BITS - 1) - 1
    assert int(r.max()) <= 2 ** (quant.RES_MULT_BITS - 1) - 1
    err = (m.double() / 2**s - mult).abs().max()
    assert err <= 2 ** -(s + 1)
    assert (r == round(0.5 * 2**s)).all()


@pytest.mark.parametrize("bits", range(1, 9))
def test_weight_quantizer_grid(bits):
    torch.manual_seed(bits)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    q, s = quant.quantize_weight(w, bits)
    assert s.shape == (8,) and (s > 0).all()
    qmax = quant.weight_qmax(bits)
    assert torch.equal(q, q.round()) and int(q.abs().max()) <= qmax
    if bits == 1:
        assert set(q.unique().tolist()) == {-1.0, 1.0}
    # The dequantized weights approximate the float weights within half a step (inside the
    # clipping range), and the gradient reaches w (straight-through).
    t = s.view(-1, 1, 1, 1) * qmax
    inside = w.abs() <= t
    if bits > 1:
        step = s.view(-1, 1, 1, 1)
        err = ((q.detach() * step - w.detach()).abs() - step / 2)[inside]
        assert float(err.max()) <= 1e-6
    (q * s.view(-1, 1, 1, 1)).sum().backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0


def test_weight_threshold_is_dynamic():
    w = torch.randn(4, 64)
    w[0, 0] = 50.0  # an outlier: a 4-bit threshold clips it, an 8-bit one keeps it
    assert float(quant.weight_threshold(w, 4)[0]) < 50.0
    assert float(quant.weight_threshold(w, 8)[0]) == 50.0
    # Re-estimated from the current weights: scaling the weights scales the threshold.
    assert torch.allclose(quant.weight_threshold(2 * w, 4), 2 * quant.weight_threshold(w, 4))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_act_quant_levels_and_alpha_grad(bits, signed):
    if signed and bits < 2:
        with pytest.raises(ValueError):
            quant.ActQuant(bits, signed=True)
        return
    aq = quant.ActQuant(bits, signed=signed, alpha=2.0)
    x = torch.linspace(-4, 4, 1001)
    y = aq(x)
    q = y / aq.scale()
    assert torch.allclose(q, q.round(), atol=1e-4)
    lo, hi = quant.act_range(bits, signed)
    assert int(q.round().min()) == lo and int(q.round().max()) == hi
    y.sum().backward()
    assert aq.alpha.grad is not None and math.isfinite(float(aq.alpha.grad))


def test_check_bits():
    for bad in (0, 9, 2.0, "4"):
        with pytest.raises(ValueError, match="1 to 8"):
            quant.check_bits(bad, "weight bits")
