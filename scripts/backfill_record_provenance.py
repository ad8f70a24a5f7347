"""One-off (issue 15): give the committed benchmark records of ours the provenance fields the benchmark writes since
``encoder_weights`` and ``refine`` exist, with the values they were made with: the shipped encoder file of the time
(unchanged since those records were re-made) and the refine schedules of the time. Run before a schedule or the
weights change; the benchmark then re-makes exactly the records that would now be coded differently::

    python scripts/backfill_record_provenance.py results/kodak results/holdout ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers.backends.taef2_spec import encoder_digest
from helpers.bench import config
from helpers.bench.records import save_records
from helpers.methods.tc.refine import schedule_label


def main(folders: list[str]) -> None:
    for folder in folders:
        path = Path(folder) / config.RECORDS_FILE
        doc = json.loads(path.read_text())
        n = 0
        for r in doc.get("records", []):
            v = config.variant(r.get("coder", "")) if r.get("kind") == "ours" else None
            if v is None or "refine" in r:
                continue
            r["encoder_weights"] = encoder_digest(r.get("encoder", "stock"))
            r["refine"] = schedule_label(v[2])
            n += 1
        save_records(doc, path)
        print(f"{path}: {n} records given encoder_weights and refine")


if __name__ == "__main__":
    main(sys.argv[1:])
