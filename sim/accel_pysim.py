# amaranth: UnusedElaboratable=no
"""Run a compiled network on the accelerator core in the Amaranth simulator.

The RTL of :class:`~gateware.accelerator.Accelerator` (no bus) runs one frame of a compiled
program; every output activation is compared with the golden model and the cycles of every
layer with :mod:`compiler.cycles`. ``tests/test_accelerator.py`` uses it on ``tiny``; the CLI
measures a configuration and a model, ``default`` and the shipped ResNet14 included::

    python -m sim.accel_pysim --model models/resnet14_fmnist_w4a4.npz --config default \\
        [--images 1] [--macro-style behavioral] \\
        [--json build/measured/resnet14_fmnist_w4a4_default.json]

Loading: program, parameters and the input go in through the core's write ports, one word
per cycle, as the bus slave would write them; the weight image, which would take one cycle
per word (346 k for ResNet14), is preloaded into the weight store (``weight_init``). The
cycles reported are those from ``start`` to ``done``, which loading does not touch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

import compiler
from compiler import cycles
from contract.config import get_config
from gateware.accelerator import Accelerator, AccelError
from gateware.cim_macro import DEFAULT_STYLE, STYLES
from model import golden

__all__ = ["FrameResult", "first_mismatch", "logits_mismatch", "run_frame", "surviving_outputs",
           "write_port"]


@dataclass
class FrameResult:
    memory: np.ndarray                  # (1, 2 * bank_words, rows) buffer image read back
    layers: list[int]                   # cycles per layer, start to done
    status: dict = field(default_factory=dict)
    seconds: float = 0.0
    logits: list[int] = field(default_factory=list)     # the logit registers (signed)
    result: tuple[int, bool] = (0, False)               # (class, valid) at done


async def write_port(ctx, dut, port, items):
    """Write (address, word) pairs through the ``<port>_w_*`` port, one per cycle."""
    ctx.set(getattr(dut, f"{port}_w_en"), 1)
    if port == "act":
        ctx.set(dut.act_w_mask, (1 << dut.config.rows) - 1)
    for a, w in items:
        ctx.set(getattr(dut, f"{port}_w_addr"), a)
        ctx.set(getattr(dut, f"{port}_w_data"), int(w))
        await ctx.tick()
    ctx.set(getattr(dut, f"{port}_w_en"), 0)


def image_words(config, x: np.ndarray, slot: int) -> dict[int, int]:
    """The ``IMAGE`` window's 32-bit words (word address: word) that hold image ``x`` (C, H,
    W, 8-bit pixels) in image-buffer slot ``slot`` (:mod:`gateware.image`)."""
    size = config.image_size
    c, h, w = x.shape
    rows = np.zeros((c, h, size), np.uint8)
    rows[:, :, :w] = np.asarray(x) & 0xFF
    out = {}
    for ci in range(c):
        for y in range(h):
            row = slot * config.image_slot_rows + ci * size + y
            for i, v in enumerate(rows[ci, y].view("<u4")):
                out[row * size // 4 + i] = int(v)
    return out


def run_frame(program: compiler.Program, x: np.ndarray, *, preload_weights: bool = False,
              macro_style: str = DEFAULT_STYLE, max_cycles: int = 200_000,
              vcd: str | None = None, image_slot: int = 0) -> FrameResult:
    """Load ``program`` and the accelerator input ``x`` (C, H, W), run, read back every output
    word. ``preload_weights``: put the weight image in the weight store's initial contents
    instead of writing it through the port. ``vcd``: write every signal's waveform to this
    file (large: megabytes per thousand cycles). With :attr:`compiler.Program.image`, ``x`` is
    the image, written into image-buffer slot ``image_slot`` (and that slot chosen)."""
    cfg = program.config
    R, ab = cfg.rows, cfg.a_bits
    dut = Accelerator(config=cfg, acc_width=program.acc_width, bank_words=program.bank_words,
                      macro_style=macro_style,
                      weight_init=program.weight_image if preload_weights else None)
    mem = np.zeros((1, 2 * program.bank_words, R), np.int64)
    in_words, img_words = {}, {}
    if program.image:
        img_words = image_words(cfg, x, image_slot)
    else:
        src = program.buffers[program.input_name]
        compiler.write_tensor(mem, src.base, x[None], src.bits, ab)
        in_words = {src.base + i: sum(int(v) << (ab * r)
                                      for r, v in enumerate(mem[0, src.base + i]))
                    for i in range(src.words)}
    out_addrs = sorted({a.base + i for n, a in program.buffers.items()
                        if n != program.input_name for i in range(a.words)})
    res = FrameResult(mem, [])

    async def tb(ctx):
        loads = [("prog", program.program_words()), ("param", program.param_image)]
        if not preload_weights:
            loads.append(("weight", program.weight_image))
        for port, words in loads:
            await write_port(ctx, dut, port, enumerate(words))
        await write_port(ctx, dut, "act", in_words.items())
        if program.image:
            await write_port(ctx, dut, "image", img_words.items())
            ctx.set(dut.image_slot, image_slot)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        layer_start, layer = 0, 0
        for n in range(max_cycles):
            if ctx.get(dut.done):
                break
            cur = ctx.get(dut.layer)
            if cur != layer:
                res.layers.append(n - layer_start)
                layer, layer_start = cur, n
            await ctx.tick()
        else:
            raise AssertionError(f"accelerator did not finish in {max_cycles} cycles")
        res.layers.append(n - layer_start)
        res.status = dict(error=ctx.get(dut.error), code=AccelError(ctx.get(dut.error_code)),
                          busy=ctx.get(dut.busy), total=ctx.get(dut.cycles_total),
                          busy_cycles=ctx.get(dut.cycles_busy),
                          compute=ctx.get(dut.cycles_compute), stall=ctx.get(dut.cycles_stall))
        # Read back: the word addressed in cycle n is valid in cycle n + 2.
        got = []
        for i in range(len(out_addrs) + 2):
            ctx.set(dut.act_r_addr, out_addrs[min(i, len(out_addrs) - 1)])
            if i >= 2:
                assert ctx.get(dut.act_r_valid)
                got.append(ctx.get(dut.act_r_data))
            await ctx.tick()
        for a, w in zip(out_addrs, got):
            mem[0, a] = [(w >> (ab * r)) & ((1 << ab) - 1) for r in range(R)]
        # The classifier's registers (combinational reads).
        res.result = (ctx.get(dut.result_class), bool(ctx.get(dut.result_valid)))
        for c in range(cfg.cols):
            ctx.set(dut.logit_r_addr, c)
            v = ctx.get(dut.logit_r_data)
            res.logits.append(v - (1 << 32) if v >> 31 else v)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    t0 = time.perf_counter()
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    res.seconds = time.perf_counter() - t0
    return res


def surviving_outputs(program: compiler.Program) -> list[str]:
    """Layers whose output words no later layer overwrites (those a frame can be checked on;
    a raw layer writes none)."""
    outs = [(n, program.buffers[n]) for n in program.names if n in program.buffers]
    keep = []
    for i, (name, a) in enumerate(outs):
        later = [b for _, b in outs[i + 1:]]
        if not any(b.base < a.base + a.words and a.base < b.base + b.words for b in later):
            keep.append(name)
    return keep


def first_mismatch(program, memory, env) -> str | None:
    """None if every surviving output equals the golden model's, else a message naming the
    layer, channel and position of the first difference."""
    for name in surviving_outputs(program):
        a = program.buffers[name]
        got = compiler.read_tensor(memory, a.base, a.shape, a.bits, a.signed,
                                   program.config.a_bits)
        want = env[name]
        bad = np.argwhere(got != want)
        if len(bad):
            _, c, y, x = bad[0]
            return (f"layer {name} channel {c} position ({y}, {x}): RTL {got[0, c, y, x]}, "
                    f"golden {want[0, c, y, x]} ({len(bad)} differ)")
    return None


def logits_mismatch(program, res: FrameResult, env) -> str | None:
    """None if a raw program's logit registers equal the golden model's classifier output
    and RESULT holds its argmax (valid), else a message."""
    want = env[program.names[-1]][0]
    got = res.logits[:len(want)]
    if got != want.tolist():
        return f"logits {got}, golden {want.tolist()}"
    if res.result != (int(np.argmax(want)), True):
        return f"RESULT (class, valid) {res.result}, golden class {int(np.argmax(want))}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="an integer model file (.npz)")
    ap.add_argument("--config", default="default", help="a configuration name, or one with "
                    "changed fields ('tiny:a_bits=2'); default: default")
    ap.add_argument("--dataset", default=None, help="default: the model's own; random "
                    "inputs of its shape when it records none")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--partition", default="file", choices=list(compiler.PARTITIONS),
                    help="which layers run on the accelerator (compiler.partition; default: "
                         "file, the model file's split)")
    ap.add_argument("--macro-style", choices=STYLES, default=DEFAULT_STYLE,
                    help=f"the macros' column adders (default {DEFAULT_STYLE}, as everywhere; "
                         "behavioral gives the same results and cycles and simulates faster)")
    ap.add_argument("--json", help="write the measured cycles here")
    ap.add_argument("--vcd", help="write the first image's waveform to this VCD file")
    args = ap.parse_args(argv)
    from model import data
    from model.evaluate import model_inputs
    try:
        config = get_config(args.config)
        model = compiler.partition(golden.load(args.model), args.partition)
        program = compiler.compile_model(model, config)
        xs, what = model_inputs(model, args.images, dataset=args.dataset)
    except (ValueError, OSError, data.DatasetError, compiler.CompileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.model} on {config.name!r}, {what}")
    analytic = cycles.network_cycles(program)
    failures, runs = 0, []
    for i, x in enumerate(xs):
        env = {"input": x[None].astype(np.int64), **golden.run(model, x[None])}
        # Layers the golden model lacks (an im2col layer): the functional model's outputs.
        env = {**compiler.execute(program, env[program.input_name]), **env}
        r = run_frame(program, env[program.input_name][0], preload_weights=True,
                      macro_style=args.macro_style, vcd=args.vcd if i == 0 else None)
        bad = first_mismatch(program, r.memory, env)
        if bad is None and program.raw:
            bad = logits_mismatch(program, r, env)
        total = sum(r.layers)
        print(f"image {i}: {total} cycles start to done, {r.seconds:.0f} s in the simulator, "
              f"status {r.status['code'].name}, "
              f"{'bit-exact' if bad is None else 'MISMATCH: ' + bad}")
        failures += bad is not None or bool(r.status["error"])
        runs.append(r)
    print(f"\n{args.model} on {config.name!r} (RTL, Amaranth simulator) vs compiler.cycles")
    print(f"{'layer':<20} {'RTL':>7} {'analytic':>8} {'diff':>6} {'MAC util':>8}")
    for name, rtl, a in zip(program.names, runs[0].layers, analytic):
        util = a.macs / (rtl * config.peak_macs_per_cycle)
        print(f"{name:<20} {rtl:>7} {a.cycles:>8} {rtl - a.cycles:>+6} {util:>8.1%}")
    rtl_total = sum(runs[0].layers)
    ana_total = sum(a.cycles for a in analytic)
    macs = sum(a.macs for a in analytic)
    print(f"{'total':<20} {rtl_total:>7} {ana_total:>8} {rtl_total - ana_total:>+6} "
          f"{macs / (rtl_total * config.peak_macs_per_cycle):>8.1%}")
    if args.json:
        out = dict(model=args.model, config=config.name, partition=args.partition,
                   images=len(xs),
                   model_sha256=hashlib.sha256(Path(args.model).read_bytes()).hexdigest(),
                   bit_exact=failures == 0, macro_style=args.macro_style,
                   layers={n: c for n, c in zip(program.names, runs[0].layers)},
                   total=rtl_total, analytic_total=ana_total)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
