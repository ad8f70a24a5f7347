"""Notebook 05's before/after slider as a person meets it: a real JupyterLab server on localhost, Debian's headless
Chromium driven by selenium (chromium-driver), the notebook run with its smoke parameters, the slider dragged with
the mouse, and screenshots compared.

Needs the ``chromium`` and ``chromium-driver`` apt packages (``.ci/run`` installs them when it runs as root);
skips with the reason where they are missing. Screenshots go to ``results/browser/`` (gitignored; CI keeps them
as artifacts), or to ``$SDCOMP_BROWSER_OUT``. ``SDCOMP_SKIP_BROWSER=1`` skips the test.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from .conftest import KODAK, TAEF2_DIR, need_shared

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "05_comparison.ipynb"
OUT = Path(os.environ.get("SDCOMP_BROWSER_OUT", ROOT / "results" / "browser"))
WINDOW = (1280, 1000)  # the 1000-px-tall window (headless Chromium leaves 857 px of it to the page)
RUN_TIMEOUT = 900  # hang guard for "Run All Cells" (about a minute in smoke mode on 2 busy cores)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--force-device-scale-factor=1",
]
LAB_SETTINGS = {  # no news/update toasts over the notebook, no kernel dialog, every cell rendered (no windowing)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
}


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if os.environ.get("SDCOMP_SKIP_BROWSER") == "1":
        pytest.skip("SDCOMP_SKIP_BROWSER=1")
    if not browser or not driver:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium "
            "chromium-driver; .ci/run does it when it runs as root)"
        )
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving a scratch copy of notebook 05 (autosave and the run write only there);
    the kernel inherits the smoke parameters from the server's environment."""
    chromium_paths()
    need_shared()
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    settings = base / "settings"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    env = {
        **os.environ,
        "SDCOMP_SMOKE": "1",
        "SDCOMP_DEVICE": "cpu",
        "SDCOMP_MODEL": "taef2",
        "SDCOMP_DATA": str(KODAK),
        "SDCOMP_TAEF2_DIR": str(TAEF2_DIR),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"),
    }
    env.pop("MPLBACKEND", None)
    port, token = free_port(), uuid.uuid4().hex
    log = open(base / "server.log", "w")  # noqa: SIM115 - the server writes to it until the fixture closes it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={base / 'workspaces'}",
        ]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # CI runs as root
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start: {(base / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"url": url, "token": token, "root": root, "log": base / "server.log", "base": base}
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """End the server and its kernel: the process group this test started (start_new_session), by its id."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def browser(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={lab['base'] / 'chromium-profile'}"]:
        opts.add_argument(flag)
    service = Service(executable_path=driver_path, log_output=str(lab["base"] / "chromedriver.log"))
    drv = webdriver.Chrome(service=service, options=opts)
    drv.set_window_size(*WINDOW)
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(fn, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def menu(drv, top: str, command: str):
    """Open a top-level menu of JupyterLab's menu bar and click the entry bound to ``command``."""
    from selenium.webdriver.common.by import By

    items = [e for e in drv.find_elements(By.CSS_SELECTOR, "#jp-menu-panel .lm-MenuBar-item") if e.text == top]
    assert items, f"no {top!r} menu in JupyterLab's menu bar"
    items[0].click()
    entry = wait_for(
        lambda: drv.find_elements(By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]'),
        10,
        f"the {command} menu entry",
    )
    entry[0].click()


def kernel_idle(lab) -> bool:
    """The server has a session for the notebook whose kernel is idle (started and connected)."""
    with urllib.request.urlopen(f"{lab['url']}/api/sessions?token={lab['token']}", timeout=10) as r:
        sessions = json.load(r)
    return any(s["path"].endswith(NOTEBOOK) and s["kernel"]["execution_state"] == "idle" for s in sessions)


def accept_dialogs(drv) -> bool:
    """Accept a dialog JupyterLab may still show (e.g. "Select Kernel": the default Python 3); always True."""
    from selenium.webdriver.common.by import By

    for button in drv.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-Dialog-button.jp-mod-accept"):
        button.click()
    return True


PROMPTS_JS = """
return Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent.trim());
"""

GEOMETRY_JS = """
const slider = document.querySelectorAll('.widget-hslider')[arguments[0]];
const box = slider.closest('.widget-vbox');
const img = box.querySelector('img');
const scroller = slider.closest('.jp-WindowedPanel-outer') || slider.closest('.jp-NotebookPanel-notebook');
const r = e => { const b = e.getBoundingClientRect(); return {top: b.top, bottom: b.bottom, left: b.left,
                                                              right: b.right, width: b.width, height: b.height}; };
const handle = slider.querySelector('[role="slider"]');
return {slider: r(slider), image: r(img), scroller: r(scroller), innerHeight: window.innerHeight,
        value: handle ? parseFloat(handle.getAttribute('aria-valuetext')) : null, src: img.src,
        caption: box.querySelector('.widget-html').textContent};
"""


def png_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), np.int16)


def test_slider_in_a_real_browser(lab, browser):
    try:
        check_slider(lab, browser)
    except BaseException:
        OUT.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(OUT / "99_failure.png"))
        print(f"screenshot of the failure: {OUT / '99_failure.png'}; server log: {lab['log']}")
        raise


def check_slider(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    drv = browser
    drv.get(f"{lab['url']}/lab/tree/{NOTEBOOK}?token={lab['token']}")
    wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell"), 120, "the notebook")
    wait_for(lambda: accept_dialogs(drv) and kernel_idle(lab), 180, "the notebook's kernel to start")
    drv.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")[0].click()  # focus

    def started():  # a cell is queued or running, or has already run
        return any(p == "[*]:" or re.fullmatch(r"\[\d+\]:", p) for p in drv.execute_script(PROMPTS_JS))

    for attempt in range(2):  # a click that lands while JupyterLab is still wiring the kernel can be lost
        accept_dialogs(drv)
        menu(drv, "Run", "runmenu:run-all")
        try:
            wait_for(lambda: accept_dialogs(drv) and started(), 30, "Run All Cells to start")
            break
        except AssertionError:
            drv.save_screenshot(str(OUT / f"00_run_all_not_started_{attempt}.png"))
            if attempt:
                raise
    prompts = wait_for(
        lambda: (lambda ps: ps if "[*]:" not in ps else None)(drv.execute_script(PROMPTS_JS)),
        RUN_TIMEOUT,
        "Run All Cells to finish",
        poll=2,
    )
    run_seconds = time.perf_counter() - t0
    drv.save_screenshot(str(OUT / "01_after_run_all.png"))

    # no cell errored: every code cell ran (a failing cell stops Run All), and the saved file has no error output
    assert all(p not in ("[ ]:", "") for p in prompts), f"cells that never ran: {prompts}"
    menu(drv, "File", "docmanager:save")
    saved = lab["root"] / NOTEBOOK
    nb = wait_for(
        lambda: (lambda n: n if all(c.get("execution_count") for c in n.cells if c.cell_type == "code") else None)(
            nbformat.read(saved, as_version=4)
        ),
        60,
        "the notebook to be saved",
    )
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cells raised: {[e.ename + ': ' + e.evalue for e in errors]}"
    assert not drv.find_elements(
        By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
    )

    sliders = drv.find_elements(By.CSS_SELECTOR, ".widget-hslider")
    assert len(sliders) == 2, (
        f"expected the two sliders of notebook 05 (original | ours, JPEG | ours), got {len(sliders)}"
    )
    # a person scrolls the first slider to the top of the notebook: slider and picture must fit on screen together
    drv.execute_script("arguments[0].closest('.widget-vbox').scrollIntoView({block: 'start'});", sliders[0])
    time.sleep(1)
    geo = drv.execute_script(GEOMETRY_JS, 0)
    drv.save_screenshot(str(OUT / "02_window_slider_and_picture.png"))
    assert geo["slider"]["bottom"] <= geo["image"]["top"] + 1, "the slider sits above the picture"
    assert geo["innerHeight"] < WINDOW[1], "the page gets the window minus the browser's own bars"
    visible = min(geo["scroller"]["bottom"], geo["innerHeight"])
    assert geo["image"]["bottom"] <= visible, (
        f"slider + picture need {geo['image']['bottom'] - geo['slider']['top']:.0f} px from the slider's top; "
        f"a {WINDOW[1]}-px window shows them only up to {visible:.0f} px: {geo}"
    )
    assert abs(geo["slider"]["width"] - geo["image"]["width"]) <= 2, "the slider is as wide as the picture"
    assert geo["value"] == pytest.approx(0.5)

    image = drv.find_elements(By.CSS_SELECTOR, ".widget-vbox img")[0]
    before_png = image.screenshot_as_png
    (OUT / "03_picture_before_drag.png").write_bytes(before_png)

    # drag the handle with the mouse from the middle to ~15 % of the width
    handle = sliders[0].find_element(By.CSS_SELECTOR, "[role='slider']")
    dx = -round(0.35 * geo["slider"]["width"])
    ActionChains(drv).move_to_element(handle).click_and_hold().move_by_offset(dx // 2, 0).pause(0.2).move_by_offset(
        dx - dx // 2, 0
    ).pause(0.2).release().perform()
    wait_for(lambda: drv.execute_script(GEOMETRY_JS, 0)["src"] != geo["src"], 60, "the picture to be redrawn")
    time.sleep(1)  # the kernel may still send the pictures of intermediate positions
    after_geo = wait_for(
        lambda: (lambda g: g if g["src"] == drv.execute_script(GEOMETRY_JS, 0)["src"] else None)(
            drv.execute_script(GEOMETRY_JS, 0)
        ),
        30,
        "the picture to settle",
        poll=1,
    )
    after_png = image.screenshot_as_png
    (OUT / "04_picture_after_drag.png").write_bytes(after_png)
    drv.save_screenshot(str(OUT / "05_window_after_drag.png"))
    figures = drv.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'});", figures[-1])
    (OUT / "06_last_figure_kodim20_invented_crops.png").write_bytes(figures[-1].screenshot_as_png)

    new = after_geo["value"]
    assert 0.05 < new < 0.35, f"the drag should have moved the slider to ~0.15, it reads {new}"
    a, b = png_array(before_png), png_array(after_png)
    assert a.shape == b.shape and a.shape[1] == round(geo["image"]["width"])
    w = a.shape[1]
    col = np.abs(a - b).mean(axis=(0, 2))  # mean change per screen column
    lo, hi = round(new * w), round(0.5 * w)
    margin = 4  # the 1-px split lines are drawn at full resolution and scaled by the browser
    band = col[lo + margin : hi - margin]
    outside = np.concatenate([col[: max(0, lo - margin)], col[hi + margin :]])
    assert band.mean() > 4 and (band > 1).mean() > 0.9, (
        f"between the old and new split the picture should switch from the original to ours: {band.mean():.2f}"
    )
    assert outside.max() < 1, f"the picture changed outside the slider's sweep: {outside.max():.2f}"
    print(
        f"browser test: Run All {run_seconds:.0f} s, whole test {time.perf_counter() - t0:.0f} s; slider "
        f"0.5 -> {new:.3f}; picture {w}x{a.shape[0]} px on screen; mean change {band.mean():.1f} levels in the "
        f"sweep, {outside.max():.2f} outside; screenshots in {OUT}"
    )
    (OUT / "summary.json").write_text(
        json.dumps(
            {
                "run_all_seconds": round(run_seconds, 1),
                "test_seconds": round(time.perf_counter() - t0, 1),
                "slider_from": 0.5,
                "slider_to": new,
                "picture_px": [w, int(a.shape[0])],
                "change_in_sweep": round(float(band.mean()), 2),
                "change_outside_max": round(float(outside.max()), 3),
                "slider_top_px": geo["slider"]["top"],
                "picture_bottom_px": geo["image"]["bottom"],
                "window": list(WINDOW),
                "caption": geo["caption"],
            },
            indent=1,
        )
    )
