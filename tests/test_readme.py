"""The README's result tables are generated from results/ (helpers.bench.readme): this fails when README.md
differs from what ``python -m helpers.bench.readme`` would write."""

import re
import shutil
from pathlib import Path

import pytest

from helpers.bench import readme

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_results():
    text = (ROOT / "README.md").read_text()
    names = re.findall(r"<!-- results:([\w-]+) -->", text)
    assert sorted(names) == sorted(readme.BLOCKS), "every generated table appears once in the README"
    assert readme.stale_blocks(text) == [], "README tables are stale: run python -m helpers.bench.readme"
    assert readme.main(["--check"]) == 0


def _row(table: str, first: str) -> list[str]:
    line = next(ln for ln in table.splitlines() if ln.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_tables_agree_with_the_committed_summaries():
    """Cells of the generated tables against the same numbers in the summary.md files the benchmark and the
    scripts wrote (a second path from the records to the text)."""
    results = ROOT / "results"
    kodak = readme.kodak_table(results)
    summary = (results / "kodak" / "summary.md").read_text()
    at5000 = summary.split("## >>> At 5000 bytes")[1]
    for title, codec in (("`tc`", "ours:taef2/tc"), ("palette `zlib` (2022)", "ours:taef2/zlib")):
        psnr = _row(at5000, f"**{codec}**")[4]
        cols = _row(kodak, "bytes")
        assert _row(kodak, "5000")[cols.index(title)] == psnr
    jxl = _row(at5000, "jxl")  # 13 of 24 images fit: the count is shown
    assert _row(kodak, "5000")[-1] == f"{jxl[4]} ({jxl[1].split('/')[0]})"

    dm = readme.decode_memory_table(results)
    dm_summary = (results / "decode_memory" / "summary.md").read_text()
    matched = 0
    for line in dm_summary.splitlines():
        m = re.match(
            r"\| (\d+x\d+) \| (onnx|torch) \| 0 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| (\d+) \| (\d+) \| (\d+) \|", line
        )
        if m:
            cell = _row(dm, m.group(1))[1 if m.group(2) == "onnx" else 2]
            assert f"**{m.group(3)}** ({m.group(5)})" in cell and _row(dm, m.group(1))[-1] == m.group(4)
            matched += 1
    assert matched == 12

    sd = readme.sd_fullsize_table(results)
    counts = re.search(
        r"UNet ([\d,]+), VAE ([\d,]+), CLIP text encoder ([\d,]+)", (results / "sd_fullsize" / "summary.md").read_text()
    ).groups()
    unet, vae, clip = (int(c.replace(",", "")) / 1e6 for c in counts)
    assert f"UNet {unet:.1f} M, VAE {vae:.1f} M, CLIP text encoder {clip:.1f} M" in _row(sd, "parameters")[1]

    lp = readme.large_photo_table(results)
    assert _row(lp, "4000x3000")[-1] in (results / "large_photo" / "summary.md").read_text()


def test_stale_and_unknown_blocks(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "large_photo", results / "large_photo")
    text = "intro\n<!-- results:large-photo -->\n| old |\n<!-- /results -->\nend\n"
    assert readme.stale_blocks(text, results) == ["large-photo"]
    new = readme.render(text, results)
    assert new.startswith("intro\n<!-- results:large-photo -->\n| size |") and new.endswith("<!-- /results -->\nend\n")
    assert readme.stale_blocks(new, results) == []
    doc = results / "large_photo" / "records.json"
    doc.write_text(doc.read_text().replace('"wall_s": 192.21', '"wall_s": 290.0'))  # a new run: the table follows
    assert readme.stale_blocks(new, results) == ["large-photo"] and "| 290 s /" in readme.render(new, results)
    readme_file = tmp_path / "README.md"
    readme_file.write_text(new)
    assert readme.main(["--check", "--readme", str(readme_file), "--results", str(results)]) == 1
    assert readme.main(["--readme", str(readme_file), "--results", str(results)]) == 0
    assert readme.main(["--check", "--readme", str(readme_file), "--results", str(results)]) == 0
    with pytest.raises(ValueError, match="unknown results block 'nope'"):
        readme.render("<!-- results:nope -->\n<!-- /results -->\n", results)
