"""The HTML report: every figure and summary table loads in a real (headless) browser."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from conftest import RESULTS, TEST_CONFIG, snakemake

pytestmark = pytest.mark.workflow
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def report(finished_run):
    path = finished_run / RESULTS / "report.html"
    snakemake(finished_run, "--configfile", str(TEST_CONFIG), "--report", str(path))
    return path


def test_every_report_item_loads_in_chromium(report, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(report.as_uri())
        results = page.evaluate("results")
        categories = page.evaluate("categories")
        assert {"Ridge paths", "Estimators", "Scaling laws", "Summary tables"} <= set(categories)
        assert all(k.startswith(f"{RESULTS}/") for k in results), list(results)  # one run's outputs only
        figures = [k for k in results if k.endswith((".png", ".svg"))]
        tables = [k for k in results if k.endswith(".csv")]
        assert len(figures) >= 20 and len(tables) >= 7
        for key, item in results.items():
            assert len(item["caption"]) > 80, f"{key} has no real caption"
        # labels make the report's tables filterable: what each entry covers
        for key, item in results.items():
            labels = item["labels"]
            assert {"dataset", "backbone", "weights"} <= set(labels), (key, labels)
            assert "kernel" in labels or key.endswith(("pretraining.png", "pretraining.svg")), (key, labels)
            assert list(labels)[0] in ("figure", "table"), (key, labels)
        # categories that mix kinds are split into subcategories
        assert {"E1 ridge paths", "E2 estimators", "E6 double descent", "E8 linearisation"} <= set(
            categories["Summary tables"])
        assert set(categories["Extensions"]) == {"E6 double descent", "E7 learning dynamics", "E8 linearisation"}
        shown = 0
        for category, groups in categories.items():
            for subcategory, keys in groups.items():
                page.goto(report.as_uri())
                page.get_by_text(category, exact=True).first.click()
                if len(groups) > 1:
                    page.get_by_text(subcategory, exact=True).first.click()
                shown += show_entries(page, results, keys, report.parents[len(Path(RESULTS).parts)])
        page.screenshot(path=str(tmp_path / "last.png"))
        browser.close()
    assert shown == len(figures)
    assert errors == []


def show_entries(page, results, keys, workdir) -> int:
    """Open every entry of the shown (sub)category; returns the number of figures shown.
    A table's eye link is a download of the embedded CSV: its bytes must be the file's."""
    shown = 0
    for key in keys:
        item = results[key]
        if item["labels"].get("format") == "svg":
            page.get_by_text("svg", exact=True).first.click()
        elif item["labels"].get("format") == "png":
            page.get_by_text("png", exact=True).first.click()
        label = item["labels"].get("figure") or item["labels"].get("table")
        eye = page.locator("tr", has_text=label).first.locator("a[iconname=eye]")
        if key.endswith(".csv"):
            href = eye.get_attribute("href")
            assert href.startswith("data:text/csv") and "base64," in href, (key, href[:80])
            assert base64.b64decode(href.split("base64,", 1)[1]) == (workdir / key).read_bytes(), key
            continue
        eye.click()
        mime = "png" if key.endswith(".png") else "svg"
        page.wait_for_function(
            f"Array.from(document.images).some(i => i.src.startsWith('data:image/{mime}') "
            "&& i.complete && i.naturalWidth > 300)"
        )
        shown += 1
    return shown
