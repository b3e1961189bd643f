"""The seed of every random choice in the tests and the benches: ``CIM_TEST_SEED``.

One definition for ``tests/``, the cocotb benches of ``sim/`` and :mod:`sim.runner` (which
hands it on to the simulator process): ``CIM_TEST_SEED=7 make test`` or ``make sim
CIM_TEST_SEED=7`` replays every random choice of a failed run. Every failure names the seed
it used (the top-level ``conftest.py`` adds it to each failed test's report).
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_SEED", "ENV", "test_seed"]

ENV = "CIM_TEST_SEED"
DEFAULT_SEED = 1234


def test_seed() -> int:
    """The run's seed: ``CIM_TEST_SEED`` (a non-negative decimal integer), or
    :data:`DEFAULT_SEED` when it is unset or empty."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_SEED
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{ENV} must be a non-negative integer, not {text!r}")
    return int(text)


test_seed.__test__ = False    # a function named test_*: not a test where pytest finds it
