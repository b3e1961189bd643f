"""Firmware in the loop: the real Cortex-M4 firmware ELF drives the RTL.

The ELF (``make -C firmware`` for the target configuration, the model and the number of test
images, built under ``sim_build/firmware/`` when missing or stale) runs in the Unicorn
emulator (:class:`sim.fil.Mcu`) in a thread of its own (``cocotb.task.bridge``). Its loads
and stores in the accelerator's window become transfers of the bench's AHB master
(``cocotb.task.resume``; consecutive stores as bursts), with the protocol checker and the
register scoreboard watching every cycle as in the other benches; the DUT's ``IRQ`` is the
core's external interrupt 0. The firmware identifies the hardware, loads the model, then
classifies every embedded image: conv1 and max pooling on the core, the middle layers on the
RTL (interrupt or polling, ``CIM_SIM_WAIT``), average pooling and the classifier on the core.

Checked: the run ends DONE; every image's logits, read from the emulator's RAM at the end of
its frame, equal the golden model's (:func:`model.golden.run` on the dataset's test images,
which must equal the ones embedded in the ELF), and so do the classes; the firmware's own
counts (``exact``, ``agree``) agree; in interrupt mode one interrupt per frame was taken. A
failure names the image, the logit and the seed. The instructions and the estimated
Cortex-M4 cycles (:mod:`sim.m4_cycles`) per stage and frame are logged as a table (and per
conv1 MAC), with each frame's split into computing, bus and waiting cycles against the
accelerator's own cycle count.

Environment (``sim/test_sim.py``):

``CIM_SIM_MODEL``
    a model file (default ``models/digits_cnn_w4a4.npz``); one that records no dataset gets
    random inputs labelled with the golden model's classes
    (:func:`compiler.firmware_blob.test_images`).
``CIM_SIM_IMAGES``
    test images embedded in the firmware and classified (default 2).

The target may be any configuration, also one with changed fields (``tiny:macros=3``): the
firmware is built with its generated constants header (``make -C firmware CONFIG=...``).
``CIM_SIM_WAIT``
    ``irq`` (default) or ``poll``: how the firmware waits for the accelerator.
``CIM_SIM_PARTITION``
    ``accel`` (default), ``whole`` or ``mcu``: the blob's partition (``make -C firmware
    PARTITION=``); with ``whole`` every layer runs on the accelerator (the core writes each
    image into the image buffer, the next one while the current one computes, and reads the
    logits and the class); with ``mcu`` every layer runs on the core and the accelerator is
    never touched (no interrupt is taken), the bench only checks the results.
``CIM_SIM_REPORT``
    a JSON file to write the instruction and cycle counts, timings and results to: besides
    the instructions (``setup``, ``frames``: stage -> count) the estimated core cycles alike
    (``setup_cycles``, ``frame_cycles``, and the bus cycles ``setup_bus_cycles``,
    ``frame_bus_cycles``), ``stages`` (per stage: mean ``instructions``, ``cycles``,
    ``bus_cycles`` per frame, ``setup_instructions``, ``setup_cycles``), ``frame_totals`` (per
    frame, :func:`sim.fil.frame_totals`) and their mean ``frame_mean``; ``cycles`` is the
    simulated bus clock, ``core_cycles`` the core's estimate.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, First, RisingEdge

from compiler import firmware_blob as fb
from model import golden
from sim.cim import Device, setup_device
from sim.fil import (
    FirmwareError,
    Mcu,
    build_elf,
    frame_totals,
    read_waits,
    stage_stats,
    stage_table,
)
from sim.testbench import REPO, target

DEFAULT_MODEL = "models/digits_cnn_w4a4.npz"


class RtlBus:
    """:class:`sim.fil.Bus` on the bench's AHB master: blocking calls for the emulator's
    thread, each one a coroutine run by cocotb while the thread waits."""

    def __init__(self, dev: Device):
        self.dev = dev
        self.env = dev.env
        self.status = dev.regmap.register("STATUS").offset
        self.read = resume(self._read)
        self.write = resume(self._write)
        self.idle = resume(self._idle)

    def _irq(self) -> bool:
        return str(self.env.dut.IRQ.value) == "1"

    async def _read(self, offset: int) -> tuple[int, int, bool]:
        op = await self.env.master.read(offset)
        if offset == self.status and not op.resp \
                and not self.dev.bus.field("STATUS", "BUSY", op.rdata):
            self.dev.model.idle()           # the scoreboard predicts reads again
        return op.rdata, op.resp, self._irq()

    async def _write(self, offset: int, words: list[int]) -> tuple[int, bool]:
        master = self.env.master
        if len(words) == 1:
            resp = await master.write(offset, words[0])
        else:
            ops = await master.run(master.block_ops(offset, len(words), write=True,
                                                    data=words))
            resp = int(any(op.resp for op in ops))
        return resp, self._irq()

    async def _idle(self, cycles: int) -> bool:
        if not self._irq() and self.dev.model.busy is False:
            cycles = 1                      # idle hardware: more time would change nothing
        clk = ClockCycles(self.env.dut.clk, cycles)
        await (clk if self._irq() else First(RisingEdge(self.env.dut.IRQ), clk))
        return self._irq()


@cocotb.test()
async def firmware(dut):
    t0 = time.perf_counter()
    dev = await setup_device(dut, "firmware", idle=0.05, busy=0.05, ram_waits=1,
                             cancel_after_error=0.5)
    env = dev.env
    cfg = dev.regmap.config
    spec = os.environ.get("CIM_SIM_MODEL", DEFAULT_MODEL)
    count = int(os.environ.get("CIM_SIM_IMAGES", "2"))
    wait = os.environ.get("CIM_SIM_WAIT", "irq")
    partition = os.environ.get("CIM_SIM_PARTITION", "accel")
    env.check(wait in ("irq", "poll"), f"CIM_SIM_WAIT={wait!r}: irq or poll")
    env.check(partition in ("accel", "whole", "mcu"),
              f"CIM_SIM_PARTITION={partition!r}: accel, whole or mcu")
    path = Path(spec) if Path(spec).is_absolute() else REPO / spec
    model = golden.load(path)

    w0 = time.perf_counter()
    variant = f"{cfg.name}-{path.stem}-{count}-{wait}" + (f"-{partition}"
                                                          if partition != "accel" else "")
    build = REPO / "sim_build" / "firmware" / variant
    elf = build_elf(build, model=str(path), config=target(), images=count, irq=wait == "irq",
                    partition=partition)
    build_seconds = time.perf_counter() - w0
    # Progress by print: the emulator's thread must not call into the simulator, which
    # cocotb.log does (it stamps the simulation time).
    mcu = Mcu(elf, RtlBus(dev), window_bytes=1 << dev.regmap.addr_width,
              read_waits=read_waits(dev.regmap),
              accel_cycles_at=dev.regmap.register("CYCLES_TOTAL").offset,
              log=lambda line: print(f"firmware: {line}", flush=True))
    blob = mcu.blob()
    h = fb.parse_header(blob)
    images, labels = fb.test_images(model, count)
    embedded = np.frombuffer(blob[h["images_offset"]:h["images_offset"] + images.size],
                             np.uint8).reshape(images.shape)
    env.check(h["images_count"] == count and np.array_equal(embedded, images),
              "the images embedded in the firmware are not the dataset's test images")
    cocotb.log.info("%s on %s: %s, %d images, waiting by %s", path.name, cfg.name, elf,
                    count, wait)

    c0, w0 = env.monitor.cycles, time.perf_counter()
    try:
        run = await bridge(mcu.run)()
    except FirmwareError as e:          # a fault, a bus ERROR, no result: with the seed
        env.check(False, f"the firmware stopped: {e}")
    run_seconds, cycles = time.perf_counter() - w0, env.monitor.cycles - c0
    r = run.results
    env.check(r["state"] == 1 and r["status"] == 0,
              f"firmware ended in state {fb.RUN_STATES[r['state']]}, status {r['status']}, "
              f"hardware error {r['hw_error']}")

    want = golden.run(model, images)[model.manifest["output"]]
    env.check(len(run.logits) == count, f"{len(run.logits)} frames ran, not {count}")
    for k, (got, ref) in enumerate(zip(run.logits, want)):
        bad = np.flatnonzero(got != ref)
        if len(bad):
            i = bad[0]
            env.check(False, f"image {k}: logit {i}: firmware {got[i]}, golden {ref[i]} "
                             f"({len(bad)} of {len(ref)} differ)")
        env.check(r["classes"][k] == int(np.argmax(ref)),
                  f"image {k}: class {r['classes'][k]}, golden {int(np.argmax(ref))}")
    env.check(r["images"] == count and r["exact"] == count and r["agree"] == count,
              f"the firmware counted {r['images']} images, {r['exact']} exact, "
              f"{r['agree']} agreeing with the golden model")
    env.check(run.irqs == (count if wait == "irq" and partition != "mcu" else 0),
              f"{run.irqs} interrupts taken for {count} frames waiting by {wait}")

    convs = [o for o in fb.parse_ops(blob) if o["kind"] == fb.OP_KINDS.index("CONV") + 1]
    macs = sum(o["out_c"] * o["out_h"] * o["out_w"] * o["in_c"] * o["kernel"] ** 2
               for o in convs)
    table = stage_table(run, macs if partition == "accel" else None)
    if partition == "mcu":
        conv = sum(f.get("CONV", 0) for f in run.frames) / max(len(run.frames), 1)
        table += (f"\n{len(convs)} convs: {conv:,.0f} instructions for {macs:,} MACs = "
                  f"{conv / macs:.3f} per MAC")
    totals = frame_totals(run)
    mean = {k: sum(t[k] for t in totals) / max(len(totals), 1) for k in totals[0]} \
        if totals else {}
    if mean:
        table += ("\nper frame (mean, estimated Cortex-M4 cycles): {cycles:,.0f} core cycles = "
                  "{compute_cycles:,.0f} computing + {bus_cycles:,.0f} on the bus to the "
                  "accelerator + {wait_cycles:,.0f} waiting for it; the accelerator: "
                  "{accel_cycles:,.0f} cycles".format(**mean))
    correct = sum(int(c == y) for c, y in zip(r["classes"], labels))
    cocotb.log.info("firmware DONE: %d images, logits equal to the golden model's, %d of %d "
                    "classes equal the labels; %d instructions, %d interrupts, %d bus reads, "
                    "%d bus words written, %d bus cycles; wall %.1f s (ELF %.1f s, run %.1f "
                    "s)\n%s", count, correct, count, run.instructions, run.irqs, run.bus_reads,
                    run.bus_writes, cycles, time.perf_counter() - t0, build_seconds,
                    run_seconds, table)
    out = os.environ.get("CIM_SIM_REPORT")
    if out:
        Path(out).write_text(json.dumps(dict(
            model=spec, config=cfg.name, images=count, wait=wait, setup=run.setup,
            frames=run.frames, conv1_macs=macs, instructions=run.instructions, irqs=run.irqs,
            bus_reads=run.bus_reads, bus_writes=run.bus_writes, stage_bus=run.stage_bus,
            cycles=cycles, accel_cycles=r["accel_cycles"], stage_cycles=r["stage_cycles"],
            seconds=time.perf_counter() - t0, build_seconds=build_seconds,
            run_seconds=run_seconds, correct=correct, partition=partition,
            # The Cortex-M4 cycle estimate (sim/m4_cycles.py, firmware/README.md).
            core_cycles=run.cycles, core_bus_cycles=run.bus_cycles,
            setup_cycles=run.setup_cycles, frame_cycles=run.frame_cycles,
            setup_bus_cycles=run.setup_bus_cycles, frame_bus_cycles=run.frame_bus_cycles,
            stages=stage_stats(run), frame_totals=totals, frame_mean=mean), indent=1))
