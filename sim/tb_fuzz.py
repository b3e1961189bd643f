"""Fuzz bench: mutated layer programs through the bus, each held against what the contract
says the hardware must do (:mod:`sim.fuzz`, which runs it: ``make fuzz``).

Once: compile the base program (:func:`sim.fuzz.base_program`), load it over AHB, read the
whole activation buffer into a mirror. Per trial: write a mutated program
(:class:`sim.fuzz.Mutator`) into program memory, work out the expectation on the mirrors
(:func:`sim.fuzz.expect`), START with the interrupt enabled, read ``STATUS`` while it runs
(the bus must answer), wait for the interrupt no longer than the bound, then compare the
stop (code, layer) and read back every tensor the run wrote. Every ``CIM_FUZZ_RECOVER``
trials, and after every failure, the unmutated program runs on a fresh random input and
its readable layers must equal the golden model (:func:`sim.tb_network.run_image`); every
``CIM_FUZZ_FULL`` trials the whole buffer is read back against the mirror (a stray write
shows there). A hang resets the design (the memories keep their contents).

Environment: ``CIM_FUZZ_COUNT`` (trials, default 100), ``CIM_FUZZ_OUT`` (folder for
``report.json`` and the failing cases; default none), ``CIM_FUZZ_RECOVER`` (default 50),
``CIM_FUZZ_FULL`` (default 1000), ``CIM_TEST_SEED``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout

from contract.program import DESC_WORDS, ErrorCode
from sim.cim import Device, setup_device
from sim.fuzz import FAILURES, Expectation, Mutator, base_program, expect
from sim.tb_network import readable_layers, run_image
from sim.testbench import CLOCK_NS


class Fuzz:
    def __init__(self, dev: Device, model, program, out: Path | None):
        self.dev, self.env, self.bus = dev, dev.env, dev.bus
        self.model, self.base, self.out = model, program, out
        cfg = program.config
        self.cfg = cfg
        self.rows, self.ab = cfg.rows, cfg.a_bits
        self.prog = np.zeros(cfg.prog_words, np.int64)
        self.weights = np.zeros(cfg.weight_words, np.uint32)
        self.weights[:len(program.weight_image)] = program.weight_image
        self.params = np.zeros(cfg.param_words, np.uint32)
        self.params[:len(program.param_image)] = program.param_image
        self.mirror = None
        self.counts = Counter()
        self.codes = Counter()          # refusals by error code
        self.failures = 0

    # ------------------------------------------------------------ buffer words
    def lanes(self, word: int) -> list[int]:
        mask = (1 << self.ab) - 1
        return [(word >> (self.ab * r)) & mask for r in range(self.rows)]

    async def read_region(self, base: int, words: int) -> np.ndarray:
        got = await self.bus.read_words(base, words)
        return np.array([self.lanes(w) for w in got], np.int64).reshape(words, self.rows)

    async def read_all(self) -> np.ndarray:
        n = 2 * self.base.bank_words
        return (await self.read_region(0, n))[None]

    # ------------------------------------------------------------ one run
    async def write_program(self, words) -> None:
        await self.env.master.write_words(self.bus.win_addr("PROG"), [int(w) for w in words])
        self.prog[:len(words)] = words

    async def run(self, bound: int) -> dict | None:
        """START, a STATUS read while it runs, wait for the interrupt (``bound`` cycles at
        most). The final status, or None on a hang."""
        bus, dut = self.bus, self.env.dut
        await bus.write("IRQ_STATUS", 0xFFFF_FFFF)
        await bus.write("IRQ_ENABLE", bus.bits("IRQ_ENABLE", DONE=1, ERROR=1))
        await bus.start()
        await bus.read("STATUS")            # the bus answers while the accelerator runs
        if str(dut.IRQ.value) != "1":
            try:
                await with_timeout(RisingEdge(dut.IRQ), bound * CLOCK_NS, "ns")
            except SimTimeoutError:
                return None
        await RisingEdge(dut.clk)
        self.dev.model.idle()
        status = await bus.read("STATUS")
        await bus.write("IRQ_STATUS", 0xFFFF_FFFF)
        f = bus.field
        return dict(done=f("STATUS", "DONE", status), busy=f("STATUS", "BUSY", status),
                    error=f("STATUS", "ERROR", status),
                    code=f("STATUS", "ERROR_CODE", status), layer=f("STATUS", "LAYER", status))

    async def reset(self) -> None:
        dut = self.env.dut
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        self.dev.model.reset()
        await RisingEdge(dut.clk)

    # ------------------------------------------------------------ judging
    def judge_stop(self, exp: Expectation, st: dict) -> str | None:
        """None if the run stopped as expected, else the failing outcome."""
        if not st["done"] or st["busy"]:
            return "hang"
        if exp.code == ErrorCode.NONE:
            if st["error"]:
                return "wrong_stop"
            return None if st["layer"] == exp.layer else "wrong_stop"
        if not st["error"]:
            return "completed_invalid"
        if st["code"] != int(exp.code) or st["layer"] != exp.layer:
            return "wrong_stop"
        return None

    async def judge_memory(self, exp: Expectation) -> str | None:
        """Read back every tensor the run wrote: the model's words, or (an overflowing layer)
        whatever the hardware wrote, learnt into the mirror."""
        bad = None
        unknown = np.zeros(len(exp.memory[0]), bool)
        for base, words in exp.unknown:
            exp.memory[0, base:base + words] = await self.read_region(base, words)
            unknown[base:base + words] = True
        for base, words in exp.written:
            got = await self.read_region(base, words)
            want = exp.memory[0, base:base + words]
            diff = (got != want).any(axis=1) & ~unknown[base:base + words]
            if bad is None and diff.any():
                i = int(np.argwhere(diff)[0, 0])
                bad = f"word {base + i}: RTL {got[i].tolist()}, model {want[i].tolist()}"
            exp.memory[0, base:base + words] = got
        self.mirror = exp.memory
        return bad

    def save(self, trial: int, outcome: str, what: str, words, exp: Expectation,
             st: dict | None, detail: str = "") -> None:
        self.failures += 1
        cocotb.log.error("trial %d: %s (%s) %s; expected %s at layer %d, got %s", trial,
                         outcome, what, detail, exp.code.name if exp else "-",
                         exp.layer if exp else -1, st)
        if self.out is None:
            return
        case = dict(trial=trial, seed=self.env.seed, outcome=outcome, mutation=what,
                    detail=detail, program_words=[int(w) for w in words],
                    expected=None if exp is None else dict(code=exp.code.name, layer=exp.layer,
                                                           bound=exp.bound,
                                                           layers=len(exp.ran)),
                    status=st)
        (self.out / f"case_{trial:06d}_{outcome}.json").write_text(json.dumps(case, indent=1))

    # ------------------------------------------------------------ the valid program
    async def recover(self, k: int) -> bool:
        """The unmutated program on a fresh random input, bit-exact with the golden model."""
        await self.write_program(self.base.program_words())
        shape = self.model.input_shape
        hi = int(self.model.manifest["input"]["pixel_max"])
        image = self.env.rng.getrandbits(32)
        image = np.random.default_rng(image).integers(0, hi + 1, size=shape).astype(np.uint8)
        _, mismatches = await run_image(self.dev, self.base, self.model, image, k, probe=False)
        self.dev.model.idle()
        # The mirror follows: every word this run wrote is read back.
        src = self.base.buffers[self.base.input_name]
        self.mirror[0, src.base:src.base + src.words] = await self.read_region(src.base,
                                                                                src.words)
        for name in self.base.names:
            a = self.base.buffers[name]
            self.mirror[0, a.base:a.base + a.words] = await self.read_region(a.base, a.words)
        if mismatches:
            cocotb.log.error("recovery run %d: %s", k, "; ".join(mismatches))
        return not mismatches

    async def full_check(self) -> str | None:
        got = await self.read_all()
        diff = np.argwhere((got[0] != self.mirror[0]).any(axis=1))
        self.mirror = got
        if len(diff):
            return f"{len(diff)} words differ from the mirror, the first {int(diff[0, 0])}"
        return None


@cocotb.test()
async def fuzz_programs(dut):
    t0 = time.perf_counter()
    count = int(os.environ.get("CIM_FUZZ_COUNT", "100"))
    every_recover = int(os.environ.get("CIM_FUZZ_RECOVER", "50"))
    every_full = int(os.environ.get("CIM_FUZZ_FULL", "1000"))
    out = os.environ.get("CIM_FUZZ_OUT")
    out = Path(out) if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("case_*.json"):
            old.unlink()
    dev = await setup_device(dut, "fuzz_programs", idle=0.0, busy=0.0, ram_waits=1,
                             cancel_after_error=0.5)
    env = dev.env
    with tempfile.TemporaryDirectory() as tmp:
        model, program = base_program(dev.regmap.config, env.seed, Path(tmp))
    env.check(readable_layers(program), "no layer output of the base program survives")
    fz = Fuzz(dev, model, program, out)
    await dev.bus.load(program)
    fz.prog[:len(program.program_words())] = program.program_words()
    fz.mirror = await fz.read_all()
    mutator = Mutator(program, env.rng)
    cocotb.log.info("fuzzing %d mutated programs of %d layers on %s", count,
                    len(program.descriptors), dev.regmap.config.name)
    for trial in range(count):
        words, what = mutator.mutate()
        words = words[:len(fz.prog)]
        await fz.write_program(words)
        exp = expect(fz.prog, fz.mirror, fz.weights, fz.params, program)
        st = await fz.run(exp.bound)
        failed = fz.judge_stop(exp, st) if st is not None else "hang"
        if failed == "hang":
            fz.counts["hang"] += 1
            fz.save(trial, "hang", what, words, exp, st)
            await fz.reset()
            fz.mirror = await fz.read_all()
        elif failed:
            fz.counts[failed] += 1
            fz.save(trial, failed, what, words, exp, st)
            fz.mirror = await fz.read_all()
        else:
            bad = await fz.judge_memory(exp)
            outcome = ("wrong_result" if bad else
                       {ErrorCode.NONE: "correct", ErrorCode.OVERFLOW: "overflow"}.get(
                           exp.code, "refused"))
            fz.counts[outcome] += 1
            if outcome == "refused":
                fz.codes[exp.code.name] += 1
            if bad:
                fz.save(trial, outcome, what, words, exp, st, bad)
        if failed or (trial + 1) % every_recover == 0:
            if not await fz.recover(trial):
                fz.counts["recovery"] += 1
                fz.save(trial, "recovery", what, words, exp, st)
        if (trial + 1) % every_full == 0 or trial + 1 == count:
            bad = await fz.full_check()
            if bad:
                fz.counts["stray_write"] += 1
                fz.save(trial, "stray_write", what, words, exp, st, bad)
        if (trial + 1) % 100 == 0:
            cocotb.log.info("%d trials, %.0f s: %s", trial + 1, time.perf_counter() - t0,
                            dict(fz.counts))
    seconds = time.perf_counter() - t0
    report = dict(trials=count, seed=env.seed, config=dev.regmap.config.name,
                  layers=len(program.descriptors), desc_words=DESC_WORDS,
                  counts=dict(fz.counts), refused_by_code=dict(fz.codes), seconds=seconds,
                  cycles=env.monitor.cycles, transfers_checked=dev.scoreboard.checked)
    cocotb.log.info("fuzz: %s", report)
    if out:
        (out / "report.json").write_text(json.dumps(report, indent=1))
    env.check(not any(fz.counts[k] for k in FAILURES),
              f"fuzz failures: { {k: fz.counts[k] for k in FAILURES if fz.counts[k]} }")
