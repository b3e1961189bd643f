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
  ``CTRL`` (an ``idle_only`` register) or any window access while the accelerator is busy,
  but a write to a double-buffered window's slot other than the accelerator's active one
  (``Window.slot_bytes`` of :mod:`gateware.regmap`: the ``IMAGE`` window). "Busy" includes a
  START written in the data phase that overlaps this address phase, so a transfer pipelined
  behind START never touches a memory the sequencer now owns.
* Writes take effect in their (single-cycle) data phase, reads of registers return the value
  in the data phase, so a read pipelined behind a write sees it.
* Activation reads: the buffer word is read from the registered address in the first
  data-phase cycle and arrives :attr:`ActivationBuffer.latency <gateware.actbuf.
  ActivationBuffer>` (2) cycles later: two wait states. Reading from the registered address
  rather than straight from ``HADDR`` costs one wait state and buys two things: a write in the
  preceding data phase is already in the (non-transparent) block RAM, and no path runs from
  ``HADDR`` into the RAM's address.
* Logit reads (the ``LOGITS`` window): the addressed logit register is read from the
  registered address in the data phase (no wait state).
* Activation writes: ``HWDATA`` is replicated over the wide word and only the lanes of the
  active byte lanes (``HSIZE``, ``HADDR[1:0]``, little-endian) of the addressed slice are
  enabled (``act_w_mask``).
* Registers behave as declared in :mod:`gateware.regmap` (no register is named here): ``irq``
  is high while some bit of ``IRQ_STATUS & IRQ_ENABLE`` is set; ``IRQ_STATUS.DONE`` is set
  when the accelerator's ``done`` rises, ``.ERROR`` when ``error`` rises; both stay set
  until software writes 1 to them (an event in the same cycle as the clearing write wins,
  so none is lost).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .actbuf import ActivationBuffer
from .regmap import REG_BLOCK, REG_SIZES, Access, Drive, Port, Pulse, Register, RegMap, Rise

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


# The accelerator ports the slave itself uses: START and busy (a START in flight closes the
# windows), the memory write ports and the activation read port. The registers' ports are
# named by their declarations (gateware.regmap: Port, Rise, Pulse) and checked when the slave
# is built.
_WINDOW_PORTS = {"PROG": "prog", "PARAM": "param", "WEIGHT": "weight", "IMAGE": "image",
                 "CAL": "cal"}
_MEMORY_PORTS = ("prog_w_addr", "prog_w_data", "prog_w_en", "weight_w_addr", "weight_w_data",
                 "weight_w_en", "param_w_addr", "param_w_data", "param_w_en",
                 "act_w_addr", "act_w_data", "act_w_mask", "act_w_en",
                 "act_r_addr", "act_r_data", "act_r_valid", "logit_r_addr", "logit_r_data")
_ACCEL_PORTS = ("start", "busy", *_MEMORY_PORTS)


class CIMSlave(wiring.Component):
    """AHB-Lite slave of the CIM accelerator (protocol in the module docstring).

    The registers' behaviour is that of their declarations in the map: constants, RO fields
    read from accelerator outputs, stored RW registers, W1C bits set by accelerator events, WO
    bits that pulse accelerator inputs, and the interrupt from each W1C register and its
    ``irq_enable`` register (:mod:`gateware.regmap`). A register added to the map needs no
    change here.

    Parameters
    ----------
    regmap : RegMap
        The register map (:func:`gateware.regmap.register_map`); its ``addr_width`` low bits of
        ``HADDR`` are decoded, the bits above are ignored (the decoder's ``HSEL`` covers them).
    accel : wiring.Signature
        The signature of the :class:`~gateware.accelerator.Accelerator` to drive (its
        ``signature``), so that ``wiring.connect(m, slave.accel, accelerator)`` holds. It must
        have every port the map's fields name, in the direction and width they need.

    Members
    -------
    bus : ``In(AHBLiteSignature(addr_width=32))``
        The AHB-Lite slave port.
    accel : ``In(accel)``
        To the accelerator: the memory write ports, the activation and logit read ports and
        the ports
        the register declarations name (``start`` out; status and counters in).
    irq : ``Out(1)``
        Interrupt request, level: some W1C register has a bit set whose ``irq_enable`` bit
        is set (``IRQ_STATUS & IRQ_ENABLE`` is not zero).

    Attributes
    ----------
    stored : dict of str to Signal
        The flip-flops of the stored (RW and W1C) registers, by register name: not ports,
        read by the formal harness (:mod:`gateware.formal`).
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
        present = {w.name for w in regmap.windows}
        for win, port in (*_WINDOW_PORTS.items(), ("ACT", "act")):
            if win not in present:
                continue
            lack = [f"{port}_w_{p}" for p in ("addr", "data", "en")
                    if f"{port}_w_{p}" not in accel.members]
            if lack:
                raise ValueError(f"Accelerator signature lacks {', '.join(lack)}")
            width[f"{port}_w_addr"] = Shape.cast(accel.members[f"{port}_w_addr"].shape).width
            words = regmap.window(win).words
            if 1 << width[f"{port}_w_addr"] < words:
                raise ValueError(f"Accelerator {port}_w_addr is too narrow for the {win} "
                                 f"window ({words} words)")
        if width["act_r_addr"] < ceil_log2(act.words):
            raise ValueError("Accelerator act_r_addr is too narrow for the ACT window")
        if 1 << width["logit_r_addr"] < min(cfg.cols, regmap.window("LOGITS").words):
            raise ValueError("Accelerator logit_r_addr is too narrow for the LOGITS window")
        _check_bindings(regmap, accel)
        self.regmap = regmap
        super().__init__({
            "bus": In(AHBLiteSignature(addr_width=32)),
            "accel": In(accel),
            "irq": Out(1),
        })
        # Named here rather than in elaborate() so the formal harness can hold them against
        # its model of the map (gateware.formal): a full proof needs the state, not just
        # what a read shows of it.
        self.stored = {r.name: Signal(32, init=r.reset, name=r.name.lower())
                       for r in regmap.registers
                       if not r.const and r.access in (Access.RW, Access.W1C)}

    def elaborate(self, platform):
        m = Module()
        rm = self.regmap
        bus, acc = self.bus, self.accel
        regs = rm.registers
        blocks = ["REGS", *(w.name for w in rm.windows)]
        blk = {name: i for i, name in enumerate(blocks)}
        latency = ActivationBuffer.latency
        addr = bus.HADDR[:rm.addr_width]
        write = bus.HWRITE

        # ------------------------------------------------------------ address phase
        transfer = Signal()
        m.d.comb += transfer.eq(bus.HSEL & bus.HREADY
                                & ((bus.HTRANS == HTrans.NONSEQ) | (bus.HTRANS == HTrans.SEQ)))
        # The accelerator owns its memories from the cycle START reaches it.
        busy = Signal()
        m.d.comb += busy.eq(acc.busy | acc.start)
        ok, a_block, a_reg = self._decode(m, addr, busy, blocks)
        lanes = _byte_lanes(m, addr, bus.HSIZE.as_value())

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

        # ------------------------------------------------------------ registers and windows
        reg_write = {r.name: do_write & in_block["REGS"] & (d_reg == i)
                     for i, r in enumerate(regs)}
        read_value = self._registers(m, reg_write)
        act_read = self._windows(m, d_addr, d_lanes, do_write, in_block)

        # ------------------------------------------------------------ read data
        with m.If(d_valid & ~d_err & ~d_write):
            with m.If(in_block["REGS"]):
                with m.Switch(d_reg):
                    for i, r in enumerate(regs):
                        if r.name in read_value:
                            with m.Case(i):
                                m.d.comb += bus.HRDATA.eq(read_value[r.name])
            with m.Elif(in_block["ACT"]):
                m.d.comb += bus.HRDATA.eq(act_read)
            with m.Elif(in_block["LOGITS"]):
                m.d.comb += bus.HRDATA.eq(acc.logit_r_data)
            if "CMP" in in_block:
                with m.Elif(in_block["CMP"]):
                    m.d.comb += bus.HRDATA.eq(acc.cmp_r_data)
        return m

    def _decode(self, m, addr, busy, blocks):
        """The address phase: whether the transfer is legal (``ok``), its block (an index of
        ``blocks``) and register (an index of the map's registers)."""
        rm, bus = self.regmap, self.bus
        size, write = bus.HSIZE.as_value(), bus.HWRITE
        aligned = Signal()
        m.d.comb += aligned.eq(Mux(size == HSize.WORD, addr[:2] == 0,
                                   Mux(size == HSize.HALFWORD, ~addr[0], 1)))

        def sizes_ok(sizes):
            return Cat(*[size == exact_log2(s) for s in sizes]).any()

        def inside(offset, nbytes):
            lo = exact_log2(nbytes)
            return addr[lo:] == offset >> lo

        ok = Signal()           # the transfer is legal: OKAY, else ERROR
        a_block = Signal(range(len(blocks)))
        a_reg = Signal(range(len(rm.registers)))
        with m.If(inside(0, REG_BLOCK)):
            m.d.comb += a_block.eq(blocks.index("REGS"))
            with m.Switch(addr[2:exact_log2(REG_BLOCK)]):
                for i, r in enumerate(rm.registers):
                    with m.Case(r.offset >> 2):
                        can_write = (r.access.writable
                                     and (~busy if r.idle_only else Const(1)))
                        allowed = Mux(write, can_write, r.access.readable)
                        m.d.comb += [a_reg.eq(i), ok.eq(sizes_ok(REG_SIZES) & aligned & allowed)]
        for w in rm.windows:
            mapped = inside(w.offset, w.size)
            if w.end - w.offset < w.size:   # the window's unmapped tail (Window.end)
                mapped = mapped & (addr[:exact_log2(w.size)] < w.end - w.offset)
            with m.Elif(mapped):
                open_ = ~busy
                if w.active_slot is not None:
                    # Double buffering: the slot the running program does not read is open.
                    slot = addr[:exact_log2(w.size)] >= w.slot_bytes
                    open_ = open_ | (write & (slot != getattr(self.accel, w.active_slot)))
                m.d.comb += [a_block.eq(blocks.index(w.name)),
                             ok.eq(sizes_ok(w.sizes) & aligned & open_
                                   & Mux(write, w.access.writable, w.access.readable))]
        # Otherwise unmapped: ok stays 0.
        return ok, a_block, a_reg

    def _registers(self, m, reg_write):
        """Each register's declared behaviour (``reg_write``: per register, its write
        completes this cycle); returns what each readable register reads as."""
        acc, data = self.accel, self.bus.HWDATA
        rises = {}

        def rise(port):     # one flip-flop per accelerator output whose rising edge counts
            if port not in rises:
                prev = Signal(name=f"{port}_q")
                m.d.sync += prev.eq(getattr(acc, port))
                rises[port] = getattr(acc, port) & ~prev
            return rises[port]

        read, stored = {}, {}
        for r in self.regmap.registers:
            write = reg_write[r.name]
            if r.const:             # constants need no flip-flops
                read[r.name] = Const(r.reset, 32)
            elif r.access is Access.RO:
                read[r.name] = _pack(r, {f.name: getattr(acc, f.hw.port) for f in r.fields})
            elif r.access is Access.WO:
                m.d.comb += [getattr(acc, f.hw.port).eq(write & data[f.pos]) for f in r.fields]
            else:                   # stored: RW, or W1C
                stored[r.name] = read[r.name] = reg = self.stored[r.name]
                if r.access is Access.RW:
                    with m.If(write):
                        m.d.sync += reg.eq(data & r.mask)
                    m.d.comb += [getattr(acc, f.hw.port).eq(reg[f.pos:f.pos + f.width])
                                 for f in r.fields if isinstance(f.hw, Drive)]
                else:               # W1C: an event in the cycle of the clearing write wins
                    set_word = Signal(32, name=f"{r.name.lower()}_set")
                    m.d.comb += set_word.eq(sum(Value.cast(rise(f.hw.port)) << f.pos
                                                for f in r.fields))
                    clear = Mux(write, data, 0)
                    m.d.sync += reg.eq(((reg & ~clear) | set_word) & r.mask)
        irqs = [(stored[r.name] & stored[r.irq_enable]).any()
                for r in self.regmap.registers if r.irq_enable is not None]
        m.d.comb += self.irq.eq(Cat(*irqs).any() if irqs else 0)
        return read

    def _windows(self, m, d_addr, d_lanes, do_write, in_block):
        """The memory windows' ports from the data phase; returns the 32-bit slice of the
        activation word read (valid ``latency`` cycles into an ACT read)."""
        rm, acc, data = self.regmap, self.accel, self.bus.HWDATA
        present = {w.name for w in rm.windows}
        for win, port in _WINDOW_PORTS.items():
            if win not in present:
                continue
            w = rm.window(win)
            m.d.comb += [getattr(acc, f"{port}_w_addr").eq(d_addr[2:exact_log2(w.size)]),
                         getattr(acc, f"{port}_w_data").eq(data),
                         getattr(acc, f"{port}_w_en").eq(do_write & in_block[win])]

        # Activation window: word w, slice s at byte (w * slices + s) * 4.
        R, ab = rm.config.rows, rm.config.a_bits
        slice_bits = exact_log2(rm.act_slices)
        act_word = d_addr[2 + slice_bits:exact_log2(rm.window("ACT").size)]
        act_slice = d_addr[2:2 + slice_bits]
        lanes_per_slice = min(R, 32 // ab)
        slice_mask = Cat(*[d_lanes[(lane * ab) // 8] for lane in range(lanes_per_slice)])
        m.d.comb += [
            acc.act_w_addr.eq(act_word),
            acc.act_w_data.eq(Cat(*[data] * rm.act_slices)[:R * ab]),
            acc.act_w_mask.eq((slice_mask << (act_slice * lanes_per_slice))[:R]),
            acc.act_w_en.eq(do_write & in_block["ACT"]),
            acc.act_r_addr.eq(act_word),
        ]
        act_data = Cat(acc.act_r_data, Const(0, 32 * rm.act_slices - R * ab))
        # Logits: word c is logit c, read combinationally in the data phase (no wait state).
        m.d.comb += acc.logit_r_addr.eq(d_addr[2:exact_log2(rm.window("LOGITS").size)])
        if "CMP" in present:
            # Comparators (calibration rows): word n, read combinationally like LOGITS.
            m.d.comb += acc.cmp_r_addr.eq(d_addr[2:exact_log2(rm.window("CMP").size)])
        return act_data.word_select(act_slice, 32)


def _byte_lanes(m, addr, size):
    """The active byte lanes of a transfer (little-endian), as :func:`byte_lanes`."""
    lanes = Signal(4)
    with m.Switch(size):
        with m.Case(HSize.BYTE):
            m.d.comb += lanes.eq(Const(1, 4) << addr[:2])
        with m.Case(HSize.HALFWORD):
            m.d.comb += lanes.eq(Mux(addr[1], 0b1100, 0b0011))
        with m.Default():
            m.d.comb += lanes.eq(0b1111)
    return lanes


def _check_bindings(regmap: RegMap, accel: wiring.Signature) -> None:
    """Every port the map's fields name is an accelerator port of the direction and width its
    behaviour needs, and no accelerator input is driven twice."""
    driven = {}
    for r in regmap.registers:
        for f in r.fields:
            if f.hw is None:
                continue
            where, port = f"Register {r.name}: field {f.name}", f.hw.port
            kind = type(f.hw).__name__
            member = accel.members[port] if port in accel.members else None
            if member is None or not member.is_port:
                raise ValueError(f"{where}: the accelerator has no port {port!r} for its "
                                 f"{kind}")
            want = In if isinstance(f.hw, (Pulse, Drive)) else Out
            if member.flow != want:
                raise ValueError(f"{where}: a {kind} needs an accelerator "
                                 f"{'input' if want == In else 'output'}, and {port} is not one")
            width = Shape.cast(member.shape).width
            if isinstance(f.hw, Port) and width > f.width:
                raise ValueError(f"{where}: the {width}-bit port {port} does not fit "
                                 f"{f.width} bits")
            if isinstance(f.hw, Drive) and width != f.width:
                raise ValueError(f"{where}: a Drive needs a {f.width}-bit port; {port} has "
                                 f"{width}")
            if isinstance(f.hw, (Rise, Pulse)) and width != 1:
                raise ValueError(f"{where}: a {kind} needs a 1-bit port; {port} has {width}")
            if isinstance(f.hw, (Pulse, Drive)):
                if port in _MEMORY_PORTS or port in driven:
                    raise ValueError(f"{where}: accelerator input {port} is already driven "
                                     f"by {driven.get(port, 'the slave')}")
                driven[port] = f"{r.name}.{f.name}"
    for w in regmap.windows:
        member = accel.members.get(w.active_slot) if w.active_slot else None
        if w.active_slot and (member is None or not member.is_port or member.flow != Out
                              or Shape.cast(member.shape).width != 1):
            raise ValueError(f"Window {w.name}: active_slot {w.active_slot!r} must be a 1-bit "
                             f"accelerator output")


def _pack(reg: Register, sources: dict) -> Value:
    """The 32-bit read value of ``reg`` from one value per field (each fits its field:
    :func:`_check_bindings`)."""
    parts, pos = [], 0
    for f in sorted(reg.fields, key=lambda f: f.pos):
        v = Value.cast(sources[f.name]).as_unsigned()
        parts += [Const(0, f.pos - pos), v, Const(0, f.width - len(v))]
        pos = f.pos + f.width
    return Cat(*parts, Const(0, 32 - pos))
