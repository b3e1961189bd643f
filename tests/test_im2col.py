# amaranth: UnusedElaboratable=no
"""The im2col unit and the image buffer alone, against :func:`contract.program.im2col_lanes`
in the buffer layout of :func:`compiler.write_tensor`: every word, its address, and the
cycle of ``done``, over random layers (kernels below K, strides, paddings up to 3, odd sizes,
1 to ``image_channels`` channels, pixels of 1 to 8 bits on 2-, 4- and 8-bit lanes)."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

import compiler
from compiler import cycles
from contract.config import HwConfig
from contract.program import (
    FIELDS,
    OP_IM2COL,
    Descriptor,
    ErrorCode,
    check_descriptor,
    im2col_lanes,
)
from gateware.image import ImageBuffer
from gateware.sequencer import Im2col
from sim.accel_pysim import image_words
from sim.seed import test_seed

SEED = test_seed()
BANK = 1024

CONFIGS = {
    "a4k5": HwConfig(name="a4k5", rows=16, cols=8, w_bits=4, a_bits=4, macros=2,
                     max_planes=8, image_channels=3, image_size=12, im2col_kernel=5),
    "a2k3": HwConfig(name="a2k3", rows=16, cols=8, w_bits=4, a_bits=2, macros=2,
                     max_planes=8, image_channels=2, image_size=8, im2col_kernel=3),
    "a8k7": HwConfig(name="a8k7", rows=16, cols=8, w_bits=4, a_bits=8, macros=1,
                     image_channels=1, image_size=8, im2col_kernel=7),
}


def _layer(cfg, rng, widest=False):
    """A random im2col descriptor for ``cfg`` that the sequencer accepts; ``widest``: the
    most output rows and columns (a full-size image, k = 1, stride 1, padding 3)."""
    K = cfg.im2col_kernel
    while True:
        k, s, p = rng.randint(1, K), rng.choice((1, 2)), rng.randint(0, 3)
        h, w = rng.randint(1, cfg.image_size), rng.randint(1, cfg.image_size)
        if widest:
            k, s, p, h, w = 1, 1, 3, cfg.image_size, cfg.image_size
        c, bits = rng.randint(1, cfg.image_channels), rng.randint(1, 8)
        if h + 2 * p < k or w + 2 * p < k:
            continue
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        zero = {f.name: 0 for f in FIELDS}
        d = Descriptor(**{**zero, "op": OP_IM2COL, "kernel": k, "stride": s, "padding": p,
                          "relu": 1, "in_bits": bits, "out_bits": bits, "in_height": h,
                          "in_width": w, "in_groups": 1, "out_height": ho, "out_width": wo,
                          "out_groups": -(-c * K * K // cfg.rows), "in_channels": c,
                          "out_channels": c * K * K,
                          "out_base": BANK + rng.randrange(BANK // 2)})
        if check_descriptor(d, cfg, BANK) == ErrorCode.NONE:
            return d


class _Bench(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        self.buf, self.unit = ImageBuffer(config=cfg), Im2col(config=cfg, addr_width=10)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf, m.submodules.unit = self.buf, self.unit
        wiring.connect(m, self.unit.image, self.buf.read)
        return m


@pytest.mark.parametrize("name", CONFIGS)
def test_im2col_unit(name):
    cfg = CONFIGS[name]
    rng = random.Random(f"{SEED}-{name}")
    layers = [_layer(cfg, rng) for _ in range(10)] + [_layer(cfg, rng, widest=True)]
    # Pixels of 8 bits whatever in_bits: the unit cuts them, as execute_memory does.
    images = [np.array([[[rng.randrange(256) for _ in range(d.in_width)]
                         for _ in range(d.in_height)] for _ in range(d.in_channels)])
              for d in layers]
    dut = _Bench(cfg)
    unit, buf = dut.unit, dut.buf
    got = []

    async def tb(ctx):
        for i, (d, img) in enumerate(zip(layers, images)):
            slot = i % 2
            ctx.set(buf.w_en, 1)
            for a, w in image_words(cfg, img, slot).items():
                ctx.set(buf.w_addr, a)
                ctx.set(buf.w_data, w)
                await ctx.tick()
            ctx.set(buf.w_en, 0)
            words = sum(v << (32 * j) for j, v in enumerate(d.pack()))
            ctx.set(unit.desc.as_value(), words)
            ctx.set(unit.slot, slot)
            ctx.set(unit.start, 1)
            await ctx.tick()
            ctx.set(unit.start, 0)
            writes, n = {}, 0
            while True:
                n += 1
                assert n < 100_000
                if ctx.get(unit.write.valid):
                    assert ctx.get(unit.busy) and ctx.get(unit.write.payload.mask) == 0xFFFF
                    a = ctx.get(unit.write.payload.addr)
                    assert a not in writes, f"word {a} written twice"
                    writes[a] = ctx.get(unit.write.payload.word.as_value())
                if ctx.get(unit.done):
                    break
                await ctx.tick()
            assert ctx.get(unit.bank) == 1
            await ctx.tick()
            assert not ctx.get(unit.busy)
            got.append((writes, n))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    R, ab = cfg.rows, cfg.a_bits
    for d, img, (writes, n) in zip(layers, images, got):
        y = im2col_lanes(img[None] & ((1 << d.in_bits) - 1), d.kernel, d.stride, d.padding,
                         cfg.im2col_kernel)
        mem = np.full((1, 2 * BANK, R), -1, np.int64)
        compiler.write_tensor(mem, d.out_base, y, d.in_bits, ab)
        want = {a: sum(int(v) << (ab * r) for r, v in enumerate(mem[0, a]))
                for a in np.flatnonzero(mem[0, :, 0] >= 0)}
        where = f"seed {SEED}: {name} {d}"
        assert sorted(writes) == sorted(a - BANK for a in want), where
        for a, w in want.items():
            assert writes[a - BANK] == w, f"{where}: word {a}: {writes[a - BANK]:#x} != {w:#x}"
        # done n cycles after start: the layer's cycles less the issuer's (start, check)
        # and DRAIN cycles.
        assert n + 3 == cycles.im2col_cycles(d, cfg).cycles, where


def test_accelerator_drops_writes_to_the_running_slot():
    """The accelerator's own guard behind the bus slave's ERROR: while busy, an image write to
    the slot latched at start is dropped, one to the other slot lands (the im2col layer alone,
    run on slot 0 while both are written every cycle, then on slot 1, then on slot 0)."""
    from gateware.accelerator import Accelerator
    from sim.accel_pysim import write_port

    cfg = HwConfig(name="img", rows=16, cols=8, w_bits=4, a_bits=4, macros=2,
                   image_channels=1, image_size=8, im2col_kernel=3)
    zero = {f.name: 0 for f in FIELDS}
    d = Descriptor(**{**zero, "op": OP_IM2COL, "kernel": 3, "stride": 1, "padding": 1,
                      "relu": 1, "in_bits": 8, "out_bits": 8, "in_height": 8, "in_width": 8,
                      "in_groups": 1, "out_height": 8, "out_width": 8, "out_groups": 1,
                      "in_channels": 1, "out_channels": 9, "out_base": cfg.bank_words,
                      "last": 1})
    assert check_descriptor(d, cfg) == ErrorCode.NONE
    rng = random.Random(SEED)
    imgs = [np.array([[[rng.randrange(256) for _ in range(8)] for _ in range(8)]])
            for _ in range(2)]
    dut = Accelerator(config=cfg)
    words = list(range(d.out_base, d.out_base + 64 * 2))
    outs = []

    async def run(ctx, slot, during=None):
        ctx.set(dut.image_slot, slot)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        n = 0
        while not ctx.get(dut.done):
            if during:
                a, w = during[n % len(during)]
                ctx.set(dut.image_w_en, 1)
                ctx.set(dut.image_w_addr, a)
                ctx.set(dut.image_w_data, w)
            n += 1
            await ctx.tick()
        ctx.set(dut.image_w_en, 0)
        got = []
        for i in range(len(words) + 2):
            ctx.set(dut.act_r_addr, words[min(i, len(words) - 1)])
            if i >= 2:
                got.append(ctx.get(dut.act_r_data))
            await ctx.tick()
        outs.append(got)

    async def tb(ctx):
        await write_port(ctx, dut, "prog", enumerate(d.pack()))
        await write_port(ctx, dut, "image", image_words(cfg, imgs[0], 0).items())
        garbage = [(a, 0xA5A5A5A5) for a in image_words(cfg, imgs[0], 0)]
        other = list(image_words(cfg, imgs[1], 1).items())
        await run(ctx, 0, [p for pair in zip(garbage, other) for p in pair])
        await run(ctx, 1)
        await run(ctx, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    mem = np.zeros((1, 2 * cfg.bank_words, cfg.rows), np.int64)
    for x, got in zip((0, 1, 0), outs):
        compiler.write_tensor(mem, d.out_base, im2col_lanes(imgs[x][None], 3, 1, 1, 3), 8, 4)
        want = [sum(int(v) << 4 * r for r, v in enumerate(mem[0, w])) for w in words]
        assert got == want, f"seed {SEED}: image {x}"
