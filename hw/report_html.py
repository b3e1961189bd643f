"""``report.html``: the build report (``report.json``) as one self-contained HTML5 page.

:func:`render` turns the report dictionary that :func:`hw.flow.build` writes to
``report.json`` into a page with inline CSS and inline SVG charts (no script, no font, no
network access): cycles and MAC utilization per layer (the analytic cycle model and, where
``report.json`` has them, the RTL-measured cycles), the resource estimate per module against
the device's capacity (or a line saying it was not run), the end-to-end frame budget split
into MCU, bus, waiting and accelerator cycles per partition (when the firmware-in-the-loop
measurements exist), and the energy model. Every string from the report is escaped.

Each chart is an ``<svg class="chart" id=...>``; every bar is a ``<rect class="bar">`` with
``data-series``, ``data-label`` and ``data-value`` attributes (what ``tests/test_report_html.py``
checks in a browser). :func:`write` writes the page beside ``report.json``.

    python -m hw.report_html build/vu13p/report.json      # (re)writes build/vu13p/report.html
    python -m hw.report_html build/vu13p/report.json --screenshot docs/img/report.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path

__all__ = ["Chart", "bar_chart", "find_browser", "render", "screenshot", "write"]

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")
RESOURCE_NAMES = {"lut": "LUT", "ff": "FF", "carry8": "CARRY8", "dsp": "DSP",
                  "bram36": "BRAM36", "uram": "URAM"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid #d5d9e0; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 6px; padding: 4px 16px 12px;
          margin: 14px 0; }
.note { color: #5a6272; font-size: 13px; }
.model { border-left: 4px solid #e15759; padding-left: 8px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eceef2; }
th:first-child, td:first-child { text-align: left; }
table.text td, table.text th { text-align: left; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 8px 0; }
dl.facts dt { color: #5a6272; } dl.facts dd { margin: 0; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
            vertical-align: -1px; }
svg.chart { display: block; width: 100%; height: auto; margin: 6px 0; }
svg.chart text { font: 11px ui-monospace, SFMono-Regular, Menlo, monospace; fill: #1d2330; }
svg.chart .axis { stroke: #9aa1ad; stroke-width: 1; }
svg.chart .track { fill: #eef0f3; }
"""


def _e(value) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape(str(value), quote=True)


def _n(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart: one row per label, the series side by side (grouped) or end
    to end (stacked); ``values[row][series]`` (None or 0: no bar)."""

    id: str
    title: str
    labels: list[str]
    series: list[str]
    values: list[list[float | None]]
    stacked: bool = False
    scale: float | None = None
    """The value of the full width (default: the largest row)."""
    fmt: str = "{:,.0f}"
    unit: str = ""
    colors: tuple[str, ...] = PALETTE


def bar_chart(c: Chart, *, width: int = 980) -> str:
    """An inline SVG of ``c`` (module docstring: classes and data attributes)."""
    if len(c.values) != len(c.labels) or any(len(v) != len(c.series) for v in c.values):
        raise ValueError(f"chart {c.id!r}: values must be {len(c.labels)} rows of "
                         f"{len(c.series)} series")
    label_w, value_w, pad = 190, 110, 6
    bar_h = 13 if c.stacked else 10
    row_h = (bar_h if c.stacked else bar_h * len(c.series)) + 8
    plot_w = width - label_w - value_w
    totals = [sum(v or 0 for v in row) if c.stacked else max([v or 0 for v in row] or [0])
              for row in c.values]
    scale = c.scale or max(totals + [0]) or 1.0
    height = pad * 2 + row_h * len(c.labels)
    out = [f'<svg class="chart" id="{_e(c.id)}" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(c.title)}">',
           f"<title>{_e(c.title)}</title>"]
    for i, (label, row) in enumerate(zip(c.labels, c.values)):
        y0 = pad + i * row_h
        if c.stacked and c.scale:
            out.append(f'<rect class="track" x="{label_w}" y="{y0 + 4}" width="{plot_w}" '
                       f'height="{bar_h - 1}"/>')
        out.append(f'<text x="{label_w - 6}" y="{y0 + row_h / 2 + 3:.1f}" '
                   f'text-anchor="end">{_e(label)}</text>')
        x = float(label_w)
        for s, (name, v) in enumerate(zip(c.series, row)):
            if not v:
                continue
            w = max(plot_w * v / scale, 1.0)
            y = y0 + 4 + (0 if c.stacked else s * bar_h)
            bx = x if c.stacked else label_w
            out.append(f'<rect class="bar" x="{bx:.1f}" y="{y:.1f}" width="{w:.1f}" '
                       f'height="{bar_h - 1}" fill="{c.colors[s % len(c.colors)]}" '
                       f'data-series="{_e(name)}" data-label="{_e(label)}" '
                       f'data-value="{_e(v)}"><title>{_e(label)}, {_e(name)}: '
                       f'{_e(c.fmt.format(v))}{_e(c.unit)}</title></rect>')
            if c.stacked:
                x += w
            else:
                out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 2:.1f}">'
                           f'{_e(c.fmt.format(v))}{_e(c.unit)}</text>')
        if c.stacked and totals[i]:
            out.append(f'<text x="{x + 4:.1f}" y="{y0 + row_h / 2 + 3:.1f}">'
                       f'{_e(c.fmt.format(totals[i]))}{_e(c.unit)}</text>')
    out.append(f'<line class="axis" x1="{label_w}" y1="{pad}" x2="{label_w}" '
               f'y2="{height - pad}"/>')
    out.append("</svg>")
    return "\n".join(out)


def _legend(names, colors=PALETTE) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{colors[i % len(colors)]}"></i>{_e(n)}</span>'
        for i, n in enumerate(names)) + "</p>"


def _table(head: list[str], rows: list[list], *, text: bool = False) -> str:
    """A table of escaped cells; ``text``: every column left-aligned (prose, not figures)."""
    h = "".join(f"<th>{_e(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in r) + "</tr>" for r in rows)
    cls = ' class="text"' if text else ""
    return f"<table{cls}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- sections


def _summary(r: dict) -> str:
    cfg, model, board = r.get("config", {}), r.get("model", {}), r.get("board")
    perf = r.get("performance", {})
    facts = [
        ("board", f"{board['name']} ({board['part']})" if board else "sim (no FPGA board)"),
        ("configuration", f"{cfg.get('name')}: {cfg.get('macros')} macros of {cfg.get('rows')}"
                          f"x{cfg.get('cols')}, W{cfg.get('w_bits')}A{cfg.get('a_bits')}"),
        ("model", f"{model.get('path')} ({model.get('layers')} accelerator layers, partition "
                  f"{model.get('partition')})"),
        ("model SHA-256", model.get("sha256")),
    ]
    if perf:
        f10 = perf["fps"]["reference_10mhz"]
        facts += [("cycles per frame (accelerator alone)",
                   f"{_n(perf['analytic_cycles'])} analytic, "
                   + (f"{_n(perf['rtl_cycles'])} RTL" if perf.get("rtl_cycles") else
                      "RTL not measured")),
                  ("FPS at 10 MHz (accelerator alone)",
                   f"{_n(f10['analytic'])} analytic"
                   + (f", {_n(f10['rtl'])} RTL" if f10.get("rtl") else "")),
                  ("MAC utilization", f"{_pct(perf['mac_utilization'])} analytic"
                   + (f", {_pct(perf['mac_utilization_rtl'])} RTL"
                      if perf.get("mac_utilization_rtl") is not None else ""))]
    if r.get("energy"):
        e = r["energy"]
        facts.append(("energy per frame (model)",
                      f"{e['frame_pj'] / 1e6:,.3f} uJ, {e['pj_per_mac']:.3f} pJ per MAC"
                      if e.get("pj_per_mac") is not None else f"{e['frame_pj'] / 1e6:,.3f} uJ"))
    v = r.get("vivado")
    if v:
        facts.append(("Vivado", f"bitstream {v['bitstream']}" if v.get("bitstream")
                      else f"no bitstream: {v.get('reason')}"))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    return f'<section id="summary"><h2>Summary</h2><dl class="facts">{dl}</dl></section>'


def _performance(perf: dict) -> str:
    layers = perf["layers"]
    rtl = perf.get("rtl_cycles") is not None
    series = ["analytic"] + (["RTL"] if rtl else [])
    labels = [x["name"] for x in layers]
    cyc = Chart("chart-cycles", "Cycles per layer", labels, series,
                [[x["analytic_cycles"]] + ([x["rtl_cycles"]] if rtl else []) for x in layers])
    util = Chart("chart-utilization", "MAC utilization per layer", labels, series,
                 [[100 * x["utilization"]] + ([100 * x["utilization_rtl"]] if rtl else [])
                  for x in layers], scale=100.0, fmt="{:.1f}", unit=" %")
    rows = [[x["name"], _n(x["macs"]), _n(x["analytic_cycles"]), _n(x["rtl_cycles"]),
             _pct(x["utilization"]), _pct(x["utilization_rtl"])] for x in layers]
    rows.append(["total per frame", _n(perf["macs_per_frame"]), _n(perf["analytic_cycles"]),
                 _n(perf.get("rtl_cycles")), _pct(perf["mac_utilization"]),
                 _pct(perf.get("mac_utilization_rtl"))])
    return (
        '<section id="performance"><h2>Cycles and MAC utilization per layer</h2>'
        f'<p class="note">Analytic: the cycle model (compiler/cycles.py). RTL: '
        f'{_e(perf.get("rtl_note", "not measured"))}. Peak '
        f'{_n(perf["peak_macs_per_cycle"])} MACs per cycle.</p>'
        + _legend(series) + "<h3>Cycles per layer</h3>" + bar_chart(cyc)
        + "<h3>MAC utilization per layer</h3>" + bar_chart(util)
        + _table(["layer", "MACs", "cycles (analytic)", "cycles (RTL)", "util. (analytic)",
                  "util. (RTL)"], rows)
        + "</section>")


def _resources(r: dict) -> str:
    head = '<section id="resources"><h2>Resources per module against the device</h2>'
    e = r.get("estimate")
    if not e:
        why = ("no FPGA board (--board sim)" if not r.get("board")
               else "run build.py with --estimate for the Yosys resource estimate")
        return head + f'<p class="note">The resource estimate was not run: {_e(why)}.</p></section>'
    cap = e["capacity"]
    keys = [k for k in RESOURCE_NAMES if cap.get(k)]
    mods = [m for m in e["modules"] if any(m["total"].get(k) for k in keys)]
    # Stacked bars of each resource, one segment per module, in percent of the capacity:
    # the modules with the largest share of some resource each a colour of their own, the
    # rest one segment.
    def share(m):
        return max(m["total"].get(k, 0) / max(e["total"][k], 1) for k in keys)

    ranked = sorted(mods, key=share, reverse=True)
    big = [m for m in ranked[:len(PALETTE) - 1] if share(m) >= 0.01]
    small = [m for m in mods if m not in big]
    series = [m["name"] for m in big] + (["other modules"] if small else [])
    values = [[100 * m["total"].get(k, 0) / cap[k] for m in big]
              + ([100 * sum(m["total"].get(k, 0) for m in small) / cap[k]] if small else [])
              for k in keys]
    chart = Chart("chart-resources", "Resources in percent of the device's capacity",
                  [RESOURCE_NAMES[k] for k in keys], series, values, stacked=True,
                  scale=max(100.0, *(sum(v) for v in values)), fmt="{:.1f}", unit=" %")
    rows = [[m["name"], m["instances"], *(_n(m["total"].get(k, 0)) for k in keys)]
            for m in mods]
    rows.append(["total", "", *(_n(e["total"][k]) for k in keys)])
    rows.append(["capacity", "", *(_n(cap[k]) for k in keys)])
    rows.append(["used", "", *(f"{100 * e['total'][k] / cap[k]:.1f} %" for k in keys)])
    over = e.get("over") or []
    return (head + f'<p class="note">Yosys estimate ({_e(e.get("yosys", ""))}, '
            'synth_xilinx, hierarchical: hw/estimate.py), not Vivado. Capacity: '
            f'{_e(e.get("capacity_source", ""))}.'
            + (f' <strong>Over capacity: {_e(", ".join(over))}.</strong>' if over else "")
            + "</p>" + _legend(series) + bar_chart(chart)
            + _table(["module", "instances", *(RESOURCE_NAMES[k] for k in keys)], rows)
            + "</section>")


SYSTEM_PARTS = (("mcu_cycles", "MCU computing"), ("bus_cycles", "bus"),
                ("wait_cycles", "MCU waiting"), ("accel_cycles", "accelerator"))
BUDGET = ("MCU computing", "bus", "accelerator", "MCU waiting beyond the accelerator")


def frame_budget(row: dict) -> list[int]:
    """A measured partition's frame alone (``latency_cycles``) split as :data:`BUDGET`: the
    core's computing, its bus transfers, the accelerator's busy cycles (the core waits
    meanwhile, or, in ``whole``, computes the next frame's part) and what the core waits
    beyond them (the interrupt, the polling)."""
    mcu, bus, acc = row["mcu_cycles"], row["bus_cycles"], row["accel_cycles"]
    return [mcu, bus, acc, max(row["latency_cycles"] - mcu - bus - acc, 0)]


def _system(r: dict) -> str:
    s = r.get("system")
    head = '<section id="system"><h2>The frame end to end: MCU, bus, accelerator</h2>'
    if not s:
        return head + '<p class="note">No system figures in report.json.</p></section>'
    parts = s["partitions"]
    measured = {k: v for k, v in parts.items() if v.get("measured")}
    rows = [[k, v["what"], _n(v.get("accel_cycles_analytic")),
             *(_n(v.get(key)) for key, _ in SYSTEM_PARTS),
             _n(v.get("latency_cycles")), _n(v.get("throughput_cycles")),
             _n(v.get("end_to_end_fps_10mhz"), 1)] for k, v in parts.items()]
    table = _table(["partition", "what", "accelerator (model)",
                    *(n for _, n in SYSTEM_PARTS), "latency", "throughput",
                    f"FPS at {s['clock_mhz']:g} MHz"], rows)
    note = (f'<p class="note">Cycles per frame, every clock at {s["clock_mhz"]:g} MHz. '
            f'{_e(s.get("method", ""))}; {_e(s["source"])}.</p>')
    if not measured:
        return (head + note + '<p class="note">No partition was measured end to end, so '
                "there is no frame budget to draw (python -m hw.system --record).</p>"
                + table + "</section>")
    # Each partition's frame as 100 %: the partitions differ by orders of magnitude.
    values = []
    for v in measured.values():
        budget = frame_budget(v)
        values.append([100 * x / (sum(budget) or 1) for x in budget])
    series = list(BUDGET)
    chart = Chart("chart-system", "Frame budget per partition, percent of the frame",
                  [f"{k} ({_n(v['latency_cycles'])} cycles)" for k, v in measured.items()],
                  series, values, stacked=True, scale=100.0, fmt="{:.1f}", unit=" %")
    return (head + note + '<p class="note">Each bar is one frame alone (its latency: the '
            "parts one after the other), split into the MCU computing, its bus transfers, "
            "the accelerator's busy cycles and the core's waiting beyond them.</p>"
            + _legend(series) + bar_chart(chart) + table + "</section>")


ENERGY_KINDS = ("array", "weights", "activations", "datapath")


def _energy(r: dict) -> str:
    e = r.get("energy")
    head = '<section id="energy"><h2>Energy per frame (a model, not a measurement)</h2>'
    if not e:
        return head + '<p class="note">No energy estimate in report.json.</p></section>'
    layers = e["layers"]
    io = e["io"]
    labels = [x["name"] for x in layers] + ["frame I/O (bus, buffers)"]
    values = [[x["energy_pj"][k] / 1e3 for k in ENERGY_KINDS] + [0.0] for x in layers]
    values.append([0.0, 0.0, io["energy_pj"]["buffers"] / 1e3, 0.0, io["energy_pj"]["bus"] / 1e3])
    series = [*ENERGY_KINDS, "bus"]
    chart = Chart("chart-energy", "Modelled energy per layer, nJ per frame", labels, series,
                  values, stacked=True, fmt="{:,.2f}", unit=" nJ")
    kinds = Chart("chart-energy-kinds", "Modelled energy per frame by event, nJ",
                  list(e["by_kind_pj"]), ["energy"],
                  [[v / 1e3] for v in e["by_kind_pj"].values()], fmt="{:,.1f}", unit=" nJ")
    t = e["table"]
    shown = {**t["values"], "sram_points": {f"{k} pJ/bit": v for k, v in
                                            t["values"].get("sram_pj_per_bit", {}).items()}}
    src = [[k, _fmt_value(shown.get(k)), v] for k, v in t["sources"].items()]
    per_mac = ("" if e.get("pj_per_mac") is None
               else f", <strong>{e['pj_per_mac']:.3f} pJ per MAC</strong> over "
                    f"{_n(e['macs_per_frame'])} MACs")
    return (
        head + f'<p class="note model">{_e(e["note"])}. Node: {_e(t["node"])}.</p>'
        f"<p><strong>{e['frame_pj'] / 1e6:,.3f} uJ per frame</strong>{per_mac}; loading the "
        f"model (once) moves {_n(io['load_words'])} bus words, "
        f"{e['model_load_pj'] / 1e3:,.1f} nJ on the bus. Bus per frame: "
        f"{_n(io['bus_words_in'])} words in, {_n(io['bus_words_out'])} out.</p>"
        + _legend(series) + bar_chart(chart) + bar_chart(kinds)
        + "<h3>Per-event energies and their sources</h3>"
        + _table(["value", "", "source"], src, text=True) + "</section>")


def _fmt_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return ", ".join(f"{k} {x:g}" for k, x in v.items())
    return f"{v:g}"


def render(report: dict) -> str:
    """The page for ``report`` (the dictionary of ``report.json``)."""
    if not isinstance(report, dict) or "config" not in report or "model" not in report:
        raise ValueError("not a build report: report.json of build.py has 'config' and "
                         "'model'")
    cfg = report["config"].get("name", "?")
    board = (report.get("board") or {}).get("name", "sim")
    title = f"CIM accelerator build report: {report['model'].get('path')} on {cfg} ({board})"
    body = [_summary(report)]
    if report.get("performance"):
        body.append(_performance(report["performance"]))
    body += [_resources(report), _system(report), _energy(report)]
    return ("<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{_e(title)}</h1>\n"
            '<p class="note">Generated by build.py from report.json (hw/report_html.py).</p>\n'
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def write(report: dict, path: Path) -> Path:
    """Write :func:`render` of ``report`` to ``path``; returns ``path``."""
    path = Path(path)
    path.write_text(render(report), encoding="utf-8")
    return path


BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
"""Executables :func:`find_browser` looks for on ``PATH`` (Debian's ``chromium-headless-shell``
first)."""


def find_browser() -> str | None:
    """A Chromium for Playwright to drive: ``$CIM_CHROMIUM``, else the first of
    :data:`BROWSERS` on ``PATH``; None when there is none (nothing is downloaded)."""
    env = os.environ.get("CIM_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(html: Path, png: Path, *, width: int = 1100) -> Path:
    """A full-page PNG of ``html`` in headless Chromium (Playwright with the system's
    browser, :func:`find_browser`)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found: apt-get install chromium-headless-shell (or set "
                           "CIM_CHROMIUM to a Chromium executable)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise RuntimeError("the screenshot needs Playwright: pip install -e '.[dev]'") from None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser)
        try:
            page = b.new_page(viewport={"width": width, "height": 800})
            page.goto(Path(html).resolve().as_uri())
            page.screenshot(path=str(png), full_page=True)
        except Error as e:
            raise RuntimeError(f"{browser}: {e.message}") from None
        finally:
            b.close()
    return Path(png)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hw.report_html",
                                 description="Write report.html beside a build's report.json")
    ap.add_argument("report", type=Path, help="report.json of build.py")
    ap.add_argument("--out", type=Path, help="output file (default: report.html beside it)")
    ap.add_argument("--screenshot", type=Path, metavar="PNG",
                    help="also a full-page PNG of the page (Playwright, system Chromium)")
    args = ap.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        out = write(report, args.out or args.report.with_name("report.html"))
        print(out)
        if args.screenshot:
            print(screenshot(out, args.screenshot))
    except (OSError, ValueError, RuntimeError) as e:
        ap.error(f"{args.report}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
