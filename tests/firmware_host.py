"""Host harness for the firmware: the C driver and kernels built for this machine (``make -C
firmware host``), loaded with ctypes, and a register-level model of the accelerator behind
the driver's callback HAL.

:class:`FakeAccelerator` answers the registers of :func:`gateware.regmap.register_map` and
keeps the four memory windows. On ``CTRL.START`` it decodes the layer program the driver
wrote, reads the input tensor the driver packed into the activation window, runs
:func:`compiler.execute` on the images the driver wrote and stores every layer's
output back in the window, as the hardware leaves it. It can also stop with an error code,
never finish, or raise the interrupt through a callback. Every access is also put to the bus
slave's rules (:class:`sim.regmodel.SlaveModel`); one the slave would answer with ERROR is
recorded in :attr:`FakeAccelerator.errors` (an exception would not cross the C callback).
"""

from __future__ import annotations

import ctypes as C
import shutil
import subprocess
from pathlib import Path

import numpy as np

import compiler
from contract import program as fmt
from contract.config import HwConfig
from gateware.regmap import register_map
from sim.regmodel import OKAY, SlaveModel

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

U32 = C.c_uint32
READ32 = C.CFUNCTYPE(U32, C.c_void_p, U32)
WRITE32 = C.CFUNCTYPE(None, C.c_void_p, U32, U32)
BLOCK = C.CFUNCTYPE(None, C.c_void_p, U32, C.POINTER(U32), U32)
STAGE = C.CFUNCTYPE(None, C.c_void_p, U32)

STATUS = ("OK", "ERR_ARG", "ERR_BLOB_MAGIC", "ERR_BLOB_VERSION", "ERR_BLOB_SIZE",
          "ERR_BLOB_CRC", "ERR_BLOB_FORMAT", "ERR_NO_DEVICE", "ERR_HW_VERSION",
          "ERR_HW_CONFIG", "ERR_STATE", "ERR_WORKSPACE", "ERR_BUSY", "ERR_TIMEOUT", "ERR_HW")
"""cim_status_t by value (firmware/include/cim_status.h)."""

HW_FIELDS = ("version", "rows", "cols", "w_bits", "a_bits", "adc_bits", "acc_width", "macros",
             "write_rows", "double_buffer", "prog_words", "weight_words", "param_words",
             "bank_words", "max_size", "max_groups", "max_pixels", "desc_words",
             "param_record_words", "act_slices", "image_channels", "image_size",
             "im2col_kernel", "image_slot_rows", "prog_window", "param_window", "act_window",
             "weight_window", "image_window", "logits_window", "cal_rows", "cal_row_words",
             "cal_step", "cal_window", "cmp_window")


class Hal(C.Structure):
    _fields_ = [("ctx", C.c_void_p), ("read32", READ32), ("write32", WRITE32),
                ("read_block", BLOCK), ("write_block", BLOCK)]


class HwInfo(C.Structure):
    _fields_ = [(n, U32) for n in HW_FIELDS]


class CalResult(C.Structure):
    _fields_ = [(n, U32) for n in ("evaluations", "row_writes", "words_written", "words_read",
                                   "out_of_range")]


class Model(C.Structure):
    _fields_ = [("base", C.c_void_p), ("hdr", C.c_void_p), ("ops", C.c_void_p)]


class Dev(C.Structure):
    _fields_ = [("hal", Hal), ("hw", HwInfo), ("model", C.c_void_p), ("hw_error", U32),
                ("cycles", U32), ("irq_events", U32)]


class Net(C.Structure):
    _fields_ = [("dev", C.POINTER(Dev)), ("model", C.POINTER(Model)), ("ws", C.c_void_p),
                ("wait", C.c_int), ("timeout_polls", U32), ("stage", STAGE),
                ("stage_ctx", C.c_void_p), ("slot", U32), ("staged", C.c_void_p),
                ("result_class", U32)]


def build_library(build_dir: Path, config: str) -> C.CDLL:
    """``make -C firmware host`` for hardware configuration ``config`` into ``build_dir``;
    the loaded library with prototypes."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise FileNotFoundError("make and gcc are needed to build the firmware for the host")
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), "host", f"BUILD={build_dir}",
                    f"CONFIG={config}"], check=True, capture_output=True, text=True)
    lib = C.CDLL(str(build_dir / "host" / "libcimfw.so"))
    P = C.POINTER
    protos = {
        "cim_model_open": (C.c_int, [P(Model), C.c_void_p, U32]),
        "cim_init": (C.c_int, [P(Dev), P(Hal)]),
        "cim_check_model": (C.c_int, [P(Dev), P(Model)]),
        "cim_load_model": (C.c_int, [P(Dev), P(Model)]),
        "cim_start": (C.c_int, [P(Dev)]),
        "cim_wait": (C.c_int, [P(Dev), C.c_int, U32]),
        "cim_irq_enable": (C.c_int, [P(Dev), C.c_int]),
        "cim_irq_handler": (None, [P(Dev)]),
        "cim_net_init": (C.c_int, [P(Net), P(Dev), P(Model), C.c_void_p, U32]),
        "cim_net_op": (C.c_int, [P(Net), U32, C.c_void_p, C.c_void_p]),
        "cim_net_run": (C.c_int, [P(Net), C.c_void_p, P(U32)]),
        "cim_net_run_next": (C.c_int, [P(Net), C.c_void_p, C.c_void_p, P(U32)]),
        "cim_net_logits": (P(C.c_int64), [P(Net)]),
        "cim_status_name": (C.c_char_p, [C.c_int]),
        "cim_crc32": (U32, [U32, C.c_void_p, U32]),
        "cim_calibrate": (C.c_int, [P(Dev), P(C.c_uint16), U32, C.c_int, P(CalResult)]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def status(code: int) -> str:
    return STATUS[code] if 0 <= code < len(STATUS) else f"<{code}>"


class Buffer:
    """Bytes at a given alignment that C can point at (kept alive by this object)."""

    def __init__(self, data: bytes | int, align: int = 8):
        n = data if isinstance(data, int) else len(data)
        self._raw = C.create_string_buffer(n + align)
        self.addr = -(-C.addressof(self._raw) // align) * align
        if not isinstance(data, int):
            C.memmove(self.addr, data, n)
        self.size = n

    def array(self, dtype, offset: int, count: int) -> np.ndarray:
        """A NumPy view of ``count`` elements at ``offset`` bytes."""
        t = np.dtype(dtype)
        buf = (C.c_char * (count * t.itemsize)).from_address(self.addr + offset)
        return np.frombuffer(buf, dtype=t, count=count)


# ----------------------------------------------------------------------------- activation words


def bus_to_lanes(bus: np.ndarray, rows: int, a_bits: int, slices: int) -> np.ndarray:
    """Activation window words -> ``(words, rows)`` lane values."""
    b = np.asarray(bus, dtype=np.int64).reshape(-1, slices)
    per = 32 // a_bits
    lane = np.arange(rows)
    return (b[:, lane // per] >> ((lane % per) * a_bits)) & ((1 << a_bits) - 1)


def lanes_to_bus(lanes: np.ndarray, a_bits: int, slices: int) -> np.ndarray:
    words, rows = lanes.shape
    per = 32 // a_bits
    out = np.zeros((words, slices), np.int64)
    for lane in range(rows):
        out[:, lane // per] |= lanes[:, lane] << ((lane % per) * a_bits)
    return out.reshape(-1).astype(np.uint32)


# ----------------------------------------------------------------------------- the fake


class FakeAccelerator:
    """The accelerator as the driver sees it (module docstring). ``hang``: START never
    finishes; ``error_code``: START stops at once with this code; ``magic`` / ``version``
    override the identification registers."""

    def __init__(self, config: HwConfig, *, hang=False, error_code=0, magic=None,
                 version=None):
        self.config = config
        self.map = register_map(config)
        self.hang, self.error_code = hang, error_code
        self.regs = {r.offset: r.reset for r in self.map.registers}
        if magic is not None:
            self.regs[self.map.register("MAGIC").offset] = magic
        if version is not None:
            self.regs[self.map.register("VERSION").offset] = version
        self.mem = {w.name: np.zeros(w.size // 4, np.uint32) for w in self.map.windows}
        self.slave = SlaveModel(self.map)
        self.errors: list[str] = []
        self.reads: dict[str, int] = {}
        self.writes: dict[str, int] = {}
        self.starts = 0
        self.on_irq = None
        self._keep = []

    # ---- registers
    def _reg(self, name):
        return self.map.register(name)

    def _set(self, name, **fields):
        r = self._reg(name)
        v = self.regs[r.offset]
        for f, x in fields.items():
            fl = r.field(f)
            v = (v & ~fl.mask) | (x << fl.pos)
        self.regs[r.offset] = v

    def _get(self, name, field):
        r = self._reg(name)
        f = r.field(field)
        return (self.regs[r.offset] & f.mask) >> f.pos

    def _access(self, offset, write, words=1):
        """(name, word index in the window or None) of a legal access; records an illegal
        one."""
        for off in sorted({offset, offset + 4 * (words - 1)}):
            if self.slave.response(off, write, 2) != OKAY:
                self.errors.append(f"{'write' if write else 'read'} at {off:#x} "
                                   f"({self.slave.describe(off)}): the slave answers ERROR")
        d = self.slave.decode(offset)
        if d.window is not None:
            return d.window.name, (d.offset - d.window.offset) // 4
        return (d.register.name if d.register else None), None

    def read32(self, offset):
        name, idx = self._access(offset, False)
        self.reads[name] = self.reads.get(name, 0) + 1
        if idx is not None:
            return int(self.mem[name][idx])
        return self.regs.get(offset, 0)

    def write32(self, offset, value):
        name, idx = self._access(offset, True)
        self.writes[name] = self.writes.get(name, 0) + 1
        if idx is not None:
            self.mem[name][idx] = value
        elif name == "IRQ_STATUS":
            self.regs[offset] &= ~value
        elif name == "CTRL":
            if value & self._reg("CTRL").field("START").mask:
                self.start()
            if value & self._reg("CTRL").field("CAL_EVAL").mask:
                self.cal_eval()
        elif name is not None:
            self.regs[offset] = value & self._reg(name).mask

    def read_block(self, offset, words):
        name, idx = self._access(offset, False, words)
        self.reads[name] = self.reads.get(name, 0) + words
        return self.mem[name][idx:idx + words].copy()

    def write_block(self, offset, data):
        name, idx = self._access(offset, True, len(data))
        self.writes[name] = self.writes.get(name, 0) + len(data)
        self.mem[name][idx:idx + len(data)] = data

    def hal(self) -> Hal:
        def rd(_, off):
            return self.read32(off)

        def wr(_, off, v):
            self.write32(off, v)

        def rblk(_, off, dst, n):
            C.memmove(dst, self.read_block(off, n).ctypes.data, 4 * n)

        def wblk(_, off, src, n):
            self.write_block(off, np.ctypeslib.as_array(src, (n,)).copy())

        cbs = (READ32(rd), WRITE32(wr), BLOCK(rblk), BLOCK(wblk))
        self._keep.append(cbs)
        return Hal(None, *cbs)

    # ---- calibration rows
    def cal_cells(self) -> np.ndarray:
        """The calibration cells the driver wrote, bool ``(macros, rows, cols * w_bits)``."""
        cfg = self.config
        words = self.mem["CAL"][:cfg.macros * cfg.cal_rows * cfg.cal_row_words]
        bits = np.unpackbits(words.astype("<u4").view(np.uint8), bitorder="little")
        bits = bits.reshape(cfg.macros, cfg.cal_rows, 32 * cfg.cal_row_words)
        return bits[:, :, :cfg.cols * cfg.w_bits].astype(bool)

    def cal_device(self):
        """The device model (``model.calibration.OffsetArray`` of the configuration's
        offsets) holding the cells the driver wrote."""
        from model.calibration import OffsetArray

        cfg = self.config
        array = OffsetArray(cfg.adc_offsets, cfg.calibration)
        cells = self.cal_cells()
        for m in range(cfg.macros):
            for r in range(cfg.cal_rows):
                array.write_row(m, r, cells[m, r].reshape(cfg.cols, cfg.w_bits))
        return array

    def cal_eval(self):
        """CTRL.CAL_EVAL: every bit-column's comparator into the CMP window (no effect
        without calibration rows)."""
        cfg = self.config
        if not cfg.cal_rows:
            return
        high = self.cal_device().compare().reshape(cfg.macros, -1)
        pad = np.zeros((cfg.macros, 32 * cfg.cal_row_words), np.uint8)
        pad[:, :high.shape[1]] = high
        words = np.packbits(pad, bitorder="little").view("<u4")
        self.mem["CMP"][:len(words)] = words
        self.cal_evals = getattr(self, "cal_evals", 0) + 1

    # ---- running
    def descriptors(self) -> list[fmt.Descriptor]:
        dw = fmt.DESC_WORDS
        prog, out = self.mem["PROG"], []
        for i in range(len(prog) // dw):
            d = fmt.Descriptor.unpack(prog[i * dw:(i + 1) * dw])
            out.append(d)
            if d.last:
                return out
        raise AssertionError("the program has no last descriptor")

    def start(self):
        self.starts += 1
        self._set("STATUS", DONE=0, ERROR=0, ERROR_CODE=0, BUSY=1)
        self.slave.busy = True
        if self.hang:
            return
        if self.error_code:
            self._finish(error=True)
            return
        cfg = self.config
        R, ab, S = cfg.rows, cfg.a_bits, self.map.act_slices
        descs = self.descriptors()
        mem = bus_to_lanes(self.mem["ACT"], R, ab, S)[None]
        d0 = descs[0]
        if d0.op == fmt.OP_IM2COL:
            self._run_image(descs, mem)
            return
        shape = (d0.in_channels, d0.in_height, d0.in_width)
        x = compiler.read_tensor(mem, d0.in_base, shape, ab, False, ab)
        names = [f"layer{i}" for i in range(len(descs))]
        bank = d0.in_base // cfg.bank_words
        prog = compiler.Program(
            config=cfg, names=names, descriptors=descs,
            weight_image=self.mem["WEIGHT"].copy(), param_image=self.mem["PARAM"].copy(),
            buffers={"in": compiler.Alloc(d0.in_base, 0, shape, ab, False, bank)},
            input_name="in", bank_words=cfg.bank_words, acc_width=cfg.acc_width)
        out = compiler.execute(prog, x)
        for name, d in zip(names, descs):
            compiler.write_tensor(mem, d.out_base, out[name], d.out_bits, ab)
        self.mem["ACT"][:] = lanes_to_bus(mem[0], ab, S)
        self._set("CYCLES_TOTAL", COUNT=1000 + len(descs))
        self._finish(error=False)

    def image(self, slot: int, shape) -> np.ndarray:
        """Image ``(C, H, W)`` of image-buffer ``slot`` as the driver wrote it."""
        cfg = self.config
        c, h, w = shape
        rows = self.mem["IMAGE"].view(np.uint8).reshape(-1, cfg.image_size)
        base = slot * cfg.image_slot_rows
        return np.stack([rows[base + ch * cfg.image_size:base + ch * cfg.image_size + h, :w]
                         for ch in range(c)]).astype(np.int64)

    def _run_image(self, descs, mem):
        """A program that starts with an im2col layer (the WHOLE partition): the image of
        the slot IMAGE_SLOT names, the layers on the buffer, the logits and the class of a
        raw last layer into LOGITS and RESULT."""
        cfg = self.config
        d0 = descs[0]
        image = self.image(self._get("IMAGE_SLOT", "SLOT"),
                           (d0.in_channels, d0.in_height, d0.in_width))
        names = [f"layer{i}" for i in range(len(descs))]
        prog = compiler.Program(
            config=cfg, names=names, descriptors=descs,
            weight_image=self.mem["WEIGHT"].copy(), param_image=self.mem["PARAM"].copy(),
            buffers={}, input_name="input", bank_words=cfg.bank_words,
            acc_width=cfg.acc_width, image=True)
        out = compiler.execute_memory(prog, mem, image=image[None])
        self.mem["ACT"][:] = lanes_to_bus(mem[0], cfg.a_bits, self.map.act_slices)
        self._set("RESULT", VALID=0, CLASS=0)
        if descs[-1].raw:
            logits = out[names[-1]][0]
            self.mem["LOGITS"][:len(logits)] = logits.astype(np.int64) & 0xFFFF_FFFF
            self._set("RESULT", VALID=1, CLASS=int(np.argmax(logits)))
        self._set("CYCLES_TOTAL", COUNT=1000 + len(descs))
        self._finish(error=False)

    def _finish(self, error):
        self._set("STATUS", BUSY=0, DONE=1, ERROR=int(error),
                  ERROR_CODE=self.error_code if error else 0)
        self.slave.busy = False
        self._set("IRQ_STATUS", DONE=1, ERROR=int(error))
        enabled = self.regs[self._reg("IRQ_ENABLE").offset]
        if self.on_irq and enabled & self.regs[self._reg("IRQ_STATUS").offset]:
            self.on_irq()
