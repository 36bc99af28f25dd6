"""Real data for the data tests: the committed Multilingual HateCheck sample (CC BY 4.0, see
tests/data/hatecheck/README.md), made into datasets the way real moderation data arrives."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

SAMPLE = Path(__file__).parent / "data" / "hatecheck" / "cases_sample.csv.gz"
POLICIES = ["hateful", "threat", "slur", "profanity"]
# Each review queue (here: a language) labels its own policies; the others stay unannotated (null).
QUEUES = {
    "fr": ("hateful", "threat"),
    "de": ("hateful", "threat", "profanity"),
    "pl": ("hateful", "slur", "profanity"),
    "hi": ("hateful", "slur", "profanity"),
    "ar": ("threat", "slur", "profanity"),
}
GROUP_COLUMN = "templ_id"


def cases() -> pd.DataFrame:
    """The sample, one row per case, with a policy label per functionality and a template id per language."""
    table = pd.read_csv(SAMPLE, dtype=str)
    functionality = table["functionality"]
    labels = {
        "hateful": (table["label_gold"] == "hateful").astype(int),
        "threat": functionality.str.startswith("threat_").astype(int),
        "slur": functionality.str.startswith("slur").astype(int),
        "profanity": functionality.str.startswith("profanity").astype(int),
    }
    return pd.DataFrame(
        {
            "id": table["mhc_case_id"],
            "text": table["test_case"],
            "language": table["language"],
            "functionality": functionality,
            GROUP_COLUMN: table["language"] + "-" + table["templ_id"],
            **labels,
        }
    )


def partially_labeled_rows() -> list[dict]:
    """Manifest rows where each language is annotated only for its queue's policies (null elsewhere)."""
    rows = []
    for record in cases().to_dict("records"):
        annotated = QUEUES[record["language"]]
        rows.append({**record, **{p: (record[p] if p in annotated else None) for p in POLICIES}})
    return rows


def write_messy_dataset(folder: Path) -> dict:
    """A dataset with what real ones hold, written as many Windows tools write JSONL (UTF-8 BOM, CRLF):

    partial labels in blocks (per queue), exact copies across a fixed split (train kept, test copy annotated for
    other policies), copies that disagree on a label, texts over 5,000 characters, a row annotated for nothing,
    and templates as groups (`templ_id`).

    Returns:
        What was planted: {"copies": n, "conflicts": n, "long_texts": n, "unannotated": n, "rows": n}.
    """
    rows = partially_labeled_rows()
    planted = {"copies": 0, "conflicts": 0, "long_texts": 0, "unannotated": 1}
    for row in rows[::97][:12]:  # train copy fixed; the test copy adds a label and must be dropped
        row["split"] = "train"
        copy = {**row, "id": f"{row['id']}-resent", "split": "test"}
        missing = [p for p in POLICIES if row[p] is None]
        copy[missing[0]] = 0 if missing else None
        rows.append(copy)
        planted["copies"] += 1
    for row in rows[5::151][:4]:  # two moderators disagree on hateful
        if row["hateful"] is not None:
            rows.append({**row, "id": f"{row['id']}-second-review", "hateful": 1 - row["hateful"]})
            planted["copies"] += 1
            planted["conflicts"] += 1
    for row in rows[11::211][:3]:
        row["text"] = (row["text"] + " ") * (5200 // (len(row["text"]) + 1) + 1)
        planted["long_texts"] += 1
    rows.append(
        {"id": "never-reviewed", "text": "pas encore revu", "language": "fr", GROUP_COLUMN: "fr-none"}
    )
    planted["rows"] = len(rows)
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows)
    (folder / "manifest.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    return planted
