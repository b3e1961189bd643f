# amaranth: UnusedElaboratable=no
"""The whole accelerator in the Amaranth simulator against the golden model."""

import dataclasses
import os
import time

import numpy as np
import pytest
from amaranth.sim import Simulator

from gateware.accelerator import Accelerator, AccelError
from gateware.config import get_config
from model import compiler, cycles, data, export, golden
from model.compiler import Descriptor

from .helpers import random_net, small_specs

SEED = int(os.environ.get("CIM_TEST_SEED", "1234"))
DIGITS = "models/digits_cnn_w4a4.npz"
TINY = get_config("tiny")


def _dut(program):
    return Accelerator(config=program.config, acc_width=program.acc_width,
                       bank_words=program.bank_words)


async def _write(ctx, dut, port, items):
    """Write (address, word) pairs through the ``<port>_w_*`` port, one per cycle."""
    ctx.set(getattr(dut, f"{port}_w_en"), 1)
    if port == "act":
        ctx.set(dut.act_w_mask, (1 << dut.config.rows) - 1)
    for a, w in items:
        ctx.set(getattr(dut, f"{port}_w_addr"), a)
        ctx.set(getattr(dut, f"{port}_w_data"), int(w))
        await ctx.tick()
    ctx.set(getattr(dut, f"{port}_w_en"), 0)


def _run(program, x, *, max_cycles=200_000):
    """Load ``program`` and input ``x`` (C, H, W) through the write ports, run, read back every
    output word. Returns (buffer image (1, 2 * bank_words, R), per-layer cycles, status)."""
    cfg = program.config
    R, ab = cfg.rows, cfg.a_bits
    dut = _dut(program)
    src = program.buffers[program.input_name]
    mem = np.zeros((1, 2 * program.bank_words, R), np.int64)
    compiler.write_tensor(mem, src.base, x[None], ab, ab)
    in_words = {src.base + i: sum(int(v) << (ab * r) for r, v in enumerate(mem[0, src.base + i]))
                for i in range(src.words)}
    out_addrs = sorted({a.base + i for n, a in program.buffers.items()
                        if n != program.input_name for i in range(a.words)})
    res = {}

    async def tb(ctx):
        for port, words in (("prog", program.program_words()),
                            ("weight", program.weight_image), ("param", program.param_image)):
            await _write(ctx, dut, port, enumerate(words))
        await _write(ctx, dut, "act", in_words.items())
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        layer_start, layer, per_layer = 0, 0, []
        for n in range(max_cycles):
            if ctx.get(dut.done):
                break
            cur = ctx.get(dut.layer)
            if cur != layer:
                per_layer.append(n - layer_start)
                layer, layer_start = cur, n
            await ctx.tick()
        else:
            raise AssertionError(f"accelerator did not finish in {max_cycles} cycles")
        per_layer.append(n - layer_start)
        res["status"] = dict(error=ctx.get(dut.error), code=ctx.get(dut.error_code),
                             busy=ctx.get(dut.busy),
                             total=ctx.get(dut.cycles_total), cbusy=ctx.get(dut.cycles_busy),
                             compute=ctx.get(dut.cycles_compute),
                             stall=ctx.get(dut.cycles_stall))
        res["layers"] = per_layer
        # Read back: the word addressed in cycle n is valid in cycle n + 2.
        got = []
        for i in range(len(out_addrs) + 2):
            ctx.set(dut.act_r_addr, out_addrs[min(i, len(out_addrs) - 1)])
            if i >= 2:
                assert ctx.get(dut.act_r_valid)
                got.append(ctx.get(dut.act_r_data))
            await ctx.tick()
        res["words"] = got

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    t0 = time.perf_counter()
    sim.run()
    res["seconds"] = time.perf_counter() - t0
    for a, w in zip(out_addrs, res["words"]):
        mem[0, a] = [(w >> (ab * r)) & ((1 << ab) - 1) for r in range(R)]
    return mem, res


def _check(model, program, x, seed):
    env = golden.run(model, x[None])
    mem, res = _run(program, env[program.input_name][0])
    st = res["status"]
    assert not st["error"], f"seed {seed}: error {AccelError(st['code'])}"
    assert not st["busy"]
    # A layer's output is compared if no later layer overwrote its words.
    outs = [(n, program.buffers[n]) for n in program.names]
    analytic = cycles.network_cycles(program)
    print(f"\nseed {seed}: {sum(res['layers'])} cycles in {res['seconds']:.1f} s "
          f"({sum(res['layers']) / res['seconds']:.0f} cycles/s incl. loading); counters "
          f"{st}")
    for (name, _), rtl, ana in zip(outs, res["layers"], analytic):
        print(f"  {name:<14} RTL {rtl:>7} analytic {ana.cycles:>7} ratio {rtl / ana.cycles:.2f}")
    # Counters: every layer ran while busy; the array computes a_bits cycles per slot and
    # round at least, and never longer than busy.
    ab = program.config.a_bits
    assert abs(st["cbusy"] - sum(res["layers"])) <= 2, (st, res["layers"])
    assert sum(a.rounds * a.slots * ab for a in analytic) <= st["compute"] <= st["cbusy"]
    for name, rtl, ana in zip(program.names, res["layers"], analytic):
        assert abs(rtl - ana.cycles) <= 0.02 * ana.cycles, (
            f"layer {name}: RTL {rtl} cycles, analytic model {ana.cycles}")
    checked = 0
    for i, (name, a) in enumerate(outs):
        later = [b for _, b in outs[i + 1:]]
        if any(b.base < a.base + a.words and a.base < b.base + b.words for b in later):
            continue
        got = compiler.read_tensor(mem, a.base, a.shape, a.bits, a.signed, program.config.a_bits)
        want = env[name]
        bad = np.argwhere(got != want)
        if len(bad):
            print("differing (n, c, y, x):", bad[:20].tolist())
            _, c, y, xx = bad[0]
            pytest.fail(f"seed {seed}: layer {name} channel {c} position ({y}, {xx}): RTL "
                        f"{got[0, c, y, xx]}, golden {want[0, c, y, xx]} ({len(bad)} differ)")
        checked += 1
    assert checked >= 1
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


def test_digits_exact():
    """The shipped digits model on a real test image (about 20 s in the simulator); every
    layer within 2 % of model.cycles (checked in _check)."""
    model = golden.load(DIGITS)
    xs, _, _ = data.load_dataset("digits", "test", limit=1)
    program = compiler.compile_model(model, TINY)
    _check(model, program, xs[0], 0)


@pytest.mark.parametrize("field,value,code", [("kernel", 2, AccelError.KERNEL),
                                              ("stride", 3, AccelError.STRIDE),
                                              ("row_tiles", 0, AccelError.TILES),
                                              ("shift", 0, AccelError.FORMAT)])
def test_invalid_descriptor(tmp_path, field, value, code):
    model = golden.load(DIGITS)
    program = compiler.compile_model(model, TINY)
    d = program.descriptors[0]
    bad = dataclasses.replace(d, **{field: value})
    dut = _dut(program)
    out = {}

    async def tb(ctx):
        await _write(ctx, dut, "prog", enumerate(bad.pack()))
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
