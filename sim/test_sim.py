"""pytest entry of the cocotb benches: one test per bench and simulator (``make sim``).

Each test builds its target (cached under ``sim_build/``, see :mod:`sim.runner`) and runs one
cocotb module in a simulator process; a failure lists the failing cocotb tests with their
messages and the seed. ``SIM`` picks simulators (``icarus``, ``verilator`` or both,
separated by spaces or commas; default both), ``WAVES=1`` records waveforms,
``CIM_TEST_SEED`` seeds every random choice. A simulator that is not installed skips its
tests with the reason.
"""

import importlib.util
import os
import shutil

import pytest

from sim import runner
from sim.seed import test_seed

pytestmark = pytest.mark.sim

SEED = test_seed()
ALL = runner.SIMULATORS
VERILATOR = ("verilator",)

# (name, target, cocotb module, simulators, environment of the bench)
BENCHES = [
    ("bus", "ahb", "sim.tb_ahb", ALL, {}),
    ("regs", "tiny", "sim.tb_regs", ALL, {}),
    # Icarus takes milliseconds per cycle of the accelerator: one image there.
    ("digits", "tiny", "sim.tb_network", ("icarus",),
     {"CIM_SIM_MODEL": "models/digits_cnn_w4a4.npz", "CIM_SIM_IMAGES": "1"}),
    ("digits", "tiny", "sim.tb_network", VERILATOR,
     {"CIM_SIM_MODEL": "models/digits_cnn_w4a4.npz", "CIM_SIM_IMAGES": "4"}),
    ("random_digits", "tiny", "sim.tb_network", ALL,
     {"CIM_SIM_MODEL": "random:digits_cnn", "CIM_SIM_IMAGES": "1", "CIM_SIM_CORRUPT": "1"}),
    ("random_resnet", "tiny", "sim.tb_network", VERILATOR,
     {"CIM_SIM_MODEL": "random:resnet14", "CIM_SIM_IMAGES": "2"}),
    # A short run of the program fuzzer (make fuzz runs thousands): mutated programs refused
    # or computed exactly, a valid run bit-exact after them.
    ("fuzz", "tiny", "sim.tb_fuzz", VERILATOR, {"CIM_FUZZ_COUNT": "150"}),
    ("regs", "default", "sim.tb_regs", VERILATOR, {}),
    # Several networks on the one default build, one after the other: the shipped digits CNN,
    # the network imported from Brevitas (QONNX), a random CIFAR-10-shaped ResNet14 (3 x 32 x
    # 32) and the shipped ResNet14, these two with every layer on the accelerator (the image
    # through the image buffer, double-buffered, and the im2col layer; the classifier's
    # logits and class from registers); 10 test images each.
    ("networks", "default", "sim.tb_network", VERILATOR,
     {"CIM_SIM_MODEL": "models/digits_cnn_w4a4.npz,models/fmnist_brevitas_w4a4.npz,"
                       "random:resnet14@whole,models/resnet14_fmnist_w4a4.npz@whole",
      "CIM_SIM_IMAGES": "10"}),
    # Firmware in the loop: the Cortex-M4 ELF in Unicorn drives the RTL (interrupt or polling).
    ("firmware", "tiny", "sim.tb_firmware", ("icarus",),
     {"CIM_SIM_MODEL": "models/digits_cnn_w4a4.npz", "CIM_SIM_IMAGES": "2",
      "CIM_SIM_WAIT": "irq"}),
    ("firmware", "tiny", "sim.tb_firmware", VERILATOR,
     {"CIM_SIM_MODEL": "models/digits_cnn_w4a4.npz", "CIM_SIM_IMAGES": "4",
      "CIM_SIM_WAIT": "poll"}),
    # The shipped ResNet14 on `default` with every layer on the accelerator: the core writes
    # each image (the next one while the current one computes) and reads the logits and the
    # class. (The reference's split, conv1 on the core, runs on `tiny` above; on `default` it
    # is the README's measurement command: its model load and conv1 take ten minutes here.)
    ("firmware_resnet14_whole", "default", "sim.tb_firmware", VERILATOR,
     {"CIM_SIM_MODEL": "models/resnet14_fmnist_w4a4.npz", "CIM_SIM_IMAGES": "10",
      "CIM_SIM_WAIT": "irq", "CIM_SIM_PARTITION": "whole"}),
]


def _missing_for(module: str) -> str | None:
    """What a bench needs besides the simulator (the firmware benches: the ARM toolchain
    that builds the ELF, the emulator that runs it and the decoder of its cycle estimate)."""
    if module != "sim.tb_firmware":
        return None
    if shutil.which("arm-none-eabi-gcc") is None:
        return "arm-none-eabi-gcc not found (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi)"
    for package in ("unicorn", "capstone"):
        if importlib.util.find_spec(package) is None:
            return f"the {package} package is not installed"
    return None


def _selected() -> tuple[str, ...]:
    wanted = os.environ.get("SIM", "").replace(",", " ").split()
    bad = set(wanted) - set(ALL)
    if bad:
        raise ValueError(f"SIM={os.environ['SIM']!r}: unknown simulator(s) {sorted(bad)}; "
                         f"valid: {', '.join(ALL)}")
    return tuple(wanted) or ALL


PARAMS = [pytest.param(target, module, sim, env, id=f"{name}-{target}-{sim}")
          for name, target, module, sims, env in BENCHES
          for sim in sims if sim in _selected()]


@pytest.mark.parametrize("target,module,sim,env", PARAMS)
def test_bench(target, module, sim, env):
    reason = runner.missing_tool(sim) or _missing_for(module)
    if reason:
        pytest.skip(f"{sim}: {reason}")
    r = runner.run(target, sim, module, seed=SEED, env=env)
    b = r["build"]
    print(f"{module} on {sim}/{target}: {r['tests']} cocotb tests passed; build "
          f"{'cached' if b.cached else f'{b.seconds:.0f} s'}, run {r['seconds']:.0f} s")
