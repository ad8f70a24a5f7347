import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers.cli import main
from tests.conftest import ROOT, TAEF2_DIR


@pytest.fixture()
def small_png(tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.random((60, 84, 3)) * 60 + np.linspace(0, 180, 84)[None, :, None]).astype(np.uint8)
    p = tmp_path / "in.png"
    Image.fromarray(arr).save(p)
    return p


def test_encode_decode_with_taef2_dir(taef2, small_png, tmp_path, capsys):
    out = tmp_path / "a.sdc"
    assert main(["encode", str(small_png), str(out), "--model", str(TAEF2_DIR), "--target-bytes", "900"]) == 0
    assert out.stat().st_size <= 900
    assert "bytes spare" in capsys.readouterr().out
    png = tmp_path / "a.png"
    assert main(["decode", str(out), str(png)]) == 0  # model taken from the header ("taef2")
    assert Image.open(png).size == (84, 60)


def test_encode_tiny_sd_with_denoise_and_arith(tiny_sd_dir, small_png, tmp_path):
    out = tmp_path / "b.sdc"
    assert (
        main(
            [
                "encode",
                str(small_png),
                str(out),
                "--model",
                str(tiny_sd_dir),
                "--colors",
                "64",
                "--denoise",
                "--coder",
                "arith",
            ]
        )
        == 0
    )
    png = tmp_path / "b.png"
    assert main(["decode", str(out), str(png), "--model", str(tiny_sd_dir), "--no-denoise"]) == 0
    assert Image.open(png).size == (84, 60)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["encode", "missing.png", "x.sdc", "--model", "taef2"], "image not found"),
        (["decode", "missing.sdc", "x.png"], "file not found"),
    ],
)
def test_bad_paths_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err


def test_foreign_and_truncated_files(taef2, small_png, tmp_path, capsys):
    assert main(["decode", str(small_png), str(tmp_path / "o.png")]) == 2
    assert "not an .sdc file" in capsys.readouterr().err
    out = tmp_path / "t.sdc"
    main(["encode", str(small_png), str(out), "--model", "taef2", "--colors", "8"])
    out.write_bytes(out.read_bytes()[:-10])
    assert main(["decode", str(out), str(tmp_path / "o.png")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_unreadable_image_and_wrong_model(taef2, tiny_sd_dir, small_png, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    assert main(["encode", str(bad), str(tmp_path / "x.sdc"), "--model", "taef2"]) == 2
    assert "cannot read" in capsys.readouterr().err
    out = tmp_path / "c.sdc"
    main(["encode", str(small_png), str(out), "--model", "taef2", "--colors", "8"])
    assert main(["decode", str(out), str(tmp_path / "o.png"), "--model", str(tiny_sd_dir)]) == 2
    assert "same weights" in capsys.readouterr().err


def test_subprocess_unknown_model_has_no_traceback(small_png, tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers",
            "encode",
            str(small_png),
            str(tmp_path / "o.sdc"),
            "--model",
            "nobody/no-such-model",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: could not load the SD VAE for 'nobody/no-such-model'")


def test_compare_writes_figure_and_tables(taef2, tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:192, 0:192]
    arr = np.stack([xx, yy, (xx + yy) // 2], 2).astype(np.uint8) + rng.integers(0, 20, (192, 192, 3), dtype=np.uint8)
    src = tmp_path / "grad.png"
    Image.fromarray(arr).save(src)
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(src),
                "--model",
                "taef2",
                "--target-bytes",
                "3000",
                "--codecs",
                "jpeg",
                "webp",
                "--rule",
                "ge",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    md = (out / "metrics.md").read_text()
    assert "| grad | ours:taef2 |" in md and "| grad | jpeg | ge |" in md
    import json

    rows = json.loads((out / "metrics.json").read_text())["rows"]
    ours = next(r for r in rows if r["codec"] == "ours:taef2")
    jpeg = next(r for r in rows if r["codec"] == "jpeg")
    assert ours["bytes"] <= 3000 and jpeg["bytes"] >= ours["bytes"]  # rule ge: baseline gets at least our size
    assert ours["bpp"] == pytest.approx(8 * ours["bytes"] / 192**2)
    assert Image.open(out / "comparison.png").size[0] > 300


def test_decode_refuses_lossy_output_before_any_work(taef2, small_png, tmp_path, capsys):
    out = tmp_path / "k.sdc"
    main(["encode", str(small_png), str(out), "--model", "taef2", "--colors", "8"])
    capsys.readouterr()
    assert main(["decode", str(out), str(tmp_path / "k.jpg")]) == 2
    captured = capsys.readouterr()
    assert "lossless images only" in captured.err and "model:" not in captured.err  # no model was loaded


def _sdcomp_target() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["sdcomp"]


def test_sdcomp_console_command_runs_what_python_m_helpers_runs(taef2, small_png, tmp_path, capsys):
    """``[project.scripts] sdcomp`` names the function ``python -m helpers`` calls, and that function encodes and
    decodes when called as the console script calls it (argv from ``sys.argv``, exit status returned)."""
    import ast
    import importlib.metadata

    import helpers.cli

    target = _sdcomp_target()
    fn = importlib.metadata.EntryPoint(name="sdcomp", value=target, group="console_scripts").load()
    assert fn is helpers.cli.main
    tree = ast.parse((ROOT / "helpers" / "__main__.py").read_text())
    module, name = target.split(":")
    assert any(
        isinstance(n, ast.ImportFrom)
        and n.level == 1
        and f"helpers.{n.module}" == module
        and name in [a.name for a in n.names]
        for n in ast.walk(tree)
    ), "__main__ runs another function"
    out, png = tmp_path / "a.sdc", tmp_path / "a.png"
    argv = sys.argv
    try:
        sys.argv = [
            "sdcomp",
            "encode",
            str(small_png),
            str(out),
            "--model",
            str(TAEF2_DIR),
            "--target-bytes",
            "900",
            "--runtime",
            "torch",
        ]
        assert fn() == 0
        sys.argv = ["sdcomp", "decode", str(out), str(png), "--runtime", "torch"]
        assert fn() == 0
    finally:
        sys.argv = argv
    assert out.stat().st_size <= 900 and Image.open(png).size == (84, 60)


def test_installed_sdcomp_command_matches_pyproject():
    """Where the package is installed with its console command (``pip install -e .``), the installed entry point is
    the one pyproject.toml declares and the command starts."""
    import importlib.metadata
    import shutil

    eps = importlib.metadata.entry_points(group="console_scripts", name="sdcomp")
    if not eps:
        pytest.skip("the installed metadata has no sdcomp command: reinstall with pip install -e . to get it")
    assert next(iter(eps)).value == _sdcomp_target()
    exe = shutil.which("sdcomp")
    if exe is None:
        pytest.skip("sdcomp is installed but not on PATH")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and "encode" in r.stdout and "decode" in r.stdout


@pytest.mark.parametrize(
    "argv0, prog", [("/usr/local/bin/sdcomp", "sdcomp"), ("/x/helpers/__main__.py", "python -m helpers")]
)
def test_usage_names_the_command_the_user_typed(monkeypatch, capsys, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(SystemExit):
        main(["encode"])  # missing arguments: argparse prints the usage line
    assert capsys.readouterr().err.startswith(f"usage: {prog} encode")
