"""JupyterLab in headless Chromium: run notebooks 01, 08 and 09 and use their widget panels.

For each notebook (a copy in a temporary folder, so JupyterLab never writes to the checkout): open
it in JupyterLab, Run > Run All Cells, wait until the kernel is idle with every cell run, then check
that no cell shows an error, that the ipywidgets panel renders with a slider, and that pressing
ArrowRight on the slider's handle redraws the panel's image. A screenshot of each panel (and of
the page when a check fails) lands in build/browser/.

Run with ``make test-browser``: it installs Playwright (from PyPI, requirements-browser.txt) and
Debian's ``chromium`` when missing, then runs ``pytest tests/browser/check_widgets.py``. The file name
does not match ``test_*.py``, so ``pytest tests`` (``make unit``, ``make test``) never collects it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "browser"
VENV_BIN = ROOT / ".venv" / "bin"
CHROMIUM = Path(os.environ.get("SDLEARN_CHROMIUM", "/usr/bin/chromium"))
NOTEBOOKS = ["01_forward_noising.ipynb", "08_sampling.ipynb", "09_img2img_inpainting.ipynb"]
START_ORDER = [NOTEBOOKS[1], NOTEBOOKS[2], NOTEBOOKS[0]]   # longest first: 08 sets the pace
# the folder the notebooks are copied from (e.g. notebooks/solutions for the solutions edition)
SOURCE = Path(os.environ.get("SDLEARN_BROWSER_NOTEBOOKS", ROOT / "notebooks")).resolve()
# headless, no sandbox (root), and nothing that phones home: on a closed network Chromium's
# background connections are refused and stall it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 90      # JupyterLab answering /api/status
OPEN_S = 90              # notebook rendered and its kernel idle
RUN_ALL_S = 480          # Run All Cells, the three notebooks at once (2-4 min on 2 busy CPU cores)
REDRAW_S = 60            # one slider step redraws the panel's image

# user settings for the run: no news or update toasts, every cell in the DOM (no windowing, so
# the checks see all outputs), no autosave
LAB_SETTINGS = {
    "apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false",
                                        "doNotDisturbMode": True},
    "notebook-extension/tracker": {"windowingMode": "none"},
    "docmanager-extension/plugin": {"autosave": False},
    "extensionmanager-extension/plugin": {"enabled": False},
}

# state of the open notebook, read from JupyterLab's DOM
NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
      .map(p => p.textContent.trim());
  return {status: indicator ? indicator.dataset.status : null, prompts: prompts};
}"""

# text of every stderr/error output area (an error output renders as application/vnd.jupyter.stderr)
STDERR_JS = """() => [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map(o => o.innerText)"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="session")
def timings() -> Iterator[list[tuple[str, str, float]]]:
    """(notebook, step, seconds) rows; printed (shown with ``pytest -s``) and written to
    build/browser/timings.txt at the end of the run."""
    rows: list[tuple[str, str, float]] = []
    t0 = time.monotonic()
    yield rows
    rows.append(("(whole run)", "server to last check", time.monotonic() - t0))
    table = "\n".join(f"{notebook:28s} {step:20s} {seconds:6.1f} s" for notebook, step, seconds in rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "timings.txt").write_text(table + "\n")
    print(f"\nbrowser timings:\n{table}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Iterator[tuple[str, str, int]]:
    """JupyterLab on a copy of the three notebooks, on a loopback port with a random token; yields
    (base URL, token, server process id)."""
    for name in NOTEBOOKS:
        if not (SOURCE / name).is_file():
            raise FileNotFoundError(f"{SOURCE / name} is missing: the browser test opens it "
                                    "(SDLEARN_BROWSER_NOTEBOOKS names the folder, default notebooks/)")
    if not (VENV_BIN / "jupyter").exists():
        raise FileNotFoundError(f"{VENV_BIN / 'jupyter'} is missing: run `make setup` first")
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"      # no ../images beside it: save_figure writes nothing
    notebooks.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(SOURCE / name, notebooks / name)
    settings = home / "settings"
    _write_settings(settings)
    port, token = _free_port(), secrets.token_hex(24)
    env = dict(os.environ)
    env.pop("SDLEARN_FIGURES_DIR", None)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "offline")]),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",         # three kernels at once on a few cores
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    })
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):       # screenshots of an earlier run
        old.unlink()
    log = open(OUT / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [str(VENV_BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={notebooks}", "--ServerApp.terminals_enabled=False",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", "--LanguageServerManager.autodetect=False",
         "--allow-root"],
        cwd=notebooks, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {server.returncode}; see {OUT / 'jupyterlab.log'}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer on {base} within {SERVER_START_S} s; "
                                   f"see {OUT / 'jupyterlab.log'}")
            time.sleep(0.5)
        yield base, token, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[BrowserContext]:
    """Headless Debian Chromium (no Playwright browser download) with a new, empty profile."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: `apt-get install chromium` (make test-browser does)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def _dismiss_dialogs(page: Page) -> None:
    """Accept any modal JupyterLab shows (Select Kernel, trust, ...): its default button."""
    dialog = page.locator(".jp-Dialog")
    for _ in range(5):
        if not (dialog.count() and dialog.first.is_visible()):
            return
        page.locator(".jp-Dialog .jp-mod-accept").first.click()
        page.wait_for_timeout(300)
    raise AssertionError(f"a JupyterLab dialog does not go away: {dialog.first.inner_text()!r}")


def _wait_state(page: Page, done, timeout_s: float, what: str) -> dict:
    """Poll the notebook state until ``done(state)`` holds on two reads 0.5 s apart."""
    deadline = time.monotonic() + timeout_s
    held = False
    while True:
        _dismiss_dialogs(page)
        state = page.evaluate(NOTEBOOK_STATE_JS)
        if state is not None and done(state):
            if held:
                return state
            held = True
        else:
            held = False
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not done within {timeout_s:.0f} s (last state: {state})")
        page.wait_for_timeout(500)


def _menu(page: Page, menu: str, item: str, done, what: str) -> None:
    """Click ``menu`` in JupyterLab's menu bar, then its entry ``item``, until ``done(state)`` holds
    (a click that lands while JupyterLab is still settling does nothing: try again, three times)."""
    for attempt in range(3):
        page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        entry = page.locator(".lm-Menu .lm-Menu-item:not(.lm-mod-disabled)",
                             has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")))
        entry.wait_for(timeout=10_000)
        entry.click()
        try:
            _wait_state(page, done, 10, what)
            return
        except AssertionError:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")   # close a menu left open


def _image_src(panel: Locator) -> str | None:
    images = panel.locator(".widget-output img")
    return images.first.get_attribute("src") if images.count() else None


def _stderr_errors(page: Page) -> list[str]:
    """The text of every error output (and stderr output naming an error) in the open notebook."""
    return [text[-2000:] for text in page.evaluate(STDERR_JS) if "Traceback" in text or "Error" in text]


def _start_notebook(page: Page, base: str, token: str, name: str, timings: list) -> None:
    """Open ``name`` in JupyterLab, clear its stored outputs and start Run > Run All Cells."""
    fail = f"notebooks/{name}"
    t0 = time.monotonic()
    # a workspace of its own, reset: no tab of another notebook comes back in it
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}", timeout=OPEN_S * 1000)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").wait_for(timeout=OPEN_S * 1000)
    _wait_state(page, lambda s: s["status"] == "idle" and s["prompts"], OPEN_S,
                f"{fail}: opening it and starting its kernel")
    timings.append((name, "open + kernel idle", time.monotonic() - t0))
    # the stored outputs go first, so that every output checked later is this run's
    _menu(page, "Edit", "Clear Outputs of All Cells", lambda s: all(p == "[ ]:" for p in s["prompts"]),
          f"{fail}: Edit > Clear Outputs of All Cells")
    # queued cells show [*] until they ran, then [n]; a failed cell stops the queue (the rest stay [ ])
    _menu(page, "Run", "Run All Cells", lambda s: any(p != "[ ]:" for p in s["prompts"]),
          f"{fail}: Run > Run All Cells starting")


def _ran_all(state: dict) -> bool:
    return state["status"] == "idle" and not any("*" in p for p in state["prompts"])


@pytest.fixture(scope="session")
def runs(lab: tuple[str, str, int], browser: BrowserContext, timings: list) -> Iterator[dict]:
    """Each notebook in its own tab, all three running at once (their kernels use one thread each):
    name -> (page, final notebook state, or the exception that stopped it)."""
    base, token, server_pid = lab
    results: dict[str, tuple[Page, dict | Exception]] = {}
    started: dict[str, float] = {}
    for name in START_ORDER:
        page = browser.new_page()
        try:
            _start_notebook(page, base, token, name, timings)
            started[name] = time.monotonic()
        except Exception as error:   # reported by that notebook's test; the others go on
            results[name] = (page, error)
        else:
            results[name] = (page, {})
    pending = dict(started)            # name -> when its Run All Cells started
    done_once: set[str] = set()         # done on the last read; done on two reads in a row counts
    deadline = time.monotonic() + RUN_ALL_S
    while pending:
        for name in list(pending):
            page = results[name][0]
            _dismiss_dialogs(page)
            state = page.evaluate(NOTEBOOK_STATE_JS)
            if state is None or not _ran_all(state):
                done_once.discard(name)
            elif name in done_once:
                results[name] = (page, state)
                timings.append((name, "run all cells", time.monotonic() - pending.pop(name)))
            else:
                done_once.add(name)
        if pending and time.monotonic() > deadline:
            for name in pending:
                state = results[name][0].evaluate(NOTEBOOK_STATE_JS)
                results[name] = (results[name][0], AssertionError(
                    f"notebooks/{name}: Run All Cells not done within {RUN_ALL_S} s (last state: {state})"))
            break
        time.sleep(0.5)
    if started:
        timings.append(("(three at once)", "run all cells", time.monotonic() - min(started.values())))
    for name, seconds in _kernel_cpu_seconds(base, token, server_pid).items():
        timings.append((name, "kernel CPU time", seconds))
    yield results
    _shutdown_kernels(base, token)
    for page, _ in results.values():
        page.close()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_widget_panel_runs_and_redraws(runs: dict, timings: list, name: str) -> None:
    """Run All Cells ran every cell without an error; the widget panel shows a slider and an image;
    ArrowRight on the slider moves it and redraws the image."""
    page, state = runs[name]
    try:
        _check_notebook(page, name, state, timings)
    except Exception:
        page.screenshot(path=str(OUT / f"{Path(name).stem}_failure.png"))
        raise


def _check_notebook(page: Page, name: str, state: dict | Exception, timings: list) -> None:
    fail = f"notebooks/{name}"
    if isinstance(state, Exception):
        raise state
    errors = _stderr_errors(page)
    assert not errors, f"{fail}: error output after Run All Cells:\n" + "\n---\n".join(errors)
    not_run = [i for i, p in enumerate(state["prompts"]) if not p.strip("[]: ").isdigit()]
    assert not not_run, (f"{fail}: code cells {not_run} of {len(state['prompts'])} did not run "
                         f"(prompts {state['prompts']})")

    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-interact").first
    assert panel.count(), f"{fail}: no ipywidgets panel (.widget-interact) rendered"
    panel.scroll_into_view_if_needed()
    slider = panel.locator(".widget-slider").first
    assert slider.count() and slider.is_visible(), f"{fail}: the widget panel shows no slider (.widget-slider)"
    before = _image_src(panel)
    assert before and before.startswith("data:image/"), f"{fail}: the widget panel shows no image"
    readout = slider.locator(".widget-readout")
    value_before = readout.inner_text()

    t0 = time.monotonic()
    slider.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    deadline = time.monotonic() + REDRAW_S
    while True:
        after = _image_src(panel)
        if after and after != before and after.startswith("data:image/"):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{fail}: ArrowRight on the slider (readout {value_before!r} -> "
                                 f"{readout.inner_text()!r}) did not redraw the panel's image within {REDRAW_S} s")
        page.wait_for_timeout(250)
    timings.append((name, "slider redraw", time.monotonic() - t0))
    value_after = readout.inner_text()
    assert value_after != value_before, f"{fail}: the slider's readout stayed {value_before!r} after ArrowRight"
    page.wait_for_timeout(300)      # let the new image paint
    panel.screenshot(path=str(OUT / f"{Path(name).stem}_panel.png"))
    errors = _stderr_errors(page)
    assert not errors, f"{fail}: error output after moving the slider:\n" + "\n---\n".join(errors)


def _kernel_cpu_seconds(base: str, token: str, server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) each notebook's kernel has used so far."""
    import psutil   # ipykernel's dependency

    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions", headers=headers), timeout=10) as r:
        sessions = json.load(r)
    kernels = psutil.Process(server_pid).children(recursive=True)
    seconds = {}
    for session in sessions:
        for process in kernels:
            try:
                if any(f"kernel-{session['kernel']['id']}.json" in arg for arg in process.cmdline()):
                    cpu = process.cpu_times()
                    seconds[session["path"]] = cpu.user + cpu.system
            except psutil.Error:
                pass
    return seconds


def _shutdown_kernels(base: str, token: str) -> None:
    """Delete every session (and so its kernel) on the server."""
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions", headers=headers), timeout=10) as r:
        sessions = json.load(r)
    for session in sessions:
        request = urllib.request.Request(f"{base}/api/sessions/{session['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()
