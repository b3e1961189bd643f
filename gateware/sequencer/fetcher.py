"""Descriptor fetcher: reads the layer program ahead of the layers and checks each
descriptor."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from contract.timing import CHECK_LATENCY

from ..divide import div_const
from .layer import (
    DESC_WORDS,
    MAX_SHIFT,
    OP_CONV,
    OP_IM2COL,
    OP_MAXPOOL,
    AccelError,
    desc_layout,
    descriptor_layout,
    in_slices,
    layer_planes,
    slices,
)

__all__ = ["Fetcher", "check"]


def check(m, d, *, rows, cols, a_bits, w_bits, planes, bank_words, max_size, max_groups,
          max_pixels, macros, weight_rows, rec_cap, image_channels=0, image_size=4,
          im2col_kernel=1):
    """The check code (an ``AccelError`` signal, registered) of descriptor view ``d``: in
    hardware, what :func:`contract.program.check_descriptor` states (op, kernel, stride,
    size, tiles, format, channels, addresses, in that order, a max-pooling descriptor by its
    own rules; ``tests/test_sequencer.py`` holds the two equal). Pipelined for the clock: the
    products it needs take three register stages and the code one more, so the code is
    ``d``'s :data:`CHECK_LATENCY` cycles after ``d`` last changed. ``planes``: the most
    bit-planes fed per pixel (``HwConfig.planes_max``); ``macros``; ``weight_rows``: weight
    rows the store holds (a layer takes ``J * ceil(T / macros)``); ``rec_cap``: parameter
    records; ``image_channels`` (0: no image buffer, no im2col), ``image_size``,
    ``im2col_kernel``: the image buffer's."""
    code = Signal(AccelError)
    R, C, BW = rows, cols, bank_words
    baw = ceil_log2(BW)
    out_sl, res_sl, _ = slices(m, d, a_bits, name="chk_")
    in_sl = in_slices(m, d, a_bits, name="chk_")
    pl = layer_planes(m, d, w_bits, name="chk_")
    w_max = 1 if w_bits == 1 else 2 * w_bits        # HwConfig.w_bits_max
    k, s, p = d.kernel, d.stride, d.padding
    H, W, G = d.in_height, d.in_width, d.in_groups
    T, J = d.row_tiles, d.col_tiles

    def reg(name, value, width):
        q = Signal(width, name=f"chk_{name}")
        m.d.sync += q.eq(value)
        return q
    # The products, one multiplier deep per stage (contract.program.tensor_words).
    hw, pixels = reg("hw", H * W, 24), reg("pixels", d.out_height * d.out_width, 24)
    kkg, jt = reg("kkg", k * k * G, 16), reg("jt", J * T, 24)
    per_col = reg("per_col", div_const(T + (macros - 1), macros), 17)
    hwg = reg("hwg", hw * G, 32)
    group_pixels = reg("group_pixels", pixels * d.out_groups, 32)
    rows_needed = reg("rows", J * per_col, 25)
    in_words = reg("in_words", hwg * in_sl, 32)
    out_words = reg("out_words", group_pixels * out_sl, 32)
    res_words = reg("res_words", group_pixels * res_sl, 32)
    code_q = Signal(AccelError, name="chk_code")
    m.d.sync += code_q.eq(code)

    def outside(base, words):
        return (base >= 2 * BW) | (base[:baw] + words > BW)
    ho_exp = Signal(16)
    wo_exp = Signal(16)
    m.d.comb += [ho_exp.eq(((H + 2 * p - k) >> (s == 2)) + 1),
                 wo_exp.eq(((W + 2 * p - k) >> (s == 2)) + 1)]
    pool = d.op == OP_MAXPOOL
    im2col = (d.op == OP_IM2COL) if image_channels else Const(0)
    raw = (d.op == OP_CONV) & d.raw
    nonconv = pool | im2col         # no tiles, parameters or residual
    reserved = Cat(*[d[name] for name, _ in d.shape() if name.startswith("_pad")])
    no_res = (d.res_bits == 0) & ~d.res_signed & (d.res_base == 0)
    channels = ((d.in_channels == 0) | (d.in_channels > d.in_groups * R)
                | (d.in_channels + R <= d.in_groups * R))
    K = im2col_kernel
    size = Mux(im2col, image_size, max_size)
    with m.If((d.op != OP_CONV) & ~pool & ~im2col):
        m.d.comb += code.eq(AccelError.OP)
    with m.Elif(Mux(pool, (k == 0) | (k > 7),
                    Mux(im2col, (k == 0) | (k > K), ~k[0] | (k > 7)))):
        m.d.comb += code.eq(AccelError.KERNEL)
    with m.Elif((s != 1) & (s != 2)):
        m.d.comb += code.eq(AccelError.STRIDE)
    with m.Elif((H == 0) | (W == 0) | (G == 0) | (H > size) | (W > size)
                | (G > max_groups) | (H + 2 * p < k) | (W + 2 * p < k)
                | (d.out_height != ho_exp) | (d.out_width != wo_exp)
                | (pixels > max_pixels) | (d.out_groups == 0)
                | (pool & (p >= k)) | (raw & ((d.out_height != 1) | (d.out_width != 1)))):
        m.d.comb += code.eq(AccelError.SIZE)
    with m.Elif(Mux(nonconv,
                    (J != 0) | (T != 0) | (d.weight_tiles != 0) | (d.weight_base != 0)
                    | (d.param_base != 0),
                    (J == 0) | (T == 0) | (raw & (J != 1))
                    | (T != Mux(d.w_bits > w_bits, 3 * kkg, kkg))
                    | (d.weight_tiles != jt)
                    | (d.out_channels == 0) | (d.out_channels > J * C)
                    | (d.out_channels + C <= J * C) | (d.out_groups * R < J * C)
                    | (d.weight_base + rows_needed > weight_rows)
                    | (d.param_base[:ceil_log2(C)] != 0)
                    | (d.param_base + J * C > rec_cap))):
        m.d.comb += code.eq(AccelError.TILES)
    with m.Elif(reserved.any() | Mux(
            nonconv,
            (d.shift != 0) | (d.in_bits == 0) | (d.in_bits > Mux(pool, a_bits, 8))
            | (d.out_bits != d.in_bits) | d.out_signed | ~d.relu | (d.w_bits != 0) | d.raw
            | d.has_residual | ~no_res,
            (d.in_bits == 0) | (d.in_bits > min(8, planes))
            | (d.w_bits == 0) | (d.w_bits > w_max) | (pl > planes)
            | (d.has_residual & ((d.res_bits == 0) | (d.res_bits > 8)
                                 | (d.res_signed & (d.res_bits < 2))))
            | (~d.has_residual & ~no_res)
            | Mux(raw,
                  (d.shift != 0) | (d.out_bits != 0) | d.out_signed | d.relu
                  | d.has_residual | ~d.last,
                  (d.shift == 0) | (d.shift > MAX_SHIFT) | (d.out_bits == 0)
                  | (d.out_bits > 8) | (d.out_signed & (d.out_bits < 2))
                  | (d.relu == d.out_signed)))):
        m.d.comb += code.eq(AccelError.FORMAT)
    with m.Elif(Mux(im2col,
                    (d.in_channels == 0) | (d.in_channels > image_channels)
                    | (d.in_groups != 1) | (d.out_channels != d.in_channels * (K * K))
                    | (d.out_groups != (d.out_channels + R - 1) // R),
                    channels | Mux(pool,
                                   (d.in_channels != d.out_channels)
                                   | (d.in_groups != d.out_groups),
                                   d.out_channels + R <= d.out_groups * R))):
        m.d.comb += code.eq(AccelError.CHANNELS)
    with m.Elif(Mux(im2col,
                    (d.in_base != 0) | outside(d.out_base, out_words),
                    outside(d.in_base, in_words)
                    | Mux(raw, d.out_base != 0,
                          outside(d.out_base, out_words)
                          | (d.has_residual & outside(d.res_base, res_words))
                          | (d.in_base[baw] == d.out_base[baw])
                          | (d.has_residual & (d.res_base < d.out_base + out_words)
                             & (d.out_base < d.res_base + res_words))))):
        m.d.comb += code.eq(AccelError.ADDRESS)
    return code_q


class Fetcher(wiring.Component):
    """Reads descriptors from program memory, from word 0 on, and offers each one, checked,
    on ``descriptors``; it stops after one with ``last`` or a failed check.

    A descriptor takes ``DESC_WORDS + 1`` cycles to read (synchronous memory: word ``w``
    arrives while word ``w + 1`` is addressed), is checked in ``CHECK_LATENCY`` more
    (:func:`check`, pipelined) and is offered from the next cycle, held until taken; the next
    one is read after that. With no ``last`` before the end of program memory
    the fetcher offers one more, with code ``PROGRAM``.

    **Prefetch.** Whenever it has nothing to do (after reset, or once a program's last
    descriptor is taken) the fetcher reads and checks descriptor 0 ahead of the next ``go``
    and holds it; a write to program memory (``prog_written``) discards it and the read
    starts over. A ``go`` that finds it ready offers it from the next cycle; one that comes
    while it is being read offers it when the read ends (``DESC_WORDS + 2 + CHECK_LATENCY``
    cycles after ``go`` at most).

    Parameters
    ----------
    prog_words : int
        Program memory words (at least ``DESC_WORDS``).
    rows, cols, a_bits, w_bits : int
        The configuration's (for the tile, bit-width and address checks).
    planes : int
        Most bit-planes fed per pixel (``HwConfig.planes_max``).
    bank_words : int
        Words of an activation-buffer bank (for the address checks).
    max_size, max_groups, max_pixels, macros, weight_rows, rec_cap : int
        Limits of the checks (:func:`check`).
    image_channels, image_size, im2col_kernel : int
        The image buffer's (``HwConfig``; ``image_channels`` 0: none).

    Members
    -------
    go : ``In(1)``
        Pulse: start from descriptor 0 (whatever the fetcher was doing).
    prog_written : ``In(1)``
        A word of program memory is written this cycle (the prefetched descriptor 0 is
        stale). Never together with ``go``.
    prog : ``In(ReadPort.Signature(addr_width=ceil_log2(prog_words), shape=32))``
        Read port of program memory (its ``addr`` is driven here).
    descriptors : ``Out(stream.Signature(desc_layout()))``
        Checked descriptors, with their :class:`AccelError` code. ``ready`` may be high
        without ``valid``.
    """

    def __init__(self, *, prog_words: int, rows: int, cols: int, a_bits: int, w_bits: int,
                 planes: int, bank_words: int, max_size: int, max_groups: int,
                 max_pixels: int, macros: int, weight_rows: int, rec_cap: int,
                 image_channels: int = 0,
                 image_size: int = 4, im2col_kernel: int = 1):
        if not isinstance(prog_words, int) or prog_words < DESC_WORDS:
            raise ValueError(f"Program words must be an integer of at least {DESC_WORDS}, "
                             f"not {prog_words!r}")
        self.prog_words = prog_words
        self.limits = dict(rows=rows, cols=cols, a_bits=a_bits, w_bits=w_bits, planes=planes,
                           bank_words=bank_words,
                           max_size=max_size, max_groups=max_groups,
                           max_pixels=max_pixels, macros=macros, weight_rows=weight_rows,
                           rec_cap=rec_cap,
                           image_channels=image_channels, image_size=image_size,
                           im2col_kernel=im2col_kernel)
        super().__init__({
            "go": In(1), "prog_written": In(1),
            "prog": In(ReadPort.Signature(addr_width=ceil_log2(prog_words), shape=32)),
            "descriptors": Out(stream.Signature(desc_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        desc = Signal(descriptor_layout())
        idx = Signal(range(self.prog_words + 1))   # program word address of desc
        cnt = Signal(range(DESC_WORDS + 2))
        busy = Signal()             # reading desc
        full = Signal()             # desc is offered
        err = Signal()              # ... and is past the end of program memory
        code = check(m, desc, **self.limits)
        out = self.descriptors
        m.d.comb += [self.prog.addr.eq(idx + cnt), out.valid.eq(full),
                     out.payload.desc.eq(desc),
                     out.payload.code.eq(Mux(err, AccelError.PROGRAM, code))]
        settle = Signal(range(CHECK_LATENCY + 1))     # cycles until the check's code is
        pre = Signal()              # the descriptor being read is a prefetch of descriptor 0
        primed = Signal()           # desc is descriptor 0, read and checked ahead of go
        with m.If(busy):
            m.d.sync += cnt.eq(cnt + 1)
            for w in range(DESC_WORDS):
                with m.If(cnt == w + 1):
                    m.d.sync += desc.as_value().word_select(w, 32).eq(self.prog.data)
            with m.If(cnt == DESC_WORDS):
                m.d.sync += [busy.eq(0), settle.eq(CHECK_LATENCY)]
        with m.If(settle != 0):
            m.d.sync += settle.eq(settle - 1)
            with m.If(settle == 1):
                m.d.sync += pre.eq(0)
                with m.If(pre):
                    m.d.sync += primed.eq(1)
                with m.Else():
                    m.d.sync += full.eq(1)
        with m.Elif(~busy & ~full & ~primed & ~self.prog_written):
            # Nothing to do: prefetch descriptor 0 for the next go.
            m.d.sync += [idx.eq(0), cnt.eq(0), busy.eq(1), pre.eq(1), err.eq(0)]
        with m.If(out.valid & out.ready):
            m.d.sync += full.eq(0)
            # After a last or a failed descriptor the program ends: fetch nothing more.
            with m.If(~desc.last & (out.payload.code == AccelError.NONE)):
                with m.If(idx + 2 * DESC_WORDS > self.prog_words):
                    m.d.sync += [full.eq(1), err.eq(1)]
                with m.Else():
                    m.d.sync += [idx.eq(idx + DESC_WORDS), cnt.eq(0), busy.eq(1)]
        with m.If(self.prog_written):
            # Program memory changed: the prefetch (done or under way) is stale.
            with m.If(pre | primed):
                m.d.sync += [busy.eq(0), settle.eq(0), pre.eq(0), primed.eq(0)]
        with m.Elif(self.go):
            m.d.sync += [idx.eq(0), err.eq(0), primed.eq(0), pre.eq(0)]
            with m.If(primed | (pre & (settle == 1))):     # ready, or ready this cycle
                m.d.sync += full.eq(1)
            with m.Elif(~pre):
                m.d.sync += [cnt.eq(0), busy.eq(1), full.eq(0), settle.eq(0)]
        return m
