"""The HTML report in real headless Chromium: it renders, asks for nothing, and logs no errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Watched:
    """A page open in Chromium, and what it asked for and complained about meanwhile."""

    page: Any
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@contextmanager
def opened(page_path: Path) -> Iterator[Watched]:
    """The report open in headless Chromium, with every request and console error recorded; the
    browser is closed whatever the test's assertions do."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            watched = Watched(browser.new_page(viewport={"width": 1200, "height": 1000}))
            watched.page.on("request", lambda r: watched.requests.append(r.url))
            watched.page.on(
                "console",
                lambda m: watched.problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            watched.page.on("pageerror", lambda e: watched.problems.append(str(e)))
            yield watched
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by .ci/setup --tests")
def test_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    page_path = tmp_path / "report.html"
    page_path.write_text(htmlreport.render(report_data(tmp_path)))
    with opened(page_path) as watched:
        page = watched.page
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
        assert good.evaluate(background) == "rgb({}, {}, {})".format(*style.KIND_LOOK[style.Kind.GOOD].rgb)
        assert bad.evaluate(background) == "rgb({}, {}, {})".format(*style.KIND_LOOK[style.Kind.BAD].rgb)
        assert good.locator("small.backend").inner_text() == "venv"
        headline = page.locator("#verdict").inner_text()
        assert headline.startswith("Changed between 2.3.4 and 2.4.0: probe gradient_eager_plain")
        detail = page.locator("section.detail").first
        assert not detail.is_visible()  # folded until its cell is clicked
        bad.click()
        unfolded = page.locator("section.detail:target")
        assert unfolded.count() == 1 and unfolded.is_visible()
        chart = unfolded.locator("svg.chart").first
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        assert unfolded.locator("polyline").count() >= 3
        assert (
            unfolded.locator("details pre").count() == 1 and not unfolded.locator("details pre").is_visible()
        )
        # Test output stays out of the checkout (kept under pytest's tmp folder when a test fails).
        shot = tmp_path / "report-detail.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    assert watched.requests == [page_path.as_uri()], (
        f"the page asked for more than itself: {watched.requests}"
    )
    assert watched.problems == [], watched.problems


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by .ci/setup --tests")
def test_narrowing_section_renders_inert_in_chromium(tmp_path: Path) -> None:
    """ "Where it changed" with hostile text in every field: it renders, the diffs are coloured by
    their classes, and nothing in it runs, loads or links outside GitHub."""
    from playwright.sync_api import Dialog

    from test_narrow_report import hostile_narrowing
    from test_report import bisect_report
    from tfbisect.core.fsio import write_json_atomic

    write_json_atomic(tmp_path / "bisect" / "b.json", bisect_report(narrowing=hostile_narrowing()).to_dict())
    page_path = tmp_path / "report.html"
    page_path.write_text(htmlreport.render(report_data(tmp_path)))
    dialogs: list[str] = []
    with opened(page_path) as watched:
        page = watched.page

        def dialog(shown: Dialog) -> None:  # an alert() that ran: noted, and closed so the page goes on
            dialogs.append(shown.message)
            shown.dismiss()

        page.on("dialog", dialog)
        page.goto(page_path.as_uri())
        section = page.locator("#narrowing")
        assert section.is_visible()
        assert page.locator("script").count() == 0  # the excerpts' <script> stayed text
        assert "<script>alert(1)</script>" in section.inner_text()
        assert page.locator("#narrow-finding").inner_text().startswith("Narrowed: last good 2.4.0rc0")
        suspects = section.locator("div.suspect")
        assert suspects.count() == 2 and suspects.first.locator("h4").is_visible()
        background = "e => getComputedStyle(e).backgroundColor"
        added = section.locator("table.diff tr.d-add td.code").first.evaluate(background)
        removed = section.locator("table.diff tr.d-del td.code").first.evaluate(background)
        context = section.locator("table.diff tr.d-ctx td.code").first.evaluate(background)
        assert len({added, removed, context}) == 3
        keyword = section.locator("table.diff span.t-kw").first
        assert keyword.inner_text() == "def" and keyword.evaluate("e => getComputedStyle(e).color") != (
            section.locator("table.diff td.code").first.evaluate("e => getComputedStyle(e).color")
        )
        hrefs = section.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert hrefs and all(h.startswith("https://github.com/") for h in hrefs), hrefs
        # the hostile details-closer and the page's own folds: the bisection log's details still fold
        assert page.locator("details").count() == page.locator("details > summary").count()
        box = section.bounding_box()
        assert box is not None and box["width"] <= 1200
        assert section.evaluate("e => e.scrollWidth <= e.clientWidth")  # long words and lines wrap
        shot = tmp_path / "narrowing.png"
        section.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    assert watched.requests == [page_path.as_uri()], (
        f"the page asked for more than itself: {watched.requests}"
    )
    assert watched.problems == [] and dialogs == [], (watched.problems, dialogs)
