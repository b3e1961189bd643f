# amaranth: UnusedElaboratable=no
"""Compiler (layer program, images), functional model of the program, analytic cycle model."""

import copy
import dataclasses

import numpy as np
import pytest

import compiler
from compiler import CompileError, cycles
from contract import program as fmt
from contract.config import CONFIGS, HwConfig, get_config
from contract.program import Descriptor
from gateware.actbuf import pack_tensor, pack_word
from model import data, evaluate, export, golden
from model.testnets import random_net, small_specs
from sim.seed import test_seed

SEED = test_seed()
DIGITS = "models/digits_cnn_w4a4.npz"
RESNET = "models/resnet14_fmnist_w4a4.npz"


@pytest.fixture(scope="module")
def digits():
    return golden.load(DIGITS)


@pytest.fixture(scope="module")
def resnet():
    return golden.load(RESNET)


def _check_exact(model, x, config, **kw):
    env = golden.run(model, x)
    prog = compiler.compile_model(model, config, **kw)
    out = compiler.execute(prog, env[prog.input_name])
    assert set(out) == {n["name"] for n in model.nodes if n["where"] == "accel"}
    for name, y in out.items():
        assert np.array_equal(y, env[name]), f"layer {name} differs on {config.name}"
    return prog


# ----------------------------------------------------------------------------- descriptor


def test_descriptor_round_trip():
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    assert fmt.DESC_WORDS == len(Descriptor(**{f.name: 0 for f in fmt.FIELDS}).pack())
    for _ in range(50):
        vals = {f.name: int(rng.integers(0, 1 << f.bits, dtype=np.uint64))
                for f in fmt.FIELDS}
        d = Descriptor(**vals)
        words = d.pack()
        assert len(words) == fmt.DESC_WORDS and all(0 <= w < 1 << 32 for w in words)
        assert Descriptor.unpack(words) == d
    # Fields never straddle a word and never overlap.
    used = set()
    for f in fmt.FIELDS:
        w, b = fmt.LAYOUT[f.name]
        assert b + f.bits <= 32
        bits = {(w, b + i) for i in range(f.bits)}
        assert not used & bits
        used |= bits
    with pytest.raises(ValueError, match="kernel"):
        Descriptor(**{**{f.name: 0 for f in fmt.FIELDS}, "kernel": 8}).pack()


def test_compiled_descriptors_round_trip(resnet):
    prog = compiler.compile_model(resnet, CONFIGS["default"])
    words = prog.program_words()
    assert len(words) == fmt.DESC_WORDS * len(prog.descriptors)
    for i, d in enumerate(prog.descriptors):
        assert Descriptor.unpack(words[i * fmt.DESC_WORDS:(i + 1) * fmt.DESC_WORDS]) \
            == d
    d = dict(zip(prog.names, prog.descriptors))
    sc = d["layer2_0_shortcut"]
    assert (sc.kernel, sc.stride, sc.padding, sc.out_signed, sc.relu, sc.out_bits) == \
        (1, 2, 0, 1, 0, 8)
    c2 = d["layer2_0_conv2"]
    assert c2.has_residual and c2.res_base == sc.out_base and c2.res_signed and c2.res_bits == 8
    assert (c2.row_tiles, c2.col_tiles, c2.weight_tiles) == (18, 2, 36)
    assert d["layer3_1_conv2"].last and not c2.last
    # Weight rows (J * ceil(T / M) of M tiles) and parameter records follow one another.
    ds, cfg = prog.descriptors, prog.config
    rows = [fmt.weight_rows(d.col_tiles, d.row_tiles, cfg) for d in ds]
    assert rows[:2] == [1, 1] and cfg.macros == 18
    assert rows[ds.index(c2)] == 2 and rows[ds.index(d["layer3_1_conv2"])] == 4 * 2
    for a, b, n in zip(ds, ds[1:], rows):
        assert b.weight_base == a.weight_base + n
        assert b.param_base == a.param_base + a.col_tiles * cfg.cols
    assert len(prog.weight_image) == (ds[-1].weight_base + rows[-1]) * cfg.macros \
        * fmt.tile_words(cfg)


# ----------------------------------------------------------------------------- packing


def test_tile_packing_by_hand():
    cfg = HwConfig(name="hand", rows=8, cols=2, w_bits=4, a_bits=4, macros=1, write_rows=2)
    tile = np.zeros((1, 8, 2), np.int64)
    tile[0, 0] = [1, -1]
    tile[0, 1] = [2, -8]
    tile[0, 7] = [7, 3]
    words = fmt.pack_tiles(tile, cfg)
    # 4 beats of 2 rows x 2 cols x 4 bits = 16 bits, one word each; nibble (i * 2 + c).
    assert words.tolist() == [0x82F1, 0, 0, 0x3700]
    assert np.array_equal(fmt.unpack_tiles(words, cfg), tile)


def test_tile_order_and_zero_fill():
    cfg = HwConfig(name="order", rows=8, cols=2, w_bits=4, a_bits=4, macros=1)
    rng = np.random.default_rng(SEED)
    w = rng.integers(-7, 8, (3, 10, 3, 3))                  # Cout 3, Cin 10: G = 2, J = 2
    tiles = fmt.layer_tiles(w, cfg)
    assert tiles.shape == (2 * 18, 8, 2)
    for j in range(2):
        for kh in range(3):
            for kw in range(3):
                for cg in range(2):
                    t = tiles[j * 18 + (kh * 3 + kw) * 2 + cg]
                    for r in range(8):
                        for c in range(2):
                            ci, co = cg * 8 + r, j * 2 + c
                            want = w[co, ci, kh, kw] if ci < 10 and co < 3 else 0
                            assert t[r, c] == want
    assert np.array_equal(fmt.unpack_tiles(fmt.pack_tiles(tiles, cfg), cfg), tiles)


@pytest.mark.parametrize("w_bits", [1, 2, 8])
def test_tile_pack_round_trip(w_bits):
    cfg = HwConfig(name="rt", rows=16, cols=5, w_bits=w_bits, a_bits=4, macros=1, write_rows=4)
    rng = np.random.default_rng(SEED + w_bits)
    if w_bits == 1:
        tiles = rng.choice([-1, 1], (3, 16, 5))
    else:
        tiles = rng.integers(-(1 << (w_bits - 1)), 1 << (w_bits - 1), (3, 16, 5))
    words = fmt.pack_tiles(tiles, cfg)
    assert len(words) == 3 * fmt.tile_words(cfg)
    assert np.array_equal(fmt.unpack_tiles(words, cfg), tiles)
    if w_bits == 1:  # stored 1 = +1, 0 = -1; zero-filled binary weights read back as -1
        z = fmt.unpack_tiles(fmt.pack_tiles(np.zeros((1, 16, 5)), cfg), cfg)
        assert (z == -1).all()


def test_param_records():
    m = np.array([-(1 << 15) + 1, 5, 0, (1 << 15) - 1])
    b = np.array([-(1 << 47) + 1, -3, 12345678901, (1 << 47) - 1])
    r = np.array([0, -(1 << 23) + 1, 77, (1 << 23) - 1])
    recs = fmt.pack_params(m, b, r)
    assert recs.shape == (4, fmt.PARAM_WORDS) and recs.dtype == np.uint32
    # m = 5, b = -3, r = -(2**23 - 1), by hand.
    assert recs[1].tolist() == [0xFFFD0005, 0xFFFFFFFF, 0x800001, 0]
    for x, y in zip(fmt.unpack_params(recs), (m, b, r)):
        assert np.array_equal(x, y)


def test_tensor_layout_matches_actbuf():
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, 16, (1, 20, 3, 2))
    mem = np.zeros((1, 64, 8), np.int64)
    compiler.write_tensor(mem, 5, x, 4, 4)
    words = [pack_word(v, 4) for v in mem[0, 5:5 + 3 * 2 * 3]]
    assert words == pack_tensor(x[0], rows=8, a_bits=4)
    assert np.array_equal(compiler.read_tensor(mem, 5, (20, 3, 2), 4, False, 4), x)
    s = rng.integers(-127, 128, (1, 5, 2, 2))                 # signed 8 bits: 2 slices
    compiler.write_tensor(mem, 0, s, 8, 4)
    assert np.array_equal(compiler.read_tensor(mem, 0, (5, 2, 2), 8, True, 4), s)


@pytest.mark.parametrize("bits", [4, 2, 8])
@pytest.mark.parametrize("k,s,p,h,w,g", [(3, 1, 1, 5, 4, 2), (1, 2, 0, 5, 5, 1),
                                         (7, 2, 3, 9, 8, 1), (5, 1, 2, 4, 6, 3)])
def test_window_addresses_are_the_golden_convolution(k, s, p, h, w, g, bits):
    """Gathering each output pixel's row tiles through ``window_addresses`` (padding read as
    zero; an input wider than ``a_bits`` as its slice words) and multiplying by
    ``layer_tiles`` is the golden model's convolution: the walk, the tile order, the slices
    and the orientation (correlation, not flipped) agree."""
    rng = np.random.default_rng(SEED)
    cfg = get_config("tiny")
    R, ab = cfg.rows, cfg.a_bits
    cin, cout = g * R - 3, 5
    x = rng.integers(0, 1 << bits, (1, cin, h, w))
    wt = rng.integers(-7, 8, (cout, cin, k, k))
    mem = np.zeros((1, 512, R), np.int64)
    compiler.write_tensor(mem, 17, x, bits, ab)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    d = Descriptor(**{**{f.name: 0 for f in fmt.FIELDS}, "kernel": k, "stride": s,
                      "padding": p, "in_height": h, "in_width": w, "in_groups": g,
                      "out_height": ho, "out_width": wo, "in_base": 17, "in_bits": bits})
    addr, pad = compiler.window_addresses(d, ab)
    sl = fmt.slices(bits, ab)
    words = sum(mem[0, addr + i] << (i * ab) for i in range(sl))
    xs = np.where(pad[..., None], 0, words)                         # (P, T, R)
    tiles = fmt.layer_tiles(wt, cfg)[:k * k * g]                    # column tile 0: (T, R, C)
    got = np.einsum("ptr,trc->pc", xs, tiles)[:, :cout]
    want = golden.conv_acc(x, wt, s, p)[0].reshape(cout, -1).T
    assert np.array_equal(got, want), f"seed {SEED}"


# ----------------------------------------------------------------------------- errors


def _edited(model, name, **changes):
    m = copy.deepcopy(model.manifest)
    for n in m["nodes"]:
        if n["name"] == name:
            n.update(changes)
    return golden.IntModel(m, model.arrays, "edited")


@pytest.mark.parametrize("case,match", [
    ("kernel", "layer 'conv3': kernel 2 is not supported"),
    ("stride", "layer 'conv3': stride 3 is not supported"),
    ("padding", "layer 'conv3': padding 4 exceeds 3"),
    ("w_bits", "layer 'conv2': w_bits=4 does not fit the array's 1-bit weights .* binary"),
    ("planes", "layer 'conv2': its input 'conv1' has 4-bit activations \\+ 2 for its 4-bit "
               "weights: 6 bit-planes per pixel, configuration 'w2' feeds at most max_planes=4"),
    ("a_bits", "must be unsigned activations .* of at most 2 bits"),
    ("signed", "layer 'conv3': its input 'conv2' is signed"),
    ("in_bits", "layer 'conv3': its input 'conv2' has 8-bit activations: 8 bit-planes per "
                "pixel, configuration 'tiny' feeds at most max_planes=4"),
    ("acc", "layer 'conv2': accumulator needs"),
    ("buffer", "layer 'conv2': its output .* does not fit"),
    ("adc", "adc_bits=None, the configuration 'adc' has adc_bits=3"),
    ("op", "layer 'avgpool': a global average pooling runs on the accelerator only with "
           "the classifier"),
    ("none", "no accelerator"),
    ("two_inputs", "exactly one input tensor"),
])
def test_compile_errors(digits, case, match):
    cfg = CONFIGS["tiny"]
    model, kw = digits, {}
    if case in ("kernel", "stride", "padding"):
        model = _edited(digits, "conv3", **{case: {"kernel": 2, "stride": 3, "padding": 4}[case]})
    elif case == "w_bits":
        cfg = HwConfig(name="w1", rows=16, cols=8, w_bits=1, a_bits=4, macros=2)
    elif case == "planes":
        cfg = HwConfig(name="w2", rows=16, cols=8, w_bits=2, a_bits=4, macros=2)
    elif case == "a_bits":
        cfg = HwConfig(name="a2", rows=16, cols=8, w_bits=4, a_bits=2, macros=2)
    elif case == "signed":
        model = _edited(digits, "conv2", out_signed=True)
    elif case == "in_bits":
        model = _edited(digits, "conv2", out_bits=8)
    elif case == "acc":
        kw = dict(acc_width=12)
    elif case == "buffer":
        kw = dict(bank_words=100)
    elif case == "adc":
        cfg = HwConfig(name="adc", rows=16, cols=8, w_bits=4, a_bits=4, macros=2, adc_bits=3)
    elif case == "op":
        model = _edited(digits, "avgpool", where="accel")
    elif case == "none":
        m = copy.deepcopy(digits.manifest)
        for n in m["nodes"]:
            n["where"] = "mcu"
        model = golden.IntModel(m, digits.arrays)
    elif case == "two_inputs":
        model = _edited(digits, "conv3", where="mcu")
    with pytest.raises(CompileError, match=match):
        compiler.compile_model(model, cfg, **kw)


def test_memory_capacity(digits):
    small = dataclasses.replace(CONFIGS["tiny"], name="small", weight_words=1024)
    with pytest.raises(CompileError, match="weight image takes 4096 words.*weight_words=1024;"):
        compiler.compile_model(digits, small)
    # Three macros: 1024 words are 21 rows of three 16-word tiles, 1008 words.
    small = dataclasses.replace(small, macros=3)
    assert small.weight_store_words == 1008
    with pytest.raises(CompileError, match=r"weight_words=1024, 1008 words in whole weight rows"):
        compiler.compile_model(digits, small)


@pytest.mark.parametrize("limit,value", [("max_pixels", 16), ("max_size", 4),
                                         ("max_groups", 1)])
def test_sequencer_limits(digits, limit, value):
    """A layer over the sequencer's size limits is refused at compile time, naming the limit
    (the hardware would stop with SIZE), and the same program on the full configuration
    passes the sequencer's check."""
    small = dataclasses.replace(CONFIGS["tiny"], name="small", **{limit: value})
    with pytest.raises(CompileError, match=rf"layer '\w+': .*{limit}={value}"):
        compiler.compile_model(digits, small)
    prog = compiler.compile_model(digits, CONFIGS["tiny"])
    assert all(fmt.check_descriptor(d, CONFIGS["tiny"]) == fmt.ErrorCode.NONE
               for d in prog.descriptors)
    big = dataclasses.replace(prog.descriptors[0], out_height=prog.descriptors[0].out_height + 1)
    assert fmt.check_descriptor(big, CONFIGS["tiny"]) == fmt.ErrorCode.SIZE


# tiny with room for the shipped ResNet14's weights and parameters.
ROOMY = dataclasses.replace(CONFIGS["tiny"], name="roomy", weight_words=1 << 19,
                            param_words=1 << 14)


def test_buffer_allocation(resnet):
    prog = compiler.compile_model(resnet, ROOMY)
    bw = prog.bank_words
    for name, d in zip(prog.names, prog.descriptors):
        assert d.in_base // bw != d.out_base // bw, f"{name}: input and output share a bank"
    # No live tensors overlap: every reader's sources are intact when it runs.
    live = {prog.input_name: prog.buffers[prog.input_name]}
    last = {}
    for i, name in enumerate(prog.names):
        for src in prog.inputs[name]:
            last[src] = i
    last[prog.names[-1]] = len(prog.names)
    for i, name in enumerate(prog.names):
        a = prog.buffers[name]
        for other, b in live.items():
            if last.get(other, -1) >= i:
                assert a.base + a.words <= b.base or b.base + b.words <= a.base, (name, other)
        live[name] = a


# ----------------------------------------------------------------------------- functional


def _images(dataset, n, shape):
    try:
        x, _, _ = data.load_dataset(dataset, "test", limit=n)
    except data.DatasetError as e:
        pytest.skip(f"dataset not installed: {e}")
    return evaluate.fit_images(x, shape)


@pytest.mark.parametrize("config", ["tiny", "default"])
def test_shipped_digits_exact(digits, config):
    _check_exact(digits, _images("digits", 8, digits.input_shape), CONFIGS[config])


@pytest.mark.parametrize("config,n", [("roomy", 1), ("default", 2)])
def test_shipped_resnet14_exact(resnet, config, n):
    cfg = ROOMY if config == "roomy" else CONFIGS[config]
    _check_exact(resnet, _images("fashion-mnist", n, resnet.input_shape), cfg)


EXTRA = {
    "w2a2": HwConfig(name="w2a2", rows=8, cols=16, w_bits=2, a_bits=2, macros=3, write_rows=8),
    "w8a8": HwConfig(name="w8a8", rows=32, cols=4, w_bits=8, a_bits=8, macros=1,
                     double_buffer=False, weight_words=1 << 16),
    "w1a4": HwConfig(name="w1a4", rows=16, cols=8, w_bits=1, a_bits=4, macros=2),
}


@pytest.mark.parametrize("config,bits", [("tiny", (4, 4)), ("default", (4, 4)),
                                         ("w2a2", (2, 2)), ("w8a8", (8, 8)), ("w1a4", (1, 4))])
def test_random_nets_exact(tmp_path, config, bits):
    cfg = CONFIGS.get(config) or EXTRA[config]
    for i, spec in enumerate(small_specs(*bits)):
        seed = SEED + i
        print("seed", seed, spec)
        net, x = random_net(spec, seed, batch=2)
        path = export.save(tmp_path / f"net{i}.npz", *export.to_manifest(net))
        # W8A8 sums need more than the default 24-bit accumulator.
        _check_exact(golden.load(path), x.numpy(), cfg, acc_width=32 if bits == (8, 8) else 24)


# ----------------------------------------------------------------------------- cycles


def test_cycle_model_by_hand(resnet):
    cfg = CONFIGS["default"]
    prog = compiler.compile_model(resnet, cfg)
    layers = cycles.network_cycles(prog, cfg)
    by_name = {c.name: c for c in layers}
    drain = 3 + 1 + 6 + 1               # macro, running sum, datapath, write
    assert cycles.DRAIN == drain
    wc = 64 // 4
    c = by_name["layer1_0_conv1"]       # 9 tiles on 18 macros: 2 copies take turns, 32 slots
    assert (c.rounds, c.copies, c.slots, c.compute) == (1, 2, 32, 128)
    # Descriptor 0 prefetched (offered the cycle after start), hand-over and 18 tiles handed
    # out two per cycle, then one load.
    first_issue = 1 + 3 + (18 - 1) // 2 + wc + 1
    assert c.cycles == first_issue + 31 * 4 + 1 * 1 + 4 + drain
    # The next layer's tiles load behind this layer's only round: the next layer starts at
    # once (check, set-up, switch).
    assert c.next_ready < cycles.LAYER_START
    # Its one round is final and adds the block's input, a 4-bit residual (one slice word):
    # the first issue waits for the residual reader's first pixel, 4 + 1 cycles in.
    assert by_name["layer1_0_conv2"].cycles == 5 + 31 * 4 + 1 + 4 + drain
    c = by_name["layer3_1_conv1"]       # 144 tiles: 8 rounds of 4 pixels x 4 planes
    assert (c.rounds, c.copies, c.slots, c.compute) == (8, 1, 4, 128)
    load = wc + cycles.LOAD_LATENCY     # 19 > 16: the weight loads set the pace
    assert c.cycles == 4 + 7 * (max(16, load) + 1) + 3 * 4 + 4 + drain
    c = by_name["layer2_0_shortcut"]    # 8-bit signed output: 2 words per pixel, 2 copies
    assert (c.copies, c.slots) == (2, 8)
    total = sum(c.cycles for c in layers)
    assert total <= 2_000
    assert sum(c.macs for c in layers) == 26_214_400


@pytest.mark.parametrize("config", ["roomy", "default"])
def test_cycle_model_sanity(resnet, digits, config):
    cfg = ROOMY if config == "roomy" else CONFIGS[config]
    for model in (resnet, digits):
        prog = compiler.compile_model(model, cfg)
        for name, d in zip(prog.names, prog.descriptors):
            c = cycles.layer_cycles(d, cfg, name)
            node = model.node(name)
            assert c.macs == (np.prod(node["shape"]) * node["in_channels"]
                              * node["kernel"] ** 2)
            assert c.cycles >= c.macs / cfg.peak_macs_per_cycle
            assert 0 < c.utilization <= 1
            prev = c.cycles
            for h in range(d.out_height + 1, d.out_height + 6):
                more = cycles.layer_cycles(dataclasses.replace(d, out_height=h), cfg)
                assert more.cycles >= prev
                prev = more.cycles
            single = dataclasses.replace(cfg, name="single", double_buffer=False)
            assert cycles.layer_cycles(d, single).cycles >= c.cycles


def test_cycles_cli(capsys):
    assert cycles.main(["--model", RESNET, "--config", "default", "--clock-mhz", "10"]) == 0
    out = capsys.readouterr().out
    assert "layer3_1_conv2" in out and "cycles per frame" in out and "FPS at 10 MHz" in out


# ----------------------------------------------------------------------------- whole network


def test_im2col_lanes_make_the_convolution():
    """A k x k convolution equals the 1 x 1 convolution of its im2col lanes
    (contract.program.im2col_lanes, im2col_weight): random kernels up to K, strides,
    paddings, odd sizes, 1 to 3 channels."""
    rng = np.random.default_rng(SEED)
    for trial in range(30):
        K = int(rng.choice([1, 3, 5, 7]))
        k = int(rng.choice([k for k in (1, 3, 5, 7) if k <= K]))
        c, h, w = int(rng.integers(1, 4)), int(rng.integers(k, 12)), int(rng.integers(k, 12))
        s, p = int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 1))
        x = rng.integers(0, 256, (2, c, h, w))
        wt = rng.integers(-128, 128, (5, c, k, k))
        want = golden.conv_acc(x, wt, s, p)
        lanes = fmt.im2col_lanes(x, k, s, p, K)
        assert lanes.shape == (2, c * K * K, *want.shape[2:]), (trial, lanes.shape)
        got = golden.conv_acc(lanes, fmt.im2col_weight(wt, K), 1, 0)
        assert np.array_equal(got, want), f"seed {SEED} trial {trial}: K={K} k={k} s={s} p={p}"


def _whole(model_or_spec, config, tmp_path=None, batch=3):
    """(model, program, images) of a model under the whole partition."""
    if isinstance(model_or_spec, golden.IntModel):
        model = model_or_spec
        x = np.random.default_rng(SEED).integers(
            0, model.manifest["input"]["pixel_max"] + 1, (batch, *model.input_shape))
    else:
        net, xt = random_net(model_or_spec, SEED, batch=batch)
        model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(net)))
        x = xt.numpy()
    model = compiler.partition(model, "whole")
    return model, compiler.compile_model(model, config), x


@pytest.mark.parametrize("case", ["resnet14_fmnist", "cifar_shaped", "digits_small_kernel"])
def test_whole_partition_exact(case, tmp_path):
    """Every layer on the accelerator: the first convolution as im2col + 1 x 1 convolution,
    the average pooling and the classifier as one raw layer; the functional model's every
    layer and logits equal the golden model's, and the cycle model covers every layer. A
    CIFAR-10 shaped random ResNet14 (3 x 32 x 32) on ``default``, the shipped Fashion-MNIST
    ResNet14, and a digits CNN (5-bit pixels, a 3 x 3 first conv under K = 5, 2 x 2 map
    before the pooling) on a small configuration with an image buffer."""
    if case == "resnet14_fmnist":
        model, program, x = _whole(golden.load("models/resnet14_fmnist_w4a4.npz"),
                                   get_config("default"))
    elif case == "cifar_shaped":
        spec = dataclasses.replace(small_specs(4, 4)[1], image_size=32, width=0.125,
                                   first_bits=8)
        model, program, x = _whole(spec, get_config("default"), tmp_path)
        assert model.input_shape == (3, 32, 32)
    else:
        cfg = get_config("tiny:cols=16,max_planes=12,image_channels=1,image_size=8,"
                         "im2col_kernel=5,"
                         "acc_width=32")
        model, program, x = _whole(small_specs(4, 4)[2], cfg, tmp_path)
    assert program.image and program.raw
    d0, last = program.descriptors[0], program.descriptors[-1]
    assert (d0.op, last.raw, last.last) == (fmt.OP_IM2COL, 1, 1)
    assert program.names[0] == program.names[1] + ".im2col"
    ref = golden.run(model, x)
    got = compiler.execute(program, x)
    for name in program.names:
        if name in ref:
            assert np.array_equal(got[name], ref[name]), name
    c, h, w = model.input_shape
    n0 = model.nodes[0]
    lanes = fmt.im2col_lanes(x, n0["kernel"], n0["stride"], n0["padding"],
                             program.config.im2col_kernel)
    assert np.array_equal(got[program.names[0]], lanes)
    assert np.array_equal(got[program.names[-1]], ref[model.manifest["output"]])
    layers = cycles.network_cycles(program)
    assert [lc.name for lc in layers] == program.names
    assert all(lc.cycles > 0 for lc in layers)


def test_whole_partition_refusals(tmp_path):
    """What the whole partition cannot run is refused by name: an average pooling without
    the classifier after it, a map the raw layer's window cannot cover, more classes than
    a column tile, and a configuration without an image buffer runs the first convolution
    directly (no im2col layer)."""
    model = compiler.partition(golden.load("models/resnet14_fmnist_w4a4.npz"), "whole")
    no_image = get_config("default:image_channels=0")
    program = compiler.compile_model(model, no_image)
    assert not program.image and program.raw and program.names[0] == "conv1"
    manifest = copy.deepcopy(model.manifest)
    manifest["nodes"][-1]["where"] = "mcu"
    with pytest.raises(CompileError, match="only with the classifier"):
        compiler.compile_model(golden.IntModel(manifest, model.arrays), get_config("default"))
    few_cols = get_config("default:cols=8")
    with pytest.raises(CompileError, match="10 classes: a raw layer has one column tile"):
        compiler.compile_model(model, few_cols)
