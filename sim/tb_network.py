"""Network bench: whole networks loaded and run over AHB, every readable layer output held
against the golden model.

The bench does what the firmware does, through the bus only (:class:`sim.cim.CimBus`):
compile the model for the target configuration (:func:`compiler.compile_model`),
write the layer program, the weight image and the parameter image into their windows, then
per image compute the MCU part with the golden model (:func:`model.golden.run` gives every
intermediate tensor), write the accelerator's input tensor into the activation window in the
buffer layout, enable the interrupt and START, and wait for ``IRQ`` (even-numbered images)
or poll ``STATUS.DONE`` (odd ones). Meanwhile it checks that the running accelerator's
memories and ``CTRL`` refuse writes (ERROR; a write that got through would corrupt the
result). Then it reads back every layer output that no later layer overwrote and compares it
with the golden model, element by element: a failure names the image, layer, channel,
position and the seed. The layers a later one overwrites are checked on the first image by
shortened runs (the program rewritten to end at that layer). The protocol checker and the
register scoreboard watch all along.

Environment (set by ``sim/test_sim.py`` / ``sim/bench.py``):

``CIM_SIM_MODEL``
    a model file (default ``models/digits_cnn_w4a4.npz``), or ``random:digits_cnn`` /
    ``random:resnet14`` for a small random W4A4 network from ``CIM_TEST_SEED``
    (:mod:`model.testnets`), run on random pixels; ``MODEL@PARTITION`` for another split of
    its layers (``@stem``: the first convolution and max pooling on the accelerator too,
    :mod:`compiler.partition`); or several of these separated by commas,
    run one after the other on the one build (only program, weights and parameters are
    written again: the bus cycles each load takes are logged as the cost of switching).
``CIM_SIM_IMAGES``
    images to run (default 2), the first of the test split of the dataset the model records
    (random pixels of its input shape when it records none: :func:`model.evaluate.model_inputs`).
``CIM_SIM_REPORT``
    a JSON file to write timings and cycle counts to (``sim/bench.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import cocotb
import numpy as np

import compiler
from contract import program as fmt
from hw.flow import MEASURED_DIRS, measured_name
from model import golden
from model.evaluate import model_inputs
from sim.ahb import Op
from sim.cim import Device, setup_device
from sim.regmodel import ERROR
from sim.testbench import REPO

DEFAULT_MODEL = "models/digits_cnn_w4a4.npz"
IDLE_CYCLES = 2000
"""Cycles clocked with the bus idle to measure the simulator's pace (with ``CIM_SIM_REPORT``)."""


def load_model(spec: str, seed: int, count: int, workdir: Path):
    """(IntModel, images (N, C, H, W) uint8, description) for ``CIM_SIM_MODEL``; a spec
    ``MODEL@PARTITION`` runs the model under that partition (:mod:`compiler.partition`)."""
    spec, _, split = spec.partition("@")
    if split:
        model, images, what = load_model(spec, seed, count, workdir)
        return compiler.partition(model, split), images, f"{what}, partition {split!r}"
    if spec.startswith("random:"):
        from model import export
        from model.testnets import random_net, small_specs
        which = spec.split(":", 1)[1]
        specs = {"digits_cnn": dataclasses.replace(small_specs(4, 4)[2], width=0.25),
                 "resnet14": dataclasses.replace(small_specs(4, 4)[1], res_bits=8)}
        net, x = random_net(specs[which], seed, batch=count)
        path = export.save(workdir / f"{which}.npz", *export.to_manifest(net))
        return golden.load(path), x.numpy().astype(np.uint8), f"random {which} (seed {seed})"
    path = Path(spec) if Path(spec).is_absolute() else REPO / spec
    model = golden.load(path)
    xs, what = model_inputs(model, count, seed=seed)
    return model, xs, f"{path.name} on {what}"


def model_specs() -> list[str]:
    """The models of ``CIM_SIM_MODEL``, in order."""
    specs = [s.strip() for s in os.environ.get("CIM_SIM_MODEL", DEFAULT_MODEL).split(",")]
    return [s for s in specs if s]


def shipped_cycles(config: str, spec: str) -> tuple[str, int] | None:
    """(file, total cycles) of the RTL measurement shipped in ``models/measured/`` for the
    model file ``spec`` on ``config`` (``hw.flow``, ``build.py``'s report), if there is one
    for this very file."""
    if spec.startswith("random:") or "@" in spec:
        return None
    model = REPO / spec
    path = REPO / MEASURED_DIRS[-1] / measured_name(model, config)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("model_sha256") != hashlib.sha256(model.read_bytes()).hexdigest():
        cocotb.log.info("%s measured another version of %s: not compared", path.name, spec)
        return None
    return str(path.relative_to(REPO)), int(data["total"])


def readable_layers(program: compiler.Program) -> list[str]:
    """Layers whose output no later layer overwrites: what can be read after the run (a raw
    layer's logits are in registers: always)."""
    out = []
    for i, name in enumerate(program.names):
        if name not in program.buffers:
            out.append(name)
            continue
        a = program.buffers[name]
        later = [program.buffers[n] for n in program.names[i + 1:] if n in program.buffers]
        if not any(b.base < a.base + a.words and a.base < b.base + b.words for b in later):
            out.append(name)
    return out


async def busy_probes(dev: Device, program: compiler.Program, image: np.ndarray | None = None,
                      slot: int | None = None) -> int:
    """While the accelerator runs: writes to every memory window (at words the program
    uses, with garbage) and a second START must answer ERROR; with an image program, so
    must a write to the running frame's image ``slot``, while ``image`` (the next frame's)
    goes into the other slot, first, whatever the state (double buffering: the next frame
    reads it, so a lost word shows there). Returns the probes made."""
    bus, env = dev.bus, dev.env
    staged = await bus.write_image(image, 1 - slot) if image is not None else 0
    status = await bus.read("STATUS")
    if not bus.field("STATUS", "BUSY", status):
        return staged
    garbage = env.rng.getrandbits
    src = program.buffers[program.names[0] if program.image else program.input_name]
    probes = [Op(addr=bus.win_addr("PROG", 4 * env.rng.randrange(len(program.program_words()))),
                 write=True, data=garbage(32)),
              Op(addr=bus.win_addr("WEIGHT", 4 * env.rng.randrange(len(program.weight_image))),
                 write=True, data=garbage(32)),
              Op(addr=bus.win_addr("PARAM", 4 * env.rng.randrange(len(program.param_image))),
                 write=True, data=garbage(32)),
              Op(addr=bus.win_addr("ACT", 4 * bus.slices * src.base), write=True,
                 data=garbage(32)),
              Op(addr=bus.win_addr("ACT", 4 * bus.slices * src.base), write=False),
              Op(addr=bus.reg_addr("CTRL"), write=True, data=bus.bits("CTRL", START=1))]
    if slot is not None:
        cfg = dev.regmap.config
        row = slot * cfg.image_slot_rows + env.rng.randrange(cfg.image_slot_rows)
        probes.append(Op(addr=bus.win_addr("IMAGE", row * cfg.image_size), write=True,
                         data=garbage(32)))
    await env.master.run(probes)
    status = await bus.read("STATUS")
    if not bus.field("STATUS", "BUSY", status):
        return staged     # finished meanwhile: the probes prove nothing either way
    for op in probes:
        env.check(op.resp == ERROR, f"{op.describe()} while busy: OKAY, not ERROR")
    return staged + len(probes)


def expected(program: compiler.Program, model: golden.IntModel, image: np.ndarray) -> dict:
    """What every layer of ``program`` must leave on ``image`` (batch of one): the golden
    model's tensors, and for the layers the golden model has no node for (an im2col layer)
    the functional model's, which the tests hold to the contract."""
    env = {"input": image[None].astype(np.int64), **golden.run(model, image[None])}
    if any(n not in env for n in program.names):
        env = {**compiler.execute(program, env[program.input_name]), **env}
    return env


async def write_input(dev: Device, program: compiler.Program, golden_env: dict,
                      image: np.ndarray, slot: int | None, *, staged: bool = False) -> None:
    """The frame's input: the image into image-buffer ``slot`` (unless ``staged``: the
    previous frame put it there) and IMAGE_SLOT, or the accelerator's input tensor into the
    activation buffer."""
    bus = dev.bus
    if program.image:
        if not staged:
            await bus.write_image(image, slot)
        await bus.write("IMAGE_SLOT", bus.bits("IMAGE_SLOT", SLOT=slot))
    else:
        await bus.write_tensor(program.buffers[program.input_name],
                               golden_env[program.input_name][0])


async def run_image(dev: Device, program: compiler.Program, model: golden.IntModel,
                    image: np.ndarray, k: int, *, probe: bool = True,
                    next_image: np.ndarray | None = None,
                    staged: bool = False) -> tuple[dict, list[str]]:
    """One frame: input, START, wait (IRQ for even ``k``, polling for odd), status, counters,
    read back and compare. With an image program, ``next_image`` goes into the other slot
    while this frame runs, and ``staged`` says this frame's image is there already. Returns
    (timings and counts, mismatch messages per layer)."""
    env, bus = dev.env, dev.bus
    w0, c0 = time.perf_counter(), env.monitor.cycles
    golden_env = expected(program, model, image)
    slot = k % 2 if program.image else None
    await write_input(dev, program, golden_env, image, slot, staged=staged)
    use_irq = k % 2 == 0
    await bus.write("IRQ_STATUS", 0xFFFF_FFFF)
    await bus.write("IRQ_ENABLE", bus.bits("IRQ_ENABLE", DONE=1, ERROR=1) if use_irq else 0)
    t_in, c_start = time.perf_counter(), env.monitor.cycles
    await bus.start()
    probes = await busy_probes(dev, program, next_image, None if slot is None else slot) \
        if probe else 0
    await bus.wait_done(irq=use_irq, max_cycles=2_000_000)
    run_cycles = env.monitor.cycles - c_start
    t_run = time.perf_counter()
    dev.model.idle()
    status = await bus.read("STATUS")
    env.check(bus.field("STATUS", "DONE", status) and not bus.field("STATUS", "ERROR", status)
              and not bus.field("STATUS", "BUSY", status),
              f"image {k}: STATUS 0x{status:08x} after the run (ERROR_CODE "
              f"{bus.field('STATUS', 'ERROR_CODE', status)})")
    env.check(await bus.read("IRQ_STATUS") == bus.bits("IRQ_STATUS", DONE=1),
              f"image {k}: IRQ_STATUS after the run")
    counters = {n: await bus.read(n) for n in ("CYCLES_BUSY", "CYCLES_COMPUTE", "CYCLES_STALL")}
    env.check(0 < counters["CYCLES_COMPUTE"] <= counters["CYCLES_BUSY"] <= run_cycles,
              f"image {k}: counters {counters}, {run_cycles} cycles from START to done")
    await bus.write("IRQ_STATUS", bus.bits("IRQ_STATUS", DONE=1))
    mismatches = []
    result = await bus.read("RESULT")
    env.check(bus.field("RESULT", "VALID", result) == int(program.raw),
              f"image {k}: RESULT 0x{result:08x}, VALID must be {int(program.raw)}")
    for name in readable_layers(program):
        if name not in program.buffers:         # the classifier: logits and class
            want = golden_env[name][0]
            got = await bus.read_logits(len(want))
            cls = bus.field("RESULT", "CLASS", result)
            if not np.array_equal(got, want) or cls != int(np.argmax(want)):
                mismatches.append(f"image {k}, layer {name}: logits {got.tolist()} class "
                                  f"{cls}, golden {want.tolist()} class {np.argmax(want)}")
            continue
        got = await bus.read_tensor(program.buffers[name])
        want = golden_env[name][0]
        bad = np.argwhere(got != want)
        if len(bad):
            c, y, x = bad[0]
            mismatches.append(f"image {k}, layer {name}: channel {c} position ({y}, {x}): RTL "
                              f"{got[c, y, x]}, golden {want[c, y, x]} ({len(bad)} of "
                              f"{want.size} differ)")
    await env.cycles(2)
    env.check(int(env.dut.IRQ.value) == 0, f"image {k}: IRQ still high after clearing DONE")
    t_end = time.perf_counter()
    info = dict(busy_cycles=counters["CYCLES_BUSY"], compute_cycles=counters["CYCLES_COMPUTE"],
                input_seconds=t_in - w0, run_seconds=t_run - t_in,
                readback_seconds=t_end - t_run, cycles=env.monitor.cycles - c0,
                seconds=t_end - w0, busy_probes=probes, irq=use_irq)
    cocotb.log.info("image %d: %d busy cycles (%d computing); wall %.1f s (input %.1f, run "
                    "%.1f, read back %.1f); %d busy-time probes refused", k,
                    counters["CYCLES_BUSY"], counters["CYCLES_COMPUTE"], t_end - w0,
                    t_in - w0, t_run - t_in, t_end - t_run, probes)
    return info, mismatches


async def hidden_layers(dev: Device, program: compiler.Program, model: golden.IntModel,
                        image: np.ndarray) -> list[str]:
    """The layers a later layer overwrites, each checked by a shortened run: descriptor
    ``i`` rewritten with ``last`` set, the input written again, START, then layer ``i``'s
    output read and compared; the descriptor is restored afterwards. Returns the layers
    checked (failures go through the bench's check)."""
    env, bus = dev.env, dev.bus
    golden_env = expected(program, model, image)
    checked = []
    for i, name in enumerate(program.names):
        if name in readable_layers(program):
            continue
        d = program.descriptors[i]
        prog_addr = bus.win_addr("PROG", 4 * fmt.DESC_WORDS * i)
        await env.master.write_words(prog_addr, dataclasses.replace(d, last=1).pack())
        await write_input(dev, program, golden_env, image, 0)
        await bus.start()
        await bus.wait_done(irq=False, max_cycles=2_000_000)
        dev.model.idle()
        status = await bus.read("STATUS")
        env.check(bus.field("STATUS", "LAYER", status) == i
                  and not bus.field("STATUS", "ERROR", status),
                  f"layer {name} as the last: STATUS 0x{status:08x}")
        got = await bus.read_tensor(program.buffers[name])
        want = golden_env[name][0]
        bad = np.argwhere(got != want)
        if len(bad):
            c, y, x = bad[0]
            env.check(False, f"run stopped after layer {name}: channel {c} position ({y}, "
                             f"{x}): RTL {got[c, y, x]}, golden {want[c, y, x]} ({len(bad)} "
                             f"of {want.size} differ)")
        await env.master.write_words(prog_addr, d.pack())
        checked.append(name)
    return checked


async def prepare(dut, name: str):
    return await setup_device(dut, name, idle=0.05, busy=0.05, ram_waits=1,
                              cancel_after_error=0.5)


def compile_for(dev: Device, spec: str, count: int):
    """Compiled program, model, images and their description of model ``spec`` on the
    device's configuration."""
    with tempfile.TemporaryDirectory() as tmp:
        model, images, what = load_model(spec, dev.env.seed, count, Path(tmp))
    program = compiler.compile_model(model, dev.regmap.config)
    dev.env.check(readable_layers(program), "no layer output survives the run")
    cocotb.log.info("%s on %s: %d accelerator layers, readable after the run: %s", what,
                    dev.regmap.config.name, len(program.names),
                    ", ".join(readable_layers(program)))
    return program, model, images


async def narrow_writes_refused(dev: Device) -> None:
    """Narrow writes to the word-only memories are refused (and must not corrupt them)."""
    env, bus = dev.env, dev.bus
    with env.monitor.master.permit("alignment"):
        for win in ("PROG", "WEIGHT", "PARAM"):
            ops = [Op(addr=bus.win_addr(win, 2), write=True, size=1, data=0xFFFF),
                   Op(addr=bus.win_addr(win, 1), write=True, size=0, data=0xFF)]
            await env.master.run(ops)
            env.check(all(op.resp == ERROR for op in ops), f"narrow write to {win}: OKAY")


async def one_network(dev: Device, spec: str, count: int) -> dict:
    """Load model ``spec`` over the bus (program, weights, parameters: what switching
    networks costs), run ``count`` images against the golden model, then the layers no full
    run leaves readable by shortened runs. Returns the load's and every image's figures."""
    env, bus = dev.env, dev.bus
    program, model, images = compile_for(dev, spec, count)
    c0, w0 = env.monitor.cycles, time.perf_counter()
    words = await bus.load(program)
    out = {"model": spec, "images": [],
           "load": dict(words=words, cycles=env.monitor.cycles - c0,
                        seconds=time.perf_counter() - w0)}
    await narrow_writes_refused(dev)
    shipped = shipped_cycles(dev.regmap.config.name, spec)
    for k, image in enumerate(images):
        # Image programs: frame k + 1's image goes in while frame k runs (double buffering).
        nxt = images[k + 1] if program.image and k + 1 < len(images) else None
        info, mismatches = await run_image(dev, program, model, image, k, next_image=nxt,
                                           staged=program.image and k > 0)
        env.check(not mismatches, f"{spec}: " + "\n".join(mismatches))
        if shipped is not None:
            env.check(info["busy_cycles"] == shipped[1],
                      f"image {k}: {info['busy_cycles']} busy cycles, but {shipped[0]} (the "
                      f"RTL measurement shipped for build.py's report) says {shipped[1]}: "
                      f"remeasure it with sim.accel_pysim --json")
        out["images"].append(info)
    hidden = await hidden_layers(dev, program, model, images[0])
    cocotb.log.info("%s: layers checked by shortened runs: %s", spec, ", ".join(hidden) or "none")
    env.check(set(hidden) | set(readable_layers(program)) == set(program.names),
              f"{spec}: some layer was never compared")
    cocotb.log.info("%s: loaded in %d bus cycles (%d words, %.1f s); %d images bit-exact",
                    spec, out["load"]["cycles"], words, out["load"]["seconds"], len(images))
    return out


@cocotb.test()
async def network(dut):
    """Every model of ``CIM_SIM_MODEL`` in turn on the one build: each loaded over the bus
    (only program, weights and parameters change), each bit-exact."""
    t0 = time.perf_counter()
    count = int(os.environ.get("CIM_SIM_IMAGES", "2"))
    dev = await prepare(dut, "network")
    env = dev.env
    report = {"model": os.environ.get("CIM_SIM_MODEL", DEFAULT_MODEL),
              "config": dev.regmap.config.name}

    if os.environ.get("CIM_SIM_REPORT"):
        # The simulator's own pace for sim/bench.py: the bus idle, the monitor sampling.
        w0 = time.perf_counter()
        await env.cycles(IDLE_CYCLES)
        report["idle"] = dict(cycles=IDLE_CYCLES, seconds=time.perf_counter() - w0)
    networks = [await one_network(dev, spec, count) for spec in model_specs()]
    env.check(any(i["busy_probes"] for n in networks for i in n["images"]),
              "no image ran long enough to probe the busy accelerator")
    if len(networks) > 1:
        cocotb.log.info("%d networks on one %s build, each bit-exact; switching (loading over "
                        "AHB) took: %s", len(networks), dev.regmap.config.name,
                        "; ".join(f"{n['model']} {n['load']['cycles']:,} bus cycles "
                                  f"({n['load']['words']:,} words)" for n in networks))
    board = dev.scoreboard
    # The last network's figures at the top level (sim/bench.py runs one model).
    report.update(load=networks[-1]["load"], images=networks[-1]["images"],
                  networks=networks, total_cycles=env.monitor.cycles,
                  seconds=time.perf_counter() - t0, checked=board.checked,
                  unchecked=board.unchecked)
    cocotb.log.info("%d transfers checked, %d not predictable (busy time)", board.checked,
                    board.unchecked)
    out = os.environ.get("CIM_SIM_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=1))


@cocotb.test(skip=os.environ.get("CIM_SIM_CORRUPT", "0") == "0")
async def corruption_is_caught(dut):
    """The comparison can fail: one weight word of the first layer written wrong (the
    others as compiled) must show up as a mismatch naming a layer, channel and position.
    Runs where ``CIM_SIM_CORRUPT=1`` (a small network; one frame)."""
    dev = await prepare(dut, "corruption_is_caught")
    env, bus = dev.env, dev.bus
    program, model, images = compile_for(dev, model_specs()[0], 1)
    await bus.load(program)
    # A weight word whose corruption changes some readable output (many do not: a row of an
    # input channel that is zero everywhere in this image); the compiler's functional model,
    # which equals the golden model, decides.
    x = {"input": images[0][None].astype(np.int64),
         **golden.run(model, images[0][None])}[program.input_name]
    readable = readable_layers(program)
    for _ in range(200):
        index = env.rng.randrange(len(program.weight_image))
        bad = program.weight_image.copy()
        bad[index] ^= 0x7777_7777
        out = compiler.execute(dataclasses.replace(program, weight_image=bad), x)
        ref = compiler.execute(program, x)
        if any((out[n] != ref[n]).any() for n in readable):
            break
    else:
        env.check(False, "no weight word found whose corruption changes an output")
    await env.master.write_words(bus.win_addr("WEIGHT", 4 * index), [int(bad[index])])
    _, mismatches = await run_image(dev, program, model, images[0], 0, probe=False)
    env.check(mismatches and "channel" in mismatches[0],
              f"a corrupted weight word ({index}) went unnoticed")
    cocotb.log.info("corrupted weight word %d caught: %s", index, mismatches[0])
