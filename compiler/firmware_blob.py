"""Model blob for the Cortex-M4 firmware: a compiled model as one checked binary.

:func:`build_blob` turns an integer model file and a hardware configuration into the bytes the
firmware's driver loads (``firmware/src/cim_model.c`` validates them, ``cim_driver.c`` writes
the accelerator's part into the hardware, ``cim_net.c`` runs the MCU's part). Nothing in the
blob is written by hand: the accelerator images are :func:`compiler.compile_model`'s, the
MCU layers' weights and requantization constants are derived here from the same model file,
and the test images carry the golden model's logits so the firmware can check itself.

Layout (version :data:`VERSION`, every integer little-endian)
-------------------------------------------------------------
``header``
    :data:`HEADER_FIELDS`, one 32-bit word each. ``crc32`` is the CRC-32 of IEEE 802.3 (the
    one of :func:`zlib.crc32`) of every byte from :data:`CRC_START` (the word after ``crc32``)
    to ``total_bytes``, so it covers the rest of the header and every section. The
    ``hw_*`` words are the :class:`~contract.config.HwConfig` the program was compiled for
    (``hw_adc_bits`` 0: an ideal macro); the driver refuses hardware that differs.
    ``partition`` (:data:`PARTITIONS`): ``ACCEL``, the middle layers on the accelerator, or
    ``MCU``, every layer on the MCU: no program, weight or parameter image (their words 0,
    their sections empty), and the driver writes nothing into the hardware.
sections
    At the byte offsets the header gives, each a multiple of :data:`SECTION_ALIGN`:
    ``ops`` (``ops_count`` records of :data:`OP_FIELDS`, one word each), ``program`` (the
    layer descriptors, :meth:`~compiler.Program.program_words`), ``weights`` (the weight
    image), ``params`` (the parameter image), the MCU layers' ``data`` (below), and the test
    images: ``images`` (``images_count`` images of ``in_channels x in_height x in_width``
    unsigned bytes, CHW, at most ``pixel_max``), ``labels`` (one word each, below
    ``classes``) and ``expected`` (the golden model's logits, ``classes`` signed 64-bit
    integers per image). The sections (the header's and the ``CONV`` and ``FC`` ops') follow
    one another from the end of the header, each padded only to the alignment, and end at
    ``total_bytes``; ``program_words`` is a whole number of descriptors, only the last
    marked ``last``; ``weight_words`` and ``param_words`` are exactly what the descriptors
    address (``weight_base + col_tiles * ceil(row_tiles / hw_macros)`` weight rows of
    ``hw_macros`` tiles, ``param_base + col_tiles * hw_cols`` records); every tensor a layer
    reads or writes lies inside the activation buffer; the ``OFFLOAD`` op's tensors are the
    first layer's input and a layer's output.
    :func:`check_blob` and the firmware's ``cim_model_open`` refuse a blob where any header
    or op word disagrees with the contents: the CRC only says the bytes are the ones written.

The MCU's part of the network is a list of ops, run in order. ``ACCEL`` partition: ``CONV``
(the first layer, reading the input image), any number of ``MAXPOOL``, ``OFFLOAD`` (the
accelerator program), ``AVGPOOL`` and ``FC``, each op reading the previous op's output.
``MCU`` partition: one op per node of the model, in its order: op 0 the ``CONV`` on the
image, then ``CONV`` (reading HWC bytes, with an optional residual), ``MAXPOOL``,
``AVGPOOL``, and last the ``FC``; every tensor an op reads (input, residual) is the output of
the latest earlier op that wrote at that offset, of the shape and kind the op takes, and no
op in between (nor the reader) writes over it (the generator places every tensor at the
lowest offset where it overlaps none still to be read). Ops read and write at the
``in_offset`` / ``res_offset`` / ``out_offset`` bytes of the caller's workspace
(``workspace_bytes``, aligned to :data:`WORKSPACE_ALIGN`). Tensors there are HWC: pixel
``(y, x)`` channel ``c`` is byte ``(y * W + x) * cstride + c`` (``cstride``: channels rounded up
to a multiple of 4; what the pad channels hold is undefined); ``AVGPOOL`` writes signed 32-bit
sums, ``FC`` signed 64-bit logits. ``CONV`` also uses three scratch areas there (shared by
every conv of the ``MCU`` partition): the im2col vectors of two output pixels (``16 * steps``
bytes ending on a :data:`WORKSPACE_ALIGN` boundary, which the Cortex-M4 kernel's loop tests
instead of a counter), the gather table (two 32-bit byte offsets per tap pair) and the input
zero-padded to 16-bit pixels, planar (``in_c x (in_h + 2 pad) x (in_w + 2 pad)`` plus one
zero halfword for the pad taps). ``in_cstride`` 0 marks the conv on the image (CHW).

``CONV`` data (at ``weights_offset`` and ``params_offset`` of the blob)
    Weights as signed 16-bit pairs for the Cortex-M4's dual 16-bit multiply-accumulate
    (SMLAD). Taps in PyTorch order (input channel, kernel row, kernel column) are padded with
    zeros to ``4 * steps``; output channels to an even count. Output channels ``2q`` and
    ``2q + 1`` form pair ``q``; its ``4 * steps`` words are, for tap pair ``p``, the word of
    channel ``2q`` then the word of channel ``2q + 1``, each holding tap ``2p`` in bits 0..15
    and tap ``2p + 1`` in bits 16..31. The firmware lays out the im2col vectors of two
    output pixels the same way, so one load serves two multiply-accumulates. That is
    ``w_bytes`` 2; with ``w_bytes`` 1 (the ``MCU`` partition's convs after the first, half the
    flash) the weights are signed bytes, per channel pair and step of four taps a word of
    channel ``2q`` then one of ``2q + 1``, holding taps ``4s, 4s + 2, 4s + 1, 4s + 3`` in
    bytes 0..3: SXTB16 widens it to the pair ``(4s, 4s + 1)``, SXTB16 ROR #8 to
    ``(4s + 2, 4s + 3)`` (:func:`conv_weight_bytes`). Then one :data:`RQ_RECORD_BYTES`
    record per (padded) output channel: signed 64-bit ``bias``, signed 32-bit ``mult``,
    signed 32-bit ``res_mult`` (0 without a residual). With ``acc`` the channel's dot product
    and ``y = acc * mult + bias``, plus ``res * res_mult`` with a residual (``res`` its value
    at the output's place, signed when ``res_signed``):

    ``rq_mode = RQ_GENERIC``: ``out = clamp(y >> shift, lo, hi)``, where ``bias`` already
    holds the rounding term ``2**(S-1)`` and ``shift`` is ``S``; ``out_lo``, ``out_hi`` are
    the golden model's clamp range of ``out_bits`` and ``out_signed``.

    ``rq_mode = RQ_FAST`` (chosen where it is exact for every possible ``acc``: an unsigned
    output and the bounds of :func:`requant_constants`): ``mult = M << k``, ``bias = (B +
    2**(S-1)) << k`` (``res_mult = R << k``) with ``k = 32 - S + d``, ``d = 8 - out_bits``
    (in ``shift``); then ``out = usat8(y >> 32) >> d``. The high word of one 32x32+64 bit
    multiply-accumulate (SMLAL), an 8-bit unsigned saturation (USAT) and a shift: the same
    integer as the golden rule, since ``floor(floor(y / 2**(S-d)) / 2**d) = floor(y / 2**S)``
    and clamping before the last shift clamps ``[0, 2**out_bits - 1]``.
``OFFLOAD``
    ``act_in_base`` / ``act_out_base``: word addresses of the accelerator's input and of the
    tensor the MCU reads back in the activation buffer, in the compiler's layout
    (``act_*_bits`` bits per value, ``ceil(bits / hw_a_bits)`` slice words per pixel and
    channel group, ``out_signed`` for the output).
``FC``
    Signed 8-bit weights ``(out_c, in_c)`` row-major at ``weights_offset``, signed 64-bit
    biases at ``params_offset``; logits are ``x @ weight.T + bias`` and the class is the
    first index of the largest logit (as :func:`numpy.argmax`).

``python -m compiler.firmware_blob --header`` writes the C declaration of this layout, of the
stages (:data:`STAGES`) and of the application's results record (:data:`RESULTS_FIELDS`) to
``firmware/include/cim_format.h`` (deterministic; a test fails if the checked-in copy is
stale).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import program as fmt
from contract.arith import weight_qmax
from contract.config import HwConfig, get_config
from model import data, evaluate, golden

from . import compile as compiler
from .partition import partition as partition_model

__all__ = ["HEADER_FIELDS", "OP_FIELDS", "BlobError", "build_blob", "check_blob",
           "parse_header", "render_header"]

MAGIC = 0x424D4943          # "CIMB" as little-endian bytes
VERSION = 3
SECTION_ALIGN = 8
WORKSPACE_ALIGN = 4096
CONV_MAX_STEPS = 1024   # 4096 taps: 16 KiB of im2col vectors per pixel pair
CONV16_MAX_STEPS = WORKSPACE_ALIGN // 16   # with 16-bit weights: within one aligned block
RQ_RECORD_BYTES = 16
MAX_OPS = 64
PARTITIONS = ("ACCEL", "MCU", "WHOLE")
"""What runs where (the header's ``partition``, numbered from 1): ``ACCEL`` the first conv
and the pooling and classifier on the MCU, the middle layers on the accelerator; ``MCU``
every layer on the MCU, no accelerator used; ``WHOLE`` every layer on the accelerator (the
MCU writes the image into the image buffer and reads the logits and the class)."""


@dataclass(frozen=True)
class Field:
    name: str
    meaning: str
    count: int = 1          # words (an array when more than one)


HEADER_FIELDS: tuple[Field, ...] = (
    Field("magic", "CIM_BLOB_MAGIC"),
    Field("version", "CIM_BLOB_VERSION"),
    Field("header_bytes", "size of this header"),
    Field("total_bytes", "size of the whole blob"),
    Field("crc32", "CRC-32 of bytes CIM_BLOB_CRC_START .. total_bytes"),
    Field("hw_rows", "hardware configuration: rows of a CIM macro"),
    Field("hw_cols", "columns of a CIM macro"),
    Field("hw_w_bits", "weight bits"),
    Field("hw_a_bits", "activation bits"),
    Field("hw_macros", "CIM macros"),
    Field("hw_adc_bits", "partial-sum ADC bits (0: ideal macro)"),
    Field("hw_write_rows", "weight rows per macro write beat"),
    Field("hw_double_buffer", "macros hold a shadow copy of their weights"),
    Field("hw_acc_width", "datapath accumulator bits"),
    Field("hw_bank_words", "words per activation-buffer bank"),
    Field("hw_prog_words", "layer-program memory words"),
    Field("hw_weight_words", "weight store words (whole weight rows, HwConfig.weight_store_words)"),
    Field("hw_param_words", "parameter memory words"),
    Field("hw_max_size", "largest layer input height or width"),
    Field("hw_max_groups", "largest input channel-group count"),
    Field("hw_max_pixels", "largest output pixel count"),
    Field("hw_desc_words", "32-bit words per layer descriptor"),
    Field("hw_param_record_words", "32-bit words per parameter record"),
    Field("hw_image_channels", "image-buffer channels (0: no image buffer)"),
    Field("hw_image_size", "image-buffer rows and row bytes per channel"),
    Field("hw_im2col_kernel", "lanes kernel K of the im2col layer"),
    Field("in_channels", "input image channels"),
    Field("in_height", "input image height"),
    Field("in_width", "input image width"),
    Field("pixel_max", "largest input pixel value"),
    Field("classes", "logits of the last op"),
    Field("partition", "CIM_PARTITION_*"),
    Field("ops_offset", "byte offset of the op records"),
    Field("ops_count", "number of op records"),
    Field("program_offset", "byte offset of the layer program"),
    Field("program_words", "layer-program words"),
    Field("weights_offset", "byte offset of the accelerator's weight image"),
    Field("weight_words", "weight-image words"),
    Field("params_offset", "byte offset of the accelerator's parameter image"),
    Field("param_words", "parameter-image words"),
    Field("workspace_bytes", "workspace the ops need"),
    Field("images_offset", "byte offset of the test images"),
    Field("images_count", "number of test images"),
    Field("labels_offset", "byte offset of the test labels (one word each)"),
    Field("expected_offset", "byte offset of the golden logits (int64 x classes each)"),
)
HEADER_BYTES = 4 * len(HEADER_FIELDS)
CRC_START = 4 * ([f.name for f in HEADER_FIELDS].index("crc32") + 1)

OP_KINDS = ("CONV", "MAXPOOL", "OFFLOAD", "AVGPOOL", "FC", "CLASSIFY")
"""Op kinds, numbered from 1."""
RQ_MODES = ("FAST", "GENERIC")
"""Requantization modes of a ``CONV`` op, numbered from 1."""

OP_FIELDS: tuple[Field, ...] = (
    Field("kind", "CIM_OP_*"),
    Field("in_offset", "workspace byte offset of the input (not the CONV on the image)"),
    Field("out_offset", "workspace byte offset of the output"),
    Field("in_c", "input channels (FC: features)"),
    Field("in_h", "input height"),
    Field("in_w", "input width"),
    Field("in_cstride", "bytes per input pixel (HWC tensors); 0: the CONV on the image (CHW)"),
    Field("in_signed", "input values are signed"),
    Field("out_c", "output channels (AVGPOOL, FC: features)"),
    Field("out_h", "output height"),
    Field("out_w", "output width"),
    Field("out_cstride", "bytes per output pixel (HWC tensors)"),
    Field("out_bits", "output bits (CONV, OFFLOAD)"),
    Field("out_signed", "output values are signed"),
    Field("out_lo", "smallest output value (two's complement; CONV)"),
    Field("out_hi", "largest output value (CONV)"),
    Field("kernel", "kernel size (CONV, MAXPOOL)"),
    Field("stride", "stride (CONV, MAXPOOL)"),
    Field("pad", "padding on every side (CONV, MAXPOOL)"),
    Field("rq_mode", "CIM_RQ_* (CONV)"),
    Field("shift", "RQ_GENERIC: S; RQ_FAST: d = 8 - out_bits (CONV)"),
    Field("steps", "tap count / 4, rounded up (CONV)"),
    Field("im2col_offset", "workspace offset of the im2col vectors, which end on a "
                           "CIM_WORKSPACE_ALIGN boundary (CONV)"),
    Field("gather_offset", "workspace byte offset of the im2col gather table (CONV)"),
    Field("padded_offset", "workspace byte offset of the zero-padded 16-bit image (CONV)"),
    Field("weights_offset", "blob byte offset of the weights (CONV, FC)"),
    Field("params_offset", "blob byte offset of the requant records (CONV), biases (FC)"),
    Field("act_in_base", "activation-buffer word address of the input (OFFLOAD)"),
    Field("act_in_bits", "bits per input value in the buffer (OFFLOAD)"),
    Field("act_out_base", "activation-buffer word address of the output (OFFLOAD)"),
    Field("act_out_bits", "bits per output value in the buffer (OFFLOAD)"),
    Field("w_bytes", "CONV weights: 2 signed 16-bit pairs, 1 signed bytes for SXTB16"),
    Field("residual", "1: the CONV adds res * res_mult before the shift"),
    Field("res_offset", "workspace byte offset of the residual (CONV)"),
    Field("res_cstride", "bytes per residual pixel (CONV)"),
    Field("res_signed", "residual values are signed (CONV)"),
)
OP_WORDS = len(OP_FIELDS)

STAGES = ("IDLE", "CONV", "MAXPOOL", "OFFLOAD_WRITE", "OFFLOAD_WAIT", "OFFLOAD_READ",
          "AVGPOOL", "FC", "LOAD", "CHECK")
"""Stages of a frame as the firmware marks them, numbered from 0 (``LOAD``: the application
loading the model into the accelerator; ``IDLE``: between frames; ``CHECK``: after the last
frame, the application comparing the logits it kept with the golden model's)."""

RESULTS_MAGIC = 0x52494D43   # "CIMR" as little-endian bytes
RUN_STATES = ("RUNNING", "DONE", "FAILED")
"""``state`` of the results record, numbered from 0."""
RESULTS_IMAGES = 64
RESULTS_FIELDS: tuple[Field, ...] = (
    Field("magic", "CIM_RESULTS_MAGIC once main() has started"),
    Field("state", "CIM_RUN_*"),
    Field("status", "cim_status_t of the first failure (0: none)"),
    Field("hw_error", "the accelerator's error code when status is CIM_ERR_HW"),
    Field("marker", "CIM_STAGE_* being run: written at every stage boundary"),
    Field("marks", "number of marker writes"),
    Field("images", "images classified"),
    Field("correct", "classes equal to the labels"),
    Field("agree", "classes equal to the golden model's"),
    Field("exact", "images whose logits equal the golden model's, bit for bit"),
    Field("accel_cycles", "accelerator cycles (CYCLES_TOTAL), summed over the images"),
    Field("stage_cycles", "MCU cycles (DWT CYCCNT; 0 without) per CIM_STAGE_*, summed",
          len(STAGES)),
    Field("classes", "class of image i (the first CIM_RESULTS_IMAGES images)",
          RESULTS_IMAGES),
)
"""The application's results record: ``cim_results`` at the start of RAM, where an emulator
or a debugger reads it (``firmware/README.md``)."""


class BlobError(ValueError):
    """The model cannot be turned into a firmware blob, or a blob is refused (the message
    says why). ``status``: for a refused blob, the ``cim_status_t`` name the firmware's
    ``cim_model_open`` / ``cim_check_model`` returns for it (``"ERR_BLOB_FORMAT"``...)."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- helpers


def _align(n: int, a: int = SECTION_ALIGN) -> int:
    return -(-n // a) * a


def cstride(channels: int) -> int:
    """Bytes per pixel of an HWC tensor in the workspace."""
    return _align(channels, 4)


def hwc_bytes(c: int, h: int, w: int) -> int:
    """Bytes of an HWC tensor; the pixel count is rounded up to even (the conv kernel writes
    pixels in pairs)."""
    return _align(h * w, 2) * cstride(c)


def conv_weight_words(weight: np.ndarray) -> np.ndarray:
    """uint32 words of a ``(Cout, Cin, k, k)`` conv in the firmware's SMLAD layout."""
    cout = weight.shape[0]
    taps = weight.reshape(cout, -1).astype(np.int64)
    steps = -(-taps.shape[1] // 4)
    w = np.zeros((_align(cout, 2), 4 * steps), np.int64)
    w[:cout, :taps.shape[1]] = taps
    halves = (w & 0xFFFF).reshape(-1, 2, 2 * steps, 2)    # (pair q, channel, tap pair, half)
    words = halves[..., 0] | (halves[..., 1] << 16)       # (q, channel, tap pair)
    return words.transpose(0, 2, 1).reshape(-1).astype(np.uint32)


def conv_weight_bytes(weight: np.ndarray) -> np.ndarray:
    """int8 bytes of a ``(Cout, Cin, k, k)`` conv in the firmware's SXTB16 layout (``w_bytes``
    1): per channel pair and step, a word of each channel whose bytes are taps 0, 2, 1, 3 of
    the step, so SXTB16 gives the tap pair (0, 1) and SXTB16 with ROR #8 the pair (2, 3)."""
    cout = weight.shape[0]
    taps = weight.reshape(cout, -1).astype(np.int64)
    steps = -(-taps.shape[1] // 4)
    w = np.zeros((_align(cout, 2), 4 * steps), np.int64)
    w[:cout, :taps.shape[1]] = taps
    w = w.reshape(-1, 2, steps, 4)[..., [0, 2, 1, 3]]       # (pair q, channel, step, byte)
    return w.transpose(0, 2, 1, 3).reshape(-1).astype(np.int8)


def requant_constants(node: dict, mult: np.ndarray, bias: np.ndarray, weight: np.ndarray,
                      in_max: int, *, allow_fast: bool = True, res_mult: np.ndarray | None = None,
                      res_max: int = 0) -> tuple[str, int, np.ndarray, np.ndarray, np.ndarray]:
    """``(rq_mode, shift, mult, bias, res_mult)`` of a conv on the MCU (see the module
    docstring); ``res_max``: the largest magnitude of the residual.

    ``RQ_FAST`` when ``allow_fast`` and, for every channel and every accumulator the inputs
    ``0 .. in_max`` can produce, the scaled multiply-accumulate stays inside 64 bits and the
    scaled multipliers inside 32; otherwise ``RQ_GENERIC``. The dot product itself must fit
    the 32-bit SMLAD accumulator."""
    s, bits = node["shift"], node["out_bits"]
    m = [int(v) for v in mult]
    b = [int(v) + (1 << (s - 1)) for v in bias]
    r = [0] * len(m) if res_mult is None else [int(v) for v in res_mult]
    w = weight.reshape(weight.shape[0], -1).astype(np.int64)
    acc_max = [in_max * int(max(np.clip(row, 0, None).sum(), -np.clip(row, None, 0).sum()))
               for row in w]
    if max(acc_max) >= 1 << 31:
        raise BlobError(f"layer {node['name']!r}: the dot product does not fit 32 bits")

    def fits(ms, bs, rs):
        return all(a * abs(mv) + abs(bv) + res_max * abs(rv) < 1 << 63
                   for a, mv, bv, rv in zip(acc_max, ms, bs, rs))

    d = 8 - bits
    k = 32 - s + d
    if allow_fast and not node["out_signed"] and k >= 0:
        mk, bk, rk = ([v << k for v in x] for x in (m, b, r))
        if all(abs(v) < 1 << 31 for v in mk + rk) and fits(mk, bk, rk):
            return ("FAST", d, np.array(mk, np.int64), np.array(bk, np.int64),
                    np.array(rk, np.int64))
    if not fits(m, b, r):
        raise BlobError(f"layer {node['name']!r}: requantization does not fit 64 bits")
    return "GENERIC", s, np.array(m, np.int64), np.array(b, np.int64), np.array(r, np.int64)


RQ_DTYPE = np.dtype([("bias", "<i8"), ("mult", "<i4"), ("res_mult", "<i4")])


def rq_records(mult: np.ndarray, bias: np.ndarray, channels: int,
               res_mult: np.ndarray | None = None) -> bytes:
    """:data:`RQ_RECORD_BYTES` records (bias int64, mult int32, res_mult int32: 0 without a
    residual), zero-padded to ``channels``."""
    rec = np.zeros(channels, dtype=RQ_DTYPE)
    rec["bias"][:len(bias)] = bias
    rec["mult"][:len(mult)] = mult
    if res_mult is not None:
        rec["res_mult"][:len(res_mult)] = res_mult
    return rec.tobytes()


# ----------------------------------------------------------------------------- the blob


class _Sections:
    """Appends aligned sections after the header and remembers their offsets."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = HEADER_BYTES

    def add(self, payload: bytes) -> int:
        pad = _align(self.size) - self.size
        if pad:
            self.parts.append(bytes(pad))
            self.size += pad
        offset = self.size
        self.parts.append(payload)
        self.size += len(payload)
        return offset


def _hw_words(config: HwConfig) -> dict[str, int]:
    return {f"hw_{k}": int(v) for k, v in (
        ("rows", config.rows), ("cols", config.cols), ("w_bits", config.w_bits),
        ("a_bits", config.a_bits), ("macros", config.macros),
        ("adc_bits", config.adc_bits or 0), ("write_rows", config.write_rows),
        ("double_buffer", config.double_buffer), ("acc_width", config.acc_width),
        ("bank_words", config.bank_words), ("prog_words", config.prog_words),
        ("weight_words", config.weight_store_words), ("param_words", config.param_words),
        ("max_size", config.max_size), ("max_groups", config.max_groups),
        ("max_pixels", config.max_pixels), ("desc_words", fmt.DESC_WORDS),
        ("param_record_words", fmt.PARAM_WORDS), ("image_channels", config.image_channels),
        ("image_size", config.image_size), ("im2col_kernel", config.im2col_kernel))}


def _chain(model: golden.IntModel, program: compiler.Program) -> tuple[list, list]:
    """The MCU nodes before and after the accelerator, checked to be the chain the firmware
    runs: conv (reading the image), maxpools, [accelerator], avgpool, fc."""
    pre, post = [], []
    accel = set(program.names)
    seen_accel = False
    for n in model.nodes:
        if n["name"] in accel:
            seen_accel = True
            continue
        (post if seen_accel else pre).append(n)
    where = f"{model.path}: the firmware runs conv, maxpool..., accelerator, avgpool, fc"
    if not pre or pre[0]["op"] != "conv" or pre[0]["inputs"] != ["input"]:
        raise BlobError(f"{where}; the first node must be a conv on the MCU reading the input")
    for prev, n in zip(pre, pre[1:]):
        if n["op"] != "maxpool" or n["inputs"] != [prev["name"]]:
            raise BlobError(f"{where}; node {n['name']!r} is not a maxpool of {prev['name']!r}")
    if program.input_name != pre[-1]["name"]:
        raise BlobError(f"{where}; the accelerator reads {program.input_name!r}, not "
                        f"{pre[-1]['name']!r}")
    if [n["op"] for n in post] != ["avgpool", "fc"] or post[1]["inputs"] != [post[0]["name"]]:
        raise BlobError(f"{where}; after the accelerator come {[n['op'] for n in post]}")
    if post[0]["inputs"][0] not in accel:
        raise BlobError(f"{where}; avgpool must read an accelerator layer")
    return pre, post


def _conv_op(model: golden.IntModel, node: dict, sec: _Sections, in_max: int, fast: bool,
             w_bytes: int, res_max: int | None = None) -> dict:
    """The fields of a ``CONV`` op that follow from the node, its weights (added to ``sec``)
    and requantization records; ``res_max`` (the residual's largest magnitude) for a conv
    with a residual. The caller adds the input, residual and workspace fields."""
    name = node["name"]
    wgt = model.array(name, "weight")
    k, cin, cout = node["kernel"], node["in_channels"], node["out_channels"]
    steps = -(-cin * k * k // 4)
    limit = CONV_MAX_STEPS if w_bytes == 1 else CONV16_MAX_STEPS
    if steps > limit:
        raise BlobError(f"layer {name!r}: {cin * k * k} taps per output; the firmware "
                        f"takes at most {4 * limit} with {8 * w_bytes}-bit weights")
    residual = res_max is not None
    mode, shift, mult, bias, rmult = requant_constants(
        node, model.array(name, "mult"), model.array(name, "bias"), wgt, in_max,
        allow_fast=fast, res_mult=model.array(name, "res_mult") if residual else None,
        res_max=res_max or 0)
    lo, hi = golden.act_range(node["out_bits"], node["out_signed"])
    _, oh, ow = node["shape"]
    packed = conv_weight_words(wgt) if w_bytes == 2 else conv_weight_bytes(wgt)
    return _new_op(kind=OP_KINDS.index("CONV") + 1, in_c=cin, out_c=cout, out_h=oh, out_w=ow,
                out_cstride=cstride(cout), out_bits=node["out_bits"],
                out_signed=int(node["out_signed"]), out_lo=lo & 0xFFFFFFFF, out_hi=hi,
                kernel=k, stride=node["stride"], pad=node["padding"],
                rq_mode=RQ_MODES.index(mode) + 1, shift=shift, steps=steps, w_bytes=w_bytes,
                residual=int(residual), weights_offset=sec.add(packed.tobytes()),
                params_offset=sec.add(rq_records(mult, bias, _align(cout, 2),
                                                 rmult if residual else None)))


def _new_op(**f) -> dict:
    rec = {fl.name: 0 for fl in OP_FIELDS}
    rec.update(f)
    return rec


def _fc_op(model: golden.IntModel, fc: dict, sec: _Sections) -> dict:
    if fc["w_bits"] > 8 or weight_qmax(fc["w_bits"]) > 127:
        raise BlobError(f"layer {fc['name']!r}: FC weights wider than 8 bits")
    fcw = model.array(fc["name"], "weight").astype(np.int8)
    fcb = model.array(fc["name"], "bias").astype("<i8")
    return _new_op(kind=OP_KINDS.index("FC") + 1, in_c=fc["in_features"], in_h=1, in_w=1,
                   in_signed=1, out_c=fc["out_features"], out_h=1, out_w=1, out_signed=1,
                   weights_offset=sec.add(fcw.tobytes()), params_offset=sec.add(fcb.tobytes()))


def _out_bytes(op: dict) -> int:
    """Workspace bytes of an op's output: HWC bytes, AVGPOOL's int32 sums, FC's int64
    logits."""
    kind = OP_KINDS[op["kind"] - 1]
    if kind in ("CONV", "MAXPOOL", "OFFLOAD"):
        return _hwc(op["out_h"], op["out_w"], op["out_cstride"])
    return (4 if kind == "AVGPOOL" else 8) * op["out_c"]


def _padded_halfwords(op: dict) -> int:
    """Halfwords of a CONV's zero-padded 16-bit input, with the zero for the pad taps."""
    return op["in_c"] * (op["in_h"] + 2 * op["pad"]) * (op["in_w"] + 2 * op["pad"]) + 1


def _accel_ops(model: golden.IntModel, config: HwConfig, sec: _Sections, hdr: dict,
               fast: bool) -> tuple[list[dict], compiler.Program]:
    """The ``ACCEL`` partition: conv, maxpools, the accelerator's program, avgpool, fc."""
    program = compiler.compile_model(model, config)
    pre, post = _chain(model, program)
    c, h, w = model.input_shape
    ops = []
    # Workspace: [im2col, ending at WORKSPACE_ALIGN] [region 0] [region 1] [gather table,
    # padded image]; op i writes region i % 2 and reads the other, so the chain ping-pongs.
    region_bytes = [0, 0]
    outs = []

    conv = pre[0]
    ops.append(_conv_op(model, conv, sec, hdr["pixel_max"], fast, 2))
    ops[0].update(in_h=h, in_w=w)
    steps = ops[0]["steps"]
    base = _align(16 * steps, WORKSPACE_ALIGN)
    ops[0]["im2col_offset"] = base - 16 * steps
    _, oh, ow = conv["shape"]
    cout = conv["out_channels"]
    outs.append(hwc_bytes(cout, oh, ow))
    shape, signed = (cout, oh, ow), bool(conv["out_signed"])
    for n in pre[1:]:
        nc, nh, nw = n["shape"]
        ops.append(_new_op(
            kind=OP_KINDS.index("MAXPOOL") + 1, in_c=shape[0], in_h=shape[1], in_w=shape[2],
            in_cstride=cstride(shape[0]), in_signed=int(signed), out_c=nc, out_h=nh, out_w=nw,
            out_cstride=cstride(nc), out_signed=int(signed), kernel=n["kernel"],
            stride=n["stride"], pad=n["padding"]))
        outs.append(hwc_bytes(nc, nh, nw))
        shape = (nc, nh, nw)
    src = program.buffers[program.input_name]
    dst = program.buffers[post[0]["inputs"][0]]
    ops.append(_new_op(
        kind=OP_KINDS.index("OFFLOAD") + 1, in_c=shape[0], in_h=shape[1], in_w=shape[2],
        in_cstride=cstride(shape[0]), out_c=dst.shape[0], out_h=dst.shape[1],
        out_w=dst.shape[2], out_cstride=cstride(dst.shape[0]), out_bits=dst.bits,
        out_signed=int(dst.signed), act_in_base=src.base, act_in_bits=src.bits,
        act_out_base=dst.base, act_out_bits=dst.bits))
    outs.append(hwc_bytes(*dst.shape))
    ops.append(_new_op(
        kind=OP_KINDS.index("AVGPOOL") + 1, in_c=dst.shape[0], in_h=dst.shape[1],
        in_w=dst.shape[2], in_cstride=cstride(dst.shape[0]), in_signed=int(dst.signed),
        out_c=dst.shape[0], out_h=1, out_w=1, out_signed=1))
    outs.append(4 * dst.shape[0])
    ops.append(_fc_op(model, post[1], sec))
    outs.append(8 * post[1]["out_features"])

    for i, nbytes in enumerate(outs):
        region_bytes[i % 2] = max(region_bytes[i % 2], _align(nbytes))
    region = [base, base + region_bytes[0]]
    for i, rec in enumerate(ops):
        rec["out_offset"] = region[i % 2]
        rec["in_offset"] = region[(i - 1) % 2] if i else 0
    scratch = region[1] + region_bytes[1]
    ops[0].update(gather_offset=scratch, padded_offset=scratch + 16 * steps)
    hdr["workspace_bytes"] = _align(scratch + 16 * steps + 2 * _padded_halfwords(ops[0]))
    return ops, program


def _whole_ops(model: golden.IntModel, config: HwConfig,
               hdr: dict) -> tuple[list[dict], compiler.Program]:
    """The ``WHOLE`` partition: one ``CLASSIFY`` op, the image in, the logits out (signed
    64-bit, at workspace offset 0)."""
    program = compiler.compile_model(partition_model(model, "whole"), config)
    if not (program.image and program.raw):
        raise BlobError(f"{model.path}: the WHOLE partition needs the whole network on the "
                        f"accelerator, the image through the image buffer of {config.name!r} "
                        f"(image_channels={config.image_channels}, image_size="
                        f"{config.image_size}, im2col_kernel={config.im2col_kernel}) and the "
                        "classifier as its last layer")
    c, h, w = model.input_shape
    op = _new_op(kind=OP_KINDS.index("CLASSIFY") + 1, in_c=c, in_h=h, in_w=w,
                 out_c=hdr["classes"], out_h=1, out_w=1, out_signed=1)
    hdr["workspace_bytes"] = _align(8 * hdr["classes"], WORKSPACE_ALIGN)
    return [op], program


def _mcu_ops(model: golden.IntModel, sec: _Sections, hdr: dict, fast: bool,
             w_bytes: int | None) -> list[dict]:
    """The ``MCU`` partition: one op per node, in the model's order. The first node is a conv
    on the image; convs and maxpools read HWC bytes (a conv's residual too), an avgpool reads
    HWC bytes, an fc an avgpool's sums, and the last node is the fc (the logits). Conv
    weights: ``w_bytes``, or (None) 16-bit where the im2col vectors fit one aligned block
    (:data:`CONV16_MAX_STEPS`), 8-bit otherwise."""
    c, h, w = model.input_shape
    nodes = model.nodes
    where = f"{model.path}: the MCU partition"
    if nodes[0]["op"] != "conv" or nodes[0]["inputs"] != ["input"]:
        raise BlobError(f"{where} starts with a conv on the input")
    if nodes[-1]["op"] != "fc":
        raise BlobError(f"{where} ends with the fc that gives the logits")
    # name -> (op index, kind, shape, signed, largest magnitude)
    made: dict[str, tuple] = {}
    reads: list[list[str]] = []
    ops = []

    def hwc_input(n, name, unsigned=True):
        src = made.get(name)
        if src is None or src[1] not in ("CONV", "MAXPOOL") or (unsigned and src[3]):
            raise BlobError(f"{where}: node {n['name']!r} reads {name!r}, which is not "
                            f"{'an unsigned ' if unsigned else 'a '}conv or maxpool output")
        return src

    for i, n in enumerate(nodes):
        if i and "input" in n["inputs"]:
            raise BlobError(f"{where}: only the first node may read the input")
        op = n["op"]
        if op == "conv":
            steps = -(-n["in_channels"] * n["kernel"] ** 2 // 4)
            wb = w_bytes or (2 if steps <= CONV16_MAX_STEPS else 1)
            res = hwc_input(n, n["inputs"][1], unsigned=False) if len(n["inputs"]) == 2 \
                else None
            if i == 0:
                rec = _conv_op(model, n, sec, hdr["pixel_max"], fast, wb)
                rec.update(in_h=h, in_w=w)
            else:
                src = hwc_input(n, n["inputs"][0])
                rec = _conv_op(model, n, sec, src[4], fast, wb,
                               None if res is None else res[4])
                rec.update(in_h=src[2][1], in_w=src[2][2], in_cstride=cstride(src[2][0]))
            if res is not None:
                rec.update(res_cstride=cstride(res[2][0]), res_signed=int(res[3]))
            lo, hi = golden.act_range(n["out_bits"], n["out_signed"])
            made[n["name"]] = (i, "CONV", tuple(n["shape"]), bool(n["out_signed"]),
                               max(-lo, hi))
        elif op == "maxpool":
            src = hwc_input(n, n["inputs"][0])
            nc, nh, nw = n["shape"]
            rec = _new_op(kind=OP_KINDS.index("MAXPOOL") + 1, in_c=nc, in_h=src[2][1],
                          in_w=src[2][2], in_cstride=cstride(nc), out_c=nc, out_h=nh,
                          out_w=nw, out_cstride=cstride(nc), kernel=n["kernel"],
                          stride=n["stride"], pad=n["padding"])
            made[n["name"]] = (i, "MAXPOOL", tuple(n["shape"]), False, src[4])
        elif op == "avgpool":
            src = hwc_input(n, n["inputs"][0], unsigned=False)
            sc, sh, sw = src[2]
            rec = _new_op(kind=OP_KINDS.index("AVGPOOL") + 1, in_c=sc, in_h=sh, in_w=sw,
                          in_cstride=cstride(sc), in_signed=int(src[3]), out_c=sc, out_h=1,
                          out_w=1, out_signed=1)
            made[n["name"]] = (i, "AVGPOOL", (sc,), True, 0)
        else:
            src = made.get(n["inputs"][0])
            if src is None or src[1] != "AVGPOOL" or i != len(nodes) - 1:
                raise BlobError(f"{where}: the fc must be the last node and read an avgpool")
            rec = _fc_op(model, n, sec)
            made[n["name"]] = (i, "FC", (n["out_features"],), True, 0)
        ops.append(rec)
        reads.append([x for x in n["inputs"] if x != "input"])

    # Scratch shared by every conv: [im2col, ending on a WORKSPACE_ALIGN boundary] [gather
    # table] [padded image]; then the tensors, each placed at the lowest offset where it
    # overlaps no tensor still to be read.
    steps = max(o["steps"] for o in ops if o["kind"] == OP_KINDS.index("CONV") + 1)
    padded = max(_padded_halfwords(o) for o in ops if o["kind"] == OP_KINDS.index("CONV") + 1)
    base = _align(16 * steps, WORKSPACE_ALIGN)
    scratch_end = _align(base + 16 * steps) + 2 * padded
    last_read = {n["name"]: max([j for j, r in enumerate(reads) if n["name"] in r],
                                default=len(nodes)) for n in nodes}
    placed: dict[str, tuple[int, int]] = {}
    for i, (n, rec) in enumerate(zip(nodes, ops)):
        size = _out_bytes(rec)
        live = sorted(v for k, v in placed.items() if last_read[k] >= i)
        at = _align(scratch_end)
        for start, end in live:
            if at + size <= start:
                break
            at = max(at, _align(end))
        placed[n["name"]] = (at, at + size)
        rec["out_offset"] = at
        if rec["kind"] == OP_KINDS.index("CONV") + 1:
            rec.update(im2col_offset=base - 16 * rec["steps"], gather_offset=base,
                       padded_offset=_align(base + 16 * steps))
        if reads[i]:
            rec["in_offset"] = placed[reads[i][0]][0]
        if rec.get("residual"):
            rec["res_offset"] = placed[reads[i][1]][0]
    hdr["workspace_bytes"] = _align(max(end for _, end in placed.values()))
    return ops


def build_blob(model: golden.IntModel, config: HwConfig, images: np.ndarray | None = None,
               labels: np.ndarray | None = None, *, fast_requant: bool = True,
               partition: str = "accel", mcu_w_bytes: int | None = None) -> bytes:
    """The firmware blob of ``model`` compiled for ``config``, with optional test images
    ``(N, C, H, W)`` (pixels ``0 .. pixel_max``) and their labels. ``partition``: ``"accel"``
    (the middle layers on the accelerator), ``"whole"`` (every layer on the accelerator) or
    ``"mcu"`` (every layer on the MCU; no accelerator program, ``config`` only recorded).
    ``fast_requant=False`` gives every MCU conv ``RQ_GENERIC`` (the portable path, to
    compare). ``mcu_w_bytes`` (MCU partition):
    1 stores every conv's weights as bytes (half the flash), 2 as 16-bit pairs (fewer
    instructions; at most :data:`CONV16_MAX_STEPS` steps), None picks 2 where it can.
    :class:`BlobError` (or :class:`~compiler.CompileError`) says why a model cannot be
    built."""
    if partition not in ("accel", "mcu", "whole"):
        raise BlobError(f"partition must be 'accel', 'whole' or 'mcu', not {partition!r}")
    if mcu_w_bytes not in (None, 1, 2):
        raise BlobError(f"mcu_w_bytes must be None, 1 or 2, not {mcu_w_bytes!r}")
    sec = _Sections()
    hdr = {f.name: 0 for f in HEADER_FIELDS}
    c, h, w = model.input_shape
    last = model.nodes[-1]
    if last["op"] != "fc":
        raise BlobError(f"{model.path}: the last node must be the fc giving the logits")
    hdr.update(_hw_words(config), in_channels=c, in_height=h, in_width=w,
               pixel_max=model.manifest["input"]["pixel_max"],
               classes=last["out_features"],
               partition=PARTITIONS.index(partition.upper()) + 1)
    if partition in ("accel", "whole"):
        ops, program = (_accel_ops(model, config, sec, hdr, fast_requant)
                        if partition == "accel" else _whole_ops(model, config, hdr))
        prog = program.program_words().astype("<u4")
        wimg = program.weight_image.astype("<u4")
        pimg = program.param_image.astype("<u4")
    else:
        ops = _mcu_ops(model, sec, hdr, fast_requant, mcu_w_bytes)
        prog = wimg = pimg = np.zeros(0, "<u4")
    if len(ops) > MAX_OPS:
        raise BlobError(f"{len(ops)} ops; the firmware takes at most {MAX_OPS}")

    hdr["ops_count"] = len(ops)
    hdr["ops_offset"] = sec.add(np.array([[r[f.name] for f in OP_FIELDS] for r in ops],
                                         dtype="<u4").tobytes())
    hdr["program_words"] = len(prog)
    hdr["program_offset"] = sec.add(prog.tobytes())
    hdr["weight_words"] = len(wimg)
    hdr["weights_offset"] = sec.add(wimg.tobytes())
    hdr["param_words"] = len(pimg)
    hdr["params_offset"] = sec.add(pimg.tobytes())

    if images is None:
        images = np.zeros((0, c, h, w), np.uint8)
    images = golden.check_input(model, images).astype(np.uint8)
    labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels)
    if labels.shape != (len(images),):
        raise BlobError(f"{len(labels)} labels for {len(images)} images")
    logits = (golden.run(model, images)[model.manifest["output"]] if len(images)
              else np.zeros((0, hdr["classes"]), np.int64))
    hdr["images_count"] = len(images)
    hdr["images_offset"] = sec.add(images.tobytes())
    hdr["labels_offset"] = sec.add(labels.astype("<u4").tobytes())
    hdr["expected_offset"] = sec.add(logits.astype("<i8").tobytes())

    body = b"".join(sec.parts)
    hdr.update(magic=MAGIC, version=VERSION, header_bytes=HEADER_BYTES,
               total_bytes=HEADER_BYTES + len(body))
    head = np.array([hdr[f.name] for f in HEADER_FIELDS], dtype="<u4").tobytes()
    blob = bytearray(head + body)
    crc = zlib.crc32(bytes(blob[CRC_START:]))
    blob[CRC_START - 4:CRC_START] = crc.to_bytes(4, "little")
    return bytes(blob)


def parse_header(blob: bytes) -> dict[str, int]:
    """The header words of ``blob`` by name (no checks)."""
    words = np.frombuffer(blob[:HEADER_BYTES], dtype="<u4")
    return {f.name: int(v) for f, v in zip(HEADER_FIELDS, words)}


def parse_ops(blob: bytes) -> list[dict[str, int]]:
    """The op records of ``blob`` by field name (no checks)."""
    h = parse_header(blob)
    words = np.frombuffer(blob, dtype="<u4", count=h["ops_count"] * OP_WORDS,
                          offset=h["ops_offset"]).reshape(-1, OP_WORDS)
    return [{f.name: int(v) for f, v in zip(OP_FIELDS, rec)} for rec in words]


# ----------------------------------------------------------------------------- the check


class _Refuse(Exception):
    def __init__(self, status: str, why: str):
        self.status, self.why = status, why


def _require(ok, why: str, status: str = "ERR_BLOB_FORMAT") -> None:
    if not ok:
        raise _Refuse(status, why)


def _u32(blob: bytes, offset: int, count: int) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u4", count=count, offset=offset).astype(np.int64)


def _section(h, offset: int, size: int) -> bool:
    return offset % SECTION_ALIGN == 0 and offset >= h["header_bytes"] and \
        offset + size <= h["total_bytes"]


def _geometry(n_in: int, n_out: int, k: int, s: int, p: int) -> bool:
    return (1 <= k <= 15 and 1 <= s <= 15 and p < k and n_in + 2 * p >= k
            and n_out == (n_in + 2 * p - k) // s + 1)


def _hwc_ok(c: int, cs: int) -> bool:
    return c >= 1 and cs >= c and cs % 4 == 0


def _hwc(h: int, w: int, cs: int) -> int:
    return _align(h * w, 2) * cs


def _kind(op: dict) -> str | None:
    return OP_KINDS[op["kind"] - 1] if 1 <= op["kind"] <= len(OP_KINDS) else None


class _Ws:
    """Workspace areas: inside the workspace, 8-byte aligned; and disjointness."""

    def __init__(self, h: dict):
        self.ws = h["workspace_bytes"]

    def area(self, offset, size):
        return offset % 8 == 0 and offset + size <= self.ws

    @staticmethod
    def disjoint(a, alen, b, blen):
        return a + alen <= b or b + blen <= a


def _conv_areas(c: dict) -> list[tuple[int, int]]:
    """The workspace areas a CONV writes: im2col, gather table, padded image, output."""
    xbytes = 16 * c["steps"]
    padded = 2 * (c["in_c"] * (c["in_h"] + 2 * c["pad"]) * (c["in_w"] + 2 * c["pad"]) + 1)
    return [(c["im2col_offset"], xbytes), (c["gather_offset"], xbytes),
            (c["padded_offset"], padded),
            (c["out_offset"], _hwc(c["out_h"], c["out_w"], c["out_cstride"]))]


def _written(op: dict) -> list[tuple[int, int]]:
    """Every workspace area an op writes."""
    if _kind(op) == "CONV":
        return _conv_areas(op)
    return [(op["out_offset"], _out_bytes(op))]


def _conv_weight_bytes(c: dict) -> int:
    return (c["out_c"] + 1) // 2 * (16 if c["w_bytes"] == 2 else 8) * c["steps"]


def _check_conv(h: dict, c: dict, i: int) -> None:
    """``conv_ok``: a CONV's shapes, requantization fields, sections and workspace areas
    (its own: what it reads against what it writes)."""
    ws = _Ws(h)
    cpairs = (c["out_c"] + 1) // 2
    taps = c["in_c"] * c["kernel"] ** 2
    lo, hi = _s32(c["out_lo"]), _s32(c["out_hi"])
    bits = c["out_bits"]
    rng = ((-(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1) if c["out_signed"]
           else (0, (1 << bits) - 1))
    image = c["in_cstride"] == 0
    reads = [] if image else [(c["in_offset"], _hwc(c["in_h"], c["in_w"], c["in_cstride"]))]
    if c["residual"] == 1:
        reads.append((c["res_offset"], _hwc(c["out_h"], c["out_w"], c["res_cstride"])))
    _require((c["in_c"], c["in_h"], c["in_w"], c["in_offset"], c["in_signed"])
             == (h["in_channels"], h["in_height"], h["in_width"], 0, 0) if image
             else _hwc_ok(c["in_c"], c["in_cstride"]) and c["in_signed"] == 0,
             f"CONV op {i}: input shape or layout")
    _require(_geometry(c["in_h"], c["out_h"], c["kernel"], c["stride"], c["pad"])
             and _geometry(c["in_w"], c["out_w"], c["kernel"], c["stride"], c["pad"])
             and _hwc_ok(c["out_c"], c["out_cstride"]) and c["out_cstride"] >= 2 * cpairs
             and 1 <= bits <= 8 and c["out_signed"] <= 1
             and (bits >= 2 or not c["out_signed"]) and (lo, hi) == rng,
             f"CONV op {i}: shapes, geometry or output range inconsistent")
    _require(1 <= c["steps"] <= CONV_MAX_STEPS and c["steps"] == -(-taps // 4),
             f"CONV op {i}: steps {c['steps']}, the {taps} taps take {-(-taps // 4)}")
    if c["rq_mode"] == RQ_MODES.index("FAST") + 1:
        _require(not c["out_signed"] and c["shift"] == 8 - bits, f"CONV op {i}: RQ_FAST fields")
    else:
        _require(c["rq_mode"] == RQ_MODES.index("GENERIC") + 1 and 1 <= c["shift"] <= 63,
                 f"CONV op {i}: rq_mode or shift")
    _require(c["w_bytes"] in (1, 2) and c["residual"] <= 1
             and (c["w_bytes"] == 1 or c["steps"] <= CONV16_MAX_STEPS)
             and (_hwc_ok(c["out_c"], c["res_cstride"]) and c["res_signed"] <= 1
                  if c["residual"] else
                  (c["res_offset"], c["res_cstride"], c["res_signed"]) == (0, 0, 0)),
             f"CONV op {i}: weight format or residual fields")
    _require(_section(h, c["weights_offset"], _conv_weight_bytes(c))
             and _section(h, c["params_offset"], 2 * cpairs * RQ_RECORD_BYTES),
             f"CONV op {i}: weights or requantization records outside the blob")
    areas = _conv_areas(c)
    xbytes = 16 * c["steps"]
    _require(all(ws.area(*a) for a in areas + reads)
             and (c["im2col_offset"] + xbytes) % WORKSPACE_ALIGN == 0
             and all(ws.disjoint(*a, *b) for j, a in enumerate(areas) for b in areas[j + 1:])
             and all(ws.disjoint(*a, *r) for a in areas for r in reads),
             f"CONV op {i}: workspace areas outside the workspace or overlapping")


def _pool_ok(h: dict, op: dict) -> bool:
    """``maxpool_ok``."""
    ws = _Ws(h)
    fin = _hwc(op["in_h"], op["in_w"], op["in_cstride"])
    fout = _hwc(op["out_h"], op["out_w"], op["out_cstride"])
    return (op["in_signed"] == 0 and op["out_signed"] == 0
            and op["out_c"] == op["in_c"] and op["out_cstride"] == op["in_cstride"]
            and _hwc_ok(op["in_c"], op["in_cstride"])
            and _geometry(op["in_h"], op["out_h"], op["kernel"], op["stride"], op["pad"])
            and _geometry(op["in_w"], op["out_w"], op["kernel"], op["stride"], op["pad"])
            and ws.area(op["in_offset"], fin) and ws.area(op["out_offset"], fout)
            and ws.disjoint(op["in_offset"], fin, op["out_offset"], fout))


def _avgpool_ok(h: dict, avg: dict) -> bool:
    ws = _Ws(h)
    fin = _hwc(avg["in_h"], avg["in_w"], avg["in_cstride"])
    return (_hwc_ok(avg["in_c"], avg["in_cstride"])
            and avg["in_signed"] <= 1 and avg["out_c"] == avg["in_c"]
            and ws.area(avg["in_offset"], fin) and ws.area(avg["out_offset"], 4 * avg["out_c"])
            and ws.disjoint(avg["in_offset"], fin, avg["out_offset"], 4 * avg["out_c"]))


def _fc_ok(h: dict, fc: dict) -> bool:
    ws = _Ws(h)
    return (fc["out_c"] == h["classes"] and fc["out_c"] >= 1
            and _section(h, fc["weights_offset"], fc["out_c"] * fc["in_c"])
            and _section(h, fc["params_offset"], 8 * fc["out_c"])
            and ws.area(fc["in_offset"], 4 * fc["in_c"])
            and ws.area(fc["out_offset"], 8 * fc["out_c"])
            and ws.disjoint(fc["in_offset"], 4 * fc["in_c"], fc["out_offset"], 8 * fc["out_c"]))


def _check_ops(h: dict, ops: list[dict]) -> dict | None:
    """``ops_ok`` of cim_model.c: the chain of the blob's partition, its shapes, its sections
    and workspace areas; returns the OFFLOAD op (None for the MCU partition)."""
    if h["partition"] == PARTITIONS.index("MCU") + 1:
        _check_mcu_ops(h, ops)
        return None
    ws = _Ws(h)
    if h["partition"] == PARTITIONS.index("WHOLE") + 1:
        kinds = [_kind(o) for o in ops]
        _require(kinds == ["CLASSIFY"], f"the WHOLE partition's ops are {kinds}, not CLASSIFY")
        op = ops[0]
        _require((op["in_c"], op["in_h"], op["in_w"]) == (h["in_channels"], h["in_height"],
                                                          h["in_width"])
                 and op["in_c"] <= h["hw_image_channels"]
                 and max(op["in_h"], op["in_w"]) <= h["hw_image_size"]
                 and (op["out_c"], op["out_h"], op["out_w"], op["out_signed"])
                 == (h["classes"], 1, 1, 1)
                 and ws.area(op["out_offset"], 8 * h["classes"]),
                 "CLASSIFY: inconsistent with the image, the image buffer, the classes or the "
                 "workspace")
        return op

    def chained(prev, op):
        return all(op[f"in_{f}"] == prev[f"out_{f}"] for f in
                   ("c", "h", "w", "cstride", "signed", "offset"))

    kinds = [_kind(o) for o in ops]
    n = len(ops)
    _require(n >= 4 and kinds[0] == "CONV", f"op 0 is {kinds[0]}, not CONV")
    c = ops[0]
    _require(c["in_cstride"] == 0 and c["w_bytes"] == 2 and c["residual"] == 0,
             "CONV: the ACCEL partition's conv reads the image with 16-bit weights")
    _check_conv(h, c, 0)
    i = 1
    while i < n and kinds[i] == "MAXPOOL":
        _require(chained(ops[i - 1], ops[i]) and _pool_ok(h, ops[i]),
                 f"MAXPOOL op {i}: inconsistent with its input, geometry or workspace")
        i += 1
    _require(n - i == 3 and kinds[i:] == ["OFFLOAD", "AVGPOOL", "FC"],
             f"the ops are {kinds}, not CONV, MAXPOOL..., OFFLOAD, AVGPOOL, FC")
    off, avg, fc = ops[i:]

    def act_words(ch, hh, w, bits):
        return hh * w * -(-ch // h["hw_rows"]) * -(-bits // h["hw_a_bits"])

    act = 2 * h["hw_bank_words"]
    fin = _hwc(off["in_h"], off["in_w"], off["in_cstride"])
    fout = _hwc(off["out_h"], off["out_w"], off["out_cstride"])
    _require(chained(ops[i - 1], off) and off["in_signed"] == 0
             and off["act_in_bits"] == h["hw_a_bits"]
             and _hwc_ok(off["in_c"], off["in_cstride"])
             and _hwc_ok(off["out_c"], off["out_cstride"])
             and off["out_h"] >= 1 and off["out_w"] >= 1 and 1 <= off["act_out_bits"] <= 8
             and off["out_bits"] == off["act_out_bits"] and off["out_signed"] <= 1
             and off["act_in_base"] + act_words(off["in_c"], off["in_h"], off["in_w"],
                                                off["act_in_bits"]) <= act
             and off["act_out_base"] + act_words(off["out_c"], off["out_h"], off["out_w"],
                                                 off["act_out_bits"]) <= act
             and ws.area(off["in_offset"], fin) and ws.area(off["out_offset"], fout)
             and ws.disjoint(off["in_offset"], fin, off["out_offset"], fout),
             "OFFLOAD: inconsistent with its input, the activation buffer or the workspace")
    _require(chained(off, avg) and _avgpool_ok(h, avg),
             "AVGPOOL: inconsistent with its input or the workspace")
    _require(fc["in_c"] == avg["out_c"] and fc["in_offset"] == avg["out_offset"]
             and _fc_ok(h, fc),
             "FC: inconsistent with its input, the classes, the blob or the workspace")
    return off


def _check_mcu_ops(h: dict, ops: list[dict]) -> None:
    """``mcu_ops_ok``: every op valid on its own; op 0 the CONV on the image, the last the FC;
    every tensor an op reads is the output of the latest earlier op that wrote at its
    offset, of the shape and kind the reader takes, and no op in between (nor the reader)
    writes over it."""
    kinds = [_kind(o) for o in ops]
    _require(kinds[0] == "CONV" and ops[0]["in_cstride"] == 0 and kinds[-1] == "FC"
             and all(k in ("CONV", "MAXPOOL", "AVGPOOL", "FC") for k in kinds),
             f"the MCU partition's ops are {kinds}: CONV first, FC last, no OFFLOAD")
    for i, op in enumerate(ops):
        kind = kinds[i]
        reads = []      # (offset, bytes, producer kinds, c, h, w, cstride, signed)
        if kind == "CONV":
            _require(i == 0 or op["in_cstride"] != 0, f"CONV op {i} reads the image")
            _check_conv(h, op, i)
            if i:
                reads.append((op["in_offset"], ("CONV", "MAXPOOL"), op["in_c"], op["in_h"],
                              op["in_w"], op["in_cstride"], op["in_signed"]))
            if op["residual"]:
                reads.append((op["res_offset"], ("CONV", "MAXPOOL"), op["out_c"],
                              op["out_h"], op["out_w"], op["res_cstride"], op["res_signed"]))
        elif kind == "MAXPOOL":
            _require(_pool_ok(h, op), f"MAXPOOL op {i}: geometry or workspace")
            reads.append((op["in_offset"], ("CONV", "MAXPOOL"), op["in_c"], op["in_h"],
                          op["in_w"], op["in_cstride"], op["in_signed"]))
        elif kind == "AVGPOOL":
            _require(_avgpool_ok(h, op) and op["out_signed"] == 1,
                     f"AVGPOOL op {i}: shapes or workspace")
            reads.append((op["in_offset"], ("CONV", "MAXPOOL"), op["in_c"], op["in_h"],
                          op["in_w"], op["in_cstride"], op["in_signed"]))
        else:
            _require(i == len(ops) - 1 and _fc_ok(h, op), f"FC op {i}: not last, or "
                     "inconsistent with the classes, the blob or the workspace")
            reads.append((op["in_offset"], ("AVGPOOL",), op["in_c"], 1, 1, 0, 1))
        for offset, producers, c, hh, w, cs, signed in reads:
            size = 4 * c if producers == ("AVGPOOL",) else _hwc(hh, w, cs)
            j = max((j for j in range(i) if ops[j]["out_offset"] == offset), default=None)
            p = ops[j] if j is not None else None
            _require(p is not None and kinds[j] in producers
                     and (p["out_c"], p["out_h"], p["out_w"], p["out_signed"]) == (
                         c, hh, w, signed)
                     and (kinds[j] == "AVGPOOL" or p["out_cstride"] == cs),
                     f"op {i} reads a tensor at {offset} that no earlier op wrote so")
            _require(all(_Ws.disjoint(offset, size, *a)
                         for m in range(j + 1, i + 1) for a in _written(ops[m])),
                     f"op {i} reads a tensor at {offset} that an op after op {j} overwrote")


def _s32(v: int) -> int:
    return v - (1 << 32) if v >> 31 else v


def _check_layout(h: dict, ops: list[dict]) -> None:
    """``layout_ok``: the sections tile the blob from the header to ``total_bytes``."""
    n = h["images_count"]
    sections = [
        (h["ops_offset"], 4 * OP_WORDS * h["ops_count"], "ops"),
        (h["program_offset"], 4 * h["program_words"], "program"),
        (h["weights_offset"], 4 * h["weight_words"], "weights"),
        (h["params_offset"], 4 * h["param_words"], "params"),
        (h["images_offset"], n * h["in_channels"] * h["in_height"] * h["in_width"], "images"),
        (h["labels_offset"], 4 * n, "labels"),
        (h["expected_offset"], 8 * n * h["classes"], "expected"),
    ]
    for i, op in enumerate(ops):
        if _kind(op) == "CONV":
            sections += [(op["weights_offset"], _conv_weight_bytes(op), f"CONV {i} weights"),
                         (op["params_offset"], (op["out_c"] + 1) // 2 * 2 * RQ_RECORD_BYTES,
                          f"CONV {i} records")]
        elif _kind(op) == "FC":
            sections += [(op["weights_offset"], op["out_c"] * op["in_c"], f"FC {i} weights"),
                         (op["params_offset"], 8 * op["out_c"], f"FC {i} biases")]
    sections = sorted(sections    , key=lambda s: s[:2])
    end = h["header_bytes"]
    for offset, size, name in sections:
        _require(offset == _align(end), f"section {name} at byte {offset}, where the one "
                                        f"before ends at {end}: a size or offset is wrong")
        end = offset + size
    _require(end == h["total_bytes"], f"the sections end at byte {end}, total_bytes is "
                                      f"{h['total_bytes']}")


def _check_program(blob: bytes, h: dict, off: dict) -> None:
    """``program_ok``: the layer program against the header and the OFFLOAD op."""
    _require(h["program_words"] % fmt.DESC_WORDS == 0,
             f"program_words {h['program_words']} is not a whole number of descriptors")
    words = _u32(blob, h["program_offset"], h["program_words"]).reshape(-1, fmt.DESC_WORDS)
    descs = [fmt.Descriptor.unpack(w) for w in words]
    act = 2 * h["hw_bank_words"]

    def slices(bits):
        return -(-bits // h["hw_a_bits"])

    for i, d in enumerate(descs):
        _require(d.last == (i == len(descs) - 1),
                 f"descriptor {i}: last={d.last} (only the final one of {len(descs)} is last)")
        out = d.out_height * d.out_width * d.out_groups
        _require(d.in_base + d.in_height * d.in_width * d.in_groups <= act
                 and d.out_base + out * slices(d.out_bits) <= act
                 and (not d.has_residual or d.res_base + out * slices(d.res_bits) <= act),
                 f"descriptor {i}: a tensor outside the activation buffer ({act} words)")
    d0 = descs[0]
    if _kind(off) == "CLASSIFY":
        _require((d0.op, d0.in_channels, d0.in_height, d0.in_width)
                 == (fmt.OP_IM2COL, off["in_c"], off["in_h"], off["in_w"])
                 and descs[-1].raw and descs[-1].out_channels == off["out_c"],
                 "CLASSIFY: the program does not start with the image's im2col or does not "
                 "end with the classifier's raw layer of the blob's classes")
    else:
        _require((d0.in_base, d0.in_channels, d0.in_height, d0.in_width)
                 == (off["act_in_base"], off["in_c"], off["in_h"], off["in_w"]),
                 "the OFFLOAD input is not the first layer's input")
    _require(_kind(off) == "CLASSIFY"
             or any((d.out_base, d.out_channels, d.out_height, d.out_width, d.out_bits,
                     d.out_signed) == (off["act_out_base"], off["out_c"], off["out_h"],
                                       off["out_w"], off["out_bits"], off["out_signed"])
                    for d in descs), "the OFFLOAD output is no layer's output")
    macros = h["hw_macros"]
    rows = max(d.weight_base + d.col_tiles * -(-d.row_tiles // macros) for d in descs)
    records = max(d.param_base + d.col_tiles * h["hw_cols"] for d in descs)
    beat = -(-h["hw_write_rows"] * h["hw_cols"] * h["hw_w_bits"] // 32)
    tile_words = h["hw_rows"] // h["hw_write_rows"] * beat
    _require(h["weight_words"] == rows * macros * tile_words,
             f"weight_words {h['weight_words']}, the descriptors address {rows} weight rows of "
             f"{macros} tiles of {tile_words} words")
    _require(h["param_words"] == records * h["hw_param_record_words"],
             f"param_words {h['param_words']}, the descriptors address {records} records of "
             f"{h['hw_param_record_words']} words")


def _check_contents(blob: bytes, h: dict, ops: list[dict]) -> None:
    """``contents_ok``: images, labels and every CONV's records as the header and ops
    describe them."""
    n = h["images_count"]
    px = np.frombuffer(blob, np.uint8, n * h["in_channels"] * h["in_height"] * h["in_width"],
                       h["images_offset"])
    _require(not px.size or int(px.max()) <= h["pixel_max"],
             f"a test image has pixels above pixel_max {h['pixel_max']}")
    labels = _u32(blob, h["labels_offset"], n)
    _require(not n or int(labels.max()) < h["classes"],
             f"a test label is not below classes {h['classes']}")
    for i, conv in enumerate(ops):
        if _kind(conv) != "CONV":
            continue
        rec = np.frombuffer(blob, RQ_DTYPE, (conv["out_c"] + 1) // 2 * 2,
                            conv["params_offset"])
        rm = rec["res_mult"].astype(np.int64)
        _require(conv["residual"] or not rm.any(),
                 f"CONV op {i}: a res_mult without a residual")
        if conv["rq_mode"] == RQ_MODES.index("GENERIC") + 1:
            _require(np.abs(rec["mult"].astype(np.int64)).max() <= (1 << 15) - 1
                     and np.abs(rm).max() <= (1 << 23) - 1,
                     f"CONV op {i}: RQ_GENERIC multipliers outside 16 bits or residual "
                     "multipliers outside 24 (RQ_FAST records?)")


def check_blob(blob: bytes, config: HwConfig | None = None) -> tuple[dict, list[dict]]:
    """The firmware's blob check in Python: ``cim_model_open`` (``firmware/src/cim_model.c``,
    the same checks in the same order) and, with ``config``, ``cim_check_model`` (the
    hardware words against that configuration). Returns ``(header, ops)``; raises
    :class:`BlobError` whose ``status`` is what the firmware returns."""
    blob = bytes(blob)
    try:
        size = len(blob)
        _require(size >= 4, f"{size} bytes", "ERR_BLOB_SIZE")
        _require(int(_u32(blob, 0, 1)[0]) == MAGIC, "not a model blob (magic word)",
                 "ERR_BLOB_MAGIC")
        _require(size >= 8, f"{size} bytes", "ERR_BLOB_SIZE")
        version = int(_u32(blob, 4, 1)[0])
        _require(version == VERSION, f"blob version {version}, this code reads {VERSION}",
                 "ERR_BLOB_VERSION")
        _require(size >= HEADER_BYTES, f"{size} bytes, shorter than the header",
                 "ERR_BLOB_SIZE")
        h = parse_header(blob)
        _require(h["total_bytes"] <= size, f"total_bytes {h['total_bytes']}, the blob has "
                                           f"{size}", "ERR_BLOB_SIZE")
        _require(h["header_bytes"] == HEADER_BYTES and h["total_bytes"] >= HEADER_BYTES,
                 "header_bytes or total_bytes")
        crc = zlib.crc32(blob[CRC_START:h["total_bytes"]])
        _require(crc == h["crc32"], f"CRC-32 {crc:#010x}, the header says {h['crc32']:#010x}",
                 "ERR_BLOB_CRC")
        _check_header(h)
        ops = parse_ops(blob)
        off = _check_ops(h, ops)
        _check_layout(h, ops)
        if off is not None:
            _check_program(blob, h, off)
        _check_contents(blob, h, ops)
        if config is not None:
            want = _hw_words(config)
            diff = [k for k, v in want.items() if h[k] != v]
            _require(not diff, f"compiled for other hardware than {config.name!r}: "
                               f"{', '.join(f'{k}={h[k]} (not {want[k]})' for k in diff)}",
                     "ERR_HW_CONFIG")
    except _Refuse as e:
        raise BlobError(f"blob refused ({e.status}): {e.why}", e.status) from None
    return h, ops


def _check_header(h: dict) -> None:
    """``header_ok``: the header's own ranges and every section inside the blob."""
    pow2 = [h[k] >= 1 and h[k] & (h[k] - 1) == 0 for k in
            ("hw_rows", "hw_write_rows", "hw_a_bits", "hw_w_bits")]
    image = h["in_channels"] * h["in_height"] * h["in_width"]
    n = h["images_count"]
    _require(all(pow2) and h["hw_rows"] <= 1024 and 1 <= h["hw_cols"] <= 1024
             and h["hw_write_rows"] <= h["hw_rows"] and h["hw_a_bits"] <= 8
             and h["hw_w_bits"] <= 8 and 1 <= h["hw_macros"] <= 256
             and h["hw_bank_words"] >= 1 and h["classes"] >= 1
             and h["hw_desc_words"] == fmt.DESC_WORDS
             and h["hw_param_record_words"] == fmt.PARAM_WORDS
             and image >= 1 and 1 <= h["pixel_max"] <= 255,
             "header: hardware words, image shape, classes or pixel_max out of range")
    mcu = h["partition"] == PARTITIONS.index("MCU") + 1
    _require(1 <= h["partition"] <= len(PARTITIONS)
             and (h["program_words"] == h["weight_words"] == h["param_words"] == 0 if mcu
                  else h["program_words"] >= 1),
             "header: partition, or accelerator images in an MCU blob")
    _require(1 <= h["ops_count"] <= MAX_OPS
             and _section(h, h["ops_offset"], 4 * OP_WORDS * h["ops_count"])
             and h["program_words"] <= h["hw_prog_words"]
             and _section(h, h["program_offset"], 4 * h["program_words"])
             and h["weight_words"] <= h["hw_weight_words"]
             and _section(h, h["weights_offset"], 4 * h["weight_words"])
             and h["param_words"] <= h["hw_param_words"]
             and _section(h, h["params_offset"], 4 * h["param_words"])
             and _section(h, h["images_offset"], n * image)
             and _section(h, h["labels_offset"], 4 * n)
             and _section(h, h["expected_offset"], 8 * n * h["classes"])
             and h["workspace_bytes"] >= WORKSPACE_ALIGN,
             "header: a count exceeds its memory or a section lies outside the blob")


def test_images(model: golden.IntModel, count: int, data_dir: str | None = None):
    """The first ``count`` test images of the model's recorded dataset, fitted to its input,
    and their labels. A model that records no dataset gets random inputs of its shape
    (:func:`model.evaluate.model_inputs`) labelled with the golden model's own classes, so
    that the firmware's count of correct classes is its agreement with the golden model."""
    meta = model.manifest.get("meta", {})
    name = meta.get("dataset")
    if name is None:
        x, _ = evaluate.model_inputs(model, count)
        return x, golden.predict(model, x).astype(np.int64)
    x, y, _ = data.load_dataset(name, "test", data_dir, limit=count, seed=meta.get("seed", 0))
    return evaluate.fit_images(x, model.input_shape), y


# ----------------------------------------------------------------------------- C header


def _c_struct(name: str, fields: tuple[Field, ...]) -> list[str]:
    decls = [f.name + (f"[{f.count}]" if f.count > 1 else "") + ";" for f in fields]
    width = max(map(len, decls))
    lines, offset = ["typedef struct {"], 0
    for f, decl in zip(fields, decls):
        head = f"    uint32_t {decl.ljust(width)} /* {offset:3d}: "
        words, line = f.meaning.split(), head
        for word in words:      # wrap at 100 columns, continuing under the text
            if len(line) + len(word) + 4 > 100 and line != head:
                lines.append(line.rstrip())
                line = " " * len(head)
            line += word + " "
        lines.append(line + "*/")
        offset += 4 * f.count
    lines.append(f"}} {name};")
    return lines


def field_offsets(fields: tuple[Field, ...]) -> dict[str, int]:
    """Byte offset of every field of a record."""
    out, offset = {}, 0
    for f in fields:
        out[f.name] = offset
        offset += 4 * f.count
    return out


HEADER_PATH = Path(__file__).resolve().parent.parent / "firmware" / "include" / "cim_format.h"


def render_header() -> str:
    """C declaration of the blob layout, the stages and the results record
    (``firmware/include/cim_format.h``)."""
    out = [
        "/* Binary formats the firmware shares with the Python tools: the model blob (version "
        f"{VERSION}),",
        " * the stages of a frame and the application's results record.",
        " *",
        " * Generated by `python -m compiler.firmware_blob --header` from",
        " * compiler/firmware_blob.py, which documents every field; do not edit. */",
        "#ifndef CIM_FORMAT_H",
        "#define CIM_FORMAT_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define CIM_BLOB_MAGIC          0x{MAGIC:08X}u /* \"CIMB\" */",
        f"#define CIM_BLOB_VERSION        {VERSION}u",
        f"#define CIM_BLOB_HEADER_BYTES   {HEADER_BYTES}u",
        f"#define CIM_BLOB_CRC_START      {CRC_START}u /* first byte the CRC covers */",
        f"#define CIM_BLOB_SECTION_ALIGN  {SECTION_ALIGN}u",
        f"#define CIM_OP_WORDS            {OP_WORDS}u",
        f"#define CIM_RQ_RECORD_BYTES     {RQ_RECORD_BYTES}u",
        f"#define CIM_WORKSPACE_ALIGN     {WORKSPACE_ALIGN}u",
        f"#define CIM_CONV_MAX_STEPS      {CONV_MAX_STEPS}u /* 4 taps per step */",
        f"#define CIM_CONV16_MAX_STEPS    {CONV16_MAX_STEPS}u /* with 16-bit weights */",
        f"#define CIM_BLOB_MAX_OPS        {MAX_OPS}u",
        "",
        "/* Partitions (header word partition). */",
        *[f"#define CIM_PARTITION_{k:<10}{i + 1}u" for i, k in enumerate(PARTITIONS)],
        "",
        "/* Op kinds. */",
        *[f"#define CIM_OP_{k:<17}{i + 1}u" for i, k in enumerate(OP_KINDS)],
        "",
        "/* Requantization modes of a CONV op. */",
        *[f"#define CIM_RQ_{k:<17}{i + 1}u" for i, k in enumerate(RQ_MODES)],
        "",
        *_c_struct("cim_blob_header_t", HEADER_FIELDS),
        "",
        *_c_struct("cim_blob_op_t", OP_FIELDS),
        "",
        "/* One requantization record per output channel of a CONV op. */",
        "typedef struct {",
        "    int64_t bias;",
        "    int32_t mult;",
        "    int32_t res_mult;   /* 0 without a residual */",
        "} cim_rq_record_t;",
        "",
        "/* Stages of a frame (cim_results_t.marker, .stage_cycles). */",
        *[f"#define CIM_STAGE_{k:<14}{i}u" for i, k in enumerate(STAGES)],
        f"#define CIM_STAGE_{'COUNT':<14}{len(STAGES)}u",
        "",
        "/* The application's results record. */",
        f"#define CIM_RESULTS_MAGIC       0x{RESULTS_MAGIC:08X}u",
        f"#define CIM_RESULTS_IMAGES      {RESULTS_IMAGES}u",
        *[f"#define CIM_RUN_{k:<16}{i}u" for i, k in enumerate(RUN_STATES)],
        "",
        *_c_struct("cim_results_t", RESULTS_FIELDS),
        "",
        "#endif /* CIM_FORMAT_H */",
        "",
    ]
    return "\n".join(out)


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m compiler.firmware_blob", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/resnet14_fmnist_w4a4.npz")
    p.add_argument("--config", default="default", help="hardware configuration name")
    p.add_argument("--images", type=int, default=8,
                   help="test images to embed from the model's dataset (0: none)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--partition", choices=("accel", "whole", "mcu"), default="accel",
                   help="accel: the middle layers on the accelerator; mcu: every layer on "
                        "the MCU")
    p.add_argument("--out", help="write the blob here")
    p.add_argument("--header", nargs="?", const=str(HEADER_PATH), default=None,
                   help="write the C declarations (default: firmware/include/cim_format.h) "
                        "and stop")
    args = p.parse_args(argv)
    try:
        if args.header:
            Path(args.header).write_text(render_header())
            return 0
        if not args.out:
            p.error("--out is required (or --header)")
        if args.images < 0:
            p.error("--images must be 0 or more")
        model = golden.load(args.model)
        config = get_config(args.config)
        x = y = None
        if args.images:
            x, y = test_images(model, args.images, args.data_dir)
        blob = build_blob(model, config, x, y, partition=args.partition)
    except (ValueError, data.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    h = parse_header(blob)
    print(f"{out}: {len(blob):,} bytes, {args.model} for {config.name!r} ({args.partition}), "
          f"{h['images_count']} test images, workspace {h['workspace_bytes']:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
