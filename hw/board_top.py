"""Board-level top of the standalone bitstream: the accelerator, driven over JTAG.

A board build needs the accelerator's AHB-Lite bus to go somewhere. Without a Cortex-M4 in the
bitstream (its RTL needs an Arm licence), the bus master is a Xilinx **JTAG-to-AXI Master**
core (``jtag_axi``, AXI4-Lite) behind :class:`~hw.bridge.AxiLiteToAhb`: from Vivado's
Hardware Manager a host reads and writes the accelerator's registers and memories over the
programming cable, at the slave's own addresses (base 0). So the whole accelerator stays
observable (nothing is optimized away) and a bitstream can be brought up on any board with the
part, with one clock pin pair to set.

The ``jtag_axi`` core is vendor IP: it is not in this repository and cannot be generated here.
The Vivado script creates it (``create_ip``, :func:`jtag_axi_tcl`) before synthesis; the top
instantiates it by module name (:data:`JTAG_AXI`). Its AXI4-Lite ports are those of the
core's ``PROTOCOL=2`` configuration (``aclk``, ``aresetn``, ``m_axi_aw*``, ``m_axi_w*``,
``m_axi_b*``, ``m_axi_ar*``, ``m_axi_r*``).

The accelerator is the ``cim_top`` Verilog module (:func:`gateware.top.verilog`, the macro
emitted once), instantiated by name and added to the build as a source file, so that the
build's own conversion stays small.

Clock and reset: the platform's ``sync`` domain (board clock through a global buffer, gated
until the end of configuration; the board's reset button if it has one). The accelerator, the
bridge and the JTAG core run in it; they are held in reset for :data:`POR_CYCLES` cycles after
configuration and while the button is pressed.
"""

from __future__ import annotations

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)

from .bridge import AxiLiteToAhb

__all__ = ["JTAG_AXI", "POR_CYCLES", "BoardTop", "jtag_axi_tcl"]

JTAG_AXI = "cim_jtag_axi"
"""Module name of the JTAG-to-AXI Master core the Vivado script generates."""

POR_CYCLES = 16
"""Cycles the board top holds its logic in reset after configuration."""


def jtag_axi_tcl(name: str = JTAG_AXI) -> str:
    """Vivado Tcl that creates and generates the JTAG-to-AXI Master core ``name`` (AXI4-Lite,
    32-bit address and data), synthesized with the design (no out-of-context checkpoint)."""
    return "\n".join([
        "# Vendor IP (not in the repository): JTAG-to-AXI Master, AXI4-Lite (PG174).",
        f"create_ip -name jtag_axi -vendor xilinx.com -library ip -module_name {name}",
        "set_property -dict [list CONFIG.PROTOCOL {2} CONFIG.M_AXI_ADDR_WIDTH {32} "
        f"CONFIG.M_AXI_DATA_WIDTH {{32}}] [get_ips {name}]",
        f"set_property generate_synth_checkpoint false [get_files {name}.xci]",
        f"generate_target all [get_ips {name}]",
    ])


class BoardTop(Elaboratable):
    """The standalone board design (module docstring).

    Parameters
    ----------
    accel_module : str
        Verilog module name of the accelerator (ports of :class:`gateware.top.CIMTop`).
    """

    def __init__(self, *, accel_module: str = "cim_top"):
        if not (isinstance(accel_module, str) and accel_module.isidentifier()):
            raise ValueError(f"Accelerator module must be a Verilog identifier, not "
                             f"{accel_module!r}")
        self.accel_module = accel_module

    def elaborate(self, platform):
        m = Module()

        # Power-on reset: counts down from configuration (flip-flop initial values), then
        # follows the board's reset (if any) through the platform's synchronizer.
        por = Signal(range(POR_CYCLES), init=POR_CYCLES - 1, reset_less=True)
        with m.If(por != 0):
            m.d.sync += por.eq(por - 1)
        rst = Signal(init=1, reset_less=True)
        m.d.sync += rst.eq((por != 0) | ResetSignal("sync", allow_reset_less=True))
        m.domains.board = ClockDomain()
        m.d.comb += [ClockSignal("board").eq(ClockSignal("sync")),
                     ResetSignal("board").eq(rst)]

        m.submodules.bridge = bridge = DomainRenamer("board")(AxiLiteToAhb())
        axi, ahb = bridge.axi, bridge.ahb

        m.submodules.jtag = Instance(
            JTAG_AXI,
            i_aclk=ClockSignal("board"), i_aresetn=~ResetSignal("board"),
            o_m_axi_awaddr=axi.awaddr, o_m_axi_awprot=axi.awprot, o_m_axi_awvalid=axi.awvalid,
            i_m_axi_awready=axi.awready,
            o_m_axi_wdata=axi.wdata, o_m_axi_wstrb=axi.wstrb, o_m_axi_wvalid=axi.wvalid,
            i_m_axi_wready=axi.wready,
            i_m_axi_bresp=axi.bresp, i_m_axi_bvalid=axi.bvalid, o_m_axi_bready=axi.bready,
            o_m_axi_araddr=axi.araddr, o_m_axi_arprot=axi.arprot, o_m_axi_arvalid=axi.arvalid,
            i_m_axi_arready=axi.arready,
            i_m_axi_rdata=axi.rdata, i_m_axi_rresp=axi.rresp, i_m_axi_rvalid=axi.rvalid,
            o_m_axi_rready=axi.rready,
        )
        # The interrupt has no consumer here: the host polls STATUS over JTAG.
        m.submodules.accel = Instance(
            self.accel_module,
            i_clk=ClockSignal("board"), i_rst=ResetSignal("board"),
            i_HSEL=ahb.HSEL, i_HADDR=ahb.HADDR, i_HTRANS=ahb.HTRANS, i_HWRITE=ahb.HWRITE,
            i_HSIZE=ahb.HSIZE, i_HBURST=ahb.HBURST, i_HPROT=ahb.HPROT, i_HWDATA=ahb.HWDATA,
            i_HREADY=ahb.HREADY,
            o_HREADYOUT=ahb.HREADYOUT, o_HRESP=ahb.HRESP, o_HRDATA=ahb.HRDATA,
            o_IRQ=Signal(name="irq_unused"),
        )
        return m
