"""Python model of the accelerator's bus slave, built from :mod:`gateware.regmap` alone.

:class:`SlaveModel` predicts, for any transfer, the response (OKAY or ERROR) and the read
data, and tracks the state a transfer changes: the stored registers (``IRQ_ENABLE``,
``IRQ_STATUS``), the activation window's bytes, the logits, and the interrupt line. It knows
nothing of the slave's Verilog; the benches hold the two against each other.

The accelerator's own state is outside the model. Registers it drives (``STATUS``, the cycle
counters, the events in ``IRQ_STATUS``) hold still while it is idle: after reset the model
predicts their reset values; a START makes them unknown (``None``) and whether the
accelerator is busy too, until the bench says it is idle again (:meth:`SlaveModel.idle`);
then the first read of each teaches the model its value (:meth:`SlaveModel.learn`) and later
reads must agree. The ``LOGITS`` window's words behave the same (0 after reset; unknown
after a START until read while idle; words from ``cols`` on always read 0). ``CYCLES_TOTAL``
counts every cycle from reset or START, idle or not (:mod:`gateware.accelerator`): two reads
of it must differ by exactly the cycles between their data phases, and the first after a
reset or a START cannot exceed the cycles since.

The rules modelled are the ones :mod:`gateware.regmap` declares: decoding of the low
``addr_width`` bits of ``HADDR`` (the bits above are ignored), ERROR for unmapped addresses,
sizes a location does not take, misaligned addresses, writes to RO and reads of WO
locations, a write to an ``idle_only`` register or any window access while busy, but a write
to the slot of a double-buffered window (``IMAGE``) other than the one the run reads (the
slot its ``Drive`` register, ``IMAGE_SLOT``, held at START); RW registers
keep the written value masked to their fields, W1C bits clear where a 1 is written, a 1
written to a field declared ``Pulse("start")`` starts a run, and the interrupt follows each
W1C register and its ``irq_enable`` register.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateware.regmap import REG_BLOCK, REG_SIZES, Access, Pulse, Register, RegMap, Window

from .ahb_checker import Observed

__all__ = ["FREE_RUNNING", "Decoded", "Expect", "Scoreboard", "SlaveModel"]

OKAY, ERROR = 0, 1
RESP = ("OKAY", "ERROR")
FREE_RUNNING = ("CYCLES_TOTAL",)
"""Registers that count every cycle, not only while the accelerator is busy."""


@dataclass(frozen=True)
class Expect:
    """What the slave should answer: ``resp`` (None: unknown), the read data on the bits of
    ``rmask`` (0: nothing to compare), ``learn``: the register whose value this read
    teaches the model, ``count``: the free-running counter read."""

    resp: int | None
    rdata: int = 0
    rmask: int = 0
    learn: str | None = None
    count: str | None = None     #: a free-running counter (see the module docstring)


@dataclass(frozen=True)
class Decoded:
    """Where an address lands: a register, a window (and the offset in it), or nowhere."""

    offset: int
    register: Register | None = None
    window: Window | None = None

    @property
    def name(self) -> str:
        if self.register is not None:
            return self.register.name
        if self.window is not None:
            return f"{self.window.name}+0x{self.offset - self.window.offset:x}"
        return "unmapped"


class SlaveModel:
    """See the module docstring. ``act_bits``: meaningful bits of an activation word
    (``rows * a_bits``); the rest of its slices reads 0."""

    def __init__(self, regmap: RegMap):
        self.rm = regmap
        cfg = regmap.config
        self.act_bits = cfg.rows * cfg.a_bits
        self._regs = {r.offset: r for r in regmap.registers}
        self.volatile = tuple(r.name for r in regmap.registers
                              if not r.const and (r.access is Access.RO
                                                  or r.access is Access.W1C))
        self.values: dict[str, int | None] = {r.name: r.reset for r in regmap.registers}
        self.act: dict[int, int] = {}     # window byte offset -> byte, where known
        self.busy: bool | None = False    # None: unknown (a run may be in progress)
        self.logits: dict[int, int | None] = dict.fromkeys(range(cfg.cols), 0)
        self.active_slot = 0              # the image slot latched by the last START
        # Free-running counters: (value, cycle) of the last read, None before one.
        self.counts: dict[str, tuple[int, int] | None] = {n: None for n in FREE_RUNNING}

    def reset(self) -> None:
        """Registers back to their reset values (the activation memory is not reset)."""
        self.values = {r.name: r.reset for r in self.rm.registers}
        self.busy = False
        self.counts = dict.fromkeys(FREE_RUNNING)
        self.logits = dict.fromkeys(self.logits, 0)

    def started(self) -> None:
        """A START was written: the accelerator's registers, busy state and activation
        buffer (which it overwrites) are unknown."""
        self.busy = None
        self.active_slot = self.values.get("IMAGE_SLOT", 0) & 1
        self.act.clear()
        self.counts = dict.fromkeys(FREE_RUNNING)
        self.logits = dict.fromkeys(self.logits)
        for name in self.volatile:
            self.values[name] = None

    def idle(self) -> None:
        """The run is over (the bench saw DONE): windows and CTRL are open again."""
        self.busy = False

    def learn(self, name: str, value: int) -> None:
        """The value of an accelerator-driven register, or of logit word ``LOGITS:<c>``, read
        while idle."""
        if name.startswith("LOGITS:"):
            self.logits[int(name[7:])] = value & 0xFFFF_FFFF
            return
        self.values[name] = value & self.rm.register(name).mask

    def decode(self, addr: int) -> Decoded:
        off = addr & (self.rm.span - 1)
        if off < REG_BLOCK:
            return Decoded(off, register=self._regs.get(off & ~3))
        for w in self.rm.windows:
            if w.offset <= off < w.end:
                return Decoded(off, window=w)
        return Decoded(off)

    def _act_bits_of(self, byte_off: int) -> int:
        """Mask of the meaningful bits of the activation-window byte at ``byte_off``."""
        slice_bits = (byte_off % self.rm.window("ACT").word_bytes) * 8
        keep = max(0, min(8, self.act_bits - slice_bits))
        return (1 << keep) - 1

    def response(self, addr: int, write: bool, size: int) -> int | None:
        """OKAY or ERROR for a transfer (``size``: the HSIZE code); None when it depends on
        whether the accelerator is busy and that is unknown."""
        d = self.decode(addr)
        nbytes = 1 << size
        if size > 2 or addr % nbytes:
            return ERROR
        if d.register is not None:
            r = d.register
            if nbytes not in REG_SIZES:
                return ERROR
            if write:
                if r.access.writable and r.idle_only and self.busy is None:
                    return None
                ok = r.access.writable and not (r.idle_only and self.busy)
            else:
                ok = r.access.readable
            return OKAY if ok else ERROR
        if d.window is not None:
            w = d.window
            ok = w.access.writable if write else w.access.readable
            if nbytes not in w.sizes or not ok:
                return ERROR
            if (write and w.active_slot is not None
                    and (d.offset - w.offset >= w.slot_bytes) != self.active_slot):
                return OKAY                 # double buffering: the slot the run does not read
            if self.busy:
                return ERROR
            return None if self.busy is None else OKAY
        return ERROR

    def apply(self, addr: int, write: bool, size: int, wdata: int = 0,
              resp: int | None = None) -> Expect:
        """Perform a transfer on the model and return what the slave should answer.
        ``wdata`` is the whole HWDATA word; ``resp`` the response seen, which decides the
        state change where the model's own is unknown."""
        want = self.response(addr, write, size)
        if want is not None:
            resp = want
        if resp != OKAY:
            return Expect(want)
        d = self.decode(addr)
        if d.register is not None:
            r = d.register
            value = self.values[r.name]
            if not write:
                if r.name in FREE_RUNNING:
                    return Expect(want, count=r.name)
                if value is None:
                    return Expect(want, learn=r.name)
                return Expect(want, value & r.mask, 0xFFFF_FFFF)
            if r.access is Access.RW:
                self.values[r.name] = wdata & r.mask
            elif r.access is Access.W1C and value is not None:
                self.values[r.name] = value & ~wdata & r.mask
            elif any(f.hw == Pulse("start") and wdata & f.mask for f in r.fields):
                self.started()
            return Expect(want)
        w = d.window
        if w.name == "LOGITS":           # read only: the accelerator's logit registers
            word = (d.offset - w.offset) // 4
            value = self.logits.get(word, 0)
            if value is None:
                return Expect(want, learn=f"LOGITS:{word}")
            return Expect(want, value, 0xFFFF_FFFF)
        if w.name != "ACT":
            return Expect(want)          # write-only memories: nothing to read back
        rel = d.offset - w.offset
        if write:
            for i in range(1 << size):
                b = rel + i
                self.act[b] = (wdata >> (8 * (b & 3))) & self._act_bits_of(b)
            return Expect(want)
        # A read returns the whole 32-bit slice: compare the bytes the model knows.
        word = known = 0
        for i in range(4):
            b = (rel & ~3) + i
            if b in self.act:
                word |= self.act[b] << (8 * i)
                known |= 0xFF << (8 * i)
        return Expect(want, word, known)

    def irq(self) -> int | None:
        """The interrupt line the model expects (None: unknown): some W1C register has a bit
        set that its ``irq_enable`` register enables."""
        pairs = [(self.values[r.name], self.values[r.irq_enable]) for r in self.rm.registers
                 if r.irq_enable is not None]
        if any(st & en for st, en in pairs if st is not None and en is not None):
            return 1
        return None if any(st is None or en is None for st, en in pairs) else 0

    def unmapped_offsets(self) -> list[tuple[int, int]]:
        """``(start, end)`` byte ranges of the slave's space that nothing covers."""
        gaps, cursor = [], 0
        taken = sorted([(r.offset, r.offset + 4) for r in self.rm.registers]
                       + [(w.offset, w.end) for w in self.rm.windows])
        for lo, hi in taken:
            if lo > cursor:
                gaps.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < self.rm.span:
            gaps.append((cursor, self.rm.span))
        return gaps

    def readable(self) -> list[Register]:
        return [r for r in self.rm.registers if r.access.readable]

    def window(self, name: str) -> Window:
        return self.rm.window(name)

    def describe(self, addr: int) -> str:
        return f"0x{addr:08x} ({self.decode(addr).name})"


class Scoreboard:
    """Holds every transfer a monitor sees completing on the slave against the model.

    ``fail(message)`` reports a mismatch (the bench's check with the seed). ``checked`` and
    ``unchecked`` count transfers whose response was and was not predictable."""

    def __init__(self, model: SlaveModel, fail: Callable[[str], None]):
        self.model = model
        self.fail = fail
        self.checked = self.unchecked = self.compared_reads = 0

    def __call__(self, t: Observed) -> None:
        m = self.model
        e = m.apply(t.addr, t.write, t.size, t.wdata, resp=t.resp)
        where = f"{t.describe()} [{m.decode(t.addr).name}]"
        if e.resp is None:
            self.unchecked += 1
        else:
            self.checked += 1
            if t.resp != e.resp:
                self.fail(f"{where}: response {RESP[t.resp]}, model {RESP[e.resp]}")
                return
        if t.write or t.resp != OKAY:
            return
        if t.rdata is None:
            self.fail(f"{where}: read data has X/Z")
        elif e.count is not None:
            last = m.counts[e.count]
            if last is None:
                ok = t.rdata <= t.end       # no more cycles than since the monitor started
            else:
                ok = t.rdata - last[0] == t.end - last[1]
            if not ok:
                self.fail(f"{where}: counter reads {t.rdata} at cycle {t.end}; last read "
                          f"(value, cycle) {last}")
            m.counts[e.count] = (t.rdata, t.end)
            self.compared_reads += 1
        elif e.learn is not None and m.busy is False:
            m.learn(e.learn, t.rdata)
        elif e.rmask and (t.rdata ^ e.rdata) & e.rmask:
            self.fail(f"{where}: read 0x{t.rdata:08x}, model 0x{e.rdata:08x} "
                      f"(compared bits 0x{e.rmask:08x})")
        elif e.rmask:
            self.compared_reads += 1
