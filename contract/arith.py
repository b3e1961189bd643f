"""The integer arithmetic that the network side and the hardware both implement.

The golden model (:mod:`model.golden`), the compiler's functional model and the gateware's
bit-exact ``model()`` methods all compute with these definitions; ``contract/README.md``
states the whole integer contract in prose. Pure NumPy: no PyTorch, no Amaranth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BIAS_BITS", "BIAS_LIMIT", "KERNELS", "LOGIT_BITS", "MAX_ACC_WIDTH", "MAX_CAL_ROWS",
    "MAX_PADDING", "MAX_SHIFT", "MULT_BITS", "OFFSET_FRAC_BITS", "OFFSET_WIDTH",
    "RES_MULT_BITS", "STRIDES", "VALUE_BITS", "AdcModel", "AdcOffsets", "CalibrationRows",
    "accumulator_width", "act_range", "adc_dot", "column_range", "datapath_model",
    "offset_codes", "out_size", "plane_range", "requantize", "signed_range", "signed_width",
    "weight_qmax", "weight_range",
]

# ----------------------------------------------------------------------------- field widths

MULT_BITS = 16
"""Width of the signed requantization multiplier ``M``."""

RES_MULT_BITS = 24
"""Width of the signed residual multiplier ``R``. ``M`` and ``R`` share the shift ``S``; the
residual factor can be hundreds of times the accumulator factor, so ``R`` gets the headroom
(24 x 8 bits still fits one DSP48E2 multiplier) and ``M`` keeps its full 16-bit precision."""

MAX_SHIFT = 40
"""Largest requantization shift ``S``; keeps ``y`` comfortably inside 64 bits."""

BIAS_LIMIT = 1 << 47
"""Requantization biases ``B`` are signed 48-bit (a DSP48E2 accumulator)."""

BIAS_BITS = BIAS_LIMIT.bit_length()
"""Width of the signed bias ``B`` (48: one DSP48E2 accumulator)."""

VALUE_BITS = 9
"""Width of the signed residual input and of the output values. Activations are at most 8 bits,
unsigned ``0..255`` or narrow signed ``-127..127``; signed 9 bits holds both, so a signed
shortcut output can feed the residual input unchanged and nobody has to reinterpret codes."""

MAX_ACC_WIDTH = 48
"""Beyond 48 bits ``y`` would leave int64 in :func:`datapath_model`; the golden model's
accumulators stay below 2**53 and real layers far below 2**32."""


# ----------------------------------------------------------------------------- geometry

KERNELS = (1, 3, 5, 7)
LOGIT_BITS = 32
"""Bits of a logit register (two's complement): a raw (classifier) layer's ``acc * M + B``
must fit (:func:`datapath_model` with ``raw``)."""
"""Kernel sizes the accelerator runs (odd, so a window has a centre)."""
STRIDES = (1, 2)
"""Strides the accelerator runs."""
MAX_PADDING = 3
"""Largest zero padding on each side (a 7 x 7 kernel's half width)."""


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output size of a convolution or pooling window along one axis:
    ``floor((size + 2 * padding - kernel) / stride) + 1`` (< 1: the window does not fit)."""
    return (size + 2 * padding - kernel) // stride + 1


# ----------------------------------------------------------------------------- value ranges

def weight_qmax(bits: int) -> int:
    """Largest weight magnitude on the integer grid (narrow range; 1 bit means +-1)."""
    return 1 if bits == 1 else (1 << (bits - 1)) - 1


def weight_range(w_bits: int) -> tuple[int, int]:
    """Smallest and largest weight: two's complement, or -1/+1 for ``w_bits == 1``."""
    if w_bits == 1:
        return -1, 1
    return -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1


def act_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range ``(lo, hi)`` of an activation: unsigned ``[0, 2**b - 1]`` or narrow
    signed ``[-(2**(b-1) - 1), 2**(b-1) - 1]``."""
    if signed:
        hi = (1 << (bits - 1)) - 1
        if hi < 1:
            raise ValueError("signed activations need at least 2 bits")
        return -hi, hi
    return 0, (1 << bits) - 1


def column_range(rows: int, w_bits: int, a_bits: int) -> tuple[int, int]:
    """Range of one column's result: a dot product of ``rows`` unsigned ``a_bits``
    activations with ``w_bits`` weights."""
    lo, hi = weight_range(w_bits)
    amax = (1 << a_bits) - 1
    return rows * lo * amax, rows * hi * amax


def plane_range(rows: int, w_bits: int) -> tuple[int, int]:
    """Range of one input bit-plane's column sum ``sum_r x_r * w_r`` (``x_r`` in {0, 1})."""
    lo, hi = weight_range(w_bits)
    return rows * lo, rows * hi


def signed_width(lo: int, hi: int) -> int:
    """Smallest width of a signed integer that holds every value in ``[lo, hi]``."""
    return 1 + max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length() if hi >= 0 else 0)


def accumulator_width(terms: int, w_bits: int, a_bits: int) -> int:
    """Accumulator width for a dot product of ``terms`` unsigned ``a_bits`` activations with
    signed ``w_bits`` weights (narrow range; 1 bit means +-1): the bound is
    ``terms * qmax(w) * (2**a_bits - 1)``, in either sign. Every partial sum over a subset of the
    terms obeys the same bound, so a running sum never leaves this width either."""
    if terms < 1:
        raise ValueError(f"Term count must be positive, not {terms}")
    qmax = weight_qmax(w_bits)
    bound = terms * qmax * ((1 << a_bits) - 1)
    return signed_width(-bound, bound)


def signed_range(width: int) -> tuple[int, int]:
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


# ----------------------------------------------------------------------------- rules


def requantize(acc, mult, bias, shift, lo, hi, res=None, res_mult=None) -> np.ndarray:
    """The requantization rule on int64 arrays laid out (N, C, ...)."""
    sh = (1, -1) + (1,) * (acc.ndim - 2)
    y = acc * mult.astype(np.int64).reshape(sh) + bias.astype(np.int64).reshape(sh)
    if res is not None:
        y = y + res.astype(np.int64) * res_mult.astype(np.int64).reshape(sh)
    y = (y + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(y, lo, hi)


def datapath_model(psum, first, last, m, b, r, res, *, lanes: int, acc_width: int,
                   psum_width: int, shift: int, out_bits: int, out_signed: bool,
                   has_residual: bool, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The accumulate-and-requantize rule of the post-array datapath, bit for bit, as
    :class:`gateware.datapath.Datapath` emits its results, in order.

    ``psum``, ``m``, ``b``, ``r``, ``res``: integer arrays ``(beats, lanes)``; ``first``,
    ``last``: ``(beats,)``. Returns ``(value, overflow)``: ``(results, lanes)`` int64 and
    ``(results,)`` bool, one row per ``last`` beat. Raises :class:`ValueError` for values
    that do not fit their fields and for illegal configurations.

    ``raw`` (the classifier, ``contract.program``): the value is ``acc * M + B`` itself
    (``shift`` and ``out_bits`` 0, no residual), and a value outside :data:`LOGIT_BITS`
    signed bits is an overflow too.
    """
    psum, m, b, r, res = (np.asarray(x, dtype=np.int64) for x in (psum, m, b, r, res))
    first = np.asarray(first, dtype=bool)
    last = np.asarray(last, dtype=bool)
    beats = len(first)
    for name, x, width in (("psum", psum, psum_width), ("m", m, MULT_BITS),
                           ("b", b, BIAS_BITS), ("r", r, RES_MULT_BITS),
                           ("res", res, VALUE_BITS)):
        if x.shape != (beats, lanes):
            raise ValueError(f"{name} must have shape {(beats, lanes)}, not {x.shape}")
        lo_, hi_ = signed_range(width)
        if x.size and (x.min() < lo_ or x.max() > hi_):
            raise ValueError(f"{name} values must fit signed {width} bits")
    if last.shape != (beats,):
        raise ValueError(f"last must have shape {(beats,)}, not {last.shape}")
    if raw:
        if shift or out_bits or has_residual:
            raise ValueError("a raw result has no shift, output bits or residual")
    elif not 1 <= shift <= MAX_SHIFT:
        raise ValueError(f"Shift must be between 1 and {MAX_SHIFT}, not {shift}")
    elif not 1 <= out_bits <= 8 or (out_signed and out_bits < 2):
        raise ValueError(f"Output bits must be between {2 if out_signed else 1} and 8, "
                         f"not {out_bits}")
    # Running sums restart at every ``first`` beat (before the first one, from the reset
    # value 0). Up to the first overflow the register equals the exact running sum, so the
    # sticky flag is "some exact running sum of this result left the range", and the value
    # is the exact total wrapped to acc_width bits, whatever wrapped in between.
    amin, amax = signed_range(acc_width)
    rows = np.flatnonzero(last)
    segment = np.cumsum(first)                   # segment of each beat, 0 before any first
    starts = np.concatenate([[0], np.flatnonzero(first)])
    running = np.cumsum(psum, axis=0)
    base = np.concatenate([np.zeros((1, lanes), np.int64), running])[starts]
    running = running - base[segment]
    bad = np.cumsum(((running < amin) | (running > amax)).any(axis=1))
    bad_before = np.concatenate([[0], bad])[starts]
    overflow = (bad - bad_before[segment])[rows] > 0
    acc = (running[rows] - amin) % (1 << acc_width) + amin
    y = acc * m[rows] + b[rows]
    if has_residual:
        y = y + res[rows] * r[rows]
    if raw:
        lo, hi = signed_range(LOGIT_BITS)
        return y, overflow | ((y < lo) | (y > hi)).any(axis=1)
    lo, hi = act_range(out_bits, out_signed)
    # The hardware's rounding: shift by S - 1, add one, drop one more bit.
    u = ((y >> (shift - 1)) + 1) >> 1
    return np.clip(u, lo, hi), overflow


OFFSET_FRAC_BITS = 8
"""Column offsets (:class:`AdcOffsets`) are fixed point, in units of ``2**-8`` LSB of the
partial-sum ADC: fine enough for a Gaussian spread of a fraction of an LSB, and an integer, so
the golden model and the RTL round them alike (:func:`offset_codes`)."""
OFFSET_WIDTH = 16
"""Bits of the accelerator's per-bit-column offset registers (signed, units of
``2**-OFFSET_FRAC_BITS`` LSB: offsets within +-128 LSB; ``HwConfig.offset_sigma``)."""


def offset_codes(offsets) -> np.ndarray:
    """The whole ADC codes a bit-column's analog offset adds to its count.

    ``offsets``: integers in units of ``2**-OFFSET_FRAC_BITS`` LSB. A count is an integer and
    the ADC's decision levels sit half an LSB either side of it, so an offset ``e`` moves the
    code by ``round(e)``, ties upwards: ``(e + 2**(F-1)) >> F``. Returns int64 of the same
    shape.
    """
    e = np.asarray(offsets)
    if not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"offsets must be integers (units of 2**-{OFFSET_FRAC_BITS} LSB), "
                         f"not {e.dtype}")
    return (e.astype(np.int64) + (1 << (OFFSET_FRAC_BITS - 1))) >> OFFSET_FRAC_BITS


@dataclass(frozen=True, eq=False)
class AdcOffsets:
    """The analog offsets of a device's partial-sum ADCs, one per bit-column.

    A column of ``w_bits``-bit weights is ``w_bits`` SRAM bit-columns, one per weight bit,
    each with its own comparator or ADC and so its own offset (seed 002: comparator
    mismatch). ``values[m, c, b]`` is the offset of macro ``m``, column ``c``, weight bit
    ``b``, in units of ``2**-OFFSET_FRAC_BITS`` LSB (int64); it adds ``offset_codes(values)``
    to every count that bit-column's ADC digitizes, before the ADC's clip to
    ``[0, 2**bits - 1]`` (:func:`adc_dot`). A calibrated device's values are its residual
    offsets (the analog offset plus its calibration rows' bias, ``model.calibration``).
    """

    values: np.ndarray

    def __post_init__(self):
        v = np.asarray(self.values)
        if v.ndim != 3 or 0 in v.shape:
            raise ValueError(f"offsets must have shape (macros, cols, w_bits), not {v.shape}")
        if not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"offsets must be integers (units of 2**-{OFFSET_FRAC_BITS} LSB),"
                             f" not {v.dtype}")
        v = v.astype(np.int64)
        v.flags.writeable = False
        object.__setattr__(self, "values", v)

    @classmethod
    def gaussian(cls, *, sigma: float, macros: int, cols: int, w_bits: int,
                 seed: int) -> AdcOffsets:
        """Offsets drawn from a normal distribution of standard deviation ``sigma`` LSB,
        rounded to the fixed-point grid; the same ``seed`` gives the same device."""
        if not (isinstance(sigma, (int, float)) and np.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"offset sigma must be a finite number of LSB >= 0, not {sigma!r}")
        for name, v in (("macros", macros), ("cols", cols), ("w_bits", w_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        rng = np.random.default_rng(seed)
        theta = rng.normal(0.0, 1.0, (macros, cols, w_bits)) * sigma
        return cls(np.round(theta * (1 << OFFSET_FRAC_BITS)).astype(np.int64))

    @property
    def macros(self) -> int:
        return self.values.shape[0]

    @property
    def cols(self) -> int:
        return self.values.shape[1]

    @property
    def w_bits(self) -> int:
        return self.values.shape[2]

    def lsb(self) -> np.ndarray:
        """The offsets in LSB (float64), for statistics and plots."""
        return self.values / (1 << OFFSET_FRAC_BITS)


MAX_CAL_ROWS = 64
"""Most calibration rows per bit-column (:class:`CalibrationRows`)."""


@dataclass(frozen=True)
class CalibrationRows:
    """The calibration rows of every bit-column.

    ``rows`` cells (a power of two, at least 4), each of which moves the column by ``step``
    LSB of the partial-sum ADC when its bit flips: seed 002 drives them on a word line of its
    own voltage, which sets the step, trading range for granularity. The bias of a setting
    with ``n`` cells set is ``step * (n - rows / 2)`` (a set cell discharges one bit line of
    the pair, a clear one the other, so half set is nominally no bias). The binary search
    cancels offsets in ``(-rows / 2 * step, rows / 2 * step]`` to within ``step``.
    """

    rows: int = 8
    step: float = 0.5

    def __post_init__(self):
        if (not isinstance(self.rows, int) or isinstance(self.rows, bool)
                or not 4 <= self.rows <= MAX_CAL_ROWS or self.rows & (self.rows - 1)):
            raise ValueError(f"calibration rows must be a power of two from 4 (the search "
                             f"halves an adjustment of rows / 4 down to one row) to "
                             f"{MAX_CAL_ROWS}, not {self.rows!r}")
        if not (isinstance(self.step, (int, float)) and math.isfinite(self.step)
                and self.step > 0):
            raise ValueError(f"calibration step must be a positive number of LSB, not "
                             f"{self.step!r}")
        if self.step_fx < 1:
            raise ValueError(f"calibration step {self.step} LSB is finer than the offset grid "
                             f"(2**-{OFFSET_FRAC_BITS} LSB)")

    @property
    def step_fx(self) -> int:
        """The step in units of ``2**-OFFSET_FRAC_BITS`` LSB."""
        return round(self.step * (1 << OFFSET_FRAC_BITS))

    @property
    def range_lsb(self) -> float:
        """Largest offset magnitude the search cancels: ``rows / 2 * step`` LSB."""
        return self.rows // 2 * self.step

    @property
    def steps(self) -> tuple[int, ...]:
        """The search's adjustments in cells: ``rows / 4, rows / 8, ..., 1``."""
        return tuple(self.rows >> k for k in range(2, self.rows.bit_length()))

    def bias(self, ones: np.ndarray) -> np.ndarray:
        """Bias (units of ``2**-OFFSET_FRAC_BITS`` LSB) of bit-columns with ``ones`` cells set."""
        return self.step_fx * (np.asarray(ones, dtype=np.int64) - self.rows // 2)


@dataclass(frozen=True)
class AdcModel:
    """A partial-sum ADC on the CIM array, for studying what an analog macro would cost.

    The array computes a conv as row tiles of ``rows`` im2col rows, in the order (kh, kw,
    group of ``rows`` input channels; the last group zero-filled), one input bit-plane at a
    time. For each tile, input bit-plane and weight bit, the count of rows where both bits are
    1 (the column current an ADC would digitise) saturates at ``2**bits - 1`` before the
    shift-and-add; for binary weights the count of rows with input 1 and stored +1 does.
    Only accelerator (``where == "accel"``) convs are affected: the MCU computes exactly.
    ``gateware.cim_macro.CIMMacro`` implements the same rule in RTL.

    ``offsets`` (optional) gives every bit-column of the device an offset
    (:class:`AdcOffsets`), added to each count before the clip, which then also clips at 0.
    Where a tile runs is the golden model's placement (``model.golden.conv_acc_adc``).
    """

    rows: int
    bits: int
    offsets: AdcOffsets | None = None

    def __post_init__(self):
        if self.rows < 1 or self.rows & (self.rows - 1):
            raise ValueError(f"ADC rows must be a power of two, not {self.rows}")
        if not 1 <= self.bits <= 16:
            raise ValueError(f"ADC bits must be 1..16, not {self.bits}")
        if self.offsets is not None and not isinstance(self.offsets, AdcOffsets):
            raise ValueError(f"offsets must be an AdcOffsets, not {type(self.offsets).__name__}")


def adc_dot(x: np.ndarray, w: np.ndarray, *, w_bits: int, a_bits: int,
            adc_bits: int | None, offsets=None) -> np.ndarray:
    """``x @ w`` for one row tile, computed per input bit-plane and weight bit with each
    partial count clipped to ``2**adc_bits - 1`` (exact when ``adc_bits`` is None).

    ``x``: unsigned ``a_bits``-bit integers ``(..., rows)``; ``w``: signed ``w_bits``-bit
    weights ``(rows, cols)`` (two's complement; +-1 for one bit). Returns int64 ``(..., cols)``.

    ``offsets`` (needs ``adc_bits``): the analog offset of every bit-column, integers
    ``(cols, w_bits)`` in units of ``2**-OFFSET_FRAC_BITS`` LSB. Each count ``p`` then reads
    ``clip(p + offset_codes(offset), 0, 2**adc_bits - 1)``; for binary weights the plane's
    popcount stays exact (a digital count, no ADC).
    """
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    rows, cols = w.shape
    if x.shape[-1] != rows:
        raise ValueError(f"x {x.shape} and w {w.shape} do not match: expected (..., rows) and "
                         "(rows, cols)")
    shift = None
    if offsets is not None:
        if adc_bits is None:
            raise ValueError("column offsets need an ADC (adc_bits), not an exact array")
        shift = offset_codes(offsets)
        if shift.shape != (cols, w_bits):
            raise ValueError(f"offsets must have shape (cols, w_bits) = {(cols, w_bits)}, not "
                             f"{shift.shape}")
        shift = shift.T.reshape(-1)                     # bit b of column c at b * cols + c
    cmax = None if adc_bits is None else (1 << adc_bits) - 1
    nb = 1 if w_bits == 1 else w_bits
    wb = (w > 0)[None] if w_bits == 1 else (w[None] >> np.arange(nb)[:, None, None]) & 1
    # Every value below is an integer of magnitude < (rows + |shift|) * 2**(w_bits + a_bits
    # + 1): float32 holds those exactly below 2**24 and runs the counts on BLAS.
    big = rows + (0 if shift is None or not shift.size else int(abs(shift).max()))
    bound = big * (2 << (w_bits + a_bits))
    ft = np.float32 if bound < 1 << 24 else np.float64
    wmat = wb.transpose(1, 0, 2).reshape(rows, nb * cols).astype(ft)
    lead = x.shape[:-1]
    xf = x.reshape(-1, rows)
    if a_bits <= 16 and xf.size and xf.min() >= 0 and xf.max() < 1 << 16:
        xf = xf.astype(np.uint16)                   # cheaper bit-plane extraction
    # Sum the planes' (clipped) counts per bit-column, then combine the weight bits once.
    acc = np.zeros((xf.shape[0], nb * cols), dtype=ft)
    ones = np.zeros((xf.shape[0], 1), dtype=ft)     # binary weights: sum_j 2**j n_j
    for j in range(a_bits):
        xj = ((xf >> j) & 1).astype(ft)
        counts = xj @ wmat                          # (M, w_bits * cols)
        if shift is not None:
            counts += shift
            np.clip(counts, 0, cmax, out=counts)
        elif cmax is not None:
            np.minimum(counts, cmax, out=counts)
        if j:
            counts *= ft(1 << j)
        acc += counts
        if w_bits == 1:
            ones += xj.sum(axis=-1, keepdims=True) * ft(1 << j)
    if w_bits == 1:
        y = 2 * acc - ones
    else:
        acc = acc.reshape(-1, nb, cols)
        y = sum(acc[:, b] * ft(1 << b) for b in range(nb - 1)) - acc[:, -1] * ft(1 << (nb - 1))
    return y.astype(np.int64).reshape(*lead, cols)
