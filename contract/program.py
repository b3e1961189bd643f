"""The program format: layer descriptors, parameter records, weight image, buffer layout.

What the compiler (:mod:`compiler`) writes and the sequencer (:mod:`gateware.accelerator`)
reads, declared once. The C header, ``docs/registers.md`` and the testbench constants are
generated from these declarations (:mod:`gateware.regmap`); the sequencer decodes a
descriptor through a layout generated from :data:`FIELDS`.

Layer descriptor (``FIELDS``, declared once)
--------------------------------------------
``DESC_WORDS`` 32-bit words per layer. The fields of ``FIELDS`` are packed in order, least
significant bits first, into consecutive words; a field that does not fit in what is left of
a word starts the next one (no field straddles two words). :data:`LAYOUT` lists every
field's word and bit offset; :meth:`Descriptor.pack` / :meth:`Descriptor.unpack` convert.

A descriptor's ``op`` is 0 for a convolution and 1 for a max pooling, which has no weight
tiles, parameter records or residual (those fields, ``shift`` and ``w_bits`` are zero) and
writes its output in its input's format (``out_bits = in_bits <= a_bits``, one slice word
per pixel and channel group, ``relu`` 1), with the same channels; :func:`check_descriptor`
states every set of rules.

**Im2col** (``op`` 2, on a configuration with an image buffer: ``image_channels`` > 0). The
input is the image in the buffer slot chosen at ``START`` (register ``IMAGE_SLOT``): channel
``c``, row ``y``, column ``x`` of an ``in_channels x in_height x in_width`` image of
``in_bits``-bit pixels (``in_base`` 0, ``in_groups`` 1). The output is a tensor of
``out_channels = in_channels * K * K`` lanes (``K = im2col_kernel``, whatever the layer's
``kernel``), ``in_bits`` bits, at ``out_base`` in the usual layout: lane ``(c * K + kh) * K
+ kw`` of output pixel ``(oy, ox)`` is the pixel at ``(c, oy * stride - padding + kh, ox *
stride - padding + kw)``, zero outside the image and for ``kh`` or ``kw`` past ``kernel``
(:func:`im2col_lanes`). The first convolution of a network then runs as a ``1 x 1``
convolution over those lanes (:func:`im2col_weight`): one vector per output pixel instead of
``k * k`` mostly empty ones. No tiles, parameters or residual; ``relu`` 1.

**Raw output** (``raw`` 1, a convolution, the program's last layer): the classifier. The
layer has one output pixel and one column tile (``out_channels <= cols``); each channel's
``y = acc * M + B`` is kept whole (``shift``, ``out_bits``, ``relu`` and ``out_signed`` are 0,
no residual) as a :data:`LOGIT_BITS`-bit logit (a value that does not fit stops the program
with ``OVERFLOW``) in the logit registers, and the index of the first largest logit becomes
the class (register ``RESULT``). ``out_base`` is 0: nothing is written to the buffer. The
compiler lowers a global average pooling and the linear classifier after it to one such
layer: the pooling's sum over the ``h x w`` map is a convolution whose window covers the
map, each tap weighted with the classifier's weights.

Weight image
------------
``R x C`` = ``rows x cols`` of the configuration, ``G = ceil(Cin / R)`` input channel groups,
``T = k * k * G`` row tiles, ``J = ceil(Cout / C)`` column tiles. Row tile
``t = (kh * k + kw) * G + cg`` holds, in tile
row ``r``, input channel ``cg * R + r`` of kernel tap ``(kh, kw)``; column ``c`` of column tile
``j`` is output channel ``j * C + c``. Rows past ``Cin`` and columns past ``Cout`` are
zero-filled (for binary weights the stored code 0, i.e. -1: those rows only ever see zero
activations, since a tensor's lanes past its channels are written as zeros, and those columns
are never written back).

**Wide weights.** A layer whose ``w_bits`` exceeds the array's ``wb`` (up to ``2 * wb``;
not on a binary array) is stored as three weight slices of ``k * k * G`` row tiles each,
``T = 3 * k * k * G``, row tile ``t = s * k * k * G + (kh * k + kw) * G + cg`` of slice
``s``: the high digit ``w >> wb`` (``s = 0``), the low digit in offset binary ``(w mod 2**wb)
- 2**(wb - 1)`` (``s = 1``), and ``+1`` on every row below ``Cin`` and column below ``Cout``
(``s = 2``). Every digit fits ``wb`` bits, and ``w = 2**wb * hi + lo + 2**(wb - 1)``, so the
layer's dot product is ``2**wb * (x . hi) + (x . lo) + 2**(wb - 1) * (x . 1)``: the macro
fed ``x`` shifted left by ``SLICE_SHIFTS`` ``(wb, 0, wb - 1)`` bit-planes on slice ``s``'s
tiles computes each term (:func:`planes`: ``in_bits + wb`` planes per pixel), and the
running sum over the row tiles adds them.

**Banks and rows.** The weight store keeps each macro's tiles apart (``M`` macros; a *bank*
here is one macro's tiles: :mod:`gateware.weights` puts two macros' banks in one two-port
memory), so that each macro reads through a port of its own: image tile ``n`` lives in bank
``n mod M``, at tile ``n div M`` of the bank.
``M`` consecutive image tiles, one per bank, make a *weight row*; a layer starts on a row
(``weight_base`` counts rows) and takes ``J * Q`` rows, ``Q = ceil(T / M)``, one per round of
the weight loader: row ``weight_base + j * Q + q`` holds, in bank ``i``, the layer's tile
``(j, (q * M + i) mod T)``. Macro ``i`` of round ``q`` of column tile ``j`` computes row tile
``q * M + i``, or, when ``T < M`` and the row tiles are copied over the macros, ``i mod T``:
either way the tile in its own bank. (Banks that no macro reads in a round hold tiles
``(q * M + i) mod T`` too, never read, so a layer's rows need nothing but its own tiles.)
A tile is ``rows // write_rows`` write beats (beat ``a`` holds
tile rows ``a * write_rows .. a * write_rows + write_rows - 1``), each beat the macro's write
``w`` field: element ``w[i][c]`` (row ``a * write_rows + i``, column ``c``) at bits
``[(i * C + c) * w_bits, (i * C + c + 1) * w_bits)`` as ``w_bits`` two's complement (binary:
1 = +1, 0 = -1). A beat is padded with zeros to ``BEAT_WORDS = ceil(write_rows * C * w_bits /
32)`` 32-bit words, word 0 holding bits 0..31. Image word of beat ``a`` of image tile ``n``,
word ``i``: ``(n * rows // write_rows + a) * BEAT_WORDS + i``. The store holds
``HwConfig.weight_rows`` rows (``weight_words`` words rounded down to whole rows).

Parameter image
---------------
One ``PARAM_WORDS`` (4) word record per output channel, declared in ``PARAM_FIELDS``: ``m``
(signed 16, bits 0..15), ``b`` (signed 48, bits 16..63), ``r`` (signed 24, bits 64..87;
0 without a residual), two's complement, little-endian words, bits 88..127 zero. Channel ``c``
of a layer is record ``param_base + c``; a layer has ``J * C`` records (past ``Cout``:
zeros), and ``param_base`` is a multiple of ``C``, so column tile ``j``'s records are row
``param_base / C + j`` of a memory ``C`` records wide.

Activation buffer
-----------------
The :class:`~gateware.actbuf.ActivationBuffer` has two banks of ``bank_words`` words; a
global word address is ``bank * bank_words + offset``. One word is one pixel's channel group
(``R`` lanes of ``a_bits``, :mod:`gateware.actbuf`). A tensor of ``out_bits`` wider than
``a_bits`` (a signed 8-bit shortcut output on a W4A4 array) takes ``S = ceil(out_bits /
a_bits)`` slice words per pixel and group, slice ``s`` holding bits ``[s * a_bits, (s + 1) *
a_bits)`` of the two's-complement value: pixel ``(y, x)``, group ``cg``, slice ``s`` is at
``base + ((y * W + x) * G + cg) * S + s`` (with ``S = 1`` this is
:func:`~gateware.actbuf.word_address`). Allocation: each layer writes its output to the
bank its main input is not in (ping-pong), first fit among tensors still alive (a residual
source stays alive up to its last reader; outputs the MCU reads stay to the end).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from .arith import KERNELS, LOGIT_BITS, MAX_SHIFT, MULT_BITS, RES_MULT_BITS, STRIDES
from .config import HwConfig

__all__ = ["DESC_WORDS", "FIELDS", "LAYOUT", "LOGIT_BITS", "OP_CONV", "OP_IM2COL", "OP_MAXPOOL",
           "PARAM_FIELDS",
           "PARAM_WORDS", "Descriptor",
           "ErrorCode", "Field", "beat_words", "check_descriptor", "check_words", "im2col_lanes",
           "im2col_weight", "layer_tiles",
           "pack_params", "pack_tiles", "planes", "reserved_bits", "slice_shifts", "slices",
           "tensor_words", "tile_words", "weight_rows", "layer_rows", "copies", "unpack_params",
           "unpack_tiles", "weight_digits", "weight_slices"]


@dataclass(frozen=True)
class Field:
    name: str
    bits: int
    meaning: str


FIELDS: tuple[Field, ...] = (
    Field("kernel", 3, "kernel size k: 1, 3, 5 or 7"),
    Field("stride", 2, "stride: 1 or 2"),
    Field("padding", 2, "zero padding on every side, 0..3"),
    Field("relu", 1, "1: clamp at 0 (unsigned output); always equal to not out_signed"),
    Field("out_signed", 1, "output is narrow signed (no ReLU)"),
    Field("out_bits", 4, "output bits, 1..8"),
    Field("shift", 6, "requantization shift S, 1..40"),
    Field("has_residual", 1, "add res * R before the shift"),
    Field("res_signed", 1, "the residual tensor is signed"),
    Field("res_bits", 4, "bits of the residual tensor (0 without one)"),
    Field("last", 1, "last layer of the program"),
    Field("in_bits", 4, "input activation bits, 1..8 (bit-planes fed per pixel: in_bits, plus "
          "the array's w_bits with wide weights, at most max_planes)"),
    Field("op", 2, "0: convolution; 1: max pooling (no weights, parameters or residual); 2: "
          "im2col of the image buffer's slot"),
    Field("in_height", 12, "input height H"),
    Field("in_width", 12, "input width W"),
    Field("in_groups", 8, "input channel groups G = ceil(Cin / rows)"),
    Field("out_height", 12, "output height Ho"),
    Field("out_width", 12, "output width Wo"),
    Field("out_groups", 8, "output channel groups ceil(Cout / rows)"),
    Field("in_channels", 12, "input channels Cin"),
    Field("out_channels", 12, "output channels Cout"),
    Field("col_tiles", 8, "column tiles J = ceil(Cout / cols)"),
    Field("row_tiles", 16, "row tiles T = k * k * G"),
    Field("weight_tiles", 16, "weight tiles of the layer, J * T"),
    Field("in_base", 24, "word address of the input tensor"),
    Field("w_bits", 4, "weight bits of the layer, 1..2 * the array's: wider ones are three "
          "weight slices"),
    Field("raw", 1, "1: the classifier: one pixel's results acc * M + B, unshifted, to the "
          "logit registers and the argmax (convolution only, the last layer)"),
    Field("out_base", 24, "word address of the output tensor"),
    Field("res_base", 24, "word address of the residual tensor (0 without one)"),
    Field("weight_base", 32, "first weight row of the layer (M image tiles, one per macro bank)"),
    Field("param_base", 24, "first parameter record of the layer"),
)


def _layout(flds) -> tuple[dict[str, tuple[int, int]], int]:
    out, word, bit = {}, 0, 0
    for f in flds:
        if bit + f.bits > 32:
            word, bit = word + 1, 0
        out[f.name] = (word, bit)
        bit += f.bits
    return out, word + 1


LAYOUT, DESC_WORDS = _layout(FIELDS)
"""``name -> (word, bit offset)`` of each descriptor field, and the words per descriptor."""


@dataclass(frozen=True)
class Descriptor:
    """One layer of the program; one attribute per entry of :data:`FIELDS`."""

    kernel: int
    stride: int
    padding: int
    relu: int
    out_signed: int
    out_bits: int
    shift: int
    has_residual: int
    res_signed: int
    res_bits: int
    last: int
    in_bits: int
    op: int
    in_height: int
    in_width: int
    in_groups: int
    out_height: int
    out_width: int
    out_groups: int
    in_channels: int
    out_channels: int
    col_tiles: int
    row_tiles: int
    weight_tiles: int
    in_base: int
    w_bits: int
    raw: int
    out_base: int
    res_base: int
    weight_base: int
    param_base: int

    def pack(self) -> list[int]:
        """The descriptor as ``DESC_WORDS`` 32-bit words."""
        words = [0] * DESC_WORDS
        for f in FIELDS:
            v = getattr(self, f.name)
            if not isinstance(v, int) or not 0 <= v < 1 << f.bits:
                raise ValueError(f"descriptor field {f.name}={v!r} does not fit {f.bits} bits")
            w, b = LAYOUT[f.name]
            words[w] |= v << b
        return words

    @classmethod
    def unpack(cls, words) -> Descriptor:
        words = [int(w) for w in words]
        if len(words) != DESC_WORDS:
            raise ValueError(f"a descriptor is {DESC_WORDS} words, not {len(words)}")
        vals = {}
        for f in FIELDS:
            w, b = LAYOUT[f.name]
            vals[f.name] = (words[w] >> b) & ((1 << f.bits) - 1)
        return cls(**vals)


assert [f.name for f in fields(Descriptor)] == [f.name for f in FIELDS]

PARAM_FIELDS: tuple[Field, ...] = (
    Field("m", MULT_BITS, "requantization multiplier M (signed)"),
    Field("b", 48, "bias B (signed)"),
    Field("r", RES_MULT_BITS, "residual multiplier R (signed; 0 without a residual)"),
)
PARAM_WORDS = 1 << (-(-sum(f.bits for f in PARAM_FIELDS) // 32) - 1).bit_length()
"""Words per parameter record: the fields' 88 bits rounded up to a power of two of words (4),
so that the ``cols`` records of a column tile form one row of the sequencer's parameter
memory, read in one cycle."""


def pack_params(m, b, r) -> np.ndarray:
    """``(channels, PARAM_WORDS)`` uint32 records from per-channel M, B, R."""
    recs = np.zeros((len(m), PARAM_WORDS), dtype=np.uint32)
    for i, vals in enumerate(zip(m, b, r)):
        rec, bit = 0, 0
        for f, v in zip(PARAM_FIELDS, vals):
            rec |= (int(v) & ((1 << f.bits) - 1)) << bit
            bit += f.bits
        recs[i] = [(rec >> (32 * k)) & 0xFFFFFFFF for k in range(PARAM_WORDS)]
    return recs


def unpack_params(recs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_params`: int64 arrays M, B, R."""
    out = [[], [], []]
    for words in np.asarray(recs, dtype=np.uint64).reshape(-1, PARAM_WORDS):
        rec = sum(int(w) << (32 * k) for k, w in enumerate(words))
        bit = 0
        for i, f in enumerate(PARAM_FIELDS):
            v = (rec >> bit) & ((1 << f.bits) - 1)
            out[i].append(v - (1 << f.bits) if v >> (f.bits - 1) else v)
            bit += f.bits
    return tuple(np.array(o, dtype=np.int64) for o in out)


def slices(bits: int, a_bits: int) -> int:
    """Buffer words per pixel and channel group of a ``bits``-bit tensor (``S`` above)."""
    return -(-bits // a_bits)


# ----------------------------------------------------------------------------- weights


def beat_words(config: HwConfig) -> int:
    return -(-config.write_rows * config.cols * config.w_bits // 32)


def tile_words(config: HwConfig) -> int:
    return config.write_cycles * beat_words(config)


def copies(d: Descriptor, config: HwConfig) -> int:
    """Copies of a column tile's row tiles over the macros: as many as fit the macros
    (``copies * T <= M``), the pixels, and the output (and residual) port, which takes ``sp``
    words per pixel against the layer's ``planes`` cycles per slot (the sequencer's rule,
    ``gateware.sequencer.layer.copies``; ``compiler.cycles``). Copy ``c`` computes the pixels
    ``p`` with ``p mod copies == c`` from the tiles in banks ``c * T .. c * T + T - 1``."""
    ab, pl = config.a_bits, planes(d, config)
    sp = max(slices(d.out_bits, ab), slices(d.res_bits, ab) if d.has_residual else 0)
    best = 1
    for c in range(2, min(pl, config.macros) + 1):
        if c * d.row_tiles <= config.macros and c * sp <= pl and c <= d.out_height * d.out_width:
            best = c
    return best


def weight_rows(col_tiles: int, row_tiles: int, config: HwConfig) -> int:
    """Weight rows of a layer of ``J`` column tiles and ``T`` row tiles: ``J * ceil(T / M)``
    (module docstring)."""
    return col_tiles * -(-row_tiles // config.macros)


def layer_rows(tiles: np.ndarray, col_tiles: int, config: HwConfig) -> np.ndarray:
    """The ``(J * T, rows, cols)`` tiles of a layer (:func:`layer_tiles`) laid out in weight
    rows: ``(J * Q * M, rows, cols)``, image tile ``(j * Q + q) * M + i`` holding tile ``(j, (q
    * M + i) mod T)`` (module docstring)."""
    tiles = np.asarray(tiles)
    T, M = len(tiles) // col_tiles, config.macros
    Q = -(-T // M)
    t = (np.arange(Q * M) % T)[None, :] + (np.arange(col_tiles) * T)[:, None]
    return tiles[t.reshape(-1)]


def weight_slices(w_bits: int, config: HwConfig) -> int:
    """Weight slices of a layer of ``w_bits`` (module docstring): 3 when wider than the
    array's, else 1."""
    return 3 if w_bits > config.w_bits else 1


def slice_shifts(config: HwConfig) -> tuple[int, int, int]:
    """Bit-planes the input is shifted by on the tiles of weight slice 0, 1, 2 of a layer with
    wide weights."""
    return config.w_bits, 0, config.w_bits - 1


def planes(d: Descriptor, config: HwConfig) -> int:
    """Bit-planes fed per pixel: ``in_bits``, plus the array's ``w_bits`` with wide weights."""
    return d.in_bits + (config.w_bits if weight_slices(d.w_bits, config) > 1 else 0)


def weight_digits(weight: np.ndarray, w_bits: int, config: HwConfig) -> np.ndarray:
    """``(S, Cout, Cin, k, k)`` digits of a layer's weights, one per weight slice (module
    docstring: the weights themselves, or high, offset-binary low and the ones)."""
    weight = np.asarray(weight, dtype=np.int64)
    if weight_slices(w_bits, config) == 1:
        return weight[None]
    wb = config.w_bits
    return np.stack([weight >> wb, (weight & ((1 << wb) - 1)) - (1 << (wb - 1)),
                     np.ones_like(weight)])


def layer_tiles(weight: np.ndarray, config: HwConfig, w_bits: int | None = None) -> np.ndarray:
    """``(J * T, rows, cols)`` weight tiles of a ``(Cout, Cin, k, k)`` conv of ``w_bits``
    (default: the array's), image order."""
    digits = weight_digits(weight, config.w_bits if w_bits is None else w_bits, config)
    n, cout, cin, k, _ = digits.shape
    R, C = config.rows, config.cols
    g, j = -(-cin // R), -(-cout // C)
    w = np.zeros((n, j * C, g * R, k, k), dtype=np.int64)
    w[:, :cout, :cin] = digits
    # (S, J, C, G, R, kh, kw) -> (J, S, kh, kw, G, R, C): tile (j, t = s*k*k*G + (kh*k + kw)*G
    # + cg).
    w = w.reshape(n, j, C, g, R, k, k).transpose(1, 0, 5, 6, 3, 4, 2)
    return w.reshape(j * n * k * k * g, R, C)


def pack_tiles(tiles: np.ndarray, config: HwConfig) -> np.ndarray:
    """uint32 image words of ``(n, rows, cols)`` tiles (layout: module docstring)."""
    wb, wr = config.w_bits, config.write_rows
    tiles = np.asarray(tiles, dtype=np.int64)
    codes = (tiles > 0).astype(np.int64) if wb == 1 else tiles & ((1 << wb) - 1)
    n = tiles.shape[0]
    beats = codes.reshape(n * config.write_cycles, wr * config.cols)
    bits = ((beats[..., None] >> np.arange(wb)) & 1).reshape(len(beats), -1)
    pad = beat_words(config) * 32 - bits.shape[1]
    bits = np.pad(bits, ((0, 0), (0, pad))).astype(np.uint8)
    return np.packbits(bits, axis=1, bitorder="little").view("<u4").reshape(-1)


def unpack_tiles(words: np.ndarray, config: HwConfig) -> np.ndarray:
    """Inverse of :func:`pack_tiles`: ``(n, rows, cols)`` int64 weights."""
    wb, wr, C = config.w_bits, config.write_rows, config.cols
    beats = np.asarray(words, dtype="<u4").reshape(-1, beat_words(config))
    bits = np.unpackbits(beats.view(np.uint8), axis=1, bitorder="little")
    bits = bits[:, :wr * C * wb].reshape(-1, wr * C, wb).astype(np.int64)
    codes = (bits << np.arange(wb)).sum(axis=-1)
    if wb == 1:
        w = 2 * codes - 1
    else:
        w = np.where(codes >= 1 << (wb - 1), codes - (1 << wb), codes)
    return w.reshape(-1, config.rows, C)


# ----------------------------------------------------------------------------- checks


class ErrorCode(IntEnum):
    """Why the sequencer stops (``STATUS.ERROR_CODE``; ``NONE``: it did not). ``KERNEL`` to
    ``FORMAT``, ``CHANNELS`` and ``ADDRESS`` are what :func:`check_descriptor` finds, in its
    order; ``PROGRAM``, ``OVERFLOW`` and ``OVERRUN`` arise while the program runs."""

    NONE = 0
    KERNEL = 1      #: kernel not 1, 3, 5, 7
    STRIDE = 2      #: stride not 1 or 2
    SIZE = 3        #: sizes zero, too large, or output size inconsistent with the input
    TILES = 4       #: zero tiles, or tile counts inconsistent with the shapes or memories
    FORMAT = 5      #: shift, input, weight, output or residual bits illegal or disagreeing,
    #: too many bit-planes, or a reserved bit set
    PROGRAM = 6     #: ran off the end of program memory without a ``last`` descriptor
    OVERFLOW = 7    #: a running sum left the accumulator (the compiler's width check failed)
    OVERRUN = 8     #: the schedule lost a result (a sequencer bug: please report it)
    CHANNELS = 9    #: channel counts disagree with the channel groups (or, pooling, each other)
    ADDRESS = 10    #: a tensor leaves its buffer bank, or the output is in its input's bank
    #: or over the residual
    OP = 11         #: an operation other than convolution (0), max pooling (1) or im2col
    #: (2, on a configuration with an image buffer)


OP_CONV, OP_MAXPOOL, OP_IM2COL = 0, 1, 2
"""Descriptor ``op`` values."""


def im2col_lanes(image, kernel: int, stride: int, padding: int, lanes_kernel: int) -> np.ndarray:
    """What an im2col layer writes, from ``image`` ``(N, C, H, W)``: ``(N, C * K * K, Ho,
    Wo)`` with ``K = lanes_kernel``; lane ``(c * K + kh) * K + kw`` of output pixel ``(oy,
    ox)`` is pixel ``(c, oy * stride - padding + kh, ox * stride - padding + kw)``, zero
    outside the image and where ``kh`` or ``kw`` is ``kernel`` or more."""
    x = np.asarray(image, dtype=np.int64)
    n, c, h, w = x.shape
    K, k, s, p = lanes_kernel, kernel, stride, padding
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = np.zeros((n, c, h + 2 * p + K, w + 2 * p + K), np.int64)
    xp[:, :, p:p + h, p:p + w] = x
    out = np.zeros((n, c, K, K, ho, wo), np.int64)
    for kh in range(k):
        for kw in range(k):
            out[:, :, kh, kw] = xp[:, :, kh:kh + s * ho:s, kw:kw + s * wo:s]
    return out.reshape(n, c * K * K, ho, wo)


def im2col_weight(weight, lanes_kernel: int) -> np.ndarray:
    """The ``(Cout, Cin * K * K, 1, 1)`` weights of the 1 x 1 convolution that, on
    :func:`im2col_lanes`' output, computes the ``(Cout, Cin, k, k)`` convolution (``k <= K``;
    the lanes past ``k`` get zero weights)."""
    w = np.asarray(weight, dtype=np.int64)
    cout, cin, k, _ = w.shape
    K = lanes_kernel
    out = np.zeros((cout, cin, K, K), np.int64)
    out[:, :, :k, :k] = w
    return out.reshape(cout, cin * K * K, 1, 1)


def _check_pool(d: Descriptor, config: HwConfig, bank_words: int, reserved: bool) -> ErrorCode:
    """:func:`check_descriptor` of a max-pooling descriptor past its size check: no tiles or
    parameters; the output the input's format (one slice word of ``in_bits <= a_bits`` per
    pixel and group, unsigned); the same channels; addresses as for a convolution."""
    R = config.rows
    if d.col_tiles or d.row_tiles or d.weight_tiles or d.weight_base or d.param_base:
        return ErrorCode.TILES
    if (reserved or d.shift or not 1 <= d.in_bits <= config.a_bits
            or d.out_bits != d.in_bits or d.out_signed or not d.relu or d.w_bits or d.raw
            or d.has_residual or d.res_bits or d.res_signed or d.res_base):
        return ErrorCode.FORMAT
    if (d.in_channels == 0 or d.in_channels != d.out_channels or d.in_groups != d.out_groups
            or d.in_channels > d.in_groups * R or d.in_channels + R <= d.in_groups * R):
        return ErrorCode.CHANNELS
    return _check_addresses(d, config, bank_words)


def _check_im2col(d: Descriptor, config: HwConfig, bank_words: int, reserved: bool) -> ErrorCode:
    """:func:`check_descriptor` of an im2col descriptor past its size check: no tiles or
    parameters; 8-bit or narrower pixels in, the same bits out (``S = slices(in_bits)`` slice
    words per pixel and group), unsigned; ``in_channels`` up to ``image_channels`` in one
    input group, ``out_channels = in_channels * im2col_kernel ** 2`` lanes in ``ceil(out /
    rows)`` groups; ``in_base`` 0 (the input is the image slot) and the output inside a
    bank."""
    if d.col_tiles or d.row_tiles or d.weight_tiles or d.weight_base or d.param_base:
        return ErrorCode.TILES
    if (reserved or d.shift or not 1 <= d.in_bits <= 8 or d.out_bits != d.in_bits
            or d.out_signed or not d.relu or d.w_bits or d.raw
            or d.has_residual or d.res_bits or d.res_signed or d.res_base):
        return ErrorCode.FORMAT
    K = config.im2col_kernel
    if (not 1 <= d.in_channels <= config.image_channels or d.in_groups != 1
            or d.out_channels != d.in_channels * K * K
            or d.out_groups != -(-d.out_channels // config.rows)):
        return ErrorCode.CHANNELS
    if d.in_base or _outside(d, config, bank_words, "out"):
        return ErrorCode.ADDRESS
    return ErrorCode.NONE


def _outside(d: Descriptor, config: HwConfig, bank_words: int, which: str) -> bool:
    """Tensor ``which`` of :func:`tensor_words` leaves its bank."""
    base, words = tensor_words(d, config)[which]
    return base >= 2 * bank_words or base % bank_words + words > bank_words


def _check_addresses(d: Descriptor, config: HwConfig, bank_words: int) -> ErrorCode:
    """The ``ADDRESS`` check: every tensor inside its bank, the output in the other bank from
    the input and off the residual."""
    regions = tensor_words(d, config)
    if any(_outside(d, config, bank_words, which) for which in regions):
        return ErrorCode.ADDRESS
    (ib, _), (ob, ow) = regions["in"], regions["out"]
    if ib // bank_words == ob // bank_words:
        return ErrorCode.ADDRESS
    if d.has_residual:
        rb, rw = regions["res"]
        if rb < ob + ow and ob < rb + rw:
            return ErrorCode.ADDRESS
    return ErrorCode.NONE


def tensor_words(d: Descriptor, config: HwConfig) -> dict[str, tuple[int, int]]:
    """``name -> (base, words)`` of the activation-buffer tensors descriptor ``d`` reads and
    writes (``in``, ``out``, and ``res`` with a residual): ``H * W * G * S`` words of input,
    ``Ho * Wo * out_groups * S`` of output and residual (``S`` slices of their bits,
    :func:`slices`)."""
    ab = config.a_bits
    pixels = d.out_height * d.out_width * d.out_groups
    out = {"in": (d.in_base, d.in_height * d.in_width * d.in_groups
                  * slices(max(d.in_bits, 1), ab)),
           "out": (d.out_base, pixels * slices(max(d.out_bits, 1), ab))}
    if d.op == OP_IM2COL:           # the input is the image buffer's slot
        del out["in"]
    if d.has_residual:
        out["res"] = (d.res_base, pixels * slices(max(d.res_bits, 1), ab))
    return out


def reserved_bits(words) -> int:
    """The bits of descriptor ``words`` that no field of :data:`LAYOUT` covers (they must be
    zero), as one integer (word ``i`` at bit ``32 * i``)."""
    used = Descriptor.unpack([0xFFFF_FFFF] * DESC_WORDS).pack()
    return sum((int(w) & ~u & 0xFFFF_FFFF) << (32 * i) for i, (w, u) in enumerate(zip(words, used)))


def check_words(words, config: HwConfig, bank_words: int | None = None) -> ErrorCode:
    """:func:`check_descriptor` of the descriptor in ``DESC_WORDS`` words ``words``, reserved
    bits included (``FORMAT`` where one is set)."""
    return check_descriptor(Descriptor.unpack(words), config, bank_words,
                            reserved=reserved_bits(words) != 0)


def check_descriptor(d: Descriptor, config: HwConfig, bank_words: int | None = None, *,
                     reserved: bool = False) -> ErrorCode:
    """The sequencer's descriptor check (:class:`gateware.sequencer.fetcher.Fetcher`), stated
    once in Python: the first :class:`ErrorCode` that ``d`` earns on ``config``'s hardware
    (activation-buffer banks of ``bank_words``, by default the configuration's), in the order
    the hardware tests them; ``reserved``: the descriptor's words had a reserved bit set
    (:func:`check_words`). The compiler refuses a layer that does not pass it; the fetcher's
    test holds the RTL to it."""
    R, C = config.rows, config.cols
    bank_words = config.bank_words if bank_words is None else bank_words
    k, s, p = d.kernel, d.stride, d.padding
    H, W, G, T, J = d.in_height, d.in_width, d.in_groups, d.row_tiles, d.col_tiles
    rec_cap = config.param_words // PARAM_WORDS
    pool, im2col, raw = d.op == OP_MAXPOOL, d.op == OP_IM2COL, d.op == OP_CONV and d.raw
    if d.op not in (OP_CONV, OP_MAXPOOL) and not (im2col and config.image_channels):
        return ErrorCode.OP
    if (not 1 <= k <= 7 if pool else not 1 <= k <= config.im2col_kernel if im2col
            else k not in KERNELS):
        return ErrorCode.KERNEL
    if s not in STRIDES:
        return ErrorCode.STRIDE
    size = config.image_size if im2col else config.max_size
    if (0 in (H, W, G) or H > size or W > size or G > config.max_groups
            or H + 2 * p < k or W + 2 * p < k
            or d.out_height != (H + 2 * p - k) // s + 1
            or d.out_width != (W + 2 * p - k) // s + 1
            or d.out_height * d.out_width > config.max_pixels or d.out_groups == 0
            or (pool and p >= k) or (raw and (d.out_height, d.out_width) != (1, 1))):
        return ErrorCode.SIZE
    if pool:
        return _check_pool(d, config, bank_words, reserved)
    if im2col:
        return _check_im2col(d, config, bank_words, reserved)
    if (J == 0 or T == 0 or T != weight_slices(d.w_bits, config) * k * k * G or (raw and J != 1)
            or d.weight_tiles != J * T
            or d.out_channels == 0 or d.out_channels > J * C or d.out_channels + C <= J * C
            or d.out_groups * R < J * C
            or d.weight_base + weight_rows(J, T, config) > config.weight_rows or d.param_base % C
            or d.param_base + J * C > rec_cap):
        return ErrorCode.TILES
    if (reserved or not 1 <= d.in_bits <= config.in_bits_max
            or not 1 <= d.w_bits <= config.w_bits_max or planes(d, config) > config.planes_max
            or (d.has_residual and (not 1 <= d.res_bits <= 8 or (d.res_signed and d.res_bits < 2)))
            or (not d.has_residual and (d.res_bits or d.res_signed or d.res_base))
            or ((d.shift or d.out_bits or d.out_signed or d.relu or d.has_residual
                 or not d.last) if raw else
                (not 1 <= d.shift <= MAX_SHIFT or not 1 <= d.out_bits <= 8
                 or (d.out_signed and d.out_bits < 2) or d.relu == d.out_signed))):
        return ErrorCode.FORMAT
    if (d.in_channels == 0 or d.in_channels > G * R or d.in_channels + R <= G * R
            or d.out_channels + R <= d.out_groups * R):
        return ErrorCode.CHANNELS
    if raw:
        return ErrorCode.ADDRESS if d.out_base or _outside(d, config, bank_words, "in") \
            else ErrorCode.NONE
    return _check_addresses(d, config, bank_words)
