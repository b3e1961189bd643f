# amaranth: UnusedElaboratable=no
"""Window address generation and the activation buffer: the RTL against the models, the
window model against a numpy im2col and the golden model's convolution, and the buffer's
skid buffer, padding and ping-pong banks.

The first line keeps Amaranth from warning about the components that the model and
constructor tests create and never elaborate."""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data, wiring
from amaranth.sim import Simulator

from gateware.actbuf import ActivationBuffer, pack_tensor, unpack_word
from gateware.window import WindowError, WindowGen
from model import golden

ADDR_WIDTH = 7      # small, so that a tensor near the top of the buffer wraps around
MAX_SIZE = 8
MAX_GROUPS = 4
FIELDS = ("addr", "pad", "first", "last", "tap", "cg", "oy", "ox")


def make_gen(addr_width=ADDR_WIDTH):
    return WindowGen(addr_width=addr_width, max_size=MAX_SIZE, max_groups=MAX_GROUPS)


def decode(layout, bits):
    """The fields of a struct payload (as an int) as ints; nested layouts stay packed."""
    return {name: (bits >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def geometry(cfg):
    k, s, p = cfg["kernel"], cfg["stride"], cfg["padding"]
    return ((cfg["height"] + 2 * p - k) // s + 1, (cfg["width"] + 2 * p - k) // s + 1)


# ----------------------------------------------------------------------------- the model


def layer(k, s, p, h, w, g, base=0):
    return dict(kernel=k, stride=s, padding=p, height=h, width=w, groups=g, base=base)


MODEL_CASES = [
    layer(k, s, p, h, w, g)
    for k in (1, 3, 5, 7) for s in (1, 2) for p in sorted({0, k // 2, 3})
    for h, w, g in ((7, 5, 2), (max(k - 2 * p, 1), 6, 1), (8, 8, 3))
    if h + 2 * p >= k and w + 2 * p >= k
]


@pytest.mark.parametrize("cfg", MODEL_CASES,
                         ids=lambda c: "k{kernel}s{stride}p{padding}_{height}x{width}x{groups}"
                         .format(**c))
def test_model_gathers_im2col(cfg):
    """Gathering the row tiles through the model's beats from a buffer image laid out as the
    activation buffer stores it gives numpy's im2col in (kh, kw, channel) order, and with
    weights packed in that order the golden model's convolution."""
    rows, a_bits = 4, 4
    k, s, p, g = cfg["kernel"], cfg["stride"], cfg["padding"], cfg["groups"]
    h, w = cfg["height"], cfg["width"]
    seed = 1000 + k * 100 + s * 10 + p + h + w + g
    rng = np.random.default_rng(seed)
    c = g * rows - int(rng.integers(0, rows))       # the last group partly empty
    x = rng.integers(0, 1 << a_bits, size=(c, h, w))
    aw = ADDR_WIDTH + 1     # room for the largest case, 8 x 8 pixels x 3 groups
    base = int(rng.integers(0, 1 << aw))

    # The buffer image, built channel by channel from the layout rule.
    mem = {}
    for ch in range(c):
        for yy in range(h):
            for xx in range(w):
                addr = (base + (yy * w + xx) * g + ch // rows) % (1 << aw)
                mem[addr] = mem.get(addr, 0) | int(x[ch, yy, xx]) << (ch % rows * a_bits)
    words = pack_tensor(x, rows=rows, a_bits=a_bits)
    assert [mem[(base + i) % (1 << aw)] for i in range(len(words))] == words, \
        f"seed {seed}: pack_tensor disagrees with the layout rule"

    beats = make_gen(aw).model(**{**cfg, "base": base})
    ho, wo = geometry(cfg)
    tiles = k * k * g
    assert len(beats) == ho * wo * tiles
    gathered = np.zeros((ho * wo, tiles * rows), dtype=np.int64)
    for i, b in enumerate(beats):
        pix, t = divmod(i, tiles)
        tap, cg = divmod(t, g)
        assert (b["oy"], b["ox"], b["tap"], b["cg"]) == (*divmod(pix, wo), tap, cg), f"beat {i}"
        assert b["first"] == (t == 0) and b["last"] == (t == tiles - 1), f"beat {i}"
        if b["pad"]:
            assert b["addr"] == 0, f"beat {i}: padding beat with an address"
        else:
            gathered[pix, t * rows:(t + 1) * rows] = unpack_word(mem[b["addr"]], rows, a_bits)

    xg = np.zeros((g * rows, h, w), dtype=np.int64)
    xg[:c] = x
    xp = np.pad(xg, ((0, 0), (p, p), (p, p)))
    want = np.stack([xp[:, oy * s:oy * s + k, ox * s:ox * s + k].transpose(1, 2, 0).ravel()
                     for oy in range(ho) for ox in range(wo)])
    assert np.array_equal(gathered, want), f"seed {seed}: im2col differs"

    cout = 3
    wt = rng.integers(-7, 8, size=(cout, c, k, k))
    packed = np.zeros((cout, k, k, g * rows), dtype=np.int64)
    packed[..., :c] = wt.transpose(0, 2, 3, 1)
    acc = golden.conv_acc(x[None], wt, s, p)[0]             # (Cout, Ho, Wo)
    assert np.array_equal(gathered @ packed.reshape(cout, -1).T,
                          acc.transpose(1, 2, 0).reshape(-1, cout)), f"seed {seed}"


def test_model_rejects_what_the_hardware_rejects():
    gen = make_gen()
    good = layer(3, 1, 1, 4, 4, 2)
    for change, code in ((dict(kernel=2), "KERNEL"), (dict(kernel=9), "KERNEL"),
                         (dict(stride=3), "STRIDE"), (dict(groups=0), "SIZE"),
                         (dict(height=MAX_SIZE + 1), "SIZE"), (dict(kernel=7, height=4), "SIZE")):
        with pytest.raises(ValueError, match=f"WindowError.{code}"):
            gen.model(**{**good, **change})
    with pytest.raises(ValueError, match="Padding must be between 0 and 3, not 4"):
        gen.model(**{**good, "padding": 4})


def test_constructors_validate_parameters():
    with pytest.raises(ValueError, match="Address width must be an integer between 1 and 32, "
                                         "not 0"):
        WindowGen(addr_width=0, max_size=8, max_groups=4)
    with pytest.raises(ValueError, match="Maximum size must be an integer between 1 and 4096, "
                                         "not 5000"):
        WindowGen(addr_width=8, max_size=5000, max_groups=4)
    with pytest.raises(ValueError, match="Maximum channel groups must be an integer"):
        WindowGen(addr_width=8, max_size=8, max_groups=2.0)
    with pytest.raises(TypeError):
        WindowGen(8, 8, 4)
    with pytest.raises(ValueError, match="Depth must be a power of two between 2 and 1048576, "
                                         "not 100"):
        ActivationBuffer(depth=100, rows=16, a_bits=4)
    with pytest.raises(ValueError, match="Rows must be a power of two between 8 and 1024, "
                                         "not 12"):
        ActivationBuffer(depth=64, rows=12, a_bits=4)
    with pytest.raises(ValueError, match="Activation bits must be one of 1, 2, 4, 8, not 3"):
        ActivationBuffer(depth=64, rows=16, a_bits=3)
    with pytest.raises(ValueError, match="addr field of unsigned.6."):
        ActivationBuffer(depth=64, rows=16, a_bits=4, request_layout=make_gen().beat_layout)
    with pytest.raises(ValueError, match="1-bit pad field"):
        ActivationBuffer(depth=64, rows=16, a_bits=4,
                         request_layout=data.StructLayout({"addr": 6}))


# ----------------------------------------------------------------------------- the generator


def run_generator(dut, layers, *, seed, p_ready):
    """Run ``layers`` (configuration dicts) back to back, each started in the cycle the previous
    one's ``done`` pulses, with random backpressure. Returns per layer the transferred beats,
    the start cycle, the cycle of each beat and the cycle ``done`` was seen. Also checks the
    stream rule: a beat that is not taken stays, unchanged, in the next cycle."""
    rng = np.random.default_rng(seed)
    results = []
    limit = 20 * sum(len(dut.model(**c)) for c in layers) + 100

    async def tb(ctx):
        cycle = 0
        held = None
        for cfg in layers:
            for name, v in cfg.items():
                ctx.set(getattr(dut, name), v)
            ctx.set(dut.start, 1)
            start, beats, times, done_at = cycle, [], [], None
            while done_at is None:
                assert cycle - start < limit, f"seed {seed}: layer {cfg} hangs"
                ready = bool(rng.random() < p_ready)
                ctx.set(dut.o_stream.ready, ready)
                _, _, valid, bits, done, busy = await ctx.tick().sample(
                    dut.o_stream.valid, dut.o_stream.payload.as_value(), dut.done, dut.busy)
                ctx.set(dut.start, 0)
                if held is not None:
                    assert valid and bits == held, f"seed {seed}: cycle {cycle}: beat changed"
                held = bits if valid and not ready else None
                if valid and ready:
                    beats.append(decode(dut.beat_layout, bits))
                    times.append(cycle)
                if done:
                    assert not busy and not valid, f"seed {seed}: done while busy"
                    done_at = cycle
                cycle += 1
            results.append((beats, start, times, done_at))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


RTL_LAYERS = {
    1: [layer(1, 1, 0, 3, 4, 2, base=5), layer(1, 2, 1, 5, 4, 1, base=120),
        layer(1, 1, 2, 2, 3, 3, base=60)],
    3: [layer(3, 1, 1, 4, 4, 2, base=100), layer(3, 2, 1, 5, 6, 1, base=3),
        layer(3, 1, 0, 3, 5, 3, base=0), layer(3, 2, 3, 2, 3, 2, base=90)],
    5: [layer(5, 1, 2, 4, 3, 1, base=7), layer(5, 2, 2, 5, 5, 2, base=127),
        layer(5, 1, 0, 5, 6, 1, base=40)],
    7: [layer(7, 1, 3, 3, 4, 1, base=9), layer(7, 2, 3, 6, 6, 1, base=64),
        layer(7, 1, 1, 7, 6, 1, base=126)],
}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_generator_matches_model(k, stride):
    """Several layers of kernel ``k`` (the given stride, various padding, sizes, groups and
    base addresses, some wrapping around the address space) back to back, with random
    backpressure."""
    layers = [{**c, "stride": stride} for c in RTL_LAYERS[k]]
    layers = [c for c in layers if c["height"] + 2 * c["padding"] >= k]
    seed = 10 * k + stride
    dut = make_gen()
    results = run_generator(dut, layers, seed=seed, p_ready=0.6)
    for cfg, (beats, *_) in zip(layers, results):
        want = dut.model(**cfg)
        assert len(beats) == len(want), f"seed {seed} {cfg}: {len(beats)} beats"
        for i, (got, exp) in enumerate(zip(beats, want)):
            assert got == exp, f"seed {seed} {cfg}: beat {i} is {got}, model {exp}"


def test_generator_latency_and_full_rate():
    """With the consumer always ready, the first beat is valid ``latency`` cycles after start,
    then one beat per cycle without a bubble, ``done`` in the cycle after the last one; the next
    layer starts in that cycle."""
    dut = make_gen()
    layers = [layer(3, 2, 1, 5, 5, 2, base=11), layer(1, 1, 0, 2, 2, 1, base=0)]
    for cfg, (beats, start, times, done_at) in zip(
            layers, run_generator(dut, layers, seed=0, p_ready=1.0)):
        assert beats == dut.model(**cfg)
        n = len(beats)
        assert times == list(range(start + dut.latency, start + dut.latency + n))
        assert done_at == times[-1] + 1


BAD_LAYERS = [
    (layer(k, 1, 1, 4, 4, 1), WindowError.KERNEL) for k in (0, 2, 4, 6, 8, 9, 15)
] + [
    (layer(3, 0, 1, 4, 4, 1), WindowError.STRIDE),
    (layer(3, 3, 1, 4, 4, 1), WindowError.STRIDE),
    (layer(2, 3, 1, 4, 4, 1), WindowError.KERNEL),
    (layer(3, 1, 1, 0, 4, 1), WindowError.SIZE),
    (layer(3, 1, 1, 4, 0, 1), WindowError.SIZE),
    (layer(3, 1, 1, 4, 4, 0), WindowError.SIZE),
    (layer(3, 1, 1, MAX_SIZE + 1, 4, 1), WindowError.SIZE),
    (layer(3, 1, 1, 4, 4, MAX_GROUPS + 1), WindowError.SIZE),
    (layer(7, 1, 1, 4, 8, 1), WindowError.SIZE),
    (layer(5, 2, 0, 8, 4, 1), WindowError.SIZE),
]


def test_generator_rejects_bad_layers():
    """Each bad configuration sets the error flag and code, emits nothing and pulses ``done``
    in the cycle after start; a good layer afterwards runs normally and clears the error."""
    dut = make_gen()
    good = layer(3, 1, 1, 3, 3, 1, base=2)
    seen = []

    async def tb(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for cfg, code in [*BAD_LAYERS, (good, WindowError.NONE)]:
            assert dut.check(**{n: v for n, v in cfg.items() if n != "base"}) == code
            for name, v in cfg.items():
                ctx.set(getattr(dut, name), v)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            beats = 0
            for _ in range(1000):
                valid, done, error, got = (ctx.get(s) for s in (dut.o_stream.valid, dut.done,
                                                                 dut.error, dut.error_code))
                beats += valid
                if done:
                    break
                await ctx.tick()
            seen.append((cfg, done, error, got, beats))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    for (cfg, done, error, got, beats), (_, code) in zip(seen, [*BAD_LAYERS, (good, None)]):
        if code is None:
            assert done and not error and got == WindowError.NONE, cfg
            assert beats == len(dut.model(**good)), cfg
        else:
            assert (done, error, got, beats) == (1, 1, code, 0), cfg


# ----------------------------------------------------------------------------- the buffer


def random_writes(rng, n, *, depth, rows, a_bits):
    return [dict(addr=int(rng.integers(0, depth)), word=int(rng.integers(0, 1 << 62))
                 & ((1 << rows * a_bits) - 1),
                 mask=int(rng.integers(0, 1 << rows))) for _ in range(n)]


def apply_writes(memory, writes, *, bank, depth, rows, a_bits):
    lane = (1 << a_bits) - 1
    for wr in writes:
        bits = sum(lane << i * a_bits for i in range(rows) if wr["mask"] >> i & 1)
        i = bank * depth + wr["addr"]
        memory[i] = memory[i] & ~bits | wr["word"] & bits


async def wait_until(ctx, cond, what, limit=5000):
    """Tick until ``cond()`` holds; a lost beat fails the test instead of hanging it."""
    for _ in range(limit):
        if cond():
            return
        await ctx.tick()
    raise AssertionError(f"{what} did not happen in {limit} cycles")


async def write(ctx, buf, writes, bank):
    ctx.set(buf.write_bank, bank)
    for wr in writes:
        ctx.set(buf.w_stream.payload.as_value(),
                sum(wr[name] << f.offset for name, f in buf.write_layout))
        ctx.set(buf.w_stream.valid, 1)
        await ctx.tick()
    ctx.set(buf.w_stream.valid, 0)


def test_buffer_matches_model():
    """Random requests (random addresses, padding and tags) with random gaps, read back with
    random backpressure from both banks, after partial (masked) writes; then the latency."""
    depth, rows, a_bits = 16, 8, 4
    seed = 77
    rng, rng_in, rng_out = (np.random.default_rng([seed, i]) for i in range(3))
    layout = data.StructLayout({"addr": 4, "pad": 1, "tag": 8})
    buf = ActivationBuffer(depth=depth, rows=rows, a_bits=a_bits, request_layout=layout)
    memory = [0] * (2 * depth)
    writes = [random_writes(rng, 40, depth=depth, rows=rows, a_bits=a_bits) for _ in range(2)]
    for bank in (0, 1):
        apply_writes(memory, writes[bank], bank=bank, depth=depth, rows=rows, a_bits=a_bits)
    requests = [[dict(addr=int(rng.integers(0, depth)), pad=int(rng.random() < 0.25),
                      tag=int(rng.integers(0, 256))) for _ in range(150)] for _ in range(2)]
    got = [[], []]
    timing = []

    async def driver(ctx):
        for bank in (0, 1):
            await write(ctx, buf, writes[bank], bank)
        for bank in (0, 1):
            ctx.set(buf.read_bank, bank)
            for req in requests[bank]:
                while rng_in.random() < 0.3:
                    await ctx.tick()
                ctx.set(buf.i_stream.payload, req)
                ctx.set(buf.i_stream.valid, 1)
                for _ in range(100):
                    _, _, ready = await ctx.tick().sample(buf.i_stream.ready)
                    if ready:
                        break
                else:
                    raise AssertionError(f"seed {seed}: the buffer stopped taking requests")
                ctx.set(buf.i_stream.valid, 0)
            await wait_until(ctx, lambda b=bank: len(got[b]) == len(requests[b]),
                             f"seed {seed}: all words of bank {bank}")
        # Latency: a lone request, the consumer ready.
        ctx.set(buf.i_stream.payload, requests[1][0])
        ctx.set(buf.i_stream.valid, 1)
        await ctx.tick()
        ctx.set(buf.i_stream.valid, 0)
        for n in range(1, 5):
            if ctx.get(buf.o_stream.valid):
                timing.append(n)
            await ctx.tick()

    async def monitor(ctx):
        held = None
        for cycle in range(20000):
            bank = 0 if len(got[0]) < len(requests[0]) else 1
            if len(got[1]) == len(requests[1]):
                ctx.set(buf.o_stream.ready, 1)
                return
            ready = bool(rng_out.random() < 0.5)
            ctx.set(buf.o_stream.ready, ready)
            _, _, valid, bits = await ctx.tick().sample(buf.o_stream.valid,
                                                        buf.o_stream.payload.as_value())
            if held is not None:
                assert valid and bits == held, f"seed {seed}: cycle {cycle}: word changed"
            held = bits if valid and not ready else None
            if valid and ready:
                got[bank].append(decode(buf.out_layout, bits))

    sim = Simulator(buf)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    for bank in (0, 1):
        want = buf.model(memory, requests[bank], bank=bank)
        assert len(got[bank]) == len(want), f"seed {seed} bank {bank}"
        for i, (g, w) in enumerate(zip(got[bank], want)):
            assert g == w, f"seed {seed} bank {bank}: word {i} is {g}, model {w}"
    assert any(r["pad"] for r in requests[0]) and any(memory), f"seed {seed}: weak stimulus"
    assert timing == [buf.latency], f"valid after {timing} cycles, not {buf.latency}"


class WindowReader(Elaboratable):
    """A window generator feeding an activation buffer, as the sequencer connects them."""

    def __init__(self, *, depth, rows, a_bits):
        self.gen = WindowGen(addr_width=(depth - 1).bit_length(), max_size=MAX_SIZE,
                             max_groups=MAX_GROUPS)
        self.buf = ActivationBuffer(depth=depth, rows=rows, a_bits=a_bits,
                                    request_layout=self.gen.beat_layout)

    def elaborate(self, platform):
        m = Module()
        m.submodules.gen = self.gen
        m.submodules.buf = self.buf
        wiring.connect(m, self.gen.o_stream, self.buf.i_stream)
        return m


@pytest.mark.parametrize("cfg", [layer(3, 1, 1, 5, 4, 2, base=3), layer(5, 2, 2, 6, 5, 1,
                                                                           base=50)],
                         ids=["k3s1", "k5s2"])
def test_window_reads_through_buffer(cfg):
    """Two tensors at the same base address, one per bank. The layer reads bank 0 through
    the window generator while the other tensor is written into bank 1, with random
    backpressure; then it reads bank 1. Each pass returns its own tensor's im2col words
    (zeros for padding taps) with the generator's fields alongside."""
    depth, rows, a_bits = 64, 8, 4
    seed = cfg["kernel"] * 7 + cfg["stride"]
    rng, rng_out = (np.random.default_rng([seed, i]) for i in range(2))
    top = WindowReader(depth=depth, rows=rows, a_bits=a_bits)
    gen, buf = top.gen, top.buf
    c, h, w = cfg["groups"] * rows - 3, cfg["height"], cfg["width"]
    tensors = [rng.integers(0, 1 << a_bits, size=(c, h, w)) for _ in range(2)]
    images = [[dict(addr=(cfg["base"] + i) % depth, word=word, mask=(1 << rows) - 1)
               for i, word in enumerate(pack_tensor(x, rows=rows, a_bits=a_bits))]
              for x in tensors]
    memory = [0] * (2 * depth)
    for bank in (0, 1):
        apply_writes(memory, images[bank], bank=bank, depth=depth, rows=rows, a_bits=a_bits)
    beats = gen.model(**cfg)
    got = [[], []]

    async def driver(ctx):
        await write(ctx, buf, images[0], 0)
        for name, v in cfg.items():
            ctx.set(getattr(gen, name), v)
        for bank in (0, 1):
            ctx.set(buf.read_bank, bank)
            ctx.set(gen.start, 1)
            await ctx.tick()
            ctx.set(gen.start, 0)
            if bank == 0:
                await write(ctx, buf, images[1], 1)
            await wait_until(ctx, lambda b=bank: len(got[b]) >= len(beats),
                             f"seed {seed}: all words of bank {bank}")

    async def monitor(ctx):
        for _ in range(20000):
            bank = 0 if len(got[0]) < len(beats) else 1
            if len(got[1]) == len(beats):
                return
            ready = bool(rng_out.random() < 0.6)
            ctx.set(buf.o_stream.ready, ready)
            _, _, valid, bits = await ctx.tick().sample(buf.o_stream.valid,
                                                        buf.o_stream.payload.as_value())
            if valid and ready:
                got[bank].append(decode(buf.out_layout, bits))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    k, s, p = cfg["kernel"], cfg["stride"], cfg["padding"]
    ho, wo = geometry(cfg)
    for bank, x in enumerate(tensors):
        assert got[bank] == buf.model(memory, beats, bank=bank), f"seed {seed} bank {bank}"
        xp = np.pad(x, ((0, cfg["groups"] * rows - c), (p, p), (p, p)))
        want = np.stack([xp[:, oy * s:oy * s + k, ox * s:ox * s + k].transpose(1, 2, 0).ravel()
                         for oy in range(ho) for ox in range(wo)])
        words = np.array([unpack_word(b["word"], rows, a_bits) for b in got[bank]])
        assert np.array_equal(words.reshape(ho * wo, -1), want), f"seed {seed} bank {bank}"
