"""Register bench: the accelerator's AHB-Lite slave against the register map.

Everything comes from :func:`gateware.regmap.register_map` of the target configuration; no
offset is written here. Every transfer the monitor sees completing on the slave goes through
the scoreboard (:class:`sim.regmodel.Scoreboard`): the response and read data must be what
the model of the map predicts, and the protocol checker watches every cycle.

* ``reset_values``: every readable register reads its declared reset value after reset.
* ``access_types``: each register and window answers reads and writes as its access type
  says (RO, RW, W1C, WO), and ERROR for every size it does not take and for misaligned
  addresses, with no state change.
* ``unmapped``: every unmapped word of the register block and samples of every other gap
  answer ERROR to reads and writes; the address bits above the slave's space are ignored.
* ``random_traffic``: a seeded mix of all of the above, back to back with bursts, IDLE and
  BUSY cycles and a waiting bystander slave.
* ``irq_and_w1c``: a program that stops on an error sets ``STATUS`` and ``IRQ_STATUS``;
  ``IRQ`` follows ``IRQ_ENABLE``; writing 1 clears exactly the written bits of ``IRQ_STATUS``.
"""

from __future__ import annotations

import dataclasses

import cocotb

import compiler
from gateware.accelerator import AccelError
from gateware.regmap import REG_BLOCK, Access
from model import golden
from sim.ahb import Op, split_bursts
from sim.cim import Device, setup_device
from sim.regmodel import ERROR, FREE_RUNNING, OKAY
from sim.testbench import REPO

DIGITS = REPO / "models" / "digits_cnn_w4a4.npz"


def check_irq(dev: Device) -> None:
    want = dev.model.irq()
    got = int(dev.env.dut.IRQ.value)
    dev.env.check(want is None or got == want, f"IRQ is {got}, model {want}")


async def expect(dev: Device, ops: list[Op], resps: list[int] | int) -> list[Op]:
    """Run ``ops`` and check each response (the scoreboard also checks them)."""
    if isinstance(resps, int):
        resps = [resps] * len(ops)
    await dev.env.master.run(ops)
    for op, want in zip(ops, resps):
        dev.env.check(op.resp == want, f"{op.describe()} "
                                       f"[{dev.model.decode(op.addr).name}]: response "
                                       f"{op.resp}, expected {want}")
    return ops


async def read_all(dev: Device) -> dict[str, int]:
    """Every readable register, read back to back (the scoreboard compares each)."""
    regs = dev.model.readable()
    ops = await expect(dev, [Op(addr=dev.bus.reg_addr(r.name), write=False) for r in regs],
                       OKAY)
    return {r.name: op.rdata for r, op in zip(regs, ops)}


@cocotb.test()
async def reset_values(dut):
    dev = await setup_device(dut, "reset_values")
    values = await read_all(dev)
    for r in dev.model.readable():
        if r.name in FREE_RUNNING:      # counts from reset: the scoreboard bounds it
            continue
        for f in r.fields:
            got = (values[r.name] >> f.pos) & ((1 << f.width) - 1)
            dev.env.check(got == f.reset, f"{r.name}.{f.name} resets to {got}, the map says "
                                          f"{f.reset}")
        dev.env.check(values[r.name] & ~r.mask == 0, f"{r.name}: bits outside its fields "
                                                     f"read {values[r.name]:#x}")
    await dev.env.cycles(2)
    check_irq(dev)
    dev.env.check(dev.scoreboard.compared_reads == len(values), "scoreboard compared too little")


@cocotb.test()
async def access_types(dut):
    dev = await setup_device(dut, "access_types")
    rng, bus = dev.env.rng, dev.bus
    perm = dev.env.monitor.master.permit
    for r in dev.regmap.registers:
        a = bus.reg_addr(r.name)
        data = rng.getrandbits(32)
        if r.name == "CTRL":
            data &= ~r.field("START").mask          # START is the run bench's business
        (before,) = await expect(dev, [Op(addr=a, write=False)],
                                 OKAY if r.access.readable else ERROR)
        await expect(dev, [Op(addr=a, write=True, data=data)],
                     OKAY if r.access.writable else ERROR)
        if r.access.readable:
            (after,) = await expect(dev, [Op(addr=a, write=False)], OKAY)
        if r.access is Access.RW:
            dev.env.check(after.rdata == data & r.mask, f"{r.name}: wrote {data:#x}, read "
                                                        f"{after.rdata:#x}")
            ops = await expect(dev, [Op(addr=a, write=True, data=0xFFFF_FFFF),
                                     Op(addr=a, write=False),
                                     Op(addr=a, write=True, data=0), Op(addr=a, write=False)],
                               OKAY)
            dev.env.check((ops[1].rdata, ops[3].rdata) == (r.mask, 0),
                          f"{r.name}: all ones read {ops[1].rdata:#x}, zero {ops[3].rdata:#x}")
        elif r.access is Access.W1C:
            # Software cannot set an event bit: all ones written to a clear register.
            dev.env.check(before.rdata == 0 and after.rdata == 0,
                          f"{r.name}: {before.rdata:#x} -> {after.rdata:#x} after writing "
                          f"{data:#x}")
        elif r.access is Access.RO and r.name not in FREE_RUNNING:
            dev.env.check(after.rdata == before.rdata, f"{r.name}: a refused write changed "
                                                       f"it ({before.rdata:#x} -> "
                                                       f"{after.rdata:#x})")
        # Sizes the registers do not take, and misaligned words: ERROR, nothing changes.
        with perm("alignment", "size"):
            narrow = [Op(addr=a + i, write=w, size=s, data=rng.getrandbits(8 << s))
                      for w in (False, True) for s, offs in ((0, (0, 1, 2, 3)), (1, (0, 2)))
                      for i in offs]
            narrow += [Op(addr=a + i, write=w, data=rng.getrandbits(32))
                       for w in (False, True) for i in (1, 2, 3)]
            narrow += [Op(addr=a, write=w, size=3) for w in (False, True)]
            await expect(dev, narrow, ERROR)
    await read_all(dev)
    for w in dev.regmap.windows:
        base = bus.win_addr(w.name)
        mapped = w.end - w.offset       # the window's tail past its words is unmapped
        if mapped < w.size:
            for write in (True, False):
                await expect(dev, [Op(addr=base + mapped, write=write, data=1),
                                   Op(addr=base + w.size - 4, write=write, data=2)], ERROR)
        offs = sorted({0, mapped - 4, 4 * rng.randrange(mapped // 4)})
        for off in offs:
            a = base + off
            await expect(dev, [Op(addr=a, write=True, data=rng.getrandbits(32))],
                         OKAY if w.access.writable else ERROR)
            await expect(dev, [Op(addr=a, write=False)], OKAY if w.access.readable else ERROR)
            for size, lanes in ((0, (0, 1, 2, 3)), (1, (0, 2))):
                ok = OKAY if (1 << size) in w.sizes else ERROR
                await expect(dev, [Op(addr=a + i, write=True, size=size,
                                      data=rng.getrandbits(8 << size)) for i in lanes], ok)
                await expect(dev, [Op(addr=a + i, write=False, size=size) for i in lanes],
                             ok if w.access.readable else ERROR)
            with perm("alignment", "size"):
                await expect(dev, [Op(addr=a + 1, write=True, size=1),
                                   Op(addr=a + 2, write=True), Op(addr=a + 3, write=False),
                                   Op(addr=a, write=False, size=3),
                                   Op(addr=a, write=True, size=4)], ERROR)
    await read_all(dev)
    check_irq(dev)


@cocotb.test()
async def unmapped(dut):
    dev = await setup_device(dut, "unmapped")
    rng, model = dev.env.rng, dev.model
    gaps = model.unmapped_offsets()
    dev.env.check(gaps, "the map has no gaps to test")
    ops = []
    for lo, hi in gaps:
        if hi <= REG_BLOCK:
            offsets = range(lo, hi, 4)                       # the whole register block
        else:
            offsets = sorted({lo, hi - 4, *(lo + 4 * rng.randrange((hi - lo) // 4)
                                            for _ in range(8))})
        for off in offsets:
            ops += [Op(addr=off, write=False), Op(addr=off, write=True,
                                                  data=rng.getrandbits(32))]
    for i in range(0, len(ops), 64):
        await expect(dev, ops[i:i + 64], ERROR)
    dev.env.check(len(ops) > 2 * len(gaps), "too few unmapped addresses tried")
    values = await read_all(dev)
    # Address bits above the slave's space are ignored: an alias reads the same registers.
    span = dev.regmap.span
    alias = [Op(addr=span * rng.randrange(1, min(0xF000_0000 // span, 64)) + r.offset,
                write=False) for r in model.readable()]
    await expect(dev, alias, OKAY)
    for op, r in zip(alias, model.readable()):
        dev.env.check(op.rdata == values[r.name] or r.name in FREE_RUNNING,
                      f"{r.name} at alias 0x{op.addr:08x} reads {op.rdata:#x}, not "
                      f"{values[r.name]:#x}")


def random_ops(dev: Device, count: int) -> list[list[Op]]:
    """Batches of mixed traffic; illegal transfers (size, alignment) in odd batches."""
    rng, bus, rm, model = dev.env.rng, dev.bus, dev.regmap, dev.model
    act = rm.window("ACT")
    act_lo = 4 * rng.randrange(act.size // 4 - 256)
    gaps = model.unmapped_offsets()
    legal, illegal = [], []
    for _ in range(count):
        k = rng.random()
        if k < 0.3:
            r = rng.choice(rm.registers)
            data = rng.getrandbits(32)
            if r.name == "CTRL":
                data &= ~r.field("START").mask
            legal.append(Op(addr=bus.reg_addr(r.name), write=rng.random() < 0.5, data=data))
            if rng.random() < 0.2:
                s = rng.choice((0, 1))
                illegal.append(Op(addr=bus.reg_addr(r.name) + (rng.randrange(4) >> s << s),
                                  write=rng.random() < 0.5, size=s, data=data))
        elif k < 0.55:
            s = rng.choice((0, 1, 2))
            off = act_lo + (rng.randrange(1024) >> s << s)
            legal.append(Op(addr=bus.win_addr("ACT", off), write=rng.random() < 0.6, size=s,
                            data=rng.getrandbits(8 << s)))
        elif k < 0.7:
            n = rng.randint(1, 24)
            off = act_lo + 4 * rng.randrange(256 - n)
            write = rng.random() < 0.5
            legal += dev.env.master.block_ops(
                bus.win_addr("ACT", off), n, write=write,
                data=[rng.getrandbits(32) for _ in range(n)] if write else None)
        elif k < 0.8:
            w = rng.choice([w for w in rm.windows if w.name != "ACT"])
            off = 4 * rng.randrange(w.size // 4)
            legal.append(Op(addr=bus.win_addr(w.name, off), write=rng.random() < 0.7,
                            data=rng.getrandbits(32)))
        elif k < 0.9:
            lo, hi = rng.choice(gaps)
            legal.append(Op(addr=lo + 4 * rng.randrange((hi - lo) // 4),
                            write=rng.random() < 0.5, data=rng.getrandbits(32)))
        else:
            # A burst straight across registers, gaps and write-only registers.
            n = rng.choice((4, 8, 16))
            start = 4 * rng.randrange(0x60 // 4) // n * n
            legal += dev.env.master.block_ops(start, n, write=False, bursts=f"INCR{n}")
        if rng.random() < 0.05:
            illegal.append(Op(addr=bus.win_addr("ACT", act_lo) + rng.choice((1, 2, 3)),
                              write=rng.random() < 0.5, data=rng.getrandbits(32)))
    return [legal, illegal]


@cocotb.test()
async def random_traffic(dut):
    dev = await setup_device(dut, "random_traffic")
    legal, illegal = random_ops(dev, 1500)
    chunks = split_bursts(legal, 200)
    for i, chunk in enumerate(chunks):
        await dev.env.master.run(chunk)
        with dev.env.monitor.master.permit("size", "alignment"):
            await dev.env.master.run(illegal[i::len(chunks)])
        check_irq(dev)
    await read_all(dev)
    await dev.env.cycles(2)
    board = dev.scoreboard
    dev.env.check(board.unchecked == 0, f"{board.unchecked} transfers unpredicted")
    errors = sum(op.resp == ERROR for op in legal + illegal)
    dev.env.check(board.compared_reads > 200 and errors > 100,
                  f"weak mix: {board.compared_reads} reads compared, {errors} ERRORs")
    cocotb.log.info("%d transfers checked, %d reads compared, %d ERRORs; %d cycles",
                    board.checked, board.compared_reads, errors, dev.env.monitor.cycles)


@cocotb.test()
async def irq_and_w1c(dut):
    dev = await setup_device(dut, "irq_and_w1c")
    bus, model = dev.bus, dev.model
    program = compiler.compile_model(golden.load(DIGITS), dev.regmap.config)
    bad = dataclasses.replace(program.descriptors[0], kernel=2)      # no 2x2 kernels
    await dev.env.master.write_words(bus.win_addr("PROG"), bad.pack())
    await bus.write("IRQ_ENABLE", 0)
    await bus.start()
    await bus.wait_done(irq=False, max_cycles=1000)
    model.idle()
    status = await bus.read("STATUS")
    dev.env.check(bus.field("STATUS", "DONE", status) and bus.field("STATUS", "ERROR", status)
                  and not bus.field("STATUS", "BUSY", status)
                  and bus.field("STATUS", "ERROR_CODE", status) == AccelError.KERNEL.value,
                  f"STATUS 0x{status:08x} after a program with kernel 2")
    both = bus.bits("IRQ_STATUS", DONE=1, ERROR=1)
    dev.env.check(await bus.read("IRQ_STATUS") == both, "IRQ_STATUS after the run")
    await dev.env.cycles(2)
    check_irq(dev)
    dev.env.check(int(dev.env.dut.IRQ.value) == 0, "IRQ with IRQ_ENABLE = 0")
    for enable in ("DONE", "ERROR"):
        await bus.write("IRQ_ENABLE", bus.bits("IRQ_ENABLE", **{enable: 1}))
        await dev.env.cycles(2)
        dev.env.check(int(dev.env.dut.IRQ.value) == 1, f"IRQ with IRQ_ENABLE.{enable}")
    await bus.write("IRQ_STATUS", 0)                   # writing 0 clears nothing
    dev.env.check(await bus.read("IRQ_STATUS") == both, "IRQ_STATUS after writing 0")
    await bus.write("IRQ_STATUS", bus.bits("IRQ_STATUS", DONE=1))
    dev.env.check(await bus.read("IRQ_STATUS") == bus.bits("IRQ_STATUS", ERROR=1),
                  "IRQ_STATUS after clearing DONE")
    await dev.env.cycles(2)
    dev.env.check(int(dev.env.dut.IRQ.value) == 1, "IRQ with ERROR pending and enabled")
    await bus.write("IRQ_STATUS", 0xFFFF_FFFF)
    dev.env.check(await bus.read("IRQ_STATUS") == 0, "IRQ_STATUS after clearing all")
    await dev.env.cycles(2)
    dev.env.check(int(dev.env.dut.IRQ.value) == 0, "IRQ after clearing IRQ_STATUS")
    # START clears DONE and ERROR (and the program stops again the same way).
    await bus.start()
    await bus.wait_done(irq=False, max_cycles=1000)
    model.idle()
    status = await bus.read("STATUS")
    dev.env.check(bus.field("STATUS", "ERROR_CODE", status) == AccelError.KERNEL.value,
                  f"STATUS 0x{status:08x} after the second run")
    await read_all(dev)
