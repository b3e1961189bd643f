"""The accelerator as firmware sees it, over the bench's AHB master.

:class:`CimBus` does what the Cortex-M4 driver does, with the offsets of
:mod:`gateware.regmap` and the memory layouts of :mod:`compiler`: registers by name,
loading a compiled :class:`~compiler.Program` (layer program, weight image, parameter
image), writing and reading activation tensors in the buffer layout
(:func:`compiler.write_tensor` / :func:`~compiler.read_tensor`, one buffer word
as ``ACT_SLICES`` 32-bit slices), starting a run and waiting for its end by interrupt or by
polling ``STATUS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import compiler
from contract.config import get_config
from gateware.regmap import RegMap, register_map

from .ahb import AhbResponseError
from .regmodel import Scoreboard, SlaveModel
from .testbench import Env, start, target

__all__ = ["CimBus", "Device", "setup_device"]


class CimBus:
    def __init__(self, env: Env, regmap: RegMap, *, base: int = 0):
        self.env = env
        self.rm = regmap
        self.base = base
        cfg = regmap.config
        self.rows, self.a_bits = cfg.rows, cfg.a_bits
        self.slices = regmap.act_slices

    # ------------------------------------------------------------ registers
    def reg_addr(self, name: str) -> int:
        return self.base + self.rm.register(name).offset

    def win_addr(self, name: str, byte_offset: int = 0) -> int:
        return self.base + self.rm.window(name).offset + byte_offset

    async def read(self, name: str) -> int:
        op = await self.env.master.read(self.reg_addr(name))
        if op.resp:
            raise AhbResponseError(f"read of {name} got ERROR")
        return op.rdata

    async def write(self, name: str, value: int) -> None:
        if await self.env.master.write(self.reg_addr(name), value):
            raise AhbResponseError(f"write of {name} got ERROR")

    def field(self, reg: str, field: str, value: int) -> int:
        f = self.rm.register(reg).field(field)
        return (value >> f.pos) & ((1 << f.width) - 1)

    def bits(self, reg: str, **fields) -> int:
        r = self.rm.register(reg)
        return sum(v << r.field(k).pos for k, v in fields.items())

    # ------------------------------------------------------------ memories
    async def load(self, program: compiler.Program) -> int:
        """Write the program, weight and parameter images; returns the words written."""
        n = 0
        for win, words in (("PROG", program.program_words()), ("WEIGHT", program.weight_image),
                           ("PARAM", program.param_image)):
            await self.env.master.write_words(self.win_addr(win), [int(w) for w in words])
            n += len(words)
        return n

    def _slices_of(self, word: int) -> list[int]:
        return [(word >> (32 * s)) & 0xFFFF_FFFF for s in range(self.slices)]

    async def write_words(self, base: int, words) -> None:
        """Buffer words (``rows * a_bits``-bit integers) from buffer address ``base``."""
        data = [s for w in words for s in self._slices_of(int(w))]
        await self.env.master.write_words(self.win_addr("ACT", base * self.slices * 4), data)

    async def read_words(self, base: int, count: int) -> list[int]:
        data = await self.env.master.read_words(self.win_addr("ACT", base * self.slices * 4),
                                                count * self.slices)
        return [sum(d << (32 * s) for s, d in enumerate(data[i:i + self.slices]))
                for i in range(0, len(data), self.slices)]

    def tensor_words(self, alloc: compiler.Alloc, x: np.ndarray) -> list[int]:
        """The buffer words of tensor ``x`` (C, H, W) stored as ``alloc`` says."""
        mem = np.zeros((1, alloc.base + alloc.words, self.rows), np.int64)
        compiler.write_tensor(mem, alloc.base, np.asarray(x, np.int64)[None], alloc.bits,
                              self.a_bits)
        lanes = mem[0, alloc.base:]
        shifts = [self.a_bits * r for r in range(self.rows)]
        return [sum(int(v) << s for v, s in zip(word, shifts)) for word in lanes]

    async def write_tensor(self, alloc: compiler.Alloc, x: np.ndarray) -> None:
        await self.write_words(alloc.base, self.tensor_words(alloc, x))

    async def read_tensor(self, alloc: compiler.Alloc) -> np.ndarray:
        """Tensor (C, H, W) int64 read back from the buffer."""
        words = await self.read_words(alloc.base, alloc.words)
        mem = np.zeros((1, alloc.base + alloc.words, self.rows), np.int64)
        mask = (1 << self.a_bits) - 1
        for i, w in enumerate(words):
            mem[0, alloc.base + i] = [(w >> (self.a_bits * r)) & mask for r in range(self.rows)]
        return compiler.read_tensor(mem, alloc.base, alloc.shape, alloc.bits, alloc.signed,
                                    self.a_bits)[0]

    def image_words(self, image: np.ndarray, slot: int) -> list[tuple[int, list[int]]]:
        """``(byte offset in the IMAGE window, 32-bit words)`` runs of image ``(C, H, W)`` in
        ``slot``: channel ``c``, row ``y`` at row ``slot * image_slot_rows + c * image_size
        + y`` of ``image_size`` bytes (``contract.config``), pixel ``x`` at byte ``x``."""
        cfg = self.rm.config
        size = cfg.image_size
        x = np.asarray(image, np.uint8)
        c, h, w = x.shape
        rows = np.zeros((c, h, -(-w // 4) * 4), np.uint8)
        rows[:, :, :w] = x
        words = rows.view("<u4")
        return [((slot * cfg.image_slot_rows + ch * size + y) * size,
                 [int(v) for v in words[ch, y]]) for ch in range(c) for y in range(h)]

    async def write_image(self, image: np.ndarray, slot: int) -> int:
        """Write image ``(C, H, W)`` into image-buffer slot ``slot``; returns the words."""
        n = 0
        for offset, words in self.image_words(image, slot):
            await self.env.master.write_words(self.win_addr("IMAGE", offset), words)
            n += len(words)
        return n

    async def read_logits(self, count: int) -> np.ndarray:
        """The first ``count`` logits of the LOGITS window, signed."""
        data = await self.env.master.read_words(self.win_addr("LOGITS"), count)
        return np.array([d - (1 << 32) if d >> 31 else d for d in data], np.int64)

    # ------------------------------------------------------------ running
    async def start(self) -> None:
        await self.write("CTRL", self.bits("CTRL", START=1))

    async def wait_done(self, *, irq: bool, max_cycles: int) -> int:
        """Wait for the end of a run, on the IRQ line (``IRQ_ENABLE`` must be set) or by
        polling ``STATUS.DONE``; returns the cycles waited (polling: about)."""
        if irq:
            return await self.env.wait_for(self.env.dut.IRQ, max_cycles=max_cycles,
                                           what="IRQ after START")
        polls = 0
        cycles_before = self.env.master.cycles
        while not self.field("STATUS", "DONE", await self.read("STATUS")):
            polls += 1
            self.env.check(self.env.master.cycles - cycles_before < max_cycles,
                           f"STATUS.DONE not set within {max_cycles} cycles")
        return self.env.master.cycles - cycles_before


@dataclass
class Device:
    """A bench's view of the accelerator: the bus agents, the firmware-like access, the
    register model and the scoreboard that holds every transfer against it."""

    env: Env
    bus: CimBus
    model: SlaveModel
    scoreboard: Scoreboard
    regmap: RegMap


async def setup_device(dut, name: str, **options) -> Device:
    """:func:`~sim.testbench.start` plus the accelerator's register map (of the target
    configuration), model and scoreboard."""
    env = await start(dut, name, **options)
    rm = register_map(get_config(target()))
    model = SlaveModel(rm)
    board = Scoreboard(model, lambda msg: env.check(False, msg))
    env.monitor.subscribe("dut", board)
    return Device(env=env, bus=CimBus(env, rm), model=model, scoreboard=board, regmap=rm)
