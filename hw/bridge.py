"""AXI4-Lite to AHB-Lite bridge: how the standalone board build reaches the accelerator.

The standalone bitstream (:mod:`hw.board_top`) has no Cortex-M4. A Xilinx JTAG-to-AXI Master
core (AXI4-Lite) plays the MCU: Vivado's Hardware Manager issues single 32-bit reads and writes
over the programming cable, and :class:`AxiLiteToAhb` turns each into one AHB-Lite transfer to
the accelerator's slave.

Transfers
---------
* One transaction at a time. A write is taken when both its address (``aw``) and data
  (``w``) are valid, a read when its address (``ar``) is; a waiting write goes before a read.
* Address phase: ``HTRANS=NONSEQ``, ``HBURST=SINGLE``, ``HSEL=1`` (the bridge is the only
  master and the accelerator the only slave), ``HPROT`` from ``AxPROT`` (privileged, data
  or opcode; never bufferable or cacheable). The data phase follows with ``HTRANS=IDLE`` and
  lasts as long as the slave holds ``HREADYOUT`` low; its ``HRESP`` becomes the AXI response:
  OKAY -> OKAY, ERROR -> SLVERR.
* Reads are word reads (``HSIZE=WORD``) at ``ARADDR``; the slave answers a misaligned one
  with ERROR.
* Writes: the byte strobes choose the transfer. ``1111`` -> word, ``0011``/``1100`` ->
  halfword, one strobe -> byte, at ``AWADDR`` with its two low bits replaced by the first
  enabled lane (``WDATA`` already carries the data on its lanes, as AHB wants it). No strobe:
  OKAY without a bus transfer (AXI's no-op write). Any other pattern cannot be one AHB-Lite
  transfer: SLVERR without a bus transfer.

Latency: a transfer takes three cycles from the accepting handshake to the response when the
slave adds no wait states (handshake, address phase, data phase), plus the slave's waits.
"""

# No ``from __future__ import annotations``: wiring reads the port annotations as objects.
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from gateware.ahb import AHBLiteSignature, HBurst, HResp, HSize, HTrans

__all__ = ["AxiLiteSignature", "AxiLiteToAhb", "OKAY", "SLVERR", "strobe_transfer"]

OKAY, SLVERR = 0, 2   # AXI xRESP encodings


class AxiLiteSignature(wiring.Signature):
    """An AXI4-Lite port as its master drives it (``Out``: master to slave). Member names are
    those of the Xilinx cores' ``m_axi_*`` ports without the prefix.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr``/``araddr``: 32 (the only width this design uses).
    """

    def __init__(self, *, addr_width: int = 32):
        if addr_width != 32:
            raise ValueError(f"Address width must be 32, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(32), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(32), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return isinstance(other, AxiLiteSignature) and self.addr_width == other.addr_width

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self.addr_width})"


def strobe_transfer(strb: int) -> tuple[int, int] | None:
    """``(HSIZE, lane offset)`` of the AHB-Lite transfer for write strobes ``strb``; None when
    no single transfer writes exactly those lanes (``strb == 0`` is the caller's no-op). The
    reference for the bridge's strobe decoder."""
    for size, mask in ((HSize.WORD, 0b1111), (HSize.HALFWORD, 0b11), (HSize.BYTE, 0b1)):
        width = 1 << size.value
        for lane in range(0, 4, width):
            if strb == mask << lane:
                return size.value, lane
    return None


class AxiLiteToAhb(wiring.Component):
    """AXI4-Lite slave in, AHB-Lite master out (rules in the module docstring).

    Members
    -------
    axi : ``In(AxiLiteSignature())``
        From the AXI4-Lite master (the JTAG-to-AXI core).
    ahb : ``Out(AHBLiteSignature(addr_width=32))``
        To the AHB-Lite slave: ``HREADY`` is driven from the slave's ``HREADYOUT`` (one
        slave, no multiplexor).
    """

    axi: In(AxiLiteSignature())
    ahb: Out(AHBLiteSignature(addr_width=32))

    def elaborate(self, platform):
        m = Module()
        axi, ahb = self.axi, self.ahb

        addr = Signal(32)
        wdata = Signal(32)
        write = Signal()
        size = Signal(HSize)
        prot = Signal(3)
        resp = Signal(2)
        rdata = Signal(32)

        # Strobe decoder (strobe_transfer as logic).
        dec_ok, dec_size, dec_lane = Signal(), Signal(HSize), Signal(2)
        with m.Switch(axi.wstrb):
            for strb in range(1, 16):
                t = strobe_transfer(strb)
                if t is not None:
                    with m.Case(strb):
                        m.d.comb += [dec_ok.eq(1), dec_size.eq(t[0]), dec_lane.eq(t[1])]

        # One slave, no multiplexor: the bus's HREADY is the slave's HREADYOUT.
        m.d.comb += [
            ahb.HSEL.eq(1),
            ahb.HREADY.eq(ahb.HREADYOUT),
            ahb.HBURST.eq(HBurst.SINGLE),
            ahb.HADDR.eq(addr),
            ahb.HWRITE.eq(write),
            ahb.HSIZE.eq(size),
            # HPROT: [0] data (AxPROT[2]=0) / opcode, [1] privileged (AxPROT[0]).
            ahb.HPROT.eq(Cat(~prot[2], prot[0], Const(0, 2))),
            ahb.HWDATA.eq(wdata),
            axi.bresp.eq(resp),
            axi.rresp.eq(resp),
            axi.rdata.eq(rdata),
        ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(axi.awvalid & axi.wvalid):
                    m.d.comb += [axi.awready.eq(1), axi.wready.eq(1)]
                    m.d.sync += [addr.eq(axi.awaddr), wdata.eq(axi.wdata), write.eq(1),
                                 prot.eq(axi.awprot)]
                    with m.If(axi.wstrb == 0):
                        m.d.sync += resp.eq(OKAY)
                        m.next = "WRITE_RESP"
                    with m.Elif(~dec_ok):
                        m.d.sync += resp.eq(SLVERR)
                        m.next = "WRITE_RESP"
                    with m.Else():
                        m.d.sync += [addr[:2].eq(dec_lane), size.eq(dec_size)]
                        m.next = "ADDRESS"
                with m.Elif(axi.arvalid):
                    m.d.comb += axi.arready.eq(1)
                    m.d.sync += [addr.eq(axi.araddr), write.eq(0), size.eq(HSize.WORD),
                                 prot.eq(axi.arprot)]
                    m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += ahb.HTRANS.eq(HTrans.NONSEQ)
                # The previous data phase (if any) has ended, so HREADY is high: the address
                # phase ends in this cycle.
                with m.If(ahb.HREADY):
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(ahb.HREADY):
                    m.d.sync += rdata.eq(ahb.HRDATA)
                    with m.If(ahb.HRESP == HResp.ERROR):
                        m.d.sync += resp.eq(SLVERR)
                    with m.Else():
                        m.d.sync += resp.eq(OKAY)
                    with m.If(write):
                        m.next = "WRITE_RESP"
                    with m.Else():
                        m.next = "READ_RESP"
            with m.State("WRITE_RESP"):
                m.d.comb += axi.bvalid.eq(1)
                with m.If(axi.bready):
                    m.next = "IDLE"
            with m.State("READ_RESP"):
                m.d.comb += axi.rvalid.eq(1)
                with m.If(axi.rready):
                    m.next = "IDLE"
        return m
