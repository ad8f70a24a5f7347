"""Licensed photographs for training and for checks on images the project has never tuned on (never Kodak).

They come from Debian packages (``apt-get download`` + ``dpkg-deb -x``, no root needed), are read in place
from a cache folder and are never committed::

    python -m helpers.photos [--dest DIR]     # default $SDCOMP_CACHE/photos or ~/.cache/sdcomp/photos

``PHOTOS`` lists every file with its package and licence; ``HOLDOUT`` marks the eight photos that no table
or parameter is fitted on (``train_photos()`` / ``holdout_photos()``). ``DEST/LICENSES.md`` records the
licences and the packages' copyright files are copied beside the photos.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SDCError

MATE = "mate-backgrounds"
LOMIRI16 = "lomiri-wallpapers-16.04"
LOMIRI20 = "lomiri-wallpapers-20.04"
PLASMA = "plasma-workspace-wallpapers"


@dataclass(frozen=True)
class Photo:
    name: str  # file name in the cache folder
    package: str
    path: str  # inside the package
    licence: str
    author: str


def _mate(n: str) -> Photo:
    return Photo(
        f"mate_{n}.jpg", MATE, f"usr/share/backgrounds/mate/nature/{n}.jpg", "GPL-2+", "MATE artwork (see copyright)"
    )


def _lomiri(n: str, pkg: str, lic: str, author: str) -> Photo:
    return Photo(n, pkg, f"usr/share/backgrounds/{n}", lic, author)


def _plasma(n: str, size: str = "2560x1600") -> Photo:
    return Photo(
        f"plasma_{n}.jpg",
        PLASMA,
        f"usr/share/wallpapers/{n}/contents/images/{size}.jpg",
        "GPL-2+",
        "KDE Visual Design Group",
    )


PHOTOS: tuple[Photo, ...] = (
    _lomiri("Bridge_by_Sander_Klootwijk.jpg", LOMIRI16, "CC-BY-SA-4.0", "Sander Klootwijk"),
    _lomiri("Dragonfly_by_Bolly.jpg", LOMIRI16, "CC-BY-SA-4.0", "Bolly"),
    _lomiri("Kleiber_by_Lukas_Baubkus.jpg", LOMIRI20, "CC-BY-SA-3.0", "Lukas Baubkus"),
    _lomiri("Picture_0B_by_freespace.jpg", LOMIRI16, "CC-BY-4.0", "Trevor 'Freespace'"),
    _lomiri("Picture_1A_by_freespace.jpg", LOMIRI16, "CC-BY-4.0", "Trevor 'Freespace'"),
    _lomiri("Wine_by_Jakkub_Mede.jpg", LOMIRI16, "CC-BY-4.0", "Jakub Mede"),
    _lomiri("aitzgorri_by_Aitzol_Berasategi.jpg", LOMIRI16, "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("free_by_Peter_Nerlich.jpg", LOMIRI16, "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("friends_by_Aitzol_Berasategi.jpg", LOMIRI16, "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("greentock_by_Peter_Nerlich.jpg", LOMIRI16, "CC-BY-SA-4.0", "Peter Nerlich"),
    _lomiri("life_by_Aitzol_Berasategi.jpg", LOMIRI16, "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("picosdeeuropa_by_Aitzol_Berasategi.jpg", LOMIRI16, "CC-BY-4.0", "Aitzol Berasategi"),
    _lomiri("seeding_by_Clements_Engelhardt.jpg", LOMIRI16, "CC0-1.0", "Clemens Engelhardt"),
    _lomiri("sunset_by_Aitzol_Berasategi.jpg", LOMIRI16, "CC-BY-4.0", "Aitzol Berasategi"),
    *(
        _mate(n)
        for n in ("Blinds", "Dune", "Garden", "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")
    ),
    *(
        _plasma(n)
        for n in (
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    ),
    _plasma("Volna", "5120x2880"),
)
#: never used to fit anything: the "other photos" check set
HOLDOUT = frozenset(
    {
        "aitzgorri_by_Aitzol_Berasategi.jpg",
        "life_by_Aitzol_Berasategi.jpg",
        "mate_LadyBird.jpg",
        "seeding_by_Clements_Engelhardt.jpg",
        "plasma_ColorfulCups.jpg",
        "plasma_EveningGlow.jpg",
        "plasma_Path.jpg",
        "plasma_summer_1am.jpg",
    }
)


def default_dest() -> Path:
    return Path(os.environ.get("SDCOMP_CACHE") or Path.home() / ".cache" / "sdcomp") / "photos"


def fetch(dest: Path | None = None, quiet: bool = False) -> Path:
    """Download the packages, extract the listed photos and their copyright files into ``dest``."""
    dest = Path(dest or default_dest())
    missing = [p for p in PHOTOS if not (dest / p.name).is_file()]
    if not missing:
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SDCError(
            "fetching the licensed photos needs Debian's apt-get and dpkg-deb; copy them into "
            f"{dest} by hand (see helpers/photos.py for the list)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    pkgs = sorted({p.package for p in missing})
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(["apt-get", "download", *pkgs], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if run.returncode != 0 or len(debs) < len(pkgs):
            raise SDCError(
                f"apt-get download {' '.join(pkgs)} failed ({run.stderr.strip().splitlines()[-1:] or '?'}); "
                f"check the package sources or copy the photos into {dest}"
            )
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        root = Path(tmp) / "x"
        for p in missing:
            src = root / p.path
            if not src.is_file():
                raise SDCError(f"{p.package} no longer ships {p.path}; update helpers/photos.py")
            shutil.copyfile(src, dest / p.name)
        for pkg in pkgs:
            cp = root / "usr/share/doc" / pkg / "copyright"
            if cp.is_file():
                shutil.copyfile(cp, dest / f"copyright.{pkg}")
    lines = [
        "# Licensed photographs (from Debian packages; not part of the repository)",
        "",
        "| file | package | licence | author | use |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p.name} | {p.package} | {p.licence} | {p.author} | {'holdout' if p.name in HOLDOUT else 'train'} |"
        for p in PHOTOS
    ]
    (dest / "LICENSES.md").write_text("\n".join(lines) + "\n")
    if not quiet:
        print(f"{len(missing)} photos written to {dest}", file=sys.stderr)
    return dest


def _paths(dest: Path | None, holdout: bool) -> list[Path]:
    dest = fetch(dest, quiet=True)
    return [dest / p.name for p in PHOTOS if (p.name in HOLDOUT) == holdout]


def train_photos(dest: Path | None = None) -> list[Path]:
    return _paths(dest, False)


def holdout_photos(dest: Path | None = None) -> list[Path]:
    return _paths(dest, True)


def crop512(img, short: int = 512):
    """Scale so the short side is ``short`` (Lanczos), then the central 512x512 crop: a Kodak-like view."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    s = short / min(w, h)
    img = img.resize((max(512, round(w * s)), max(512, round(h * s))), Image.Resampling.LANCZOS)
    w, h = img.size
    left, top = (w - 512) // 2, (h - 512) // 2
    return img.crop((left, top, left + 512, top + 512))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.photos", description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=None, help="folder (default $SDCOMP_CACHE/photos or ~/.cache/sdcomp/photos)")
    ap.add_argument(
        "--holdout-dir",
        default=None,
        help="also write the holdout photos' 512x512 crops (crop512) into this folder, for the benchmark",
    )
    args = ap.parse_args(argv)
    from .errors import guarded

    def run():
        dest = fetch(Path(args.dest) if args.dest else None)
        print(dest)
        if args.holdout_dir:
            from PIL import Image

            out = Path(args.holdout_dir)
            out.mkdir(parents=True, exist_ok=True)
            for p in holdout_photos(dest):
                with Image.open(p) as im:
                    crop512(im).save(out / (p.stem + ".png"))
            print(out)
        return 0

    return guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())
