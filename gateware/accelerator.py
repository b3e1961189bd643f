"""The accelerator: CIM macros, weight store, activation buffer and the layer sequencer.

:class:`Accelerator` runs a program compiled by :func:`model.compiler.compile_model` (layer
descriptors, weight image, parameter image, activation-buffer layout: all as documented in
:mod:`model.compiler`) and computes exactly what :func:`model.compiler.execute` computes.

Schedule (weight stationary, the rounds of :mod:`model.cycles`)
---------------------------------------------------------------
Per layer, per column tile ``j``, the ``T`` row tiles are taken in rounds of up to ``M``
(``macros``): round ``q`` puts row tile ``q * M + i`` in macro ``i`` and streams all ``P``
output pixels through the round, one activation word per macro and pixel (the sequencer's
own address walk: output pixel, then the macros' taps, with zero padding), ``a_bits``
bit-planes per word, MSB first. A weight walker loads the layer's tiles in image order into
the macros' shadow copies (``rows / write_rows`` beats from the weight store, one read port per
macro) as soon as a macro has committed its previous tile, so loads hide behind compute; the
first word of a round commits its tile. Per pixel the round's macro results (each through a
two-entry buffer) are added by an adder tree and accumulated in a partial-sum memory (one entry
per output pixel, ``cols`` x ``acc_width`` bits); on the final round of ``j`` the total goes to
the :class:`~gateware.datapath.Datapath` as a one-beat sum with the column tile's ``M``, ``B``,
``R`` (read from the parameter memory before the column tile) and, with a residual, the
residual element (its slice words read after the pixel's words on the same buffer port). The
result is written back as ``out_sl`` slice words at the compiler's address
(``base + ((y * W + x) * G + cg) * S + s``), lanes ``j * C mod R ...``.

Against :mod:`model.cycles`: rounds do not cross column tiles (``J * ceil(T / M)`` rounds
instead of ``ceil(J * T / M)``), layers with fewer tiles than macros are not replicated over
the idle macros (``copies``), and every column tile adds its parameter load and pipeline drain,
every layer its descriptor fetch. Within those, compute runs back to back. The three
:class:`~gateware.window.WindowGen` checks (kernel, stride, size) are repeated in the
descriptor check, in the same order; WindowGen's walk (all row tiles of one pixel in turn) does
not fit a weight-stationary schedule, so the walk is the sequencer's own.

Control and status
------------------
``start`` (pulse, ignored while ``busy``) runs the program from descriptor 0 until a
descriptor with ``last``. ``done`` is set when the program ends (or stops on an error) and
stays set until the next ``start``; ``error`` / ``error_code`` (:class:`AccelError`) tell why
it stopped early. Counters (cleared by ``start``): ``cycles_total`` (every cycle since start),
``cycles_busy``, ``cycles_compute`` (some macro accepted a bit-plane), ``cycles_stall`` (busy,
no macro computing, while some macro unit holds a vector: waiting on its weights or on
backpressure).

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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.compiler import DESC_WORDS, FIELDS, LAYOUT, PARAM_WORDS, beat_words
from model.quant import MAX_SHIFT

from .actbuf import ActivationBuffer
from .cim_macro import CIMMacro, tree_sum
from .config import HwConfig
from .datapath import VALUE_BITS, Datapath

__all__ = ["AccelError", "Accelerator"]


class AccelError(enum.Enum, shape=3):
    """Why the sequencer stopped (``NONE``: it did not)."""

    NONE = 0
    KERNEL = 1      #: kernel not 1, 3, 5, 7
    STRIDE = 2      #: stride not 1 or 2
    SIZE = 3        #: sizes zero, too large, or output size inconsistent with the input
    TILES = 4       #: zero tiles, or tile counts inconsistent with the shapes
    FORMAT = 5      #: shift, output or residual bits illegal
    PROGRAM = 6     #: ran off the end of program memory without a ``last`` descriptor


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

    Members
    -------
    start : ``In(1)``; busy, done, error : ``Out(1)``; error_code : ``Out(AccelError)``
    layer : ``Out(8)``: index of the descriptor being run.
    cycles_total, cycles_busy, cycles_compute, cycles_stall : ``Out(32)``
    prog_w_addr / prog_w_data / prog_w_en, weight_w_*, param_w_*: 32-bit write ports.
    act_w_addr / act_w_data / act_w_mask / act_w_en, act_r_addr / act_r_data / act_r_valid.
    """

    def __init__(self, *, config: HwConfig, acc_width: int | None = None,
                 bank_words: int | None = None):
        if not isinstance(config, HwConfig):
            raise ValueError(f"Configuration must be a HwConfig, not {config!r}")
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
        self.prog_words = prog_words
        self.beat_words = beat_words(config)
        if self.beat_words & (self.beat_words - 1):
            raise ValueError(f"A weight beat must be a power-of-two number of words, not "
                             f"{self.beat_words}")
        self.weight_words = max(weight_words, self.beat_words)
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


        # ------------------------------------------------------------ memories
        m.submodules.prog = prog = Memory(shape=32, depth=self.prog_words, init=[])
        pw = prog.write_port()
        pr = prog.read_port(transparent_for=())
        m.d.comb += [pw.addr.eq(self.prog_w_addr), pw.data.eq(self.prog_w_data),
                     pw.en.eq(self.prog_w_en)]

        m.submodules.weights = wmem = Memory(shape=bw * 32, depth=self.weight_words // bw,
                                             init=[])
        ww = wmem.write_port(granularity=32)
        wsh = _log2(bw)
        m.d.comb += [ww.addr.eq(self.weight_w_addr >> wsh),
                     ww.data.eq(Cat(*[self.weight_w_data] * bw)),
                     ww.en.eq(Mux(self.weight_w_en,
                                  Const(1, bw) << self.weight_w_addr[:wsh] if wsh else 1, 0))]

        n_recs = -(-self.param_words // PARAM_WORDS)
        m.submodules.params = pmem = Memory(shape=PARAM_WORDS * 32, depth=n_recs, init=[])
        ppw = pmem.write_port(granularity=32)
        ppr = pmem.read_port(transparent_for=())
        m.d.comb += [ppw.addr.eq(self.param_w_addr // PARAM_WORDS),
                     ppw.data.eq(Cat(*[self.param_w_data] * PARAM_WORDS)),
                     ppw.en.eq(Mux(self.param_w_en,
                                   Const(1, PARAM_WORDS) << (self.param_w_addr % PARAM_WORDS),
                                   0))]

        # Running sums of the row tiles done so far, one entry per output pixel.
        m.submodules.psums = smem = Memory(shape=C * self.acc_width, depth=self.max_pixels,
                                           init=[])
        sw = smem.write_port()
        sr = smem.read_port(transparent_for=())

        req_layout = data.StructLayout({"addr": baw, "pad": 1, "last": 1, "kind": 1,
                                        "rs": range(8), "mi": range(M), "nt": 1})
        m.submodules.act = act = ActivationBuffer(depth=self.bank_words, rows=R, a_bits=ab,
                                                  request_layout=req_layout)
        m.submodules.dp = dp = Datapath(lanes=C, acc_width=self.acc_width,
                                        psum_width=self.acc_width)
        macros = []
        for i in range(M):
            mac = CIMMacro(**cfg.macro_params())
            m.submodules[f"macro{i}"] = mac
            macros.append(mac)
        m.submodules.resfifo = rfifo = SyncFIFO(width=C * VALUE_BITS, depth=4)

        # ------------------------------------------------------------ descriptor fields
        desc = Signal(DESC_WORDS * 32)
        f = {}
        for fl in FIELDS:
            w, b = LAYOUT[fl.name]
            f[fl.name] = desc[w * 32 + b: w * 32 + b + fl.bits]
        T = f["row_tiles"]

        n_pix = Signal(24)          # Ho * Wo
        out_sl = Signal(4)          # slice words per output word
        res_sl = Signal(4)          # slice words per residual word
        out_pitch = Signal(16)      # Gout * out_sl: words per output pixel
        res_pitch = Signal(16)
        wg_words = Signal(baw)      # W * G: one input row
        m.d.comb += [
            out_sl.eq((f["out_bits"] + ab - 1) >> _log2(ab)),
            res_sl.eq((f["res_bits"] + ab - 1) >> _log2(ab)),
        ]

        j = Signal(8)
        jlane = Signal(range(R))            # first lane of this column tile in an output word
        jgroup = Signal(8)                  # output channel group of this column tile
        prm = [Signal(PARAM_WORDS * 32, name=f"prm{c}") for c in range(C)]

        # ------------------------------------------------------------ sequencer FSM
        idx = Signal(range(self.prog_words + 1))   # program word address of the descriptor
        fcnt = Signal(range(DESC_WORDS + 2))
        pcnt = Signal(range(C + 2))
        code = Signal(AccelError)
        is_busy = Signal()
        flowing = Signal()                  # buffer words go to the macros (not to act_r_data)
        running = Signal()                  # the column tile's requests may flow
        tile_done = Signal()
        start_col = Signal()
        start_layer = Signal()

        m.d.comb += pr.addr.eq(idx + fcnt)
        k, s, p = f["kernel"], f["stride"], f["padding"]
        H, W, G = f["in_height"], f["in_width"], f["in_groups"]
        ho_exp = Signal(16)
        wo_exp = Signal(16)
        m.d.comb += [ho_exp.eq(((H + 2 * p - k) >> (s == 2)) + 1),
                     wo_exp.eq(((W + 2 * p - k) >> (s == 2)) + 1)]
        # The same checks, in the same order, as WindowGen.check, then the descriptor's own.
        with m.If(~k[0] | (k > 7)):
            m.d.comb += code.eq(AccelError.KERNEL)
        with m.Elif((s != 1) & (s != 2)):
            m.d.comb += code.eq(AccelError.STRIDE)
        with m.Elif((H == 0) | (W == 0) | (G == 0) | (H > self.max_size)
                    | (W > self.max_size) | (G > self.max_groups)
                    | (H + 2 * p < k) | (W + 2 * p < k)
                    | (f["out_height"] != ho_exp) | (f["out_width"] != wo_exp)
                    | (f["out_height"] * f["out_width"] > self.max_pixels)
                    | (f["out_groups"] == 0)):
            m.d.comb += code.eq(AccelError.SIZE)
        with m.Elif((f["col_tiles"] == 0) | (T == 0) | (T != k * k * G)
                    | (f["weight_tiles"] != f["col_tiles"] * T)
                    | (f["out_channels"] == 0) | (f["out_channels"] > f["col_tiles"] * C)
                    | (f["out_groups"] * R < f["col_tiles"] * C)):
            m.d.comb += code.eq(AccelError.TILES)
        with m.Elif((f["shift"] == 0) | (f["shift"] > MAX_SHIFT) | (f["out_bits"] == 0)
                    | (f["out_bits"] > 8) | (f["out_signed"] & (f["out_bits"] < 2))
                    | (f["has_residual"] & ((f["res_bits"] == 0) | (f["res_bits"] > 8)))):
            m.d.comb += code.eq(AccelError.FORMAT)

        m.d.comb += [dp.shift.eq(f["shift"]), dp.out_bits.eq(f["out_bits"]),
                     dp.out_signed.eq(f["out_signed"]), dp.has_residual.eq(f["has_residual"])]

        # Request generator state (rounds of up to M row tiles of column tile j).
        r_tbase = Signal(16)                # first row tile of the round
        r_final = Signal()                  # the round holds row tile T - 1
        r_nact = Signal(range(M + 1))       # macros used by the round
        m.d.comb += [r_final.eq(r_tbase + M >= T),
                     r_nact.eq(Mux(r_final, T - r_tbase, M))]
        # Tap walker: (kh, kw, cg) of row tile t = (kh * k + kw) * G + cg, and its word offset.
        w_kh = Signal(3)
        w_kw = Signal(3)
        w_cg = Signal(8)
        w_off = Signal(baw)
        w_rowoff = Signal(baw)
        # The taps of the round being issued (u_*) and of the next one (n_*), which a background
        # walker fills one macro per cycle while the current round is issued.
        su = Signal(range(M + 1))
        bg_busy = Signal()
        bg_start = Signal()
        bg_reset = Signal()
        u_kh = [Signal(3, name=f"r{i}_kh") for i in range(M)]
        u_kw = [Signal(3, name=f"r{i}_kw") for i in range(M)]
        u_off = [Signal(baw, name=f"r{i}_off") for i in range(M)]
        n_kh = [Signal(3, name=f"n{i}_kh") for i in range(M)]
        n_kw = [Signal(3, name=f"n{i}_kw") for i in range(M)]
        n_off = [Signal(baw, name=f"n{i}_off") for i in range(M)]
        # Pixel walk.
        oy = Signal(16)
        ox = Signal(16)
        y0 = Signal(signed(16))
        x0 = Signal(signed(16))
        pix_addr = Signal(baw)
        line_addr = Signal(baw)
        first_addr = Signal(baw)
        mi = Signal(range(M))
        rq_res = Signal()                   # issuing the residual slices of this pixel
        rq_rs = Signal(4)
        res_ptr = Signal(baw)
        px_first = Signal()                 # first pixel of the round (commit the tiles)
        step = Mux(s == 2, 2, 1)

        ai = act.i_stream
        in_bank = f["in_base"][baw:baw + 1]
        res_bank = f["res_base"][baw:baw + 1]

        def switch_round():
            # Start issuing the next round: its taps, pixel (0, 0), and refill n_*.
            m.d.sync += [u_kh[i].eq(n_kh[i]) for i in range(M)]
            m.d.sync += [u_kw[i].eq(n_kw[i]) for i in range(M)]
            m.d.sync += [u_off[i].eq(n_off[i]) for i in range(M)]
            m.d.sync += [oy.eq(0), ox.eq(0), y0.eq(-p), x0.eq(-p),
                         pix_addr.eq(first_addr), line_addr.eq(first_addr), mi.eq(0),
                         rq_res.eq(0), rq_rs.eq(0), px_first.eq(1),
                         res_ptr.eq(f["res_base"][:baw] + jgroup * res_sl)]
            m.d.comb += bg_start.eq(1)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [idx.eq(0), fcnt.eq(0), self.done.eq(0), self.error.eq(0),
                                 self.error_code.eq(AccelError.NONE), self.layer.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # Synchronous read: word fcnt - 1 arrives while word fcnt is addressed.
                m.d.sync += fcnt.eq(fcnt + 1)
                for w in range(DESC_WORDS):
                    with m.If(fcnt == w + 1):
                        m.d.sync += desc[w * 32:(w + 1) * 32].eq(pr.data)
                with m.If(fcnt == DESC_WORDS):
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [
                    n_pix.eq(f["out_height"] * f["out_width"]),
                    out_pitch.eq(f["out_groups"] * out_sl),
                    res_pitch.eq(f["out_groups"] * res_sl),
                    wg_words.eq(W * G),
                    j.eq(0), jlane.eq(0), jgroup.eq(0),
                ]
                with m.If(code != AccelError.NONE):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(code)]
                    m.next = "STOP"
                with m.Else():
                    m.d.comb += start_layer.eq(1)
                    m.d.sync += pcnt.eq(0)
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                # Records param_base + j * C + c, one per cycle (synchronous read).
                m.d.comb += ppr.addr.eq(f["param_base"] + j * C + pcnt)
                m.d.sync += pcnt.eq(pcnt + 1)
                for c in range(C):
                    with m.If(pcnt == c + 1):
                        m.d.sync += prm[c].eq(ppr.data)
                with m.If(pcnt == 1):
                    # Pixel (-p, -p) is p rows and p pixels before the base.
                    m.d.sync += first_addr.eq(f["in_base"][:baw] - p * (wg_words + G))
                with m.If(pcnt == C):
                    m.d.comb += start_col.eq(1)
                    m.d.sync += r_tbase.eq(0)
                    m.d.comb += bg_reset.eq(1)
                    m.next = "SETUP"
            with m.State("SETUP"):
                # The first round of a column tile (or a round whose taps are not ready yet).
                with m.If(~bg_busy):
                    switch_round()
                    m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += running.eq(1)
                next_px = Signal()
                with m.If(rq_res):
                    m.d.comb += [ai.valid.eq(1), ai.payload.addr.eq(res_ptr + rq_rs),
                                 ai.payload.kind.eq(1), ai.payload.rs.eq(rq_rs),
                                 ai.payload.last.eq(rq_rs == res_sl - 1),
                                 act.read_bank.eq(res_bank)]
                    with m.If(ai.ready):
                        m.d.sync += rq_rs.eq(rq_rs + 1)
                        with m.If(rq_rs == res_sl - 1):
                            m.d.sync += [rq_res.eq(0), rq_rs.eq(0),
                                         res_ptr.eq(res_ptr + res_pitch)]
                            m.d.comb += next_px.eq(1)
                with m.Else():
                    kh_sel = Signal(3)
                    kw_sel = Signal(3)
                    off_sel = Signal(baw)
                    for i in range(M):
                        with m.If(mi == i):
                            m.d.comb += [kh_sel.eq(u_kh[i]), kw_sel.eq(u_kw[i]),
                                         off_sel.eq(u_off[i])]
                    yy = Signal(signed(17))
                    xx = Signal(signed(17))
                    m.d.comb += [yy.eq(y0 + kh_sel), xx.eq(x0 + kw_sel)]
                    m.d.comb += [ai.valid.eq(1),
                                 ai.payload.pad.eq((yy < 0) | (yy >= H) | (xx < 0) | (xx >= W)),
                                 ai.payload.addr.eq(pix_addr + off_sel),
                                 ai.payload.mi.eq(mi), ai.payload.nt.eq(px_first),
                                 act.read_bank.eq(in_bank)]
                    with m.If(ai.ready):
                        m.d.sync += mi.eq(mi + 1)
                        with m.If(mi + 1 == r_nact):
                            m.d.sync += mi.eq(0)
                            with m.If(r_final & f["has_residual"]):
                                m.d.sync += rq_res.eq(1)
                            with m.Else():
                                m.d.comb += next_px.eq(1)
                with m.If(next_px):
                    m.d.sync += px_first.eq(0)
                    with m.If(ox + 1 != f["out_width"]):
                        m.d.sync += [ox.eq(ox + 1), x0.eq(x0 + step),
                                     pix_addr.eq(pix_addr + Mux(s == 2, G << 1, G))]
                    with m.Elif(oy + 1 != f["out_height"]):
                        nl = line_addr + Mux(s == 2, wg_words << 1, wg_words)
                        m.d.sync += [ox.eq(0), x0.eq(-p), oy.eq(oy + 1), y0.eq(y0 + step),
                                     line_addr.eq(nl), pix_addr.eq(nl)]
                    with m.Elif(~r_final):
                        m.d.sync += r_tbase.eq(r_tbase + M)
                        with m.If(~bg_busy):
                            switch_round()
                        with m.Else():
                            m.next = "SETUP"
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(tile_done):
                    with m.If(j + 1 != f["col_tiles"]):
                        m.d.sync += [j.eq(j + 1), pcnt.eq(0)]
                        with m.If(jlane + C >= R):
                            m.d.sync += [jlane.eq(0), jgroup.eq(jgroup + 1)]
                        with m.Else():
                            m.d.sync += jlane.eq(jlane + C)
                        m.next = "PARAMS"
                    with m.Elif(f["last"]):
                        m.next = "STOP"
                    with m.Elif(idx + 2 * DESC_WORDS > self.prog_words):
                        m.d.sync += [self.error.eq(1),
                                     self.error_code.eq(AccelError.PROGRAM)]
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += [idx.eq(idx + DESC_WORDS), fcnt.eq(0),
                                     self.layer.eq(self.layer + 1)]
                        m.next = "FETCH"
            with m.State("STOP"):
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
        with m.If(bg_busy):
            for i in range(M):
                with m.If(su == i):
                    m.d.sync += [n_kh[i].eq(w_kh), n_kw[i].eq(w_kw), n_off[i].eq(w_off)]
            with m.If(w_cg + 1 != G):
                m.d.sync += [w_cg.eq(w_cg + 1), w_off.eq(w_off + 1)]
            with m.Elif(w_kw + 1 != k):
                m.d.sync += [w_cg.eq(0), w_kw.eq(w_kw + 1), w_off.eq(w_off + 1)]
            with m.Else():
                m.d.sync += [w_cg.eq(0), w_kw.eq(0), w_kh.eq(w_kh + 1),
                             w_rowoff.eq(w_rowoff + wg_words),
                             w_off.eq(w_rowoff + wg_words)]
            m.d.sync += su.eq(su + 1)
            with m.If(su + 1 == M):
                m.d.sync += bg_busy.eq(0)
        with m.If(bg_reset):
            m.d.sync += [w_kh.eq(0), w_kw.eq(0), w_cg.eq(0), w_off.eq(0), w_rowoff.eq(0)]
        with m.If(bg_start | bg_reset):
            m.d.sync += [su.eq(0), bg_busy.eq(1)]
        m.d.comb += [is_busy.eq(~fsm.ongoing("IDLE")), self.busy.eq(is_busy),
                     flowing.eq(fsm.ongoing("SETUP") | fsm.ongoing("REQ")
                                | fsm.ongoing("DRAIN"))]
        with m.If(~is_busy):
            m.d.comb += [ai.valid.eq(1), ai.payload.addr.eq(self.act_r_addr[:baw]),
                         act.read_bank.eq(self.act_r_addr[baw:])]

        # ------------------------------------------------------------ residual assembly
        ao = act.o_stream
        raw = [Signal(8, name=f"res_raw{c}") for c in range(C)]
        res_w = Signal(4)
        res_top = Signal(3)                 # sign bit of a residual: res_sl * a_bits - 1
        m.d.comb += [res_w.eq(res_sl << _log2(ab)), res_top.eq(res_w - 1)]
        nxt = []
        for c in range(C):
            lane = Signal(ab, name=f"res_lane{c}")
            m.d.comb += lane.eq(ao.payload.word.as_value().word_select(jlane + c, ab))
            v = Signal(8, name=f"res_next{c}")
            m.d.comb += v.eq(Mux(ao.payload.rs == 0, 0, raw[c])
                             | (lane << (ao.payload.rs * ab))[:8])
            nxt.append(v)
        ext = []
        for c in range(C):
            neg = f["res_signed"] & nxt[c].bit_select(res_top, 1)
            e = Signal(signed(VALUE_BITS), name=f"res_ext{c}")
            m.d.comb += e.eq(nxt[c] | Mux(neg, (Const(0x1FF, 9) << res_w)[:9], 0))
            ext.append(e)
        m.d.comb += rfifo.w_data.eq(Cat(*ext))

        # ------------------------------------------------------------ dispatcher
        unit_rdy = [Signal(name=f"unit{i}_rdy") for i in range(M)]
        unit_take = [Signal(name=f"unit{i}_take") for i in range(M)]
        with m.If(flowing):
            with m.If(ao.payload.kind):
                m.d.comb += ao.ready.eq(rfifo.w_rdy)
                with m.If(ao.valid & rfifo.w_rdy):
                    m.d.sync += [raw[c].eq(nxt[c]) for c in range(C)]
                    m.d.comb += rfifo.w_en.eq(ao.payload.last)
            with m.Else():
                for i in range(M):
                    with m.If(ao.payload.mi == i):
                        m.d.comb += [ao.ready.eq(unit_rdy[i]),
                                     unit_take[i].eq(ao.valid & unit_rdy[i])]
        with m.Else():
            m.d.comb += ao.ready.eq(1)
        m.d.comb += [self.act_r_data.eq(ao.payload.word),
                     self.act_r_valid.eq(ao.valid & ~is_busy)]

        # ------------------------------------------------------------ weight loads
        # A walker over the layer's tiles in image order (j, t) hands tile t to macro t % M;
        # a macro loads its next tile into the shadow copy once the previous one is committed.
        l_active = Signal()
        l_ptr = Signal(32)
        l_t = Signal(16)
        l_j = Signal(8)
        l_m = Signal(range(M))
        pend_rdy = [Signal(name=f"u{i}_pend_rdy") for i in range(M)]
        l_push = Signal()
        for i in range(M):
            with m.If(l_m == i):
                m.d.comb += l_push.eq(l_active & pend_rdy[i])
        with m.If(start_layer):
            m.d.sync += [l_active.eq(1), l_ptr.eq(f["weight_base"] * wc), l_t.eq(0),
                         l_j.eq(0), l_m.eq(0)]
        with m.Elif(l_push):
            m.d.sync += [l_ptr.eq(l_ptr + wc), l_t.eq(l_t + 1),
                         l_m.eq(Mux(l_m == M - 1, 0, l_m + 1))]
            with m.If(l_t + 1 == T):
                m.d.sync += [l_t.eq(0), l_m.eq(0), l_j.eq(l_j + 1)]
                with m.If(l_j + 1 == f["col_tiles"]):
                    m.d.sync += l_active.eq(0)

        # ------------------------------------------------------------ macro units
        comp_terms, wait_terms = [], []
        out_y = []
        for i, mac in enumerate(macros):
            rd = wmem.read_port(transparent_for=())
            pend = Signal(name=f"u{i}_pend")
            pend_ptr = Signal(32, name=f"u{i}_pend_ptr")
            loading = Signal(name=f"u{i}_loading")
            loaded = Signal(name=f"u{i}_loaded")        # shadow holds an uncommitted tile
            ld_cnt = Signal(range(wc + 1), name=f"u{i}_ld_cnt")
            ld_ptr = Signal(32, name=f"u{i}_ld_ptr")
            st_active = Signal(name=f"u{i}_st_active")
            st_commit = Signal(name=f"u{i}_st_commit")
            st_word = Signal(R * ab, name=f"u{i}_st_word")
            bidx = Signal(range(ab), name=f"u{i}_bidx")

            m.d.comb += pend_rdy[i].eq(~pend)
            with m.If(l_push & (l_m == i)):
                m.d.sync += [pend.eq(1), pend_ptr.eq(l_ptr)]
            commit_now = Signal(name=f"u{i}_commit_now")
            with m.If(pend & ~loading & ~loaded):
                m.d.sync += [pend.eq(0), loading.eq(1), ld_cnt.eq(0), ld_ptr.eq(pend_ptr)]
            m.d.comb += [rd.addr.eq(ld_ptr + ld_cnt), rd.en.eq(loading)]
            wr_valid = Signal(name=f"u{i}_wr_valid")
            wr_addr = Signal(range(wc), name=f"u{i}_wr_addr")
            m.d.sync += [wr_valid.eq(loading & (ld_cnt != wc)), wr_addr.eq(ld_cnt)]
            m.d.comb += [mac.write.valid.eq(wr_valid), mac.write.payload.addr.eq(wr_addr),
                         mac.write.payload.w.eq(rd.data[:len(mac.write.payload.w.as_value())])]
            with m.If(loading):
                with m.If(ld_cnt == wc):
                    m.d.sync += [loading.eq(0), loaded.eq(1)]
                with m.Else():
                    m.d.sync += ld_cnt.eq(ld_cnt + 1)

            # A beat that starts a round needs its tile loaded; it commits on its first plane.
            mi_ = mac.input
            free = ~st_active | (mi_.ready & (bidx == 0))
            m.d.comb += unit_rdy[i].eq(free & (~ao.payload.nt | (loaded & ~commit_now)))
            planes = [Cat(*[st_word[r * ab + b] for r in range(R)]) for b in range(ab)]
            plane = Signal(R, name=f"u{i}_plane")
            with m.Switch(bidx):
                for b in range(ab):
                    with m.Case(b):
                        m.d.comb += plane.eq(planes[b])
            m.d.comb += [mi_.valid.eq(st_active), mi_.payload.plane.eq(plane),
                         mi_.payload.last.eq(bidx == 0), mi_.payload.commit.eq(st_commit),
                         commit_now.eq(st_active & st_commit & mi_.ready)]
            with m.If(st_active & mi_.ready):
                m.d.sync += [st_commit.eq(0), bidx.eq(bidx - 1)]
                with m.If(bidx == 0):
                    m.d.sync += st_active.eq(0)
            with m.If(commit_now):
                m.d.sync += loaded.eq(0)
            # After the plane logic: a beat taken while the last plane leaves wins.
            with m.If(unit_take[i]):
                m.d.sync += [st_active.eq(1), st_word.eq(ao.payload.word), bidx.eq(ab - 1),
                             st_commit.eq(ao.payload.nt)]
            comp_terms.append(st_active & mi_.ready)
            wait_terms.append(loading | (st_active & ~mi_.ready)
                              | (ao.valid & ~ao.payload.kind & (ao.payload.mi == i)
                                 & ~unit_rdy[i]))
            # A two-result buffer per macro: the collector needs two cycles per pixel and
            # takes all macros at once, so without it a macro would stall on its output.
            ob = SyncFIFO(width=len(mac.output.payload.as_value()), depth=2)
            m.submodules[f"outbuf{i}"] = ob
            m.d.comb += [ob.w_data.eq(mac.output.payload.as_value()),
                         ob.w_en.eq(mac.output.valid), mac.output.ready.eq(ob.w_rdy)]
            out_y.append((ob, data.View(mac.output_layout, ob.r_data)))
        computing = Signal()
        waiting = Signal()
        m.d.comb += [computing.eq(Cat(*comp_terms).any()), waiting.eq(Cat(*wait_terms).any())]

        # ------------------------------------------------------------ collector
        # Per pixel: the round's macros' results, summed, added to the pixel's running sum;
        # on the final round the total goes to the Datapath as a single-beat sum.
        c_tbase = Signal(16)
        c_final = Signal()
        c_nact = Signal(range(M + 1))
        m.d.comb += [c_final.eq(c_tbase + M >= T), c_nact.eq(Mux(c_final, T - c_tbase, M))]
        c_pix = Signal(24)
        c_phase = Signal()
        rsum = [Signal(signed(self.acc_width), name=f"rsum{c}") for c in range(C)]
        all_valid = Signal()
        m.d.comb += all_valid.eq(Cat(*[o.r_rdy | (c_nact <= i) for i, (o, _) in enumerate(out_y)])
                                 .all())
        res_ok = Signal()
        m.d.comb += res_ok.eq(~(c_final & f["has_residual"]) | rfifo.r_rdy)
        take = Signal()
        # Past the final round (c_tbase >= T) nothing is expected until the next column tile.
        m.d.comb += take.eq(flowing & (c_tbase < T) & ~c_phase & all_valid & res_ok)
        for i, (o, _) in enumerate(out_y):
            m.d.comb += o.r_en.eq(take & (c_nact > i))
        m.d.comb += [sr.addr.eq(c_pix), sr.en.eq(take)]
        with m.If(take):
            for c in range(C):
                terms = [Mux(c_nact > i, y.y[c], 0) for i, (_, y) in enumerate(out_y)]
                m.d.sync += rsum[c].eq(tree_sum(terms))
            m.d.sync += c_phase.eq(1)
        di = dp.i_stream
        total = [Signal(signed(self.acc_width), name=f"total{c}") for c in range(C)]
        for c in range(C):
            prev = sr.data.word_select(c, self.acc_width).as_signed()
            m.d.comb += total[c].eq(Mux(c_tbase == 0, 0, prev) + rsum[c])
        m.d.comb += [sw.addr.eq(c_pix), sw.data.eq(Cat(*total)),
                     di.payload.first.eq(1), di.payload.last.eq(1)]
        for c in range(C):
            ln = di.payload.lanes[c]
            m.d.comb += [ln.psum.eq(total[c]),
                         ln.m.eq(prm[c][0:16]), ln.b.eq(prm[c][16:64]),
                         ln.r.eq(prm[c][64:88]),
                         ln.res.eq(rfifo.r_data.word_select(c, VALUE_BITS))]
        done_px = Signal()
        with m.If(c_phase):
            with m.If(c_final):
                m.d.comb += [di.valid.eq(1), done_px.eq(di.ready),
                             rfifo.r_en.eq(di.ready & f["has_residual"])]
            with m.Else():
                m.d.comb += [sw.en.eq(1), done_px.eq(1)]
        with m.If(done_px):
            m.d.sync += [c_phase.eq(0), c_pix.eq(c_pix + 1)]
            with m.If(c_pix + 1 == n_pix):
                m.d.sync += [c_pix.eq(0), c_tbase.eq(c_tbase + M)]
        with m.If(start_col):
            m.d.sync += [c_pix.eq(0), c_tbase.eq(0), c_phase.eq(0)]

        # ------------------------------------------------------------ write back
        do = dp.o_stream
        w_s = Signal(4)
        w_pix = Signal(24)
        w_ptr = Signal(baw)
        aw = act.w_stream
        out_bank = f["out_base"][baw:baw + 1]
        vals = Cat(*[(do.payload.value[c] >> (w_s * ab))[:ab] for c in range(C)])
        with m.If(is_busy):
            m.d.comb += [aw.valid.eq(do.valid), aw.payload.addr.eq(w_ptr + w_s),
                         aw.payload.word.eq(vals << (jlane * ab)),
                         aw.payload.mask.eq(Const((1 << C) - 1, R) << jlane),
                         act.write_bank.eq(out_bank),
                         do.ready.eq(w_s == out_sl - 1)]
            with m.If(do.valid):
                m.d.sync += w_s.eq(w_s + 1)
                with m.If(w_s == out_sl - 1):
                    m.d.sync += [w_s.eq(0), w_ptr.eq(w_ptr + out_pitch), w_pix.eq(w_pix + 1)]
                    m.d.comb += tile_done.eq(w_pix + 1 == n_pix)
        with m.Else():
            m.d.comb += [aw.valid.eq(self.act_w_en), aw.payload.addr.eq(self.act_w_addr[:baw]),
                         aw.payload.word.eq(self.act_w_data),
                         aw.payload.mask.eq(self.act_w_mask),
                         act.write_bank.eq(self.act_w_addr[baw:])]
        with m.If(start_col):
            m.d.sync += [w_s.eq(0), w_pix.eq(0),
                         w_ptr.eq(f["out_base"][:baw] + jgroup * out_sl)]

        # ------------------------------------------------------------ status and counters
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
