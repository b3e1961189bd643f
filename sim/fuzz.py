"""Layer-program fuzzing: mutations of a valid program, what the hardware must do with each, and
the command that runs them on Verilator (``make fuzz``).

    python -m sim.fuzz --count 10000 [--seed S] [--out fuzz_out] [--config tiny]

Each trial writes a mutated layer program into the accelerator's program memory over AHB
(:mod:`sim.tb_fuzz`), starts it and waits a bounded time. What it must do follows from the
contract alone, worked out here before the run:

* the descriptors are walked from word 0 as the fetcher does (:func:`walk`): the first one that
  :func:`contract.program.check_words` refuses (reserved bits included), or the end of program
  memory without ``last`` (``PROGRAM``), stops the program with that code at that layer, after
  the valid layers before it ran;
* the valid layers run on :func:`compiler.execute_memory` over a mirror of the activation
  buffer (every word the hardware holds, kept exact from trial to trial), with a mirror of the
  weight and parameter memories; a layer the model sees overflow must stop with
  ``OVERFLOW``.

Outcomes (:data:`OUTCOMES`): ``refused`` (stopped with the expected code at the expected
layer), ``correct`` (completed, every word the run wrote equal to the model's), ``overflow``
(stopped with ``OVERFLOW`` where the model overflows); and the failures: ``hang`` (not done
within the bound: the analytic cycle model of the layers that must run, with slack),
``completed_invalid`` (completed although a descriptor is invalid), ``wrong_stop`` (another
code or layer than expected), ``wrong_result`` (a written word differs), ``stray_write`` (a
word no layer may write changed: the periodic full read-back) and ``recovery`` (the unmutated
program on a fresh input afterwards is not bit-exact with the golden model). Every response
on the bus is checked by the protocol monitor and the register scoreboard all along.

The bench prints counts per outcome, writes them to ``report.json`` in the output folder,
and saves each failing case (its program words, the expectation, what the hardware did) as a
JSON file there. A run with any failure exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import compiler
from compiler import cycles
from contract.config import HwConfig, get_config
from contract.program import (
    DESC_WORDS,
    FIELDS,
    PARAM_WORDS,
    Descriptor,
    ErrorCode,
    check_words,
    tensor_words,
    weight_rows,
)

__all__ = ["FAILURES", "OUTCOMES", "Expectation", "Mutator", "base_program", "expect", "walk"]

OUTCOMES = ("refused", "correct", "overflow", "hang", "completed_invalid", "wrong_stop",
            "wrong_result", "stray_write", "recovery")
FAILURES = OUTCOMES[3:]
BOUND_SLACK = 1.25, 2000
"""A run may take ``1.25 x`` the analytic cycles of the layers that must run, plus 2,000."""


# ----------------------------------------------------------------------------- the base


def base_program(config: HwConfig, seed: int, workdir: Path):
    """(IntModel, Program, input shape) the mutations start from: a small random ResNet-like
    network (:mod:`model.testnets`, residual layers, 8-bit signed shortcuts over two slices)
    compiled for ``config``."""
    from model import export, golden
    from model.testnets import random_net, small_specs
    spec = dataclasses.replace(small_specs(config.w_bits, config.a_bits)[1], res_bits=8)
    net, _ = random_net(spec, seed, batch=1)
    path = export.save(workdir / "fuzz_base.npz", *export.to_manifest(net))
    model = golden.load(path)
    return model, compiler.compile_model(model, config)


# ----------------------------------------------------------------------------- expectation


def words_of(words, i: int) -> list[int]:
    return [int(w) for w in words[i * DESC_WORDS:(i + 1) * DESC_WORDS]]


def walk(prog_mem, config: HwConfig, bank_words: int) -> tuple[list[Descriptor], ErrorCode]:
    """The descriptors the sequencer runs from program memory ``prog_mem`` (all its words) and
    how the program ends: ``(valid descriptors, NONE)`` when one has ``last``, else ``(the
    valid ones before, code)`` with the refused descriptor's code, or ``PROGRAM`` after the
    last descriptor that fits without ``last``."""
    run = []
    for i in range(len(prog_mem) // DESC_WORDS):
        w = words_of(prog_mem, i)
        code = check_words(w, config, bank_words)
        if code != ErrorCode.NONE:
            return run, code
        run.append(Descriptor.unpack(w))
        if run[-1].last:
            return run, ErrorCode.NONE
    return run, ErrorCode.PROGRAM


@dataclass
class Expectation:
    """What the hardware must do with one program (from :func:`expect`)."""

    ran: list[Descriptor]           # the layers that run to their end
    code: ErrorCode                 # how the program stops (NONE: done)
    layer: int                      # STATUS.LAYER at the end
    bound: int                      # cycles the run may take
    memory: np.ndarray              # the activation buffer afterwards (model)
    written: list[tuple[int, int]] = field(default_factory=list)
    """(base, words) of every tensor the model knows the run writes."""
    unknown: list[tuple[int, int]] = field(default_factory=list)
    """(base, words) the model cannot predict (an overflowing layer's output)."""


def expect(prog_mem, mirror: np.ndarray, weights: np.ndarray, params: np.ndarray,
           base: compiler.Program) -> Expectation:
    """The :class:`Expectation` for program memory ``prog_mem`` run on activation buffer
    ``mirror`` (1, 2 * bank_words, rows; not changed) with weight and parameter memories
    ``weights`` and ``params`` (every word), on ``base``'s configuration and widths."""
    cfg, bw = base.config, base.bank_words
    run, code = walk(prog_mem, cfg, bw)
    mem = mirror.copy()
    names = [f"layer{i}" for i in range(len(run))]
    program = dataclasses.replace(base, names=names, descriptors=run, weight_image=weights,
                                  param_image=params, inputs={})
    unknown = []
    layer = len(run) - 1 if code == ErrorCode.NONE else len(run)
    try:
        compiler.execute_memory(program, mem)
    except compiler.LayerOverflow as e:
        # Layers up to e.index ran (the overflowing one to its end, writing what it computed).
        run, code, layer = run[:e.index + 1], ErrorCode.OVERFLOW, e.index
        unknown.append(tensor_words(run[-1], cfg)["out"])
    timed = dataclasses.replace(program, names=names[:len(run)], descriptors=run)
    analytic = sum(c.cycles for c in cycles.network_cycles(timed)) if run else 0
    bound = int(analytic * BOUND_SLACK[0]) + BOUND_SLACK[1]
    written = sorted({tensor_words(d, cfg)["out"] for d in run})
    if code == ErrorCode.OVERFLOW:
        written = sorted({tensor_words(d, cfg)["out"] for d in run[:-1]})
    return Expectation(ran=run, code=code, layer=layer, bound=bound, memory=mem,
                       written=written, unknown=unknown)


# ----------------------------------------------------------------------------- mutations


class Mutator:
    """Mutations of a valid program's words (:meth:`mutate`), mixed so that about half the
    programs stay valid (and must compute the right thing) and half break one rule (and must
    be refused)."""

    KINDS = (("field", 25), ("near", 20), ("valid", 20), ("bitflip", 15), ("swap", 5),
             ("last", 5), ("random_desc", 5), ("random_words", 5))

    def __init__(self, base: compiler.Program, rng: random.Random):
        self.base, self.rng = base, rng
        self.cfg = base.config
        self.words = [int(w) for w in base.program_words()]
        self.count = len(base.descriptors)
        self.bits = {f.name: f.bits for f in FIELDS}

    def mutate(self) -> tuple[list[int], str]:
        kinds, weights = zip(*self.KINDS)
        kind = self.rng.choices(kinds, weights)[0]
        words = list(self.words)
        return getattr(self, "_" + kind)(words)

    # Each mutation returns (words, description).
    def _desc(self, words, i):
        return Descriptor.unpack(words_of(words, i))

    def _put(self, words, i, d: Descriptor):
        words[i * DESC_WORDS:(i + 1) * DESC_WORDS] = d.pack()
        return words

    def _set(self, words, i, name, value):
        d = dataclasses.replace(self._desc(words, i), **{name: value})
        return self._put(words, i, d)

    def _pick(self):
        return self.rng.randrange(self.count), self.rng.choice(FIELDS).name

    def _field(self, words):
        i, name = self._pick()
        v = self.rng.randrange(1 << self.bits[name])
        return self._set(words, i, name, v), f"descriptor {i}: {name} = {v}"

    def _near(self, words):
        i, name = self._pick()
        old = getattr(self._desc(words, i), name)
        v = min(max(old + self.rng.choice((-2, -1, 1, 2)), 0), (1 << self.bits[name]) - 1)
        return self._set(words, i, name, v), f"descriptor {i}: {name} {old} -> {v}"

    def _valid(self, words):
        """A change that keeps the descriptor valid: other parameters, other places."""
        i = self.rng.randrange(self.count)
        d = self._desc(words, i)
        cfg, bw, rng = self.cfg, self.base.bank_words, self.rng
        which = rng.choice(("shift", "out_bits", "weight_base", "param_base", "out_base",
                            "res_base", "in_base"))
        if which == "shift":
            d = dataclasses.replace(d, shift=rng.randrange(1, 41))
        elif which == "out_bits":
            signed = rng.random() < 0.5
            bits = rng.randrange(2 if signed else 1, 9)
            d = dataclasses.replace(d, out_bits=bits, out_signed=int(signed),
                                    relu=int(not signed))
        elif which == "weight_base":
            d = dataclasses.replace(d, weight_base=rng.randrange(max(
                cfg.weight_rows - weight_rows(d.col_tiles, d.row_tiles, cfg), 0) + 1))
        elif which == "param_base":
            rec_cap = cfg.param_words // PARAM_WORDS
            d = dataclasses.replace(d, param_base=cfg.cols * rng.randrange(
                (rec_cap - d.col_tiles * cfg.cols) // cfg.cols + 1))
        else:
            region = tensor_words(d, cfg).get(which.removesuffix("_base"))
            if region is None:
                return self._field(words)
            start = rng.randrange(2) * bw + rng.randrange(max(bw - region[1], 0) + 1)
            d = dataclasses.replace(d, **{which: start})
        return self._put(words, i, d), f"descriptor {i}: valid {which} change ({d})"

    def _bitflip(self, words):
        flips = [self.rng.randrange(32 * len(words)) for _ in range(self.rng.randint(1, 3))]
        for b in flips:
            words[b // 32] ^= 1 << (b % 32)
        return words, f"bits {flips} flipped"

    def _swap(self, words):
        i, j = self.rng.randrange(self.count), self.rng.randrange(self.count)
        name = self.rng.choice(FIELDS).name
        a, b = getattr(self._desc(words, i), name), getattr(self._desc(words, j), name)
        self._set(words, i, name, b)
        self._set(words, j, name, a)
        return words, f"{name} of descriptors {i} and {j} swapped"

    def _last(self, words):
        i = self.rng.randrange(self.count)
        v = 1 - self._desc(words, i).last
        return self._set(words, i, "last", v), f"descriptor {i}: last = {v}"

    def _random_desc(self, words):
        i = self.rng.randrange(self.count)
        vals = {f.name: self.rng.randrange(1 << f.bits) for f in FIELDS}
        return self._put(words, i, Descriptor(**vals)), f"descriptor {i} random: {vals}"

    def _random_words(self, words):
        n = self.rng.randrange(1, 3 * DESC_WORDS)
        return [self.rng.getrandbits(32) for _ in range(n)], f"{n} random words"


# ----------------------------------------------------------------------------- command


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="mutated programs (default 1000)")
    ap.add_argument("--seed", type=int, default=None, help="default: CIM_TEST_SEED or random")
    ap.add_argument("--config", default="tiny", help="hardware configuration (default tiny)")
    ap.add_argument("--out", default="fuzz_out", help="report and failing cases (default "
                    "fuzz_out/)")
    args = ap.parse_args(argv)
    from sim import runner
    from sim.seed import test_seed
    get_config(args.config)
    if args.count < 1:
        ap.error("--count must be positive")
    out = Path(args.out).resolve() / "programs"
    out.mkdir(parents=True, exist_ok=True)
    seed = test_seed() if args.seed is None else args.seed
    t0 = time.perf_counter()
    env = {"CIM_FUZZ_COUNT": str(args.count), "CIM_FUZZ_OUT": str(out)}
    try:
        runner.run(args.config, "verilator", "sim.tb_fuzz", seed=seed, env=env)
        ok = True
    except runner.SimFailure as e:
        print(e, file=sys.stderr)
        ok = False
    report = out / "report.json"
    if report.exists():
        data = json.loads(report.read_text())
        counts = data["counts"]
        print(f"{args.count} mutated programs on {args.config!r} (seed {seed}), "
              f"{time.perf_counter() - t0:.0f} s:")
        for k in OUTCOMES:
            print(f"  {k:<18} {counts.get(k, 0):>7}{'   (failure)' if k in FAILURES else ''}")
        print("  refused by code: " + ", ".join(f"{k} {v}" for k, v in sorted(
            data.get("refused_by_code", {}).items(), key=lambda kv: -kv[1])))
        print(f"report and failing cases: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
