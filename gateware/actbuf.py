"""On-chip activation buffer (ping-pong) and the activation word layout.

Layout
------
One memory word holds one pixel's channel group: ``R`` unsigned activations of ``a_bits``,
channel ``c`` at bits ``[(c % R) * a_bits, (c % R + 1) * a_bits)``. A tensor of ``C`` channels
and ``H x W`` pixels stored at word address ``base`` takes ``H * W * G`` words,
``G = ceil(C / R)``; pixel ``(y, x)``, group ``cg`` is at ``base + (y * W + x) * G + cg``
(:func:`word_address`). Channels past ``C`` in the last group are zero. Padding pixels are not
stored. :func:`pack_tensor` is the reference for this layout.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from contract.config import A_BITS, ROWS_RANGE
from contract.timing import ACTBUF_LATENCY

__all__ = ["ActivationBuffer", "pack_tensor", "pack_word", "unpack_word", "word_address"]


def pack_word(values, a_bits: int) -> int:
    """One buffer word from the activations of one channel group (lane ``i`` = channel
    ``cg * R + i``); missing lanes are zero."""
    word = 0
    for i, v in enumerate(values):
        v = int(v)
        if not 0 <= v < 1 << a_bits:
            raise ValueError(f"Activation {v} does not fit {a_bits} unsigned bits")
        word |= v << (i * a_bits)
    return word


def unpack_word(word: int, rows: int, a_bits: int) -> list[int]:
    """The ``rows`` activations of one word."""
    mask = (1 << a_bits) - 1
    return [(word >> (i * a_bits)) & mask for i in range(rows)]


def word_address(y: int, x: int, cg: int, *, width: int, groups: int, base: int = 0) -> int:
    """Word address of pixel ``(y, x)``, channel group ``cg`` of a tensor at ``base``."""
    return base + (y * width + x) * groups + cg


def pack_tensor(x, *, rows: int, a_bits: int) -> list[int]:
    """The words of a ``(C, H, W)`` activation tensor in buffer order, from address 0."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"Tensor must have shape (C, H, W), not {x.shape}")
    c, h, w = x.shape
    groups = -(-c // rows)
    words = []
    for yy in range(h):
        for xx in range(w):
            for cg in range(groups):
                words.append(pack_word(x[cg * rows:(cg + 1) * rows, yy, xx], a_bits))
    return words


class ActivationBuffer(wiring.Component):
    """Two-bank activation buffer: one layer reads its input from one bank while it writes
    its output to the other.

    Each bank is :meth:`copies` memories of ``depth`` words, each a true-dual-port RAM (bank
    0's UltraRAM where the write enables are whole bytes, :meth:`ram_style`): port A is shared
    by the write and one lockstep reader (the write's address in a cycle that writes the
    bank; the reader's read is not made then), port B is a reader; a write goes to every copy
    of its bank. So
    ``n`` read ports cost ``ceil((n + 1) / 2)`` copies of a bank (the stream port is one of
    them), not ``n + 1``. The bank bit is the top address bit, ``read_bank`` for the stream
    port and ``write_bank`` for the write port. The stream port and the last lockstep port are
    on port B: they may read the bank being written (a read in the cycle that writes the same
    word returns the old word). The other lockstep ports must not read the bank written in
    the same cycle (their port A has the write's address then): the sequencer's macros read
    their layer's input bank and the output goes to the other one (``contract.program``'s
    ADDRESS check); the pooler, on port 0, does the same.

    Read path and latency
    ---------------------
    ``i_stream`` takes requests (any layout with ``addr`` and ``pad``); ``o_stream`` returns,
    per request and in order, the word at ``addr`` (zeros where ``pad = 1``; the RAM is then not
    read) with every other request field passed through. Two register stages: the RAM's
    synchronous read (stage 1, with the request fields delayed beside it) and the output
    register, backed by a one-word skid register. :attr:`latency` (2): a request transferred in
    cycle ``n`` is valid on ``o_stream`` in cycle ``n + 2`` if nothing stalls; one word per
    cycle while ``o_stream.ready`` is high. When the consumer stalls, the word already read
    lands in the skid register, so the RAM's read latency loses nothing, and ``i_stream.ready``
    comes from registers only (no combinational path from ``o_stream.ready``).

    Lockstep read ports
    -------------------
    ``reads[n]`` (``read_ports`` of them) are plain synchronous read ports for a consumer that
    never stalls (the sequencer feeding its macros in lockstep): ``addr`` is a global address
    (the bank is its top bit, ``read_bank`` does not apply), and in a cycle with ``en`` high
    the word at ``addr`` (zeros if ``pad``) appears on ``data`` in the next cycle
    (:attr:`port_latency`, 1) and stays there until the next ``en``.

    Write path
    ----------
    ``w_stream`` is always ready: a beat writes ``word`` at ``addr`` of ``write_bank`` in the
    cycle it is valid, the lanes whose ``mask`` bit is set (a column tile narrower than ``R``
    writes part of a word). Per-lane enables map to block-RAM byte enables when ``a_bits`` is 8;
    narrower lanes make the synthesizer split the RAM by lanes.

    Parameters
    ----------
    depth : int
        Words per bank, a power of two from 2 to 2**20.
    rows : int
        Activations per word (the CIM array's rows ``R``).
    a_bits : int
        Bits per activation.
    request_layout : data.StructLayout or None
        Layout of the read requests: must have ``addr`` (``unsigned(log2(depth))``) and ``pad``
        (1 bit), must not have ``word``. ``None``: just those two fields.
    read_ports : int
        Number of lockstep read ports, 0 to 1024.
    write_lanes : int
        Lanes per write enable of the memories (a power of two dividing ``rows``; ``mask``
        must be equal over each group of that many lanes). Byte-wide enables (``8 //
        a_bits`` lanes) let bank 0's copies be UltraRAM, whose write enables are per byte.

    Members
    -------
    i_stream : ``In(stream.Signature(request_layout))``
        Read requests.
    o_stream : ``Out(stream.Signature(out_layout))``
        ``word`` (``data.ArrayLayout(unsigned(a_bits), rows)``) and the request's other fields.
    w_stream : ``In(stream.Signature(write_layout))``
        ``addr``, ``word``, ``mask`` (``unsigned(rows)``, one bit per lane). Always ready.
    read_bank, write_bank : ``In(1)``
        Bank of the stream read port and of the write port.
    reads : ``In(read_signature).array(read_ports)``
        Lockstep read ports: ``addr`` (``log2(depth) + 1`` bits), ``pad``, ``en`` in; ``data``
        (the word layout) out.
    """

    latency = ACTBUF_LATENCY
    port_latency = 1

    def __init__(self, *, depth: int, rows: int, a_bits: int, request_layout=None,
                 read_ports: int = 0, write_lanes: int = 1):
        if (not isinstance(depth, int) or isinstance(depth, bool) or depth < 2
                or depth > 1 << 20 or depth & (depth - 1)):
            raise ValueError(f"Depth must be a power of two between 2 and {1 << 20}, "
                             f"not {depth!r}")
        lo, hi = ROWS_RANGE
        if (not isinstance(rows, int) or isinstance(rows, bool) or not lo <= rows <= hi
                or rows & (rows - 1)):
            raise ValueError(f"Rows must be a power of two between {lo} and {hi}, not {rows!r}")
        if a_bits not in A_BITS:
            raise ValueError(f"Activation bits must be one of {', '.join(map(str, A_BITS))}, "
                             f"not {a_bits!r}")
        if (not isinstance(read_ports, int) or isinstance(read_ports, bool)
                or not 0 <= read_ports <= 1024):
            raise ValueError(f"Read ports must be an integer from 0 to 1024, not {read_ports!r}")
        if (not isinstance(write_lanes, int) or isinstance(write_lanes, bool) or write_lanes < 1
                or write_lanes & (write_lanes - 1) or rows % write_lanes):
            raise ValueError(f"Write lanes must be a power of two dividing the rows ({rows}), "
                             f"not {write_lanes!r}")
        self.write_lanes = write_lanes
        self.depth = depth
        self.read_ports = read_ports
        self.rows = rows
        self.a_bits = a_bits
        self.addr_width = ceil_log2(depth)
        addr_shape = unsigned(self.addr_width)
        if request_layout is None:
            request_layout = data.StructLayout({"addr": addr_shape, "pad": 1})
        if not isinstance(request_layout, data.StructLayout):
            raise ValueError(f"Request layout must be a data.StructLayout, not "
                             f"{request_layout!r}")
        fields = dict(request_layout)
        shapes = {name: Shape.cast(fields[name].shape) for name in ("addr", "pad")
                  if name in fields}
        if shapes.get("addr") != addr_shape:
            raise ValueError(f"Request layout must have an addr field of {addr_shape!r} for "
                             f"depth {depth}, not {shapes.get('addr')!r}")
        if shapes.get("pad") != unsigned(1):
            raise ValueError("Request layout must have a 1-bit pad field")
        if "word" in fields:
            raise ValueError("Request layout must not have a field named word")
        self.request_layout = request_layout
        self.word_layout = data.ArrayLayout(unsigned(a_bits), rows)
        self.meta_layout = data.StructLayout({
            name: f.shape for name, f in fields.items() if name not in ("addr", "pad")})
        self.out_layout = data.StructLayout({"word": self.word_layout,
                                             **dict(self.meta_layout.members)})
        self.write_layout = data.StructLayout({
            "addr": addr_shape, "word": self.word_layout, "mask": unsigned(rows)})
        self.read_signature = wiring.Signature({
            "addr": Out(self.addr_width + 1), "pad": Out(1), "en": Out(1),
            "data": In(self.word_layout)})
        members = {
            "i_stream": In(stream.Signature(self.request_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
            "w_stream": In(stream.Signature(self.write_layout)),
            "read_bank": In(1),
            "write_bank": In(1),
        }
        if read_ports:
            members["reads"] = In(self.read_signature).array(read_ports)
        super().__init__(members)

    # ------------------------------------------------------------------ reference model

    def model(self, memory, requests, *, bank: int) -> list[dict]:
        """Bit-exact read path: the ``o_stream`` beats for ``requests`` (dicts of the request
        fields) read from ``bank``. ``memory`` is the RAM image: ``2 * depth`` words (ints,
        :func:`pack_word` layout), bank ``b`` at indices ``b * depth ...``. Words come back as
        ints."""
        if len(memory) != 2 * self.depth:
            raise ValueError(f"Memory image must have {2 * self.depth} words, not {len(memory)}")
        out = []
        for req in requests:
            beat = {name: req[name] for name in self.meta_layout.members}
            beat["word"] = 0 if req["pad"] else int(memory[bank * self.depth + req["addr"]])
            out.append(beat)
        return out

    # ------------------------------------------------------------------ hardware

    def ram_style(self, bank: int) -> str:
        """The memory bank ``bank``'s copies ask for (Vivado's ``ram_style``): bank 0 UltraRAM
        when its write enables are whole bytes, bank 1 block RAM. The two are separate
        budgets on the device: the split halves what either takes."""
        byte = self.write_lanes * self.a_bits == 8 or self.a_bits == 8
        return "ultra" if bank == 0 and byte else "block"

    def copies(self) -> int:
        """RAM copies per bank: two read ports each (module docstring)."""
        return max(1, -(-(self.read_ports + 1) // 2))

    def elaborate(self, platform):
        m = Module()
        i, o, w = self.i_stream, self.o_stream, self.w_stream
        aw = self.addr_width
        copies = self.copies()

        # Read port slots: (copy, port) with port 0 = A (shared with the write), 1 = B. The
        # stream port and the last lockstep port may read the bank being written: port B.
        slots_b = [(c, 1) for c in range(copies)]
        slots_a = [(c, 0) for c in range(copies)]
        if copies == 1:         # at most one lockstep port: port A
            order = [slots_b[0], *slots_a[:self.read_ports]]
        else:                   # the stream on B of copy 0, the last lockstep port on B of 1
            rest = slots_a + slots_b[2:]
            order = [slots_b[0], *rest[:self.read_ports - 1], slots_b[1]]
        wanted = {slot: n for n, slot in enumerate(order)}      # 0: stream, n + 1: reads[n]

        # Each reader's address, enable and word, per bank.
        r_addr = [Signal(aw, name=f"r{n}_addr") for n in range(len(order))]
        r_en = [Signal(name=f"r{n}_en") for n in range(len(order))]
        r_bank = [Signal(name=f"r{n}_bank") for n in range(len(order))]
        r_data = [[Signal(self.word_layout, name=f"r{n}_b{b}") for b in range(2)]
                  for n in range(len(order))]
        w_en = [Signal(self.rows, name=f"w{b}_en") for b in range(2)]
        m.d.comb += [w.ready.eq(1)]
        for b in range(2):
            m.d.comb += w_en[b].eq(Mux(w.valid & (self.write_bank == b), w.payload.mask, 0))
            for c in range(copies):
                mem = Memory(shape=self.word_layout, depth=self.depth, init=[],
                             attrs={"ram_style": self.ram_style(b)})
                m.submodules[f"bank{b}_copy{c}"] = mem
                wr = mem.write_port(granularity=self.write_lanes)
                # Port A: the write's address in a cycle that writes this bank, else its
                # reader's (one true-dual-port RAM per copy).
                shared = Signal(aw, name=f"bank{b}_copy{c}_addr_a")
                m.d.comb += [wr.addr.eq(shared), wr.data.eq(w.payload.word),
                             wr.en.eq(w_en[b][::self.write_lanes])]
                a = wanted.get((c, 0))
                m.d.comb += shared.eq(Mux(w_en[b].any(), w.payload.addr,
                                          r_addr[a] if a is not None else 0))
                for port, n in ((0, a), (1, wanted.get((c, 1)))):
                    if n is None:
                        continue
                    rd = mem.read_port(transparent_for=())
                    # Port A reads only in cycles that do not write its bank (no-change, as
                    # UltraRAM does; its reader never reads the bank being written).
                    en = r_en[n] & (r_bank[n] == b)
                    m.d.comb += [rd.addr.eq(shared if port == 0 else r_addr[n]),
                                 rd.en.eq(en & ~w_en[b].any() if port == 0 else en),
                                 r_data[n][b].eq(rd.data)]

        def read(n, addr, bank, en):
            """Reader ``n``'s request; its word (both banks' copies, chosen by the bank the
            request named) the cycle after."""
            bank_q = Signal(name=f"r{n}_bank_q")
            m.d.comb += [r_addr[n].eq(addr), r_bank[n].eq(bank), r_en[n].eq(en)]
            with m.If(en):
                m.d.sync += bank_q.eq(bank)
            return Mux(bank_q, r_data[n][1].as_value(), r_data[n][0].as_value())

        for n in range(self.read_ports):
            port = self.reads[n]
            pad_q = Signal(name=f"read{n}_pad")
            word = read(n + 1, port.addr[:aw], port.addr[aw], port.en & ~port.pad)
            m.d.comb += port.data.eq(Mux(pad_q, 0, word))
            with m.If(port.en):
                m.d.sync += pad_q.eq(port.pad)

        # Stage 1: the RAM read, with the request fields beside it.
        s1_valid = Signal()
        s1_pad = Signal()
        s1_meta = Signal(self.meta_layout)
        # Output stage: o_stream's registers and the skid register behind them.
        sk_valid = Signal()
        sk = Signal(self.out_layout)

        # Stage 1 moves when it is empty or its word leaves for the output stage, which takes
        # it whenever the skid register is free (into the output, or into the skid register
        # if the output stalls).
        advance = Signal()
        m.d.comb += [
            advance.eq(~s1_valid | ~sk_valid),
            i.ready.eq(advance),
        ]
        # Padding reads nothing; with en low the RAM holds its output.
        stream_word = read(0, i.payload.addr, self.read_bank, advance & i.valid & ~i.payload.pad)
        with m.If(advance):
            m.d.sync += [s1_valid.eq(i.valid), s1_pad.eq(i.payload.pad)]
            m.d.sync += [getattr(s1_meta, name).eq(getattr(i.payload, name))
                         for name in self.meta_layout.members]

        up = Signal(self.out_layout)
        m.d.comb += up.word.eq(Mux(s1_pad, 0, stream_word))
        m.d.comb += [getattr(up, name).eq(getattr(s1_meta, name))
                     for name in self.meta_layout.members]

        with m.If(~o.valid | o.ready):
            with m.If(sk_valid):
                m.d.sync += [o.payload.eq(sk), o.valid.eq(1), sk_valid.eq(0)]
            with m.Else():
                m.d.sync += [o.payload.eq(up), o.valid.eq(s1_valid)]
        with m.Elif(s1_valid & ~sk_valid):
            m.d.sync += [sk.eq(up), sk_valid.eq(1)]
        return m
