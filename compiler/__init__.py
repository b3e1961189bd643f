"""The compiler: an integer model (:mod:`model`) and a hardware configuration
(:mod:`contract`) in, a layer program and its memory images out.

* :mod:`compiler.compile`: :func:`compile_model`, the :class:`Program` it returns and the
  functional model :func:`execute`.
* :mod:`compiler.cycles`: the analytic cycle model of the sequencer's schedule.
* :mod:`compiler.partition`: which part of the system runs each layer (:func:`partition`).
* :mod:`compiler.firmware_blob`: the model blob the Cortex-M4 firmware loads.
* :mod:`compiler.energy`: energy per frame and per MAC, a model (events counted from the
  program times per-event energies from the literature).

It imports the network side and the contract, never the gateware.
"""

from .compile import (
    Alloc,
    CompileError,
    LayerOverflow,
    Program,
    compile_model,
    execute,
    execute_memory,
    read_tensor,
    window_addresses,
    write_tensor,
)
from .partition import PARTITIONS, partition

__all__ = ["PARTITIONS", "Alloc", "CompileError", "LayerOverflow", "Program", "compile_model",
           "execute", "execute_memory", "partition", "read_tensor", "window_addresses",
           "write_tensor"]
