"""Pooler: max pooling over the activation buffer, one output word per window."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layer import act_read_signature, descriptor_layout
from .writer import write_layout

__all__ = ["Pooler"]


class Pooler(wiring.Component):
    """Runs a max-pooling layer (descriptor ``op`` 1): for every output pixel in raster order
    and every channel group, it reads the ``k x k`` window's words, one per cycle, through a
    lockstep buffer port (zeros for the padding: the inputs are unsigned, so padding never
    wins, as in the golden model), takes the lane-wise maximum and writes the word at the
    compiler's address (``out_base + (y * Wo + x) * G + cg``). The input is one slice word per
    pixel and group (``in_bits <= a_bits``), the output the same tensor format.

    Latency: ``start`` in cycle ``n`` sets up in ``n + 1`` (``W * G``, registered: the read
    addresses are kept by additions), reads the first tap in ``n + 2`` and the last of ``P *
    G * k * k`` taps in ``n + 1 + P * G * k * k``; a window's word is written in the cycle after
    its last read, the last one with ``done`` (:data:`compiler.cycles.POOL_START`, ``POOL_END``).

    Members
    -------
    start : ``In(1)``
        Pulse: run the layer ``desc`` (held from this cycle to ``done``).
    desc : ``In(descriptor_layout())``
    act : ``Out(act_read_signature(...))``
        A lockstep read port (data one cycle after ``en``).
    write : ``Out(stream.Signature(write_layout(...), always_ready=True))``
        Buffer writes, in ``bank``.
    bank : ``Out(1)``
        The output tensor's bank.
    busy : ``Out(1)``
        From ``start`` to ``done``: the ports are the pooler's.
    done : ``Out(1)``
        The layer's last word is written this cycle.
    """

    def __init__(self, *, rows: int, a_bits: int, addr_width: int):
        self.rows, self.a_bits, self.addr_width = rows, a_bits, addr_width
        super().__init__({
            "start": In(1), "desc": In(descriptor_layout()),
            "act": Out(act_read_signature(rows=rows, a_bits=a_bits, addr_width=addr_width)),
            "write": Out(stream.Signature(write_layout(rows=rows, a_bits=a_bits,
                                                       addr_width=addr_width),
                                          always_ready=True)),
            "bank": Out(1), "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, ab, baw = self.rows, self.a_bits, self.addr_width
        d = self.desc
        k, s, p, G = d.kernel, d.stride, d.padding, d.in_groups
        # The walk: output pixel (oy, ox), group g, tap (kh, kw). Addresses are kept by
        # additions (no multiplier between a register and the buffer's address): ``corner``
        # is the word of the window's (0, 0) tap, ``row_corner`` that of the row's first
        # window, ``roff``/``toff`` the offsets of tap (kh, 0) and (kh, kw); ``wg`` = W * G.
        prep, run = Signal(), Signal()
        oy, ox = Signal(12), Signal(12)
        g = Signal(8)
        kh, kw = Signal(3), Signal(3)
        out_word = Signal(baw)      # output word of (oy, ox, g)
        iy0, ix0 = Signal(signed(15)), Signal(signed(15))     # the window's corner pixel
        wg = Signal(20)
        corner, row_corner = Signal(signed(26)), Signal(signed(26))
        roff, toff = Signal(24), Signal(24)
        step = Mux(s == 2, G << 1, G)
        m.d.sync += wg.eq(d.in_width * G)
        iy = iy0 + kh
        ix = ix0 + kw
        last_tap = (kh + 1 == k) & (kw + 1 == k)
        last_word = last_tap & (g + 1 == G) & (ox + 1 == d.out_width) & (oy + 1 == d.out_height)
        port = self.act
        m.d.comb += [
            port.addr.eq(Cat((corner + toff + g)[:baw], d.in_base[baw])),
            port.pad.eq((iy < 0) | (iy >= d.in_height) | (ix < 0) | (ix >= d.in_width)),
            port.en.eq(run)]
        # One cycle later: the word, and what the read was.
        first_q, last_q, end_q = Signal(), Signal(), Signal()
        addr_q = Signal(baw)
        m.d.sync += [first_q.eq(run & (kh == 0) & (kw == 0)), last_q.eq(run & last_tap),
                     end_q.eq(run & last_word), addr_q.eq(out_word)]
        acc = Signal(R * ab)
        word = port.data.as_value()
        best = Cat(*[Mux(first_q | (word[r * ab:(r + 1) * ab] > acc[r * ab:(r + 1) * ab]),
                         word[r * ab:(r + 1) * ab], acc[r * ab:(r + 1) * ab])
                     for r in range(R)])
        m.d.sync += acc.eq(best)
        w = self.write
        m.d.comb += [w.valid.eq(last_q), w.payload.addr.eq(addr_q),
                     w.payload.word.eq(best), w.payload.mask.eq((1 << R) - 1),
                     self.bank.eq(d.out_base[baw]), self.done.eq(end_q),
                     self.busy.eq(prep | run | first_q | last_q | end_q)]
        with m.If(run):
            with m.If(kw + 1 != k):
                m.d.sync += [kw.eq(kw + 1), toff.eq(toff + G)]
            with m.Elif(kh + 1 != k):
                m.d.sync += [kw.eq(0), kh.eq(kh + 1), roff.eq(roff + wg), toff.eq(roff + wg)]
            with m.Else():
                m.d.sync += [kw.eq(0), kh.eq(0), roff.eq(0), toff.eq(0),
                             out_word.eq(out_word + 1)]
                with m.If(g + 1 != G):
                    m.d.sync += g.eq(g + 1)
                with m.Elif(ox + 1 != d.out_width):
                    m.d.sync += [g.eq(0), ox.eq(ox + 1), ix0.eq(ix0 + Mux(s == 2, 2, 1)),
                                 corner.eq(corner + step)]
                with m.Elif(oy + 1 != d.out_height):
                    nxt = row_corner + Mux(s == 2, wg << 1, wg)
                    m.d.sync += [g.eq(0), ox.eq(0), oy.eq(oy + 1), ix0.eq(-p),
                                 iy0.eq(iy0 + Mux(s == 2, 2, 1)), row_corner.eq(nxt),
                                 corner.eq(nxt)]
                with m.Else():
                    m.d.sync += run.eq(0)
        # One cycle to set up (wg, from the descriptor held since start), then the walk.
        with m.If(prep):
            # in_base - p * (W + 1) * G: the padding is a few bits, so shifts and adds.
            first = d.in_base[:baw] - sum(Mux(p[b], (wg + G) << b, 0) for b in range(len(p)))
            m.d.sync += [prep.eq(0), run.eq(1), oy.eq(0), ox.eq(0), g.eq(0), kh.eq(0),
                         kw.eq(0), roff.eq(0), toff.eq(0), iy0.eq(-p), ix0.eq(-p),
                         corner.eq(first), row_corner.eq(first),
                         out_word.eq(d.out_base[:baw])]
        with m.If(self.start):
            m.d.sync += prep.eq(1)
        return m
