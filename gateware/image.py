"""The image buffer: two slots of an image's 8-bit pixels, written over the bus in 32-bit
words, read one whole row per cycle by the im2col unit (:mod:`gateware.sequencer.im2col`).

Layout (``HwConfig.image_slot_rows``): slot ``s``, channel ``c``, row ``y`` is memory row ``s *
image_slot_rows + c * image_size + y``, a row ``image_size`` bytes, pixel ``x`` at byte ``x``
(little-endian in 32-bit words). The bus sees the rows one after the other: byte ``row *
image_size + x`` of the ``IMAGE`` window (:func:`image_window_bytes`), so slot 1 starts at
byte :func:`image_slot_bytes`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from contract.config import HwConfig

from .ram import RAM

__all__ = ["ImageBuffer", "image_read_signature", "image_slot_bytes", "image_window_bytes"]


def image_slot_bytes(config: HwConfig) -> int:
    """Bus bytes of one slot (slot 1 starts at this byte of the window)."""
    return config.image_slot_rows * config.image_size


def image_window_bytes(config: HwConfig) -> int:
    """Bytes of the bus window over both slots: a power of two (``Window`` needs one)."""
    return 1 << ceil_log2(2 * image_slot_bytes(config))


def image_read_signature(config: HwConfig) -> wiring.Signature:
    """A row read (``addr``: memory row, ``en``; ``data``: the row's ``image_size`` bytes
    one cycle after ``en``), from the reader's side."""
    return wiring.Signature({"addr": Out(ceil_log2(2 * config.image_slot_rows)),
                             "en": Out(1), "data": In(8 * config.image_size)})


class ImageBuffer(wiring.Component):
    """The two image slots (module docstring) of ``config`` (``image_channels > 0``).

    Cost: ``2 * image_slot_rows * image_size`` bytes of block RAM (``default``: 2 x 128 rows
    of 32 bytes, 8 KiB), one write port of 32-bit lanes, one read port a row wide.

    Latency: a row read with ``en`` in cycle ``n`` is on ``data`` in ``n + 1`` (the word before
    a write to it in cycle ``n``).

    Members
    -------
    w_addr : ``In(...)``
        Bus word address in the window (byte address / 4); past the slots: ignored.
    w_data : ``In(32)``; w_en : ``In(1)``
    read : ``In(image_read_signature(config))``
    """

    def __init__(self, *, config: HwConfig):
        if not isinstance(config, HwConfig) or not config.image_channels:
            raise ValueError(f"An image buffer needs a configuration with image_channels > 0, "
                             f"not {config!r}")
        self.config = config
        self.rows = 2 * config.image_slot_rows
        self.row_words = config.image_size // 4
        super().__init__({
            "w_addr": In(ceil_log2(image_window_bytes(config)) - 2), "w_data": In(32),
            "w_en": In(1), "read": In(image_read_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        wpr = self.row_words
        m.submodules.ram = ram = RAM(width=32 * wpr, depth=self.rows, granularity=32,
                                     read_ports=1)
        # A division by a constant (a shift when image_size / 4 is a power of two).
        row, col = self.w_addr // wpr, self.w_addr % wpr
        m.d.comb += [ram.w_addr.eq(row), ram.w_data.eq(Cat(*[self.w_data] * wpr)),
                     ram.w_en.eq(Mux(self.w_en & (row < self.rows),
                                     Const(1, wpr) << col, 0))]
        wiring.connect(m, wiring.flipped(self.read), ram.reads[0])
        return m

