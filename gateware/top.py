"""Top level: the accelerator behind its AHB-Lite slave.

:class:`CIMTop` is what an SoC instantiates next to its Cortex-M4: one AHB-Lite slave port
with the AMBA signal names, an interrupt line, and the default ``sync`` domain (Verilog
``clk`` and ``rst``, reset active high and synchronous). :func:`verilog` emits it.

The address map, registers and bus rules are those of :mod:`gateware.regmap` and
:mod:`gateware.ahb`; ``docs/registers.md`` lists them per configuration.
"""

# No ``from __future__ import annotations`` here: wiring reads the port annotations of CIMTop
# as objects.
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from contract.config import HwConfig

from .accelerator import Accelerator
from .ahb import CIMSlave
from .cim_macro import DEFAULT_STYLE
from .emit import verilog as _emit_verilog
from .regmap import register_map

__all__ = ["CIMTop", "verilog"]


class CIMTop(wiring.Component):
    """The CIM accelerator with its AHB-Lite slave port.

    Parameters
    ----------
    config : HwConfig
        Hardware configuration (:func:`contract.config.get_config`).
    addr_width : int or None
        Bits of ``HADDR`` the slave decodes: its address space is ``2 ** addr_width`` bytes,
        every address in it that the map does not cover answers ERROR, and the bits above are
        ignored (the system decoder's ``HSEL`` covers them). ``None``: the smallest space that
        holds the map.
    macro_module : str or None
        Passed to :class:`~gateware.accelerator.Accelerator`: ``None`` for simulation in
        Amaranth, a Verilog module name to instantiate the macros as one module emitted once
        (what :func:`verilog` does).

    Members
    -------
    HSEL, HADDR, HTRANS, HWRITE, HSIZE, HBURST, HPROT, HWDATA, HREADY : ``In``
        AHB-Lite slave inputs (32-bit address and data).
    HREADYOUT, HRESP, HRDATA : ``Out``
        AHB-Lite slave outputs.
    IRQ : ``Out(1)``
        Interrupt request (level, active high): an enabled bit of ``IRQ_STATUS`` is set.

    Attributes
    ----------
    regmap : gateware.regmap.RegMap
        The register map the slave decodes.
    """

    HSEL: In(1)
    HADDR: In(32)
    HTRANS: In(2)
    HWRITE: In(1)
    HSIZE: In(3)
    HBURST: In(3)
    HPROT: In(4)
    HWDATA: In(32)
    HREADY: In(1)
    HREADYOUT: Out(1)
    HRESP: Out(1)
    HRDATA: Out(32)
    IRQ: Out(1)

    def __init__(self, *, config: HwConfig, addr_width: int | None = None,
                 macro_module: str | None = None, ram_module: str | None = None):
        if not isinstance(config, HwConfig):
            raise ValueError(f"Configuration must be a HwConfig, not {config!r}")
        self.config = config
        self.macro_module = macro_module   # validated by the Accelerator
        self.ram_module = ram_module
        # register_map validates addr_width against the map.
        self.regmap = register_map(config, addr_width=addr_width)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = Accelerator(config=self.config,
                                                 macro_module=self.macro_module,
                                                 ram_module=self.ram_module)
        m.submodules.slave = slave = CIMSlave(regmap=self.regmap, accel=accel.signature)
        wiring.connect(m, slave.accel, accel)
        # The flat AMBA-named ports onto the slave's bus interface (same names; the slave's
        # members carry the HTRANS/HSIZE/HBURST/HRESP enums, the ports plain bits).
        for name, member in slave.bus.signature.members.items():
            inner, port = getattr(slave.bus, name), getattr(self, name)
            if member.flow == In:
                m.d.comb += inner.eq(port)
            else:
                m.d.comb += port.eq(inner)
        m.d.comb += self.IRQ.eq(slave.irq)
        return m


def verilog(config: HwConfig, name: str = "cim_top", *, addr_width: int | None = None,
            macro_style: str = DEFAULT_STYLE) -> str:
    """Verilog of :class:`CIMTop` for ``config``: module ``name`` (ports ``clk``, ``rst`` and
    those of :class:`CIMTop`), followed by the CIM macro's module, emitted once in
    ``macro_style`` (:func:`gateware.emit.verilog`)."""
    return _emit_verilog(CIMTop, config=config, name=name, addr_width=addr_width,
                         macro_style=macro_style)
