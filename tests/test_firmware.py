"""Firmware: the model blob, the MCU layers, the driver and the Cortex-M4 build.

The C code is built for the host (``make -C firmware host``: the driver, kernels and network
runner with the callback HAL) and driven through ctypes; the accelerator behind the HAL is
:class:`tests.firmware_host.FakeAccelerator`, which computes with the compiler's functional
model from exactly what the driver wrote. Every MCU layer is held against the golden model
bit for bit. The Cortex-M4 build needs ``arm-none-eabi-gcc`` (skipped, with the reason,
without it); its assembly conv kernel is run in the Unicorn emulator when the ``unicorn``
package is installed.
"""

import ctypes as C
import dataclasses
import shutil
import subprocess
import zlib

import numpy as np
import pytest

import compiler
from compiler import firmware_blob as fb
from contract.config import CONFIGS, get_config
from gateware import regmap
from gateware.regmap import register_map
from model import data, export, golden, nets
from model.testnets import random_net, small_specs
from sim.seed import test_seed

from . import firmware_host as fh

SEED = test_seed()
RESNET = "models/resnet14_fmnist_w4a4.npz"
DIGITS = "models/digits_cnn_w4a4.npz"
STAGES = {name: i for i, name in enumerate(fb.STAGES)}


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """The host build of the firmware for a hardware configuration (built once each)."""
    built = {}

    def get(config):
        if config not in built:
            try:
                # A directory name make takes (no ':' or '=' from a changed configuration).
                folder = tmp_path_factory.mktemp(get_config(config).name)
                built[config] = fh.build_library(folder, config)
            except FileNotFoundError as e:
                pytest.skip(str(e))
            except subprocess.CalledProcessError as e:
                pytest.fail(f"host build failed:\n{e.stdout}\n{e.stderr}")
        return built[config]

    return get


@pytest.fixture(scope="module")
def fw(libs):
    return libs("default")


@pytest.fixture(scope="module")
def fw_tiny(libs):
    return libs("tiny")


@pytest.fixture(scope="module")
def resnet():
    return golden.load(RESNET)


@pytest.fixture(scope="module")
def digits():
    return golden.load(DIGITS)


def real_images(model, count):
    """The first test images of the model's dataset (skip if it is not installed)."""
    try:
        return fb.test_images(model, count)
    except data.DatasetError as e:
        pytest.skip(f"dataset not available: {e}")


def random_images(model, count, rng):
    return rng.integers(0, model.manifest["input"]["pixel_max"] + 1,
                        (count, *model.input_shape)).astype(np.uint8)


class Session:
    """A blob in C memory, opened; a workspace; optionally a device on a fake accelerator."""

    def __init__(self, fw, blob: bytes):
        self.fw, self.blob = fw, blob
        self.mem = fh.Buffer(blob)
        self.model = fh.Model()
        self.status = fh.status(fw.cim_model_open(C.byref(self.model), self.mem.addr,
                                                  len(blob)))
        self.dev = None
        self.net = fh.Net()
        if self.status == "OK":
            self.h = fb.parse_header(blob)
            self.ops = fb.parse_ops(blob)
            self.ws = fh.Buffer(self.h["workspace_bytes"], fb.WORKSPACE_ALIGN)

    def init_net(self, dev=None):
        st = self.fw.cim_net_init(C.byref(self.net), C.byref(dev) if dev else None,
                                  C.byref(self.model), self.ws.addr, self.ws.size)
        assert fh.status(st) == "OK"

    def attach(self, fake):
        self.fake = fake
        self.dev = fh.Dev()
        self.hal = fake.hal()
        return fh.status(self.fw.cim_init(C.byref(self.dev), C.byref(self.hal)))

    def run_op(self, i, image=None):
        img = None if image is None else fh.Buffer(np.ascontiguousarray(image).tobytes())
        return fh.status(self.fw.cim_net_op(C.byref(self.net), i,
                                            None if img is None else img.addr, None))

    # ---- workspace tensors
    def hwc(self, offset, shape, signed):
        c, h, w = shape
        cs = fb.cstride(c)
        a = self.ws.array(np.int8 if signed else np.uint8, offset, h * w * cs)
        return a.reshape(h * w, cs)[:, :c].T.reshape(c, h, w).astype(np.int64)

    def put_hwc(self, offset, x):
        c, h, w = x.shape
        cs = fb.cstride(c)
        a = self.ws.array(np.uint8, offset, h * w * cs).reshape(h * w, cs)
        a[:, :c] = (x.reshape(c, h * w).T & 0xFF).astype(np.uint8)


def op_output(s, i):
    op = s.ops[i]
    kind = fb.OP_KINDS[op["kind"] - 1]
    if kind in ("CONV", "MAXPOOL", "OFFLOAD"):
        return s.hwc(op["out_offset"], (op["out_c"], op["out_h"], op["out_w"]),
                     bool(op["out_signed"]))
    if kind == "AVGPOOL":
        return s.ws.array("<i4", op["out_offset"], op["out_c"]).astype(np.int64)
    return s.ws.array("<i8", op["out_offset"], op["out_c"]).copy()


def check_mcu_layers(fw, model, config, images, **kw):
    """Run the MCU's ops in C (the accelerator's output taken from the golden model) and
    compare every op's output with the golden model's."""
    blob = fb.build_blob(model, get_config(config), **kw)
    fb.check_blob(blob, get_config(config))
    s = Session(fw, blob)
    assert s.status == "OK"
    s.init_net()
    mcu = [n["name"] for n in model.nodes if n["where"] == "mcu"]
    accel_out = next(n for n in model.nodes if n["op"] == "avgpool")["inputs"][0]
    env = golden.run(model, images)
    for b, image in enumerate(images):
        names = iter(mcu)
        for i, op in enumerate(s.ops):
            kind = fb.OP_KINDS[op["kind"] - 1]
            if kind == "OFFLOAD":
                s.put_hwc(op["out_offset"], env[accel_out][b])
                continue
            assert s.run_op(i, image) == "OK"
            name = next(names)
            got = op_output(s, i)
            assert np.array_equal(got, env[name][b]), f"{name} differs on image {b}"
    return s


# ----------------------------------------------------------------------------- blob


def test_format_header_is_current():
    assert fb.HEADER_PATH.read_text() == fb.render_header(), \
        "firmware/include/cim_format.h is stale: run `python -m compiler.firmware_blob --header`"


def test_blob_header_and_sections(resnet):
    cfg = get_config("default")
    x = random_images(resnet, 2, np.random.default_rng(SEED))
    blob = fb.build_blob(resnet, cfg, x, [3, 7])
    h = fb.parse_header(blob)
    prog = compiler.compile_model(resnet, cfg)
    assert h["magic"] == fb.MAGIC and h["version"] == fb.VERSION
    assert h["total_bytes"] == len(blob) and h["header_bytes"] == fb.HEADER_BYTES
    assert h["crc32"] == zlib.crc32(blob[fb.CRC_START:])
    assert (h["hw_rows"], h["hw_cols"], h["hw_macros"], h["hw_adc_bits"]) == (64, 64, 18, 0)

    def words(off, n):
        return np.frombuffer(blob, "<u4", n, off)

    assert np.array_equal(words(h["program_offset"], h["program_words"]),
                          prog.program_words())
    assert np.array_equal(words(h["weights_offset"], h["weight_words"]), prog.weight_image)
    assert np.array_equal(words(h["params_offset"], h["param_words"]), prog.param_image)
    imgs = np.frombuffer(blob, np.uint8, x.size, h["images_offset"]).reshape(x.shape)
    assert np.array_equal(imgs, x)
    assert list(words(h["labels_offset"], 2)) == [3, 7]
    logits = np.frombuffer(blob, "<i8", 20, h["expected_offset"]).reshape(2, 10)
    assert np.array_equal(logits, golden.run(resnet, x)["fc"])
    assert [fb.OP_KINDS[o["kind"] - 1] for o in fb.parse_ops(blob)] == \
        ["CONV", "MAXPOOL", "OFFLOAD", "AVGPOOL", "FC"]


def test_conv_weight_layout():
    rng = np.random.default_rng(SEED)
    w = rng.integers(-127, 128, (5, 3, 3, 3))               # odd Cout, 27 taps
    words = fb.conv_weight_words(w)
    steps = 7                                               # ceil(27 / 4)
    assert words.shape == (3 * 4 * steps,)
    taps = np.zeros((6, 4 * steps), np.int64)
    taps[:5, :27] = w.reshape(5, -1)
    for q in range(3):
        for p in range(2 * steps):
            for ch in range(2):
                word = int(words[(q * 2 * steps + p) * 2 + ch])
                lo, hi = word & 0xFFFF, word >> 16
                assert lo - (lo >> 15 << 16) == taps[2 * q + ch, 2 * p]
                assert hi - (hi >> 15 << 16) == taps[2 * q + ch, 2 * p + 1]


@pytest.mark.parametrize("path", [RESNET, DIGITS])
def test_fast_requantization_is_exact(path):
    """The RQ_FAST constants give the golden rule's integer for accumulators spread over the
    whole range the conv can produce, and densely around every output step."""
    model = golden.load(path)
    node = model.nodes[0]
    w = model.array("conv1", "weight")
    m, b = model.array("conv1", "mult"), model.array("conv1", "bias")
    pmax = model.manifest["input"]["pixel_max"]
    mode, d, mk, bk, _ = fb.requant_constants(node, m, b, w, pmax)
    assert mode == "FAST" and d == 8 - node["out_bits"]
    rng = np.random.default_rng(SEED)
    lo, hi = golden.act_range(node["out_bits"], False)
    for c in range(len(m)):
        r = w[c].reshape(-1).astype(np.int64)
        amin, amax = pmax * r[r < 0].sum(), pmax * r[r > 0].sum()
        acc = np.concatenate([rng.integers(amin, amax + 1, 20000), [amin, amax]])
        # Accumulators next to each step of the output.
        s = node["shift"]
        steps = ((np.arange(lo, hi + 2) << s) - int(b[c]) - (1 << (s - 1))) // int(m[c])
        acc = np.concatenate([acc, (steps[:, None] + np.arange(-3, 4)).reshape(-1)])
        want = golden.requantize(acc.reshape(1, 1, -1), m[c:c + 1], b[c:c + 1], s, lo, hi)
        y = [int(a) * int(mk[c]) + int(bk[c]) for a in acc]
        got = [max(0, min(255, v >> 32)) >> d for v in y]
        assert got == list(want.reshape(-1)), f"channel {c}"


# ----------------------------------------------------------------------------- MCU layers


@pytest.mark.parametrize("source", ["real", "random"])
def test_mcu_layers_resnet14(fw, resnet, source):
    x = (real_images(resnet, 3)[0] if source == "real"
         else random_images(resnet, 3, np.random.default_rng(SEED)))
    check_mcu_layers(fw, resnet, "default", x)


@pytest.mark.parametrize("source", ["real", "random"])
def test_mcu_layers_digits(fw, digits, source):
    x = (real_images(digits, 4)[0] if source == "real"
         else random_images(digits, 4, np.random.default_rng(SEED)))
    check_mcu_layers(fw, digits, "tiny", x)


def test_mcu_layers_generic_requantization(fw, resnet):
    """The portable requantization path (RQ_GENERIC) gives the same integers."""
    x = random_images(resnet, 2, np.random.default_rng(SEED + 1))
    s = check_mcu_layers(fw, resnet, "default", x, fast_requant=False)
    assert s.ops[0]["rq_mode"] == fb.RQ_MODES.index("GENERIC") + 1


@pytest.mark.parametrize("spec", range(3))
def test_mcu_layers_random_nets(fw, tmp_path, spec):
    """Random networks: 1 and 3 input channels, 6-bit conv1 weights, odd sizes."""
    seed = SEED + 10 + spec
    sp = small_specs(4, 4)[spec]
    print("seed", seed, sp)
    net, x = random_net(sp, seed, batch=3)
    model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(net)))
    check_mcu_layers(fw, model, "tiny", x.numpy().astype(np.uint8))


def test_mcu_conv_odd_shapes(fw, digits):
    """An odd number of output channels and of output pixels (the pair kernels' pad channel
    and pad pixel), a 5x5 kernel with stride 2, random weights and multipliers."""
    rng = np.random.default_rng(SEED)
    man = {**digits.manifest, "nodes": [dict(n) for n in digits.nodes]}
    arrays = dict(digits.arrays)
    nodes = {n["name"]: n for n in man["nodes"]}
    nodes["conv1"].update(out_channels=15, kernel=5, stride=2, padding=1, shape=[15, 3, 3])
    arrays["conv1/weight"] = rng.integers(-127, 128, (15, 1, 5, 5)).astype(np.int8)
    arrays["conv1/mult"] = rng.integers(1 << 12, 1 << 15, 15).astype(np.int32)
    arrays["conv1/bias"] = rng.integers(-(1 << 24), 1 << 24, 15).astype(np.int64)
    nodes["conv2"].update(in_channels=15, shape=[32, 3, 3])
    arrays["conv2/weight"] = rng.integers(-7, 8, (32, 15, 3, 3)).astype(np.int8)
    for name in ("conv3", "block_conv1", "block_conv2"):
        nodes[name]["shape"] = [32, 2, 2]
    model = golden.IntModel(man, arrays, "odd-shapes")
    golden.validate(model)
    s = check_mcu_layers(fw, model, "tiny", random_images(model, 3, rng))
    assert s.ops[0]["out_h"] * s.ops[0]["out_w"] % 2 == 1


# ----------------------------------------------------------------------------- driver


def open_session(fw, model, config, hw_config=None, images=None, **fake):
    blob = fb.build_blob(model, get_config(config), images)
    s = Session(fw, blob)
    assert s.status == "OK"
    st = s.attach(fh.FakeAccelerator(get_config(hw_config or config), **fake))
    return s, st


@pytest.mark.parametrize("model_path, config, count, wait", [
    (DIGITS, "tiny", 4, "poll"),
    (DIGITS, "tiny", 2, "irq"),
    (RESNET, "default", 2, "poll"),
    # 4 channels into the accelerator, 16 out: a partly filled bus word takes the driver's
    # general per-value path, full ones its 8-channel word path.
    ("random:resnet14", "tiny", 2, "poll"),
])
def test_end_to_end_on_fake_accelerator(libs, tmp_path, model_path, config, count, wait):
    """Driver + network runner: every logit equals the golden model's; the images in the
    accelerator are the compiler's; the stages come in order."""
    fw = libs(config)
    if model_path == "random:resnet14":
        sp = dataclasses.replace(small_specs(4, 4)[1], res_bits=8)
        net, _ = random_net(sp, SEED + 20, batch=1)
        model_path = export.save(tmp_path / "net.npz", *export.to_manifest(net))
    model = golden.load(model_path)
    x = random_images(model, count, np.random.default_rng(SEED))
    s, st = open_session(fw, model, config, images=x)
    assert st == "OK"
    assert fh.status(fw.cim_load_model(C.byref(s.dev), C.byref(s.model))) == "OK"
    prog = compiler.compile_model(model, get_config(config))
    mem = s.fake.mem
    assert np.array_equal(mem["PROG"][:len(prog.program_words())], prog.program_words())
    assert np.array_equal(mem["WEIGHT"][:len(prog.weight_image)], prog.weight_image)
    assert np.array_equal(mem["PARAM"][:len(prog.param_image)], prog.param_image)
    s.init_net(s.dev)
    if wait == "irq":
        s.net.wait = 1
        s.fake.on_irq = lambda: fw.cim_irq_handler(C.byref(s.dev))
        assert fh.status(fw.cim_irq_enable(C.byref(s.dev), 1)) == "OK"
    stages = []
    cb = fh.STAGE(lambda _, stage: stages.append(stage))
    s.net.stage = cb
    want = golden.run(model, x)["fc"]
    for b in range(count):
        img = fh.Buffer(x[b].tobytes())
        cls = C.c_uint32()
        assert fh.status(fw.cim_net_run(C.byref(s.net), img.addr, C.byref(cls))) == "OK"
        logits = np.ctypeslib.as_array(fw.cim_net_logits(C.byref(s.net)), (want.shape[1],))
        assert np.array_equal(logits, want[b]), f"image {b}"
        assert cls.value == int(np.argmax(want[b]))
    assert s.fake.starts == count
    one = ["CONV", *["MAXPOOL"] * (len(s.ops) - 4), "OFFLOAD_WRITE", "OFFLOAD_WAIT",
           "OFFLOAD_READ", "AVGPOOL", "FC", "IDLE"]
    assert stages == [STAGES[n] for n in one] * count
    assert not s.fake.errors
    if wait == "irq":
        # The handler took (and cleared) each frame's event; the driver waited on its flag.
        assert s.fake.reads["IRQ_STATUS"] == count
        assert s.fake.regs[s.fake.map.register("IRQ_STATUS").offset] == 0


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_windows_and_identity(libs, config):
    """The driver built for a configuration finds the windows where the register map puts
    them, and refuses hardware of any other configuration."""
    fw = libs(config)
    cfg = CONFIGS[config]
    dev, hal = fh.Dev(), fh.FakeAccelerator(cfg).hal()
    assert fh.status(fw.cim_init(C.byref(dev), C.byref(hal))) == "OK"
    rm = register_map(cfg)
    for w in ("prog", "param", "act", "weight"):
        assert getattr(dev.hw, f"{w}_window") == rm.window(w.upper()).offset, w
    assert (dev.hw.rows, dev.hw.cols, dev.hw.a_bits, dev.hw.act_slices) == (
        cfg.rows, cfg.cols, cfg.a_bits, rm.act_slices)
    for other in CONFIGS.values():
        if other != cfg:
            hal = fh.FakeAccelerator(other).hal()
            assert fh.status(fw.cim_init(C.byref(dev), C.byref(hal))) == "ERR_HW_CONFIG"


def test_identification_errors(fw_tiny, digits):
    s, st = open_session(fw_tiny, digits, "tiny", magic=0x12345678)
    assert st == "ERR_NO_DEVICE"
    s, st = open_session(fw_tiny, digits, "tiny", version=((regmap.VERSION[0] + 1) << 16))
    assert st == "ERR_HW_VERSION"


def test_model_for_another_configuration_is_refused(fw, digits):
    """A blob compiled for `tiny` on `default` hardware (which the driver is built for)."""
    s, st = open_session(fw, digits, "tiny", hw_config="default")
    assert st == "OK"
    assert fh.status(fw.cim_load_model(C.byref(s.dev), C.byref(s.model))) == "ERR_HW_CONFIG"
    assert not s.fake.writes, "nothing may be written for a foreign model"
    s.init_net(s.dev)
    img = fh.Buffer(bytes(64))
    cls = C.c_uint32()
    assert fh.status(fw.cim_net_run(C.byref(s.net), img.addr, C.byref(cls))) == "ERR_STATE"


@pytest.mark.parametrize("code", [1, 3, 6])
def test_hardware_error_code(fw_tiny, digits, code):
    fw = fw_tiny
    s, st = open_session(fw, digits, "tiny", error_code=code)
    assert fh.status(fw.cim_load_model(C.byref(s.dev), C.byref(s.model))) == "OK"
    s.init_net(s.dev)
    img, cls = fh.Buffer(bytes(64)), C.c_uint32()
    assert fh.status(fw.cim_net_run(C.byref(s.net), img.addr, C.byref(cls))) == "ERR_HW"
    assert s.dev.hw_error == code
    assert not s.fake.errors


def test_timeout(fw_tiny, digits):
    fw = fw_tiny
    s, st = open_session(fw, digits, "tiny", hang=True)
    assert fh.status(fw.cim_load_model(C.byref(s.dev), C.byref(s.model))) == "OK"
    s.init_net(s.dev)
    s.net.timeout_polls = 25
    img, cls = fh.Buffer(bytes(64)), C.c_uint32()
    before = s.fake.reads.get("STATUS", 0)
    assert fh.status(fw.cim_net_run(C.byref(s.net), img.addr, C.byref(cls))) == "ERR_TIMEOUT"
    # write_input and start each check BUSY once; then exactly the 25 polls.
    assert s.fake.reads["STATUS"] - before == 2 + 25
    assert fh.status(fw.cim_start(C.byref(s.dev))) == "ERR_BUSY"
    assert not s.fake.errors, "nothing but STATUS may be touched while busy"


def test_workspace_checks(fw, digits):
    s = Session(fw, fb.build_blob(digits, get_config("tiny")))
    need = s.h["workspace_bytes"]
    net = fh.Net()
    small = fh.Buffer(need - 8, fb.WORKSPACE_ALIGN)
    assert fh.status(fw.cim_net_init(C.byref(net), None, C.byref(s.model), small.addr,
                                     small.size)) == "ERR_WORKSPACE"
    off = fh.Buffer(need + 64, fb.WORKSPACE_ALIGN)
    assert fh.status(fw.cim_net_init(C.byref(net), None, C.byref(s.model), off.addr + 8,
                                     need)) == "ERR_WORKSPACE"


# ----------------------------------------------------------------------------- bad blobs


def _recrc(blob: bytearray) -> bytes:
    blob[fb.CRC_START - 4:fb.CRC_START] = zlib.crc32(bytes(blob[fb.CRC_START:])).to_bytes(
        4, "little")
    return bytes(blob)


def _set_word(blob: bytes, offset: int, value: int) -> bytes:
    b = bytearray(blob)
    b[offset:offset + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return _recrc(b)


def blob_status(fw, blob):
    """The firmware's status for a blob, which the Python check must give too."""
    st = Session(fw, blob).status
    if st == "OK":
        fb.check_blob(blob)
    else:
        with pytest.raises(fb.BlobError) as e:
            fb.check_blob(blob)
        assert e.value.status == st, str(e.value)
    return st


def test_bad_blobs(fw, digits):
    good = fb.build_blob(digits, get_config("tiny"), random_images(
        digits, 2, np.random.default_rng(SEED)))
    h = fb.parse_header(good)
    assert Session(fw, good).status == "OK"

    def status(blob):
        return blob_status(fw, blob)

    flipped = bytearray(good)
    flipped[h["weights_offset"] + 5] ^= 0x10
    assert status(bytes(flipped)) == "ERR_BLOB_CRC"
    flipped = bytearray(good)
    flipped[fb.HEADER_BYTES - 3] ^= 1                       # a header word the CRC covers
    assert status(bytes(flipped)) == "ERR_BLOB_CRC"
    assert status(good[:-1]) == "ERR_BLOB_SIZE"
    assert status(good[:100]) == "ERR_BLOB_SIZE"
    assert status(b"\x7fELF" + good[4:]) == "ERR_BLOB_MAGIC"
    assert status(good[:4] + (fb.VERSION + 1).to_bytes(4, "little") + good[8:]) \
        == "ERR_BLOB_VERSION"
    # Consistent CRC, inconsistent contents.
    ops = h["ops_offset"]
    op_words = {f.name: 4 * i for i, f in enumerate(fb.OP_FIELDS)}
    hdr_words = {f.name: 4 * i for i, f in enumerate(fb.HEADER_FIELDS)}
    rec = 4 * fb.OP_WORDS
    bad = [
        _set_word(good, ops + op_words["kind"], 9),                       # unknown op
        _set_word(good, ops + op_words["out_h"], 9),                      # wrong geometry
        _set_word(good, ops + op_words["steps"], 2),                      # too few taps
        _set_word(good, ops + op_words["im2col_offset"], 8),              # not end-aligned
        _set_word(good, ops + rec + op_words["in_offset"], 0),            # broken chain
        _set_word(good, ops + rec + op_words["act_out_base"], 1 << 20),   # outside buffer
        _set_word(good, hdr_words["weights_offset"], len(good) - 8),      # past the end
        _set_word(good, hdr_words["program_words"], 1 << 20),             # > prog memory
        _set_word(good, hdr_words["images_count"], 1000),
        _set_word(good, hdr_words["workspace_bytes"], 4096),              # areas outside
    ]
    for i, blob in enumerate(bad):
        assert status(blob) == "ERR_BLOB_FORMAT", f"case {i}"
    misaligned = fh.Buffer(len(good) + 8)
    C.memmove(misaligned.addr + 4, good, len(good))
    assert fh.status(fw.cim_model_open(C.byref(fh.Model()), misaligned.addr + 4,
                                       len(good))) == "ERR_ARG"


def _header_word(blob: bytes, name: str, value: int) -> bytes:
    return _set_word(blob, fb.field_offsets(fb.HEADER_FIELDS)[name], value)


def _op_word(blob: bytes, op: int, name: str, value: int) -> bytes:
    at = fb.parse_header(blob)["ops_offset"] + 4 * op * fb.OP_WORDS
    return _set_word(blob, at + fb.field_offsets(fb.OP_FIELDS)[name], value)


def _desc_field(blob: bytes, layer: int, name: str, value: int) -> bytes:
    h = fb.parse_header(blob)
    word, bit = fb.fmt.LAYOUT[name]
    at = h["program_offset"] + 4 * (layer * fb.fmt.DESC_WORDS + word)
    old = int.from_bytes(blob[at:at + 4], "little")
    bits = next(f.bits for f in fb.fmt.FIELDS if f.name == name)
    mask = ((1 << bits) - 1) << bit
    return _set_word(blob, at, (old & ~mask) | (value << bit & mask))


def test_header_words_must_match_the_contents(fw_tiny, digits):
    """Header and op words that disagree with what the blob holds, with the CRC recomputed so
    only the consistency checks can tell, are refused by the firmware (ERR_BLOB_FORMAT) and by
    the Python validator alike. A header with param_words 1, where the descriptors need
    every parameter record, once opened and ran with other logits."""
    x = random_images(digits, 2, np.random.default_rng(SEED))
    good = fb.build_blob(digits, get_config("tiny"), x, [1, 2])
    h = fb.parse_header(good)
    fb.check_blob(good, get_config("tiny"))
    assert Session(fw_tiny, good).status == "OK"
    ops = fb.parse_ops(good)
    offload = [fb.OP_KINDS[o["kind"] - 1] for o in ops].index("OFFLOAD")
    bad = {
        "param_words 1": _header_word(good, "param_words", 1),
        "param_words - 4": _header_word(good, "param_words", h["param_words"] - 4),
        "weight_words - 1": _header_word(good, "weight_words", h["weight_words"] - 1),
        "program_words - desc": _header_word(good, "program_words",
                                             h["program_words"] - fb.fmt.DESC_WORDS),
        "images_count - 1": _header_word(good, "images_count", 1),
        "pixel_max below the images": _header_word(good, "pixel_max", int(x.max()) - 1),
        "labels_offset + 8": _header_word(good, "labels_offset", h["labels_offset"] + 8),
        "act_in_base + 1": _op_word(good, offload, "act_in_base",
                                    ops[offload]["act_in_base"] + 1),
        "act_out_base + 1": _op_word(good, offload, "act_out_base",
                                     ops[offload]["act_out_base"] + 1),
        "steps + 1": _op_word(good, 0, "steps", ops[0]["steps"] + 1),
        "last on the first layer": _desc_field(good, 0, "last", 1),
        "a layer's output past the buffer": _desc_field(good, 1, "out_base", (1 << 24) - 8),
        "a layer's weights past weight_words": _desc_field(good, 1, "weight_base", 1000),
    }
    for what, blob in bad.items():
        assert Session(fw_tiny, blob).status == "ERR_BLOB_FORMAT", what
        with pytest.raises(fb.BlobError) as e:
            fb.check_blob(blob)
        assert e.value.status == "ERR_BLOB_FORMAT", (what, str(e.value))


def test_crc32_is_zlibs(fw):
    rng = np.random.default_rng(SEED)
    for n in (0, 1, 7, 1000):
        buf = rng.integers(0, 256, n).astype(np.uint8).tobytes()
        assert fw.cim_crc32(0, buf, n) == zlib.crc32(buf)
    assert fw.cim_crc32(fw.cim_crc32(0, b"abc", 3), b"def", 3) == zlib.crc32(b"abcdef")
    # Every start alignment and length around the four-byte steps.
    data = rng.integers(0, 256, 64).astype(np.uint8).tobytes()
    mem = C.create_string_buffer(data, 64)
    for start in range(4):
        for n in range(12):
            ptr = C.addressof(mem) + start
            assert fw.cim_crc32(0, ptr, n) == zlib.crc32(data[start:start + n]), (start, n)


def test_status_names(fw):
    for code, name in enumerate(fh.STATUS):
        assert fw.cim_status_name(code).decode() == name


def test_generator_refuses_other_shapes(digits):
    """The firmware runs conv, maxpool..., accelerator, avgpool, fc: other graphs are
    refused by name."""
    man = {**digits.manifest, "nodes": [dict(n) for n in digits.nodes]}
    man["nodes"][1]["where"] = "mcu"         # conv2 on the MCU too
    m = golden.IntModel(man, digits.arrays, "two-convs")
    with pytest.raises(fb.BlobError, match="maxpool"):
        fb.build_blob(m, get_config("tiny"))


def test_generator_cli(tmp_path):
    out = tmp_path / "digits.bin"
    assert fb.main(["--model", DIGITS, "--config", "tiny", "--images", "0",
                    "--out", str(out)]) == 0
    assert fb.parse_header(out.read_bytes())["hw_rows"] == 16
    assert fb.main(["--model", DIGITS, "--config", "nope", "--images", "0",
                    "--out", str(out)]) == 1


# ----------------------------------------------------------------------------- MCU partition


def check_mcu_partition(fw, model, images, **kw):
    """The MCU partition's blob (no accelerator images), run op by op and whole with no
    device: every op's output, the logits and the class equal the golden model's."""
    blob = fb.build_blob(model, get_config("default"), images, partition="mcu", **kw)
    h, ops = fb.check_blob(blob)
    assert h["partition"] == fb.PARTITIONS.index("MCU") + 1
    assert h["program_words"] == h["weight_words"] == h["param_words"] == 0
    assert [fb.OP_KINDS[o["kind"] - 1] for o in ops] == [n["op"].upper() for n in model.nodes]
    s = Session(fw, blob)
    assert s.status == "OK"
    s.init_net()
    env = golden.run(model, images)
    out = model.manifest["output"]
    for b, image in enumerate(images):
        for i, node in enumerate(model.nodes):
            assert s.run_op(i, image) == "OK"
            assert np.array_equal(op_output(s, i), env[node["name"]][b]), \
                f"{node['name']} differs on image {b}"
        img, cls = fh.Buffer(np.ascontiguousarray(image).tobytes()), C.c_uint32()
        assert fh.status(fw.cim_net_run(C.byref(s.net), img.addr, C.byref(cls))) == "OK"
        logits = np.ctypeslib.as_array(fw.cim_net_logits(C.byref(s.net)), (h["classes"],))
        assert np.array_equal(logits, env[out][b]), f"logits differ on image {b}"
        assert cls.value == int(np.argmax(env[out][b]))
    return s


@pytest.mark.parametrize("fast", [True, False])
def test_mcu_partition_resnet14(fw, resnet, fast):
    """The shipped ResNet14 wholly on the MCU: residual adds, the signed 8-bit shortcuts,
    576-step im2col vectors (longer than one 4096-byte block), RQ_FAST where it is exact."""
    rng = np.random.default_rng(SEED + 30)
    try:
        x, _ = fb.test_images(resnet, 2)
    except data.DatasetError:
        x = random_images(resnet, 2, rng)
    x = np.concatenate([x, random_images(resnet, 1, rng)])
    s = check_mcu_partition(fw, resnet, x, fast_requant=fast)
    modes = {fb.RQ_MODES[o["rq_mode"] - 1] for o in s.ops if o["kind"] == 1}
    assert modes == ({"FAST", "GENERIC"} if fast else {"GENERIC"})
    assert max(o["steps"] for o in s.ops) * 16 > fb.WORKSPACE_ALIGN
    assert {o["w_bytes"] for o in s.ops if o["kind"] == 1} == {1, 2}
    assert s.h["workspace_bytes"] <= 64 * 1024        # CIM_APP_WORKSPACE_BYTES


def test_mcu_partition_digits(fw, digits):
    rng = np.random.default_rng(SEED + 31)
    try:
        x, _ = fb.test_images(digits, 3)
    except data.DatasetError:
        x = random_images(digits, 3, rng)
    check_mcu_partition(fw, digits, x)


# Random networks at other bit widths: (arch, w_bits, a_bits, extra NetSpec fields).
MCU_NETS = [
    ("resnet14", 1, 4, dict(width=0.08, in_channels=3, blocks=(1, 1, 1), res_bits=4)),
    ("resnet14", 2, 2, dict(width=0.0625, first_bits=2, last_bits=2, res_bits=2)),
    ("resnet14", 8, 8, dict(width=0.08, blocks=(1, 1, 1), first_bits=8, res_bits=8)),
    ("digits_cnn", 4, 4, dict(width=0.22, image_size=8, pixel_max=16)),
    ("digits_cnn", 1, 8, dict(width=0.3125, image_size=9, pixel_max=200, in_channels=3)),
]


@pytest.mark.parametrize("w_bytes", [None, 1])
@pytest.mark.parametrize("net", range(len(MCU_NETS)))
def test_mcu_partition_random_nets(fw, tmp_path, net, w_bytes):
    """W1 (binary), W2 (ternary), W8, A2, A8, odd channel counts (3, 5, 7), 3-channel input,
    a residual network with narrow signed shortcuts, a 9x9 input; 16-bit weights (as the
    generator picks for these small convs) and 8-bit ones."""
    arch, wb, ab, extra = MCU_NETS[net]
    seed = SEED + 40 + net
    sp = nets.NetSpec(arch=arch, w_bits=wb, a_bits=ab, **extra)
    print("seed", seed, sp)
    model_net, x = random_net(sp, seed, batch=2)
    model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(model_net)))
    s = check_mcu_partition(fw, model, x.numpy().astype(np.uint8), mcu_w_bytes=w_bytes)
    assert {o["w_bytes"] for o in s.ops if o["kind"] == 1} == {w_bytes or 2}


@pytest.mark.parametrize("config, status", [("tiny", "OK"), ("default", "ERR_HW_CONFIG")])
def test_mcu_partition_needs_no_accelerator(fw_tiny, digits, config, status):
    """cim_load_model checks an MCU blob's configuration words, as check_blob does, and
    writes nothing."""
    blob = fb.build_blob(digits, get_config(config), partition="mcu")
    s = Session(fw_tiny, blob)
    assert s.status == "OK"
    assert s.attach(fh.FakeAccelerator(get_config("tiny"))) == "OK"
    assert fh.status(fw_tiny.cim_load_model(C.byref(s.dev), C.byref(s.model))) == status
    assert not s.fake.writes and not s.fake.errors


def test_bad_mcu_blobs(fw, digits):
    """Both checkers refuse an MCU blob whose header, ops or records disagree."""
    x = random_images(digits, 2, np.random.default_rng(SEED))
    good = fb.build_blob(digits, get_config("tiny"), x, partition="mcu")
    ops = fb.parse_ops(good)
    kinds = [fb.OP_KINDS[o["kind"] - 1] for o in ops]
    assert blob_status(fw, good) == "OK"
    res = next(i for i, o in enumerate(ops) if o["residual"])
    conv = 1                                       # conv2: a conv reading the workspace
    assert kinds[conv] == "CONV" and not ops[conv]["residual"]
    latest = {o["out_offset"]: o for o in ops[:res]}    # the tensors op `res` could read
    other_shape = next(off for off, o in latest.items()
                       if (o["out_c"], o["out_h"], o["out_w"]) != (
                           ops[res]["out_c"], ops[res]["out_h"], ops[res]["out_w"]))
    bad = {
        "an ACCEL blob without program": _header_word(good, "partition", 1),
        "an unknown partition": _header_word(good, "partition", len(fb.PARTITIONS) + 1),
        "accelerator words": _header_word(good, "program_words", 4),
        "too many ops": _header_word(good, "ops_count", fb.MAX_OPS + 1),
        "an OFFLOAD op": _op_word(good, conv, "kind", fb.OP_KINDS.index("OFFLOAD") + 1),
        "no FC last": _op_word(good, len(ops) - 1, "kind", fb.OP_KINDS.index("AVGPOOL") + 1),
        "a second conv on the image": _op_word(good, conv, "in_cstride", 0),
        "an input nobody wrote": _op_word(good, conv, "in_offset", ops[conv]["in_offset"] + 8),
        "the weight format": _op_word(good, conv, "w_bytes", 3 - ops[conv]["w_bytes"]),
        "no weight format": _op_word(good, conv, "w_bytes", 0),
        "a residual flag": _op_word(good, conv, "residual", 1),
        "no residual, fields left": _op_word(good, res, "residual", 0),
        "a residual nobody wrote": _op_word(good, res, "res_offset", ops[res]["res_offset"] + 8),
        "a residual of another shape": _op_word(good, res, "res_offset", other_shape),
        "a residual's signedness": _op_word(good, res, "res_signed", 1),
        "the clamp range": _op_word(good, conv, "out_hi", 255),
        "scratch over a live tensor": _op_word(good, res - 1, "padded_offset",
                                               ops[res]["res_offset"]),
        "a res_mult without residual": _set_word(good, ops[conv]["params_offset"] + 12, 3),
    }
    generic = fb.build_blob(digits, get_config("tiny"), partition="mcu", fast_requant=False)
    gops = fb.parse_ops(generic)
    bad["a 25-bit res_mult"] = _set_word(generic, gops[res]["params_offset"] + 12, 1 << 24)
    assert blob_status(fw, generic) == "OK"
    for what, blob in bad.items():
        assert blob_status(fw, blob) == "ERR_BLOB_FORMAT", what


def test_generator_partition_cli(tmp_path):
    out = tmp_path / "digits.bin"
    assert fb.main(["--model", DIGITS, "--config", "tiny", "--images", "0", "--partition",
                    "mcu", "--out", str(out)]) == 0
    h, _ = fb.check_blob(out.read_bytes())
    assert h["partition"] == fb.PARTITIONS.index("MCU") + 1
    with pytest.raises(fb.BlobError, match="partition"):
        fb.build_blob(golden.load(DIGITS), get_config("tiny"), partition="both")


# ----------------------------------------------------------------------------- Cortex-M4


def _arm_tools():
    missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-objcopy", "arm-none-eabi-size",
                           "arm-none-eabi-nm", "make") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found (Debian: gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi)")


@pytest.fixture(scope="module")
def arm_build(tmp_path_factory):
    _arm_tools()
    build = tmp_path_factory.mktemp("arm")
    try:                                   # the default blob embeds Fashion-MNIST images
        fb.test_images(golden.load(RESNET), 1)
        images = 2
    except data.DatasetError:
        images = 0
    r = subprocess.run(["make", "-C", str(fh.FIRMWARE), f"BUILD={build}", f"IMAGES={images}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"make -C firmware failed:\n{r.stdout}\n{r.stderr}"
    syms = {}
    nm = subprocess.run(["arm-none-eabi-nm", str(build / "cim_fw.elf")], capture_output=True,
                        text=True, check=True).stdout
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    return build, r.stdout, syms, images


def test_firmware_builds(arm_build):
    """`make -C firmware` builds ELF, .bin and .hex cleanly (-Wall -Wextra -Werror) and prints
    the size; the results record starts the RAM; the blob in flash is the generator's."""
    build, out, syms, images = arm_build
    for f in ("cim_fw.elf", "cim_fw.bin", "cim_fw.hex"):
        assert (build / f).stat().st_size > 0
    assert "text" in out and "cim_fw.elf" in out          # arm-none-eabi-size's table
    assert "warning" not in out.lower()
    assert syms["cim_results"] == 0x20000000
    assert "cim_conv_channels_m4" in syms and syms["vector_table"] == 0
    image = (build / "cim_fw.bin").read_bytes()
    blob = (build / "model.bin").read_bytes()
    at = syms["cim_model_blob"]
    assert at % 8 == 0 and image[at:at + len(blob)] == blob
    assert fb.parse_header(blob)["images_count"] == images


def test_conv_kernel_on_cortex_m4(arm_build, resnet):
    """The assembly conv kernel of the real ELF, run in the Unicorn emulator (Cortex-M4):
    conv1 equal to the golden model, at most 1.0 instructions per MAC."""
    unicorn = pytest.importorskip("unicorn", reason="the unicorn package runs the ELF")
    from unicorn import arm_const as A

    build, _, syms, _ = arm_build
    image = (build / "cim_fw.bin").read_bytes()
    blob_at = syms["cim_model_blob"]
    h = fb.parse_header(image[blob_at:])
    op = fb.parse_ops(image[blob_at:])[0]
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB | unicorn.UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_M4)
    ram, stop = 0x20000000, 0x3FFF00
    uc.mem_map(0, 4 << 20)
    uc.mem_write(0, image)
    uc.mem_map(ram, 512 << 10)
    img_at, ws_at = ram + 0x8000, ram + 0x10000
    x = random_images(resnet, 1, np.random.default_rng(SEED))
    uc.mem_write(img_at, x.tobytes())
    sp = ram + (512 << 10) - 64
    uc.mem_write(sp, ws_at.to_bytes(4, "little"))           # 5th argument: the workspace
    for reg, v in ((A.UC_ARM_REG_SP, sp), (A.UC_ARM_REG_R0, blob_at + h["ops_offset"]),
                   (A.UC_ARM_REG_R1, img_at), (A.UC_ARM_REG_R2, blob_at + op["weights_offset"]),
                   (A.UC_ARM_REG_R3, blob_at + op["params_offset"]),
                   (A.UC_ARM_REG_LR, stop | 1)):
        uc.reg_write(reg, v)
    count = [0]

    def tick(*_):
        count[0] += 1

    uc.hook_add(unicorn.UC_HOOK_CODE, tick)
    uc.emu_start(syms["cim_conv"] | 1, stop)
    c, oh, ow = op["out_c"], op["out_h"], op["out_w"]
    got = np.frombuffer(uc.mem_read(ws_at + op["out_offset"], oh * ow * op["out_cstride"]),
                        np.uint8).reshape(oh * ow, -1)[:, :c].T.reshape(c, oh, ow)
    want = golden.run(resnet, x, upto="conv1")["conv1"][0]
    assert np.array_equal(got, want)
    macs = c * oh * ow * op["in_c"] * op["kernel"] ** 2
    print(f"conv1: {count[0]:,} instructions for {macs:,} MACs = {count[0] / macs:.3f} per MAC")
    assert count[0] / macs <= 1.0


class _NoBus:
    """No accelerator on the bus: any access fails the run."""

    def read(self, offset):
        raise AssertionError(f"the MCU partition read the accelerator at {offset:#x}")

    def write(self, offset, words):
        raise AssertionError(f"the MCU partition wrote the accelerator at {offset:#x}")

    def idle(self, cycles):
        return False


@pytest.mark.parametrize("model_path", [DIGITS, RESNET])
def test_mcu_partition_on_cortex_m4(tmp_path, model_path):
    """`make -C firmware PARTITION=mcu`, run in the emulator with no accelerator: every
    frame's logits equal the golden model's (on the ResNet14 the assembly kernels with 8-bit
    weights and im2col vectors over several 4096-byte blocks)."""
    _arm_tools()
    pytest.importorskip("unicorn", reason="the unicorn package runs the ELF")
    from sim import fil

    model = golden.load(model_path)
    images = 1
    try:
        x, _ = fb.test_images(model, images)
    except data.DatasetError as e:
        pytest.skip(f"dataset not available: {e}")
    elf = fil.build_elf(tmp_path, model=model_path, config="default", images=images,
                        irq=False, partition="mcu")
    run = fil.Mcu(elf, _NoBus(), window_bytes=1 << 22).run()
    r = run.results
    assert (r["state"], r["status"], r["images"], r["exact"]) == (1, 0, images, images)
    want = golden.run(model, x)[model.manifest["output"]]
    assert len(run.logits) == images and np.array_equal(np.array(run.logits), want)
    assert {s for f in run.frames for s in f} <= {"CONV", "MAXPOOL", "AVGPOOL", "FC", "IDLE"}


def test_images_of_a_model_without_dataset(tmp_path):
    """A model that records no dataset gets random inputs of its shape and range, labelled
    with the golden model's own classes (the firmware then counts its agreement)."""
    spec = dataclasses.replace(small_specs(4, 4)[2], width=0.25)
    net, _ = random_net(spec, test_seed(), batch=1)
    model = golden.load(export.save(tmp_path / "net.npz", *export.to_manifest(net)))
    assert "dataset" not in model.manifest.get("meta", {})
    x, y = fb.test_images(model, 5)
    assert x.shape == (5, *model.input_shape) and x.dtype == np.uint8
    assert x.max() <= model.manifest["input"]["pixel_max"]
    assert (y == golden.predict(model, x)).all()


# ----------------------------------------------------------------------------- WHOLE partition


@pytest.mark.parametrize("wait", ["poll", "irq"])
def test_whole_partition_on_fake_accelerator(fw, resnet, wait):
    """A WHOLE blob (every layer on the accelerator): the driver writes each image once into
    the image buffer, the next one into the other slot while the current one computes
    (cim_net_run_next), starts on the right slot, and reads logits and class from the
    registers: every logit equals the golden model's, the stages are write, wait, read."""
    count = 3
    x = random_images(resnet, count, np.random.default_rng(SEED))
    blob = fb.build_blob(resnet, get_config("default"), x, partition="whole")
    s = Session(fw, blob)
    assert s.status == "OK" and [fb.OP_KINDS[o["kind"] - 1] for o in s.ops] == ["CLASSIFY"]
    assert s.attach(fh.FakeAccelerator(get_config("default"))) == "OK"
    assert fh.status(fw.cim_load_model(C.byref(s.dev), C.byref(s.model))) == "OK"
    s.init_net(s.dev)
    if wait == "irq":
        s.net.wait = 1
        s.fake.on_irq = lambda: fw.cim_irq_handler(C.byref(s.dev))
        assert fh.status(fw.cim_irq_enable(C.byref(s.dev), 1)) == "OK"
    stages = []
    cb = fh.STAGE(lambda _, stage: stages.append(stage))
    s.net.stage = cb
    want = golden.run(resnet, x)["fc"]
    imgs = [fh.Buffer(x[b].tobytes()) for b in range(count)]
    slots = []
    for b in range(count):
        cls = C.c_uint32()
        nxt = imgs[b + 1].addr if b + 1 < count else None
        slots.append(s.net.slot)
        st = fw.cim_net_run_next(C.byref(s.net), imgs[b].addr, nxt, C.byref(cls))
        assert fh.status(st) == "OK"
        logits = np.ctypeslib.as_array(fw.cim_net_logits(C.byref(s.net)), (want.shape[1],))
        assert np.array_equal(logits, want[b]), f"image {b}"
        assert cls.value == int(np.argmax(want[b]))
    assert slots == [0, 1, 0] and s.fake.starts == count
    # Each image written once (1 channel of 32 rows of 32 bytes: 256 words).
    assert s.fake.writes["IMAGE"] == count * 256
    assert stages == [STAGES[n] for n in ("OFFLOAD_WRITE", "OFFLOAD_WAIT", "OFFLOAD_READ",
                                          "IDLE")] * count
    assert not s.fake.errors


def test_bad_whole_blobs(fw, resnet):
    """Both checkers refuse a WHOLE blob whose op, image or program disagrees, and the
    generator refuses a configuration without an image buffer."""
    x = random_images(resnet, 1, np.random.default_rng(SEED))
    good = fb.build_blob(resnet, get_config("default"), x, partition="whole")
    assert blob_status(fw, good) == "OK"
    h, op = fb.parse_header(good), fb.parse_ops(good)[0]
    descs = h["program_words"] // fb.fmt.DESC_WORDS
    bad = {
        "an ACCEL blob's ops": _header_word(good, "partition", 1),
        "another op kind": _op_word(good, 0, "kind", fb.OP_KINDS.index("OFFLOAD") + 1),
        "channels": _op_word(good, 0, "in_c", 2),
        "rows": _op_word(good, 0, "in_h", 31),
        "classes": _op_word(good, 0, "out_c", 9),
        "unsigned logits": _op_word(good, 0, "out_signed", 0),
        "logits outside the workspace": _op_word(good, 0, "out_offset", h["workspace_bytes"]),
        "logits misaligned": _op_word(good, 0, "out_offset", op["out_offset"] + 4),
        "an image larger than the buffer": _header_word(good, "hw_image_size", 16),
        "no image buffer": _header_word(good, "hw_image_channels", 0),
        "no im2col first": _desc_field(good, 0, "op", fb.fmt.OP_CONV),
        "no raw layer last": _desc_field(good, descs - 1, "raw", 0),
    }
    for what, blob in bad.items():
        assert blob_status(fw, blob) == "ERR_BLOB_FORMAT", what
    with pytest.raises(fb.BlobError, match="image buffer"):
        fb.build_blob(resnet, get_config("default:image_channels=0"), partition="whole")


# ----------------------------------------------------------------------------- calibration


CAL_SPECS = ("tiny:adc_bits=3,cal_rows=8,cal_step=96,offset_sigma=256",
             "tiny:adc_bits=3,cols=16,macros=3,cal_rows=4,cal_step=200,offset_sigma=300,"
             "offset_seed=5",
             "tiny:adc_bits=3,w_bits=1,cal_rows=16,cal_step=40,offset_sigma=100")


@pytest.mark.parametrize("spec", CAL_SPECS)
def test_calibration_driver(libs, spec):
    """cim_calibrate() over the bus, on the register-level device model: the cells it leaves
    and what it costs equal model.calibration.calibrate on the same device (the Python
    statement of the search), which leaves every in-range offset within one step; run again
    from its own record, it reaches the same cells; hardware without calibration rows and a
    short record are refused."""
    from model.calibration import OffsetArray, calibrate

    fw = libs(spec)
    cfg = get_config(spec)
    fake = fh.FakeAccelerator(cfg)
    dev, hal = fh.Dev(), fake.hal()
    assert fh.status(fw.cim_init(C.byref(dev), C.byref(hal))) == "OK"
    assert (dev.hw.cal_rows, dev.hw.cal_row_words, dev.hw.cal_step) == (
        cfg.cal_rows, cfg.cal_row_words, cfg.cal_step)
    n = cfg.macros * cfg.cols * cfg.w_bits
    cells = (C.c_uint16 * n)()
    res = fh.CalResult()
    assert fh.status(fw.cim_calibrate(C.byref(dev), cells, n - 1, 1, C.byref(res))) == \
        "ERR_WORKSPACE"
    assert fh.status(fw.cim_calibrate(C.byref(dev), cells, n, 1, C.byref(res))) == "OK"
    assert not fake.errors, fake.errors[:3]

    want = calibrate(OffsetArray(cfg.adc_offsets, cfg.calibration), strict=False)
    got = np.array(cells, dtype=np.int64)
    ones = (got & 0x7F).reshape(want.ones.shape)
    assert np.array_equal(ones, want.ones)
    assert np.array_equal((got & 0x4000).astype(bool).reshape(want.ones.shape),
                          want.out_of_range)
    assert (res.evaluations, res.row_writes, res.words_written, res.words_read,
            res.out_of_range) == (want.evaluations, want.row_writes, want.words_written,
                                  want.words_read, int(want.out_of_range.sum()))
    assert fake.cal_evals == res.evaluations
    device = fake.cal_device()
    assert np.array_equal(device.ones(), want.ones)
    inside = ~want.out_of_range
    assert np.abs(device.residual().values[inside]).max() <= cfg.calibration.step_fx

    again = fh.CalResult()
    assert fh.status(fw.cim_calibrate(C.byref(dev), cells, n, 0, C.byref(again))) == "OK"
    assert np.array_equal((np.array(cells, dtype=np.int64) & 0x7F).reshape(ones.shape), ones)
    assert np.array_equal(fake.cal_device().ones(), want.ones)


def test_calibration_driver_refuses_while_busy_and_null_arguments(libs):
    """While a frame runs cim_calibrate() touches nothing but STATUS (the CAL window and
    CTRL would answer ERROR) and returns CIM_ERR_BUSY; NULL arguments are CIM_ERR_ARG."""
    spec = CAL_SPECS[0]
    fw, cfg = libs(spec), get_config(spec)
    fake = fh.FakeAccelerator(cfg, hang=True)
    dev, hal = fh.Dev(), fake.hal()
    assert fh.status(fw.cim_init(C.byref(dev), C.byref(hal))) == "OK"
    fake.start()
    n = cfg.macros * cfg.cols * cfg.w_bits
    cells, res = (C.c_uint16 * n)(), fh.CalResult()
    writes = dict(fake.writes)
    assert fh.status(fw.cim_calibrate(C.byref(dev), cells, n, 1, C.byref(res))) == "ERR_BUSY"
    assert fake.writes == writes and not fake.errors
    assert fh.status(fw.cim_calibrate(C.byref(dev), None, n, 1, C.byref(res))) == "ERR_ARG"
    assert fh.status(fw.cim_calibrate(C.byref(dev), cells, n, 1, None)) == "ERR_ARG"


def test_calibration_driver_needs_calibration_rows(fw_tiny):
    dev, hal = fh.Dev(), fh.FakeAccelerator(CONFIGS["tiny"]).hal()
    assert fh.status(fw_tiny.cim_init(C.byref(dev), C.byref(hal))) == "OK"
    assert dev.hw.cal_rows == 0
    cells, res = (C.c_uint16 * 64)(), fh.CalResult()
    assert fh.status(fw_tiny.cim_calibrate(C.byref(dev), cells, 64, 1, C.byref(res))) == \
        "ERR_HW_CONFIG"
