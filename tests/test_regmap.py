"""The register map declaration and the files generated from it."""

import dataclasses
import re
import shutil
import subprocess

import pytest
from amaranth.hdl import Shape

from contract.config import CONFIGS, get_config
from contract.program import DESC_WORDS, PARAM_WORDS
from gateware import regmap
from gateware.accelerator import AccelError
from gateware.regmap import (
    REG_BLOCK,
    Access,
    Field,
    Port,
    Pulse,
    Register,
    Rise,
    Window,
    register_map,
    render_header,
    render_markdown,
)


@pytest.mark.parametrize("name", CONFIGS)
def test_generated_files_current(name):
    """The checked-in header and document are what the map gives now (regenerate with
    ``python -m gateware.regmap --write``); generation is deterministic."""
    assert regmap.stale() == [], "run: python -m gateware.regmap --write"
    assert render_header() == render_header() and render_markdown() == render_markdown()
    assert f'#define CIM_CFG_NAME                "{name}"' in render_header()


def test_check_cli(tmp_path, monkeypatch):
    """``--check`` exits 1 when a generated file is stale, 0 when current."""
    assert regmap.main(["--check"]) == 0
    stale = tmp_path / "cim_regs.h"
    stale.write_text("/* old */\n")
    monkeypatch.setattr(regmap, "GENERATED", {stale: render_header})
    assert regmap.main(["--check"]) == 1
    assert regmap.main(["--write"]) == 0
    assert stale.read_text() == render_header()
    assert regmap.main(["--check"]) == 0


@pytest.mark.parametrize("name", CONFIGS)
def test_map_is_consistent(name):
    """Registers inside the register block, word aligned, not overlapping; windows aligned to
    their power-of-two size, disjoint, inside the slave; fields inside 32 bits, disjoint, their
    reset values fitting; the identification registers describe the configuration."""
    cfg = get_config(name)
    rm = register_map(cfg)
    offsets = [r.offset for r in rm.registers]
    assert len(set(offsets)) == len(offsets)
    assert all(0 <= o < REG_BLOCK and o % 4 == 0 for o in offsets)
    spans = sorted([(0, REG_BLOCK)] + [(w.offset, w.end) for w in rm.windows])
    assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= rm.span and rm.span == 1 << rm.addr_width
    assert rm.span < 2 * spans[-1][1]           # the smallest space that holds the map
    for w in rm.windows:
        assert w.size & (w.size - 1) == 0 and w.offset % w.size == 0
    for r in rm.registers:
        used = 0
        for f in r.fields:
            assert 0 <= f.pos and f.pos + f.width <= 32
            assert not used & f.mask, f"{r.name}.{f.name} overlaps"
            used |= f.mask
            assert 0 <= f.reset < 1 << f.width
        assert r.reset & ~r.mask == 0
        assert not r.const or r.access is Access.RO
    value = {(r.name, f.name): f.reset for r in rm.registers for f in r.fields}
    assert value["MAGIC", "VALUE"] == int.from_bytes(b"CIMA", "big")
    assert (value["CFG_ARRAY", "ROWS"], value["CFG_ARRAY", "COLS"]) == (cfg.rows, cfg.cols)
    assert (value["CFG_BITS", "W_BITS"], value["CFG_BITS", "A_BITS"]) == (cfg.w_bits,
                                                                          cfg.a_bits)
    assert value["CFG_MACROS", "MACROS"] == cfg.macros
    assert value["CFG_BITS", "ACC_WIDTH"] == cfg.acc_width
    assert value["CFG_WEIGHT_WORDS", "WORDS"] == cfg.weight_store_words
    assert value["CFG_LAYOUT", "DESC_WORDS"] == DESC_WORDS
    assert value["CFG_LAYOUT", "PARAM_WORDS"] == PARAM_WORDS
    assert rm.window("ACT").words == 2 * cfg.bank_words
    assert rm.window("ACT").word_bytes * 8 >= cfg.rows * cfg.a_bits
    assert rm.window("PROG").words == cfg.prog_words
    # STATUS.ERROR_CODE holds every AccelError.
    assert rm.register("STATUS").field("ERROR_CODE").width == Shape.cast(AccelError).width


def test_header_contents():
    """The header: one CMSIS struct member per register at its offset (reserved words in the
    gaps), Pos/Msk macros per field, the error codes, the layout constants, one block per
    configuration, and no macro defined twice in one configuration."""
    h = render_header()
    rm = register_map(get_config("default"))
    body = h[h.index("typedef struct {"):h.index("} CIM_TypeDef;")]
    offset = 0
    for line in body.splitlines()[1:]:
        m = re.match(r"\s*(__IM|__OM|__IOM)?\s*uint32_t\s+(\w+)(\[(\d+)\])?;\s*/\* 0x([0-9A-F]+)",
                     line)
        assert m, line
        qual, name, _, count, off = m.groups()
        assert int(off, 16) == offset, line
        if name.startswith("RESERVED"):
            offset += 4 * int(count)
            continue
        r = rm.register(name)
        assert r.offset == offset
        assert qual == {Access.RO: "__IM", Access.WO: "__OM"}.get(r.access, "__IOM")
        offset += 4
    for r in rm.registers:
        for f in r.fields:
            assert f"#define CIM_{r.name}_{f.name}_Pos" in h
            assert re.search(rf"#define CIM_{r.name}_{f.name}_Msk\s+\(0x{(1 << f.width) - 1:08X}"
                             rf"UL << CIM_{r.name}_{f.name}_Pos\)", h)
    for e in AccelError:
        assert re.search(rf"#define CIM_STATUS_ERROR_CODE_{e.name}\s+{e.value}u\b", h)
    assert re.search(rf"#define CIM_DESC_WORDS\s+{DESC_WORDS}u", h)
    assert re.search(rf"#define CIM_PARAM_WORDS\s+{PARAM_WORDS}u", h)
    # One configuration block per named configuration; inside each, unique names.
    blocks = re.split(r"^#(?:if|elif|else)\b.*$", h[h.index("#if defined(CIM_CONFIG_"):],
                      flags=re.M)
    common = re.findall(r"^#define (\w+)", h[:h.index("#if defined(CIM_CONFIG_")], re.M)
    assert len(common) == len(set(common))
    for name, cfg in CONFIGS.items():
        block = next(b for b in blocks if f'"{name}"' in b)
        names = re.findall(r"^#define (\w+)", block, re.M)
        assert len(names) == len(set(names)) and not set(names) & set(common)
        assert re.search(rf"#define CIM_CFG_ROWS\s+{cfg.rows}u", block)
        for w in register_map(cfg).windows:
            assert re.search(rf"#define CIM_WIN_{w.name}_OFFSET\s+0x{w.offset:08X}UL", block)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("define", ["", "-DCIM_CONFIG_TINY"])
def test_header_compiles(tmp_path, define):
    """The header compiles as C99 with warnings as errors, and its struct offsets are the
    map's (checked by the compiler with offsetof)."""
    rm = register_map(get_config("tiny" if define else "default"))
    checks = "\n".join(f"_Static_assert(offsetof(CIM_TypeDef, {r.name}) == {r.offset}, "
                       f'"{r.name}");' for r in rm.registers)
    src = tmp_path / "t.c"
    src.write_text(f'#include <stddef.h>\n#include "cim_regs.h"\n{checks}\n'
                   f"_Static_assert(CIM_WIN_ACT_OFFSET == {rm.window('ACT').offset}u, "
                   '"act");\nint main(void) { return (int)CIM_CFG_ROWS - '
                   f"{rm.config.rows}; }}\n")
    (tmp_path / "cim_regs.h").write_text(render_header())
    exe = tmp_path / "t"
    cmd = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(tmp_path),
           *([define] if define else []), str(src), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert subprocess.run([str(exe)]).returncode == 0


def test_markdown_lists_everything():
    doc = render_markdown()
    for r in register_map(get_config("default")).registers:
        assert f"### {r.name}" in doc
        for f in r.fields:
            assert f"| {f.name} |" in doc
    for name in CONFIGS:
        assert f"`{name}` offset" in doc


_UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20}


def _size(text: str) -> int:
    n, unit = text.split()
    return int(n) * _UNITS[unit]


def test_markdown_sizes_are_exact():
    """Every size in the document reads back as the map's exact byte count: `tiny`'s 256 KiB
    address space once printed as "0 MiB"."""
    doc = render_markdown()
    maps = {name: register_map(get_config(name)) for name in CONFIGS}
    for name, m in maps.items():
        found = re.search(rf"`{name}` (\d+ \w+) \(`addr_width` {m.addr_width}\)", doc)
        assert found, f"no address space for {name!r}"
        assert _size(found.group(1)) == m.span == 1 << m.addr_width, name
    names = list(maps)
    for w in maps["default"].windows:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{w.name}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        sizes = cells[-2 * len(names) + 1::2]
        for name, text in zip(names, sizes):
            # "-": the configuration has no such window (IMAGE without an image buffer).
            want = (maps[name].window(w.name).size
                    if w.name in {x.name for x in maps[name].windows} else None)
            assert (None if text == "-" else _size(text)) == want, (w.name, name)
    assert [regmap.byte_size(n) for n in (0, 512, 1024, 1536, 2048 << 10, 3 << 20)] == \
        ["0 bytes", "512 bytes", "1 KiB", "1536 bytes", "2 MiB", "3 MiB"]


def test_declaration_errors():
    """Malformed declarations are refused with a message naming the culprit."""
    with pytest.raises(ValueError, match="does not fit 4 bits"):
        Field("X", 0, 4, "x", reset=16)
    with pytest.raises(ValueError, match="within 32 bits"):
        Field("X", 30, 4, "x")
    with pytest.raises(ValueError, match="upper-case identifier"):
        Field("x", 0, 1, "x")
    with pytest.raises(ValueError, match="overlaps another"):
        Register("R", 0, Access.RW, "r", (Field("A", 0, 4, "a"), Field("B", 3, 1, "b")))
    with pytest.raises(ValueError, match="multiple of 4"):
        Register("R", 2, Access.RW, "r", (Field("A", 0, 1, "a"),))
    with pytest.raises(ValueError, match="must be RO"):
        Register("R", 0, Access.RW, "r", (Field("A", 0, 1, "a"),), const=True)
    with pytest.raises(ValueError, match="multiple of it"):
        Window("W", 0x1800, 0x1000, Access.WO, (4,), 1024, 4, "w")
    rm = register_map(get_config("tiny"))
    w = rm.windows[0]
    with pytest.raises(ValueError, match="overlaps"):
        dataclasses.replace(rm, windows=(*rm.windows, dataclasses.replace(w, name="COPY")))
    with pytest.raises(ValueError, match="share an offset"):
        dataclasses.replace(rm, registers=(*rm.registers, dataclasses.replace(
            rm.registers[0], name="COPY")))
    with pytest.raises(ValueError, match="beyond the slave"):
        dataclasses.replace(rm, addr_width=rm.addr_width - 1)
    with pytest.raises(ValueError, match="HwConfig"):
        register_map("tiny")
    # Behaviour that does not suit the access type, named with the register.
    with pytest.raises(ValueError, match=r"Register NEW: field F of an RO register takes a "
                       r"Port .*, not Rise\(port='done'\)"):
        Register("NEW", 0x70, Access.RO, "n", (Field("F", 0, 1, "f", hw=Rise("done")),))
    with pytest.raises(ValueError, match="Register NEW: field F of an RO register takes a Port"):
        Register("NEW", 0x70, Access.RO, "n", (Field("F", 0, 1, "f"),))
    with pytest.raises(ValueError, match="Register NEW: field F of a W1C register takes a Rise"):
        Register("NEW", 0x70, Access.W1C, "n", (Field("F", 0, 1, "f", hw=Port("done")),))
    with pytest.raises(ValueError, match="Register NEW: field F of an RW register takes no"):
        Register("NEW", 0x70, Access.RW, "n", (Field("F", 0, 1, "f", hw=Port("done")),))
    with pytest.raises(ValueError, match="Register NEW: field F of a constant register takes"):
        Register("NEW", 0x70, Access.RO, "n", (Field("F", 0, 1, "f", hw=Port("done")),),
                 const=True)
    with pytest.raises(ValueError, match="Field F: a Pulse needs a 1-bit field"):
        Field("F", 0, 2, "f", hw=Pulse("start"))
    with pytest.raises(ValueError, match="Field F: behaviour must be a Port, Rise, Pulse or Drive"):
        Field("F", 0, 1, "f", hw="done")
    with pytest.raises(ValueError, match="Register NEW: only a W1C register takes irq_enable"):
        Register("NEW", 0x70, Access.RW, "n", (Field("F", 0, 1, "f"),), irq_enable="CTRL")
    w1c = Register("NEW", 0x70, Access.W1C, "n", (Field("F", 0, 1, "f", hw=Rise("done")),),
                   irq_enable="CTRL")
    with pytest.raises(ValueError, match="Register NEW: irq_enable CTRL must be an RW register"):
        dataclasses.replace(rm, registers=(*rm.registers, w1c))
    # A configuration whose value does not fit its identification field.
    big = dataclasses.replace(get_config("tiny"), name="big", max_groups=1 << 16)
    with pytest.raises(ValueError, match="MAX_GROUPS: reset value 65536 does not fit"):
        register_map(big)


def test_config_block_for_any_configuration(tmp_path):
    """A configuration with changed fields gets a constants header of its own, which
    cim_regs.h includes through CIM_CONFIG_HEADER in place of the named blocks."""
    cfg = get_config("tiny:a_bits=2")
    block = regmap.render_config_block(cfg)
    rm = register_map(cfg)
    assert '#define CIM_CFG_NAME                "tiny_a_bits2"' in block
    assert "#define CIM_CFG_A_BITS              2u" in block
    assert f"#define CIM_ACT_SLICES              {rm.act_slices}u" in block
    assert "#include CIM_CONFIG_HEADER" in render_header()
    assert regmap.main(["--config-block", "tiny:a_bits=2"]) == 0
