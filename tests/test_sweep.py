"""Sweeps: the per-point cache, resuming, the CSV, and small sweeps end to end on a
single-worker LocalCluster (workers as threads of the test process)."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from model import data, evaluate, golden, sweep

MODELS = Path(__file__).resolve().parent.parent / "models"
DIGITS = str(MODELS / "digits_cnn_w4a4.npz")


def params(**kw):
    return dict(dict(sweep="adc", model="m.npz", model_hash="0" * 8, dataset="digits",
                     limit=None, adc_bits=3, adc_rows=16), **kw)


def test_cache_round_trip_and_refusals(tmp_path):
    p = params()
    assert sweep.load_cached(tmp_path, p) is None
    path = sweep.store(tmp_path, p, {"golden_acc": 0.5})
    assert path.parent == tmp_path / "points" and path.name.startswith("adc3b-16r-")
    assert sweep.load_cached(tmp_path, p) == {"golden_acc": 0.5}
    # Every parameter is part of the key: another limit is another point.
    assert sweep.load_cached(tmp_path, params(limit=100)) is None
    assert sweep.cache_path(tmp_path, params(limit=100)) != path
    # A file whose recorded parameters differ from its name's (edited, or a hash clash) and a
    # half-written file are not results.
    path.write_text(json.dumps(dict(params=params(adc_rows=32), result={"golden_acc": 1.0})))
    assert sweep.load_cached(tmp_path, p) is None
    path.write_text('{"params": ')
    assert sweep.load_cached(tmp_path, p) is None


def test_bit_pairs():
    assert len(sweep.bit_pairs([2, 3, 4, 8], "full")) == 16
    assert sweep.bit_pairs([2, 4, 8], "diagonal") == [(2, 2), (4, 4), (8, 8)]
    assert sweep.bit_pairs([2, 4, 8], "cross") == [(2, 2), (2, 4), (4, 2), (4, 4), (4, 8),
                                                   (8, 4), (8, 8)]


def test_csv(tmp_path):
    rows = [dict(adc_bits=None, adc_rows=None, golden_acc=0.9, clips=False, test_images=10,
                 seconds=1.0, extra="dropped"),
            dict(adc_bits=2, adc_rows=16, golden_acc=0.25, clips=True, test_images=10,
                 seconds=2.5)]
    path = sweep.write_csv(tmp_path / "x.csv", sweep.COLUMNS["adc"], rows)
    got = list(csv.DictReader(path.open()))
    assert list(got[0]) == list(sweep.COLUMNS["adc"])
    assert got[0]["adc_bits"] == "" and got[0]["golden_acc"] == "0.9"
    assert got[1] == dict(adc_bits="2", adc_rows="16", golden_acc="0.25", clips="True",
                          test_images="10", seconds="2.5")


# Jobs for run_points: module-level so that Dask can ship them; they count their calls in a
# file because they may run in another thread.
def counting_job(params, counter, fail_on=None):
    with open(counter, "a") as f:
        f.write(f"{params['adc_bits']}\n")
    if params["adc_bits"] == fail_on:
        raise RuntimeError("this point was interrupted")
    return dict(golden_acc=params["adc_bits"] / 10, seconds=0.0)


@pytest.fixture(scope="module")
def client():
    c = sweep.make_client(None, workers=1, processes=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def test_done_points_are_not_rerun_and_an_interrupted_sweep_resumes(client, tmp_path):
    counter = tmp_path / "calls"
    jobs = [(params(adc_bits=b), counting_job, (str(counter), 3)) for b in (1, 2, 3)]
    rows, errors = sweep.run_points(client, jobs, tmp_path, progress=False)
    # The failed point is reported, the others are kept.
    assert [r["golden_acc"] for r in rows] == [0.1, 0.2]
    assert len(errors) == 1 and "adc3b-16r" in errors[0] and "interrupted" in errors[0]
    assert sorted(counter.read_text().split()) == ["1", "2", "3"]
    # Resuming runs only the missing point.
    jobs = [(params(adc_bits=b), counting_job, (str(counter), None)) for b in (1, 2, 3)]
    rows, errors = sweep.run_points(client, jobs, tmp_path, progress=False)
    assert errors == [] and [r["golden_acc"] for r in rows] == [0.1, 0.2, 0.3]
    assert sorted(counter.read_text().split()) == ["1", "2", "3", "3"]
    # Done: nothing runs.
    rows, _ = sweep.run_points(client, jobs, tmp_path, progress=False)
    assert len(rows) == 3 and len(counter.read_text().split()) == 4


def test_adc_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "adc"
    argv = ["adc", "--model", DIGITS, "--adc-bits", "1,2,4", "--adc-rows", "8", "--limit",
            "120", "--out", str(out), "--no-progress"]
    assert sweep.main(argv, processes=False) == 0
    rows = list(csv.DictReader((out / "adc.csv").open()))
    assert [(r["adc_bits"], r["adc_rows"], r["clips"]) for r in rows] == [
        ("", "", "False"), ("1", "8", "True"), ("2", "8", "True"), ("4", "8", "False")]
    assert (out / "adc.png").read_bytes()[:4] == b"\x89PNG"
    # The numbers are the golden model's.
    model = golden.load(DIGITS)
    x, y, _ = data.load_dataset("digits", "test", limit=120)
    x = evaluate.fit_images(x, model.input_shape)
    assert float(rows[0]["golden_acc"]) == golden.accuracy(model, x, y)
    assert float(rows[1]["golden_acc"]) == golden.accuracy(
        model, x, y, adc=golden.AdcModel(rows=8, bits=1))
    # 4 bits never clip a count of 8 rows: the exact result.
    assert rows[3]["golden_acc"] == rows[0]["golden_acc"]
    assert len(os.listdir(out / "points")) == 4
    capsys.readouterr()
    assert sweep.main(argv, processes=False) == 0
    assert "4 points: 4 cached, 0 to run" in capsys.readouterr().out


def test_bits_sweep_end_to_end(tmp_path):
    out = tmp_path / "bits"
    argv = ["bits", "--arch", "digits_cnn", "--dataset", "digits", "--bits", "2,4",
            "--grid", "diagonal", "--width", "0.5", "--float-epochs", "1", "--qat-epochs", "1",
            "--limit", "256", "--out", str(out), "--runs", str(tmp_path / "runs"),
            "--no-progress"]
    assert sweep.main(argv, processes=False) == 0
    rows = list(csv.DictReader((out / "bits.csv").open()))
    assert [(r["w_bits"], r["a_bits"]) for r in rows] == [("2", "2"), ("4", "4")]
    for r in rows:
        assert 0 <= float(r["golden_acc"]) <= 1 and r["test_images"] == "360"
        assert np.isclose(float(r["float_to_integer_gap"]),
                          float(r["float_acc"]) - float(r["golden_acc"]))
    # Each point is a model.train run with its model file, held to the same number.
    (point,) = [p for p in (out / "points").iterdir() if p.name.startswith("w4a4-")]
    run = tmp_path / "runs" / point.stem
    m = json.loads((run / "metrics.json").read_text())
    assert m["spec"]["w_bits"] == 4 and m["spec"]["width"] == 0.5
    assert str(m["golden_acc"]) == rows[1]["golden_acc"]
    assert (out / "bits.png").is_file()


def test_sweep_errors_are_clear(tmp_path, capsys):
    assert sweep.main(["adc", "--model", str(tmp_path / "none.npz"), "--out",
                       str(tmp_path)], processes=False) == 2
    assert "none.npz" in capsys.readouterr().err
    assert sweep.main(["adc", "--model", DIGITS, "--adc-rows", "24", "--out", str(tmp_path)],
                      processes=False) == 2
    assert "power of two" in capsys.readouterr().err
    assert sweep.main(["bits", "--bits", "1,4", "--out", str(tmp_path)], processes=False) == 2
    assert "outside 2..8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["bits", "--bits", "4,x"])
