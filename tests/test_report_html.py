"""report.html (hw/report_html.py): well-formed HTML5 with every string escaped, and, in a real
browser (Playwright driving the system's Chromium), no console or page errors and every chart
drawn: one visible bar per nonzero value of report.json.

Pages: the ``tiny`` build of the shipped digits model for the ``vu13p`` board (the estimate
not run); the same report with a stand-in estimate (to draw the resource chart without
minutes of Yosys); and ResNet14 on ``default`` through :func:`hw.flow.figures` (what
``build.py`` puts in the report, without the Verilog), which has the RTL measurement and the
firmware-in-the-loop system record of ``models/measured/``.
"""

import copy
import dataclasses
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compiler import compile_model, partition
from contract.config import get_config
from hw import estimate, flow, report_html
from hw.platform import load_board
from model import golden

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits_cnn_w4a4.npz"
RESNET = REPO / "models" / "resnet14_fmnist_w4a4.npz"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """The build of ``tiny`` (``build.py --board vu13p --config tiny --no-vivado``)."""
    out = tmp_path_factory.mktemp("tiny")
    flow.build(board=load_board("vu13p"), config=get_config("tiny"), model_path=DIGITS,
               out=out, cache=tmp_path_factory.mktemp("cache"), clock_mhz=100.0,
               run_vivado=False, progress=flow.Progress(8, stream=io.StringIO()))
    return out


def with_estimate(report: dict) -> dict:
    """``report`` with a stand-in estimate of three modules (the page's rendering of it is
    under test, not the figures)."""
    r = copy.deepcopy(report)
    res = estimate.RESOURCES

    def mod(name, n, **each):
        each = {k: each.get(k, 0) for k in res}
        return {"name": name, "instances": n, "each": each,
                "total": {k: v * n for k, v in each.items()}, "note": ""}

    mods = [mod("cim_top_cim_macro", 2, lut=1200, ff=3000, carry8=40),
            mod("cim_top.accel.dp", 1, lut=900, ff=700, dsp=4),
            mod("cim_top_weight_ram", 1, uram=2, lut=10)]
    cap = load_board("vu13p").capacity
    total = {k: sum(m["total"][k] for m in mods) for k in res}
    r["estimate"] = {"top": "cim_top", "modules": mods, "total": total, "yosys": "Yosys (fake)",
                     "capacity": cap, "capacity_source": "XMP103", "over": []}
    return r


@pytest.fixture(scope="module")
def resnet_report():
    """ResNet14 on ``default``: the report's model-only keys, as build.py makes them."""
    config = get_config("default")
    model = partition(golden.load(RESNET), "file")
    program = compile_model(model, config)
    return {"generator": "build.py", "board": flow.board_info(load_board("vu13p")),
            "config": dataclasses.asdict(config),
            **flow.figures(model, program, RESNET, clock_mhz=100.0)}


@pytest.fixture(scope="module")
def pages(tiny_report, resnet_report, tmp_path_factory):
    """``name -> (report, html path)``."""
    d = tmp_path_factory.mktemp("pages")
    tiny = json.loads((tiny_report / "report.json").read_text())
    out = {"tiny": (tiny, tiny_report / "report.html")}
    for name, rep in (("tiny_estimate", with_estimate(tiny)), ("resnet14", resnet_report)):
        out[name] = (rep, report_html.write(rep, d / f"{name}.html"))
    return out


# ----------------------------------------------------------------------------- well-formed


class Checker(HTMLParser):
    """Every element closed in order (void elements excepted); the document's skeleton."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.seen, self.doctype = [], [], [], None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag == "title" and self.stack[-1:] == ["head"]:
            self.seen.append("head title")
        names = [a for a, _ in attrs]
        if len(names) != len(set(names)):
            self.errors.append(f"<{tag}> repeats an attribute: {names}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.seen.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def check_well_formed(text: str) -> Checker:
    c = Checker()
    c.feed(text)
    c.close()
    assert c.doctype and c.doctype.lower() == "doctype html"
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    for tag in ("html", "head", "body", "head title", "main"):
        assert c.seen.count(tag) == 1, tag
    assert "script" not in c.seen and "link" not in c.seen     # self-contained
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    # Each SVG is well-formed XML on its own.
    start = 0
    while (i := text.find("<svg", start)) >= 0:
        j = text.index("</svg>", i) + len("</svg>")
        ET.fromstring(text[i:j])
        start = j
    return c


@pytest.mark.parametrize("name", ["tiny", "tiny_estimate", "resnet14"])
def test_well_formed(pages, name):
    report, path = pages[name]
    text = path.read_text()
    check_well_formed(text)
    if name == "tiny":
        assert "The resource estimate was not run" in text
    assert "a model, not a measurement" in text


def test_build_writes_it_beside_report_json(tiny_report):
    """build.py's report.html is the page of its report.json."""
    report = json.loads((tiny_report / "report.json").read_text())
    assert (tiny_report / "report.html").read_text() == report_html.render(report)
    assert "energy" in report and report["energy"]["kind"] == "model"


def test_every_string_is_escaped(pages):
    report = copy.deepcopy(pages["resnet14"][0])
    evil = '<script>alert("x")</script>&<b onload=1>'
    report["model"]["path"] = evil
    report["performance"]["layers"][0]["name"] = evil
    report["performance"]["rtl_note"] = evil
    report["system"]["source"] = evil
    report["energy"]["table"]["sources"]["bus_mm"] = evil
    text = report_html.render(report)
    check_well_formed(text)
    assert "<script" not in text and "<b onload" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text


def test_bad_input():
    with pytest.raises(ValueError, match="not a build report"):
        report_html.render({"performance": {}})
    with pytest.raises(ValueError, match="values must be"):
        report_html.bar_chart(report_html.Chart("c", "t", ["a"], ["s"], [[1, 2]]))


# ----------------------------------------------------------------------------- in a browser


def nonzero(values) -> int:
    return sum(1 for v in values if v)


def expected_bars(report: dict) -> dict[str, int]:
    """Bars each chart must draw: one per nonzero value of the report."""
    perf = report["performance"]
    rtl = perf["rtl_cycles"] is not None
    out = {"chart-cycles": sum(nonzero([r["analytic_cycles"], rtl and r["rtl_cycles"]])
                               for r in perf["layers"]),
           "chart-utilization": sum(nonzero([r["utilization"], rtl and r["utilization_rtl"]])
                                    for r in perf["layers"])}
    e = report["energy"]
    out["chart-energy"] = (sum(nonzero(r["energy_pj"].values()) for r in e["layers"])
                           + nonzero(e["io"]["energy_pj"].values()))
    out["chart-energy-kinds"] = nonzero(e["by_kind_pj"].values())
    measured = [v for v in report["system"]["partitions"].values() if v["measured"]]
    if measured:
        out["chart-system"] = sum(nonzero(report_html.frame_budget(v)) for v in measured)
    return out


@pytest.fixture(scope="module")
def browser():
    exe = report_html.find_browser()
    if exe is None:
        pytest.skip("no Chromium: apt-get install chromium-headless-shell (make deps does)")
    sync = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed (pip install -e '.[dev]')")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe)
        yield b
        b.close()


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, errors


BARS_JS = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {id: svg.id, svg: [box.width, box.height],
          bars: [...svg.querySelectorAll('rect.bar')].map(r => {
            const b = r.getBoundingClientRect();
            return {w: b.width, h: b.height, x: b.x - box.x, y: b.y - box.y,
                    right: b.right - box.x, bottom: b.bottom - box.y,
                    label: r.dataset.label, series: r.dataset.series,
                    value: parseFloat(r.dataset.value)};
          })};
})"""


@pytest.mark.parametrize("name", ["tiny", "tiny_estimate", "resnet14"])
def test_charts_drawn_in_browser(browser, pages, name):
    report, path = pages[name]
    page, errors = open_page(browser, path)
    try:
        charts = {c["id"]: c for c in page.evaluate(BARS_JS)}
        requests = page.evaluate("() => performance.getEntriesByType('resource').length")
    finally:
        page.close()
    assert not errors, errors
    assert requests == 0            # nothing fetched: the page is self-contained
    want = expected_bars(report)
    if report.get("estimate"):
        want["chart-resources"] = None       # checked by sums below
    assert set(charts) == set(want)
    for cid, chart in charts.items():
        assert chart["svg"][0] > 0 and chart["svg"][1] > 0, cid
        if want[cid] is not None:
            assert len(chart["bars"]) == want[cid], cid
        for b in chart["bars"]:
            assert b["w"] > 0 and b["h"] > 0, (cid, b)
            assert -0.5 <= b["x"] and b["right"] <= chart["svg"][0] + 0.5, (cid, b)
            assert -0.5 <= b["y"] and b["bottom"] <= chart["svg"][1] + 0.5, (cid, b)
    if report.get("estimate"):
        # Every module is drawn: each resource's segments add up to its use of the device.
        e = report["estimate"]
        bars = charts["chart-resources"]["bars"]
        for key, name_ in report_html.RESOURCE_NAMES.items():
            got = sum(b["value"] for b in bars if b["label"] == name_)
            assert got == pytest.approx(100 * e["total"][key] / e["capacity"][key], abs=1e-6)
    if "chart-system" in want:
        by_label = {}
        for b in charts["chart-system"]["bars"]:
            by_label[b["label"]] = by_label.get(b["label"], 0) + b["value"]
        assert all(v == pytest.approx(100) for v in by_label.values())
    # The stacked energy bars add up to each layer's modelled total.
    per_layer = {}
    for b in charts["chart-energy"]["bars"]:
        per_layer[b["label"]] = per_layer.get(b["label"], 0) + b["value"]
    for r in report["energy"]["layers"]:
        assert per_layer[r["name"]] == pytest.approx(r["total_pj"] / 1e3, abs=1e-3)


def test_resnet14_page_has_rtl_and_system(pages):
    """The shipped measurements reach the page: RTL bars and the frame budget."""
    report, path = pages["resnet14"]
    assert report["performance"]["rtl_cycles"] is not None
    assert any(v["measured"] for v in report["system"]["partitions"].values())
    text = path.read_text()
    assert 'data-series="RTL"' in text and 'id="chart-system"' in text
