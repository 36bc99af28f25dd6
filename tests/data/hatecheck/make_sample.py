"""Writes `cases_sample.csv.gz`: whole templates of Multilingual HateCheck, five languages, about 1,000 cases.

Multilingual HateCheck (Röttger et al., WOAH 2022; rewire-online/multilingual-hatecheck, commit a03f2ca) is
CC BY 4.0. Run from the repository root with the project's shared datasets beside it:

    .venv/bin/python tests/data/hatecheck/make_sample.py ../shared/datasets/multilingual-hatecheck

Per language and functionality it keeps whole templates (a template's cases differ only in the target group),
more of them for the rare functionalities (threats, slurs, profanity), chosen with a fixed seed.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pandas as pd

LANGUAGES = {"french": "fr", "german": "de", "polish": "pl", "hindi": "hi", "arabic": "ar"}
TEMPLATES_PER_FUNCTIONALITY = {
    "threat_dir_h": 2,
    "threat_norm_h": 2,
    "slur_h": 3,
    "profanity_h": 2,
    "profanity_nh": 8,
}
COLUMNS = ["mhc_case_id", "language", "functionality", "test_case", "label_gold", "templ_id"]
SEED = 9


def sample(source: Path) -> pd.DataFrame:
    rng = random.Random(SEED)
    frames = []
    for name, code in LANGUAGES.items():
        cases = pd.read_csv(source / f"cases_{name}.csv.gz", dtype=str)
        cases["language"] = code
        for functionality, rows in sorted(cases.groupby("functionality")):
            templates = sorted(rows["templ_id"].unique(), key=int)
            keep = rng.sample(
                templates, min(len(templates), TEMPLATES_PER_FUNCTIONALITY.get(functionality, 1))
            )
            frames.append(rows[rows["templ_id"].isin(keep)])
    return pd.concat(frames, ignore_index=True)[COLUMNS]


if __name__ == "__main__":
    out = Path(__file__).with_name("cases_sample.csv.gz")
    table = sample(Path(sys.argv[1]))
    table.to_csv(out, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"wrote {out} ({len(table)} cases)")
