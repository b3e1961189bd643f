"""Division by a constant in hardware: a multiplication by a rounded reciprocal and a shift.

For ``x < 2**N`` and a divisor ``d``, ``l = ceil(log2 d)``, ``s = N + l`` and ``K =
ceil(2**s / d)``: ``floor(x * K / 2**s) == floor(x / d)`` (Granlund and Montgomery, "Division
by invariant integers using multiplication", 1994: ``K * d - 2**s < d``, so the error term
``x * (K - 2**s / d) / 2**s`` stays below ``1 / d``, less than the gap between ``x / d`` and the
next integer). A power-of-two divisor is a plain shift. The weight store's bus decode and the
fetcher's weight-row check use it with ``d`` the macro count.
"""

from __future__ import annotations

from amaranth.hdl import Const, Value
from amaranth.utils import bits_for, ceil_log2

__all__ = ["div_const", "reciprocal"]


def reciprocal(divisor: int, width: int) -> tuple[int, int]:
    """``(K, s)`` with ``floor(x * K / 2**s) == floor(x / divisor)`` for every ``x < 2**width``
    (module docstring)."""
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        raise ValueError(f"Divisor must be a positive integer, not {divisor!r}")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"Width must be a positive integer, not {width!r}")
    s = width + ceil_log2(divisor)
    return -(-(1 << s) // divisor), s


def div_const(x: Value, divisor: int) -> Value:
    """``floor(x / divisor)`` of an unsigned value ``x``, as ``len(x) - bits(divisor) + 1``
    bits (module docstring)."""
    x = Value.cast(x)
    if x.shape().signed:
        raise ValueError("The dividend must be unsigned")
    if divisor & (divisor - 1) == 0:
        return x >> ceil_log2(divisor) if divisor > 1 else x
    k, s = reciprocal(divisor, len(x))
    width = max(1, len(x) - bits_for(divisor) + 1)
    return ((x * Const(k)) >> s)[:width]
