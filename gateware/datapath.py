"""Post-array datapath: partial-sum accumulation and requantization of the CIM array's outputs.

Every column of the CIM array produces, per output pixel, one partial dot product per row tile
(``Cin * k * k`` exceeds the rows when a layer is deep). :class:`Datapath` adds those partial
sums and turns the total into the next layer's activation with the integer rule of
:mod:`contract.arith` (:func:`~contract.arith.datapath_model`)::

    acc = sum of the partial sums                 # first .. last beat
    y   = acc * M + B (+ res * R)                 # M 16-bit, B 48-bit, R 24-bit, all signed
    out = clamp((y + 2**(S - 1)) >> S, lo, hi)    # round half up, then saturate (ReLU at lo = 0)

or, in raw mode (the classifier layer, ``contract.program``), ``logit = y`` itself, as a
:data:`~contract.arith.LOGIT_BITS`-bit signed value.

It is one component rather than an accumulator and a requantizer joined by a stream: the
requantizer would need the channel parameters joined to the accumulator's output anyway, and
in one pipeline the stall signal alone drives every register's clock enable (the DSP48E2's
CEA/CEB/CEM/CEP), so backpressure costs no skid buffers.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from contract.arith import (
    BIAS_BITS,
    LOGIT_BITS,
    MAX_ACC_WIDTH,
    MAX_SHIFT,
    MULT_BITS,
    RES_MULT_BITS,
    VALUE_BITS,
    datapath_model,
    signed_range,
    signed_width,
)
from contract.timing import DATAPATH_LATENCY

__all__ = ["Datapath"]

def _mul_range(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    p = [x * y for x in a for y in b]
    return min(p), max(p)


class Datapath(wiring.Component):
    """Partial-sum accumulator and requantizer for ``lanes`` output channels in parallel.

    The lanes are the array's columns: they receive their partial sums in the same cycle, so
    they share one stream handshake and one ``first``/``last`` marker.

    Channel parameters travel in the input payload (they are sampled on the ``last`` beat)
    instead of living in a parameter memory inside this block: which parameter row belongs to
    which column tile is the sequencer's business (its parameter store reads them alongside
    the weights), and this block stays free of layer layout and needs no write port.

    Pipeline and latency
    --------------------
    Six register stages, enabled by ``advance = ~o_stream.valid | o_stream.ready``, which is
    also ``i_stream.ready`` (stage 1 loads on accepted beats only). Only the valid bits and the
    running sum are reset; the data registers are not, so that they can sit in the DSP48E2:

    1. running sum ``acc`` (and the ``last`` beat's ``M``, ``B``, ``R``, ``res``);
    2. products ``acc * M`` and ``res * R`` (DSP48E2 ``M`` registers);
    3. ``acc * M + B`` (the DSP48E2 post-adder's place, but 49 bits wide at worst, one more
       than the post-adder, so it may stay in fabric carry chains);
    4. ``y`` = that + ``res * R``;
    5. ``t = y >> (S - 1)`` (arithmetic);
    6. ``out = clamp((t + 1) >> 1, lo, hi)``, the output register.

    Raw mode (``raw`` high, a classifier layer): stage 5 shifts by 0, so ``t = y``, and stage
    6 also registers ``logit = t`` truncated to :data:`~contract.arith.LOGIT_BITS` bits; a
    ``y`` outside ``LOGIT_BITS`` signed bits sets ``overflow`` (the check is registered in
    stage 5 beside ``t`` and ORed over the lanes into the stage-6 flag), so a logit is never
    silently wrapped. The cost is the ``LOGIT_BITS`` logit register and a range check per
    lane; the normal path and its timing are unchanged (the shift amount ``S - 1`` becomes
    ``Mux(raw, 0, S - 1)``, a per-layer constant shared by the lanes).

    Rounding half up takes no wide adder for ``2**(S - 1)``: ``(y + 2**(S-1)) >> S`` equals
    ``((y >> (S-1)) + 1) >> 1`` for every integer ``y`` (write ``y = q * 2**(S-1) + r`` with
    ``0 <= r < 2**(S-1)``; both sides are ``floor((q + 1) / 2)``).

    :attr:`latency` (6): when the ``last`` beat of a result is transferred in cycle ``n``, the
    result is valid on ``o_stream`` in cycle ``n + 6`` if nothing stalls. Throughput is one
    result per cycle per lane for single-tile sums (``first`` and ``last`` on every beat), one per
    ``T`` beats with ``T`` row tiles. A stall (``o_stream.valid & ~o_stream.ready``) freezes the
    whole pipeline and drops ``i_stream.ready``, so nothing is lost or duplicated; empty stages
    move on while the output register is empty. ``i_stream.ready`` depends on
    ``o_stream.ready`` through one gate (allowed by the stream rules); a ``stream`` FIFO on the
    output decouples it if timing needs.

    Widths (no silent wrapping)
    ---------------------------
    Every register is as wide as the exact range of its value for *any* bits on the payload
    (``M`` down to ``-2**15``, ``res`` down to ``-256``, ...), computed by interval arithmetic in
    :meth:`_widths`. With ``A = acc_width``: ``|acc * M| <= 2**(A + 14)`` (``A + 16`` bits),
    ``|res * R| <= 2**31`` (33 bits), ``|B| <= 2**47``, so ``y`` takes 49 bits for ``A <= 32``
    (64 at ``A = 48``); the shift stages keep ``y``'s width. The one bound the block cannot
    size for is the number of partial sums: the running sum must stay inside ``A`` bits (the
    compiler checks ``accumulator_width(Cin * k * k, w_bits, a_bits) <= A``). If it does not,
    the result's ``overflow`` flag is set (the value wraps and is meaningless); it is never
    silent.

    For the DSP48E2 (27 x 18 multiplier, 48-bit post-adder): ``res * R`` is 9 x 24 bits, one
    DSP; ``acc * M`` is one DSP while ``acc_width <= 27``.

    Configuration inputs are per layer and must stay stable while the layer's results are in
    the pipeline. Illegal values (``shift`` outside ``1..MAX_SHIFT``, ``out_bits`` outside
    ``1..8``, a signed output of 1 bit) give unspecified outputs; the sequencer rejects them
    when it checks the layer descriptor.

    Parameters
    ----------
    lanes : int
        Output channels processed in parallel, 1 to 4096.
    acc_width : int
        Width of the signed running sum, 8 to 48.
    psum_width : int
        Width of a signed partial sum, 2 to ``acc_width``.

    Members
    -------
    i_stream : ``In(stream.Signature(in_layout))``
        ``first`` (1: this beat starts a new sum), ``last`` (1: it completes the sum), and per
        lane ``lanes[n]``: ``psum`` (``signed(psum_width)``), ``m`` (``signed(16)``), ``b``
        (``signed(48)``), ``r`` (``signed(24)``) and ``res`` (``signed(9)``, the residual
        element; ignored without ``has_residual``). A single-tile sum has both flags set.
    o_stream : ``Out(stream.Signature(out_layout))``
        ``value[n]`` (``signed(9)``, within ``[lo, hi]``), ``logit[n]`` (``signed(32)``:
        ``y`` in raw mode, unspecified otherwise) and ``overflow`` (1: some lane's running
        sum left ``acc_width`` bits, or, in raw mode, some lane's ``y`` left 32 bits).
    shift : ``In(range(1, MAX_SHIFT + 1))``
        The requantization shift ``S``.
    out_bits : ``In(range(1, 9))``
        Output activation bits.
    out_signed : ``In(1)``
        0: ``[lo, hi] = [0, 2**out_bits - 1]`` (the clamp at 0 is the ReLU); 1: narrow signed
        ``[-(2**(out_bits-1) - 1), 2**(out_bits-1) - 1]``, no ReLU. These are the model file's
        ``out_bits``/``out_signed`` fields; ``lo``/``hi`` derive from them here, so the
        descriptor cannot hold an empty range.
    has_residual : ``In(1)``
        Add ``res * R``.
    raw : ``In(1)``
        Raw mode: ``logit = y`` (``shift``, ``out_bits`` and ``has_residual`` are then 0;
        ``value`` is unspecified).
    """

    latency = DATAPATH_LATENCY

    def __init__(self, *, lanes: int = 1, acc_width: int = 24, psum_width: int | None = None):
        if not isinstance(lanes, int) or not 1 <= lanes <= 4096:
            raise ValueError(f"Lane count must be an integer between 1 and 4096, not {lanes!r}")
        if not isinstance(acc_width, int) or not 8 <= acc_width <= MAX_ACC_WIDTH:
            raise ValueError(f"Accumulator width must be an integer between 8 and "
                             f"{MAX_ACC_WIDTH}, not {acc_width!r}")
        if psum_width is None:
            psum_width = acc_width
        if not isinstance(psum_width, int) or not 2 <= psum_width <= acc_width:
            raise ValueError(f"Partial-sum width must be an integer between 2 and the "
                             f"accumulator width {acc_width}, not {psum_width!r}")
        self.lanes = lanes
        self.acc_width = acc_width
        self.psum_width = psum_width
        self.lane_layout = data.StructLayout({
            "psum": signed(psum_width),
            "m": signed(MULT_BITS),
            "b": signed(BIAS_BITS),
            "r": signed(RES_MULT_BITS),
            "res": signed(VALUE_BITS),
        })
        self.in_layout = data.StructLayout({
            "first": 1,
            "last": 1,
            "lanes": data.ArrayLayout(self.lane_layout, lanes),
        })
        self.out_layout = data.StructLayout({
            "value": data.ArrayLayout(signed(VALUE_BITS), lanes),
            "logit": data.ArrayLayout(signed(LOGIT_BITS), lanes),
            "overflow": 1,
        })
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
            "shift": In(range(1, MAX_SHIFT + 1)),
            "out_bits": In(range(1, 9)),
            "out_signed": In(1),
            "has_residual": In(1),
            "raw": In(1),
        })

    def _widths(self) -> dict[str, int]:
        """Exact widths of the intermediate values for any payload bits."""
        acc = signed_range(self.acc_width)
        prod_m = _mul_range(acc, signed_range(MULT_BITS))
        prod_r = _mul_range(signed_range(VALUE_BITS), signed_range(RES_MULT_BITS))
        bias = signed_range(BIAS_BITS)
        part = (prod_m[0] + bias[0], prod_m[1] + bias[1])
        y = (part[0] + prod_r[0], part[1] + prod_r[1])
        return dict(prod_m=signed_width(*prod_m), prod_r=signed_width(*prod_r),
                    part=signed_width(*part), y=signed_width(*y))

    def elaborate(self, platform):
        m = Module()
        w = self._widths()
        i, o = self.i_stream, self.o_stream

        advance = Signal()
        m.d.comb += [
            advance.eq(~o.valid | o.ready),
            i.ready.eq(advance),
        ]
        take = Signal()
        m.d.comb += take.eq(advance & i.valid)

        # Valid bits of stages 1..5; stage 6 is o.valid itself.
        valid = [Signal(name=f"valid_{s}") for s in range(1, self.latency)]
        with m.If(advance):
            m.d.sync += [
                valid[0].eq(i.valid & i.payload.last),
                *(valid[s].eq(valid[s - 1]) for s in range(1, len(valid))),
                o.valid.eq(valid[-1]),
            ]

        shift_m1 = Signal(range(MAX_SHIFT))
        magnitude_bits = Signal(4)
        hi = Signal(signed(VALUE_BITS + 1))
        lo = Signal(signed(VALUE_BITS + 1))
        m.d.comb += [
            shift_m1.eq(Mux(self.raw, 0, self.shift - 1)),
            magnitude_bits.eq(Mux(self.out_signed, self.out_bits - 1, self.out_bits)),
            hi.eq((1 << magnitude_bits) - 1),
            lo.eq(Mux(self.out_signed, -hi, 0)),
        ]

        overflow = []
        unfit = []              # raw mode: y (= t) does not fit a logit, per lane, stage 5
        lmin, lmax = signed_range(LOGIT_BITS)
        for n in range(self.lanes):
            li = i.payload.lanes[n]
            acc = Signal(signed(self.acc_width), name=f"acc_{n}")
            acc_ovf = Signal(name=f"acc_ovf_{n}")
            total = Signal(signed(self.acc_width + 1), name=f"total_{n}")
            m.d.comb += total.eq(Mux(i.payload.first, 0, acc) + li.psum)
            # Stage 1. The parameters are captured on every accepted beat; the last one wins.
            mult = _data(signed(MULT_BITS), f"m_{n}")
            bias1 = _data(signed(BIAS_BITS), f"b1_{n}")
            rmult = _data(signed(RES_MULT_BITS), f"r_{n}")
            res = _data(signed(VALUE_BITS), f"res_{n}")
            with m.If(take):
                m.d.sync += [
                    acc.eq(total),  # wraps only when the overflow flag says so
                    acc_ovf.eq((acc_ovf & ~i.payload.first)
                               | (total[-1] != total[-2])),
                    mult.eq(li.m),
                    bias1.eq(li.b),
                    rmult.eq(li.r),
                    # Gated here, not after the product, so the multiplier keeps its
                    # input and product registers.
                    res.eq(Mux(self.has_residual, li.res, 0)),
                ]
            overflow.append(acc_ovf)

            prod_m = _data(signed(w["prod_m"]), f"prod_m_{n}")
            prod_r2 = _data(signed(w["prod_r"]), f"prod_r2_{n}")
            bias2 = _data(signed(BIAS_BITS), f"b2_{n}")
            part = _data(signed(w["part"]), f"part_{n}")
            prod_r3 = _data(signed(w["prod_r"]), f"prod_r3_{n}")
            y = _data(signed(w["y"]), f"y_{n}")
            t = _data(signed(w["y"]), f"t_{n}")
            u = Signal(signed(w["y"]), name=f"u_{n}")
            value = o.payload.value[n]
            wide = _data(1, f"unfit_{n}")
            unfit.append(wide)
            m.d.comb += u.eq((t + 1) >> 1)
            with m.If(advance):
                m.d.sync += [
                    prod_m.eq(acc * mult),                           # stage 2
                    prod_r2.eq(res * rmult),
                    bias2.eq(bias1),
                    part.eq(prod_m + bias2),                         # stage 3
                    prod_r3.eq(prod_r2),
                    y.eq(part + prod_r3),                            # stage 4
                    t.eq(y >> shift_m1),                             # stage 5
                    wide.eq((y < lmin) | (y > lmax)),
                    value.eq(Mux(u < lo, lo, Mux(u > hi, hi, u))),   # stage 6
                    o.payload.logit[n].eq(t[:LOGIT_BITS]),
                ]

        # The flag travels with the result: OR over lanes in stage 2, then delayed.
        ovf = [Signal(name=f"overflow_{s}") for s in range(2, self.latency)]
        with m.If(advance):
            m.d.sync += [
                ovf[0].eq(_any(overflow)),
                *(ovf[s].eq(ovf[s - 1]) for s in range(1, len(ovf))),
                o.payload.overflow.eq(ovf[-1] | (self.raw & _any(unfit))),
            ]
        return m

    def model(self, psum, first, last, m, b, r, res, *, shift: int, out_bits: int,
              out_signed: bool, has_residual: bool,
              raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Bit-exact model of the results the block emits, in order: the contract's
        :func:`~contract.arith.datapath_model` at this block's widths (``raw``: the values
        are the ``logit`` field's)."""
        return datapath_model(psum, first, last, m, b, r, res, lanes=self.lanes,
                              acc_width=self.acc_width, psum_width=self.psum_width,
                              shift=shift, out_bits=out_bits, out_signed=out_signed,
                              has_residual=has_residual, raw=raw)


def _data(shape, name):
    # A reset on the data registers would keep them out of the DSP48E2's input, M and P
    # registers and adds a fan-out that buys nothing: the valid bits say what is data.
    return Signal(shape, name=name, reset_less=True)


def _any(bits):
    out = bits[0]
    for b in bits[1:]:
        out = out | b
    return out
