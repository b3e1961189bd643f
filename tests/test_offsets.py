"""Per-column ADC offsets and their calibration: the offset model, the ADC rule with offsets
(NumPy loop against :func:`contract.arith.adc_dot`, the golden model's placement, the RTL
macro in the Amaranth simulator), seed 002's binary search and the study command.

Random data come from seeded generators; every failure names its seed.
"""

import csv

import numpy as np
import pytest

from contract.arith import OFFSET_FRAC_BITS, AdcOffsets, adc_dot, offset_codes
from gateware.cim_macro import CIMMacro
from model import golden, offset_study
from model.calibration import (
    CalibrationRangeError,
    CalibrationRows,
    OffsetArray,
    calibrate,
)
from tests.test_cim_macro import (  # noqa: F401  (unelaborated: a fixture)
    corner_tiles,
    random_inputs,
    random_weights,
    run_macro,
    seed_for,
    unelaborated,
)

ONE = 1 << OFFSET_FRAC_BITS   # one LSB in offset units

# ----------------------------------------------------------------------------- offset model


def test_offsets_are_deterministic_per_seed():
    a = AdcOffsets.gaussian(sigma=0.7, macros=3, cols=64, w_bits=4, seed=5)
    b = AdcOffsets.gaussian(sigma=0.7, macros=3, cols=64, w_bits=4, seed=5)
    c = AdcOffsets.gaussian(sigma=0.7, macros=3, cols=64, w_bits=4, seed=6)
    assert a.values.shape == (3, 64, 4) and a.values.dtype == np.int64
    assert np.array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    # The spread is what was asked for (768 draws: within 10 %), centred on zero.
    assert abs(a.lsb().std() / 0.7 - 1) < 0.1 and abs(a.lsb().mean()) < 0.1
    assert not a.values.flags.writeable
    zero = AdcOffsets.gaussian(sigma=0, macros=1, cols=2, w_bits=1, seed=0)
    assert not zero.values.any()


@pytest.mark.parametrize("kw,msg", [
    ({"sigma": -1}, "sigma must be a finite number"),
    ({"sigma": float("nan")}, "sigma must be a finite number"),
    ({"macros": 0}, "macros must be a positive integer"),
    ({"w_bits": 2.0}, "w_bits must be a positive integer"),
])
def test_offset_model_rejects_bad_parameters(kw, msg):
    args = dict(sigma=1.0, macros=2, cols=4, w_bits=4, seed=0) | kw
    with pytest.raises(ValueError, match=msg):
        AdcOffsets.gaussian(**args)


def test_offsets_must_be_integer_arrays_of_three_axes():
    with pytest.raises(ValueError, match=r"shape \(macros, cols, w_bits\)"):
        AdcOffsets(np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="must be integers"):
        AdcOffsets(np.zeros((1, 4, 2)))


def test_offset_codes_round_to_nearest_ties_up():
    half = ONE // 2
    e = np.array([-ONE - half, -half - 1, -half, 0, half - 1, half, ONE + half - 1, 3 * ONE])
    assert offset_codes(e).tolist() == [-1, -1, 0, 0, 0, 1, 1, 3]
    with pytest.raises(ValueError, match="must be integers"):
        offset_codes(np.array([0.5]))


# ----------------------------------------------------------------------------- the ADC rule


def _adc_loop(x, w, w_bits, a_bits, bits, codes):
    """The ADC rule with offsets, one count at a time."""
    cmax = 2**bits - 1
    out = np.zeros((len(x), w.shape[1]), np.int64)
    for i, xs in enumerate(x):
        for c in range(w.shape[1]):
            for j in range(a_bits):
                xj = (xs >> j) & 1
                if w_bits == 1:
                    n = min(max(int(np.sum(xj & (w[:, c] > 0))) + codes[c, 0], 0), cmax)
                    out[i, c] += (2 * n - int(xj.sum())) << j
                    continue
                for b in range(w_bits):
                    n = min(max(int(np.sum(xj & ((w[:, c] >> b) & 1))) + codes[c, b], 0), cmax)
                    out[i, c] += (-1 if b == w_bits - 1 else 1) * (n << (b + j))
    return out


@pytest.mark.parametrize("w_bits,a_bits,bits", [(1, 3, 2), (2, 2, 3), (4, 4, 3), (8, 2, 4)])
def test_adc_dot_with_offsets_matches_the_rule_loop_by_loop(w_bits, a_bits, bits):
    seed = seed_for("adc-offsets", w_bits, a_bits, bits)
    rng = np.random.default_rng(seed)
    rows, cols = 16, 5
    x = random_inputs(rng, 6, rows, a_bits)
    w = random_weights(rng, rows, cols, w_bits)
    off = rng.integers(-3 * ONE, 3 * ONE, (cols, w_bits))
    got = adc_dot(x, w, w_bits=w_bits, a_bits=a_bits, adc_bits=bits, offsets=off)
    want = _adc_loop(x, w, w_bits, a_bits, bits, offset_codes(off))
    assert np.array_equal(got, want), f"seed {seed}"
    plain = adc_dot(x, w, w_bits=w_bits, a_bits=a_bits, adc_bits=bits)
    assert not np.array_equal(got, plain), f"seed {seed}: the offsets changed nothing"
    zero = adc_dot(x, w, w_bits=w_bits, a_bits=a_bits, adc_bits=bits,
                   offsets=np.zeros((cols, w_bits), np.int64))
    assert np.array_equal(zero, plain)


def test_adc_dot_offsets_need_an_adc_and_their_shape():
    x, w = np.ones((1, 8), np.int64), np.ones((8, 2), np.int64)
    with pytest.raises(ValueError, match="need an ADC"):
        adc_dot(x, w, w_bits=2, a_bits=1, adc_bits=None, offsets=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"shape \(cols, w_bits\) = \(2, 2\), not \(2, 4\)"):
        adc_dot(x, w, w_bits=2, a_bits=1, adc_bits=3, offsets=np.zeros((2, 4), np.int64))


def test_golden_conv_places_tiles_on_the_devices_bit_columns():
    """conv_acc_adc with offsets equals adc_dot tile by tile with :func:`tile_offsets`, and
    the placement deals weight tiles round robin over the macros."""
    seed = seed_for("golden-offsets")
    rng = np.random.default_rng(seed)
    cout, cin, k, rows = 5, 12, 3, 8       # 2 channel groups, 18 row tiles, 2 column tiles
    x = rng.integers(0, 16, (2, cin, 5, 5))
    w = rng.integers(-7, 8, (cout, cin, k, k))
    dev = AdcOffsets(rng.integers(-2 * ONE, 2 * ONE, (4, 3, 4)))   # 4 macros of 3 columns
    adc = golden.AdcModel(rows=rows, bits=3, offsets=dev)
    got = golden.conv_acc_adc(x, w, 1, 1, adc, w_bits=4, a_bits=4)
    win = golden._windows(x, k, 1, 1)
    want = np.zeros((2, 5, 5, cout), np.int64)
    tiles = k * k * 2
    t = 0
    for kh in range(k):
        for kw in range(k):
            xt = win[:, :, :, :, kh, kw].transpose(0, 2, 3, 1)
            for c0 in (0, 8):
                # Columns 0..2 of macro t % 4, columns 0..1 of macro (18 + t) % 4.
                off = np.concatenate([dev.values[t % 4], dev.values[(tiles + t) % 4, :2]])
                assert np.array_equal(golden.tile_offsets(dev, t, tiles, cout, 4), off)
                want += adc_dot(xt[..., c0:c0 + 8], w[:, c0:c0 + 8, kh, kw].T, w_bits=4,
                                a_bits=4, adc_bits=3, offsets=off)
                t += 1
    assert np.array_equal(got, want.transpose(0, 3, 1, 2)), f"seed {seed}"
    plain = golden.conv_acc_adc(x, w, 1, 1, golden.AdcModel(rows=rows, bits=3), w_bits=4,
                                a_bits=4)
    assert not np.array_equal(got, plain)
    with pytest.raises(ValueError, match="offsets are for 4-bit weights"):
        golden.conv_acc_adc(x, w, 1, 1, adc, w_bits=2, a_bits=4)
    with pytest.raises(ValueError, match="must be an AdcOffsets"):
        golden.AdcModel(rows=8, bits=3, offsets=dev.values)


# ----------------------------------------------------------------------------- RTL macro


@pytest.mark.parametrize("w_bits,adc_bits,rows,style", [
    (1, 2, 16, "behavioral"), (2, 3, 16, "structural"), (4, 2, 8, "behavioral"),
    (4, 3, 16, "structural")])
def test_macro_with_offsets_is_bit_exact(w_bits, adc_bits, rows, style):
    seed = seed_for("macro-offsets", w_bits, adc_bits, rows, style)
    rng = np.random.default_rng(seed)
    cols, a_bits = 3, 2
    # Offsets of -3..+3 LSB, with exact half-LSB ties among them: both clips engage.
    off = rng.integers(-6, 7, (cols, w_bits)) * (ONE // 2)
    off[0, 0] = ONE // 2                                   # a tie: rounds up to +1
    dut = CIMMacro(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits, adc_bits=adc_bits,
                   adc_offsets=off, style=style)
    tiles = [(random_weights(rng, rows, cols, w_bits), random_inputs(rng, 5, rows, a_bits))]
    tiles += corner_tiles(rows, cols, w_bits, a_bits)
    # Every vector with all its planes: each plane is a conversion, which reads the offset
    # even where the plane is all zeros (the accelerator sends a layer's planes alike).
    got = run_macro(dut, tiles, rng, seed=seed, planes=a_bits)
    want = np.concatenate([CIMMacro.model(x, w, w_bits=w_bits, a_bits=a_bits,
                                          adc_bits=adc_bits, adc_offsets=off)
                           for w, x in tiles])
    assert np.array_equal(got, want), f"seed {seed}: RTL {got.tolist()} != {want.tolist()}"
    plain = np.concatenate([CIMMacro.model(x, w, w_bits=w_bits, a_bits=a_bits,
                                           adc_bits=adc_bits) for w, x in tiles])
    assert not np.array_equal(want, plain), f"seed {seed}: the offsets changed nothing"


def _run_calibrated_macro(dut, theta, cells, tiles, evals):
    """Drive a macro with calibration rows in the Amaranth simulator: ``theta`` on its
    offsets, calibration rows written word by word from ``cells`` (rows, cols * w_bits),
    ``evals`` cell settings each evaluated (``cal_eval``) and read back from ``compare``,
    then every tile's weights committed and its vectors sent with all their planes. Returns
    the comparator readings and the results."""
    from amaranth.sim import Simulator

    bits = dut.cols * dut.w_bits
    words = max(1, -(-bits // 32))
    readings, got = [], []

    def pack(row):
        return int(sum(int(v) << k for k, v in enumerate(row)))

    async def write_cells(ctx, c):
        for r in range(c.shape[0]):
            value = pack(c[r])
            for j in range(words):
                ctx.set(dut.cal, {"en": 1, "row": r, "word": j,
                                  "data": (value >> (32 * j)) & 0xFFFF_FFFF})
                await ctx.tick()
        ctx.set(dut.cal, {"en": 0, "row": 0, "word": 0, "data": 0})

    async def bench(ctx):
        for k in range(bits):
            ctx.set(dut.theta[k], int(theta.reshape(-1)[k]))
        for setting in evals:
            await write_cells(ctx, setting)
            ctx.set(dut.cal_eval, 1)
            await ctx.tick()
            ctx.set(dut.cal_eval, 0)
            v = ctx.get(dut.compare)
            readings.append([(v >> k) & 1 for k in range(bits)])
        await write_cells(ctx, cells)
        ctx.set(dut.output.ready, 1)
        for w, x in tiles:
            for g in range(dut.rows // dut.write_rows):
                rows_w = w[g * dut.write_rows:(g + 1) * dut.write_rows]
                ctx.set(dut.write.payload, {"addr": g, "w": [[int(v) for v in r]
                                                            for r in rows_w]})
                ctx.set(dut.write.valid, 1)
                await ctx.tick()
            ctx.set(dut.write.valid, 0)
            for v, vec in enumerate(x):
                for j in reversed(range(dut.a_bits)):
                    plane = int(sum(((int(a) >> j) & 1) << r for r, a in enumerate(vec)))
                    ctx.set(dut.input.payload, {"plane": plane, "last": j == 0,
                                                "commit": v == 0 and j == dut.a_bits - 1})
                    ctx.set(dut.input.valid, 1)
                    await ctx.tick()
                    if ctx.get(dut.output.valid):
                        got.append(list(ctx.get(dut.output.payload.y)))
            ctx.set(dut.input.valid, 0)
            for _ in range(dut.latency + 1):
                await ctx.tick()
                if ctx.get(dut.output.valid):
                    got.append(list(ctx.get(dut.output.payload.y)))
                    break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(readings, dtype=bool), np.array(got, dtype=np.int64)


@pytest.mark.parametrize("w_bits,rows,cols,cal_rows,style", [
    (4, 16, 3, 8, "behavioral"), (2, 8, 20, 4, "structural"), (1, 8, 2, 16, "behavioral")])
def test_macro_calibration_rows_are_bit_exact(w_bits, rows, cols, cal_rows, style):
    """The macro with calibration rows: its comparators read what OffsetArray.compare reads
    for the same cells, and inference with the cells written converts with the residual
    offset (CIMMacro.model with OffsetArray.residual), including cells past one bus word."""
    seed = seed_for("macro-calibration", w_bits, rows, cols, cal_rows, style)
    rng = np.random.default_rng(seed)
    a_bits, adc_bits = 2, 2
    cal = CalibrationRows(rows=cal_rows, step=0.75)
    theta = rng.integers(-5 * ONE // 2, 5 * ONE // 2, (cols, w_bits))
    theta[0, 0] = ONE // 2 - cal.step_fx     # with R/2 + 1 cells set: a half-LSB tie
    dut = CIMMacro(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits, adc_bits=adc_bits,
                   calibration=cal, style=style)
    evals = [rng.random((cal_rows, cols * w_bits)) < p for p in (0.0, 0.5, 1.0, 0.3)]
    cells = rng.random((cal_rows, cols * w_bits)) < 0.5
    cells[:, 0] = np.arange(cal_rows) < cal_rows // 2 + 1
    tiles = [(random_weights(rng, rows, cols, w_bits), random_inputs(rng, 4, rows, a_bits))]
    tiles += corner_tiles(rows, cols, w_bits, a_bits)
    if w_bits == 1:
        tiles = [((w > 0).astype(int), x) for w, x in tiles]
    readings, got = _run_calibrated_macro(dut, theta, cells, tiles, evals)

    array = OffsetArray(AdcOffsets(theta[None]), cal)
    for setting, reading in zip(evals, readings):
        for r in range(cal_rows):
            array.write_row(0, r, setting[r].reshape(cols, w_bits))
        assert np.array_equal(reading.reshape(cols, w_bits), array.compare()[0]), f"seed {seed}"
    for r in range(cal_rows):
        array.write_row(0, r, cells[r].reshape(cols, w_bits))
    residual = array.residual().values[0]
    assert offset_codes(residual[0, 0]) == 1, "the tie rounds up"
    want = np.concatenate([CIMMacro.model(x, np.where(w > 0, 1, -1) if w_bits == 1 else w,
                                          w_bits=w_bits, a_bits=a_bits, adc_bits=adc_bits,
                                          adc_offsets=residual)
                           for w, x in tiles])
    assert np.array_equal(got, want), f"seed {seed}: RTL {got.tolist()} != {want.tolist()}"


@pytest.mark.usefixtures("unelaborated")
def test_macro_calibration_is_checked():
    kw = dict(rows=8, cols=2, w_bits=2, a_bits=2)
    with pytest.raises(ValueError, match="need adc_bits and no adc_offsets"):
        CIMMacro(**kw, calibration=CalibrationRows(8, 0.5))
    with pytest.raises(ValueError, match="need adc_bits and no adc_offsets"):
        CIMMacro(**kw, adc_bits=2, adc_offsets=np.zeros((2, 2), np.int64),
                 calibration=CalibrationRows(8, 0.5))
    with pytest.raises(ValueError, match="must be a CalibrationRows"):
        CIMMacro(**kw, adc_bits=2, calibration=(8, 0.5))


@pytest.mark.usefixtures("unelaborated")
def test_macro_offsets_are_checked():
    kw = dict(rows=8, cols=2, w_bits=2, a_bits=2)
    with pytest.raises(ValueError, match="need adc_bits"):
        CIMMacro(**kw, adc_offsets=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"shape \(cols, w_bits\) = \(2, 2\), not \(2, 3\)"):
        CIMMacro(**kw, adc_bits=2, adc_offsets=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="must be integers"):
        CIMMacro(**kw, adc_bits=2, adc_offsets=np.zeros((2, 2)))


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("rows,step", [(4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)])
def test_calibration_cancels_every_offset_in_range_to_one_step(rows, step):
    """Every offset on the grid in (-rows/2 * step, rows/2 * step], one per bit-column, all
    calibrated at once: residual within one step, log2(rows) - 1 evaluations plus the range
    check."""
    cal = CalibrationRows(rows=rows, step=step)
    lim = rows // 2 * cal.step_fx
    theta = np.arange(-lim + 1, lim + 1)
    theta = np.pad(theta, (0, -len(theta) % 16)).reshape(-1, 4, 4)  # (macros, 4 cols, 4 bits)
    array = OffsetArray(AdcOffsets(theta), cal)
    res = calibrate(array)
    residual = array.residual().values
    assert np.abs(residual).max() <= cal.step_fx
    assert not res.out_of_range.any()
    assert np.array_equal(res.ones, array.ones())
    # The step rule (R/2, then -+R/4 ... -+1) reaches odd settings only.
    assert (res.ones % 2 == 1).all()
    assert res.evaluations == rows.bit_length() - 2 + 1 == array.evaluations
    assert res.row_writes == array.row_writes
    assert res.words_written == res.row_writes * 1       # 16 bits per row: one bus word
    assert res.cycles > 0


def test_calibration_of_a_gaussian_device_and_its_cost():
    seed = seed_for("calibrate-gaussian")
    cal = CalibrationRows(rows=8, step=0.5)
    dev = AdcOffsets.gaussian(sigma=0.4, macros=18, cols=64, w_bits=4, seed=seed)
    assert np.abs(dev.lsb()).max() < cal.range_lsb, "pick another seed: a draw out of range"
    array = OffsetArray(dev, cal)
    res = calibrate(array)
    assert np.abs(array.residual().values).max() <= cal.step_fx, f"seed {seed}"
    # Half a step of residual rounds away: no code shifts but exact half-LSB ties.
    assert (offset_codes(array.residual().values) != 0).mean() < 0.01
    # 8 rows at the start, then rows n -+ 2 and n -+ 1 of the thermometer code; 256 bits per
    # row of a macro = 8 words.
    assert res.row_writes <= 18 * (8 + 4 + 4 + 2 + 2)
    assert res.words_written == res.row_writes * 8
    assert res.words_read == res.evaluations * 18 * 8


def test_calibration_reports_offsets_beyond_its_range():
    cal = CalibrationRows(rows=8, step=1.0)                # range (-4, 4] LSB
    theta = np.array([[[4 * ONE], [4 * ONE + 1], [-4 * ONE + 1], [-4 * ONE], [-9 * ONE]]])
    with pytest.raises(CalibrationRangeError, match=r"3 of 5 bit-columns have offsets beyond "
                       r"the calibration range \(-4, 4\] LSB \(8 rows of 1 LSB\)"):
        calibrate(OffsetArray(AdcOffsets(theta), cal))
    array = OffsetArray(AdcOffsets(theta), cal)
    res = calibrate(array, strict=False)
    assert res.out_of_range[0, :, 0].tolist() == [False, True, False, True, True]
    # Out of range: left at the extreme setting, the closest the rows get.
    assert res.ones[0, :, 0].tolist() == [1, 0, 7, 8, 8]
    assert array.residual().values[0, :, 0].tolist() == [ONE, 1, -ONE + 1, 0, -5 * ONE]


@pytest.mark.parametrize("kw,msg", [
    ({"rows": 6}, "power of two from 4"), ({"rows": 2}, "power of two from 4"),
    ({"rows": 128}, "power of two from 4 .* to 64"),
    ({"step": 0}, "positive number of LSB"), ({"step": float("inf")}, "positive number"),
    ({"step": 1e-4}, "finer than the offset grid"),
])
def test_calibration_rows_reject_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        CalibrationRows(**kw)


def test_offset_array_checks_its_rows():
    array = OffsetArray(AdcOffsets(np.zeros((2, 3, 1), np.int64)), CalibrationRows())
    with pytest.raises(ValueError, match=r"shape \(cols, w_bits\) = \(3, 1\)"):
        array.write_row(0, 0, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no calibration row 8 of macro 0"):
        array.write_row(0, 8, np.zeros((3, 1)))


# ----------------------------------------------------------------------------- the study


def test_study_command_writes_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "res"
    rc = offset_study.main(["--model", "models/digits_cnn_w4a4.npz", "--limit", "40",
                            "--sigmas", "0.3,4", "--cal", "8:0.5", "--adc-rows", "16",
                            "--adc-bits", "4", "--config", "tiny", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "offsets.csv").read_text().splitlines()))
    assert [(r["mode"], r["sigma_lsb"]) for r in rows] == [
        ("exact", "0.0"), ("ideal", "0.0"), ("uncalibrated", "0.3"), ("calibrated", "0.3"),
        ("uncalibrated", "4.0"), ("calibrated", "4.0")]
    assert all(r["images"] == "40" for r in rows)
    # sigma 4 LSB is far beyond 8 rows of 0.5 LSB: the range check finds columns.
    assert int(rows[5]["out_of_range"]) > 0 and rows[3]["out_of_range"] == "0"
    assert (out / "offsets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_command_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        offset_study.main(["--cal", "8:0"])
    assert "calibration '8:0' must be ROWS:STEP" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        offset_study.main(["--sigmas", "1,x"])
    assert "--sigmas must be comma-separated numbers" in capsys.readouterr().err


# ----------------------------------------------------------------------------- over the bus


@pytest.mark.parametrize("spec", [
    "tiny:adc_bits=3,cal_rows=8,cal_step=96,offset_sigma=256",
    "tiny:adc_bits=3,cols=16,macros=3,cal_rows=4,cal_step=200,offset_sigma=300"])
def test_calibration_over_the_bus_on_the_rtl(spec):
    """The driver's search on the device model, every operation replayed over AHB-Lite on
    CIMTop built for the same device (sim.cal_pysim): every comparator word the RTL answers
    after CTRL.CAL_EVAL equals the model's, so the driver takes the same decisions on the
    RTL; the transfers take the cycles the model counts; the CAL and CMP windows' unmapped
    tails (3 macros) answer ERROR."""
    from contract.config import get_config
    from sim import cal_pysim

    cfg = get_config(spec)
    run = cal_pysim.run(cfg)
    assert run.result.evaluations >= 2 and run.result.out_of_range.any()
    assert not run.errors and not run.mismatches, (run.errors[:3], run.mismatches[:3])
    assert run.tails == (0 if cfg.macros == 2 else 2)
    assert run.bus_cycles == run.result.cycles


def test_calibration_over_the_bus_command(capsys):
    from sim import cal_pysim

    assert cal_pysim.main([]) == 0
    out = capsys.readouterr().out
    assert "every comparator word equal" in out and "bus and array cycles: RTL" in out
    with pytest.raises(SystemExit):
        cal_pysim.main(["--config", "tiny"])
    assert "has no calibration rows" in capsys.readouterr().err


@pytest.mark.parametrize("spec,msg", [
    ("tiny:cal_rows=8", "bias a partial-sum ADC: set adc_bits"),
    ("tiny:adc_bits=3,offset_sigma=64", "set cal_rows"),
    ("tiny:adc_bits=3,cal_rows=6", "power of two from 4"),
    ("tiny:adc_bits=3,cal_rows=8,cal_step=0", "cal_step must be from 1"),
    ("tiny:adc_bits=3,cal_rows=8,cal_step=40000", "cal_step must be from 1"),
    ("tiny:adc_bits=3,cal_rows=8,offset_sigma=20000", "beyond the accelerator's 16-bit"),
    ("tiny:adc_bits=3,cal_rows=8,offset_seed=-1", "offset_seed must not be negative"),
    ("tiny:adc_bits=3,w_bits=8,cal_rows=8", None),
    ("tiny:adc_bits=3,cols=12,cal_rows=8", "power of two of 32-bit bus words"),
])
def test_calibration_configuration_is_checked(spec, msg):
    """Calibration fields of a hardware configuration: what they need, their ranges, and a
    calibration row of whole (power-of-two) bus words or fewer than 32 bits."""
    import dataclasses

    from contract.config import get_config

    if "offset_seed=-1" in spec:        # not a valid configuration name: build it directly
        with pytest.raises(ValueError, match=msg):
            dataclasses.replace(get_config(spec.replace("-1", "0")), offset_seed=-1)
        return
    if msg is None:
        cfg = get_config(spec)
        assert cfg.cal_row_words == 2 and cfg.calibration.rows == 8
        assert cfg.adc_offsets.values.shape == (cfg.macros, cfg.cols, cfg.w_bits)
        assert not cfg.adc_offsets.values.any(), "offset_sigma 0: an offset-free device"
        return
    with pytest.raises(ValueError, match=msg):
        get_config(spec)
