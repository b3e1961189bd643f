"""The bit-exact integer golden model.

It reads only the exported model file (:mod:`model.export` documents the format and the
arithmetic) and computes every node with NumPy integers, exactly as the hardware and the MCU
firmware must. Every RTL and firmware test is held against :func:`run`.

Convolutions use float64 matrix products for speed; that is exact because :func:`load`
checks that every partial sum of every layer stays below 2**53 in magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.arith import (
    BIAS_LIMIT,
    MAX_SHIFT,
    MULT_BITS,
    RES_MULT_BITS,
    AdcModel,
    AdcOffsets,
    act_range,
    adc_dot,
    out_size,
    requantize,
    weight_qmax,
)

from .modelfile import FORMAT, HASH_FIELD, VERSION, ModelFormatError, check_content, read

OPS = ("conv", "maxpool", "avgpool", "fc")
WHERE = ("mcu", "accel")
EXACT_LIMIT = 2**53


@dataclass
class IntModel:
    """A validated integer model: the manifest and its arrays."""

    manifest: dict
    arrays: dict[str, np.ndarray]
    path: str = "<memory>"

    @property
    def nodes(self) -> list[dict]:
        return self.manifest["nodes"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input"]["shape"])

    def node(self, name: str) -> dict:
        for n in self.nodes:
            if n["name"] == name:
                return n
        raise KeyError(name)

    def array(self, node: str, name: str) -> np.ndarray:
        return self.arrays[f"{node}/{name}"]


def load(path: str | Path) -> IntModel:
    """Load and validate a model file; raise :class:`ModelFormatError` naming the problem. A
    file whose contents do not match its content hash (changed after export) is refused."""
    manifest, arrays = read(path)
    model = IntModel(manifest, arrays, str(path))
    _check_version(model)
    check_content(model.path, manifest, arrays)
    validate(model)
    return model


def _fail(model: IntModel, msg: str):
    raise ModelFormatError(f"{model.path}: {msg}")


_KINDS = {int: "an integer", bool: "true or false", str: "a string", list: "a list",
          dict: "an object"}


def _need(model: IntModel, d: dict, key: str, kind, where: str):
    """``d[key]``, which must be present and of JSON type ``kind`` (a bool is not an int)."""
    if key not in d:
        _fail(model, f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        _fail(model, f"{where}: field {key!r} must be {_KINDS[kind]}, not {v!r}")
    return v


def _ints(model: IntModel, d: dict, key: str, where: str, length=None) -> list[int]:
    """``d[key]``: a list of positive integers (of ``length`` of them when given)."""
    if key not in d:
        _fail(model, f"{where}: missing field {key!r}")
    v = d[key]
    if (not isinstance(v, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v)
            or (length is not None and len(v) not in length)):
        count = " or ".join(map(str, length)) if length else "any number of"
        _fail(model, f"{where}: field {key!r} must be a list of {count} positive integers, "
                     f"not {v!r}")
    return v


def _strings(model: IntModel, d: dict, key: str, where: str) -> list[str]:
    v = _need(model, d, key, list, where)
    if not all(isinstance(s, str) for s in v):
        _fail(model, f"{where}: field {key!r} must be a list of strings, not {v!r}")
    return v


def _arr(model: IntModel, node: str, name: str, shape: tuple, lo: int, hi: int) -> np.ndarray:
    key = f"{node}/{name}"
    if key not in model.arrays:
        _fail(model, f"node {node!r}: array {name!r} is missing")
    a = model.arrays[key]
    if not np.issubdtype(a.dtype, np.integer):
        _fail(model, f"node {node!r}: array {name!r} must be integer, not {a.dtype}")
    if a.shape != shape:
        _fail(model, f"node {node!r}: array {name!r} has shape {a.shape}, expected {shape}")
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        _fail(model, f"node {node!r}: array {name!r} has values in [{int(a.min())}, "
                     f"{int(a.max())}], outside the allowed [{lo}, {hi}]")
    return a


def _check_version(model: IntModel) -> None:
    m = model.manifest
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else m
        _fail(model, f"not a {FORMAT} file (format field {got!r})")
    ver = m.get("version")
    if ver == 1 and not isinstance(ver, bool):
        _fail(model, f"format version 1 has no content hash ({HASH_FIELD!r}; this code reads "
                     f"version {VERSION}): re-export the model, or add the hash to a file you "
                     "trust with `python -m model.modelfile --upgrade PATH`")
    if ver != VERSION or isinstance(ver, bool) or not isinstance(ver, int):
        _fail(model, f"format version {ver!r} is not supported (this code reads version "
                     f"{VERSION}); re-export the model with this version of the tools")


def _node_arrays(op: str, inputs: list) -> set[str]:
    """The arrays a node of ``op`` takes."""
    if op == "conv":
        return {"weight", "mult", "bias"} | ({"res_mult"} if len(inputs) == 2 else set())
    return {"weight", "bias"} if op == "fc" else set()


def validate(model: IntModel) -> None:
    """Check the manifest's fields and types, the graph, shapes and value ranges of every
    node; :class:`ModelFormatError` names the node, the field and what is expected. (The
    content hash is :func:`load`'s: an in-memory model has none to check.)"""
    _check_version(model)
    m = model.manifest
    inp = _need(model, m, "input", dict, "manifest")
    shape = _ints(model, inp, "shape", "input", length=(3,))
    pixel_max = _need(model, inp, "pixel_max", int, "input")
    if not 1 <= pixel_max <= 255:
        _fail(model, f"input pixel_max must be 1..255, not {pixel_max}")
    for key, kind in (("requant", dict), ("classes", list), ("spec", dict), ("meta", dict)):
        if key in m:
            _need(model, m, key, kind, "manifest")
    nodes = _need(model, m, "nodes", list, "manifest")
    if not nodes:
        _fail(model, "the graph has no nodes")
    stored: dict[str, set[str]] = {}
    for key in model.arrays:
        node, sep, arr = key.partition("/")
        if not sep:
            _fail(model, f"array {key!r} is not named <node>/<array>")
        stored.setdefault(node, set()).add(arr)
    # name -> (shape, lo, hi): the value range each tensor can take.
    tensors = {"input": (tuple(shape), 0, pixel_max)}
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            _fail(model, f"node #{i} is not an object")
        name = _need(model, n, "name", str, f"node #{i}")
        where = f"node {name!r}"
        if not name or "/" in name or name == "input":
            _fail(model, f"{where}: a node name must be non-empty, without '/', and not "
                         "'input'")
        if name in tensors:
            _fail(model, f"{where}: duplicate node name")
        op = _need(model, n, "op", str, where)
        if op not in OPS:
            _fail(model, f"{where}: unsupported op {op!r} (supported: {', '.join(OPS)})")
        if n.get("where") not in WHERE:
            _fail(model, f"{where}: 'where' must be one of {WHERE}, not {n.get('where')!r}")
        inputs = _strings(model, n, "inputs", where)
        for src in inputs:
            if src not in tensors:
                _fail(model, f"{where}: input {src!r} is not the model input or an earlier node")
        nin = 2 if op == "conv" else 1
        if not 1 <= len(inputs) <= nin:
            _fail(model, f"{where}: {op} takes {'1 or 2 inputs' if nin == 2 else '1 input'}, "
                         f"got {len(inputs)}")
        xs, xlo, xhi = tensors[inputs[0]]
        names = _strings(model, n, "arrays", where)
        if sorted(names) != sorted(_node_arrays(op, inputs)):
            _fail(model, f"{where}: field 'arrays' must list {sorted(_node_arrays(op, inputs))} "
                         f"for this {op}, not {names!r}")
        if set(names) != stored.get(name, set()):
            _fail(model, f"{where}: the arrays listed ({sorted(names)}) differ from those "
                         f"stored ({sorted(stored.get(name, set()))})")
        if op == "conv":
            out = _check_conv(model, n, where, inputs, tensors, xs, xlo, xhi)
        elif op == "maxpool":
            if len(xs) != 3 or xlo < 0:
                _fail(model, f"{where}: maxpool needs an unsigned [C, H, W] input")
            k, s, p = (_need(model, n, f, int, where) for f in ("kernel", "stride", "padding"))
            if k < 1 or s < 1 or not 0 <= p < k:
                _fail(model, f"{where}: bad maxpool geometry kernel={k} stride={s} padding={p}")
            hw = tuple(_osize(model, where, d, k, s, p) for d in xs[1:])
            out = ((xs[0], *hw), xlo, xhi)
        elif op == "avgpool":
            if len(xs) != 3:
                _fail(model, f"{where}: avgpool needs a [C, H, W] input")
            out = ((xs[0],), xlo * xs[1] * xs[2], xhi * xs[1] * xs[2])
        else:
            out = _check_fc(model, n, where, xs, xlo, xhi)
        declared = tuple(_ints(model, n, "shape", where, length=(1, 3)))
        if declared != out[0]:
            _fail(model, f"{where}: declared output shape {list(declared)} but the graph gives "
                         f"{list(out[0])}")
        scale = n.get("scale")
        if (not isinstance(scale, (int, float)) or isinstance(scale, bool)
                or not (math.isfinite(scale) and scale > 0)):
            _fail(model, f"{where}: 'scale' must be a positive finite number, not {scale!r}")
        tensors[name] = out
    extra = sorted(f"{k}/{a}" for k, v in stored.items() if k not in tensors for a in v)
    if extra:
        _fail(model, f"arrays that belong to no node: {extra}")
    last = nodes[-1]["name"]
    if m.get("output") != last:
        _fail(model, f"'output' must name the last node ({last!r}), not {m.get('output')!r}")
    classes = m.get("classes", [])
    if not all(isinstance(c, str) for c in classes):
        _fail(model, f"'classes' must be a list of strings, not {classes!r}")
    if classes and (len(classes),) != tensors[last][0]:
        _fail(model, f"'classes' names {len(classes)} classes, the output {last!r} has shape "
                     f"{list(tensors[last][0])}")


def _osize(model, where, size, k, s, p):
    o = out_size(size, k, s, p)
    if o < 1:
        _fail(model, f"{where}: kernel {k} with padding {p} does not fit input size {size}")
    return o


def _check_conv(model, n, where, inputs, tensors, xs, xlo, xhi):
    f = {k: _need(model, n, k, int, where) for k in
         ("in_channels", "out_channels", "kernel", "stride", "padding", "w_bits", "out_bits",
          "shift")}
    signed = _need(model, n, "out_signed", bool, where)
    if xlo < 0:
        _fail(model, f"{where}: conv input {inputs[0]!r} is signed; the array takes unsigned "
                     "activations")
    if len(xs) != 3 or xs[0] != f["in_channels"]:
        _fail(model, f"{where}: input {inputs[0]!r} has shape {list(xs)}, expected "
                     f"{f['in_channels']} channels")
    for b in ("w_bits", "out_bits"):
        if not 1 <= f[b] <= 8:
            _fail(model, f"{where}: {b} must be 1..8, not {f[b]}")
    if signed and f["out_bits"] < 2:
        _fail(model, f"{where}: a signed output needs at least 2 bits")
    if not 1 <= f["shift"] <= MAX_SHIFT:
        _fail(model, f"{where}: shift must be 1..{MAX_SHIFT}, not {f['shift']}")
    k, cout = f["kernel"], f["out_channels"]
    if k < 1 or f["stride"] < 1 or not 0 <= f["padding"] < k or cout < 1:
        _fail(model, f"{where}: bad conv geometry {f}")
    oshape = (cout, _osize(model, where, xs[1], k, f["stride"], f["padding"]),
              _osize(model, where, xs[2], k, f["stride"], f["padding"]))
    qmax = weight_qmax(f["w_bits"])
    w = _arr(model, n["name"], "weight", (cout, xs[0], k, k), -qmax, qmax)
    if f["w_bits"] == 1 and np.any(w == 0):
        _fail(model, f"{where}: binary (1-bit) weights must be -1 or +1, found 0")
    mlim = (1 << (MULT_BITS - 1)) - 1
    _arr(model, n["name"], "mult", (cout,), -mlim, mlim)
    _arr(model, n["name"], "bias", (cout,), -BIAS_LIMIT + 1, BIAS_LIMIT - 1)
    bound = xs[0] * k * k * qmax * max(abs(xlo), abs(xhi))
    if bound >= EXACT_LIMIT:
        _fail(model, f"{where}: accumulator bound {bound} is too large for exact evaluation")
    if len(inputs) == 2:
        rs, _, _ = tensors[inputs[1]]
        if rs != oshape:
            _fail(model, f"{where}: residual {inputs[1]!r} has shape {list(rs)}, the output "
                         f"is {list(oshape)}")
        rlim = (1 << (RES_MULT_BITS - 1)) - 1
        _arr(model, n["name"], "res_mult", (cout,), -rlim, rlim)
    lo, hi = act_range(f["out_bits"], signed)
    return oshape, lo, hi


def _check_fc(model, n, where, xs, xlo, xhi):
    fin, fout, wb = (_need(model, n, k, int, where) for k in ("in_features", "out_features",
                                                                "w_bits"))
    if xs != (fin,):
        _fail(model, f"{where}: input has shape {list(xs)}, expected [{fin}]")
    if not 1 <= wb <= 8:
        _fail(model, f"{where}: w_bits must be 1..8, not {wb}")
    qmax = weight_qmax(wb)
    _arr(model, n["name"], "weight", (fout, fin), -qmax, qmax)
    _arr(model, n["name"], "bias", (fout,), -(2**40), 2**40)
    big = fin * qmax * max(abs(xlo), abs(xhi))
    return (fout,), -big - 2**40, big + 2**40


# ----------------------------------------------------------------------------- execution


def _windows(x: np.ndarray, k: int, stride: int, pad: int, value=0) -> np.ndarray:
    """(N, C, H, W) -> (N, C, Ho, Wo, k, k) view of the padded input's k x k windows."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=value)
    v = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return v[:, :, ::stride, ::stride]


def conv_acc(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Integer convolution accumulators (N, Cout, Ho, Wo) as int64, zero padding."""
    n, c = x.shape[:2]
    cout, _, k, _ = w.shape
    win = _windows(x, k, stride, pad)
    ho, wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    acc = cols.astype(np.float64) @ w.reshape(cout, -1).astype(np.float64).T
    return acc.astype(np.int64).reshape(n, ho, wo, cout).transpose(0, 3, 1, 2)


def conv_acc_adc(x: np.ndarray, w: np.ndarray, stride: int, pad: int, adc: AdcModel, *,
                 w_bits: int, a_bits: int) -> np.ndarray:
    """:func:`conv_acc` as the CIM array computes it with a partial-sum ADC (see
    :class:`AdcModel`): one :func:`adc_dot` per row tile, tiles summed exactly.

    With ``adc.offsets`` every tile runs on bit-columns of the device, placed as
    :func:`tile_offsets` states."""
    n, c = x.shape[:2]
    cout, _, k, _ = w.shape
    win = _windows(x, k, stride, pad)  # (N, C, Ho, Wo, k, k)
    ho, wo = win.shape[2:4]
    acc = np.zeros((n, ho, wo, cout), dtype=np.int64)
    groups = -(-c // adc.rows)
    t = 0
    for kh in range(k):
        for kw in range(k):
            xt = win[:, :, :, :, kh, kw].transpose(0, 2, 3, 1)  # (N, Ho, Wo, C)
            for c0 in range(0, c, adc.rows):
                off = None
                if adc.offsets is not None:
                    off = tile_offsets(adc.offsets, t, k * k * groups, cout, w_bits)
                acc += adc_dot(xt[..., c0:c0 + adc.rows], w[:, c0:c0 + adc.rows, kh, kw].T,
                               w_bits=w_bits, a_bits=a_bits, adc_bits=adc.bits, offsets=off)
                t += 1
    return acc.transpose(0, 3, 1, 2)


def tile_offsets(offsets: AdcOffsets, tile: int, tiles: int, cout: int,
                 w_bits: int) -> np.ndarray:
    """The offsets ``(cout, w_bits)`` of the bit-columns that compute row tile ``tile`` (of
    ``tiles``, in the order kh, kw, channel group) of a conv with ``cout`` outputs.

    The golden model's placement: output channel ``o`` runs on column ``o % cols`` of column
    tile ``j = o // cols``, and weight tile ``(j, t)`` on macro ``(j * tiles + t) % macros``
    (the weight image's tile order, dealt round robin). The sequencer places tiles by rounds
    and copies (``gateware/README.md``); with independent offsets per bit-column both give
    every tile its own draw, which is what an accuracy study needs."""
    if offsets.w_bits != w_bits:
        raise ValueError(f"the device's offsets are for {offsets.w_bits}-bit weights "
                         f"(shape {offsets.values.shape}), the layer has {w_bits}-bit weights")
    cols = offsets.cols
    parts = [offsets.values[(j * tiles + tile) % offsets.macros, :min(cols, cout - j * cols)]
             for j in range(-(-cout // cols))]
    return np.concatenate(parts)


def tensor_bits(model: IntModel, name: str) -> int:
    """Bit width of an unsigned tensor (the model input is 8-bit)."""
    while name != "input":
        node = model.node(name)
        if node["op"] == "conv":
            return node["out_bits"]
        name = node["inputs"][0]
    return 8


def run_node(model: IntModel, node: dict, *xs: np.ndarray,
             adc: AdcModel | None = None) -> np.ndarray:
    """Compute one node from its (int64) inputs, optionally with a partial-sum ADC."""
    name, op = node["name"], node["op"]
    if op == "conv":
        w = model.array(name, "weight")
        if adc is not None and node["where"] == "accel":
            acc = conv_acc_adc(xs[0], w, node["stride"], node["padding"], adc,
                               w_bits=node["w_bits"],
                               a_bits=tensor_bits(model, node["inputs"][0]))
        else:
            acc = conv_acc(xs[0], w, node["stride"], node["padding"])
        lo, hi = act_range(node["out_bits"], node["out_signed"])
        res = xs[1] if len(xs) > 1 else None
        return requantize(acc, model.array(name, "mult"), model.array(name, "bias"),
                          node["shift"], lo, hi, res,
                          model.array(name, "res_mult") if res is not None else None)
    if op == "maxpool":
        win = _windows(xs[0], node["kernel"], node["stride"], node["padding"])
        return win.max(axis=(4, 5))
    if op == "avgpool":
        return xs[0].sum(axis=(2, 3))
    w = model.array(name, "weight").astype(np.int64)
    return xs[0] @ w.T + model.array(name, "bias").astype(np.int64)


def check_input(model: IntModel, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != model.input_shape:
        raise ValueError(f"input must be (N, {', '.join(map(str, model.input_shape))}), "
                         f"not {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"input pixels must be integers, not {x.dtype}")
    pmax = model.manifest["input"]["pixel_max"]
    if x.size and (x.min() < 0 or x.max() > pmax):
        raise ValueError(f"input pixels must lie in [0, {pmax}], found [{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def run(model: IntModel, x: np.ndarray, upto: str | None = None,
        adc: AdcModel | None = None) -> dict[str, np.ndarray]:
    """Run the model on integer pixels ``x`` (N, C, H, W); return every node's output.
    ``adc`` models a partial-sum ADC on the accelerator's convs (exact when None)."""
    env = {"input": check_input(model, x)}
    for node in model.nodes:
        env[node["name"]] = run_node(model, node, *(env[i] for i in node["inputs"]), adc=adc)
        if node["name"] == upto:
            break
    del env["input"]
    return env


def predict(model: IntModel, x: np.ndarray, batch: int = 500,
            adc: AdcModel | None = None, progress=None) -> np.ndarray:
    """Class indices for ``x``; ``progress(n)``, if given, after each batch of ``n`` images
    (a progress bar's ``update``)."""
    out = model.manifest["output"]
    classes = []
    for i in range(0, len(x), batch):
        classes.append(run(model, x[i:i + batch], adc=adc)[out].argmax(1))
        if progress is not None:
            progress(len(classes[-1]))
    return np.concatenate(classes)


def accuracy(model: IntModel, x: np.ndarray, y: np.ndarray, batch: int = 500,
             adc: AdcModel | None = None, progress=None) -> float:
    return float((predict(model, x, batch, adc, progress) == np.asarray(y)).mean())
