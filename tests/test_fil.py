"""Firmware in the loop without a simulator: the Cortex-M4 ELF in Unicorn (:mod:`sim.fil`)
on :class:`tests.firmware_host.FakeAccelerator` as the bus backend.

Covers what the cocotb bench (``sim/tb_firmware.py``) relies on, in seconds: the ELF loader,
the MMIO window with posted writes, the System Control Space (DWT cycle counter, NVIC), the
exception entry and return (also when interrupts land in the middle of computations), bus
faults, and the per-stage instruction accounting (per block, against per instruction).
Needs ``arm-none-eabi-gcc``, ``unicorn`` and ``capstone`` (skipped with the reason without
them).
"""

import random
import shutil

import numpy as np
import pytest

from compiler import firmware_blob as fb
from contract.config import get_config
from gateware.regmap import CIM_BASE, register_map
from model import data, golden
from sim.seed import test_seed

from .firmware_host import FakeAccelerator

pytest.importorskip("unicorn", reason="the unicorn package runs the firmware ELF")
pytest.importorskip("capstone", reason="capstone decodes the firmware for the cycle estimate")
from sim import fil  # noqa: E402  (imports unicorn)

SEED = test_seed()
DIGITS = "models/digits_cnn_w4a4.npz"
IMAGES = 2
TINY = get_config("tiny")
WINDOW = 1 << register_map(TINY).addr_width


class FakeBus:
    """:class:`sim.fil.Bus` on the register-level fake; IRQ = IRQ_STATUS & IRQ_ENABLE."""

    def __init__(self, fake: FakeAccelerator):
        self.fake = fake
        self.status = fake.map.register("IRQ_STATUS").offset
        self.enable = fake.map.register("IRQ_ENABLE").offset
        self.idles = 0

    def irq(self) -> bool:
        return bool(self.fake.regs[self.status] & self.fake.regs[self.enable])

    def read(self, offset):
        n = len(self.fake.errors)
        value = self.fake.read32(offset)
        return value, int(len(self.fake.errors) > n), self.irq()

    def write(self, offset, words):
        n = len(self.fake.errors)
        for i, w in enumerate(words):
            self.fake.write32(offset + 4 * i, w)
        return int(len(self.fake.errors) > n), self.irq()

    def idle(self, cycles):
        self.idles += 1
        return self.irq()


class NoisyBus(FakeBus):
    """Also raises the line at random moments (seeded) while the interrupt is enabled: the
    handler then finds nothing to clear, and whatever it interrupted must not notice."""

    def __init__(self, fake, rng):
        super().__init__(fake)
        self.rng = rng

    def irq(self) -> bool:
        return super().irq() or bool(self.fake.regs[self.enable] and self.rng.random() < 0.3)


@pytest.fixture(scope="module")
def elfs(tmp_path_factory):
    missing = [t for t in ("arm-none-eabi-gcc", "make") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found (Debian: gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi)")
    try:
        fb.test_images(golden.load(DIGITS), 1)
    except data.DatasetError as e:
        pytest.skip(f"dataset not available: {e}")
    base = tmp_path_factory.mktemp("fil")
    return {wait: fil.build_elf(base / wait, model=DIGITS, config="tiny", images=IMAGES,
                                irq=wait == "irq") for wait in ("irq", "poll")}


@pytest.fixture(scope="module")
def want():
    model = golden.load(DIGITS)
    x, _ = fb.test_images(model, IMAGES)
    return golden.run(model, x)[model.manifest["output"]]


def run(elf, bus=None, **kw):
    bus = bus or FakeBus(FakeAccelerator(TINY))
    return fil.Mcu(elf, bus, window_bytes=WINDOW, **kw).run(), bus


@pytest.mark.parametrize("wait", ["irq", "poll"])
def test_firmware_on_fake_accelerator(elfs, want, wait):
    """The whole application: DONE, every frame's logits equal to the golden model's, one
    interrupt per frame when it waits for them, every stage of every frame counted, in
    instructions and in estimated cycles (split into computing, bus and waiting)."""
    rm = register_map(TINY)
    r, bus = run(elfs[wait], read_waits=fil.read_waits(rm),
                 accel_cycles_at=rm.register("CYCLES_TOTAL").offset)
    res = r.results
    assert res["magic"] == fb.RESULTS_MAGIC and res["state"] == 1 and res["status"] == 0
    assert res["images"] == res["exact"] == res["agree"] == IMAGES
    assert len(r.logits) == IMAGES
    for k in range(IMAGES):
        assert np.array_equal(r.logits[k], want[k]), f"image {k}"
        assert res["classes"][k] == int(np.argmax(want[k]))
    assert r.irqs == (IMAGES if wait == "irq" else 0)
    assert not bus.fake.errors
    assert r.setup["LOAD"] > 0 and len(r.frames) == IMAGES
    for f in r.frames:
        assert {"CONV", "OFFLOAD_WRITE", "OFFLOAD_WAIT", "OFFLOAD_READ", "AVGPOOL",
                "FC"} <= set(f)
        assert f.get("IRQ", 0) > 0 if wait == "irq" else "IRQ" not in f
    total = sum(r.setup.values()) + sum(sum(f.values()) for f in r.frames)
    assert total == r.instructions
    assert [set(f) for f in r.frames] == [set(f) for f in r.frame_cycles]
    for t in fil.frame_totals(r):
        assert t["compute_cycles"] + t["bus_cycles"] + t["wait_cycles"] == t["cycles"]
        assert t["instructions"] < t["cycles"] < 3 * t["instructions"]
        assert t["bus_cycles"] > 0 and t["accel_cycles"] > 0
    stats = fil.stage_stats(r)
    assert stats["LOAD"]["setup_cycles"] == r.setup_cycles["LOAD"]
    assert stats["CONV"]["cycles"] == sum(f["CONV"] for f in r.frame_cycles) / IMAGES
    # The model load goes out in posted blocks: every word of the three images once.
    h = fb.parse_header(fil.Mcu(elfs[wait], FakeBus(FakeAccelerator(TINY)),
                                window_bytes=WINDOW).blob())
    assert r.stage_bus["LOAD"][1] == h["program_words"] + h["weight_words"] + h["param_words"]
    assert "CONV" in fil.stage_table(r, 1000)


def test_block_counts_equal_instruction_counts(elfs):
    """Counting per translated block (with the corrections where a block is left early or a
    marker written mid-block) gives the per-instruction counts, whatever the slicing: the
    instructions, the estimated cycles and the bus cycles, per stage and frame."""
    waits = fil.read_waits(register_map(TINY))
    ref, _ = run(elfs["irq"], count="code", slice_instructions=10**9, read_waits=waits)
    assert ref.cycles > 1.2 * ref.instructions and ref.bus_cycles > ref.bus_reads
    assert ref.cycles == sum(ref.setup_cycles.values()) + sum(
        sum(f.values()) for f in ref.frame_cycles)
    for kw in (dict(count="block", slice_instructions=10**9),
               dict(count="block", slice_instructions=997),
               dict(count="code", slice_instructions=131)):
        r, _ = run(elfs["irq"], read_waits=waits, **kw)
        assert (r.setup, r.frames, r.instructions) == (ref.setup, ref.frames,
                                                       ref.instructions), kw
        assert (r.setup_cycles, r.frame_cycles, r.cycles) == (
            ref.setup_cycles, ref.frame_cycles, ref.cycles), kw
        assert (r.setup_bus_cycles, r.frame_bus_cycles, r.bus_cycles) == (
            ref.setup_bus_cycles, ref.frame_bus_cycles, ref.bus_cycles), kw


@pytest.mark.parametrize("wait", ["irq", "poll"])
def test_every_instruction_has_a_cycle_class(elfs, wait):
    """The whole code of the firmware (every executable section without its literal pools)
    decodes, and every instruction has a class of the Cortex-M4 table (sim/m4_cycles.py);
    an unknown one would raise."""
    from sim import m4_cycles as m4
    ranges = m4.code_ranges(elfs[wait])
    prog = m4.program(elfs[wait])
    assert sum(i.size for i in prog.values()) == sum(len(code) for _, code in ranges) > 8000
    classes = {i.cls for i in prog.values()}
    assert {"load", "store", "multiply", "branch", "it", "load_multiple"} <= classes
    assert all(i.cls in m4.CLASSES for i in prog.values())


def test_dwt_cycle_counter(elfs):
    """The firmware's own stage timing (DWT CYCCNT, one cycle per instruction) agrees with
    the emulator's accounting: per stage, up to the few instructions of ``mark()`` between
    its CYCCNT read and its marker write at each boundary. IDLE: the emulator also counts
    the start-up before main() starts the counter."""
    r, _ = run(elfs["poll"])
    fw = r.results["stage_cycles"]
    marks = r.results["marks"]
    for i, name in enumerate(fb.STAGES):
        ours = r.setup.get(name, 0) + sum(f.get(name, 0) for f in r.frames)
        if name == "IDLE":
            assert 0 < fw[i] < ours
        else:
            assert ours > 0 or name == "MAXPOOL"        # the digits CNN has no max pooling
            assert abs(fw[i] - ours) <= 8 * marks, (name, fw[i], ours)
    assert sum(fw) < r.instructions


def test_interrupts_anywhere(elfs, want):
    """Interrupts taken between any two slices (97 instructions), in the middle of the conv
    kernel, the pooling and the classifier: the results do not change (the frame, stack
    alignment, flags, IT state and FPU registers are restored)."""
    bus = NoisyBus(FakeAccelerator(TINY), random.Random(SEED))
    r, _ = run(elfs["irq"], bus, slice_instructions=97)
    assert r.results["state"] == 1 and r.results["exact"] == IMAGES, f"seed {SEED}"
    assert r.irqs > 10 * IMAGES, f"seed {SEED}"
    for k in range(IMAGES):
        assert np.array_equal(r.logits[k], want[k]), f"image {k}, seed {SEED}"
    assert sum(f.get("IRQ", 0) for f in r.frames) > 0


def test_bus_error_is_a_fault(elfs):
    """An ERROR response stops the run with the address and the instruction."""

    class ErrorBus(FakeBus):
        def read(self, offset):
            value, _, irq = super().read(offset)
            return value, int(offset == 0), irq

    with pytest.raises(fil.BusFault, match=f"read at 0x{CIM_BASE:08x}"):
        run(elfs["poll"], ErrorBus(FakeAccelerator(TINY)))


def test_the_firmware_sees_no_device(elfs):
    """Another MAGIC: the firmware stops FAILED with CIM_ERR_NO_DEVICE (7), no frame run."""
    r, _ = run(elfs["poll"], FakeBus(FakeAccelerator(TINY, magic=0x1234)))
    assert r.results["state"] == 2 and r.results["status"] == 7
    assert r.frames == [] and r.logits == []


def test_elf_loader(elfs):
    elf = fil.Elf.load(elfs["poll"])
    assert elf.symbols["cim_results"] == fil.RAM and elf.symbols["vector_table"] == 0
    assert elf.symbols["workspace"] % fb.WORKSPACE_ALIGN == 0
    assert any(addr == 0 for addr, _, _ in elf.segments)
    with pytest.raises(fil.FirmwareError, match="not a 32-bit"):
        fil.Elf.load(__file__)


def test_mcu_partition_profile(tmp_path):
    """The MCU partition's ELF with no accelerator: exact logits, and the per-op counts of
    sim.mcu_partition add up to the frame's (bookkeeping between frames aside)."""
    from sim import mcu_partition
    try:
        fb.test_images(golden.load(DIGITS), 1)
    except data.DatasetError as e:
        pytest.skip(f"dataset not available: {e}")
    run, ops, counts = mcu_partition.profile(DIGITS, 1, tmp_path)
    assert run.results["exact"] == 1 and len(counts) == len(ops)
    frame = run.frames[0]
    assert 0 <= sum(frame.values()) - sum(counts) < 1_000
    conv = sum(n for n, o in zip(counts, ops) if o["kind"] == fb.OP_KINDS.index("CONV") + 1)
    assert abs(conv - frame["CONV"]) < 100 * len(ops)
