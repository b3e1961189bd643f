"""Division by a constant (gateware.divide): exact for every dividend of the width."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from gateware.divide import div_const, reciprocal
from sim.seed import test_seed

SEED = test_seed()


@pytest.mark.parametrize("width", [1, 5, 12, 16])
def test_reciprocal_exact(width):
    """floor(x * K / 2**s) == x // d for every x < 2**width and every divisor to 300 (the
    weight store's macro count is at most 256)."""
    x = np.arange(1 << width, dtype=object if width > 12 else np.int64)
    if width > 12:      # every x would be slow as Python ints: both ends and a seeded sample
        rng = random.Random(SEED)
        x = np.array(sorted({0, 1, (1 << width) - 1,
                             *(rng.randrange(1 << width) for _ in range(4000))}), dtype=object)
    for d in range(1, 301):
        k, s = reciprocal(d, width)
        assert np.array_equal((x * k) >> s, x // d), f"seed {SEED}: divisor {d}"


def test_reciprocal_refuses():
    with pytest.raises(ValueError, match="Divisor must be a positive integer, not 0"):
        reciprocal(0, 8)
    with pytest.raises(ValueError, match="Width must be a positive integer"):
        reciprocal(3, 0)


@pytest.mark.parametrize("divisor", [1, 3, 16, 18])
def test_div_const_hardware(divisor):
    """The circuit's quotient, every 10-bit dividend, in the Amaranth simulator."""
    m = Module()
    x = Signal(10)
    q = Signal(16)
    m.d.comb += q.eq(div_const(x, divisor))
    got = []

    async def bench(ctx):
        for v in range(1 << 10):
            ctx.set(x, v)
            got.append(ctx.get(q))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [v // divisor for v in range(1 << 10)]
