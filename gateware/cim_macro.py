"""The compute-in-memory (CIM) array macro: stored weights, bit-serial inputs.

See :class:`CIMMacro` for the interface and timing, and ``gateware/README.md`` for the
measured cost. :meth:`CIMMacro.model` is the bit-exact reference (the partial-sum ADC rule
is the contract's :func:`~contract.arith.adc_dot`, which the golden model applies too).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from contract.arith import (
    OFFSET_FRAC_BITS,
    OFFSET_WIDTH,
    CalibrationRows,
    adc_dot,
    column_range,
    offset_codes,
    plane_range,
    weight_range,
)
from contract.config import check_macro_params
from contract.timing import MACRO_LATENCY

__all__ = ["CIMMacro", "adder_tree", "output_shape", "psum_shape"]

STYLES = ("structural", "behavioral")
DEFAULT_STYLE = "structural"
"""The macro style every entry point uses unless told otherwise (the Verilog, the Amaranth
simulations, ``sim.accel_pysim``); ``behavioral`` gives the same results and cycles
(``tests/test_cim_macro.py``) and simulates faster."""
"""How the column sums are written: ``structural`` maps them onto carry chains (synthesis);
``behavioral`` is a plain adder tree of the same values, which Verilator compiles in seconds
instead of hours (the structural macro's LUT tables become hundreds of MB of C++). Storage,
pipeline, ports and results are the same; ``tests/test_cim_macro.py`` runs both."""

LATENCY = MACRO_LATENCY
"""Cycles from the clock edge that accepts a vector's last bit-plane to the edge after which
``output.valid`` is high with its result (when ``output`` is not holding an earlier one)."""


def psum_shape(rows: int, w_bits: int) -> Shape:
    """Shape of one bit-plane's column sum ``sum_r x_r * w_r`` (``x_r`` in {0, 1})."""
    lo, hi = plane_range(rows, w_bits)
    return Shape.cast(range(lo, hi + 1))


def output_shape(rows: int, w_bits: int, a_bits: int) -> Shape:
    """Shape of one column's result, a dot product of ``rows`` products."""
    lo, hi = column_range(rows, w_bits, a_bits)
    return Shape.cast(range(lo, hi + 1))


# ----------------------------------------------------------------------------- adders


MAX_CHAIN = 4
"""Most terms a column's carry chain adds in series (:func:`_chain_sum`). The chains are the
macro's longest register-to-register path: by ``hw.timing``'s delay model a 64x64 W4 macro is
at 95 MHz with chains of 6, 111 MHz with 5 and 123 MHz with 4 (the margin over a 100 MHz
clock), for 2 % and 11 % more LUTs and the same flip-flops (the resource that bounds how many
macros fit); 3 gives no more (119 MHz: the adder tree gains a level). ``gateware/README.md``
has the measurement."""


def _chain_sum(m, terms, *, width, offset, name, max_chain=MAX_CHAIN):
    """The exact signed sum of ``t_i = u_i - offset`` over ``terms`` ``u_i``.

    Each ``u_i`` is an unsigned ``width``-bit value no larger than ``2**width - 2``: a small
    function (a 4:1 mux of stored weights gated by two input bits) that the FPGA mapping
    folds into the adder that consumes it. Structured for UltraScale+ carry chains, and
    for Yosys, which would otherwise merge chained adders into one ``$macc`` cell and map
    it as a generic full-adder tree at about twice the LUTs:

    * Terms are summed in chains of at most ``max_chain``. A chain stage keeps only a
      ``width``-bit running low part: ``low' = low - ~u = low + u + 1`` (a subtraction, so
      Yosys keeps ``low``, a carry-chain output, on the A side driving the carry chain's DI,
      and ``u``'s logic folds into the propagate LUT: one LUT per bit). The bound on ``u``
      makes the stage's carry-out a single bit of weight ``2**width``.
    * A chain's carry-outs (at most ``max_chain``) are counted by one LUT per output bit, a table
      that also adds a constant; with the chain's constant start ``K`` this cancels the
      ``+ 1`` per stage and the offsets. The chain's value is ``Cat(low, count)``: no adder.
    * Chains are added in a balanced tree. An adder that takes another adder's output
      works on doubled operands (a constant 0 LSB) and its consumer reads its result
      shifted back, so no adder's operand is exactly another adder's output and Yosys
      cannot merge them.

    Returns ``(value, lo, hi)``: a signed Value and the range it can take.
    """
    n = len(terms)
    n_chains = -(-n // max_chain)
    bounds = [n * i // n_chains for i in range(n_chains + 1)]
    umax = (1 << width) - 2
    partial = []
    for ci in range(n_chains):
        chain = terms[bounds[ci]:bounds[ci + 1]]
        length = len(chain)
        # value = K + sum(u + 1) = sum(t) + K + (offset + 1) * length, so pick K (the low
        # part's start) and E (the count's constant) to make low + 2**width * count exact.
        bias = (offset + 1) * length
        k_low = -bias % (1 << width)
        e = -(k_low + bias) >> width
        low = Const(k_low, width)
        carries = []
        for j, u in enumerate(chain):
            s = Signal(width + 1, name=f"{name}_c{ci}_s{j}")
            m.d.comb += s.eq(low - ~Cat(u, Const(0, width + 1 - len(u))))
            low = s[:width]
            carries.append(s[width])
        lo, hi = -offset * length, (umax - offset) * length
        # count = floor(value / 2**width); always signed so Cat(low, count) reads signed.
        span = Shape.cast(range(lo >> width, (hi >> width) + 1))
        cnt_shape = signed(span.width + (not span.signed))
        cnt = Signal(cnt_shape, name=f"{name}_c{ci}_n")
        idx = Cat(*carries)
        for bit in range(cnt_shape.width):
            table = sum(1 << i for i in range(1 << length)
                        if ((bin(i).count("1") + e) >> bit) & 1)
            m.d.comb += cnt[bit].eq(Const(table, 1 << length).bit_select(idx, 1))
        partial.append((Cat(low, cnt).as_signed(), lo, hi))

    # Chain values are concatenations, not adder outputs.
    return adder_tree(m, [(v, lo, hi, False) for v, lo, hi in partial], name=name)


def adder_tree(m, terms, *, name):
    """A balanced tree of two-input adders over ``terms`` (``(value, lo, hi, raw)``: a signed
    Value, its range, and whether it is exactly an adder's output), each adder as narrow as
    its operands' ranges allow, that Yosys maps onto carry chains one adder at a time.

    Yosys merges an adder whose operand is exactly another adder's output into one ``$macc``
    cell and maps that as a generic full-adder tree at about twice the LUTs; so an adder that
    takes a raw adder output works on doubled operands (a constant 0 LSB) and its consumer
    reads its result shifted back. Returns ``(value, lo, hi)``.
    """
    partial = list(terms)
    level = 0
    while len(partial) > 1:
        nxt = []
        for i in range(0, len(partial) - 1, 2):
            (va, la, ha, ra), (vb, lb, hb, rb) = partial[i], partial[i + 1]
            lo, hi = la + lb, ha + hb
            w = Shape.cast(range(min(lo, -1), hi + 1)).width  # as a signed value
            double = ra or rb
            s = Signal(signed(w + double), name=f"{name}_t{level}_{i}")
            if double:
                m.d.comb += s.eq(Cat(Const(0, 1), va).as_signed()
                                 + Cat(Const(0, 1), vb).as_signed())
            else:
                m.d.comb += s.eq(va + vb)
            nxt.append((s[double:].as_signed(), lo, hi, not double))
        if len(partial) % 2:
            nxt.append(partial[-1])
        partial = nxt
        level += 1
    return partial[0][:3]


def tree_sum(values):
    """Balanced sum of Values (keeps expressions shallow for the simulator)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


# ----------------------------------------------------------------------------- the macro


class CIMMacro(wiring.Component):
    """A compute-in-memory macro of ``rows`` x ``cols`` stored weights.

    Every cycle one input bit-plane (bit ``r`` for row ``r``) is broadcast on the rows;
    each column sums its stored weights on the rows whose bit is set, and a per-column
    shift-accumulator combines a vector's bit-planes, **most significant first**, into the
    exact signed dot product ``y_c = sum_r x_r * w[r][c]`` of unsigned ``a_bits``-bit
    inputs ``x_r`` and the stored weights. One vector takes one cycle per bit-plane and
    vectors stream back to back: with ``a_bits`` planes per vector the macro does
    ``rows * cols / a_bits`` MACs per cycle.

    Parameters
    ----------
    rows : int
        Rows (the dot-product length), a power of two from 8 to 1024.
    cols : int
        Columns (independent dot products), 1 to 1024.
    w_bits : int
        Weight bits: 2, 4 or 8 (two's complement), or 1 (binary weights: a stored 1 is +1,
        a stored 0 is -1).
    a_bits : int
        Largest number of bit-planes per vector (1 to 16): it sizes the result. A
        vector may have fewer planes (its ``last`` comes earlier): a narrower input then
        takes fewer cycles and gives the same result as zero-padding its high bits.
    adc_bits : int or None
        Partial-sum ADC model. ``None``: exact. Otherwise, for every bit-plane ``j`` and
        every stored weight bit ``b``, the column count ``p[j][b] = #{r : x_r bit j = 1 and
        w[r][c] bit b = 1}`` (what an analog macro's column ADC digitizes, 0 to ``rows``) is
        clipped to ``min(p, 2**adc_bits - 1)`` before the shift-add
        ``y = sum_j 2**j * (sum_{b < w_bits-1} 2**b p[j][b] - 2**(w_bits-1) p[j][w_bits-1])``
        (for ``w_bits == 1``: ``sum_j 2**j * (2 * p[j][0] - n_j)`` with ``n_j`` the number of
        rows whose bit ``j`` is set, counted exactly). Clipping is per macro, i.e. per
        ``rows``-row tile of a longer dot product; :meth:`model` states the same rule.
    adc_offsets : array-like or None
        Per-bit-column ADC offsets of the device this macro models (needs ``adc_bits``):
        integers ``(cols, w_bits)``, ``[c][b]`` the offset of column ``c``'s weight bit ``b``
        in units of ``2**-OFFSET_FRAC_BITS`` LSB (one macro of a
        :class:`contract.arith.AdcOffsets`). Fixed at elaboration: every count ``p`` of that
        bit-column becomes ``clip(p + offset_codes(offset), 0, 2**adc_bits - 1)``, a constant
        added before the clip (``docs/offsets.md``). ``None`` (default): no offsets. Every
        plane is a conversion that reads the offset, so with offsets a vector sent with fewer
        planes no longer equals its zero-padded form: :meth:`model` converts ``a_bits``.
    calibration : CalibrationRows or None
        Calibration rows of every bit-column (needs ``adc_bits``; not with ``adc_offsets``):
        the macro models a device whose bit-column offsets come in on ``theta`` and whose
        ``calibration.rows`` cells per bit-column bias them by ``step * (n - rows / 2)``
        (``n`` cells set; :class:`contract.arith.CalibrationRows`). Inference then converts
        with the residual ``theta + bias`` as its offset, and ``cal_eval`` latches every
        bit-column's comparator (residual > 0) into ``compare`` (``docs/offsets.md``).
    write_rows : int
        Weight rows per write beat: a power of two from 2 to ``rows`` (rows are stored in
        pairs, each pair with its precomputed sum).
    double_buffer : bool
        Writes go to a shadow copy of the weights, which an input beat with ``commit`` set
        copies into the array; the next tile loads while the current one computes.
    style : str
        ``"structural"`` (synthesis) or ``"behavioral"`` (fast Verilator simulation): see
        :data:`STYLES`.

    Members
    -------
    input : ``In(stream.Signature(input_layout))``
        One bit-plane per beat: ``plane`` (``rows`` bits, bit ``r`` is row ``r``),
        ``last`` (this is the least significant plane of the vector; a vector's planes go
        most significant first) and, with ``double_buffer``, ``commit`` (copy the shadow
        weights into the array for this plane and the ones after it; a write in the same
        cycle is not included).
    write : ``In(stream.Signature(write_layout))``
        ``w[i][c]`` is the weight of row ``addr * write_rows + i``, column ``c``
        (``signed(w_bits)``, or ``unsigned(1)`` for binary weights). ``ready`` is always 1.
        Without ``double_buffer`` a write changes the array at once: only write while no
        plane is in flight (between the macro's last output and the next plane).
    output : ``Out(stream.Signature(output_layout))``
        ``y[c]`` (``output_shape(rows, w_bits, a_bits)``), one beat per vector.
    theta, cal, cal_eval, compare (with ``calibration`` only)
        ``theta``: ``In(data.ArrayLayout(signed(OFFSET_WIDTH), cols * w_bits))``, bit-column
        ``k = c * w_bits + b``'s analog offset (units of ``2**-OFFSET_FRAC_BITS`` LSB; held
        constant: it models the device). ``cal``: ``In(cal_layout)``, ``en``, ``row``,
        ``word`` and ``data``: while ``en`` is high, 32-bit word ``word`` of calibration row
        ``row`` (bit ``k`` of a row is bit-column ``k``'s cell; bits past ``cols * w_bits``
        are ignored) takes ``data``. ``cal_eval``: ``In(1)``, an evaluation in calibration
        mode: ``compare`` (``Out(cols * w_bits)``) takes every bit-column's comparator
        decision from the cells as they are in that cycle (bit ``k``: residual > 0). A cell
        written in cycle ``t`` reaches the ADCs' offsets after edge ``t + 1``: change cells
        only while no vector is in flight.

    Timing: the result of a vector whose last plane is accepted at clock edge ``t`` is
    valid after edge ``t + LATENCY`` (3), unless ``output`` still holds an earlier result.
    While ``output.valid`` is high and ``output.ready`` low the whole pipeline stalls and
    ``input.ready`` is low (``input.ready`` thus depends combinationally on
    ``output.ready``); otherwise ``input.ready`` is high.
    """

    def __init__(self, *, rows, cols, w_bits, a_bits, adc_bits=None, adc_offsets=None,
                 calibration=None, write_rows=2, double_buffer=True, style="structural"):
        check_macro_params(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits,
                           adc_bits=adc_bits, write_rows=write_rows,
                           double_buffer=double_buffer)
        if style not in STYLES:
            raise ValueError(f"Style must be one of {', '.join(STYLES)}, not {style!r}")
        self.style = style
        self.rows = rows
        self.cols = cols
        self.w_bits = w_bits
        self.a_bits = a_bits
        self.adc_bits = adc_bits
        self.adc_offsets = self._check_offsets(adc_offsets, adc_bits, cols, w_bits)
        if calibration is not None:
            if not isinstance(calibration, CalibrationRows):
                raise ValueError(f"calibration must be a CalibrationRows or None, not "
                                 f"{calibration!r}")
            if adc_bits is None or adc_offsets is not None:
                raise ValueError("calibration rows bias the ADC of a device whose offsets "
                                 "come in on theta: they need adc_bits and no adc_offsets")
        self.calibration = calibration
        self.write_rows = write_rows
        self.double_buffer = double_buffer
        self.latency = LATENCY
        self.psum_shape = psum_shape(rows, w_bits)
        self.out_shape = output_shape(rows, w_bits, a_bits)

        w_shape = unsigned(1) if w_bits == 1 else signed(w_bits)
        in_fields = {"plane": unsigned(rows), "last": 1}
        if double_buffer:
            in_fields["commit"] = 1
        self.input_layout = data.StructLayout(in_fields)
        self.write_layout = data.StructLayout({
            "addr": range(rows // write_rows),
            "w": data.ArrayLayout(data.ArrayLayout(w_shape, cols), write_rows),
        })
        self.output_layout = data.StructLayout({"y": data.ArrayLayout(self.out_shape, cols)})
        members = {
            "input": In(stream.Signature(self.input_layout)),
            "write": In(stream.Signature(self.write_layout)),
            "output": Out(stream.Signature(self.output_layout)),
        }
        if calibration is not None:
            bits = cols * w_bits
            self.cal_layout = data.StructLayout({
                "en": 1, "row": range(calibration.rows), "word": range(max(1, -(-bits // 32))),
                "data": 32})
            members.update({
                "theta": In(data.ArrayLayout(signed(OFFSET_WIDTH), bits)),
                "cal": In(self.cal_layout), "cal_eval": In(1), "compare": Out(bits)})
        super().__init__(members)

    @staticmethod
    def _check_offsets(offsets, adc_bits, cols, w_bits):
        if offsets is None:
            return None
        if adc_bits is None:
            raise ValueError("adc_offsets model the ADC's offsets: they need adc_bits")
        v = np.asarray(offsets)
        if v.shape != (cols, w_bits):
            raise ValueError(f"adc_offsets must have shape (cols, w_bits) = {(cols, w_bits)}, "
                             f"not {v.shape}")
        if v.size and not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"adc_offsets must be integers in units of 2**-{OFFSET_FRAC_BITS} "
                             f"LSB, not {v.dtype}")
        v = v.astype(np.int64)
        v.flags.writeable = False
        return v

    @property
    def peak_macs_per_cycle(self) -> float:
        return self.rows * self.cols / self.a_bits

    # ------------------------------------------------------------------ reference model

    @staticmethod
    def model(x, w, *, w_bits, a_bits, adc_bits=None, adc_offsets=None):
        """Bit-exact reference of the macro's results.

        ``x``: integers in ``[0, 2**a_bits)``, shape ``(..., rows)``; ``w``: weights in
        :func:`weight_range` (nonzero for ``w_bits == 1``), shape ``(rows, cols)``.
        Returns int64 of shape ``(..., cols)``. Computed the way the macro does, per input
        bit-plane and weight bit, with the ``adc_bits`` clipping rule of :class:`CIMMacro`;
        with ``adc_bits=None`` it equals ``x @ w``.
        """
        x = np.asarray(x, dtype=np.int64)
        w = np.asarray(w, dtype=np.int64)
        if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"x {x.shape} and w {w.shape} do not match: expected "
                             "(..., rows) and (rows, cols)")
        if x.size and (x.min() < 0 or x.max() >= 1 << a_bits):
            raise ValueError(f"inputs must be in [0, {1 << a_bits}) for a_bits={a_bits}")
        lo, hi = weight_range(w_bits)
        if w.size and (w.min() < lo or w.max() > hi or (w_bits == 1 and (w == 0).any())):
            raise ValueError(f"weights must be in [{lo}, {hi}] for w_bits={w_bits}"
                             + (" and nonzero" if w_bits == 1 else ""))
        # The arithmetic is the contract's ADC rule, defined once there.
        return adc_dot(x, w, w_bits=w_bits, a_bits=a_bits, adc_bits=adc_bits,
                       offsets=adc_offsets)

    # ------------------------------------------------------------------ hardware

    def elaborate(self, platform):
        m = Module()
        R, C, Wb = self.rows, self.cols, self.w_bits
        exact = self.adc_bits is None

        # Weights are stored per row pair and column: the even row's weight, the odd row's
        # and (exact macros with w_bits > 1) their sum, added once on the write bus. A pair's
        # column term x_e * w_e + x_o * w_o is then a 4:1 mux of stored values: one LUT input
        # set per bit, which the column adder absorbs (see _chain_sum).
        sum_bits = Wb + 1 if exact and Wb > 1 else 0
        cell = 2 * Wb + sum_bits
        n_pairs = R // 2
        active = [Signal(C * cell, name=f"pair{p}") for p in range(n_pairs)]
        shadow = ([Signal(C * cell, name=f"shadow{p}") for p in range(n_pairs)]
                  if self.double_buffer else active)

        wr = self.write
        m.d.comb += wr.ready.eq(1)
        half = self.write_rows // 2
        for g in range(R // self.write_rows):
            with m.If(wr.valid & (wr.payload.addr == g)):
                for i in range(half):
                    ev, od = wr.payload.w[2 * i], wr.payload.w[2 * i + 1]
                    parts = []
                    for c in range(C):
                        parts += [ev[c], od[c]]
                        if sum_bits:
                            parts.append(ev[c] + od[c])
                    m.d.sync += shadow[g * half + i].eq(Cat(*parts))

        # One enable for the whole pipeline: it advances unless a result waits on output.
        en = Signal()
        m.d.comb += [en.eq(~self.output.valid | self.output.ready), self.input.ready.eq(en)]
        accept = self.input.valid & en

        # Stage A: register the bit-plane broadcast to every column.
        x_a = Signal(R)
        valid_a = Signal()
        last_a = Signal()
        with m.If(en):
            m.d.sync += [valid_a.eq(self.input.valid), last_a.eq(self.input.payload.last)]
            with m.If(self.input.valid):
                m.d.sync += x_a.eq(self.input.payload.plane)
        if self.double_buffer:
            with m.If(accept & self.input.payload.commit):
                m.d.sync += [a.eq(s) for a, s in zip(active, shadow)]
        if not exact and Wb == 1:
            # Binary weights under the ADC model need the plane's popcount (exact).
            nx_a = Signal(range(R + 1))
            plane = self.input.payload.plane
            with m.If(accept):
                m.d.sync += nx_a.eq(tree_sum(plane[r] for r in range(R)))

        self._codes = None if self.calibration is None else self._calibration(m)

        # Stage B: every column's sum for the plane.
        psums = [self._column_exact(m, x_a, active, c) if exact
                 else self._column_adc(m, x_a, active, c, nx_a if Wb == 1 else None)
                 for c in range(C)]
        p_b = [Signal(self.psum_shape, name=f"p{c}") for c in range(C)]
        valid_b = Signal()
        last_b = Signal()
        with m.If(en):
            m.d.sync += [valid_b.eq(valid_a), last_b.eq(last_a)]
            m.d.sync += [p.eq(s) for p, s in zip(p_b, psums)]

        # Stage C: MSB-first shift-accumulate acc' = 2 * acc + p, both operands flip-flops
        # (one LUT per bit). The accumulator restarts from 0 after a vector's last plane by
        # a synchronous reset, free in the flip-flop, so no "first plane" mux is needed.
        with m.If(en):
            m.d.sync += self.output.valid.eq(valid_b & last_b)
            with m.If(valid_b):
                for c, p in enumerate(p_b):
                    acc = Signal(self.out_shape, name=f"acc{c}")
                    nxt = Signal(self.out_shape, name=f"acc{c}_next")
                    m.d.comb += nxt.eq((acc << 1) + p)
                    m.d.sync += acc.eq(Mux(last_b, 0, nxt))
                    with m.If(last_b):
                        m.d.sync += self.output.payload.y[c].eq(nxt)
        return m

    def _calibration(self, m):
        """The calibration cells, the comparators and each bit-column's offset code (a
        register: the residual's whole codes, ``offset_codes``). Returns the codes by
        bit-column ``k = c * w_bits + b``."""
        cal, R = self.calibration, self.calibration.rows
        bits = self.cols * self.w_bits
        port = self.cal
        cells = [Signal(bits, name=f"cal_row{r}") for r in range(R)]
        with m.If(port.en):
            for r, row in enumerate(cells):
                with m.If(port.row == r):
                    if bits <= 32:
                        m.d.sync += row.eq(port.data[:bits])
                    else:
                        m.d.sync += row.word_select(port.word, 32).eq(port.data)
        step, half = cal.step_fx, R // 2
        top = (1 << (OFFSET_WIDTH - 1)) + step * half
        codes, high = [], []
        for k in range(bits):
            n = Signal(range(R + 1), name=f"cal_n{k}")
            m.d.comb += n.eq(tree_sum(row[k] for row in cells))
            # residual = theta + step * (n - R/2), in units of 2**-F LSB.
            res = Signal(range(-top, top), name=f"cal_res{k}")
            m.d.comb += res.eq(self.theta[k] + (n * step) - step * half)
            code = Signal(range(-(top >> OFFSET_FRAC_BITS) - 1, (top >> OFFSET_FRAC_BITS) + 2),
                          name=f"cal_code{k}")
            m.d.sync += code.eq((res + (1 << (OFFSET_FRAC_BITS - 1))) >> OFFSET_FRAC_BITS)
            codes.append(code)
            high.append(res > 0)
        with m.If(self.cal_eval):
            m.d.sync += self.compare.eq(Cat(*high))
        return codes

    def _pair_fields(self, active, p, c):
        cell = len(active[p]) // self.cols
        f = active[p][c * cell:(c + 1) * cell]
        Wb = self.w_bits
        return f[:Wb], f[Wb:2 * Wb], f[2 * Wb:]

    def _column_exact(self, m, x_a, active, c):
        Wb = self.w_bits
        terms = []
        for p in range(self.rows // 2):
            xe, xo = x_a[2 * p], x_a[2 * p + 1]
            we, wo, ws = self._pair_fields(active, p, c)
            if Wb == 1:
                # x_e * w_e + x_o * w_o + 4 for w = +-1: 2 to 6, from the stored bits.
                one = lambda b: Mux(b, 5, 3)  # noqa: E731  (4 + w)
                both = Mux(we[0], Mux(wo[0], 6, 4), Mux(wo[0], 4, 2))
                u = Mux(xo, Mux(xe, both, one(wo[0])), Mux(xe, one(we[0]), 4))
                width, offset = 3, 4
            else:
                # The pair sum in offset binary: t + 2**Wb, 0 to 2**(Wb+1) - 2, inverts t's
                # sign bit (free in the LUT) and removes all sign extension from the adders.
                t = Mux(xo, Mux(xe, ws.as_signed(), wo.as_signed()),
                        Mux(xe, we.as_signed(), 0))
                width, offset = Wb + 1, 1 << Wb
                u = t.as_unsigned()[:width] ^ (1 << Wb)
            terms.append(u)
        if self.style == "behavioral":
            return tree_sum(terms) - offset * len(terms)
        value, _, _ = _chain_sum(m, terms, width=width, offset=offset, name=f"c{c}")
        return value

    def _column_adc(self, m, x_a, active, c, nx_a):
        Wb = self.w_bits
        cmax = (1 << self.adc_bits) - 1
        codes = None if self.adc_offsets is None else offset_codes(self.adc_offsets)
        clipped = []
        for b in range(Wb):
            terms = []
            for p in range(self.rows // 2):
                xe, xo = x_a[2 * p], x_a[2 * p + 1]
                we, wo, _ = self._pair_fields(active, p, c)
                terms.append((xe & we[b]) + (xo & wo[b]))
            if self.style == "behavioral":
                count = tree_sum(terms)
            else:
                count, _, _ = _chain_sum(m, terms, width=2, offset=0, name=f"c{c}_b{b}")
            clip = Signal(range(cmax + 1), name=f"c{c}_adc{b}")
            if self._codes is not None:
                # The calibrated device's residual offset, a run-time code (_calibration).
                code = self._codes[c * Wb + b]
                v = Signal(signed(max(len(code), self.rows.bit_length() + 1) + 1),
                           name=f"c{c}_off{b}")
                m.d.comb += v.eq(count + code)
                m.d.comb += clip.eq(Mux(v < 0, 0, Mux(v > cmax, cmax, v)))
                clipped.append(clip)
                continue
            d = 0 if codes is None else int(codes[c, b])
            if d:
                # The device's offset: a constant (rounded at elaboration) before the clip,
                # which now also clips at 0.
                v = Signal(Shape.cast(range(min(d, 0), self.rows + max(d, 0) + 1)),
                           name=f"c{c}_off{b}")
                m.d.comb += v.eq(count + d)
                m.d.comb += clip.eq(Mux(v < 0, 0, Mux(v > cmax, cmax, v)))
            else:
                m.d.comb += clip.eq(Mux(count > cmax, cmax, count))
            clipped.append(clip)
        if Wb == 1:
            return (clipped[0] << 1) - nx_a
        pos = tree_sum(clipped[b] << b for b in range(Wb - 1))
        return pos - (clipped[-1] << (Wb - 1))
