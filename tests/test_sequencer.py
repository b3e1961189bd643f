# amaranth: UnusedElaboratable=no
"""The sequencer's units (gateware/sequencer/), each alone in the Amaranth simulator, against
their share of the compiler's functional model (model.compiler) and of the cycle model
(model.cycles). Random inputs from a printed seed (CIM_TEST_SEED)."""

import dataclasses
import os

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data
from amaranth.sim import Simulator

from gateware.cim_macro import CIMMacro
from gateware.config import HwConfig, get_config
from gateware.datapath import VALUE_BITS, Datapath
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
from model import compiler, cycles, golden
from model.compiler import DESC_WORDS, PARAM_WORDS, Descriptor
from model.quant import MAX_SHIFT

SEED = int(os.environ.get("CIM_TEST_SEED", "1234"))
TINY = get_config("tiny")
# Five macros, four columns, four rows per beat: copies of 2 and 3, lanes within a word.
ODD = HwConfig(name="odd", rows=16, cols=4, w_bits=4, a_bits=4, macros=5, write_rows=4,
               bank_words=1024)
CONFIGS = {"tiny": TINY, "odd": ODD}
BAW = {name: (c.bank_words - 1).bit_length() for name, c in CONFIGS.items()}


def _sl(bits, ab):
    return -(-bits // ab)


def make_desc(rng, cfg, **kw):
    """A random valid descriptor (the derived fields as the compiler sets them)."""
    R, C = cfg.rows, cfg.cols
    k = int(kw.pop("kernel", rng.choice([1, 3, 5])))
    s = int(kw.pop("stride", rng.choice([1, 2])))
    p = int(kw.pop("padding", rng.integers(0, k // 2 + 1)))
    G = int(kw.pop("in_groups", rng.integers(1, 3)))
    H = int(kw.pop("in_height", rng.integers(max(k - 2 * p, 1), 7)))
    W = int(kw.pop("in_width", rng.integers(max(k - 2 * p, 1), 7)))
    cout = int(kw.pop("out_channels", rng.integers(1, 2 * R + 1)))
    out_bits = int(kw.pop("out_bits", rng.choice([4, 8])))
    has_res = int(kw.pop("has_residual", rng.integers(0, 2)))
    res_bits = int(kw.pop("res_bits", rng.choice([4, 8]) if has_res else 0))
    J, T = -(-cout // C), k * k * G
    fields = dict(
        kernel=k, stride=s, padding=p, relu=int(out_bits == 4), out_signed=int(out_bits == 8),
        out_bits=out_bits, shift=int(rng.integers(1, MAX_SHIFT + 1)), has_residual=has_res,
        res_signed=int(has_res and rng.integers(0, 2)), res_bits=res_bits, last=0,
        in_height=H, in_width=W, in_groups=G, out_height=(H + 2 * p - k) // s + 1,
        out_width=(W + 2 * p - k) // s + 1, out_groups=-(-cout // R), in_channels=G * R,
        out_channels=cout, col_tiles=J, row_tiles=T, weight_tiles=J * T,
        in_base=int(rng.integers(0, 64)), out_base=cfg.bank_words + int(rng.integers(0, 64)),
        res_base=int(rng.integers(0, 64)) if has_res else 0,
        weight_base=int(rng.integers(0, 50)), param_base=C * int(rng.integers(0, 20)))
    fields.update(kw)
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


def ref_code(d, cfg, tile_cap, rec_cap):
    """The descriptor check, in AccelError's order, written from the field definitions."""
    R, C = cfg.rows, cfg.cols
    k, s, p = d.kernel, d.stride, d.padding
    H, W, G, T, J = d.in_height, d.in_width, d.in_groups, d.row_tiles, d.col_tiles
    if k % 2 == 0 or k > 7:
        return AccelError.KERNEL
    if s not in (1, 2):
        return AccelError.STRIDE
    if (0 in (H, W, G) or H > cfg.max_size or W > cfg.max_size or G > cfg.max_groups
            or H + 2 * p < k or W + 2 * p < k
            or d.out_height != ((H + 2 * p - k) >> (s == 2)) + 1
            or d.out_width != ((W + 2 * p - k) >> (s == 2)) + 1
            or d.out_height * d.out_width > cfg.max_pixels or d.out_groups == 0):
        return AccelError.SIZE
    if (J == 0 or T == 0 or T != k * k * G or d.weight_tiles != J * T
            or d.out_channels == 0 or d.out_channels > J * C or d.out_groups * R < J * C
            or d.weight_base + d.weight_tiles > tile_cap or d.param_base % C
            or d.param_base + J * C > rec_cap):
        return AccelError.TILES
    if (d.shift == 0 or d.shift > MAX_SHIFT or d.out_bits == 0 or d.out_bits > 8
            or (d.out_signed and d.out_bits < 2)
            or (d.has_residual and not 1 <= d.res_bits <= 8)):
        return AccelError.FORMAT
    return AccelError.NONE


def run_fetcher(cfg, program, rng, *, prog_words=64):
    tile_cap = cfg.weight_words // (cfg.write_cycles * compiler.beat_words(cfg))
    rec_cap = cfg.param_words // PARAM_WORDS
    dut = Fetcher(prog_words=prog_words, rows=cfg.rows, cols=cfg.cols, max_size=cfg.max_size,
                  max_groups=cfg.max_groups, max_pixels=cfg.max_pixels, tile_cap=tile_cap,
                  rec_cap=rec_cap)
    words = [w for d in program for w in d.pack()][:prog_words]
    words += [0] * (prog_words - len(words))
    got = []

    async def bench(ctx):
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        for n in range(1, 40 * len(program) + 40):
            addr = ctx.get(dut.prog.addr)
            ready = int(rng.random() < 0.6)
            ctx.set(dut.descriptors.ready, ready)
            if ready and ctx.get(dut.descriptors.valid):
                p = ctx.get(dut.descriptors.payload)
                got.append((n, Descriptor.unpack(
                    [(int(ctx.get(dut.descriptors.payload.desc.as_value())) >> (32 * i))
                     & 0xFFFF_FFFF for i in range(DESC_WORDS)]), AccelError(p.code)))
            await ctx.tick()
            ctx.set(dut.prog.data, words[addr] if addr < prog_words else 0)

    simulate(dut, bench)
    return got, (tile_cap, rec_cap)


@pytest.fixture(scope="module")
def digits_program():
    return compiler.compile_model(golden.load("models/digits_cnn_w4a4.npz"), TINY)


def test_fetcher_compiled_program(digits_program):
    """The compiler's descriptors pass the check and come out in order, the last one last;
    the first is offered DESC_WORDS + 2 cycles after go (model.cycles.FIRST_READY)."""
    rng = np.random.default_rng(SEED)
    got, _ = run_fetcher(TINY, digits_program.descriptors, rng)
    assert [d for _, d, _ in got] == digits_program.descriptors, f"seed {SEED}"
    assert all(c == AccelError.NONE for _, _, c in got), f"seed {SEED}: {got}"


def test_fetcher_first_offer():
    rng = np.random.default_rng(SEED)
    d = make_desc(rng, TINY, last=1)
    dut_got, _ = run_fetcher(TINY, [d], np.random.default_rng([SEED, 1]))
    # With a consumer always ready the offer is taken in its first cycle.
    got, _ = run_fetcher_ready(TINY, [d])
    assert got[0][0] == DESC_WORDS + 2 == cycles.FIRST_READY - 3, got
    assert dut_got[0][1] == d


def run_fetcher_ready(cfg, program):
    class Always:
        def random(self):
            return 0.0
    return run_fetcher(cfg, program, Always())


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
def test_fetcher_check_codes(cfg):
    """Random mutations of valid descriptors: the code is the reference check's, and the
    fetcher stops after the first failed one (or the one with last)."""
    cfg = CONFIGS[cfg]
    rng = np.random.default_rng(SEED)
    names = [f.name for f in compiler.FIELDS]
    bits = {f.name: f.bits for f in compiler.FIELDS}
    for trial in range(12):
        prog = [make_desc(rng, cfg) for _ in range(3)]
        bad = int(rng.integers(0, 3))
        name = names[int(rng.integers(0, len(names)))]
        val = int(rng.integers(0, 1 << min(bits[name], 12)))
        if rng.random() < 0.5:      # near misses
            val = max(0, getattr(prog[bad], name) + int(rng.choice([-1, 1])))
            val = min(val, (1 << bits[name]) - 1)
        prog[bad] = dataclasses.replace(prog[bad], **{name: val})
        prog[-1] = dataclasses.replace(prog[-1], last=1)
        got, caps = run_fetcher(cfg, prog, rng)
        want = []
        for d in prog:
            want.append((d, ref_code(d, cfg, *caps)))
            if d.last or want[-1][1] != AccelError.NONE:
                break
        assert [(d, c) for _, d, c in got] == want, (
            f"seed {SEED} trial {trial}: {name}={val} in descriptor {bad}")


def test_fetcher_runs_off_the_program():
    """No last descriptor: one more offer with PROGRAM after the descriptors that fit."""
    rng = np.random.default_rng(SEED)
    prog = [make_desc(rng, TINY) for _ in range(2)]
    got, _ = run_fetcher(TINY, prog, rng, prog_words=2 * DESC_WORDS + 3)
    assert [c for _, _, c in got] == [AccelError.NONE, AccelError.NONE, AccelError.PROGRAM], (
        f"seed {SEED}: {got}")


# ----------------------------------------------------------------------------- loader


def tile_fields(d, cfg, j, t):
    """(beat address, kh, kw, window offset) of row tile t of column tile j: the compiler's
    tile order (t = (kh * k + kw) * G + cg; layer tile j * T + t at weight_base) and address
    formula (word (y * W + x) * G + cg, relative to the window's corner)."""
    k, G, W = d.kernel, d.in_groups, d.in_width
    kh, rest = divmod(t, k * G)
    kw, cg = divmod(rest, G)
    return ((d.weight_base + j * d.row_tiles + t) * cfg.write_cycles, kh, kw,
            (kh * W + kw) * G + cg)


def expected_tiles(d, cfg):
    """Per macro, the tiles it gets, in order: model.cycles' rounds and copies (macro i of a
    round of ``group`` row tiles from tb holds row tile tb + i mod group)."""
    M = cfg.macros
    cp = cycles.copies(d, cfg)
    rounds = cycles._rounds(d, cfg, cp)
    per_col = len(rounds) // d.col_tiles
    out = [[] for _ in range(M)]
    for r, (macros, _) in enumerate(rounds):
        j, tb = divmod(r, per_col)
        for i in range(macros):
            out[i].append(tile_fields(d, cfg, j, tb * M + i % (macros // cp)))
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
    dut = WeightLoader(macros=M, a_bits=cfg.a_bits, write_cycles=cfg.write_cycles,
                       addr_width=BAW[name])
    got = [[] for _ in range(M)]
    passed = []
    per_cycle = []

    async def bench(ctx):
        ctx.set(dut.layers.ready, 1)
        k = 0
        for n in range(3000):
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
                    got[i].append((p.addr, p.kh, p.kw, p.off))
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


def test_macro_unit():
    """Tile load (beats from the weight store to the macro, ``loaded`` after wc + 3 cycles),
    round switch, lockstep read (address and padding by the compiler's formula), bit-planes
    MSB first with commit on the first, and the next tile loading from the commit on
    (model.cycles.LOAD_LATENCY)."""
    cfg = ODD
    rng = np.random.default_rng(SEED)
    R, ab, wc, baw = cfg.rows, cfg.a_bits, cfg.write_cycles, BAW["odd"]
    mac = CIMMacro(**cfg.macro_params())
    bw = compiler.beat_words(cfg)
    dut = MacroUnit(index=2, macros=cfg.macros, rows=R, a_bits=ab, write_cycles=wc,
                    addr_width=baw, weight_addr_width=8, weight_width=bw * 32,
                    input_layout=mac.input_layout, write_layout=mac.write_layout)
    wmem = [int(v) for v in rng.integers(0, 1 << 32, 256, dtype=np.uint64)]
    amem = {}
    wlen = len(mac.write.payload.w.as_value())
    log = {"writes": [], "loaded": [], "feed": [], "reads": []}
    tiles = [(40, 1, 2, 9), (80, 0, 1, 5)]
    # Macro 2 is in the groups of pixels 0 and 1, not 2; pixel 0's tap is in the padding.
    pixels = [dict(first=1, count=2, y=-2, x=1, addr=100, bank=1, height=5, width=4),
              dict(first=2, count=1, y=3, x=0, addr=1020, bank=0, height=5, width=4),
              dict(first=0, count=2, y=0, x=0, addr=7, bank=0, height=5, width=4)]

    async def bench(ctx):
        cyc = 0
        plan = {2: ("tile", 0), 5: ("tile", 1), 30: ("round", None), 32: ("issue", 0),
                32 + ab: ("issue", 1), 32 + 2 * ab: ("issue", 2)}
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        for cyc in range(1, 80):
            what, arg = plan.get(cyc, (None, None))
            ctx.set(dut.tile.valid, what == "tile")
            if what == "tile":
                assert ctx.get(dut.tile.ready)
                a, kh, kw, off = tiles[arg]
                ctx.set(dut.tile.payload, {"addr": a, "kh": kh, "kw": kw, "off": off})
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
    reads = []
    for c, px in zip((32, 32 + ab, 32 + 2 * ab), pixels):
        if not px["first"] <= 2 < px["first"] + px["count"]:
            continue
        y, x = px["y"] + kh, px["x"] + kw
        pad = int(not (0 <= y < px["height"] and 0 <= x < px["width"]))
        addr = ((px["addr"] + off) % (1 << baw)) | (px["bank"] << baw)
        reads.append((c, addr, pad))
    assert log["reads"] == reads, f"seed {SEED}"
    feed = []
    for n, (c, addr, pad) in enumerate(reads):
        word = 0 if pad else amem[addr]
        for b in reversed(range(ab)):
            plane = sum(((word >> (r * ab + b)) & 1) << r for r in range(R))
            feed.append((c + ab - b, plane, int(b == 0), int(n == 0 and b == ab - 1)))
    assert log["feed"] == feed, f"seed {SEED}"


# ----------------------------------------------------------------------------- issuer


def expected_rounds(d, cfg):
    """Per round: (macros, group, length, [(cycle of the slot, group g, pixel)]) from
    model.cycles: copies, rounds, slot length L, group g at g * sp of its slot."""
    ab = cfg.a_bits
    cp = cycles.copies(d, cfg)
    sp = max(_sl(d.out_bits, ab), _sl(d.res_bits, ab) if d.has_residual else 0)
    P = d.out_height * d.out_width
    out = []
    for macros, final in cycles._rounds(d, cfg, cp):
        L = max(ab, cp * sp) if final else ab
        issues = [(pix // cp * L + pix % cp * sp, pix % cp, pix) for pix in range(P)]
        out.append((macros, macros // cp, -(-P // cp) * L, issues))
    return out


def run_issuer(cfg, layers, rng, *, credit_rate=1.0, loaded_rate=1.0):
    name = cfg.name
    M = cfg.macros
    dut = Issuer(macros=M, cols=cfg.cols, a_bits=cfg.a_bits, addr_width=BAW[name],
                 param_rows=cfg.param_words // (PARAM_WORDS * cfg.cols))
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
                drain = n + 5       # the writer's last word, a little later
            if ctx.get(dut.done):
                ev["done"] = (n, ctx.get(dut.error), AccelError(ctx.get(dut.error_code)))
                break
            await ctx.tick()

    simulate(dut, bench)
    return ev


def check_walk(d, cfg, issues):
    """The pixels of a round in raster order, their window corners and buffer addresses by
    the compiler's formula (base + (y * W + x) * G, in the input's bank)."""
    bank = cfg.bank_words
    for pix, (_, _, _, y, x, addr, b) in enumerate(issues):
        oy, ox = divmod(pix, d.out_width)
        yy, xx = oy * d.stride - d.padding, ox * d.stride - d.padding
        assert (y, x) == (yy, xx), (pix, y, x)
        assert addr == (d.in_base + (yy * d.in_width + xx) * d.in_groups) % bank, pix
        assert b == d.in_base // bank


@pytest.mark.parametrize("cfg", ["tiny", "odd"])
def test_issuer_schedule(cfg):
    """Tiles always loaded, residuals always there: issue cycles, groups, rounds and the
    layer start exactly as model.cycles has them (LAYER_START, ROUND_GAP, slot length,
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
    dut = Issuer(macros=2, cols=8, a_bits=4, addr_width=12, param_rows=32)
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
