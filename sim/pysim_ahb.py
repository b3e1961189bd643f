"""A pipelined AHB-Lite master for the Amaranth simulator (the cocotb one is :mod:`sim.ahb`).

:func:`ahb` runs a list of address phases (:class:`T`; :func:`rd`, :func:`wr`) back to back
against a component with an AHB-Lite slave port ``bus`` and reports each data phase
(:class:`R`): the unit tests of the slave (``tests/test_ahb.py``) and
:mod:`sim.cal_pysim` use it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from amaranth.hdl import Value

from gateware.ahb import HBurst, HSize, HTrans

__all__ = ["IDLE", "SIZES", "R", "T", "ahb", "lane_value", "rd", "wr"]

SIZES = {1: HSize.BYTE, 2: HSize.HALFWORD, 4: HSize.WORD}


@dataclass
class T:
    """One address phase. ``size`` in bytes (1, 2, 4) or an :class:`HSize`; ``sel=False`` is
    a transfer to another slave, which holds ``HREADY`` low for ``stall`` cycles."""

    addr: int = 0
    write: bool = False
    data: int = 0
    size: int | HSize = 4
    trans: HTrans = HTrans.NONSEQ
    burst: HBurst = HBurst.SINGLE
    sel: bool = True
    stall: int = 0


@dataclass
class R:
    """The data phase of a :class:`T`: ``(HREADYOUT, HRESP)`` per cycle and the read data."""

    t: T
    trace: list = field(default_factory=list)
    rdata: int | None = None
    cycle: int | None = None

    @property
    def ok(self) -> bool:
        return all(resp == 0 for _, resp in self.trace) and self.trace[-1][0] == 1

    @property
    def error(self) -> bool:
        return self.trace == [(0, 1), (1, 1)]

    @property
    def waits(self) -> int:
        return sum(1 for ready, _ in self.trace if not ready)


IDLE = T(sel=False, trans=HTrans.IDLE)


async def ahb(ctx, bus, items, rng=None, probe=None) -> list[R]:
    """Run ``items`` back to back, pipelined (the next address phase overlaps the current data
    phase), as a master behind a one-slave interconnect: ``HREADY`` follows the slave's
    ``HREADYOUT`` except while another slave's (``sel=False``) data phase stalls. ``HWDATA``
    carries noise outside write data phases. Returns one :class:`R` per item, ``R.cycle`` the
    cycle (from 0) its data phase ended in; ``probe(ctx)``, if given, is called every cycle
    before the clock edge."""
    rng = rng or random.Random(0)
    queue = deque(items)
    out = []
    a_item = d_item = d_res = None
    stall = cycle = 0
    while queue or a_item or d_item:
        if a_item is None and queue:
            a_item = queue.popleft()
        a = a_item or IDLE
        size = a.size if isinstance(a.size, HSize) else SIZES[a.size]
        for name, value in (("HSEL", a.sel), ("HADDR", a.addr), ("HTRANS", a.trans.value),
                            ("HWRITE", a.write), ("HSIZE", size.value),
                            ("HBURST", a.burst.value), ("HPROT", 0b0011)):
            ctx.set(Value.cast(getattr(bus, name)), int(value))
        write_data = d_item is not None and d_item.sel and d_item.write
        ctx.set(bus.HWDATA, d_item.data if write_data else rng.getrandbits(32))
        ready = ctx.get(bus.HREADYOUT)
        if d_item is not None and not d_item.sel and stall:
            # Another slave's wait state: ours must show OKAY and not sample the address.
            assert ready == 1 and ctx.get(Value.cast(bus.HRESP)) == 0
            ready, stall = 0, stall - 1
        ctx.set(bus.HREADY, ready)
        if d_item is not None:
            d_res.trace.append((ready, ctx.get(Value.cast(bus.HRESP))))
            if ready:
                d_res.rdata, d_res.cycle = ctx.get(bus.HRDATA), cycle
                out.append(d_res)
        if probe is not None:
            probe(ctx)
        await ctx.tick()
        cycle += 1
        if ready:
            d_item, d_res = a_item, (R(a_item) if a_item else None)
            stall = a_item.stall if a_item else 0
            a_item = None
    return out


def rd(addr, size=4, **kw):
    return T(addr=addr, size=size, **kw)


def wr(addr, value, size=4, **kw):
    """A write of ``value`` (its bytes placed on their lanes, as a master does)."""
    return T(addr=addr, write=True, data=(value << 8 * (addr % 4)) & 0xFFFF_FFFF, size=size,
             **kw)


def lane_value(r: R, size=None) -> int:
    """The bytes of a read's own lanes (shifted down), as a master reads them."""
    size = size or r.t.size
    return (r.rdata >> 8 * (r.t.addr % 4)) & ((1 << 8 * size) - 1)
