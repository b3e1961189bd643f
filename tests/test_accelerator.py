# amaranth: UnusedElaboratable=no
"""The whole accelerator in the Amaranth simulator against the golden model."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

import compiler
from compiler import cycles
from contract import program as fmt
from contract.arith import weight_qmax
from contract.config import A_BITS, W_BITS, HwConfig, get_config
from contract.program import Descriptor
from gateware.accelerator import Accelerator, AccelError
from model import data, export, golden
from model.testnets import random_net, small_specs
from sim.accel_pysim import (
    first_mismatch,
    logits_mismatch,
    run_frame,
    surviving_outputs,
    write_port,
)
from sim.seed import test_seed

SEED = test_seed()
DIGITS = "models/digits_cnn_w4a4.npz"
TINY = get_config("tiny")


def _dut(program):
    return Accelerator(config=program.config, acc_width=program.acc_width,
                       bank_words=program.bank_words)


def _check(model, program, x, seed, **run):
    env = golden.run(model, x[None])
    xin = x if program.input_name == "input" else env[program.input_name][0]
    # Layers the golden model does not have (an im2col layer): the functional model's.
    env = {**compiler.execute(program, xin[None]), **env}
    res = run_frame(program, xin, **run)
    st = res.status
    assert not st["error"], f"seed {seed}: error {st['code']}"
    assert not st["busy"]
    analytic = cycles.network_cycles(program)
    print(f"\nseed {seed}: {sum(res.layers)} cycles in {res.seconds:.1f} s; counters {st}")
    for name, rtl, ana in zip(program.names, res.layers, analytic):
        print(f"  {name:<18} RTL {rtl:>7} analytic {ana.cycles:>7}")
    # Counters: every layer ran while busy; the array computes in_bits cycles per slot and
    # round at least, and never longer than busy.
    assert abs(st["busy_cycles"] - sum(res.layers)) <= 2, (st, res.layers)
    fed = sum(a.rounds * a.slots * d.in_bits for a, d in zip(analytic, program.descriptors))
    assert fed <= st["compute"] <= st["busy_cycles"]
    for name, rtl, ana in zip(program.names, res.layers, analytic):
        assert abs(rtl - ana.cycles) <= 0.02 * ana.cycles, (
            f"layer {name}: RTL {rtl} cycles, analytic model {ana.cycles}")
    assert surviving_outputs(program), "no layer output survives to be checked"
    bad = first_mismatch(program, res.memory, env)
    assert bad is None, f"seed {seed}: {bad}"
    return res


@pytest.mark.parametrize("which", ["digits_cnn", "resnet14_res8"])
def test_random_net_exact(tmp_path, which):
    """Small random W4A4 nets from a printed seed: digits_cnn shape (8x8 input), and a ResNet14
    with 1x1 stride-2 shortcuts whose signed 8-bit outputs take two slice words per pixel and
    feed the residual input."""
    if which == "digits_cnn":
        spec = dataclasses.replace(small_specs(4, 4)[2], width=0.25)
    else:
        spec = dataclasses.replace(small_specs(4, 4)[1], res_bits=8)
    net, x = random_net(spec, SEED, batch=1)
    path = export.save(tmp_path / "net.npz", *export.to_manifest(net))
    model = golden.load(path)
    program = compiler.compile_model(model, TINY)
    _check(model, program, x.numpy()[0], SEED)


@pytest.mark.parametrize("write_rows", [8, 16])
def test_wide_weight_beats_exact(tmp_path, write_rows):
    """Weight beats of 8 and 16 rows (a 16-row tile in two beats or one, as ``large`` loads
    a 64-row tile in 8): the weight image written over the bus and loaded into the macros,
    bit-exact and within 2 % of the cycle model, on a random ResNet14."""
    cfg = get_config(f"tiny:write_rows={write_rows}")
    net, x = random_net(dataclasses.replace(small_specs(4, 4)[1], res_bits=8), SEED, batch=1)
    model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(net)))
    _check(model, compiler.compile_model(model, cfg), x.numpy()[0], SEED,
           macro_style="behavioral")


def test_tile_hand_out_sets_the_pace(tmp_path):
    """36 macros whose tiles load in one beat: a round of 36 tiles loads in 4 cycles, but the
    loader hands out two tiles a cycle, so rounds of few pixels wait for the hand-out. The
    cycle model follows the loader tile by tile (``compiler.cycles._Loader``): RTL and model
    agree within 2 % on every layer, and the hand-out is what sets some layer's pace."""
    cfg = get_config("tiny:macros=36,write_rows=16")
    net, x = random_net(dataclasses.replace(small_specs(4, 4)[1], res_bits=8), SEED, batch=1)
    model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(net)))
    program = compiler.compile_model(model, cfg)
    paced = [c.name for c, f in zip(cycles.network_cycles(program), _without_loader(program))
             if c.cycles != f]
    assert paced, "no layer of this network is paced by the hand-out: the test tests nothing"
    _check(model, program, x.numpy()[0], SEED, macro_style="behavioral", preload_weights=True)


def _without_loader(program):
    """Per-layer cycles of ``program`` by the schedule's formulas alone (no hand-out bound)."""
    out, ready = [], None
    for n, d in zip(program.names, program.descriptors):
        c = cycles.layer_cycles(d, program.config, n, ready)
        out.append(c.cycles)
        ready = c.next_ready
    return out


def test_residual_layers_with_four_copies(tmp_path):
    """A random ResNet14 on 36 macros of 16x8: its residual convolutions (9 row tiles) run as
    four copies, a pixel issued every cycle, and the residual reader keeps up with no stall
    the cycle model does not count (its FIFO covers the issue-to-datapath loop)."""
    cfg = get_config("tiny:macros=36")
    # 64 x 64 images: layers long enough that the 2 % holds a cycle or two of start-up.
    net, x = random_net(dataclasses.replace(small_specs(4, 4)[1], image_size=64), SEED,
                        batch=1)
    model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(net)))
    program = compiler.compile_model(model, cfg)
    assert {fmt.copies(d, cfg) for d in program.descriptors if d.has_residual} == {4}
    _check(model, program, x.numpy()[0], SEED, macro_style="behavioral", preload_weights=True)


@pytest.mark.parametrize("w_bits,width", [(1, 0.75), (1, 0.375), (4, 0.75)])
def test_partly_filled_groups_exact(tmp_path, w_bits, width):
    """Channel counts that leave the last channel group partly filled (24 or 12 channels on
    16-row macros): the writer zeroes the group's lanes past the tensor's channels, so a
    later layer's padding rows never see a dead tensor's values (with 1-bit weights the
    padding rows' weight code 0 means -1, so they would count them)."""
    cfg = HwConfig(name=f"w{w_bits}a4", rows=16, cols=8, w_bits=w_bits, a_bits=4, macros=2)
    spec = dataclasses.replace(small_specs(w_bits, 4)[2], width=width)
    net, x = random_net(spec, SEED, batch=1)
    path = export.save(tmp_path / "net.npz", *export.to_manifest(net))
    model = golden.load(path)
    # The behavioral macro and preloaded weights: the same results and cycles (test_cim_macro
    # holds the two macro styles equal), a fraction of the simulation time.
    _check(model, compiler.compile_model(model, cfg), x.numpy()[0], SEED,
           macro_style="behavioral", preload_weights=True)


@pytest.mark.parametrize("width", [0.5, 0.375], ids=["filled", "partial"])
@pytest.mark.parametrize("a_bits", A_BITS)
@pytest.mark.parametrize("w_bits", W_BITS)
def test_bit_width_matrix(tmp_path, w_bits, a_bits, width):
    """Every weight and activation width a configuration can hold, on a digits CNN (4x4
    input) whose channel counts fill the 16x8 macros (8 -> 16 -> 16: whole channel groups and
    column tiles) or do not (6 -> 12 -> 12: part of a group, one and a half column tiles),
    bit-exact against the golden model and within 2 % of the cycle model."""
    cfg = HwConfig(name=f"w{w_bits}a{a_bits}", rows=16, cols=8, w_bits=w_bits, a_bits=a_bits,
                   macros=2, acc_width=32)
    spec = dataclasses.replace(small_specs(w_bits, a_bits)[2], width=width, image_size=4)
    net, x = random_net(spec, SEED, batch=1)
    path = export.save(tmp_path / "net.npz", *export.to_manifest(net))
    model = golden.load(path)
    program = compiler.compile_model(model, cfg)
    channels = {d.out_channels for d in program.descriptors}
    assert channels == ({16} if width == 0.5 else {12}), channels
    _check(model, program, x.numpy()[0], SEED, macro_style="behavioral", preload_weights=True)


def _mixed_precision_model(path, w_bits):
    """A digits-CNN-shaped random network (6x6 input) edited to mixed precision at the integer
    level: every conv on the accelerator, conv1 fed the raw 5-bit pixels (``pixel_max`` 16),
    then activations of 2, 8, 3 and 4 bits; weights of ``w_bits`` (one per conv); each layer's
    shift retuned so that its outputs spread over their range."""
    spec = dataclasses.replace(small_specs(4, 4)[2], width=0.5, image_size=6, first_bits=8)
    net, x = random_net(spec, SEED, batch=4)
    manifest, arrays = export.to_manifest(net)
    names = ("conv1", "conv2", "conv3", "block_conv1", "block_conv2")
    plan = dict(zip(names, zip(w_bits, (2, 8, 3, 4, 4))))
    env = {"input": x.numpy().astype(np.int64)}
    for n in manifest["nodes"]:
        name = n["name"]
        if name in plan:
            wb, ob = plan[name]
            w = arrays[f"{name}/weight"].astype(np.int64)
            q = weight_qmax(wb)
            w = np.where(w >= 0, 1, -1) if wb == 1 else np.clip(
                np.round(w * q / max(1, np.abs(w).max())), -q, q)
            arrays[f"{name}/weight"] = w.astype(np.int8)
            n.update(where="accel", w_bits=wb, out_bits=ob)
            acc = golden.conv_acc(env[n["inputs"][0]], w, n["stride"], n["padding"])
            sh = (1, -1, 1, 1)
            y = acc * arrays[f"{name}/mult"].reshape(sh) + arrays[f"{name}/bias"].reshape(sh)
            if len(n["inputs"]) > 1:
                y = y + env[n["inputs"][1]] * arrays[f"{name}/res_mult"].reshape(sh)
            top = max(1.0, float(np.percentile(np.abs(y), 90)))
            n["shift"] = int(np.clip(np.ceil(np.log2(top / ((1 << ob) - 1))), 1, 40))
        model = golden.IntModel(manifest, arrays)
        env[name] = golden.run_node(model, n, *(env[i] for i in n["inputs"]))
    model = golden.load(export.save(path, manifest, arrays))
    return model, x.numpy()


@pytest.mark.parametrize("a_bits,w_bits,planes", [
    (4, (4, 2, 3, 4, 4), 8), (4, (4, 2, 1, 4, 4), 8), (2, (4, 2, 2, 4, 4), 8),
    (4, (8, 2, 6, 5, 4), 12), (2, (7, 3, 8, 4, 8), 12)])
def test_mixed_precision_exact(tmp_path, a_bits, w_bits, planes):
    """One configuration (W4, ``a_bits`` lanes, ``max_planes``) runs a mixed-precision
    network: inputs of 5 (raw pixels), 2, 8, 3 and 4 bits (fewer bit-planes than ``a_bits``,
    and more: 2 to 4 slice words per pixel), weights of ``w_bits`` (fewer than the array
    stores, and more: wide weights in three weight slices, up to 8-bit weights on 8-bit
    inputs, 12 planes), a residual of 3 bits; bit-exact against the golden model and every
    layer within 2 % of the cycle model."""
    model, xs = _mixed_precision_model(tmp_path / "mixed.npz", w_bits)
    cfg = HwConfig(name=f"w4a{a_bits}p{planes}", rows=16, cols=8, w_bits=4, a_bits=a_bits,
                   macros=2, max_planes=planes, acc_width=32)
    program = compiler.compile_model(model, cfg)
    assert [d.in_bits for d in program.descriptors] == [5, 2, 8, 3, 4]
    assert [d.w_bits for d in program.descriptors] == list(w_bits)
    env = golden.run(model, xs)
    for name in program.names:
        assert len(np.unique(env[name])) > 2, f"{name} outputs are degenerate"
    assert np.array_equal(compiler.execute(program, xs)[program.names[-1]],
                          env[program.names[-1]])
    _check(model, program, xs[0], SEED, macro_style="behavioral", preload_weights=True)


def test_mixed_precision_refused(tmp_path):
    """Without ``max_planes`` the 8-bit input is refused by name; the same network compiles
    once the configuration states it."""
    model, _ = _mixed_precision_model(tmp_path / "mixed.npz", (4, 2, 3, 4, 4))
    with pytest.raises(compiler.CompileError,
                       match=r"at most 4 bits \(max_planes of .tiny.\), not 5-bit"):
        compiler.compile_model(model, TINY)
    compiler.compile_model(model, get_config("tiny:max_planes=8"))
    wide, _ = _mixed_precision_model(tmp_path / "wide.npz", (4, 2, 8, 4, 4))
    with pytest.raises(compiler.CompileError, match="'conv3': its input 'conv2' has 8-bit "
                       r"activations \+ 4 for its 8-bit weights: 12 bit-planes per pixel"):
        compiler.compile_model(wide, get_config("tiny:max_planes=8"))
    with pytest.raises(compiler.CompileError, match="w_bits=8 does not fit the array's 2-bit"):
        compiler.compile_model(wide, get_config("tiny:w_bits=2,max_planes=16"))
    compiler.compile_model(wide, get_config("tiny:max_planes=12"))


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_one_pixel_layers_exact(tmp_path, width):
    """1-bit activations on layers of one output pixel with more row tiles than macros (9 row
    tiles on 2 macros), one or two column tiles: a round lasts one cycle, shorter than the
    macro takes to commit its tile, so the next round must wait for its own tile (it used to
    start on the stale one: a wrong value, or a layer that never ended)."""
    cfg = HwConfig(name="w4a1", rows=16, cols=8, w_bits=4, a_bits=1, macros=2)
    spec = dataclasses.replace(small_specs(4, 1)[2], width=width, image_size=2)
    net, x = random_net(spec, SEED, batch=1)
    path = export.save(tmp_path / "net.npz", *export.to_manifest(net))
    model = golden.load(path)
    program = compiler.compile_model(model, cfg)
    assert min(d.out_height * d.out_width for d in program.descriptors) == 1
    assert max(d.row_tiles for d in program.descriptors) > cfg.macros
    _check(model, program, x.numpy()[0], SEED, macro_style="behavioral",
           preload_weights=True, max_cycles=20_000)


def test_copies_read_their_own_banks():
    """Copies of a layer's row tiles read the tiles in their own macros' banks (contract.
    program): with copy 1's tiles replaced by others (as a program pointed at other weight
    rows would have them), the RTL computes what the functional model says, which is not
    what the unchanged image computes."""
    cfg = get_config("tiny:macros=18")
    model = golden.load(DIGITS)
    xs, _, _ = data.load_dataset("digits", "test", limit=1)
    program = compiler.compile_model(model, cfg)
    rng = np.random.default_rng(SEED)
    image = program.weight_image.copy()
    tw, M = fmt.tile_words(cfg), cfg.macros
    changed = []
    for name, d in zip(program.names, program.descriptors):
        if d.op != fmt.OP_CONV or fmt.copies(d, cfg) < 2:
            continue
        T = d.row_tiles
        for j in range(d.col_tiles):
            lo = ((d.weight_base + j) * M + T) * tw       # copy 1's slots of column tile j
            image[lo:lo + T * tw] = fmt.pack_tiles(
                rng.integers(-8, 8, size=(T, cfg.rows, cfg.cols)), cfg)
        changed.append(name)
    assert changed, "no layer with copies"
    scrambled = dataclasses.replace(program, weight_image=image)
    env = compiler.execute(scrambled, xs[0][None])
    plain = compiler.execute(program, xs[0][None])
    assert any((env[n] != plain[n]).any() for n in changed)
    res = run_frame(scrambled, xs[0], preload_weights=True)
    assert not res.status["error"], res.status
    bad = first_mismatch(scrambled, res.memory, env)
    assert bad is None, f"seed {SEED}: {bad}"


def test_digits_exact():
    """The shipped digits model on a real test image (about 20 s in the simulator); every
    layer within 2 % of compiler.cycles (checked in _check)."""
    model = golden.load(DIGITS)
    xs, _, _ = data.load_dataset("digits", "test", limit=1)
    program = compiler.compile_model(model, TINY)
    _check(model, program, xs[0], 0)


@pytest.mark.parametrize("field,value,code", [("kernel", 2, AccelError.KERNEL),
                                              ("stride", 3, AccelError.STRIDE),
                                              ("row_tiles", 0, AccelError.TILES),
                                              ("shift", 0, AccelError.FORMAT),
                                              ("relu", 0, AccelError.FORMAT),
                                              ("in_channels", 0, AccelError.CHANNELS),
                                              ("out_base", 0, AccelError.ADDRESS)])
def test_invalid_descriptor(tmp_path, field, value, code):
    model = golden.load(DIGITS)
    program = compiler.compile_model(model, TINY)
    d = program.descriptors[0]
    bad = dataclasses.replace(d, **{field: value})
    dut = _dut(program)
    out = {}

    async def tb(ctx):
        await write_port(ctx, dut, "prog", enumerate(bad.pack()))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(100):
            if ctx.get(dut.done):
                break
            await ctx.tick()
        out.update(done=ctx.get(dut.done), error=ctx.get(dut.error),
                   code=ctx.get(dut.error_code), busy=ctx.get(dut.busy))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert out["done"] and out["error"] and not out["busy"], out
    assert out["code"] == code, out
    assert Descriptor.unpack(bad.pack()) == bad


def test_pysim_cli_any_model(tmp_path, capsys):
    """``sim.accel_pysim`` takes a model that records no dataset (random inputs of its shape)
    on a configuration with changed fields; images that do not fit the model are an error
    message and status 2, not a traceback."""
    from sim import accel_pysim
    spec = dataclasses.replace(small_specs(4, 4)[2], width=0.25, image_size=4)
    net, _ = random_net(spec, SEED, batch=1)
    path = export.save(tmp_path / "net.npz", *export.to_manifest(net))
    assert "dataset" not in golden.load(path).manifest.get("meta", {})
    assert accel_pysim.main(["--model", str(path), "--config", "tiny:macros=3"]) == 0
    out = capsys.readouterr().out
    assert "random [1, 4, 4] inputs" in out and "bit-exact" in out
    assert accel_pysim.main(["--model", str(path), "--config", "tiny",
                             "--dataset", "fashion-mnist"]) == 2
    assert "do not fit the model input" in capsys.readouterr().err


def _stem_on_accelerator(path, image_size):
    """A small random ResNet14 (3-channel input, one block per stage) with its first
    convolution (7x7 stride 2, 8-bit weights on the raw 8-bit pixels) and its max pooling
    moved to the accelerator."""
    spec = dataclasses.replace(small_specs(4, 4)[1], image_size=image_size, first_bits=8)
    net, x = random_net(spec, SEED, batch=2)
    manifest, arrays = export.to_manifest(net)
    for n in manifest["nodes"]:
        if n["name"] in ("conv1", "maxpool"):
            n["where"] = "accel"
    return golden.load(export.save(path, manifest, arrays)), x.numpy()


def test_max_pooling_exact(tmp_path):
    """Max pooling on the accelerator (the pooler: 3x3 stride 2 padding 1 after the first
    convolution, which runs on the raw 8-bit pixels with 8-bit weights): bit-exact against
    the golden model, every layer within 2 % of the cycle model."""
    model, xs = _stem_on_accelerator(tmp_path / "stem.npz", 8)
    cfg = HwConfig(name="tiny_p12", rows=16, cols=8, w_bits=4, a_bits=4, macros=2,
                   max_planes=12, acc_width=32)
    program = compiler.compile_model(model, cfg)
    assert program.names[:2] == ["conv1", "maxpool"]
    d = program.descriptors[1]
    assert (d.op, d.kernel, d.stride, d.padding, d.in_bits) == (1, 3, 2, 1, 4)
    env = golden.run(model, xs)
    got = compiler.execute(program, xs)
    for name in program.names:
        assert np.array_equal(got[name], env[name]), name
    _check(model, program, xs[0], SEED, macro_style="behavioral", preload_weights=True,
           max_cycles=200_000)


def _classifier_net(path, tie: bool, classes: int = 6, last_bits: int = 4):
    """A small random digits CNN (8x8 input, 16 channels) whose global average pooling and
    classifier (``classes`` classes, ``last_bits`` weights) run on the accelerator: the
    compiler lowers them to one raw layer (6 of tiny's 8 columns by default). ``tie``:
    classes 1 and 4 get the same weights and a bias that makes them the largest logits,
    equal (the first must win)."""
    spec = dataclasses.replace(small_specs(4, 4)[2], width=0.5, num_classes=classes,
                               last_bits=last_bits)
    net, x = random_net(spec, SEED, batch=1)
    manifest, arrays = export.to_manifest(net)
    for n in manifest["nodes"]:
        if n["name"] in ("avgpool", "fc"):
            n["where"] = "accel"
    if tie:
        w, b = arrays["fc/weight"], arrays["fc/bias"]
        w[4] = w[1]
        logits = golden.run(golden.IntModel(manifest, arrays), x.numpy())["fc"][0]
        b[1] += logits.max() - logits[1] + 50
        b[4] = b[1]
    return golden.load(export.save(path, manifest, arrays)), x.numpy()[0]


# tiny with 8-bit classifier weights: three weight slices on the W4 array, 12 bit-planes.
TINY_P12 = HwConfig(name="tiny_p12", rows=16, cols=8, w_bits=4, a_bits=4, macros=2,
                    max_planes=12, acc_width=32)


@pytest.mark.parametrize("tie,classes,last_bits,cfg", [
    (False, 6, 4, TINY), (True, 6, 4, TINY), (False, 8, 8, TINY_P12)],
    ids=["random", "tie", "wide_full"])
def test_classifier_exact(tmp_path, tie, classes, last_bits, cfg):
    """Global average pooling + classifier on the accelerator, as one raw last layer: the
    logit registers equal the golden model's classifier output and the compiler's functional
    model bit for bit (negative ones included), the class is their argmax (the first of equal
    largest logits), the columns past the classes stay out of it, and every layer takes
    exactly the cycles of the cycle model. Also with 8-bit classifier weights (three weight
    slices) and as many classes as columns."""
    model, x = _classifier_net(tmp_path / "net.npz", tie, classes, last_bits)
    program = compiler.compile_model(model, cfg)
    d = program.descriptors[-1]
    assert program.raw and d.raw and d.last and d.out_channels == classes <= cfg.cols
    assert d.w_bits == last_bits
    env = golden.run(model, x[None])
    want = env["fc"][0]
    xin = env[program.input_name][0]
    assert np.array_equal(compiler.execute(program, xin[None])["fc"][0], want)
    assert (want < 0).any() and (want > 0).any(), want
    if tie:
        assert want[1] == want[4] == want.max(), want
    res = _check(model, program, x, SEED, macro_style="behavioral", preload_weights=True)
    assert res.logits[:classes] == want.tolist(), (res.logits, want)
    assert res.result == (int(np.argmax(want)), True), (res.result, want)
    assert logits_mismatch(program, res, env) is None
    assert res.result[0] == (1 if tie else res.result[0])
    analytic = cycles.network_cycles(program)
    assert res.layers == [a.cycles for a in analytic], (res.layers, analytic)


def test_classifier_overflow(tmp_path):
    """A hand-made raw layer whose ``acc * M + B`` leaves 32 bits (one channel's M and B at
    their extremes): the accelerator stops with OVERFLOW and RESULT stays invalid, where the
    functional model raises LayerOverflow: nothing is wrapped into a logit."""
    model, x = _classifier_net(tmp_path / "net.npz", False)
    program = compiler.compile_model(model, TINY)
    d = program.descriptors[-1]
    m, b, r = fmt.unpack_params(program.param_image.reshape(-1, fmt.PARAM_WORDS))
    m[d.param_base + 3], b[d.param_base + 3] = (1 << 15) - 1, 1 << 40
    program.param_image = fmt.pack_params(m, b, r).reshape(-1)
    xin = golden.run(model, x[None])[program.input_name][0]
    with pytest.raises(compiler.LayerOverflow, match="layer 4"):
        compiler.execute(program, xin[None])
    res = run_frame(program, xin, macro_style="behavioral", preload_weights=True)
    assert res.status["error"] and res.status["code"] == AccelError.OVERFLOW, res.status
    assert res.result[1] is False
def _im2col_net(path, arch, channels, size):
    """A random network on ``channels x size x size`` 8-bit pixels whose first convolution
    runs on the accelerator through the image buffer (``stem`` partition): the digits CNN
    (conv1 3x3 stride 1 padding 1) or the small ResNet14 (conv1 7x7 stride 2 padding 3, max
    pooling)."""
    spec = small_specs(4, 4)[1 if arch == "resnet14" else 2]
    spec = dataclasses.replace(spec, in_channels=channels, image_size=size, first_bits=8,
                               pixel_max=255)
    if arch == "digits_cnn":
        spec = dataclasses.replace(spec, width=0.25)
    net, x = random_net(spec, SEED, batch=1)
    model = golden.load(export.save(path, *export.to_manifest(net)))
    return compiler.partition(model, "stem"), x.numpy()


@pytest.mark.parametrize("arch,channels,size,K,slot", [
    ("digits_cnn", 3, 7, 5, 1), ("digits_cnn", 1, 6, 5, 0), ("resnet14", 3, 9, 7, 1)])
def test_im2col_exact(tmp_path, arch, channels, size, K, slot):
    """The first convolution through the image buffer: the im2col layer (``k = 3 < K = 5``
    on a 7x7 or 6x6 image, 3 or 1 channels; ``k = K = 7``, stride 2, padding 3 on 9x9) and
    the 1x1 convolution over its lanes, bit-exact against the golden model and the
    functional model, every layer's cycles equal to the cycle model's."""
    model, xs = _im2col_net(tmp_path / "net.npz", arch, channels, size)
    cfg = HwConfig(name="tiny_img", rows=16, cols=8, w_bits=4, a_bits=4, macros=2,
                   max_planes=12, acc_width=32, image_channels=3,
                   image_size=-(-size // 4) * 4, im2col_kernel=K)
    program = compiler.compile_model(model, cfg)
    assert program.image and program.descriptors[0].op == 2
    res = _check(model, program, xs[0], SEED, macro_style="behavioral", preload_weights=True,
                 image_slot=slot)
    analytic = cycles.network_cycles(program)
    assert res.layers == [a.cycles for a in analytic], (res.layers, analytic)
    # The im2col layer alone (later layers overwrite its output; the 1x1 convolution's zero
    # weights would hide a wrong lane past k): every lane against the functional model.
    alone = dataclasses.replace(program, names=program.names[:1], descriptors=[
        dataclasses.replace(program.descriptors[0], last=1)])
    res = run_frame(alone, xs[0], macro_style="behavioral", preload_weights=True,
                    image_slot=slot)
    want = compiler.execute(alone, xs[:1])
    assert want[alone.names[0]].any()
    bad = first_mismatch(alone, res.memory, want)
    assert bad is None, f"seed {SEED}: {bad}"
    assert res.layers == [a.cycles for a in cycles.network_cycles(alone)]


@pytest.mark.parametrize("channels,size,slot", [(3, 24, 1), (1, 16, 0)])
def test_whole_network_exact(tmp_path, channels, size, slot):
    """Every layer on the accelerator (the ``whole`` partition) in one program: the image from
    the image buffer through the im2col layer (7x7 stride 2 on 8-bit pixels, 8-bit weights),
    the 1x1 convolution over its lanes, max pooling, the residual stages, and global average
    pooling + classifier as one raw layer: every surviving layer bit-exact against the golden
    model, the logits and the class in the registers equal to the golden classifier's, every
    layer's cycles those of the cycle model. A 3-channel ResNet14 on 24x24 (a 2x2 map before
    the pooling: the raw layer's window is 3x3 with padding 1) and a 1-channel one on 16x16
    (1x1 map)."""
    spec = dataclasses.replace(small_specs(4, 4)[1], in_channels=channels, image_size=size,
                               first_bits=8, last_bits=8, num_classes=6)
    net, x = random_net(spec, SEED, batch=1)
    model = compiler.partition(golden.load(export.save(tmp_path / "net.npz",
                                                       *export.to_manifest(net))), "whole")
    cfg = HwConfig(name="tiny_whole", rows=16, cols=8, w_bits=4, a_bits=4, macros=2,
                   max_planes=12, acc_width=32, image_channels=3, image_size=size,
                   im2col_kernel=7)
    program = compiler.compile_model(model, cfg)
    ops = [d.op for d in program.descriptors]
    assert program.image and program.raw and ops[:3] == [2, 0, 1], ops
    assert program.descriptors[-1].kernel == (3 if size == 24 else 1)
    xs = x.numpy()
    res = _check(model, program, xs[0], SEED, macro_style="behavioral", preload_weights=True,
                 image_slot=slot, max_cycles=400_000)
    env = golden.run(model, xs[:1])
    assert logits_mismatch(program, res, env) is None, f"seed {SEED}"
    analytic = cycles.network_cycles(program)
    assert res.layers == [a.cycles for a in analytic], (res.layers, analytic)
