"""Boards and the Vivado platform built from them.

A board is a TOML file under ``hw/boards/`` (data only: device, default package and speed
grade, the clock, an optional reset button, the device's capacity); :func:`load_board`
reads and validates one, :func:`board_names` lists them. :class:`BoardPlatform` is
Amaranth's :class:`~amaranth.vendor.XilinxPlatform` for a board: the board's clock becomes
the default clock (the platform adds the global buffer, the STARTUPE3 end-of-startup gate and
the clock constraint), and the Vivado additions go through the platform's override hooks
(:meth:`BoardPlatform.overrides`), not through edited templates.

Pin locations in the shipped board file are placeholders (see ``hw/boards/vu13p.toml``):
:attr:`Board.placeholder_pins` names them, and ``build.py`` does not start Vivado while there
are any.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from amaranth.build import Attrs, Clock, DiffPairs, Pins, PinsN, Resource
from amaranth.vendor import XilinxPlatform

__all__ = ["BOARDS_DIR", "Board", "BoardPlatform", "board_names", "load_board"]

BOARDS_DIR = Path(__file__).resolve().parent / "boards"

# A ball name of a Xilinx flip-chip BGA: one or two row letters and a column number.
_BALL = re.compile(r"^[A-Z]{1,2}[0-9]{1,2}$")
_CAPACITY = ("lut", "ff", "carry8", "dsp", "bram36", "uram")


def board_names() -> list[str]:
    """Names of the boards under :data:`BOARDS_DIR`."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


@dataclass(frozen=True)
class Board:
    """A board description (see ``hw/boards/vu13p.toml`` for every field)."""

    name: str
    description: str
    device: str
    package: str
    speed: str
    packages: tuple[str, ...]
    speeds: tuple[str, ...]
    clock_hz: float
    clock_pins: tuple[str, ...]
    clock_iostandard: str
    reset_pin: str | None
    reset_active_low: bool
    reset_iostandard: str | None
    capacity: dict
    capacity_source: str
    path: Path

    @property
    def part(self) -> str:
        """The Vivado part name, e.g. ``xcvu13p-flga2577-2-e``."""
        return f"{self.device}-{self.package}-{self.speed}"

    @property
    def placeholder_pins(self) -> list[str]:
        """Pin locations that are not ball names (placeholders to edit before a real build)."""
        pins = [*self.clock_pins, *([self.reset_pin] if self.reset_pin else [])]
        return [p for p in pins if not _BALL.match(p)]

    def with_part(self, *, package: str | None = None, speed: str | None = None) -> Board:
        """This board with another package or speed grade (one of :attr:`packages`,
        :attr:`speeds`, in any case); :class:`ValueError` lists the valid ones otherwise."""
        def pick(value, valid, what):
            for v in valid:
                if v.lower() == value.lower():
                    return v
            raise ValueError(f"unknown {what} {value!r} for {self.device}; valid: "
                             f"{', '.join(valid)}")
        package = pick(self.package if package is None else package, self.packages, "package")
        speed = pick(self.speed if speed is None else speed, self.speeds, "speed grade")
        return Board(**{**self.__dict__, "package": package, "speed": speed})


def _get(data: dict, key: str, kind, where: str):
    if key not in data:
        raise ValueError(f"{where}: missing {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
                 dict: "a table", (int, float): "a number"}
        raise ValueError(f"{where}: {key!r} must be {names.get(kind, kind)}, not {value!r}")
    return value


def _strings(data: dict, key: str, where: str) -> tuple[str, ...]:
    value = _get(data, key, list, where)
    if not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(value)


def load_board(name: str, *, boards_dir: Path = BOARDS_DIR) -> Board:
    """Read and validate ``<boards_dir>/<name>.toml``; :class:`ValueError` names the problem
    (or lists the valid board names)."""
    path = Path(boards_dir) / f"{name}.toml"
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name) and path.is_file()):
        names = sorted(p.stem for p in Path(boards_dir).glob("*.toml"))
        raise ValueError(f"unknown board {name!r}; valid boards: {', '.join(names)}")
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where}: not valid TOML ({e})") from None
    device = _get(data, "device", str, where).lower()
    if not device.startswith("xc"):
        raise ValueError(f"{where}: device must be a Xilinx part name (xc...), not {device!r}")
    packages = _strings(data, "packages", where)
    speeds = _strings(data, "speeds", where)
    clock = _get(data, "clock", dict, where)
    cwhere = f"{where} [clock]"
    hz = _get(clock, "frequency_hz", (int, float), cwhere)
    if not hz > 0:
        raise ValueError(f"{cwhere}: frequency_hz must be positive, not {hz}")
    pins = _strings(clock, "pins", cwhere)
    if len(pins) not in (1, 2):
        raise ValueError(f"{cwhere}: pins must be one pin (single-ended) or two (P, N)")
    reset = data.get("reset")
    if reset is not None:
        rwhere = f"{where} [reset]"
        reset = dict(pin=_get(reset, "pin", str, rwhere),
                     active_low=_get(reset, "active_low", bool, rwhere),
                     iostandard=_get(reset, "iostandard", str, rwhere))
    cap = _get(data, "capacity", dict, where)
    capacity = {k: _get(cap, k, int, f"{where} [capacity]") for k in _CAPACITY}
    board = Board(
        name=_get(data, "name", str, where), description=_get(data, "description", str, where),
        device=device, package=_get(data, "package", str, where),
        speed=_get(data, "speed", str, where), packages=packages, speeds=speeds,
        clock_hz=float(hz), clock_pins=pins,
        clock_iostandard=_get(clock, "iostandard", str, cwhere),
        reset_pin=reset and reset["pin"], reset_active_low=bool(reset and reset["active_low"]),
        reset_iostandard=reset and reset["iostandard"],
        capacity=capacity, capacity_source=_get(cap, "source", str, f"{where} [capacity]"),
        path=path)
    if board.name != name:
        raise ValueError(f"{where}: name is {board.name!r}, the file is {name!r}")
    return board.with_part()    # checks the default package and speed grade


class BoardPlatform(XilinxPlatform):
    """The Vivado platform of a :class:`Board`.

    Resources: ``clk`` (the board clock, the default clock) and, when the board has one,
    ``rst`` (the reset button, the default reset). Build with the keyword arguments of
    :meth:`overrides` (``platform.build(top, **platform.overrides(...))``).
    """

    # XilinxPlatform reads these as class attributes; __init__ sets them per board.
    device = package = speed = None
    resources: list = []
    connectors: list = []
    default_clk = "clk"
    default_rst = None

    def __init__(self, board: Board):
        if not isinstance(board, Board):
            raise ValueError(f"Board must be a Board, not {board!r}")
        self.board = board
        self.device, self.package, self.speed = board.device, board.package, board.speed
        if len(board.clock_pins) == 2:
            clk_io = DiffPairs(board.clock_pins[0], board.clock_pins[1], dir="i")
        else:
            clk_io = Pins(board.clock_pins[0], dir="i")
        self.resources = [Resource("clk", 0, clk_io, Clock(board.clock_hz),
                                   Attrs(IOSTANDARD=board.clock_iostandard))]
        if board.reset_pin:
            pins = (PinsN if board.reset_active_low else Pins)(board.reset_pin, dir="i")
            self.resources.append(Resource("rst", 0, pins,
                                           Attrs(IOSTANDARD=board.reset_iostandard)))
            self.default_rst = "rst"
        super().__init__(toolchain="Vivado")

    def overrides(self, *, script_after_read: str = "") -> dict:
        """Keyword arguments for :meth:`build`: what this project adds through the template's
        override hooks. ``script_after_read``: Tcl run after the sources are read (vendor IP
        generation). The bitstream is compressed (a full XCVU13P bitstream is large)."""
        return {
            "script_after_read": script_after_read,
            "add_constraints": "set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]",
        }
