"""contract/README.md, re-implemented from the document alone and held against the golden model.

``Contract`` below reads the model file and computes every node in exact int64 NumPy as the
document states it (file format, node semantics, the partial-sum ADC rule, input fitting, the
argmax tie rule). It never calls the golden model's internals: each test compares its result
with :func:`model.golden.run` (or ``predict``) bit for bit, on the shipped models and on
corner cases built for the purpose.
"""

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest

from model import data, golden
from sim.seed import test_seed

SEED = test_seed()
MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")


# ----------------------------------------------------------------------------- the contract


def content_hash(manifest, arrays) -> str:
    """SHA-256 of the manifest without ``content_sha256`` (canonical JSON and a newline), then
    per array, in name order, ``[name, dtype, shape]`` as JSON, a newline and its C-order bytes."""
    rest = {k: v for k, v in manifest.items() if k != "content_sha256"}
    h = hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    for name in sorted(arrays):
        a = arrays[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode() + b"\n")
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def read_model(path) -> tuple[dict, dict]:
    """(manifest, arrays) of a model file: an .npz whose ``manifest`` member is UTF-8 JSON,
    whose ``content_sha256`` is the hash of everything else."""
    with zipfile.ZipFile(path) as z:
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n)), allow_pickle=False)
                  for n in z.namelist()}
    manifest = json.loads(arrays.pop("manifest").astype(np.uint8).tobytes().decode())
    assert manifest["format"] == "cim-int-model" and manifest["version"] == 2
    assert manifest["content_sha256"] == content_hash(manifest, arrays)
    return manifest, arrays


def taps(x, k, stride, pad):
    """Yield ``(kh, kw, view)``: ``view[n, c, i, j] = xpad[n, c, i*stride + kh, j*stride + kw]``
    with zero padding and ``floor((H + 2*pad - k) / stride) + 1`` outputs per axis."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (x.shape[2] + 2 * pad - k) // stride + 1
    wo = (x.shape[3] + 2 * pad - k) // stride + 1
    for kh in range(k):
        for kw in range(k):
            yield kh, kw, xp[:, :, kh:kh + stride * (ho - 1) + 1:stride,
                             kw:kw + stride * (wo - 1) + 1:stride]


def bit_dot(x, w, w_bits, a_bits, adc_bits):
    """One row tile ``x (..., rows) @ w (rows, cols)`` through the partial-sum ADC."""
    cmax = (1 << adc_bits) - 1
    out = 0
    for j in range(a_bits):
        xj = (x >> j) & 1
        if w_bits == 1:
            part = 2 * np.minimum(xj @ (w == 1).astype(np.int64), cmax) - xj.sum(-1)[..., None]
        else:
            part = 0
            for b in range(w_bits):
                count = np.minimum(xj @ ((w >> b) & 1), cmax)
                part = part + (-count if b == w_bits - 1 else count) * (1 << b)
        out = out + part * (1 << j)
    return out


class Contract:
    def __init__(self, manifest, arrays):
        self.m, self.a = manifest, arrays
        self.nodes = {n["name"]: n for n in manifest["nodes"]}

    def arr(self, node, name):
        return self.a[f"{node['name']}/{name}"].astype(np.int64)

    def a_bits(self, name):
        while name != "input":
            n = self.nodes[name]
            if n["op"] == "conv":
                return n["out_bits"]
            name = n["inputs"][0]
        return 8

    def conv(self, n, x, res, adc):
        w = self.arr(n, "weight")
        k, s, p = n["kernel"], n["stride"], n["padding"]
        acc = 0
        for kh, kw, v in taps(x, k, s, p):
            wt = w[:, :, kh, kw]
            if adc is None or n["where"] != "accel":
                acc = acc + np.einsum("nchw,oc->nohw", v, wt)
                continue
            rows, bits = adc
            vt = v.transpose(0, 2, 3, 1)
            for c0 in range(0, x.shape[1], rows):
                acc = acc + bit_dot(vt[..., c0:c0 + rows], wt[:, c0:c0 + rows].T, n["w_bits"],
                                    self.a_bits(n["inputs"][0]), bits).transpose(0, 3, 1, 2)
        col = (1, -1, 1, 1)
        y = acc * self.arr(n, "mult").reshape(col) + self.arr(n, "bias").reshape(col)
        if res is not None:
            y = y + res * self.arr(n, "res_mult").reshape(col)
        y = (y + (1 << (n["shift"] - 1))) >> n["shift"]
        b = n["out_bits"]
        lo, hi = (-(2 ** (b - 1) - 1), 2 ** (b - 1) - 1) if n["out_signed"] else (0, 2**b - 1)
        return np.clip(y, lo, hi)

    def run(self, x, adc=None):
        env = {"input": np.asarray(x).astype(np.int64)}
        for n in self.m["nodes"]:
            xs = [env[i] for i in n["inputs"]]
            if n["op"] == "conv":
                out = self.conv(n, xs[0], xs[1] if len(xs) > 1 else None, adc)
            elif n["op"] == "maxpool":
                out = np.max([v for _, _, v in taps(xs[0], n["kernel"], n["stride"],
                                                    n["padding"])], axis=0)
            elif n["op"] == "avgpool":
                out = xs[0].sum(axis=(2, 3))
            else:
                out = xs[0] @ self.arr(n, "weight").T + self.arr(n, "bias")
            env[n["name"]] = out
        del env["input"]
        return env

    def predict(self, x):
        logits = self.run(x)[self.m["output"]]
        return np.array([np.flatnonzero(row == row.max())[0] for row in logits])


def fit(images, shape):
    """Centre zero padding to the model's square input, the odd row/column bottom/right."""
    c, h, w = shape
    n, ci, hi, wi = images.shape
    assert ci == c and hi <= h and wi <= w
    out = np.zeros((n, c, h, w), images.dtype)
    top, left = (h - hi) // 2, (w - wi) // 2
    out[:, :, top:top + hi, left:left + wi] = images
    return out


def assert_same(mine: dict, gold: dict, what: str):
    assert list(mine) == list(gold), f"seed {SEED}, {what}: node lists differ"
    for name, g in gold.items():
        m = mine[name]
        if not np.array_equal(m, g):
            idx = tuple(np.argwhere(m != g)[0])
            pytest.fail(f"seed {SEED}, {what}: node {name} differs first at {idx}: "
                        f"contract {m[idx]} vs golden {g[idx]}")


# ----------------------------------------------------------------------------- shipped models


def _images(dataset, n, shape):
    try:
        x, _, info = data.load_dataset(dataset, "test", limit=n)
    except data.DatasetError as e:
        pytest.skip(f"dataset not installed: {e}")
    assert x.dtype == np.uint8 and int(x.max()) <= info.pixel_max
    fitted = fit(x, shape)
    assert np.array_equal(fitted, data.pad_images(x, shape[1])), f"seed {SEED}: fitting"
    return fitted


@pytest.mark.parametrize("name,dataset,n", [("digits_cnn_w4a4", "digits", 6),
                                            ("resnet14_fmnist_w4a4", "fashion-mnist", 2)])
def test_shipped_model_on_test_images(name, dataset, n):
    path = os.path.join(MODELS, f"{name}.npz")
    c = Contract(*read_model(path))
    model = golden.load(path)
    shape = tuple(c.m["input"]["shape"])
    assert c.m["input"]["pixel_max"] == (16 if dataset == "digits" else 255)
    x = _images(dataset, n, shape)
    assert_same(c.run(x), golden.run(model, x), f"{name} on {dataset}")
    rng = np.random.default_rng(SEED)
    xr = rng.integers(0, c.m["input"]["pixel_max"] + 1, (1, *shape))
    assert_same(c.run(xr), golden.run(model, xr), f"{name} on random pixels")
    assert np.array_equal(c.predict(x), golden.predict(model, x)), f"seed {SEED}: {name}"


def test_adc_rule_on_the_digits_model():
    path = os.path.join(MODELS, "digits_cnn_w4a4.npz")
    c = Contract(*read_model(path))
    model = golden.load(path)
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, 17, (1, 1, 8, 8))
    for rows, bits in ((8, 2), (16, 3)):
        gold = golden.run(model, x, adc=golden.AdcModel(rows, bits))
        assert_same(c.run(x, adc=(rows, bits)), gold, f"digits ADC rows={rows} bits={bits}")


# ----------------------------------------------------------------------------- built models


def conv(name, inputs, cin, cout, *, k=3, s=1, p=1, w_bits=4, out_bits=4, signed=False,
         where="accel"):
    return dict(name=name, op="conv", inputs=inputs, where=where, scale=1.0, in_channels=cin,
                out_channels=cout, kernel=k, stride=s, padding=p, w_bits=w_bits,
                out_bits=out_bits, out_signed=signed)


def build(nodes, arrays, shape, pixel_max=255):
    """An in-memory model: shapes filled in by the contract's size rules, then validated."""
    c, h, w = shape
    shapes = {"input": (c, h, w)}
    for n in nodes:
        src = shapes[n["inputs"][0]]
        if n["op"] in ("conv", "maxpool"):
            o = [(d + 2 * n["padding"] - n["kernel"]) // n["stride"] + 1 for d in src[1:]]
            n["shape"] = [n.get("out_channels", src[0]), *o]
        elif n["op"] == "avgpool":
            n["shape"] = [src[0]]
        else:
            n["shape"] = [n["out_features"]]
        n["arrays"] = sorted(k.split("/")[1] for k in arrays if k.split("/")[0] == n["name"])
        shapes[n["name"]] = tuple(n["shape"])
    man = dict(format="cim-int-model", version=2, input=dict(shape=list(shape),
               pixel_max=pixel_max), nodes=nodes, output=nodes[-1]["name"])
    model = golden.IntModel(man, arrays)
    golden.validate(model)
    return model


def random_net(rng, w_bits, a_bits):
    """A small ResNet-like integer net: MCU conv, maxpool, accel convs with a residual add and
    a signed shortcut, average pooling and a classifier, with random in-range parameters."""
    def qmax(b):
        return 1 if b == 1 else 2 ** (b - 1) - 1

    def weights(shape, b):
        if b == 1:
            return rng.choice(np.array([-1, 1], np.int8), shape)
        return rng.integers(-qmax(b), qmax(b) + 1, shape).astype(np.int8)

    nodes = [conv("c1", ["input"], 3, 8, k=5, s=2, p=2, w_bits=8, out_bits=a_bits, where="mcu"),
             dict(name="pool", op="maxpool", inputs=["c1"], where="mcu", scale=1.0, kernel=3,
                  stride=2, padding=1),
             conv("b1", ["pool"], 8, 8, w_bits=w_bits, out_bits=a_bits),
             conv("b2", ["b1", "pool"], 8, 8, w_bits=w_bits, out_bits=a_bits),
             conv("sc", ["b2"], 8, 16, k=1, s=2, p=0, w_bits=w_bits, out_bits=8, signed=True),
             conv("d1", ["b2"], 8, 16, s=2, w_bits=w_bits, out_bits=a_bits),
             conv("d2", ["d1", "sc"], 16, 16, w_bits=w_bits, out_bits=a_bits),
             dict(name="gap", op="avgpool", inputs=["d2"], where="mcu", scale=1.0),
             dict(name="fc", op="fc", inputs=["gap"], where="mcu", scale=1.0, in_features=16,
                  out_features=10, w_bits=w_bits)]
    arrays, xmax = {}, {"input": 255}
    for n in nodes:
        if n["op"] != "conv":
            xmax[n["name"]] = xmax[n["inputs"][0]]
            continue
        name, cin, cout, k = n["name"], n["in_channels"], n["out_channels"], n["kernel"]
        hi = 2 ** (n["out_bits"] - 1) - 1 if n["out_signed"] else 2 ** n["out_bits"] - 1
        shift = int(rng.integers(12, 20))
        spread = np.sqrt(cin * k * k) * qmax(n["w_bits"]) * xmax[n["inputs"][0]] / 2
        m = rng.uniform(0.5, 2.0, cout) * hi * 2.0**shift / spread
        arrays[f"{name}/weight"] = weights((cout, cin, k, k), n["w_bits"])
        arrays[f"{name}/mult"] = np.clip(np.round(m), 1, 32767).astype(np.int32)
        arrays[f"{name}/bias"] = rng.integers(-hi, hi + 1, cout) << (shift - 1)
        if len(n["inputs"]) > 1:
            arrays[f"{name}/res_mult"] = rng.integers(-(2**shift), 2**shift, cout).astype(np.int32)
        n["shift"] = shift
        xmax[name] = hi
    arrays["fc/weight"] = weights((10, 16), w_bits)
    arrays["fc/bias"] = rng.integers(-1000, 1000, 10)
    return build(nodes, arrays, (3, 16, 16))


@pytest.mark.parametrize("w_bits,a_bits", [(1, 4), (2, 2), (2, 4), (4, 4), (8, 1)])
def test_random_net_exact_and_with_adc(w_bits, a_bits):
    rng = np.random.default_rng([SEED, w_bits, a_bits])
    model = random_net(rng, w_bits, a_bits)
    c = Contract(model.manifest, model.arrays)
    x = rng.integers(0, 256, (3, 3, 16, 16))
    gold = golden.run(model, x)
    assert_same(c.run(x), gold, f"random net W{w_bits}A{a_bits}")
    assert len(np.unique(gold["b2"])) >= min(3, 2**a_bits), f"seed {SEED}: degenerate"
    clipped = golden.run(model, x, adc=golden.AdcModel(rows=4, bits=1))
    assert_same(c.run(x, adc=(4, 1)), clipped, f"random net W{w_bits}A{a_bits} ADC rows=4 bits=1")
    assert not np.array_equal(clipped["fc"], gold["fc"]), f"seed {SEED}: the ADC never clipped"


def _one_conv(y_values, shift, signed, out_bits=8):
    """A 1x1 conv whose pre-shift value y equals ``y_values`` (pixel 0..N-1, bias offset)."""
    lo = min(y_values)
    n = conv("c", ["input"], 1, 1, k=1, p=0, w_bits=8, out_bits=out_bits, signed=signed,
             where="mcu")
    n["shift"] = shift
    arrays = {"c/weight": np.ones((1, 1, 1, 1), np.int8), "c/mult": np.array([1], np.int32),
              "c/bias": np.array([lo], np.int64)}
    model = build([n], arrays, (1, 1, len(y_values)))
    return model, np.array(y_values).reshape(1, 1, 1, -1) - lo


def test_requantization_ties_round_half_up_then_clamp():
    # y / 2**2 = -2.5, -1.5, -0.5, 0.5, 1.5, 2.5: half up, towards +infinity.
    model, x = _one_conv([-10, -6, -2, 2, 6, 10], shift=2, signed=True)
    out = golden.run(model, x)["c"].ravel()
    assert out.tolist() == [-2, -1, 0, 1, 2, 3], f"seed {SEED}"
    assert np.array_equal(Contract(model.manifest, model.arrays).run(x)["c"].ravel(), out)
    # Clamping after rounding: signed 3 bits is [-3, 3], unsigned 2 bits [0, 3].
    model, x = _one_conv([-16, -14, 13, 14], shift=2, signed=True, out_bits=3)
    assert golden.run(model, x)["c"].ravel().tolist() == [-3, -3, 3, 3]
    model, x = _one_conv([-16, -2, 13, 14], shift=2, signed=False, out_bits=2)
    assert golden.run(model, x)["c"].ravel().tolist() == [0, 0, 3, 3]


def test_convolution_is_correlation():
    n = conv("c", ["input"], 1, 1, k=2, p=0, w_bits=8, out_bits=8, where="mcu")
    n["shift"] = 1
    arrays = {"c/weight": np.array([[[[1, 2], [3, 4]]]], np.int8),
              "c/mult": np.array([2], np.int32), "c/bias": np.array([0], np.int64)}
    model = build([n], arrays, (1, 3, 3))
    x = np.arange(1, 10).reshape(1, 1, 3, 3)
    assert golden.run(model, x)["c"][0, 0].tolist() == [[37, 47], [67, 77]]


def test_logit_tie_goes_to_the_lowest_class():
    rng = np.random.default_rng(SEED)
    model = random_net(rng, 4, 4)
    w = model.arrays["fc/weight"]
    w[[3, 7]] = w[5]
    model.arrays["fc/bias"][[3, 5, 7]] = 10**6  # classes 3, 5 and 7 tie, above the rest
    x = rng.integers(0, 256, (4, 3, 16, 16))
    logits = golden.run(model, x)["fc"]
    assert np.all(logits[:, 3] == logits[:, 7]) and np.all(logits.argmax(1) == 3)
    assert golden.predict(model, x).tolist() == [3] * 4, f"seed {SEED}"
    assert Contract(model.manifest, model.arrays).predict(x).tolist() == [3] * 4


LIMITS = [  # (field, largest accepted magnitude) as contract/README.md states them
    ("mult", 2**15 - 1), ("bias", 2**47 - 1), ("res_mult", 2**23 - 1), ("weight", 7),
]


@pytest.mark.parametrize("field,limit", LIMITS)
def test_loader_enforces_the_narrow_symmetric_ranges(field, limit):
    def model(v):
        a = conv("a", ["input"], 1, 1, k=1, p=0, where="mcu")
        b = conv("b", ["a", "a"], 1, 1, k=1, p=0, where="mcu")
        a["shift"] = b["shift"] = 4
        arrays = {f"{n}/{f}": np.array([1]) for n in "ab" for f in ("mult", "bias")}
        arrays.update({"a/weight": np.ones((1, 1, 1, 1), np.int8),
                       "b/weight": np.ones((1, 1, 1, 1), np.int8), "b/res_mult": np.array([1])})
        shape = arrays[f"b/{field}"].shape
        arrays[f"b/{field}"] = np.full(shape, v, np.int64)
        return build([a, b], arrays, (1, 2, 2))

    for v in (limit, -limit):
        model(v)
    for v in (limit + 1, -limit - 1):
        with pytest.raises(golden.ModelFormatError):
            model(v)


@pytest.mark.parametrize("w_bits,codes,bad", [(1, [-1, 1], [0, 2]), (2, [-1, 0, 1], [-2, 2]),
                                              (3, [-3, 0, 3], [-4, 4])])
def test_low_bit_weight_codes(w_bits, codes, bad):
    def model(v):
        n = conv("c", ["input"], 1, 1, k=1, p=0, w_bits=w_bits, out_bits=8, where="mcu")
        n["shift"] = 1
        return build([n], {"c/weight": np.full((1, 1, 1, 1), v, np.int8),
                           "c/mult": np.array([2]), "c/bias": np.array([0])}, (1, 1, 1))

    for v in codes:  # the code is the weight's value: out = x * w (mult 2, shift 1)
        assert golden.run(model(v), np.array([[[[9]]]]))["c"].item() == max(0, 9 * v)
    for v in bad:
        with pytest.raises(golden.ModelFormatError):
            model(v)
    for shift in (0, 41):
        n = conv("c", ["input"], 1, 1, k=1, p=0, where="mcu")
        n["shift"] = shift
        with pytest.raises(golden.ModelFormatError, match="shift"):
            build([n], {"c/weight": np.ones((1, 1, 1, 1), np.int8), "c/mult": np.array([1]),
                        "c/bias": np.array([0])}, (1, 1, 1))
