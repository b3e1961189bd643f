# amaranth: UnusedElaboratable=no
"""The post-array datapath: RTL against its model, the model against the golden model, and
real conv layers end to end through row-tile partial sums.

The first line keeps Amaranth from warning about the components that the tests of the model
alone create for their parameters and never elaborate."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from contract.arith import (
    BIAS_BITS,
    LOGIT_BITS,
    MAX_SHIFT,
    MULT_BITS,
    RES_MULT_BITS,
    VALUE_BITS,
    accumulator_width,
    signed_width,
)
from gateware.datapath import Datapath
from model import export, golden, nets
from model.testnets import random_net


def srange(width):
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


M_MIN, M_MAX = srange(MULT_BITS)
B_MIN, B_MAX = srange(BIAS_BITS)
R_MIN, R_MAX = srange(RES_MULT_BITS)
RES_MIN, RES_MAX = srange(VALUE_BITS)
CONFIGS = [(bits, sgn) for sgn in (False, True) for bits in range(1 + sgn, 9)]


def ints(rng, lo, hi, size):
    """Uniform integers in [lo, hi] (inclusive), int64."""
    return rng.integers(lo, hi, size=size, endpoint=True, dtype=np.int64)


# ----------------------------------------------------------------------------- stimulus


def tie_bias(acc, m, r, res, b, shift, target, frac):
    """Biases that make ``y = acc*m + b + res*r`` equal ``target * 2**shift + frac`` where that
    fits 48 bits (else ``b`` unchanged)."""
    want = target * (1 << shift) + frac - acc * m - res * r
    ok = (want >= B_MIN) & (want <= B_MAX)
    return np.where(ok, want, b)


def make_beats(rng, dut, results, *, max_tiles, config, overflow=False):
    """Input beats for ``results`` sums of 1..max_tiles partial sums each.

    About a third of the results take random parameters over the whole field ranges (outputs
    mostly saturate), a third get a bias that lands ``y`` near the output range, exactly on a
    rounding tie or one below it, and the rest use extreme values (the most negative and positive
    accumulator, M, B, R and residual)."""
    lanes = dut.lanes
    lo, hi = golden.act_range(config["out_bits"], config["out_signed"])
    shift = config["shift"]
    tiles = ints(rng, 1, max_tiles, results)
    beats = int(tiles.sum())
    first = np.zeros(beats, bool)
    last = np.zeros(beats, bool)
    ends = np.cumsum(tiles) - 1
    first[ends - tiles + 1] = True
    last[ends] = True
    pmin, pmax = srange(dut.psum_width)
    amax = srange(dut.acc_width)[1]
    # Unless overflow is the point, keep every running sum inside the accumulator: the
    # legal-input contract.
    lim = min(pmax, amax // max_tiles)
    if overflow:
        psum = ints(rng, pmin, pmax, (beats, lanes))
    else:
        psum = ints(rng, -lim, lim, (beats, lanes))
    m = ints(rng, M_MIN, M_MAX, (beats, lanes))
    b = ints(rng, B_MIN, B_MAX, (beats, lanes))
    r = ints(rng, R_MIN, R_MAX, (beats, lanes))
    res = ints(rng, RES_MIN, RES_MAX, (beats, lanes))
    kind = rng.integers(0, 3, results)
    for j in np.flatnonzero(kind == 2):              # extremes
        k = ends[j]
        if not overflow and tiles[j] == 1:
            psum[k] = rng.choice([pmin, pmax, 0], lanes)
        m[k] = rng.choice([M_MIN, M_MAX, -M_MAX, 0, 1, -1], lanes)
        b[k] = rng.choice([B_MIN, B_MAX, 0], lanes)
        r[k] = rng.choice([R_MIN, R_MAX, 0], lanes)
        res[k] = rng.choice([RES_MIN, RES_MAX, 0, -127, 127], lanes)
    near = np.flatnonzero(kind == 1)
    for j in near:
        # Moderate sums, so that a 48-bit bias can bring y near the output range.
        small = min(lim, 1 << 12)
        psum[ends[j] - tiles[j] + 1:ends[j] + 1] = ints(rng, -small, small, (tiles[j], lanes))
    if len(near):
        k = ends[near]
        acc = np.add.reduceat(psum, ends - tiles + 1, axis=0)[near]
        m[k] = ints(rng, -300, 300, (len(near), lanes))
        r[k] = ints(rng, -300, 300, (len(near), lanes))
        target = ints(rng, lo - 2, hi + 2, (len(near), lanes))
        frac = rng.choice([(1 << shift) - 1, 1 << (shift - 1), (1 << (shift - 1)) - 1, 0],
                          (len(near), lanes))
        resid = res[k] if config["has_residual"] else 0
        b[k] = tie_bias(acc, m[k], r[k], resid, b[k], shift, target, frac)
    return dict(psum=psum, first=first, last=last, m=m, b=b, r=r, res=res)


def random_config(rng, sgn):
    bits = int(rng.integers(1 + sgn, 9))
    return dict(shift=int(rng.integers(1, MAX_SHIFT + 1)), out_bits=bits, out_signed=sgn,
                has_residual=bool(rng.integers(2)))


def model_of(dut, beats, config):
    return dut.model(beats["psum"], beats["first"], beats["last"], beats["m"], beats["b"],
                     beats["r"], beats["res"], **config)


def unsaturated_ties(y, shift, lo, hi):
    """How many of ``y`` lie exactly halfway between two outputs in ``[lo, hi]``, as
    ``(positive, negative)``: the stimulus must really exercise the rounding."""
    tie = (y % (1 << shift) == 1 << (shift - 1)) & (y >> shift >= lo) & (y >> shift < hi)
    return int((tie & (y > 0)).sum()), int((tie & (y < 0)).sum())


def exact_y(beats, config):
    ends = np.flatnonzero(beats["last"])
    acc = np.add.reduceat(beats["psum"], np.flatnonzero(beats["first"]), axis=0)
    y = acc * beats["m"][ends] + beats["b"][ends]
    if config["has_residual"]:
        y = y + beats["res"][ends] * beats["r"][ends]
    return y


# ----------------------------------------------------------------------------- simulation


def pack_beats(dut, beats):
    """Payload bits of every beat (packed here once: far faster than a ``Const`` per beat)."""
    top = dut.in_layout
    lane_w = dut.lane_layout.size
    fields = [(name, f.offset, (1 << f.shape.width) - 1) for name, f in dut.lane_layout]
    out = []
    for k in range(len(beats["first"])):
        v = (int(beats["first"][k]) << top["first"].offset
             | int(beats["last"][k]) << top["last"].offset)
        for n in range(dut.lanes):
            base = top["lanes"].offset + n * lane_w
            for name, offset, mask in fields:
                v |= (int(beats[name][k, n]) & mask) << (base + offset)
        out.append(v)
    return out


def simulate(dut, layers, *, seed, p_idle, p_ready):
    """Run ``layers`` (``(config, beats)`` pairs) through ``dut`` with random idle cycles on
    the input and random backpressure on the output; return ``(values, overflow)`` per layer.
    The configuration changes only once the previous layer has drained, as the sequencer
    does. After the last result the output must stay quiet (nothing duplicated)."""
    rng_in, rng_out = (np.random.default_rng([seed, i]) for i in range(2))
    expected = np.cumsum([int(beats["last"].sum()) for _, beats in layers])
    received, extra = [], []
    # A lost result must fail the test, not hang it.
    limit = 20 * sum(len(beats["first"]) for _, beats in layers) + 1000
    timed_out = []
    payload = dut.i_stream.payload.as_value()
    out_bits = dut.o_stream.payload.as_value()

    async def driver(ctx):
        for (config, beats), need_before in zip(layers, [0, *expected[:-1]]):
            while len(received) < need_before and not timed_out:
                await ctx.tick()
            for name, v in config.items():
                ctx.set(getattr(dut, name), int(v))
            for bits in pack_beats(dut, beats):
                while rng_in.random() < p_idle:
                    await ctx.tick()
                ctx.set(payload, bits)
                ctx.set(dut.i_stream.valid, 1)
                while not timed_out:
                    _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                    if ready:
                        break
                ctx.set(dut.i_stream.valid, 0)

    async def monitor(ctx):
        quiet = cycles = 0
        while quiet < dut.latency + 4:
            cycles += 1
            if cycles > limit:
                timed_out.append(cycles)
                return
            done = len(received) >= expected[-1]
            ready = bool(done or rng_out.random() < p_ready)
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, bits = await ctx.tick().sample(dut.o_stream.valid, out_bits)
            if valid and ready:
                (extra if done else received).append(bits)
            quiet = quiet + 1 if done else 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    assert not timed_out, f"seed {seed}: {len(received)} of {expected[-1]} results arrived"
    assert not extra, f"seed {seed}: {len(extra)} results more than sent"
    lanes = dut.lanes
    o0 = dut.out_layout["overflow"].offset
    ovf = np.array([bool(bits >> o0 & 1) for bits in received], dtype=bool)
    split = [0, *expected]
    out = []
    for (config, _), a, z in zip(layers, split, split[1:]):
        # A raw layer's results are the logits, any other's the requantized values.
        name, width = ("logit", LOGIT_BITS) if config.get("raw") else ("value", VALUE_BITS)
        v0 = dut.out_layout[name].offset
        vals = np.array([[_sext(bits >> (v0 + width * n), width) for n in range(lanes)]
                         for bits in received[a:z]], dtype=np.int64).reshape(-1, lanes)
        out.append((vals, ovf[a:z]))
    return out


def _sext(v, width):
    v &= (1 << width) - 1
    return v - (1 << width) if v >> (width - 1) else v


def check_layers(dut, layers, outs, seed):
    for i, ((config, beats), (vals, ovf)) in enumerate(zip(layers, outs)):
        want, want_ovf = model_of(dut, beats, config)
        assert vals.shape == want.shape, f"seed {seed} layer {i}: {len(vals)} results"
        # An overflowing raw result's logits are unspecified (the error stops the program).
        bad = np.argwhere((vals != want) & ~(want_ovf[:, None] & bool(config.get("raw"))))
        assert not len(bad), (f"seed {seed} layer {i} {config}: result {tuple(bad[0])} is "
                              f"{vals[tuple(bad[0])]}, model {want[tuple(bad[0])]}")
        assert np.array_equal(ovf, want_ovf), f"seed {seed} layer {i}: overflow flags differ"


# ----------------------------------------------------------------------------- tests


def test_constructor_validates_parameters():
    with pytest.raises(ValueError, match="Accumulator width must be an integer between 8 and "
                                         "48, not 60"):
        Datapath(acc_width=60)
    with pytest.raises(ValueError, match="Lane count must be an integer between 1 and 4096, "
                                         "not 0"):
        Datapath(lanes=0)
    with pytest.raises(ValueError, match="Partial-sum width must be an integer between 2 and "
                                         "the accumulator width 16, not 17"):
        Datapath(acc_width=16, psum_width=17)
    dut = Datapath(lanes=2, acc_width=20, psum_width=12)
    assert dut.psum_width == 12 and Datapath(acc_width=20).psum_width == 20
    beats = dict(psum=np.zeros((1, 2)), first=[1], last=[1], m=np.zeros((1, 2)),
                 b=np.zeros((1, 2)), r=np.zeros((1, 2)), res=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="Shift must be between 1 and 40, not 0"):
        model_of(dut, beats, dict(shift=0, out_bits=4, out_signed=False, has_residual=False))
    with pytest.raises(ValueError, match="Output bits must be between 2 and 8, not 1"):
        model_of(dut, beats, dict(shift=3, out_bits=1, out_signed=True, has_residual=False))
    beats["psum"] = np.full((1, 2), 1 << 11)
    with pytest.raises(ValueError, match="psum values must fit signed 12 bits"):
        model_of(dut, beats, dict(shift=3, out_bits=4, out_signed=False, has_residual=False))


def test_widths_cover_the_extremes():
    assert signed_width(-128, 127) == 8 and signed_width(0, 128) == 9
    assert signed_width(-129, 0) == 9 and signed_width(0, 0) == 1
    # 9 rows of 4-bit weights (qmax 7) and 4-bit activations: |acc| <= 945, 11 bits.
    assert accumulator_width(9, 4, 4) == 11
    assert accumulator_width(256 * 9, 8, 8) == 28
    # acc * M needs acc_width + 16 bits (most negative times most negative); y 49 bits.
    assert Datapath(acc_width=24)._widths() == dict(prod_m=40, prod_r=33, part=49, y=49)
    assert Datapath(acc_width=48)._widths()["y"] == 64


def test_model_rounds_half_up_and_saturates():
    dut = Datapath(acc_width=16)
    # y = acc (M = 1, B = 0) with shift 2: 10/4 = 2.5 -> 3, -2/4 = -0.5 -> 0, -6/4 = -1.5 -> -1,
    # -7/4 -> -2, 11/4 -> 3; then [0, 3] or [-1, 1] saturation.
    acc = np.array([[10], [-2], [-6], [-7], [11], [100], [-100]])
    one = np.ones_like(acc)
    args = (acc, one[:, 0], one[:, 0], one, 0 * one, 0 * one, 0 * one)
    got, ovf = dut.model(*args, shift=2, out_bits=8, out_signed=True, has_residual=False)
    assert got[:, 0].tolist() == [3, 0, -1, -2, 3, 25, -25] and not ovf.any()
    got, _ = dut.model(*args, shift=2, out_bits=2, out_signed=False, has_residual=False)
    assert got[:, 0].tolist() == [3, 0, 0, 0, 3, 3, 0]
    got, _ = dut.model(*args, shift=2, out_bits=2, out_signed=True, has_residual=False)
    assert got[:, 0].tolist() == [1, 0, -1, -1, 1, 1, -1]


def test_model_equals_golden_requantize():
    """Every output format, every shift, residual on and off: random values, values near the
    output range (ties, one below a tie) and every combination of extreme values."""
    seed = 3
    rng = np.random.default_rng(seed)
    dut = Datapath(lanes=1, acc_width=32)
    amin, amax = srange(32)
    ext = np.array(list(itertools.product([amin, amax, 0, -1], [M_MIN, M_MAX, -M_MAX, 1],
                                          [B_MIN, B_MAX, 0], [R_MIN, R_MAX, -R_MAX],
                                          [-256, 255, -127, 127, 0])), dtype=np.int64)
    ties = np.zeros(2, int)
    for (bits, sgn), shift, has_res in itertools.product(CONFIGS, range(1, MAX_SHIFT + 1),
                                                         (False, True)):
        lo, hi = golden.act_range(bits, sgn)
        n = 64
        acc = ints(rng, amin, amax, n) >> rng.integers(0, 31, n)
        m, r = ints(rng, M_MIN, M_MAX, n), ints(rng, R_MIN, R_MAX, n)
        res = ints(rng, -127 if sgn else 0, 127 if sgn else 255, n)
        b = ints(rng, B_MIN, B_MAX, n)
        frac = rng.choice([1 << (shift - 1), (1 << (shift - 1)) - 1, 0], n)
        b[n // 4:] = tie_bias(acc, m, r, res if has_res else 0, b, shift,
                              ints(rng, lo - 2, hi + 2, n), frac)[n // 4:]
        acc, m, b, r, res = (np.concatenate([x, ext[:, i]])
                             for i, x in enumerate((acc, m, b, r, res)))
        ones = np.ones(len(acc), bool)
        got, ovf = dut.model(acc[:, None], ones, ones, m[:, None], b[:, None], r[:, None],
                             res[:, None], shift=shift, out_bits=bits, out_signed=sgn,
                             has_residual=has_res)
        # Each element as its own channel of one (1, C) tensor for the golden model.
        want = golden.requantize(acc[None], m, b, shift, lo, hi, res[None] if has_res else None,
                                 r if has_res else None)[0]
        ties += unsaturated_ties(acc * m + b + (res * r if has_res else 0), shift, lo, hi)
        bad = np.flatnonzero(got[:, 0] != want)
        assert not len(bad) and not ovf.any(), (
            f"seed {seed} bits {bits} signed {sgn} shift {shift} residual {has_res}: "
            f"acc {acc[bad[0]]} M {m[bad[0]]} B {b[bad[0]]} R {r[bad[0]]} res {res[bad[0]]}: "
            f"model {got[bad[0], 0]}, golden {want[bad[0]]}")
    assert ties.min() > 1000, f"seed {seed}: (positive, negative) ties {ties}"


def test_model_accumulates_partial_sums_and_flags_overflow():
    dut = Datapath(lanes=2, acc_width=8)
    psum = np.array([[100, 5], [27, -5], [1, 0], [-50, 0], [-100, 1], [-60, 0], [60, 0],
                     [-1, 3]])
    first = np.array([1, 0, 0, 1, 0, 0, 0, 1], bool)
    last = np.array([0, 1, 1, 0, 0, 0, 1, 1], bool)
    one = np.ones_like(psum)
    val, ovf = dut.model(psum, first, last, one, 0 * one, 0 * one, 0 * one, shift=1, out_bits=8,
                         out_signed=True, has_residual=False)
    # 127 fits; 127 + 1 wraps to -128 (flagged, continues the same sum); -50 - 100 - 60 + 60
    # is -150 in between (flagged) and wraps to 106; -1 + 3 alone is clean.
    acc = np.array([[127, 0], [-128, 0], [106, 1], [-1, 3]])
    assert np.array_equal(val, np.clip((acc + 1) >> 1, -127, 127))
    assert ovf.tolist() == [False, True, True, False]


@pytest.mark.parametrize("lanes,acc_width,psum_width,max_tiles,p_idle,p_ready,seed", [
    (3, 20, 17, 6, 0.3, 0.6, 11),       # multi-tile sums, idle cycles and backpressure
    (1, 48, 48, 1, 0.5, 0.3, 12),       # widest datapath, heavy backpressure
    (2, 16, 16, 3, 0.0, 0.8, 13),       # no idle cycles: backpressure alone
])
def test_rtl_matches_model(lanes, acc_width, psum_width, max_tiles, p_idle, p_ready, seed):
    rng = np.random.default_rng(seed)
    dut = Datapath(lanes=lanes, acc_width=acc_width, psum_width=psum_width)
    layers = []
    for i in range(4):
        config = random_config(rng, sgn=bool(i % 2))
        layers.append((config, make_beats(rng, dut, 40, max_tiles=max_tiles, config=config)))
    outs = simulate(dut, layers, seed=seed, p_idle=p_idle, p_ready=p_ready)
    check_layers(dut, layers, outs, seed)
    # The stimulus reaches signed and unsigned outputs, many values, and rounding ties.
    vals = np.concatenate([v for v, _ in outs]).ravel()
    assert vals.min() < 0 and vals.max() > 1 and len(np.unique(vals)) > 10
    ties = np.array([unsaturated_ties(exact_y(beats, c), c["shift"],
                                      *golden.act_range(c["out_bits"], c["out_signed"]))
                     for c, beats in layers]).sum(0)
    assert ties.min() > 0, f"seed {seed}: (positive, negative) ties {ties}"


def test_rtl_flags_accumulator_overflow():
    seed = 14
    rng = np.random.default_rng(seed)
    dut = Datapath(lanes=2, acc_width=8)
    config = dict(shift=2, out_bits=8, out_signed=True, has_residual=True)
    beats = make_beats(rng, dut, 60, max_tiles=4, config=config, overflow=True)
    outs = simulate(dut, [(config, beats)], seed=seed, p_idle=0.2, p_ready=0.7)
    check_layers(dut, [(config, beats)], outs, seed)
    assert 0 < outs[0][1].sum() < len(outs[0][1])


def raw_beats(rng, dut, results, max_tiles):
    """Beats of a raw (classifier) layer: ``y = acc * M + B`` mostly inside 32 bits, some
    exactly on its limits, some one past them (overflow), and some with M over its whole
    range."""
    lanes = dut.lanes
    tiles = ints(rng, 1, max_tiles, results)
    beats = int(tiles.sum())
    ends = np.cumsum(tiles) - 1
    first, last = np.zeros(beats, bool), np.zeros(beats, bool)
    first[ends - tiles + 1], last[ends] = True, True
    lim = min(srange(dut.psum_width)[1], srange(dut.acc_width)[1] // max_tiles)
    psum = ints(rng, -lim, lim, (beats, lanes))
    u = rng.random((beats, lanes))
    m = np.where(u < 0.6, 1, np.where(u < 0.95, ints(rng, -300, 300, (beats, lanes)),
                                      ints(rng, M_MIN, M_MAX, (beats, lanes))))
    b = ints(rng, -(1 << 20), 1 << 20, (beats, lanes))
    acc = np.add.reduceat(psum, ends - tiles + 1, axis=0)
    lo, hi = srange(LOGIT_BITS)
    target = rng.choice([lo, hi, lo - 1, hi + 1, 0, -12345, 777], (results, lanes))
    pick = rng.random((results, lanes)) < 0.15      # rare, so most results fit
    tied = np.where(pick, target - acc * m[ends], b[ends])
    b[ends] = np.where((tied >= B_MIN) & (tied <= B_MAX), tied, b[ends])
    return dict(psum=psum, first=first, last=last, m=m, b=b, r=np.zeros_like(m),
                res=np.zeros_like(m))


def test_rtl_raw_logits_and_overflow():
    """Raw mode between two normal layers: the logits are ``acc * M + B`` bit for bit, a
    ``y`` past 32 signed bits (one past either limit) sets ``overflow`` and one on a limit does
    not; the normal layers around it are unchanged."""
    seed = 15
    rng = np.random.default_rng(seed)
    dut = Datapath(lanes=3, acc_width=24, psum_width=20)
    raw = dict(shift=0, out_bits=0, out_signed=False, has_residual=False, raw=True)
    layers = []
    for config in (dict(random_config(rng, False), raw=False), raw,
                   dict(random_config(rng, True), raw=False)):
        beats = (raw_beats(rng, dut, 60, 3) if config["raw"] else
                 make_beats(rng, dut, 30, max_tiles=3, config=config))
        layers.append((config, beats))
    outs = simulate(dut, layers, seed=seed, p_idle=0.2, p_ready=0.7)
    check_layers(dut, layers, outs, seed)
    logits, ovf = outs[1]
    assert 0 < ovf.sum() < len(ovf) // 2, ovf
    ok = logits[~ovf]
    lo, hi = srange(LOGIT_BITS)
    assert (ok == lo).any() and (ok == hi).any() and (ok < 0).any(), "limits not reached"
    y = exact_y(layers[1][1], dict(has_residual=False))
    assert np.array_equal(ovf, ((y < lo) | (y > hi)).any(axis=1))


def test_rtl_latency_throughput_and_stall():
    """Back-to-back single-tile beats with the output always ready: one result per cycle, each
    ``latency`` cycles after its beat was taken. Then the output stalls: the pipeline still takes
    ``latency`` beats (empty stages move on), holds them, and hands them all over in order."""
    dut = Datapath(lanes=2, acc_width=16)
    n = 20
    taken, seen = [], []

    async def step(ctx, cycle, valid, ready):
        ctx.set(dut.o_stream.ready, ready)
        ctx.set(dut.i_stream.valid, valid)
        ctx.set(dut.i_stream.payload, {"first": 1, "last": 1, "lanes": [
            {"psum": cycle, "m": 1}, {"psum": 2 * cycle, "m": 1}]})
        _, _, took, out, p = await ctx.tick().sample(
            dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload)
        if took and valid:
            taken.append(cycle)
        if out and ready:
            seen.append((cycle, p.value[0], p.value[1]))

    async def tb(ctx):
        ctx.set(dut.shift, 1)
        ctx.set(dut.out_bits, 8)
        for cycle in range(n + dut.latency + 3):
            await step(ctx, cycle, cycle < n, True)
        for cycle in range(100, 110):
            await step(ctx, cycle, True, False)
        for cycle in range(200, 200 + dut.latency + 3):
            await step(ctx, cycle, False, True)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    stalled = list(range(100, 100 + dut.latency))
    assert taken == list(range(n)) + stalled
    # (c + 1) >> 1 with shift 1: value c/2 rounded half up.
    assert seen == ([(c + dut.latency, (c + 1) >> 1, (2 * c + 1) >> 1) for c in range(n)]
                    + [(200 + i, (c + 1) >> 1, (2 * c + 1) >> 1) for i, c in enumerate(stalled)])


def conv_columns(x, k, stride, pad):
    """(1, C, H, W) -> (pixels, C*k*k), rows ordered as ``weight.reshape(Cout, -1)``."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride,
                                                                            ::stride]
    ho, wo = win.shape[2:4]
    return win[0].transpose(1, 2, 0, 3, 4).reshape(ho * wo, -1), (ho, wo)


@pytest.mark.parametrize("w_bits,a_bits", [(4, 4), (8, 8)])
def test_conv_layers_end_to_end(w_bits, a_bits):
    """Three layers of a small ResNet14 (identity residual, signed shortcut output, signed
    residual), their accumulators split into row tiles of ``rows`` partial sums and the output
    channels into column tiles of ``lanes``, through the RTL; equal to ``golden.run_node``."""
    seed = 20 + w_bits
    spec = nets.NetSpec(arch="resnet14", width=0.0625, blocks=(1, 1, 1), w_bits=w_bits,
                        a_bits=a_bits)
    net, x = random_net(spec, seed, batch=1)
    model = golden.IntModel(*export.to_manifest(net))
    golden.validate(model)
    env = golden.run(model, x.numpy())
    env["input"] = x.numpy().astype(np.int64)
    rows, lanes = 16, 4
    names = ["layer1_0_conv2", "layer2_0_shortcut", "layer2_0_conv2"]
    nodes = [model.node(name) for name in names]
    terms = max(nd["in_channels"] * nd["kernel"] ** 2 for nd in nodes)
    dut = Datapath(lanes=lanes, acc_width=accumulator_width(terms, w_bits, a_bits),
                   psum_width=accumulator_width(rows, w_bits, a_bits))
    layers, shapes = [], []
    for node in nodes:
        name = node["name"]
        inputs = [env[i] for i in node["inputs"]]
        w = model.array(name, "weight").astype(np.int64)
        cout = w.shape[0]
        cols, hw = conv_columns(inputs[0], node["kernel"], node["stride"], node["padding"])
        w = w.reshape(cout, -1)
        row_tiles = [slice(a, a + rows) for a in range(0, w.shape[1], rows)]
        psums = np.stack([cols[:, t] @ w[:, t].T for t in row_tiles], axis=1)  # (px, T, cout)
        assert np.array_equal(psums.sum(1).T.reshape(cout, *hw),
                              golden.conv_acc(inputs[0], model.array(name, "weight"),
                                              node["stride"], node["padding"])[0])
        has_res = len(inputs) > 1
        res = inputs[1][0].reshape(cout, -1).T if has_res else np.zeros_like(psums[:, 0])
        per_channel = {k: np.broadcast_to(model.array(name, a).astype(np.int64), res.shape)
                       for k, a in (("m", "mult"), ("b", "bias"),
                                    ("r", "res_mult" if has_res else "mult"))}
        # Beat order: pixel, column tile, row tile (the sequencer's order for this block).
        beats = {k: [] for k in ("psum", "m", "b", "r", "res", "first", "last")}
        for px in range(psums.shape[0]):
            for c0 in range(0, cout, lanes):
                ch = slice(c0, c0 + lanes)
                for t in range(len(row_tiles)):
                    beats["psum"].append(psums[px, t, ch])
                    beats["first"].append(t == 0)
                    beats["last"].append(t == len(row_tiles) - 1)
                    for k, v in (*per_channel.items(), ("res", res)):
                        beats[k].append(v[px, ch])
        beats = {k: np.array(v) for k, v in beats.items()}
        config = dict(shift=node["shift"], out_bits=node["out_bits"],
                      out_signed=node["out_signed"], has_residual=has_res)
        layers.append((config, beats))
        shapes.append((cout, *hw))
    outs = simulate(dut, layers, seed=seed, p_idle=0.2, p_ready=0.7)
    check_layers(dut, layers, outs, seed)
    for node, (vals, ovf), shape in zip(nodes, outs, shapes):
        hw_out = vals.reshape(-1, shape[0]).T.reshape(shape)   # (px, col tile, lane) rows
        want = golden.run_node(model, node, *(env[i] for i in node["inputs"]))[0]
        assert not ovf.any()
        assert np.array_equal(hw_out, want), f"seed {seed}: layer {node['name']} differs"
        assert np.array_equal(want, env[node["name"]][0])
        assert len(np.unique(want)) > 2, "degenerate layer output"
