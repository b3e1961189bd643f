"""Bus bench (target ``ahb``): the driver, the monitor and the checker against each other.

The harness without the accelerator: :class:`~sim.harness.AhbRam` with random wait states at
``0xF000_0000`` and an ERROR-only default slave everywhere else.

* ``random_traffic``: a seeded mix of every transfer the driver can issue, legal and not,
  back to back; a byte-level RAM model scores every transfer the monitor sees; the driver's
  own view of each response must equal the monitor's; and coverage counters prove that the
  mix really held each burst kind, size, wait states, BUSY and IDLE cycles, ERRORs and
  cancelled transfers.
* ``checker_catches``: the RAM misbehaves on purpose (:class:`~sim.harness.Fault`); the
  monitor must report exactly the rule that each fault breaks, and nothing on the same
  traffic without a fault.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import SimTimeoutError, with_timeout

from sim.ahb import BURSTS, Op, burst_ops
from sim.ahb_checker import BUSY, IDLE, Observed, lanes_mask
from sim.harness import RAM_BASE, RAM_WORDS, Fault
from sim.testbench import Env, start

RAM_BYTES = 4 * RAM_WORDS


class RamModel:
    """Byte-level model of :class:`~sim.harness.AhbRam`: the scoreboard of the RAM."""

    def __init__(self, env: Env, *, collect: bool = False):
        self.env = env
        self.mem = bytearray(RAM_BYTES)
        self.collect = collect
        self.mismatches: list[str] = []
        self.seen = []

    @staticmethod
    def legal(addr: int, size: int) -> bool:
        off = addr - RAM_BASE
        return 0 <= off < RAM_BYTES and size <= 2 and addr % (1 << size) == 0

    def __call__(self, t: Observed) -> None:
        self.seen.append(t)
        want = 0 if self.legal(t.addr, t.size) else 1
        problems = []
        if t.resp != want:
            problems.append(f"response {t.resp}, model {want}")
        elif want == 0:
            off = t.addr - RAM_BASE
            lanes = lanes_mask(t.addr, t.size)
            shift = 8 * (t.addr & 3)
            n = 1 << t.size
            if t.write:
                value = (t.wdata & lanes) >> shift
                self.mem[off:off + n] = value.to_bytes(n, "little")
            else:
                expect = int.from_bytes(self.mem[off:off + n], "little")
                got = None if t.rdata is None else (t.rdata & lanes) >> shift
                if got != expect:
                    problems.append(f"read data {got}, model {expect}")
        if problems:
            msg = f"RAM scoreboard: {t.describe()}: {'; '.join(problems)}"
            if not self.collect:
                self.env.check(False, msg)
            self.mismatches.append(msg)


def random_ops(env: Env, count: int) -> list[list[Op]]:
    """Batches of ops: legal RAM traffic of every kind mixed with ERROR cases."""
    rng, m = env.rng, env.master
    batches, batch = [], []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.35:
            size = rng.choice((0, 1, 2))
            addr = RAM_BASE + rng.randrange(RAM_BYTES >> size << size) // (1 << size) * (
                1 << size)
            write = rng.random() < 0.5
            batch.append(Op(addr=addr, write=write, size=size,
                            data=rng.getrandbits(8 << size)))
        elif kind < 0.75:
            n = rng.randint(1, 40)
            first = rng.randrange(RAM_WORDS - n)
            write = rng.random() < 0.5
            data = [rng.getrandbits(32) for _ in range(n)] if write else None
            batch += m.block_ops(RAM_BASE + 4 * first, n, write=write, data=data)
        elif kind < 0.85:
            # Fixed-length bursts of halfwords and bytes too.
            size = rng.choice((0, 1))
            name = rng.choice([k for k in BURSTS if k not in ("SINGLE", "INCR")])
            span = {"4": 4, "8": 8, "16": 16}[name.lstrip("WRAPINC")] << size
            base = RAM_BASE + rng.randrange(RAM_BYTES // span) * span
            write = rng.random() < 0.5
            beats = span >> size
            data = [rng.getrandbits(8 << size) for _ in range(beats)] if write else None
            start = base + (rng.randrange(beats) << size if name.startswith("WRAP") else 0)
            batch += burst_ops(start, write, size=size, burst=name, data=data, beats=beats)
        elif kind < 0.93:
            # Unmapped: past the RAM, or the default slave.
            addr = rng.choice((RAM_BASE + RAM_BYTES + 4 * rng.randrange(1 << 20),
                               4 * rng.randrange(1 << 26)))
            batch.append(Op(addr=addr, write=rng.random() < 0.5, data=rng.getrandbits(32)))
            if rng.random() < 0.5:   # a burst into the error region
                batch += burst_ops(RAM_BASE + RAM_BYTES, rng.random() < 0.5, burst="INCR4",
                                   data=[1, 2, 3, 4])
        else:
            batches.append(batch)
            batches.append(None)     # a batch of illegal transfers comes next
            batch = []
    batches.append(batch)
    return batches


def illegal_ops(env: Env) -> list[Op]:
    """Misaligned and oversized transfers (the master checker permits them meanwhile)."""
    rng = env.rng
    off = 4 * rng.randrange(RAM_WORDS - 1)
    return [Op(addr=RAM_BASE + off + 1, write=rng.random() < 0.5, size=1, data=0xBEEF),
            Op(addr=RAM_BASE + off + 2, write=rng.random() < 0.5, size=2, data=0xCAFE),
            Op(addr=RAM_BASE + off, write=rng.random() < 0.5, size=3, data=7)]


@cocotb.test()
async def random_traffic(dut):
    env = await start(dut, "random_traffic", slaves=("dut", "ram"))
    model = RamModel(env)
    env.monitor.subscribe("ram", model)
    default_seen: list[Observed] = []
    env.monitor.subscribe("dut", default_seen.append)
    issued: list[Op] = []
    for batch in random_ops(env, 300):
        if batch is None:
            with env.monitor.master.permit("size", "alignment"):
                issued += await env.master.run(illegal_ops(env))
        else:
            issued += await env.master.run(batch)
    await env.cycles(2)
    for t in default_seen:
        env.check(t.resp == 1, f"default slave: {t.describe()} got OKAY")
    # The driver's view of every response equals the monitor's (AHB completes in order).
    seen = sorted(model.seen + default_seen, key=lambda t: t.end)
    env.check(len(seen) == len(issued), f"monitor saw {len(seen)} transfers, driver "
                                        f"issued {len(issued)}")
    for op, t in zip(issued, seen):
        same = (op.addr, op.write, op.size, op.resp) == (t.addr, t.write, t.size, t.resp)
        if same and not op.write and op.resp == 0:
            same = op.hrdata == t.rdata
        env.check(same, f"driver {op.describe()} resp {op.resp} rdata {op.hrdata} vs "
                        f"monitor {t.describe()} resp {t.resp} rdata {t.rdata}")
    # Coverage: the mix exercised what it claims to.
    bursts = {t.burst for t in seen}
    sizes = {t.size for t in seen if t.resp == 0}
    env.check(bursts == set(range(8)), f"burst kinds seen {sorted(bursts)}")
    env.check(sizes == {0, 1, 2}, f"sizes seen {sorted(sizes)}")
    env.check(any(t.waits and t.resp == 0 for t in seen), "no wait states")
    env.check(sum(t.resp for t in seen) >= 10, "too few ERROR responses")
    env.check(env.master.cancelled > 0, "no transfer was cancelled after an ERROR")
    trans = env.monitor.master.trans_cycles
    env.check(trans[BUSY] > 0 and trans[IDLE] > 0, f"cycles by HTRANS {trans}")
    reads = [t for t in model.seen if not t.write and t.resp == 0]
    env.check(len(reads) > 100 and any(t.rdata for t in reads), "too few nonzero reads")
    cocotb.log.info("%d transfers in %d cycles; HTRANS cycles %s", len(seen),
                    env.monitor.cycles, trans)


# Which rule each fault breaks, and traffic that provokes it.
EXPECTED = {
    Fault.SINGLE_CYCLE_ERROR: "single_cycle_error",
    Fault.ERROR_THEN_OKAY: "error_second_cycle",
    Fault.WAIT_ON_IDLE: "okay_on_idle",
    Fault.ERROR_ON_IDLE: "okay_on_idle",
    Fault.CORRUPT_READ: "scoreboard",
    Fault.HANG: "max_wait",
}


@cocotb.test()
@cocotb.parametrize(fault=list(Fault))
async def checker_catches(dut, fault):
    """Every fault is reported under its rule; the fault-free RAM reports nothing."""
    env = await start(dut, f"checker_catches_{fault.name}", slaves=("ram",),
                      raise_on_violation=False, idle=1.0, busy=0.0, cancel_after_error=0.0,
                      ram_waits=0)
    env.master.idle_address = lambda rng: RAM_BASE + 4 * rng.randrange(RAM_WORDS)
    model = RamModel(env, collect=True)
    env.monitor.subscribe("ram", model)
    dut.ram_fault.value = fault.value
    ops = [Op(addr=RAM_BASE + 0x14, write=True, data=0x1234_5678),
           Op(addr=RAM_BASE + 0x20, write=True, data=0x0BAD_F00D),
           Op(addr=RAM_BASE + 0x14, write=False),
           Op(addr=RAM_BASE + 0x20, write=False),
           Op(addr=RAM_BASE + RAM_BYTES, write=False),      # the error region
           Op(addr=RAM_BASE + 0x24, write=True, data=5)]
    try:
        await with_timeout(env.master.run(ops), 200 * 10, "ns")
    except SimTimeoutError:
        env.check(fault == Fault.HANG, f"{fault.name}: the driver hung")
    await env.cycles(3)
    rules = [v.rule for v in env.monitor.violations] + ["scoreboard"] * len(model.mismatches)
    if fault == Fault.NONE:
        env.check(not rules, f"no fault, yet violations: {env.monitor.violations} "
                             f"{model.mismatches}")
    else:
        env.check(rules and rules[0] == EXPECTED[fault],
                  f"{fault.name}: expected rule {EXPECTED[fault]}, reported {rules} "
                  f"{[str(v) for v in env.monitor.violations]}")
