"""The capacity risk HTML report renders in a real browser (headless Chromium), not just parses.

Chromium is a Debian package (``make chromium`` installs it). Without it the test is skipped
locally, but under CI (env CI set) a missing browser is a failure, so CI cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_reports import build_results_tree, execute_notebook, to_html

WINDOW = (1280, 2000)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: run `make chromium` first")
        pytest.skip("chromium not installed (run `make chromium`); CI unset, so skipping")
    return binary


def headless(chromium: str, html: Path, profile: Path, *options: str) -> list[str]:
    """Command opening ``html`` in headless Chromium with no network side channels (sync,
    updates, QUIC) and its own profile directory."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *options,
        html.resolve().as_uri(),
    ]


def screenshot(chromium: str, html: Path, png: Path, profile: Path) -> subprocess.CompletedProcess:
    """Headless screenshot of the page as a reader sees it."""
    command = headless(
        chromium, html, profile, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}"
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rendered_dom(chromium: str, html: Path, profile: Path) -> str:
    """The page's DOM after it loaded and its scripts and event handlers ran (a payload that
    became live has acted by then: an image's onerror fires before the load event)."""
    command = headless(chromium, html, profile, "--virtual-time-budget=5000", "--dump-dom")
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and "<body" in run.stdout, run.stderr[-2000:]
    return run.stdout


@pytest.mark.slow
def test_capacity_risk_html_renders_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    results = build_results_tree(tmp_path)
    notebook = execute_notebook("capacity_risk", results, tmp_path, top_n=3, sample_series=2)
    html = tmp_path / "capacity_risk.html"
    html.write_text(to_html(notebook))

    png = tmp_path / "capacity_risk.png"
    run = screenshot(chromium, html, png, tmp_path / "chromium-profile")
    assert png.exists(), f"no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"

    with Image.open(png) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    # A rendered report has text, tables, a red heatmap and blue fan charts: many colours and a
    # real share of non-white pixels. A blank or error page has a handful of colours.
    assert len(colours) > 200, f"only {len(colours)} distinct colours: page looks blank"
    non_white = (pixels < 245).any(axis=1).mean()
    assert non_white > 0.02, f"only {non_white:.1%} of the page is not white"
    reds = ((pixels[:, 0] > 150) & (pixels[:, 1] < 100) & (pixels[:, 2] < 100)).sum()
    assert reds > 100, "no red heatmap / critical-threshold pixels in the screenshot"
