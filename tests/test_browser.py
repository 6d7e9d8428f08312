"""Real-browser test: JupyterLab + headless Chromium run the overview and an exercise notebook.

It starts JupyterLab on 127.0.0.1 (a free port, a random token, a temporary HOME and progress file,
copies of the notebooks so nothing in the repository is modified), opens `notebooks/00_overview` in
Debian's Chromium driven by Playwright (never a downloaded browser), runs all cells, answers the quiz
(one wrong answer, then all right) and checks that the progress file changed and the checklist table
redrew; runs the learner and solution versions of an exercise notebook and checks their reports and that
the passing checks ticked their steps in the progress file; runs
`notebooks/02_attention_math` and moves the attention explorer's controls, checking the picture redraws.
Screenshots go to `test-artifacts/browser/` (git-ignored).

    .venv/bin/python -m pytest tests/test_browser.py -m browser -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("HSTU_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
EXERCISE = "02_attention"
VISIBLE = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in the active tab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y "
            "chromium) or set HSTU_CHROMIUM; .ci/run installs it"
        )
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    pytest.importorskip("ipywidgets", reason="ipywidgets is not installed")

    tmp = tmp_path_factory.mktemp("lab")
    home, root = tmp / "home", tmp / "root"
    (root / "notebooks").mkdir(parents=True)
    (root / "exercises" / "solutions").mkdir(parents=True)
    home.mkdir()
    # copies: running cells in the browser must never rewrite the repository's notebooks
    shutil.copy(ROOT / "notebooks" / "00_overview.ipynb", root / "notebooks")
    shutil.copy(ROOT / "notebooks" / "02_attention_math.ipynb", root / "notebooks")
    shutil.copy(ROOT / "exercises" / f"{EXERCISE}.ipynb", root / "exercises")
    shutil.copy(ROOT / "exercises" / "solutions" / f"{EXERCISE}.ipynb", root / "exercises" / "solutions")
    # quiet JupyterLab: no news poll, no update check (the test machine has no internet)
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # render every cell (JupyterLab 4 virtualises long notebooks), so that outputs can be read from the DOM
    tracker = home / "lab-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))

    progress_file = tmp / "progress.json"
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(
        os.environ,
        HOME=str(home),
        HSTU_PROGRESS_FILE=str(progress_file),
        HSTU_PRESET="small",
        TRITON_INTERPRET="1",
        OMP_NUM_THREADS="2",
        MPLBACKEND="Agg",
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        PYTHONPATH=str(ROOT),
    )
    log = tmp / "jupyter.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--ServerApp.disable_check_xsrf=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/api/status?token={token}", 60, proc, log)
        yield {"base": base, "token": token, "progress": progress_file, "root": root, "log": log}
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=5)
            proc.wait(timeout=15)
        except Exception:  # noqa: BLE001 - fall back to signalling our own process group
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(60_000)
            yield pg
        finally:
            browser.close()


def _open_and_run_all(page, lab, rel_path: str, done_text: str, timeout_ms: int = 90_000):
    """Open a notebook, wait for its kernel, run all cells and wait until `done_text` is displayed."""
    # `reset`: a fresh workspace, so the previous notebook's tab is not restored next to this one
    page.goto(f"{lab['base']}/lab/tree/{rel_path}?token={lab['token']}&reset")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", state="visible")
    # the kernel is ready when the app says so (the toolbar's status is a hidden detail that moves)
    idle = f"""() => {{
        const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        return !!w && w.context && w.context.path === {json.dumps(rel_path)}
            && w.sessionContext?.session?.kernel?.status === 'idle';
    }}"""
    page.wait_for_function(idle, timeout=60_000)
    # the stored outputs already hold `done_text`: clear them, so that waiting for it means something
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.wait_for_function(
        f"() => !document.querySelector('{VISIBLE}').innerText.includes({json.dumps(done_text)})"
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator(f"{VISIBLE} .jp-OutputArea-output", has_text=done_text).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(idle, timeout=timeout_ms)


def _outputs_text(page) -> str:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll(
        '"""
        + VISIBLE
        + """ .jp-OutputArea-output')).map(e => e.innerText).join('\\n')"""
    )


def _wait_for_progress(progress_file, before, item_id, timeout=20.0):
    """The saved state once the progress file has changed and holds `item_id` as done (None on time-out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress_file.exists() and progress_file.read_text() != before:
            state = json.loads(progress_file.read_text())
            if state["items"].get(item_id, {}).get("done"):
                return state
        time.sleep(0.2)
    return None


def test_overview_quiz_ticks_an_item(page, lab):
    from hstu_tutorial.quiz_bank import QUIZZES

    progress_file = lab["progress"]
    before = progress_file.read_text() if progress_file.exists() else None
    _open_and_run_all(page, lab, "notebooks/00_overview.ipynb", "check_ratings_table")
    table = page.locator(f"{VISIBLE} .hstu-checklist").first
    table.wait_for(state="visible", timeout=30_000)
    assert table.locator(".hstu-checklist-item").count() == 18  # the card's 17 items and one beyond it
    assert table.locator("input").count() == 0  # nothing to tick by hand
    row = table.locator('.hstu-checklist-item[data-id="basics.recsys"]')
    assert row.get_attribute("data-done") == "0"

    form = page.locator(f"{VISIBLE} .hstu-quiz").first
    form.wait_for(state="visible", timeout=30_000)
    form.scroll_into_view_if_needed()
    questions = form.locator(".hstu-quiz-question")
    key = [q.answer for q in QUIZZES["basics.recsys"]]
    assert questions.count() == len(key)
    feedback = form.locator(".hstu-quiz-feedback")
    # one wrong answer first: explained, nothing ticked
    for i, k in enumerate(key):
        choice = k if i else (k + 1) % questions.nth(i).locator("input[type=radio]").count()
        questions.nth(i).locator("input[type=radio]").nth(choice).check()
    form.locator(".hstu-quiz-submit").click()
    feedback.filter(has_text=f"{len(key) - 1} of {len(key)} right").wait_for(timeout=20_000)
    assert (progress_file.read_text() if progress_file.exists() else None) == before
    # then all right: the item is ticked, the file changes, the table above redraws
    questions.nth(0).locator("input[type=radio]").nth(key[0]).check()
    form.locator(".hstu-quiz-submit").click()
    feedback.filter(has_text="checklist: ticked basics.recsys").wait_for(timeout=20_000)
    state = _wait_for_progress(progress_file, before, "basics.recsys")
    form.screenshot(path=str(ARTIFACTS / "00_overview_quiz.png"))
    assert state is not None, "the progress file did not change after passing the quiz"
    assert state["items"]["basics.recsys"]["by"] == "quiz"
    page.locator(f'{VISIBLE} .hstu-checklist-item[data-id="basics.recsys"][data-done="1"]').first.wait_for(
        timeout=20_000
    )
    table.screenshot(path=str(ARTIFACTS / "00_overview_checklist.png"))
    page.screenshot(path=str(ARTIFACTS / "00_overview.png"))
    text = _outputs_text(page)
    assert "not attempted yet" in text and "log10" in text  # the checks' demo cell ran in the browser
    assert "Traceback" not in text


def _check_calls(notebook: str) -> int:
    """How many `checks.check_...(` calls the notebook's code cells make (one report line each)."""
    nb = json.loads((ROOT / notebook).read_text())
    return sum("".join(c["source"]).count("checks.check_") for c in nb["cells"] if c["cell_type"] == "code")


def test_exercise_notebooks_run_in_the_browser(page, lab):
    learner, solution = f"exercises/{EXERCISE}.ipynb", f"exercises/solutions/{EXERCISE}.ipynb"
    calls = _check_calls(learner)
    assert calls >= 3 and calls == _check_calls(solution)
    last_output = "for both users: True"  # printed by the notebook's last code cell
    _open_and_run_all(page, lab, learner, last_output)
    text = _outputs_text(page)
    page.screenshot(path=str(ARTIFACTS / f"{EXERCISE}_learner.png"))
    assert text.count("not attempted yet") == calls, text[-2000:]
    assert "Traceback" not in text

    before = lab["progress"].read_text() if lab["progress"].exists() else None
    _open_and_run_all(page, lab, solution, last_output)
    text = _outputs_text(page)
    page.screenshot(path=str(ARTIFACTS / f"{EXERCISE}_solution.png"))
    assert text.count("✓ check_") == calls, text[-2000:]
    state = _wait_for_progress(lab["progress"], before, "core.attention.time_bucket")
    assert state is not None, "the progress file did not change after the exercise checks passed"
    for item_id in (
        "core.attention.softmax_attention",
        "core.attention.hstu_attention",
        "core.attention.time_bucket",
    ):
        assert state["items"][item_id]["done"], item_id
        assert state["items"][item_id]["by"].startswith("check_")


def test_attention_explorer_redraws_in_the_browser(page, lab):
    _open_and_run_all(
        page,
        lab,
        "notebooks/02_attention_math.ipynb",
        "keys): (",  # printed; not in the code
        timeout_ms=150_000,
    )
    explorer = page.locator(f"{VISIBLE} .hstu-attention-explorer").first
    explorer.wait_for(state="visible", timeout=30_000)
    explorer.scroll_into_view_if_needed()
    caption = explorer.locator(".hstu-attention-caption")
    # the bytes of the picture on screen, as a data URL (the Image widget's src is a blob: URL)
    png_js = """async el => { const img = el.querySelector('img.widget-image');
        if (!img || !img.src || !img.complete || !img.naturalWidth) return null;
        const blob = await (await fetch(img.src)).blob();
        return await new Promise(ok => { const r = new FileReader(); r.onload = () => ok(r.result);
                                         r.readAsDataURL(blob); }); }"""

    def picture(expected_caption: str, not_in: tuple = ()) -> str:
        """Wait until the caption reads `expected_caption` and a drawn picture not in `not_in` is shown."""
        caption.filter(has_text=expected_caption).wait_for(timeout=30_000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            png = explorer.evaluate(png_js)
            if png and png not in not_in:
                return png
            time.sleep(0.2)
        raise AssertionError(f"the picture did not change for {expected_caption!r}")

    first_caption = caption.inner_text()
    assert first_caption.startswith("user ") and " · layer 0 · head 0 · " in first_caption, first_caption
    first = picture(first_caption)
    assert first.startswith("data:image/png"), first[:40]

    select = explorer.locator(".widget-dropdown select")
    users = [u.replace("\xa0", " ") for u in select.locator("option").all_inner_texts()]  # ipywidgets: nbsp
    assert len(users) >= 2 and first_caption.startswith(users[0] + " · "), (users, first_caption)
    select.select_option(index=1)
    second = picture(f"{users[1]} · layer 0 · head 0", (first,))

    layer_handle = explorer.locator(".widget-hslider").nth(0).locator(".noUi-handle")
    head_handle = explorer.locator(".widget-hslider").nth(1).locator(".noUi-handle")
    layer_handle.focus()
    page.keyboard.press("ArrowRight")  # noUiSlider's keyboard step: layer 0 -> 1
    third = picture(f"{users[1]} · layer 1 · head 0", (first, second))
    if head_handle.get_attribute("aria-valuemax") not in ("0", "0.0"):  # the GPU preset has several heads
        head_handle.focus()
        page.keyboard.press("ArrowRight")
        picture(f"{users[1]} · layer 1 · head 1", (first, second, third))
    else:  # the small preset's model has one head: the slider is shown disabled
        assert explorer.locator(".widget-hslider").nth(1).locator("[disabled]").count() > 0
    explorer.screenshot(path=str(ARTIFACTS / "02_explorer.png"))

    # back to the first user and layer 0 (and head 0): the first picture comes back, byte for byte
    select.select_option(index=0)
    layer_handle.focus()
    page.keyboard.press("Home")
    head_handle.focus()
    page.keyboard.press("Home")
    assert picture(first_caption, (second, third)) == first
    text = _outputs_text(page)
    assert "Traceback" not in text and "ipywidgets is not installed" not in text
