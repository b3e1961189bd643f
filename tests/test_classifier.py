# amaranth: UnusedElaboratable=no
"""The classifier unit alone (logit registers and argmax) in the Amaranth simulator: random
logits with many ties, every channel count up to the columns, against ``numpy.argmax`` and
the cycle count :mod:`compiler.cycles` gives a raw layer."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from contract.arith import LOGIT_BITS
from contract.timing import ARGMAX_SCAN
from gateware.datapath import Datapath
from gateware.sequencer import Classifier
from sim.seed import test_seed

SEED = test_seed()


@pytest.mark.parametrize("cols", [1, 5, 8])
def test_argmax_first_largest(cols):
    """Each result: the logits read back through the read port (two's complement, 0 past the
    columns), the class is the first largest among ``out_channels`` (columns past them are
    ignored, even when larger), ``layer_done`` comes ``ARGMAX_SCAN * (out_channels - 1)``
    cycles after the result, once; ``valid`` rises with it and falls with ``go``; the
    overflow flag of the result is passed on."""
    rng = np.random.default_rng(SEED)
    dp = Datapath(lanes=cols, acc_width=16)
    dut = Classifier(cols=cols, param_rows=4, result_layout=dp.out_layout)
    lo, hi = -(1 << (LOGIT_BITS - 1)), (1 << (LOGIT_BITS - 1)) - 1
    cases = []
    for n in range(40):
        k = int(rng.integers(1, cols + 1))
        pool = rng.choice([lo, hi, -1, 0, 1, 7], 3) if n % 2 else rng.integers(lo, hi, 3)
        cases.append((k, [int(v) for v in rng.choice(pool, cols)], n % 5 == 0))
    cases += [(cols, [lo] * cols, False), (cols, [hi] * cols, False)]
    if cols > 1:    # a larger logit past the channels must not count
        cases.append((cols - 1, [0] * (cols - 1) + [hi], False))
    seen = []

    async def bench(ctx):
        ctx.set(dut.ctrl.busy, 1)
        for k, logits, ovf in cases:
            ctx.set(dut.ctrl.desc.out_channels, k)
            ctx.set(dut.go, 1)
            await ctx.tick()
            ctx.set(dut.go, 0)
            assert not ctx.get(dut.valid)
            ctx.set(dut.results.payload, {"logit": logits, "overflow": int(ovf)})
            ctx.set(dut.results.valid, 1)
            assert ctx.get(dut.results.ready)
            flagged = ctx.get(dut.overflow)
            done_at = []
            for cycle in range(cols + 3):
                if ctx.get(dut.layer_done):
                    done_at.append(cycle)
                await ctx.tick()
                ctx.set(dut.results.valid, 0)
            got = []
            for c in range(1 << max(1, (cols - 1).bit_length())):
                ctx.set(dut.logit_r_addr, c)
                v = ctx.get(dut.logit_r_data)
                got.append(v - (1 << 32) if v >> 31 else v)
            seen.append((done_at, ctx.get(dut.result_class), ctx.get(dut.valid), flagged, got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    ties = 0
    for (k, logits, ovf), (done_at, klass, valid, flagged, got) in zip(cases, seen):
        want = int(np.argmax(logits[:k]))
        ties += logits[:k].count(logits[want]) > 1
        where = f"seed {SEED}: {k} of {logits}"
        assert done_at == [ARGMAX_SCAN * (k - 1)], (where, done_at)
        assert klass == want and valid and flagged == ovf, (where, klass, valid, flagged)
        assert got[:cols] == logits and not any(got[cols:]), (where, got)
    assert cols == 1 or ties > 10, f"seed {SEED}: {ties} ties"


def test_constructor_validates_columns():
    dp = Datapath(lanes=2, acc_width=16)
    with pytest.raises(ValueError, match="Column count must be an integer from 1 to 65536"):
        Classifier(cols=0, param_rows=4, result_layout=dp.out_layout)
