"""The program fuzzer's expectations (sim/fuzz.py), without a simulator: the walk over
program memory and the model run on the buffer mirror."""

import dataclasses
import random

import numpy as np
import pytest

import compiler
from contract.config import get_config
from contract.program import DESC_WORDS, ErrorCode
from model import golden
from sim import fuzz
from sim.seed import test_seed

SEED = test_seed()
TINY = get_config("tiny")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fuzz.base_program(TINY, SEED, tmp_path_factory.mktemp("fuzz"))


def _memories(program):
    cfg = program.config
    prog = np.zeros(cfg.prog_words, np.int64)
    prog[:len(program.program_words())] = program.program_words()
    weights = np.zeros(cfg.weight_words, np.uint32)
    weights[:len(program.weight_image)] = program.weight_image
    params = np.zeros(cfg.param_words, np.uint32)
    params[:len(program.param_image)] = program.param_image
    return prog, weights, params


def test_walk(base):
    """The compiled program runs to its last descriptor; without ``last`` it runs into the
    zero words after it (kernel 0: KERNEL) or off the end of memory (PROGRAM); a bad field
    stops it at that descriptor."""
    _, program = base
    prog, _, _ = _memories(program)
    n = len(program.descriptors)
    assert fuzz.walk(prog, TINY, program.bank_words) == (program.descriptors, ErrorCode.NONE)
    unlast = prog.copy()
    unlast[(n - 1) * DESC_WORDS:n * DESC_WORDS] = dataclasses.replace(
        program.descriptors[-1], last=0).pack()
    ran, code = fuzz.walk(unlast, TINY, program.bank_words)
    assert (len(ran), code) == (n, ErrorCode.KERNEL)
    ran, code = fuzz.walk(unlast[:n * DESC_WORDS], TINY, program.bank_words)
    assert (len(ran), code) == (n, ErrorCode.PROGRAM)
    bad = prog.copy()
    d = program.descriptors[2]
    bad[2 * DESC_WORDS:3 * DESC_WORDS] = dataclasses.replace(d, relu=1 - d.relu).pack()
    ran, code = fuzz.walk(bad, TINY, program.bank_words)
    assert (len(ran), code) == (2, ErrorCode.FORMAT)


def test_expect_is_the_golden_model(base):
    """On the compiled program the expectation is a run to the last layer whose buffer
    holds the golden model's outputs."""
    model, program = base
    prog, weights, params = _memories(program)
    rng = np.random.default_rng(SEED)
    hi = int(model.manifest["input"]["pixel_max"])
    x = rng.integers(0, hi + 1, size=model.input_shape)
    env = golden.run(model, x[None])
    mirror = np.zeros((1, 2 * program.bank_words, TINY.rows), np.int64)
    src = program.buffers[program.input_name]
    compiler.write_tensor(mirror, src.base, env[program.input_name], TINY.a_bits, TINY.a_bits)
    exp = fuzz.expect(prog, mirror, weights, params, program)
    assert (exp.code, exp.layer, len(exp.ran)) == (ErrorCode.NONE, len(program.names) - 1,
                                                   len(program.names))
    assert exp.bound > 0 and not exp.unknown
    last = program.names[-1]
    a = program.buffers[last]
    got = compiler.read_tensor(exp.memory, a.base, a.shape, a.bits, a.signed, TINY.a_bits)
    assert (got == env[last]).all()


def test_mutations_mix(base):
    """The mutations leave some programs valid and break others, and each is described."""
    _, program = base
    prog, _, _ = _memories(program)
    mut = fuzz.Mutator(program, random.Random(SEED))
    codes = []
    for _ in range(300):
        words, what = mut.mutate()
        assert what
        mem = prog.copy()
        mem[:len(words)] = words
        codes.append(fuzz.walk(mem, TINY, program.bank_words)[1])
    valid = codes.count(ErrorCode.NONE)
    assert 0.2 * len(codes) < valid < 0.8 * len(codes), f"seed {SEED}: {valid} valid"
    assert {ErrorCode.FORMAT, ErrorCode.SIZE, ErrorCode.TILES, ErrorCode.ADDRESS,
            ErrorCode.CHANNELS} <= set(codes), f"seed {SEED}: {set(codes)}"
