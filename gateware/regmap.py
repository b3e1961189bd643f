"""The register map of the AHB-Lite slave, declared once.

:func:`register_map` gives, for a :class:`~contract.config.HwConfig`, every register (name,
offset, access, fields with bit position, width, reset value and meaning) and every memory
window (offset, size, access, the transfer sizes it takes). The slave
(:class:`gateware.ahb.CIMSlave`) decodes from it, the tests and the cocotb benches import it,
and the C header ``firmware/include/cim_regs.h`` and ``docs/registers.md`` are generated from
it: ``python -m gateware.regmap --write`` regenerates both, ``--check`` exits with status 1
if a checked-in copy is stale (``tests/test_regmap.py`` does the same check).

Behaviour
---------
A register carries its behaviour in its declaration, so a new register is one declaration:
its access type says what the bus may do, and each field of a live register names the
accelerator port behind it (:class:`Port`: an RO field reads an accelerator output;
:class:`Rise`: a W1C bit is set when an accelerator output rises; :class:`Pulse`: writing 1
to a WO bit pulses an accelerator input). RW fields are stored in the slave (a
:class:`Drive` field's stored value also drives an accelerator input); constant registers
answer their reset value. ``irq_enable`` ties a W1C register to the RW register
whose bits let it raise the interrupt. The declaration is checked here for consistency (a
Rise on an RO register is refused); the slave checks the ports against the accelerator's
signature when it is built.

Address map
-----------
The slave decodes ``addr_width`` bits of ``HADDR`` (the bits above are the interconnect's
business: it drives ``HSEL``). From offset 0, in this order, each block aligned to its own
size (a power of two), so every block is decoded by comparing the high address bits with a
constant: the register block (``REG_BLOCK`` bytes), the layer-program window, the (small,
read-only) logits window, the parameter window, the activation window, the image window
(configurations with an image buffer) and the weight window. Every address inside the slave's
``2 ** addr_width`` bytes that no register or window covers answers ERROR: nothing aliases.

Bus rules (also in the generated document: :data:`BUS_RULES`)
-------------------------------------------------------------
Registers and the program, parameter and weight windows take 32-bit accesses only: those
memories are written through 32-bit ports without byte enables and cannot be read back, so a
narrower write could only be done as a read-modify-write the hardware cannot do; the logits
window holds 32-bit logit registers and takes 32-bit reads only. The
activation window takes byte, halfword and word accesses: its write port has one enable per
activation lane, and every byte holds whole lanes (``a_bits`` is 1, 2, 4 or 8).
"""

from __future__ import annotations

import argparse
import enum
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.utils import ceil_log2

from contract import program as program_format
from contract.config import CONFIGS, HwConfig, get_config
from contract.program import DESC_WORDS, FIELDS, LAYOUT, PARAM_FIELDS, PARAM_WORDS

from .accelerator import AccelError

__all__ = ["Access", "Drive", "Field", "Port", "Pulse", "RegMap", "Register", "Rise", "Window",
           "register_map", "render_header", "render_markdown", "MAGIC", "VERSION", "REG_BLOCK",
           "CIM_BASE"]

MAGIC = 0x43494D41
"""Identification word: ASCII ``"CIMA"`` read as a big-endian number."""

VERSION = (3, 1)
"""Register-map version (major, minor). The major number changes when a register moves or
changes meaning; the minor one when something is added."""

REG_BLOCK = 0x1000
"""Bytes of the register block: a 4 KiB page, so registers can be added without moving the
windows."""

CIM_BASE = 0x4000_0000
"""The slave's base address in the reference Cortex-M4 memory map (the peripheral region):
``CIM_BASE`` of the C header (``-DCIM_BASE=...`` overrides it), the emulator's window
(:mod:`sim.fil`) and the integration's address map (:mod:`hw.integration`)."""

REG_SIZES = (4,)
"""Transfer sizes (bytes) the registers accept."""

ROOT = Path(__file__).resolve().parent.parent
HEADER_PATH = ROOT / "firmware" / "include" / "cim_regs.h"
DOC_PATH = ROOT / "docs" / "registers.md"


class Access(enum.Enum):
    """How software may access a register or window."""

    RO = "RO"       #: read only; a write answers ERROR
    RW = "RW"       #: read and write
    W1C = "W1C"     #: read; writing 1 to a bit clears it, writing 0 leaves it
    WO = "WO"       #: write only; a read answers ERROR

    @property
    def readable(self) -> bool:
        return self is not Access.WO

    @property
    def writable(self) -> bool:
        return self is not Access.RO


@dataclass(frozen=True)
class Port:
    """Field behaviour: an RO field reads accelerator output ``port`` (its live value, zero
    extended to the field)."""

    port: str


@dataclass(frozen=True)
class Rise:
    """Field behaviour: a 1-bit W1C field is set in the cycle accelerator output ``port``
    (1 bit) rises, and stays set until software writes 1 to it (an event in the cycle of the
    clearing write wins, so none is lost)."""

    port: str


@dataclass(frozen=True)
class Pulse:
    """Field behaviour: writing 1 to a 1-bit WO field drives accelerator input ``port`` high
    for one cycle (the write's data phase); writing 0 does nothing."""

    port: str


@dataclass(frozen=True)
class Drive:
    """Field behaviour: an RW field's stored value drives accelerator input ``port`` (of the
    field's width) at all times."""

    port: str


# Which behaviour each access type takes for its fields (constant registers take none).
_BEHAVIOUR = {Access.RO: (Port, "a Port (the accelerator output it reads)"),
              Access.W1C: (Rise, "a Rise (the accelerator event that sets it)"),
              Access.WO: (Pulse, "a Pulse (the accelerator input a 1 pulses)"),
              Access.RW: ((type(None), Drive), "no behaviour (the slave stores it) or a Drive "
                          "(the accelerator input it sets)")}


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_name(kind: str, name) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.upper() != name:
        raise ValueError(f"{kind} name must be an upper-case identifier, not {name!r}")


@dataclass(frozen=True)
class Field:
    """A bit field of a register: bits ``[pos, pos + width)``; ``hw``: its behaviour, a
    :class:`Port`, :class:`Rise` or :class:`Pulse` as its register's access type needs (see
    the module docstring)."""

    name: str
    pos: int
    width: int
    desc: str
    reset: int = 0
    hw: Port | Rise | Pulse | Drive | None = None

    def __post_init__(self):
        _check_name("Field", self.name)
        if not (isinstance(self.pos, int) and isinstance(self.width, int)
                and self.pos >= 0 and self.width >= 1 and self.pos + self.width <= 32):
            raise ValueError(f"Field {self.name}: bits [{self.pos}, {self.pos}+{self.width}) "
                             f"must lie within 32 bits")
        if not (isinstance(self.reset, int) and 0 <= self.reset < 1 << self.width):
            raise ValueError(f"Field {self.name}: reset value {self.reset!r} does not fit "
                             f"{self.width} bits")
        if self.hw is not None and not (isinstance(self.hw, (Port, Rise, Pulse, Drive))
                                        and isinstance(self.hw.port, str)
                                        and self.hw.port.isidentifier()):
            raise ValueError(f"Field {self.name}: behaviour must be a Port, Rise, Pulse or "
                             f"Drive of an accelerator port name, not {self.hw!r}")
        if isinstance(self.hw, (Rise, Pulse)) and self.width != 1:
            raise ValueError(f"Field {self.name}: a {type(self.hw).__name__} needs a 1-bit "
                             f"field, not {self.width} bits")

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.pos


@dataclass(frozen=True)
class Register:
    """A 32-bit register of the register block.

    ``const``: the value never changes (identification and configuration); the slave answers
    reads with the reset value. ``idle_only``: a write while the accelerator is busy answers
    ERROR (and does nothing). ``irq_enable`` (W1C registers only): the RW register, with the
    same fields, whose bits let this one's raise the interrupt. Every field of a live
    register carries the behaviour its access type takes (see the module docstring)."""

    name: str
    offset: int
    access: Access
    desc: str
    fields: tuple[Field, ...]
    const: bool = False
    idle_only: bool = False
    irq_enable: str | None = None

    def __post_init__(self):
        _check_name("Register", self.name)
        if not isinstance(self.access, Access):
            raise ValueError(f"Register {self.name}: access must be an Access, not "
                             f"{self.access!r}")
        if not (isinstance(self.offset, int) and 0 <= self.offset < REG_BLOCK
                and self.offset % 4 == 0):
            raise ValueError(f"Register {self.name}: offset {self.offset!r} must be a multiple "
                             f"of 4 inside the {REG_BLOCK:#x}-byte register block")
        if not self.fields:
            raise ValueError(f"Register {self.name} has no fields")
        used = 0
        for f in self.fields:
            if used & f.mask:
                raise ValueError(f"Register {self.name}: field {f.name} overlaps another")
            used |= f.mask
        if len({f.name for f in self.fields}) != len(self.fields):
            raise ValueError(f"Register {self.name}: field names repeat")
        if self.const and self.access is not Access.RO:
            raise ValueError(f"Register {self.name}: a constant register must be RO")
        kind, what = (type(None), "no behaviour") if self.const else _BEHAVIOUR[self.access]
        for f in self.fields:
            if not isinstance(f.hw, kind):
                kind_of = "a constant" if self.const else {
                    Access.RO: "an RO", Access.RW: "an RW", Access.W1C: "a W1C",
                    Access.WO: "a WO"}[self.access]
                raise ValueError(f"Register {self.name}: field {f.name} of {kind_of} register "
                                 f"takes {what}, not {f.hw!r}")
        if self.irq_enable is not None:
            _check_name(f"Register {self.name}: irq_enable", self.irq_enable)
            if self.access is not Access.W1C:
                raise ValueError(f"Register {self.name}: only a W1C register takes irq_enable")

    @property
    def reset(self) -> int:
        return sum(f.reset << f.pos for f in self.fields)

    @property
    def mask(self) -> int:
        """Bits that belong to some field (the others read 0 and ignore writes)."""
        return sum(f.mask for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name}")


@dataclass(frozen=True)
class Window:
    """A memory window: ``size`` bytes at ``offset`` (both powers of two, aligned).

    ``words``: entries of the memory behind it; ``word_bytes``: bus bytes per entry (4, or
    ``4 * slices`` for the wide activation words). They map the window's first ``words *
    word_bytes`` bytes (more than half of it); an access past them is unmapped. ``sizes``:
    transfer sizes in bytes it takes. Windows answer ERROR while the accelerator is busy, but
    for double buffering: ``slot_bytes`` > 0 makes the window two slots of that many bytes
    (slot 1 from byte ``slot_bytes``), and while busy a write to the slot other than the one
    accelerator output ``active_slot`` (1 bit) names is legal (the slot the running program
    reads stays closed)."""

    name: str
    offset: int
    size: int
    access: Access
    sizes: tuple[int, ...]
    words: int
    word_bytes: int
    desc: str
    slot_bytes: int = 0
    active_slot: str | None = None

    def __post_init__(self):
        _check_name("Window", self.name)
        if (self.slot_bytes != 0) != (self.active_slot is not None) or not (
                isinstance(self.slot_bytes, int) and self.slot_bytes % 4 == 0
                and 0 <= 2 * self.slot_bytes <= self.size):
            raise ValueError(f"Window {self.name}: slots must be whole words, two of them "
                             f"inside the window, and come with an active_slot port, not "
                             f"{self.slot_bytes!r} bytes and {self.active_slot!r}")
        if self.active_slot is not None and not (
                isinstance(self.active_slot, str) and self.active_slot.isidentifier()
                and self.access.writable):
            raise ValueError(f"Window {self.name}: active_slot must name an accelerator "
                             f"port of a writable window, not {self.active_slot!r}")
        if self.access not in (Access.RW, Access.WO, Access.RO):
            raise ValueError(f"Window {self.name}: access must be RW, WO or RO, not "
                             f"{self.access}")
        if not (_is_pow2(self.size) and self.offset % self.size == 0):
            raise ValueError(f"Window {self.name}: size {self.size:#x} must be a power of two "
                             f"and offset {self.offset:#x} a multiple of it")
        if not self.size // 2 < self.words * self.word_bytes <= self.size:
            raise ValueError(f"Window {self.name}: {self.words} words of {self.word_bytes} "
                             f"bytes do not fill more than half of {self.size:#x} bytes")
        if not self.sizes or any(s not in (1, 2, 4) for s in self.sizes):
            raise ValueError(f"Window {self.name}: transfer sizes must be among 1, 2, 4")

    @property
    def end(self) -> int:
        """End of the mapped bytes: ``words * word_bytes`` from ``offset``; the rest of ``size``
        (the weight store's, whole weight rows of a macro count that is not a power of two) is
        unmapped."""
        return self.offset + self.words * self.word_bytes


@dataclass(frozen=True)
class RegMap:
    """The whole map for one configuration (see the module docstring)."""

    config: HwConfig
    addr_width: int
    registers: tuple[Register, ...]
    windows: tuple[Window, ...]
    act_slices: int = 1

    def __post_init__(self):
        offs = [r.offset for r in self.registers]
        if len(set(offs)) != len(offs):
            raise ValueError("Two registers share an offset")
        names = [r.name for r in self.registers] + [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError("Register and window names must be unique")
        blocks = sorted([(0, REG_BLOCK, "register block")]
                        + [(w.offset, w.end, w.name) for w in self.windows])
        for (_, e0, n0), (s1, _, n1) in zip(blocks, blocks[1:]):
            if s1 < e0:
                raise ValueError(f"{n1} overlaps {n0}")
        if blocks[-1][1] > self.span:
            raise ValueError(f"{blocks[-1][2]} ends at {blocks[-1][1]:#x}, beyond the slave's "
                             f"{self.span:#x} bytes")
        regs = {r.name: r for r in self.registers}
        for r in self.registers:
            if r.irq_enable is None:
                continue
            en = regs.get(r.irq_enable)
            if (en is None or en.access is not Access.RW
                    or [(f.name, f.pos, f.width) for f in en.fields]
                    != [(f.name, f.pos, f.width) for f in r.fields]):
                raise ValueError(f"Register {r.name}: irq_enable {r.irq_enable} must be an RW "
                                 f"register of the map with the same fields")

    @property
    def span(self) -> int:
        """Bytes of the slave's address space."""
        return 1 << self.addr_width

    def register(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"no register {name}")

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise KeyError(f"no window {name}")


# ---------------------------------------------------------------------------- the map


def _error_code_width() -> int:
    return Shape.cast(AccelError).width


def _registers(config: HwConfig, act_slices: int) -> tuple[Register, ...]:
    c = config
    RO, RW, W1C, WO = Access.RO, Access.RW, Access.W1C, Access.WO

    def const(name, offset, desc, *flds):
        return Register(name, offset, RO, desc, tuple(Field(*f) for f in flds), const=True)

    def word(name, offset, desc, fname, fdesc, value):
        return const(name, offset, desc, (fname, 0, 32, fdesc, value))

    ecw = _error_code_width()
    return (
        # Identification: constants of the build, so a driver can check it talks to the
        # hardware its program was compiled for.
        word("MAGIC", 0x000, "Identification", "VALUE", 'ASCII "CIMA"', MAGIC),
        const("VERSION", 0x004, "Register-map version",
              ("MINOR", 0, 16, "minor version: additions", VERSION[1]),
              ("MAJOR", 16, 16, "major version: incompatible changes", VERSION[0])),
        const("CFG_ARRAY", 0x008, "CIM macro geometry",
              ("ROWS", 0, 16, "rows R of a macro (dot-product length)", c.rows),
              ("COLS", 16, 16, "columns C of a macro (outputs)", c.cols)),
        const("CFG_BITS", 0x00C, "Number formats",
              ("W_BITS", 0, 4, "weight bits", c.w_bits),
              ("A_BITS", 4, 4, "activation bits", c.a_bits),
              ("ADC_BITS", 8, 4, "partial-sum ADC bits; 0: ideal macro", c.adc_bits or 0),
              ("MAX_PLANES", 12, 4, "most bits (bit-planes) of a layer's input",
               c.planes_max),
              ("ACC_WIDTH", 16, 8, "accumulator width of the datapath", c.acc_width)),
        const("CFG_MACROS", 0x010, "Parallelism",
              ("MACROS", 0, 16, "CIM macros", c.macros),
              ("WRITE_ROWS", 16, 16, "weight rows per macro write beat", c.write_rows)),
        word("CFG_PROG_WORDS", 0x014, "Layer-program memory depth", "WORDS",
             "32-bit words", c.prog_words),
        word("CFG_WEIGHT_WORDS", 0x018, "Weight store depth (whole weight rows)", "WORDS",
             "32-bit words", c.weight_store_words),
        word("CFG_PARAM_WORDS", 0x01C, "Parameter memory depth", "WORDS", "32-bit words",
             c.param_words),
        word("CFG_BANK_WORDS", 0x020, "Activation buffer bank depth", "WORDS",
             "activation words per bank (two banks)", c.bank_words),
        const("CFG_LIMITS", 0x024, "Largest layer the sequencer accepts",
              ("MAX_SIZE", 0, 16, "input height and width", c.max_size),
              ("MAX_GROUPS", 16, 16, "input channel groups", c.max_groups)),
        word("CFG_MAX_PIXELS", 0x028, "Largest layer the sequencer accepts", "PIXELS",
             "output pixels of a layer", c.max_pixels),
        const("CFG_LAYOUT", 0x02C, "Memory layouts the driver follows",
              ("DESC_WORDS", 0, 8, "32-bit words per layer descriptor", DESC_WORDS),
              ("PARAM_WORDS", 8, 8, "32-bit words per parameter record", PARAM_WORDS),
              ("ACT_SLICES", 16, 8, "32-bit slices per activation word in the window",
               act_slices)),
        const("CAPS", 0x030, "Capabilities",
              ("DOUBLE_BUFFER", 0, 1, "macros load weights while they compute",
               int(c.double_buffer)),
              ("ADC", 1, 1, "macros model a partial-sum ADC (see CFG_BITS.ADC_BITS)",
               int(c.adc_bits is not None)),
              ("RESIDUAL", 2, 1, "layers may add a residual tensor", 1),
              ("ACT_NARROW", 3, 1, "the activation window takes byte and halfword accesses",
               1),
              ("IMAGE", 4, 1, "an image buffer (IMAGE window, op 2 im2col layers; CFG_IMAGE)",
               int(c.image_channels > 0)),
              ("CLASSIFIER", 5, 1, "a raw last layer leaves its logits (LOGITS window) and "
               "class (RESULT)", 1),
              ("CALIBRATION", 6, 1, "calibration rows (CFG_CAL; CAL and CMP windows, "
               "CTRL.CAL_EVAL)", int(c.cal_rows > 0))),
        const("CFG_IMAGE", 0x034, "Image buffer (two slots; CHANNELS 0: none)",
              ("CHANNELS", 0, 8, "most channels of an image", c.image_channels),
              ("SIZE", 8, 12, "most rows and columns of an image (bytes per buffer row)",
               c.image_size),
              ("KERNEL", 20, 4, "K: an im2col layer writes CHANNELS * K * K lanes per pixel",
               c.im2col_kernel)),
        const("CFG_CAL", 0x038, "Calibration rows (ROWS 0: none; docs/offsets.md)",
              ("ROWS", 0, 8, "calibration rows R of every bit-column", c.cal_rows),
              ("ROW_WORDS", 8, 8, "32-bit words of one calibration row of one macro (COLS * "
               "W_BITS bits, bit-column c * W_BITS + b)", c.cal_row_words if c.cal_rows else 0),
              ("STEP", 16, 16, "bias of one cell, 2**-8 LSB of the partial-sum ADC",
               c.cal_step if c.cal_rows else 0)),
        # Control and status.
        Register("CTRL", 0x040, WO, "Control (ERROR while busy)",
                 (Field("START", 0, 1, "1: run the program from descriptor 0",
                        hw=Pulse("start")),
                  Field("CAL_EVAL", 1, 1, "1: evaluate the calibration rows: every "
                        "bit-column's comparator into the CMP window (no effect without "
                        "calibration rows: CFG_CAL.ROWS 0)", hw=Pulse("cal_eval"))),
                 idle_only=True),
        Register("STATUS", 0x044, RO, "Status", (
            Field("BUSY", 0, 1, "the program is running", hw=Port("busy")),
            Field("DONE", 1, 1, "the program ended (or stopped on an error); cleared by START",
                  hw=Port("done")),
            Field("ERROR", 2, 1, "the program stopped early; see ERROR_CODE", hw=Port("error")),
            Field("ERROR_CODE", 8, ecw, "why it stopped (gateware.accelerator.AccelError)",
                  hw=Port("error_code")),
            Field("LAYER", 16, 8, "index of the descriptor being run (the last one when done)",
                  hw=Port("layer")),
        )),
        Register("IRQ_ENABLE", 0x048, RW, "Interrupt enables (IRQ = any enabled status bit)", (
            Field("DONE", 0, 1, "interrupt when IRQ_STATUS.DONE is set"),
            Field("ERROR", 1, 1, "interrupt when IRQ_STATUS.ERROR is set"),
        )),
        Register("IRQ_STATUS", 0x04C, W1C, "Interrupt status: sticky events, write 1 to clear", (
            Field("DONE", 0, 1, "the program ended (set whatever IRQ_ENABLE holds)",
                  hw=Rise("done")),
            Field("ERROR", 1, 1, "the program stopped on an error", hw=Rise("error")),
        ), irq_enable="IRQ_ENABLE"),
        # Performance counters of the last run, cleared by START: each reads the
        # accelerator's counter of the same name.
        *(Register(name, offset, RO, desc, (Field("COUNT", 0, 32, "cycles",
                                                  hw=Port(name.lower())),))
          for name, offset, desc in (
              ("CYCLES_TOTAL", 0x050, "Cycles since the last START (since reset before one)"),
              ("CYCLES_BUSY", 0x054, "Cycles busy since START"),
              ("CYCLES_COMPUTE", 0x058, "Busy cycles in which some macro computed"),
              ("CYCLES_STALL", 0x05C, "Busy cycles in which no macro computed but one "
               "waited (for weights, or on backpressure)"))),
        # Image buffer: the slot the next START's im2col layer reads (latched at START, so
        # software fills the other one meanwhile). Harmless without an image buffer.
        Register("IMAGE_SLOT", 0x060, RW, "Image slot of the next run (ERROR while busy)",
                 (Field("SLOT", 0, 1, "the image-buffer slot START latches for the program's "
                        "im2col layer; the IMAGE window's other slot takes writes while busy "
                        "(no effect without an image buffer: CFG_IMAGE.CHANNELS 0)",
                        hw=Drive("image_slot")),),
                 idle_only=True),
        Register("RESULT", 0x064, RO, "Classifier result of the last run", (
            Field("CLASS", 0, 16, "index of the first largest logit among the raw layer's "
                  "out_channels", hw=Port("result_class")),
            Field("VALID", 31, 1, "the last program ended, without an error, with a raw "
                  "layer; cleared by START", hw=Port("result_valid")),
        )),
    )


def register_map(config: HwConfig, *, addr_width: int | None = None) -> RegMap:
    """The register map of ``config``.

    ``addr_width``: bits of ``HADDR`` the slave decodes (its address space is ``2 **
    addr_width`` bytes); ``None`` takes the smallest that holds the map."""
    if not isinstance(config, HwConfig):
        raise ValueError(f"Configuration must be a HwConfig, not {config!r}")
    # An activation word of R lanes of a_bits is R * a_bits bits (a power of two): its 32-bit
    # slices, at least one (a narrow word leaves the top of its slice unused).
    act_slices = max(1, config.rows * config.a_bits // 32)
    image = ()
    if config.image_channels:
        # Rows of image_size bytes one after the other (gateware.image), two slots.
        window = 1 << ceil_log2(2 * config.image_slot_rows * config.image_size)
        image = (("IMAGE", Access.WO, (4,), window // 4, 4,
                  "Image buffer: slot s, channel c, row y, pixel x at byte (s * "
                  "SLOT_ROWS + c * SIZE + y) * SIZE + x (CFG_IMAGE.SIZE; SLOT_ROWS: CHANNELS "
                  "* SIZE rounded up to a power of two); the slot not latched by START takes "
                  "writes while busy",
                  {"slot_bytes": config.image_slot_rows * config.image_size,
                   "active_slot": "image_active"}),)
    calibration = ()
    if config.cal_rows:
        rw = config.cal_row_words
        calibration = (
            ("CAL", Access.WO, (4,), config.macros * config.cal_rows * rw, 4,
             "Calibration rows: word j of row r of macro m at word (m * CFG_CAL.ROWS + r) * "
             "CFG_CAL.ROW_WORDS + j; bit k of a row is bit-column k's cell", {}),
            ("CMP", Access.RO, (4,), config.macros * rw, 4,
             "Comparators at the last CTRL.CAL_EVAL: word j of macro m at word m * "
             "CFG_CAL.ROW_WORDS + j, bit k: bit-column k's residual offset is positive", {}))
    specs = (
        ("PROG", Access.WO, (4,), config.prog_words, 4,
         f"Layer program: descriptor n at word n * {DESC_WORDS} (compiler FIELDS)", {}),
        # Small: after PROG it fits the gap PARAM's alignment leaves in the named maps.
        ("LOGITS", Access.RO, (4,), 1 << ceil_log2(config.cols), 4,
         "Logits of the last raw layer: logit c at word c, two's complement (0 from COLS "
         "on)", {}),
        ("PARAM", Access.WO, (4,), config.param_words, 4,
         f"Requantization parameters: record n at word n * {PARAM_WORDS}", {}),
        ("ACT", Access.RW, (1, 2, 4), 2 * config.bank_words, 4 * act_slices,
         "Activation buffer: word w (bank * BANK_WORDS + offset), slice s at byte "
         "(w * ACT_SLICES + s) * 4", {}),
        *image,
        ("WEIGHT", Access.WO, (4,), config.weight_store_words, 4,
         "Weight image (compiler weight packing): image tile n is macro n mod MACROS's tile "
         "of weight row n div MACROS",
         {}),
        *calibration,
    )
    windows, cursor = [], REG_BLOCK
    for name, access, sizes, words, word_bytes, desc, extra in specs:
        size = 1 << ceil_log2(words * word_bytes)
        offset = -(-cursor // size) * size
        windows.append(Window(name, offset, size, access, sizes, words, word_bytes, desc,
                              **extra))
        cursor = offset + size
    need = ceil_log2(cursor)
    if addr_width is None:
        addr_width = need
    if (not isinstance(addr_width, int) or isinstance(addr_width, bool)
            or not need <= addr_width <= 32):
        raise ValueError(f"Address width must be from {need} (the map's {cursor:#x} bytes) to "
                         f"32, not {addr_width!r}")
    return RegMap(config=config, addr_width=addr_width,
                  registers=_registers(config, act_slices), windows=tuple(windows),
                  act_slices=act_slices)


# ---------------------------------------------------------------------------- generated files

BUS_RULES = """\
* Registers and the PROG, PARAM, IMAGE, WEIGHT and LOGITS windows take 32-bit accesses only:
  those memories have 32-bit write ports without byte enables and no read port, so a
  narrower write would need a read-modify-write the hardware cannot do (LOGITS: 32-bit logit
  registers, read only). The ACT window takes byte, halfword and word accesses (one write
  enable per activation lane; a byte holds whole lanes).
* ERROR response (two cycles: HREADYOUT low with HRESP high, then both high), and nothing
  changes, for: an address inside the slave that no register or window covers; HSIZE wider
  than the location takes, or than 32 bits; a misaligned address; a write to an RO
  register or window; a read of a WO register or window; a write to CTRL or IMAGE_SLOT, or
  any window access, while STATUS.BUSY is set (or while a START written by the previous
  transfer takes effect), except a write to the IMAGE window's slot that the running program
  does not read (the other one than IMAGE_SLOT.SLOT at its START): double buffering.
* Reserved register bits read 0 and ignore writes. Register accesses, window writes and
  LOGITS reads have no wait states; an ACT read has two (the buffer RAM read from the
  registered address).
* HBURST and HPROT are ignored (every beat carries its address); IDLE and BUSY transfers get
  the zero-wait OKAY response. HADDR bits at and above the address width are not decoded: the
  system decoder's HSEL covers them.
* IRQ is high while IRQ_STATUS & IRQ_ENABLE is not zero. IRQ_STATUS.DONE is set when the
  program ends (also on an error), IRQ_STATUS.ERROR when it stops on an error; each stays
  set until written with 1 (an event in the cycle of the clearing write wins).
* Activation window: the word at global address w (bank * BANK_WORDS + offset) is
  ACT_SLICES 32-bit slices at byte (w * ACT_SLICES + s) * 4; slice s holds lanes
  [s * 32 / A_BITS, (s + 1) * 32 / A_BITS), lane i at bits [(i mod (32 / A_BITS)) * A_BITS,
  ...) of the slice (little-endian). A word narrower than 32 bits leaves the top of its
  slice reading 0.
"""


def _number(v: int) -> str:
    """Numbers as people read them; bit patterns (the magic word) in hex."""
    return str(v) if v < 1 << 20 else f"{v:#x}"


def byte_size(n: int) -> str:
    """A size in bytes as the largest of MiB, KiB or bytes that states it exactly (``256 KiB``,
    ``4 MiB``, ``1536 bytes``), so a size below a unit is never rounded down to 0 of it."""
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def _hex(v: int) -> str:
    return f"0x{v:08X}"


def _c_config_block(rm: RegMap, shared: set[str]) -> list[str]:
    cfg = rm.config
    out = [f'#define CIM_CFG_NAME                "{cfg.name}"']
    for f in fields(cfg):
        if f.name == "name":
            continue
        v = cfg.planes_max if f.name == "max_planes" else getattr(cfg, f.name)
        v = 0 if v is None else int(v)
        out.append(f"#define {'CIM_CFG_' + f.name.upper():<27} {v}u")
    out.append(f"#define CIM_ADDR_WIDTH              {rm.addr_width}u")
    out.append(f"#define CIM_SPAN                    {_hex(rm.span)}UL")
    for w in rm.windows:
        out += [f"#define {'CIM_WIN_' + w.name + '_OFFSET':<27} {_hex(w.offset)}UL",
                f"#define {'CIM_WIN_' + w.name + '_SIZE':<27} {_hex(w.size)}UL",
                f"#define {'CIM_WIN_' + w.name + '_WORDS':<27} {w.words}u"]
    out.append(f"#define CIM_ACT_SLICES              {rm.act_slices}u")
    for r in rm.registers:
        if r.name not in shared and r.access.readable:
            out.append(f"#define {'CIM_' + r.name + '_RESET':<27} {_hex(r.reset)}u")
    return out


def _maps() -> dict[str, RegMap]:
    return {name: register_map(cfg) for name, cfg in CONFIGS.items()}


def _shared(rm: RegMap) -> set[str]:
    """Registers whose reset value every configuration shares (constant registers describe
    the configuration: their values go in its block)."""
    return {r.name for r in rm.registers if not r.const}


def render_config_block(config: HwConfig) -> str:
    """The constants and windows of one configuration, any one (``tiny:a_bits=2``): a header
    the firmware includes with ``-DCIM_CONFIG_HEADER='"file"'`` in place of the named
    configurations' blocks of ``cim_regs.h`` (``make -C firmware CONFIG=...`` does)."""
    guard = f"CIM_CONFIG_{config.name.upper()}_H"
    lines = [f"/* CIM accelerator: configuration {config.name!r}. Generated by `python -m",
             " * gateware.regmap --config-block`; included by cim_regs.h through",
             " * CIM_CONFIG_HEADER. Do not edit. */", f"#ifndef {guard}", f"#define {guard}",
             *_c_config_block(register_map(config), _shared(_maps()["default"])),
             f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def render_header() -> str:
    """``firmware/include/cim_regs.h``: the register block as a CMSIS-style struct, field
    ``_Pos``/``_Msk`` macros, error codes, layout constants, and per named configuration
    (selected with ``-DCIM_CONFIG_<NAME>``, ``default`` otherwise) its constants and windows."""
    maps = _maps()
    rm = maps["default"]
    shared = _shared(rm)
    L = ["/* CIM accelerator: AHB-Lite register map.",
         " *",
         " * Generated by `python -m gateware.regmap --write` from gateware/regmap.py;",
         " * do not edit. docs/registers.md describes every register and the bus rules.",
         " * Select a hardware configuration with -DCIM_CONFIG_<NAME> (names: "
         + ", ".join(n.upper() for n in maps) + "); without one, DEFAULT. Any other",
         " * configuration: -DCIM_CONFIG_HEADER='\"file.h\"', the file written by",
         " * `python -m gateware.regmap --config-block CONFIG` (make -C firmware CONFIG=...).",
         " */",
         "#ifndef CIM_REGS_H", "#define CIM_REGS_H", "", "#include <stdint.h>", "",
         "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
         "/* CMSIS access qualifiers (core_cm4.h defines them on the target). */",
         "#ifndef __IM", "#define __IM volatile const /* read only */", "#endif",
         "#ifndef __OM", "#define __OM volatile /* write only */", "#endif",
         "#ifndef __IOM", "#define __IOM volatile /* read / write */", "#endif", "",
         f"#define CIM_REGMAP_VERSION_MAJOR    {VERSION[0]}u",
         f"#define CIM_REGMAP_VERSION_MINOR    {VERSION[1]}u",
         f"#define CIM_MAGIC                   {_hex(MAGIC)}u /* \"CIMA\" */",
         f"#define CIM_REG_BLOCK_SIZE          {_hex(REG_BLOCK)}UL", "",
         "/* Register block, at offset 0 of the slave. */", "typedef struct {"]
    qual = {Access.RO: "__IM ", Access.RW: "__IOM", Access.W1C: "__IOM", Access.WO: "__OM "}
    pos, nres = 0, 0
    for r in sorted(rm.registers, key=lambda r: r.offset):
        if r.offset > pos:
            n = (r.offset - pos) // 4
            L.append(f"    {'uint32_t':<14} {f'RESERVED{nres}[{n}];':<20} /* 0x{pos:03X}-"
                     f"0x{r.offset - 4:03X} */")
            nres += 1
        L.append(f"    {qual[r.access]} uint32_t {r.name + ';':<20} /* 0x{r.offset:03X} "
                 f"{r.access.value:<3} {r.desc} */")
        pos = r.offset + 4
    L += ["} CIM_TypeDef;", "",
          "/* Base address of the slave (reference memory map; -DCIM_BASE=... for another). */",
          "#ifndef CIM_BASE", f"#define CIM_BASE                    {_hex(CIM_BASE)}UL", "#endif",
          "#define CIM ((CIM_TypeDef *)CIM_BASE)", "",
          "/* Register offsets (bytes) and fields. */"]
    for r in sorted(rm.registers, key=lambda r: r.offset):
        L.append(f"#define {'CIM_' + r.name + '_OFFSET':<36} 0x{r.offset:03X}u")
        for f in r.fields:
            base = f"CIM_{r.name}_{f.name}"
            L += [f"#define {base + '_Pos':<36} {f.pos}u",
                  f"#define {base + '_Msk':<36} ({_hex((1 << f.width) - 1)}UL << "
                  f"{base}_Pos)"]
        if r.name in shared and r.access.readable:
            L.append(f"#define {'CIM_' + r.name + '_RESET':<36} {_hex(r.reset)}u")
    L += ["", "/* STATUS.ERROR_CODE values (gateware.accelerator.AccelError). */"]
    for e in AccelError:
        L.append(f"#define {'CIM_STATUS_ERROR_CODE_' + e.name:<36} {e.value}u")
    L += ["", "/* Memory layouts (compiler). */",
          f"#define CIM_DESC_WORDS              {DESC_WORDS}u /* words per layer descriptor */",
          f"#define CIM_PARAM_WORDS             {PARAM_WORDS}u /* words per parameter record */"]
    for f in FIELDS:
        word, bit = LAYOUT[f.name]
        base = f"CIM_DESC_{f.name.upper()}"
        L += [f"#define {base + '_Word':<36} {word}u",
              f"#define {base + '_Pos':<36} {bit}u",
              f"#define {base + '_Msk':<36} ({_hex((1 << f.bits) - 1)}UL << {base}_Pos)"]
    L += ["/* Descriptor op values (contract.program). */"]
    for name in ("OP_CONV", "OP_MAXPOOL", "OP_IM2COL"):
        L.append(f"#define {'CIM_DESC_' + name:<36} {getattr(program_format, name)}u")
    bit = 0
    for f in PARAM_FIELDS:
        base = f"CIM_PARAM_{f.name.upper()}"
        L += [f"#define {base + '_Pos':<36} {bit}u /* bit of the record, signed */",
              f"#define {base + '_Bits':<36} {f.bits}u"]
        bit += f.bits
    L += ["", "/* Hardware configurations: constants, window offsets (bytes from the slave's "
          "base) and sizes. */"]
    names = list(maps)
    chosen = " + ".join(["defined(CIM_CONFIG_HEADER)",
                         *(f"defined(CIM_CONFIG_{n.upper()})" for n in names)])
    L += [f"#if {chosen} > 1", '#error "define at most one CIM_CONFIG_<NAME>"', "#endif"]
    others = [n for n in names if n != "default"]
    L += ["#if defined(CIM_CONFIG_HEADER)", "#include CIM_CONFIG_HEADER"]
    for n in others:
        L.append(f"#elif defined(CIM_CONFIG_{n.upper()})")
        L += _c_config_block(maps[n], shared)
    L.append("#else /* CIM_CONFIG_DEFAULT */")
    L += _c_config_block(maps["default"], shared)
    L.append("#endif")
    L += ["", "#ifdef __cplusplus", "}", "#endif", "", "#endif /* CIM_REGS_H */", ""]
    return "\n".join(L)


def render_markdown() -> str:
    """``docs/registers.md``: address maps, bus rules, every register and field."""
    maps = _maps()
    rm = maps["default"]
    L = ["# Register map", "",
         "<!-- Generated by `python -m gateware.regmap --write` from gateware/regmap.py; "
         "do not edit. -->", "",
         f"Register-map version {VERSION[0]}.{VERSION[1]}. The AHB-Lite slave "
         "(`gateware/ahb.py`, top level `gateware/top.py`) decodes the low `addr_width` bits "
         "of HADDR; the C header is `firmware/include/cim_regs.h`.", "",
         "## Address map", "",
         "Offsets in bytes from the slave's base; each block is aligned to its size.", "",
         "| Block | Access | Sizes | " + " | ".join(f"`{n}` offset | `{n}` size" for n in maps)
         + " |",
         "|---|---|---|" + "---|---|" * len(maps)]
    rows = [("Registers", "see below", "32", [(0, REG_BLOCK)] * len(maps))]
    for w in rm.windows:
        rows.append((f"`{w.name}`: {w.desc}", w.access.value,
                     "/".join(str(8 * s) for s in w.sizes),
                     [(m.window(w.name).offset, m.window(w.name).size)
                      if w.name in {x.name for x in m.windows} else (None, None)
                      for m in maps.values()]))
    for name, acc, sizes, places in rows:
        L.append(f"| {name} | {acc} | {sizes} | "
                 + " | ".join("- | -" if o is None else f"{o:#010x} | {byte_size(s)}"
                              for o, s in places) + " |")
    L += ["", "Address space of the slave: "
          + ", ".join(f"`{n}` {byte_size(m.span)} (`addr_width` {m.addr_width})"
                      for n, m in maps.items())
          + "; everything in it outside the blocks above, and every register-block offset "
          "without a register, answers ERROR.", "",
          "## Bus rules", "", BUS_RULES.rstrip(), "",
          "## Registers", "",
          "| Offset | Name | Access | Description |", "|---|---|---|---|"]
    for r in rm.registers:
        L.append(f"| 0x{r.offset:03X} | [`{r.name}`](#{r.name.lower()}) | {r.access.value} | "
                 f"{r.desc} |")
    for r in rm.registers:
        L += ["", f"### {r.name}", "",
              f"Offset 0x{r.offset:03X}, {r.access.value}"
              + (", constant" if r.const else "")
              + (", ERROR while busy" if r.idle_only else "") + ". " + r.desc + ".", "",
              "| Bits | Field | Reset | Description |", "|---|---|---|---|"]
        for f in r.fields:
            bits = f"{f.pos + f.width - 1}:{f.pos}" if f.width > 1 else f"{f.pos}"
            resets = {n: m.register(r.name).field(f.name).reset for n, m in maps.items()}
            if not r.access.readable:
                reset = "-"
            elif len(set(resets.values())) == 1:
                reset = _number(resets["default"])
            else:
                reset = ", ".join(f"{n}: {_number(v)}" for n, v in resets.items())
            L.append(f"| {bits} | {f.name} | {reset} | {f.desc} |")
    L += ["", "## Error codes (STATUS.ERROR_CODE)", "", "| Value | Name |", "|---|---|"]
    for e in AccelError:
        L.append(f"| {e.value} | {e.name} |")
    L.append("")
    return "\n".join(L)


GENERATED = {HEADER_PATH: render_header, DOC_PATH: render_markdown}
"""Checked-in generated files and their renderers."""


def stale() -> list[Path]:
    """Generated files whose checked-in copy differs from what the map gives now."""
    return [p for p, render in GENERATED.items()
            if not p.exists() or p.read_text() != render()]


def _shown(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateware.regmap", description=__doc__.split(
        "\n\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the checked-in files")
    group.add_argument("--check", action="store_true",
                       help="exit with status 1 if a checked-in file is stale")
    group.add_argument("--print", choices=["header", "markdown"], help="print one file")
    group.add_argument("--show", metavar="CONFIG", help="print the address map of a "
                       "configuration")
    group.add_argument("--config-block", metavar="CONFIG", help="print the firmware's "
                       "constants header of any configuration ('tiny:a_bits=2')")
    args = ap.parse_args(argv)
    if args.config_block:
        try:
            sys.stdout.write(render_config_block(get_config(args.config_block)))
        except ValueError as e:
            ap.error(str(e))
        return 0
    if args.print:
        sys.stdout.write(render_header() if args.print == "header" else render_markdown())
        return 0
    if args.show:
        try:
            rm = register_map(get_config(args.show))
        except ValueError as e:
            ap.error(str(e))
        print(f"{'registers':<10} {0:#010x} {REG_BLOCK:#x}")
        for w in rm.windows:
            print(f"{w.name:<10} {w.offset:#010x} {w.size:#x}")
        print(f"{'span':<10} {rm.span:#010x} (addr_width {rm.addr_width})")
        return 0
    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {_shown(p)} (run python -m gateware.regmap --write)",
                  file=sys.stderr)
        return 1 if bad else 0
    for p, render in GENERATED.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render())
        print(f"wrote {_shown(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
