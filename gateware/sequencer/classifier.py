"""Classifier: a raw layer's logits, kept in registers, and their argmax."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from contract.arith import LOGIT_BITS
from contract.timing import ARGMAX_SCAN

from .layer import LayerSignature

__all__ = ["Classifier"]



class Classifier(wiring.Component):
    """Takes the one result of a raw layer (``contract.program``, "Raw output"): its ``cols``
    logits go into registers, and the index of the first largest logit among the layer's
    ``out_channels`` becomes the class (``numpy.argmax``: a tie goes to the lower index).

    The argmax is sequential: in the cycle the result arrives, logit 0 is the best so far;
    then one logit per cycle (:data:`~contract.timing.ARGMAX_SCAN`) is compared with the
    best and replaces it only if strictly larger. It costs one 32-bit comparator, the
    ``cols``-to-1 read multiplexer (which the bus needs anyway) and ``out_channels - 1``
    cycles once per frame; a comparator tree would take ``cols - 1`` comparators to save
    those few cycles.
    ``layer_done`` pulses in the cycle that compares the last logit (with one channel, the
    cycle the result arrives), so ``valid`` and ``result_class`` are final from the next
    cycle, before the issuer raises ``done``.

    Parameters
    ----------
    cols : int
        The configuration's (logits held).
    param_rows : int
        For :class:`~gateware.sequencer.layer.LayerSignature`.
    result_layout : data.StructLayout
        The Datapath's ``out_layout`` (``logit``: ``cols`` signed values, ``overflow``).

    Members
    -------
    ctrl : ``In(LayerSignature(...))``
        The layer (``desc.out_channels``).
    go : ``In(1)``
        A program starts: ``valid`` falls.
    results : ``In(stream.Signature(result_layout))``
        A raw layer's result, from the Datapath (ready except while scanning).
    layer_done : ``Out(1)``
        The argmax is over: the raw layer ends.
    overflow : ``Out(1)``
        The result taken carries the Datapath's ``overflow`` flag.
    valid : ``Out(1)``
        A raw layer has ended since ``go``.
    result_class : ``Out(16)``
        The class (zero-extended).
    logit_r_addr : ``In(max(1, ceil_log2(cols)))``; logit_r_data : ``Out(32)``
        Combinational read of logit ``logit_r_addr`` (two's complement; 0 at ``cols`` and
        past).
    """

    def __init__(self, *, cols: int, param_rows: int, result_layout):
        if not isinstance(cols, int) or not 1 <= cols <= 1 << 16:
            raise ValueError(f"Column count must be an integer from 1 to 65536, not {cols!r}")
        self.cols = cols
        super().__init__({
            "ctrl": In(LayerSignature(param_rows=param_rows)),
            "go": In(1),
            "results": In(stream.Signature(result_layout)),
            "layer_done": Out(1), "overflow": Out(1), "valid": Out(1),
            "result_class": Out(16),
            "logit_r_addr": In(max(1, ceil_log2(cols))), "logit_r_data": Out(LOGIT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        res, desc = self.results, self.ctrl.desc
        logits = Signal(data.ArrayLayout(signed(LOGIT_BITS), C))
        scanning = Signal()
        i = Signal(range(C + 1))            # the logit compared this cycle
        best = Signal(signed(LOGIT_BITS))
        m.d.comb += [res.ready.eq(~scanning),
                     self.overflow.eq(res.valid & res.ready & res.payload.overflow)]
        last = Signal()
        with m.If(res.valid & res.ready):
            m.d.sync += [logits.eq(res.payload.logit), best.eq(res.payload.logit[0]),
                         self.result_class.eq(0), i.eq(1)]
            with m.If(desc.out_channels == 1):
                m.d.comb += last.eq(1)
            with m.Else():
                m.d.sync += scanning.eq(1)
        with m.If(scanning):
            cur = logits[i[:max(1, ceil_log2(C))]] if C > 1 else logits[0]
            with m.If(cur > best):          # strictly: the first of equal logits wins
                m.d.sync += [best.eq(cur), self.result_class.eq(i)]
            m.d.sync += i.eq(i + 1)
            assert ARGMAX_SCAN == 1     # one logit per cycle
            with m.If(i + 1 == desc.out_channels):
                m.d.sync += scanning.eq(0)
                m.d.comb += last.eq(1)
        m.d.comb += self.layer_done.eq(last)
        with m.If(last):
            m.d.sync += self.valid.eq(1)
        with m.If(self.go):
            m.d.sync += [self.valid.eq(0), scanning.eq(0)]
        addr = self.logit_r_addr
        m.d.comb += self.logit_r_data.eq(Mux(addr < C, logits[addr] if C > 1 else logits[0],
                                             0))
        return m
