# amaranth: UnusedElaboratable=no
"""The accelerator: CIM macros, weight store, activation buffer and the layer sequencer.

:class:`Accelerator` runs a program compiled by :func:`compiler.compile_model` (layer
descriptors, weight image, parameter image, activation-buffer layout: all as documented in
:mod:`compiler`) and computes exactly what :func:`compiler.execute` computes.

Schedule (weight stationary; :mod:`compiler.cycles` states it in formulas)
-----------------------------------------------------------------------
Four units run side by side, each counting its own way through a layer:

* **Fetcher and weight loader.** The fetcher reads and checks descriptors ahead of the
  layers. The loader takes each descriptor in turn and walks its rounds: for every macro of a
  round it computes the tile's weight-store address and taps ``(kh, kw, cg)``, two macros per
  cycle, and hands them to the macro's one-entry pending slot. A macro loads its pending tile
  (``rows / write_rows`` beats through its own weight-store read port) into its shadow copy as
  soon as it commits the previous one, so the next round's tiles, and the next layer's first
  ones, load while the array computes. Descriptors reach the issuer through a two-entry queue
  with their check code.
* **Issuer.** Per column tile ``j``, the ``T`` row tiles run in rounds of up to ``M``
  macros; with ``T < M`` the tiles are loaded ``cp`` times (``copies``) and the copies take
  turns over the pixels. A round starts when all its macros hold their tiles; it streams the
  ``P`` output pixels in slots of ``L`` cycles, ``cp`` pixels per slot, group ``g`` at cycle
  ``g * sp`` of the slot (``sp``: the words one output or residual pixel takes on its buffer
  port). At its issue cycle every macro of the group reads its tap's word for the pixel
  through its own activation-buffer port (lockstep: the macros never wait on each other),
  zero for padding, and streams its ``a_bits`` bit-planes, MSB first; the first one of a
  round commits the tile.
* **Residual reader.** Reads the residual elements (``res_sl`` slice words per pixel, sign
  extended) through one more buffer port into a FIFO, ahead of the final rounds that need
  them (a final-round pixel is issued only once its residual is in the FIFO).
* **Collector and writer.** Only one group finishes per cycle, so the valid macro results
  are one pixel's: an adder tree sums them and adds the pixel's running sum (a memory of one
  ``cols x acc_width`` entry per output pixel). On the final round the total goes, with the
  column tile's parameter row (``cols`` records read in one cycle) and the residual, to the
  :class:`~gateware.datapath.Datapath`; its result is written back as ``out_sl`` slice words at
  the compiler's address (``base + ((y * W + x) * G + cg) * S + s``), lanes ``j * C mod R``
  on. Nothing on this path can stall: the slot timing leaves the Datapath and the write port
  free (``OVERRUN`` reports it if that were ever wrong), and results are never dropped.

Column tiles follow each other without a drain; layers do not overlap (a layer reads the
previous one's output). The descriptor check is the only
statement of the window's limits in the hardware (:data:`contract.arith.KERNELS`,
``STRIDES``, the configuration's sizes).

Control and status
------------------
``start`` (pulse, ignored while ``busy``) runs the program from descriptor 0 until a
descriptor with ``last``. ``done`` is set when the program ends (or stops on an error) and
stays set until the next ``start``; ``error`` / ``error_code`` (:class:`AccelError`) tell why
it stopped early. Counters (cleared by ``start``): ``cycles_total`` (every cycle since start),
``cycles_busy``, ``cycles_compute`` (some macro accepted a bit-plane), ``cycles_stall`` (busy,
no macro computing, while the issuer waits for a round's weights or for a residual).
Run-time errors (``OVERFLOW``: the Datapath's accumulator overflowed; ``OVERRUN``) stop the
program at the end of the layer.

Memory ports (for the bus slave; use them while not ``busy``)
--------------------------------------------------------------
``prog_w_*``, ``weight_w_*``, ``param_w_*``: 32-bit word writes at a word address of the
program, weight image and parameter image. ``act_w_*``: the lanes of ``act_w_mask`` (one bit
per ``a_bits`` activation) of the word at a global buffer address (``bank * bank_words +
offset``), so a 32-bit bus write touches only its own lanes. ``act_r_addr`` -> ``act_r_data`` /
``act_r_valid``: while not busy, the word at ``act_r_addr`` appears ``ActivationBuffer.latency``
(2) cycles later.
"""

from __future__ import annotations

from amaranth.hdl import (
    Cat,
    ClockSignal,
    Const,
    Instance,
    Module,
    Mux,
    ResetInserter,
    ResetSignal,
    Signal,
    signed,
)
from amaranth.lib import enum, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from contract.arith import MAX_SHIFT
from contract.config import HwConfig
from contract.program import DESC_WORDS, FIELDS, LAYOUT, PARAM_WORDS, beat_words

from .actbuf import ActivationBuffer
from .cim_macro import CIMMacro, tree_sum
from .datapath import VALUE_BITS, Datapath
from .ram import RAM

__all__ = ["AccelError", "Accelerator", "weight_ram"]


class AccelError(enum.Enum, shape=4):
    """Why the sequencer stopped (``NONE``: it did not)."""

    NONE = 0
    KERNEL = 1      #: kernel not 1, 3, 5, 7
    STRIDE = 2      #: stride not 1 or 2
    SIZE = 3        #: sizes zero, too large, or output size inconsistent with the input
    TILES = 4       #: zero tiles, or tile counts inconsistent with the shapes
    FORMAT = 5      #: shift, output or residual bits illegal
    PROGRAM = 6     #: ran off the end of program memory without a ``last`` descriptor
    OVERFLOW = 7    #: a running sum left the accumulator (the compiler's width check failed)
    OVERRUN = 8     #: the schedule lost a result (a sequencer bug: please report it)


RES_FIFO_DEPTH = 8
"""Residuals read ahead of the issuer."""


def weight_ram(config: HwConfig, *, module: str | None = None, init=None) -> RAM:
    """The weight store of ``config``: one word per write beat of a macro, one read port per
    macro, 32-bit writes; ``init``: 32-bit words from address 0."""
    bw = beat_words(config)
    words = [int(w) for w in (init if init is not None else ())]
    words += [0] * (-len(words) % bw)
    beats = [sum(w << (32 * i) for i, w in enumerate(words[k:k + bw]))
             for k in range(0, len(words), bw)]
    # UltraRAM: in block RAM the default configuration's copies (one per read port) do not
    # fit the XCVU13P (docs/build.md).
    return RAM(width=bw * 32, depth=max(config.weight_words, bw) // bw, granularity=32,
               read_ports=config.macros, module=module, init=beats, ram_style="ultra")


def _ports(component):
    """``(path, flow, signal)`` of every port of an elaborated-elsewhere component, as the
    Verilog back end names them (``input__payload``: the path joined by ``__``)."""
    for path, member, value in component.signature.flatten(component):
        yield path, member.flow, value.as_value() if hasattr(value, "as_value") else value


def _log2(n):
    return (n - 1).bit_length()


class Accelerator(wiring.Component):
    """CIM accelerator running a compiled layer program (see the module docstring).

    Parameters
    ----------
    config : HwConfig
        The hardware configuration (rows, cols, bits, macros). ``cols`` must divide ``rows``
        and the macros must be double buffered.
        Memory depths and layer limits come from it too (``prog_words``, ``weight_words``,
        ``param_words``; ``max_size``, ``max_groups``, ``max_pixels``: larger is
        ``AccelError.SIZE``).
    acc_width, bank_words : int or None
        Datapath accumulator width and words per activation-buffer bank when they differ from
        the configuration's (as given to the compiler).
    macro_module : str or None
        ``None``: the macros are :class:`~gateware.cim_macro.CIMMacro` submodules. A name:
        they are instances of a Verilog module of that name, emitted once beside the design
        (:func:`gateware.emit.verilog`), so the Verilog holds one macro, not ``macros`` copies
        (18 copies of the ``default`` macro are 52 MB of Verilog and 10 minutes to emit).
    ram_module : str or None
        ``None``: the weight store is an Amaranth memory. A name: an instance of a Verilog RAM
        of that name (:func:`weight_ram`, :mod:`gateware.ram`), emitted beside the design.
    macro_style : str
        :data:`gateware.cim_macro.STYLES` of the macro submodules.
    weight_init : sequence of int or None
        Simulation only: the weight image (32-bit words) preloaded into the weight store, so a
        simulation of a large network need not spend a cycle per word loading it.

    Members
    -------
    start : ``In(1)``; busy, done, error : ``Out(1)``; error_code : ``Out(AccelError)``
    layer : ``Out(8)``: index of the descriptor being run.
    cycles_total, cycles_busy, cycles_compute, cycles_stall : ``Out(32)``
    prog_w_addr / prog_w_data / prog_w_en, weight_w_*, param_w_*: 32-bit write ports.
    act_w_addr / act_w_data / act_w_mask / act_w_en, act_r_addr / act_r_data / act_r_valid.
    """

    def __init__(self, *, config: HwConfig, acc_width: int | None = None,
                 bank_words: int | None = None, macro_module: str | None = None,
                 ram_module: str | None = None, macro_style: str = "structural",
                 weight_init=None):
        if not isinstance(config, HwConfig):
            raise ValueError(f"Configuration must be a HwConfig, not {config!r}")
        if macro_module is not None and not (isinstance(macro_module, str)
                                             and macro_module.isidentifier()):
            raise ValueError(f"Macro module must be a Verilog identifier, not {macro_module!r}")
        self.macro_module = macro_module
        self.ram_module = ram_module      # validated by the RAM
        self.macro_style = macro_style    # validated by the macro
        self.weight_init = weight_init
        if not config.double_buffer:
            raise ValueError("The sequencer needs double-buffered macros (double_buffer=True)")
        if config.rows % config.cols:
            raise ValueError(f"Columns ({config.cols}) must divide rows ({config.rows})")
        acc_width = config.acc_width if acc_width is None else acc_width
        bank_words = config.bank_words if bank_words is None else bank_words
        if not isinstance(bank_words, int) or bank_words < 2 or bank_words & (bank_words - 1):
            raise ValueError(f"Bank words must be a power of two of at least 2, not "
                             f"{bank_words!r}")
        prog_words, weight_words, param_words = (config.prog_words, config.weight_words,
                                                 config.param_words)
        max_size, max_groups, max_pixels = config.max_size, config.max_groups, config.max_pixels
        self.config = config
        self.acc_width = acc_width
        self.bank_words = bank_words
        if prog_words < DESC_WORDS:
            raise ValueError(f"Program words ({prog_words}) must hold a descriptor "
                             f"({DESC_WORDS} words)")
        self.prog_words = prog_words
        self.beat_words = beat_words(config)
        if self.beat_words & (self.beat_words - 1):
            raise ValueError(f"A weight beat must be a power-of-two number of words, not "
                             f"{self.beat_words}")
        self.weight_words = max(weight_words, self.beat_words)
        if param_words < PARAM_WORDS * config.cols:
            raise ValueError(f"Parameter words ({param_words}) must hold one column tile's "
                             f"records ({PARAM_WORDS * config.cols} words)")
        self.param_words = param_words
        self.max_size = max_size
        self.max_groups = max_groups
        self.max_pixels = max_pixels
        R, ab = config.rows, config.a_bits
        self.act_addr_width = _log2(2 * bank_words)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "error_code": Out(AccelError), "layer": Out(8),
            "cycles_total": Out(32), "cycles_busy": Out(32), "cycles_compute": Out(32),
            "cycles_stall": Out(32),
            "prog_w_addr": In(range(prog_words)), "prog_w_data": In(32), "prog_w_en": In(1),
            "weight_w_addr": In(range(self.weight_words)), "weight_w_data": In(32),
            "weight_w_en": In(1),
            "param_w_addr": In(range(param_words)), "param_w_data": In(32), "param_w_en": In(1),
            "act_w_addr": In(self.act_addr_width), "act_w_data": In(R * ab),
            "act_w_mask": In(R), "act_w_en": In(1),
            "act_r_addr": In(self.act_addr_width), "act_r_data": Out(R * ab),
            "act_r_valid": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 (one sequencer, read top to bottom)
        m = Module()
        cfg = self.config
        R, C, ab, M = cfg.rows, cfg.cols, cfg.a_bits, cfg.macros
        wc = cfg.write_cycles
        bw = self.beat_words
        baw = _log2(self.bank_words)
        aw = self.acc_width

        # ------------------------------------------------------------ memories
        m.submodules.prog = prog = Memory(shape=32, depth=self.prog_words, init=[])
        pw = prog.write_port()
        pr = prog.read_port(transparent_for=())
        m.d.comb += [pw.addr.eq(self.prog_w_addr), pw.data.eq(self.prog_w_data),
                     pw.en.eq(self.prog_w_en)]

        m.submodules.weights = wmem = weight_ram(cfg, module=self.ram_module,
                                                 init=self.weight_init)
        wsh = _log2(bw)
        m.d.comb += [wmem.w_addr.eq(self.weight_w_addr >> wsh),
                     wmem.w_data.eq(Cat(*[self.weight_w_data] * bw)),
                     wmem.w_en.eq(Mux(self.weight_w_en,
                                      Const(1, bw) << self.weight_w_addr[:wsh] if wsh else 1,
                                      0))]

        # One row per column tile: the C records the datapath needs at once.
        row_words = PARAM_WORDS * C
        rsh = _log2(row_words)
        m.submodules.params = pmem = Memory(shape=row_words * 32,
                                            depth=self.param_words // row_words, init=[])
        ppw = pmem.write_port(granularity=32)
        ppr = pmem.read_port(transparent_for=())
        m.d.comb += [ppw.addr.eq(self.param_w_addr >> rsh),
                     ppw.data.eq(Cat(*[self.param_w_data] * row_words)),
                     ppw.en.eq(Mux(self.param_w_en,
                                   Const(1, row_words) << self.param_w_addr[:rsh], 0))]

        # Running sums of the row tiles done so far, one entry per output pixel. A pixel's
        # next round may read it in the cycle its sum is written (1-pixel layers, a_bits 1).
        m.submodules.psums = smem = Memory(shape=C * aw, depth=self.max_pixels, init=[])
        sw = smem.write_port()
        sr = smem.read_port(transparent_for=(sw,))

        # Ports 0 .. M-1 feed the macros in lockstep, port M reads residuals; the stream port
        # serves the bus while idle.
        m.submodules.act = act = ActivationBuffer(depth=self.bank_words, rows=R, a_bits=ab,
                                                  read_ports=M + 1)
        m.submodules.dp = dp = Datapath(lanes=C, acc_width=aw, psum_width=aw)
        macros = []
        for i in range(M):
            mac = CIMMacro(**cfg.macro_params(), style=self.macro_style)
            if self.macro_module is None:
                m.submodules[f"macro{i}"] = mac
            else:
                # The same macro, emitted once as its own Verilog module (gateware.emit).
                m.submodules[f"macro{i}"] = Instance(
                    self.macro_module, i_clk=ClockSignal(), i_rst=ResetSignal(),
                    **{f"{'o' if flow == Out else 'i'}_{'__'.join(map(str, path))}": value
                       for path, flow, value in _ports(mac)})
            macros.append(mac)
        m.submodules.resfifo = rfifo = SyncFIFO(width=C * VALUE_BITS, depth=RES_FIFO_DEPTH)

        # ------------------------------------------------------------ descriptor fields
        def fields(d):
            out = {}
            for fl in FIELDS:
                w, b = LAYOUT[fl.name]
                out[fl.name] = d[w * 32 + b: w * 32 + b + fl.bits]
            return out

        def slices(f, name):
            """out_sl, res_sl, sp: buffer words per output and residual pixel, and the
            cycles between the pixels of one slot (the slower port)."""
            o, r, q = (Signal(4, name=f"{name}_out_sl"), Signal(4, name=f"{name}_res_sl"),
                       Signal(4, name=f"{name}_sp"))
            m.d.comb += [o.eq((f["out_bits"] + ab - 1) >> _log2(ab)),
                         r.eq(Mux(f["has_residual"], (f["res_bits"] + ab - 1) >> _log2(ab), 0)),
                         q.eq(Mux(r > o, r, o))]
            return o, r, q

        def copies(f, sp_, name):
            """Copies of the row tiles: as many as fit the macros, the pixels, and the output
            (and residual) ports, which take sp cycles per pixel against a_bits per slot."""
            c_ = Signal(range(ab + 1), name=f"{name}_copies")
            m.d.comb += c_.eq(1)
            for c in range(2, min(ab, M) + 1):
                with m.If((f["row_tiles"] * c <= M) & (sp_ * c <= ab)
                          & (f["out_height"] * f["out_width"] >= c)):
                    m.d.comb += c_.eq(c)
            return c_

        desc = Signal(DESC_WORDS * 32)      # the issuer's layer (and collector's, writer's)
        f = fields(desc)
        T, J = f["row_tiles"], f["col_tiles"]
        s, p = f["stride"], f["padding"]
        H, W, G = f["in_height"], f["in_width"], f["in_groups"]
        has_res = f["has_residual"]
        out_sl, res_sl, sp = slices(f, "cur")
        # Registered per layer (CHECK, SETUP).
        n_pix = Signal(24)          # Ho * Wo
        out_pitch = Signal(16)      # Gout * out_sl: words per output pixel
        res_pitch = Signal(16)
        wg_words = Signal(baw)      # W * G: one input row
        cp = Signal(range(ab + 1))  # copies of the row tiles (pixels per slot)
        l_fin = Signal(4)           # slot length of a final round
        first_addr = Signal(baw)    # word of input pixel (-p, -p)
        prow = Signal(range(self.param_words // row_words))   # parameter row of column 0
        cp_c = copies(f, sp, "cur")

        # ------------------------------------------------------------ descriptor check
        # The fetcher checks every descriptor as it arrives (fdesc); the code travels with it.
        fdesc = Signal(DESC_WORDS * 32)
        ff = fields(fdesc)
        code = Signal(AccelError)
        ho_exp = Signal(16)
        wo_exp = Signal(16)
        fk, fs, fp = ff["kernel"], ff["stride"], ff["padding"]
        fH, fW, fG = ff["in_height"], ff["in_width"], ff["in_groups"]
        fT, fJ = ff["row_tiles"], ff["col_tiles"]
        m.d.comb += [ho_exp.eq(((fH + 2 * fp - fk) >> (fs == 2)) + 1),
                     wo_exp.eq(((fW + 2 * fp - fk) >> (fs == 2)) + 1)]
        tile_cap = self.weight_words // (wc * bw)
        rec_cap = self.param_words // PARAM_WORDS
        with m.If(~fk[0] | (fk > 7)):
            m.d.comb += code.eq(AccelError.KERNEL)
        with m.Elif((fs != 1) & (fs != 2)):
            m.d.comb += code.eq(AccelError.STRIDE)
        with m.Elif((fH == 0) | (fW == 0) | (fG == 0) | (fH > self.max_size)
                    | (fW > self.max_size) | (fG > self.max_groups)
                    | (fH + 2 * fp < fk) | (fW + 2 * fp < fk)
                    | (ff["out_height"] != ho_exp) | (ff["out_width"] != wo_exp)
                    | (ff["out_height"] * ff["out_width"] > self.max_pixels)
                    | (ff["out_groups"] == 0)):
            m.d.comb += code.eq(AccelError.SIZE)
        with m.Elif((fJ == 0) | (fT == 0) | (fT != fk * fk * fG)
                    | (ff["weight_tiles"] != fJ * fT)
                    | (ff["out_channels"] == 0) | (ff["out_channels"] > fJ * C)
                    | (ff["out_groups"] * R < fJ * C)
                    | (ff["weight_base"] + ff["weight_tiles"] > tile_cap)
                    | (ff["param_base"][:_log2(C)] != 0)
                    | (ff["param_base"] + fJ * C > rec_cap)):
            m.d.comb += code.eq(AccelError.TILES)
        with m.Elif((ff["shift"] == 0) | (ff["shift"] > MAX_SHIFT) | (ff["out_bits"] == 0)
                    | (ff["out_bits"] > 8) | (ff["out_signed"] & (ff["out_bits"] < 2))
                    | (ff["has_residual"] & ((ff["res_bits"] == 0) | (ff["res_bits"] > 8)))):
            m.d.comb += code.eq(AccelError.FORMAT)

        m.d.comb += [dp.shift.eq(f["shift"]), dp.out_bits.eq(f["out_bits"]),
                     dp.out_signed.eq(f["out_signed"]), dp.has_residual.eq(has_res)]

        # ------------------------------------------------------------ tap walk
        # Row tile t = (kh * k + kw) * G + cg reads word (kh * W + kw) * G + cg of the window.
        # ``step`` moves to tile t + 1, or back to tile 0 after T - 1 (copies repeat the tiles).
        def step(st, T_, G_, k_, wg_):
            t, kh, kw, cg, off, rowoff = st
            n = [Signal.like(x, name=f"{x.name}_n") for x in st]
            m.d.comb += n[0].eq(t + 1)
            with m.If(t + 1 == T_):
                m.d.comb += [x.eq(0) for x in n]
            with m.Elif(cg + 1 != G_):
                m.d.comb += [n[1].eq(kh), n[2].eq(kw), n[3].eq(cg + 1), n[4].eq(off + 1),
                             n[5].eq(rowoff)]
            with m.Elif(kw + 1 != k_):
                m.d.comb += [n[1].eq(kh), n[2].eq(kw + 1), n[3].eq(0), n[4].eq(off + 1),
                             n[5].eq(rowoff)]
            with m.Else():
                m.d.comb += [n[1].eq(kh + 1), n[2].eq(0), n[3].eq(0),
                             n[4].eq(rowoff + wg_), n[5].eq(rowoff + wg_)]
            return n

        # ------------------------------------------------------------ descriptor fetcher
        # Fetches and checks descriptors ahead of the layers: the weight loader takes each one
        # (and starts loading its tiles while the previous layer computes) and passes it on to
        # the issuer through a two-entry queue, with its check code.
        is_busy = Signal()
        go = Signal()               # start accepted: every unit starts from scratch
        m.d.comb += go.eq(self.start & ~is_busy)
        f_idx = Signal(range(self.prog_words + 1))   # program word address of fdesc
        f_cnt = Signal(range(DESC_WORDS + 2))
        f_busy = Signal()           # reading fdesc
        f_full = Signal()           # fdesc holds a descriptor for the loader
        f_err = Signal()            # ... that is past the end of program memory
        f_done = Signal()           # the last descriptor (or an invalid one) was handed on
        e_code = Signal(AccelError)
        m.d.comb += [pr.addr.eq(f_idx + f_cnt),
                     e_code.eq(Mux(f_err, AccelError.PROGRAM, code))]
        with m.If(f_busy):
            # Synchronous read: word f_cnt - 1 arrives while word f_cnt is addressed.
            m.d.sync += f_cnt.eq(f_cnt + 1)
            for w in range(DESC_WORDS):
                with m.If(f_cnt == w + 1):
                    m.d.sync += fdesc[w * 32:(w + 1) * 32].eq(pr.data)
            with m.If(f_cnt == DESC_WORDS):
                m.d.sync += [f_busy.eq(0), f_full.eq(1)]
        m.submodules.queue = queue = ResetInserter(go)(
            SyncFIFO(width=DESC_WORDS * 32 + len(e_code.as_value()), depth=2))
        f_take = Signal()           # the loader takes fdesc
        with m.If(f_take):
            m.d.sync += f_full.eq(0)
            with m.If(ff["last"] | (e_code != AccelError.NONE)):
                m.d.sync += f_done.eq(1)
            with m.Elif(f_idx + 2 * DESC_WORDS > self.prog_words):
                m.d.sync += [f_full.eq(1), f_err.eq(1)]
            with m.Else():
                m.d.sync += [f_idx.eq(f_idx + DESC_WORDS), f_cnt.eq(0), f_busy.eq(1)]
        with m.If(go):
            m.d.sync += [f_idx.eq(0), f_cnt.eq(0), f_busy.eq(1), f_full.eq(0), f_err.eq(0),
                         f_done.eq(0)]

        # ------------------------------------------------------------ layer FSM
        start_layer = Signal()      # SETUP: the reader, collector and writer start
        layer_done = Signal()       # the writer wrote the layer's last output word
        fault = Signal(AccelError)  # a run-time error of this layer (sticky until STOP)
        d_code = Signal(AccelError)  # the check code of the issuer's descriptor

        # Issuer: rounds of up to M macros; a round streams all output pixels in slots of L
        # cycles, cp pixels per slot (group g at cycle g * sp of the slot).
        j = Signal(8)
        tb = Signal(16)             # first row tile of the round
        gs = Signal(range(M + 1))   # macros per group: the round's row tiles
        final = Signal()            # the round holds row tile T - 1
        nact = Signal(range(M + 1))
        slot_len = Signal(4)
        m.d.comb += [final.eq(tb + M >= T), gs.eq(Mux(final, T - tb, M)),
                     nact.eq(cp * gs), slot_len.eq(Mux(final, l_fin, ab))]
        ph = Signal(4)
        grp = Signal(4)
        gphase = Signal(8)
        gstart = Signal(range(M + 1))
        pix = Signal(24)
        oy = Signal(16)
        ox = Signal(16)
        y0 = Signal(signed(17))
        x0 = Signal(signed(17))
        pix_addr = Signal(baw)
        line_addr = Signal(baw)
        ravail = Signal(range(RES_FIFO_DEPTH + 1))  # residuals read, not yet issued
        step_px = Mux(s == 2, 2, 1)
        in_bank = f["in_base"][baw:baw + 1]

        res_need = Signal()
        due = Signal()
        issue = Signal()
        stall = Signal()
        switch = Signal()
        slot_end = Signal()
        m.d.comb += res_need.eq(final & has_res)

        # Per macro: its tile's taps (the loader's, pending -> loading -> loaded -> active).
        loaded = [Signal(name=f"u{i}_loaded") for i in range(M)]
        ld_tap = [[Signal(3, name=f"u{i}_ld_kh"), Signal(3, name=f"u{i}_ld_kw"),
                   Signal(baw, name=f"u{i}_ld_off")] for i in range(M)]
        a_tap = [[Signal(3, name=f"u{i}_kh"), Signal(3, name=f"u{i}_kw"),
                  Signal(baw, name=f"u{i}_off")] for i in range(M)]
        first = [Signal(name=f"u{i}_first") for i in range(M)]
        ready_round = Signal()
        m.d.comb += ready_round.eq(Cat(*[loaded[i] | (nact <= i) for i in range(M)]).all())

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.done.eq(0), self.error.eq(0),
                                 self.error_code.eq(AccelError.NONE), self.layer.eq(0),
                                 fault.eq(AccelError.NONE)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += queue.r_en.eq(1)
                with m.If(queue.r_rdy):
                    m.d.sync += [desc.eq(queue.r_data[:DESC_WORDS * 32]),
                                 d_code.eq(queue.r_data[DESC_WORDS * 32:])]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [n_pix.eq(f["out_height"] * f["out_width"]),
                             out_pitch.eq(f["out_groups"] * out_sl),
                             res_pitch.eq(f["out_groups"] * res_sl), wg_words.eq(W * G),
                             cp.eq(cp_c), prow.eq(f["param_base"] >> _log2(C))]
                with m.If(d_code != AccelError.NONE):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(d_code)]
                    m.next = "STOP"
                with m.Else():
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += start_layer.eq(1)
                m.d.sync += [first_addr.eq(f["in_base"][:baw] - p * (wg_words + G)),
                             l_fin.eq(Mux(cp * sp > ab, cp * sp, ab)),
                             j.eq(0), tb.eq(0)]
                m.next = "RWAIT"
            with m.State("RWAIT"):
                # A round starts when its macros hold their tiles (loaded, not committed).
                with m.If(ready_round):
                    m.d.comb += switch.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [due.eq((ph == gphase) & (grp < cp) & (pix != n_pix)),
                             issue.eq(due & (~res_need | (ravail != 0))),
                             stall.eq(due & ~issue),
                             slot_end.eq(~stall & (ph + 1 == slot_len))]
                with m.If(~stall):
                    m.d.sync += ph.eq(ph + 1)
                with m.If(issue):
                    m.d.sync += [pix.eq(pix + 1), grp.eq(grp + 1), gphase.eq(gphase + sp),
                                 gstart.eq(gstart + gs)]
                    with m.If(ox + 1 != f["out_width"]):
                        m.d.sync += [ox.eq(ox + 1), x0.eq(x0 + step_px),
                                     pix_addr.eq(pix_addr + Mux(s == 2, G << 1, G))]
                    with m.Else():
                        nl = line_addr + Mux(s == 2, wg_words << 1, wg_words)
                        m.d.sync += [ox.eq(0), x0.eq(-p), oy.eq(oy + 1), y0.eq(y0 + step_px),
                                     line_addr.eq(nl), pix_addr.eq(nl)]
                with m.If(slot_end):
                    m.d.sync += [ph.eq(0), grp.eq(0), gphase.eq(0), gstart.eq(0)]
                    with m.If(pix + issue == n_pix):
                        with m.If(~final):
                            m.d.sync += tb.eq(tb + M)
                            m.next = "RWAIT"
                        with m.Elif(j + 1 != J):
                            m.d.sync += [tb.eq(0), j.eq(j + 1)]
                            m.next = "RWAIT"
                        with m.Else():
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(layer_done):
                    with m.If(fault != AccelError.NONE):
                        m.d.sync += [self.error.eq(1), self.error_code.eq(fault)]
                        m.next = "STOP"
                    with m.Elif(f["last"]):
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += self.layer.eq(self.layer + 1)
                        m.next = "NEXT"
            with m.State("STOP"):
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
        with m.If(switch):
            m.d.sync += [oy.eq(0), ox.eq(0), y0.eq(-p), x0.eq(-p), pix_addr.eq(first_addr),
                         line_addr.eq(first_addr), pix.eq(0), ph.eq(0), grp.eq(0),
                         gphase.eq(0), gstart.eq(0)]
            for i in range(M):
                with m.If(nact > i):
                    m.d.sync += [a.eq(b) for a, b in zip(a_tap[i], ld_tap[i])]
                    m.d.sync += first[i].eq(1)
        m.d.comb += [is_busy.eq(~fsm.ongoing("IDLE")), self.busy.eq(is_busy)]

        # ------------------------------------------------------------ weight loader
        # Walks the layer's rounds ahead of the issuer and hands each macro its next tile and
        # taps, two macros per cycle (a round of M macros may last only rows / write_rows).
        ldesc = Signal(DESC_WORDS * 32)     # the loader's layer
        lf = fields(ldesc)
        l_on = Signal()
        l_j = Signal(8)
        l_tb = Signal(16)
        l_i = Signal(range(M + 2))
        l_cp = Signal(range(ab + 1))
        l_wg = Signal(baw)
        l_colptr = Signal(32)       # beat address of tile 0 of column tile l_j
        l_st = [Signal(16, name="l_t"), Signal(3, name="l_kh"), Signal(3, name="l_kw"),
                Signal(8, name="l_cg"), Signal(baw, name="l_off"), Signal(baw, name="l_rowoff")]
        l_final = Signal()
        l_nact = Signal(range(M + 1))
        lT = lf["row_tiles"]
        m.d.comb += [l_final.eq(l_tb + M >= lT),
                     l_nact.eq(l_cp * Mux(l_final, lT - l_tb, M))]
        st1 = step(l_st, lT, lf["in_groups"], lf["kernel"], l_wg)
        st2 = step(st1, lT, lf["in_groups"], lf["kernel"], l_wg)
        pend = [Signal(name=f"u{i}_pend") for i in range(M)]
        pend0 = Signal()
        pend1 = Signal()
        for i in range(M):
            with m.If(l_i == i):
                m.d.comb += pend0.eq(pend[i])
            with m.If(l_i + 1 == i):
                m.d.comb += pend1.eq(pend[i])
        push0 = Signal()
        push1 = Signal()
        m.d.comb += [push0.eq(l_on & (l_i < l_nact) & ~pend0),
                     push1.eq(push0 & (l_i + 1 < l_nact) & ~pend1)]
        wsh_t = _log2(wc)
        ptr0 = Signal(32)
        ptr1 = Signal(32)
        m.d.comb += [ptr0.eq(l_colptr + (l_st[0] << wsh_t)),
                     ptr1.eq(l_colptr + (st1[0] << wsh_t))]
        _, _, f_sp = slices(ff, "fetch")
        f_cp = copies(ff, f_sp, "fetch")
        m.d.comb += [f_take.eq(f_full & ~l_on & queue.w_rdy),
                     queue.w_data.eq(Cat(fdesc, e_code)), queue.w_en.eq(f_take)]
        with m.If(f_take & (e_code == AccelError.NONE)):
            m.d.sync += [ldesc.eq(fdesc), l_on.eq(1), l_j.eq(0), l_tb.eq(0), l_i.eq(0),
                         l_cp.eq(f_cp), l_wg.eq(ff["in_width"] * ff["in_groups"]),
                         l_colptr.eq(ff["weight_base"] << wsh_t)]
            m.d.sync += [x.eq(0) for x in l_st]
        with m.Elif(push0):
            n_i = l_i + 1 + push1
            m.d.sync += l_i.eq(n_i)
            with m.If(push1):
                m.d.sync += [a.eq(b) for a, b in zip(l_st, st2)]
            with m.Else():
                m.d.sync += [a.eq(b) for a, b in zip(l_st, st1)]
            with m.If(n_i == l_nact):
                m.d.sync += l_i.eq(0)
                with m.If(~l_final):
                    m.d.sync += l_tb.eq(l_tb + M)
                with m.Else():
                    m.d.sync += [l_tb.eq(0), l_j.eq(l_j + 1),
                                 l_colptr.eq(l_colptr + (lT << wsh_t))]
                    m.d.sync += [x.eq(0) for x in l_st]
                    with m.If(l_j + 1 == lf["col_tiles"]):
                        m.d.sync += l_on.eq(0)
        with m.If(go):
            m.d.sync += l_on.eq(0)

        # ------------------------------------------------------------ macro units
        comp_terms = []
        ports = act.reads
        for i, mac in enumerate(macros):
            rd = wmem.reads[i]
            pend_ptr = Signal(32, name=f"u{i}_pend_ptr")
            pend_tap = [Signal.like(x, name=f"u{i}_pend_{n}")
                        for x, n in zip(ld_tap[i], ("kh", "kw", "off"))]
            with m.If(push0 & (l_i == i)):
                m.d.sync += [pend[i].eq(1), pend_ptr.eq(ptr0)]
                m.d.sync += [a.eq(b) for a, b in zip(pend_tap, l_st[1:3] + [l_st[4]])]
            with m.If(push1 & (l_i + 1 == i)):
                m.d.sync += [pend[i].eq(1), pend_ptr.eq(ptr1)]
                m.d.sync += [a.eq(b) for a, b in zip(pend_tap, st1[1:3] + [st1[4]])]
            loading = Signal(name=f"u{i}_loading")
            ld_cnt = Signal(range(wc + 1), name=f"u{i}_ld_cnt")
            ld_ptr = Signal(32, name=f"u{i}_ld_ptr")
            commit_now = Signal(name=f"u{i}_commit_now")
            with m.If(pend[i] & ~loading & (~loaded[i] | commit_now)):
                m.d.sync += [pend[i].eq(0), loading.eq(1), ld_cnt.eq(0), ld_ptr.eq(pend_ptr)]
                m.d.sync += [a.eq(b) for a, b in zip(ld_tap[i], pend_tap)]
            m.d.comb += [rd.addr.eq(ld_ptr + ld_cnt), rd.en.eq(loading)]
            wr_valid = Signal(name=f"u{i}_wr_valid")
            wr_addr = Signal(range(wc), name=f"u{i}_wr_addr")
            m.d.sync += [wr_valid.eq(loading & (ld_cnt != wc)), wr_addr.eq(ld_cnt)]
            m.d.comb += [mac.write.valid.eq(wr_valid), mac.write.payload.addr.eq(wr_addr),
                         mac.write.payload.w.eq(rd.data[:len(mac.write.payload.w.as_value())])]
            with m.If(loading):
                with m.If(ld_cnt == wc):
                    m.d.sync += [loading.eq(0), loaded[i].eq(1)]
                with m.Else():
                    m.d.sync += ld_cnt.eq(ld_cnt + 1)

            # Lockstep read: the word of this macro's tap for the issued pixel.
            port = ports[i]
            kh, kw, off = a_tap[i]
            yy = Signal(signed(18), name=f"u{i}_y")
            xx = Signal(signed(18), name=f"u{i}_x")
            sel = Signal(name=f"u{i}_sel")
            m.d.comb += [yy.eq(y0 + kh), xx.eq(x0 + kw),
                         sel.eq(issue & (gstart <= i) & (gstart + gs > i)),
                         port.addr.eq(Cat((pix_addr + off)[:baw], in_bank)),
                         port.pad.eq((yy < 0) | (yy >= H) | (xx < 0) | (xx >= W)),
                         port.en.eq(sel)]
            # The word arrives next cycle and stays on port.data for the a_bits planes (the
            # port's next read is a slot, at least a_bits cycles, later).
            st_active = Signal(name=f"u{i}_active")
            st_commit = Signal(name=f"u{i}_commit")
            bidx = Signal(range(ab), name=f"u{i}_bidx")
            word = port.data.as_value()
            planes = [Cat(*[word[r * ab + b] for r in range(R)]) for b in range(ab)]
            plane = Signal(R, name=f"u{i}_plane")
            with m.Switch(bidx):
                for b in range(ab):
                    with m.Case(b):
                        m.d.comb += plane.eq(planes[b])
            mi_ = mac.input
            m.d.comb += [mi_.valid.eq(st_active), mi_.payload.plane.eq(plane),
                         mi_.payload.last.eq(bidx == 0), mi_.payload.commit.eq(st_commit),
                         mac.output.ready.eq(1)]
            m.d.comb += commit_now.eq(st_active & st_commit)
            with m.If(st_active):
                m.d.sync += [st_commit.eq(0), bidx.eq(bidx - 1)]
                with m.If(bidx == 0):
                    m.d.sync += st_active.eq(0)
            with m.If(commit_now):
                m.d.sync += loaded[i].eq(0)
            with m.If(sel):
                m.d.sync += [st_active.eq(1), bidx.eq(ab - 1), st_commit.eq(first[i]),
                             first[i].eq(0)]
            with m.If(go):
                m.d.sync += [pend[i].eq(0), loading.eq(0), loaded[i].eq(0), first[i].eq(0),
                             st_active.eq(0)]
            comp_terms.append(st_active)
        computing = Signal()
        m.d.comb += computing.eq(Cat(*comp_terms).any())

        # ------------------------------------------------------------ residual reader
        # Reads the residual of every output pixel, column tile by column tile, ahead of the
        # issuer (which issues a final-round pixel only once its residual is in the FIFO).
        r_on = Signal()
        r_pix = Signal(24)
        r_j = Signal(8)
        r_s = Signal(4)
        r_ptr = Signal(baw)
        r_col = Signal(baw)
        r_lane = Signal(range(R))
        res_bank = f["res_base"][baw:baw + 1]
        rport = ports[M]
        r_go = Signal()
        # Room for the pixel being read: FIFO entries plus the one in flight.
        m.d.comb += r_go.eq(r_on & (rfifo.level + 1 < RES_FIFO_DEPTH))
        q_valid = Signal()
        q_s = Signal(4)
        q_last = Signal()
        q_lane = Signal(range(R))
        m.d.comb += [rport.addr.eq(Cat((r_ptr + r_s)[:baw], res_bank)), rport.pad.eq(0),
                     rport.en.eq(r_go)]
        m.d.sync += [q_valid.eq(r_go), q_s.eq(r_s), q_last.eq(r_s + 1 == res_sl),
                     q_lane.eq(r_lane)]
        with m.If(start_layer):
            m.d.sync += [r_on.eq(has_res), r_pix.eq(0), r_j.eq(0), r_s.eq(0), r_lane.eq(0),
                         r_ptr.eq(f["res_base"][:baw]), r_col.eq(f["res_base"][:baw])]
        with m.Elif(r_go):
            m.d.sync += r_s.eq(r_s + 1)
            with m.If(r_s + 1 == res_sl):
                m.d.sync += [r_s.eq(0), r_pix.eq(r_pix + 1), r_ptr.eq(r_ptr + res_pitch)]
                with m.If(r_pix + 1 == n_pix):
                    m.d.sync += [r_pix.eq(0), r_j.eq(r_j + 1)]
                    # The next column tile's channels: the next lanes, or the next group.
                    nxt_col = Mux(r_lane + C >= R, r_col + res_sl, r_col)
                    m.d.sync += [r_col.eq(nxt_col), r_ptr.eq(nxt_col),
                                 r_lane.eq(Mux(r_lane + C >= R, 0, r_lane + C))]
                    with m.If(r_j + 1 == J):
                        m.d.sync += r_on.eq(0)
        raw = [Signal(8, name=f"res_raw{c}") for c in range(C)]
        res_w = Signal(4)
        res_top = Signal(3)                 # sign bit of a residual: res_sl * a_bits - 1
        m.d.comb += [res_w.eq(res_sl << _log2(ab)), res_top.eq(res_w - 1)]
        ext = []
        rword = rport.data.as_value()
        for c in range(C):
            lane = rword.word_select(q_lane + c, ab)
            v = Signal(8, name=f"res_next{c}")
            m.d.comb += v.eq(Mux(q_s == 0, 0, raw[c]) | (lane << (q_s * ab))[:8])
            neg = f["res_signed"] & v.bit_select(res_top, 1)
            e = Signal(signed(VALUE_BITS), name=f"res_ext{c}")
            m.d.comb += e.eq(v | Mux(neg, (Const(0x1FF, 9) << res_w)[:9], 0))
            ext.append(e)
            with m.If(q_valid):
                m.d.sync += raw[c].eq(v)
        push_res = Signal()
        m.d.comb += [rfifo.w_data.eq(Cat(*ext)), push_res.eq(q_valid & q_last),
                     rfifo.w_en.eq(push_res)]
        took = issue & res_need
        with m.If(start_layer):
            m.d.sync += ravail.eq(0)
        with m.Elif(push_res & ~took):
            m.d.sync += ravail.eq(ravail + 1)
        with m.Elif(~push_res & took):
            m.d.sync += ravail.eq(ravail - 1)

        # ------------------------------------------------------------ collector
        # Only one group's macros finish in a cycle, so the valid results are one pixel's:
        # their sum (stage 1) is added to the pixel's running sum (stage 2), which goes to the
        # Datapath on the final round. The collector counts pixels, rounds and column tiles
        # itself, in issue order.
        c_pix = Signal(24)
        c_tb = Signal(16)
        c_j = Signal(8)
        c_final = Signal()
        m.d.comb += c_final.eq(c_tb + M >= T)
        v_any = Signal()
        m.d.comb += v_any.eq(Cat(*[mac.output.valid for mac in macros]).any())
        rsum = [Signal(signed(aw), name=f"rsum{c}") for c in range(C)]
        c1_valid = Signal()
        c1_pix = Signal(24)
        c1_first = Signal()
        c1_final = Signal()
        m.d.comb += [sr.addr.eq(c_pix), sr.en.eq(v_any),
                     ppr.addr.eq(prow + c_j), ppr.en.eq(v_any)]
        for c in range(C):
            terms = [Mux(mac.output.valid, mac.output.payload.y[c], 0) for mac in macros]
            with m.If(v_any):
                m.d.sync += rsum[c].eq(tree_sum(terms))
        m.d.sync += [c1_valid.eq(v_any), c1_pix.eq(c_pix), c1_first.eq(c_tb == 0),
                     c1_final.eq(c_final)]
        with m.If(v_any):
            m.d.sync += c_pix.eq(c_pix + 1)
            with m.If(c_pix + 1 == n_pix):
                m.d.sync += c_pix.eq(0)
                with m.If(c_final):
                    m.d.sync += [c_tb.eq(0), c_j.eq(c_j + 1)]
                with m.Else():
                    m.d.sync += c_tb.eq(c_tb + M)
        with m.If(start_layer):
            m.d.sync += [c_pix.eq(0), c_tb.eq(0), c_j.eq(0)]
        di = dp.i_stream
        total = [Signal(signed(aw), name=f"total{c}") for c in range(C)]
        for c in range(C):
            prev = sr.data.word_select(c, aw).as_signed()
            m.d.comb += total[c].eq(Mux(c1_first, 0, prev) + rsum[c])
        m.d.comb += [sw.addr.eq(c1_pix), sw.data.eq(Cat(*total)),
                     sw.en.eq(c1_valid & ~c1_final),
                     di.payload.first.eq(1), di.payload.last.eq(1),
                     di.valid.eq(c1_valid & c1_final),
                     rfifo.r_en.eq(c1_valid & c1_final & has_res)]
        for c in range(C):
            rec = ppr.data.word_select(c, PARAM_WORDS * 32)
            ln = di.payload.lanes[c]
            m.d.comb += [ln.psum.eq(total[c]), ln.m.eq(rec[0:16]), ln.b.eq(rec[16:64]),
                         ln.r.eq(rec[64:88]),
                         ln.res.eq(rfifo.r_data.word_select(c, VALUE_BITS))]
        # The schedule leaves the Datapath and the residual FIFO ready by construction; if
        # not, the result would be lost: stop with OVERRUN rather than write a wrong value.
        overrun = Signal()
        m.d.comb += overrun.eq(c1_valid & c1_final
                               & (~di.ready | (has_res & ~rfifo.r_rdy)))

        # ------------------------------------------------------------ write back
        do = dp.o_stream
        w_s = Signal(4)
        w_pix = Signal(24)
        w_j = Signal(8)
        w_ptr = Signal(baw)
        w_col = Signal(baw)
        w_lane = Signal(range(R))
        aws = act.w_stream
        out_bank = f["out_base"][baw:baw + 1]
        # Slice 0 is written in the cycle the result leaves the Datapath, the others from a
        # holding register: the Datapath is never held up (results are out_sl cycles apart).
        hold = Signal()
        held = Signal.like(do.payload.value)
        value = Mux(hold, held.as_value(), do.payload.value.as_value())
        vals = Cat(*[(value.word_select(c, VALUE_BITS) >> (w_s * ab))[:ab] for c in range(C)])
        wen = Signal()
        with m.If(is_busy):
            m.d.comb += [wen.eq(hold | do.valid), do.ready.eq(~hold),
                         aws.valid.eq(wen), aws.payload.addr.eq(w_ptr + w_s),
                         aws.payload.word.eq(vals << (w_lane * ab)),
                         aws.payload.mask.eq(Const((1 << C) - 1, R) << w_lane),
                         act.write_bank.eq(out_bank)]
            with m.If(do.valid & ~hold):
                m.d.sync += [held.eq(do.payload.value), hold.eq(out_sl != 1)]
            with m.If(wen):
                m.d.sync += w_s.eq(w_s + 1)
                with m.If(w_s == out_sl - 1):
                    m.d.sync += [hold.eq(0), w_s.eq(0), w_ptr.eq(w_ptr + out_pitch),
                                 w_pix.eq(w_pix + 1)]
                    with m.If(w_pix + 1 == n_pix):
                        nxt_col = Mux(w_lane + C >= R, w_col + out_sl, w_col)
                        m.d.sync += [w_pix.eq(0), w_j.eq(w_j + 1), w_col.eq(nxt_col),
                                     w_ptr.eq(nxt_col),
                                     w_lane.eq(Mux(w_lane + C >= R, 0, w_lane + C))]
                        m.d.comb += layer_done.eq(w_j + 1 == J)
        with m.Else():
            m.d.comb += [aws.valid.eq(self.act_w_en), aws.payload.addr.eq(self.act_w_addr[:baw]),
                         aws.payload.word.eq(self.act_w_data),
                         aws.payload.mask.eq(self.act_w_mask),
                         act.write_bank.eq(self.act_w_addr[baw:])]
        with m.If(start_layer):
            m.d.sync += [w_s.eq(0), w_pix.eq(0), w_j.eq(0), w_lane.eq(0), hold.eq(0),
                         w_ptr.eq(f["out_base"][:baw]), w_col.eq(f["out_base"][:baw])]
        with m.If(overrun & (fault == AccelError.NONE)):
            m.d.sync += fault.eq(AccelError.OVERRUN)
        with m.Elif(do.valid & do.ready & do.payload.overflow & (fault == AccelError.NONE)):
            m.d.sync += fault.eq(AccelError.OVERFLOW)

        # ------------------------------------------------------------ bus read port
        ai, ao = act.i_stream, act.o_stream
        m.d.comb += [ai.valid.eq(~is_busy), ai.payload.addr.eq(self.act_r_addr[:baw]),
                     act.read_bank.eq(self.act_r_addr[baw:]), ao.ready.eq(1),
                     self.act_r_data.eq(ao.payload.word),
                     self.act_r_valid.eq(ao.valid & ~is_busy)]

        # ------------------------------------------------------------ status and counters
        waiting = Signal()
        m.d.comb += waiting.eq(fsm.ongoing("RWAIT") | stall)
        with m.If(self.start & ~is_busy):
            m.d.sync += [self.cycles_total.eq(0), self.cycles_busy.eq(0),
                         self.cycles_compute.eq(0), self.cycles_stall.eq(0)]
        with m.Else():
            m.d.sync += [self.cycles_total.eq(self.cycles_total + 1),
                         self.cycles_busy.eq(self.cycles_busy + is_busy),
                         self.cycles_compute.eq(self.cycles_compute + computing),
                         self.cycles_stall.eq(self.cycles_stall
                                              + (is_busy & ~computing & waiting))]
        return m
