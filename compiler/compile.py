"""Compiler: integer model file + hardware configuration -> layer program and memory images.

:func:`compile_model` maps the accelerator part of a model (its ``where == "accel"`` nodes,
in order) onto a :class:`~contract.config.HwConfig` and returns a :class:`Program`: one
:class:`~contract.program.Descriptor` per layer, the weight image, the per-channel parameter
image and the activation-buffer allocation, in the formats of :mod:`contract.program`.
:func:`execute` runs a program from those images alone, block by block with the contract's
bit-exact rules (:func:`contract.arith.adc_dot` per weight tile, the datapath's
:func:`contract.arith.datapath_model`); the tests hold it against :func:`model.golden.run`
and the RTL against it. A layer the hardware cannot run raises :class:`CompileError` naming
the layer and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.arith import (
    KERNELS,
    LOGIT_BITS,
    MAX_PADDING,
    MAX_SHIFT,
    STRIDES,
    VALUE_BITS,
    accumulator_width,
    adc_dot,
    column_range,
    datapath_model,
    signed_width,
)
from contract.config import HwConfig
from contract.program import (
    DESC_WORDS,
    FIELDS,
    OP_CONV,
    OP_IM2COL,
    OP_MAXPOOL,
    PARAM_WORDS,
    Descriptor,
    ErrorCode,
    check_descriptor,
    copies,
    im2col_lanes,
    im2col_weight,
    layer_rows,
    layer_tiles,
    pack_params,
    pack_tiles,
    planes,
    slice_shifts,
    slices,
    tile_words,
    unpack_params,
    unpack_tiles,
    weight_rows,
    weight_slices,
)
from model import golden

__all__ = ["Alloc", "CompileError", "LayerOverflow", "Program", "compile_model", "execute",
           "execute_memory", "read_tensor", "window_addresses", "write_tensor"]


class CompileError(ValueError):
    """The hardware cannot run this model (the message names the layer and the reason)."""


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
    image: bool = False
    """The input goes through the image buffer (the program starts with an im2col layer):
    the MCU writes the image, not an activation tensor."""

    @property
    def raw(self) -> bool:
        """The program ends with the classifier (a raw layer): the MCU reads the logits and
        the class from registers."""
        return bool(self.descriptors) and bool(self.descriptors[-1].raw)

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


def _fail(name: str, msg: str):
    raise CompileError(f"layer {name!r}: {msg}")


def _accel_part(model: golden.IntModel, config: HwConfig) -> tuple[list, str, dict[str, int]]:
    """The accelerator nodes in order, the one tensor they take from the MCU, and the last
    reader of every tensor (``len(nodes)``: read back by the MCU, alive to the end)."""
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
    return nodes, input_name, last_use


class _Allocator:
    """First fit in one bank among the tensors alive at a layer (module docstring of
    :mod:`contract.program`: activation buffer)."""

    def __init__(self, config: HwConfig, bank_words: int, last_use: dict[str, int]):
        self.config, self.bank_words, self.last_use = config, bank_words, last_use
        self.buffers: dict[str, Alloc] = {}
        self.born: dict[str, int] = {}

    def place(self, name, shape, bits, signed, bank, when) -> Alloc:
        c, h, w = shape
        words = h * w * -(-c // self.config.rows) * slices(bits, self.config.a_bits)
        live = [a for t, a in self.buffers.items() if a.bank == bank
                and self.born[t] <= when <= self.last_use[t]]
        start = 0
        for a in sorted(live, key=lambda a: a.base):
            off = a.base - bank * self.bank_words
            if start + words <= off:
                break
            start = max(start, off + a.words)
        if start + words > self.bank_words:
            _fail(name, f"its output ({words} words) does not fit in activation-buffer bank "
                        f"{bank} ({self.bank_words} words) beside the live tensors")
        a = Alloc(bank * self.bank_words + start, words, tuple(shape), bits, signed, bank)
        self.buffers[name] = a
        self.born[name] = when
        return a


def _check_conv(model: golden.IntModel, n: dict, config: HwConfig, acc_width: int, *,
                taps: int | None = None) -> None:
    """Refuse, by name, a node the array and the datapath cannot run (``taps``: the taps of
    the window that see data, ``k * k`` unless said)."""
    name, ab = n["name"], config.a_bits
    if n["op"] == "maxpool":
        _check_pool(model, n, config)
        return
    if n["op"] != "conv":
        _fail(name, f"op {n['op']!r} does not run on the accelerator here (conv and maxpool "
                    "do, and a global average pooling followed by the classifier)")
    k, s, p = n["kernel"], n["stride"], n["padding"]
    if k not in KERNELS:
        _fail(name, f"kernel {k} is not supported (supported: {KERNELS})")
    if s not in STRIDES:
        _fail(name, f"stride {s} is not supported (supported: {STRIDES})")
    if p > MAX_PADDING:
        _fail(name, f"padding {p} exceeds {MAX_PADDING}")
    wb = n["w_bits"]
    if wb > config.w_bits_max:
        _fail(name, f"w_bits={wb} does not fit the array's {config.w_bits}-bit weights (a "
                    f"layer may use up to {config.w_bits_max} bits: "
                    + ("binary arrays take only binary layers)" if config.w_bits == 1 else
                       "two digits)"))
    _, xbits, xsigned = _tensor_info(model, n["inputs"][0])
    if xsigned:
        _fail(name, f"its input {n['inputs'][0]!r} is signed; the array takes unsigned "
                    "activations")
    need_planes = xbits + (config.w_bits if weight_slices(wb, config) > 1 else 0)
    if need_planes > config.planes_max:
        wide = f" + {config.w_bits} for its {wb}-bit weights" if need_planes > xbits else ""
        _fail(name, f"its input {n['inputs'][0]!r} has {xbits}-bit activations{wide}: "
                    f"{need_planes} bit-planes per pixel, configuration {config.name!r} feeds "
                    f"at most max_planes={config.planes_max}")
    if config.adc_bits is not None and (wb != config.w_bits or xbits != ab):
        _fail(name, f"with the partial-sum ADC model (adc_bits={config.adc_bits}) every layer "
                    f"must use the array's bits (W{config.w_bits}A{ab}), not W{wb}A{xbits}: "
                    f"the ADC rule counts the stored weight bits and the fed bit-planes")
    if n["out_bits"] > VALUE_BITS - 1:
        _fail(name, f"out_bits={n['out_bits']} exceeds the datapath's values")
    taps = k * k if taps is None else taps
    need = accumulator_width(n["in_channels"] * taps, wb, xbits)
    if weight_slices(wb, config) > 1:
        # The running sum after the high and low digits' tiles is x . (w - 2**(wb - 1)).
        bound = (n["in_channels"] * taps * ((1 << (wb - 1)) + (1 << (config.w_bits - 1)))
                 * ((1 << xbits) - 1))
        need = signed_width(-bound, bound)
    psum = signed_width(*column_range(config.rows, config.w_bits, config.planes_max))
    if need > acc_width or psum > acc_width:
        _fail(name, f"accumulator needs {max(need, psum)} bits, the datapath holds {acc_width}")


def _use_im2col(model: golden.IntModel, n: dict, config: HwConfig, input_name: str) -> bool:
    """Whether the accelerator's first layer ``n`` runs as im2col + 1 x 1 convolution from
    the image buffer: a convolution on the model's pixels that the image buffer holds."""
    if input_name != "input" or n["op"] != "conv" or n["inputs"][0] != "input":
        return False
    c, h, w = model.input_shape
    return (config.image_channels >= c and max(h, w) <= config.image_size
            and n["kernel"] <= config.im2col_kernel and len(n["inputs"]) == 1)


def _head(nodes: list, i: int) -> tuple[dict, dict] | None:
    """``(avgpool, fc)`` when accelerator node ``i`` is a global average pooling whose only
    reader is the next node, the classifier (they become one raw layer); None otherwise."""
    n = nodes[i]
    if n["op"] != "avgpool":
        return None
    fc = nodes[i + 1] if i + 1 < len(nodes) else None
    if fc is None or fc["op"] != "fc" or fc["inputs"] != [n["name"]] or i + 2 != len(nodes):
        _fail(n["name"], "a global average pooling runs on the accelerator only with the "
                         "classifier that reads it, as the program's last two layers (they "
                         "become one raw layer); put both on the MCU or both on the accelerator")
    return n, fc


def _head_conv(model: golden.IntModel, pool: dict, fc: dict, config: HwConfig,
               acc_width: int) -> tuple[dict, np.ndarray]:
    """The raw convolution that computes ``fc(avgpool(x))`` (the pooling is a sum): a window
    of ``K >= h`` (a supported kernel) with padding ``ceil((K - h) / 2)`` covers the whole
    ``h x h`` map at its one output pixel; the taps on the map carry the classifier's
    weights, the others zero. Returns the node-like dict for the descriptor and the
    ``(Cout, C, K, K)`` weights."""
    name = fc["name"]
    xshape, xbits, xsigned = _tensor_info(model, pool["inputs"][0])
    c, h, w = xshape
    if h != w:
        _fail(name, f"the classifier's average pooling reads a {h}x{w} map: the raw layer "
                    "covers square maps only")
    K = next((k for k in KERNELS if k >= h), None)
    if K is None:
        _fail(name, f"the classifier's average pooling reads a {h}x{h} map: a raw layer's "
                    f"window covers at most {max(KERNELS)}x{max(KERNELS)}")
    if xsigned:
        _fail(name, f"its input {pool['inputs'][0]!r} is signed; the array takes unsigned "
                    "activations")
    p = (K - h + 1) // 2
    wfc = model.array(name, "weight").astype(np.int64)        # (Cout, C)
    cout = wfc.shape[0]
    if cout > config.cols:
        _fail(name, f"{cout} classes: a raw layer has one column tile, at most "
                    f"cols={config.cols} logits")
    weight = np.zeros((cout, c, K, K), np.int64)
    weight[:, :, p:p + h, p:p + h] = wfc[:, :, None, None]
    node = {"name": name, "op": "conv", "inputs": list(pool["inputs"]), "kernel": K,
            "stride": 2 if h + 2 * p - K else 1, "padding": p, "in_channels": c,
            "out_channels": cout, "w_bits": fc["w_bits"], "shape": [cout, 1, 1],
            "out_bits": 0, "out_signed": False, "shift": 0}
    _check_conv(model, node, config, acc_width, taps=h * h)
    bias = model.array(name, "bias").astype(np.int64)
    wb = fc["w_bits"]
    bound = c * h * h * (1 << (wb - 1)) * ((1 << xbits) - 1) + int(np.abs(bias).max(initial=0))
    if bound >= 1 << (LOGIT_BITS - 1):
        _fail(name, f"its logits may reach {bound}, more than {LOGIT_BITS}-bit logit registers "
                    "hold")
    return node, weight


def _check_pool(model: golden.IntModel, n: dict, config: HwConfig) -> None:
    """Refuse, by name, a max pooling the pooler cannot run."""
    name, k, s, p = n["name"], n["kernel"], n["stride"], n["padding"]
    if not 1 <= k <= 7:
        _fail(name, f"max-pooling kernel {k} is not supported (1 to 7)")
    if s not in STRIDES:
        _fail(name, f"stride {s} is not supported (supported: {STRIDES})")
    if p > MAX_PADDING:
        _fail(name, f"padding {p} exceeds {MAX_PADDING}")
    _, xbits, _ = _tensor_info(model, n["inputs"][0])
    if xbits > config.a_bits:
        _fail(name, f"its input {n['inputs'][0]!r} has {xbits}-bit activations: the pooler "
                    f"takes one buffer word per pixel and group, at most a_bits="
                    f"{config.a_bits} bits")


def _params(model: golden.IntModel, name: str, channels: int, residual: bool) -> np.ndarray:
    """The layer's parameter records, zero-padded to ``channels``."""
    def padded(array):
        a = model.array(name, array).astype(np.int64)
        return np.pad(a, (0, channels - len(a)))
    r = padded("res_mult") if residual else np.zeros(channels, np.int64)
    return pack_params(padded("mult"), padded("bias"), r)


def _check_descriptor(name: str, d: Descriptor, config: HwConfig, bank_words: int) -> None:
    """Refuse a layer whose descriptor the sequencer would stop on
    (:func:`contract.program.check_descriptor`, the hardware's check stated in Python)."""
    code = check_descriptor(d, config, bank_words)
    if code == ErrorCode.SIZE:
        _fail(name, f"input {d.in_height}x{d.in_width} with {d.in_groups} channel groups and "
                    f"output {d.out_height}x{d.out_width} exceed configuration "
                    f"{config.name!r} (sizes up to max_size={config.max_size}, groups up to "
                    f"max_groups={config.max_groups}, output pixels up to "
                    f"max_pixels={config.max_pixels}); choose a larger configuration")
    if code != ErrorCode.NONE:
        _fail(name, f"the sequencer would refuse its descriptor ({code.name}: "
                    f"{check_descriptor.__module__}.check_descriptor); {d}")


def _pool_descriptor(model: golden.IntModel, n: dict, alloc: _Allocator, i: int,
                     last: bool) -> Descriptor:
    """A max-pooling layer's descriptor (``op`` 1: no tiles, parameters or residual; the
    output in the input's format), its output placed in the other bank."""
    xshape, xbits, _ = _tensor_info(model, n["inputs"][0])
    src = alloc.buffers[n["inputs"][0]]
    c, oh, ow = n["shape"]
    out = alloc.place(n["name"], (c, oh, ow), xbits, False, 1 - src.bank, i)
    g = -(-c // alloc.config.rows)
    zero = {f.name: 0 for f in FIELDS}
    return Descriptor(**{**zero, "op": OP_MAXPOOL, "kernel": n["kernel"], "stride": n["stride"],
                         "padding": n["padding"], "relu": 1, "out_bits": xbits,
                         "in_bits": xbits, "last": int(last), "in_height": xshape[1],
                         "in_width": xshape[2], "in_groups": g, "out_height": oh,
                         "out_width": ow, "out_groups": g, "in_channels": c,
                         "out_channels": c, "in_base": src.base, "out_base": out.base})


def _im2col_descriptor(model: golden.IntModel, n: dict, alloc: _Allocator,
                       config: HwConfig) -> Descriptor:
    """The im2col layer before the first convolution ``n`` (``op`` 2): the image's pixels as
    ``C * K * K`` lanes per output pixel, in bank 0."""
    c, h, w = model.input_shape
    _, bits, _ = _tensor_info(model, "input")
    _, oh, ow = n["shape"]
    lanes = c * config.im2col_kernel ** 2
    out = alloc.place(f"{n['name']}.im2col", (lanes, oh, ow), bits, False, 0, 0)
    zero = {f.name: 0 for f in FIELDS}
    return Descriptor(**{**zero, "op": OP_IM2COL, "kernel": n["kernel"],
                         "stride": n["stride"], "padding": n["padding"], "relu": 1,
                         "out_bits": bits, "in_bits": bits, "in_height": h, "in_width": w,
                         "in_groups": 1, "out_height": oh, "out_width": ow,
                         "out_groups": -(-lanes // config.rows), "in_channels": c,
                         "out_channels": lanes, "out_base": out.base})


def compile_model(model: golden.IntModel, config: HwConfig, *, bank_words: int | None = None,
                  acc_width: int | None = None) -> Program:
    """Compile the accelerator nodes of ``model`` for ``config``; :class:`CompileError`
    names the first layer the hardware cannot run and why. ``bank_words`` and ``acc_width``
    default to the configuration's. Every descriptor must pass the sequencer's own check
    (:func:`contract.program.check_descriptor`), unless no sequencer can be built for
    ``config`` (:attr:`~contract.config.HwConfig.sequencer_problem`: the program then serves
    the functional model only)."""
    bank_words = config.bank_words if bank_words is None else bank_words
    acc_width = config.acc_width if acc_width is None else acc_width
    R, C = config.rows, config.cols
    nodes, input_name, last_use = _accel_part(model, config)
    image = _use_im2col(model, nodes[0], config, input_name)
    if image:       # the im2col layer's output lives until the convolution has read it
        last_use[f"{nodes[0]['name']}.im2col"] = 0
    alloc = _Allocator(config, bank_words, last_use)
    buffers = alloc.buffers
    shape, bits, signed = _tensor_info(model, input_name)
    if (bits > (8 if image else config.in_bits_max)) or signed or len(shape) != 3:
        raise CompileError(f"accelerator input {input_name!r}: must be unsigned activations "
                           f"[C, H, W] of at most {config.in_bits_max} bits (max_planes of "
                           f"{config.name!r}), not {'signed ' if signed else ''}{bits}-bit "
                           f"{list(shape)}")
    if not image:
        alloc.place(input_name, shape, bits, signed, 0, -1)

    descriptors, tiles, params, names, inputs = [], [], [], [], {}
    row_count = param_count = 0
    skip = False
    for i, n in enumerate(nodes):
        if skip:        # the classifier, compiled with its average pooling
            break
        name = n["name"]
        weight = None
        head = _head(nodes, i)
        if head is not None:
            n, weight = _head_conv(model, *head, config, acc_width)
            name, skip = n["name"], True
        else:
            _check_conv(model, n, config, acc_width)
        xshape, xbits, _ = _tensor_info(model, n["inputs"][0])
        if n["op"] == "maxpool":
            descriptors.append(_pool_descriptor(model, n, alloc, i, last=i == len(nodes) - 1))
            names.append(name)
            inputs[name] = list(n["inputs"])
            continue
        if i == 0 and image:
            descriptors.append(_im2col_descriptor(model, n, alloc, config))
            names.append(f"{name}.im2col")
            inputs[names[-1]] = [input_name]
            n = {**n, "inputs": [names[-1]], "kernel": 1, "stride": 1, "padding": 0,
                 "in_channels": config.image_lanes * shape[0] // config.image_channels}
            weight = im2col_weight(model.array(name, "weight"), config.im2col_kernel)
            xshape = (n["in_channels"], *n["shape"][1:])
        raw = head is not None
        k, cin, cout = n["kernel"], n["in_channels"], n["out_channels"]
        oc, oh, ow = n["shape"]
        g, j = -(-cin // R), -(-cout // C)
        t = weight_slices(n["w_bits"], config) * k * k * g
        res = n["inputs"][1] if len(n["inputs"]) > 1 else None
        rbits, rsigned = (0, False)
        if res is not None:
            _, rbits, rsigned = _tensor_info(model, res)
            if rbits > VALUE_BITS - 1 or res not in buffers:
                _fail(name, f"residual {res!r} ({rbits} bits) cannot be read from the buffer")
        src = buffers[n["inputs"][0]]
        if weight is None:
            weight = model.array(name, "weight")
        tiles.append(layer_rows(layer_tiles(weight, config, n["w_bits"]), j, config))
        if raw:         # y = acc * 1 + bias, kept whole
            bias = np.pad(model.array(name, "bias").astype(np.int64), (0, j * C - cout))
            params.append(pack_params(np.ones(j * C, np.int64), bias,
                                      np.zeros(j * C, np.int64)))
            out_base = 0
        else:
            params.append(_params(model, name, j * C, res is not None))
            out_base = alloc.place(name, (oc, oh, ow), n["out_bits"], n["out_signed"],
                                   1 - src.bank, i).base
        d = dict(kernel=k, stride=n["stride"], padding=n["padding"],
                 relu=int(not raw and not n["out_signed"]), out_signed=int(n["out_signed"]),
                 out_bits=n["out_bits"], shift=n["shift"], has_residual=int(res is not None),
                 res_signed=int(rsigned), res_bits=rbits,
                 last=int(i == len(nodes) - 1 or raw),
                 in_bits=xbits, op=OP_CONV, in_height=xshape[1], in_width=xshape[2],
                 in_groups=g, out_height=oh, out_width=ow, out_groups=-(-cout // R),
                 in_channels=cin, out_channels=cout, col_tiles=j, row_tiles=t,
                 weight_tiles=j * t, in_base=src.base, w_bits=n["w_bits"], raw=int(raw),
                 out_base=out_base,
                 res_base=buffers[res].base if res is not None else 0,
                 weight_base=row_count, param_base=param_count)
        for f in FIELDS:
            if not 0 <= d[f.name] < 1 << f.bits:
                _fail(name, f"{f.name}={d[f.name]} does not fit the descriptor's {f.bits} bits")
        if not raw and not 1 <= n["shift"] <= MAX_SHIFT:
            _fail(name, f"shift {n['shift']} outside 1..{MAX_SHIFT}")
        descriptors.append(Descriptor(**d))
        names.append(name)
        inputs[name] = list(n["inputs"])
        row_count += weight_rows(j, t, config)
        param_count += j * C
    weight_image = pack_tiles(np.concatenate(tiles) if tiles else
                              np.zeros((0, R, C), np.int64), config)
    param_image = (np.concatenate(params) if params else
                   np.zeros((0, PARAM_WORDS), np.uint32)).reshape(-1)
    program_len = len(descriptors) * DESC_WORDS
    for what, words, cap, limit in (
            ("layer program", program_len, "prog_words", config.prog_words),
            ("weight image", len(weight_image), "weight_words", config.weight_store_words),
            ("parameter image", len(param_image), "param_words", config.param_words)):
        if words > limit:
            held = (f"{cap}={getattr(config, cap)}" if limit == getattr(config, cap) else
                    f"{cap}={getattr(config, cap)}, {limit} words in whole weight rows")
            raise CompileError(f"{model.path}: the {what} takes {words} words, configuration "
                               f"{config.name!r} has {held}; choose a larger configuration")
    if config.sequencer_problem is None:
        for name, d in zip(names, descriptors):
            _check_descriptor(name, d, config, bank_words)
    return Program(config=config, names=names, descriptors=descriptors,
                   weight_image=weight_image, param_image=param_image, buffers=buffers,
                   input_name=input_name, bank_words=bank_words, acc_width=acc_width,
                   inputs=inputs, image=image)


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
    g, sl = -(-c // R), slices(bits, a_bits)
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
    g, sl = -(-c // R), slices(bits, a_bits)
    addr = _tensor_addresses(base, h, w, g, sl)
    words = mem[:, addr.reshape(-1)].reshape(mem.shape[0], h * w, g, sl, R)
    v = (words << (np.arange(sl) * a_bits)[:, None]).sum(axis=3)  # (N, HW, G, R)
    width = sl * a_bits
    if signed:
        v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
    v = v.transpose(0, 2, 3, 1).reshape(mem.shape[0], g * R, h, w)
    return v[:, :c]


def window_addresses(d: Descriptor, a_bits: int):
    """``(P, T)`` addresses (of slice 0) and pad flags of every output pixel's row tiles
    (output pixel major, then kh, kw, channel group: the row-tile order of
    :mod:`contract.program`), for an array of ``a_bits`` lanes."""
    k, s, p, g = d.kernel, d.stride, d.padding, d.in_groups
    oy, ox = np.meshgrid(np.arange(d.out_height), np.arange(d.out_width), indexing="ij")
    kh, kw, cg = np.meshgrid(np.arange(k), np.arange(k), np.arange(g), indexing="ij")
    y = oy.reshape(-1, 1) * s - p + kh.reshape(1, -1)
    x = ox.reshape(-1, 1) * s - p + kw.reshape(1, -1)
    pad = (y < 0) | (y >= d.in_height) | (x < 0) | (x >= d.in_width)
    addr = d.in_base + ((y * d.in_width + x) * g + cg.reshape(1, -1)) * slices(d.in_bits,
                                                                            a_bits)
    return np.where(pad, 0, addr), pad


class LayerOverflow(RuntimeError):
    """A running sum of layer ``index`` left the accumulator (the hardware's ``OVERFLOW``)."""

    def __init__(self, index: int, name: str):
        super().__init__(f"layer {index} ({name}): accumulator overflow in the datapath")
        self.index, self.name = index, name


def execute(program: Program, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``program`` on the accelerator input ``x`` (N, C, H, W) from its images and
    descriptors alone: window order, :func:`~contract.arith.adc_dot` per weight tile (the
    macro's rule), the datapath's requantization, outputs written to and read back from the
    buffer. Returns every layer's output (N, C, H, W) int64 (a raw layer's: its logits, (N,
    Cout)). With :attr:`Program.image`, ``x`` is the image the im2col layer reads."""
    x = np.asarray(x, dtype=np.int64)
    mem = np.zeros((x.shape[0], 2 * program.bank_words, program.config.rows), dtype=np.int64)
    if program.image:
        return execute_memory(program, mem, image=x)
    src = program.buffers[program.input_name]
    write_tensor(mem, src.base, x, src.bits, program.config.a_bits)
    return execute_memory(program, mem)


def execute_memory(program: Program, mem: np.ndarray,
                   image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run ``program``'s descriptors, in order, on the activation buffers ``mem`` (N, ``2 *
    bank_words``, rows: one lane value per element), which they read and write in place as
    the hardware does; the descriptors need not be the compiler's (they must pass
    :func:`~contract.program.check_descriptor`). ``image`` (N, C, H, W): the image-buffer
    slot an im2col layer reads (its top-left ``in_channels x in_height x in_width``). Returns
    every layer's output as read back after it (a raw layer's: its logits, (N, Cout));
    :class:`LayerOverflow` if a layer overflows (``mem`` then holds the layers before
    it)."""
    cfg = program.config
    R, C, ab = cfg.rows, cfg.cols, cfg.a_bits
    n = mem.shape[0]
    tw = tile_words(cfg)
    psum_width = signed_width(*column_range(R, cfg.w_bits, cfg.planes_max))
    result = {}
    for index, (name, d) in enumerate(zip(program.names, program.descriptors)):
        if d.op == OP_IM2COL:
            if image is None:
                raise ValueError(f"layer {index} ({name}) is an im2col layer: execute_memory "
                                 "needs the image")
            img = np.asarray(image, np.int64)[:, :d.in_channels, :d.in_height, :d.in_width]
            y = im2col_lanes(img & ((1 << d.in_bits) - 1), d.kernel, d.stride, d.padding,
                             cfg.im2col_kernel)
            write_tensor(mem, d.out_base, y, d.out_bits, ab)
            result[name] = read_tensor(mem, d.out_base, y.shape[1:], d.out_bits, False, ab)
            continue
        addr, pad = window_addresses(d, ab)
        if d.op == OP_MAXPOOL:
            # (N, P, k*k*G, R) words of the windows, zeros for the padding; max per group.
            xs = np.where(pad[None, :, :, None], 0, mem[:, addr] & ((1 << d.in_bits) - 1))
            G = d.in_groups
            y = xs.reshape(n, addr.shape[0], -1, G, R).max(axis=2)      # (N, P, G, R)
            y = y.reshape(n, d.out_height, d.out_width, G * R)[..., :d.out_channels]
            y = y.transpose(0, 3, 1, 2)
            write_tensor(mem, d.out_base, y, d.out_bits, ab)
            result[name] = read_tensor(mem, d.out_base, y.shape[1:], d.out_bits, False, ab)
            continue
        P, T0 = addr.shape
        T = d.row_tiles         # T0 per weight slice (contract.program: wide weights)
        sl = slices(d.in_bits, ab)
        # The input's slice words, each a_bits of the value, low slice first (N, P, T, R).
        xs = sum(mem[:, addr + s] << (s * ab) for s in range(sl))
        xs = np.where(pad[None, :, :, None], 0, xs & ((1 << d.in_bits) - 1))
        # The layer's weight rows (contract.program): macro i of a round reads slot i of the
        # round's row, so row tile t of column tile j is slot t of the column tile's Q * M,
        # and with copies (T < M) copy c, which computes the pixels p with p mod cp == c (the
        # issuer's groups take turns), reads slots c * T .. c * T + T - 1.
        rows = weight_rows(d.col_tiles, T, cfg)
        span = cfg.macros * tw
        wimg = program.weight_image[d.weight_base * span:(d.weight_base + rows) * span]
        slots = unpack_tiles(wimg, cfg).reshape(d.col_tiles, -1, R, C)
        cp = copies(d, cfg)
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
            pl = planes(d, cfg)
            shifts = slice_shifts(cfg) if weight_slices(d.w_bits, cfg) > 1 else (0,)
            psum = np.zeros((n, P, T, C), np.int64)
            for c in range(cp):
                px = np.arange(P) % cp == c
                psum[:, px] = np.stack([
                    adc_dot(xs[:, px][:, :, t % T0] << shifts[t // T0], slots[j, c * T + t],
                            w_bits=cfg.w_bits, a_bits=pl, adc_bits=cfg.adc_bits)
                    for t in range(T)], axis=2)                     # (N, P, T, C)
            lanes = slice(j * C, (j + 1) * C)
            rv = np.zeros((n, P, C), np.int64)
            if res is not None:
                hi = min((j + 1) * C, d.out_channels) - j * C
                if hi > 0:
                    rv[:, :, :hi] = res[:, :, j * C:j * C + hi]
            rv = np.repeat(rv.reshape(n * P, 1, C), T, axis=1).reshape(beats, C)
            val, ovf = datapath_model(
                psum.reshape(beats, C), first, last, np.broadcast_to(m[lanes], (beats, C)),
                np.broadcast_to(b[lanes], (beats, C)), np.broadcast_to(r[lanes], (beats, C)),
                rv, lanes=C, acc_width=program.acc_width, psum_width=psum_width,
                shift=d.shift, out_bits=d.out_bits, out_signed=bool(d.out_signed),
                has_residual=bool(d.has_residual), raw=bool(d.raw))
            if ovf.any():
                raise LayerOverflow(index, name)
            out[:, :, lanes] = val.reshape(n, P, C)
        if d.raw:               # the logits, to the registers; nothing to the buffer
            result[name] = out[:, 0, :d.out_channels]
            continue
        y = out[:, :, :d.out_channels].transpose(0, 2, 1).reshape(
            n, d.out_channels, d.out_height, d.out_width)
        write_tensor(mem, d.out_base, y, d.out_bits, ab)
        # Read back before a later layer may reuse the space: what the MCU would read.
        result[name] = read_tensor(mem, d.out_base, (d.out_channels, d.out_height,
                                                     d.out_width), d.out_bits,
                                   bool(d.out_signed), ab)
    return result
