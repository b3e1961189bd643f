"""Dataset loading from local folders (never from the network).

Every loader returns the raw integer pixels as a ``uint8`` array of shape
``(N, C, H, W)``, the labels as ``int64`` of shape ``(N,)`` and a
:class:`DatasetInfo`. Scaling to floats, padding and augmentation are left to
the caller: the integer golden model and the hardware both start from the raw
pixel codes, so keeping them here avoids a lossy round trip.

Supported sets (see :data:`DATASETS`):

``cifar10``
    The "python version" pickle batches (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``, optional ``batches.meta``), either directly in the folder
    or in its ``cifar-10-batches-py`` subfolder.
``mnist``, ``fashion-mnist``
    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), plain or ``.gz``.
``digits``
    scikit-learn's bundled 8x8 digits (pixel values 0..16), split
    deterministically into 1437 train and 360 test samples.
``synthetic``
    Class-dependent noisy prototypes generated from a seed; needs no files.

Folders searched when ``root`` is None: ``$CIM_DATA_DIR/<name>`` and
``$CIM_DATA_DIR`` when that variable is set; otherwise, for Fashion-MNIST, the
Debian package's ``/usr/share/datasets/fashion-mnist``, then
``~/.cache/cim-data/<name>``.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "dataset_info",
    "default_search_dirs",
    "load_dataset",
    "pad_images",
]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set.

    Members
    -------
    name: canonical data-set name (one of :data:`DATASETS`).
    channels, height, width: image shape ``(C, H, W)``.
    num_classes: number of label values; labels are ``0 .. num_classes - 1``.
    pixel_max: largest raw pixel code (255 for 8-bit images, 16 for sklearn digits).
    classes: human-readable class names, ``len(classes) == num_classes``.
    """

    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    pixel_max: int
    classes: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Image shape ``(C, H, W)``."""
        return (self.channels, self.height, self.width)


class DatasetError(Exception):
    """A data set could not be found, read or validated, or was asked for wrongly."""


DATASETS: tuple[str, ...] = ("cifar10", "mnist", "fashion-mnist", "digits", "synthetic")
SPLITS: tuple[str, ...] = ("train", "test")

#: Where ``apt-get install dataset-fashion-mnist`` puts the IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable naming a data folder; used when ``root`` is None.
DATA_DIR_ENV = "CIM_DATA_DIR"

_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_DIGIT_CLASSES = tuple(str(i) for i in range(10))

_INFOS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 3, 32, 32, 10, 255, _CIFAR10_CLASSES),
    "mnist": DatasetInfo("mnist", 1, 28, 28, 10, 255, _DIGIT_CLASSES),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 28, 10, 255, _FASHION_CLASSES),
    "digits": DatasetInfo("digits", 1, 8, 8, 10, 16, _DIGIT_CLASSES),
    "synthetic": DatasetInfo(
        "synthetic", 1, 32, 32, 10, 255, tuple(f"class{i}" for i in range(10))
    ),
}

# Spellings accepted for the data-set name and looked for as subfolders of a root.
_ALIASES: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10", "cifar-10", "CIFAR10"),
    "mnist": ("mnist", "MNIST"),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "fashionmnist", "FashionMNIST"),
    "digits": ("digits",),
    "synthetic": ("synthetic",),
}

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_CIFAR_SUBDIR = "cifar-10-batches-py"
_CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

_DIGITS_SPLIT_SEED = 0  # fixed so the split never depends on the caller's seed
_DIGITS_TEST_FRACTION = 0.2


# --------------------------------------------------------------------------- names


def _canonical_name(name: str) -> str:
    if isinstance(name, str):
        key = name.strip()
        for canonical, aliases in _ALIASES.items():
            if key.lower() in {a.lower() for a in aliases}:
                return canonical
    raise DatasetError(
        f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}"
    )


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    return split


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of data set ``name`` (raises :class:`DatasetError`).

    For ``synthetic`` this describes the default shape; :func:`load_dataset`
    returns the info for the shape actually generated.
    """
    return _INFOS[_canonical_name(name)]


# --------------------------------------------------------------------------- folders


def default_search_dirs(name: str) -> list[Path]:
    """Base folders searched for data set ``name`` when no root is given."""
    name = _canonical_name(name)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        base = Path(env).expanduser()
        return [base / name, base]
    dirs = []
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST_DIR)
    dirs.append(Path("~/.cache/cim-data").expanduser() / name)
    return dirs


def _candidate_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    """Every folder that may hold the files of ``name``, most specific spellings last."""
    bases = default_search_dirs(name) if root is None else [Path(root).expanduser()]
    out: list[Path] = []
    for base in bases:
        if name == "cifar10":
            subs = [base, base / _CIFAR_SUBDIR]
            for alias in _ALIASES[name]:
                subs += [base / alias, base / alias / _CIFAR_SUBDIR]
        else:
            subs = [base]
            for alias in _ALIASES[name]:
                subs += [base / alias, base / alias / "raw"]
        for d in subs:
            if d not in out:
                out.append(d)
    return out


def _how_to_get(name: str) -> str:
    pass_it = f"and pass --data-dir DIR (root=DIR) or set {DATA_DIR_ENV}=DIR"
    if name == "fashion-mnist":
        return (
            "install it with `apt-get install dataset-fashion-mnist` (files land in "
            f"{DEBIAN_FASHION_MNIST_DIR}), or put the four Fashion-MNIST IDX files "
            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte; plain or .gz) in a folder {pass_it}"
        )
    if name == "mnist":
        return (
            "put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; plain or .gz) in a folder "
            f"{pass_it}"
        )
    return (
        "extract the CIFAR-10 python version archive (cifar-10-python.tar.gz, giving "
        f"{_CIFAR_SUBDIR}/data_batch_1..5 and test_batch) into a folder {pass_it}"
    )


def _not_found(name: str, split: str, dirs: Sequence[Path], wanted: str) -> DatasetError:
    looked = "\n".join(f"  {d}{'' if d.is_dir() else ' (no such folder)'}" for d in dirs)
    return DatasetError(
        f"{name} {split} split not found: no folder holds {wanted}. Looked in:\n{looked}\n"
        f"To get it: {_how_to_get(name)}."
    )


# --------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a cut-off .gz raises EOFError.
        raise DatasetError(f"{path}: cannot read file: {exc}") from exc


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes and return its array.

    The header is a 4-byte big-endian magic number (two zero bytes, the type
    code 0x08 for unsigned bytes, the number of dimensions) followed by one
    big-endian uint32 per dimension. ``magic`` is the expected magic number;
    the data length must match the dimensions exactly.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        kind = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
        raise DatasetError(
            f"{path}: wrong IDX magic number 0x{got:08x}, expected 0x{magic:08x} "
            f"(unsigned-byte {kind}); is this the right file?"
        )
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetError(
            f"{path}: truncated IDX header ({len(raw)} bytes, need {header_len})"
        )
    dims = tuple(
        int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = math.prod(dims)
    have = len(raw) - header_len
    if have < expected:
        raise DatasetError(
            f"{path}: truncated IDX data: header says shape {dims} = {expected} bytes, "
            f"file holds {have}"
        )
    if have > expected:
        raise DatasetError(
            f"{path}: {have - expected} unexpected trailing bytes after IDX data of shape {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    variants = (stem, stem.replace("-idx", ".idx"))  # some mirrors use a dot
    for v in variants:
        for fname in (v, v + ".gz"):
            p = folder / fname
            if p.is_file():
                return p
    return None


def _load_idx_set(
    name: str, split: str, root: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    img_stem, lbl_stem = _IDX_STEMS[split]
    dirs = _candidate_dirs(name, root)
    for d in dirs:
        img_path = _find_idx(d, img_stem)
        if img_path is None:
            continue
        lbl_path = _find_idx(d, lbl_stem)
        if lbl_path is None:
            raise DatasetError(
                f"{img_path} found but its labels file {lbl_stem}[.gz] is missing from {d}"
            )
        images = read_idx(img_path, _IDX_IMAGES_MAGIC)
        labels = read_idx(lbl_path, _IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"image/label count mismatch: {img_path} holds {images.shape[0]} images "
                f"but {lbl_path} holds {labels.shape[0]} labels"
            )
        info = _INFOS[name]
        if labels.size and int(labels.max()) >= info.num_classes:
            raise DatasetError(
                f"{lbl_path}: label {int(labels.max())} out of range 0..{info.num_classes - 1}"
            )
        n, h, w = images.shape
        if (h, w) != (info.height, info.width):
            info = dataclasses.replace(info, height=h, width=w)
        return images.reshape(n, 1, h, w), labels.astype(np.int64), info
    raise _not_found(name, split, dirs, f"{img_stem}[.gz] and {lbl_stem}[.gz]")


# --------------------------------------------------------------------------- CIFAR-10


def _get(d: dict, key: str) -> object:
    """Look up a key stored as bytes (``encoding="bytes"``) or, failing that, as str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # pickle can run code: only point this at CIFAR-10 archives you trust.
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # any unpickling failure is a bad file
        raise DatasetError(f"{path}: not a readable CIFAR-10 pickle batch: {exc}") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict batch, found {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if data is None or labels is None:
        raise DatasetError(f"{path}: batch lacks the b'data' or b'labels' entry")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' must be a uint8 array, found {kind}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: b'data' must have shape (N, 3072), found {data.shape}")
    try:
        lab = np.asarray(labels)
    except Exception as exc:
        raise DatasetError(f"{path}: b'labels' is not a list of integers: {exc}") from exc
    if lab.ndim != 1 or (lab.size and lab.dtype.kind not in "iu"):
        raise DatasetError(f"{path}: b'labels' must be a list of integers")
    if lab.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{path}: {data.shape[0]} images but {lab.shape[0]} labels"
        )
    if lab.size and (lab.min() < 0 or lab.max() > 9):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {lab.min()}..{lab.max()}")
    # Each row is 1024 red, then 1024 green, then 1024 blue bytes, row-major: (C, H, W).
    return data.reshape(-1, 3, 32, 32), lab.astype(np.int64)


def _cifar_classes(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return _CIFAR10_CLASSES
    try:
        with open(meta, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        names = _get(d, "label_names")
        out = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception as exc:
        raise DatasetError(f"{meta}: not a readable CIFAR-10 meta file: {exc}") from exc
    if len(out) != 10:
        raise DatasetError(f"{meta}: expected 10 label names, found {len(out)}")
    return out


def _load_cifar10(
    split: str, root: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    files = _CIFAR_BATCHES[split]
    dirs = _candidate_dirs("cifar10", root)
    for d in dirs:
        present = [f for f in files if (d / f).is_file()]
        if not present:
            continue
        missing = [f for f in files if f not in present]
        if missing:
            raise DatasetError(f"{d}: incomplete CIFAR-10, missing {', '.join(missing)}")
        parts = [_read_cifar_batch(d / f) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        info = dataclasses.replace(_INFOS["cifar10"], classes=_cifar_classes(d))
        return images, labels, info
    raise _not_found("cifar10", split, dirs, ", ".join(files))


# --------------------------------------------------------------------------- digits


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("the digits data set needs scikit-learn (pip install scikit-learn)") \
            from exc
    bunch = load_digits()
    images = np.asarray(bunch.images).astype(np.uint8)  # values are already 0..16
    labels = np.asarray(bunch.target).astype(np.int64)
    n = len(labels)
    # Stratified-ish split: shuffle, then order each class's samples by their rank
    # within the class as a fraction of the class size, which interleaves the
    # classes evenly; the last 20 % (ceil: 360 of 1797) is the test split.
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    perm = rng.permutation(n)
    key = np.empty(n)
    for c in np.unique(labels):
        idx = perm[labels[perm] == c]
        key[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    order = perm[np.argsort(key[perm], kind="stable")]
    n_test = math.ceil(n * _DIGITS_TEST_FRACTION)
    sel = order[: n - n_test] if split == "train" else order[n - n_test:]
    return images[sel][:, None, :, :], labels[sel], _INFOS["digits"]


# --------------------------------------------------------------------------- synthetic


def _load_synthetic(
    split: str, size: int, seed: int, shape: Sequence[int], num_classes: int
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    try:
        c, h, w = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"synthetic_shape must be (C, H, W), not {shape!r}") from exc
    if min(c, h, w) < 1:
        raise DatasetError(f"synthetic_shape must be positive, not {(c, h, w)}")
    if num_classes < 2:
        raise DatasetError(f"synthetic_classes must be at least 2, not {num_classes}")
    if size < 1:
        raise DatasetError(f"synthetic_size must be positive, not {size}")
    # Prototypes depend on the seed only, so train and test share the distribution;
    # the samples come from a per-split stream so they differ.
    proto_rng = np.random.default_rng([seed, 0])
    cell = 4  # blocky prototypes give a conv net spatial structure to pick up
    lo = proto_rng.uniform(32, 224, size=(num_classes, c, -(-h // cell), -(-w // cell)))
    protos = lo.repeat(cell, axis=2).repeat(cell, axis=3)[:, :, :h, :w]
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    labels = rng.permutation(np.arange(size) % num_classes).astype(np.int64)
    gain = rng.uniform(0.8, 1.2, size=(size, 1, 1, 1))
    noise = rng.normal(0.0, 40.0, size=(size, c, h, w))
    images = np.clip(np.rint(protos[labels] * gain + noise), 0, 255).astype(np.uint8)
    info = DatasetInfo(
        "synthetic", c, h, w, num_classes, 255, tuple(f"class{i}" for i in range(num_classes))
    )
    return images, labels, info


# --------------------------------------------------------------------------- API


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    synthetic_size: int = 2048,
    seed: int = 0,
    synthetic_shape: Sequence[int] = (1, 32, 32),
    synthetic_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Load one split of a data set from local files.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: folder holding the files (also searched: its ``<name>``,
            ``<name>/raw`` and, for CIFAR-10, ``cifar-10-batches-py`` subfolders).
            None searches :func:`default_search_dirs`. Ignored by ``digits`` and
            ``synthetic``.
        limit: keep only the first ``limit`` samples.
        synthetic_size: number of samples of the ``synthetic`` set.
        seed: seed of the ``synthetic`` set (other sets are fixed).
        synthetic_shape: ``(C, H, W)`` of the ``synthetic`` images.
        synthetic_classes: number of ``synthetic`` classes.

    Returns:
        ``(images, labels, info)``: images ``uint8`` ``(N, C, H, W)`` of raw
        pixel codes ``0 .. info.pixel_max``, labels ``int64`` ``(N,)``.

    Raises:
        DatasetError: unknown name or split, missing or malformed files, bad limit.
    """
    name = _canonical_name(name)
    _check_split(split)
    if limit is not None and limit <= 0:
        raise DatasetError(f"limit must be a positive number of samples, not {limit}")
    if name == "cifar10":
        images, labels, info = _load_cifar10(split, root)
    elif name in ("mnist", "fashion-mnist"):
        images, labels, info = _load_idx_set(name, split, root)
    elif name == "digits":
        images, labels, info = _load_digits(split)
    else:
        images, labels, info = _load_synthetic(
            split, synthetic_size, seed, synthetic_shape, synthetic_classes
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    # Own, writable, contiguous arrays (IDX arrays are views of immutable bytes).
    return np.ascontiguousarray(images).copy(), labels.copy(), info


def pad_images(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``(N, C, H, W)`` images centrally to ``size x size`` (e.g. 28 -> 32).

    When ``size - H`` (or ``size - W``) is odd, the extra row (column) goes at the
    bottom (right). The dtype is kept. Raises :class:`DatasetError` if ``x`` is not
    4-D or ``size`` is smaller than ``H`` or ``W``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise DatasetError(f"pad_images expects (N, C, H, W) images, got shape {x.shape}")
    h, w = x.shape[2:]
    if size < h or size < w:
        raise DatasetError(f"cannot pad {h}x{w} images to the smaller size {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    pad = ((0, 0), (0, 0), (top, size - h - top), (left, size - w - left))
    return np.pad(x, pad, mode="constant", constant_values=0)
