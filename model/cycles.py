"""Analytic cycle model of the accelerator: the schedule the RTL sequencer is built to match.

Schedule of one layer (descriptor fields in ``monospace``; ``M`` = ``config.macros``)
-----------------------------------------------------------------------------------
* **Work units.** The layer has ``U = T * J`` weight tiles (``T = row_tiles``,
  ``J = col_tiles``), numbered in weight-image order ``u = j * T + t``, and
  ``P = out_height * out_width`` output pixels. Every tile must see all ``P`` input vectors.
* **Mapping onto the macros.**

  - ``U >= M``: ``rounds = ceil(U / M)``; round ``q`` loads tiles ``q*M .. q*M + M - 1``
    (one per macro; the last round may leave macros idle) and streams all ``P`` pixels
    through them: ``pixels_per_round = P``.
  - ``U < M``: the tiles are replicated ``copies = M // U`` times and the pixels split
    between the copies: one round, ``pixels_per_round = ceil(P / copies)``.

  The partial sums of the macros of a round that share a column tile are added by a
  registered adder tree (``ceil(log2(M))`` levels) and accumulated per pixel across rounds;
  the requantizing :class:`~gateware.datapath.Datapath` runs on the last row tile.
* **Compute** per round: ``pixels_per_round * a_bits`` cycles (one input bit-plane per
  cycle, vectors back to back).
* **Weight load** per round: ``rows / write_rows`` cycles (every macro has its own write
  port, so a round's tiles load in parallel). With ``double_buffer`` the next round's tiles
  load into the shadow copy while the current round computes, so a round that has a next
  one costs ``max(load, compute)``, the last round ``compute``, plus one exposed first load
  per layer. Without it every round costs ``load + compute``.
* **Pipeline fill** per layer (layers run one after another: a layer's input is the previous
  layer's output): :data:`FILL` = window generator (2) + activation buffer read (2) + macro (3)
  + adder tree (``ceil(log2(M))``) + datapath (6) + buffer write (1).

So ``cycles = load + (rounds - 1) * max(load, compute) + compute + FILL`` (double
buffered; ``rounds * (load + compute) + FILL`` without) and
``MAC utilization = MACs / (cycles * peak)`` with ``MACs = P * Cout * Cin * k * k`` (useful
ones, no padding) and ``peak = macros * rows * cols / a_bits``.

CLI::

    python -m model.cycles --model models/resnet14_fmnist_w4a4.npz --config default \\
        [--clock-mhz 10]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from gateware.actbuf import ActivationBuffer
from gateware.cim_macro import LATENCY as MACRO_LATENCY
from gateware.config import HwConfig, get_config
from gateware.datapath import Datapath
from gateware.window import WindowGen

from . import golden
from .compiler import Descriptor, Program, compile_model

__all__ = ["LayerCycles", "fill_cycles", "layer_cycles", "network_cycles"]

WRITE_LATENCY = 1
"""Cycle of the activation-buffer write of a layer's last output."""


def fill_cycles(config: HwConfig) -> int:
    """Per-layer pipeline fill (module docstring)."""
    tree = math.ceil(math.log2(config.macros)) if config.macros > 1 else 0
    return (WindowGen.latency + ActivationBuffer.latency + MACRO_LATENCY + tree
            + Datapath.latency + WRITE_LATENCY)


@dataclass(frozen=True)
class LayerCycles:
    name: str
    cycles: int
    macs: int
    utilization: float
    rounds: int
    copies: int
    pixels_per_round: int
    compute: int
    load: int
    fill: int


def layer_cycles(d: Descriptor, config: HwConfig, name: str = "") -> LayerCycles:
    """Cycles of one layer under the schedule of the module docstring."""
    pixels = d.out_height * d.out_width
    units = d.row_tiles * d.col_tiles
    if units >= config.macros:
        rounds, copies, ppr = -(-units // config.macros), 1, pixels
    else:
        copies = config.macros // units
        rounds, ppr = 1, -(-pixels // copies)
    compute = ppr * config.a_bits
    load = config.write_cycles
    fill = fill_cycles(config)
    if config.double_buffer:
        cycles = load + (rounds - 1) * max(load, compute) + compute + fill
    else:
        cycles = rounds * (load + compute) + fill
    macs = pixels * d.out_channels * d.in_channels * d.kernel * d.kernel
    util = macs / (cycles * config.peak_macs_per_cycle)
    return LayerCycles(name, cycles, macs, util, rounds, copies, ppr, compute, load, fill)


def network_cycles(program: Program, config: HwConfig | None = None) -> list[LayerCycles]:
    """Per-layer cycles of a compiled program (layers run back to back)."""
    config = config or program.config
    return [layer_cycles(d, config, n) for n, d in zip(program.names, program.descriptors)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", default="default")
    ap.add_argument("--clock-mhz", type=float, default=10.0)
    args = ap.parse_args(argv)
    config = get_config(args.config)
    program = compile_model(golden.load(args.model), config)
    layers = network_cycles(program, config)
    print(f"{args.model} on {config.name!r}: {config.macros} macros of {config.rows}x"
          f"{config.cols}, W{config.w_bits}A{config.a_bits}, peak "
          f"{config.peak_macs_per_cycle} MACs/cycle")
    print(f"{'layer':<20} {'rounds':>6} {'copies':>6} {'compute':>7} {'cycles':>7} "
          f"{'MACs':>10} {'util':>6}")
    for c in layers:
        print(f"{c.name:<20} {c.rounds:>6} {c.copies:>6} {c.compute:>7} {c.cycles:>7} "
              f"{c.macs:>10} {c.utilization:>6.1%}")
    total = sum(c.cycles for c in layers)
    macs = sum(c.macs for c in layers)
    print(f"{'total':<20} {'':>6} {'':>6} {'':>7} {total:>7} {macs:>10} "
          f"{macs / (total * config.peak_macs_per_cycle):>6.1%}")
    print(f"{total} cycles per frame, {args.clock_mhz * 1e6 / total:,.0f} FPS at "
          f"{args.clock_mhz:g} MHz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
