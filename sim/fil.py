"""Firmware in the loop: the Cortex-M4 firmware ELF in the Unicorn emulator, with the
accelerator's address window and interrupt line on a bus backend (the RTL in cocotb, or a
Python model of the accelerator in tests).

:class:`Mcu` loads the ELF's segments into the reference memory map (``firmware/cortex_m4.ld``:
4 MiB of flash at 0, 512 KiB of RAM at ``0x2000_0000``), takes SP and PC from the vector
table and runs the firmware as a Cortex-M4 (``UC_MODE_THUMB | UC_MODE_MCLASS``) until its
results record (``cim_results``, at the start of RAM) says DONE or FAILED. Around the core:

* the accelerator's window (at :data:`gateware.regmap.CIM_BASE`, ``window_bytes`` long) is MMIO:
  every 32-bit load is a read on the backend, every store a write. Stores to consecutive
  words are posted and go out as one block (a burst on the bus) before the next read, at a
  stage boundary, before an interrupt is taken and at the end of every slice, so the device
  sees every access in program order. An ERROR response is a bus fault: the run stops with
  the address and the instruction.
* the System Control Space registers the firmware touches (``startup_m4.c``, ``main.c``):
  ``CPACR``, ``DEMCR``, ``DWT_CTRL``, ``DWT_CYCCNT`` (one cycle per instruction: it counts
  the instructions retired since it was written), ``NVIC_ISER0`` / ``ICER0`` / ``ISPR0`` /
  ``ICPR0``, ``VTOR`` (0); any other SCS access stops the run with its address.
* the interrupt: external interrupt ``irq_n`` (vector ``16 + irq_n``) is pending while the
  backend's IRQ line is high (level sensitive) or when set in ``ISPR``; it is taken at the
  next block boundary (Unicorn's: a branch, at most a few instructions) when it is enabled
  in ``ISER`` and ``PRIMASK`` is clear. Memory callbacks never stop the core themselves:
  Unicorn would run the access's instruction again on resuming (a store to ``CTRL`` twice is
  two STARTs). Exception entry is
  the architectural one: the 8-word frame (r0-r3, r12, lr, pc, xPSR; aligned to 8 bytes with
  xPSR bit 9 recording it) pushed on the stack, ``lr = EXC_RETURN 0xFFFF_FFF9``, ``pc`` from
  the vector table. Unicorn has no NVIC, so the core stays in thread mode; the handler's
  branch to ``EXC_RETURN`` reaches the interrupt hook as QEMU's exception-exit exception,
  and that is the exception return: the frame is popped (flags, GE and IT state included)
  and the interrupted code resumes. The caller-saved FPU registers (s0-s15, FPSCR) are kept
  across the handler as lazy stacking would. No nesting (one interrupt source). After the return
  the hardware runs the core's exception-return time (10 cycles) before the line is looked
  at again, so the handler's clearing write is seen, as on the core.
* time: the backend's transfers take bus time; after each slice of instructions the
  hardware runs the slice's estimated core cycles (below) less the bus cycles its transfers
  took already (the core computing, or spinning on RAM waiting for the interrupt, while the
  accelerator works), stopping early when the IRQ line rises; a slice ends at every stage
  marker, so the computing before a stage's START is not run after it. While the firmware waits
  (``OFFLOAD_WAIT``) the slices are short (32 instructions), so the spin overruns the
  interrupt by at most that much. A
  backend that knows the hardware is idle skips that time (the RTL bench: between a STATUS
  read that shows it idle and the next START), so the core's computing costs no simulation
  while the wait for the interrupt costs the accelerator's cycles.
* instruction counts: every executed instruction is charged to the stage the firmware is
  in (``cim_results.marker``, written at every stage boundary), per frame (a frame runs
  from a marker after IDLE, other than LOAD and CHECK, to the next IDLE; LOAD and CHECK
  are charged to the setup), and to ``IRQ`` while the handler runs. Instructions are
  counted as the core issues them: those of an IT block whose condition fails too. ``count="block"``
  (default) counts per translated block, with exact corrections where a marker or the final
  state is written mid-block; ``count="code"`` counts instruction by instruction (about 6x
  slower; the tests hold one against the other).
* cycle estimate: alongside, the Cortex-M4 cycles of the instructions issued, from the
  TRM's table (:mod:`sim.m4_cycles`, ``firmware/README.md`` "Cycle estimate"): each block's
  cost is worked out once (cached per block), the rules that span two instructions (a load
  pipelined after a load, IT folded after a 16-bit instruction) applied at the block's first
  instruction from what the last one left, and a conditional branch that ends a block costs
  the refill when the next block is not the one after it (taken). Plus the exception entry
  (12) and return (10), and the accelerator's wait states on reads (``read_waits``), which
  also count, with one cycle per transfer, as the stage's bus cycles. ``DWT_CYCCNT`` still
  counts instructions (the firmware's ``stage_cycles``).
"""

from __future__ import annotations

import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import unicorn as U
from unicorn import arm_const as A

from compiler import firmware_blob as fb
from contract.timing import ACTBUF_LATENCY
from gateware.regmap import CIM_BASE, RegMap

from . import m4_cycles as m4

__all__ = ["CIM_BASE", "Bus", "BusFault", "Elf", "FirmwareError", "Mcu", "Run", "build_elf",
           "frame_totals", "read_waits", "stage_stats", "stage_table"]

REPO = Path(__file__).resolve().parent.parent
FLASH, FLASH_BYTES = 0x0000_0000, 4 << 20
RAM, RAM_BYTES = 0x2000_0000, 512 << 10
SCS, SCS_BYTES = 0xE000_0000, 1 << 20
EXC_RETURN = 0xFFFF_FFF9
RETURN_CYCLES = m4.EXCEPTION_RETURN    # Cortex-M4 exception return (to thread mode)
EXCP_EXCEPTION_EXIT = 8                # QEMU's exception number for a branch to EXC_RETURN
RESULTS = fb.field_offsets(fb.RESULTS_FIELDS)
STAGES = fb.STAGES                     # marker values
IRQ_STAGE = "IRQ"                      # instructions of the interrupt handler

# System Control Space registers (offsets from SCS).
CPACR, VTOR, DEMCR = 0xED88, 0xED08, 0xEDFC
DWT_CTRL, DWT_CYCCNT = 0x1000, 0x1004
ISER0, ICER0, ISPR0, ICPR0 = 0xE100, 0xE180, 0xE200, 0xE280

_FRAME = (A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2, A.UC_ARM_REG_R3,
          A.UC_ARM_REG_R12, A.UC_ARM_REG_LR, A.UC_ARM_REG_PC, A.UC_ARM_REG_XPSR)
_FP_SAVED = tuple(getattr(A, f"UC_ARM_REG_S{i}") for i in range(16)) + (A.UC_ARM_REG_FPSCR,)


class FirmwareError(RuntimeError):
    """The firmware did something the system does not allow (a fault, an unexpected
    exception, an unemulated register), or did not finish."""


class BusFault(FirmwareError):
    """The accelerator answered ERROR."""


class Bus(Protocol):
    """The accelerator as the core sees it. Offsets are bytes from ``CIM_BASE``. Every call
    returns the IRQ line's level after it (a read returns ``(data, irq)``); ``resp`` 1 is
    ERROR."""

    def read(self, offset: int) -> tuple[int, int, bool]:
        """(data, resp, irq)."""

    def write(self, offset: int, words: list[int]) -> tuple[int, bool]:
        """Consecutive words from ``offset``: (resp, irq)."""

    def idle(self, cycles: int) -> bool:
        """Let the hardware run ``cycles`` cycles, or until the IRQ line rises if it is
        low (none if the backend knows it is idle and the line is low): irq."""


# ----------------------------------------------------------------------------- ELF


@dataclass
class Elf:
    """The loadable contents and the symbols of a 32-bit little-endian ARM ELF."""

    entry: int
    segments: list[tuple[int, bytes, int]]        # (load address, file bytes, memory size)
    symbols: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> Elf:
        b = Path(path).read_bytes()
        if b[:4] != b"\x7fELF" or b[4] != 1 or b[5] != 1:
            raise FirmwareError(f"{path}: not a 32-bit little-endian ELF")
        (entry, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
         _) = struct.unpack_from("<IIIIHHHHHH", b, 24)
        segments = []
        for i in range(phnum):
            ptype, off, _, paddr, filesz, memsz, _, _ = struct.unpack_from(
                "<8I", b, phoff + i * phentsize)
            if ptype == 1 and filesz:                 # PT_LOAD: at its load address (LMA)
                segments.append((paddr, b[off:off + filesz], memsz))
        sections = [struct.unpack_from("<10I", b, shoff + i * shentsize) for i in range(shnum)]
        symbols = {}
        for s in sections:
            if s[1] != 2:                             # SHT_SYMTAB
                continue
            strtab = sections[s[6]]
            names = b[strtab[4]:strtab[4] + strtab[5]]
            for k in range(s[5] // 16):
                name, value, _, _, _, _ = struct.unpack_from("<IIIBBH", b, s[4] + 16 * k)
                if name:
                    symbols[names[name:names.index(b"\0", name)].decode()] = value
        return cls(entry, segments, symbols)


def build_elf(build: Path, *, model: str, config: str, images: int, irq: bool,
              partition: str = "accel") -> Path:
    """``make -C firmware`` into ``build`` (a folder of its own per variant: the objects do
    not record CONFIG or the flags); returns the ELF. Make decides what is stale."""
    cmd = ["make", "-s", "-C", str(REPO / "firmware"), f"BUILD={Path(build).resolve()}",
           f"MODEL={model}", f"CONFIG={config}", f"IMAGES={images}",
           f"PARTITION={partition}", f"EXTRA_CFLAGS=-DCIM_APP_USE_IRQ={int(irq)}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise FirmwareError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return Path(build) / "cim_fw.elf"


def read_waits(regmap: RegMap) -> tuple[tuple[int, int, int], ...]:
    """The wait states the accelerator's slave inserts, as :class:`Mcu` takes them: reads of
    the activation window wait for the buffer RAM (``gateware/ahb.py``: the word is read from
    the registered address, :data:`contract.timing.ACTBUF_LATENCY` cycles); register
    accesses, the other windows and every write have none."""
    return tuple((w.offset, w.offset + w.size, ACTBUF_LATENCY) for w in regmap.windows
                 if w.name == "ACT")


# ----------------------------------------------------------------------------- counts


@dataclass
class Run:
    """What a run left: the results record, per-stage instruction counts and the logits of
    every frame (read from the workspace at the end of each frame)."""

    results: dict[str, object]
    setup: dict[str, int]                        # before the first frame (model load...)
    frames: list[dict[str, int]]                 # per frame: stage -> instructions
    logits: list[np.ndarray]
    instructions: int
    irqs: int
    bus_reads: int
    bus_writes: int
    stage_bus: dict[str, list[int]] = field(default_factory=dict)   # stage -> [reads, writes]
    # The Cortex-M4 cycle estimate (sim/m4_cycles.py), booked like the instructions: the
    # core's cycles (its stalls on the accelerator's wait states included) and, apart, the
    # data-phase cycles of its transfers to the accelerator (one per transfer plus the
    # slave's wait states; part of the core's cycles, not in addition to them).
    setup_cycles: dict[str, int] = field(default_factory=dict)
    frame_cycles: list[dict[str, int]] = field(default_factory=list)
    setup_bus_cycles: dict[str, int] = field(default_factory=dict)
    frame_bus_cycles: list[dict[str, int]] = field(default_factory=list)
    cycles: int = 0
    bus_cycles: int = 0
    accel_cycles: list[int] = field(default_factory=list)   # per frame, CYCLES_TOTAL as read


WAIT_STAGES = ("OFFLOAD_WAIT", IRQ_STAGE)      # the core waiting for the accelerator
OUTSIDE_FRAMES = ("LOAD", "CHECK")              # stages charged to the setup, not a frame


def frame_totals(run: Run) -> list[dict[str, int]]:
    """Per frame: ``instructions``; ``cycles``, the core's estimated cycles; of which
    ``bus_cycles``, the data phases of its transfers to the accelerator, ``wait_cycles``, the
    time it waits for the accelerator (``OFFLOAD_WAIT`` and the interrupt), and
    ``compute_cycles``, the rest (the polls of a polling wait count as waiting, not as bus
    cycles, there); ``accel_cycles``, the accelerator's own count (``CYCLES_TOTAL``, 0 if not
    read)."""
    out = []
    for k, (ins, cyc, bus) in enumerate(zip(run.frames, run.frame_cycles,
                                            run.frame_bus_cycles)):
        c, b = sum(cyc.values()), sum(bus.values())
        wait = sum(cyc.get(s, 0) for s in WAIT_STAGES)
        b -= sum(bus.get(s, 0) for s in WAIT_STAGES)
        out.append(dict(instructions=sum(ins.values()), cycles=c, bus_cycles=b,
                        wait_cycles=wait, compute_cycles=c - b - wait,
                        accel_cycles=run.accel_cycles[k] if k < len(run.accel_cycles) else 0))
    return out


def stage_stats(run: Run) -> dict[str, dict[str, float]]:
    """Per stage: mean ``instructions``, ``cycles`` and ``bus_cycles`` per frame, and the
    setup's (before the first frame) ``setup_instructions`` and ``setup_cycles``."""
    n = max(len(run.frames), 1)
    names = [s for s in (*STAGES, IRQ_STAGE)
             if any(s in f for f in (*run.frames, *run.frame_cycles, run.setup,
                                     run.setup_cycles))]
    return {s: dict(instructions=sum(f.get(s, 0) for f in run.frames) / n,
                    cycles=sum(f.get(s, 0) for f in run.frame_cycles) / n,
                    bus_cycles=sum(f.get(s, 0) for f in run.frame_bus_cycles) / n,
                    setup_instructions=run.setup.get(s, 0),
                    setup_cycles=run.setup_cycles.get(s, 0)) for s in names}


def stage_table(run: Run, conv_macs: int | None = None) -> str:
    """A Markdown table per stage: instructions and estimated Cortex-M4 cycles before the
    first frame (setup) and per frame (mean, min and max instructions), the cycles per
    instruction, and the bus cycles to the accelerator per frame; then per conv MAC."""
    names = [s for s in (*STAGES[1:], "IDLE", IRQ_STAGE)
             if any(f.get(s) for f in run.frames) or run.setup.get(s)
             or any(f.get(s) for f in run.frame_cycles) or run.setup_cycles.get(s)]
    rows = ["| stage | setup | cycles | per frame (mean) | min | max | cycles per frame | CPI "
            "| bus cycles per frame |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    n = max(len(run.frames), 1)

    def mean(books: list[dict[str, int]], s: str | None) -> float:
        return sum(f.get(s, 0) if s else sum(f.values()) for f in books) / n

    for s in [*names, None]:
        per = [f.get(s, 0) if s else sum(f.values()) for f in run.frames] or [0]
        setup = run.setup.get(s, 0) if s else sum(run.setup.values())
        setup_c = run.setup_cycles.get(s, 0) if s else sum(run.setup_cycles.values())
        ins, cyc = mean(run.frames, s), mean(run.frame_cycles, s)
        cpi = f"{cyc / ins:.2f}" if ins else "-"
        rows.append(f"| {s or 'total'} | {setup:,} | {setup_c:,} | {ins:,.0f} | {min(per):,} "
                    f"| {max(per):,} | {cyc:,.0f} | {cpi} | {mean(run.frame_bus_cycles, s):,.0f} |")
    if any(run.accel_cycles):
        rows.append(f"\naccelerator: {sum(run.accel_cycles) / n:,.0f} cycles per frame "
                    "(CYCLES_TOTAL)")
    if conv_macs:
        conv, conv_c = mean(run.frames, "CONV"), mean(run.frame_cycles, "CONV")
        rows.append(f"\nconv1: {conv:,.0f} instructions for {conv_macs:,} MACs = "
                    f"{conv / conv_macs:.3f} per MAC, {conv_c / conv_macs:.3f} cycles per MAC")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the core


class Mcu:
    """The firmware ELF on an emulated Cortex-M4 (module docstring).

    Parameters
    ----------
    elf : path of the firmware ELF; bus : the :class:`Bus` backend.
    window_bytes : size of the accelerator's window (``2 ** addr_width``).
    irq_n : external interrupt of the accelerator (``CIM_IRQn``).
    slice_instructions : instructions between interrupt checks at most.
    wait_slice_instructions : the same while the firmware is in its waiting stage
        (``OFFLOAD_WAIT``): the core's spin runs ahead of the hardware by up to one slice,
        so a short one keeps the measured wait within that many instructions of the
        interrupt.
    max_instructions : the run fails when the firmware has not finished by then.
    count : ``"block"`` or ``"code"`` (module docstring).
    read_waits : ``(start, end, waits)`` offset ranges of the window whose reads the slave
        answers with wait states (:func:`sim.m4_cycles.read_waits` of the register map);
        other accesses have none.
    accel_cycles_at : offset of the accelerator's cycle counter (``CYCLES_TOTAL``): the last
        value the firmware reads in a frame is that frame's accelerator cycles.
    log : called with a line of progress (model loaded, each frame) if given.
    """

    def __init__(self, elf: Path, bus: Bus, *, window_bytes: int, irq_n: int = 0,
                 slice_instructions: int = 2_000, wait_slice_instructions: int = 32,
                 max_instructions: int = 500_000_000, count: str = "block",
                 read_waits: tuple[tuple[int, int, int], ...] = (),
                 accel_cycles_at: int | None = None, log=None):
        if count not in ("block", "code"):
            raise ValueError(f"count must be 'block' or 'code', not {count!r}")
        self.elf = Elf.load(elf)
        # Every instruction of the code, classified once: an unknown one fails here.
        self.program = m4.program(elf)
        self.read_waits, self.accel_cycles_at = tuple(read_waits), accel_cycles_at
        self.bus, self.irq_n = bus, irq_n
        self.window_bytes = window_bytes
        self.slice, self.wait_slice = slice_instructions, wait_slice_instructions
        self.max_instructions = max_instructions
        self.log = log
        uc = self.uc = U.Uc(U.UC_ARCH_ARM, U.UC_MODE_THUMB | U.UC_MODE_MCLASS)
        uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_M4)
        uc.mem_map(FLASH, FLASH_BYTES)
        uc.mem_map(RAM, RAM_BYTES)
        for addr, data, _ in self.elf.segments:
            uc.mem_write(addr, data)
        uc.mmio_map(CIM_BASE, window_bytes, self._cim_read, None, self._cim_write, None)
        uc.mmio_map(SCS, SCS_BYTES, self._scs_read, None, self._scs_write, None)
        if count == "block":
            uc.hook_add(U.UC_HOOK_BLOCK, self._on_block)
        else:
            uc.hook_add(U.UC_HOOK_CODE, self._on_code)
        marker = RAM + RESULTS["marker"]
        uc.hook_add(U.UC_HOOK_MEM_WRITE, self._on_marker, begin=marker, end=marker + 3)
        state = RAM + RESULTS["state"]
        uc.hook_add(U.UC_HOOK_MEM_WRITE, self._on_state, begin=state, end=state + 3)
        uc.hook_add(U.UC_HOOK_INTR, self._on_intr)
        self._logits_at: tuple[int, int] | None = None      # workspace address, bytes
        self._units: dict[tuple[int, int], tuple[list[int], list[m4.Insn], list[int]]] = {}
        # Counting state.
        self.instructions = self.cycles = self.bus_cycles = 0
        self._block = (0, 0, [], [])              # address, size, lengths, cycles
        self._it = (0, 0)                         # code counting: the IT block charged
        self._prev: m4.State | None = None        # what the last instruction leaves the next
        self._pending: tuple[int, int] | None = None   # a conditional branch: (next, cycles)
        self._slice_end = 0
        self._stage, self._frames = "IDLE", []
        self._setup: dict[str, int] = {}
        self._frame_cycles: list[dict[str, int]] = []
        self._setup_cycles: dict[str, int] = {}
        self._frame_bus: list[dict[str, int]] = []
        self._setup_bus: dict[str, int] = {}
        self._accel: list[int] = []
        self._stage_bus: dict[str, list[int]] = {}
        self._logits: list[np.ndarray] = []
        self._cyccnt_base = 0
        # Core peripherals and the interrupt.
        self.scs = {CPACR: 0, DEMCR: 0, DWT_CTRL: 0x4000_0000, VTOR: 0}
        self.nvic_enabled = self.nvic_pending = 0
        self._irq_line = False
        self._active = None                        # saved context while in the handler
        self.irqs = 0
        # Posted writes and the slice's bus activity.
        self._posted: tuple[int, list[int]] | None = None
        self._slice_transfers = 0
        self.bus_reads = self.bus_writes = 0
        self._stop: str | None = None               # why a slice ended early
        self._fault: FirmwareError | None = None
        self._done = False

    # ------------------------------------------------------------------ memory
    def word(self, addr: int) -> int:
        return int.from_bytes(self.uc.mem_read(addr, 4), "little")

    def results(self) -> dict[str, object]:
        raw = bytes(self.uc.mem_read(RAM, RESULTS["classes"] + 4 * fb.RESULTS_IMAGES))
        out: dict[str, object] = {}
        for f in fb.RESULTS_FIELDS:
            at = RESULTS[f.name]
            vals = list(struct.unpack_from(f"<{f.count}I", raw, at))
            out[f.name] = vals if f.count > 1 else vals[0]
        return out

    def blob(self) -> bytes:
        """The model blob linked into the firmware."""
        at = self.elf.symbols["cim_model_blob"]
        total = fb.parse_header(bytes(self.uc.mem_read(at, fb.HEADER_BYTES)))["total_bytes"]
        return bytes(self.uc.mem_read(at, total))

    def _logits_now(self) -> np.ndarray:
        """The last op's output in the workspace: the logits of the frame just run."""
        if self._logits_at is None:
            blob = self.blob()
            out = fb.parse_ops(blob)[-1]["out_offset"]
            self._logits_at = (self.elf.symbols["workspace"] + out,
                               8 * fb.parse_header(blob)["classes"])
        at, size = self._logits_at
        return np.frombuffer(bytes(self.uc.mem_read(at, size)), "<i8").copy()

    # ------------------------------------------------------------------ counting
    def _charge(self, n: int, cycles: int, stage: str | None = None, bus: int = 0) -> None:
        s = stage or (IRQ_STAGE if self._active is not None else self._stage)
        framed = bool(self._frames) and s not in OUTSIDE_FRAMES
        for book, v in ((self._frames[-1] if framed else self._setup, n),
                        (self._frame_cycles[-1] if framed else self._setup_cycles, cycles),
                        (self._frame_bus[-1] if framed else self._setup_bus, bus)):
            if v:
                book[s] = book.get(s, 0) + v

    def _unit(self, address: int, end: int):
        """The instructions from ``address`` to ``end`` (their lengths, records and cycles
        when nothing precedes them), or None (and a fault) if that is not the ELF's code."""
        insns, a = [], address
        while a < end:
            i = self.program.get(a)
            if i is None:
                self._fault = FirmwareError(f"executing 0x{a:08x}, not an instruction of the "
                                            "ELF's code")
                self._end_slice("fault")
                return None
            insns.append(i)
            a = i.end
        return [i.size for i in insns], insns, m4.cost(insns)

    def _taken(self, address: int) -> None:
        """The core reached ``address``: the last conditional branch was taken if that is
        not the instruction after it (then it costs the refill and pipelines nothing)."""
        if self._pending is not None:
            after, cycles = self._pending
            self._pending = None
            if address != after:
                self.cycles += cycles
                self._charge(0, cycles)
                self._prev = None

    def _issue(self, unit, address: int, size: int, code: bool) -> None:
        lengths, insns, cycles = unit
        adjust = m4.adjust(insns[0], self._prev)
        if adjust:
            cycles = [cycles[0] + adjust, *cycles[1:]]
        last = insns[-1]
        self._prev = m4.after(last)
        self._pending = (last.end, last.taken) if last.taken else None
        self._block = (address, size, [size], cycles[:1]) if code else \
            (address, size, lengths, cycles)
        n, c = len(lengths), sum(cycles)
        self.instructions += n
        self.cycles += c
        self._charge(n, c)

    def _on_block(self, uc, address, size, _):
        self._taken(address)
        if self._stop is not None or self.instructions >= self._slice_end:
            uc.emu_stop()                 # the block does not run: it is charged next slice
            return
        key = (address, size)
        unit = self._units.get(key)
        if unit is None:
            unit = self._units[key] = self._unit(address, address + size)
            if unit is None:
                uc.emu_stop()
                return
        self._issue(unit, address, size, code=False)

    def _on_code(self, uc, address, size, _):
        # Unicorn calls this hook only for the instructions of an IT block whose condition
        # passes; the core issues all of them, so the IT instruction charges its block.
        if self._it[0] <= address < self._it[1]:
            return
        self._taken(address)
        if self._stop is not None or self.instructions >= self._slice_end:
            uc.emu_stop()                 # the instruction does not run
            return
        key = (address, 0)
        unit = self._units.get(key)
        if unit is None:
            insn = self.program.get(address)
            end = address + size
            if insn is not None and insn.cls == "it":
                count = len(insn.mnemonic.split()[0]) - 1       # it, itt, ite, ittee...
                for _ in range(count):
                    nxt = self.program.get(end)
                    end = nxt.end if nxt is not None else end + 2
            unit = self._units[key] = self._unit(address, end)
            if unit is None:
                uc.emu_stop()
                return
        if len(unit[0]) > 1:
            self._it = (address + size, address + sum(unit[0]))
        self._issue(unit, address, size, code=True)

    def _after(self, pc: int, including: bool) -> tuple[int, int]:
        """Instructions of the current block from ``pc`` on (``including`` the one at pc),
        which the block hook charged but which have not run yet, and their cycles."""
        address, size, lengths, cycles = self._block
        if not address <= pc < address + size:
            return 0, 0
        n = c = 0
        a = address
        for ln, cy in zip(lengths, cycles):
            if a > pc or (including and a == pc):
                n += 1
                c += cy
            a += ln
        return n, c

    def _retired(self, pc: int) -> int:
        """Instructions retired before the one at ``pc`` (which is running)."""
        return self.instructions - self._after(pc, including=True)[0]

    def _pc(self) -> int:
        return self.uc.reg_read(A.UC_ARM_REG_PC)

    def _on_marker(self, uc, _access, address, size, value, _):
        if address != RAM + RESULTS["marker"] or size != 4:
            return                                   # main() clearing the record bytewise
        self._flush()
        new = STAGES[value] if value < len(STAGES) else f"stage{value}"
        tail, tail_cycles = self._after(self._pc(), including=False)
        self._charge(-tail, -tail_cycles)
        if self._stage == "IDLE" and new not in ("IDLE", *OUTSIDE_FRAMES):
            self._frames.append({})
            self._frame_cycles.append({})
            self._frame_bus.append({})
            self._accel.append(0)
        if self._stage not in ("IDLE", *OUTSIDE_FRAMES) and new == "IDLE":
            self._logits.append(self._logits_now())
            if self.log:
                self.log(f"frame {len(self._logits) - 1}: {sum(self._frames[-1].values()):,} "
                         f"instructions, {self.instructions:,} in all "
                         f"({time.perf_counter() - self._t0:.1f} s)")
        elif self._stage == "LOAD" and self.log:
            self.log(f"model loaded: {self.bus_writes:,} words written, "
                     f"{self.instructions:,} instructions ({time.perf_counter() - self._t0:.1f} s)")
        self._stage = new
        self._charge(tail, tail_cycles)
        # A stage boundary ends the slice: the hardware then runs the computing before it,
        # not after the transfers that follow (a START the next stage writes).
        self._end_slice("marker")

    def _on_state(self, uc, _access, address, size, value, _):
        if address == RAM + RESULTS["state"] and size == 4 and value in (1, 2):
            # The count ends with this store: what the block holds after it does not run.
            tail, tail_cycles = self._after(self._pc(), including=False)
            self.instructions -= tail
            self.cycles -= tail_cycles
            self._charge(-tail, -tail_cycles)
            self._pending = None
            self._done = True
            self._end_slice("done")

    def _on_intr(self, uc, number, _):
        if number == EXCP_EXCEPTION_EXIT and self._active is not None:
            self._end_slice("return")           # the handler branched to EXC_RETURN
            return
        self._fault = FirmwareError(f"unexpected exception {number} at pc "
                                    f"0x{self._pc():08x} (a BKPT in Default_Handler is an "
                                    "exception the firmware has no handler for)")
        self._end_slice("fault")

    def _end_slice(self, why: str) -> None:
        """End the slice before the next block (or instruction, counting per instruction);
        a fault or the exception return stops at once (module docstring)."""
        if self._stop is None:
            self._stop = why
        if why in ("fault", "return"):
            self.uc.emu_stop()

    # ------------------------------------------------------------------ the accelerator
    def _flush(self) -> None:
        if self._posted is None:
            return
        offset, words = self._posted
        self._posted = None
        resp, irq = self.bus.write(offset, words)
        self._transfer(irq, reads=0, writes=len(words))
        if resp:
            self._fault = BusFault(f"ERROR on a write of {len(words)} words at 0x"
                                   f"{CIM_BASE + offset:08x} (pc 0x{self._pc():08x})")
            self._end_slice("fault")

    def _transfer(self, irq: bool, *, reads: int, writes: int) -> None:
        self._slice_transfers += 1
        self.bus_reads += reads
        self.bus_writes += writes
        st = self._stage_bus.setdefault(IRQ_STAGE if self._active is not None else self._stage,
                                        [0, 0])
        st[0] += reads
        st[1] += writes
        self._irq_line = irq
        if self._irq_ready():
            self._end_slice("irq")

    def _cim_read(self, uc, offset, size, _):
        self._flush()
        if size != 4:
            self._fault = FirmwareError(f"{size}-byte read of the accelerator at 0x"
                                        f"{CIM_BASE + offset:08x} (pc 0x{self._pc():08x})")
            self._end_slice("fault")
            return 0
        data, resp, irq = self.bus.read(offset)
        # The core stalls for the slave's wait states; the transfer's data phase is one
        # cycle more (the load's own second cycle, already in its class's 2).
        waits = next((w for start, end, w in self.read_waits if start <= offset < end), 0)
        self.cycles += waits
        self.bus_cycles += 1 + waits
        self._charge(0, waits, bus=1 + waits)
        if offset == self.accel_cycles_at and self._accel:
            self._accel[-1] = data
        self._transfer(irq, reads=1, writes=0)
        if resp:
            self._fault = BusFault(f"ERROR on a read at 0x{CIM_BASE + offset:08x} (pc "
                                   f"0x{self._pc():08x})")
            self._end_slice("fault")
        return data

    def _cim_write(self, uc, offset, size, value, _):
        if size != 4:
            self._fault = FirmwareError(f"{size}-byte write to the accelerator at 0x"
                                        f"{CIM_BASE + offset:08x} (pc 0x{self._pc():08x})")
            self._end_slice("fault")
            return
        self.bus_cycles += 1               # no wait states on writes; the store is posted
        self._charge(0, 0, bus=1)
        p = self._posted
        if p is not None and offset == p[0] + 4 * len(p[1]) and len(p[1]) < 256:
            p[1].append(value)
            return
        self._flush()
        self._posted = (offset, [value])

    # ------------------------------------------------------------------ SCS
    def _scs_read(self, uc, offset, size, _):
        if offset == DWT_CYCCNT:
            return (self._retired(self._pc()) - self._cyccnt_base) & 0xFFFF_FFFF
        if offset in (ISER0, ICER0):
            return self.nvic_enabled
        if offset in (ISPR0, ICPR0):
            return self.nvic_pending | (self._irq_line << self.irq_n)
        if offset in self.scs:
            return self.scs[offset]
        return self._scs_unknown(offset, "read")

    def _scs_write(self, uc, offset, size, value, _):
        if offset == DWT_CYCCNT:
            self._cyccnt_base = self._retired(self._pc()) - value
        elif offset == ISER0:
            self.nvic_enabled |= value
            if self._irq_ready():
                self._end_slice("irq")
        elif offset == ICER0:
            self.nvic_enabled &= ~value
        elif offset == ISPR0:
            self.nvic_pending |= value
        elif offset == ICPR0:
            self.nvic_pending &= ~value
        elif offset in self.scs:
            self.scs[offset] = value
        else:
            self._scs_unknown(offset, "write")

    def _scs_unknown(self, offset: int, what: str) -> int:
        self._fault = FirmwareError(f"{what} of an unemulated System Control Space register "
                                    f"0x{SCS + offset:08x} (pc 0x{self._pc():08x})")
        self._end_slice("fault")
        return 0

    # ------------------------------------------------------------------ exceptions
    def _irq_ready(self) -> bool:
        bit = 1 << self.irq_n
        pending = self._irq_line or self.nvic_pending & bit
        return bool(pending and self.nvic_enabled & bit and self._active is None
                    and not self.uc.reg_read(A.UC_ARM_REG_PRIMASK) & 1)

    def _enter(self) -> None:
        uc = self.uc
        frame = [uc.reg_read(r) for r in _FRAME]
        frame[6] &= ~1
        sp = uc.reg_read(A.UC_ARM_REG_SP)
        realign = (sp - 32) % 8
        frame[7] = (frame[7] & ~(1 << 9)) | (bool(realign) << 9)
        sp -= 32 + realign
        uc.mem_write(sp, struct.pack("<8I", *frame))
        self._active = [uc.reg_read(r) for r in _FP_SAVED]
        self.nvic_pending &= ~(1 << self.irq_n)
        self.irqs += 1
        self.cycles += m4.EXCEPTION_ENTRY
        self._charge(0, m4.EXCEPTION_ENTRY, IRQ_STAGE)
        self._prev = self._pending = None
        uc.reg_write(A.UC_ARM_REG_SP, sp)
        uc.reg_write(A.UC_ARM_REG_LR, EXC_RETURN)
        uc.reg_write(A.UC_ARM_REG_XPSR, 1 << 24)          # Thumb; flags and IT state clear
        uc.reg_write(A.UC_ARM_REG_XPSR_NZCVQG, 1 << 24)
        uc.reg_write(A.UC_ARM_REG_PC, self.word(4 * (16 + self.irq_n)))

    def _return(self) -> None:
        uc = self.uc
        sp = uc.reg_read(A.UC_ARM_REG_SP)
        frame = struct.unpack("<8I", bytes(uc.mem_read(sp, 32)))
        for r, v in zip(_FRAME[:6], frame[:6]):
            uc.reg_write(r, v)
        xpsr = frame[7] & ~(1 << 9)
        uc.reg_write(A.UC_ARM_REG_XPSR, xpsr)              # IT state and T
        uc.reg_write(A.UC_ARM_REG_XPSR_NZCVQG, xpsr)       # flags and GE (XPSR drops GE)
        uc.reg_write(A.UC_ARM_REG_SP, sp + 32 + (4 if frame[7] >> 9 & 1 else 0))
        for r, v in zip(_FP_SAVED, self._active):
            uc.reg_write(r, v)
        self.cycles += RETURN_CYCLES
        self._charge(0, RETURN_CYCLES, IRQ_STAGE)
        self._prev = self._pending = None
        self._active = None
        self._resume_at = frame[6]

    # ------------------------------------------------------------------ running
    def run(self) -> Run:
        """Reset and run the firmware until its results record says DONE or FAILED."""
        uc = self.uc
        self._t0 = time.perf_counter()
        uc.reg_write(A.UC_ARM_REG_SP, self.word(0))
        pc = self.word(4) & ~1
        while not self._done:
            if self.instructions >= self.max_instructions:
                raise FirmwareError(f"no result after {self.instructions:,} instructions "
                                    f"(pc 0x{pc:08x}, stage {self._stage})")
            self._stop, self._slice_transfers = None, 0
            start, start_cycles, start_bus = self.instructions, self.cycles, self.bus_cycles
            self._slice_end = start + (self.wait_slice if self._stage in WAIT_STAGES
                                       else self.slice)
            self._resume_at = None
            try:
                uc.emu_start(pc | 1, 0xFFFF_FFFF)
            except U.UcError as e:
                if self._fault is None:
                    raise FirmwareError(f"{e} at pc 0x{self._pc():08x} (stage "
                                        f"{self._stage})") from e
            if self._fault is not None:
                raise self._fault
            pc = self._pc()
            if self._stop == "return":
                self._return()
                pc = self._resume_at
                # The core takes its exception-return cycles before it looks for a pending
                # interrupt again; the handler's clearing write has reached the line by then
                # (sampled at once, a registered IRQ would still read high and re-enter).
                self._flush()
                self._irq_line = self.bus.idle(RETURN_CYCLES)
            self._block = (0, 0, [], [])
            self._flush()
            if self._done:
                break
            computing = (self.cycles - start_cycles) - (self.bus_cycles - start_bus)
            if self._stop in (None, "marker") and computing > 0:
                # The hardware runs while the core runs: the slice's estimated cycles, less
                # those its transfers took on the bus already.
                self._irq_line = self.bus.idle(computing)
            if self._irq_ready():
                uc.reg_write(A.UC_ARM_REG_PC, pc | 1)
                self._enter()
                pc = self._pc()
        return Run(results=self.results(), setup=dict(self._setup), frames=list(self._frames),
                   logits=list(self._logits), instructions=self.instructions, irqs=self.irqs,
                   bus_reads=self.bus_reads, bus_writes=self.bus_writes,
                   stage_bus=dict(self._stage_bus), setup_cycles=dict(self._setup_cycles),
                   frame_cycles=list(self._frame_cycles), setup_bus_cycles=dict(self._setup_bus),
                   frame_bus_cycles=list(self._frame_bus), cycles=self.cycles,
                   bus_cycles=self.bus_cycles, accel_cycles=list(self._accel))
