"""The benches' model of the bus slave, without a simulator: it follows the register map, and
its scoreboard fails on wrong responses and wrong data."""

import pytest

from contract.config import CONFIGS
from gateware.regmap import REG_BLOCK, Access, register_map
from sim.ahb_checker import Observed
from sim.regmodel import ERROR, FREE_RUNNING, OKAY, Scoreboard, SlaveModel

pytestmark = pytest.mark.sim


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    return SlaveModel(register_map(CONFIGS[request.param]))


def obs(addr, write, resp, *, size=2, wdata=0, rdata=None, end=10):
    return Observed(addr=addr, write=write, size=size, burst=0, trans=2, resp=resp,
                    wdata=wdata, rdata=rdata, start=end - 1, end=end, waits=0)


def test_map_is_covered_exactly(model):
    """Registers, windows and the unmapped gaps tile the slave's space without overlap."""
    rm = model.rm
    pieces = sorted([(r.offset, r.offset + 4) for r in rm.registers]
                    + [(w.offset, w.end) for w in rm.windows] + model.unmapped_offsets())
    assert pieces[0][0] == 0 and pieces[-1][1] == rm.span
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    for r in rm.registers:
        assert model.decode(r.offset).register is r
        assert model.decode(r.offset + rm.span).register is r     # upper bits ignored
    for w in rm.windows:
        assert model.decode(w.offset).window is w and model.decode(w.end - 1).window is w
    for lo, hi in model.unmapped_offsets():
        assert model.response(lo, False, 2) == ERROR and model.response(hi - 4, True, 2) == ERROR


def test_responses_follow_access_and_sizes(model):
    for r in model.rm.registers:
        assert model.response(r.offset, False, 2) == (OKAY if r.access.readable else ERROR)
        assert model.response(r.offset, True, 2) == (OKAY if r.access.writable else ERROR)
        for size in (0, 1, 3):
            assert model.response(r.offset, False, size) == ERROR
        assert model.response(r.offset + 2, False, 2) == ERROR            # misaligned
    act = model.rm.window("ACT")
    for size in (0, 1, 2):
        assert model.response(act.offset + 4, True, size) == OKAY
    assert model.response(act.offset + 1, True, 1) == ERROR
    weight = model.rm.window("WEIGHT")
    assert model.response(weight.offset, True, 2) == OKAY
    assert model.response(weight.offset, False, 2) == ERROR
    assert model.response(weight.offset, True, 0) == ERROR
    model.busy = True
    assert model.response(weight.offset, True, 2) == ERROR
    assert model.response(model.rm.register("CTRL").offset, True, 2) == ERROR
    assert model.response(model.rm.register("IRQ_ENABLE").offset, True, 2) == OKAY
    model.busy = None
    assert model.response(weight.offset, True, 2) is None


def test_rw_w1c_and_start(model):
    rm = model.rm
    en, st, ctrl = (rm.register(n) for n in ("IRQ_ENABLE", "IRQ_STATUS", "CTRL"))
    assert en.access is Access.RW and st.access is Access.W1C
    model.apply(en.offset, True, 2, 0xFFFF_FFFF)
    assert model.apply(en.offset, False, 2).rdata == en.mask
    model.values["IRQ_STATUS"] = st.mask            # as if both events happened
    assert model.irq() == 1
    model.apply(st.offset, True, 2, 1)
    assert model.values["IRQ_STATUS"] == st.mask & ~1
    model.apply(ctrl.offset, True, 2, ctrl.field("START").mask)
    assert model.busy is None and model.values["STATUS"] is None and model.irq() is None
    e = model.apply(rm.register("STATUS").offset, False, 2)
    assert e.learn == "STATUS" and e.rmask == 0


def test_scoreboard_fails_on_wrong_answers(model):
    fails = []
    board = Scoreboard(model, fails.append)
    magic = model.rm.registers[0]
    board(obs(magic.offset, False, OKAY, rdata=magic.reset))
    assert not fails and board.compared_reads == 1
    board(obs(magic.offset, False, OKAY, rdata=magic.reset ^ 1))
    board(obs(magic.offset, True, OKAY))                    # RO: should have been ERROR
    board(obs(REG_BLOCK - 4, False, OKAY, rdata=0))         # unmapped
    act = model.rm.window("ACT")
    board(obs(act.offset + 8, True, OKAY, size=0, wdata=0x5A))
    board(obs(act.offset + 8, False, OKAY, size=0, rdata=0x5A))
    board(obs(act.offset + 8, False, OKAY, size=0, rdata=0x5B))
    board(obs(act.offset + 8, False, OKAY, size=0, rdata=None))
    assert len(fails) == 5, fails
    assert "MAGIC" in fails[0] and "0x" in fails[0]


def test_free_running_counter(model):
    fails = []
    board = Scoreboard(model, fails.append)
    reg = model.rm.register(FREE_RUNNING[0])
    board(obs(reg.offset, False, OKAY, rdata=7, end=10))
    board(obs(reg.offset, False, OKAY, rdata=12, end=15))
    assert not fails
    board(obs(reg.offset, False, OKAY, rdata=18, end=20))   # 6 counts in 5 cycles
    assert len(fails) == 1
    model.started()                                          # START clears the counters
    board(obs(reg.offset, False, OKAY, rdata=100, end=30))  # more counts than cycles
    assert len(fails) == 2
    model.started()
    board(obs(reg.offset, False, OKAY, rdata=5, end=40))
    assert len(fails) == 2


def test_logits_window(model):
    """LOGITS: 32-bit reads only, no writes, ERROR while busy; 0 after reset, unknown after
    a START until a read while idle teaches each word, which later reads must agree with."""
    fails = []
    board = Scoreboard(model, fails.append)
    lw, cols = model.rm.window("LOGITS"), model.rm.config.cols
    assert lw.access is Access.RO and lw.words >= cols
    assert model.response(lw.offset, False, 2) == OKAY
    for write, size in ((True, 2), (False, 0), (False, 1)):
        assert model.response(lw.offset, write, size) == ERROR
    board(obs(lw.offset + 4, False, OKAY, rdata=0))
    board(obs(lw.offset + 4, False, OKAY, rdata=1))            # after reset: 0
    assert len(fails) == 1
    model.started()
    assert model.response(lw.offset, False, 2) is None
    model.busy = True
    assert model.response(lw.offset, False, 2) == ERROR
    model.idle()
    board(obs(lw.offset + 4, False, OKAY, rdata=0xFFFF_FFF0))  # learnt: -16
    board(obs(lw.offset + 4, False, OKAY, rdata=0xFFFF_FFF0))
    assert len(fails) == 1
    board(obs(lw.offset + 4, False, OKAY, rdata=0))
    assert len(fails) == 2
    if lw.words > cols:                                         # past cols: always 0
        assert model.apply(lw.offset + 4 * cols, False, 2).rdata == 0
def test_image_window_double_buffered():
    """The IMAGE window of ``default``: while a run is (or may be) in progress, a write to
    the slot IMAGE_SLOT held at START is ERROR (unknown while busy is unknown), one to the
    other slot OKAY; reads and halfwords are ERROR."""
    model = SlaveModel(register_map(CONFIGS["default"]))
    rm = model.rm
    img, slot = rm.window("IMAGE"), rm.register("IMAGE_SLOT")
    half = img.slot_bytes
    assert model.response(img.offset, True, 2) == OKAY
    assert model.response(img.offset + half, True, 2) == OKAY
    assert model.response(img.offset, False, 2) == ERROR
    assert model.response(img.offset, True, 1) == ERROR
    for active in (1, 0):
        model.idle()
        model.apply(slot.offset, True, 2, active)
        model.apply(rm.register("CTRL").offset, True, 2, 1)
        assert model.busy is None and model.active_slot == active
        assert model.response(img.offset + active * half + 4, True, 2) is None
        assert model.response(img.offset + (1 - active) * half + 4, True, 2) == OKAY
        assert model.response(slot.offset, True, 2) is None
        model.busy = True
        assert model.response(img.offset + active * half + 4, True, 2) == ERROR
        assert model.response(img.offset + (1 - active) * half, True, 2) == OKAY
        assert model.response(img.offset + (1 - active) * half, False, 2) == ERROR
        assert model.response(slot.offset, True, 2) == ERROR
    tiny = SlaveModel(register_map(CONFIGS["tiny"]))
    assert "IMAGE" not in {w.name for w in tiny.rm.windows}
