"""Im2col: an image-buffer slot into the activation buffer as ``C * K * K`` lanes per pixel."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from contract.config import HwConfig

from ..image import image_read_signature
from .layer import descriptor_layout
from .writer import write_layout

__all__ = ["Im2col", "ROW_LAND"]

ROW_LAND = 1
"""Cycles per output row between the last row read and the first word written from the rows:
the image buffer's read latency (the last row lands in its register)."""

MAX_PADDING = 3
"""The descriptor's largest ``padding``: the row registers hold that many bytes on the left."""


class Im2col(wiring.Component):
    """Runs an im2col layer (descriptor ``op`` 2, :func:`contract.program.im2col_lanes`).

    Per output row ``oy`` it reads the ``C * k`` image rows it needs (channel ``c``, ``iy =
    oy * stride - padding + kh``), one per cycle, into row registers ``(c, kh)`` of
    ``image_size + 3`` bytes: zero when ``iy`` is outside the image, bytes at ``x >= W``
    zeroed and every byte cut to ``in_bits``, stored shifted left by ``padding`` bytes so
    that byte ``kw`` of a register is column ``kw - padding``. Then, for each output pixel
    ``ox``, it writes the pixel's ``G * S`` words (``S = ceil(in_bits / a_bits)``) one per
    cycle, in the buffer's order (``out_base + ((oy * Wo + ox) * G + g) * S + s``, so the
    address just counts): lane ``(c * K + kh) * K + kw`` of group ``g`` is slice ``s`` of byte
    ``kw`` of register ``(c, kh)`` (zero for ``kw``, ``kh >= kernel`` or ``c >= C``, whose
    registers are never loaded), and then shifts every register right by ``stride``
    bytes. The lane wiring is fixed; a lane picks among its ``G`` candidate bytes, and the
    bytes of a register never move except by the stride, so there are no wide byte muxes.

    Cost: ``image_channels * K`` registers of ``image_size + 3`` bytes (``default``: 21 of 35
    bytes, 5.9 k flip-flops), each bit a 3:1 multiplexer (load, shift by 1 or 2 bytes, hold),
    and one ``G``-to-1 byte mux per lane (``default``: 3 candidates). Yosys ``synth_xilinx``
    of the unit with its :class:`~gateware.image.ImageBuffer` on ``default``, flattened
    together: 6.2 k flip-flops, 13 k LUTs, 4 RAMB36; as a module of its own in the whole
    design's hierarchical estimate (``build.py --estimate``, ``docs/build.md``): 27.4 k LUTs
    and 6.2 k flip-flops (1.6 % of the XCVU13P's LUTs).

    Latency: ``start`` in cycle ``n`` reads the first row in ``n + 1``; each output row takes
    ``C * k`` reads, :data:`ROW_LAND` cycle, then ``Wo * G * S`` words, one per cycle, each
    written in the cycle after it is formed; the last one with ``done``, ``n + Ho * (C * k +
    ROW_LAND + Wo * G * S) + 1`` (:func:`compiler.cycles.im2col_cycles`).

    Parameters
    ----------
    config : HwConfig
        Rows, ``a_bits`` and the image buffer (``image_channels > 0``).
    addr_width : int
        Bits of an activation-buffer bank offset.

    Members
    -------
    start : ``In(1)``
        Pulse: run the layer ``desc`` (held from this cycle to ``done``) on image ``slot``.
    desc : ``In(descriptor_layout())``
    slot : ``In(1)``
        The image-buffer slot (held while busy).
    image : ``Out(image_read_signature(config))``
        Row reads of the image buffer.
    write : ``Out(stream.Signature(write_layout(...), always_ready=True))``
        Buffer writes, in ``bank``.
    bank : ``Out(1)``
    busy : ``Out(1)``
        From ``start`` to ``done``: the buffer's write port is the unit's.
    done : ``Out(1)``
        The layer's last word is written this cycle.
    """

    def __init__(self, *, config: HwConfig, addr_width: int):
        if not isinstance(config, HwConfig) or not config.image_channels:
            raise ValueError(f"The im2col unit needs a configuration with image_channels > 0, "
                             f"not {config!r}")
        self.config, self.addr_width = config, addr_width
        R, ab = config.rows, config.a_bits
        super().__init__({
            "start": In(1), "desc": In(descriptor_layout()), "slot": In(1),
            "image": Out(image_read_signature(config)),
            "write": Out(stream.Signature(write_layout(rows=R, a_bits=ab,
                                                       addr_width=addr_width),
                                          always_ready=True)),
            "bank": Out(1), "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, baw = self.config, self.addr_width
        R, ab, K, Cm = cfg.rows, cfg.a_bits, cfg.im2col_kernel, cfg.image_channels
        size, G_max = cfg.image_size, cfg.image_groups
        d = self.desc
        step = Mux(d.stride == 2, 2, 1)
        S = Signal(4)
        m.d.comb += S.eq((d.in_bits + ab - 1) >> exact_log2(ab))
        regs = [Signal(8 * (size + MAX_PADDING), name=f"row{i}") for i in range(Cm * K)]

        run, loading, landing = Signal(), Signal(), Signal()
        # Up to size + 2 * MAX_PADDING output rows and columns (k = 1 on padding 3).
        oy, ox = (Signal(range(size + 2 * MAX_PADDING + 1)) for _ in range(2))
        lc, lkh = Signal(range(Cm + 1)), Signal(range(K + 1))
        g, sl = Signal(range(G_max + 1)), Signal(4)
        out_word = Signal(baw)

        # Loads: row (lc, lkh) of output row oy; one cycle later it lands in its register.
        iy = Signal(signed(ceil_log2(2 * (size + 2 * MAX_PADDING + 1)) + 1))
        m.d.comb += iy.eq(oy * step - d.padding + lkh)
        rd = self.image
        m.d.comb += [rd.addr.eq(self.slot * cfg.image_slot_rows + lc * size + iy),
                     rd.en.eq(loading)]
        land, inside = Signal(), Signal()
        idx = Signal(range(Cm * K))
        m.d.sync += [land.eq(loading), inside.eq((iy >= 0) & (iy < d.in_height)),
                     idx.eq(lc * K + lkh)]
        cut = Signal(8)         # the bits of an in_bits pixel
        m.d.comb += cut.eq((Const(1, 9) << d.in_bits) - 1)
        row = Cat(*[Mux(x < d.in_width, rd.data[8 * x:8 * x + 8] & cut, 0)
                    for x in range(size)])
        shifted = Signal(len(regs[0]))
        m.d.comb += shifted.eq(Mux(inside, Array(row << (8 * p) for p in range(4))[d.padding],
                                   0))

        # The word of (g, sl) from the registers; lanes past the image's are constant zero,
        # those of c >= C, kh >= k or kw >= k are masked (their registers are never loaded).
        kw_ok = [kw < d.kernel for kw in range(K)]
        c_ok = [c < d.in_channels for c in range(Cm)]
        lanes = []
        for r in range(R):
            cands = []
            for gg in range(G_max):
                L = gg * R + r
                if L < Cm * K * K:
                    c, rest = divmod(L, K * K)
                    kh, kw = divmod(rest, K)
                    cands.append(Mux(kw_ok[kw] & kw_ok[kh] & c_ok[c],
                                     regs[c * K + kh][8 * kw:8 * kw + 8], 0))
                else:
                    cands.append(Const(0, 8))
            byte = Signal(8, name=f"lane{r}")
            m.d.comb += byte.eq(Array(cands)[g])
            lanes.append(byte.word_select(sl, ab) if ab < 8 else byte)
        word = Cat(*lanes)

        last_word = (g + 1 == d.out_groups) & (sl + 1 == S)
        last_px = last_word & (ox + 1 == d.out_width)
        w = self.write
        end = Signal()
        m.d.sync += [w.valid.eq(run & ~loading & ~landing), w.payload.word.eq(word),
                     w.payload.addr.eq(out_word), end.eq(run & ~loading & ~landing & last_px
                                                         & (oy + 1 == d.out_height))]
        m.d.comb += [w.payload.mask.eq((1 << R) - 1), self.bank.eq(d.out_base[baw]),
                     self.done.eq(end), self.busy.eq(run | w.valid)]

        with m.If(land):
            for i, reg in enumerate(regs):
                with m.If(idx == i):
                    m.d.sync += reg.eq(shifted)
        with m.If(run):
            with m.If(loading):
                with m.If(lkh + 1 != d.kernel):
                    m.d.sync += lkh.eq(lkh + 1)
                with m.Else():
                    m.d.sync += lkh.eq(0)
                    with m.If(lc + 1 != d.in_channels):
                        m.d.sync += lc.eq(lc + 1)
                    with m.Else():
                        m.d.sync += [lc.eq(0), loading.eq(0), landing.eq(1)]
            with m.Elif(landing):
                m.d.sync += landing.eq(0)
            with m.Else():
                m.d.sync += [out_word.eq(out_word + 1), sl.eq(sl + 1)]
                with m.If(sl + 1 == S):
                    m.d.sync += [sl.eq(0), g.eq(g + 1)]
                    with m.If(g + 1 == d.out_groups):
                        # The pixel is written: the next one is stride bytes on.
                        m.d.sync += [g.eq(0), ox.eq(ox + 1)]
                        # A 2:1 multiplexer per bit (a shift by step * 8 would be a
                        # barrel shifter to the synthesizer).
                        m.d.sync += [reg.eq(Mux(d.stride == 2, reg >> 16, reg >> 8))
                                     for reg in regs]
                        with m.If(last_px):
                            m.d.sync += [ox.eq(0), oy.eq(oy + 1), loading.eq(1)]
                            with m.If(oy + 1 == d.out_height):
                                m.d.sync += [run.eq(0), loading.eq(0)]
        with m.If(self.start):
            m.d.sync += [run.eq(1), loading.eq(1), landing.eq(0), oy.eq(0), ox.eq(0),
                         lc.eq(0), lkh.eq(0), g.eq(0), sl.eq(0),
                         out_word.eq(d.out_base[:baw])]
        return m
