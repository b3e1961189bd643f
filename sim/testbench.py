"""What every cocotb bench in ``sim/`` shares: seeds, clock, reset, driver and monitor.

A bench calls :func:`start` first; it returns an :class:`Env` with the running clock, the
design out of reset, an :class:`~sim.ahb.AhbMaster` and a started
:class:`~sim.ahb.AhbMonitor` checking every slave. Random choices come from
``Env.rng``, seeded from :func:`sim.seed.test_seed` and the test's name, so a failure replays with
the seed it prints (every assertion made through :meth:`Env.check` and every protocol
violation names it).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout

from .ahb import AhbMaster, AhbMonitor
from .seed import ENV, test_seed

__all__ = ["CLOCK_NS", "REPO", "Env", "start", "target"]

CLOCK_NS = 10
REPO = Path(__file__).resolve().parent.parent


def target() -> str:
    """The target being simulated (``ahb`` or a configuration name)."""
    return os.environ.get("CIM_SIM_TARGET", "ahb")


@dataclass
class Env:
    dut: object
    master: AhbMaster
    monitor: AhbMonitor
    rng: random.Random
    seed: int
    name: str

    @property
    def tag(self) -> str:
        return f"seed {self.seed}, test {self.name}"

    def check(self, cond, msg: str) -> None:
        """``assert cond`` with the seed in the message."""
        if not cond:
            raise AssertionError(f"{msg} [{self.tag}; rerun with {ENV}={self.seed}]")

    async def cycles(self, n: int) -> None:
        await ClockCycles(self.dut.clk, n)

    async def wait_for(self, signal, *, max_cycles: int, what: str) -> int:
        """Wait until the 1-bit ``signal`` rises (no Python runs per cycle meanwhile; the
        monitor still does), then to the next clock edge; return the cycles waited."""
        t0 = get_sim_time("ns")
        if str(signal.value) != "1":
            try:
                await with_timeout(RisingEdge(signal), max_cycles * CLOCK_NS, "ns")
            except SimTimeoutError:
                self.check(False, f"{what}: not within {max_cycles} cycles")
        await RisingEdge(self.dut.clk)
        return round((get_sim_time("ns") - t0) / CLOCK_NS)


async def start(dut, name: str, *, idle: float = 0.3, busy: float = 0.2,
                cancel_after_error: float = 0.3, ram_waits: int = 3,
                slaves=("dut", "ram"), raise_on_violation: bool = True,
                reset_cycles: int = 4, **monitor_options) -> Env:
    """Clock, reset and the bus agents for one test (see the module docstring)."""
    seed = test_seed()
    rng = random.Random(f"{seed}/{name}")
    cocotb.log.info("test %s: seed %d (%s)", name, seed, ENV)
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    master = AhbMaster(dut, dut.clk, rng=rng, idle=idle, busy=busy,
                       cancel_after_error=cancel_after_error)
    master.reset_values()
    dut.ram_waits.value = ram_waits
    dut.ram_fault.value = 0
    dut.rst.value = 1
    monitor = AhbMonitor(dut, dut.clk, slaves=slaves, raise_on_violation=raise_on_violation,
                         note=f"seed {seed}, test {name}", **monitor_options).start()
    await ClockCycles(dut.clk, reset_cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return Env(dut=dut, master=master, monitor=monitor, rng=rng, seed=seed, name=name)
