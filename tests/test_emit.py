"""gateware.emit.convert: Verilog whose combinational copies of registers are defined under
Icarus's SystemVerilog semantics (``iverilog -g2012``, as cocotb runs it)."""

import shutil
import subprocess

import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from gateware.emit import convert


class PartlyProcess(wiring.Component):
    """A port whose ``b`` half comes from a process (``m.If``) and whose ``a`` half copies a
    register that never leaves its initial value: Yosys writes ``a`` as a bare ``always @*``."""

    o: Out(data.StructLayout({"a": 8, "b": 8}))
    i: In(8)

    def elaborate(self, platform):
        m = Module()
        r = Signal(8, init=0x5A)
        with m.If(self.i == 3):
            m.d.sync += r.eq(r + 1)
        m.d.comb += self.o.a.eq(r)
        with m.If(self.i[0]):
            m.d.comb += self.o.b.eq(self.i + 1)
        return m


BENCH = """module bench;
  reg clk = 0, rst = 0; reg [7:0] i = 0; wire [15:0] o;
  t dut(.clk(clk), .rst(rst), .i(i), .o(o));
  initial begin #1 clk = 1; #1 $display("o=%b", o); $finish; end
endmodule
"""


def icarus(text: str, tmp_path) -> str:
    """``o`` after one clock edge, simulated by Icarus with ``-g2012``."""
    (tmp_path / "t.v").write_text(text)
    (tmp_path / "bench.v").write_text(BENCH)
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "bench.v", "t.v"], cwd=tmp_path,
                   check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    return out.split("o=")[1].split()[0]


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog (Debian package "
                    "iverilog) not found")
def test_copy_of_a_register_is_defined(tmp_path):
    plain = verilog.convert(PartlyProcess(), name="t")
    assert "  always @*\n    o[7:0] = r;" in plain, "the bare block this test is about"
    # Amaranth's own Verilog leaves the copy X; convert's is the register's value.
    assert icarus(plain, tmp_path)[8:] == "x" * 8
    assert icarus(convert(PartlyProcess(), name="t"), tmp_path)[8:] == f"{0x5A:08b}"


def test_only_bare_blocks_of_clocked_modules_change():
    plain = verilog.convert(PartlyProcess(), name="t", emit_src=False)
    fixed = convert(PartlyProcess(), name="t", emit_src=False)
    assert fixed.replace("  always @* begin\n    if (clk) begin end\n    o[7:0] = r;\n  end",
                         "  always @*\n    o[7:0] = r;") == plain


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog (Debian package "
                    "iverilog) not found")
def test_calibrated_design_elaborates_in_icarus(tmp_path):
    """The Verilog of a configuration with calibration rows: the shared macro module has the
    ports (theta, cal, cal_eval, compare) its instances connect."""
    from contract.config import get_config
    from gateware.top import verilog as top_verilog

    text = top_verilog(get_config("tiny:adc_bits=3,cal_rows=4,offset_sigma=100"))
    (tmp_path / "t.v").write_text(text)
    run = subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "t.v"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "error" not in run.stderr, run.stderr[:2000]
