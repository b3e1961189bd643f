"""pytest entry of the cocotb benches: one test per bench and simulator (``make sim``).

Each test builds its target (cached under ``sim_build/``, see :mod:`sim.runner`) and runs one
cocotb module in a simulator process; a failure lists the failing cocotb tests with their
messages and the seed. ``SIM`` picks simulators (``icarus``, ``verilator`` or both,
separated by spaces or commas; default both), ``WAVES=1`` records waveforms,
``CIM_TEST_SEED`` seeds every random choice. A simulator that is not installed skips its
tests with the reason.
"""

import os

import pytest

from sim import runner

pytestmark = pytest.mark.sim

SEED = int(os.environ.get("CIM_TEST_SEED", "1234"))
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
    ("regs", "default", "sim.tb_regs", VERILATOR, {}),
    ("resnet14", "default", "sim.tb_network", VERILATOR,
     {"CIM_SIM_MODEL": "models/resnet14_fmnist_w4a4.npz", "CIM_SIM_IMAGES": "10"}),
]


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
    reason = runner.missing_tool(sim)
    if reason:
        pytest.skip(f"{sim}: {reason}")
    r = runner.run(target, sim, module, seed=SEED, env=env)
    b = r["build"]
    print(f"{module} on {sim}/{target}: {r['tests']} cocotb tests passed; build "
          f"{'cached' if b.cached else f'{b.seconds:.0f} s'}, run {r['seconds']:.0f} s")
