"""The training command end to end, on small data: metrics, export, resume, errors."""

import json

import numpy as np
import pytest
import torch

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


def test_cuda_requested_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert train.main(["--device", "cuda", "--out", str(tmp_path), *FAST]) == 2
    assert "--device cuda" in capsys.readouterr().err
    assert train.resolve_device("auto") == torch.device("cpu")


def test_recipe_sets_defaults_and_explicit_options_win(tmp_path):
    a = train.parse_args(["--out", str(tmp_path), "--recipe", "long"])
    assert (a.float_epochs, a.qat_epochs, a.augment) == (60, 30, "erase")
    assert a.label_smoothing > 0 and a.distill_weight > 0
    a = train.parse_args(["--out", str(tmp_path), "--recipe", "long", "--qat-epochs", "2",
                          "--distill-weight", "0"])
    assert (a.float_epochs, a.qat_epochs, a.distill_weight) == (60, 2, 0.0)
    a = train.parse_args(["--out", str(tmp_path)])
    assert (a.float_epochs, a.label_smoothing, a.distill_weight) == (12, 0.0, 0.0)
    for bad in (["--label-smoothing", "1"], ["--distill-weight", "2"],
                ["--distill-temperature", "0"]):
        with pytest.raises(SystemExit):
            train.parse_args(["--out", str(tmp_path), *bad])


def test_distillation_loss():
    g = torch.Generator().manual_seed(5)
    logits, y = torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    ce = train.training_loss(logits, y, None, 0.0, 0.5, 4.0)
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(logits, y))
    # A student equal to its teacher has no distillation loss: only (1 - w) CE is left.
    same = train.training_loss(logits, y, logits.clone(), 0.0, 0.5, 4.0)
    assert torch.allclose(same, 0.5 * ce)
    other = train.training_loss(logits, y, torch.randn(8, 10, generator=g), 0.0, 0.5, 4.0)
    assert other > same


def test_random_erasing_zeroes_squares_on_about_half_the_images():
    x = torch.full((200, 1, 32, 32), 7, dtype=torch.uint8)
    out = train.augment(x, torch.Generator().manual_seed(1), 0, False, erase=8)
    zeros = (out == 0).flatten(1).sum(1)
    assert 60 < int((zeros > 0).sum()) < 140
    assert int(zeros.max()) == 81  # a 9 x 9 square away from the border
    # Without erasing the draws (and so the results of older runs) are unchanged.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(train.augment(x, g1, 2, True), train.augment(x, g2, 2, True, erase=0))


def test_qat_from_a_shared_float_run_equals_the_whole_run(digits_run, tmp_path):
    # digits_run: 1 float + 1 QAT epoch in one run. The same QAT started from its float
    # phase (the checkpoint of a float-only run) gives the same network.
    float_run, qat_run = tmp_path / "float", tmp_path / "qat"
    args = ["--arch", "digits_cnn", "--dataset", "digits", "--limit", "512", *FAST]
    assert train.main([*args, "--out", str(float_run), "--qat-epochs", "0"]) == 0
    assert train.main([*args, "--out", str(qat_run), "--init-float",
                       str(float_run / "checkpoint.pt")]) == 0
    whole = json.loads((digits_run / "metrics.json").read_text())
    split = json.loads((qat_run / "metrics.json").read_text())
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in split["history"]] == strip
    assert split["golden_acc"] == whole["golden_acc"]
    # A float run of another network, and weights that went through QAT, are refused.
    assert train.main([*args, "--out", str(tmp_path / "x"), "--width", "0.5", "--init-float",
                       str(float_run / "checkpoint.pt")]) == 2
    assert train.main([*args, "--out", str(tmp_path / "y"), "--init-float",
                       str(digits_run / "checkpoint.pt")]) == 2


def test_distillation_resumes_with_its_teacher(tmp_path, monkeypatch):
    def args(out):
        return ["--arch", "digits_cnn", "--dataset", "digits", "--limit", "256", "--out",
                str(out), "--distill-weight", "0.5", "--label-smoothing", "0.1", "--augment",
                "erase", "--no-progress", "--threads", "1", "--float-epochs", "1",
                "--qat-epochs", "2"]

    real_save = train._save

    def interrupted(path, spec, net, state, *rest):
        real_save(path, spec, net, state, *rest)
        if state["phase"] == "qat" and state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.main(args(tmp_path / "a"))
    monkeypatch.undo()
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ck["state"]["phase"] == "qat" and ck["state"]["epoch"] == 1 and "teacher" in ck
    assert train.main([*args(tmp_path / "a"), "--resume"]) == 0
    assert train.main(args(tmp_path / "b")) == 0
    resumed, whole = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["golden_acc"] == whole["golden_acc"]
    assert whole["training"]["distill_weight"] == 0.5 and whole["training"]["augment"] == "erase"
