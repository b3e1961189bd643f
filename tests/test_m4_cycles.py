"""The Cortex-M4 cycle estimate (:mod:`sim.m4_cycles`) and its accounting in the firmware in
the loop (:mod:`sim.fil`): every instruction of the built firmware is classified; small
hand-written Thumb snippets, assembled with ``arm-none-eabi-as`` and run on the emulator,
cost exactly what the TRM's table says, counted per block and per instruction alike; taken
and not-taken branches differ by the refill; reads of the accelerator's activation window
stall for the slave's wait states. Needs ``capstone``, ``unicorn`` and the Arm GNU toolchain
(skipped with the reason without them)."""

import shutil
import subprocess

import pytest

from compiler import firmware_blob as fb
from contract.config import get_config
from gateware.regmap import CIM_BASE, register_map

pytest.importorskip("capstone", reason="capstone decodes the firmware's Thumb code")
pytest.importorskip("unicorn", reason="the unicorn package runs the firmware ELF")
from sim import fil  # noqa: E402
from sim import m4_cycles as m4  # noqa: E402

P = m4.P
CONV, AVGPOOL = fb.STAGES.index("CONV"), fb.STAGES.index("AVGPOOL")
MAP = register_map(get_config("tiny"))
ACT = next(w for w in MAP.windows if w.name == "ACT").offset
TOOLS = ("arm-none-eabi-as", "arm-none-eabi-ld")

# The snippet runs in the CONV stage of one frame. Before it: r7 = the results record,
# r2..r5 point into RAM ([r5] holds r2, [r2] holds 0), r1 = 0, r6 = the accelerator's base,
# r9 = the activation window's offset. After it the closing
# "movs r0, #AVGPOOL; str r0, [r7, #marker]" adds 2 cycles to CONV (the marker store is
# charged to the stage it ends).
FRAME = """
    .syntax unified
    .cpu cortex-m4
    .thumb
    .text
    .word 0x20001000
    .word reset
    .thumb_func
reset:
    ldr r7, =0x20000000
    ldr r2, =0x20000100
    ldr r3, =0x20000200
    ldr r4, =0x20000300
    ldr r5, =0x20000104
    ldr r6, ={cim}
    ldr r9, ={act}
    movs r1, #0
    str r1, [r2]
    str r2, [r5]
    movs r0, #{conv}
    str r0, [r7, #{marker}]
{snippet}
    movs r0, #{avgpool}
    str r0, [r7, #{marker}]
    movs r0, #1
    str r0, [r7, #{state}]
1:  b 1b
    .thumb_func
func:
    bx lr
    .ltorg
"""

SNIPPETS = {
    # name: (snippet, cycles of the snippet)
    "data": ("adds r0, #1\n add r1, r0, r0, lsl #2\n mov.w r8, #5\n ubfx r1, r0, #1, #3", 4),
    "multiply": ("muls r1, r0, r1\n mla r1, r0, r0, r1\n umull r8, r9, r0, r1\n"
                 " smlal r8, r9, r0, r1\n smlad r1, r0, r0, r1", 5),
    "divide": ("movs r1, #7\n udiv r1, r1, r1", 1 + m4.DIVIDE),
    "load": ("ldr r1, [r2]", 2),
    "loads pipelined (TRM 3.3.2: LDR R0,[R1]; LDR R1,[R2] three cycles)":
        ("ldr r0, [r2]\n ldr r1, [r3]", 3),
    "load after a load it depends on": ("ldr r1, [r5]\n ldr r0, [r1, #0]", 4),
    "three loads (TRM: four cycles)": ("ldr r0, [r2, r1]\n ldr r1, [r3]\n ldr r8, [r4, #4]", 4),
    "store after a load": ("ldr r0, [r2]\n str r0, [r3, #20]", 3),
    "stores": ("str r0, [r2]\n str r0, [r3]\n strb r0, [r4]", 3),
    "load after a store": ("str r0, [r2]\n ldr r1, [r3]", 3),
    "ldrd, strd": ("ldrd r0, r1, [r2]\n strd r0, r1, [r3]", 6),
    "push, pop": ("push {r4, r5, r6}\n pop {r4, r5, r6}", 8),
    "not-taken branch": ("cmp r1, #1\n beq 2f\n nop\n2:", 3),
    "taken branch": ("cmp r1, #0\n beq 2f\n nop\n2:", 2 + P),
    "unconditional branch": ("b 2f\n nop\n2:", 1 + P),
    "cbz taken": ("cbz r1, 2f\n nop\n2:", 1 + P),
    "cbnz not taken": ("cbnz r1, 2f\n nop\n2:", 2),
    "call and return": ("bl func", 2 * (1 + P)),
    "it folded after a 16-bit instruction": ("movs r1, #0\n it eq\n moveq r1, #1", 2),
    "it after a 32-bit instruction": ("mov.w r1, #0\n it eq\n moveq r1, #1", 3),
    "simd": ("usub8 r1, r0, r0\n sel r1, r0, r0\n usat r1, #8, r0", 3),
}


@pytest.fixture(scope="module")
def assemble(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found (Debian: binutils-arm-none-eabi)")
    base = tmp_path_factory.mktemp("snippets")

    def build(name: str, snippet: str):
        src = FRAME.format(cim=CIM_BASE, act=ACT, conv=CONV, avgpool=AVGPOOL, snippet=snippet,
                           marker=fil.RESULTS["marker"], state=fil.RESULTS["state"])
        stem = base / f"s{abs(hash(name))}"
        stem.with_suffix(".s").write_text(src)
        for cmd in (["arm-none-eabi-as", "-mcpu=cortex-m4", "-mthumb", "-o",
                     f"{stem}.o", f"{stem}.s"],
                    ["arm-none-eabi-ld", "-Ttext=0", "-e", "reset", "-o", f"{stem}.elf",
                     f"{stem}.o"]):
            subprocess.run(cmd, check=True, capture_output=True)
        return stem.with_suffix(".elf")

    return build


class ActBus:
    """Reads return 0; nothing raises the interrupt."""

    def read(self, offset):
        return 0, 0, False

    def write(self, offset, words):
        return 0, False

    def idle(self, cycles):
        return False


def conv_cycles(elf, count, **kw):
    r = fil.Mcu(elf, ActBus(), window_bytes=1 << MAP.addr_width, count=count, **kw).run()
    assert r.results["state"] == 1 and len(r.frames) == 1
    return r.frame_cycles[0]["CONV"] - 2, r


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_cycles(assemble, name):
    """Each snippet costs what the table says, counted per block and per instruction."""
    snippet, want = SNIPPETS[name]
    elf = assemble(name, snippet)
    for count in ("block", "code"):
        got, _ = conv_cycles(elf, count)
        assert got == want, (name, count, got, want)


def test_taken_and_not_taken_differ_by_the_refill(assemble):
    """The same conditional branch, taken and not taken over the same instructions."""
    taken, _ = conv_cycles(assemble("t", "cmp r1, #1\n bne 2f\n nop\n2: nop"), "block")
    not_taken, _ = conv_cycles(assemble("n", "cmp r1, #0\n bne 2f\n nop\n2: nop"), "block")
    assert (taken, not_taken) == (2 + P + 1, 4)


def test_accelerator_reads_stall_for_the_wait_states(assemble):
    """A read of the activation window waits ACTBUF_LATENCY cycles; a register read and a
    write none. The transfers' data phases are the bus cycles."""
    elf = assemble("bus", "ldr r1, [r6, r9]\n ldr r1, [r6]\n str r1, [r6, r9]")
    waits = fil.read_waits(MAP)
    assert waits == ((ACT, ACT + next(w for w in MAP.windows if w.name == "ACT").size, 2),)
    for count in ("block", "code"):
        got, r = conv_cycles(elf, count, read_waits=waits)
        # ldr 2 + 2 waits, ldr pipelined 1 (its address does not use r1), str 1.
        assert got == 2 + 2 + 1 + 1, count
        assert r.frame_bus_cycles[0]["CONV"] == 3 + 1 + 1 and r.bus_cycles == 5


def test_unknown_instructions_are_errors():
    """A mnemonic no class covers is an error, never a silent 1; so are bytes that do not
    decode."""
    saved = m4.MNEMONICS.pop("udiv")
    try:
        with pytest.raises(m4.UnknownInstruction, match="udiv"):
            m4.decode(bytes.fromhex("b1fbf1f1"), 0x100)        # udiv r1, r1, r1
    finally:
        m4.MNEMONICS["udiv"] = saved
    with pytest.raises(m4.UnknownInstruction, match="do not decode"):
        m4.decode(b"\xff\xff\xff\xff", 0)


def test_every_class_has_a_source():
    assert set(m4.MNEMONICS.values()) <= set(m4.CLASSES)
    assert all(c.source and c.cycles >= 1 for c in m4.CLASSES.values())
    assert "| load | 2 |" in m4.table()
