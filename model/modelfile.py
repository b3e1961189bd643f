"""The integer model file on disk: writing it, reading it back, and its content hash.

:mod:`model.export` documents the format and ``contract/README.md`` (section 1) states it
for a re-implementation; :func:`model.golden.load` reads a file with :func:`read`, refuses it
unless :func:`check_content` finds the stored content hash, and validates the rest.

The content hash (``content_sha256`` in the manifest, since version 2) is the SHA-256 of the
manifest without that field, as canonical JSON, followed by every array member in ascending
order of name, each as a line of JSON ``[name, dtype, shape]`` and its bytes; see
:func:`content_sha256`. The zip's own CRCs catch a damaged archive; the hash catches a
readable file whose contents were changed after export (arrays swapped, a dtype cast, an
edited manifest), which would otherwise load and compute something else.

``python -m model.modelfile PATH...`` reports each file's version and hash; ``--upgrade``
adds the hash to version-1 files (arrays untouched), for files one trusts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT = "cim-int-model"
VERSION = 2
"""Version 1: no content hash; version 2: ``content_sha256``, otherwise the same."""
HASH_FIELD = "content_sha256"


class ModelFormatError(ValueError):
    """The model file is malformed, corrupt, or inconsistent with itself."""


def canonical_json(manifest: dict) -> bytes:
    """The manifest without :data:`HASH_FIELD` as the hash reads it: keys sorted, no spaces,
    ASCII (``json.dumps(m, sort_keys=True, separators=(",", ":"))``)."""
    rest = {k: v for k, v in manifest.items() if k != HASH_FIELD}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


def content_sha256(manifest: dict, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a model's contents: :func:`canonical_json` of the manifest and a
    newline, then for each array in ascending order of name the line
    ``json.dumps([name, dtype.str, list(shape)])`` (``dtype.str`` as ``"|i1"``, ``"<i8"``)
    and the array's bytes in C order. Name, dtype and shape fix each array's byte count, so
    the framing is unambiguous."""
    h = hashlib.sha256(canonical_json(manifest) + b"\n")
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode() + b"\n")
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


def save(path: str | Path, manifest: dict, arrays: dict) -> Path:
    """Write a model file with its content hash (any stale ``content_sha256`` in ``manifest``
    is replaced). The hash is taken over the manifest as it reads back from JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(json.dumps(manifest))
    manifest.pop(HASH_FIELD, None)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    manifest[HASH_FIELD] = content_sha256(manifest, arrays)
    blob = np.frombuffer(json.dumps(manifest, indent=1).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez_compressed(f, manifest=blob, **arrays)
    return path


# What a damaged archive makes zipfile, zlib and NumPy's .npy reader raise.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError,
                   NotImplementedError, RuntimeError, MemoryError, OverflowError)


def read(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(manifest, arrays)`` of a model file, checked only to be a readable archive with a
    JSON object for a manifest; :class:`ModelFormatError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file (train one with "
                               "`python -m model.train` or use one under models/)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"{path}: a single .npy array, not a model archive")
        with z:
            arrays = {k: z[k] for k in z.files}
    except _ARCHIVE_ERRORS as e:
        if isinstance(e, ModelFormatError):
            raise
        raise ModelFormatError(f"{path}: not a readable model archive "
                               f"({type(e).__name__}: {e})") from e
    if "manifest" not in arrays:
        raise ModelFormatError(f"{path}: no manifest in the archive")
    blob = arrays.pop("manifest")
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise ModelFormatError(f"{path}: the manifest member must be a 1-D uint8 array, not "
                               f"{blob.dtype} of shape {blob.shape}")
    try:
        manifest = json.loads(blob.tobytes().decode())
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError, JSONDecodeError
        raise ModelFormatError(f"{path}: manifest is not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{path}: the manifest must be a JSON object, not "
                               f"{type(manifest).__name__}")
    return manifest, arrays


def check_content(path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    """Refuse a version-2 file whose stored content hash is missing or differs from its
    contents (call after checking ``format`` and ``version``)."""
    stored = manifest.get(HASH_FIELD)
    if not (isinstance(stored, str) and len(stored) == 64
            and all(c in "0123456789abcdef" for c in stored)):
        raise ModelFormatError(f"{path}: no valid {HASH_FIELD!r} in the manifest (64 lowercase "
                               f"hex digits, not {stored!r}); re-export the model")
    try:
        actual = content_sha256(manifest, arrays)
    except (ValueError, RecursionError) as e:
        raise ModelFormatError(f"{path}: the manifest cannot be hashed ({e})") from e
    if actual != stored:
        raise ModelFormatError(
            f"{path}: the file was changed after it was exported: its contents hash to "
            f"{actual[:16]}..., the manifest records {stored[:16]}... Do not edit model files; "
            "re-export the model from its trained network (model.export, or "
            "`python -m model.train ... --resume`)")


def upgrade(path: str | Path) -> bool:
    """Rewrite a version-1 file as version 2: the same arrays (bytes, dtypes, names) and
    manifest, plus the version and the content hash; validated before it is written. False
    when the file is already current (its hash checked). Only for files one trusts: the
    hash records whatever the file holds now."""
    from . import golden  # here: golden imports this module

    path = Path(path)
    manifest, arrays = read(path)
    model = golden.IntModel(manifest, arrays, str(path))
    if manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a {FORMAT} file")
    if manifest.get("version") == VERSION:
        check_content(path, manifest, arrays)
        golden.validate(model)
        return False
    if manifest.get("version") != 1:
        raise ModelFormatError(f"{path}: version {manifest.get('version')!r} cannot be "
                               "upgraded (only 1)")
    manifest["version"] = VERSION
    golden.validate(model)
    tmp = path.with_name(path.name + ".tmp")
    save(tmp, manifest, arrays)
    os.replace(tmp, path)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.modelfile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--upgrade", action="store_true",
                   help="add the content hash to version-1 files (only files you trust)")
    args = p.parse_args(argv)
    bad = 0
    for path in args.paths:
        try:
            if args.upgrade:
                done = upgrade(path)
                print(f"{path}: {'upgraded to' if done else 'already'} version {VERSION}")
            manifest, arrays = read(path)
            version = manifest.get("version")
            if version == VERSION:
                check_content(path, manifest, arrays)
            print(f"{path}: version {version}, {HASH_FIELD} {manifest.get(HASH_FIELD)}, "
                  f"file sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        except ModelFormatError as e:
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
