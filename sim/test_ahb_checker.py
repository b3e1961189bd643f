"""The AHB-Lite checker on hand-written traces: every rule fires on a trace that breaks it and
stays quiet on legal traces. (On a simulator, ``sim/tb_ahb.py`` shows the same against a
slave that misbehaves on purpose.)"""

import re
from pathlib import Path

import pytest

from sim import ahb_checker as ck
from sim.ahb_checker import (
    BUSY,
    IDLE,
    NONSEQ,
    SEQ,
    AhbProtocolError,
    MasterChecker,
    Sample,
    SlaveChecker,
    burst_next_address,
    lanes_mask,
)

pytestmark = pytest.mark.sim

INCR, WRAP4, INCR4 = 1, 2, 3


def S(**kw) -> Sample:
    """One cycle: an idle bus unless told otherwise."""
    base = dict(rst=0, hsel=1, haddr=0, htrans=IDLE, hwrite=0, hsize=2, hburst=0, hprot=3,
                hwdata=0, hready=1, hreadyout=1, hresp=0, hrdata=0)
    base.update(kw)
    if "hready" not in kw:
        base["hready"] = base["hreadyout"]
    return Sample(**base)


def run_slave(trace, **opts):
    c = SlaveChecker("slave", **opts)
    return [o for o in (c.step(s) for s in trace) if o is not None]


def run_master(trace, checker=None):
    c = checker or MasterChecker()
    for s in trace:
        c.step(s)
    return c


def raises(rule, fn, *args, **kw):
    with pytest.raises(AhbProtocolError) as e:
        fn(*args, **kw)
    assert e.value.rule == rule, str(e.value)
    return e.value


# ----------------------------------------------------------------- legal traces


def test_read_with_waits_and_error_are_legal():
    trace = [S(htrans=NONSEQ, haddr=0x10),                   # read accepted
             S(hreadyout=0),                                 # one wait state
             S(hrdata=0xDEADBEEF, htrans=NONSEQ, haddr=0x20, hwrite=1),   # read done, write
             S(hreadyout=0, hresp=1, hwdata=5),              # ERROR, first cycle
             S(hreadyout=1, hresp=1, hwdata=5),              # ERROR, second cycle
             S()]
    done = run_slave(trace)
    assert [(t.addr, t.write, t.resp, t.rdata, t.waits) for t in done] == [
        (0x10, False, 0, 0xDEADBEEF, 1), (0x20, True, 1, None, 1)]
    run_master(trace)


def test_idle_and_busy_get_okay_and_unselected_slave_is_quiet():
    trace = [S(htrans=IDLE, haddr=0x40), S(htrans=NONSEQ, hburst=INCR, haddr=0x40),
             S(htrans=BUSY, hburst=INCR, haddr=0x44),
             S(htrans=SEQ, hburst=INCR, haddr=0x44), S(hsel=0, htrans=NONSEQ), S()]
    done = run_slave(trace)
    assert [t.addr for t in done] == [0x40, 0x44]
    run_master(trace)


def test_wrap_and_incr_bursts_are_legal():
    addrs = [0x38, 0x3C, 0x30, 0x34]        # WRAP4 of words from 0x38
    trace = [S(htrans=NONSEQ if i == 0 else SEQ, hburst=WRAP4, haddr=a)
             for i, a in enumerate(addrs)]
    trace += [S(htrans=NONSEQ, hburst=INCR4, haddr=0x3F0 + 4 * i) if i == 0 else
              S(htrans=SEQ, hburst=INCR4, haddr=0x3F0 + 4 * i) for i in range(4)]
    trace.append(S())
    assert [t.addr for t in run_slave(trace)] == addrs + [0x3F0, 0x3F4, 0x3F8, 0x3FC]
    run_master(trace)


def test_x_read_data_only_on_active_lanes():
    # A byte read on lane 1: X on the other lanes is allowed.
    trace = [S(htrans=NONSEQ, haddr=0x11, hsize=0), S(hrdata=0x0000AB00,
                                                       hrdata_known=0x0000FF00), S()]
    assert run_slave(trace)[0].rdata == 0xAB00


def test_helpers():
    assert lanes_mask(0x13, 0) == 0xFF00_0000
    assert lanes_mask(0x12, 1) == 0xFFFF_0000
    assert lanes_mask(0x10, 2) == 0xFFFF_FFFF
    assert burst_next_address(0x3C, 2, WRAP4) == 0x30
    assert burst_next_address(0x3C, 2, INCR4) == 0x40
    assert burst_next_address(0x0E, 1, 4) == 0x00      # WRAP8 of halfwords
    assert burst_next_address(0xFFFF_FFFC, 2, INCR) == 0


# ----------------------------------------------------------------- slave rules


def test_reset_hreadyout():
    raises("reset_hreadyout", run_slave, [S(rst=1, hreadyout=0, hready=1)])


def test_x_response():
    raises("x_response", run_slave, [S(hreadyout=None, hready=1)])


def test_idle_response():
    raises("idle_response", run_slave, [S(hreadyout=0, hready=1)])
    raises("idle_response", run_slave, [S(hresp=1)])
    run_slave([S(hreadyout=0, hready=1)], strict_idle=False)


@pytest.mark.parametrize("trans", [IDLE, BUSY])
def test_okay_on_idle(trans):
    raises("okay_on_idle", run_slave, [S(htrans=trans), S(hreadyout=0)])
    raises("okay_on_idle", run_slave, [S(htrans=trans), S(hreadyout=0, hresp=1)])


def test_single_cycle_error():
    raises("single_cycle_error", run_slave, [S(htrans=NONSEQ), S(hreadyout=1, hresp=1)])
    # Also after OKAY wait states.
    raises("single_cycle_error", run_slave, [S(htrans=NONSEQ), S(hreadyout=0),
                                             S(hreadyout=1, hresp=1)])


def test_error_second_cycle():
    raises("error_second_cycle", run_slave, [S(htrans=NONSEQ), S(hreadyout=0, hresp=1),
                                             S(hreadyout=1, hresp=0)])
    raises("error_second_cycle", run_slave, [S(htrans=NONSEQ), S(hreadyout=0, hresp=1),
                                             S(hreadyout=0, hresp=1)])


def test_max_wait():
    trace = [S(htrans=NONSEQ)] + [S(hreadyout=0)] * 16 + [S()]
    assert len(run_slave(trace, max_wait=16)) == 1
    raises("max_wait", run_slave, [S(htrans=NONSEQ)] + [S(hreadyout=0)] * 17)


def test_x_read_data():
    e = raises("x_read_data", run_slave, [S(htrans=NONSEQ, haddr=0x10),
                                          S(hrdata_known=0xFFFF_FF7F)])
    assert "0x00000010" in str(e) and "cycle 1" in str(e)


def test_hready_mismatch():
    raises("hready_mismatch", run_slave, [S(htrans=NONSEQ), S(hreadyout=0, hready=1)])


# ----------------------------------------------------------------- master rules


def test_address_hold():
    wait = S(htrans=NONSEQ, haddr=0x10, hreadyout=0, hready=0)
    raises("address_hold", run_master, [wait, S(htrans=NONSEQ, haddr=0x14)])
    raises("address_hold", run_master, [wait, S(htrans=NONSEQ, haddr=0x10, hwrite=1)])
    raises("address_hold", run_master, [wait, S(htrans=IDLE)])
    # After the first ERROR cycle the master may cancel with IDLE.
    run_master([S(htrans=NONSEQ, haddr=0x10),
                S(htrans=NONSEQ, haddr=0x20, hreadyout=0, hready=0, hresp=1),
                S(htrans=IDLE, hresp=1)])
    # IDLE may become NONSEQ during a wait state.
    run_master([S(htrans=IDLE, hready=0), S(htrans=NONSEQ, haddr=0x8)])


def test_x_control():
    raises("x_control", run_master, [S(htrans=None)])
    raises("x_control", run_master, [S(hready=None, hreadyout=1)])
    raises("x_control", run_master, [S(htrans=NONSEQ, haddr=None)])


def test_wdata_hold():
    raises("wdata_hold", run_master, [S(htrans=NONSEQ, hwrite=1),
                                      S(hwdata=1, hready=0), S(hwdata=2)])
    run_master([S(htrans=NONSEQ, hwrite=0), S(hwdata=1, hready=0), S(hwdata=2)])


def test_size_and_alignment_and_permit():
    raises("size", run_master, [S(htrans=NONSEQ, hsize=3)])
    raises("alignment", run_master, [S(htrans=NONSEQ, haddr=0x2)])
    raises("alignment", run_master, [S(htrans=NONSEQ, hsize=1, haddr=0x1)])
    c = MasterChecker()
    with c.permit("size", "alignment"):
        run_master([S(htrans=NONSEQ, hsize=3), S(htrans=NONSEQ, haddr=0x2)], c)
    raises("alignment", run_master, [S(htrans=NONSEQ, haddr=0x6)], c)
    with pytest.raises(ValueError):
        with c.permit("burst_address"):
            pass


def test_seq_and_busy_outside_burst():
    raises("seq_outside_burst", run_master, [S(htrans=SEQ)])
    raises("seq_outside_burst", run_master, [S(htrans=NONSEQ), S(htrans=SEQ, haddr=4)])
    raises("busy_outside_burst", run_master, [S(htrans=BUSY)])
    raises("busy_outside_burst", run_master, [S(htrans=NONSEQ), S(htrans=BUSY)])


def test_burst_rules():
    first = S(htrans=NONSEQ, hburst=INCR4, haddr=0x100)
    raises("burst_address", run_master, [first, S(htrans=SEQ, hburst=INCR4, haddr=0x108)])
    raises("burst_control", run_master, [first, S(htrans=SEQ, hburst=INCR4, haddr=0x104,
                                                  hwrite=1)])
    raises("burst_control", run_master, [first, S(htrans=SEQ, hburst=INCR, haddr=0x104)])
    four = [first] + [S(htrans=SEQ, hburst=INCR4, haddr=0x100 + 4 * i) for i in (1, 2, 3)]
    raises("burst_length", run_master, four + [S(htrans=SEQ, hburst=INCR4, haddr=0x110)])
    raises("burst_incomplete", run_master, four[:2] + [S()])
    raises("burst_incomplete", run_master, four[:3] + [S(htrans=NONSEQ, haddr=0x200)])
    # Left early after an ERROR: legal.
    run_master(four[:2] + [S(hready=0, hresp=1, hreadyout=0), S(hresp=1)])
    raises("burst_1kb", run_master, [S(htrans=NONSEQ, hburst=INCR, haddr=0x3FC),
                                     S(htrans=SEQ, hburst=INCR, haddr=0x400)])


def test_every_rule_is_documented_and_tested():
    """The rule names the code raises, the module docstring and this file agree."""
    src = Path(ck.__file__).read_text()
    raised = set(re.findall(r'_fail\("(\w+)"', src))
    documented = set(re.findall(r"^``(\w+)``", ck.__doc__, flags=re.M))
    documented |= {n for line in re.findall(r"^``\w+``, ``\w+``.*$", ck.__doc__, flags=re.M)
                   for n in re.findall(r"``(\w+)``", line)}
    tested = set(re.findall(r'raises\("(\w+)"', Path(__file__).read_text()))
    assert raised <= documented, raised - documented
    assert raised <= tested, raised - tested
