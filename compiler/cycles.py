"""Analytic cycle model of the accelerator: the schedule the RTL sequencer runs, in formulas.

Schedule of one layer (descriptor fields in ``monospace``; ``M`` = ``config.macros``,
``ab`` = ``a_bits``, ``pl`` = :func:`contract.program.planes`, the bit-planes fed per pixel
(``in_bits``, plus the array's ``w_bits`` for wide weights), ``wc`` = ``rows / write_rows``,
the cycles to load one weight tile)
-------------------------------------------------------------------------------------------
* **Work.** The layer has ``J = col_tiles`` column tiles of ``T = row_tiles`` weight tiles and
  ``P = out_height * out_width`` output pixels; every tile sees all ``P`` input vectors.
* **Copies** (:func:`copies`). When ``T < M`` the ``T`` tiles of a column tile are loaded
  into ``cp`` groups of macros, which take turns over the pixels: the largest ``cp <= pl``
  with ``cp * T <= M``, ``cp <= P`` and ``cp * sp <= pl``, where ``sp = max(out_sl, res_sl)``
  is the number of buffer words one output (and one residual) pixel takes
  (``ceil(bits / ab)``): the write port (and the residual read port) must keep up.
* **Rounds.** Per column tile, the row tiles go in rounds of up to ``M`` macros (with copies:
  one round of ``cp * T``); a round streams all ``P`` pixels in ``ceil(P / cp)`` *slots* of
  ``L`` cycles: ``L = pl`` (one bit-plane per cycle), on the final round of a column tile
  ``L = max(pl, cp * sp)``. An input of more than ``ab`` bits is read as
  ``ceil(pl / ab)`` slice words per pixel, the next one as the last plane of a slice is
  fed. Group ``g`` of a slot is issued at cycle ``g * sp`` of it: every
  macro of the group reads its word through its own buffer port, in lockstep.
* **Weights.** Each macro loads its next tile into its shadow copy once it has committed the
  current one (``wc + 3`` cycles after its first issue of the round, :data:`LOAD_LATENCY`);
  a round starts when all its macros hold their tiles, so it lasts
  ``max(slots * L, (cp - 1) * sp + wc + LOAD_LATENCY)`` cycles, plus one cycle (the
  round switch, :data:`ROUND_GAP`). The first round of a layer waits for its first load.
* **Hand-out.** The loader gives each macro its next tile in macro order, two a cycle, a
  round's first in a cycle of its own, and only into a free pending slot (one per macro,
  freed when the tile before starts loading); a layer's descriptor is taken once the layer
  before has handed out its last tile and the fetcher has read it (:data:`FETCH` after the
  one before). With many macros and short loads (``wc`` small) the hand-out, not the loads,
  can set a round's pace: :func:`network_cycles` follows it tile by tile (``_Loader``) and
  a round starts no earlier than the cycle after its last tile is loaded.
* **Residuals.** A layer with a residual input issues a pixel of its final round only once
  its residual is read: if its first round is final, its first issue waits for the residual
  reader's first pixel (:data:`RESIDUAL_FIRST` plus ``res_sl`` cycles into the layer).
* **Per layer.** :data:`SETUP` cycles (descriptor fetch, check, set-up) before the first
  round's load, and :data:`DRAIN` cycles from the last issue to the write of the last output
  word (``pl`` planes, macro, adder tree, :class:`~gateware.datapath.Datapath`, write), plus
  ``out_sl - 1`` for its further slices. Layers run one after the other (a layer's input is
  the previous layer's output); the last one also pays :data:`DONE`.
* **Raw layer** (the classifier, the last layer): no write; its one result goes to the logit
  registers, and the argmax then scans the logits, :data:`ARGMAX_SCAN` cycle per logit after
  the first, so the layer ends ``ARGMAX_SCAN * (out_channels - 1)`` cycles after its result
  (where a layer that writes ends ``out_sl - 1`` cycles after it).

* **Max pooling and im2col** (``op`` 1 and 2) run on their own units, one buffer read
  (pooling) or one write (im2col) per cycle (:func:`pool_cycles`, :func:`im2col_cycles`);
  the next layer's first tiles load meanwhile. As a program's first layer they also wait
  :data:`FIRST_DESC` cycles for their descriptor.

``MAC utilization = MACs / (cycles * peak)`` with ``MACs = P * Cout * Cin * k * k`` (useful
ones, no padding) and ``peak = macros * rows * cols / a_bits``. ``tests/test_accelerator.py``
holds the RTL to this model per layer.

CLI::

    python -m compiler.cycles --model models/resnet14_fmnist_w4a4.npz --config default \\
        [--clock-mhz 10]
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from contract.config import HwConfig, get_config
from contract.program import DESC_WORDS, OP_IM2COL, OP_MAXPOOL, Descriptor, copies, planes
from contract.timing import ARGMAX_SCAN, CHECK_LATENCY, DATAPATH_LATENCY, MACRO_LATENCY
from model import golden

from .compile import Program, compile_model
from .partition import PARTITIONS, partition

__all__ = ["LayerCycles", "copies", "im2col_cycles", "layer_cycles", "network_cycles",
           "pool_cycles"]

FETCH = DESC_WORDS + 2 + CHECK_LATENCY
"""Cycles to read and check a descriptor (:class:`gateware.sequencer.fetcher.Fetcher`)."""
FIRST_DESC = 1
"""Cycles a program's first layer waits for its descriptor: the fetcher reads and checks
descriptor 0 while idle, so it is offered the cycle after ``start`` (if program memory was
last written at least :data:`FETCH` cycles before ``start``; up to ``FETCH`` otherwise)."""
FIRST_READY = FIRST_DESC + 3
"""Cycles from ``start`` to the first layer's first weight tile being loaded, beyond ``wc``:
the prefetched descriptor (:data:`FIRST_DESC`), hand-over to the loader (1), load start (2);
plus one per pair of macros (the loader hands out two tiles per cycle)."""
NEXT_READY = FETCH + 3
"""As :data:`FIRST_READY` for the layer after a max-pooling or im2col layer, counted from that
layer's start: its descriptor is fetched once that layer's is taken (an upper bound)."""
LAYER_START = 3
"""Cycles from a layer's start (taking its descriptor from the queue) to the first cycle its
first round may start: check (1), set-up (1), round switch (1)."""
LOAD_LATENCY = 3
"""Cycles from a macro's first issue of a round to its next tile being loaded, beyond ``wc``:
commit (1), weight read (1), write (1)."""
ROUND_GAP = 1
"""The cycle between rounds in which the sequencer checks the next round's tiles."""
RESIDUAL_FIRST = 4
"""Cycles from a layer's start to the residual reader's first credit, beyond ``res_sl``: the
reader starts with the layer's set-up (2), reads slice 0 the cycle after, and its last slice
is in the FIFO, claimable, two cycles after it is read (``gateware.sequencer.residual``). A
final-round pixel is issued only with a claim, so a layer whose first round is final issues no
earlier than ``RESIDUAL_FIRST + res_sl``; the reader then reads a word a cycle, as fast as the
issuer claims (``cp * sp <= L``), and the delay lasts to the layer's end."""
DRAIN = MACRO_LATENCY + 1 + DATAPATH_LATENCY + 1
"""Cycles from the last bit-plane of a layer (``a_bits`` after its last issue: the buffer read
overlaps the first plane) to the next layer's start: macro (3), adder tree and running sum
(1), Datapath (6), the write that ends the layer (1)."""
DONE = 1
"""The cycle that raises ``done`` after the last layer (counted in the last layer)."""


def _slices(bits: int, a_bits: int) -> int:
    return -(-bits // a_bits)


@dataclass(frozen=True)
class LayerCycles:
    name: str
    cycles: int
    macs: int
    utilization: float
    rounds: int
    copies: int
    slots: int
    compute: int
    load: int
    next_ready: int
    """Cycle (from the next layer's start, may be negative) at which the next layer's first
    tiles are loaded: the macros of this layer's last round load them once committed."""


def _rounds(d: Descriptor, config: HwConfig, cp: int) -> list[tuple[int, bool]]:
    """(macros, final) of every round of a layer, in order."""
    M, T = config.macros, d.row_tiles
    if cp > 1:
        col = [(cp * T, True)]
    else:
        col = [(M, False)] * ((T - 1) // M) + [(T - (T - 1) // M * M, True)]
    return col * d.col_tiles


POOL_START = 3
"""Cycles from a max-pooling layer's start to its first read: check (1), the issuer's
``POOL``, which starts the pooler (1), the pooler's set-up (1)."""
POOL_END = 2
"""Cycles from a max-pooling layer's last read to the next layer's start: the write of its
last word (with ``layer_done``), the issuer's ``DRAIN``."""


def pool_cycles(d: Descriptor, config: HwConfig, name: str = "") -> LayerCycles:
    """Cycles of a max-pooling layer: one buffer read per window tap, ``P * G * k * k``."""
    pixels = d.out_height * d.out_width
    reads = pixels * d.in_groups * d.kernel * d.kernel
    t = POOL_START + reads + POOL_END
    # The next layer's descriptor is fetched and its first tiles loaded while this one runs
    # (counted as for a program's first layer, from this layer's start: an upper bound).
    first = NEXT_READY + (config.macros - 1) // 2 + config.write_cycles
    return LayerCycles(name, t, 0, 0.0, 0, 1, 0, reads, 0, first - t)


IM2COL_START = 2
"""Cycles from an im2col layer's start to its first image-row read: check (1), the issuer's
``IM2COL``, which starts the im2col unit (1)."""
IM2COL_LAND = 1
"""Cycles per output row of an im2col layer between its last row read and its first word:
the image buffer's read latency (:data:`gateware.sequencer.im2col.ROW_LAND`)."""
IM2COL_END = 2
"""Cycles from an im2col layer's last word formed to the next layer's start: its write (with
``layer_done``), the issuer's ``DRAIN``."""


def im2col_cycles(d: Descriptor, config: HwConfig, name: str = "") -> LayerCycles:
    """Cycles of an im2col layer: per output row, ``C * k`` image-row reads, the landing
    cycle, and ``Wo * G * S`` words (``S`` slice words of ``in_bits``), one per cycle."""
    words = d.out_width * d.out_groups * _slices(d.in_bits, config.a_bits)
    per_row = d.in_channels * d.kernel + IM2COL_LAND + words
    t = IM2COL_START + d.out_height * per_row + IM2COL_END
    # As for max pooling: the next layer's descriptor and first tiles load meanwhile.
    first = NEXT_READY + (config.macros - 1) // 2 + config.write_cycles
    return LayerCycles(name, t, 0, 0.0, 0, 1, 0, d.out_height * words, 0, first - t)


class _Loader:
    """The weight loader and the macro units' tile slots (``gateware.sequencer.loader``,
    ``macro_unit``), tile by tile, in cycles from the program's start. The loader hands out a
    layer's tiles round by round in macro order, at most two a cycle and a round's first in a
    cycle of its own; macro ``i`` takes a tile only while its one pending slot is free, and a
    pending tile starts loading once the tile before it in that macro is committed (its
    round's first bit-plane to the macro). The schedule's formulas assume the hand-out keeps
    ahead of the loads; with many macros and short loads (``rows / write_rows`` small) it
    may not, and then this sets the pace."""

    def __init__(self, macros: int):
        self.free = [0] * macros        # first cycle macro i's pending slot can take a tile
        self.commit = [0] * macros      # commit cycle of the last tile pushed to macro i
        self.cycle, self.count = -1, 2  # the loader's last push cycle and its pushes then
        self.last_push = -1

    def start_layer(self, take: int) -> None:
        """The loader takes the layer's descriptor in cycle ``take``: its first tiles are
        offered in the next."""
        self.cycle, self.count = take, 2

    def push_round(self, n: int, wc: int) -> list[int]:
        """Hands out the ``n`` tiles of a round (macros ``0 .. n - 1``); returns the cycle
        each is loaded (:data:`LOAD_LATENCY` as the schedule counts it)."""
        loaded = []
        self.count = 2                  # a round starts a cycle of its own
        for i in range(n):
            c = self.cycle if self.count < 2 else self.cycle + 1
            c = max(c, self.free[i])
            if c != self.cycle:
                self.cycle, self.count = c, 0
            self.count += 1
            # Pending from the next cycle; loading starts once the tile before is committed.
            start = max(c + 1, self.commit[i])
            self.free[i] = start + 1
            loaded.append(start + wc + LOAD_LATENCY - 1)
        self.last_push = self.cycle
        return loaded

    def commit_round(self, n: int, first_issue: int, group: int, sp: int) -> None:
        """The round's tiles are committed: macro ``i`` (group ``i // group``) at its group's
        first issue plus one."""
        for i in range(n):
            self.commit[i] = first_issue + (i // group) * sp + 1


def layer_cycles(d: Descriptor, config: HwConfig, name: str = "",
                 ready: int | None = None, *, loader: _Loader | None = None,
                 start: int = 0) -> LayerCycles:
    """Cycles of one layer under the schedule of the module docstring. ``ready``: the cycle
    (from the layer's start) at which its first round's tiles are loaded, from the previous
    layer's :attr:`LayerCycles.next_ready`; ``None``: the first layer of a program.
    ``loader``: the weight loader's state (:class:`_Loader`, as :func:`network_cycles` keeps
    it), with the layer's ``start`` cycle in the program: the hand-out then bounds when each
    round's tiles are loaded too."""
    if d.op in (OP_MAXPOOL, OP_IM2COL):
        c = (pool_cycles if d.op == OP_MAXPOOL else im2col_cycles)(d, config, name)
        wait = FIRST_DESC if ready is None else 0
        return dataclasses.replace(c, cycles=c.cycles + wait, next_ready=c.next_ready - wait)
    ab, wc, pl = config.a_bits, config.write_cycles, planes(d, config)
    pixels = d.out_height * d.out_width
    out_sl = _slices(d.out_bits, ab)
    sp = max(out_sl, _slices(d.res_bits, ab) if d.has_residual else 0)
    cp = copies(d, config)
    slots = -(-pixels // cp)
    last_groups = pixels - (slots - 1) * cp
    rounds = _rounds(d, config, cp)
    load = (cp - 1) * sp + wc + LOAD_LATENCY
    if ready is None:
        ready = FIRST_READY + (rounds[0][0] - 1) // 2 + wc
    if loader is not None:
        ready = max([ready] + [x - start for x in loader.push_round(rounds[0][0], wc)])
    t = max(LAYER_START, ready) + 1             # first issue
    if d.has_residual and rounds[0][1]:
        t = max(t, RESIDUAL_FIRST + _slices(d.res_bits, ab))
    compute = 0
    for r, (n, final) in enumerate(rounds):
        length = max(pl, cp * sp) if final else pl
        compute += slots * length
        if loader is not None:
            loader.commit_round(n, start + t, n // cp, sp)
        if r + 1 < len(rounds):
            nxt = t + max(slots * length, load) + ROUND_GAP
            if loader is not None:
                loaded = loader.push_round(rounds[r + 1][0], wc)
                nxt = max([nxt] + [x - start + 1 for x in loaded])
            t = nxt
        else:
            last_start = t
            # The layer ends with its last word written or, raw, with the argmax.
            tail = ARGMAX_SCAN * (d.out_channels - 1) if d.raw else out_sl - 1
            t += (slots - 1) * length + (last_groups - 1) * sp + pl + DRAIN + tail
    macs = pixels * d.out_channels * d.in_channels * d.kernel * d.kernel
    util = macs / (t * config.peak_macs_per_cycle)
    return LayerCycles(name, t, macs, util, len(rounds), cp, slots, compute, load,
                       last_start + load - t)


def network_cycles(program: Program, config: HwConfig | None = None) -> list[LayerCycles]:
    """Per-layer cycles of a compiled program (layers run back to back; each layer's first
    tiles load while the previous layer computes), the weight loader's hand-out followed tile
    by tile across layers (:class:`_Loader`)."""
    config = config or program.config
    layers, ready, start = [], None, 0
    loader = _Loader(config.macros)
    take, walking = 0, False
    for n, d in zip(program.names, program.descriptors):
        conv = d.op not in (OP_MAXPOOL, OP_IM2COL)
        if conv and walking:
            # Taken once the previous layer's last tile is handed out and the fetcher has
            # read and checked it (FETCH cycles after the one before was taken).
            take = max(loader.last_push + 1, take + FETCH)
        elif conv:
            # A program's first convolution, or one after pooling or im2col: its first tiles
            # load when the schedule's formula says (FIRST_READY, NEXT_READY); the loader
            # took its descriptor so that the last of them, handed out two a cycle, is
            # loaded then.
            wc, n0 = config.write_cycles, _rounds(d, config, copies(d, config))[0][0]
            first = FIRST_READY + (n0 - 1) // 2 + wc if ready is None else ready
            take = start + first - (n0 - 1) // 2 - wc - LOAD_LATENCY - 1
        if conv:
            loader.start_layer(take)
        c = layer_cycles(d, config, n, ready, loader=loader if conv else None, start=start)
        layers.append(c)
        ready, walking = c.next_ready, conv
        start += c.cycles
    last = layers[-1]
    cycles = last.cycles + DONE
    layers[-1] = dataclasses.replace(
        last, cycles=cycles, utilization=last.macs / (cycles * config.peak_macs_per_cycle))
    return layers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", default="default")
    ap.add_argument("--clock-mhz", type=float, default=10.0)
    ap.add_argument("--partition", default="file", choices=list(PARTITIONS),
                    help="which layers run on the accelerator (compiler.partition)")
    args = ap.parse_args(argv)
    config = get_config(args.config)
    program = compile_model(partition(golden.load(args.model), args.partition), config)
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
