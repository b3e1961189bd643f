"""The MCU partition's firmware in the emulator, no accelerator: instructions per op.

``python -m sim.mcu_partition --model models/resnet14_fmnist_w4a4.npz --images 2`` builds
``make -C firmware PARTITION=mcu`` (for ``default``) into ``sim_build/firmware/``, runs the
ELF in the Unicorn emulator (:class:`sim.fil.Mcu`) on a bus that fails any access (the blob
of the MCU partition must not touch the accelerator), checks every frame's logits against
the golden model, and prints the instructions per stage and per op of the first frame (the
counts between the calls of ``cim_net_op``, so an op's share of the stage callback is in
it; the last op's ends where ``cim_net_run`` takes the argmax). ``firmware/README.md``
quotes these tables; ``sim/tb_firmware.py`` with ``CIM_SIM_PARTITION=mcu`` is the same run
beside the RTL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import unicorn as U
from unicorn import arm_const as A

from compiler import firmware_blob as fb
from model import golden
from sim.fil import Mcu, Run, build_elf, stage_table
from sim.testbench import REPO


class NoBus:
    """:class:`sim.fil.Bus` with no accelerator behind it: any access is an error."""

    def read(self, offset: int):
        raise AssertionError(f"the firmware read the accelerator at {offset:#x}")

    def write(self, offset: int, words: list[int]):
        raise AssertionError(f"the firmware wrote the accelerator at {offset:#x}")

    def idle(self, cycles: int) -> bool:
        return False


def conv_macs(op: dict) -> int:
    return op["out_c"] * op["out_h"] * op["out_w"] * op["in_c"] * op["kernel"] ** 2


def profile(model_path: str, images: int, build: Path) -> tuple[Run, list[dict], list[int]]:
    """Build the MCU partition's ELF for ``model_path`` with ``images`` test images into
    ``build``, run it with no accelerator: the run, the ops and the instructions of each op
    in the first frame (from its ``cim_net_op`` call to the next, the last one's to the
    argmax of ``cim_net_run``)."""
    elf = build_elf(build, model=model_path, config="default", images=images, irq=False,
                    partition="mcu")
    mcu = Mcu(elf, NoBus(), window_bytes=1 << 22)
    starts: list[tuple[int, int]] = []
    entry = mcu.elf.symbols["cim_net_op"] & ~1
    mcu.uc.hook_add(U.UC_HOOK_CODE, lambda uc, *_: starts.append(
        (uc.reg_read(A.UC_ARM_REG_R1), mcu.instructions)), begin=entry, end=entry)
    ends: list[int] = []        # cim_net_run's argmax: the ops of a frame are done
    done = mcu.elf.symbols["cim_argmax64"] & ~1
    mcu.uc.hook_add(U.UC_HOOK_CODE, lambda *_: ends.append(mcu.instructions), begin=done,
                    end=done)
    run = mcu.run()
    ops = fb.parse_ops(mcu.blob())
    first = starts[:len(ops)]
    marks = [t for _, t in first] + [next(t for t in ends if t > first[-1][1])]
    return run, ops, [b - a for a, b in zip(marks, marks[1:])]


def op_table(model: golden.IntModel, ops: list[dict], counts: list[int]) -> str:
    """Markdown rows of instructions per op."""
    rows = ["| op | node | kernel | input -> output | conv path | MACs | instructions "
            "| per MAC |", "| --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    for i, (o, n) in enumerate(zip(ops, counts)):
        kind = fb.OP_KINDS[o["kind"] - 1]
        macs = conv_macs(o) if kind == "CONV" else 0
        path = ker = ""
        if kind == "CONV":
            path = "asm" if o["rq_mode"] == 1 and not o["residual"] else "asm dots, C requant"
            path += f", {8 * o['w_bytes']}-bit w" + ", residual" * o["residual"] \
                + ", signed" * o["out_signed"]
        if kind in ("CONV", "MAXPOOL"):
            ker = f"{o['kernel']}x{o['kernel']}/{o['stride']}"
        geo = f"{o['in_c']}x{o['in_h']}x{o['in_w']} -> {o['out_c']}" + (
            f"x{o['out_h']}x{o['out_w']}" if kind in ("CONV", "MAXPOOL") else "")
        per = f"{n / macs:.3f}" if macs else ""
        rows.append(f"| {i} | {model.nodes[i]['name']} | {ker} | {geo} | {path} | "
                    f"{f'{macs:,}' if macs else ''} | {n:,} | {per} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.mcu_partition", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/resnet14_fmnist_w4a4.npz")
    p.add_argument("--images", type=int, default=2)
    args = p.parse_args(argv)
    model = golden.load(REPO / args.model)
    build = REPO / "sim_build" / "firmware" / f"default-{Path(args.model).stem}-{args.images}-mcu"
    run, ops, counts = profile(args.model, args.images, build)
    x, _ = fb.test_images(model, args.images)
    want = golden.run(model, x)[model.manifest["output"]]
    exact = np.array_equal(np.array(run.logits), want) and run.results["exact"] == args.images
    macs = sum(conv_macs(o) for o in ops if o["kind"] == fb.OP_KINDS.index("CONV") + 1)
    conv = sum(f.get("CONV", 0) for f in run.frames) / len(run.frames)
    print(f"{args.model}, MCU partition, {args.images} images: logits "
          f"{'equal to' if exact else 'DIFFERENT from'} the golden model's\n")
    print(stage_table(run))
    print(f"\nconvs: {conv:,.0f} instructions for {macs:,} MACs = {conv / macs:.3f} per MAC\n")
    print(op_table(model, ops, counts))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
