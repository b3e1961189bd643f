"""Energy per frame and per MAC: a **model**, not a measurement.

Events are counted from a compiled program, layer by layer, with the schedule of the cycle
model (:mod:`compiler.cycles`: rounds, copies) and the window order of the functional model
(:func:`compiler.compile.window_addresses`: which taps fall in the padding). Each event is
multiplied by a stated energy from the literature (:class:`EnergyTable`, one entry per event
with its source and technology node). Nothing here was measured on a chip or an FPGA.

Events of one layer (:class:`LayerEvents`):

* **Array evaluations**: one macro fed one input bit-plane, ``J * T * P * pl`` per
  convolution (column tiles, row tiles, output pixels, bit-planes: every row tile sees every
  pixel, one plane per cycle). Each evaluation forms ``rows * cols * w_bits`` partial-product
  bits (the AND of an input bit with a weight bit, reduced by the column's adder tree) and
  shift-accumulates ``cols`` column results of the partial sum's width.
* **Weight tile loads**: the tiles the macros load, ``J * T`` (``J * cp * T`` with ``cp``
  copies of the row tiles, :func:`compiler.cycles.copies`), each
  :func:`~contract.program.tile_words` 32-bit words read from the weight store.
* **Activation-buffer reads and writes**, in buffer words (``rows * a_bits`` bits): per
  column tile, row tile and output pixel one read per slice word of the input tap, except
  for taps in the padding (the buffer returns zeros without reading its RAM); per column
  tile and pixel the residual's and the output's slice words; max pooling reads its window
  taps and writes one word per pixel and group; im2col reads image rows (``image_size``
  bytes each) from the image buffer and writes its lanes.
* **Requantizations**: one per datapath lane (``cols``) per pixel and column tile: a multiply
  and an add, and a second pair with a residual.

Per frame (:class:`FrameIO`) the bus moves the accelerator's input in (the image, or the
input tensor in ACT-window words) and its outputs back (the tensors the MCU reads, or the
logits and the class), each bus word also a write or read of the buffer it lands in.
Loading the model (program, weights, parameters) is counted apart: it is paid once per
model, not per frame.

Not modelled: clock distribution, leakage and static power, control logic, the macros'
weight registers being written (only the weight store's read is counted), the FPGA's
routing and configurable-logic overhead (an FPGA spends several times an ASIC's energy on the
same logic), and the MCU's own work. The figures are for comparing layers, partitions and
configurations with each other on one scale, not a prediction of a board's power.

CLI::

    python -m compiler.energy --model models/resnet14_fmnist_w4a4.npz --config default \\
        [--partition file] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass

import numpy as np

from contract.arith import column_range, signed_width
from contract.config import HwConfig, get_config
from contract.program import OP_IM2COL, OP_MAXPOOL, Descriptor, planes, slices, tile_words
from model import golden

from .compile import CompileError, Program, compile_model, window_addresses
from .cycles import copies
from .partition import PARTITIONS, accel_outputs, partition

__all__ = ["DEFAULT_TABLE", "EnergyTable", "FrameIO", "LayerEvents", "count_events",
           "estimate", "format_energy", "frame_io", "layer_events", "sram_pj_per_bit"]

HOROWITZ = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
            "ISSCC 2014, table of 45 nm energies")


@dataclass(frozen=True)
class EnergyTable:
    """Energy per event, each with its source. Values are approximate figures from the
    literature for one technology node, used as a common scale: see the module docstring
    for what is not modelled."""

    name: str
    node: str
    pp_bit_pj: float
    """One partial-product bit of a multiplier array (AND and its share of the reduction)."""
    add_bit_pj: float
    """One bit of an integer adder."""
    mult_pj: float
    """One requantization multiply (up to 32 x 32 bits)."""
    add_pj: float
    """One requantization add (up to 32 bits)."""
    sram_points: tuple[tuple[int, float], ...]
    """``(bytes, pJ per 64-bit access)`` of SRAMs of a few sizes, interpolated between."""
    wire_pj_bit_mm: float
    """On-chip wire, pJ per bit per mm."""
    bus_mm: float
    """Length assumed for the bus between the MCU and the accelerator."""
    sources: dict = dataclasses.field(default_factory=dict)
    """Source of each value above, by attribute name."""


DEFAULT_TABLE = EnergyTable(
    name="asic45",
    node="45 nm CMOS, 0.9 V",
    pp_bit_pj=0.2 / 64,
    add_bit_pj=0.1 / 32,
    mult_pj=3.1,
    add_pj=0.1,
    sram_points=((8 << 10, 10.0), (32 << 10, 20.0), (1 << 20, 100.0)),
    wire_pj_bit_mm=0.0404,
    bus_mm=5.0,
    sources={
        "pp_bit_pj": HOROWITZ + ": 8-bit integer multiply 0.2 pJ over its 64 partial-product "
                     "bits (a bit-serial w_bits x 1 product reduced by an adder tree is the "
                     "same partial-product array)",
        "add_bit_pj": HOROWITZ + ": 32-bit integer add 0.1 pJ, per bit",
        "mult_pj": HOROWITZ + ": 32-bit integer multiply 3.1 pJ (an upper bound for the "
                   "datapath's 24 x 16 and 8 x 24 bit multiplies)",
        "add_pj": HOROWITZ + ": 32-bit integer add 0.1 pJ",
        "sram_points": HOROWITZ + ": 64-bit cache access 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ "
                       "(1 MB); log-log interpolation between the sizes and the last slope "
                       "beyond 1 MB; writes taken as reads",
        "wire_pj_bit_mm": "S. Park et al., \"40.4fJ/bit/mm low-swing on-chip signaling with "
                          "self-resetting logic repeaters embedded within a mesh NoC in 45nm "
                          "SOI CMOS\", DATE 2013: low-swing, so a lower bound for a full-swing "
                          "bus",
        "bus_mm": "an assumption (the MCU beside the accelerator on one die), not a source",
    },
)


def sram_pj_per_bit(size_bytes: int, table: EnergyTable = DEFAULT_TABLE) -> float:
    """Energy per bit accessed of an SRAM of ``size_bytes`` (one copy: what one port
    reads), interpolated log-log between :attr:`EnergyTable.sram_points`; below the smallest
    size its value, past the largest the last segment's slope."""
    if size_bytes <= 0:
        raise ValueError(f"an SRAM of {size_bytes} bytes")
    pts = table.sram_points
    if size_bytes <= pts[0][0]:
        return pts[0][1] / 64
    for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
        if size_bytes <= s1 or (s1, e1) == pts[-1]:
            slope = math.log(e1 / e0) / math.log(s1 / s0)
            return e0 * (size_bytes / s0) ** slope / 64
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class LayerEvents:
    """Events of one layer per frame (module docstring)."""

    name: str
    macs: int
    array_evals: int = 0
    pp_bits: int = 0
    accumulates: int = 0
    accumulate_bits: int = 0
    tile_loads: int = 0
    weight_words: int = 0
    act_reads: int = 0
    act_writes: int = 0
    image_reads: int = 0
    requants: int = 0
    residual_requants: int = 0


def _nonpad_taps(d: Descriptor, config: HwConfig) -> int:
    """Input taps of a layer's windows inside the input (over pixels, taps and groups)."""
    _, pad = window_addresses(d, config.a_bits)
    return int(np.count_nonzero(~pad))


def layer_events(d: Descriptor, config: HwConfig, name: str = "") -> LayerEvents:
    """Events of one layer of a program compiled for ``config``."""
    ab = config.a_bits
    pixels = d.out_height * d.out_width
    if d.op == OP_IM2COL:
        rows_in = sum(1 for oy in range(d.out_height) for kh in range(d.kernel)
                      if 0 <= oy * d.stride - d.padding + kh < d.in_height)
        return LayerEvents(name, 0, image_reads=rows_in * d.in_channels,
                           act_writes=pixels * d.out_groups * slices(d.out_bits, ab))
    if d.op == OP_MAXPOOL:
        return LayerEvents(name, 0, act_reads=_nonpad_taps(d, config),
                           act_writes=pixels * d.out_groups)
    pl = planes(d, config)
    cp = copies(d, config)
    J, T = d.col_tiles, d.row_tiles
    evals = J * T * pixels * pl
    taps = _nonpad_taps(d, config)          # one weight slice's row tiles
    wslices = T // (d.kernel * d.kernel * d.in_groups)
    reads = J * wslices * taps * slices(d.in_bits, ab)
    if d.has_residual:
        reads += J * pixels * slices(d.res_bits, ab)
    writes = 0 if d.raw else J * pixels * slices(d.out_bits, ab)
    lanes = J * pixels * config.cols
    psum = signed_width(*column_range(config.rows, config.w_bits, config.planes_max))
    return LayerEvents(
        name, pixels * d.out_channels * d.in_channels * d.kernel * d.kernel,
        array_evals=evals, pp_bits=evals * config.rows * config.cols * config.w_bits,
        accumulates=evals * config.cols, accumulate_bits=psum,
        tile_loads=J * cp * T, weight_words=J * cp * T * tile_words(config),
        act_reads=reads, act_writes=writes, requants=lanes,
        residual_requants=lanes if d.has_residual else 0)


def count_events(program: Program) -> list[LayerEvents]:
    """Events of every layer of ``program``, in order."""
    return [layer_events(d, program.config, n)
            for n, d in zip(program.names, program.descriptors)]


@dataclass(frozen=True)
class FrameIO:
    """Bus traffic of one frame and of loading the model, in 32-bit bus words, and the
    buffer words the frame's bus words write and read."""

    bus_words_in: int
    bus_words_out: int
    act_writes: int
    act_reads: int
    image_bytes: int
    load_words: int


def act_bus_words(config: HwConfig) -> int:
    """32-bit bus words per activation-buffer word (the ACT window's slices)."""
    return -(-config.rows * config.a_bits // 32)


def frame_io(program: Program, outputs: list[str]) -> FrameIO:
    """Bus traffic of ``program``: its input in, ``outputs`` (tensors the MCU reads back;
    :func:`compiler.partition.accel_outputs`) or, with a raw last layer, the logits and the
    class out; and the model's load (program, weights, parameters)."""
    cfg = program.config
    per_word = act_bus_words(cfg)
    act_w = act_r = image_bytes = 0
    if program.image:
        d = program.descriptors[0]
        image_bytes = d.in_channels * d.in_height * d.in_width
        words_in = d.in_channels * d.in_height * -(-d.in_width // 4)
    else:
        act_w = program.buffers[program.input_name].words
        words_in = act_w * per_word
    act_r = sum(program.buffers[o].words for o in outputs)
    words_out = act_r * per_word
    if program.raw:
        words_out += program.descriptors[-1].out_channels + 1     # logits and RESULT
    load = (len(program.program_words()) + len(program.weight_image)
            + len(program.param_image))
    return FrameIO(words_in, words_out, act_w, act_r, image_bytes, int(load))


def _memories(config: HwConfig) -> dict[str, tuple[int, int]]:
    """``name -> (bits per access, bytes of one copy)`` of the accelerator's memories."""
    word = config.rows * config.a_bits
    # A macro reads its tiles from its own weight-store bank, one bank per two macros
    # (contract.program: banks and rows).
    return {"weights": (32, config.weight_store_words * 4 // -(-config.macros // 2)),
            "act": (word, 2 * config.bank_words * word // 8),
            "image": (8 * config.image_size,
                      max(1, 2 * config.image_channels * config.image_size ** 2))}


def estimate(program: Program, outputs: list[str], *,
             table: EnergyTable = DEFAULT_TABLE) -> dict:
    """``report.json``'s ``energy``: events and modelled energy per layer, per frame and per
    MAC, the bus, the table with its sources. Energies in pJ."""
    cfg = program.config
    mem = _memories(cfg)
    e_bit = {k: sram_pj_per_bit(size, table) for k, (_, size) in mem.items()}
    e_word = {k: bits * e_bit[k] for k, (bits, _) in mem.items()}
    layers = []
    for ev in count_events(program):
        parts = {
            "array": ev.pp_bits * table.pp_bit_pj
            + ev.accumulates * ev.accumulate_bits * table.add_bit_pj,
            "weights": ev.weight_words * e_word["weights"],
            "activations": (ev.act_reads + ev.act_writes) * e_word["act"]
            + ev.image_reads * e_word["image"],
            "datapath": (ev.requants + ev.residual_requants) * (table.mult_pj + table.add_pj),
        }
        layers.append({**dataclasses.asdict(ev), "energy_pj": {k: round(v, 1)
                                                               for k, v in parts.items()},
                       "total_pj": round(sum(parts.values()), 1)})
    io = frame_io(program, outputs)
    wire = 32 * table.wire_pj_bit_mm * table.bus_mm
    io_parts = {
        "bus": (io.bus_words_in + io.bus_words_out) * wire,
        "buffers": (io.act_writes + io.act_reads) * e_word["act"]
        + io.image_bytes * 8 * e_bit["image"],
    }
    by_kind = {k: sum(r["energy_pj"][k] for r in layers)
               for k in ("array", "weights", "activations", "datapath")}
    by_kind["bus"] = io_parts["bus"]
    by_kind["activations"] += io_parts["buffers"]
    total = sum(by_kind.values())
    macs = sum(r["macs"] for r in layers)
    return {
        "kind": "model",
        "note": "a model, not a measurement: events counted from the compiled program "
                "(compiler/energy.py) times per-event energies from the literature for "
                f"{table.node}; clocks, leakage, control, the FPGA's overhead and the MCU are "
                "not included",
        "table": {"name": table.name, "node": table.node, "values": {
            "pp_bit_pj": table.pp_bit_pj, "add_bit_pj": table.add_bit_pj,
            "mult_pj": table.mult_pj, "add_pj": table.add_pj,
            "sram_pj_per_bit": {k: round(v, 4) for k, v in e_bit.items()},
            "sram_bytes": {k: size for k, (_, size) in mem.items()},
            "wire_pj_bit_mm": table.wire_pj_bit_mm, "bus_mm": table.bus_mm},
            "sources": dict(table.sources)},
        "layers": layers,
        "io": {**dataclasses.asdict(io), "energy_pj": {k: round(v, 1)
                                                       for k, v in io_parts.items()}},
        "by_kind_pj": {k: round(v, 1) for k, v in by_kind.items()},
        "frame_pj": round(total, 1),
        "macs_per_frame": macs,
        "pj_per_mac": round(total / macs, 4) if macs else None,
        "model_load_pj": round(io.load_words * wire, 1),
    }


def format_energy(e: dict) -> str:
    """The estimate as a text table."""
    L = [f"Energy per frame, a MODEL ({e['table']['node']}; not a measurement):",
         f"{'layer':<22} {'MACs':>11} {'array':>10} {'weights':>10} {'act buf':>10} "
         f"{'datapath':>10} {'total nJ':>9}"]
    for r in e["layers"]:
        p = r["energy_pj"]
        L.append(f"{r['name']:<22} {r['macs']:>11,} {p['array'] / 1e3:>10.2f} "
                 f"{p['weights'] / 1e3:>10.2f} {p['activations'] / 1e3:>10.2f} "
                 f"{p['datapath'] / 1e3:>10.2f} {r['total_pj'] / 1e3:>9.2f}")
    io = e["io"]
    L.append(f"{'frame I/O':<22} {'':>11} {'':>10} {'':>10} "
             f"{io['energy_pj']['buffers'] / 1e3:>10.2f} {'':>10} "
             f"{sum(io['energy_pj'].values()) / 1e3:>9.2f}  (bus: {io['bus_words_in']:,} "
             f"words in, {io['bus_words_out']:,} out)")
    k = e["by_kind_pj"]
    L.append(f"total per frame: {e['frame_pj'] / 1e6:.3f} uJ ("
             + ", ".join(f"{n} {v / 1e3:,.1f} nJ" for n, v in k.items()) + ")")
    if e["pj_per_mac"] is not None:
        L.append(f"per MAC: {e['pj_per_mac']:.3f} pJ over {e['macs_per_frame']:,} MACs")
    L.append(f"loading the model (once): {io['load_words']:,} bus words, "
             f"{e['model_load_pj'] / 1e3:,.1f} nJ on the bus")
    L.append("Per-event energies and their sources:")
    for name, src in e["table"]["sources"].items():
        v = e["table"]["values"].get(name)
        shown = "" if v is None or isinstance(v, dict) else f" = {v:g}"
        L.append(f"  {name}{shown}: {src}")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compiler.energy",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="integer model file (.npz)")
    ap.add_argument("--config", default="default", help="hardware configuration")
    ap.add_argument("--partition", default="file", choices=list(PARTITIONS),
                    help="which layers run on the accelerator (compiler.partition)")
    ap.add_argument("--json", action="store_true", help="print the estimate as JSON")
    args = ap.parse_args(argv)
    try:
        config = get_config(args.config)
        model = partition(golden.load(args.model), args.partition)
        program = compile_model(model, config)
    except golden.ModelFormatError as e:
        ap.error(f"bad model file: {e}")
    except (CompileError, ValueError, OSError) as e:
        ap.error(str(e))
    e = estimate(program, accel_outputs(model))
    print(json.dumps(e, indent=1) if args.json else format_energy(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
