"""A Cortex-M4 cycle estimate per instruction class, for the firmware in the loop (:mod:`sim.fil`).

The figures are those of the ARM Cortex-M4 Technical Reference Manual (r0p1, ARM DDI 0439B):
section 3.3.1, Table 3-1 "Cortex-M4 instruction set summary" (integer, DSP and SIMD
instructions), section 3.3.2 "Load/store timings" (the pipelining rules) and section 7.2.3,
Table 7-1 "FPU instruction set" (the floating point instructions).
``firmware/README.md`` ("Cycle estimate") has the table and where the estimate can be off.

:func:`decode` turns a stretch of Thumb code into :class:`Insn` records (``capstone``), each
with its class, its cycles and what the rules that span two instructions need;
:func:`cost` applies those rules to a run of instructions; :func:`program` decodes every code
range of an ELF (its ``$t`` / ``$d`` mapping symbols tell code from literal pools). A
mnemonic no class names is an error (:class:`UnknownInstruction`), never a silent 1.

Rules applied (``P`` is the pipeline refill, :data:`P`):

* a taken branch (or any instruction that writes PC) costs its row's ``1 + P``; a
  conditional branch that is not taken costs 1. Unconditional flow changes are always taken;
  a conditional one (``B<c>``, ``CBZ``/``CBNZ``, an instruction in an IT block) was taken when
  the next instruction executed is not the one after it.
* ``LDR`` (any single load) costs 2; one that directly follows a single load and whose
  address registers (base, index) do not include that load's destination costs 1 (the TRM's
  "one cycle is removed from the cost of the next instruction"). A store costs 1 (the TRM:
  "``STR Rx,[Ry,#imm]`` is always one cycle", the data phase overlaps the next instruction);
  nothing is pipelined after a store, ``LDRD``/``STRD``/``LDM``/``STM``, or across a taken
  branch.
* ``IT`` costs 1, or 0 when it directly follows a 16-bit instruction (folded) that was not a
  taken branch.
* ``SDIV``/``UDIV``: the worst case, 12 (the TRM: 2 to 12 depending on the operands).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import capstone as cs
from capstone import arm_const as C

__all__ = ["CLASSES", "EXCEPTION_ENTRY", "EXCEPTION_RETURN", "MNEMONICS", "P", "Class", "Insn",
           "UnknownInstruction", "State", "cost", "decode", "program", "table"]

P = 2                      # pipeline refill after a taken branch: the TRM's P is 1 to 3
EXCEPTION_ENTRY = 12       # TRM 3.3.1 / 5.5 "Interrupt latency": 12 cycles, zero-wait memory
EXCEPTION_RETURN = 10      # exception exit to thread mode (no tail-chaining), 10 cycles
DIVIDE = 12                # SDIV/UDIV: the TRM's worst case (2 to 12, operand dependent)


@dataclass(frozen=True)
class Class:
    """An instruction class: ``cycles`` for a plain issue (plus ``per_reg`` per register of
    a list), ``P`` more when it changes the flow, and the TRM row it comes from."""

    cycles: int
    per_reg: int
    source: str


CLASSES: dict[str, Class] = {
    "data": Class(1, 0, "Table 3-1: move, add, subtract, logical, shift, compare, count leading "
                        "zeros, bit-field, extend, reverse, saturate: 1 (1 + P to PC)"),
    "simd": Class(1, 0, "Table 3-1: parallel add/subtract (SADD16, USUB8, QADD8...), SEL, "
                        "PKHBT/PKHTB, SSAT16/USAT16, USAD8/USADA8, Q(D)ADD/Q(D)SUB: 1"),
    "multiply": Class(1, 0, "Table 3-1: MUL, MLA, MLS, SMULL, UMULL, SMLAL, UMLAL, UMAAL, "
                            "SMUL/SMLA<x><y>, SMULW/SMLAW, SMUAD, SMLAD, SMLALD, SMMUL...: 1"),
    "divide": Class(DIVIDE, 0, "Table 3-1: SDIV, UDIV: 2 to 12 (operand dependent); the worst "
                               "case taken"),
    "load": Class(2, 0, "Table 3-1: LDR, LDRB, LDRH, LDRSB, LDRSH, LDREX: 2 (1 pipelined after "
                        "a load, 3.3.2); LDR PC: 2 + P"),
    "store": Class(1, 0, "3.3.2: STR Rx,[Ry,#imm] is always one cycle (Table 3-1: 2, of which "
                         "the data phase overlaps the next instruction): STR, STRB, STRH: 1"),
    "load_double": Class(3, 0, "Table 3-1: LDRD, STRD: 1 + N, N = 2 words"),
    "load_multiple": Class(1, 1, "Table 3-1: LDM, POP: 1 + N; with PC 1 + N + P"),
    "store_multiple": Class(1, 1, "Table 3-1: STM, PUSH: 1 + N"),
    "branch": Class(1, 0, "Table 3-1: B, BL, BX, BLX: 1 + P taken, conditional B not taken 1"),
    "compare_branch": Class(1, 0, "Table 3-1: CBZ, CBNZ: 1 not taken, 1 + P taken"),
    "table_branch": Class(2, 0, "Table 3-1: TBB, TBH: 2 + P"),
    "it": Class(1, 0, "Table 3-1: IT: 1, 0 when folded onto a preceding 16-bit instruction"),
    "barrier": Class(1, 0, "Table 3-1: DMB, DSB 1 + B (B >= 0: 0 taken); ISB 1 + P"),
    "hint": Class(1, 0, "Table 3-1: NOP, YIELD, SEV, WFE, WFI: 1 (sleep time not counted)"),
    "system": Class(1, 0, "Table 3-1: MRS, MSR, CPSIE/CPSID: 1"),
    "trap": Class(1, 0, "BKPT, SVC, UDF: an exception (the emulator stops the run on them)"),
    "fp": Class(1, 0, "Table 7-1: VABS, VADD, VSUB, VNEG, VMUL, VNMUL, VCMP(E), VCVT, VMOV "
                      "(one register), VMRS, VMSR: 1"),
    "fp_move2": Class(2, 0, "Table 7-1: VMOV of two core registers: 2"),
    "fp_mac": Class(3, 0, "Table 7-1: VMLA, VMLS, VNMLA, VNMLS, VFMA, VFMS, VFNMA, VFNMS: 3"),
    "fp_divide": Class(14, 0, "Table 7-1: VDIV, VSQRT: 14"),
    "fp_load": Class(2, 0, "Table 7-1: VLDR, VSTR: 2"),
    "fp_multiple": Class(1, 1, "Table 7-1: VLDM, VSTM, VPUSH, VPOP: 1 + N (N words)"),
}

_SIMD = """sadd16 sadd8 sasx ssax ssub16 ssub8 qadd16 qadd8 qasx qsax qsub16 qsub8 shadd16 shadd8
shasx shsax shsub16 shsub8 uadd16 uadd8 uasx usax usub16 usub8 uqadd16 uqadd8 uqasx uqsax
uqsub16 uqsub8 uhadd16 uhadd8 uhasx uhsax uhsub16 uhsub8 sel pkhbt pkhtb ssat16 usat16 usad8
usada8 qadd qsub qdadd qdsub sxtb16 uxtb16 sxtab16 uxtab16"""
_GROUPS = {
    "data": """adc add addw adr and asr bfc bfi bic clz cmn cmp eor lsl lsr mov movs movt movw
        mvn neg orn orr rbit rev rev16 revsh ror rrx rsb sbc sbfx ssat sub subs subw sxtab sxtah
        sxtb sxth teq tst ubfx usat uxtab uxtah uxtb uxth""",
    "simd": _SIMD,
    "multiply": """mla mls mul smlabb smlabt smlatb smlatt smlad smladx smlal smlalbb smlalbt
        smlaltb smlaltt smlald smlaldx smlawb smlawt smlsd smlsdx smlsld smlsldx smmla smmlar
        smmls smmlsr smmul smmulr smuad smuadx smulbb smulbt smultb smultt smull smulwb smulwt
        smusd smusdx umaal umlal umull""",
    "divide": "sdiv udiv",
    "load": "ldr ldrb ldrh ldrsb ldrsh ldrt ldrbt ldrht ldrsbt ldrsht ldrex ldrexb ldrexh strex "
            "strexb strexh",
    "store": "str strb strh strt strbt strht",
    "load_double": "ldrd strd",
    "load_multiple": "ldm ldmdb pop",
    "store_multiple": "stm stmdb push",
    "branch": "b bl bx blx",
    "compare_branch": "cbz cbnz",
    "table_branch": "tbb tbh",
    "it": "it",
    "barrier": "dmb dsb isb",
    "hint": "nop yield sev wfe wfi hint pld pli clrex",
    "system": "mrs msr cps",
    "trap": "bkpt svc udf",
    "fp": """vabs vadd vsub vneg vmul vnmul vcmp vcmpe vcvt vcvtr vcvtb vcvtt vmov vmrs vmsr""",
    "fp_mac": "vmla vmls vnmla vnmls vfma vfms vfnma vfnms",
    "fp_divide": "vdiv vsqrt",
    "fp_load": "vldr vstr",
    "fp_multiple": "vldmia vldmdb vstmia vstmdb vpush vpop",
}
MNEMONICS: dict[str, str] = {m: cls for cls, names in _GROUPS.items() for m in names.split()}
_STREX = {"strex", "strexb", "strexh"}   # 3.3.2: "STREX is treated more like an LDR"


class UnknownInstruction(ValueError):
    """An instruction no class of :data:`CLASSES` covers (or bytes that do not decode)."""


@dataclass(frozen=True)
class Insn:
    """One decoded instruction and what its cost depends on."""

    address: int
    size: int
    mnemonic: str          # capstone's, with condition and width suffixes
    cls: str
    cycles: int            # on its own, its flow change included when unconditional
    taken: int             # more when it is conditional and changes the flow
    jumps: bool = False    # changes the flow unconditionally (its refill is in ``cycles``)
    load_dest: frozenset[int] | None = None    # a single load: its destination registers
    addr_regs: frozenset[int] | None = None    # a single load: its address registers

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass(frozen=True)
class State:
    """What the previous instruction leaves the next one: a 16-bit instruction (IT folds
    onto it), a single load's destination (a load after it pipelines)."""

    narrow: bool
    load_dest: frozenset[int] | None


def _classify(i) -> Insn:
    name = i.insn_name()
    cls = MNEMONICS.get(name)
    if cls is None:
        raise UnknownInstruction(f"0x{i.address:08x}: {i.mnemonic} {i.op_str} (capstone "
                                 f"'{name}'): no Cortex-M4 cycle class (sim/m4_cycles.py)")
    c = CLASSES[cls]
    regs = [op.reg for op in i.operands if op.type == C.ARM_OP_REG]
    n = 0
    if cls in ("load_multiple", "store_multiple"):
        n = len(regs) - (name not in ("push", "pop"))     # LDM/STM: the base is not listed
    elif cls == "fp_multiple":
        listed = regs[0 if name in ("vpush", "vpop") else 1:]
        n = sum(2 if C.ARM_REG_D0 <= r <= C.ARM_REG_D31 else 1 for r in listed)
    cycles = c.cycles + c.per_reg * n
    if cls == "fp" and name == "vmov" and len(regs) >= 3:
        cls, cycles = "fp_move2", CLASSES["fp_move2"].cycles
    if name in _STREX:
        cycles = CLASSES["load"].cycles
    _, written = i.regs_access()
    flow = cls in ("branch", "compare_branch", "table_branch") or C.ARM_REG_PC in written
    conditional = cls == "compare_branch" or i.cc not in (C.ARM_CC_AL, C.ARM_CC_INVALID)
    if cls == "barrier" and name == "isb":
        cycles += P
    taken = 0
    if flow:
        if conditional:
            taken = P
        else:
            cycles += P
    load_dest = addr_regs = None
    if cls == "load" and name not in _STREX and not flow:
        mem = [op.mem for op in i.operands if op.type == C.ARM_OP_MEM]
        load_dest = frozenset(regs[:1])
        addr_regs = frozenset(r for m in mem for r in (m.base, m.index) if r)
    return Insn(i.address, i.size, f"{i.mnemonic} {i.op_str}".strip(), cls, cycles, taken,
                flow and not conditional, load_dest, addr_regs)


_CS: cs.Cs | None = None


def _disassembler() -> cs.Cs:
    global _CS
    if _CS is None:
        _CS = cs.Cs(cs.CS_ARCH_ARM, cs.CS_MODE_THUMB | cs.CS_MODE_MCLASS)
        _CS.detail = True
    return _CS


def decode(code: bytes, address: int) -> list[Insn]:
    """Every instruction of ``code`` (Thumb, at ``address``), in order; IT blocks are decoded
    with their conditions. Raises :class:`UnknownInstruction`."""
    out = [_classify(i) for i in _disassembler().disasm(code, address)]
    done = sum(i.size for i in out)
    if done != len(code):
        raise UnknownInstruction(f"0x{address + done:08x}: bytes that do not decode as Thumb "
                                 f"({code[done:done + 4].hex()})")
    return out


def after(insn: Insn, taken: bool = False) -> State | None:
    """The state an instruction leaves (none after a taken branch: the pipeline refills)."""
    if taken or insn.jumps:
        return None
    return State(insn.size == 2, insn.load_dest)


def adjust(insn: Insn, prev: State | None) -> int:
    """Cycles the previous instruction takes off this one: IT folding, load pipelining."""
    if prev is None:
        return 0
    if insn.cls == "it" and prev.narrow:
        return -1
    if insn.load_dest is not None and prev.load_dest is not None \
            and not prev.load_dest & insn.addr_regs:
        return -1
    return 0


def cost(insns: list[Insn], prev: State | None = None) -> list[int]:
    """Cycles of each instruction of a straight run (the last one's flow change, if it is
    conditional, not included: :attr:`Insn.taken`), after ``prev``."""
    out = []
    for k, insn in enumerate(insns):
        out.append(insn.cycles + adjust(insn, prev))
        prev = after(insn) if k + 1 < len(insns) else None
    return out


# ----------------------------------------------------------------------------- an ELF


def code_ranges(elf: Path) -> list[tuple[int, bytes]]:
    """The Thumb code of an ELF's executable sections, without their literal pools: the
    ``$t`` / ``$d`` mapping symbols (ARM ELF) split each section. (address, bytes) pairs."""
    b = Path(elf).read_bytes()
    shoff, = struct.unpack_from("<I", b, 32)
    shentsize, shnum = struct.unpack_from("<HH", b, 46)
    sections = [struct.unpack_from("<10I", b, shoff + i * shentsize) for i in range(shnum)]
    maps: dict[int, list[tuple[int, str]]] = {}
    for s in sections:
        if s[1] != 2:                                     # SHT_SYMTAB
            continue
        strtab = sections[s[6]]
        for k in range(s[5] // 16):
            name, value, _, _, _, shndx = struct.unpack_from("<IIIBBH", b, s[4] + 16 * k)
            at = strtab[4] + name
            kind = b[at:at + 3]
            if kind in (b"$t\0", b"$d\0", b"$a\0") or kind[:3] in (b"$t.", b"$d."):
                maps.setdefault(shndx, []).append((value & ~1, kind[1:2].decode()))
    out = []
    for idx, s in enumerate(sections):
        flags, addr, off, size = s[2], s[3], s[4], s[5]
        if s[1] != 1 or not flags & 0x4 or not size:      # PROGBITS, SHF_EXECINSTR
            continue
        marks = sorted(maps.get(idx, [(addr, "t")]))
        for k, (start, kind) in enumerate(marks):
            end = marks[k + 1][0] if k + 1 < len(marks) else addr + size
            if kind == "t" and end > start:
                out.append((start, b[off + start - addr:off + end - addr]))
    return out


def program(elf: Path) -> dict[int, Insn]:
    """Every instruction of an ELF's code, by address (:func:`code_ranges`, :func:`decode`)."""
    return {i.address: i for start, code in code_ranges(elf) for i in decode(code, start)}


def table() -> str:
    """The class table as Markdown (``firmware/README.md``)."""
    rows = ["| class | cycles | instructions (capstone names) | TRM |",
            "| --- | ---: | --- | --- |"]
    for name, c in CLASSES.items():
        cyc = f"{c.cycles} + N" if c.per_reg else f"{c.cycles}"
        names = ", ".join(sorted(m for m, k in MNEMONICS.items() if k == name)) or "vmov"
        rows.append(f"| {name} | {cyc} | {names} | {c.source} |")
    return "\n".join(rows)
