"""cocotb AHB-Lite master driver and bus monitor (cocotb 2.x).

:class:`AhbMaster` issues transfers (:class:`Op`) the way a Cortex-M4 bus matrix would, and
more varied: pipelined back to back, with random IDLE cycles between transfers and random
BUSY cycles inside bursts, SINGLE, undefined-length INCR, INCR4/8/16 and WRAP4/8/16 bursts,
byte, halfword and word sizes, random data on the byte lanes a transfer does not use and on
HWDATA outside write data phases, random address and control on IDLE cycles. It reads the
response of every transfer back into its :class:`Op`.

:class:`AhbMonitor` watches the bus independently of the driver, once per cycle, through the
harness's packed probe (:data:`sim.harness.MON`): it runs a
:class:`~sim.ahb_checker.MasterChecker` on the master and a
:class:`~sim.ahb_checker.SlaveChecker` on each slave, and hands every completed transfer
(:class:`~sim.ahb_checker.Observed`) to the scoreboards registered with :meth:`subscribe`.

Timing: the driver writes after a rising edge and reads the response in the ``ReadOnly``
phase of the same cycle; the monitor samples in that phase too. So what both see is what
the slaves register at the next edge.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from .ahb_checker import (
    BURST_BEATS,
    BURST_NAMES,
    BUSY,
    IDLE,
    NONSEQ,
    SEQ,
    SINGLE,
    AhbProtocolError,
    MasterChecker,
    Observed,
    Sample,
    SlaveChecker,
    burst_next_address,
    lanes_mask,
)
from .harness import MON, MON_BUS, MON_SLAVE

__all__ = ["BURSTS", "AhbMaster", "AhbMonitor", "AhbResponseError", "Op", "burst_ops",
           "split_bursts"]

BURSTS = {name: code for code, name in enumerate(BURST_NAMES)}
"""HBURST encodings by name."""
OKAY, ERROR = 0, 1


class AhbResponseError(AssertionError):
    """A transfer expected to succeed got an ERROR response."""


@dataclass(slots=True, eq=False)
class Op:
    """One transfer as the master issues it, and its outcome.

    ``data`` is the write value, right-aligned (``8 << size`` bits); the driver puts it on
    the transfer's byte lanes. After :meth:`AhbMaster.run`: ``resp`` (0 OKAY, 1 ERROR),
    ``rdata`` (reads: the addressed lanes, right-aligned) and ``hrdata`` (the whole word).
    """

    addr: int
    write: bool
    size: int = 2
    data: int = 0
    burst: int = SINGLE
    seq: bool = False
    resp: int | None = None
    rdata: int | None = None
    hrdata: int | None = None

    def describe(self) -> str:
        kind = "write" if self.write else "read"
        return (f"{kind} {8 << self.size}-bit @0x{self.addr:08x} "
                f"({BURST_NAMES[self.burst]}{'/SEQ' if self.seq else ''})")


def burst_ops(addr: int, write: bool, *, size: int = 2, burst: int | str = "INCR",
              data: Sequence[int] | None = None, beats: int | None = None) -> list[Op]:
    """The beats of one burst from ``addr``: ``data`` for writes, ``beats`` for reads of an
    undefined-length INCR (fixed-length bursts have their own). Raises :class:`ValueError`
    for a burst a master may not issue (misaligned, crossing 1 KB, wrong length)."""
    code = BURSTS[burst] if isinstance(burst, str) else burst
    n = BURST_BEATS[code]
    count = len(data) if data is not None else beats
    if count is None:
        count = n
    if n is not None and count != n:
        raise ValueError(f"a {BURST_NAMES[code]} burst has {n} beats, not {count}")
    if count < 1:
        raise ValueError("a burst has at least one beat")
    if addr % (1 << size):
        raise ValueError(f"address 0x{addr:08x} is not aligned to {1 << size} bytes")
    ops, a = [], addr
    for i in range(count):
        ops.append(Op(addr=a, write=write, size=size, data=data[i] if data is not None else 0,
                      burst=code, seq=i > 0))
        a = burst_next_address(a, size, code)
    if code not in (2, 4, 6) and (ops[-1].addr >> 10) != (addr >> 10):
        raise ValueError(f"burst from 0x{addr:08x} of {count} beats crosses a 1 KB boundary")
    return ops


_IDLE = object()    # an IDLE slot in the schedule


class AhbMaster:
    """AHB-Lite master on the harness's master port.

    Parameters
    ----------
    dut : the cocotb handle of the top level (signals ``HADDR`` .. ``HWDATA`` driven,
        ``HREADY``, ``HRESP``, ``HRDATA`` read) ; clk : its clock.
    rng : random.Random
        Source of every random choice (gaps, lanes, burst mix), so a seed replays a run.
    idle, busy : float
        Probability of IDLE cycles before a NONSEQ and of BUSY cycles before a SEQ beat
        (1 to ``max_gap`` cycles each time).
    cancel_after_error : float
        Probability that, after the first cycle of an ERROR, a pending NONSEQ is replaced by
        IDLE for one cycle and issued again afterwards (the specification's cancel option).
    idle_address : callable or None
        ``idle_address(rng)`` gives the HADDR of IDLE cycles (default: any 32-bit value).
    """

    _DRIVEN = ("HADDR", "HTRANS", "HWRITE", "HSIZE", "HBURST", "HPROT", "HWDATA")

    def __init__(self, dut, clk, *, rng: random.Random, idle: float = 0.0, busy: float = 0.0,
                 max_gap: int = 3, prot: int = 0b0011, cancel_after_error: float = 0.0,
                 idle_address: Callable[[random.Random], int] | None = None):
        self.rng = rng
        self.idle, self.busy, self.max_gap = idle, busy, max_gap
        self.prot = prot
        self.cancel_after_error = cancel_after_error
        self.idle_address = idle_address
        self.clk = clk
        self._handles = {n: getattr(dut, n) for n in self._DRIVEN}
        self._driven: dict[str, int] = {}
        self._hready, self._hresp, self._hrdata = dut.HREADY, dut.HRESP, dut.HRDATA
        self.cycles = 0
        self.transfers = 0
        self.cancelled = 0

    def reset_values(self) -> None:
        """Drive IDLE (call before reset is released)."""
        for n in self._DRIVEN:
            self._set(n, 0)

    def _set(self, name: str, value: int) -> None:
        if self._driven.get(name) != value:
            self._handles[name].value = value
            self._driven[name] = value

    # -------------------------------------------------------------- schedule
    def _slots(self, ops: Iterable[Op]) -> Iterator[object]:
        rng = self.rng
        for op in ops:
            if op.seq:
                if self.busy and rng.random() < self.busy:
                    for _ in range(rng.randint(1, self.max_gap)):
                        yield (BUSY, op)
            elif self.idle and rng.random() < self.idle:
                for _ in range(rng.randint(1, self.max_gap)):
                    yield _IDLE
            yield op

    def _drive_address(self, slot) -> None:
        if slot is _IDLE or slot is None:
            # The address and control of an IDLE cycle mean nothing: make them random.
            r = self.rng.getrandbits(32)
            self._set("HTRANS", IDLE)
            self._set("HADDR", self.idle_address(self.rng) if self.idle_address else r)
            self._set("HWRITE", r & 1)
            self._set("HSIZE", (r >> 1) & 3 if (r >> 1) & 3 < 3 else 2)
            self._set("HBURST", (r >> 3) & 7)
            return
        trans, op = (slot if type(slot) is tuple else (SEQ if slot.seq else NONSEQ, slot))
        self._set("HTRANS", trans)
        self._set("HADDR", op.addr)
        self._set("HWRITE", int(op.write))
        self._set("HSIZE", op.size)
        self._set("HBURST", op.burst)
        self._set("HPROT", self.prot)

    def _wdata(self, op: Op | None) -> int:
        noise = self.rng.getrandbits(32)
        if op is None or not op.write:
            return noise
        if op.size > 2:
            return op.data & 0xFFFF_FFFF
        lanes = lanes_mask(op.addr, op.size)
        return (noise & ~lanes) | ((op.data << (8 * (op.addr & 3))) & lanes)

    def _read(self, handle, what: str) -> int:
        v = handle.value
        try:
            return int(v)
        except ValueError:
            raise AhbProtocolError("master", "x_response", self.cycles,
                                   f"{what} is {v}") from None

    # -------------------------------------------------------------- run
    async def run(self, ops: Sequence[Op]) -> Sequence[Op]:
        """Issue ``ops`` in order, pipelined, with the random gaps; return them with their
        responses. Each op with ``seq=False`` starts a NONSEQ; :class:`ValueError` if the
        list does not hold whole bursts (a fixed-length burst cut short, a SEQ first)."""
        _check_bursts(ops)
        slots = self._slots(ops)
        cur = next(slots, None)
        data: Op | None = None
        defer = False
        edge, ro = RisingEdge(self.clk), ReadOnly()
        new_data = True
        while cur is not None or data is not None:
            await edge
            self._drive_address(_IDLE if defer else cur)
            if new_data:
                self._set("HWDATA", self._wdata(data))
            await ro
            self.cycles += 1
            hready = self._read(self._hready, "HREADY")
            new_data = False
            if data is not None:
                if hready:
                    data.resp = self._read(self._hresp, "HRESP")
                    if not data.write and data.resp == OKAY:
                        try:
                            data.hrdata = self._hrdata.value.to_unsigned()
                        except ValueError:    # X/Z: the monitor names the rule
                            data.hrdata = None
                        if data.hrdata is not None:
                            shift = 8 * (data.addr & 3) if data.size < 2 else 0
                            width = 8 << min(data.size, 2)
                            data.rdata = (data.hrdata >> shift) & ((1 << width) - 1)
                    self.transfers += 1
                    data, new_data = None, True
                elif (self._read(self._hresp, "HRESP") and type(cur) is Op and not cur.seq
                      and self.cancel_after_error
                      and self.rng.random() < self.cancel_after_error):
                    defer = True
                    self.cancelled += 1
                    continue
            if hready:
                if defer:
                    defer = False
                else:
                    if type(cur) is Op:
                        data, new_data = cur, True
                    cur = next(slots, None)
        return ops

    # -------------------------------------------------------------- conveniences
    async def write(self, addr: int, data: int, size: int = 2) -> int:
        """One SINGLE write; returns the response (0 OKAY, 1 ERROR)."""
        (op,) = await self.run([Op(addr=addr, write=True, size=size, data=data)])
        return op.resp

    async def read(self, addr: int, size: int = 2) -> Op:
        """One SINGLE read; returns the :class:`Op` (``rdata``, ``resp``)."""
        (op,) = await self.run([Op(addr=addr, write=False, size=size)])
        return op

    def block_ops(self, addr: int, count: int, *, write: bool,
                  data: Sequence[int] | None = None, bursts: str = "mixed") -> list[Op]:
        """Word transfers covering ``count`` words from ``addr``: ``bursts`` is a burst name
        for all of them, or ``"mixed"`` for a random mix of every kind (wrapping bursts
        start mid-span, so their beats reach the words out of order)."""
        ops: list[Op] = []
        i = 0
        kinds = list(BURSTS) if bursts == "mixed" else [bursts]
        while i < count:
            a = addr + 4 * i
            left = min(count - i, (1024 - a % 1024) // 4)   # stay inside the 1 KB page
            kind = self.rng.choice(kinds)
            n = BURST_BEATS[BURSTS[kind]]
            if n is None:
                n = min(left, self.rng.randint(1, 32)) if bursts == "mixed" else left
            if n > left or (kind.startswith("WRAP") and a % (4 * n)):
                kind, n = "SINGLE", 1
            if kind.startswith("WRAP") and n > 1:
                start = self.rng.randrange(n)      # the beat the burst starts with
                beats = burst_ops(a + 4 * start, write, burst=kind, beats=n, data=(
                    [data[i + (start + k) % n] for k in range(n)] if data is not None
                    else None))
            else:
                beats = burst_ops(a, write, burst=kind, beats=n,
                                  data=data[i:i + n] if data is not None else None)
            ops += beats
            i += n
        return ops

    async def write_words(self, addr: int, words: Sequence[int], *, bursts: str = "mixed"
                          ) -> None:
        """Write 32-bit ``words`` from ``addr``; :class:`AhbResponseError` on any ERROR."""
        ops = await self.run(self.block_ops(addr, len(words), write=True,
                                            data=[int(w) for w in words], bursts=bursts))
        _raise_errors(ops)

    async def read_words(self, addr: int, count: int, *, bursts: str = "mixed") -> list[int]:
        """Read ``count`` 32-bit words from ``addr``; :class:`AhbResponseError` on any
        ERROR."""
        ops = await self.run(self.block_ops(addr, count, write=False, bursts=bursts))
        _raise_errors(ops)
        return [op.rdata for op in sorted(ops, key=lambda o: o.addr)]


def _check_bursts(ops: Sequence[Op]) -> None:
    left = 0
    for i, op in enumerate(ops):
        if op.seq:
            if i == 0 or ops[i - 1].burst != op.burst:
                raise ValueError(f"op {i} ({op.describe()}) continues no burst")
            left -= 1
        else:
            if left > 0:
                raise ValueError(f"op {i} ({op.describe()}) starts before the "
                                 f"{BURST_NAMES[ops[i - 1].burst]} burst ends")
            left = (BURST_BEATS[op.burst] or 1) - 1
    if left > 0:
        raise ValueError(f"the ops end inside a {BURST_NAMES[ops[-1].burst]} burst")


def split_bursts(ops: Sequence[Op], size: int) -> list[list[Op]]:
    """``ops`` in chunks of about ``size``, cut only between bursts."""
    chunks, cur = [], []
    for op in ops:
        if not op.seq and len(cur) >= size:
            chunks.append(cur)
            cur = []
        cur.append(op)
    if cur:
        chunks.append(cur)
    return chunks


def _raise_errors(ops: Sequence[Op]) -> None:
    bad = [op for op in ops if op.resp != OKAY]
    if bad:
        raise AhbResponseError(f"{len(bad)} of {len(ops)} transfers got ERROR, the first: "
                               f"{bad[0].describe()}")


class _Probe:
    """Decode the harness's packed monitor output (:data:`sim.harness.MON`)."""

    def __init__(self, handle, layout):
        self.handle = handle
        self.fields = []
        self.shift = {}
        shift = 0
        for name, width in layout:
            self.fields.append((name, shift, (1 << width) - 1))
            self.shift[name] = shift
            shift += width

    def read(self) -> tuple[dict, int]:
        """(field values, bit mask of known bits), X/Z fields as None."""
        v = self.handle.value
        try:
            word = v.to_unsigned()
        except ValueError:   # X or Z somewhere (4-state simulators)
            pass
        else:
            return {n: (word >> s) & m for n, s, m in self.fields}, -1
        text = str(v)[::-1]                      # least significant first
        word = sum(1 << i for i, c in enumerate(text) if c == "1")
        known = sum(1 << i for i, c in enumerate(text) if c in "01")
        out = {}
        for n, s, m in self.fields:
            out[n] = (word >> s) & m if (known >> s) & m == m else None
        return out, known


class AhbMonitor:
    """Samples the harness every cycle, checks the protocol, reports completed transfers.

    Parameters
    ----------
    dut : the harness; clk : its clock.
    slaves : which slaves to check (``"dut"``, ``"ram"``).
    raise_on_violation : bool
        Raise :class:`~sim.ahb_checker.AhbProtocolError` from the monitor task (which fails
        the running test); otherwise collect them in :attr:`violations`.
    note : str
        Appended to every violation message (the seed).
    checker options (``max_wait``, ``strict_idle``) are passed to the slave checkers.
    """

    def __init__(self, dut, clk, *, slaves: Sequence[str] = ("dut", "ram"),
                 raise_on_violation: bool = True, note: str = "", **checker_options):
        self.clk = clk
        self._probe = _Probe(dut.mon, MON)
        self._bus_fields = [n for n, _ in MON_BUS if n != "hresp"]
        self._slave_fields = {s: [(f"{s}_{n}", n) for n, _ in MON_SLAVE] for s in slaves}
        self._rdata_shift = {s: self._probe.shift[f"{s}_hrdata"] for s in slaves}
        self.master = MasterChecker("master")
        self.checkers = {n: SlaveChecker(n, **checker_options) for n in slaves}
        self.raise_on_violation = raise_on_violation
        self.note = note
        self.violations: list[AhbProtocolError] = []
        self.observed: dict[str, int] = {n: 0 for n in slaves}
        self._subscribers: dict[str, list[Callable[[Observed], None]]] = {n: [] for n in slaves}
        self.cycles = 0
        self._task = None

    def subscribe(self, slave: str, callback: Callable[[Observed], None]) -> None:
        """Call ``callback(observed)`` for every transfer completed by ``slave``."""
        self._subscribers[slave].append(callback)

    def start(self) -> AhbMonitor:
        self._task = cocotb.start_soon(self._run())
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _violation(self, e: AhbProtocolError) -> None:
        if self.note:
            e.args = (f"{e.args[0]} ({self.note})",)
        if self.raise_on_violation:
            raise e
        self.violations.append(e)

    async def _run(self) -> None:
        edge, ro = RisingEdge(self.clk), ReadOnly()
        bus_fields, slave_fields = self._bus_fields, self._slave_fields
        while True:
            await edge
            await ro
            values, known = self._probe.read()
            bus = {n: values[n] for n in bus_fields}
            try:
                self.master.step(Sample(hsel=1, hreadyout=bus["hready"],
                                        hresp=values["hresp"], hrdata=0, **bus))
            except AhbProtocolError as e:
                self._violation(e)
            for name, fields in slave_fields.items():
                sl = {short: values[full] for full, short in fields}
                if sl["hrdata"] is None:
                    sl["hrdata"] = 0
                rknown = (known >> self._rdata_shift[name]) & 0xFFFF_FFFF
                try:
                    done = self.checkers[name].step(Sample(hrdata_known=rknown, **bus, **sl))
                except AhbProtocolError as e:
                    self._violation(e)
                    continue
                if done is not None:
                    self.observed[name] += 1
                    for cb in self._subscribers[name]:
                        cb(done)
            self.cycles += 1
