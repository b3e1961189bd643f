"""Named, validated hardware configurations.

One module declares every hardware configuration; ``build.py``, the compiler, the tests and
the header generator all take their numbers from here (:func:`get_config`). A configuration
is validated once, when it is built, and :class:`~gateware.cim_macro.CIMMacro` checks its own
arguments with the same function (:func:`check_macro_params`), so an invalid macro cannot be
described here and built there, or the other way round.

Pure Python on purpose: the compiler and header generation import it without elaborating any
hardware.

Named configurations
--------------------
``tiny``
    16 x 8, W4A4, 2 macros (64 MACs/cycle): small enough that a whole network runs in the
    Amaranth simulator in seconds (the shipped digits model; ResNet14's weights do not fit
    its 16 k-word weight store).
``default``
    64 x 64, W4A4, 18 macros, ``write_rows=4``: sized for the XCVU13P and ResNet14's middle
    section (layer1 to layer3, 3x32x32 input, W4A4: 26.2 M MACs and 2.77 M weights per
    frame).

    * Throughput. The bar is 16,667 cycles per frame; the goal is below 2,000, which needs
      13,100 MACs per cycle at full utilization. 18 macros of 64 x 64 at ``a_bits=4`` give
      18 * 64 * 64 / 4 = 18,432 peak MACs per cycle: 1,422 cycles per frame at 100 %, so
      the goal holds down to about 71 % utilization (the bar down to 9 %).
    * Tiling. Every conv of ResNet14 reduces over Cin * 9 = 576, 1152 or 2304 rows = 9, 18
      or 36 tiles of 64, and has 64, 128 or 256 outputs = 1, 2 or 4 tiles of 64 columns.
      18 is a multiple of 9: layer1 (9 tiles) runs as two copies on halves of the 8 x 8
      output pixels, layer2 (18 or 36 tiles) and layer3 (72 or 144 tiles) in whole rounds,
      so no macro idles except on the small 1 x 1 shortcuts.
    * Weight loading. The weights do not fit in the arrays (2.77 M against 18 * 4096), so
      tiles are reloaded from the on-chip weight store while the previous tile computes
      (``double_buffer``). layer3's 2 x 2 outputs reuse a tile for only 4 vectors = 16
      cycles: ``write_rows=4`` (1 kbit per macro and cycle, 18 kbit per cycle in all) loads a
      64-row tile in 16 cycles plus 3 of latency, so layer3's rounds take 20 cycles, not 17.
      ``write_rows=8`` would save about 100 cycles a frame by the cycle model but double the
      weight store's UltraRAMs (its banks are as wide as a beat).
    * Cost (``python -m hw.estimate --config default``; Yosys ``synth_xilinx`` for xcup):
      one macro 18,901 LUTs (18.5 per MAC/cycle) and 56,709 flip-flops; the 18 macros
      340 k of the 1.73 M LUTs and 1.0 M of the 3.46 M flip-flops (mostly the weights and
      their shadow copies: 13 bits per row and column at W4).
    * Bit-planes. ``max_planes=12``: the first convolution (8-bit pixels, 8-bit weights as
      two 4-bit digits, ``contract.program``) runs on the macros too; their results are 8
      bits wider than at 4 planes (18 k LUT and FF more in all, ``docs/build.md``).
``large``
    ``default`` with 45 macros and weight beats of 8 rows: the most macros that fill the
    XCVU13P by this rule. A macro's
    flip-flops bind first (its weights, their shadow copies and its adder trees: 56,709 FF
    against 18,901 LUT, ``default``'s estimate), and the rest of the accelerator takes
    56,248 FF and 125 more per macro; 0.8 x 3,456,000 FF allows
    ``(2,764,800 - 56,248) // (56,709 + 125) = 47`` macros. Of those, the largest multiple of
    9 (ResNet14's row tiles per 64 input channels of a 3 x 3 kernel, so that a layer's tiles
    fill whole rounds, as 18 does on ``default``): 45. ``python build.py --board vu13p
    --config large --estimate`` checks every resource against 80 %. Today's schedule runs
    ResNet14's middle section in as many cycles on 36 macros as on 45 (``python -m
    compiler.cycles``): at most 4 copies of a layer's row tiles (the output port writes a
    pixel's word a cycle, each copy one every 4 cycles), the serial 1 x 1 shortcuts and each
    layer's fill and drain, not the array, bound it there. Weight beats of 8 rows
    (``write_rows=8``): a 64-row tile loads in 8 cycles (plus 3), within the 16 that layer3
    uses it for, so ResNet14 runs in 1,128 cycles, not 1,207 with 4 rows a beat (there the
    loads set the pace of layer3: 20 cycles a round). The cost is a weight store twice as
    wide (a bank per two macros is as wide as a beat: 29 UltraRAMs, not 15, or 64 block RAMs
    as Yosys maps it), still under 80 % of the device in all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .arith import OFFSET_FRAC_BITS, OFFSET_WIDTH, AdcOffsets, CalibrationRows

__all__ = ["CONFIGS", "MAX_PLANES", "HwConfig", "check_macro_params", "get_config"]

ROWS_RANGE = (8, 1024)
COLS_RANGE = (1, 1024)
W_BITS = (1, 2, 4, 8)
A_BITS = (1, 2, 4, 8)
MAX_PLANES = 16
"""Most bit-planes a macro takes per vector: an 8-bit input shifted by an 8-bit array's
weight digit (:mod:`contract.program`, wide weights)."""
MAX_MACROS = 256
MAX_IMAGE_CHANNELS = 4
MEMORY_FIELDS = ("bank_words", "prog_words", "weight_words", "param_words")


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not {value!r}")


def check_macro_params(*, rows, cols, w_bits, a_bits, adc_bits=None, write_rows=2,
                       double_buffer=True) -> None:
    """Validate the parameters of one CIM macro; raise :class:`ValueError` naming the first
    bad one. See :class:`~gateware.cim_macro.CIMMacro` for their meaning."""
    for name, value in (("rows", rows), ("cols", cols), ("w_bits", w_bits),
                        ("a_bits", a_bits), ("write_rows", write_rows)):
        _check_int(name, value)
    lo, hi = ROWS_RANGE
    if not (_is_pow2(rows) and lo <= rows <= hi):
        raise ValueError(f"rows must be a power of two from {lo} to {hi}, not {rows}")
    lo, hi = COLS_RANGE
    if not lo <= cols <= hi:
        raise ValueError(f"cols must be from {lo} to {hi}, not {cols}")
    if w_bits not in W_BITS:
        raise ValueError(f"w_bits must be one of {', '.join(map(str, W_BITS))}, not {w_bits}")
    if not 1 <= a_bits <= MAX_PLANES:
        raise ValueError(f"a_bits (bit-planes per vector) must be from 1 to {MAX_PLANES}, "
                         f"not {a_bits}")
    if adc_bits is not None:
        _check_int("adc_bits", adc_bits)
        # A clipping ADC with as many bits as the count itself clips nothing: ask for None.
        full = rows.bit_length()
        if not 1 <= adc_bits < full:
            raise ValueError(f"adc_bits must be None (ideal) or from 1 to {full - 1} for "
                             f"{rows} rows, not {adc_bits}")
    # Rows are stored in pairs (with their precomputed sum), so a beat writes whole pairs.
    if not (_is_pow2(write_rows) and 2 <= write_rows <= rows):
        raise ValueError(f"write_rows must be a power of two from 2 to rows ({rows}), "
                         f"not {write_rows}")
    if not isinstance(double_buffer, bool):
        raise ValueError(f"double_buffer must be a bool, not {double_buffer!r}")


@dataclass(frozen=True)
class HwConfig:
    """One hardware configuration of the accelerator.

    Parameters
    ----------
    name : str
        Identifier used on command lines and in generated files.
    rows, cols : int
        Rows (dot-product length) and columns (outputs) of one CIM macro.
    w_bits : int
        Weight bits: 1 (binary +-1), 2, 4 or 8 (two's complement).
    a_bits : int
        Activation bits (unsigned), streamed one bit-plane per cycle.
    macros : int
        Number of CIM macros working in parallel.
    adc_bits : int or None
        Partial-sum ADC model of every macro (see :class:`~gateware.cim_macro.CIMMacro`);
        ``None`` is an ideal (exact) macro.
    write_rows : int
        Weight rows one write-port beat loads into a macro.
    double_buffer : bool
        Whether each macro holds a shadow copy of its weights, so the next tile loads while
        the current one computes.
    acc_width : int
        Accumulator width of the datapath (bits per output-channel partial sum).
    bank_words : int
        Words per activation-buffer bank (two banks; one word = one pixel's channel group).
    prog_words, weight_words, param_words : int
        Depths, in 32-bit words, of the layer-program, weight and parameter memories. The weight
        store is a bank per macro; it holds :attr:`weight_rows` rows of one tile per bank, as
        many as fit ``weight_words`` (the bus window's size).
    max_size, max_groups, max_pixels : int
        Largest input height/width, input channel-group count and output pixel count of a
        layer the sequencer accepts.
    max_planes : int or None
        Most bit-planes the macros take per pixel (``a_bits`` to 16; ``None``: ``a_bits``):
        the macros are built for that many (their results are that much wider). A layer
        feeds as many bit-planes as its input has bits (``in_bits``, 1 to 8, fewer or more
        than ``a_bits``; an input wider than ``a_bits`` is stored as ``ceil(bits / a_bits)``
        slice words per pixel and channel group), plus ``w_bits`` when its weights are wider
        than the array's (two digits, :mod:`contract.program`). The limit is
        :attr:`planes_max`.
    image_channels, image_size, im2col_kernel : int
        The image buffer (``image_channels`` 0: none). It holds two images (slots) of up to
        ``image_channels`` channels of ``image_size x image_size`` 8-bit pixels, written over
        the bus in whole words, one slot while the accelerator reads the other; an im2col
        layer (``contract.program``, ``op`` 2) reads one and writes the first convolution's
        input as ``image_channels * im2col_kernel ** 2`` lanes per pixel, so that the
        convolution runs as a 1 x 1 convolution on the macros (kernels up to
        ``im2col_kernel``). ``image_size`` is a multiple of 4 (a row is whole bus words).
    """

    name: str
    rows: int
    cols: int
    w_bits: int
    a_bits: int
    macros: int
    adc_bits: int | None = None
    write_rows: int = 2
    double_buffer: bool = True
    acc_width: int = 24
    bank_words: int = 4096
    prog_words: int = 256
    weight_words: int = 1 << 14
    param_words: int = 1 << 12
    max_size: int = 64
    max_groups: int = 16
    max_pixels: int = 1024
    max_planes: int | None = None
    image_channels: int = 0
    image_size: int = 32
    im2col_kernel: int = 7
    cal_rows: int = 0
    cal_step: int = 64
    offset_sigma: int = 0
    offset_seed: int = 0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name must be an identifier, not {self.name!r}")
        _check_int("a_bits", self.a_bits)
        if self.a_bits not in A_BITS:
            raise ValueError(f"a_bits must be one of {', '.join(map(str, A_BITS))}, "
                             f"not {self.a_bits}")
        check_macro_params(**self.macro_params())
        _check_int("macros", self.macros)
        if not 1 <= self.macros <= MAX_MACROS:
            raise ValueError(f"macros must be from 1 to {MAX_MACROS}, not {self.macros}")
        _check_int("acc_width", self.acc_width)
        if not 8 <= self.acc_width <= 48:
            raise ValueError(f"acc_width must be from 8 to 48, not {self.acc_width}")
        for name in MEMORY_FIELDS:
            value = getattr(self, name)
            _check_int(name, value)
            if not (_is_pow2(value) and value >= 2):
                raise ValueError(f"{name} must be a power of two of at least 2, not {value}")
        if self.weight_rows < 1:
            raise ValueError(f"weight_words ({self.weight_words}) must hold a weight row: "
                             f"{self.macros} tiles (one per macro) of {self.tile_words} words")
        for name in ("max_size", "max_groups", "max_pixels"):
            _check_int(name, getattr(self, name))
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_planes is not None:
            _check_int("max_planes", self.max_planes)
            if not self.a_bits <= self.max_planes <= MAX_PLANES:
                raise ValueError(f"max_planes must be None or from a_bits ({self.a_bits}) to "
                                 f"{MAX_PLANES}, not {self.max_planes}")
        for name in ("image_channels", "image_size", "im2col_kernel"):
            _check_int(name, getattr(self, name))
        if not 0 <= self.image_channels <= MAX_IMAGE_CHANNELS:
            raise ValueError(f"image_channels must be from 0 (no image buffer) to "
                             f"{MAX_IMAGE_CHANNELS}, not {self.image_channels}")
        top = min(self.max_size, 256) if self.image_channels else 256
        if not (4 <= self.image_size <= top and self.image_size % 4 == 0):
            raise ValueError(f"image_size must be a multiple of 4 from 4 to {top}"
                             + (" (max_size)" if self.image_channels else "")
                             + f", not {self.image_size}")
        if self.im2col_kernel not in (1, 3, 5, 7):
            raise ValueError(f"im2col_kernel must be 1, 3, 5 or 7, not {self.im2col_kernel}")
        if self.image_channels and self.image_groups > self.max_groups:
            raise ValueError(f"an im2col layer writes image_channels * im2col_kernel**2 = "
                             f"{self.image_lanes} lanes per pixel, {self.image_groups} groups of "
                             f"{self.rows} rows: more than max_groups={self.max_groups}")

        self._check_calibration()

    def _check_calibration(self):
        for name in ("cal_rows", "cal_step", "offset_sigma", "offset_seed"):
            _check_int(name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
        if not self.cal_rows:
            if self.offset_sigma:
                raise ValueError("offset_sigma models a device's ADC offsets, which the "
                                 "accelerator holds with its calibration rows: set cal_rows "
                                 "(e.g. cal_rows=8) or offset_sigma=0")
            return
        if self.adc_bits is None:
            raise ValueError("calibration rows (cal_rows) bias a partial-sum ADC: set adc_bits")
        if not 1 <= self.cal_step < 1 << (OFFSET_WIDTH - 1):
            raise ValueError(f"cal_step must be from 1 to {(1 << (OFFSET_WIDTH - 1)) - 1} "
                             f"(units of 2**-{OFFSET_FRAC_BITS} LSB), not {self.cal_step}")
        CalibrationRows(rows=self.cal_rows, step=self.cal_step / (1 << OFFSET_FRAC_BITS))
        bits = self.cols * self.w_bits
        if bits > 32 and (bits % 32 or not _is_pow2(bits // 32)):
            raise ValueError(f"a calibration row of a macro (cols * w_bits = {bits} bits) must "
                             f"be fewer than 32 bits or a power of two of 32-bit bus words")
        offsets = self.adc_offsets
        top = 1 << (OFFSET_WIDTH - 1)
        if offsets is not None and not (-top <= offsets.values.min()
                                        and offsets.values.max() < top):
            raise ValueError(f"offset_sigma={self.offset_sigma} draws offsets beyond the "
                             f"accelerator's {OFFSET_WIDTH}-bit offset registers "
                             f"(+-{top >> OFFSET_FRAC_BITS} LSB): use a smaller spread")

    @property
    def calibration(self) -> CalibrationRows | None:
        """The macros' calibration rows, or None (``cal_rows`` 0)."""
        if not self.cal_rows:
            return None
        return CalibrationRows(rows=self.cal_rows, step=self.cal_step / (1 << OFFSET_FRAC_BITS))

    @property
    def adc_offsets(self) -> AdcOffsets | None:
        """The emulated device's analog offsets ``(macros, cols, w_bits)`` (all 0 with
        ``offset_sigma`` 0), or None without calibration rows."""
        if not self.cal_rows:
            return None
        return AdcOffsets.gaussian(sigma=self.offset_sigma / (1 << OFFSET_FRAC_BITS),
                                   macros=self.macros, cols=self.cols, w_bits=self.w_bits,
                                   seed=self.offset_seed)

    @property
    def cal_row_words(self) -> int:
        """32-bit bus words of one calibration row of one macro (``cols * w_bits`` bits)."""
        return -(-self.cols * self.w_bits // 32)

    def macro_params(self) -> dict:
        """Keyword arguments for :class:`~gateware.cim_macro.CIMMacro` (whose ``a_bits`` is the
        most bit-planes of a vector: :attr:`planes_max`)."""
        d = asdict(self)
        return {**{k: d[k] for k in ("rows", "cols", "w_bits", "adc_bits", "write_rows",
                                     "double_buffer")}, "a_bits": self.planes_max}

    @property
    def sequencer_problem(self) -> str | None:
        """Why no layer sequencer can be built for this configuration, or None. Such a
        configuration still compiles (the functional model and the macro studies use it)."""
        if not self.double_buffer:
            return "The sequencer needs double-buffered macros (double_buffer=True)"
        if self.rows % self.cols:
            return f"Columns ({self.cols}) must divide rows ({self.rows})"
        return None

    @property
    def planes_max(self) -> int:
        """Most bit-planes fed per pixel: ``max_planes`` or ``a_bits``."""
        return self.a_bits if self.max_planes is None else self.max_planes

    @property
    def in_bits_max(self) -> int:
        """Most bits a layer's input may have (at most 8: activations are bytes)."""
        return min(8, self.planes_max)

    @property
    def w_bits_max(self) -> int:
        """Most weight bits of a layer: twice the array's (two digits: wide weights), or the
        array's own when it is binary (a 1-bit digit cannot store the offset digit)."""
        return 1 if self.w_bits == 1 else 2 * self.w_bits

    @property
    def image_lanes(self) -> int:
        """Lanes per pixel an im2col layer writes: ``image_channels * im2col_kernel ** 2``."""
        return self.image_channels * self.im2col_kernel ** 2

    @property
    def image_groups(self) -> int:
        """Channel groups of an im2col layer's output (at most)."""
        return -(-self.image_lanes // self.rows)

    @property
    def image_slot_rows(self) -> int:
        """Image-buffer rows (of ``image_size`` bytes) per slot: ``image_channels *
        image_size`` rounded up to a power of two (a slot's rows start at ``slot *
        image_slot_rows``; channel ``c``, row ``y`` is row ``c * image_size + y``)."""
        return 1 << max(0, (self.image_channels * self.image_size - 1).bit_length())

    @property
    def peak_macs_per_cycle(self) -> int:
        """Multiply-accumulates per cycle of all macros together, bit-serial over a_bits."""
        return self.macros * self.rows * self.cols // self.a_bits

    @property
    def weights_per_macro(self) -> int:
        return self.rows * self.cols

    @property
    def tile_words(self) -> int:
        """32-bit words of one weight tile: ``write_cycles`` beats of ``ceil(write_rows * cols *
        w_bits / 32)`` words (:mod:`contract.program`)."""
        return self.write_cycles * -(-self.write_rows * self.cols * self.w_bits // 32)

    @property
    def weight_rows(self) -> int:
        """Weight rows the weight store holds: one tile in each macro's bank per row, as many
        rows as fit ``weight_words`` (:mod:`contract.program`, weight image)."""
        return max(self.weight_words, self.tile_words) // self.tile_words // self.macros

    @property
    def weight_store_words(self) -> int:
        """32-bit words the weight store holds: :attr:`weight_rows` rows of ``macros`` tiles
        (at most ``weight_words``)."""
        return self.weight_rows * self.macros * self.tile_words

    @property
    def write_cycles(self) -> int:
        """Cycles to load one macro's weights through its write port."""
        return self.rows // self.write_rows


CONFIGS: dict[str, HwConfig] = {
    # See the module docstring for why these numbers.
    "tiny": HwConfig(name="tiny", rows=16, cols=8, w_bits=4, a_bits=4, macros=2),
    "default": HwConfig(name="default", rows=64, cols=64, w_bits=4, a_bits=4, macros=18,
                        write_rows=4, bank_words=2048, prog_words=1024, weight_words=1 << 20,
                        param_words=1 << 14, max_planes=12, image_channels=3),
    "large": HwConfig(name="large", rows=64, cols=64, w_bits=4, a_bits=4, macros=45,
                      write_rows=8, bank_words=2048, prog_words=1024, weight_words=1 << 20,
                      param_words=1 << 14, max_planes=12, image_channels=3),
}


def get_config(name: str) -> HwConfig:
    """The named configuration, or a named one with fields changed: ``"tiny:a_bits=2,w_bits=1"``
    (``adc_bits=none`` for an ideal macro, ``max_planes=none`` for ``a_bits``;
    ``double_buffer=true|false``), named ``tiny_a_bits2_w_bits1``. :class:`ValueError` lists
    the valid names, or names the bad field or value, otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"a configuration name must be a string, not {name!r}")
    base, _, changes = name.partition(":")
    if base not in CONFIGS:
        raise ValueError(f"unknown hardware configuration {base!r}; valid names: "
                         f"{', '.join(sorted(CONFIGS))} (optionally with changed fields: "
                         f"'tiny:a_bits=2,macros=4')")
    if not changes:
        return CONFIGS[base]
    fields_ = {f for f in asdict(CONFIGS[base]) if f != "name"}
    values, suffix = {}, []
    for item in changes.split(","):
        key, eq, text = (part.strip() for part in item.partition("="))
        if key not in fields_ or not eq or not text:
            raise ValueError(f"configuration {name!r}: {item!r} is not FIELD=VALUE with a field "
                             f"of {', '.join(sorted(fields_))}")
        if key == "double_buffer" and text.lower() in ("true", "false", "1", "0"):
            value = text.lower() in ("true", "1")
        elif key in ("adc_bits", "max_planes") and text.lower() == "none":
            value = None
        else:
            try:
                value = int(text, 0)
            except ValueError:
                raise ValueError(f"configuration {name!r}: {key}={text!r} is not an integer"
                                 ) from None
        values[key] = value
        suffix.append(f"{key}{str(value).lower()}")
    try:
        return HwConfig(**{**asdict(CONFIGS[base]), **values, "name": "_".join([base, *suffix])})
    except ValueError as e:
        raise ValueError(f"configuration {name!r}: {e}") from None
