# amaranth: UnusedElaboratable=no
"""The sequencer's units (gateware/sequencer/), each alone in the Amaranth simulator, against
their share of the compiler.s functional model (compiler.execute) and of the cycle model
(compiler.cycles). Random inputs from a printed seed (CIM_TEST_SEED)."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

import compiler
from compiler import cycles
from contract import program as fmt
from contract.arith import MAX_SHIFT
from contract.config import HwConfig, get_config
from contract.program import DESC_WORDS, PARAM_WORDS, Descriptor, check_descriptor
from contract.timing import CHECK_LATENCY
from gateware.cim_macro import CIMMacro
from gateware.datapath import Datapath
from gateware.sequencer import (
    AccelError,
    Collector,
    Fetcher,
    Issuer,
    MacroUnit,
    ResidualReader,
    WeightLoader,
    Writer,
)
from model import golden
from sim.seed import test_seed

SEED = test_seed()
TINY = get_config("tiny")
# Five macros, four columns, four rows per beat: copies of 2 and 3, lanes within a word.
ODD = HwConfig(name="odd", rows=16, cols=4, w_bits=4, a_bits=4, macros=5, write_rows=4,
               bank_words=1024, max_planes=12, image_channels=2, image_size=8,
               im2col_kernel=3)
CONFIGS = {"tiny": TINY, "odd": ODD}
BAW = {name: (c.bank_words - 1).bit_length() for name, c in CONFIGS.items()}


def _sl(bits, ab):
    return -(-bits // ab)


def make_desc(rng, cfg, **kw):
    """A random valid descriptor (the derived fields as the compiler sets them)."""
    R, C = cfg.rows, cfg.cols
    H = int(kw.pop("in_height", rng.integers(1, 7)))
    W = int(kw.pop("in_width", rng.integers(1, 7)))
    # A kernel and padding that fit the input (k <= size + 2 p, p <= k // 2).
    k = int(kw.pop("kernel", rng.choice([k for k in (1, 3, 5) if k <= min(H, W) + k // 2 * 2])))
    s = int(kw.pop("stride", rng.choice([1, 2])))
    p = int(kw.pop("padding", rng.integers(max(0, -(-(k - min(H, W)) // 2)), k // 2 + 1)))
    G = int(kw.pop("in_groups", rng.integers(1, 3)))
    cout = int(kw.pop("out_channels", rng.integers(1, 2 * R + 1)))
    out_bits = int(kw.pop("out_bits", rng.choice([4, 8])))
    has_res = int(kw.pop("has_residual", rng.integers(0, 2)))
    res_bits = int(kw.pop("res_bits", rng.choice([4, 8]) if has_res else 0))
    in_bits = int(kw.pop("in_bits", rng.integers(1, cfg.in_bits_max + 1)))
    # Wide weights (three weight slices) where the planes allow them.
    wide = cfg.w_bits > 1 and in_bits + cfg.w_bits <= cfg.planes_max and rng.random() < 0.5
    w_bits = int(kw.pop("w_bits", rng.integers(cfg.w_bits + 1, cfg.w_bits_max + 1) if wide
                        else rng.integers(1, cfg.w_bits + 1)))
    n_sw = 3 if w_bits > cfg.w_bits else 1
    J, T = -(-cout // C), n_sw * k * k * G
    fields = dict(
        kernel=k, stride=s, padding=p, relu=int(out_bits == 4), out_signed=int(out_bits == 8),
        out_bits=out_bits, shift=int(rng.integers(1, MAX_SHIFT + 1)), has_residual=has_res,
        res_signed=int(has_res and rng.integers(0, 2)), res_bits=res_bits, last=0,
        in_bits=in_bits, w_bits=w_bits, op=0, raw=0,
        in_height=H, in_width=W, in_groups=G, out_height=(H + 2 * p - k) // s + 1,
        out_width=(W + 2 * p - k) // s + 1, out_groups=-(-cout // R), in_channels=G * R,
        out_channels=cout, col_tiles=J, row_tiles=T, weight_tiles=J * T,
        in_base=int(rng.integers(0, 64)), out_base=cfg.bank_words + int(rng.integers(0, 64)),
        res_base=int(rng.integers(0, 64)) if has_res else 0,
        weight_base=int(rng.integers(0, 50)), param_base=C * int(rng.integers(0, 20)))
    fields.update(kw)
    assert fields["out_height"] > 0 and fields["out_width"] > 0, fields
    return Descriptor(**fields)


def desc_int(d):
    return sum(w << (32 * i) for i, w in enumerate(d.pack()))


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def set_ctrl(ctx, ctrl, d, cfg, *, busy=1):
    ab = cfg.a_bits
    out_sl = _sl(d.out_bits, ab)
    res_sl = _sl(d.res_bits, ab) if d.has_residual else 0
    ctx.set(ctrl.busy, busy)
    ctx.set(ctrl.desc.as_value(), desc_int(d))
    ctx.set(ctrl.pixels, d.out_height * d.out_width)
    ctx.set(ctrl.out_sl, out_sl)
    ctx.set(ctrl.res_sl, res_sl)
    ctx.set(ctrl.out_pitch, d.out_groups * out_sl)
    ctx.set(ctrl.res_pitch, d.out_groups * res_sl)
    ctx.set(ctrl.param_row, d.param_base // cfg.cols)


# ----------------------------------------------------------------------------- fetcher


def make_pool_desc(rng, cfg, **kw):
    """A random valid max-pooling descriptor (op 1), as the compiler sets it."""
    R = cfg.rows
    H, W = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    k = int(rng.integers(1, min(H, W) + 1))
    s = int(rng.choice([1, 2]))
    p = int(rng.integers(0, min(k - 1, 3) + 1))
    G = int(rng.integers(1, 3))
    c = int(rng.integers((G - 1) * R + 1, G * R + 1))
    bits = int(rng.integers(1, cfg.a_bits + 1))
    zero = {f.name: 0 for f in fmt.FIELDS}
    fields = {**zero, "op": 1, "kernel": k, "stride": s, "padding": p, "relu": 1,
              "out_bits": bits, "in_bits": bits, "in_height": H, "in_width": W,
              "in_groups": G, "out_height": (H + 2 * p - k) // s + 1,
              "out_width": (W + 2 * p - k) // s + 1, "out_groups": G, "in_channels": c,
              "out_channels": c, "in_base": int(rng.integers(0, 64)),
              "out_base": cfg.bank_words + int(rng.integers(0, 64))}
    fields.update(kw)
    return Descriptor(**fields)


def make_im2col_desc(rng, cfg, **kw):
    """A random valid im2col descriptor (op 2), as the compiler sets it (on a configuration
    without an image buffer the check answers OP)."""
    K, R = cfg.im2col_kernel, cfg.rows
    size = cfg.image_size if cfg.image_channels else 8
    H, W = int(rng.integers(1, size + 1)), int(rng.integers(1, size + 1))
    k = int(rng.choice([k for k in range(1, K + 1) if k <= min(H, W)]))
    s = int(rng.choice([1, 2]))
    p = int(rng.integers(0, min(k // 2, 3) + 1))
    c = int(rng.integers(1, max(cfg.image_channels, 1) + 1))
    bits = int(rng.integers(1, 9))
    zero = {f.name: 0 for f in fmt.FIELDS}
    fields = {**zero, "op": 2, "kernel": k, "stride": s, "padding": p, "relu": 1,
              "out_bits": bits, "in_bits": bits, "in_height": H, "in_width": W,
              "in_groups": 1, "out_height": (H + 2 * p - k) // s + 1,
              "out_width": (W + 2 * p - k) // s + 1, "out_groups": -(-c * K * K // R),
              "in_channels": c, "out_channels": c * K * K,
              "out_base": int(rng.integers(0, 2)) * cfg.bank_words + int(rng.integers(0, 64))}
    fields.update(kw)
    return Descriptor(**fields)


def make_raw_desc(rng, cfg, **kw):
    """A random valid raw (classifier) descriptor: one output pixel, one column tile,
    last."""
    H = int(rng.integers(1, 4))
    k = int(rng.choice([k for k in (1, 3, 5) if k >= H]))
    p = (k - H + 1) // 2
    s = 2 if H + 2 * p - k >= 1 else int(rng.choice([1, 2]))
    fields = dict(kernel=k, stride=s, padding=p, in_height=H, in_width=H,
                  out_channels=int(rng.integers(1, cfg.cols + 1)), relu=0, out_signed=0,
                  out_bits=0, shift=0, has_residual=0, res_bits=0, res_signed=0, res_base=0,
                  raw=1, last=1, out_base=0)
    fields.update(kw)
    d = make_desc(rng, cfg, **fields)
    assert (d.out_height, d.out_width) == (1, 1), d
    return d


def run_fetcher(cfg, program, rng, *, prog_words=64, **kw):
    return run_fetcher_words(cfg, [w for d in program for w in d.pack()], rng,
                             prog_words=prog_words, count=len(program), **kw)


def run_fetcher_words(cfg, words, rng, *, prog_words=64, count=1, idle=0, rewrite=None):
    """The fetcher on program memory ``words``: (cycle, descriptor, code) of every offer taken,
    under random backpressure, cycles counted from ``go``. ``idle``: cycles from reset to
    ``go``; ``rewrite``: ``(cycle, words)``, a write to program memory in that idle cycle
    (``prog_written``) after which memory holds ``words``."""
    rec_cap = cfg.param_words // PARAM_WORDS
    dut = Fetcher(prog_words=prog_words, rows=cfg.rows, cols=cfg.cols, a_bits=cfg.a_bits,
                  w_bits=cfg.w_bits, planes=cfg.planes_max,
                  bank_words=cfg.bank_words, max_size=cfg.max_size,
                  max_groups=cfg.max_groups, max_pixels=cfg.max_pixels, macros=cfg.macros,
                  weight_rows=cfg.weight_rows, rec_cap=rec_cap, image_channels=cfg.image_channels,
                  image_size=cfg.image_size, im2col_kernel=cfg.im2col_kernel)
    words = list(words)[:prog_words]
    words += [0] * (prog_words - len(words))
    got = []

    def fill(ws):
        ws = list(ws)[:prog_words]
        return ws + [0] * (prog_words - len(ws))

    async def bench(ctx):
        nonlocal words
        for n in range(idle):
            write = rewrite is not None and n == rewrite[0]
            ctx.set(dut.prog_written, write)
            addr = ctx.get(dut.prog.addr)
            await ctx.tick()
            ctx.set(dut.prog_written, 0)
            # A read of this cycle returns the old word (not transparent); the write lands.
            ctx.set(dut.prog.data, words[addr] if addr < prog_words else 0)
            if write:
                words = fill(rewrite[1])
        ctx.set(dut.go, 1)
        addr = ctx.get(dut.prog.addr)
        await ctx.tick()
        ctx.set(dut.go, 0)
        ctx.set(dut.prog.data, words[addr] if addr < prog_words else 0)
        for n in range(1, 40 * count + 40):
            addr = ctx.get(dut.prog.addr)
            ready = int(rng.random() < 0.6)
            ctx.set(dut.descriptors.ready, ready)
            if ready and ctx.get(dut.descriptors.valid):
                raw = ctx.get(dut.descriptors.payload.desc.as_value())
                got.append((n, Descriptor.unpack([(raw >> (32 * i)) & 0xFFFF_FFFF
                                                  for i in range(DESC_WORDS)]),
                            AccelError(ctx.get(dut.descriptors.payload.code))))
            await ctx.tick()
            ctx.set(dut.prog.data, words[addr] if addr < prog_words else 0)

    simulate(dut, bench)
    return got, (cfg.weight_rows, rec_cap)


@pytest.fixture(scope="module")
def digits_program():
    return compiler.compile_model(golden.load("models/digits_cnn_w4a4.npz"), TINY)


def test_fetcher_compiled_program(digits_program):
    """The compiler's descriptors (the digits model on tiny) pass the check and come out in
    order, under random backpressure; nothing after the last one."""
    rng = np.random.default_rng(SEED)
    got, _ = run_fetcher(TINY, digits_program.descriptors, rng)
    assert [d for _, d, _ in got] == digits_program.descriptors, f"seed {SEED}"
    assert all(c == AccelError.NONE for _, _, c in got), f"seed {SEED}: {got}"


class _Always:
    def random(self):
        return 0.0


@pytest.mark.parametrize("idle", [0, 1, 5, *range(cycles.FETCH - 3, cycles.FETCH + 2), 40])
def test_fetcher_first_offer(idle):
    """With the consumer always ready, descriptor 0 is offered (and taken) the cycle after go
    once the fetcher has had FETCH = DESC_WORDS + 2 + CHECK_LATENCY idle cycles to prefetch
    it (compiler.cycles.FIRST_DESC), FETCH cycles after a go straight out of reset, and in
    between when the prefetch is under way; descriptor 1 is read after it is taken."""
    rng = np.random.default_rng(SEED)
    d0 = make_desc(rng, TINY)
    d1 = make_desc(rng, TINY, last=1)
    got, _ = run_fetcher(TINY, [d0, d1], _Always(), idle=idle)
    fetch = DESC_WORDS + 2 + CHECK_LATENCY
    first = max(1, fetch - idle)
    assert [(n, x) for n, x, _ in got] == [(first, d0), (first + fetch, d1)], \
        f"seed {SEED}: {got}"
    assert fetch == cycles.FETCH and cycles.FIRST_DESC == 1 == cycles.FIRST_READY - 3


@pytest.mark.parametrize("when", [0, 3, 12, 16, 17, 18, 30, 33])
def test_fetcher_prefetch_is_discarded_on_a_program_write(when):
    """A write to program memory while descriptor 0 is prefetched (under way or done) makes
    the fetcher read it again: the descriptor offered is the new one, from the cycle after go
    if the new read ended before it."""
    rng = np.random.default_rng(SEED)
    old, new = make_desc(rng, TINY, last=1), make_desc(rng, TINY, last=1)
    assert old != new
    idle = 34
    got, _ = run_fetcher(TINY, [old], _Always(), idle=idle, rewrite=(when, new.pack()))
    first = max(1, cycles.FETCH - (idle - when - 1))
    assert [(n, x) for n, x, _ in got] == [(first, new)], f"seed {SEED}: {got}"


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
def test_fetcher_check_codes(cfg):
    """Random mutations of valid descriptors (convolutions, max poolings, im2col and raw
    classifier layers): the code is the reference check's, and the fetcher stops after the
    first failed one (or the one with last)."""
    cfg = CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    names = [f.name for f in fmt.FIELDS]
    bits = {f.name: f.bits for f in fmt.FIELDS}
    makers = (make_pool_desc, make_im2col_desc, make_raw_desc, make_desc, make_desc)
    for trial in range(80):
        prog = [makers[int(rng.integers(0, len(makers)))](rng, cfg) for _ in range(3)]
        bad = int(rng.integers(0, 3))
        name = names[int(rng.integers(0, len(names)))]
        val = int(rng.integers(0, 1 << min(bits[name], 12)))
        if rng.random() < 0.5:      # near misses
            val = max(0, getattr(prog[bad], name) + int(rng.choice([-1, 1])))
            val = min(val, (1 << bits[name]) - 1)
        prog[bad] = dataclasses.replace(prog[bad], **{name: val})
        prog[-1] = dataclasses.replace(prog[-1], last=1)
        got, _ = run_fetcher(cfg, prog, rng)
        want = []
        for d in prog:
            want.append((d, AccelError(check_descriptor(d, cfg))))
            if d.last or want[-1][1] != AccelError.NONE:
                break
        assert [(d, c) for _, d, c in got] == want, (
            f"seed {SEED} trial {trial}: {name}={val} in descriptor {bad}")


def _field_cases():
    """(name, changes, code): one field made to disagree with the others (issue 12's list)."""
    BW = TINY.bank_words
    return [
        ("relu with out_signed", dict(relu=1, out_signed=1, out_bits=8), AccelError.FORMAT),
        ("no relu, unsigned", dict(relu=0, out_signed=0, out_bits=4), AccelError.FORMAT),
        ("res_bits, no residual", dict(has_residual=0, res_base=0, res_signed=0, res_bits=4),
         AccelError.FORMAT),
        ("res_base, no residual", dict(has_residual=0, res_bits=0, res_signed=0, res_base=7),
         AccelError.FORMAT),
        ("1-bit signed residual", dict(res_signed=1, res_bits=1), AccelError.FORMAT),
        ("in_channels 0", dict(in_channels=0), AccelError.CHANNELS),
        ("in_channels over the groups", dict(in_channels=2 * 16 + 1), AccelError.CHANNELS),
        ("in_channels fill a group less", dict(in_channels=16), AccelError.CHANNELS),
        ("an empty output group", dict(out_groups=3), AccelError.CHANNELS),
        ("an empty column tile", dict(col_tiles=4, weight_tiles=4 * 9 * 2), AccelError.TILES),
        ("input past the buffer", dict(in_base=2 * BW), AccelError.ADDRESS),
        ("input across its bank's end", dict(in_base=BW - 10), AccelError.ADDRESS),
        ("output past the buffer", dict(out_base=2 * BW + 3), AccelError.ADDRESS),
        ("output over its input", dict(out_base=3), AccelError.ADDRESS),
        ("output in its input's bank", dict(out_base=200), AccelError.ADDRESS),
        ("residual past the buffer", dict(res_base=2 * BW), AccelError.ADDRESS),
        ("residual over the output", dict(res_base=BW + 20), AccelError.ADDRESS),
        ("residual across its bank's end", dict(res_base=BW - 4), AccelError.ADDRESS),
    ]


@pytest.mark.parametrize("name,changes,code", _field_cases(), ids=[c[0] for c in _field_cases()])
def test_fetcher_field_checks(name, changes, code):
    """Each field that must agree with the others, or keep a tensor inside its bank and away
    from the output, is checked: the reference check and the RTL give the same code."""
    rng = np.random.default_rng(SEED)
    d = make_desc(rng, TINY, kernel=3, stride=1, padding=1, in_height=4, in_width=4,
                  in_groups=2, out_channels=20, out_bits=4, has_residual=1, res_bits=4,
                  in_base=0, out_base=TINY.bank_words + 16, res_base=100, last=1)
    assert check_descriptor(d, TINY) == fmt.ErrorCode.NONE
    bad = dataclasses.replace(d, **changes)
    assert AccelError(check_descriptor(bad, TINY)) == code, name
    got, _ = run_fetcher(TINY, [bad], rng)
    assert [c for _, _, c in got] == [code], f"seed {SEED}: {name}: {got}"


def test_fetcher_reserved_bits():
    """A descriptor with a reserved bit set (one no field covers) is refused with FORMAT."""
    rng = np.random.default_rng(SEED)
    d = make_desc(rng, TINY, last=1)
    spare = fmt.reserved_bits([0xFFFF_FFFF] * DESC_WORDS)
    assert spare, "the layout has no reserved bits to test"
    bits = [b for b in range(32 * DESC_WORDS) if spare >> b & 1]
    for b in (bits[0], bits[-1], int(rng.choice(bits))):
        words = d.pack()
        words[b // 32] |= 1 << (b % 32)
        assert fmt.check_words(words, TINY) == fmt.ErrorCode.FORMAT
        got, _ = run_fetcher_words(TINY, words, rng)
        assert [c for _, _, c in got] == [AccelError.FORMAT], f"seed {SEED}: bit {b}: {got}"


def test_fetcher_runs_off_the_program():
    """No last descriptor: one more offer with PROGRAM after the descriptors that fit."""
    rng = np.random.default_rng(SEED)
    prog = [make_desc(rng, TINY) for _ in range(2)]
    got, _ = run_fetcher(TINY, prog, rng, prog_words=2 * DESC_WORDS + 3)
    assert [c for _, _, c in got] == [AccelError.NONE, AccelError.NONE, AccelError.PROGRAM], (
        f"seed {SEED}: {got}")


# ----------------------------------------------------------------------------- loader


def tile_fields(d, cfg, row, t):
    """(beat address, kh, kw, window offset, shift) of row tile t in weight row ``row`` of the
    layer: the bank address of the row (contract.program: every macro of a round reads the
    round's row of its own bank), the compiler's tile order (t = (kh * k + kw) * G + cg) and
    address formula (word ((y * W + x) * G + cg) * S, relative to the window's corner)."""
    k, G, W = d.kernel, d.in_groups, d.in_width
    sw, rest = divmod(t, k * k * G)
    kh, rest = divmod(rest, k * G)
    kw, cg = divmod(rest, G)
    shift = fmt.slice_shifts(cfg)[sw] if fmt.weight_slices(d.w_bits, cfg) > 1 else 0
    return ((d.weight_base + row) * cfg.write_cycles, kh, kw,
            ((kh * W + kw) * G + cg) * _sl(d.in_bits, cfg.a_bits), shift)


def expected_tiles(d, cfg):
    """Per macro, the tiles it gets, in order: compiler.cycles' rounds and copies (macro i of a
    round of ``group`` row tiles from tb holds row tile tb + i mod group), round r from the
    layer's weight row r."""
    M = cfg.macros
    cp = fmt.copies(d, cfg)
    rounds = cycles._rounds(d, cfg, cp)
    per_col = len(rounds) // d.col_tiles
    assert len(rounds) == fmt.weight_rows(d.col_tiles, d.row_tiles, cfg)
    out = [[] for _ in range(M)]
    for r, (macros, _) in enumerate(rounds):
        tb = r % per_col
        for i in range(macros):
            out[i].append(tile_fields(d, cfg, r, tb * M + i % (macros // cp)))
    return out


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
def test_loader_tiles(cfg):
    """Each macro gets its tiles in order (random backpressure per macro), at most two
    macros per cycle and i, i + 1 together when both are free; every descriptor, failed ones
    too, goes on to the issuer; a failed one is not walked."""
    name, cfg = cfg, CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    M = cfg.macros
    layers = [make_desc(rng, cfg, in_height=3, in_width=3) for _ in range(4)]
    codes = [AccelError.NONE, AccelError.NONE, AccelError.TILES, AccelError.NONE]
    dut = WeightLoader(macros=M, a_bits=cfg.a_bits, w_bits=cfg.w_bits, planes=cfg.planes_max,
                       write_cycles=cfg.write_cycles,
                       addr_width=BAW[name])
    got = [[] for _ in range(M)]
    passed = []
    per_cycle = []

    async def bench(ctx):
        ctx.set(dut.layers.ready, 1)
        k = 0
        for _ in range(3000):
            ctx.set(dut.descriptors.valid, k < len(layers))
            if k < len(layers):
                ctx.set(dut.descriptors.payload.desc.as_value(), desc_int(layers[k]))
                ctx.set(dut.descriptors.payload.code, codes[k])
            readies = [int(rng.random() < 0.5) for _ in range(M)]
            for t, r in zip(dut.tiles, readies):
                ctx.set(t.ready, r)
            if k < len(layers) and ctx.get(dut.descriptors.ready):
                k += 1
            took = []
            for i, t in enumerate(dut.tiles):
                if ctx.get(t.valid) and readies[i]:
                    p = ctx.get(t.payload)
                    got[i].append((p.addr, p.kh, p.kw, p.off, p.shift))
                    took.append(i)
            per_cycle.append(took)
            if ctx.get(dut.layers.valid):
                passed.append(AccelError(ctx.get(dut.layers.payload.code)))
            await ctx.tick()

    simulate(dut, bench)
    want = [[] for _ in range(M)]
    for d, c in zip(layers, codes):
        if c == AccelError.NONE:
            for i, tiles in enumerate(expected_tiles(d, cfg)):
                want[i] += tiles
    assert got == want, f"seed {SEED}"
    assert passed == codes, f"seed {SEED}"
    assert all(len(t) <= 2 and (len(t) < 2 or t[1] == t[0] + 1) for t in per_cycle)


# ----------------------------------------------------------------------------- macro unit


@pytest.mark.parametrize("bits,shift,planes", [(4, 0, 4), (1, 0, 1), (3, 0, 3), (8, 0, 8),
                                               (8, 4, 12), (8, 0, 12), (8, 3, 12), (3, 4, 7)])
def test_macro_unit(bits, shift, planes):
    """Tile load (beats from the weight store to the macro, ``loaded`` after wc + 3 cycles),
    round switch, lockstep read (address and padding by the compiler's formula; an input of
    more than ``a_bits`` bits as its slice words, the top one first, each read as the last
    plane of the one above is fed), ``bits`` bit-planes MSB first with commit on the first,
    and the next tile loading from the commit on (compiler.cycles.LOAD_LATENCY). A tile of a
    layer with wide weights feeds ``planes`` planes: the input shifted left by its ``shift``,
    zeros around it."""
    cfg = ODD
    rng = np.random.default_rng(SEED)
    R, ab, wc, baw = cfg.rows, cfg.a_bits, cfg.write_cycles, BAW["odd"]
    mac = CIMMacro(**cfg.macro_params())
    bw = fmt.beat_words(cfg)
    dut = MacroUnit(index=2, macros=cfg.macros, rows=R, a_bits=ab, planes=cfg.planes_max,
                    write_cycles=wc, addr_width=baw, weight_addr_width=8, weight_width=bw * 32,
                    input_layout=mac.input_layout, write_layout=mac.write_layout)
    sl = -(-bits // ab)
    wmem = [int(v) for v in rng.integers(0, 1 << 32, 256, dtype=np.uint64)]
    amem = {}
    wlen = len(mac.write.payload.w.as_value())
    log = {"writes": [], "loaded": [], "feed": [], "reads": []}
    tiles = [(40, 1, 2, 9, shift), (80, 0, 1, 5, shift)]
    # Macro 2 is in the groups of pixels 0 and 1, not 2; pixel 0's tap is in the padding.
    pixels = [dict(first=1, count=2, y=-2, x=1, addr=100, bank=1, height=5, width=4),
              dict(first=2, count=1, y=3, x=0, addr=1020, bank=0, height=5, width=4),
              dict(first=0, count=2, y=0, x=0, addr=7, bank=0, height=5, width=4)]
    for px in pixels:
        px["bits"], px["planes"] = bits, planes

    async def bench(ctx):
        cyc = 0
        plan = {2: ("tile", 0), 5: ("tile", 1), 30: ("round", None), 32: ("issue", 0),
                32 + planes: ("issue", 1), 32 + 2 * planes: ("issue", 2)}
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        for cyc in range(1, 80):
            what, arg = plan.get(cyc, (None, None))
            ctx.set(dut.tile.valid, what == "tile")
            if what == "tile":
                assert ctx.get(dut.tile.ready)
                a, kh, kw, off, sh = tiles[arg]
                ctx.set(dut.tile.payload, {"addr": a, "kh": kh, "kw": kw, "off": off,
                                           "shift": sh})
            ctx.set(dut.issue.round, what == "round")
            ctx.set(dut.issue.macros, 3)
            ctx.set(dut.issue.valid, what == "issue")
            if what == "issue":
                for k, v in pixels[arg].items():
                    ctx.set(getattr(dut.issue, k), v)
            waddr, wen = ctx.get(dut.weights.addr), ctx.get(dut.weights.en)
            aaddr, aen, apad = ctx.get(dut.act.addr), ctx.get(dut.act.en), ctx.get(dut.act.pad)
            if aen:
                log["reads"].append((cyc, aaddr, apad))
            if ctx.get(dut.write.valid):
                log["writes"].append((cyc, ctx.get(dut.write.payload.addr),
                                      ctx.get(dut.write.payload.w.as_value())))
            log["loaded"].append((cyc, ctx.get(dut.loaded)))
            if ctx.get(dut.feed.valid):
                f = ctx.get(dut.feed.payload)
                log["feed"].append((cyc, f.plane, f.last, f.commit))
            await ctx.tick()
            if wen:
                ctx.set(dut.weights.data, wmem[waddr])
            if aen:
                word = amem.setdefault(aaddr, int.from_bytes(rng.bytes(R * ab // 8), "little"))
                ctx.set(dut.act.data.as_value(), 0 if apad else word)

    simulate(dut, bench)
    mask = (1 << wlen) - 1
    t0 = 2                                  # tile 0 transferred in cycle 2
    want = [(t0 + 3 + b, b, wmem[40 + b] & mask) for b in range(wc)]
    issue0 = 32                             # tile 1 loads after the commit of issue 0
    want += [(issue0 + 3 + b, b, wmem[80 + b] & mask) for b in range(wc)]
    assert log["writes"] == want, f"seed {SEED}"
    rise = [c for (_, a), (c, b) in zip(log["loaded"], log["loaded"][1:]) if b and not a]
    assert rise == [t0 + wc + 3, issue0 + wc + cycles.LOAD_LATENCY], rise
    kh, kw, off = 1, 2, 9
    reads, feed = [], []
    for c, px in zip((32, 32 + planes, 32 + 2 * planes), pixels):
        if not px["first"] <= 2 < px["first"] + px["count"]:
            continue
        y, x = px["y"] + kh, px["x"] + kw
        pad = int(not (0 <= y < px["height"] and 0 <= x < px["width"]))

        def addr(s, px=px):
            return ((px["addr"] + off + s) % (1 << baw)) | (px["bank"] << baw)
        # Slice sl - 1 at the issue, slice s - 1 as input bit s * ab (slice s's last) is fed
        # (plane s * ab + shift, in cycle c + planes - plane).
        reads += [(c, addr(sl - 1), pad)]
        reads += [(c + planes - (s * ab + shift), addr(s - 1), pad)
                  for s in reversed(range(1, sl))]
        for b in reversed(range(planes)):
            j = b - shift
            word = 0 if pad or not 0 <= j < bits else amem[addr(j // ab)]
            plane = sum(((word >> (r * ab + j % ab)) & 1) << r for r in range(R))
            feed.append((c + planes - b, plane, int(b == 0),
                         int(not feed and b == planes - 1)))
    assert log["reads"] == reads, f"seed {SEED}"
    assert log["feed"] == feed, f"seed {SEED}"


# ----------------------------------------------------------------------------- issuer


def expected_rounds(d, cfg):
    """Per round: (macros, group, length, [(cycle of the slot, group g, pixel)]) from
    compiler.cycles: copies, rounds, slot length L, group g at g * sp of its slot."""
    ab, pl = cfg.a_bits, fmt.planes(d, cfg)
    cp = fmt.copies(d, cfg)
    sp = max(_sl(d.out_bits, ab), _sl(d.res_bits, ab) if d.has_residual else 0)
    P = d.out_height * d.out_width
    out = []
    for macros, final in cycles._rounds(d, cfg, cp):
        L = max(pl, cp * sp) if final else pl
        issues = [(pix // cp * L + pix % cp * sp, pix % cp, pix) for pix in range(P)]
        out.append((macros, macros // cp, -(-P // cp) * L, issues))
    return out


def run_issuer(cfg, layers, rng, *, credit_rate=1.0, loaded_rate=1.0):
    name = cfg.name
    M = cfg.macros
    dut = Issuer(macros=M, cols=cfg.cols, a_bits=cfg.a_bits, w_bits=cfg.w_bits,
                 planes=cfg.planes_max,
                 addr_width=BAW[name], param_rows=cfg.param_words // (PARAM_WORDS * cfg.cols))
    ev = {"switch": [], "issue": [], "take": [], "start": [], "credits": 0, "done": None}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        k, drain = 0, None
        for n in range(1, 20000):
            ctx.set(dut.layers.valid, k < len(layers))
            if k < len(layers):
                ctx.set(dut.layers.payload.desc.as_value(), desc_int(layers[k]))
            if ctx.get(dut.layers.ready) and k < len(layers):
                ev["take"].append(n)
                k += 1
            ctx.set(dut.loaded, sum(int(rng.random() < loaded_rate) << i for i in range(M)))
            ctx.set(dut.residuals.valid, int(rng.random() < credit_rate))
            ctx.set(dut.layer_done, drain == n)
            iss = dut.issue
            if ctx.get(dut.ctrl.start):
                c = dut.ctrl
                ev["start"].append((n, ctx.get(c.pixels), ctx.get(c.out_pitch),
                                    ctx.get(c.res_pitch), ctx.get(c.param_row)))
            if ctx.get(iss.round):
                assert all((ctx.get(dut.loaded) >> i) & 1 for i in range(ctx.get(iss.macros)))
                ev["switch"].append((n, ctx.get(iss.macros), ctx.get(iss.count)))
            if ctx.get(iss.valid):
                ev["issue"].append((n, ctx.get(iss.first), ctx.get(iss.count), ctx.get(iss.y),
                                    ctx.get(iss.x), ctx.get(iss.addr), ctx.get(iss.bank)))
                if ctx.get(dut.residuals.ready):
                    assert ctx.get(dut.residuals.valid)
                    ev["credits"] += 1
                drain = n + 18      # the writer's last word, after the slot (<= 16 cycles)
            if ctx.get(dut.done):
                ev["done"] = (n, ctx.get(dut.error), AccelError(ctx.get(dut.error_code)))
                break
            await ctx.tick()

    simulate(dut, bench)
    return ev


def check_walk(d, cfg, issues):
    """The pixels of a round in raster order, their window corners and buffer addresses by
    the compiler's formula (base + (y * W + x) * G * S, in the input's bank)."""
    bank = cfg.bank_words
    for pix, (_, _, _, y, x, addr, b) in enumerate(issues):
        oy, ox = divmod(pix, d.out_width)
        yy, xx = oy * d.stride - d.padding, ox * d.stride - d.padding
        assert (y, x) == (yy, xx), (pix, y, x)
        sl = _sl(d.in_bits, cfg.a_bits)
        assert addr == (d.in_base + (yy * d.in_width + xx) * d.in_groups * sl) % bank, pix
        assert b == d.in_base // bank


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
def test_issuer_schedule(cfg):
    """Tiles always loaded, residuals always there: issue cycles, groups, rounds and the
    layer start exactly as compiler.cycles has them (LAYER_START, ROUND_GAP, slot length,
    copies)."""
    cfg = CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    layers = [make_desc(rng, cfg, in_height=3, in_width=3, in_groups=1) for _ in range(3)]
    layers[-1] = dataclasses.replace(layers[-1], last=1)
    ev = run_issuer(cfg, layers, rng)
    assert ev["done"][1:] == (0, AccelError.NONE), f"seed {SEED}: {ev['done']}"
    sw, iss = ev["switch"], ev["issue"]
    for li, (d, take) in enumerate(zip(layers, ev["take"])):
        ab = cfg.a_bits
        rounds = expected_rounds(d, cfg)
        out_sl = _sl(d.out_bits, ab)
        res_sl = _sl(d.res_bits, ab) if d.has_residual else 0
        st = [s for s in ev["start"] if s[0] > take][0]
        assert st[1:] == (d.out_height * d.out_width, d.out_groups * out_sl,
                          d.out_groups * res_sl, d.param_base // cfg.cols), f"seed {SEED}"
        assert sw[0][0] - take == cycles.LAYER_START, f"seed {SEED} layer {li}"
        for r, (macros, group, length, want) in enumerate(rounds):
            t0 = sw[0][0] + 1
            assert sw[0][1:] == (macros, group), f"seed {SEED} layer {li} round {r}"
            got = iss[:len(want)]
            assert [(n - t0, first // group, p) for p, (n, first, *_) in enumerate(got)] == \
                want, f"seed {SEED} layer {li} round {r}"
            assert all(c == group for _, _, c, *_ in got)
            check_walk(d, cfg, got)
            del iss[:len(want)]
            sw = sw[1:]
            if sw and r + 1 < len(rounds):
                # First issue to first issue of the next round: the round and the gap.
                assert sw[0][0] + 1 - t0 == length + cycles.ROUND_GAP, (
                    f"seed {SEED} layer {li} round {r}")
    assert not iss and not sw


def test_issuer_waits():
    """Tiles and residuals arrive at random: a round starts only with its tiles loaded, a
    final-round pixel only with a credit (one per pixel and column tile), and the pixels
    and rounds are still all there, in order."""
    cfg = ODD
    rng = np.random.default_rng(SEED)
    layers = [make_desc(rng, cfg, in_height=3, in_width=3, has_residual=1, last=1)]
    d = layers[0]
    ev = run_issuer(cfg, layers, rng, credit_rate=0.3, loaded_rate=0.7)
    rounds = expected_rounds(d, cfg)
    assert [s[1:] for s in ev["switch"]] == [r[:2] for r in rounds], f"seed {SEED}"
    assert len(ev["issue"]) == sum(len(r[3]) for r in rounds)
    assert ev["credits"] == d.out_height * d.out_width * d.col_tiles, f"seed {SEED}"


def test_issuer_error():
    """A descriptor with a failed check stops the program with its code."""
    rng = np.random.default_rng(SEED)
    d = make_desc(rng, TINY)
    dut = Issuer(macros=2, cols=8, a_bits=4, w_bits=4, planes=4, addr_width=12, param_rows=32)
    out = {}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.layers.valid, 1)
        ctx.set(dut.layers.payload.desc.as_value(), desc_int(d))
        ctx.set(dut.layers.payload.code, AccelError.SIZE)
        for n in range(10):
            if ctx.get(dut.done):
                out.update(n=n, error=ctx.get(dut.error), code=ctx.get(dut.error_code),
                           busy=ctx.get(dut.busy))
                break
            await ctx.tick()

    simulate(dut, bench)
    # NEXT takes it, CHECK, STOP, done.
    assert out == dict(n=3, error=1, code=AccelError.SIZE, busy=0), out


# ----------------------------------------------------------------------------- residuals


def random_buffer(rng, cfg):
    """A random buffer image (1, 2 * bank_words, rows) of a_bits lanes, and its words."""
    mem = rng.integers(0, 1 << cfg.a_bits, (1, 2 * cfg.bank_words, cfg.rows))
    words = [sum(int(v) << (cfg.a_bits * r) for r, v in enumerate(w)) for w in mem[0]]
    return mem, words


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
@pytest.mark.parametrize("res_bits,signed_", [(4, 0), (8, 1), (8, 0)])
def test_residual_reader(cfg, res_bits, signed_):
    """Every pixel's residuals, column tile by column tile, as the compiler's read_tensor
    reads them (slices, lanes, sign extension); one credit per pixel; random consumer."""
    name, cfg = cfg, CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    C = cfg.cols
    dut = ResidualReader(rows=cfg.rows, cols=C, a_bits=cfg.a_bits, addr_width=BAW[name],
                         param_rows=32)
    got, credits = [], [0]
    mem, words = random_buffer(rng, cfg)
    d = make_desc(rng, cfg, has_residual=1, res_bits=res_bits, res_signed=signed_,
                  in_height=4, in_width=4)

    async def bench(ctx):
        set_ctrl(ctx, dut.ctrl, d, cfg)
        ctx.set(dut.ctrl.start, 1)
        await ctx.tick()
        ctx.set(dut.ctrl.start, 0)
        for _ in range(2000):
            ready = int(rng.random() < 0.4)
            ctx.set(dut.residuals.ready, ready)
            ctx.set(dut.credit.ready, int(rng.random() < 0.5))
            if ready and ctx.get(dut.residuals.valid):
                got.append(list(ctx.get(dut.residuals.payload)))
            if ctx.get(dut.credit.ready) and ctx.get(dut.credit.valid):
                credits[0] += 1
            addr, en = ctx.get(dut.act.addr), ctx.get(dut.act.en)
            assert not ctx.get(dut.act.pad)
            await ctx.tick()
            if en:
                ctx.set(dut.act.data.as_value(), words[addr])

    simulate(dut, bench)
    P = d.out_height * d.out_width
    res = compiler.read_tensor(mem, d.res_base, (d.out_groups * cfg.rows, d.out_height,
                                                d.out_width), res_bits, bool(signed_),
                               cfg.a_bits)[0].reshape(-1, P)
    want = [list(res[j * C:(j + 1) * C, p]) for j in range(d.col_tiles) for p in range(P)]
    assert got == want, f"seed {SEED}: res_bits {res_bits} signed {signed_}"
    assert credits[0] == len(want), f"seed {SEED}"


# ----------------------------------------------------------------------------- collector


@pytest.mark.parametrize("cfg,pixels", [("tiny", 5), ("odd", 3), ("odd", 1)])
def test_collector(cfg, pixels):
    """Totals over a column tile's rounds (adder tree + running sums, wrapping at acc_width)
    with the column tile's parameter records and the pixel's residual; one pixel's results
    back to back across rounds (the running-sum memory's transparent read)."""
    cfg = CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    M, C, aw = cfg.macros, cfg.cols, 20
    mac = CIMMacro(**cfg.macro_params())
    dp = Datapath(lanes=C, acc_width=aw, psum_width=aw)
    param_rows = 16
    dut = Collector(macros=M, cols=C, acc_width=aw, max_pixels=8, param_rows=param_rows,
                    result_layout=mac.output_layout, psum_layout=dp.in_layout)
    T = int(rng.integers(1, 2 * M + 2))
    d = make_desc(rng, cfg, has_residual=1, res_bits=4, kernel=1, stride=1, in_groups=T,
                  in_height=1, in_width=pixels, w_bits=cfg.w_bits)
    d = dataclasses.replace(d, col_tiles=2, param_base=C * 3)
    P = d.out_height * d.out_width
    assert P == pixels
    ylo, yhi = -(1 << (mac.out_shape.width - 1)), 1 << (mac.out_shape.width - 1)
    recs = fmt.pack_params(rng.integers(-1 << 15, 1 << 15, param_rows * C),
                                rng.integers(-1 << 47, 1 << 47, param_rows * C),
                                rng.integers(-1 << 23, 1 << 23, param_rows * C))
    rows = [sum(int(w) << (32 * i) for i, w in enumerate(recs[r * C:(r + 1) * C].reshape(-1)))
            for r in range(param_rows)]
    beats, totals = [], {}
    for j in range(d.col_tiles):
        for tb in range(0, T, M):
            for p in range(P):
                ys = rng.integers(ylo, yhi, (min(M, T - tb), C))
                beats.append(ys)
                totals[j, p] = totals.get((j, p), 0) + ys.sum(axis=0)
    residuals = [rng.integers(-256, 256, C) for _ in range(d.col_tiles * P)]
    got, taken = [], [0]

    def wrap(v):
        return ((v + (1 << (aw - 1))) % (1 << aw)) - (1 << (aw - 1))

    async def bench(ctx):
        set_ctrl(ctx, dut.ctrl, d, cfg)
        ctx.set(dut.ctrl.start, 1)
        await ctx.tick()
        ctx.set(dut.ctrl.start, 0)
        ctx.set(dut.psums.ready, 1)
        queue = list(beats)
        for _ in range(400):
            ys = queue.pop(0) if queue and (P == 1 or rng.random() < 0.6) else None
            for i, r in enumerate(dut.results):
                on = ys is not None and i < len(ys)
                ctx.set(r.valid, on)
                if on:
                    ctx.set(r.payload, {"y": [int(v) for v in ys[i]]})
            ctx.set(dut.residuals.valid, taken[0] < len(residuals))
            if taken[0] < len(residuals):
                ctx.set(dut.residuals.payload, [int(v) for v in residuals[taken[0]]])
            if ctx.get(dut.psums.valid):
                got.append(ctx.get(dut.psums.payload))
            if ctx.get(dut.residuals.ready) and ctx.get(dut.residuals.valid):
                taken[0] += 1
            assert not ctx.get(dut.overrun)
            addr, en = ctx.get(dut.params.addr), ctx.get(dut.params.en)
            await ctx.tick()
            if en:
                ctx.set(dut.params.data, rows[addr])

    simulate(dut, bench)
    m, b, r = fmt.unpack_params(recs)
    assert len(got) == d.col_tiles * P, f"seed {SEED}"
    for n, beat in enumerate(got):
        j, p = divmod(n, P)
        row = d.param_base // C + j
        for c, ln in enumerate(beat.lanes):
            want = (wrap(int(totals[j, p][c])), m[row * C + c], b[row * C + c],
                    r[row * C + c], residuals[n][c])
            assert (ln.psum, ln.m, ln.b, ln.r, ln.res) == want, f"seed {SEED}: {n} {c}"
        assert beat.first and beat.last
    assert taken[0] == len(residuals)


# ----------------------------------------------------------------------------- writer


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
@pytest.mark.parametrize("out_bits", [4, 8])
def test_writer(cfg, out_bits):
    """The words written hold the layer's output at the compiler's addresses and lanes
    (compiler.read_tensor reads it back), nothing outside the tensor is touched, the
    Datapath waits only while slices are written, layer_done comes with the last word."""
    name, cfg = cfg, CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    R, C, ab = cfg.rows, cfg.cols, cfg.a_bits
    dp = Datapath(lanes=C, acc_width=20, psum_width=20)
    dut = Writer(rows=R, cols=C, a_bits=ab, addr_width=BAW[name], param_rows=32,
                 result_layout=dp.out_layout)
    d = make_desc(rng, cfg, out_bits=out_bits, in_height=4, in_width=3, kernel=3,
                  padding=1, stride=1)
    P, J = d.out_height * d.out_width, d.col_tiles
    lo, hi = (-(1 << (out_bits - 1)), 1 << (out_bits - 1)) if d.out_signed else \
        (0, 1 << out_bits)
    y = rng.integers(lo, hi, (J * C, P))
    mem = np.zeros((1, 2 * cfg.bank_words, R), np.int64)
    log = {"done": [], "writes": [], "ovf": 0}

    async def bench(ctx):
        set_ctrl(ctx, dut.ctrl, d, cfg)
        ctx.set(dut.ctrl.start, 1)
        await ctx.tick()
        ctx.set(dut.ctrl.start, 0)
        n = 0
        for _ in range(2000):
            ctx.set(dut.results.valid, n < J * P)
            if n < J * P:
                j, p = divmod(n, P)
                ctx.set(dut.results.payload,
                        {"value": [int(v) for v in y[j * C:(j + 1) * C, p]],
                         "overflow": int(n == J * P - 2)})
            if ctx.get(dut.results.valid) and ctx.get(dut.results.ready):
                n += 1
            log["ovf"] += ctx.get(dut.overflow)
            if ctx.get(dut.write.valid):
                w = ctx.get(dut.write.payload)
                a = ctx.get(dut.bank) * cfg.bank_words + w.addr
                log["writes"].append(a)
                for lane in range(R):
                    if (w.mask >> lane) & 1:
                        mem[0, a, lane] = w.word[lane]
            if ctx.get(dut.layer_done):
                log["done"].append(len(log["writes"]))
            await ctx.tick()

    simulate(dut, bench)
    out_sl = _sl(out_bits, ab)
    assert len(log["writes"]) == J * P * out_sl, f"seed {SEED}"
    assert log["done"] == [len(log["writes"])] and log["ovf"] == 1, f"seed {SEED}"
    span = range(d.out_base, d.out_base + P * d.out_groups * out_sl)
    assert all(a in span for a in log["writes"]), f"seed {SEED}"
    back = compiler.read_tensor(mem, d.out_base, (d.out_channels, d.out_height,
                                                 d.out_width), out_bits,
                                bool(d.out_signed), ab)[0].reshape(-1, P)
    assert (back == y[:d.out_channels]).all(), f"seed {SEED}: out_bits {out_bits}"


# ----------------------------------------------------------------------------- pooler


@pytest.mark.parametrize("k,s,p,groups,size", [(3, 2, 1, 1, 7), (2, 2, 0, 3, 6),
                                               (3, 1, 1, 2, 5), (5, 2, 2, 2, 6),
                                               (7, 1, 3, 1, 4)])
def test_pooler_windows(k, s, p, groups, size):
    """The pooler alone on random buffer words: every output word is the lane-wise maximum
    of its window's words (padding reads zero), at the compiler's address, in
    ``1 + P * G * k * k`` reads from start (its addresses kept by additions)."""
    from gateware.sequencer.pooler import Pooler
    rng = np.random.default_rng(SEED)
    R, ab, baw = 4, 4, 8
    ho = wo = (size + 2 * p - k) // s + 1
    base, out_base = 3, (1 << baw) + 5           # input in bank 0, output in bank 1
    mem = rng.integers(0, 1 << (R * ab), size=2 << baw)
    d = Descriptor(**{**{f.name: 0 for f in fmt.FIELDS}, "kernel": k, "stride": s,
                      "padding": p, "op": fmt.OP_MAXPOOL, "in_height": size,
                      "in_width": size, "in_groups": groups, "out_height": ho,
                      "out_width": wo, "out_groups": groups, "in_base": base,
                      "out_base": out_base, "in_bits": ab, "out_bits": ab, "relu": 1})
    dut = Pooler(rows=R, a_bits=ab, addr_width=baw)
    writes, cycles_ = [], []

    async def bench(ctx):
        ctx.set(dut.desc.as_value(), desc_int(d))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        data = 0
        for n in range(1, 4000):
            if ctx.get(dut.write.valid):
                writes.append((ctx.get(dut.write.payload.addr), ctx.get(dut.bank),
                               ctx.get(dut.write.payload.word.as_value())))
            if ctx.get(dut.done):
                cycles_.append(n)
                break
            en, addr, pad = (ctx.get(dut.act.en), ctx.get(dut.act.addr), ctx.get(dut.act.pad))
            if en:
                data = 0 if pad else int(mem[addr])
            await ctx.tick()
            ctx.set(dut.act.data.as_value(), data)

    simulate(dut, bench)
    want = []
    for oy in range(ho):
        for ox in range(wo):
            for g in range(groups):
                lanes = np.zeros(R, np.int64)
                for kh in range(k):
                    for kw in range(k):
                        y, x = oy * s - p + kh, ox * s - p + kw
                        if 0 <= y < size and 0 <= x < size:
                            word = int(mem[base + (y * size + x) * groups + g])
                            lanes = np.maximum(lanes, [(word >> (i * ab)) & 15 for i in range(R)])
                addr = (out_base & ((1 << baw) - 1)) + (oy * wo + ox) * groups + g
                want.append((addr, 1, sum(int(v) << (i * ab) for i, v in enumerate(lanes))))
    assert writes == want, f"seed {SEED}"
    assert cycles_ == [1 + ho * wo * groups * k * k + 1], cycles_
