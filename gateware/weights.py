"""The weight store: a bank per pair of macros, each macro with its own read port
(:mod:`contract.program`, weight image: banks and rows)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.utils import exact_log2

from contract.config import HwConfig
from contract.program import beat_words

from .divide import div_const
from .ram import RAM

__all__ = ["WeightStore", "bank_images", "bank_shape", "weight_ram"]


def banks(config: HwConfig) -> int:
    """Banks of the weight store: one per pair of macros (the last one alone when the count is
    odd)."""
    return -(-config.macros // 2)


def bank_images(config: HwConfig, words) -> list[list[int]]:
    """The weight image's 32-bit ``words`` (from image word 0) split per bank, as each bank's
    beats (``beat_words`` words each): image tile ``n`` is macro ``i = n mod M``'s tile of row
    ``r = n div M``, at tile ``2 * r + i mod 2`` of bank ``i div 2``."""
    bw, tw, M, wc = beat_words(config), config.tile_words, config.macros, config.write_cycles
    words = [int(w) for w in words]
    words += [0] * (-len(words) % tw)
    out = [[] for _ in range(banks(config))]
    for n in range(len(words) // tw):
        row, i = divmod(n, M)
        bank, at = out[i // 2], (2 * row + i % 2) * wc
        bank += [0] * (at + wc - len(bank))
        tile = words[n * tw:(n + 1) * tw]
        bank[at:at + wc] = [sum(w << (32 * k) for k, w in enumerate(tile[b:b + bw]))
                            for b in range(0, tw, bw)]
    return out


def bank_shape(config: HwConfig) -> tuple[int, int]:
    """``(width, depth)`` of one bank: a macro's write beat (``beat_words`` 32-bit words) by
    two macros' ``weight_rows`` tiles of ``write_cycles`` beats; 32-bit write lanes, two read
    ports, the first on the write's port (:class:`~gateware.ram.RAM`, ``shared``)."""
    return beat_words(config) * 32, 2 * config.weight_rows * config.write_cycles


def weight_ram(config: HwConfig, *, module: str | None = None, init=()) -> RAM:
    """One bank of ``config``'s weight store (:func:`bank_shape`); ``init``: its beats from
    beat 0 (:func:`bank_images`)."""
    width, depth = bank_shape(config)
    # UltraRAM: a bank's beat is as wide as the macro's write port (1,024 bits on `default`),
    # for which block RAM's 72-bit ports are the narrower choice (gateware/README.md).
    return RAM(width=width, depth=depth, granularity=32, read_ports=2, module=module,
               init=list(init), ram_style="ultra", shared=True)


class WeightStore(wiring.Component):
    """The weight store (module docstring): ``ceil(macros / 2)`` banks of two macros'
    ``weight_rows`` tiles each, one read port per macro.

    The bus writes 32-bit words at an image word address; the write is decoded into bank,
    beat and word lane (a division by the macro count, :mod:`gateware.divide`) in one register
    stage and lands in the bank one cycle after ``w_en``. Macro unit ``i`` reads through
    ``reads[i]`` a beat of its own tiles (``row * write_cycles + beat``): bank ``i div 2``,
    tile ``2 * row + i mod 2``, data the cycle after ``en``. Even macros read on the port the
    bus writes through (two ports per bank: one UltraRAM column serves two macros), so the
    bus writes only while the accelerator is idle (the ``WEIGHT`` window answers ERROR
    while busy), and a write lands before a START written after it can start a layer.

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
        self.banks += [weight_ram(config, module=module)
                       for _ in range(banks(config) - len(self.banks))]
        super().__init__({
            "w_addr": In(range(self.words)), "w_data": In(32), "w_en": In(1),
            "reads": In(self.banks[0].read_signature).array(config.macros),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        bw, M = beat_words(cfg), cfg.macros
        tsh, wsh = exact_log2(cfg.tile_words), exact_log2(bw)
        tile = self.w_addr[tsh:]
        macro = Signal(range(M))
        addr = Signal(self.banks[0].addr_width)
        lanes = Signal(bw)
        data = Signal(32)
        en = Signal()
        row = div_const(tile, M)
        i = tile - row * M
        m.d.sync += [macro.eq(i), addr.eq(Cat(self.w_addr[wsh:tsh], i[0], row)),
                     lanes.eq(Const(1, bw) << self.w_addr[:wsh] if wsh else 1),
                     data.eq(self.w_data), en.eq(self.w_en)]
        for b, ram in enumerate(self.banks):
            m.submodules[f"bank{b}"] = ram
            m.d.comb += [ram.w_addr.eq(addr), ram.w_data.eq(Cat(*[data] * bw)),
                         ram.w_en.eq(Mux(en & (macro[1:] == b), lanes, 0))]
        bsh = exact_log2(cfg.write_cycles)
        for i, port in enumerate(self.reads):
            ram_port = self.banks[i // 2].reads[i % 2]
            m.d.comb += [ram_port.addr.eq(Cat(port.addr[:bsh], Const(i % 2, 1),
                                              port.addr[bsh:])),
                         ram_port.en.eq(port.en), port.data.eq(ram_port.data)]
        return m
