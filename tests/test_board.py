# amaranth: UnusedElaboratable=no
"""Board files, the platform, and the AXI4-Lite to AHB-Lite bridge of the board top.

The bridge runs in the Amaranth simulator against the real slave (:class:`CIMTop` on the
``tiny`` configuration), driven by an AXI4-Lite master with random valid and ready delays.
"""

import random

import pytest
from amaranth.hdl import Module, Value
from amaranth.sim import Simulator

from contract.config import get_config
from gateware.ahb import HTrans, byte_lanes
from gateware.regmap import MAGIC, VERSION, register_map
from gateware.top import CIMTop
from hw.bridge import OKAY, SLVERR, AxiLiteToAhb, strobe_transfer
from hw.platform import Board, BoardPlatform, board_names, load_board
from sim.seed import test_seed

SEED = test_seed()
TINY = get_config("tiny")
MAP = register_map(TINY)


# ----------------------------------------------------------------------------- boards


def test_shipped_board():
    assert "vu13p" in board_names()
    b = load_board("vu13p")
    assert b.device == "xcvu13p" and b.part == "xcvu13p-flga2577-2-e"
    assert b.capacity == {"lut": 1_728_000, "ff": 3_456_000, "carry8": 216_000,
                          "dsp": 12_288, "bram36": 2_688, "uram": 1_280}
    # The shipped pins are placeholders, and they are recognised as such.
    assert b.placeholder_pins == list(b.clock_pins)
    assert b.with_part(package="FHGB2104", speed="1-e").part == "xcvu13p-fhgb2104-1-e"


def test_board_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown board 'nope'; valid boards: .*vu13p"):
        load_board("nope")
    with pytest.raises(ValueError, match=r"unknown package 'ffvb676'.*valid: .*flga2577"):
        load_board("vu13p").with_part(package="ffvb676")
    with pytest.raises(ValueError, match=r"unknown speed grade '9-x'.*valid: .*2-e"):
        load_board("vu13p").with_part(speed="9-x")
    text = (load_board("vu13p").path).read_text()
    (tmp_path / "bad.toml").write_text(text.replace('name = "vu13p"', 'name = "bad"')
                                       .replace("frequency_hz = 100_000_000",
                                                'frequency_hz = "fast"'))
    with pytest.raises(ValueError, match=r"\[clock\]: 'frequency_hz' must be"):
        load_board("bad", boards_dir=tmp_path)
    (tmp_path / "broken.toml").write_text("name = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_board("broken", boards_dir=tmp_path)


def real_board(tmp_path, **changes) -> Board:
    """The shipped board with ball names instead of placeholders (and ``changes``)."""
    text = load_board("vu13p").path.read_text()
    text = text.replace('"PLACEHOLDER_CLK_P", "PLACEHOLDER_CLK_N"', '"AY23", "BA23"')
    text = text.replace('name = "vu13p"', 'name = "real"')
    for old, new in changes.items():
        text = text.replace(old, new)
    (tmp_path / "real.toml").write_text(text)
    return load_board("real", boards_dir=tmp_path)


def test_platform_resources(tmp_path):
    board = real_board(tmp_path, **{"# [reset]\n# pin = \"A1\"\n# active_low = true\n"
                                    "# iostandard = \"LVCMOS18\"":
                                    '[reset]\npin = "A1"\nactive_low = true\n'
                                    'iostandard = "LVCMOS18"'})
    assert board.placeholder_pins == []
    p = BoardPlatform(board)
    assert p._part == "xcvu13p-flga2577-2-e"
    assert p.default_clk_frequency == 100e6
    assert p.default_rst == "rst"
    assert p.lookup("rst").ios[0].invert        # active low: PinsN
    o = p.overrides(script_after_read="# ip")
    assert o["script_after_read"] == "# ip" and "COMPRESS" in o["add_constraints"]


# ----------------------------------------------------------------------------- bridge


def test_strobe_transfer():
    """The strobe decoder's reference: a strobe maps to a transfer exactly when some aligned
    byte, halfword or word transfer writes those lanes."""
    for strb in range(1, 16):
        got = strobe_transfer(strb)
        options = [(s, a) for s in (0, 1, 2) for a in range(0, 4, 1 << s)
                   if byte_lanes(a, 1 << s) == strb]
        assert got == (options[0] if options else None), strb


def bench():
    m = Module()
    m.submodules.bridge = bridge = AxiLiteToAhb()
    m.submodules.top = top = CIMTop(config=TINY)
    ahb = bridge.ahb
    for name in ("HSEL", "HADDR", "HTRANS", "HWRITE", "HSIZE", "HBURST", "HPROT", "HWDATA",
                 "HREADY"):
        m.d.comb += getattr(top, name).eq(Value.cast(getattr(ahb, name)))
    for name in ("HREADYOUT", "HRESP", "HRDATA"):
        m.d.comb += Value.cast(getattr(ahb, name)).eq(getattr(top, name))
    return m, bridge.axi, ahb


async def axi_write(ctx, axi, rng, addr, data, strb=0xF):
    ctx.set(axi.awaddr, addr)
    ctx.set(axi.awprot, 0b001)
    ctx.set(axi.wdata, data)
    ctx.set(axi.wstrb, strb)
    aw_at, w_at = rng.randrange(3), rng.randrange(3)
    aw_done = w_done = False
    t = 0
    while not (aw_done and w_done):
        ctx.set(axi.awvalid, not aw_done and t >= aw_at)
        ctx.set(axi.wvalid, not w_done and t >= w_at)
        aw_hs = ctx.get(axi.awvalid) and ctx.get(axi.awready)
        w_hs = ctx.get(axi.wvalid) and ctx.get(axi.wready)
        await ctx.tick()
        aw_done, w_done, t = aw_done or aw_hs, w_done or w_hs, t + 1
    ctx.set(axi.awvalid, 0)
    ctx.set(axi.wvalid, 0)
    b_at, t = rng.randrange(3), 0
    while True:
        ctx.set(axi.bready, t >= b_at)
        if ctx.get(axi.bvalid) and ctx.get(axi.bready):
            resp = ctx.get(axi.bresp)
            await ctx.tick()
            ctx.set(axi.bready, 0)
            return resp
        await ctx.tick()
        t += 1


async def axi_read(ctx, axi, rng, addr):
    ctx.set(axi.araddr, addr)
    ctx.set(axi.arprot, 0b001)
    ar_at, t = rng.randrange(3), 0
    while True:
        ctx.set(axi.arvalid, t >= ar_at)
        hs = ctx.get(axi.arvalid) and ctx.get(axi.arready)
        await ctx.tick()
        t += 1
        if hs:
            break
    ctx.set(axi.arvalid, 0)
    r_at, t = rng.randrange(3), 0
    while True:
        ctx.set(axi.rready, t >= r_at)
        if ctx.get(axi.rvalid) and ctx.get(axi.rready):
            out = ctx.get(axi.rresp), ctx.get(axi.rdata)
            await ctx.tick()
            ctx.set(axi.rready, 0)
            return out
        await ctx.tick()
        t += 1


def test_bridge_on_the_slave():
    """Registers, errors, narrow writes and wait states through the bridge, on the real
    slave; every AXI transaction is at most one AHB transfer, none for a refused strobe."""
    m, axi, ahb = bench()
    rng = random.Random(SEED)
    reg = {r.name: r.offset for r in MAP.registers}
    act = MAP.window("ACT").offset
    transfers = []

    async def monitor(ctx):
        async for _, _, trans, ready, write, addr in ctx.tick().sample(
                Value.cast(ahb.HTRANS), ahb.HREADY, ahb.HWRITE, ahb.HADDR):
            if trans == HTrans.NONSEQ.value and ready:
                transfers.append((write, addr))

    async def tb(ctx):
        def expect(n, what):
            assert len(transfers) == n, f"{what}: {transfers} (CIM_TEST_SEED={SEED})"

        resp, data = await axi_read(ctx, axi, rng, reg["MAGIC"])
        assert (resp, data) == (OKAY, MAGIC)
        resp, data = await axi_read(ctx, axi, rng, reg["VERSION"])
        assert (resp, data) == (OKAY, VERSION[0] << 16 | VERSION[1])
        assert await axi_write(ctx, axi, rng, reg["IRQ_ENABLE"], 3) == OKAY
        assert await axi_read(ctx, axi, rng, reg["IRQ_ENABLE"]) == (OKAY, 3)
        expect(4, "one transfer per transaction")
        # Errors from the slave: a read of a write-only register, an unmapped address.
        assert (await axi_read(ctx, axi, rng, reg["CTRL"]))[0] == SLVERR
        assert (await axi_read(ctx, axi, rng, MAP.span - 4))[0] == SLVERR
        expect(6, "slave errors")
        # Strobes: none is a no-op, a non-contiguous set is refused; neither reaches the bus.
        assert await axi_write(ctx, axi, rng, act, 0xFFFF_FFFF, strb=0) == OKAY
        assert await axi_write(ctx, axi, rng, act, 0xFFFF_FFFF, strb=0b0101) == SLVERR
        expect(6, "no bus transfer for strobes 0000 and 0101")
        # Word, byte and halfword writes into the activation window (reads: two wait states).
        assert await axi_write(ctx, axi, rng, act, 0x1122_3344) == OKAY
        assert await axi_write(ctx, axi, rng, act, 0x00AA_0000, strb=0b0100) == OKAY
        assert transfers[-1] == (1, act + 2)
        assert await axi_write(ctx, axi, rng, act, 0xBEEF_0000, strb=0b1100) == OKAY
        assert await axi_read(ctx, axi, rng, act) == (OKAY, 0xBEEF_3344)
        assert await axi_write(ctx, axi, rng, act + 4, 0x0000_0055, strb=0b0001) == OKAY
        assert await axi_read(ctx, axi, rng, act + 4) == (OKAY, 0x55)
        # A word register refuses a byte write (the slave's rule, passed through).
        assert await axi_write(ctx, axi, rng, reg["IRQ_ENABLE"], 0, strb=0b0001) == SLVERR
        assert await axi_read(ctx, axi, rng, reg["IRQ_ENABLE"]) == (OKAY, 3)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(tb)
    sim.run()
