"""Per-column offset calibration with calibration rows, seed 002's binary search.

Every bit-column of a CIM device has a few extra **calibration rows** whose stored bits bias
the column when they are driven; the driver finds, for all bit-columns at once, the setting
that cancels the column's offset. ``docs/offsets.md`` states the model, the search and why it
runs in the driver over the bus rather than in the sequencer.

* :class:`CalibrationRows` is the design choice: ``rows`` cells per bit-column, each worth
  ``step`` LSB of the partial-sum ADC.
* :class:`OffsetArray` is the device as the driver sees it in calibration mode: it can write
  a calibration row of a macro and evaluate every bit-column's comparator; its analog offsets
  stay inside (:meth:`OffsetArray.residual` is for the golden model and the tests, never for
  the driver).
* :func:`calibrate` is the driver: the binary search and a range check, counting its array
  evaluations, row writes and bus words (:class:`CalibrationResult`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.arith import AdcOffsets, CalibrationRows

__all__ = ["BUS_READ_CYCLES", "BUS_WRITE_CYCLES", "BUS_WORD_BITS", "EVAL_CYCLES",
           "CalibrationRangeError",
           "CalibrationResult", "CalibrationRows", "OffsetArray", "calibrate"]

BUS_WORD_BITS = 32
"""A calibration row of a macro (``cols * w_bits`` bits) is written as 32-bit bus words, and
the comparators are read back alike."""
BUS_WRITE_CYCLES = 1
"""Bus cycles per written word: pipelined AHB-Lite writes with zero wait states
(:mod:`gateware.ahb`)."""
BUS_READ_CYCLES = 1
"""Bus cycles per read word: the ``CMP`` window is read in the data phase, no wait state."""
EVAL_CYCLES = 1
"""Bus cycles per array evaluation: the ``CTRL.CAL_EVAL`` write, in whose data phase every
comparator is latched (the next transfer reads them)."""


class CalibrationRangeError(ValueError):
    """Some bit-columns' offsets lie beyond what the calibration rows can cancel."""


class OffsetArray:
    """A device's bit-columns in calibration mode: offsets plus calibration rows.

    ``offsets`` (:class:`~contract.arith.AdcOffsets`, shape ``(macros, cols, w_bits)``) are the
    analog offsets; ``cal`` the calibration rows. The cells start cleared. The driver's two
    operations are :meth:`write_row` and :meth:`compare`; each counts what it costs.
    """

    def __init__(self, offsets: AdcOffsets, cal: CalibrationRows):
        if not isinstance(offsets, AdcOffsets):
            raise ValueError(f"offsets must be an AdcOffsets, not {type(offsets).__name__}")
        self._theta = offsets.values
        self.cal = cal
        self.shape = offsets.values.shape
        self.cells = np.zeros((*self.shape, cal.rows), dtype=bool)
        self.evaluations = 0
        self.row_writes = 0

    @property
    def macros(self) -> int:
        return self.shape[0]

    @property
    def row_words(self) -> int:
        """Bus words of one calibration row of one macro (every column and weight bit)."""
        return -(-self.shape[1] * self.shape[2] // BUS_WORD_BITS)

    def write_row(self, macro: int, row: int, bits: np.ndarray) -> None:
        """Store calibration row ``row`` of macro ``macro``: ``bits`` ``(cols, w_bits)``."""
        bits = np.asarray(bits)
        if bits.shape != self.shape[1:]:
            raise ValueError(f"a calibration row has shape (cols, w_bits) = {self.shape[1:]}, "
                             f"not {bits.shape}")
        if not (0 <= macro < self.macros and 0 <= row < self.cal.rows):
            raise ValueError(f"no calibration row {row} of macro {macro} (the device has "
                             f"{self.macros} macros of {self.cal.rows} calibration rows)")
        self.cells[macro, :, :, row] = bits.astype(bool)
        self.row_writes += 1

    def ones(self) -> np.ndarray:
        return self.cells.sum(axis=-1)

    def compare(self) -> np.ndarray:
        """One array evaluation: only the calibration rows are driven and every bit-column's
        comparator decides whether the column reads above its nominal level (offset plus
        bias > 0; seed 002's BL/BLB comparison). Returns bool ``(macros, cols, w_bits)``."""
        self.evaluations += 1
        return self._theta + self.cal.bias(self.ones()) > 0

    def residual(self) -> AdcOffsets:
        """What the device's ADCs see in inference: offset plus calibration bias. For the
        golden model and the RTL macro (its ``adc_offsets``), not for the driver."""
        return AdcOffsets(self._theta + self.cal.bias(self.ones()))


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate` found and what it cost."""

    ones: np.ndarray
    """Cells set per bit-column ``(macros, cols, w_bits)``."""
    out_of_range: np.ndarray
    """Bit-columns whose offset lies beyond the range (left at the extreme setting)."""
    evaluations: int
    """Array evaluations (each decides every bit-column of every macro at once)."""
    row_writes: int
    """Calibration rows written (one macro each)."""
    words_written: int
    words_read: int

    @property
    def cycles(self) -> int:
        """Bus and array cycles, a lower bound at the accelerator's clock: every written word
        :data:`BUS_WRITE_CYCLES`, read word :data:`BUS_READ_CYCLES`, evaluation
        :data:`EVAL_CYCLES` (what the RTL takes with the transfers back to back,
        ``sim.cal_pysim``); the MCU's own instructions
        between transfers are not counted."""
        return (self.words_written * BUS_WRITE_CYCLES + self.words_read * BUS_READ_CYCLES
                + self.evaluations * EVAL_CYCLES)


def _thermometer(ones: np.ndarray, rows: int) -> np.ndarray:
    """Cells ``(..., rows)``: the first ``ones`` of each bit-column set."""
    return np.arange(rows) < np.asarray(ones)[..., None]


def _store(array: OffsetArray, ones: np.ndarray) -> None:
    """Write the rows (of every macro) whose cells differ from the thermometer setting."""
    want = _thermometer(ones, array.cal.rows)
    for m in range(array.macros):
        for r in np.flatnonzero((want[m] != array.cells[m]).any(axis=(0, 1))):
            array.write_row(m, int(r), want[m, :, :, r])


def calibrate(array: OffsetArray, *, strict: bool = True) -> CalibrationResult:
    """Seed 002's binary search on every bit-column of ``array`` at once.

    Start with half the calibration cells of every bit-column set; evaluate; where the
    comparator reads high clear ``rows / 4`` cells, elsewhere set ``rows / 4`` more; repeat,
    halving the adjustment, until one cell was adjusted. That takes ``log2(rows) - 1``
    evaluations and leaves every in-range offset within one ``step`` of zero.

    Then a range check: a bit-column whose decisions all went one way is evaluated once more
    at the extreme setting (all cells clear, or all set); if the comparator still reads the
    same way, its offset is beyond the range. Such columns keep the extreme setting (the
    closest the rows get); with ``strict`` :class:`CalibrationRangeError` names them.
    Cells are stored as a thermometer code and only changed rows are rewritten.
    """
    cal = array.cal
    ev0, rw0 = array.evaluations, array.row_writes
    ones = np.full(array.shape, cal.rows // 2, dtype=np.int64)
    _store(array, ones)
    all_high = np.ones(array.shape, dtype=bool)
    all_low = np.ones(array.shape, dtype=bool)
    for k in cal.steps:
        high = array.compare()
        all_high &= high
        all_low &= ~high
        ones = np.where(high, ones - k, ones + k)
        _store(array, ones)
    evaluations = array.evaluations - ev0
    out = np.zeros(array.shape, dtype=bool)
    if all_high.any() or all_low.any():
        probe = np.where(all_high, 0, np.where(all_low, cal.rows, ones))
        _store(array, probe)
        high = array.compare()
        evaluations += 1
        out = (all_high & high) | (all_low & ~high)
        ones = np.where(out, probe, ones)
        _store(array, ones)
    row_writes = array.row_writes - rw0
    result = CalibrationResult(
        ones=ones, out_of_range=out, evaluations=evaluations, row_writes=row_writes,
        words_written=row_writes * array.row_words,
        words_read=evaluations * array.macros * array.row_words)
    if strict and out.any():
        where = [tuple(int(i) for i in ix) for ix in np.argwhere(out)[:5]]
        raise CalibrationRangeError(
            f"{int(out.sum())} of {out.size} bit-columns have offsets beyond the calibration "
            f"range ({-cal.range_lsb:g}, {cal.range_lsb:g}] LSB ({cal.rows} rows of "
            f"{cal.step:g} LSB), e.g. (macro, column, weight bit) {where}: use more rows or a "
            "larger step")
    return result
