"""Tests for model/data.py: IDX and CIFAR-10 parsing, folder search, digits, synthetic."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from model.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST_DIR,
    DatasetError,
    dataset_info,
    load_dataset,
    pad_images,
)

SEED = 1234


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on the developer's CIM_DATA_DIR."""
    monkeypatch.delenv("CIM_DATA_DIR", raising=False)


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray,
                    gz: bool = False) -> tuple[Path, Path]:
    prefix = "train" if split == "train" else "t10k"
    ip = write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
    lp = write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)
    return ip, lp


def random_idx(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.uint8))


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path: Path, gz: bool, name: str) -> None:
    imgs, labs = random_idx(7)
    write_idx_split(tmp_path, "test", imgs, labs, gz)
    x, y, info = load_dataset(name, "test", tmp_path)
    assert x.dtype == np.uint8 and x.shape == (7, 1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (7,)
    np.testing.assert_array_equal(x[:, 0], imgs)
    np.testing.assert_array_equal(y, labs)
    assert info.name == name and info.shape == (1, 28, 28) and info.pixel_max == 255
    assert x.flags.writeable and x.flags.c_contiguous
    # the train split is absent in that folder
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset(name, "train", tmp_path)


@pytest.mark.parametrize("sub", ["mnist", "mnist/raw"])
def test_idx_found_in_subfolders(tmp_path: Path, sub: str) -> None:
    imgs, labs = random_idx(3)
    write_idx_split(tmp_path / sub, "train", imgs, labs, gz=True)
    x, y, _ = load_dataset("mnist", "train", tmp_path, limit=2)
    np.testing.assert_array_equal(x[:, 0], imgs[:2])
    np.testing.assert_array_equal(y, labs[:2])


def test_idx_truncated(tmp_path: Path) -> None:
    imgs, labs = random_idx(4)
    ip, _ = write_idx_split(tmp_path, "test", imgs, labs)
    ip.write_bytes(ip.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="truncated") as exc:
        load_dataset("mnist", "test", tmp_path)
    assert str(ip) in str(exc.value)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    imgs, labs = random_idx(4)
    _, lp = write_idx_split(tmp_path, "test", imgs, labs, gz=True)
    lp.write_bytes(lp.read_bytes()[:-12])  # cut inside the gzip stream
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", "test", tmp_path)
    assert str(lp) in str(exc.value)


def test_idx_trailing_bytes(tmp_path: Path) -> None:
    imgs, labs = random_idx(4)
    _, lp = write_idx_split(tmp_path, "test", imgs, labs)
    lp.write_bytes(lp.read_bytes() + b"\0\0")
    with pytest.raises(DatasetError, match="trailing") as exc:
        load_dataset("mnist", "test", tmp_path)
    assert str(lp) in str(exc.value)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    _, labs = random_idx(4)
    # a labels file where the images belong (magic 0x801 instead of 0x803)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(labs))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labs))
    with pytest.raises(DatasetError, match="magic") as exc:
        load_dataset("fashion-mnist", "test", tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in msg
    assert "0x00000801" in msg and "0x00000803" in msg


def test_idx_count_mismatch(tmp_path: Path) -> None:
    imgs, labs = random_idx(5)
    ip, lp = write_idx_split(tmp_path, "train", imgs, labs[:4])
    with pytest.raises(DatasetError, match="mismatch") as exc:
        load_dataset("mnist", "train", tmp_path)
    msg = str(exc.value)
    assert str(ip) in msg and str(lp) in msg and "5" in msg and "4" in msg


def test_idx_missing_labels_file(tmp_path: Path) -> None:
    imgs, _ = random_idx(2)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(imgs))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", "test", tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    imgs, labs = random_idx(3)
    labs[1] = 10
    _, lp = write_idx_split(tmp_path, "test", imgs, labs)
    with pytest.raises(DatasetError, match="out of range") as exc:
        load_dataset("mnist", "test", tmp_path)
    assert str(lp) in str(exc.value)


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("inner", [True, False])
def test_cifar10_layout(tmp_path: Path, inner: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py" if inner else tmp_path
    n = 3
    for i in range(1, 6):
        data = np.zeros((n, 3072), dtype=np.uint8)
        data[:, 0] = i  # red channel, row 0, col 0: tags the batch
        write_cifar_batch(folder / f"data_batch_{i}", data, [i % 10] * n)
    test = np.zeros((2, 3072), dtype=np.uint8)
    # sample 1, green channel (1), row 5, col 7 -> index 1*1024 + 5*32 + 7
    test[1, 1024 + 5 * 32 + 7] = 200
    test[0, 2 * 1024 + 31 * 32 + 31] = 99  # sample 0, blue, bottom-right
    write_cifar_batch(folder / "test_batch", test, [3, 8])

    x, y, info = load_dataset("cifar10", "test", tmp_path)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.uint8
    assert x[1, 1, 5, 7] == 200 and x[0, 2, 31, 31] == 99
    assert int(x.sum()) == 299
    np.testing.assert_array_equal(y, [3, 8])
    assert y.dtype == np.int64
    assert info.classes[0] == "airplane" and info.classes[9] == "truck"

    x, y, _ = load_dataset("cifar10", "train", tmp_path)
    assert x.shape == (15, 3, 32, 32)
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.repeat(np.arange(1, 6), n))
    np.testing.assert_array_equal(y, np.repeat(np.arange(1, 6), n))


def test_cifar10_meta_names(tmp_path: Path) -> None:
    write_cifar_batch(tmp_path / "test_batch", np.zeros((1, 3072), np.uint8), [0])
    names = [f"c{i}".encode() for i in range(10)]
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    _, _, info = load_dataset("cifar10", "test", tmp_path)
    assert info.classes == tuple(f"c{i}" for i in range(10))


@pytest.mark.parametrize(
    "data, labels, needle",
    [
        (np.zeros((2, 3000), np.uint8), [0, 1], "3072"),
        (np.zeros((2, 3072), np.float32), [0, 1], "uint8"),
        (np.zeros((2, 3072), np.uint8), [0], "labels"),
        (np.zeros((2, 3072), np.uint8), [0, 10], "0..9"),
    ],
)
def test_cifar10_malformed(tmp_path: Path, data: np.ndarray, labels: list[int],
                           needle: str) -> None:
    path = tmp_path / "test_batch"
    write_cifar_batch(path, data, labels)
    with pytest.raises(DatasetError, match=needle) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert str(path) in str(exc.value)


def test_cifar10_not_a_pickle(tmp_path: Path) -> None:
    (tmp_path / "test_batch").write_bytes(b"definitely not a pickle")
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar10_incomplete_train(tmp_path: Path) -> None:
    write_cifar_batch(tmp_path / "data_batch_1", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(DatasetError, match="data_batch_5"):
        load_dataset("cifar10", "train", tmp_path)


# --------------------------------------------------------------------------- folders, names


@pytest.mark.parametrize("name, hint", [
    ("mnist", "IDX"), ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
    ("cifar10", "python version"),
])
def test_missing_folder(tmp_path: Path, name: str, hint: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as exc:
        load_dataset(name, "train", missing)
    msg = str(exc.value)
    assert str(missing) in msg and "no such folder" in msg
    assert hint in msg and "CIM_DATA_DIR" in msg


def test_env_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs, labs = random_idx(2)
    write_idx_split(tmp_path / "mnist", "test", imgs, labs)
    monkeypatch.setenv("CIM_DATA_DIR", str(tmp_path))
    x, y, _ = load_dataset("mnist", "test")
    np.testing.assert_array_equal(x[:, 0], imgs)
    np.testing.assert_array_equal(y, labs)
    # the search (and the error) is confined to CIM_DATA_DIR when it is set
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test")
    assert str(tmp_path / "cifar10") in str(exc.value)


def test_unknown_name_and_split() -> None:
    with pytest.raises(DatasetError, match="imagenet") as exc:
        load_dataset("imagenet", "train")
    for n in DATASETS:
        assert n in str(exc.value)
    with pytest.raises(DatasetError, match="'val'.*train, test"):
        load_dataset("digits", "val")
    with pytest.raises(DatasetError):
        dataset_info("svhn")
    assert dataset_info("Fashion-MNIST").name == "fashion-mnist"


def test_bad_limit() -> None:
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("digits", "train", limit=0)
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("synthetic", "train", limit=-3)


def test_dataset_info() -> None:
    fm = dataset_info("fashion-mnist")
    assert fm.classes[0] == "T-shirt/top" and fm.classes[9] == "Ankle boot"
    assert dataset_info("cifar10").shape == (3, 32, 32)
    assert dataset_info("digits").pixel_max == 16
    for n in DATASETS:
        info = dataset_info(n)
        assert info.name == n and len(info.classes) == info.num_classes


# --------------------------------------------------------------------------- digits


def _rows(x: np.ndarray, y: np.ndarray) -> set[tuple[int, ...]]:
    return {(*r.tobytes(), int(t)) for r, t in zip(x.reshape(len(x), -1), y, strict=True)}


def test_digits_split() -> None:
    xtr, ytr, info = load_dataset("digits", "train")
    xte, yte, _ = load_dataset("digits", "test", seed=99)  # seed must not matter
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert info.pixel_max == 16 and xtr.max() == 16 and xtr.min() == 0
    assert xte.max() <= 16
    # disjoint and together the full set: compare as multisets of (image, label) rows
    from sklearn.datasets import load_digits

    full = load_digits()
    tr, te = _rows(xtr, ytr), _rows(xte, yte)
    everything = _rows(full.images.astype(np.uint8), full.target)
    assert tr | te == everything
    assert not tr & te
    # stratified-ish: every class gets 34..38 test samples
    counts = np.bincount(yte, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    # deterministic
    xte2, yte2, _ = load_dataset("digits", "test")
    np.testing.assert_array_equal(xte, xte2)
    np.testing.assert_array_equal(yte, yte2)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_determinism() -> None:
    a, ya, info = load_dataset("synthetic", "train", synthetic_size=200, seed=3)
    b, yb, _ = load_dataset("synthetic", "train", synthetic_size=200, seed=3)
    c, _, _ = load_dataset("synthetic", "test", synthetic_size=200, seed=3)
    d, _, _ = load_dataset("synthetic", "train", synthetic_size=200, seed=4)
    assert a.shape == (200, 1, 32, 32) and a.dtype == np.uint8 and ya.dtype == np.int64
    assert info.shape == (1, 32, 32) and info.num_classes == 10
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert set(ya.tolist()) == set(range(10))


def test_synthetic_shape_and_limit() -> None:
    x, y, info = load_dataset("synthetic", "test", synthetic_size=50, limit=20,
                              synthetic_shape=(3, 16, 12), synthetic_classes=4)
    assert x.shape == (20, 3, 16, 12) and y.shape == (20,)
    assert info.shape == (3, 16, 12) and info.num_classes == 4 and len(info.classes) == 4
    assert y.max() < 4
    with pytest.raises(DatasetError):
        load_dataset("synthetic", "train", synthetic_shape=(1, 0, 8))


def test_synthetic_learnable() -> None:
    """Class means from the train split classify the test split by nearest mean."""
    xtr, ytr, _ = load_dataset("synthetic", "train", synthetic_size=500, seed=7)
    xte, yte, _ = load_dataset("synthetic", "test", synthetic_size=300, seed=7)
    means = np.stack([xtr[ytr == k].reshape(-1, 32 * 32).mean(0) for k in range(10)])
    flat = xte.reshape(len(xte), -1).astype(np.float64)
    dist = ((flat[:, None, :] - means[None]) ** 2).sum(-1)
    acc = (dist.argmin(1) == yte).mean()
    assert acc > 0.9, acc
    # the label actually matters: shuffled labels make it chance level
    rng = np.random.default_rng(SEED)
    assert (dist.argmin(1) == rng.permutation(yte)).mean() < 0.3


# --------------------------------------------------------------------------- padding


def test_pad_images() -> None:
    x = np.arange(2 * 1 * 28 * 28, dtype=np.uint8).reshape(2, 1, 28, 28) | 1
    p = pad_images(x, 32)
    assert p.shape == (2, 1, 32, 32) and p.dtype == np.uint8
    np.testing.assert_array_equal(p[:, :, 2:30, 2:30], x)
    assert p.sum(dtype=np.int64) == x.sum(dtype=np.int64)
    # odd difference: the extra row/column goes at the bottom/right
    q = pad_images(np.ones((1, 3, 5, 6), np.uint8), 8)
    assert q.shape == (1, 3, 8, 8)
    rows, cols = np.nonzero(q[0, 0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 5, 1, 6)
    np.testing.assert_array_equal(pad_images(x, 28), x)
    with pytest.raises(DatasetError, match="smaller"):
        pad_images(x, 27)
    with pytest.raises(DatasetError):
        pad_images(x[0], 32)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST_DIR.is_dir(),
                    reason=f"{DEBIAN_FASHION_MNIST_DIR} absent "
                           "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist() -> None:
    xte, yte, info = load_dataset("fashion-mnist", "test")  # default search path
    assert xte.shape == (10000, 1, 28, 28) and xte.dtype == np.uint8
    assert info.classes[0] == "T-shirt/top"
    np.testing.assert_array_equal(np.bincount(yte), [1000] * 10)
    assert xte.max() == 255 and xte.min() == 0
    xtr, ytr, _ = load_dataset("fashion-mnist", "train", DEBIAN_FASHION_MNIST_DIR)
    assert xtr.shape == (60000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(ytr), [6000] * 10)
    assert ytr.min() == 0 and ytr.max() == 9
