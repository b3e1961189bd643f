"""Issuer: the layer state machine, its rounds and slots, and the output-pixel walk."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .layer import (
    OP_IM2COL,
    OP_MAXPOOL,
    AccelError,
    IssueSignature,
    LayerSignature,
    copies,
    credit_signature,
    desc_layout,
    descriptor_layout,
    in_slices,
    layer_planes,
    slices,
)

__all__ = ["Issuer"]


class Issuer(wiring.Component):
    """Runs the program's layers one after the other and issues every layer's pixels to the
    macros (the schedule of :mod:`compiler.cycles`).

    States: ``IDLE`` until ``start``; ``NEXT`` takes the next descriptor from the loader;
    ``CHECK`` stops on its check code, or registers the layer's quantities; ``SETUP`` pulses
    ``ctrl.start``; then per round ``RWAIT`` (until every macro of the round holds its tile:
    ``loaded``) and ``RUN``; after the layer's last round ``DRAIN`` waits for the writer's
    ``layer_done``; ``STOP`` raises ``done``.

    A round (``issue.macros = copies * group`` macros, ``group`` row tiles starting at ``tb``)
    streams the ``P`` output pixels in slots of ``L`` cycles: ``L = planes`` (the layer's
    bit-planes per pixel), on the final round of a column tile ``max(planes, copies * sp)``.
    Group
    ``g`` of a slot (macros ``g * group ..``) gets its pixel at cycle ``g * sp`` of the slot.
    On a final round of a layer with a residual a pixel waits (the slot stalls) until the
    residual reader offers a credit.

    Latency: a descriptor taken in cycle ``n`` (``NEXT``) is checked in ``n + 1`` and
    set up in ``n + 2`` (``ctrl.start``); ``RWAIT`` from ``n + 3`` on
    (:data:`compiler.cycles.LAYER_START`). The round switch (``issue.round``) is the ``RWAIT``
    cycle that sees the round's tiles loaded; its first pixel is issued in the next cycle.
    Slots follow each other without a gap; after a round's last slot ``RWAIT`` follows, so
    rounds whose tiles are ready are :data:`compiler.cycles.ROUND_GAP` (1) cycle apart.

    Parameters
    ----------
    macros, cols, a_bits, w_bits : int
        The configuration's.
    planes : int
        Most bit-planes a layer feeds (``HwConfig.planes_max``).
    addr_width : int
        Bits of an activation-buffer bank offset.
    param_rows : int
        Rows of the parameter memory.

    Members
    -------
    start : ``In(1)``
        Run the program (ignored while ``busy``).
    go : ``Out(1)``
        ``start`` accepted (comb): every unit starts from scratch.
    busy, done, error : ``Out(1)``; error_code : ``Out(AccelError)``; layer : ``Out(8)``
        As the :class:`~gateware.accelerator.Accelerator`'s.
    layers : ``In(stream.Signature(desc_layout()))``
        Checked descriptors, from the loader.
    loaded : ``In(macros)``
        Per macro: its next tile is loaded.
    issue : ``Out(IssueSignature(...))``
        To the macro units.
    ctrl : ``Out(LayerSignature(...))``
        To the residual reader, collector and writer.
    residuals : ``In(credit_signature())``
        Credits: a residual is in the FIFO for the next final-round pixel.
    layer_done : ``In(1)``
        The writer (or the pooler, or the im2col unit) wrote the layer's last word.
    pool_start : ``Out(1)``
        Pulse: the pooler runs the layer ``ctrl.desc`` (a max-pooling descriptor: ``CHECK``
        goes to ``POOL``, which pulses this, then ``DRAIN``).
    im2col_start : ``Out(1)``
        Pulse: the im2col unit runs the layer ``ctrl.desc`` (``op`` 2: ``CHECK`` goes to
        ``IM2COL``, which pulses this, then ``DRAIN``).
    overrun, overflow : ``In(1)``
        Run-time errors (kept until the layer ends, then the program stops).
    waiting : ``Out(1)``
        The issuer waits for a round's tiles or for a residual (the stall counter).
    """

    def __init__(self, *, macros: int, cols: int, a_bits: int, w_bits: int, planes: int,
                 addr_width: int, param_rows: int):
        self.macros, self.cols, self.a_bits, self.planes = macros, cols, a_bits, planes
        self.w_bits = w_bits
        self.addr_width = addr_width
        super().__init__({
            "start": In(1), "go": Out(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "error_code": Out(AccelError), "layer": Out(8),
            "layers": In(stream.Signature(desc_layout())),
            "loaded": In(macros),
            "issue": Out(IssueSignature(macros=macros, addr_width=addr_width)),
            "ctrl": Out(LayerSignature(param_rows=param_rows)),
            "residuals": In(credit_signature()),
            "layer_done": In(1), "overrun": In(1), "overflow": In(1),
            "waiting": Out(1), "pool_start": Out(1), "im2col_start": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        M, ab, baw = self.macros, self.a_bits, self.addr_width
        ctrl, iss = self.ctrl, self.issue
        desc = Signal(descriptor_layout())
        code = Signal(AccelError)   # the check code of desc
        fault = Signal(AccelError)  # a run-time error of this layer (sticky until STOP)
        out_sl, res_sl, sp = slices(m, desc, ab)
        in_sl = in_slices(m, desc, ab)
        pl = layer_planes(m, desc, self.w_bits)
        cp_c = copies(m, desc, sp, pl, planes=self.planes, macros=M)
        # Registered per layer (CHECK, SETUP), per round and per slot.
        w = SimpleNamespace(
            cp=Signal(range(self.planes + 1)),  # copies of the row tiles (pixels per slot)
            gw=Signal(baw),             # G * in_sl: one input pixel
            wg_words=Signal(baw),       # W * G * in_sl: one input row
            l_fin=Signal(5),            # slot length of a final round
            first_addr=Signal(baw),     # word of input pixel (-p, -p)
            j=Signal(8),                # column tile
            tb=Signal(16),              # first row tile of the round
            ph=Signal(5),               # cycle of the slot
            grp=Signal(range(self.planes + 2)),  # group of the slot
            gphase=Signal(8),           # the cycle of the slot that issues group grp
            pix=Signal(24), oy=Signal(16), ox=Signal(16),  # the pixel issued next
            line_addr=Signal(baw),      # word of its row's first window
            stall=Signal(),             # a pixel is due but waits for its residual
            sp=sp)
        p = desc.padding
        # The round: group (row tiles) and macros, also while RWAIT waits for their tiles.
        w.final = Signal()          # the round holds row tile T - 1
        m.d.comb += [w.final.eq(w.tb + M >= desc.row_tiles),
                     iss.count.eq(Mux(w.final, desc.row_tiles - w.tb, M)),
                     iss.macros.eq(w.cp * iss.count)]
        m.d.comb += [ctrl.desc.eq(desc), ctrl.out_sl.eq(out_sl), ctrl.res_sl.eq(res_sl),
                     iss.bank.eq(desc.in_base[baw]), iss.height.eq(desc.in_height),
                     iss.width.eq(desc.in_width), iss.bits.eq(desc.in_bits),
                     iss.planes.eq(pl)]
        ready_round = Signal()
        m.d.comb += ready_round.eq(
            Cat(*[self.loaded[i] | (iss.macros <= i) for i in range(M)]).all())

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.done.eq(0), self.error.eq(0),
                                 self.error_code.eq(AccelError.NONE), self.layer.eq(0),
                                 fault.eq(AccelError.NONE)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += self.layers.ready.eq(1)
                with m.If(self.layers.valid):
                    m.d.sync += [desc.eq(self.layers.payload.desc),
                                 code.eq(self.layers.payload.code)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [ctrl.pixels.eq(desc.out_height * desc.out_width),
                             ctrl.out_pitch.eq(desc.out_groups * out_sl),
                             ctrl.res_pitch.eq(desc.out_groups * res_sl),
                             w.gw.eq(desc.in_groups * in_sl),
                             w.wg_words.eq(desc.in_width * desc.in_groups * in_sl),
                             w.cp.eq(cp_c),
                             ctrl.param_row.eq(desc.param_base >> ceil_log2(self.cols))]
                with m.If(code != AccelError.NONE):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(code)]
                    m.next = "STOP"
                with m.Elif(desc.op == OP_MAXPOOL):
                    m.next = "POOL"
                with m.Elif(desc.op == OP_IM2COL):
                    m.next = "IM2COL"
                with m.Else():
                    m.next = "SETUP"
            with m.State("POOL"):
                # The pooler runs the layer and ends it with layer_done.
                m.d.comb += self.pool_start.eq(1)
                m.next = "DRAIN"
            with m.State("IM2COL"):
                # The im2col unit runs the layer and ends it with layer_done.
                m.d.comb += self.im2col_start.eq(1)
                m.next = "DRAIN"
            with m.State("SETUP"):
                m.d.comb += ctrl.start.eq(1)
                m.d.sync += [w.first_addr.eq(desc.in_base[:baw]
                                             - p * (w.wg_words + w.gw)),
                             w.l_fin.eq(Mux(w.cp * sp > pl, w.cp * sp, pl)),
                             w.j.eq(0), w.tb.eq(0)]
                m.next = "RWAIT"
            with m.State("RWAIT"):
                # A round starts when its macros hold their tiles (loaded, not committed).
                with m.If(ready_round):
                    m.d.comb += iss.round.eq(1)
                    m.d.sync += [w.oy.eq(0), w.ox.eq(0), iss.y.eq(-p), iss.x.eq(-p),
                                 iss.addr.eq(w.first_addr), w.line_addr.eq(w.first_addr),
                                 w.pix.eq(0), w.ph.eq(0), w.grp.eq(0), w.gphase.eq(0),
                                 iss.first.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self._run(m, desc, w)):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(self.layer_done):
                    with m.If(fault != AccelError.NONE):
                        m.d.sync += [self.error.eq(1), self.error_code.eq(fault)]
                        m.next = "STOP"
                    with m.Elif(desc.last):
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += self.layer.eq(self.layer + 1)
                        m.next = "NEXT"
            with m.State("STOP"):
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
        m.d.comb += [ctrl.busy.eq(~fsm.ongoing("IDLE")), self.busy.eq(ctrl.busy),
                     self.go.eq(self.start & ~ctrl.busy),
                     self.waiting.eq(fsm.ongoing("RWAIT") | w.stall)]
        # After the FSM, so that an error of the cycle that leaves IDLE is kept.
        with m.If(self.overrun & (fault == AccelError.NONE)):
            m.d.sync += fault.eq(AccelError.OVERRUN)
        with m.Elif(self.overflow & (fault == AccelError.NONE)):
            m.d.sync += fault.eq(AccelError.OVERFLOW)
        return m

    def _run(self, m, desc, w):
        """The ``RUN`` state (called inside it): the slots and groups of one round and the
        output-pixel walk. Sets ``m.next`` for the next round; returns a comb signal that is
        high when the layer's last round ends."""
        M = self.macros
        iss, ctrl = self.issue, self.ctrl
        J, s, p, G = desc.col_tiles, desc.stride, desc.padding, w.gw
        final, gs = w.final, iss.count
        slot_len = Signal(5)
        res_need = Signal()
        m.d.comb += [slot_len.eq(Mux(final, w.l_fin, iss.planes)),
                     res_need.eq(final & desc.has_residual)]
        due = Signal()
        slot_end = Signal()
        last_round = Signal()
        step_px = Mux(s == 2, 2, 1)
        m.d.comb += [due.eq((w.ph == w.gphase) & (w.grp < w.cp) & (w.pix != ctrl.pixels)),
                     iss.valid.eq(due & (~res_need | self.residuals.valid)),
                     self.residuals.ready.eq(iss.valid & res_need),
                     w.stall.eq(due & ~iss.valid),
                     slot_end.eq(~w.stall & (w.ph + 1 == slot_len))]
        with m.If(~w.stall):
            m.d.sync += w.ph.eq(w.ph + 1)
        with m.If(iss.valid):
            m.d.sync += [w.pix.eq(w.pix + 1), w.grp.eq(w.grp + 1),
                         w.gphase.eq(w.gphase + w.sp), iss.first.eq(iss.first + gs)]
            with m.If(w.ox + 1 != desc.out_width):
                m.d.sync += [w.ox.eq(w.ox + 1), iss.x.eq(iss.x + step_px),
                             iss.addr.eq(iss.addr + Mux(s == 2, G << 1, G))]
            with m.Else():
                nl = w.line_addr + Mux(s == 2, w.wg_words << 1, w.wg_words)
                m.d.sync += [w.ox.eq(0), iss.x.eq(-p), w.oy.eq(w.oy + 1),
                             iss.y.eq(iss.y + step_px), w.line_addr.eq(nl), iss.addr.eq(nl)]
        with m.If(slot_end):
            m.d.sync += [w.ph.eq(0), w.grp.eq(0), w.gphase.eq(0), iss.first.eq(0)]
            with m.If(w.pix + iss.valid == ctrl.pixels):
                with m.If(~final):
                    m.d.sync += w.tb.eq(w.tb + M)
                    m.next = "RWAIT"
                with m.Elif(w.j + 1 != J):
                    m.d.sync += [w.tb.eq(0), w.j.eq(w.j + 1)]
                    m.next = "RWAIT"
                with m.Else():
                    m.d.comb += last_round.eq(1)
        return last_round
