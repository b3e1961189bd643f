"""The file half of the fuzzing harness (:mod:`tests.fuzz_files`), a short run: mutated model
files and blobs through every loader give no traceback, no silent change of results and no
disagreement between loaders. ``make fuzz`` runs the full count."""

import shutil
import subprocess

import pytest

from sim.seed import test_seed

from . import fuzz_files

SEED = test_seed()


def test_fuzz_files_smoke(tmp_path):
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build the firmware for the host")
    lines = []
    try:
        counts = fuzz_files.fuzz(300, SEED, tmp_path, log=lines.append)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"host build failed:\n{e.stdout}\n{e.stderr}")
    print(fuzz_files.table(counts))
    failed = {k: v for k, v in counts.items() if k[1] in fuzz_files.FAILURES}
    assert not failed, f"seed {SEED}: {failed}\n" + "\n".join(lines)
    # The run exercised every kind of outcome it should see, on both targets.
    for target in fuzz_files.TARGETS:
        for outcome in ("refused", "identical"):
            assert counts[(target, outcome)] > 0, (target, outcome)
    assert sum(counts.values()) == 300
