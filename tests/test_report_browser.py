"""The HTML report in real headless Chromium: it renders, asks for nothing, and logs no errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_report import report_data, write_bisect_log
from tfbisect.report import htmlreport, style

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background traffic is switched off, so any request the page makes is the page's.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by .ci/setup")
def test_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    write_bisect_log(tmp_path)
    page_path = tmp_path / "report.html"
    page_path.write_text(htmlreport.render(report_data(tmp_path)))
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(page_path.as_uri())
            cells = page.locator("table.matrix a.cell")
            assert cells.count() == 6
            assert all(cells.nth(i).is_visible() for i in range(6))
            colours = {cells.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(6)}
            assert len(colours) == 4  # good, bad, skip, failure: the probe's answer under the bisection
            # TF 2.2.3 and 2.21.0 both say "reproduced" (the verdict), but the question was the
            # probe's: match (good, green) in one and mismatch (bad, red) in the other.
            good = page.locator("table.matrix a.cell.good", has_text="verdict: reproduced")
            bad = page.locator("table.matrix a.cell.bad", has_text="verdict: reproduced")
            assert good.count() == 1 and bad.count() == 1
            background = "e => getComputedStyle(e).backgroundColor"
            assert good.evaluate(background) == "rgb({}, {}, {})".format(
                *style.KIND_LOOK[style.Kind.GOOD].rgb
            )
            assert bad.evaluate(background) == "rgb({}, {}, {})".format(*style.KIND_LOOK[style.Kind.BAD].rgb)
            assert good.locator("small.backend").inner_text() == "venv"
            headline = page.locator("#verdict").inner_text()
            assert headline.startswith("Changed between 2.3.4 and 2.4.0: probe gradient_eager_plain")
            detail = page.locator("section.detail").first
            assert not detail.is_visible()  # folded until its cell is clicked
            bad.click()
            opened = page.locator("section.detail:target")
            assert opened.count() == 1 and opened.is_visible()
            chart = opened.locator("svg.chart").first
            box = chart.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            assert opened.locator("polyline").count() >= 3
            assert (
                opened.locator("details pre").count() == 1 and not opened.locator("details pre").is_visible()
            )
            # Test output stays out of the checkout (kept under pytest's tmp folder when a test fails).
            shot = tmp_path / "report-detail.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert requests == [page_path.as_uri()], f"the page asked for more than itself: {requests}"
    assert problems == [], problems
