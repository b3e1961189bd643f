"""The golden model against the PyTorch quantized model, and the model file's validation."""

import json
import zipfile

import numpy as np
import pytest
import torch

from model import export, golden, modelfile, nets
from model.testnets import random_net, small_specs

BITS = [(w, a) for w in (1, 2, 4, 8) for a in (1, 2, 4, 8)]


@pytest.mark.parametrize("w_bits,a_bits", BITS)
def test_golden_equals_pytorch_integer_model_on_every_layer(tmp_path, w_bits, a_bits):
    for i, spec in enumerate(small_specs(w_bits, a_bits)):
        seed = 100 * w_bits + 10 * a_bits + i
        net, x = random_net(spec, seed)
        net.set_mode("integer")
        with torch.no_grad():
            _, ref = net(x, collect=True)
        path = export.export(net, tmp_path / f"m{i}.npz")
        got = golden.run(golden.load(path), x.numpy())
        assert list(got) == list(ref)
        for name, r in ref.items():
            r = r.numpy()
            g = got[name]
            if not np.array_equal(g, r):
                idx = tuple(np.argwhere(g != r)[0])
                pytest.fail(f"seed {seed} {spec.arch} W{w_bits}A{a_bits}: node {name} differs "
                            f"first at {idx}: golden {g[idx]} vs pytorch {r[idx]}")
        # Activations really use their grids (the test is not comparing constants).
        assert ref["conv1"].max() > 0


@pytest.mark.parametrize("w_bits,a_bits", [(2, 2), (4, 4), (8, 8), (1, 4)])
def test_integer_mode_matches_fake_quant_layer_by_layer(w_bits, a_bits):
    """Each conv in integer mode equals its fake-quant counterpart to within one output LSB
    (the 16-bit fixed-point multiplier differs from the float scale by < 2**-15), and exactly
    on almost every element."""
    spec = small_specs(w_bits, a_bits)[0]
    net, x = random_net(spec, seed=7)
    with torch.no_grad():
        _, ints = net.set_mode("integer")(x, collect=True)
        scales = {n["name"]: n["scale"] for n in export.to_manifest(net)[0]["nodes"]}
        scales["input"] = 1 / spec.pixel_max
        ints["input"] = x
        net.set_mode("fakequant")
        for name, mod in net.layers.items():
            if not isinstance(mod, nets.QConv):
                continue
            args = [ints[i].double().float() * scales[i] for i in net.inputs[name]]
            fq = mod(*args) / scales[name]
            diff = (fq - ints[name].float()).abs()
            assert float(diff.max()) <= 1.0 + 1e-3, name
            assert float((diff > 1e-3).float().mean()) < 0.01, name


def test_golden_checks_its_input(tmp_path):
    spec = small_specs(4, 4)[2]
    net, x = random_net(spec, seed=3)
    model = golden.load(export.export(net, tmp_path / "m.npz"))
    with pytest.raises(ValueError, match="must be"):
        golden.run(model, x.numpy()[:, :, :4])
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        golden.run(model, x.numpy() + 20)
    with pytest.raises(ValueError, match="integers"):
        golden.run(model, x.numpy().astype(np.float32))


# ------------------------------------------------------------------ the file's validation


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    spec = small_specs(4, 4)[0]
    net, _ = random_net(spec, seed=11)
    manifest, arrays = export.to_manifest(net)
    path = export.save(tmp_path_factory.mktemp("m") / "good.npz", manifest, arrays)
    golden.load(path)  # the untouched file is valid
    return manifest, arrays, path


def _rewrite(tmp_path, exported, edit):
    manifest, arrays, _ = exported
    manifest = json.loads(json.dumps(manifest))
    arrays = {k: v.copy() for k, v in arrays.items()}
    edit(manifest, arrays)
    return export.save(tmp_path / "bad.npz", manifest, arrays)


def _node(manifest, name):
    return next(n for n in manifest["nodes"] if n["name"] == name)


CASES = {
    "version": (lambda m, a: m.update(version=99), "version 99 is not supported"),
    "format": (lambda m, a: m.update(format="onnx"), "not a cim-int-model file"),
    "weight range": (lambda m, a: a["layer1_0_conv1/weight"].__setitem__((0, 0, 0, 0), 8),
                     "layer1_0_conv1.*weight.*outside the allowed \\[-7, 7\\]"),
    "weight shape": (lambda m, a: a.update({"layer1_0_conv1/weight":
                                            a["layer1_0_conv1/weight"][:, :4]}),
                     "weight.*has shape"),
    "missing array": (lambda m, a: a.pop("layer2_0_conv2/res_mult"),
                      "layer2_0_conv2.*differ from those stored|res_mult.*missing"),
    "stray array": (lambda m, a: a.update({"ghost/weight": np.zeros(3, np.int8)}),
                    "belong to no node"),
    "unknown op": (lambda m, a: _node(m, "maxpool").update(op="lrn"), "unsupported op 'lrn'"),
    "forward reference": (lambda m, a: _node(m, "conv1").update(inputs=["fc"]),
                          "input 'fc' is not the model input or an earlier node"),
    "channels": (lambda m, a: _node(m, "layer1_0_conv1").update(in_channels=9),
                 "expected 9 channels"),
    "shape": (lambda m, a: _node(m, "maxpool").update(shape=[8, 9, 9]),
              "declared output shape"),
    "multiplier": (lambda m, a: a["conv1/mult"].__setitem__(0, 40000), "mult.*outside"),
    "shift": (lambda m, a: _node(m, "conv1").update(shift=0), "shift must be"),
    "bits": (lambda m, a: _node(m, "conv1").update(out_bits=9), "out_bits must be 1..8"),
    "where": (lambda m, a: _node(m, "fc").update(where="gpu"), "'where' must be one of"),
    "type": (lambda m, a: _node(m, "conv1").update(kernel="7"), "must be an integer"),
    "output": (lambda m, a: m.update(output="conv1"), "'output' must name the last node"),
    "signed conv input": (lambda m, a: _node(m, "layer2_0_conv1").update(
        inputs=["layer2_0_shortcut"]), "is signed"),
    # Every field's type: each once raised a bare TypeError or passed unnoticed.
    "shape a number": (lambda m, a: _node(m, "conv1").update(shape=16),
                       "node 'conv1': field 'shape' must be a list of 1 or 3 positive integers"),
    "shape of floats": (lambda m, a: _node(m, "avgpool").update(shape=[8.0]),
                        "node 'avgpool': field 'shape' must be a list"),
    "input shape bools": (lambda m, a: m["input"].update(shape=[True, 16, 16]),
                          "input: field 'shape' must be a list of 3 positive integers"),
    "inputs not names": (lambda m, a: _node(m, "fc").update(inputs=[["avgpool"]]),
                         "node 'fc': field 'inputs' must be a list of strings"),
    "inputs a string": (lambda m, a: _node(m, "fc").update(inputs="avgpool"),
                        "node 'fc': field 'inputs' must be a list, not 'avgpool'"),
    "arrays not names": (lambda m, a: _node(m, "conv1").update(arrays=[{"w": 1}, "bias"]),
                         "node 'conv1': field 'arrays' must be a list of strings"),
    "arrays of another op": (lambda m, a: (_node(m, "maxpool").update(arrays=["weight"]),
                                           a.update({"maxpool/weight": np.zeros(1, np.int8)})),
                             "node 'maxpool': field 'arrays' must list \\[\\] for this maxpool"),
    "unnamed array": (lambda m, a: a.update({"conv1": np.zeros(1, np.int8)}),
                      "array 'conv1' is not named <node>/<array>"),
    "scale a bool": (lambda m, a: _node(m, "fc").update(scale=True), "'scale' must be a"),
    "scale infinite": (lambda m, a: _node(m, "fc").update(scale=float("inf")),
                       "'scale' must be a positive finite number"),
    "out_signed a number": (lambda m, a: _node(m, "conv1").update(out_signed=0),
                            "field 'out_signed' must be true or false"),
    "version a bool": (lambda m, a: m.update(version=True), "version True is not supported"),
    "name input": (lambda m, a: _node(m, "fc").update(name="input"), "not 'input'"),
    "name a number": (lambda m, a: _node(m, "fc").update(name=7),
                      "node #\\d+: field 'name' must be a string, not 7"),
    "node a list": (lambda m, a: m["nodes"].append([]), "node #\\d+ is not an object"),
    "nodes an object": (lambda m, a: m.update(nodes={}), "field 'nodes' must be a list"),
    "input a list": (lambda m, a: m.update(input=[1, 16, 16]), "field 'input' must be an object"),
    "meta a list": (lambda m, a: m.update(meta=["digits"]), "field 'meta' must be an object"),
    "classes count": (lambda m, a: m.update(classes=["a", "b"]),
                      "'classes' names 2 classes, the output 'fc' has shape"),
    "classes not names": (lambda m, a: m.update(classes=list(range(10))),
                          "'classes' must be a list of strings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_model_files_are_rejected(tmp_path, exported, case):
    edit, pattern = CASES[case]
    path = _rewrite(tmp_path, exported, edit)
    with pytest.raises(golden.ModelFormatError, match=pattern) as e:
        golden.load(path)
    assert str(path) in str(e.value)


def _write_raw(path, manifest, arrays):
    """A model file written as an editor would: the manifest kept as it is (its content hash
    not recomputed)."""
    blob = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez_compressed(path, manifest=blob, **arrays)
    return path


def _same_shape_pair(arrays):
    by_shape = {}
    for k, v in sorted(arrays.items()):
        by_shape.setdefault((v.shape, v.dtype.str), []).append(k)
    for names in by_shape.values():
        for a, b in zip(names, names[1:]):
            if not np.array_equal(arrays[a], arrays[b]):
                return a, b
    raise AssertionError("no two different arrays of one shape")


def test_changed_file_is_refused(tmp_path, exported):
    """Edits that keep every value in range, which the range checks cannot see, are refused
    by the content hash: the same file once loaded and computed other results."""
    path = exported[2]
    manifest, arrays = modelfile.read(path)
    x = np.random.default_rng(0).integers(0, 17, (2, *golden.load(path).input_shape))
    want = golden.run(golden.load(path), x)
    a, b = _same_shape_pair(arrays)
    narrowed = next(k for k, v in sorted(arrays.items()) if v.dtype == np.int64)
    edits = {
        "swapped": {**arrays, a: arrays[b], b: arrays[a]},
        "cast": {**arrays, narrowed: arrays[narrowed].astype(np.int16)},
        "one value": {**arrays, a: np.where(np.arange(arrays[a].size).reshape(
            arrays[a].shape) == 0, -arrays[a], arrays[a]).astype(arrays[a].dtype)},
    }
    for what, edited in edits.items():
        bad = _write_raw(tmp_path / f"{what.replace(' ', '_')}.npz", manifest, edited)
        with pytest.raises(golden.ModelFormatError, match="changed after it was exported.*"
                           "re-export"):
            golden.load(bad)
        # The edit is a real one: with the hash recomputed the file loads and computes
        # something else (or, for the cast, the same: only the hash tells).
        again = golden.load(export.save(tmp_path / "rehashed.npz", manifest, edited))
        got = golden.run(again, x)
        if what == "swapped":
            assert any(not np.array_equal(got[k], want[k]) for k in want), what
    edited = json.loads(json.dumps(manifest))
    _node(edited, "conv1")["shift"] += 1
    with pytest.raises(golden.ModelFormatError, match="changed after it was exported"):
        golden.load(_write_raw(tmp_path / "shift.npz", edited, arrays))
    stripped = {k: v for k, v in manifest.items() if k != "content_sha256"}
    with pytest.raises(golden.ModelFormatError, match="no valid 'content_sha256'"):
        golden.load(_write_raw(tmp_path / "nohash.npz", stripped, arrays))


def test_version_1_files_are_refused_until_upgraded(tmp_path, exported):
    """A version-1 file (no hash) is refused with the way out; the upgrade keeps every array
    and the manifest, and adds only the version and the hash."""
    manifest, arrays = modelfile.read(exported[2])
    old = {k: v for k, v in manifest.items() if k != "content_sha256"}
    old["version"] = 1
    p = _write_raw(tmp_path / "v1.npz", old, arrays)
    with pytest.raises(golden.ModelFormatError, match="version 1 has no content hash.*"
                       "--upgrade"):
        golden.load(p)
    assert modelfile.upgrade(p) is True
    assert modelfile.upgrade(p) is False
    m2, a2 = modelfile.read(p)
    assert sorted(a2) == sorted(arrays)
    for k, v in arrays.items():
        assert a2[k].dtype == v.dtype and a2[k].tobytes() == v.tobytes(), k
    assert m2.pop("content_sha256") and m2.pop("version") == 2
    assert m2 == {k: v for k, v in json.loads(json.dumps(old)).items() if k != "version"}
    golden.load(p)
    assert modelfile.main([str(p)]) == 0


def test_binary_weights_must_not_be_zero(tmp_path):
    net, _ = random_net(small_specs(1, 2)[2], seed=5)
    manifest, arrays = export.to_manifest(net)
    arrays["conv2/weight"][0, 0, 0, 0] = 0
    path = export.save(tmp_path / "b.npz", manifest, arrays)
    with pytest.raises(golden.ModelFormatError, match="-1 or \\+1"):
        golden.load(path)


def test_corrupt_truncated_and_foreign_files(tmp_path, exported):
    good = exported[2].read_bytes()
    corrupt = bytearray(good)
    for i in range(len(good) // 3, len(good) // 3 + 64):
        corrupt[i] ^= 0xFF
    cases = {"corrupt.npz": bytes(corrupt), "truncated.npz": good[: len(good) // 2],
             "text.npz": b"hello, not a model\n"}
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(golden.ModelFormatError, match=name):
            golden.load(p)
    with pytest.raises(golden.ModelFormatError, match="no such model file"):
        golden.load(tmp_path / "absent.npz")
    p = tmp_path / "nomanifest.npz"
    np.savez(p, weights=np.zeros(3))
    with pytest.raises(golden.ModelFormatError, match="no manifest"):
        golden.load(p)
    p = tmp_path / "badjson.npz"
    np.savez(p, manifest=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(golden.ModelFormatError, match="not valid JSON"):
        golden.load(p)
    assert zipfile.is_zipfile(exported[2])


# ------------------------------------------------------------------ partial-sum ADC option


def _adc_reference(x, w, stride, pad, rows, bits, w_bits, a_bits):
    """Loop-by-loop statement of the ADC rule, for one image: per output pixel, row tile,
    input bit-plane and weight bit, a clipped count."""
    c, h, wd = x.shape
    cout, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((cout, ho, wo), dtype=np.int64)
    cmax = 2**bits - 1
    for oy in range(ho):
        for ox in range(wo):
            for kh in range(k):
                for kw in range(k):
                    for c0 in range(0, c, rows):
                        xs = xp[c0:c0 + rows, oy * stride + kh, ox * stride + kw]
                        for o in range(cout):
                            ws = w[o, c0:c0 + rows, kh, kw]
                            for j in range(a_bits):
                                xj = (xs >> j) & 1
                                if w_bits == 1:
                                    n = min(int(np.sum(xj & (ws > 0))), cmax)
                                    out[o, oy, ox] += (2 * n - int(xj.sum())) << j
                                    continue
                                for b in range(w_bits):
                                    n = min(int(np.sum(xj & ((ws >> b) & 1))), cmax)
                                    sign = -1 if b == w_bits - 1 else 1
                                    out[o, oy, ox] += sign * (n << (b + j))
    return out


@pytest.mark.parametrize("w_bits,a_bits,bits", [(4, 4, 2), (2, 2, 1), (1, 4, 2), (8, 2, 2)])
def test_adc_conv_matches_the_rule_stated_loop_by_loop(w_bits, a_bits, bits):
    rng = np.random.default_rng(w_bits * 10 + a_bits)
    qmax = 1 if w_bits == 1 else 2 ** (w_bits - 1) - 1
    x = rng.integers(0, 2**a_bits, (1, 10, 5, 5))
    w = rng.integers(-qmax, qmax + 1, (3, 10, 3, 3))
    if w_bits == 1:
        w[w == 0] = 1
    adc = golden.AdcModel(rows=8, bits=bits)
    got = golden.conv_acc_adc(x, w, 2, 1, adc, w_bits=w_bits, a_bits=a_bits)
    ref = _adc_reference(x[0], w, 2, 1, 8, bits, w_bits, a_bits)
    assert np.array_equal(got[0], ref)
    exact = golden.conv_acc(x, w, 2, 1)
    assert not np.array_equal(got, exact), "the clipping never engaged"
    wide = golden.AdcModel(rows=8, bits=4)  # counts of 8 rows never exceed 15
    assert np.array_equal(golden.conv_acc_adc(x, w, 2, 1, wide, w_bits=w_bits, a_bits=a_bits),
                          exact)


def test_adc_option_affects_only_accelerator_layers(tmp_path):
    net, x = random_net(small_specs(4, 4)[0], seed=21)
    model = golden.load(export.export(net, tmp_path / "m.npz"))
    exact = golden.run(model, x.numpy())
    clipped = golden.run(model, x.numpy(), adc=golden.AdcModel(rows=16, bits=2))
    assert np.array_equal(exact["conv1"], clipped["conv1"])  # MCU layer: exact
    assert not np.array_equal(exact["layer1_0_conv1"], clipped["layer1_0_conv1"])
    generous = golden.run(model, x.numpy(), adc=golden.AdcModel(rows=16, bits=5))
    for k in exact:
        assert np.array_equal(exact[k], generous[k]), k
    with pytest.raises(ValueError, match="power of two"):
        golden.AdcModel(rows=12, bits=3)
