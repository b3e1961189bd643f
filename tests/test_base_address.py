"""The accelerator's base address has one definition, ``gateware.regmap.CIM_BASE``: the C
header is generated from it (its staleness: ``tests/test_regmap.py``), the emulator and the
integration import it, and the documents that show the address show that one."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from contract.config import get_config
from gateware.regmap import CIM_BASE, register_map, render_header
from hw import integration

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
DEFINE = re.compile(r"^\s*#\s*define\s+CIM_BASE\s+(\S+)", re.M)


def test_python_users_import_it():
    assert integration.CIM_BASE is CIM_BASE
    doc = integration.address_map_md(register_map(get_config("tiny")))
    assert f"Base address `{CIM_BASE:#010x}`" in doc
    fil = pytest.importorskip("sim.fil", reason="sim.fil needs the unicorn package")
    assert fil.CIM_BASE is CIM_BASE


def test_the_header_defines_it_once():
    """The generated header is the only C definition (cim_app.h and main.c take it from
    there)."""
    assert DEFINE.findall(render_header()) == [f"0x{CIM_BASE:08X}UL"]
    defined = {str(p.relative_to(FIRMWARE)): DEFINE.findall(p.read_text())
               for p in sorted(FIRMWARE.rglob("*"))
               if p.suffix in (".h", ".c", ".S", ".ld") and "build" not in p.parts}
    assert {k: v for k, v in defined.items() if v} == {
        "include/cim_regs.h": [f"0x{CIM_BASE:08X}UL"]}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc (host C compiler) not found")
@pytest.mark.parametrize("override", [None, 0x5000_0000])
def test_the_firmware_sees_it(override):
    """What main.c gets through cim_app.h, with and without ``-DCIM_BASE``."""
    cmd = ["gcc", "-E", "-dM", "-std=c99", "-I", str(FIRMWARE / "include"),
           str(FIRMWARE / "include" / "cim_app.h")]
    if override is not None:
        cmd.append(f"-DCIM_BASE={override:#x}UL")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    value = DEFINE.findall(out)
    assert len(value) == 1
    assert int(value[0].rstrip("uUlL"), 16) == (CIM_BASE if override is None else override)


@pytest.mark.parametrize("doc", ["firmware/cortex_m4.ld", "firmware/README.md",
                                 "docs/build.md"])
def test_documents_show_it(doc):
    """Every address on a line about the slave's base is this one."""
    lines = [ln for ln in (REPO / doc).read_text().splitlines()
             if "CIM_BASE" in ln or "AHB-Lite slave" in ln]
    shown = [int(a.replace("_", ""), 16) for ln in lines
             for a in re.findall(r"0x[0-9A-Fa-f]{4}_?[0-9A-Fa-f]{4}\b", ln)]
    assert shown and set(shown) == {CIM_BASE}, (doc, lines)
