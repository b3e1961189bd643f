# amaranth: UnusedElaboratable=no
"""The simulation top level: a two-slave AHB-Lite fabric around the device under test.

The cocotb benches drive one AHB-Lite master (:mod:`sim.ahb`) into :class:`Harness`, which
plays the system around the accelerator the way a Cortex-M4 bus matrix would:

* a decoder: addresses ``0xF000_0000 .. 0xFFFF_FFFF`` select :class:`AhbRam` (a bystander
  slave with random wait states), every other address selects the device under test: the
  ``cim_top`` module emitted by :func:`gateware.top.verilog` (instantiated, so the benches
  test the very Verilog a user builds), or, for the bus benches that need no accelerator,
  :class:`ErrorSlave`;
* the response multiplexer: ``HREADY``, ``HRESP`` and ``HRDATA`` come from the slave that
  owns the current data phase, and ``HREADY`` is fed back to both slaves. So the device sees
  transfers to the other slave (``HSEL`` low) and ``HREADY`` held low by the other slave's
  wait states, as it would in a real system.

Each slave's own outputs and select are brought out (``dut_*``, ``ram_*``) so that a
protocol checker watches every slave separately. :class:`AhbRam` also misbehaves on request
(``ram_fault``, :class:`Fault`), which is how the checker's own tests show that it catches
each kind of violation on a real simulator.

This is test equipment, not gateware: it is never synthesized.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["MON", "MON_BUS", "MON_SLAVE", "RAM_BASE", "RAM_ERROR_OFFSET", "RAM_WORDS", "AhbRam",
           "ErrorSlave", "Fault", "Harness", "harness_verilog"]

RAM_BASE = 0xF000_0000
RAM_WORDS = 256
RAM_ERROR_OFFSET = 4 * RAM_WORDS
"""Offsets of the RAM window from here on (to ``0x0FFF_FFFF``) answer ERROR (unmapped)."""

MON_BUS = (("haddr", 32), ("hwdata", 32), ("htrans", 2), ("hwrite", 1), ("hsize", 3),
           ("hburst", 3), ("hprot", 4), ("hready", 1), ("hresp", 1), ("rst", 1))
"""The bus part of the ``mon`` output: every master signal, the bus HREADY and HRESP, and
the reset."""
MON_SLAVE = (("hrdata", 32), ("hsel", 1), ("hreadyout", 1), ("hresp", 1))
"""One slave's select and outputs."""
MON = (*MON_BUS, *((f"dut_{n}", w) for n, w in MON_SLAVE),
       *((f"ram_{n}", w) for n, w in MON_SLAVE))
"""Fields of the ``mon`` output, least significant first: :data:`MON_BUS`, then
:data:`MON_SLAVE` of the device (``dut_``) and of the RAM (``ram_``), so that a monitor reads
one cycle of the whole bus in one access."""

TOP_NAME = "tb_top"
DUT_NAME = "cim_top"

# HTRANS encodings (AMBA 3 AHB-Lite, table 3-1).
IDLE, BUSY, NONSEQ, SEQ = 0, 1, 2, 3


class Fault(enum.Enum, shape=3):
    """Deliberate misbehaviour of :class:`AhbRam`, for the checker's own tests."""

    NONE = 0
    SINGLE_CYCLE_ERROR = 1    #: ERROR with HREADYOUT high in its first cycle
    ERROR_THEN_OKAY = 2       #: first ERROR cycle followed by OKAY instead of ERROR
    WAIT_ON_IDLE = 3          #: a wait state in the data phase of an IDLE transfer
    ERROR_ON_IDLE = 4         #: a (well-formed) ERROR response to an IDLE transfer
    CORRUPT_READ = 5          #: bit 0 of read data flipped at offset 0x14
    HANG = 6                  #: a transfer to the error region never completes


def _slave_ports() -> dict:
    return {
        "HSEL": In(1), "HADDR": In(32), "HTRANS": In(2), "HWRITE": In(1), "HSIZE": In(3),
        "HWDATA": In(32), "HREADY": In(1),
        "HREADYOUT": Out(1, init=1), "HRESP": Out(1), "HRDATA": Out(32),
    }


class _State(enum.Enum, shape=3):
    NONE = 0     # no data phase
    WAIT = 1     # wait states (HREADYOUT low, OKAY)
    OK = 2       # last cycle of an OKAY data phase
    ERR1 = 3     # first ERROR cycle (HREADYOUT low)
    ERR2 = 4     # second ERROR cycle (HREADYOUT high)


class AhbRam(wiring.Component):
    """A 32-bit AHB-Lite RAM of ``words`` words with random wait states.

    Bytes, halfwords and words are read and written on their byte lanes (little endian).
    ERROR (two cycles) answers an offset at or past ``4 * words``, a size
    larger than the bus and a misaligned address; nothing is written then. Before its
    response every transfer takes ``min(lfsr & 3, waits)`` wait states from a 16-bit LFSR.

    Members
    -------
    The AHB-Lite slave ports (``HSEL`` .. ``HRDATA``); ``waits : In(2)``, the most wait
    states per transfer; ``fault : In(Fault)``, a deliberate protocol violation.
    """

    def __init__(self, *, words: int = RAM_WORDS):
        if words < 8 or words & (words - 1) or words > 1 << 20:
            raise ValueError(f"RAM words must be a power of two from 8 to 2**20, not {words}")
        self.words = words
        super().__init__({**_slave_ports(), "waits": In(2), "fault": In(Fault)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=self.words, init=[])
        rd = mem.read_port(domain="comb")
        wr = mem.write_port(granularity=8)

        state = Signal(_State)
        count = Signal(2)
        addr = Signal(32)
        write = Signal()
        size = Signal(3)
        error = Signal()
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(_lfsr_next(lfsr))

        fault = self.fault
        m.d.comb += [
            self.HREADYOUT.eq(~state.as_value().matches(_State.WAIT, _State.ERR1)),
            self.HRESP.eq(state.as_value().matches(_State.ERR1, _State.ERR2)),
            rd.addr.eq(addr[2:]),
            self.HRDATA.eq(rd.data ^ ((fault == Fault.CORRUPT_READ)
                                      & (addr[2:12] == 0x14 >> 2) & ~write)),
        ]

        # The write commits in the data phase's last cycle (HWDATA is valid then).
        lanes = Mux(size == 0, 0b0001, Mux(size == 1, 0b0011, 0b1111)) << addr[:2]
        m.d.comb += [wr.addr.eq(addr[2:]), wr.data.eq(self.HWDATA),
                     wr.en.eq(Mux((state == _State.OK) & write, lanes, 0))]

        def finish(is_error):
            return Mux(is_error, _State.ERR1, _State.OK)

        with m.Switch(state):
            with m.Case(_State.WAIT):
                stuck = (fault == Fault.HANG) & error
                with m.If(~stuck & (count <= 1)):
                    m.d.sync += state.eq(finish(error))
                with m.Else():
                    m.d.sync += count.eq(count - 1)
            with m.Case(_State.ERR1):
                m.d.sync += state.eq(Mux(fault == Fault.ERROR_THEN_OKAY, _State.OK,
                                         _State.ERR2))
            with m.Default():  # NONE, OK, ERR2: HREADYOUT is high, a new transfer may start
                with m.If(self.HREADY):
                    sel = self.HSEL
                    active = sel & self.HTRANS[1]
                    misaligned = Mux(self.HSIZE == 1, self.HADDR[0],
                                     Mux(self.HSIZE == 2, self.HADDR[:2] != 0, 0))
                    bad = (self.HADDR[:28] >= 4 * self.words) | (self.HSIZE > 2) | misaligned
                    n = Mux(lfsr[:2] > self.waits, self.waits, lfsr[:2])
                    idle_sel = sel & ~self.HTRANS[1]
                    m.d.sync += [addr.eq(self.HADDR), size.eq(self.HSIZE),
                                 write.eq(active & self.HWRITE), error.eq(bad),
                                 count.eq(n)]
                    with m.If(active):
                        with m.If((fault == Fault.HANG) & bad):
                            m.d.sync += state.eq(_State.WAIT)
                        with m.Elif(n != 0):
                            m.d.sync += state.eq(_State.WAIT)
                        with m.Elif(bad & (fault == Fault.SINGLE_CYCLE_ERROR)):
                            m.d.sync += state.eq(_State.ERR2)
                        with m.Else():
                            m.d.sync += state.eq(finish(bad))
                    with m.Elif(idle_sel & (fault == Fault.WAIT_ON_IDLE)):
                        m.d.sync += [state.eq(_State.WAIT), count.eq(1), error.eq(0)]
                    with m.Elif(idle_sel & (fault == Fault.ERROR_ON_IDLE)):
                        m.d.sync += state.eq(_State.ERR1)
                    with m.Else():
                        m.d.sync += state.eq(_State.NONE)
        return m


def _lfsr_next(lfsr: Signal):
    """Next state of a 16-bit Fibonacci LFSR (taps 16, 14, 13, 11)."""
    bit = lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]
    return (lfsr >> 1) | (bit << 15)


class ErrorSlave(wiring.Component):
    """A slave that answers every NONSEQ/SEQ transfer with ERROR (an AHB default slave) and
    IDLE/BUSY with a zero-wait OKAY: stands in for the accelerator in the bus benches."""

    def __init__(self):
        super().__init__(_slave_ports())

    def elaborate(self, platform):
        m = Module()
        state = Signal(_State)
        m.d.comb += [self.HREADYOUT.eq(state != _State.ERR1),
                     self.HRESP.eq(state.as_value().matches(_State.ERR1, _State.ERR2)),
                     self.HRDATA.eq(0)]
        with m.If(state == _State.ERR1):
            m.d.sync += state.eq(_State.ERR2)
        with m.Elif(self.HREADY):
            m.d.sync += state.eq(Mux(self.HSEL & self.HTRANS[1], _State.ERR1, _State.NONE))
        return m


class Harness(wiring.Component):
    """Master port, decoder, response multiplexer, :class:`AhbRam` and the device.

    Parameters
    ----------
    with_dut : bool
        Instantiate the ``cim_top`` module (its Verilog is compiled beside this one); without
        it an :class:`ErrorSlave` takes its address range.

    Members
    -------
    HADDR .. HWDATA : ``In``; HREADY, HRESP, HRDATA : ``Out``: the master's side of the bus.
    IRQ : ``Out(1)`` (0 without the device).
    dut_HSEL, dut_HREADYOUT, dut_HRESP, dut_HRDATA, ram_HSEL, ram_HREADYOUT, ram_HRESP,
    ram_HRDATA : ``Out``: each slave's own select and outputs, for the protocol checkers.
    ram_waits : ``In(2)``, ram_fault : ``In(Fault)``: see :class:`AhbRam`.
    mon : ``Out``: the same signals packed for monitors (:data:`MON`).
    """

    def __init__(self, *, with_dut: bool):
        self.with_dut = bool(with_dut)
        super().__init__({
            "HADDR": In(32), "HTRANS": In(2), "HWRITE": In(1), "HSIZE": In(3), "HBURST": In(3),
            "HPROT": In(4), "HWDATA": In(32),
            "HREADY": Out(1), "HRESP": Out(1), "HRDATA": Out(32), "IRQ": Out(1),
            "dut_HSEL": Out(1), "dut_HREADYOUT": Out(1), "dut_HRESP": Out(1),
            "dut_HRDATA": Out(32),
            "ram_HSEL": Out(1), "ram_HREADYOUT": Out(1), "ram_HRESP": Out(1),
            "ram_HRDATA": Out(32),
            "ram_waits": In(2), "ram_fault": In(Fault),
            "mon": Out(sum(w for _, w in MON)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = AhbRam()
        sel_ram = self.HADDR[28:] == RAM_BASE >> 28
        m.d.comb += [self.ram_HSEL.eq(sel_ram), self.dut_HSEL.eq(~sel_ram)]
        hready = self.HREADY
        for name in ("HADDR", "HTRANS", "HWRITE", "HSIZE", "HWDATA"):
            m.d.comb += getattr(ram, name).eq(getattr(self, name))
        m.d.comb += [ram.HSEL.eq(sel_ram), ram.HREADY.eq(hready), ram.waits.eq(self.ram_waits),
                     ram.fault.eq(self.ram_fault),
                     self.ram_HREADYOUT.eq(ram.HREADYOUT), self.ram_HRESP.eq(ram.HRESP),
                     self.ram_HRDATA.eq(ram.HRDATA)]
        if self.with_dut:
            m.submodules.dut = Instance(
                DUT_NAME, i_clk=ClockSignal(), i_rst=ResetSignal(),
                i_HSEL=self.dut_HSEL, i_HADDR=self.HADDR, i_HTRANS=self.HTRANS,
                i_HWRITE=self.HWRITE, i_HSIZE=self.HSIZE, i_HBURST=self.HBURST,
                i_HPROT=self.HPROT, i_HWDATA=self.HWDATA, i_HREADY=hready,
                o_HREADYOUT=self.dut_HREADYOUT, o_HRESP=self.dut_HRESP,
                o_HRDATA=self.dut_HRDATA, o_IRQ=self.IRQ)
        else:
            m.submodules.dut = dut = ErrorSlave()
            for name in ("HADDR", "HTRANS", "HWRITE", "HSIZE", "HWDATA"):
                m.d.comb += getattr(dut, name).eq(getattr(self, name))
            m.d.comb += [dut.HSEL.eq(self.dut_HSEL), dut.HREADY.eq(hready),
                         self.dut_HREADYOUT.eq(dut.HREADYOUT), self.dut_HRESP.eq(dut.HRESP),
                         self.dut_HRDATA.eq(dut.HRDATA), self.IRQ.eq(Const(0))]
        # The data phase belongs to the slave selected when the address phase was accepted.
        owner_ram = Signal()
        with m.If(hready):
            m.d.sync += owner_ram.eq(sel_ram)
        m.d.comb += [
            hready.eq(Mux(owner_ram, ram.HREADYOUT, self.dut_HREADYOUT)),
            self.HRESP.eq(Mux(owner_ram, ram.HRESP, self.dut_HRESP)),
            self.HRDATA.eq(Mux(owner_ram, ram.HRDATA, self.dut_HRDATA)),
        ]
        probes = {"haddr": self.HADDR, "hwdata": self.HWDATA, "htrans": self.HTRANS,
                  "hwrite": self.HWRITE, "hsize": self.HSIZE, "hburst": self.HBURST,
                  "hprot": self.HPROT, "hready": hready, "hresp": self.HRESP,
                  "rst": ResetSignal()}
        for prefix in ("dut", "ram"):
            for n, _ in MON_SLAVE:
                probes[f"{prefix}_{n}"] = getattr(self, f"{prefix}_{n.upper()}")
        m.d.comb += self.mon.eq(Cat(*(probes[n] for n, _ in MON)))
        return m


def harness_verilog(*, with_dut: bool) -> str:
    """Verilog of :class:`Harness` (module ``tb_top``; the device is a separate file)."""
    from gateware.emit import convert
    h = Harness(with_dut=with_dut)
    return convert(h, name=TOP_NAME, emit_src=False)
