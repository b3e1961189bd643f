"""Collector: sums the macros' results and keeps every output pixel's running sum."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..cim_macro import adder_tree
from ..datapath import VALUE_BITS
from .layer import PARAM_WORDS, LayerSignature, param_layout

__all__ = ["Collector"]


class Collector(wiring.Component):
    """Adds up the macro results of each issued pixel and hands the column tile's totals to
    the Datapath.

    Only one group of macros finishes in a cycle (groups are issued ``sp`` cycles apart and
    feed ``a_bits`` planes each), so the valid results of a cycle are one pixel's: an adder
    tree sums them (stage 1) and adds the pixel's running sum (stage 2: a memory of one
    ``cols x acc_width`` entry per output pixel, read in stage 1). The collector counts pixels,
    rounds and column tiles itself, in issue order. On a round that is not final the total
    goes back to the memory; on the final round it goes to ``psums`` with the column tile's
    parameter records (``cols`` records, one memory row, read in stage 1) and the pixel's
    residual. A final-round pixel read in the cycle its sum is written gets the new sum (the
    memory's read port is transparent: 1-pixel layers with ``a_bits`` 1).

    Latency: results valid in cycle ``n`` reach ``psums`` (or the memory) in cycle ``n + 1``.
    Nothing waits: ``results[i].ready`` is always high, and if ``psums`` or ``residuals`` is not
    ready when a total is due, ``overrun`` rises and the total is lost.

    Parameters
    ----------
    macros, cols : int
        The configuration's.
    acc_width : int
        Running-sum (and Datapath partial-sum) width.
    max_pixels : int
        Output pixels of a layer (running-sum memory depth).
    param_rows : int
        Rows of the parameter memory (``PARAM_WORDS * cols`` words each).
    result_layout : data.StructLayout
        The macro's ``output_layout``.
    psum_layout : data.StructLayout
        The Datapath's ``in_layout``.

    Members
    -------
    ctrl : ``In(LayerSignature(...))``
        The layer (``start`` restarts the counts; ``desc.row_tiles``, ``pixels``,
        ``param_row``, ``desc.has_residual``).
    results : ``In(stream.Signature(result_layout)).array(macros)``
        The macros' outputs.
    params : ``In(ReadPort.Signature(...))``
        Read port of the parameter memory (one row of ``cols`` records).
    residuals : ``In(stream.Signature(data.ArrayLayout(signed(VALUE_BITS), cols)))``
        Taken with every total of a layer with a residual.
    psums : ``Out(stream.Signature(psum_layout))``
        To the Datapath: one beat (``first`` and ``last``) per output pixel.
    overrun : ``Out(1)``
        A total was lost (the schedule is wrong).
    """

    def __init__(self, *, macros: int, cols: int, acc_width: int, max_pixels: int,
                 param_rows: int, result_layout, psum_layout):
        self.macros, self.cols = macros, cols
        self.acc_width, self.max_pixels = acc_width, max_pixels
        self.row_words = PARAM_WORDS * cols
        super().__init__({
            "ctrl": In(LayerSignature(param_rows=param_rows)),
            "results": In(stream.Signature(result_layout)).array(macros),
            "params": In(ReadPort.Signature(addr_width=ceil_log2(param_rows),
                                            shape=self.row_words * 32)),
            "residuals": In(stream.Signature(data.ArrayLayout(signed(VALUE_BITS), cols))),
            "psums": Out(stream.Signature(psum_layout)),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        M, C, aw = self.macros, self.cols, self.acc_width
        ctrl, desc = self.ctrl, self.ctrl.desc
        # Running sums of the row tiles done so far, one entry per output pixel.
        m.submodules.psums = smem = Memory(shape=data.ArrayLayout(signed(aw), C),
                                           depth=self.max_pixels, init=[])
        sw = smem.write_port()
        sr = smem.read_port(transparent_for=(sw,))

        # ------------------------------------------------------------ stage 1
        pix = Signal(24)
        tb = Signal(16)             # first row tile of the round
        j = Signal(8)               # column tile
        final = Signal()
        m.d.comb += final.eq(tb + M >= desc.row_tiles)
        valid = Signal()
        m.d.comb += valid.eq(Cat(*[r.valid for r in self.results]).any())
        rsum = Signal(data.ArrayLayout(signed(aw), C))
        s1 = Signal(data.StructLayout({"valid": 1, "pix": 24, "first": 1, "final": 1}))
        m.d.comb += [sr.addr.eq(pix), sr.en.eq(valid),
                     self.params.addr.eq(ctrl.param_row + j), self.params.en.eq(valid)]
        m.d.comb += [r.ready.eq(1) for r in self.results]
        # One carry-chain adder tree per column (adder_tree: about half the LUTs of the
        # full-adder tree Yosys makes of a plain sum); an idle macro's term is zero.
        y = Shape.cast(self.results[0].payload.y.shape().elem_shape)
        lo, hi = (-(1 << (y.width - 1)), (1 << (y.width - 1)) - 1) if y.signed else \
            (0, (1 << y.width) - 1)
        for c in range(C):
            col, _, _ = adder_tree(m, [(Mux(r.valid, r.payload.y[c], 0), lo, hi, False)
                                       for r in self.results], name=f"col{c}")
            with m.If(valid):
                m.d.sync += rsum[c].eq(col)
        m.d.sync += [s1.valid.eq(valid), s1.pix.eq(pix), s1.first.eq(tb == 0),
                     s1.final.eq(final)]
        with m.If(valid):
            m.d.sync += pix.eq(pix + 1)
            with m.If(pix + 1 == ctrl.pixels):
                m.d.sync += pix.eq(0)
                with m.If(final):
                    m.d.sync += [tb.eq(0), j.eq(j + 1)]
                with m.Else():
                    m.d.sync += tb.eq(tb + M)
        with m.If(ctrl.start):
            m.d.sync += [pix.eq(0), tb.eq(0), j.eq(0)]

        # ------------------------------------------------------------ stage 2
        out, res = self.psums, self.residuals
        total = Signal(data.ArrayLayout(signed(aw), C))
        for c in range(C):
            m.d.comb += total[c].eq(Mux(s1.first, 0, sr.data[c]) + rsum[c])
        due = Signal()              # a final total goes to the Datapath
        m.d.comb += [due.eq(s1.valid & s1.final),
                     sw.addr.eq(s1.pix), sw.data.eq(total), sw.en.eq(s1.valid & ~s1.final),
                     out.payload.first.eq(1), out.payload.last.eq(1), out.valid.eq(due),
                     res.ready.eq(due & desc.has_residual)]
        recs = data.View(data.ArrayLayout(param_layout(), C), self.params.data)
        for c in range(C):
            ln = out.payload.lanes[c]
            m.d.comb += [ln.psum.eq(total[c]), ln.m.eq(recs[c].m), ln.b.eq(recs[c].b),
                         ln.r.eq(recs[c].r), ln.res.eq(res.payload[c])]
        # The schedule leaves the Datapath and the residual FIFO ready by construction; if
        # not, the result would be lost: report it rather than write a wrong value.
        m.d.comb += self.overrun.eq(due & (~out.ready | (desc.has_residual & ~res.valid)))
        return m
