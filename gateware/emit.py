"""Verilog of a design that holds CIM macros, with the macro emitted once.

Amaranth elaborates every instance of a component separately, so a design with 18 ``default``
macros would carry 18 identical copies of the macro's logic (52 MB of Verilog, about ten
minutes to emit). :func:`verilog` builds the design with ``macro_module`` set (the macros
become instances of one Verilog module, see :class:`~gateware.accelerator.Accelerator`) and
appends that module, emitted once from :class:`~gateware.cim_macro.CIMMacro`. The result
simulates and synthesizes as the plain design does; the Amaranth simulator runs the plain
design (it has no Verilog instances). The weight store's banks go the same way (``ram_module``,
:mod:`gateware.ram`, :mod:`gateware.weights`): Amaranth spells out a memory's initial contents
bit by bit, minutes for the ``default`` configuration's 16 Mbit.
"""

from __future__ import annotations

import re

from amaranth.back import verilog as amaranth_verilog

from contract.config import HwConfig

from .cim_macro import DEFAULT_STYLE, CIMMacro
from .ram import ram_verilog
from .weights import weight_ram

__all__ = ["convert", "macro_module_name", "ram_module_name", "verilog"]

_BARE = re.compile(r"^(  always @\*)\n(    [^\n]*;)$", re.M)
_HEADER = re.compile(r"^module [^;]*;$", re.M | re.S)


def convert(elaboratable, *, name: str, **kwargs) -> str:
    """``amaranth.back.verilog.convert``, with every bare ``always @*`` block of a clocked
    module also run on the clock.

    Yosys writes a combinational copy into part of a port as a one-statement ``always @*``
    block, e.g. ``always @* tiles__0__payload[31:0] = rowptr;``. Such a block runs only on an
    event on its inputs, and a register that keeps its declared initial value makes none: under
    SystemVerilog semantics (``iverilog -g2012``, as cocotb runs Icarus) a declaration's
    initialiser is no event, so the port stays X until ``rowptr`` first changes (Verilator
    evaluates everything once at start). Yosys's own guard for its processes, a register
    initialised at its declaration, fails the same way. So in each module with a ``clk``,
    every bare block is also sensitive to ``clk``: from the first clock edge on, the copy
    equals its source. Synthesis is unchanged (the block stays combinational)."""
    text = amaranth_verilog.convert(elaboratable, name=name, **kwargs)
    out, pos = [], 0
    for header in _HEADER.finditer(text):
        end = text.find("\nendmodule", header.end())
        if end < 0:
            raise ValueError(f"module at offset {header.start()} has no endmodule")
        body = text[header.end():end]
        if "\n  input clk;" in body:
            body = _BARE.sub(lambda b: f"{b[1]} begin\n    if (clk) begin end\n{b[2]}\n  end",
                             body)
        out += [text[pos:header.end()], body]
        pos = end
    return "".join(out) + text[pos:]


def macro_module_name(name: str) -> str:
    """Name of the macro module in the Verilog of a design named ``name``."""
    return f"{name}_cim_macro"


def ram_module_name(name: str) -> str:
    """Name of the weight-store bank module in the Verilog of a design named ``name``."""
    return f"{name}_weight_ram"


def verilog(factory, *, config: HwConfig, name: str, macro_style: str = DEFAULT_STYLE,
            **kwargs) -> str:
    """Verilog text of ``factory(config=config, macro_module=..., **kwargs)`` (a component
    class such as :class:`~gateware.accelerator.Accelerator`, or a function taking those
    keywords) under the module name ``name``, followed by the macro's module in
    ``macro_style`` (:data:`~gateware.cim_macro.STYLES`: ``"behavioral"`` for Verilator
    simulation of large configurations, ``"structural"`` for synthesis)."""
    if not isinstance(config, HwConfig):
        raise ValueError(f"Configuration must be a HwConfig, not {config!r}")
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"Module name must be a Verilog identifier, not {name!r}")
    macro, ram = macro_module_name(name), ram_module_name(name)
    design = factory(config=config, macro_module=macro, ram_module=ram, **kwargs)
    top = convert(design, name=name)
    body = convert(CIMMacro(**config.macro_params(), calibration=config.calibration,
                            style=macro_style), name=macro)
    return top + "\n" + body + "\n" + ram_verilog(weight_ram(config, module=ram))
