# amaranth: UnusedElaboratable=no
"""The AHB-Lite slave in the Amaranth simulator.

Unit tests drive :class:`~gateware.ahb.CIMSlave` alone, its accelerator side played by
:class:`FakeAccel` (a cycle model of the accelerator's port contract that logs every write),
so that "no state change" is checked on the ports themselves. The last test loads the digits
network into :class:`~gateware.top.CIMTop` over the bus, runs it and reads the outputs back.
"""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

import compiler
from contract.config import HwConfig, get_config
from contract.program import (
    FIELDS,
    OP_IM2COL,
    Descriptor,
    ErrorCode,
    check_descriptor,
    im2col_lanes,
)
from gateware.accelerator import Accelerator, AccelError
from gateware.actbuf import ActivationBuffer
from gateware.ahb import CIMSlave, HBurst, HSize, HTrans, byte_lanes
from gateware.regmap import (
    REG_BLOCK,
    Access,
    Drive,
    Field,
    Port,
    Pulse,
    Register,
    Rise,
    register_map,
)
from gateware.top import CIMTop, verilog
from model import data, golden
from sim.accel_pysim import image_words
from sim.pysim_ahb import IDLE, T, ahb, lane_value, rd, wr
from sim.seed import test_seed

SEED = test_seed()
DIGITS = "models/digits_cnn_w4a4.npz"
TINY = get_config("tiny")
MAP = register_map(TINY)
LATENCY = ActivationBuffer.latency


# ---------------------------------------------------------------------------- fake accelerator


class FakeAccel:
    """The accelerator's side of the slave, per its port contract: ``start`` makes it busy
    for ``run_cycles`` cycles (then ``done``, and ``error`` with ``fail_code``), writes while
    not busy land in Python memories (the activation buffer lane by lane), the activation read
    port returns the word ``LATENCY`` cycles after its address (a non-transparent RAM). Every
    write, start and busy-time write is logged with its cycle. With an image buffer,
    ``image_active`` is the slot ``image_slot`` held at start while busy, ``image_slot``
    otherwise, and image writes are logged too (busy or not)."""

    def __init__(self, slave):
        self.p = slave.accel
        self.cfg = slave.regmap.config
        self.log = []
        self.act = {}
        self.cycle = 0
        self.run_cycles = 10
        self.fail_code = AccelError.NONE
        self.busy_left = 0
        self.latched = 0

    async def follow(self, ctx):
        """``image_active``: the latched slot while busy, ``image_slot`` otherwise (comb)."""
        p = self.p
        async for slot, busy in ctx.changed(p.image_slot, p.busy):
            ctx.set(p.image_active, self.latched if busy else slot)

    async def process(self, ctx):
        p = self.p
        R, ab = self.cfg.rows, self.cfg.a_bits
        lane = (1 << ab) - 1
        stage = 0
        ports = ("prog", "param", "weight") + (("image",) if self.cfg.image_channels else ())
        sampled = [p.start, p.act_w_en, p.act_w_addr, p.act_w_data, p.act_w_mask, p.act_r_addr,
                   p.image_slot,
                   *[getattr(p, f"{n}_w_{s}") for n in ports for s in ("en", "addr", "data")]]
        async for _, _, start, a_en, a_addr, a_data, a_mask, r_addr, slot, *mem in (
                ctx.tick().sample(*sampled)):
            self.cycle += 1
            busy = self.busy_left > 0
            if start and not busy:
                self.latched = slot
            for i, n in enumerate(ports):
                en, addr, word = mem[3 * i:3 * i + 3]
                if en:
                    self.log.append((self.cycle, n, addr, word, busy))
            if start:
                self.log.append((self.cycle, "start", 0, 0, busy))
            out, stage = stage, self.act.get(r_addr, 0)
            if a_en:
                self.log.append((self.cycle, "act", a_addr, (a_data, a_mask), busy))
                old = self.act.get(a_addr, 0)
                for i in range(R):
                    if a_mask >> i & 1:
                        old = old & ~(lane << i * ab) | a_data & (lane << i * ab)
                self.act[a_addr] = old
            ctx.set(p.act_r_data, out)
            ctx.set(p.act_r_valid, not busy)
            if start and not busy:
                self.busy_left = self.run_cycles
                for s in (p.done, p.error):
                    ctx.set(s, 0)
                ctx.set(p.error_code, AccelError.NONE)
                ctx.set(p.layer, 0)
            elif busy:
                self.busy_left -= 1
                ctx.set(p.layer, 1)
                if not self.busy_left:
                    ctx.set(p.done, 1)
                    if self.fail_code != AccelError.NONE:
                        ctx.set(p.error, 1)
                        ctx.set(p.error_code, self.fail_code)
            ctx.set(p.busy, self.busy_left > 0)


def run_slave(body, *, regmap=MAP, run_cycles=10, fail_code=AccelError.NONE):
    """Simulate a :class:`CIMSlave` on ``regmap`` with a :class:`FakeAccel`; ``body(ctx,
    slave, fake)`` is the testbench."""
    slave = CIMSlave(regmap=regmap,
                     accel=Accelerator(config=regmap.config).signature)
    fake = FakeAccel(slave)
    fake.run_cycles, fake.fail_code = run_cycles, fail_code

    async def tb(ctx):
        await body(ctx, slave, fake)

    sim = Simulator(slave)
    sim.add_clock(1e-6)
    sim.add_process(fake.process)
    sim.add_process(fake.follow)
    sim.add_testbench(tb)
    sim.run()
    return fake


def check(cond, seed, what):
    assert cond, f"seed {seed}: {what}"


def unmapped(regmap, rng, n):
    """``n`` random word addresses of the slave that no register or window covers."""
    regs = {r.offset for r in regmap.registers}
    out = []
    while len(out) < n:
        a = rng.randrange(regmap.span) & ~3
        if a < REG_BLOCK and a not in regs or (
                a >= REG_BLOCK and not any(w.offset <= a < w.end for w in regmap.windows)):
            out.append(a)
    return out


# ---------------------------------------------------------------------------- unit tests


def test_registers_reset_and_access():
    """Every register: reset value on read; RO writes answer ERROR and change nothing, RW
    registers keep exactly their field bits, W1C bits cannot be set by software, WO reads
    answer ERROR. Nothing reaches the accelerator."""
    rng = random.Random(SEED)

    async def body(ctx, s, fake):
        for r in MAP.registers:
            if r.access.readable:
                (res,) = await ahb(ctx, s.bus, [rd(r.offset)])
                check(res.ok and res.rdata == r.reset, SEED,
                      f"{r.name} reads {res.rdata:#x}, reset {r.reset:#x}")
            value = rng.getrandbits(32)
            if r.name == "CTRL":
                value &= ~r.field("START").mask    # START is tested with the accelerator
            w, back = await ahb(ctx, s.bus, [wr(r.offset, value), rd(r.offset)])
            if r.access is Access.RO:
                check(w.error and back.ok and back.rdata == r.reset, SEED,
                      f"write to RO {r.name}: {w.trace}, then {back.rdata:#x}")
            elif r.access is Access.RW:
                check(w.ok and back.rdata == value & r.mask, SEED,
                      f"RW {r.name}: wrote {value:#x}, read {back.rdata:#x}")
            elif r.access is Access.W1C:
                check(w.ok and back.rdata == r.reset, SEED, f"W1C {r.name} set by software")
            else:
                check(w.ok and back.error, SEED, f"WO {r.name}: {w.trace}, read {back.trace}")
        assert not fake.log

    run_slave(body)


def _error_cases(regmap, rng):
    """(what, transfer) pairs that must answer ERROR while the accelerator is idle."""
    win = {w.name: w for w in regmap.windows}
    act, prog, param, weight = win["ACT"], win["PROG"], win["PARAM"], win["WEIGHT"]
    ro = [r for r in regmap.registers if r.access is Access.RO]
    # Just past each block, where nothing follows it directly.
    ends = [b.end for b in regmap.windows if b.end < regmap.span
            and not any(w.offset == b.end for w in regmap.windows)]
    cases = [(f"unmapped {a:#x} past a window", rd(a)) for a in ends]
    cases += [(f"unmapped {a:#x}", rd(a)) for a in unmapped(regmap, rng, 6)]
    cases += [(f"write unmapped {a:#x}", wr(a, 1)) for a in unmapped(regmap, rng, 6)]
    cases += [
        ("register-block hole", rd(REG_BLOCK - 4)),
        (f"write RO {ro[0].name}", wr(ro[0].offset, 0)),
        (f"write RO {ro[-1].name}", wr(ro[-1].offset, 0)),
        ("read WO CTRL", rd(regmap.register("CTRL").offset)),
        ("read WO PROG", rd(prog.offset)), ("read WO PARAM", rd(param.end - 4)),
        ("read WO WEIGHT", rd(weight.offset + 4 * rng.randrange(weight.words))),
        ("byte read of a register", rd(regmap.register("IRQ_ENABLE").offset, 1)),
        ("halfword write of a register", wr(regmap.register("IRQ_ENABLE").offset, 3, 2)),
        ("byte START", wr(regmap.register("CTRL").offset, 1, 1)),
        ("halfword PROG write", wr(prog.offset + 2, 1, 2)),
        ("byte PARAM write", wr(param.offset + 1, 1, 1)),
        ("byte WEIGHT write", wr(weight.offset + 3, 1, 1)),
        ("doubleword ACT read", rd(act.offset, HSize.DOUBLEWORD)),
        ("128-bit ACT write", wr(act.offset, 1, HSize.WORD4)),
        ("1024-bit register read", rd(0, HSize.BITS1024)),
        ("misaligned ACT word", rd(act.offset + 2)),
        ("misaligned ACT halfword", wr(act.offset + 5, 1, 2)),
        ("misaligned register word", wr(regmap.register("IRQ_ENABLE").offset + 2, 3)),
        ("misaligned PROG word", wr(prog.offset + 1, 1)),
    ]
    return cases


def _busy_cases(regmap):
    """(what, transfer) pairs that must answer ERROR while the accelerator is busy."""
    win = {w.name: w for w in regmap.windows}
    act = win["ACT"]
    return [(f"{w.name} write while busy", wr(w.offset + 4, 0x5A5A5A5A)) for w in win.values()
            ] + [("ACT byte write while busy", wr(act.offset + 1, 0xA5, 1)),
                 ("ACT read while busy", rd(act.offset)),
                 ("START while busy", wr(regmap.register("CTRL").offset, 1))]


def test_error_responses():
    """Every error case answers the two-cycle ERROR and changes nothing: no write or START
    reaches the accelerator, IRQ_ENABLE keeps its value; the transfer pipelined behind each
    error (its address phase in the error's second cycle) completes normally."""
    rng = random.Random(SEED)
    cases = _error_cases(MAP, rng)
    busy_cases = _busy_cases(MAP)
    en = MAP.register("IRQ_ENABLE").offset

    async def body(ctx, s, fake):
        await ahb(ctx, s.bus, [wr(en, 0b10)])
        for what, t in cases:
            err, after = await ahb(ctx, s.bus, [t, rd(en)], rng)
            check(err.error, SEED, f"{what}: {err.trace}, expected ERROR")
            check(after.ok and after.rdata == 0b10, SEED, f"after {what}: {after}")
        check(not fake.log, SEED, f"the accelerator saw {fake.log}")
        (start,) = await ahb(ctx, s.bus, [wr(MAP.register("CTRL").offset, 1)])
        assert start.ok
        for what, t in busy_cases:
            err, after = await ahb(ctx, s.bus, [t, rd(en)], rng)
            check(err.error, SEED, f"{what}: {err.trace}, expected ERROR")
            check(after.ok and after.rdata == 0b10, SEED, f"after {what}: {after}")
            check(fake.busy_left > 0, SEED, "the fake accelerator finished too early")
        check([e[1] for e in fake.log] == ["start"], SEED, f"the accelerator saw {fake.log}")

    run_slave(body, run_cycles=200)


def test_weight_window_tail():
    """With a macro count that is not a power of two, the weight store holds whole weight rows,
    less than its window: the last mapped word takes a write, the words past it answer
    ERROR and reach nothing."""
    rm = register_map(get_config("tiny:macros=3"))
    w = rm.window("WEIGHT")
    assert w.words == 3 * 341 * 16 and w.end < w.offset + w.size
    rng = random.Random(SEED)

    async def body(ctx, s, fake):
        ok, past, last = await ahb(ctx, s.bus, [wr(w.end - 4, 7), wr(w.end, 8),
                                                wr(w.offset + w.size - 4, 9)], rng)
        check(ok.ok and past.error and last.error, SEED, f"{ok.trace} {past.trace} {last.trace}")
        check([(e[1], e[2], e[3]) for e in fake.log] == [("weight", w.words - 1, 7)], SEED,
              f"the accelerator saw {fake.log}")

    run_slave(body, regmap=rm)


def test_address_width():
    """A slave given more address space than the map needs answers ERROR above the map
    instead of aliasing; HADDR bits above its width are the decoder's and are ignored."""
    wide = register_map(TINY, addr_width=MAP.addr_width + 1)
    with pytest.raises(ValueError, match=f"Address width must be from {MAP.addr_width} "):
        register_map(TINY, addr_width=MAP.addr_width - 1)

    async def body(ctx, s, fake):
        top, alias, beyond = await ahb(ctx, s.bus, [
            rd(MAP.span), rd(wide.span | 0x1000_0000), rd(3 << 30 | wide.span)])
        assert top.error
        assert alias.ok and alias.rdata == MAP.register("MAGIC").reset
        assert beyond.ok and beyond.rdata == MAP.register("MAGIC").reset

    run_slave(body, regmap=wide)


def test_start_pipelined():
    """A window access or START pipelined right behind START answers ERROR (the accelerator
    owns its memories from the cycle START reaches it); after the run they work again."""
    ctrl = MAP.register("CTRL").offset
    weight, act = MAP.window("WEIGHT"), MAP.window("ACT")

    async def body(ctx, s, fake):
        res = await ahb(ctx, s.bus, [wr(ctrl, 1), wr(weight.offset, 7), rd(act.offset),
                                     wr(ctrl, 1)])
        assert [r.ok for r in res] == [True, False, False, False]
        assert all(r.error for r in res[1:])
        assert [e[1] for e in fake.log] == ["start"]
        while fake.busy_left:
            await ctx.tick()
        (res,) = await ahb(ctx, s.bus, [wr(weight.offset, 7)])
        assert res.ok and fake.log[-1][1:] == ("weight", 0, 7, False)

    run_slave(body, run_cycles=20)


def test_memory_windows():
    """Random word writes to PROG, PARAM and WEIGHT, as single transfers and INCR/INCR4/INCR16
    bursts with BUSY beats, IDLE cycles and other slaves' transfers (with wait states) in
    between: each arrives once, in order, at its word address, with zero wait states."""
    rng = random.Random(SEED)
    items, want = [], []
    for _ in range(40):
        w = MAP.window(rng.choice(["PROG", "PARAM", "WEIGHT"]))
        port = w.name.lower()
        burst = rng.choice([HBurst.SINGLE, HBurst.INCR, HBurst.INCR4, HBurst.INCR16])
        beats = {HBurst.SINGLE: 1, HBurst.INCR: rng.randint(1, 6), HBurst.INCR4: 4,
                 HBurst.INCR16: 16}[burst]
        first = rng.choice([0, w.words - beats, rng.randrange(w.words - beats + 1)])
        for i in range(beats):
            value = rng.getrandbits(32)
            trans = HTrans.NONSEQ if i == 0 else HTrans.SEQ
            if i and rng.random() < 0.2:
                items.append(T(addr=w.offset + 4 * (first + i), trans=HTrans.BUSY, burst=burst,
                               write=True))
            items.append(wr(w.offset + 4 * (first + i), value, trans=trans, burst=burst))
            want.append((port, first + i, value))
        if rng.random() < 0.3:
            items.append(IDLE)
        if rng.random() < 0.3:
            # An IDLE transfer that selects this slave (an address it would take) is no write.
            items.append(T(addr=w.offset, sel=True, write=True, trans=HTrans.IDLE))
        if rng.random() < 0.3:
            items.append(T(addr=rng.getrandbits(32) & ~3, sel=False, write=True,
                           stall=rng.randint(1, 3)))

    async def body(ctx, s, fake):
        res = await ahb(ctx, s.bus, items, rng)
        check(all(r.ok and r.waits == (0 if r.t.sel else r.t.stall) for r in res), SEED,
              [r for r in res if not r.ok])

    fake = run_slave(body)
    got = [(port, addr, value) for _, port, addr, value, busy in fake.log]
    check(got == want, SEED, "window writes differ")


ACT_CONFIGS = {
    "tiny": TINY,
    # 16-bit words (half a slice), 1 macro; and 8-bit lanes, four slices a word.
    "narrow": HwConfig(name="narrow", rows=8, cols=8, w_bits=4, a_bits=2, macros=1,
                       bank_words=64, prog_words=64, weight_words=1024, param_words=256),
    "a8": HwConfig(name="a8", rows=16, cols=8, w_bits=4, a_bits=8, macros=1,
                   bank_words=64, prog_words=64, weight_words=1024, param_words=256),
}


@pytest.mark.parametrize("name", ACT_CONFIGS)
def test_activation_window(name):
    """Random byte, halfword and word writes and reads of a few activation words against a
    byte-array model of the window: writes reach exactly their lanes (through act_w_mask),
    bits past a narrow word read 0, reads take LATENCY wait states and see a write
    pipelined right before them, writes none."""
    rng = random.Random(SEED)
    rm = register_map(ACT_CONFIGS[name])
    act = rm.window("ACT")
    cfg = rm.config
    word_bits = cfg.rows * cfg.a_bits
    live = 0xFFFF_FFFF if word_bits >= 32 else (1 << word_bits) - 1   # per slice
    words = [0, 1, act.words // 2, act.words - 1]      # both banks, their ends
    model = {}
    items = []
    for _ in range(300):
        size = rng.choice([1, 2, 4])
        byte = rng.choice(words) * act.word_bytes + rng.randrange(act.word_bytes // size) * size
        if rng.random() < 0.5:
            value = rng.getrandbits(8 * size)
            items.append(wr(act.offset + byte, value, size))
        else:
            items.append(rd(act.offset + byte, size))
        if rng.random() < 0.1:
            items.append(IDLE)

    async def body(ctx, s, fake):
        res = await ahb(ctx, s.bus, items, rng)
        for r in res:
            if not r.t.sel:
                continue
            check(r.ok, SEED, f"{r.t}: {r.trace}")
            byte = r.t.addr - act.offset
            sl = byte & ~3
            cur = model.get(sl, 0)
            if r.t.write:
                lanes = byte_lanes(byte, r.t.size)
                mask = sum(0xFF << 8 * i for i in range(4) if lanes >> i & 1) & live
                model[sl] = cur & ~mask | r.t.data & mask
                check(r.waits == 0, SEED, f"write with {r.waits} wait states")
            else:
                check(r.waits == LATENCY, SEED, f"read with {r.waits} wait states")
                check(r.rdata == cur, SEED,
                      f"{name}: read {r.rdata:#x} at {byte:#x}, model {cur:#x}")
        # The fake buffer (lane-masked writes) holds what the model holds.
        for w in words:
            word = sum(model.get(w * act.word_bytes + 4 * i, 0) << 32 * i
                       for i in range(rm.act_slices))
            check(fake.act.get(w, 0) == word, SEED, f"{name}: buffer word {w}")

    run_slave(body, regmap=rm)


def test_interrupt():
    """IRQ_STATUS is sticky on done and on error whatever IRQ_ENABLE holds, IRQ follows the
    enabled bits, writing 1 clears a bit and 0 leaves it, and a done event in the cycle of a
    clearing write wins."""
    en, st = MAP.register("IRQ_ENABLE"), MAP.register("IRQ_STATUS")
    DONE, ERR = st.field("DONE").mask, st.field("ERROR").mask
    ctrl = MAP.register("CTRL").offset
    run = 6

    async def wait_done(ctx, fake):
        while fake.busy_left:
            await ctx.tick()
        await ctx.tick()

    async def body(ctx, s, fake):
        async def status():
            (r,) = await ahb(ctx, s.bus, [rd(st.offset)])
            return r.rdata

        await ahb(ctx, s.bus, [wr(ctrl, 1)])
        await wait_done(ctx, fake)
        assert await status() == DONE and not ctx.get(s.irq)     # sticky, not enabled
        await ahb(ctx, s.bus, [wr(en.offset, DONE)])
        assert ctx.get(s.irq)
        await ahb(ctx, s.bus, [wr(st.offset, 0), wr(st.offset, ERR)])
        assert await status() == DONE and ctx.get(s.irq)
        await ahb(ctx, s.bus, [wr(st.offset, DONE)])
        assert await status() == 0 and not ctx.get(s.irq)

        fake.fail_code = AccelError.TILES
        await ahb(ctx, s.bus, [wr(ctrl, 1)])
        await wait_done(ctx, fake)
        assert await status() == DONE | ERR and ctx.get(s.irq)
        await ahb(ctx, s.bus, [wr(st.offset, DONE)])
        assert await status() == ERR and not ctx.get(s.irq)      # ERROR not enabled
        await ahb(ctx, s.bus, [wr(en.offset, DONE | ERR)])
        assert ctx.get(s.irq)
        await ahb(ctx, s.bus, [wr(st.offset, ERR)])
        assert not ctx.get(s.irq)

        # A clearing write at every distance from the done event: it clears the bit only if
        # its data phase ends after the event's cycle.
        fake.fail_code = AccelError.NONE
        seen = set()
        for k in range(run + 4):
            rises = []
            res = await ahb(ctx, s.bus, [wr(ctrl, 1), *[IDLE] * k, wr(st.offset, DONE)],
                            probe=lambda ctx, rises=rises: rises.append(ctx.get(s.accel.done)))
            await wait_done(ctx, fake)
            # done is still high from the previous run until START clears it.
            event = next((i for i in range(1, len(rises)) if rises[i] and not rises[i - 1]),
                         len(rises) + 10)
            clear = res[-1].cycle
            seen.add((clear > event) - (clear < event))
            want = 0 if clear > event else DONE
            assert await status() == want, f"clear in cycle {clear}, done event in {event}"
            await ahb(ctx, s.bus, [wr(st.offset, DONE)])
        assert seen == {-1, 0, 1}

    run_slave(body, run_cycles=run)


def _with(*extra):
    """The tiny map with ``extra`` registers declared after the others."""
    return dataclasses.replace(MAP, registers=(*MAP.registers, *extra))


def test_new_register_is_one_declaration():
    """Registers added to the map alone (no change to the slave) behave as declared: an RO
    register of two accelerator outputs reads them live and refuses writes; a W1C bit set
    when ``busy`` rises is sticky, ignores 0, clears on 1 and raises IRQ through its own
    ``irq_enable`` register (the map's IRQ_ENABLE stays 0)."""
    rm = _with(
        Register("RUN", 0x100, Access.RO, "Live run state", (
            Field("LAYER", 0, 8, "descriptor being run", hw=Port("layer")),
            Field("BUSY", 31, 1, "running", hw=Port("busy")))),
        Register("EVENTS", 0x104, Access.W1C, "Sticky events", (
            Field("STARTED", 3, 1, "a run began", hw=Rise("busy")),), irq_enable="EVENTS_EN"),
        Register("EVENTS_EN", 0x108, Access.RW, "Event interrupt enables", (
            Field("STARTED", 3, 1, "interrupt on EVENTS.STARTED"),)))
    run, ev, en = (rm.register(n) for n in ("RUN", "EVENTS", "EVENTS_EN"))
    started = ev.field("STARTED").mask
    ctrl = rm.register("CTRL").offset

    async def body(ctx, s, fake):
        res = await ahb(ctx, s.bus, [rd(run.offset), rd(ev.offset), wr(run.offset, 5),
                                     wr(en.offset, 0xFFFF_FFFF), rd(en.offset)])
        assert [r.ok for r in res] == [True, True, False, True, True]
        assert res[0].rdata == 0 and res[1].rdata == 0 and res[4].rdata == started
        assert not ctx.get(s.irq)
        await ahb(ctx, s.bus, [wr(ctrl, 1), IDLE, IDLE])
        assert fake.busy_left > 0
        live, events = await ahb(ctx, s.bus, [rd(run.offset), rd(ev.offset)])
        assert live.rdata == (1 << 31 | ctx.get(s.accel.layer)) and ctx.get(s.accel.layer) == 1
        assert events.rdata == started and ctx.get(s.irq)
        (kept,) = await ahb(ctx, s.bus, [wr(ev.offset, ~started & 0xFFFF_FFFF)])
        assert kept.ok and ctx.get(s.irq)
        await ahb(ctx, s.bus, [wr(ev.offset, started)])
        (events,) = await ahb(ctx, s.bus, [rd(ev.offset)])
        assert events.rdata == 0 and not ctx.get(s.irq)
        while fake.busy_left:
            await ctx.tick()
        (live,) = await ahb(ctx, s.bus, [rd(run.offset)])
        assert live.rdata == 1            # idle, the last layer's index stays
        assert [e[1] for e in fake.log] == ["start"]

    run_slave(body, regmap=rm, run_cycles=30)


@pytest.mark.parametrize("hw, field, message", [
    (Port("nonexistent"), ("F", 0, 8), "Register NEW: field F: the accelerator has no port "
     "'nonexistent'"),
    (Port("cycles_total"), ("F", 0, 8), "Register NEW: field F: the 32-bit port cycles_total "
     "does not fit 8 bits"),
    (Rise("layer"), ("F", 0, 1), "Register NEW: field F: a Rise needs a 1-bit port"),
    (Rise("start"), ("F", 0, 1), "Register NEW: field F: a Rise needs an accelerator output"),
    (Pulse("busy"), ("F", 0, 1), "Register NEW: field F: a Pulse needs an accelerator input"),
    (Pulse("start"), ("F", 0, 1), "accelerator input start is already driven by CTRL.START"),
    (Pulse("prog_w_en"), ("F", 0, 1), "prog_w_en is already driven by the slave"),
    (Drive("busy"), ("F", 0, 1), "Register NEW: field F: a Drive needs an accelerator input"),
    (Drive("start"), ("F", 0, 2), "Register NEW: field F: a Drive needs a 2-bit port; start "
     "has 1"),
    (Drive("image_slot"), ("F", 0, 1), "image_slot is already driven by IMAGE_SLOT.SLOT"),
])
def test_binding_errors(hw, field, message):
    """A declaration bound to a port the accelerator lacks, or one of the wrong direction or
    width, or driven twice, is refused when the slave is built, naming the register."""
    access = {Port: Access.RO, Rise: Access.W1C, Pulse: Access.WO, Drive: Access.RW}[type(hw)]
    rm = _with(Register("NEW", 0x100, access, "new", (Field(*field, "f", hw=hw),)))
    with pytest.raises(ValueError, match=message):
        CIMSlave(regmap=rm, accel=Accelerator(config=TINY).signature)


# ---------------------------------------------------------------------------- top level


def test_top_ports():
    """The top level's ports are the AMBA names and widths, and the Verilog has them plus
    clk and rst."""
    want = {"HSEL": (1, "i"), "HADDR": (32, "i"), "HTRANS": (2, "i"), "HWRITE": (1, "i"),
            "HSIZE": (3, "i"), "HBURST": (3, "i"), "HPROT": (4, "i"), "HWDATA": (32, "i"),
            "HREADY": (1, "i"), "HREADYOUT": (1, "o"), "HRESP": (1, "o"), "HRDATA": (32, "o"),
            "IRQ": (1, "o")}
    sig = CIMTop(config=TINY).signature
    got = {n: (Shape.cast(m.shape).width, "i" if m.flow == In else "o")
           for n, m in sig.members.items()}
    assert got == want
    with pytest.raises(ValueError, match="HwConfig"):
        CIMTop(config="tiny")
    with pytest.raises(ValueError, match="Address width"):
        CIMTop(config=TINY, addr_width=40)
    v = verilog(ACT_CONFIGS["narrow"], name="cim_small")
    header = v[v.index("module cim_small("):].split(";")[0]
    assert set(header[header.index("(") + 1:].rstrip(")").replace(" ", "").split(",")) == {
        *want, "clk", "rst"}


def _act_bytes(word: int, rm) -> bytes:
    return word.to_bytes(rm.act_slices * 4, "little")


def test_digits_over_bus():
    """The shipped digits model, loaded entirely over the bus into :class:`CIMTop` (program,
    weights and parameters in INCR16 bursts, the input image in random byte, halfword and word
    writes), started, waited for on IRQ, and read back over the bus: every output tensor equals
    the golden model's. While it runs, STATUS shows BUSY and window accesses and START answer
    ERROR; afterwards STATUS, IRQ_STATUS and the counters agree with the run."""
    rng = random.Random(SEED)
    model = golden.load(DIGITS)
    xs, _, _ = data.load_dataset("digits", "test", limit=1)
    program = compiler.compile_model(model, TINY)
    env = golden.run(model, xs[0][None])
    top = CIMTop(config=TINY)
    rm = top.regmap
    ab, R = TINY.a_bits, TINY.rows
    win = {w.name: w for w in rm.windows}
    off = {r.name: r.offset for r in rm.registers}
    st = rm.register("STATUS")

    def burst(window, words):
        items = []
        for i, v in enumerate(words):
            items.append(wr(win[window].offset + 4 * i, int(v), burst=HBurst.INCR16,
                            trans=HTrans.SEQ if i % 16 else HTrans.NONSEQ))
        return items

    # The input tensor's words as bytes, written in random aligned pieces.
    src = program.buffers[program.input_name]
    mem = np.zeros((1, 2 * program.bank_words, R), np.int64)
    compiler.write_tensor(mem, src.base, env[program.input_name], ab, ab)
    image = b"".join(_act_bytes(sum(int(v) << ab * r for r, v in enumerate(mem[0, a])), rm)
                     for a in range(src.base, src.base + src.words))
    base = win["ACT"].offset + src.base * win["ACT"].word_bytes
    act_items, pos = [], 0
    while pos < len(image):
        size = rng.choice([s for s in (1, 2, 4) if pos % s == 0])
        act_items.append(wr(base + pos, int.from_bytes(image[pos:pos + size], "little"), size))
        pos += size
    outs = [(n, program.buffers[n]) for n in program.names]
    # A layer's output is compared if no later layer overwrote its words.
    kept = [(n, a) for i, (n, a) in enumerate(outs)
            if not any(b.base < a.base + a.words and a.base < b.base + b.words
                       for _, b in outs[i + 1:])]
    out_words = sorted({a.base + i for _, a in kept for i in range(a.words)})
    got = {}

    async def tb(ctx):
        loads = (burst("PROG", program.program_words()) + burst("WEIGHT", program.weight_image)
                 + burst("PARAM", program.param_image) + act_items)
        res = await ahb(ctx, top, loads, rng)
        check(all(r.ok for r in res), SEED, [r for r in res if not r.ok][:3])
        res = await ahb(ctx, top, [wr(off["IRQ_ENABLE"], 0b11), wr(off["CTRL"], 1),
                                   rd(off["STATUS"]), wr(win["WEIGHT"].offset, 0),
                                   rd(win["ACT"].offset + 4), wr(off["CTRL"], 1),
                                   wr(win["PROG"].offset, 0)], rng)
        assert res[0].ok and res[1].ok
        check(res[2].rdata & st.field("BUSY").mask, SEED, f"STATUS {res[2].rdata:#x}")
        check(all(r.error for r in res[3:]), SEED, [r.trace for r in res[3:]])
        cycles = 0
        while not ctx.get(top.IRQ):
            await ctx.tick()
            cycles += 1
            assert cycles < 100_000, "no interrupt"
        status, irq, total, busy, compute, stall = await ahb(ctx, top, [
            rd(off[n]) for n in ("STATUS", "IRQ_STATUS", "CYCLES_TOTAL", "CYCLES_BUSY",
                                 "CYCLES_COMPUTE", "CYCLES_STALL")])
        f = {fl.name: (status.rdata & fl.mask) >> fl.pos for fl in st.fields}
        check(f == {"BUSY": 0, "DONE": 1, "ERROR": 0, "ERROR_CODE": AccelError.NONE.value,
                    "LAYER": len(program.names) - 1}, SEED, f"STATUS {f}")
        check(irq.rdata == rm.register("IRQ_STATUS").field("DONE").mask, SEED, irq.rdata)
        check(abs(busy.rdata - cycles) <= 8 and total.rdata >= busy.rdata
              and 0 < compute.rdata <= busy.rdata and stall.rdata <= busy.rdata, SEED,
              (cycles, total.rdata, busy.rdata, compute.rdata, stall.rdata))
        reads = []
        for w in out_words:
            for s in range(rm.act_slices):
                size = rng.choice([4, 4, 2, 1])
                a = win["ACT"].offset + w * win["ACT"].word_bytes + 4 * s
                reads += [rd(a + k, size) for k in range(0, 4, size)]
        res = await ahb(ctx, top, reads, rng)
        check(all(r.ok and r.waits == LATENCY for r in res), SEED, "activation reads")
        for r in res:
            byte = r.t.addr - win["ACT"].offset
            got.update({byte + k: lane_value(r) >> 8 * k & 0xFF for k in range(r.t.size)})

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    wb = win["ACT"].word_bytes
    for w in out_words:
        word = int.from_bytes(bytes(got[w * wb + i] for i in range(wb)), "little")
        mem[0, w] = [(word >> ab * r) & ((1 << ab) - 1) for r in range(R)]
    assert kept
    for name, a in kept:
        out = compiler.read_tensor(mem, a.base, a.shape, a.bits, a.signed, ab)
        bad = np.argwhere(out != env[name])
        check(not len(bad), SEED, f"layer {name}: {len(bad)} values differ, first at "
              f"{bad[:1].tolist()}")


def test_classifier_over_bus(tmp_path):
    """A network ending in global average pooling + classifier on the accelerator (a raw
    last layer) over the bus: RESULT reads 0 before a run; while it runs RESULT.VALID reads 0
    and the LOGITS window answers ERROR; at the end RESULT holds the golden model's class
    (two equal largest logits: the first) with VALID, and LOGITS word c the golden logit c
    (two's complement). LOGITS takes 32-bit reads only, and no writes. A second START clears
    VALID until that run ends (the same input: the same RESULT)."""
    from tests.test_accelerator import _classifier_net
    rng = random.Random(SEED)
    model, x = _classifier_net(tmp_path / "net.npz", tie=True)
    program = compiler.compile_model(model, TINY)
    assert program.raw
    env = golden.run(model, x[None])
    want = env["fc"][0]
    top = CIMTop(config=TINY)
    rm = top.regmap
    ab, R = TINY.a_bits, TINY.rows
    win = {w.name: w for w in rm.windows}
    logits, result = win["LOGITS"], rm.register("RESULT")
    valid, klass = result.field("VALID").mask, result.field("CLASS").mask
    off = {r.name: r.offset for r in rm.registers}
    src = program.buffers[program.input_name]
    mem = np.zeros((1, 2 * program.bank_words, R), np.int64)
    compiler.write_tensor(mem, src.base, env[program.input_name], ab, ab)
    act = [wr(win["ACT"].offset + (src.base + a) * win["ACT"].word_bytes + 4 * s,
              sum(int(v) << ab * r for r, v in enumerate(mem[0, src.base + a])) >> 32 * s
              & 0xFFFF_FFFF) for a in range(src.words) for s in range(rm.act_slices)]
    loads = [wr(win[w].offset + 4 * i, int(v)) for w, words in (
        ("PROG", program.program_words()), ("WEIGHT", program.weight_image),
        ("PARAM", program.param_image)) for i, v in enumerate(words)] + act

    async def run(ctx):
        """START, then RESULT and a LOGITS read while busy; wait for the end."""
        res = await ahb(ctx, top, [wr(off["CTRL"], 1), rd(off["RESULT"]),
                                   rd(logits.offset + 4)], rng)
        assert res[0].ok and res[1].ok and res[1].rdata & valid == 0, res[1].rdata
        assert res[2].error, res[2].trace
        for _ in range(100_000):
            if ctx.get(top.IRQ):
                break
            await ctx.tick()
        else:
            raise AssertionError("no interrupt")

    async def tb(ctx):
        res = await ahb(ctx, top, loads, rng)
        check(all(r.ok for r in res), SEED, [r for r in res if not r.ok][:3])
        (before,) = await ahb(ctx, top, [rd(off["RESULT"])], rng)
        assert before.ok and before.rdata == 0
        await ahb(ctx, top, [wr(off["IRQ_ENABLE"], 0b01)], rng)
        for again in range(2):
            if again:       # the network's later layers overwrite the input: write it again
                assert all(r.ok for r in await ahb(ctx, top, act, rng))
            await run(ctx)
            res = await ahb(ctx, top, [rd(off["STATUS"]), rd(off["RESULT"])]
                            + [rd(logits.offset + 4 * c) for c in range(TINY.cols)]
                            + [wr(logits.offset, 1), rd(logits.offset, 1),
                               rd(logits.offset + 2, 2), wr(off["RESULT"], 0),
                               wr(off["IRQ_STATUS"], 0b11)], rng)
            status, res_reg, *words = [r.rdata for r in res[:2 + TINY.cols]]
            assert status & rm.register("STATUS").field("ERROR").mask == 0, hex(status)
            assert res_reg == valid | 1, hex(res_reg)       # the first of the tied classes
            assert res_reg & klass == int(np.argmax(want)) == 1
            got = [w - (1 << 32) if w >> 31 else w for w in words]
            check(got[:len(want)] == want.tolist(), SEED, (got, want))
            assert all(r.ok and r.waits == 0 for r in res[:2 + TINY.cols])
            assert all(r.error for r in res[2 + TINY.cols:-1]), "LOGITS/RESULT misuse"

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


IMAGE_MAP = register_map(get_config("tiny:image_channels=1,image_size=4"))


def test_image_window_double_buffered():
    """The IMAGE window (32-bit writes only, write only) and IMAGE_SLOT: while idle both slots
    take writes; START latches IMAGE_SLOT; while busy a write to the other slot is OKAY and
    lands, one to the latched slot (or to IMAGE_SLOT, or a read) is ERROR and changes
    nothing; after the run both slots are open again. Once with each slot latched."""
    img, slot_reg = IMAGE_MAP.window("IMAGE"), IMAGE_MAP.register("IMAGE_SLOT").offset
    ctrl, half = IMAGE_MAP.register("CTRL").offset, IMAGE_MAP.window("IMAGE").slot_bytes
    assert img.slot_bytes and img.offset % img.size == 0
    cfg = IMAGE_MAP.register("CFG_IMAGE")
    assert cfg.reset == 1 | 4 << 8 | 7 << 20
    assert IMAGE_MAP.register("CAPS").field("IMAGE").reset == 1
    assert MAP.register("CAPS").field("IMAGE").reset == 0 and "IMAGE" not in {
        w.name for w in MAP.windows}
    want = []

    async def body(ctx, s, fake):
        res = await ahb(ctx, s.bus, [wr(img.offset, 1), wr(img.offset + half, 2),
                                     rd(img.offset), wr(img.offset, 3, size=2), rd(slot_reg)])
        assert [r.ok for r in res] == [True, True, False, False, True]
        assert lane_value(res[4]) == 0
        want.extend([(0, 1, False), (half // 4, 2, False)])
        for active in (1, 0):
            other = 1 - active
            res = await ahb(ctx, s.bus, [
                wr(slot_reg, active), wr(ctrl, 1),
                wr(img.offset + active * half + 4, 5),      # the run's slot: ERROR
                wr(img.offset + other * half + 8, 6),       # the other: OKAY while busy
                wr(img.offset + other * half + half - 4, 7),
                wr(slot_reg, other), rd(slot_reg)])
            assert [r.ok for r in res] == [True, True, False, True, True, False, True], res
            assert all(r.error for r in res if not r.ok)
            assert lane_value(res[-1]) == active
            assert ctx.get(s.accel.image_slot) == active and fake.busy_left
            want.extend([(other * half // 4 + 2, 6, True), (other * half // 4 + half // 4 - 1,
                                                             7, True)])
            while fake.busy_left:
                await ctx.tick()
            (res,) = await ahb(ctx, s.bus, [wr(img.offset + active * half, 8)])
            assert res.ok
            want.append((active * half // 4, 8, False))

    fake = run_slave(body, regmap=IMAGE_MAP, run_cycles=20)
    got = [(addr, word, busy) for _, port, addr, word, busy in fake.log if port == "image"]
    check(got == want, SEED, f"image writes {got}, want {want}")


def test_image_double_buffering_over_bus():
    """:class:`CIMTop` with an image buffer runs an im2col layer three times over the bus:
    image A in slot 0, run; while it runs, image B goes into slot 1 (OKAY) and a write to
    slot 0 answers ERROR; run on slot 1; run on slot 0 again. Each run's output, read back
    through the ACT window, is its image's im2col lanes, so B landed while busy and the
    refused write never did."""
    cfg = get_config("tiny:image_channels=3,image_size=8,im2col_kernel=3")
    rng = random.Random(SEED)
    zero = {f.name: 0 for f in FIELDS}
    d = Descriptor(**{**zero, "op": OP_IM2COL, "kernel": 3, "stride": 1, "padding": 1,
                      "relu": 1, "in_bits": 8, "out_bits": 8, "in_height": 7, "in_width": 6,
                      "in_groups": 1, "out_height": 7, "out_width": 6, "out_groups": 2,
                      "in_channels": 3, "out_channels": 27, "out_base": cfg.bank_words,
                      "last": 1})
    assert check_descriptor(d, cfg) == ErrorCode.NONE
    top = CIMTop(config=cfg)
    rm = top.regmap
    img, act = rm.window("IMAGE"), rm.window("ACT")
    off = {r.name: r.offset for r in rm.registers}
    images = [np.array([[[rng.randrange(256) for _ in range(6)] for _ in range(7)]
                        for _ in range(3)]) for _ in range(2)]
    R, ab, slices = cfg.rows, cfg.a_bits, rm.act_slices
    mem = np.zeros((1, 2 * cfg.bank_words, R), np.int64)
    words = range(d.out_base, d.out_base + 7 * 6 * 2 * 2)
    results = []

    def image(i, slot):
        return [wr(img.offset + 4 * a, w) for a, w in image_words(cfg, images[i], slot).items()]

    async def run(ctx, slot, during=()):
        res = await ahb(ctx, top, [wr(off["IMAGE_SLOT"], slot), wr(off["CTRL"], 1), *during],
                        rng)
        for _ in range(500):
            (status,) = await ahb(ctx, top, [rd(off["STATUS"])])
            if not status.rdata & 1:
                break
        assert status.rdata & 0b10, "the run did not end"
        res = res[2:]
        reads = await ahb(ctx, top, [rd(act.offset + (w * slices + s) * 4)
                                     for w in words for s in range(slices)], rng)
        vals = [r.rdata for r in reads]
        results.append({w: sum(vals[i * slices + s] << 32 * s for s in range(slices))
                        for i, w in enumerate(words)})
        return res

    async def tb(ctx):
        res = await ahb(ctx, top, [wr(img.offset + 4 * i, 0) for i in range(img.words)]
                        + [wr(rm.window("PROG").offset + 4 * i, v)
                           for i, v in enumerate(d.pack())] + image(0, 0), rng)
        assert all(r.ok for r in res)
        during = [wr(img.offset + 4, 0xDEADBEEF), *image(1, 1), wr(img.offset + 8, 1)]
        res = await run(ctx, 0, during)
        check([r.ok for r in res] == [False] + [True] * (len(during) - 2) + [False], SEED,
              [r.ok for r in res])
        await run(ctx, 1)
        await run(ctx, 0)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for x, got in zip((0, 1, 0), results):
        y = im2col_lanes(images[x][None], 3, 1, 1, 3)
        compiler.write_tensor(mem, d.out_base, y, 8, ab)
        want = {w: sum(int(v) << ab * r for r, v in enumerate(mem[0, w])) for w in words}
        check(got == want, SEED, f"image {x}: output differs")
