"""What the sequencer's units share: the error codes, the descriptor and its derived
per-layer quantities, and the signatures of the links between the units.

The contract's declarations the units follow (descriptor fields, parameter records, the shift
limit) are imported here once, and the descriptor and the parameter record become Amaranth
layouts generated from their field lists; the other units take them from this module.
"""

from __future__ import annotations

import itertools

from amaranth.hdl import Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from contract.arith import MAX_SHIFT
from contract.program import (
    DESC_WORDS,
    FIELDS,
    LAYOUT,
    OP_CONV,
    OP_IM2COL,
    OP_MAXPOOL,
    PARAM_FIELDS,
    PARAM_WORDS,
    ErrorCode,
)

__all__ = ["DESC_WORDS", "MAX_SHIFT", "OP_CONV", "OP_IM2COL", "OP_MAXPOOL", "PARAM_WORDS",
           "AccelError",
           "IssueSignature", "LayerSignature", "act_read_signature", "copies",
           "credit_signature", "desc_layout", "descriptor_layout", "in_slices", "layer_planes",
           "next_column_tile", "param_layout", "slices", "tile_layout"]


class AccelError(enum.Enum, shape=4):
    """Why the sequencer stopped: the contract's :class:`~contract.program.ErrorCode`, with
    the same names and values, as a hardware enum (``NONE``: it did not)."""

    vars().update({code.name: code.value for code in ErrorCode})


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


def descriptor_layout() -> data.StructLayout:
    """The descriptor as an Amaranth layout (``DESC_WORDS * 32`` bits, word 0 lowest): every
    field of :data:`contract.program.FIELDS` at its ``LAYOUT`` offset, unsigned, and padding
    where a field moved to the next word; the units read ``desc.kernel``."""
    return _padded([(f.name, 32 * LAYOUT[f.name][0] + LAYOUT[f.name][1], f.bits)
                    for f in FIELDS], 32 * DESC_WORDS)


def param_layout() -> data.StructLayout:
    """One parameter record as an Amaranth layout (``PARAM_WORDS * 32`` bits): the fields of
    :data:`contract.program.PARAM_FIELDS` in order from bit 0, signed, then padding."""
    offsets = itertools.accumulate((f.bits for f in PARAM_FIELDS), initial=0)
    return _padded([(f.name, o, signed(f.bits)) for f, o in zip(PARAM_FIELDS, offsets)],
                   32 * PARAM_WORDS)


def next_column_tile(col, lane, sl, *, rows: int, cols: int):
    """``(col, lane)`` of the next column tile of a tensor walk: its ``cols`` channels are the
    next lanes of the same channel group (``sl`` words per pixel), or the first lanes of the
    next group. The residual reader and the writer step through their tensors with it."""
    wrap = lane + cols >= rows
    return Mux(wrap, col + sl, col), Mux(wrap, 0, lane + cols)


def desc_layout() -> data.StructLayout:
    """A checked descriptor, as it travels from the fetcher through the loader to the
    issuer: ``desc`` (:func:`descriptor_layout`) and its check ``code``."""
    return data.StructLayout({"desc": descriptor_layout(), "code": AccelError})


def tile_layout(*, addr_width: int) -> data.StructLayout:
    """A weight tile handed to a macro: ``addr``, its first beat in the macro's weight-store bank,
    and its
    tap ``(kh, kw)`` with ``off``, the word offset of the tap in the input window
    (``((kh * W + kw) * G + cg) * S``, ``S`` the input's slice words), and ``shift``, the
    bit-planes its input is shifted by (its weight slice's, :func:`contract.program.
    slice_shifts`; 0 for a layer without wide weights)."""
    return data.StructLayout({"addr": 32, "kh": 3, "kw": 3, "off": addr_width, "shift": 4})


def slices(m, desc, a_bits: int, name: str = ""):
    """``out_sl, res_sl, sp`` of the layer ``desc`` (comb signals): buffer words per output
    and per residual pixel (``ceil(bits / a_bits)``; 0 without a residual), and the cycles
    between the pixels of one slot (the slower of the two ports)."""
    o, r, q = (Signal(4, name=f"{name}out_sl"), Signal(4, name=f"{name}res_sl"),
               Signal(4, name=f"{name}sp"))
    sh = ceil_log2(a_bits)
    m.d.comb += [o.eq((desc.out_bits + a_bits - 1) >> sh),
                 r.eq(Mux(desc.has_residual, (desc.res_bits + a_bits - 1) >> sh, 0)),
                 q.eq(Mux(r > o, r, o))]
    return o, r, q


def in_slices(m, desc, a_bits: int, name: str = ""):
    """Buffer words per input pixel and channel group of the layer ``desc`` (comb signal):
    ``ceil(in_bits / a_bits)``."""
    s_ = Signal(4, name=f"{name}in_sl")
    m.d.comb += s_.eq((desc.in_bits + a_bits - 1) >> ceil_log2(a_bits))
    return s_


def layer_planes(m, desc, w_bits: int, name: str = ""):
    """Bit-planes fed per pixel of the layer ``desc`` (comb signal;
    :func:`contract.program.planes`): ``in_bits``, plus the array's ``w_bits`` when the
    layer's weights are wider (three weight slices)."""
    p_ = Signal(5, name=f"{name}planes")
    m.d.comb += p_.eq(desc.in_bits + Mux(desc.w_bits > w_bits, w_bits, 0))
    return p_


def copies(m, desc, sp, pl, *, planes: int, macros: int, name: str = ""):
    """Copies of the row tiles (comb signal; :func:`contract.program.copies`): as many as fit the
    macros, the pixels, and the output (and residual) ports, which take ``sp`` cycles per
    pixel against ``pl`` (:func:`layer_planes`, at most ``planes``) per slot."""
    c_ = Signal(range(planes + 1), name=f"{name}copies")
    m.d.comb += c_.eq(1)
    for c in range(2, min(planes, macros) + 1):
        with m.If((desc.row_tiles * c <= macros) & (sp * c <= pl)
                  & (desc.out_height * desc.out_width >= c)):
            m.d.comb += c_.eq(c)
    return c_


class LayerSignature(wiring.Signature):
    """Layer-wide control from the issuer to the residual reader, collector and writer
    (plain ports: they change once per layer).

    Members (issuer side)
    ---------------------
    busy : ``Out(1)``
        The accelerator runs a program.
    start : ``Out(1)``
        Pulse: a layer starts (every unit resets its walk); ``desc`` and the quantities below
        are valid from this cycle to the end of the layer.
    desc : ``Out(descriptor_layout())``
    pixels : ``Out(24)``
        ``out_height * out_width``.
    out_sl, res_sl : ``Out(4)``
        Buffer words per output and per residual pixel (:func:`slices`).
    out_pitch, res_pitch : ``Out(16)``
        ``out_groups * out_sl`` and ``out_groups * res_sl``: words per output (residual)
        pixel, all groups.
    param_row : ``Out(range(param_rows))``
        Parameter-memory row of the layer's column tile 0.
    """

    def __init__(self, *, param_rows: int):
        super().__init__({
            "busy": Out(1), "start": Out(1), "desc": Out(descriptor_layout()),
            "pixels": Out(24), "out_sl": Out(4), "res_sl": Out(4),
            "out_pitch": Out(16), "res_pitch": Out(16),
            "param_row": Out(range(param_rows)),
        })


class IssueSignature(wiring.Signature):
    """From the issuer to every macro unit: round switches and pixel issues. The macro units
    never stall, so there is no ready: they act in the cycle they see a pulse.

    Members (issuer side)
    ---------------------
    round : ``Out(1)``
        Pulse: a round starts; macros ``0 .. macros - 1`` take their loaded tile as the
        active one (the first bit-plane they feed commits it).
    macros : ``Out(range(macros + 1))``
        Macros of the round (``copies * group``).
    valid : ``Out(1)``
        Pulse: a pixel is issued to macros ``first .. first + count - 1`` (one group).
    first, count : ``Out(range(macros + 1))``
    y, x : ``Out(signed(17))``
        Input coordinate of the window's corner (tap ``(0, 0)``; negative in the padding).
    addr : ``Out(addr_width)``
        Bank offset of the word of tap ``(0, 0)``, channel group 0.
    bank : ``Out(1)``
        The input tensor's bank.
    height, width : ``Out(12)``
        Input size: taps outside read zeros.
    bits : ``Out(4)``
        The layer's ``in_bits`` (``ceil(bits / a_bits)`` slice words of the input, at
        consecutive addresses from ``addr``).
    planes : ``Out(5)``
        Bit-planes fed per pixel (:func:`layer_planes`): the input shifted by the tile's
        ``shift``, zeros around it.
    """

    def __init__(self, *, macros: int, addr_width: int):
        super().__init__({
            "round": Out(1), "macros": Out(range(macros + 1)), "valid": Out(1),
            "first": Out(range(macros + 1)), "count": Out(range(macros + 1)),
            "y": Out(signed(17)), "x": Out(signed(17)), "addr": Out(addr_width),
            "bank": Out(1), "height": Out(12), "width": Out(12), "bits": Out(4),
            "planes": Out(5),
        })


def credit_signature() -> stream.Signature:
    """Residual credits from the residual reader to the issuer: ``valid`` while a residual is
    in the FIFO that no issued pixel has claimed yet; a transfer claims one."""
    return stream.Signature(0)


def act_read_signature(*, rows: int, a_bits: int, addr_width: int) -> wiring.Signature:
    """A lockstep read port of the :class:`~gateware.actbuf.ActivationBuffer`, reader side:
    ``addr`` (bank bit on top), ``pad``, ``en`` out; ``data``, the word, in one cycle later."""
    return wiring.Signature({"addr": Out(addr_width + 1), "pad": Out(1), "en": Out(1),
                             "data": In(data.ArrayLayout(unsigned(a_bits), rows))})
