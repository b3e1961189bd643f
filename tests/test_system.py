"""Partitions (compiler.partition) and the end-to-end system figures (hw.system)."""

import json

import numpy as np
import pytest

import compiler
from compiler import cycles
from contract.config import get_config
from hw import system
from model import golden

RESNET = "models/resnet14_fmnist_w4a4.npz"
DIGITS = "models/digits_cnn_w4a4.npz"


@pytest.fixture(scope="module")
def resnet():
    return golden.load(RESNET)


def test_partitions_move_layers_and_keep_the_arithmetic(resnet):
    """``stem`` moves the first convolution and the max pooling to the accelerator, ``mcu``
    everything to the MCU, ``whole`` everything to the accelerator, ``file`` changes nothing;
    the golden model's outputs are the same under every split, and the compiled stem program
    runs them bit-exactly in the functional model (on ``default`` the first convolution goes
    through the image buffer: an im2col layer, then the convolution as 1x1)."""
    where = {n["name"]: n["where"] for n in resnet.nodes}
    stem = compiler.partition(resnet, "stem")
    assert {n["name"]: n["where"] for n in stem.nodes} == {
        **where, "conv1": "accel", "maxpool": "accel"}
    assert all(n["where"] == "mcu" for n in compiler.partition(resnet, "mcu").nodes)
    assert all(n["where"] == "accel" for n in compiler.partition(resnet, "whole").nodes)
    assert compiler.partition(resnet, "file") is resnet
    assert {n["name"]: n["where"] for n in resnet.nodes} == where     # not changed in place
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32))
    env = golden.run(resnet, x)
    program = compiler.compile_model(stem, get_config("default"))
    assert program.names[:3] == ["conv1.im2col", "conv1", "maxpool"] and program.image
    assert program.input_name == "input"
    got = compiler.execute(program, x)
    for name in program.names[1:]:
        assert np.array_equal(got[name], env[name]), name
    layers = cycles.network_cycles(program)
    assert [c.name for c in layers[:3]] == program.names[:3]


def test_partition_errors(resnet):
    with pytest.raises(ValueError, match="unknown partition 'all'; valid: file"):
        compiler.partition(resnet, "all")
    with pytest.raises(ValueError, match="this model has none"):
        compiler.partition(compiler.partition(resnet, "mcu"), "stem")


def _fil_report(tmp_path, **changes):
    rep = {"model": RESNET, "config": "default", "images": 2, "correct": 2, "wait": "irq",
           "frame_mean": {"instructions": 1000.4, "cycles": 5000.0, "bus_cycles": 300.0,
                          "wait_cycles": 700.0, "compute_cycles": 4000.0,
                          "accel_cycles": 650.0},
           "stages": {"CONV": {"cycles": 3000.0}, "LOAD": {"cycles": 9.0},
                      "FC": {"cycles": 0.0}}}
    rep.update(changes)
    path = tmp_path / "fil.json"
    path.write_text(json.dumps(rep))
    return path


def test_record_and_report(tmp_path):
    """A firmware-in-the-loop report becomes a partition's record; the system report gives
    its latency and end-to-end frames per second at 10 MHz, the analytic accelerator cycles of
    every partition, and the speed-up over the MCU alone once that is measured."""
    out = tmp_path / "measured" / system.system_name(RESNET, "default")
    system.record(_fil_report(tmp_path), "file", out, command="cmd")
    rec = json.loads(out.read_text())["partitions"]["file"]
    assert rec["frame_cycles"] == 5000 and rec["stages"] == {"CONV": 3000}
    assert rec["command"] == "cmd"
    system.record(_fil_report(tmp_path, frame_mean={
        "instructions": 9, "cycles": 50000.0, "bus_cycles": 0.0, "wait_cycles": 0.0,
        "compute_cycles": 50000.0, "accel_cycles": 0.0}), "mcu", out)
    cfg = get_config("default")
    (tmp_path / "models").mkdir()
    model = tmp_path / RESNET
    model.write_bytes((system.REPO / RESNET).read_bytes())
    rep = system.system_report(model, cfg, root=tmp_path)
    assert rep["source"] == "not measured (no build/measured/" \
        "system_resnet14_fmnist_w4a4_default.json)"
    (tmp_path / "build").mkdir()
    out.parent.rename(tmp_path / "build" / "measured")
    rep = system.system_report(model, cfg, root=tmp_path)
    f = rep["partitions"]["file"]
    assert f["latency_cycles"] == f["throughput_cycles"] == 5000
    assert f["end_to_end_fps_10mhz"] == 2000.0
    assert rep["partitions"]["stem"]["accel_cycles_analytic"] > f["accel_cycles"]
    assert rep["partitions"]["mcu"]["accel_cycles_analytic"] == 0
    assert rep["speedup_over_mcu_alone"] == {"file": 10.0, "mcu": 1.0}
    assert rep["best"] == {"partition": "file", "end_to_end_fps_10mhz": 2000.0}
    assert "2,000.0" in system.format_system(rep)


def test_record_refuses_bad_reports(tmp_path):
    with pytest.raises(ValueError, match="1 of 2 frames were correct"):
        system.record(_fil_report(tmp_path, correct=1), "file", tmp_path / "r.json")
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"model": RESNET}))
    with pytest.raises(ValueError, match="no 'config'"):
        system.record(path, "file", tmp_path / "r.json")
    with pytest.raises(ValueError, match="unknown partition"):
        system.record(_fil_report(tmp_path), "both", tmp_path / "r.json")


def test_stale_record_is_not_used(tmp_path):
    out = tmp_path / "models" / "measured" / system.system_name(DIGITS, "tiny")
    system.record(_fil_report(tmp_path, model=DIGITS, config="tiny"), "file", out)
    data = json.loads(out.read_text())
    data["model_sha256"] = "0" * 64
    out.write_text(json.dumps(data))
    (tmp_path / "models" / "digits_cnn_w4a4.npz").write_bytes(
        (system.REPO / DIGITS).read_bytes())
    rep = system.system_report(tmp_path / DIGITS, get_config("tiny"), root=tmp_path)
    assert "stale" in rep["source"] and not rep["partitions"]["file"]["measured"]
