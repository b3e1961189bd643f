# amaranth: UnusedElaboratable=no
"""The accelerator: memories, CIM macros, Datapath and the layer sequencer, connected.

:class:`Accelerator` runs a program compiled by :func:`compiler.compile_model` (layer
descriptors, weight image, parameter image, activation-buffer layout, in the formats of
:mod:`contract.program`), computes exactly what :func:`compiler.execute` computes, in the
cycles :mod:`compiler.cycles` states.

The sequencer is :mod:`gateware.sequencer`, one component per unit, joined by streams
(``gateware/README.md``, "Sequencer", draws the graph and explains the schedule):
:class:`~gateware.sequencer.Fetcher` (reads and checks the descriptors),
:class:`~gateware.sequencer.WeightLoader` (walks each layer's rounds, hands every macro its
next tile), one :class:`~gateware.sequencer.MacroUnit` per macro (loads its tiles, feeds it
bit-planes read in lockstep), :class:`~gateware.sequencer.Issuer` (layer state machine,
rounds, slots, pixel walk), :class:`~gateware.sequencer.ResidualReader`,
:class:`~gateware.sequencer.Collector` (adder tree, running sums, to the Datapath) and
:class:`~gateware.sequencer.Writer` (results back into the buffer). This module instantiates
the memories (program, weight store, parameters, activation buffer), the macros and the units,
connects them, and keeps the bus ports and the counters.

Control and status
------------------
``start`` (pulse, ignored while ``busy``) runs the program from descriptor 0 until a
descriptor with ``last``. ``done`` is set when the program ends (or stops on an error) and
stays set until the next ``start``; ``error`` / ``error_code`` (:class:`AccelError`) tell why
it stopped early. Counters (cleared by ``start``): ``cycles_total`` (every cycle since start),
``cycles_busy``, ``cycles_compute`` (some macro accepted a bit-plane), ``cycles_stall`` (busy,
no macro computing, while the issuer waits for a round's weights or for a residual).
Run-time errors (``OVERFLOW``: the Datapath's accumulator overflowed, or a raw layer's logit
left 32 bits; ``OVERRUN``) stop the program at the end of the layer.

Classifier
----------
A raw layer's (``contract.program``, "Raw output") one result goes from the Datapath to the
:class:`~gateware.sequencer.Classifier` instead of the writer: logit registers and a
sequential argmax. ``result_class`` and ``result_valid`` (the program ended, without an
error, with a raw layer; cleared by ``start``) are the ``RESULT`` register;
``logit_r_addr`` -> ``logit_r_data`` reads logit ``c`` combinationally (the ``LOGITS``
window).

Memory ports (for the bus slave; use them while not ``busy``)
--------------------------------------------------------------
``prog_w_*``, ``weight_w_*``, ``param_w_*``: 32-bit word writes at a word address of the
program, weight image and parameter image. ``act_w_*``: the lanes of ``act_w_mask`` (one bit
per ``a_bits`` activation) of the word at a global buffer address (``bank * bank_words +
offset``), so a 32-bit bus write touches only its own lanes. ``act_r_addr`` -> ``act_r_data`` /
``act_r_valid``: while not busy, the word at ``act_r_addr`` appears ``ActivationBuffer.latency``
(2) cycles later.

Image buffer (configurations with ``image_channels > 0``): ``image_w_*`` writes a 32-bit word
at a word address of the ``IMAGE`` window (:mod:`gateware.image`), also while busy: the slot
``image_slot`` latched at ``start`` (``image_active``: that one while busy, ``image_slot``
otherwise) is the one the program's im2col layer reads, and a write to it while busy is
dropped (the bus slave answers it with ERROR), so software fills the other slot while a frame
runs.

Calibration rows (configurations with ``cal_rows > 0``, ``docs/offsets.md``): every macro
models a device's ADC offsets (``config.adc_offsets``, constants) and has calibration rows.
``cal_eval`` (a port of every configuration, without effect where ``cal_rows`` is 0)
latches every macro's comparators. ``cal_w_*`` writes 32-bit word ``j`` of calibration row
``r`` of macro ``i`` at word address ``(i * cal_rows + r) * cal_row_words + j`` (the ``CAL``
window); ``cmp_r_addr`` -> ``cmp_r_data`` reads word ``j`` of macro ``i``'s comparator bits
at ``i * cal_row_words + j`` combinationally (the ``CMP`` window). Bit ``k`` of a row or
comparator word is bit-column ``k = c * w_bits + b`` (within the 32 of its word).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2, exact_log2

from contract.config import HwConfig
from contract.program import DESC_WORDS, PARAM_WORDS, beat_words

from .actbuf import ActivationBuffer
from .cim_macro import DEFAULT_STYLE, CIMMacro
from .datapath import Datapath
from .image import ImageBuffer, image_slot_bytes, image_window_bytes
from .sequencer import (
    AccelError,
    Classifier,
    Collector,
    Fetcher,
    Im2col,
    Issuer,
    MacroUnit,
    Pooler,
    ResidualReader,
    WeightLoader,
    Writer,
)
from .weights import WeightStore

__all__ = ["AccelError", "Accelerator"]


RES_FIFO_DEPTH = 32
"""Residuals read ahead of the issuer. The issuer claims a pixel's residual when it issues the
pixel's final round and the FIFO frees it when the datapath takes it, so the FIFO holds every
pixel between the two: up to one a cycle (``copies * sp <= planes``, ``compiler.cycles``) for
the pixel's planes, the macro, the collector and the datapath's first stages, about 20 cycles.
Eight entries were enough for two copies and stalled four (ResNet14's layer1 on 45 macros:
111 cycles a layer instead of 82; ``tests/test_accelerator.py``,
``test_residual_layers_with_four_copies``)."""


def _ports(component):
    """``(path, flow, signal)`` of every port of an elaborated-elsewhere component, as the
    Verilog back end names them (``input__payload``: the path joined by ``__``)."""
    for path, member, value in component.signature.flatten(component):
        yield path, member.flow, value.as_value() if hasattr(value, "as_value") else value


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
    result_class : ``Out(16)``; result_valid : ``Out(1)``
    logit_r_addr : ``In(max(1, ceil_log2(cols)))``; logit_r_data : ``Out(32)``
    image_slot : ``In(1)``; image_active : ``Out(1)``
        The slot the next ``start`` latches; the latched one while busy, ``image_slot``
        otherwise (module docstring).
    image_w_addr / image_w_data / image_w_en
        The image buffer's write port (only with ``image_channels > 0``).
    """

    def __init__(self, *, config: HwConfig, acc_width: int | None = None,
                 bank_words: int | None = None, macro_module: str | None = None,
                 ram_module: str | None = None, macro_style: str = DEFAULT_STYLE,
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
        if config.sequencer_problem is not None:
            raise ValueError(config.sequencer_problem)
        acc_width = config.acc_width if acc_width is None else acc_width
        bank_words = config.bank_words if bank_words is None else bank_words
        if not isinstance(bank_words, int) or bank_words < 2 or bank_words & (bank_words - 1):
            raise ValueError(f"Bank words must be a power of two of at least 2, not "
                             f"{bank_words!r}")
        prog_words, param_words = config.prog_words, config.param_words
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
        self.weight_words = config.weight_store_words
        if param_words < PARAM_WORDS * config.cols:
            raise ValueError(f"Parameter words ({param_words}) must hold one column tile's "
                             f"records ({PARAM_WORDS * config.cols} words)")
        self.param_words = param_words
        self.max_size = max_size
        self.max_groups = max_groups
        self.max_pixels = max_pixels
        R, ab = config.rows, config.a_bits
        self.act_addr_width = ceil_log2(2 * bank_words)
        image = {"image_slot": In(1), "image_active": Out(1)}
        if config.image_channels:
            image |= {"image_w_addr": In(ceil_log2(image_window_bytes(config)) - 2),
                      "image_w_data": In(32), "image_w_en": In(1)}
        super().__init__({
            **image,
            "start": In(1), "cal_eval": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
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
            "result_class": Out(16), "result_valid": Out(1),
            "logit_r_addr": In(max(1, ceil_log2(config.cols))), "logit_r_data": Out(32),
            **self._cal_ports(config),
        })

    @staticmethod
    def _cal_ports(config):
        if not config.cal_rows:
            return {}
        rw = config.cal_row_words
        return {"cal_w_addr": In(ceil_log2(config.macros * config.cal_rows * rw)),
                "cal_w_data": In(32), "cal_w_en": In(1),
                "cmp_r_addr": In(max(1, ceil_log2(config.macros * rw))),
                "cmp_r_data": Out(32)}

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, ab, M = cfg.rows, cfg.cols, cfg.a_bits, cfg.macros
        baw = ceil_log2(self.bank_words)

        # ------------------------------------------------------------ memories
        m.submodules.prog = prog = Memory(shape=32, depth=self.prog_words, init=[])
        pw = prog.write_port()
        m.d.comb += [pw.addr.eq(self.prog_w_addr), pw.data.eq(self.prog_w_data),
                     pw.en.eq(self.prog_w_en)]

        m.submodules.weights = wmem = WeightStore(
            config=cfg, module=self.ram_module,
            init=() if self.weight_init is None else self.weight_init)
        m.d.comb += [wmem.w_addr.eq(self.weight_w_addr), wmem.w_data.eq(self.weight_w_data),
                     wmem.w_en.eq(self.weight_w_en)]

        # One row per column tile: the C records the collector needs at once.
        row_words = PARAM_WORDS * C
        rsh = ceil_log2(row_words)
        param_rows = self.param_words // row_words
        m.submodules.params = pmem = Memory(shape=row_words * 32, depth=param_rows, init=[])
        ppw = pmem.write_port(granularity=32)
        m.d.comb += [ppw.addr.eq(self.param_w_addr >> rsh),
                     ppw.data.eq(Cat(*[self.param_w_data] * row_words)),
                     ppw.en.eq(Mux(self.param_w_en,
                                   Const(1, row_words) << self.param_w_addr[:rsh], 0))]

        # Ports 0 .. M-1 feed the macros in lockstep, port M reads residuals; the stream port
        # serves the bus while idle.
        # Byte-wide write enables where every writer writes whole bytes (a column tile of C
        # lanes, the bus a byte): bank 0 can then be UltraRAM (ActivationBuffer.ram_style).
        lanes = 8 // ab if ab < 8 and (C * ab) % 8 == 0 and R % (8 // ab) == 0 else 1
        m.submodules.act = act = ActivationBuffer(depth=self.bank_words, rows=R, a_bits=ab,
                                                  read_ports=M + 1, write_lanes=lanes)
        m.submodules.dp = dp = Datapath(lanes=C, acc_width=self.acc_width,
                                        psum_width=self.acc_width)
        macros = [self._macro(m, i) for i in range(M)]
        if cfg.cal_rows:
            self._calibration(m, macros)

        # ------------------------------------------------------------ sequencer
        wc = cfg.write_cycles
        m.submodules.fetcher = fetcher = Fetcher(
            prog_words=self.prog_words, rows=R, cols=C, a_bits=ab, w_bits=cfg.w_bits,
            planes=cfg.planes_max,
            bank_words=self.bank_words, max_size=self.max_size,
            max_groups=self.max_groups, max_pixels=self.max_pixels,
            macros=M, weight_rows=cfg.weight_rows, rec_cap=self.param_words // PARAM_WORDS,
            image_channels=cfg.image_channels, image_size=cfg.image_size,
            im2col_kernel=cfg.im2col_kernel)
        pl = cfg.planes_max
        m.submodules.loader = loader = WeightLoader(macros=M, a_bits=ab, w_bits=cfg.w_bits,
                                                    planes=pl, write_cycles=wc,
                                                    addr_width=baw)
        m.submodules.issuer = issuer = Issuer(macros=M, cols=C, a_bits=ab, w_bits=cfg.w_bits,
                                              planes=pl, addr_width=baw,
                                              param_rows=param_rows)
        m.submodules.residual = reader = ResidualReader(
            rows=R, cols=C, a_bits=ab, addr_width=baw, param_rows=param_rows,
            depth=RES_FIFO_DEPTH)
        m.submodules.collector = collector = Collector(
            macros=M, cols=C, acc_width=self.acc_width, max_pixels=self.max_pixels,
            param_rows=param_rows, result_layout=macros[0].output_layout,
            psum_layout=dp.in_layout)
        m.submodules.writer = writer = Writer(rows=R, cols=C, a_bits=ab, addr_width=baw,
                                              param_rows=param_rows,
                                              result_layout=dp.out_layout)
        m.submodules.pooler = pooler = Pooler(rows=R, a_bits=ab, addr_width=baw)
        m.submodules.classifier = clf = Classifier(cols=C, param_rows=param_rows,
                                                   result_layout=dp.out_layout)
        im2col = self._image(m, issuer, baw)
        units = []
        for i, mac in enumerate(macros):
            m.submodules[f"unit{i}"] = unit = MacroUnit(
                index=i, macros=M, rows=R, a_bits=ab, planes=pl, write_cycles=wc,
                addr_width=baw,
                weight_addr_width=wmem.banks[0].addr_width, weight_width=wmem.banks[0].width,
                input_layout=mac.input_layout, write_layout=mac.write_layout)
            connect(m, loader.tiles[i], unit.tile)
            connect(m, unit.weights, wmem.reads[i])
            connect(m, unit.write, mac.write)
            if i:
                connect(m, unit.act, act.reads[i])
            else:
                # Port 0 is the pooler's while it runs (the macros are idle then).
                port, mine = act.reads[0], pooler.busy
                m.d.comb += [port.addr.eq(Mux(mine, pooler.act.addr, unit.act.addr)),
                             port.pad.eq(Mux(mine, pooler.act.pad, unit.act.pad)),
                             port.en.eq(Mux(mine, pooler.act.en, unit.act.en)),
                             unit.act.data.eq(port.data), pooler.act.data.eq(port.data)]
            connect(m, unit.feed, mac.input)
            connect(m, mac.output, collector.results[i])
            m.d.comb += [unit.go.eq(issuer.go), issuer.loaded[i].eq(unit.loaded)]
            units.append(unit)
        connect(m, fetcher.prog, prog.read_port(transparent_for=()))
        connect(m, fetcher.descriptors, loader.descriptors)
        connect(m, loader.layers, issuer.layers)
        connect(m, issuer.issue, *[unit.issue for unit in units])
        connect(m, issuer.ctrl, reader.ctrl, collector.ctrl, writer.ctrl, clf.ctrl)
        connect(m, reader.act, act.reads[M])
        connect(m, reader.residuals, collector.residuals)
        connect(m, reader.credit, issuer.residuals)
        connect(m, collector.params, pmem.read_port(transparent_for=()))
        connect(m, collector.psums, dp.i_stream)
        desc = issuer.ctrl.desc
        # A raw layer's result goes to the classifier, any other to the writer.
        dpo, raw = dp.o_stream, desc.raw
        for sink, mine in ((writer.results, ~raw), (clf.results, raw)):
            m.d.comb += [sink.payload.eq(dpo.payload), sink.valid.eq(dpo.valid & mine)]
        m.d.comb += dpo.ready.eq(Mux(raw, clf.results.ready, writer.results.ready))
        m.d.comb += [fetcher.go.eq(issuer.go), fetcher.prog_written.eq(self.prog_w_en),
                     loader.go.eq(issuer.go),
                     issuer.start.eq(self.start),
                     issuer.layer_done.eq(writer.layer_done | pooler.done | im2col.done
                                          | clf.layer_done),
                     pooler.start.eq(issuer.pool_start), pooler.desc.eq(issuer.ctrl.desc),
                     issuer.overrun.eq(collector.overrun),
                     issuer.overflow.eq(writer.overflow | clf.overflow),
                     dp.shift.eq(desc.shift), dp.raw.eq(raw), dp.out_bits.eq(desc.out_bits),
                     dp.out_signed.eq(desc.out_signed), dp.has_residual.eq(desc.has_residual),
                     self.busy.eq(issuer.busy), self.done.eq(issuer.done),
                     self.error.eq(issuer.error), self.error_code.eq(issuer.error_code),
                     self.layer.eq(issuer.layer),
                     clf.go.eq(issuer.go), self.result_class.eq(clf.result_class),
                     self.result_valid.eq(clf.valid & issuer.done & ~issuer.error),
                     clf.logit_r_addr.eq(self.logit_r_addr),
                     self.logit_r_data.eq(clf.logit_r_data)]

        # ------------------------------------------------------------ bus ports
        # The buffer's write port: the unit that runs the layer's while busy (the im2col unit,
        # the pooler or the writer), the bus's otherwise.
        aws = act.w_stream
        with m.If(pooler.busy):
            m.d.comb += [aws.valid.eq(pooler.write.valid), aws.payload.eq(pooler.write.payload),
                         act.write_bank.eq(pooler.bank)]
        if self.config.image_channels:
            with m.Elif(im2col.busy):
                m.d.comb += [aws.valid.eq(im2col.write.valid),
                             aws.payload.eq(im2col.write.payload),
                             act.write_bank.eq(im2col.bank)]
        with m.Elif(issuer.busy):
            m.d.comb += [aws.valid.eq(writer.write.valid), aws.payload.eq(writer.write.payload),
                         act.write_bank.eq(writer.bank)]
        with m.Else():
            m.d.comb += [aws.valid.eq(self.act_w_en), aws.payload.addr.eq(self.act_w_addr[:baw]),
                         aws.payload.word.eq(self.act_w_data),
                         aws.payload.mask.eq(self.act_w_mask),
                         act.write_bank.eq(self.act_w_addr[baw:])]
        ai, ao = act.i_stream, act.o_stream
        m.d.comb += [ai.valid.eq(~issuer.busy), ai.payload.addr.eq(self.act_r_addr[:baw]),
                     act.read_bank.eq(self.act_r_addr[baw:]), ao.ready.eq(1),
                     self.act_r_data.eq(ao.payload.word),
                     self.act_r_valid.eq(ao.valid & ~issuer.busy)]

        # ------------------------------------------------------------ counters
        computing = Cat(*[unit.active for unit in units]).any()
        with m.If(issuer.go):
            m.d.sync += [self.cycles_total.eq(0), self.cycles_busy.eq(0),
                         self.cycles_compute.eq(0), self.cycles_stall.eq(0)]
        with m.Else():
            m.d.sync += [self.cycles_total.eq(self.cycles_total + 1),
                         self.cycles_busy.eq(self.cycles_busy + issuer.busy),
                         self.cycles_compute.eq(self.cycles_compute + computing),
                         self.cycles_stall.eq(self.cycles_stall + (issuer.busy & ~computing
                                                                   & issuer.waiting))]
        return m

    def _image(self, m, issuer, baw):
        """The image buffer, its bus port and slot latch, and the im2col unit; without an
        image buffer (only the slot latch) a stand-in whose ``busy`` and ``done`` are 0."""
        cfg = self.config
        latched = Signal()
        with m.If(issuer.go):
            m.d.sync += latched.eq(self.image_slot)
        m.d.comb += self.image_active.eq(Mux(issuer.busy, latched, self.image_slot))
        if not cfg.image_channels:
            return SimpleNamespace(busy=Const(0), done=Const(0))
        m.submodules.image = img = ImageBuffer(config=cfg)
        m.submodules.im2col = unit = Im2col(config=cfg, addr_width=baw)
        # A word's slot: below or above the first byte of slot 1.
        slot = (self.image_w_addr << 2) >= image_slot_bytes(cfg)
        m.d.comb += [img.w_addr.eq(self.image_w_addr), img.w_data.eq(self.image_w_data),
                     img.w_en.eq(self.image_w_en & ~(issuer.busy & (slot == self.image_active))),
                     unit.start.eq(issuer.im2col_start), unit.desc.eq(issuer.ctrl.desc),
                     unit.slot.eq(self.image_active)]
        connect(m, unit.image, img.read)
        return unit

    def _calibration(self, m, macros):
        """The device's offsets on every macro's ``theta``, the ``CAL`` window's writes to
        the macro its address names, ``cal_eval`` to all, the ``CMP`` window's reads."""
        cfg = self.config
        rw, rows = cfg.cal_row_words, cfg.cal_rows
        lw, lr = exact_log2(rw), exact_log2(rows)
        theta = cfg.adc_offsets.values.reshape(cfg.macros, -1)
        which = self.cal_w_addr[lw + lr:]
        compare = []
        for i, mac in enumerate(macros):
            m.d.comb += [t.eq(int(v)) for t, v in zip(mac.theta, theta[i])]
            m.d.comb += [mac.cal.en.eq(self.cal_w_en & (which == i)),
                         mac.cal.row.eq(self.cal_w_addr[lw:lw + lr]),
                         mac.cal.word.eq(self.cal_w_addr[:lw] if lw else 0),
                         mac.cal.data.eq(self.cal_w_data),
                         mac.cal_eval.eq(self.cal_eval)]
            bits = Cat(mac.compare, Const(0, 32 * rw - len(mac.compare)))
            compare += [bits.word_select(j, 32) for j in range(rw)]
        with m.Switch(self.cmp_r_addr):
            for n, word in enumerate(compare):
                with m.Case(n):
                    m.d.comb += self.cmp_r_data.eq(word)

    def _macro(self, m, i):
        """Macro ``i``: a submodule, or an instance of the macro module (``macro_module``)."""
        mac = CIMMacro(**self.config.macro_params(), calibration=self.config.calibration,
                       style=self.macro_style)
        if self.macro_module is None:
            m.submodules[f"macro{i}"] = mac
        else:
            # The same macro, emitted once as its own Verilog module (gateware.emit).
            m.submodules[f"macro{i}"] = Instance(
                self.macro_module, i_clk=ClockSignal(), i_rst=ResetSignal(),
                **{f"{'o' if flow == Out else 'i'}_{'__'.join(map(str, path))}": value
                   for path, flow, value in _ports(mac)})
        return mac
