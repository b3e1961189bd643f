"""The weight store: one bank per macro, each with its own read port (:mod:`contract.program`,
weight image: banks and rows)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from contract.config import HwConfig
from contract.program import beat_words

from .divide import div_const
from .ram import RAM

__all__ = ["WeightStore", "bank_images", "bank_shape", "weight_ram"]


def bank_images(config: HwConfig, words) -> list[list[int]]:
    """The weight image's 32-bit ``words`` (from image word 0) split per bank, as each bank's
    beats (``beat_words`` words each): image tile ``n`` goes to bank ``n mod M``, bank tile
    ``n div M``."""
    bw, tw, M = beat_words(config), config.tile_words, config.macros
    words = [int(w) for w in words]
    words += [0] * (-len(words) % tw)
    banks = [[] for _ in range(M)]
    for n in range(len(words) // tw):
        tile = words[n * tw:(n + 1) * tw]
        banks[n % M] += [sum(w << (32 * i) for i, w in enumerate(tile[k:k + bw]))
                         for k in range(0, tw, bw)]
    return banks


def bank_shape(config: HwConfig) -> tuple[int, int]:
    """``(width, depth)`` of one bank: a macro's write beat (``beat_words`` 32-bit words) by
    ``weight_rows`` tiles of ``write_cycles`` beats; 32-bit write lanes, one read port."""
    return beat_words(config) * 32, config.weight_rows * config.write_cycles


def weight_ram(config: HwConfig, *, module: str | None = None, init=()) -> RAM:
    """One bank of ``config``'s weight store (:func:`bank_shape`); ``init``: its beats from
    beat 0 (:func:`bank_images`)."""
    width, depth = bank_shape(config)
    # UltraRAM: a bank's beat is as wide as the macro's write port (1,024 bits on `default`),
    # for which block RAM's 72-bit ports are the narrower choice (gateware/README.md).
    return RAM(width=width, depth=depth, granularity=32, read_ports=1, module=module,
               init=list(init), ram_style="ultra")


class WeightStore(wiring.Component):
    """The weight store (module docstring): ``macros`` banks of ``weight_rows`` tiles.

    The bus writes 32-bit words at an image word address; the write is decoded into bank,
    beat and word lane (a division by the macro count, :mod:`gateware.divide`) in one register
    stage and lands in the bank one cycle after ``w_en``. Macro unit ``i`` reads bank ``i``
    through ``reads[i]``: a beat address inside the bank (``row * write_cycles + beat``), data
    the cycle after ``en``.

    Parameters
    ----------
    config : HwConfig
    module : str or None
        The banks' Verilog module (:func:`weight_ram`); ``None``: Amaranth memories.
    init : sequence of int
        Simulation only: the weight image's 32-bit words from address 0, preloaded.

    Members
    -------
    w_addr : ``In(range(words))``
        Image word address (``words``: ``weight_rows * macros`` tiles).
    w_data : ``In(32)``
    w_en : ``In(1)``
    reads : ``In(read_signature).array(macros)``
        ``addr``, ``en`` in, ``data`` out: bank ``i``'s read port.
    """

    def __init__(self, *, config: HwConfig, module: str | None = None, init=()):
        if not isinstance(config, HwConfig):
            raise ValueError(f"Configuration must be a HwConfig, not {config!r}")
        self.config, self.module = config, module
        init = list(init)
        self.words = config.weight_store_words
        if len(init) > self.words:
            raise ValueError(f"{len(init)} initial words do not fit the weight store's "
                             f"{self.words}")
        self.banks = [weight_ram(config, module=module, init=image)
                      for image in bank_images(config, init)]
        super().__init__({
            "w_addr": In(range(self.words)), "w_data": In(32), "w_en": In(1),
            "reads": In(self.banks[0].read_signature).array(config.macros),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        bw, wc, M = beat_words(cfg), cfg.write_cycles, cfg.macros
        tsh, wsh = exact_log2(cfg.tile_words), exact_log2(bw)
        tile = self.w_addr[tsh:]
        bank = Signal(range(M))
        addr = Signal(self.banks[0].addr_width)
        lanes = Signal(bw)
        data = Signal(32)
        en = Signal()
        row = div_const(tile, M)
        m.d.sync += [bank.eq(tile - row * M),
                     addr.eq(Cat(self.w_addr[wsh:tsh], row) if tsh > wsh else row),
                     lanes.eq(Const(1, bw) << self.w_addr[:wsh] if wsh else 1),
                     data.eq(self.w_data), en.eq(self.w_en)]
        for i, ram in enumerate(self.banks):
            m.submodules[f"bank{i}"] = ram
            m.d.comb += [ram.w_addr.eq(addr), ram.w_data.eq(Cat(*[data] * bw)),
                         ram.w_en.eq(Mux(en & (bank == i), lanes, 0))]
            wiring.connect(m, wiring.flipped(self.reads[i]), ram.reads[0])
        return m
