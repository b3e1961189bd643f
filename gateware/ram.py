"""A block RAM with one write port and several read ports, as Amaranth or as a Verilog module.

Amaranth writes a memory's initial contents into its output bit by bit, even when they are all
zero: the ``default`` configuration's 16 Mbit weight store alone took about three minutes of
the four its Verilog took to emit. :class:`RAM` is an :class:`~amaranth.lib.memory.Memory`
for the Amaranth simulator and small designs; with ``module`` set it is an instance of a plain
Verilog RAM (:func:`ram_verilog`, the usual inference template, contents zero as on the
FPGA), emitted once beside the design by :func:`gateware.emit.verilog`.

Ports (both forms): one write port (``w_addr``, ``w_data``, ``w_en`` with one bit per
``granularity`` bits of the word) and ``read_ports`` read ports (``addr``, ``en`` in;
``data`` out): a read with ``en`` high returns the word at ``addr`` in the next cycle (the
word before a write to it in the same cycle) and holds it while ``en`` is low.

``shared``: read port 0 shares the write port (port A of a true-dual-port RAM, read port 1 is
port B): the RAM reads on port 0 only in cycles that write nothing (a read then is lost: its
``data`` holds the word before), so that a two-port RAM serves one writer and two readers
whose reads never meet a write (the weight store: the bus writes only while the accelerator
is idle). A read on port 0 in a cycle that writes nothing behaves as above.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, Mux, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["RAM", "RAM_STYLES", "ram_verilog"]

RAM_STYLES = ("block", "ultra", "distributed", "registers")
"""Values of Vivado's ``ram_style`` attribute that :class:`RAM` accepts."""


class RAM(wiring.Component):
    """Simple multi-read-port RAM (module docstring).

    Parameters
    ----------
    width, depth : int
        Bits per word and words.
    granularity : int
        Bits per write-enable lane; divides ``width``.
    read_ports : int
        Number of read ports, at least 1.
    module : str or None
        ``None``: an Amaranth memory. A Verilog module name: an instance of it
        (:func:`ram_verilog` with the same parameters gives its text).
    init : sequence of int
        Initial contents of the Amaranth memory (simulation; the rest is zero). Only without
        ``module``: the Verilog RAM starts at zero, as on the FPGA.
    ram_style : str or None
        The FPGA memory to use, as Vivado's ``ram_style`` attribute on the memory (one of
        :data:`RAM_STYLES`); ``None`` leaves the choice to the tools.
    shared : bool
        Read port 0 shares the write port (module docstring); needs two read ports.

    Members
    -------
    w_addr, w_data, w_en : ``In``
    reads : ``In(read_signature).array(read_ports)``: ``addr``, ``en`` in; ``data`` out.
    """

    def __init__(self, *, width: int, depth: int, granularity: int, read_ports: int,
                 module: str | None = None, init=(), ram_style: str | None = None,
                 shared: bool = False):
        for name, v in (("Width", width), ("Depth", depth), ("Granularity", granularity),
                        ("Read ports", read_ports)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if width % granularity:
            raise ValueError(f"Granularity {granularity} must divide the width {width}")
        if module is not None and not (isinstance(module, str) and module.isidentifier()):
            raise ValueError(f"Module must be a Verilog identifier, not {module!r}")
        if ram_style is not None and ram_style not in RAM_STYLES:
            raise ValueError(f"RAM style must be one of {', '.join(RAM_STYLES)} or None, not "
                             f"{ram_style!r}")
        if shared not in (False, True) or (shared and read_ports != 2):
            raise ValueError(f"A shared write port needs two read ports (A and B), not "
                             f"{read_ports} (shared={shared!r})")
        self.ram_style, self.shared = ram_style, bool(shared)
        init = list(init)
        if init and module is not None:
            raise ValueError("Initial contents need the Amaranth memory (module=None)")
        if len(init) > depth:
            raise ValueError(f"{len(init)} initial words do not fit {depth}")
        self.init = init
        self.width, self.depth = width, depth
        self.granularity, self.n_reads = granularity, read_ports
        self.module = module
        aw = max(1, ceil_log2(depth))
        self.addr_width = aw
        self.read_signature = wiring.Signature({
            "addr": Out(aw), "en": Out(1), "data": In(width)})
        super().__init__({
            "w_addr": In(aw), "w_data": In(width), "w_en": In(width // granularity),
            "reads": In(self.read_signature).array(read_ports),
        })

    def elaborate(self, platform):
        m = Module()
        if self.module is None:
            attrs = {"ram_style": self.ram_style} if self.ram_style else None
            m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=self.init,
                                            attrs=attrs)
            wp = mem.write_port(granularity=self.granularity)
            m.d.comb += [wp.data.eq(self.w_data), wp.en.eq(self.w_en)]
            addr_a = self.w_addr
            if self.shared:
                addr_a = Mux(self.w_en.any(), self.w_addr, self.reads[0].addr)
            m.d.comb += wp.addr.eq(addr_a)
            for n, port in enumerate(self.reads):
                rp = mem.read_port(transparent_for=())
                shared = self.shared and n == 0
                m.d.comb += [rp.addr.eq(addr_a if shared else port.addr),
                             rp.en.eq(port.en & ~self.w_en.any() if shared else port.en),
                             port.data.eq(rp.data)]
            return m
        ports = dict(i_clk=ClockSignal(), i_rst=ResetSignal(), i_w_addr=self.w_addr,
                     i_w_data=self.w_data, i_w_en=self.w_en)
        for n, port in enumerate(self.reads):
            ports |= {f"i_r{n}_addr": port.addr, f"i_r{n}_en": port.en,
                      f"o_r{n}_data": port.data}
        m.submodules.ram = Instance(self.module, **ports)
        return m


def ram_verilog(ram: RAM) -> str:
    """Verilog text of ``ram.module`` for ``ram``'s parameters."""
    if ram.module is None:
        raise ValueError("The RAM has no module name (module=None)")
    aw, w, g = ram.addr_width, ram.width, ram.granularity
    lanes = w // g
    reads = range(ram.n_reads)
    lines = [f"module {ram.module} (clk, rst, w_addr, w_data, w_en"
             + "".join(f", r{n}_addr, r{n}_en, r{n}_data" for n in reads) + ");",
             "  input clk;", "  input rst;",
             f"  input [{aw - 1}:0] w_addr;", f"  input [{w - 1}:0] w_data;",
             f"  input [{lanes - 1}:0] w_en;"]
    for n in reads:
        lines += [f"  input [{aw - 1}:0] r{n}_addr;", f"  input r{n}_en;",
                  f"  output reg [{w - 1}:0] r{n}_data;"]
    style = f'(* ram_style = "{ram.ram_style}" *) ' if ram.ram_style else ""
    lines += [f"  {style}reg [{w - 1}:0] mem [0:{ram.depth - 1}];",
              "  integer i;",
              "  // Zero contents, as the FPGA's block RAM after configuration.",
              "  initial for (i = 0; i < " + str(ram.depth) + "; i = i + 1) mem[i] = "
              f"{w}'d0;"]
    a = "a_addr" if ram.shared else "w_addr"
    write = [f"for (i = 0; i < {lanes}; i = i + 1)",
             f"  if (w_en[i]) mem[{a}][i * {g} +: {g}] <= w_data[i * {g} +: {g}];"]
    if ram.shared:
        # Port A writes, or reads when it writes nothing (no-change: UltraRAM has no
        # read-first); port B reads.
        lines += [f"  wire [{aw - 1}:0] a_addr = |w_en ? w_addr : r0_addr;",
                  "  always @(posedge clk) begin",
                  "    if (|w_en) begin", *[f"      {t}" for t in write],
                  "    end else if (r0_en) r0_data <= mem[a_addr];", "  end",
                  "  always @(posedge clk) if (r1_en) r1_data <= mem[r1_addr];"]
    else:
        # Reads first: a read returns the word before a write to it in the same cycle.
        lines += ["  always @(posedge clk) begin",
                  *[f"    if (r{n}_en) r{n}_data <= mem[r{n}_addr];" for n in reads],
                  *[f"    {t}" for t in write], "  end"]
    lines += ["endmodule", ""]
    return "\n".join(lines)
