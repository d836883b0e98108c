"""The run report: what render_report puts on the page, and that a real browser
draws it (headless Chromium driven over the DevTools protocol)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pytest

from factory import columns as C
from factory import report
from factory.storage import read_bytes, resolve

HOSTILE_COPY = '<script>document.title="pwned"</script>Cozy & warm "now" <b>50%</b> off'
HOSTILE_TITLE = (
    "<img src=x onerror=\"document.title='pwned'\">Evil</td></tr></table><script>alert(1)</script>"
)
HOSTILE_BRAND = 'Brand" onmouseover="alert(1)'


def make_copies() -> pa.Table:
    """Two channels: push (5 rows, limit 100, one over) and sms (4 rows, limit 160)."""
    rows = []

    def add(i, channel, status, text, length, limit, product, locale="en-US", reasons=()):
        rows.append(
            {
                C.ROW_ID: f"r{i:03d}",
                C.CHANNEL: channel,
                C.LOCALE: locale,
                C.STATUS: status,
                C.REASONS: list(reasons),
                C.TEXT: text,
                C.COPY_LENGTH: length,
                C.COPY_LENGTH_LIMIT: limit,
                C.PRODUCT_ID: product,
                C.USER_ID: f"U-SECRET-{i}",
            }
        )

    add(1, "push", "accepted", HOSTILE_COPY, 40, 100, "P1")
    add(2, "push", "accepted", "Fresh linen for your bedroom.", 29, 100, "P2")
    add(3, "push", "rejected", "x" * 130, 130, 100, "P1", reasons=["length_exceeded"])
    add(4, "push", "review", "Maybe the best lamp", 19, 100, "P2", reasons=["risky_claim"])
    add(5, "push", "accepted", "温暖舒适的毛巾", 7, 100, "P3", locale="zh-CN")
    add(6, "sms", "accepted", "Lamp sale today. Reply STOP to opt out.", 40, 160, "P2")
    add(7, "sms", "rejected", "Lamp sale", 9, 160, "P2", reasons=["truncated", "unsupported_number"])
    add(8, "sms", "accepted", "Towels in stock.", 16, 160, "P3")
    add(9, "sms", "accepted", None, None, 160, "P9")  # no text, no length: skipped by the histogram
    schema = pa.schema(
        [
            (C.ROW_ID, pa.string()),
            (C.CHANNEL, pa.string()),
            (C.LOCALE, pa.string()),
            (C.STATUS, pa.string()),
            (C.REASONS, pa.list_(pa.string())),
            (C.TEXT, pa.string()),
            (C.COPY_LENGTH, pa.int32()),
            (C.COPY_LENGTH_LIMIT, pa.int32()),
            (C.PRODUCT_ID, pa.string()),
            (C.USER_ID, pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def make_products() -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                C.PRODUCT_ID: "P1",
                "title": HOSTILE_TITLE,
                "category": "home",
                "brand": HOSTILE_BRAND,
                "price": 19.99,
                "currency": "USD",
                "description": "d" * 20_000,
                "attributes": json.dumps({"material": "<i>linen</i>", "color": "sand"}),
            },
            {
                C.PRODUCT_ID: "P2",
                "title": "Nook Lamp",
                "category": "home",
                "brand": "Nook",
                "price": 49.0,
                "currency": "USD",
                "description": "A lamp.",
                "attributes": json.dumps({"material": "ceramic"}),
            },
            {
                C.PRODUCT_ID: "P3",
                "title": "云朵毛巾",
                "category": "bath",
                "brand": "云朵",
                "price": 89.0,
                "currency": "CNY",
                "description": "毛巾。",
                "attributes": json.dumps({"material": "纯棉"}, ensure_ascii=False),
            },
        ]
    )


def make_summary(progress: Optional[list] = None) -> dict[str, Any]:
    summary = {
        "run_id": "2026-11-23_all",
        "run_date": "2026-11-23",
        "campaign": "all",
        "attempt": 1,
        "rows_written": 9,
        "dead_letters": 2,
        "seconds": 300.0,
        "model": "bundled:<SmolLM2>",
        "device": "cpu",
        "quality": {
            "rows": 9,
            "status": {"accepted": 6, "review": 1, "rejected": 2},
            "status_share": {"accepted": 0.6667, "review": 0.1111, "rejected": 0.2222},
            "status_by_channel": {
                "push": {"accepted": 3, "review": 1, "rejected": 1},
                "sms": {"accepted": 3, "review": 0, "rejected": 1},
            },
            "reasons": {"length_exceeded": 1, "truncated": 1, "unsupported_number": 1, "risky_claim": 1},
            "before_repair": {
                "status_share": {"accepted": 0.4, "review": 0.1, "rejected": 0.5},
                "reasons": {"length_exceeded": 3, "truncated": 1, "<wrong_language>": 2},
            },
            "repair": {
                "attempted": 3,
                "outcome": {"accepted": 1, "review": 0, "rejected": 2},
                "fixed_share": 0.3333,
            },
            "review_queue": {
                "rows": 1,
                "files": [{"path": "review/part-0.parquet", "rows": 1, "bytes": 900}],
            },
            "corpus": {
                "distinct_2": 0.74,
                "attribute_coverage": 0.4,
                "length_compliance": 0.89,
                "numeric_fidelity": {"mean": 0.79},
            },
        },
        "config": {
            "quality": {
                "limits": {
                    "push": {"unit": "graphemes", "max": 100},
                    "sms": {"unit": "sms_segments", "max": 1},
                }
            }
        },
    }
    if progress is not None:
        summary["progress"] = progress
    return summary


PROGRESS = [
    {"t": 60.0, "phase": "first drafts", "rows_done": 2, "output_tokens": 120},
    {"t": 120.0, "phase": "first drafts", "rows_done": 6, "output_tokens": 400},
    {"t": 180.0, "phase": "repair", "rows_done": 8, "output_tokens": 520},
    {"t": 240.5, "phase": "repair", "rows_done": 9, "output_tokens": 600},
]


class Dom(HTMLParser):
    """Start tags with their attributes, and the text, as the HTML parser sees them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, Optional[str]]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, Optional[str]]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def _chart_tags(page: str, chart: str) -> Dom:
    """The part of the page inside one chart's <figure>."""
    start = page.index(f'<figure class="chart" id="chart-{chart}"')
    return Dom(page[start : page.index("</figure>", start)])


# --- render_report: content and escaping -----------------------------------------------


def test_untrusted_text_is_escaped_everywhere():
    page = report.render_report(make_summary(PROGRESS), make_copies(), make_products())
    dom = Dom(page)
    # The only elements are the ones the report makes: no script, no img, no event handler.
    assert not dom.find("script") and not dom.find("img") and not dom.find("b", id="x")
    assert not [a for _, a in dom.tags if any(k.startswith("on") for k in a)]
    assert "<script" not in page.lower()
    text = "".join(dom.text)
    assert HOSTILE_COPY in text  # shown, as text
    assert HOSTILE_TITLE in text
    assert HOSTILE_BRAND in text
    assert "material: <i>linen</i>" in text
    assert "&lt;wrong_language&gt;" in page and "bundled:&lt;SmolLM2&gt;" in page


def test_no_user_data_and_no_long_descriptions():
    page = report.render_report(make_summary(PROGRESS), make_copies(), make_products())
    assert "U-SECRET" not in page and "user_id" not in page
    assert "d" * 200 not in page  # descriptions are not shown


def test_page_is_self_contained():
    page = report.render_report(make_summary(PROGRESS), make_copies(), make_products())
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert urls == ["data:,"]
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "@import" not in page and "url(" not in page
    csp = Dom(page).find("meta", http_equiv="Content-Security-Policy")[0]["content"]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_status_chart_has_one_bar_per_channel_with_its_counts():
    dom = _chart_tags(report.render_report(make_summary(), make_copies(), make_products()), "status")
    bars = dom.find("g", **{"class": "bar"})
    assert [b["data-channel"] for b in bars] == ["push", "sms"]
    assert [b["data-total"] for b in bars] == ["5", "4"]
    segs = [(s["data-status"], s["data-count"]) for s in dom.find("rect", **{"class": "seg"})]
    # Zero counts draw nothing: sms has no review segment.
    assert segs == [
        ("accepted", "3"),
        ("review", "1"),
        ("rejected", "1"),
        ("accepted", "3"),
        ("rejected", "1"),
    ]
    widths = [float(s["width"]) for s in dom.find("rect", **{"class": "seg"})]
    assert sum(widths[:3]) == pytest.approx(sum(widths[3:]))  # every bar is the full width


def test_reasons_chart_has_one_bar_per_reason_sorted_by_count():
    dom = _chart_tags(report.render_report(make_summary(), make_copies(), make_products()), "reasons")
    bars = dom.find("g", **{"class": "bar"})
    assert len(bars) == 5  # four final reasons plus one seen only before repair
    assert bars[0]["data-reason"] == "length_exceeded" and bars[0]["data-before"] == "3"
    assert {b["data-reason"]: b["data-count"] for b in bars}["<wrong_language>"] == "0"
    assert (
        len(dom.find("rect", **{"class": "after"})) == 5 and len(dom.find("rect", **{"class": "before"})) == 5
    )


def test_length_chart_counts_every_measured_row_and_marks_the_limit():
    page = report.render_report(make_summary(), make_copies(), make_products())
    dom = _chart_tags(page, "length")
    panels = dom.find("div", **{"class": "panel"})
    assert [(p["data-channel"], p["data-rows"], p["data-over"]) for p in panels] == [
        ("push", "5", "1"),
        ("sms", "3", "0"),
    ]  # the row without a length is skipped
    assert [line["data-limit"] for line in dom.find("line", **{"class": "limit"})] == ["100", "160"]
    bins = dom.find("rect", **{"class": "bin"})
    assert sum(int(b["data-count"]) for b in bins) == 8
    # A bin is wholly within or wholly over the limit: the limit is a bin edge.
    for b in bins:
        assert int(b["data-over"]) in (0, int(b["data-count"]))
    push = Dom(page[page.index('data-channel="push" data-rows') : page.index('data-channel="sms" data-rows')])
    for b in push.find("rect", **{"class": "bin"}):
        assert int(b["data-hi"]) <= 100 or int(b["data-lo"]) > 100  # no bin straddles the limit
    over_bins = [b for b in bins if int(b["data-over"])]
    assert len(over_bins) == 1 and 100 < int(over_bins[0]["data-lo"]) <= 130 <= int(over_bins[0]["data-hi"])
    assert "1 over the limit of 100" in page and "129–135 graphemes: 1 copies" in page
    # The SMS rows' limit (160 characters) is not the configured one (1 segment): no unit is claimed.
    assert "sms_segments" not in page


def test_histogram_puts_an_edge_after_the_limit():
    width, bins = report._histogram([0, 1, 99, 100, 101, 250], 100)
    assert sum(b[2] + b[3] for b in bins) == 6
    assert [b for b in bins if b[0] <= 100 <= b[1]][0][1] == 100  # the bin holding the limit ends there
    assert sum(b[3] for b in bins) == 2 and all(b[2] == 0 or b[3] == 0 for b in bins)


def test_throughput_chart_has_one_point_per_sample():
    dom = _chart_tags(
        report.render_report(make_summary(PROGRESS), make_copies(), make_products()), "throughput"
    )
    svgs = [a["data-chart"] for t, a in dom.tags if t == "svg"]
    assert svgs == ["throughput-rows", "throughput-tokens"]
    points = dom.find("circle", **{"class": "point"})
    assert len(points) == 8  # 4 samples x (rows, token rate)
    assert [p["data-value"] for p in points[:4]] == ["2", "6", "8", "9"]
    # Token rate between samples: 120/60, 280/60, 120/60, 80/60.5
    assert [float(p["data-value"]) for p in points[4:]] == pytest.approx(
        [2.0, 280 / 60, 2.0, 80 / 60.5], rel=1e-4
    )
    assert len(dom.find("polyline", **{"class": "line"})) == 2


@pytest.mark.parametrize("progress", [None, [], [{"t": "soon"}, "junk", {"rows_done": 3}]])
def test_no_progress_says_so_instead_of_an_empty_chart(progress):
    summary = make_summary()
    page = report.render_report(summary, make_copies(), make_products(), progress)
    dom = _chart_tags(page, "throughput")
    assert "no throughput samples" in "".join(dom.text)
    assert not dom.find("svg") and not dom.find("circle")


def test_progress_argument_defaults_to_the_summary():
    page = report.render_report(make_summary(PROGRESS[:2]), make_copies(), make_products())
    assert len(_chart_tags(page, "throughput").find("circle", **{"class": "point"})) == 4


def test_samples_take_statuses_in_turn_per_channel():
    page = report.render_report(make_summary(), make_copies(), make_products(), samples_per_channel=3)
    rows = Dom(page).find("tr", **{"class": "sample"})
    assert [(r["data-channel"], r["data-status"]) for r in rows] == [
        ("push", "accepted"),
        ("push", "review"),
        ("push", "rejected"),
        ("sms", "accepted"),
        ("sms", "rejected"),
        ("sms", "accepted"),
    ]
    assert "19.99 USD" in page and "89.00 CNY" in page and "material: 纯棉" in page


def test_empty_run_renders_every_section():
    empty = make_copies().slice(0, 0)
    summary = {"run_id": "r", "quality": {}}
    page = report.render_report(summary, empty, make_products().slice(0, 0))
    for chart in ("status", "reasons", "length", "throughput"):
        assert f'id="chart-{chart}"' in page
    assert "no rows" in page and "no copies to measure" in page and "no throughput samples" in page


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="no column status"):
        report.render_report(make_summary(), make_copies().drop_columns([C.STATUS]), make_products())


def test_large_string_product_ids_are_matched():
    products = make_products()
    products = products.set_column(0, C.PRODUCT_ID, products[C.PRODUCT_ID].cast(pa.large_string()))
    assert "Nook Lamp" in report.render_report(make_summary(), make_copies(), products)


def test_write_report_puts_it_beside_the_summary(tmp_path):
    run_dir = resolve(str(tmp_path / "attempt=0001"))
    written = report.write_report(run_dir, make_summary(PROGRESS), make_copies(), make_products())
    data = read_bytes(run_dir.join(report.REPORT))
    assert written == {"file": "report.html", "bytes": len(data)}
    assert data.decode().startswith("<!DOCTYPE html>")


def test_write_report_to_s3(s3_server, s3_bucket, s3_client):
    run_dir = resolve(f"s3://{s3_bucket}/runs/attempt=0001", s3_endpoint=s3_server)
    report.write_report(run_dir, make_summary(), make_copies(), make_products())
    head = s3_client.head_object(Bucket=s3_bucket, Key="runs/attempt=0001/report.html")
    assert head["ContentType"] == "text/html; charset=utf-8"


# --- A real browser --------------------------------------------------------------------

CHROMIUM_MISSING = (
    "chromium is not installed: the report's browser test needs it. Install it with "
    "`apt-get update && apt-get install -y chromium` (Debian/Ubuntu; `make test` does this) "
    "or set CHROMIUM=/path/to/chrome."
)


def chromium_binary() -> str:
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.fail(CHROMIUM_MISSING)  # fail, not skip: CI must not pass without the browser check
    return binary


class DevTools:
    """Headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe:
    the browser reads commands on fd 3 and writes replies on fd 4, NUL-separated JSON)."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def move_fds():  # in the child, before exec: the pipe ends become fds 3 and 4
            r, w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1200,900",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            preexec_fn=move_fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                break
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._cond:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> dict:
        self._next_id += 1
        msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"chromium gave no answer to {method}: {self._stderr()}")
                self._cond.wait(min(left, 1.0))
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.get("method") == method and event.get("sessionId") == session:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"chromium never sent {method}: {self._stderr()}")
                self._cond.wait(min(left, 1.0))

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:]

    def close(self):
        try:
            if self.proc.poll() is None:
                self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        self._reader.join(timeout=5)
        os.close(self._from_child)


# Measured in the page after load: every chart's SVG size, its drawn shapes, what scripts exist.
MEASURE = """(() => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const shapes = svg => [...svg.querySelectorAll('rect, circle, polyline')].map(el => {
      const b = el.getBBox(); return {tag: el.tagName, cls: el.getAttribute('class'), w: b.width, h: b.height,
                                       visible: getComputedStyle(el).visibility !== 'hidden'}; });
  return {
    title: document.title,
    scripts: document.querySelectorAll('script').length,
    images: document.querySelectorAll('img').length,
    svgs: [...document.querySelectorAll('svg[data-chart]')].map(svg => ({chart: svg.dataset.chart,
        size: box(svg), shapes: shapes(svg)})),
    copies: [...document.querySelectorAll('td.copy')].map(td => td.textContent),
    titles: [...document.querySelectorAll('td.facts b')].map(b => b.textContent),
    throughput: document.querySelector('#chart-throughput').textContent,
    height: document.documentElement.scrollHeight,
  };
})()"""


def open_in_browser(path: Path, screenshot: Path, profile: Path) -> tuple[dict, list[dict]]:
    """Load ``path`` in headless Chromium; return the measurements and every console
    message, error or warning the page produced; save a full-page screenshot."""
    browser = DevTools(chromium_binary(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": path.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", session)
        result = browser.send(
            "Runtime.evaluate", {"expression": MEASURE, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"measuring the page failed: {result['exceptionDetails']}")
        measured = result["result"]["value"]
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": measured["height"], "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        messages = [
            e
            for e in browser.events
            if e.get("sessionId") == session
            and e["method"] in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded")
        ]
        return measured, messages
    finally:
        browser.close()


def test_chromium_draws_every_chart_and_runs_nothing(tmp_path):
    run_dir = resolve(str(tmp_path / "run"))
    report.write_report(run_dir, make_summary(PROGRESS), make_copies(), make_products())
    page_path = tmp_path / "run" / report.REPORT
    shot = Path(os.environ.get("REPORT_SCREENSHOT") or tmp_path / "report.png")
    measured, messages = open_in_browser(page_path, shot, tmp_path / "profile")

    assert messages == []  # no console output at all: no errors, no CSP violations
    assert measured["scripts"] == 0 and measured["images"] == 0
    assert measured["title"] == "Run report 2026-11-23_all"  # the hostile copy did not retitle the page
    charts = [s["chart"] for s in measured["svgs"]]
    assert charts == ["status", "reasons", "length", "length", "throughput-rows", "throughput-tokens"]
    for svg in measured["svgs"]:
        width, height = svg["size"]
        assert width > 100 and height > 50, svg
        drawn = [s for s in svg["shapes"] if s["w"] > 0 and s["h"] > 0 and s["visible"]]
        assert drawn, f"{svg['chart']}: nothing drawn"
    by_chart = {}
    for svg in measured["svgs"]:
        by_chart.setdefault(svg["chart"], []).extend(svg["shapes"])
    assert len([s for s in by_chart["status"] if s["cls"] == "seg" and s["w"] > 0]) == 5
    assert (
        len([s for s in by_chart["reasons"] if s["cls"] == "before" and s["w"] > 0]) == 3
    )  # 2 were 0 before
    assert len([s for s in by_chart["throughput-rows"] if s["tag"] == "circle" and s["w"] > 0]) == 4
    assert len([s for s in by_chart["throughput-rows"] if s["tag"] == "polyline" and s["w"] > 0]) == 1
    # Hostile text is on the page as text.
    assert HOSTILE_COPY in measured["copies"]
    assert HOSTILE_TITLE in measured["titles"]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_chromium_shows_the_empty_throughput_message(tmp_path):
    page_path = tmp_path / "report.html"
    page_path.write_text(
        report.render_report(make_summary([]), make_copies(), make_products()), encoding="utf-8"
    )
    measured, messages = open_in_browser(page_path, tmp_path / "empty.png", tmp_path / "profile")
    assert messages == []
    assert "no throughput samples" in measured["throughput"]
    assert [s["chart"] for s in measured["svgs"]] == ["status", "reasons", "length", "length"]
