"""Macro unit: what one CIM macro needs from the sequencer (its weight tiles and its bit-planes).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .layer import IssueSignature, act_read_signature, tile_layout

__all__ = ["MacroUnit"]


class MacroUnit(wiring.Component):
    """Feeds macro ``index``: loads its tiles into the macro's shadow copy and streams the
    bit-planes of the pixels issued to it.

    A tile goes through three places: *pending* (taken from the loader; one entry, so
    ``tile.ready`` is ``~pending``), *loading* (``write_cycles`` beats read through the unit's
    weight-store port, each written to the macro one cycle later), *loaded* (in the shadow
    copy until the macro commits it; ``loaded`` high until a round takes it). A pending tile
    starts loading once the previous one is committed: at once if none is loaded, else in the
    cycle the macro commits it. At a round switch (``issue.round``, macros below
    ``issue.macros``) the loaded tile's tap becomes the active one and ``loaded`` falls (the
    tile is taken: a round that ends before its first bit-plane commits it, one pixel at
    ``a_bits`` 1, must not start the next round on it); the first bit-plane fed after it
    commits the tile.

    When a pixel is issued to the unit's group (``issue.valid``, ``index`` in ``issue.first
    .. issue.first + issue.count - 1``) the unit reads the tap's word for the pixel through its
    own activation-buffer port (``pad`` outside the input); the word arrives the next cycle and
    the unit feeds the layer's ``issue.bits`` bit-planes, most significant first, one per
    cycle (the macro's input is always ready while its output is: the collector never stalls
    it). An input of more than ``a_bits`` bits has ``S = ceil(bits / a_bits)`` slice words per
    pixel (slice ``s`` holds bits ``s * a_bits ..``): the unit reads slice ``S - 1`` at the
    issue, and slice ``s - 1`` in the cycle it feeds slice ``s``'s last plane, so each word
    arrives as its first plane is due (the port is the unit's own; the next pixel's read comes
    a slot, at least ``planes`` cycles, after the issue). A tile of a layer with wide weights
    has a ``shift``: the unit feeds ``issue.planes`` planes, the input's bits at planes
    ``shift .. shift + bits - 1`` and zeros elsewhere (the input times ``2**shift``).

    Latency: a tile transferred in cycle ``n`` with nothing loaded is pending in ``n + 1``,
    read in cycles ``n + 2 .. n + write_cycles + 1``, written to the macro in ``n + 3 .. n +
    write_cycles + 2``, and ``loaded`` from cycle ``n + write_cycles + 3``. With a tile loaded,
    loading starts the cycle after its commit instead. A pixel issued in cycle ``n`` is fed in
    cycles ``n + 1 .. n + planes`` (``active``), the first plane after a round switch with
    ``commit``.

    Parameters
    ----------
    index : int
        The macro's index (its position in the groups of the issuer).
    macros, rows, a_bits : int
        The configuration's.
    planes : int
        Most bit-planes a layer feeds (``HwConfig.planes_max``).
    write_cycles : int
        Beats per tile.
    addr_width : int
        Bits of an activation-buffer bank offset.
    weight_addr_width, weight_width : int
        The weight store's address and word bits (one word per beat).
    input_layout, write_layout : data.StructLayout
        The macro's (:class:`~gateware.cim_macro.CIMMacro`).

    Members
    -------
    go : ``In(1)``
        Pulse: forget every tile (program start).
    tile : ``In(stream.Signature(tile_layout(addr_width=addr_width)))``
        From the loader.
    weights : ``Out(wiring.Signature({"addr": Out(weight_addr_width), "en": Out(1), "data":
    In(weight_width)}))``
        The unit's weight-store read port (data one cycle after ``addr``).
    write : ``Out(stream.Signature(write_layout))``
        To the macro's ``write`` (always ready).
    issue : ``In(IssueSignature(macros=macros, addr_width=addr_width))``
        From the issuer.
    act : ``Out(act_read_signature(...))``
        The unit's activation-buffer read port.
    feed : ``Out(stream.Signature(input_layout))``
        To the macro's ``input``; its ``ready`` is not looked at (lockstep).
    loaded : ``Out(1)``
        A tile is in the shadow copy and no round has taken it yet.
    active : ``Out(1)``
        A bit-plane is fed this cycle.
    """

    def __init__(self, *, index: int, macros: int, rows: int, a_bits: int, planes: int,
                 write_cycles: int, addr_width: int, weight_addr_width: int, weight_width: int,
                 input_layout, write_layout):
        if not isinstance(index, int) or not 0 <= index < macros:
            raise ValueError(f"Index must be an integer from 0 to {macros - 1}, not {index!r}")
        self.index, self.rows, self.a_bits, self.planes = index, rows, a_bits, planes
        self.write_cycles = write_cycles
        super().__init__({
            "go": In(1),
            "tile": In(stream.Signature(tile_layout(addr_width=addr_width))),
            "weights": Out(wiring.Signature({"addr": Out(weight_addr_width), "en": Out(1),
                                             "data": In(weight_width)})),
            "write": Out(stream.Signature(write_layout)),
            "issue": In(IssueSignature(macros=macros, addr_width=addr_width)),
            "act": Out(act_read_signature(rows=rows, a_bits=a_bits, addr_width=addr_width)),
            "feed": Out(stream.Signature(input_layout)),
            "loaded": Out(1),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wc, ab, R = self.write_cycles, self.a_bits, self.rows
        tl = self.tile.payload.shape()
        pend = Signal()
        pend_tile = Signal(tl)
        ld_tile = Signal(tl)        # the tile loading or loaded
        tap = Signal(tl)            # the active tile's (its addr is not used)
        first = Signal()            # the next plane fed is the round's first: commit
        iss = self.issue

        full = Signal()             # the shadow copy holds a tile the macro has not committed
        with m.If(iss.round & (iss.macros > self.index)):
            m.d.sync += [tap.eq(ld_tile), first.eq(1), self.loaded.eq(0)]

        # ------------------------------------------------------------ weights
        loading = Signal()
        cnt = Signal(range(wc + 1))
        commit_now = Signal()
        m.d.comb += self.tile.ready.eq(~pend)
        with m.If(self.tile.valid & self.tile.ready):
            m.d.sync += [pend.eq(1), pend_tile.eq(self.tile.payload)]
        with m.If(pend & ~loading & (~full | commit_now)):
            m.d.sync += [pend.eq(0), loading.eq(1), cnt.eq(0), ld_tile.eq(pend_tile)]
        m.d.comb += [self.weights.addr.eq(ld_tile.addr + cnt), self.weights.en.eq(loading)]
        wr_valid = Signal()
        wr_addr = Signal(range(wc))
        w = self.write.payload.w.as_value()
        m.d.sync += [wr_valid.eq(loading & (cnt != wc)), wr_addr.eq(cnt)]
        m.d.comb += [self.write.valid.eq(wr_valid), self.write.payload.addr.eq(wr_addr),
                     w.eq(self.weights.data[:len(w)])]
        with m.If(loading):
            with m.If(cnt == wc):
                m.d.sync += [loading.eq(0), full.eq(1), self.loaded.eq(1)]
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)

        # ------------------------------------------------------------ activations
        # Lockstep read: the word of this macro's tap for the issued pixel, its top slice
        # first; the lower slices are read as the planes before them are fed.
        port = self.act
        yy = Signal(signed(18))
        xx = Signal(signed(18))
        sel = Signal()
        base = Signal(len(tap.off))     # bank offset of the pixel's slice 0
        pad = Signal()
        n_sl = Signal(4)                # the layer's slices: ceil(bits / a_bits)
        sh = ceil_log2(ab)
        m.d.comb += [yy.eq(iss.y + tap.kh), xx.eq(iss.x + tap.kw),
                     sel.eq(iss.valid & (iss.first <= self.index)
                            & (iss.first + iss.count > self.index)),
                     base.eq(iss.addr + tap.off),
                     pad.eq((yy < 0) | (yy >= iss.height) | (xx < 0) | (xx >= iss.width)),
                     n_sl.eq((iss.bits + ab - 1) >> sh)]
        rd_base = Signal(len(tap.off))  # the pixel being fed: slice 0, bank, padding, bits
        rd_bank = Signal()
        rd_pad = Signal()
        rd_bits = Signal(4)
        bidx = Signal(range(max(self.planes, 2)))   # the plane fed (planes - 1 .. 0)
        jj = Signal(signed(7))          # its bit of the input (shifted by the tile's shift)
        data_plane = Signal()           # 0 <= jj < bits: a plane of the input, else zeros
        m.d.comb += [jj.eq(bidx - tap.shift), data_plane.eq((jj >= 0) & (jj < rd_bits))]
        low = jj.as_unsigned()[:sh]     # the plane's bit in its slice word
        reread = Signal()               # read the next lower slice (this plane ends a slice)
        m.d.comb += reread.eq(self.active & data_plane & ((low == 0) if sh else 1) & (jj != 0))
        m.d.comb += [
            port.addr.eq(Mux(sel, Cat((base + n_sl - 1)[:len(tap.off)], iss.bank),
                             Cat((rd_base + (jj >> sh) - 1)[:len(tap.off)], rd_bank))),
            port.pad.eq(Mux(sel, pad, rd_pad)),
            port.en.eq(sel | reread)]
        # The word arrives next cycle and stays on port.data for its planes.
        commit = Signal()
        word = port.data.as_value()
        planes = [Cat(*[word[r * ab + b] for r in range(R)]) for b in range(ab)]
        plane = Signal(R)
        if ab == 1:
            m.d.comb += plane.eq(planes[0])
        else:
            with m.Switch(low):
                for b in range(ab):
                    with m.Case(b):
                        m.d.comb += plane.eq(planes[b])
        feed = self.feed
        m.d.comb += [feed.valid.eq(self.active),
                     feed.payload.plane.eq(Mux(data_plane, plane, 0)),
                     feed.payload.last.eq(bidx == 0), feed.payload.commit.eq(commit),
                     commit_now.eq(self.active & commit)]
        with m.If(self.active):
            m.d.sync += [commit.eq(0), bidx.eq(bidx - 1)]
            with m.If(bidx == 0):
                m.d.sync += self.active.eq(0)
        with m.If(commit_now):
            m.d.sync += full.eq(0)
        with m.If(sel):
            m.d.sync += [self.active.eq(1), bidx.eq(iss.planes - 1), commit.eq(first),
                         first.eq(0), rd_base.eq(base), rd_bank.eq(iss.bank), rd_pad.eq(pad),
                         rd_bits.eq(iss.bits)]
        with m.If(self.go):
            m.d.sync += [pend.eq(0), loading.eq(0), full.eq(0), self.loaded.eq(0), first.eq(0),
                         self.active.eq(0)]
        return m
