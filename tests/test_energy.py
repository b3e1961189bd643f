"""compiler/energy.py: the events of small layers counted by hand, the energy arithmetic, the
bus traffic of a frame, and the command line."""

import json
from pathlib import Path

import pytest

from compiler import compile_model, partition
from compiler import energy as en
from compiler.partition import accel_outputs
from contract.arith import column_range, signed_width
from contract.config import get_config
from contract.program import FIELDS, OP_MAXPOOL, Descriptor, tile_words
from model import golden

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits_cnn_w4a4.npz"
RESNET = REPO / "models" / "resnet14_fmnist_w4a4.npz"
TINY = get_config("tiny")       # 2 macros of 16 rows x 8 columns, W4A4


def desc(**fields) -> Descriptor:
    """A descriptor with every field 0 but ``fields``."""
    return Descriptor(**{**{f.name: 0 for f in FIELDS}, **fields})


def conv(k, pad, size, cin, cout, **more) -> Descriptor:
    R, C = TINY.rows, TINY.cols
    g = -(-cin // R)
    out = (size + 2 * pad - k) + 1
    return desc(**{**dict(kernel=k, stride=1, padding=pad, relu=1, out_bits=4, shift=8,
                          in_bits=4, in_height=size, in_width=size, in_groups=g,
                          out_height=out, out_width=out, out_groups=-(-cout // R),
                          in_channels=cin, out_channels=cout, col_tiles=-(-cout // C),
                          row_tiles=k * k * g, weight_tiles=-(-cout // C) * k * k * g,
                          w_bits=4), **more})


def test_conv3x3_counted_by_hand():
    """3x3 conv, padding 1, 4x4 input of 16 channels (one group), 8 outputs (one column
    tile) on ``tiny``: 9 row tiles > 2 macros, so one copy and 5 rounds."""
    ev = en.layer_events(conv(3, 1, 4, 16, 8), TINY, "c")
    assert ev.macs == 16 * 8 * 16 * 9
    assert ev.array_evals == 9 * 16 * 4              # row tiles x pixels x bit-planes
    assert ev.pp_bits == ev.array_evals * 16 * 8 * 4
    assert ev.accumulates == ev.array_evals * 8
    assert ev.accumulate_bits == signed_width(*column_range(16, 4, 4))
    assert ev.tile_loads == 9
    assert ev.weight_words == 9 * tile_words(TINY) == 9 * 16   # 8 beats of 2 words
    # Taps inside the 4x4 input: rows 2, 3, 3, 2 per output row, so 10 x 10 in all.
    assert ev.act_reads == 100
    assert ev.act_writes == 16
    assert ev.requants == 16 * 8 and ev.residual_requants == 0
    assert ev.image_reads == 0


def test_copies_load_the_tiles_twice():
    """A 1x1 conv has one row tile: it is copied onto both macros (two tile loads), each
    pixel still read once."""
    ev = en.layer_events(conv(1, 0, 4, 16, 8), TINY)
    assert ev.tile_loads == 2
    assert ev.array_evals == 16 * 4
    assert ev.act_reads == 16 and ev.act_writes == 16


def test_residual_and_wide_output():
    """An 8-bit residual is two slice words per pixel; an 8-bit output writes two."""
    ev = en.layer_events(conv(1, 0, 4, 16, 8, has_residual=1, res_bits=8, res_signed=1,
                              out_signed=0), TINY)
    assert ev.act_reads == 16 + 16 * 2
    assert ev.residual_requants == ev.requants == 16 * 8
    wide = en.layer_events(conv(1, 0, 4, 16, 8, out_bits=8), TINY)
    assert wide.act_writes == 16 * 2


def test_maxpool_reads_only_taps_inside():
    """3x3 stride-2 pooling with padding 1 on 4x4: output rows see 2 and 3 input rows."""
    d = desc(kernel=3, stride=2, padding=1, relu=1, out_bits=4, in_bits=4, op=OP_MAXPOOL,
             in_height=4, in_width=4, in_groups=1, out_height=2, out_width=2, out_groups=1,
             in_channels=16, out_channels=16)
    ev = en.layer_events(d, TINY)
    assert (ev.act_reads, ev.act_writes, ev.macs, ev.array_evals) == (25, 4, 0, 0)


def test_sram_interpolation():
    t = en.DEFAULT_TABLE
    assert en.sram_pj_per_bit(8 << 10) == pytest.approx(10 / 64)
    assert en.sram_pj_per_bit(1 << 10) == pytest.approx(10 / 64)
    assert en.sram_pj_per_bit(32 << 10) == pytest.approx(20 / 64)
    assert en.sram_pj_per_bit(1 << 20) == pytest.approx(100 / 64)
    sizes = [4 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20]
    e = [en.sram_pj_per_bit(s, t) for s in sizes]
    assert e == sorted(e) and e[-1] > 100 / 64
    with pytest.raises(ValueError, match="0 bytes"):
        en.sram_pj_per_bit(0)


def test_estimate_adds_up():
    model = golden.load(DIGITS)
    program = compile_model(model, TINY)
    e = en.estimate(program, accel_outputs(model))
    assert e["kind"] == "model" and "not a measurement" in e["note"]
    t = en.DEFAULT_TABLE
    first = e["layers"][0]
    ev = en.count_events(program)[0]
    assert first["energy_pj"]["array"] == pytest.approx(
        ev.pp_bits * t.pp_bit_pj + ev.accumulates * ev.accumulate_bits * t.add_bit_pj, abs=0.1)
    assert first["energy_pj"]["weights"] == pytest.approx(
        ev.weight_words * 32 * en.sram_pj_per_bit(TINY.weight_words * 4), abs=0.1)
    assert sum(e["by_kind_pj"].values()) == pytest.approx(e["frame_pj"], abs=0.5)
    assert e["macs_per_frame"] == sum(r["macs"] for r in e["layers"]) == 737_280
    assert e["pj_per_mac"] == pytest.approx(e["frame_pj"] / e["macs_per_frame"], rel=1e-3)
    assert set(e["table"]["sources"]) == {"pp_bit_pj", "add_bit_pj", "mult_pj", "add_pj",
                                          "sram_points", "wire_pj_bit_mm", "bus_mm"}
    # The input tensor in, the MCU's tensor out, in ACT-window words (64-bit buffer words).
    io = e["io"]
    inp = program.buffers[program.input_name].words
    assert (io["bus_words_in"], io["act_writes"]) == (2 * inp, inp)
    assert io["bus_words_out"] == 2 * sum(program.buffers[o].words
                                          for o in accel_outputs(model))
    assert io["load_words"] == (len(program.program_words()) + len(program.weight_image)
                                + len(program.param_image))


def test_whole_resnet14_frame_io():
    """Every layer on the accelerator: 256 words of image in (32 rows of 8 words), the 10
    logits and the class out; the firmware's figures (README)."""
    model = partition(golden.load(RESNET), "whole")
    program = compile_model(model, get_config("default"))
    io = en.frame_io(program, accel_outputs(model))
    assert (io.bus_words_in, io.bus_words_out, io.image_bytes) == (256, 11, 1024)
    assert io.load_words == 497_844


def test_cli(capsys):
    assert en.main(["--model", str(DIGITS), "--config", "tiny", "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in e["layers"]] == ["conv2", "conv3", "block_conv1",
                                                "block_conv2"]
    assert en.main(["--model", str(DIGITS), "--config", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "a MODEL" in out and "pJ" in out and "Horowitz" in out


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such.npz", "--config", "tiny"], "no such model file"),
    (["--model", str(DIGITS), "--config", "huge"], "unknown hardware configuration"),
    (["--model", str(RESNET), "--config", "tiny"], "weight_words"),
    (["--model", str(DIGITS), "--config", "tiny", "--partition", "mcu"], "no accelerator"),
])
def test_cli_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        en.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
