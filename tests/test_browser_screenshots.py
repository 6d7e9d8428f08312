"""Screenshots of the committed notebooks as a reader sees them: 01, 02 and 06 converted to HTML with their
saved outputs (nbconvert, no execution), rendered by Debian's headless Chromium through Playwright, saved as
full-page PNGs to `test-artifacts/screenshots/` (git-ignored). Each page must show its outputs, and the first
output's data label must name MovieLens: the notebooks are committed executed on the real data. A notebook
saved from a run on the synthetic data is reported as a skip, with the label it carries.

    .venv/bin/python -m pytest tests/test_browser_screenshots.py -m browser -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("HSTU_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
NOTEBOOKS = ["01_data_format", "02_attention_math", "06_training_ml1m"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def _first_output_text(nb: dict) -> str:
    """The text of the first code cell's outputs that has any (the data label sits there)."""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or not cell.get("outputs"):
            continue
        parts = []
        for out in cell["outputs"]:
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else str(text))
        return "".join(parts)
    return ""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium "
            "fonts-noto-cjk) or set HSTU_CHROMIUM; .ci/run installs it"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_renders_with_real_data_outputs(browser, name, tmp_path):
    import nbformat
    from nbconvert import HTMLExporter

    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    html, _ = HTMLExporter().from_notebook_node(nb)  # the saved outputs as they are: nothing is executed
    page_file = tmp_path / f"{name}.html"
    page_file.write_text(html, encoding="utf-8")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000, f"{shot} is suspiciously small: did the page render?"

    outputs = page.locator(".jp-OutputArea-output")
    assert outputs.count() > 0, f"{name}: the committed notebook shows no outputs; execute it and save it"
    body = page.inner_text("body")
    page.close()

    label = _first_output_text(json.loads(path.read_text(encoding="utf-8")))
    assert label, f"{name}: the first code cell has no saved output (the preset and data label go there)"
    if "MovieLens" not in label:
        assert "synthetic" in label or "dataset=synthetic" in label, (
            f"{name}: first output names no dataset: {label!r}"
        )
        pytest.skip(
            f"{name} was saved after a run on the synthetic data, not MovieLens: {label.strip()[-160:]!r}"
        )
    first_line = next(line for line in label.splitlines() if "MovieLens" in line)
    assert first_line.strip() in body, f"{name}: the data label {first_line!r} is not on the rendered page"
