# amaranth: UnusedElaboratable=no
"""Compiler: integer model file + hardware configuration -> layer program and memory images.

:func:`compile_model` maps the accelerator part of a model (its ``where == "accel"`` nodes,
in order) onto a :class:`~gateware.config.HwConfig` and returns a :class:`Program`: one
:class:`Descriptor` per layer, the weight image, the per-channel parameter image and the
activation-buffer allocation. :func:`execute` runs a program from those images alone, block
by block with the gateware's bit-exact models; the tests hold it against
:func:`model.golden.run`. A layer the hardware cannot run raises :class:`CompileError`
naming the layer and the reason.

Layer descriptor (``FIELDS``, declared once)
--------------------------------------------
``DESC_WORDS`` 32-bit words per layer. The fields of ``FIELDS`` are packed in order, least
significant bits first, into consecutive words; a field that does not fit in what is left of
a word starts the next one (no field straddles two words). :data:`LAYOUT` lists every
field's word and bit offset; :meth:`Descriptor.pack` / :meth:`Descriptor.unpack` convert.

Weight image
------------
``R x C`` = ``rows x cols`` of the configuration, ``G = ceil(Cin / R)`` input channel groups,
``T = k * k * G`` row tiles, ``J = ceil(Cout / C)`` column tiles. Row tile
``t = (kh * k + kw) * G + cg`` (the :class:`~gateware.window.WindowGen` order) holds, in tile
row ``r``, input channel ``cg * R + r`` of kernel tap ``(kh, kw)``; column ``c`` of column tile
``j`` is output channel ``j * C + c``. Rows past ``Cin`` and columns past ``Cout`` are
zero-filled (for binary weights the stored code 0, i.e. -1: those rows only ever see zero
activations and those columns are never written back).

A layer's tiles are stored column tile major: tile ``j * T + t`` of the layer is image tile
``weight_base + j * T + t``. A tile is ``rows // write_rows`` write beats (beat ``a`` holds
tile rows ``a * write_rows .. a * write_rows + write_rows - 1``), each beat the macro's write
``w`` field: element ``w[i][c]`` (row ``a * write_rows + i``, column ``c``) at bits
``[(i * C + c) * w_bits, (i * C + c + 1) * w_bits)`` as ``w_bits`` two's complement (binary:
1 = +1, 0 = -1). A beat is padded with zeros to ``BEAT_WORDS = ceil(write_rows * C * w_bits /
32)`` 32-bit words, word 0 holding bits 0..31. Image word of beat ``a`` of image tile ``n``,
word ``i``: ``(n * rows // write_rows + a) * BEAT_WORDS + i``.

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

from dataclasses import dataclass, field, fields

import numpy as np
from amaranth.hdl import Shape, signed
from amaranth.lib import data

from gateware.cim_macro import CIMMacro, output_shape
from gateware.config import HwConfig
from gateware.datapath import VALUE_BITS, Datapath, accumulator_width
from gateware.window import KERNELS, MAX_PADDING, STRIDES
from model import golden
from model.quant import MAX_SHIFT, MULT_BITS, RES_MULT_BITS

__all__ = ["DESC_WORDS", "FIELDS", "PARAM_FIELDS", "CompileError",
           "Descriptor", "Program", "compile_model", "descriptor_layout", "execute",
           "param_layout"]

class CompileError(ValueError):
    """The hardware cannot run this model (the message names the layer and the reason)."""


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
    Field("out_base", 24, "word address of the output tensor"),
    Field("res_base", 24, "word address of the residual tensor (0 without one)"),
    Field("weight_base", 32, "first image tile of the layer"),
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


def _padded(members, total: int) -> data.StructLayout:
    """A ``StructLayout`` of ``(name, offset, shape)`` members in offset order, with
    ``_pad<n>`` members filling the gaps and the tail up to ``total`` bits."""
    out, pos = {}, 0
    for name, offset, shape in members:
        if offset > pos:
            out[f"_pad{len(out)}"] = offset - pos
        out[name] = shape
        pos = offset + Shape.cast(shape).width
    if total > pos:
        out[f"_pad{len(out)}"] = total - pos
    return data.StructLayout(out)


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


def descriptor_layout() -> data.StructLayout:
    """The descriptor as an Amaranth layout (``DESC_WORDS * 32`` bits, word 0 lowest): every
    field of :data:`FIELDS` at its :data:`LAYOUT` offset, unsigned, and padding where a field
    moved to the next word; the gateware reads ``desc.kernel``."""
    return _padded([(f.name, 32 * LAYOUT[f.name][0] + LAYOUT[f.name][1], f.bits)
                    for f in FIELDS], 32 * DESC_WORDS)

PARAM_FIELDS: tuple[Field, ...] = (
    Field("m", MULT_BITS, "requantization multiplier M (signed)"),
    Field("b", 48, "bias B (signed)"),
    Field("r", RES_MULT_BITS, "residual multiplier R (signed; 0 without a residual)"),
)
PARAM_WORDS = 1 << (-(-sum(f.bits for f in PARAM_FIELDS) // 32) - 1).bit_length()
"""Words per parameter record: the fields' 88 bits rounded up to a power of two of words (4),
so that the ``cols`` records of a column tile form one row of the sequencer's parameter
memory, read in one cycle."""


def param_layout() -> data.StructLayout:
    """One parameter record as an Amaranth layout (``PARAM_WORDS * 32`` bits): the fields of
    :data:`PARAM_FIELDS` in order from bit 0, signed, then padding."""
    offsets = np.cumsum([0] + [f.bits for f in PARAM_FIELDS])
    return _padded([(f.name, int(o), signed(f.bits)) for f, o in zip(PARAM_FIELDS, offsets)],
                   32 * PARAM_WORDS)


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


# ----------------------------------------------------------------------------- weights


def beat_words(config: HwConfig) -> int:
    return -(-config.write_rows * config.cols * config.w_bits // 32)


def tile_words(config: HwConfig) -> int:
    return config.write_cycles * beat_words(config)


def layer_tiles(weight: np.ndarray, config: HwConfig) -> np.ndarray:
    """``(J * T, rows, cols)`` weight tiles of a ``(Cout, Cin, k, k)`` conv, image order."""
    cout, cin, k, _ = weight.shape
    R, C = config.rows, config.cols
    g, j = -(-cin // R), -(-cout // C)
    w = np.zeros((j * C, g * R, k, k), dtype=np.int64)
    w[:cout, :cin] = weight
    # (J, C, G, R, kh, kw) -> (J, kh, kw, G, R, C): tile (j, t = (kh*k + kw)*G + cg).
    w = w.reshape(j, C, g, R, k, k).transpose(0, 4, 5, 2, 3, 1)
    return w.reshape(j * k * k * g, R, C)


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


# ----------------------------------------------------------------------------- program


@dataclass
class Alloc:
    """A tensor in the activation buffer."""

    base: int
    words: int
    shape: tuple[int, int, int]
    bits: int
    signed: bool
    bank: int


@dataclass
class Program:
    """A compiled accelerator program (see the module docstring for every layout)."""

    config: HwConfig
    names: list[str]
    descriptors: list[Descriptor]
    weight_image: np.ndarray
    param_image: np.ndarray
    buffers: dict[str, Alloc]
    input_name: str
    bank_words: int
    acc_width: int
    inputs: dict[str, list[str]] = field(default_factory=dict)

    def program_words(self) -> np.ndarray:
        """All descriptors packed back to back (what the sequencer's program memory holds)."""
        return np.array([w for d in self.descriptors for w in d.pack()], dtype=np.uint32)


def _tensor_info(model: golden.IntModel, name: str) -> tuple[tuple, int, bool]:
    """(shape, bits, signed) of a tensor of the graph."""
    if name == "input":
        return model.input_shape, model.manifest["input"]["pixel_max"].bit_length(), False
    n = model.node(name)
    if n["op"] == "conv":
        return tuple(n["shape"]), n["out_bits"], n["out_signed"]
    if n["op"] == "maxpool":
        _, bits, signed = _tensor_info(model, n["inputs"][0])
        return tuple(n["shape"]), bits, signed
    return tuple(n["shape"]), 64, True


def _slices(bits: int, a_bits: int) -> int:
    return -(-bits // a_bits)


def compile_model(model: golden.IntModel, config: HwConfig, *, bank_words: int | None = None,
                  acc_width: int | None = None) -> Program:
    """Compile the accelerator nodes of ``model`` for ``config``; :class:`CompileError`
    names the first layer the hardware cannot run and why. ``bank_words`` and ``acc_width``
    default to the configuration's."""
    bank_words = config.bank_words if bank_words is None else bank_words
    acc_width = config.acc_width if acc_width is None else acc_width
    R, C, ab = config.rows, config.cols, config.a_bits
    nodes = [n for n in model.nodes if n["where"] == "accel"]
    if not nodes:
        raise CompileError(f"{model.path}: the model has no accelerator ('accel') nodes")
    accel = {n["name"] for n in nodes}
    external = {i for n in nodes for i in n["inputs"] if i not in accel}
    if len(external) != 1:
        raise CompileError(f"{model.path}: the accelerator part must have exactly one input "
                           f"tensor from the MCU, not {sorted(external)}")
    input_name = external.pop()
    if model.manifest.get("adc_bits") != config.adc_bits:
        raise CompileError(f"{model.path}: the model is evaluated with adc_bits="
                           f"{model.manifest.get('adc_bits')}, the configuration "
                           f"{config.name!r} has adc_bits={config.adc_bits}")
    # Last reader of every tensor (len(nodes): read back by the MCU, alive to the end).
    last_use = {input_name: -1}
    for i, n in enumerate(nodes):
        last_use.setdefault(n["name"], i)
        for src in n["inputs"]:
            last_use[src] = max(last_use.get(src, -1), i)
    for n in model.nodes:
        if n["where"] != "accel":
            for src in n["inputs"]:
                if src in accel:
                    last_use[src] = len(nodes)
    last_use[nodes[-1]["name"]] = len(nodes)

    def fail(name, msg):
        raise CompileError(f"layer {name!r}: {msg}")

    def words_of(shape, bits):
        c, h, w = shape
        return h * w * -(-c // R) * _slices(bits, ab)

    # ---- activation buffer allocation
    buffers: dict[str, Alloc] = {}
    born = {input_name: -1}

    def place(name, shape, bits, signed, bank, when):
        words = words_of(shape, bits)
        live = [a for t, a in buffers.items() if a.bank == bank
                and born[t] <= when <= last_use[t]]
        start = 0
        for a in sorted(live, key=lambda a: a.base):
            off = a.base - bank * bank_words
            if start + words <= off:
                break
            start = max(start, off + a.words)
        if start + words > bank_words:
            fail(name, f"its output ({words} words) does not fit in activation-buffer bank "
                       f"{bank} ({bank_words} words) beside the live tensors")
        a = Alloc(bank * bank_words + start, words, tuple(shape), bits, signed, bank)
        buffers[name] = a
        return a

    shape, bits, signed = _tensor_info(model, input_name)
    if bits != ab or signed or len(shape) != 3:
        raise CompileError(f"accelerator input {input_name!r}: must be unsigned {ab}-bit "
                           f"activations [C, H, W] (a_bits of {config.name!r}), not "
                           f"{'signed ' if signed else ''}{bits}-bit {list(shape)}")
    place(input_name, shape, bits, signed, 0, -1)

    descriptors, tiles, params, names, inputs = [], [], [], [], {}
    tile_count = param_count = 0
    for i, n in enumerate(nodes):
        name = n["name"]
        if n["op"] != "conv":
            fail(name, f"op {n['op']!r} does not run on the accelerator (only conv)")
        k, s, p = n["kernel"], n["stride"], n["padding"]
        if k not in KERNELS:
            fail(name, f"kernel {k} is not supported (supported: {KERNELS})")
        if s not in STRIDES:
            fail(name, f"stride {s} is not supported (supported: {STRIDES})")
        if p > MAX_PADDING:
            fail(name, f"padding {p} exceeds {MAX_PADDING}")
        if n["w_bits"] != config.w_bits:
            fail(name, f"w_bits={n['w_bits']} differs from the configuration's "
                       f"{config.w_bits}")
        xshape, xbits, xsigned = _tensor_info(model, n["inputs"][0])
        if xsigned:
            fail(name, f"its input {n['inputs'][0]!r} is signed; the array takes unsigned "
                       "activations")
        if xbits != ab:
            fail(name, f"its input {n['inputs'][0]!r} has {xbits}-bit activations, the "
                       f"configuration's a_bits is {ab}")
        if n["out_bits"] > VALUE_BITS - 1:
            fail(name, f"out_bits={n['out_bits']} exceeds the datapath's values")
        cin, cout = n["in_channels"], n["out_channels"]
        need = accumulator_width(cin * k * k, config.w_bits, ab)
        psum = output_shape(R, config.w_bits, ab).width
        if need > acc_width or psum > acc_width:
            fail(name, f"accumulator needs {max(need, psum)} bits, the datapath holds "
                       f"{acc_width}")
        oc, oh, ow = n["shape"]
        g, j = -(-cin // R), -(-cout // C)
        t = k * k * g
        res = n["inputs"][1] if len(n["inputs"]) > 1 else None
        rbits, rsigned = (0, False)
        if res is not None:
            _, rbits, rsigned = _tensor_info(model, res)
            if rbits > VALUE_BITS - 1 or res not in buffers:
                fail(name, f"residual {res!r} ({rbits} bits) cannot be read from the buffer")
        src = buffers[n["inputs"][0]]
        out = place(name, (oc, oh, ow), n["out_bits"], n["out_signed"], 1 - src.bank, i)
        born[name] = i
        w = model.array(name, "weight")
        tiles.append(layer_tiles(w, config))
        pad = j * C - cout
        m = np.pad(model.array(name, "mult").astype(np.int64), (0, pad))
        b = np.pad(model.array(name, "bias").astype(np.int64), (0, pad))
        r = (np.pad(model.array(name, "res_mult").astype(np.int64), (0, pad))
             if res is not None else np.zeros(j * C, np.int64))
        params.append(pack_params(m, b, r))
        d = dict(kernel=k, stride=s, padding=p, relu=int(not n["out_signed"]),
                 out_signed=int(n["out_signed"]), out_bits=n["out_bits"], shift=n["shift"],
                 has_residual=int(res is not None), res_signed=int(rsigned), res_bits=rbits,
                 last=int(i == len(nodes) - 1), in_height=xshape[1], in_width=xshape[2],
                 in_groups=g, out_height=oh, out_width=ow, out_groups=-(-cout // R),
                 in_channels=cin, out_channels=cout, col_tiles=j, row_tiles=t,
                 weight_tiles=j * t, in_base=src.base, out_base=out.base,
                 res_base=buffers[res].base if res is not None else 0,
                 weight_base=tile_count, param_base=param_count)
        for f in FIELDS:
            if not 0 <= d[f.name] < 1 << f.bits:
                fail(name, f"{f.name}={d[f.name]} does not fit the descriptor's {f.bits} bits")
        if not 1 <= n["shift"] <= MAX_SHIFT:
            fail(name, f"shift {n['shift']} outside 1..{MAX_SHIFT}")
        descriptors.append(Descriptor(**d))
        names.append(name)
        inputs[name] = list(n["inputs"])
        tile_count += j * t
        param_count += j * C
    weight_image = pack_tiles(np.concatenate(tiles), config)
    param_image = np.concatenate(params).reshape(-1)
    program_len = len(descriptors) * DESC_WORDS
    for what, words, cap in (("layer program", program_len, "prog_words"),
                             ("weight image", len(weight_image), "weight_words"),
                             ("parameter image", len(param_image), "param_words")):
        if words > getattr(config, cap):
            raise CompileError(f"{model.path}: the {what} takes {words} words, configuration "
                               f"{config.name!r} has {cap}={getattr(config, cap)}; choose a "
                               f"larger configuration")
    return Program(config=config, names=names, descriptors=descriptors,
                   weight_image=weight_image, param_image=param_image, buffers=buffers,
                   input_name=input_name, bank_words=bank_words, acc_width=acc_width,
                   inputs=inputs)


# ----------------------------------------------------------------------------- execution


def _tensor_addresses(base, h, w, groups, slices):
    """(H*W, groups, slices) word addresses of a tensor."""
    pix = np.arange(h * w)[:, None, None]
    return base + (pix * groups + np.arange(groups)[None, :, None]) * slices \
        + np.arange(slices)[None, None, :]


def write_tensor(mem, base, x, bits, a_bits):
    """Store ``x`` (N, C, H, W) at ``base`` in ``mem`` (N, words, rows) lanes."""
    n, c, h, w = x.shape
    R = mem.shape[2]
    g, sl = -(-c // R), _slices(bits, a_bits)
    xc = np.zeros((n, g * R, h, w), np.int64)
    xc[:, :c] = x
    codes = xc & ((1 << (sl * a_bits)) - 1)
    # (N, G, R, H, W) -> (N, H*W, G, S, R)
    sl_vals = (codes[..., None] >> (np.arange(sl) * a_bits)) & ((1 << a_bits) - 1)
    sl_vals = sl_vals.reshape(n, g, R, h * w, sl).transpose(0, 3, 1, 4, 2)
    addr = _tensor_addresses(base, h, w, g, sl)
    mem[:, addr.reshape(-1)] = sl_vals.reshape(n, -1, R)


def read_tensor(mem, base, shape, bits, signed, a_bits):
    """Inverse of :func:`write_tensor`: (N, C, H, W) int64."""
    c, h, w = shape
    R = mem.shape[2]
    g, sl = -(-c // R), _slices(bits, a_bits)
    addr = _tensor_addresses(base, h, w, g, sl)
    words = mem[:, addr.reshape(-1)].reshape(mem.shape[0], h * w, g, sl, R)
    v = (words << (np.arange(sl) * a_bits)[:, None]).sum(axis=3)  # (N, HW, G, R)
    width = sl * a_bits
    if signed:
        v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
    v = v.transpose(0, 2, 3, 1).reshape(mem.shape[0], g * R, h, w)
    return v[:, :c]


def window_addresses(d: Descriptor):
    """``(P, T)`` addresses and pad flags in :meth:`~gateware.window.WindowGen.model` order
    (output pixel major, then kh, kw, channel group)."""
    k, s, p, g = d.kernel, d.stride, d.padding, d.in_groups
    oy, ox = np.meshgrid(np.arange(d.out_height), np.arange(d.out_width), indexing="ij")
    kh, kw, cg = np.meshgrid(np.arange(k), np.arange(k), np.arange(g), indexing="ij")
    y = oy.reshape(-1, 1) * s - p + kh.reshape(1, -1)
    x = ox.reshape(-1, 1) * s - p + kw.reshape(1, -1)
    pad = (y < 0) | (y >= d.in_height) | (x < 0) | (x >= d.in_width)
    addr = d.in_base + (y * d.in_width + x) * g + cg.reshape(1, -1)
    return np.where(pad, 0, addr), pad


def execute(program: Program, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``program`` on the accelerator input ``x`` (N, C, H, W) from its images and
    descriptors alone: window order, :meth:`CIMMacro.model` per weight tile, the
    :meth:`Datapath.model` requantization, outputs written to and read back from the
    buffer. Returns every layer's output (N, C, H, W) int64."""
    cfg = program.config
    R, C, ab = cfg.rows, cfg.cols, cfg.a_bits
    x = np.asarray(x, dtype=np.int64)
    n = x.shape[0]
    mem = np.zeros((n, 2 * program.bank_words, R), dtype=np.int64)
    src = program.buffers[program.input_name]
    write_tensor(mem, src.base, x, ab, ab)
    tw = tile_words(cfg)
    dp = Datapath(lanes=C, acc_width=program.acc_width,
                  psum_width=output_shape(R, cfg.w_bits, ab).width)
    result = {}
    for name, d in zip(program.names, program.descriptors):
        addr, pad = window_addresses(d)
        P, T = addr.shape
        xs = np.where(pad[None, :, :, None], 0, mem[:, addr])       # (N, P, T, R)
        wimg = program.weight_image[d.weight_base * tw:(d.weight_base + d.weight_tiles) * tw]
        tiles = unpack_tiles(wimg, cfg).reshape(d.col_tiles, d.row_tiles, R, C)
        recs = program.param_image.reshape(-1, PARAM_WORDS)
        m, b, r = unpack_params(recs[d.param_base:d.param_base + d.col_tiles * C])
        res = None
        if d.has_residual:
            res = read_tensor(mem, d.res_base, (d.out_channels, d.out_height, d.out_width),
                              d.res_bits, bool(d.res_signed), ab)
            res = res.reshape(n, d.out_channels, P).transpose(0, 2, 1)  # (N, P, Cout)
        out = np.zeros((n, P, d.col_tiles * C), np.int64)
        first = np.tile(np.arange(T) == 0, n * P)
        last = np.tile(np.arange(T) == T - 1, n * P)
        beats = n * P * T
        for j in range(d.col_tiles):
            psum = np.stack([CIMMacro.model(xs[:, :, t], tiles[j, t], w_bits=cfg.w_bits,
                                            a_bits=ab, adc_bits=cfg.adc_bits)
                             for t in range(T)], axis=2)            # (N, P, T, C)
            lanes = slice(j * C, (j + 1) * C)
            rv = np.zeros((n, P, C), np.int64)
            if res is not None:
                hi = min((j + 1) * C, d.out_channels) - j * C
                if hi > 0:
                    rv[:, :, :hi] = res[:, :, j * C:j * C + hi]
            rv = np.repeat(rv.reshape(n * P, 1, C), T, axis=1).reshape(beats, C)
            val, ovf = dp.model(psum.reshape(beats, C), first, last,
                                np.broadcast_to(m[lanes], (beats, C)),
                                np.broadcast_to(b[lanes], (beats, C)),
                                np.broadcast_to(r[lanes], (beats, C)), rv,
                                shift=d.shift, out_bits=d.out_bits,
                                out_signed=bool(d.out_signed), has_residual=bool(d.has_residual))
            if ovf.any():
                raise RuntimeError("accumulator overflow in the datapath")
            out[:, :, lanes] = val.reshape(n, P, C)
        y = out[:, :, :d.out_channels].transpose(0, 2, 1).reshape(
            n, d.out_channels, d.out_height, d.out_width)
        write_tensor(mem, d.out_base, y, d.out_bits, ab)
        # Read back before a later layer may reuse the space: what the MCU would read.
        result[name] = read_tensor(mem, d.out_base, (d.out_channels, d.out_height,
                                                     d.out_width), d.out_bits,
                                   bool(d.out_signed), ab)
    return result
