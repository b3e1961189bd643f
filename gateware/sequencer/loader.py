"""Weight loader: walks each layer's rounds ahead of the issuer and hands every macro its next
tile."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ResetInserter, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .layer import (
    OP_CONV,
    AccelError,
    copies,
    desc_layout,
    descriptor_layout,
    in_slices,
    layer_planes,
    slices,
    tile_layout,
)

__all__ = ["WeightLoader", "tap_layout"]


def tap_layout(addr_width: int) -> data.StructLayout:
    """Position of the tap walk: row tile ``t = sw * k * k * G + (kh * k + kw) * G + cg`` (``sw``
    the weight slice), its word offset ``off`` in the input window, and ``rowoff``, the offset
    of ``(kh, 0, 0)``."""
    return data.StructLayout({"t": 16, "sw": 2, "kh": 3, "kw": 3, "cg": 8, "off": addr_width,
                              "rowoff": addr_width})


def step(m, st, *, tiles, groups, kernel, row_words, group_words):
    """The tap after ``st`` (a comb view of :func:`tap_layout`): tile ``t + 1`` (after a weight
    slice's last tap, the next slice's first), or back to tile 0 after ``tiles - 1`` (copies
    repeat the tiles). ``row_words``: ``W * G * S``, the words of one input row;
    ``group_words``: ``S``, the slice words of one channel group."""
    n = Signal(st.shape())
    m.d.comb += [n.t.eq(st.t + 1), n.sw.eq(st.sw)]
    with m.If(st.t + 1 == tiles):
        m.d.comb += n.eq(0)
    with m.Elif(st.cg + 1 != groups):
        m.d.comb += [n.kh.eq(st.kh), n.kw.eq(st.kw), n.cg.eq(st.cg + 1),
                     n.off.eq(st.off + group_words), n.rowoff.eq(st.rowoff)]
    with m.Elif(st.kw + 1 != kernel):
        m.d.comb += [n.kh.eq(st.kh), n.kw.eq(st.kw + 1), n.cg.eq(0),
                     n.off.eq(st.off + group_words), n.rowoff.eq(st.rowoff)]
    with m.Elif(st.kh + 1 != kernel):
        m.d.comb += [n.kh.eq(st.kh + 1), n.kw.eq(0), n.cg.eq(0),
                     n.off.eq(st.rowoff + row_words), n.rowoff.eq(st.rowoff + row_words)]
    with m.Else():
        m.d.comb += n.sw.eq(st.sw + 1)      # the next weight slice's tap (0, 0, 0)
    return n


class WeightLoader(wiring.Component):
    """Takes each checked descriptor from the fetcher, walks the layer's rounds (column tile
    ``j``, first row tile ``tb`` of the round, copies) and pushes every macro of a round its
    tile: its tap, and the bank address of the round's weight row (every macro of a round
    reads the same row of its own bank, :mod:`contract.program`). It passes
    every descriptor on to the issuer through a two-entry queue, failed ones and max-pooling
    ones too (without walking them: they have no tiles).

    Two macros per cycle (``i`` and ``i + 1``; a round may last only ``rows / write_rows``
    cycles): a tile goes to macro ``i`` when its ``tiles[i].ready`` is high (its pending slot
    is free) and to macro ``i + 1`` in the same cycle only if macro ``i``'s went too, so
    ``tiles[i + 1].valid`` depends combinationally on ``tiles[i].ready``. ``tiles[i].ready``
    must not depend on ``tiles[i].valid``.

    Timing: a descriptor taken in cycle ``n`` (``descriptors.ready`` is high while the loader
    is idle and the queue has room) is in the queue in cycle ``n + 1``; its first two tiles are
    offered in cycle ``n + 1``. The next descriptor is taken once the layer's last tile is
    pushed.

    Parameters
    ----------
    macros, a_bits, w_bits : int
        The configuration's.
    planes : int
        Most bit-planes a layer feeds (``HwConfig.planes_max``).
    write_cycles : int
        Weight-store beats per tile (``rows / write_rows``), a power of two.
    addr_width : int
        Bits of an activation-buffer bank offset.

    Members
    -------
    go : ``In(1)``
        Pulse: drop the layer being walked and empty the queue.
    descriptors : ``In(stream.Signature(desc_layout()))``
        From the fetcher.
    layers : ``Out(stream.Signature(desc_layout()))``
        To the issuer (the queue's output).
    tiles : ``Out(stream.Signature(tile_layout(addr_width=addr_width))).array(macros)``
        One tile per transfer to each macro unit.
    """

    def __init__(self, *, macros: int, a_bits: int, w_bits: int, planes: int,
                 write_cycles: int, addr_width: int):
        if write_cycles < 1 or write_cycles & (write_cycles - 1):
            raise ValueError(f"Write cycles must be a power of two, not {write_cycles!r}")
        self.macros, self.a_bits, self.planes = macros, a_bits, planes
        self.w_bits = w_bits
        self.write_cycles, self.addr_width = write_cycles, addr_width
        tile = stream.Signature(tile_layout(addr_width=addr_width))
        super().__init__({
            "go": In(1),
            "descriptors": In(stream.Signature(desc_layout())),
            "layers": Out(stream.Signature(desc_layout())),
            "tiles": Out(tile).array(macros),
        })

    def elaborate(self, platform):
        m = Module()
        M = self.macros
        wsh = ceil_log2(self.write_cycles)
        inp, lay = self.descriptors, self.layers

        m.submodules.queue = queue = ResetInserter(self.go)(
            SyncFIFO(width=Shape.cast(desc_layout()).width, depth=2))
        m.d.comb += [lay.valid.eq(queue.r_rdy), lay.payload.eq(queue.r_data),
                     queue.r_en.eq(lay.ready)]

        desc = Signal(descriptor_layout())      # the layer being walked
        on = Signal()
        j = Signal(8)               # column tile
        tb = Signal(16)             # first row tile of the round
        i = Signal(range(M + 2))    # next macro of the round
        cp = Signal(range(self.planes + 1))
        wg = Signal(self.addr_width)
        gs = Signal(4)              # slice words per channel group
        wide = Signal()             # three weight slices
        rowptr = Signal(32)         # bank beat address of the round's weight row
        st = Signal(tap_layout(self.addr_width))
        final = Signal()            # the round holds row tile T - 1
        nact = Signal(range(M + 1))     # macros of the round
        T = desc.row_tiles
        m.d.comb += [final.eq(tb + M >= T), nact.eq(cp * Mux(final, T - tb, M))]
        walk = dict(tiles=T, groups=desc.in_groups, kernel=desc.kernel, row_words=wg,
                    group_words=gs)
        st1 = step(m, st, **walk)
        st2 = step(m, st1, **walk)

        # Macros i and i + 1 take a tile if their pending slots are free (module docstring).
        rdy0 = Signal()
        rdy1 = Signal()
        for n, t in enumerate(self.tiles):
            with m.If(i == n):
                m.d.comb += rdy0.eq(t.ready)
            with m.If(i + 1 == n):
                m.d.comb += rdy1.eq(t.ready)
        offer0 = Signal()
        offer1 = Signal()
        push0 = Signal()
        push1 = Signal()
        m.d.comb += [offer0.eq(on & (i < nact)), push0.eq(offer0 & rdy0),
                     offer1.eq(push0 & (i + 1 < nact)), push1.eq(offer1 & rdy1)]
        for n, t in enumerate(self.tiles):
            second = i + 1 == n
            sel = st.shape()(Mux(second, st1, st))
            m.d.comb += [t.valid.eq(((i == n) & offer0) | (second & offer1)),
                         t.payload.addr.eq(rowptr),
                         t.payload.kh.eq(sel.kh), t.payload.kw.eq(sel.kw),
                         t.payload.off.eq(sel.off)]
            # The weight slice's input shift (contract.program.slice_shifts).
            wb = self.w_bits
            with m.If(wide):
                with m.Switch(sel.sw):
                    for s_, v in enumerate((wb, 0, wb - 1)):
                        with m.Case(s_):
                            m.d.comb += t.payload.shift.eq(v)

        # A descriptor goes on to the issuer in any case; a valid one is walked.
        _, _, sp = slices(m, inp.payload.desc, self.a_bits, "in_")
        in_pl = layer_planes(m, inp.payload.desc, self.w_bits, "in_")
        in_cp = copies(m, inp.payload.desc, sp, in_pl, planes=self.planes, macros=M,
                       name="in_")
        in_sl = in_slices(m, inp.payload.desc, self.a_bits, "in_")
        m.d.comb += [inp.ready.eq(~on & queue.w_rdy), queue.w_data.eq(inp.payload),
                     queue.w_en.eq(inp.valid & inp.ready)]
        with m.If(inp.valid & inp.ready & (inp.payload.code == AccelError.NONE)
                  & (inp.payload.desc.op == OP_CONV)):
            d = inp.payload.desc
            m.d.sync += [desc.eq(d), on.eq(1), j.eq(0), tb.eq(0), i.eq(0), cp.eq(in_cp),
                         wg.eq(d.in_width * d.in_groups * in_sl), gs.eq(in_sl),
                         wide.eq(d.w_bits > self.w_bits),
                         rowptr.eq(d.weight_base << wsh),
                         st.eq(0)]
        with m.Elif(push0):
            n_i = i + 1 + push1
            m.d.sync += [i.eq(n_i), st.eq(Mux(push1, st2, st1))]
            with m.If(n_i == nact):
                # Each round is the next weight row (contract.program: banks and rows).
                m.d.sync += [i.eq(0), rowptr.eq(rowptr + self.write_cycles)]
                with m.If(~final):
                    m.d.sync += tb.eq(tb + M)
                with m.Else():
                    m.d.sync += [tb.eq(0), j.eq(j + 1), st.eq(0)]
                    with m.If(j + 1 == desc.col_tiles):
                        m.d.sync += on.eq(0)
        with m.If(self.go):
            m.d.sync += on.eq(0)
        return m
