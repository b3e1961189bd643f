"""The RAM of gateware.ram: a shared write port (port A of a true-dual-port RAM)."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from gateware.ram import RAM, ram_verilog
from sim.seed import test_seed

SEED = test_seed()


@pytest.mark.parametrize("shared", [False, True])
def test_two_read_ports(shared):
    """Random writes (32-bit lanes) and reads on both ports against a dictionary: a read
    returns the word before a write in the same cycle; with ``shared``, a read on port 0 in a
    cycle that writes is not made (its data holds the word before), one on port 1 is."""
    rng = random.Random(SEED)
    ram = RAM(width=64, depth=16, granularity=32, read_ports=2, shared=shared)
    mem = [0] * 16
    got, want = [], []

    async def bench(ctx):
        held = [0, 0]
        for _ in range(400):
            w_en = rng.choice([0, 0, 1, 2, 3])
            w_addr, w_data = rng.randrange(16), rng.getrandbits(64)
            reads = [(rng.random() < 0.7, rng.randrange(16)) for _ in range(2)]
            ctx.set(ram.w_addr, w_addr)
            ctx.set(ram.w_data, w_data)
            ctx.set(ram.w_en, w_en)
            for port, (en, addr) in zip(ram.reads, reads):
                ctx.set(port.en, en)
                ctx.set(port.addr, addr)
            for n, (en, addr) in enumerate(reads):
                if en and not (shared and n == 0 and w_en):
                    held[n] = mem[addr]
            for lane in range(2):
                if w_en >> lane & 1:
                    mask = 0xFFFF_FFFF << (32 * lane)
                    mem[w_addr] = mem[w_addr] & ~mask | w_data & mask
            await ctx.tick()
            got.append([ctx.get(p.data) for p in ram.reads])
            want.append(list(held))

    sim = Simulator(ram)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want, f"seed {SEED}"


def test_shared_verilog():
    """The Verilog of a shared RAM: port A's address is the write's in a cycle that writes,
    and port 0 reads only in a cycle that writes nothing (no-change: UltraRAM)."""
    ram = RAM(width=64, depth=16, granularity=32, read_ports=2, shared=True, module="bank",
              ram_style="ultra")
    text = ram_verilog(ram)
    assert "wire [3:0] a_addr = |w_en ? w_addr : r0_addr;" in text
    assert "end else if (r0_en) r0_data <= mem[a_addr];" in text
    assert "if (r1_en) r1_data <= mem[r1_addr];" in text
    with pytest.raises(ValueError, match="shared write port needs two read ports"):
        RAM(width=64, depth=16, granularity=32, read_ports=3, shared=True)
