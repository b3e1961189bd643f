"""Writer: the Datapath's results into the activation buffer, as slice words."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..datapath import VALUE_BITS
from .layer import LayerSignature, next_column_tile

__all__ = ["Writer", "write_layout"]


def write_layout(*, rows: int, a_bits: int, addr_width: int) -> data.StructLayout:
    """A write of the :class:`~gateware.actbuf.ActivationBuffer` (its ``write_layout``)."""
    return data.StructLayout({"addr": unsigned(addr_width),
                              "word": data.ArrayLayout(unsigned(a_bits), rows),
                              "mask": unsigned(rows)})


class Writer(wiring.Component):
    """Writes each output pixel's ``cols`` values as ``out_sl`` slice words: slice ``s`` of
    pixel ``pix`` of column tile ``j`` at ``out_base + pix * out_pitch + s`` plus the column
    tile's group (the compiler's ``base + ((y * W + x) * G + cg) * S + s``), lanes ``j * cols
    mod rows`` on (the other lanes masked), bits ``s * a_bits ..`` of each value. The layer's
    last column tile also writes zeros to the group's lanes above its own, and a column past
    the tensor's channels writes zero, so every lane of a tensor's last group past its channels
    is zero (the padding rows of the next layer's tiles read them), as
    :func:`compiler.write_tensor` stores it.

    Slice 0 is written in the cycle the result arrives, the others from a holding register in
    the cycles after (``results.ready`` is low meanwhile); the issuer's slot timing delivers
    results at least ``out_sl`` cycles apart, so the Datapath never waits. Latency 0: a result
    valid in cycle ``n`` is written in cycles ``n .. n + out_sl - 1``. The writer acts only
    while ``ctrl.busy`` (the bus owns the write port otherwise).

    Parameters
    ----------
    rows, cols, a_bits : int
        The configuration's.
    addr_width : int
        Bits of an activation-buffer bank offset.
    param_rows : int
        For :class:`~gateware.sequencer.layer.LayerSignature`.
    result_layout : data.StructLayout
        The Datapath's ``out_layout`` (``value``: ``cols`` signed values, ``overflow``).

    Members
    -------
    ctrl : ``In(LayerSignature(...))``
        The layer (``start`` restarts the walk).
    results : ``In(stream.Signature(result_layout))``
        From the Datapath.
    write : ``Out(stream.Signature(write_layout(...), always_ready=True))``
        Buffer writes, in ``bank``.
    bank : ``Out(1)``
        The output tensor's bank.
    layer_done : ``Out(1)``
        The layer's last word is written this cycle.
    overflow : ``Out(1)``
        A result with its ``overflow`` flag was taken.
    """

    def __init__(self, *, rows: int, cols: int, a_bits: int, addr_width: int,
                 param_rows: int, result_layout):
        self.rows, self.cols, self.a_bits, self.addr_width = rows, cols, a_bits, addr_width
        layout = write_layout(rows=rows, a_bits=a_bits, addr_width=addr_width)
        super().__init__({
            "ctrl": In(LayerSignature(param_rows=param_rows)),
            "results": In(stream.Signature(result_layout)),
            "write": Out(stream.Signature(layout, always_ready=True)),
            "bank": Out(1),
            "layer_done": Out(1),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, ab, baw = self.rows, self.cols, self.a_bits, self.addr_width
        ctrl, desc, res, wr = self.ctrl, self.ctrl.desc, self.results, self.write
        out_sl = ctrl.out_sl
        s = Signal(4)
        pix = Signal(24)
        j = Signal(8)
        ptr = Signal(baw)           # word of slice 0 of the pixel
        col = Signal(baw)           # ... of pixel 0 of the column tile
        lane = Signal(range(R))
        hold = Signal()             # slices 1.. of the held result are due
        held = Signal.like(res.payload.value)
        value = Mux(hold, held.as_value(), res.payload.value.as_value())
        # A column past the tensor's channels writes zero, whatever its parameters say.
        vals = Cat(*[Mux(j * C + c < desc.out_channels,
                         (value.word_select(c, VALUE_BITS) >> (s * ab))[:ab], 0)
                     for c in range(C)])
        m.d.comb += self.overflow.eq(res.valid & res.ready & res.payload.overflow)
        with m.If(ctrl.busy):
            m.d.comb += [wr.valid.eq(hold | res.valid), res.ready.eq(~hold),
                         wr.payload.addr.eq(ptr + s),
                         wr.payload.word.eq(vals << (lane * ab)),
                         # The last column tile also zeroes the group's lanes past the
                         # tensor's channels: a later layer's padding rows read them, and at
                         # one weight bit a padding row's weight is -1, not 0.
                         wr.payload.mask.eq(Mux(j + 1 == desc.col_tiles, Const((1 << R) - 1, R),
                                                Const((1 << C) - 1, R)) << lane),
                         self.bank.eq(desc.out_base[baw])]
            with m.If(res.valid & ~hold):
                m.d.sync += [held.eq(res.payload.value), hold.eq(out_sl != 1)]
            with m.If(wr.valid):
                m.d.sync += s.eq(s + 1)
                with m.If(s == out_sl - 1):
                    m.d.sync += [hold.eq(0), s.eq(0), ptr.eq(ptr + ctrl.out_pitch),
                                 pix.eq(pix + 1)]
                    with m.If(pix + 1 == ctrl.pixels):
                        nxt_col, nxt_lane = next_column_tile(col, lane, out_sl, rows=R, cols=C)
                        m.d.sync += [pix.eq(0), j.eq(j + 1), col.eq(nxt_col), ptr.eq(nxt_col),
                                     lane.eq(nxt_lane)]
                        m.d.comb += self.layer_done.eq(j + 1 == desc.col_tiles)
        with m.If(ctrl.start):
            m.d.sync += [s.eq(0), pix.eq(0), j.eq(0), lane.eq(0), hold.eq(0),
                         ptr.eq(desc.out_base[:baw]), col.eq(desc.out_base[:baw])]
        return m
