"""The explorer in JupyterLab, in a real browser: run the notebook, type a case, check its risk, edit it.

Starts ``jupyter lab`` (this environment's) on a free port of 127.0.0.1 with a random token, opens
``notebooks/07_explorer.ipynb`` in headless Chromium driven by Playwright (Debian's ``chromium``, not Playwright's
own browser download), runs all cells, waits for the widgets, types a collapse-prone case into the free-text inputs,
clicks "Check risk", "Edit" and "Undo" and asserts on what the widgets show. The server (and so its kernel) is stopped at
the end, also on failure.

The notebook is opened from a copy in a temporary folder laid out as the repository (``notebooks/07_explorer.ipynb``),
so that the committed notebook never gets outputs; a cell after its parameters cell sets the run's sizes, as
papermill would. By default the edit is a smoke run (3 v* steps, 8 ME-PPL sentences).

    ROME_COLLAPSE_BROWSER_FULL=1    the model's own v* steps and all 50 ME-PPL sentences
    ROME_COLLAPSE_SCREENSHOT=PATH   where the screenshot goes (relative to the repository; default
                                    build/browser/07_explorer.png; a failure's goes to build/browser/)

The committed figure comes from
``ROME_COLLAPSE_BROWSER_FULL=1 ROME_COLLAPSE_SCREENSHOT=figures/07_explorer.png pytest tests/test_browser.py``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from rome_collapse.config import repo_root

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e .[dev])")

REPO = repo_root()
NOTEBOOK = "notebooks/07_explorer.ipynb"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
# The network here is closed: without these flags Chromium waits on lookups and updates it cannot make.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FULL = os.environ.get("ROME_COLLAPSE_BROWSER_FULL", "") not in ("", "0")
SCREENSHOT = REPO / (os.environ.get("ROME_COLLAPSE_SCREENSHOT") or "build/browser/07_explorer.png")  # relative: to the repo
# The case typed into the inputs: curated case 1, collapse-prone (the subject is the prompt's first token).
CASE = {"prompt": "{}'s capital city is", "subject": "Germany", "target-new": "Madrid", "target-true": "Berlin"}
OVERRIDES = {"case_id": None, "setting": "paper", "v_steps": None if FULL else 3, "ppl_sentences": None if FULL else 8}
# JupyterLab's own settings for this run: no autosave, no news or update checks, every cell rendered, the
# notebook's kernel started without asking.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
}
SECOND = 1000  # Playwright counts in milliseconds
pytestmark = [pytest.mark.model,  # the explorer notebook loads the default model
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: install Debian's `chromium` package "
                                                          "(apt-get install chromium); .ci/run installs it")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_copy(root: Path) -> None:
    """The explorer notebook under ``root/notebooks``, with the run's parameters in a cell after its own."""
    nb = json.loads((REPO / NOTEBOOK).read_text())
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(f"{k} = {v!r}\n" for k, v in OVERRIDES.items())
    nb["cells"].insert(at + 1, {"cell_type": "code", "id": "injected-parameters", "execution_count": None,
                                "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": source})
    (root / "notebooks").mkdir(parents=True)
    (root / NOTEBOOK).write_text(json.dumps(nb, indent=1))


@contextmanager
def jupyter_lab(tmp_path: Path):
    """A JupyterLab server on 127.0.0.1 with a token, serving a copy of the notebook; stopped on exit, whatever
    happened."""
    root, home = tmp_path / "root", tmp_path / "jupyter"
    notebook_copy(root)
    settings = home / "settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_DATA_DIR": str(home / "data"),  # the kernel is still found in this environment's share/jupyter
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "IPYTHONDIR": str(home / "ipython")}
    port, token = free_port(), secrets.token_hex(16)
    log_path = tmp_path / "jupyter.log"
    jupyter = Path(sys.executable).parent / "jupyter"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lab = {"url": f"http://127.0.0.1:{port}", "token": token, "log": log_path}
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({server.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                api(lab, "GET", "/api/status")
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer in 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield lab
    finally:
        stop(server)


def api(lab: dict, method: str, path: str, body: dict | None = None) -> dict:
    """One call to the server's REST API, with the token."""
    request = urllib.request.Request(lab["url"] + path, method=method, headers={
        "Authorization": f"token {lab['token']}", "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture
def lab(tmp_path):
    with jupyter_lab(tmp_path) as server:
        yield server


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server shuts its kernels down), SIGKILL if it lingers."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def open_and_run(browser, lab: dict):
    """Open the notebook in a new page, run all its cells and return (page, explorer) once the widgets are drawn.

    A page that starts the notebook's kernel may open and close its first channel to it at once; the server can
    answer that with an error (jupyter_server issue 1265, seen here under load) and the page then draws no widget
    ("Error displaying widget: model not found"). A fresh page, which finds the kernel running, runs it again."""
    for attempt in range(3):
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK}?token={lab['token']}")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120 * SECOND)
        run_all_cells(page)
        explorer, broken = page.locator(".rc-explorer"), page.get_by_text("Error displaying widget")
        try:
            # a normal start draws the widgets in under a minute even beside a notebook run (46 s for the whole test)
            explorer.or_(broken).first.wait_for(timeout=150 * SECOND)
        except sync_api.TimeoutError:
            # The same race can also lose the queued cells: the page's first kernel never comes alive (the
            # server's 60 s limit, hit when a cold kernel start is slow), the page reconnects to a new idle kernel
            # and nothing after the first cell runs. A fresh page runs them again.
            pass
        if explorer.count():
            return page, explorer
        page.close()
    raise AssertionError("the explorer's widgets were not drawn (Error displaying widget, or cells never run), "
                         "three times")


def run_all_cells(page) -> None:
    """Run ▸ Run All Cells from the menu, as a person would, once the kernel is idle; again if it was not taken."""
    page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
        timeout=120 * SECOND)
    first_prompt = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt").first
    for attempt in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            sync_api.expect(first_prompt).not_to_have_text("[ ]:", timeout=30 * SECOND)
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_explorer_in_jupyterlab(lab):
    edit_timeout = (900 if FULL else 480) * SECOND
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, explorer = open_and_run(browser, lab)
            explorer.locator(".rc-edit-button:enabled").wait_for(timeout=60 * SECOND)

            # A case in the free-text inputs (a change is sent when the field loses focus).
            for name, value in CASE.items():
                field = explorer.locator(f".rc-{name} input")
                field.fill(value)
                field.press("Tab")
            explorer.locator(".rc-risk-button").click()
            risk = explorer.locator(".rc-risk")
            risk.filter(has_text="Germany's capital city is").wait_for(timeout=120 * SECOND)
            risk_text = risk.inner_text()
            assert "denominator ratio" in risk_text and "first token: yes" in risk_text and "at risk" in risk_text
            assert "setting paper: no C⁻¹" in risk_text

            explorer.locator(".rc-edit-button").click()
            result = explorer.locator(".rc-result .rc-edit-report")
            result.wait_for(timeout=edit_timeout)
            text = result.inner_text()
            for shown in ("ROME edit", "numerator ‖v* − Wk − b‖", "denominator k·u", "‖ΔW‖", "ME-PPL",
                          "rewrite accuracy (the paper's efficacy)", "CounterFact's efficacy", "top-5 next tokens", "greedy continuation",
                          "after (ROME, paper)", "setting paper"):
                assert shown in text, shown
            assert "Edit applied" in explorer.locator(".rc-message").inner_text()
            assert explorer.locator(".rc-undo-button").is_enabled()
            assert "Traceback" not in page.locator(".jp-NotebookPanel").inner_text()

            explorer.scroll_into_view_if_needed()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            explorer.screenshot(path=str(SCREENSHOT))
            assert SCREENSHOT.stat().st_size > 10_000

            # the history's last column is brought into view by scrolling the table alone, not the whole explorer
            history = explorer.locator(".rc-history-table")
            last = history.locator("th").filter(has_text="prefix")
            last.scroll_into_view_if_needed()
            box, frame = last.bounding_box(), explorer.bounding_box()
            assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1, (box, frame)
            assert explorer.evaluate("e => e.scrollLeft") == 0
            history.screenshot(path=str(SCREENSHOT.with_name("07_explorer_history.png")))
            history_text = history.inner_text()
            for shown in ("rewrite accuracy", "CounterFact efficacy", "prefix"):
                assert shown in history_text, shown

            explorer.locator(".rc-undo-button").click()
            explorer.locator(".rc-message").filter(has_text="Undone").wait_for(timeout=60 * SECOND)
            assert explorer.locator(".rc-undo-button").is_disabled()
        except Exception:
            failed = REPO / "build" / "browser" / "07_explorer-failure.png"
            failed.parent.mkdir(parents=True, exist_ok=True)
            pages = [page for context in browser.contexts for page in context.pages]
            if pages:
                pages[-1].screenshot(path=str(failed), full_page=True)
            print(f"screenshot of the failure: {failed}\njupyter log:\n{lab['log'].read_text()[-3000:]}")
            raise
        finally:
            browser.close()
