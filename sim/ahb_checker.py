"""AHB-Lite protocol checker: pure Python, one call per clock cycle.

The monitor (:class:`sim.ahb.AhbMonitor`) samples the bus once per cycle, after the rising
edge once every signal has settled, and hands a :class:`Sample` to the checkers: one
:class:`SlaveChecker` per slave (on that slave's own ``HSEL``, ``HREADYOUT``, ``HRESP``,
``HRDATA``) and one :class:`MasterChecker` on the master's outputs. A sample holds the values
of one cycle, which are the values the slaves register at the edge that ends it. A violated
rule raises :class:`AhbProtocolError` naming the rule, the checker and the cycle.

Rules follow the AMBA 3 AHB-Lite specification (ARM IHI 0033A); the rule names are what a
failure reports.

Slave rules
-----------
``reset_hreadyout``
    HREADYOUT is HIGH during reset.
``x_response``
    HREADYOUT and HRESP are never X or Z.
``idle_response``
    With no data phase of its own the slave drives HREADYOUT HIGH and HRESP OKAY (strict:
    the specification only uses the response of the slave that owns the data phase; every
    slave in this project keeps the idle response, so that a stray one is a bug).
``okay_on_idle``
    The data phase of an IDLE or BUSY transfer that selected the slave gets a zero-wait OKAY.
``single_cycle_error``
    ERROR takes two cycles: a first one with HREADYOUT LOW, so HRESP HIGH with HREADYOUT HIGH
    is only legal in the cycle after such a first cycle.
``error_second_cycle``
    The cycle after a first ERROR cycle has HRESP HIGH and HREADYOUT HIGH.
``max_wait``
    At most ``max_wait`` wait states per transfer (the specification recommends 16; a slave
    that never answers fails here instead of hanging the bench).
``x_read_data``
    A read that completes with OKAY has no X or Z on its active byte lanes. (AHB-Lite asks
    nothing of HRDATA during wait states, after an ERROR, or on the inactive lanes, and the
    checker asks nothing either; on 2-state simulators such as Verilator this rule cannot
    fire, the scoreboard's data comparison covers the value.)
``hready_mismatch``
    The data-phase owner's HREADYOUT is the HREADY every slave sees (a fabric check).

Master rules
------------
``x_control``
    HTRANS and HREADY are never X or Z, nor HADDR and HSIZE of an accepted transfer.
``address_hold``
    An address phase extended by wait states keeps HTRANS, HADDR, HWRITE, HSIZE, HBURST and
    HPROT, except: IDLE may become NONSEQ; after the first ERROR cycle the master may change
    to IDLE; BUSY may become SEQ (and, in an undefined-length INCR burst, anything).
``wdata_hold``
    HWDATA is stable while a write data phase is extended.
``size``, ``alignment``
    HSIZE is at most the 32-bit bus; HADDR is aligned to HSIZE. A test that sends illegal
    transfers on purpose lifts these two with :meth:`MasterChecker.permit`.
``seq_outside_burst``, ``busy_outside_burst``
    SEQ and BUSY only continue a burst that a NONSEQ started (BUSY never in a SINGLE).
``burst_address``, ``burst_control``, ``burst_length``, ``burst_1kb``
    Within a burst, each SEQ address follows the previous one (incrementing or wrapping),
    HWRITE/HSIZE/HBURST/HPROT stay as at the NONSEQ, a fixed-length burst has no more beats
    than its length, and no burst crosses a 1 KB boundary.
``burst_incomplete``
    A fixed-length burst is only left early (new NONSEQ or IDLE) after an ERROR response.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

__all__ = ["BURST_BEATS", "AhbProtocolError", "MasterChecker", "Observed", "Sample",
           "SlaveChecker", "burst_next_address", "lanes_mask"]

IDLE, BUSY, NONSEQ, SEQ = 0, 1, 2, 3
TRANS_NAMES = ("IDLE", "BUSY", "NONSEQ", "SEQ")
SINGLE, INCR = 0, 1
BURST_NAMES = ("SINGLE", "INCR", "WRAP4", "INCR4", "WRAP8", "INCR8", "WRAP16", "INCR16")
BURST_BEATS = {0: 1, 1: None, 2: 4, 3: 4, 4: 8, 5: 8, 6: 16, 7: 16}
"""Beats of each HBURST encoding (``None``: undefined-length INCR)."""
BUS_BYTES = 4


class AhbProtocolError(AssertionError):
    """A violated AHB-Lite rule; ``rule`` is its name, ``cycle`` the cycle it was seen in."""

    def __init__(self, checker: str, rule: str, cycle: int, detail: str):
        self.checker, self.rule, self.cycle, self.detail = checker, rule, cycle, detail
        super().__init__(f"AHB protocol violation [{rule}] at cycle {cycle} on {checker}: "
                         f"{detail}")


@dataclass(slots=True)
class Sample:
    """One cycle of the bus as the slaves see it. ``None`` is an X/Z value (4-state
    simulators only); ``hrdata_known`` has a 1 for each HRDATA bit that is 0 or 1."""

    rst: int
    hsel: int | None
    haddr: int | None
    htrans: int | None
    hwrite: int | None
    hsize: int | None
    hburst: int | None
    hprot: int | None
    hwdata: int | None
    hready: int | None
    hreadyout: int | None
    hresp: int | None
    hrdata: int
    hrdata_known: int = 0xFFFF_FFFF


@dataclass(slots=True)
class Observed:
    """A transfer seen completing on the bus (what the monitor hands to a scoreboard)."""

    addr: int
    write: bool
    size: int
    burst: int
    trans: int
    resp: int           #: 0 OKAY, 1 ERROR
    wdata: int          #: HWDATA in the last data-phase cycle (writes)
    rdata: int | None   #: HRDATA in the last cycle (reads with OKAY; None if X)
    start: int          #: cycle the address phase was accepted in
    end: int            #: cycle the data phase ended in
    waits: int          #: wait states (HREADYOUT low cycles, the first ERROR cycle included)

    def describe(self) -> str:
        kind = "write" if self.write else "read"
        return (f"{kind} {8 << self.size}-bit @0x{self.addr:08x} ({BURST_NAMES[self.burst]}/"
                f"{TRANS_NAMES[self.trans]}) cycles {self.start}-{self.end}")


def lanes_mask(addr: int, size: int) -> int:
    """Bit mask of the byte lanes a transfer uses on the 32-bit bus (little endian)."""
    nbytes = min(1 << size, BUS_BYTES)
    lane = addr % BUS_BYTES & ~(nbytes - 1)
    return ((1 << (8 * nbytes)) - 1) << (8 * lane)


def burst_next_address(addr: int, size: int, burst: int) -> int:
    """Address of the beat after ``addr`` in a burst (wrapping bursts wrap at their size)."""
    step = 1 << size
    beats = BURST_BEATS[burst]
    if burst in (2, 4, 6):
        span = beats * step
        return (addr & ~(span - 1)) | ((addr + step) & (span - 1))
    return (addr + step) & 0xFFFF_FFFF


class SlaveChecker:
    """Checks one slave's responses; :meth:`step` returns the transfer that completed in
    the cycle (an :class:`Observed`) or None.

    Parameters
    ----------
    name : str
        Names the slave in messages.
    max_wait : int
        Most wait states allowed per transfer (rule ``max_wait``).
    strict_idle : bool
        Enforce ``idle_response``.
    """

    def __init__(self, name: str, *, max_wait: int = 16, strict_idle: bool = True):
        self.name = name
        self.max_wait = max_wait
        self.strict_idle = strict_idle
        self.cycle = 0
        self._dp = None          # None, "IDLE", "BUSY" or [addr, write, size, burst, trans, start]
        self._err1 = False
        self._waits = 0

    def _fail(self, rule: str, detail: str):
        raise AhbProtocolError(self.name, rule, self.cycle, detail)

    def step(self, s: Sample) -> Observed | None:
        try:
            return self._step(s)
        finally:
            self.cycle += 1

    def _step(self, s: Sample) -> Observed | None:
        rdy, resp = s.hreadyout, s.hresp
        if s.rst:
            self._dp, self._err1, self._waits = None, False, 0
            if rdy != 1:
                self._fail("reset_hreadyout", f"HREADYOUT is {_fmt(rdy)} during reset")
            return None
        if rdy is None or resp is None:
            self._fail("x_response", f"HREADYOUT={_fmt(rdy)} HRESP={_fmt(resp)}")
        dp, done = self._dp, None
        if dp is not None and s.hready != rdy:
            self._fail("hready_mismatch", f"this slave owns the data phase with HREADYOUT="
                                          f"{rdy}, but the bus HREADY is {_fmt(s.hready)}")
        if dp is None:
            if self.strict_idle and (rdy != 1 or resp != 0):
                self._fail("idle_response", f"no data phase, yet HREADYOUT={rdy} HRESP={resp}")
        elif isinstance(dp, str):
            if rdy != 1 or resp != 0:
                self._fail("okay_on_idle", f"data phase of a {dp} transfer answered with "
                                           f"HREADYOUT={rdy} HRESP={resp}, not a zero-wait "
                                           "OKAY")
        else:
            addr, write, size, burst, trans, start = dp
            what = f"{'write' if write else 'read'} @0x{addr:08x} (from cycle {start})"
            if self._err1:
                if not (resp == 1 and rdy == 1):
                    self._fail("error_second_cycle", f"{what}: after the first ERROR cycle "
                                                     f"HREADYOUT={rdy} HRESP={resp}")
            elif resp == 1 and rdy == 1:
                self._fail("single_cycle_error", f"{what}: ERROR with HREADYOUT high and no "
                                                 "first cycle with HREADYOUT low")
            if rdy == 0:
                self._err1 = resp == 1
                self._waits += 1
                if self._waits > self.max_wait:
                    self._fail("max_wait", f"{what}: more than {self.max_wait} wait states")
            else:
                rdata = None
                if not write and resp == 0:
                    lanes = lanes_mask(addr, size)
                    if s.hrdata_known & lanes != lanes:
                        self._fail("x_read_data", f"{what}: HRDATA has X/Z on active lanes "
                                                  f"(known bits 0x{s.hrdata_known:08x})")
                    rdata = s.hrdata
                done = Observed(addr=addr, write=bool(write), size=size, burst=burst,
                                trans=trans, resp=resp, wdata=s.hwdata if write else 0,
                                rdata=rdata, start=start, end=self.cycle, waits=self._waits)
                self._err1, self._waits = False, 0
        if s.hready == 1:   # address phase accepted at this edge
            if not s.hsel:
                self._dp = None
            elif s.htrans in (NONSEQ, SEQ):
                self._dp = [s.haddr, s.hwrite, s.hsize, s.hburst, s.htrans, self.cycle]
            else:
                self._dp = TRANS_NAMES[s.htrans] if s.htrans is not None else "IDLE"
        elif s.hready is None:
            self._fail("x_response", "HREADY is X/Z")
        return done


class MasterChecker:
    """Checks the master's side: address/control hold, HWDATA hold, bursts, size and
    alignment (see the module docstring)."""

    _PERMITTABLE = frozenset({"size", "alignment"})

    def __init__(self, name: str = "master"):
        self.name = name
        self.cycle = 0
        self._prev: Sample | None = None
        self._permitted: set[str] = set()
        self._burst = None   # dict of the burst being issued
        self._wdp = False    # a write data phase is in progress
        self._err = False    # an ERROR was seen in the current burst
        self.trans_cycles = [0, 0, 0, 0]   # cycles out of reset by HTRANS (coverage)

    @contextlib.contextmanager
    def permit(self, *rules: str):
        """Lift the ``size`` / ``alignment`` rules inside the block (illegal transfers sent on
        purpose to see the slave's ERROR)."""
        bad = set(rules) - self._PERMITTABLE
        if bad:
            raise ValueError(f"only {sorted(self._PERMITTABLE)} can be permitted, not "
                             f"{sorted(bad)}")
        old = set(self._permitted)
        self._permitted |= set(rules)
        try:
            yield self
        finally:
            self._permitted = old

    def _fail(self, rule: str, detail: str):
        raise AhbProtocolError(self.name, rule, self.cycle, detail)

    def step(self, s: Sample) -> None:
        try:
            self._step(s)
        finally:
            self._prev = s
            self.cycle += 1

    def _step(self, s: Sample) -> None:
        p = self._prev
        if s.rst:
            self._burst, self._wdp, self._err = None, False, False
            return
        for name in ("htrans", "hready"):
            if getattr(s, name) is None:
                self._fail("x_control", f"{name.upper()} is X/Z")
        self.trans_cycles[s.htrans] += 1
        if p is not None and not p.rst and p.hready == 0:
            self._check_hold(p, s)
        if s.hresp == 1:
            self._err = True
        if s.hready != 1:
            return
        # The address phase in s is accepted at this edge.
        self._wdp = s.htrans in (NONSEQ, SEQ) and bool(s.hwrite)
        b = self._burst
        if s.htrans == NONSEQ:
            self._end_burst(b, "a new NONSEQ")
            self._accept_first(s)
        elif s.htrans == SEQ:
            if b is None:
                self._fail("seq_outside_burst", f"SEQ @0x{s.haddr:08x} without a burst")
            self._accept_seq(b, s)
        elif s.htrans == BUSY:
            if b is None or b["burst"] == SINGLE:
                self._fail("busy_outside_burst", "BUSY outside a burst")
        else:
            self._end_burst(b, "IDLE")
            self._burst = None

    def _check_hold(self, p: Sample, s: Sample) -> None:
        if self._wdp and s.hwdata != p.hwdata:
            self._fail("wdata_hold", f"HWDATA changed from {_fmt(p.hwdata)} to "
                                     f"{_fmt(s.hwdata)} during a wait state")
        if p.htrans == IDLE:
            return
        if p.hresp == 1 and s.htrans == IDLE:
            return   # cancelled after the first ERROR cycle
        fields = ("htrans", "haddr", "hwrite", "hsize", "hburst", "hprot")
        if p.htrans == BUSY:
            b = self._burst
            if s.htrans == SEQ:
                fields = fields[1:]
            elif s.htrans != BUSY and b is not None and b["burst"] == INCR:
                return   # an undefined-length burst may end during a waited BUSY
        for f in fields:
            if getattr(s, f) != getattr(p, f):
                self._fail("address_hold", f"{f.upper()} changed from {_fmt(getattr(p, f))} "
                                           f"to {_fmt(getattr(s, f))} while the "
                                           f"{TRANS_NAMES[p.htrans]} address phase waited")

    def _check_beat(self, s: Sample) -> None:
        if s.hsize is None or s.haddr is None:
            self._fail("x_control", "HADDR or HSIZE is X/Z in an accepted transfer")
        if s.hsize > 2 and "size" not in self._permitted:
            self._fail("size", f"HSIZE={s.hsize} ({8 << s.hsize} bits) on a 32-bit bus")
        if s.haddr % (1 << min(s.hsize, 7)) and "alignment" not in self._permitted:
            self._fail("alignment", f"HADDR 0x{s.haddr:08x} not aligned to "
                                    f"{1 << s.hsize} bytes")

    def _accept_first(self, s: Sample) -> None:
        self._check_beat(s)
        self._err = False
        self._burst = dict(burst=s.hburst, hwrite=s.hwrite, hsize=s.hsize, hprot=s.hprot,
                           beats=1, addr=s.haddr, start=s.haddr)

    def _accept_seq(self, b: dict, s: Sample) -> None:
        self._check_beat(s)
        for f in ("hwrite", "hsize", "hprot"):
            if getattr(s, f) != b[f]:
                self._fail("burst_control", f"{f.upper()} changed within a burst "
                                            f"({_fmt(b[f])} -> {_fmt(getattr(s, f))})")
        if s.hburst != b["burst"]:
            self._fail("burst_control", f"HBURST changed within a burst "
                                        f"({b['burst']} -> {_fmt(s.hburst)})")
        if b["burst"] == SINGLE:
            self._fail("seq_outside_burst", "SEQ after a SINGLE transfer")
        want = burst_next_address(b["addr"], b["hsize"], b["burst"])
        if b["burst"] in (1, 3, 5, 7) and want >> 10 != b["start"] >> 10:
            self._fail("burst_1kb", f"burst from 0x{b['start']:08x} crosses a 1 KB boundary "
                                    f"at 0x{want:08x}")
        if s.haddr != want:
            self._fail("burst_address", f"SEQ address 0x{s.haddr:08x}, expected "
                                        f"0x{want:08x}")
        b["beats"] += 1
        b["addr"] = s.haddr
        n = BURST_BEATS[b["burst"]]
        if n is not None and b["beats"] > n:
            self._fail("burst_length", f"{BURST_NAMES[b['burst']]} burst with more than "
                                       f"{n} beats")

    def _end_burst(self, b: dict | None, why: str) -> None:
        if b is None:
            return
        n = BURST_BEATS[b["burst"]]
        if n is not None and b["beats"] < n and not self._err:
            self._fail("burst_incomplete", f"{BURST_NAMES[b['burst']]} burst from "
                                           f"0x{b['start']:08x} left after {b['beats']} "
                                           f"beats by {why}, without an ERROR")


def _fmt(v) -> str:
    return "X" if v is None else f"0x{v:x}" if isinstance(v, int) and v > 9 else str(v)
