"""Does a ColorVideoVDP term in the encoder-side refinement buy JOD? Measured before using one (issue 15).

    python scripts/exp_cvvdp_refine.py [--photos train|holdout] [--n 4] [--gammas 0 0.003 0.01 0.03] [--effort 1]

The tc encoder's refinement (``--effort``, :mod:`helpers.methods.tc.refine`) minimises pixel error + rate + a detail
term. The benchmark scores ColorVideoVDP, and cvvdp is written in PyTorch with a ``loss`` (10 - JOD) meant for
optimisation. This adds ``gamma * cvvdp.loss(decoded, original)`` to every refinement step: it runs
``scripts/exp_refine_schedule.py`` with one variant ``effort=E,gamma=G`` per gamma, from the stock encoder's latent
(as when it was first measured), on the first N photos of the set (never Kodak), and writes the records to
``results/encoder_training/refine_cvvdp_<photos>_e<effort>.json``. (The committed ``cvvdp_refine_train_e1.json``
came from this script's earlier, standalone form: the same measurement, rows keyed by ``gamma``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", choices=("train", "holdout"), default="train")
    ap.add_argument("--n", type=int, default=4, help="the first N photos of the set")
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.003, 0.01, 0.03])
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from exp_refine_schedule import main as run

    run(
        ["--variants", *(f"effort={args.effort},gamma={g:g}" for g in args.gammas)]
        + ["--photos", args.photos, "--n", str(args.n), "--budget", str(args.budget), "--threads", str(args.threads)]
        + ["--encoder", "stock", "--out", f"cvvdp_{args.photos}_e{args.effort}"]
    )


if __name__ == "__main__":
    main()
