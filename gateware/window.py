"""Window (im2col) address generation for k x k convolutions.

A conv layer's dot product over ``Cin * k * k`` inputs is split into *row tiles* of ``R``
inputs, one per CIM array pass. The im2col order is (kh, kw, channel group): one row tile is
``R`` consecutive input channels of one kernel tap, so a layer has ``k * k * G`` row tiles with
``G = ceil(Cin / R)`` (the compiler packs the weights in the same order, zero-filling the last
channel group of a tap when ``Cin`` is not a multiple of ``R``).

:class:`WindowGen` walks the output pixels of a layer and emits, per output pixel, the
activation-buffer address of each row tile. The buffer layout (see :mod:`gateware.actbuf`) keeps
one pixel's channel group per word, at ``base + (y * W + x) * G + cg``; padding pixels are not
stored, so the generator flags them (``pad``) and the reader substitutes zeros.

The walk needs no multiplier per beat: within one kernel row the ``k * G`` words of the window
are contiguous (the next tap of a row starts right after the last group of the previous one),
so the address steps by 1, and the other loops add a pitch computed once per layer (``W * G``
for the next kernel row, ``s * G`` for the next output pixel, ``s * W * G`` for the next output
row).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["KERNELS", "MAX_PADDING", "STRIDES", "WindowError", "WindowGen"]

KERNELS = (1, 3, 5, 7)
"""Kernel sizes the generator runs (1 and 3 for ResNet's middle section, 5 and 7 for conv1)."""
STRIDES = (1, 2)
MAX_PADDING = 3
"""Largest zero padding (the ``padding`` input is two bits wide: every value is legal)."""


class WindowError(enum.Enum, shape=2):
    """Why :class:`WindowGen` refused a layer (checked in the start cycle, in this order).

    ``NONE`` (0)
        No error: the layer ran.
    ``KERNEL`` (1)
        ``kernel`` is not 1, 3, 5 or 7.
    ``STRIDE`` (2)
        ``stride`` is not 1 or 2.
    ``SIZE`` (3)
        ``height``, ``width`` or ``groups`` is zero or above the generator's maximum, or the
        padded input is smaller than the kernel (no output pixel).
    """

    NONE = 0
    KERNEL = 1
    STRIDE = 2
    SIZE = 3


def _check_int(what, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer between {lo} and {hi}, not {value!r}")


class WindowGen(wiring.Component):
    """Row-tile address generator for one conv layer.

    Order of the beats: for each output pixel ``(oy, ox)`` in raster order, for each tap
    ``(kh, kw)`` in raster order, for each channel group ``cg``, one beat. The tap reads input
    pixel ``y = oy * s - p + kh``, ``x = ox * s - p + kw``; it is a padding tap (``pad = 1``,
    read zeros) when that pixel lies outside the ``H x W`` input. The output is
    ``Ho x Wo`` with ``Ho = (H + 2p - k) // s + 1`` (``Wo`` alike).

    Control
    -------
    The configuration inputs must be valid in the cycle ``start`` is asserted and stay stable
    until ``done``. ``start`` is ignored while ``busy``. In the start cycle the configuration is
    checked; a bad one sets ``error`` and ``error_code`` (:class:`WindowError`) and pulses
    ``done`` in the next cycle without emitting any beat, so a sequencer waiting for ``done``
    never hangs. ``error``/``error_code`` hold until the next ``start``.

    Latency and throughput
    ----------------------
    :attr:`latency` (2): with ``start`` asserted in cycle ``n``, the first beat is valid in
    cycle ``n + 2`` (one cycle computes ``W * G``, the only multiplication, and the limits; one
    computes the pitches and the first address). Then one beat per cycle while ``o_stream.ready``
    is high; a low ``ready`` holds the beat. ``done`` pulses in the cycle after the last beat was
    transferred, when ``busy`` falls; ``start`` may be asserted in that same cycle.

    Addresses are computed modulo ``2**addr_width`` (the compiler keeps tensors inside the
    buffer). A padding beat carries ``addr = 0``: the reader must not use it, and a fixed value
    keeps the model and traces simple.

    Parameters
    ----------
    addr_width : int
        Width of the activation-buffer word address, 1 to 32.
    max_size : int
        Largest input height and width, 1 to 4096.
    max_groups : int
        Largest number of channel groups ``G``, 1 to 4096.

    Members
    -------
    o_stream : ``Out(stream.Signature(beat_layout))``
        The beats: ``addr`` (word address, 0 for padding), ``pad``, ``first`` (first row tile
        of this output pixel), ``last`` (its last row tile), ``tap`` (``kh * k + kw``), ``cg``,
        ``oy``, ``ox``.
    height, width : ``In(range(max_size + 1))``
        Input size ``H``, ``W``.
    groups : ``In(range(max_groups + 1))``
        Channel groups ``G`` of the input (words per pixel).
    kernel : ``In(4)``
        Kernel size ``k``: 1, 3, 5 or 7.
    stride : ``In(2)``
        Stride ``s``: 1 or 2.
    padding : ``In(2)``
        Zero padding ``p``, 0 to 3, on all four sides.
    base : ``In(addr_width)``
        Word address of the input tensor's pixel (0, 0), group 0.
    start : ``In(1)``
        Start the layer (one-cycle pulse).
    busy : ``Out(1)``
        A layer is being set up or streamed.
    done : ``Out(1)``
        One-cycle pulse: the layer finished (or was rejected).
    error : ``Out(1)``
        The last start was rejected.
    error_code : ``Out(WindowError)``
        Why.
    """

    latency = 2

    def __init__(self, *, addr_width: int, max_size: int, max_groups: int):
        _check_int("Address width", addr_width, 1, 32)
        _check_int("Maximum size", max_size, 1, 4096)
        _check_int("Maximum channel groups", max_groups, 1, 4096)
        self.addr_width = addr_width
        self.max_size = max_size
        self.max_groups = max_groups
        # k = 1 with p = 3 gives the largest output: H + 6 pixels.
        self.max_out = max_size + 2 * MAX_PADDING
        self.beat_layout = data.StructLayout({
            "addr": unsigned(addr_width),
            "pad": 1,
            "first": 1,
            "last": 1,
            "tap": range(max(KERNELS) ** 2),
            "cg": range(max_groups),
            "oy": range(self.max_out),
            "ox": range(self.max_out),
        })
        super().__init__({
            "o_stream": Out(stream.Signature(self.beat_layout)),
            "height": In(range(max_size + 1)),
            "width": In(range(max_size + 1)),
            "groups": In(range(max_groups + 1)),
            "kernel": In(4),
            "stride": In(2),
            "padding": In(2),
            "base": In(addr_width),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(WindowError),
        })

    # ------------------------------------------------------------------ reference model

    def check(self, *, height, width, groups, kernel, stride, padding) -> WindowError:
        """The :class:`WindowError` the hardware reports for this configuration."""
        if kernel not in KERNELS:
            return WindowError.KERNEL
        if stride not in STRIDES:
            return WindowError.STRIDE
        if (not 1 <= height <= self.max_size or not 1 <= width <= self.max_size
                or not 1 <= groups <= self.max_groups
                or height + 2 * padding < kernel or width + 2 * padding < kernel):
            return WindowError.SIZE
        return WindowError.NONE

    def model(self, *, height, width, groups, kernel, stride, padding, base=0) -> list[dict]:
        """Bit-exact list of the beats (dicts of the :attr:`beat_layout` fields, ints) for one
        layer. Raises :class:`ValueError` for a configuration the hardware rejects, naming its
        :class:`WindowError`, and for values that do not fit the ports."""
        if not 0 <= padding <= MAX_PADDING:
            raise ValueError(f"Padding must be between 0 and {MAX_PADDING}, not {padding}")
        if not 0 <= base < 1 << self.addr_width:
            raise ValueError(f"Base address must fit {self.addr_width} bits, not {base}")
        code = self.check(height=height, width=width, groups=groups, kernel=kernel,
                          stride=stride, padding=padding)
        if code != WindowError.NONE:
            raise ValueError(f"The hardware rejects this layer: WindowError.{code.name}")
        k, s, p = kernel, stride, padding
        ho = (height + 2 * p - k) // s + 1
        wo = (width + 2 * p - k) // s + 1
        mask = (1 << self.addr_width) - 1
        beats = []
        for oy in range(ho):
            for ox in range(wo):
                for kh in range(k):
                    for kw in range(k):
                        y, x = oy * s - p + kh, ox * s - p + kw
                        pad = not (0 <= y < height and 0 <= x < width)
                        for cg in range(groups):
                            addr = 0 if pad else (base + (y * width + x) * groups + cg) & mask
                            beats.append(dict(
                                addr=addr, pad=int(pad),
                                first=int(kh == 0 and kw == 0 and cg == 0),
                                last=int(kh == k - 1 and kw == k - 1 and cg == groups - 1),
                                tap=kh * k + kw, cg=cg, oy=oy, ox=ox))
        return beats

    # ------------------------------------------------------------------ hardware

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width
        o = self.o_stream
        coord = range(-MAX_PADDING, self.max_size + MAX_PADDING)

        # Per-layer constants.
        km1 = Signal(range(max(KERNELS)))
        gm1 = Signal(range(self.max_groups))
        ho_last = Signal(range(self.max_out))
        wo_last = Signal(range(self.max_out))
        stride2 = Signal()
        wg = Signal(aw)      # W * G: one input row, in words
        sg = Signal(aw)      # s * G: next output pixel
        swg = Signal(aw)     # s * W * G: next output row

        # The walk: loop counters, the input pixel of the current tap, and the addresses at
        # which the current output row, output pixel, and kernel row start.
        oy = Signal(range(self.max_out))
        ox = Signal(range(self.max_out))
        kh = Signal(range(max(KERNELS)))
        kw = Signal(range(max(KERNELS)))
        cg = Signal(range(self.max_groups))
        tap = Signal(range(max(KERNELS) ** 2))
        y0 = Signal(coord)
        x0 = Signal(coord)
        y = Signal(coord)
        x = Signal(coord)
        addr = Signal(aw)
        row_addr = Signal(aw)
        pix_addr = Signal(aw)
        line_addr = Signal(aw)

        pad = Signal()
        m.d.comb += [
            pad.eq((y < 0) | (y >= self.height) | (x < 0) | (x >= self.width)),
            o.payload.addr.eq(Mux(pad, 0, addr)),
            o.payload.pad.eq(pad),
            o.payload.first.eq((tap == 0) & (cg == 0)),
            o.payload.last.eq((kh == km1) & (kw == km1) & (cg == gm1)),
            o.payload.tap.eq(tap),
            o.payload.cg.eq(cg),
            o.payload.oy.eq(oy),
            o.payload.ox.eq(ox),
        ]

        # Checked in the start cycle, on the inputs themselves.
        k, s, p = self.kernel, self.stride, self.padding
        h, w, g = self.height, self.width, self.groups
        code = Signal(WindowError)
        with m.If(~k[0] | k[3]):
            m.d.comb += code.eq(WindowError.KERNEL)
        with m.Elif((s != 1) & (s != 2)):
            m.d.comb += code.eq(WindowError.STRIDE)
        with m.Elif((h == 0) | (w == 0) | (g == 0)
                    | (h > self.max_size) | (w > self.max_size) | (g > self.max_groups)
                    | (h + 2 * p < k) | (w + 2 * p < k)):
            m.d.comb += code.eq(WindowError.SIZE)

        m.d.sync += self.done.eq(0)

        # The sums the walk steps to; each feeds several registers.
        next_row = Signal(aw)
        next_pix = Signal(aw)
        next_line = Signal(aw)
        m.d.comb += [
            next_row.eq(row_addr + wg),
            next_pix.eq(pix_addr + sg),
            next_line.eq(line_addr + swg),
        ]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        self.error.eq(code != WindowError.NONE),
                        self.error_code.eq(code),
                        km1.eq(k - 1),
                        gm1.eq(g - 1),
                        ho_last.eq((h + 2 * p - k) >> (s == 2)),
                        wo_last.eq((w + 2 * p - k) >> (s == 2)),
                        stride2.eq(s == 2),
                        # Once per layer; at most max_size x max_groups bits.
                        wg.eq(w * g),
                    ]
                    with m.If(code == WindowError.NONE):
                        m.next = "SETUP"
                    with m.Else():
                        m.d.sync += self.done.eq(1)

            with m.State("SETUP"):
                # Pixel (-p, -p) is p rows and p pixels before the base: p * (W * G + G)
                # words, p <= 3 as two shifted terms.
                pitch = Signal(aw)
                first = Signal(aw)
                m.d.comb += [
                    pitch.eq(wg + g),
                    first.eq(self.base - (Mux(p[0], pitch, 0) + Mux(p[1], pitch << 1, 0))),
                ]
                m.d.sync += [
                    sg.eq(Mux(stride2, g << 1, g)),
                    swg.eq(Mux(stride2, wg << 1, wg)),
                    oy.eq(0), ox.eq(0), kh.eq(0), kw.eq(0), cg.eq(0), tap.eq(0),
                    y0.eq(-p), x0.eq(-p), y.eq(-p), x.eq(-p),
                    addr.eq(first), row_addr.eq(first), pix_addr.eq(first),
                    line_addr.eq(first),
                ]
                m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += o.valid.eq(1)
                step = Mux(stride2, 2, 1)
                with m.If(o.ready):
                    with m.If(cg != gm1):
                        m.d.sync += [cg.eq(cg + 1), addr.eq(addr + 1)]
                    with m.Elif(kw != km1):
                        # The next tap's group 0 follows this tap's last group.
                        m.d.sync += [cg.eq(0), kw.eq(kw + 1), tap.eq(tap + 1), x.eq(x + 1),
                                     addr.eq(addr + 1)]
                    with m.Elif(kh != km1):
                        m.d.sync += [cg.eq(0), kw.eq(0), kh.eq(kh + 1), tap.eq(tap + 1),
                                     x.eq(x0), y.eq(y + 1),
                                     row_addr.eq(next_row), addr.eq(next_row)]
                    with m.Elif(ox != wo_last):
                        m.d.sync += [cg.eq(0), kw.eq(0), kh.eq(0), tap.eq(0),
                                     ox.eq(ox + 1), x0.eq(x0 + step), x.eq(x0 + step),
                                     y.eq(y0),
                                     pix_addr.eq(next_pix), row_addr.eq(next_pix),
                                     addr.eq(next_pix)]
                    with m.Elif(oy != ho_last):
                        m.d.sync += [cg.eq(0), kw.eq(0), kh.eq(0), tap.eq(0),
                                     ox.eq(0), x0.eq(-p), x.eq(-p),
                                     oy.eq(oy + 1), y0.eq(y0 + step), y.eq(y0 + step),
                                     line_addr.eq(next_line), pix_addr.eq(next_line),
                                     row_addr.eq(next_line), addr.eq(next_line)]
                    with m.Else():
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
