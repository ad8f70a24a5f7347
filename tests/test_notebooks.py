"""The notebook suite: static conventions of the committed files, then every notebook executed top to bottom.

Each notebook is a jupytext pair: ``notebooks/NN_name.py`` (percent format, the source) and ``NN_name.ipynb``
(what Colab opens, outputs stripped), kept in sync by ``jupytext --sync notebooks/*.py``.
Execution runs offline on CPU with nbclient (kernel ``python3``, cwd ``notebooks/``), ``SDCOMP_SMOKE=1``
(fewer images and sweeps), the real TAEF2 weights and Kodak images from ``../shared`` where image quality
is shown, and the tiny random SD pipeline (``make_tiny_sd``) where the UNet/CLIP are needed.
Set ``SDCOMP_SKIP_NOTEBOOKS=1`` to run only the static checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import tomllib
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # read-only data beside the project (see tests/conftest.py)
KODAK = SHARED / "data" / "kodak"
TAEF2_DIR = SHARED / "weights" / "taef2"
NB_DIR = ROOT / "notebooks"
NAMES = [
    "01_load_weights",
    "02_vae_roundtrip",
    "03_latent_quantization",
    "04_unet_denoising",
    "05_comparison",
    "06_article_figures",
    "07_transform_coding",
]
BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    "(https://colab.research.google.com/github/sdcomp/sdcomp-notebooks/blob/main/notebooks/{name}.ipynb)"
)
FIGURES = [
    "panels_kodim04.png",
    "panels_kodim08.png",
    "panels_kodim23.png",
    "latent_rgba.png",
    "vae_roundtrip.png",
    "quantization_stages.png",
    "hallucination_error_map.png",
    "hallucination_crops.png",
    "then_and_now_kodim04.png",
]  # the last: the 2022 palette beside today's default (tc) and AVIF
CELL_TIMEOUT = 600  # seconds per cell; the whole suite takes a few minutes on 2 CPU cores
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SETUP_MAX_LINES = 22  # the shared first code cell stays short: the rest lives in helpers.notebook


def need_shared():
    if not (KODAK / "kodim23.png").is_file() or not (TAEF2_DIR / "taef2_encoder.pth").is_file():
        pytest.skip("../shared (Kodak images + TAEF2 weights) is not beside the project root")


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# ----------------------------------------------------------------------------------------------
# static checks (fast)
# ----------------------------------------------------------------------------------------------


def test_every_notebook_is_a_jupytext_pair():
    for ext in ("ipynb", "py"):
        present = sorted(p.stem for p in NB_DIR.glob(f"[0-9]*.{ext}"))
        assert present == NAMES, f"notebooks/*.{ext}: {present}, expected {NAMES}"
    config = tomllib.loads((NB_DIR / "jupytext.toml").read_text())
    assert config["formats"] == "ipynb,py:percent"
    assert not (ROOT / "scripts" / "make_notebooks.py").exists(), "the generator is gone: edit the .py sources"


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync(name, tmp_path):
    """``jupytext --sync`` (jupytext's own CLI code, in process) changes nothing in either direction: the .py
    source and the .ipynb have the same cells, and the .ipynb is exactly what jupytext writes for it."""
    from jupytext.cli import jupytext as jupytext_cli

    shutil.copy(NB_DIR / "jupytext.toml", tmp_path)
    py, ipynb = tmp_path / f"{name}.py", tmp_path / f"{name}.ipynb"
    shutil.copy(NB_DIR / py.name, py)
    shutil.copy(NB_DIR / ipynb.name, ipynb)
    for newer in (py, ipynb):  # --sync takes the most recently modified file of the pair as the source
        now = time.time()
        os.utime(newer, (now, now))
        os.utime(ipynb if newer is py else py, (now - 60, now - 60))
        jupytext_cli(["--sync", "--quiet", str(newer)])
        for f in (py, ipynb):
            assert f.read_text() == (NB_DIR / f.name).read_text(), (
                f"notebooks/{name}: .py and .ipynb are out of sync: run jupytext --sync notebooks/{name}.py"
            )


def test_notebooks_are_output_stripped():
    """nbstripout (cell ids kept: they are stable) would change nothing."""
    out = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", "--keep-id", *(str(NB_DIR / f"{n}.ipynb") for n in NAMES)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"run nbstripout --keep-id notebooks/*.ipynb: {out.stdout}{out.stderr}"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_and_output_stripped(name):
    nb = read(name)
    nbformat.validate(nb)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"extra notebook metadata: {set(nb.metadata)}"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        assert set(cell.metadata) <= {"tags"}, f"cell {cell.get('id')} carries metadata {dict(cell.metadata)}"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {cell.id} has outputs: strip them"
            assert cell.execution_count is None, f"cell {cell.id} has an execution count: strip it"


def test_setup_cell_is_shared_and_short():
    setups = {name: read(name).cells[1].source for name in NAMES}
    first = setups[NAMES[0]]
    for name, src in setups.items():
        assert src == first, f"{name}'s setup cell differs from {NAMES[0]}'s: keep them identical"
    lines = first.splitlines()
    assert len(lines) <= SETUP_MAX_LINES, f"setup cell has {len(lines)} lines: move code into helpers.notebook"
    assert "urlretrieve" not in first and "kodim" not in first, "downloads live in helpers.notebook"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_conventions(name):
    nb = read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and BADGE.format(name=name) in first.source, "first cell: Colab badge"

    setup = nb.cells[1]
    assert setup.cell_type == "code"
    for needle in (
        '"google.colab" in sys.modules',
        "https://github.com/sdcomp/sdcomp-notebooks",
        '"--no-deps", "-e", "."',
        "os.chdir(",
        "sys.path.insert(0,",
        "setup(IN_COLAB)",
    ):
        assert needle in setup.source, f"setup cell lacks {needle!r}"
    assert re.search(r"^IN_COLAB = \"google\.colab\" in sys\.modules\nif IN_COLAB\b", setup.source, re.M), (
        "the Colab-only steps must sit under `if IN_COLAB`"
    )
    assert re.search(r"^from helpers\.notebook import setup\b", setup.source, re.M)

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "exactly one code cell tagged `parameters`"
    assert nb.cells.index(tagged[0]) == 2, "the parameters cell comes right after the setup cell"
    assert "os.environ.get(" in tagged[0].source

    for cell in nb.cells:
        src = cell.source
        assert not re.search(r"^\s*[%!]\s*cd\b", src, re.M), f"cell {cell.id} uses %cd/!cd: use os.chdir"
        assert "run_line_magic" not in src
        # absolute paths: quoted strings starting with / or ~ or a drive letter, or well-known roots anywhere
        assert not re.search(r"""["'](/|~[/\\]|[A-Za-z]:[/\\])""", src), f"cell {cell.id} has an absolute path"
        assert not re.search(r"(?<![\w/.:])/(work|home|root|tmp|content|Users|mnt)/", src), (
            f"cell {cell.id} has an absolute path"
        )


COLAB_DRIVER = """
import json, os, subprocess, sys, types, urllib.request
sys.modules["google.colab"] = types.ModuleType("google.colab")  # pretend to be Colab
calls = []
subprocess.run = lambda args, **kw: calls.append(list(args))  # no git clone, no pip install


def offline(url, path):
    raise OSError("offline")


urllib.request.urlretrieve = offline
exec(compile(open(sys.argv[1]).read(), "setup-cell", "exec"))
import helpers
print(json.dumps({"cwd": os.getcwd(), "calls": calls, "data": os.environ.get("SDCOMP_DATA"),
                  "helpers": helpers.__file__}))
"""


def pyproject_dependencies() -> list[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.split(r"[=<>!~;\s]", d, maxsplit=1)[0] for d in deps]  # extras kept: dask[distributed]


def test_colab_branch_of_the_setup_cell(tmp_path):
    """Run the setup cell as Colab would (git/pip/downloads stubbed) in a fake clone: it must install the
    package without deps, then every other dependency of pyproject.toml except torch, chdir into the clone's
    notebooks/ and import its helpers."""
    clone = tmp_path / "content" / "sdcomp-notebooks"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "helpers").symlink_to(ROOT / "helpers", target_is_directory=True)
    shutil.copy(ROOT / "pyproject.toml", clone / "pyproject.toml")
    (tmp_path / "setup.py").write_text(read("02_vae_roundtrip").cells[1].source)
    (tmp_path / "driver.py").write_text(COLAB_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("SDCOMP_DATA", "PYTHONPATH")}
    out = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "setup.py")],
        cwd=clone.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["cwd"]) == (clone / "notebooks").resolve()
    pip = [c for c in result["calls"] if "pip" in c]
    assert pip and pip[0][-5:] == ["install", "-q", "--no-deps", "-e", "."]
    extras = {a for c in pip[1:] for a in c[c.index("-q") + 1 :]}
    wanted = set(pyproject_dependencies()) - {"torch", "torchvision"}
    assert {"diffusers", "lpips", "constriction", "onnxruntime"} <= wanted
    assert extras == wanted, f"the Colab installs miss {wanted - extras} / add {extras - wanted}"
    assert not any("torch" in c or "torchvision" in c for c in pip), "Colab already has torch: never reinstall it"
    assert result["data"] == "../data/kodak"
    assert Path(result["helpers"]).resolve() == (ROOT / "helpers" / "__init__.py").resolve()
    assert "could not download" in out.stdout  # offline downloads fail gracefully
    assert "Colab: True" in out.stdout


def test_local_branch_of_the_setup_cell(tmp_path):
    """Outside Colab the cell installs and downloads nothing and imports this checkout's helpers."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = read("01_load_weights").cells[1].source + "\nimport helpers\nprint('HELPERS', helpers.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=NB_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"HELPERS {ROOT / 'helpers' / '__init__.py'}" in out.stdout and "Colab: False" in out.stdout


def test_readme_lists_every_notebook():
    text = (NB_DIR / "README.md").read_text()
    for name in NAMES:
        assert f"{name}.ipynb" in text and f"{name}.py" in text
    assert "colab.research.google.com" in text and "jupytext --sync" in text


# ----------------------------------------------------------------------------------------------
# execution (a few minutes)
# ----------------------------------------------------------------------------------------------

# (notebook, model, needs ../shared): TAEF2 + Kodak where image quality is shown, the tiny random SD
# where UNet/CLIP are needed; 03 also runs on the 4-channel SD latent for the libimagequant path.
RUNS = [
    ("01_load_weights", "tiny-sd", False),
    ("02_vae_roundtrip", "taef2", True),
    ("03_latent_quantization", "taef2", True),
    ("03_latent_quantization", "tiny-sd", True),
    ("04_unet_denoising", "tiny-sd", True),
    ("05_comparison", "taef2", True),
    ("06_article_figures", "taef2", True),
    ("07_transform_coding", "taef2", True),
]


def execute(name: str, env: dict[str, str], monkeypatch) -> tuple[nbformat.NotebookNode, float]:
    from nbclient import NotebookClient

    for key, value in env.items():  # the kernel process inherits the test process's environment
        monkeypatch.setenv(key, value)
    nb = read(name)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        startup_timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NB_DIR)}},
    )
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def outputs_text(nb) -> str:
    parts = []
    for cell in code_cells(nb):
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                parts.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
    return "\n".join(parts)


def mime_types(nb) -> set[str]:
    return {m for c in code_cells(nb) for o in c.outputs if "data" in o for m in o.data}


@pytest.mark.skipif(os.environ.get("SDCOMP_SKIP_NOTEBOOKS") == "1", reason="SDCOMP_SKIP_NOTEBOOKS=1")
@pytest.mark.parametrize("name,model,needs_shared", RUNS, ids=[f"{n}-{m}" for n, m, _ in RUNS])
def test_notebook_runs(name, model, needs_shared, request, tmp_path, monkeypatch):
    if needs_shared:
        need_shared()
    env = {
        "SDCOMP_SMOKE": "1",
        "SDCOMP_DEVICE": "cpu",
        "SDCOMP_MODEL": str(request.getfixturevalue("tiny_sd_dir")) if model == "tiny-sd" else model,
        "SDCOMP_FIG_DIR": str(tmp_path / "figures"),
        "HF_HUB_OFFLINE": "1",  # never touch the network, even by accident
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    if KODAK.is_dir():
        env["SDCOMP_DATA"] = str(KODAK)
    if TAEF2_DIR.is_dir():
        env["SDCOMP_TAEF2_DIR"] = str(TAEF2_DIR)
    nb, seconds = execute(name, env, monkeypatch)
    print(f"{name} ({model}): {seconds:.1f} s")
    (tmp_path / "timing.json").write_text(json.dumps({"notebook": name, "model": model, "seconds": seconds}))
    text = outputs_text(nb)
    assert "image/png" in mime_types(nb) or name == "01_load_weights", "no figure was drawn"

    if model == "tiny-sd" and name in ("01_load_weights", "04_unet_denoising"):
        assert "RANDOM" in text, "the tiny random SD must be announced loudly"
    if name == "01_load_weights":
        assert "| unet |" in text and "| text_encoder |" in text
        if (SHARED / "weights" / "taef2").is_dir():
            assert "TAEF2 encoder" in text
    if name == "02_vae_roundtrip":
        assert "psnr" in text and ("lpips" in text.lower())
    if name == "03_latent_quantization":
        assert "arith" in text and "zlib" in text
        if model == "tiny-sd":
            assert "| liq |" in text, "4-channel latents must also go through libimagequant"
    if name == "04_unet_denoising":
        assert "header asks for denoising: True" in text
    if name == "05_comparison":
        assert "application/vnd.jupyter.widget-view+json" in mime_types(nb), "the slider widget was not displayed"
        assert "| jpeg | ge |" in text and "| jpeg | le |" in text
        assert "| invented | lost | mean_log2 |" in text, "the invented/lost detail table is missing"
        # perceptual metrics next to PSNR, with arrows; the head-to-head block and its verdict per rule
        assert "| psnr ↑ |" in text and "| cvvdp ↑ |" in text and "| flip ↓ |" in text
        assert "| rule | baseline | psnr ↑ |" in text, "the 'does it look better?' table is missing"
        assert "Rule `ge` (baselines at least as big as ours), 2 images: ours:taef2 " in text
        assert "| cvvdp | ↑ | available: cvvdp" in text, "the metric status table is missing"
        # smoke mode compares kodim04 and kodim20 only: the text names what is shown, and what is not
        assert "known hard details: kodim04: eye, mouth; kodim20: aircraft lettering" in text
        assert "not compared in this run (add them to IMAGES to see theirs): kodim08, kodim23" in text
        prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "kodim08" not in prose and "windows" not in prose, "the text promises details it may not show"
        assert "compose_split" not in "\n".join(c.source for c in nb.cells), "no static image posing as a slider"
        # the 2022 method asked for by name, today's default (tc) and AVIF beside it, and the slider choosing among them
        source = "\n".join(c.source for c in nb.cells)
        assert 'METHOD = "palette"' in source and "choice_slider(" in source
        assert "| image | picture | bytes | psnr ↑ | cvvdp ↑ |" in text and "| kodim04 | default |" in text
        assert "| kodim04 | 2022 |" in text and "| kodim04 | avif |" in text
    if name == "07_transform_coding":
        assert "| palette (arith) |" in text and "| tc |" in text and "| psnr ↑ |" in text
        assert "share of zero coefficients per band: LL" in text
        assert "ours:taef2/tc" in text and "ours:taef2/arith" in text, "the RD budget tables are missing"
        assert "| effort 0 |" in text and "| effort 1, no detail term |" in text and "| stock encoder |" in text
        assert "detail_retention" in text, "the effort study must show detail retention beside fidelity"
        names = ("tc_vs_palette.png", "tc_vs_palette_crops.png", "tc_band_bytes.png", "tc_effort.png")
        for fname in (*names, "tc_effort_crops.png", "tc_rd.png"):
            f = tmp_path / "figures" / fname
            assert f.is_file() and f.read_bytes()[:8] == PNG_SIGNATURE, f"{fname} was not written"
    if name == "06_article_figures":
        fig_dir = tmp_path / "figures"
        for fname in FIGURES:
            f = fig_dir / fname
            assert f.is_file() and f.stat().st_size > 1000, f"{fname} was not written"
            assert f.read_bytes()[:8] == PNG_SIGNATURE, f"{fname} is not a PNG"
            with Image.open(f) as im:
                im.verify()
        captions = (fig_dir / "captions.md").read_text()
        assert "CVVDP" in captions and "JOD ↑" in captions and "| psnr ↑ |" in captions and "| cvvdp ↑ |" in captions
        assert "## The 2022 method, today's default and AVIF" in captions and "| kodim04 | default |" in captions
        assert "2022: palette" in captions and "default: tc" in captions
