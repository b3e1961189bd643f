"""The training command end to end, on small data: metrics, export, resume, errors."""

import json

import numpy as np
import pytest

from model import data, evaluate, golden, train

FAST = ["--float-epochs", "1", "--qat-epochs", "1", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    rc = train.main(["--arch", "digits_cnn", "--dataset", "digits", "--out", str(out),
                     "--limit", "512", *FAST])
    assert rc == 0
    return out


def test_training_writes_metrics_checkpoint_and_model(digits_run):
    m = json.loads((digits_run / "metrics.json").read_text())
    for k in ("float_acc", "fakequant_acc", "torch_integer_acc", "golden_acc"):
        assert 0.0 <= m[k] <= 1.0, k
    assert [h["phase"] for h in m["history"]] == ["float", "qat"]
    assert m["test_images"] == 360
    # The golden model on the exported file and PyTorch's integer mode agree exactly, so
    # their accuracies are the same number.
    assert m["golden_acc"] == m["torch_integer_acc"]
    model = golden.load(digits_run / "model.npz")
    x, y, _ = data.load_dataset("digits", "test")
    assert golden.accuracy(model, x, y) == m["golden_acc"]
    assert model.manifest["meta"]["dataset"] == "digits"
    assert (digits_run / "checkpoint.pt").is_file()


def test_resume_of_a_finished_run_does_not_retrain(digits_run):
    before = json.loads((digits_run / "metrics.json").read_text())
    rc = train.main(["--arch", "digits_cnn", "--dataset", "digits", "--out", str(digits_run),
                     "--limit", "512", "--resume", *FAST])
    assert rc == 0
    after = json.loads((digits_run / "metrics.json").read_text())
    assert after["history"] == before["history"]
    assert after["golden_acc"] == before["golden_acc"]


def test_resume_with_another_network_is_refused(digits_run, capsys):
    rc = train.main(["--arch", "digits_cnn", "--dataset", "digits", "--out", str(digits_run),
                     "--w-bits", "2", "--resume", *FAST])
    assert rc == 2
    assert "different network spec" in capsys.readouterr().err


def test_resnet14_on_synthetic_data(tmp_path):
    rc = train.main(["--arch", "resnet14", "--dataset", "synthetic", "--width", "0.0625",
                     "--blocks", "1,1,1", "--limit", "128", "--test-limit", "64",
                     "--batch-size", "32", "--out", str(tmp_path), *FAST])
    assert rc == 0
    model = golden.load(tmp_path / "model.npz")
    assert model.input_shape == (1, 32, 32)
    assert [n["name"] for n in model.nodes if n["where"] == "accel"][0] == "layer1_0_conv1"


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    rc = train.main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"),
                     "--out", str(tmp_path / "run"), *FAST])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "cifar" in err.lower()


def test_bad_arguments_exit_cleanly(tmp_path):
    for bad in (["--w-bits", "9"], ["--blocks", "2,x"], ["--arch", "vgg"]):
        with pytest.raises(SystemExit) as e:
            train.main(["--out", str(tmp_path), *bad, *FAST])
        assert e.value.code != 0


def test_evaluate_cli(digits_run, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = evaluate.main(["--model", str(digits_run / "model.npz"), "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "block_conv2" in text and "golden integer top-1" in text
    (r,) = json.loads(out.read_text())
    m = json.loads((digits_run / "metrics.json").read_text())
    assert r["golden_acc"] == m["golden_acc"] and r["test_images"] == 360


def test_evaluate_cli_rejects_bad_model(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    assert evaluate.main(["--model", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err


def test_evaluate_cli_adc_option(digits_run, capsys):
    model = str(digits_run / "model.npz")
    assert evaluate.main(["--model", model, "--adc-bits", "1", "--adc-rows", "16"]) == 0
    out = capsys.readouterr().out
    assert "1-bit ADC per 16 rows" in out
    with pytest.raises(SystemExit):
        evaluate.main(["--model", model, "--adc-bits", "3", "--adc-rows", "24"])
    assert "power of two" in capsys.readouterr().err
