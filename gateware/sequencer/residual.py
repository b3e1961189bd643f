"""Residual reader: the residual input of a layer, read ahead into a FIFO."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..datapath import VALUE_BITS
from .layer import LayerSignature, act_read_signature, credit_signature, next_column_tile

__all__ = ["ResidualReader"]


class ResidualReader(wiring.Component):
    """Reads the residual of every output pixel of a layer with ``has_residual``, in the
    issuer's order (column tile by column tile, pixels in raster order), and queues it.

    A pixel's residual is ``res_sl`` slice words at ``res_base + pixel * res_pitch + s`` (the
    column tile's channel group); its ``cols`` lanes from lane ``j * cols mod rows`` on are
    put together from the slices (slice ``s`` holds bits ``s * a_bits ..``) and sign extended
    from ``res_sl * a_bits`` bits when ``res_signed`` (the compiler stores a residual in
    whole slices; the Datapath takes ``VALUE_BITS`` signed values).

    Reads go ahead while the FIFO has room for the pixel being read (one word per cycle), so
    no read ever waits on the port. Latency: the last slice read in cycle ``n`` is in the FIFO
    in cycle ``n + 2`` (port 1, FIFO write 1), with its credit.

    Parameters
    ----------
    rows, cols, a_bits : int
        The configuration's.
    addr_width : int
        Bits of an activation-buffer bank offset.
    param_rows : int
        For :class:`~gateware.sequencer.layer.LayerSignature`.
    depth : int
        FIFO entries (pixels read ahead).

    Members
    -------
    ctrl : ``In(LayerSignature(...))``
        The layer (``start`` restarts the walk).
    act : ``Out(act_read_signature(...))``
        The reader's activation-buffer read port (``pad`` always 0).
    residuals : ``Out(stream.Signature(data.ArrayLayout(signed(VALUE_BITS), cols)))``
        One pixel's residuals per transfer (the FIFO's output).
    credit : ``Out(credit_signature())``
        ``valid`` while the FIFO holds residuals not claimed by the issuer; each transfer
        claims one (the issuer issues a final-round pixel only with a claim). The counter
        restarts with ``ctrl.start``.
    """

    def __init__(self, *, rows: int, cols: int, a_bits: int, addr_width: int,
                 param_rows: int, depth: int = 8):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"Depth must be an integer of at least 2, not {depth!r}")
        self.rows, self.cols, self.a_bits = rows, cols, a_bits
        self.addr_width, self.depth = addr_width, depth
        super().__init__({
            "ctrl": In(LayerSignature(param_rows=param_rows)),
            "act": Out(act_read_signature(rows=rows, a_bits=a_bits, addr_width=addr_width)),
            "residuals": Out(stream.Signature(data.ArrayLayout(signed(VALUE_BITS), cols))),
            "credit": Out(credit_signature()),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, ab, baw = self.rows, self.cols, self.a_bits, self.addr_width
        ctrl, desc, port = self.ctrl, self.ctrl.desc, self.act
        res_sl = ctrl.res_sl
        m.submodules.fifo = fifo = SyncFIFO(width=C * VALUE_BITS, depth=self.depth)
        m.d.comb += [self.residuals.valid.eq(fifo.r_rdy),
                     self.residuals.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.residuals.ready)]

        # ------------------------------------------------------------ reads
        on = Signal()
        pix = Signal(24)
        j = Signal(8)
        s = Signal(4)
        ptr = Signal(baw)           # word of slice 0 of the pixel
        col = Signal(baw)           # ... of pixel 0 of the column tile
        lane = Signal(range(R))
        go = Signal()
        # Room for the pixel being read: FIFO entries plus the one in flight.
        m.d.comb += go.eq(on & (fifo.level + 1 < self.depth))
        m.d.comb += [port.addr.eq(Cat((ptr + s)[:baw], desc.res_base[baw])), port.pad.eq(0),
                     port.en.eq(go)]
        with m.If(ctrl.start):
            m.d.sync += [on.eq(desc.has_residual), pix.eq(0), j.eq(0), s.eq(0), lane.eq(0),
                         ptr.eq(desc.res_base[:baw]), col.eq(desc.res_base[:baw])]
        with m.Elif(go):
            m.d.sync += s.eq(s + 1)
            with m.If(s + 1 == res_sl):
                m.d.sync += [s.eq(0), pix.eq(pix + 1), ptr.eq(ptr + ctrl.res_pitch)]
                with m.If(pix + 1 == ctrl.pixels):
                    m.d.sync += [pix.eq(0), j.eq(j + 1)]
                    nxt_col, nxt_lane = next_column_tile(col, lane, res_sl, rows=R, cols=C)
                    m.d.sync += [col.eq(nxt_col), ptr.eq(nxt_col), lane.eq(nxt_lane)]
                    with m.If(j + 1 == desc.col_tiles):
                        m.d.sync += on.eq(0)

        # ------------------------------------------------------------ assembly
        # The word read in the cycle before: its slice, lanes, and whether it is the last.
        q_valid = Signal()
        q_s = Signal(4)
        q_last = Signal()
        q_lane = Signal(range(R))
        m.d.sync += [q_valid.eq(go), q_s.eq(s), q_last.eq(s + 1 == res_sl), q_lane.eq(lane)]
        raw = [Signal(8, name=f"raw{c}") for c in range(C)]
        res_w = Signal(4)
        res_top = Signal(3)                 # sign bit of a residual: res_sl * a_bits - 1
        m.d.comb += [res_w.eq(res_sl << ceil_log2(ab)), res_top.eq(res_w - 1)]
        ext = []
        word = port.data.as_value()
        for c in range(C):
            v = Signal(8, name=f"next{c}")
            m.d.comb += v.eq(Mux(q_s == 0, 0, raw[c])
                             | (word.word_select(q_lane + c, ab) << (q_s * ab))[:8])
            neg = desc.res_signed & v.bit_select(res_top, 1)
            e = Signal(signed(VALUE_BITS), name=f"ext{c}")
            m.d.comb += e.eq(v | Mux(neg, (Const(0x1FF, 9) << res_w)[:9], 0))
            ext.append(e)
            with m.If(q_valid):
                m.d.sync += raw[c].eq(v)
        push = Signal()
        m.d.comb += [fifo.w_data.eq(Cat(*ext)), push.eq(q_valid & q_last), fifo.w_en.eq(push)]

        # ------------------------------------------------------------ credits
        avail = Signal(range(self.depth + 1))   # residuals in the FIFO, not yet claimed
        took = Signal()
        m.d.comb += [self.credit.valid.eq(avail != 0),
                     took.eq(self.credit.valid & self.credit.ready)]
        with m.If(ctrl.start):
            m.d.sync += avail.eq(0)
        with m.Elif(push & ~took):
            m.d.sync += avail.eq(avail + 1)
        with m.Elif(~push & took):
            m.d.sync += avail.eq(avail - 1)
        return m
