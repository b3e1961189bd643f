"""AMBA 3 AHB-Lite: bus encodings, the bus signature, and the accelerator's slave.

:class:`CIMSlave` puts the accelerator's control registers and memories on an AHB-Lite bus
following the map of :mod:`gateware.regmap` (the one declaration of offsets, fields, access
types and transfer sizes).

Protocol
--------
* A transfer is accepted in its address phase: ``HSEL & HREADY`` and ``HTRANS`` NONSEQ or SEQ.
  IDLE and BUSY transfers (and cycles without ``HSEL``) get the zero-wait OKAY response and
  change nothing. ``HBURST`` and ``HPROT`` are accepted and ignored: an AHB-Lite slave is
  burst-agnostic (every beat carries its own address) and this one has no protected state.
* Everything is decided from the address phase (registered): the data phase drives
  ``HREADYOUT`` and ``HRESP`` from flip-flops only, never from ``HWDATA`` or ``HADDR``.
* ERROR (no state change, the two-cycle response: ``HREADYOUT=0, HRESP=ERROR``, then
  ``HREADYOUT=1, HRESP=ERROR``) for: an address no register or window covers; ``HSIZE``
  wider than the location takes (see :data:`gateware.regmap.REG_SIZES` and
  :attr:`Window.sizes <gateware.regmap.Window>`) or wider than 32 bits; a misaligned address;
  a write to a read-only register; a read of a write-only register or window; a write to
  ``CTRL`` or any window access while the accelerator is busy. "Busy" includes a START
  written in the data phase that overlaps this address phase, so a transfer pipelined behind
  START never touches a memory the sequencer now owns.
* Writes take effect in their (single-cycle) data phase, reads of registers return the value
  in the data phase, so a read pipelined behind a write sees it.
* Activation reads: the buffer word is read from the registered address in the first
  data-phase cycle and arrives :attr:`ActivationBuffer.latency <gateware.actbuf.
  ActivationBuffer>` (2) cycles later: two wait states. Reading from the registered address
  rather than straight from ``HADDR`` costs one wait state and buys two things: a write in the
  preceding data phase is already in the (non-transparent) block RAM, and no path runs from
  ``HADDR`` into the RAM's address.
* Activation writes: ``HWDATA`` is replicated over the wide word and only the lanes of the
  active byte lanes (``HSIZE``, ``HADDR[1:0]``, little-endian) of the addressed slice are
  enabled (``act_w_mask``).
* ``irq`` is high while some bit of ``IRQ_STATUS & IRQ_ENABLE`` is set; ``IRQ_STATUS.DONE``
  is set when the accelerator's ``done`` rises, ``.ERROR`` when ``error`` rises; both stay
  set until software writes 1 to them (an event in the same cycle as the clearing write
  wins, so none is lost).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from .actbuf import ActivationBuffer
from .regmap import REG_BLOCK, REG_SIZES, Access, Register, RegMap

__all__ = ["AHBLiteSignature", "CIMSlave", "HBurst", "HResp", "HSize", "HTrans",
           "byte_lanes"]


class HTrans(enum.Enum, shape=2):
    """Transfer type."""

    IDLE = 0
    BUSY = 1        #: the master inserts an idle cycle inside a burst
    NONSEQ = 2      #: a single transfer or the first beat of a burst
    SEQ = 3         #: a following beat of a burst


class HSize(enum.Enum, shape=3):
    """Transfer size: ``2 ** value`` bytes."""

    BYTE = 0
    HALFWORD = 1
    WORD = 2
    DOUBLEWORD = 3
    WORD4 = 4       #: 4-word line (128 bits)
    WORD8 = 5       #: 8-word line (256 bits)
    BITS512 = 6
    BITS1024 = 7


class HBurst(enum.Enum, shape=3):
    """Burst type (informative for a slave: every beat carries its address)."""

    SINGLE = 0
    INCR = 1
    WRAP4 = 2
    INCR4 = 3
    WRAP8 = 4
    INCR8 = 5
    WRAP16 = 6
    INCR16 = 7


class HResp(enum.Enum, shape=1):
    """Transfer response."""

    OKAY = 0
    ERROR = 1


def byte_lanes(addr: int, size: int) -> int:
    """The byte lanes (a 4-bit mask, little-endian) of a transfer of ``size`` bytes (1, 2 or
    4) at ``addr`` on a 32-bit bus: the reference for the slave's lane logic."""
    if size not in (1, 2, 4) or addr % size:
        raise ValueError(f"No lanes for a {size}-byte transfer at {addr:#x}")
    return ((1 << size) - 1) << (addr % 4)


class AHBLiteSignature(wiring.Signature):
    """An AHB-Lite slave port as the bus drives it (``Out``: from the master, decoder or
    multiplexor; ``In``: from the slave). ``HSEL`` comes from the decoder, ``HREADY`` is the
    multiplexor's combined ready (the slave's own ``HREADYOUT`` during its data phases).

    Parameters
    ----------
    addr_width : int
        Width of ``HADDR``, 10 to 32 (a slave occupies at least a 1 KiB page).
    data_width : int
        Width of ``HWDATA`` and ``HRDATA``: 32 (the only width this design uses).
    """

    def __init__(self, *, addr_width: int = 32, data_width: int = 32):
        if not isinstance(addr_width, int) or not 10 <= addr_width <= 32:
            raise ValueError(f"Address width must be an integer from 10 to 32, not "
                             f"{addr_width!r}")
        if data_width != 32:
            raise ValueError(f"Data width must be 32, not {data_width!r}")
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "HSEL": Out(1), "HADDR": Out(addr_width), "HTRANS": Out(HTrans),
            "HWRITE": Out(1), "HSIZE": Out(HSize), "HBURST": Out(HBurst), "HPROT": Out(4),
            "HWDATA": Out(data_width), "HREADY": Out(1),
            "HREADYOUT": In(1), "HRESP": In(HResp), "HRDATA": In(data_width),
        })

    def __eq__(self, other):
        return (isinstance(other, AHBLiteSignature) and self.addr_width == other.addr_width
                and self.data_width == other.data_width)

    def __repr__(self):
        return f"AHBLiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


# The accelerator ports the slave drives or reads, and how the register map's live
# (non-constant) registers map onto them. A register added to the map without hardware here
# is caught when the slave is built.
_STATUS_SOURCES = {"BUSY": "busy", "DONE": "done", "ERROR": "error", "ERROR_CODE": "error_code",
                   "LAYER": "layer"}
_COUNTERS = {"CYCLES_TOTAL": "cycles_total", "CYCLES_BUSY": "cycles_busy",
             "CYCLES_COMPUTE": "cycles_compute", "CYCLES_STALL": "cycles_stall"}
_STORED = ("IRQ_ENABLE", "IRQ_STATUS")
_ACTIONS = ("CTRL",)
_ACCEL_PORTS = ("start", "busy", "done", "error", "error_code", "layer", "cycles_total",
                "cycles_busy", "cycles_compute", "cycles_stall",
                "prog_w_addr", "prog_w_data", "prog_w_en", "weight_w_addr", "weight_w_data",
                "weight_w_en", "param_w_addr", "param_w_data", "param_w_en",
                "act_w_addr", "act_w_data", "act_w_mask", "act_w_en",
                "act_r_addr", "act_r_data", "act_r_valid")
_WINDOW_PORTS = {"PROG": "prog", "PARAM": "param", "WEIGHT": "weight"}


def _log2(n: int) -> int:
    return (n - 1).bit_length()


class CIMSlave(wiring.Component):
    """AHB-Lite slave of the CIM accelerator (protocol in the module docstring).

    Parameters
    ----------
    regmap : RegMap
        The register map (:func:`gateware.regmap.register_map`); its ``addr_width`` low bits of
        ``HADDR`` are decoded, the bits above are ignored (the decoder's ``HSEL`` covers them).
    accel : wiring.Signature
        The signature of the :class:`~gateware.accelerator.Accelerator` to drive (its
        ``signature``), so that ``wiring.connect(m, slave.accel, accelerator)`` holds.

    Members
    -------
    bus : ``In(AHBLiteSignature(addr_width=32))``
        The AHB-Lite slave port.
    accel : ``In(accel)``
        To the accelerator: ``start``, the memory write ports and the activation read port
        out; status and counters in.
    irq : ``Out(1)``
        Interrupt request, level: ``IRQ_STATUS & IRQ_ENABLE`` is not zero.
    """

    def __init__(self, *, regmap: RegMap, accel: wiring.Signature):
        if not isinstance(regmap, RegMap):
            raise ValueError(f"Register map must be a RegMap, not {regmap!r}")
        if not isinstance(accel, wiring.Signature):
            raise ValueError(f"Accelerator signature must be a wiring.Signature, not "
                             f"{accel!r}")
        missing = [p for p in _ACCEL_PORTS if p not in accel.members]
        if missing:
            raise ValueError(f"Accelerator signature lacks {', '.join(missing)}")
        cfg = regmap.config
        width = {name: Shape.cast(accel.members[name].shape).width for name in _ACCEL_PORTS}
        act = regmap.window("ACT")
        if width["act_w_data"] != cfg.rows * cfg.a_bits or width["act_w_mask"] != cfg.rows:
            raise ValueError(f"Accelerator activation words must be {cfg.rows} lanes of "
                             f"{cfg.a_bits} bits, as the register map's configuration")
        for win, port in (*_WINDOW_PORTS.items(), ("ACT", "act")):
            words = regmap.window(win).words
            if 1 << width[f"{port}_w_addr"] < words:
                raise ValueError(f"Accelerator {port}_w_addr is too narrow for the {win} "
                                 f"window ({words} words)")
        if width["act_r_addr"] < _log2(act.words):
            raise ValueError("Accelerator act_r_addr is too narrow for the ACT window")
        handled = {"STATUS", *_COUNTERS, *_STORED, *_ACTIONS}
        for r in regmap.registers:
            if not r.const and r.name not in handled:
                raise ValueError(f"Register {r.name} has no hardware in the slave")
        status = regmap.register("STATUS")
        if {f.name for f in status.fields} != set(_STATUS_SOURCES):
            raise ValueError("STATUS fields and the slave's status sources differ")
        en, st = regmap.register("IRQ_ENABLE"), regmap.register("IRQ_STATUS")
        if ([(f.name, f.pos, f.width) for f in en.fields]
                != [(f.name, f.pos, f.width) for f in st.fields] or st.access is not Access.W1C):
            raise ValueError("IRQ_ENABLE and IRQ_STATUS must have the same fields, "
                             "IRQ_STATUS be W1C")
        self.regmap = regmap
        super().__init__({
            "bus": In(AHBLiteSignature(addr_width=32)),
            "accel": In(accel),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rm = self.regmap
        cfg = rm.config
        bus, acc = self.bus, self.accel
        regs = rm.registers
        blocks = ["REGS", *(w.name for w in rm.windows)]
        blk = {name: i for i, name in enumerate(blocks)}
        latency = ActivationBuffer.latency
        act = rm.window("ACT")
        slice_bits = _log2(rm.act_slices)

        addr = bus.HADDR[:rm.addr_width]
        size = bus.HSIZE.as_value()

        # ------------------------------------------------------------ address phase
        transfer = Signal()
        m.d.comb += transfer.eq(bus.HSEL & bus.HREADY
                                & ((bus.HTRANS == HTrans.NONSEQ) | (bus.HTRANS == HTrans.SEQ)))
        # The accelerator owns its memories from the cycle START reaches it.
        busy = Signal()
        m.d.comb += busy.eq(acc.busy | acc.start)
        aligned = Signal()
        m.d.comb += aligned.eq(Mux(size == HSize.WORD, addr[:2] == 0,
                                   Mux(size == HSize.HALFWORD, ~addr[0], 1)))

        def sizes_ok(sizes):
            return Cat(*[size == _log2(s) for s in sizes]).any()

        def inside(offset, nbytes):
            lo = _log2(nbytes)
            return addr[lo:] == offset >> lo

        ok = Signal()           # the transfer is legal: OKAY, else ERROR
        a_block = Signal(range(len(blocks)))
        a_reg = Signal(range(len(regs)))
        write = bus.HWRITE
        with m.If(inside(0, REG_BLOCK)):
            m.d.comb += a_block.eq(blk["REGS"])
            reg_index = addr[2:_log2(REG_BLOCK)]
            with m.Switch(reg_index):
                for i, r in enumerate(regs):
                    with m.Case(r.offset >> 2):
                        can_write = (r.access.writable
                                     and (~busy if r.idle_only else Const(1)))
                        allowed = Mux(write, can_write, r.access.readable)
                        m.d.comb += [a_reg.eq(i), ok.eq(sizes_ok(REG_SIZES) & aligned & allowed)]
        for w in rm.windows:
            with m.Elif(inside(w.offset, w.size)):
                m.d.comb += [a_block.eq(blk[w.name]),
                             ok.eq(sizes_ok(w.sizes) & aligned & ~busy
                                   & Mux(write, w.access.writable, w.access.readable))]
        # Otherwise unmapped: ok stays 0.

        lanes = Signal(4)
        with m.Switch(size):
            with m.Case(HSize.BYTE):
                m.d.comb += lanes.eq(Const(1, 4) << addr[:2])
            with m.Case(HSize.HALFWORD):
                m.d.comb += lanes.eq(Mux(addr[1], 0b1100, 0b0011))
            with m.Default():
                m.d.comb += lanes.eq(0b1111)

        # ------------------------------------------------------------ data phase state
        d_valid = Signal()      # a transfer of ours is in its data phase
        d_err = Signal()
        d_write = Signal()
        d_block = Signal(range(len(blocks)), decoder=lambda v: blocks[v] if v < len(blocks)
                         else str(v))
        d_reg = Signal(range(len(regs)),
                       decoder=lambda v: regs[v].name if v < len(regs) else str(v))
        d_addr = Signal(rm.addr_width)
        d_lanes = Signal(4)
        d_wait = Signal(range(latency + 1))   # cycles until HREADYOUT

        with m.If(bus.HREADY):
            m.d.sync += [d_valid.eq(transfer), d_err.eq(transfer & ~ok), d_write.eq(write),
                         d_block.eq(a_block), d_reg.eq(a_reg), d_addr.eq(addr),
                         d_lanes.eq(lanes)]
            with m.If(transfer & ~ok):
                m.d.sync += d_wait.eq(1)      # first cycle of the two-cycle ERROR
            with m.Elif(transfer & ~write & (a_block == blk["ACT"])):
                m.d.sync += d_wait.eq(latency)
            with m.Else():
                m.d.sync += d_wait.eq(0)
        with m.Elif(d_wait != 0):
            m.d.sync += d_wait.eq(d_wait - 1)

        m.d.comb += [bus.HREADYOUT.eq(d_wait == 0),
                     bus.HRESP.eq(Mux(d_valid & d_err, HResp.ERROR, HResp.OKAY))]
        # The cycle a legal transfer's data phase completes (its write happens here).
        complete = Signal()
        m.d.comb += complete.eq(d_valid & ~d_err & (d_wait == 0) & bus.HREADY)
        do_write = complete & d_write
        in_block = {name: d_block == i for name, i in blk.items()}

        # ------------------------------------------------------------ registers
        # Events for the sticky interrupt status: the rising edges of done and error.
        done_q = Signal()
        error_q = Signal()
        m.d.sync += [done_q.eq(acc.done), error_q.eq(acc.error)]
        events = {"DONE": acc.done & ~done_q, "ERROR": acc.error & ~error_q}

        stored = {}
        for name in _STORED:
            r = rm.register(name)
            stored[name] = Signal(32, init=r.reset, name=name.lower())
        irq_en, irq_st = stored["IRQ_ENABLE"], stored["IRQ_STATUS"]
        reg_write = {r.name: do_write & in_block["REGS"] & (d_reg == i)
                     for i, r in enumerate(regs)}
        en_r, st_r = rm.register("IRQ_ENABLE"), rm.register("IRQ_STATUS")
        with m.If(reg_write["IRQ_ENABLE"]):
            m.d.sync += irq_en.eq(bus.HWDATA & en_r.mask)
        set_word = Signal(32)
        m.d.comb += set_word.eq(sum(Value.cast(events[f.name]) << f.pos for f in st_r.fields))
        clear = Mux(reg_write["IRQ_STATUS"], bus.HWDATA, 0)
        m.d.sync += irq_st.eq(((irq_st & ~clear) | set_word) & st_r.mask)
        m.d.comb += self.irq.eq((irq_st & irq_en).any())

        start_f = rm.register("CTRL").field("START")
        m.d.comb += acc.start.eq(reg_write["CTRL"] & bus.HWDATA[start_f.pos])

        # What each readable register reads as (the constants need no flip-flops).
        read_value = {}
        for r in regs:
            if r.const:
                read_value[r.name] = Const(r.reset, 32)
            elif r.name in stored:
                read_value[r.name] = stored[r.name]
            elif r.name in _COUNTERS:
                read_value[r.name] = _pack(r, {"COUNT": getattr(acc, _COUNTERS[r.name])})
            elif r.name == "STATUS":
                read_value[r.name] = _pack(r, {f: getattr(acc, p)
                                               for f, p in _STATUS_SOURCES.items()})

        # ------------------------------------------------------------ memory windows
        for win, port in _WINDOW_PORTS.items():
            w = rm.window(win)
            m.d.comb += [getattr(acc, f"{port}_w_addr").eq(d_addr[2:_log2(w.size)]),
                         getattr(acc, f"{port}_w_data").eq(bus.HWDATA),
                         getattr(acc, f"{port}_w_en").eq(do_write & in_block[win])]

        # Activation window: word w, slice s at byte (w * slices + s) * 4.
        R, ab = cfg.rows, cfg.a_bits
        act_word = d_addr[2 + slice_bits:_log2(act.size)]
        act_slice = d_addr[2:2 + slice_bits]
        lanes_per_slice = min(R, 32 // ab)
        slice_mask = Cat(*[d_lanes[(lane * ab) // 8] for lane in range(lanes_per_slice)])
        m.d.comb += [
            acc.act_w_addr.eq(act_word),
            acc.act_w_data.eq(Cat(*[bus.HWDATA] * rm.act_slices)[:R * ab]),
            acc.act_w_mask.eq((slice_mask << (act_slice * lanes_per_slice))[:R]),
            acc.act_w_en.eq(do_write & in_block["ACT"]),
            acc.act_r_addr.eq(act_word),
        ]
        act_data = Cat(acc.act_r_data, Const(0, 32 * rm.act_slices - R * ab))

        # ------------------------------------------------------------ read data
        with m.If(d_valid & ~d_err & ~d_write):
            with m.If(in_block["REGS"]):
                with m.Switch(d_reg):
                    for i, r in enumerate(regs):
                        if r.name in read_value:
                            with m.Case(i):
                                m.d.comb += bus.HRDATA.eq(read_value[r.name])
            with m.Elif(in_block["ACT"]):
                m.d.comb += bus.HRDATA.eq(act_data.word_select(act_slice, 32))
        return m


def _pack(reg: Register, sources: dict) -> Value:
    """The 32-bit read value of ``reg`` from one value per field."""
    parts, pos = [], 0
    for f in sorted(reg.fields, key=lambda f: f.pos):
        v = Value.cast(sources[f.name]).as_unsigned()
        if len(v) > f.width:
            raise ValueError(f"{reg.name}.{f.name}: a {len(v)}-bit source does not fit "
                             f"{f.width} bits")
        parts += [Const(0, f.pos - pos), v, Const(0, f.width - len(v))]
        pos = f.pos + f.width
    return Cat(*parts, Const(0, 32 - pos))
