"""Quality benchmark (`make bench-quality`): the project's default model against the baselines a user tries
first, on the same split, in the same run.

Datasets (named with their licences in the report):
* the embedded synthetic set (multimodal, 4 policies; built to be solvable: a sanity check, not evidence);
* Multilingual HateCheck (Röttger et al. 2022, CC BY 4.0) from `../shared/datasets/multilingual-hatecheck`: a
  stratified sample over its ten languages, policy `hateful`, split by template (`templ_id`) so that
  near-duplicate cases never straddle splits; slices by language and by target group;
* Fashion-MNIST (Xiao et al. 2017, MIT), the *training* file of Debian's `dataset-fashion-mnist` (the t10k
  file is reserved for independent checks and never read), image-only, policy `shirt` (its hardest class).

Per dataset: test ROC-AUC with a bootstrap 95% interval, PR-AUC and ECE for the model and for TF-IDF + logistic
regression (text) or logistic regression on raw pixels (images), and training seconds. Both see the train split
(the model also uses validation for early stopping and calibration); both are scored on the same test rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
HATECHECK_DIR = ROOT.parent / "shared" / "datasets" / "multilingual-hatecheck"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")  # never t10k
FASHION_SHIRT = 6


@dataclass
class Scores:
    """One scorer's test scores for one policy."""

    name: str
    labels: np.ndarray
    scores: np.ndarray
    seconds: float
    uncalibrated: np.ndarray | None = None


@dataclass
class DatasetResult:
    name: str
    licence: str
    rows: dict[str, int]
    policies: dict[str, list[Scores]] = field(default_factory=dict)
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# Datasets ------------------------------------------------------------------------------------------------
def hatecheck_rows(rows: int, seed: int) -> list[dict]:
    """A language-stratified sample of Multilingual HateCheck, one manifest row per case."""
    frames = []
    for path in sorted(HATECHECK_DIR.glob("cases_*.csv.gz")):
        table = pd.read_csv(path, dtype=str)
        table["language_name"] = path.name[len("cases_") : -len(".csv.gz")]
        frames.append(table)
    if not frames:
        raise FileNotFoundError(f"no cases_*.csv.gz under {HATECHECK_DIR}")
    table = pd.concat(frames, ignore_index=True)
    per_language = max(1, rows // len(frames))
    table = table.groupby("language_name").sample(n=per_language, random_state=seed)
    return [
        {
            "id": record["mhc_case_id"],
            "text": record["test_case"],
            "language": record["language_name"],
            "target": record.get("target_ident") if isinstance(record.get("target_ident"), str) else "none",
            "group": f"{record['language_name']}-{record['templ_id']}",
            "hateful": int(record["label_gold"] == "hateful"),
        }
        for record in table.to_dict("records")
    ]


def fashion_mnist_rows(folder: Path, rows: int, seed: int) -> list[dict]:
    """A sample of the Fashion-MNIST training file as PNG files, image-only, labelled `shirt`."""
    from PIL import Image

    images_file, labels_file = (FASHION_MNIST_DIR / name for name in FASHION_MNIST_TRAIN)
    pixels = np.frombuffer(gzip.decompress(images_file.read_bytes()), np.uint8, offset=16).reshape(-1, 28, 28)
    classes = np.frombuffer(gzip.decompress(labels_file.read_bytes()), np.uint8, offset=8)
    chosen = np.random.default_rng(seed).choice(len(pixels), rows, replace=False)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for index in chosen:
        name = f"images/fm{index}.png"
        Image.fromarray(pixels[index]).convert("RGB").save(folder / name)
        out.append({"id": f"fm{index}", "image": name, "shirt": int(classes[index] == FASHION_SHIRT)})
    return out


def write_manifest(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "manifest.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


# Running -------------------------------------------------------------------------------------------------
def prepare(source: Path, work: Path, config):
    """Ingests and splits a dataset folder as the pipeline does; returns (dataset_dir, frame with split)."""
    from core.data.ingest import ingest_dataset
    from core.data.split import read_split_frame, split_dataset

    dataset_dir, splits_dir = work / "dataset", work / "splits"
    ingest_dataset(source, dataset_dir, config)
    split_dataset(dataset_dir, splits_dir, config.policies, config.split)
    return dataset_dir, read_split_frame(dataset_dir, splits_dir)


def model_scores(
    dataset_dir: Path, frame: pd.DataFrame, config, work: Path
) -> tuple[pd.DataFrame, float, dict]:
    from core.common.constants import COL_SPLIT, SPLIT_TEST
    from core.evaluation.scoring import score_frame
    from core.training.trainer import train_model

    started = time.perf_counter()
    result = train_model(dataset_dir, frame, config, work / "model")
    seconds = time.perf_counter() - started
    test = score_frame(work / "model", dataset_dir, frame[frame[COL_SPLIT] == SPLIT_TEST], ablations=False)
    return test, seconds, result.to_dict()


def tfidf_baseline(frame: pd.DataFrame, policy: str) -> Scores:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = _train_test(frame, policy)
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=1)
    features = vectorizer.fit_transform(train["text"].fillna(""))
    model = LogisticRegression(max_iter=2000, C=1.0).fit(features, train[policy].astype(int))
    scores = model.predict_proba(vectorizer.transform(test["text"].fillna("")))[:, 1]
    return Scores(
        "TF-IDF + logistic regression", test[policy].to_numpy(float), scores, time.perf_counter() - started
    )


def pixel_baseline(dataset_dir: Path, frame: pd.DataFrame, policy: str, side: int = 28) -> Scores:
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    def pixels(rows: pd.DataFrame) -> np.ndarray:
        return np.stack(
            [
                np.asarray(
                    Image.open(dataset_dir / p).convert("L").resize((side, side)), dtype=np.float32
                ).ravel()
                / 255.0
                for p in rows["image"]
            ]
        )

    train, test = _train_test(frame, policy)
    started = time.perf_counter()
    model = LogisticRegression(max_iter=3000, C=1.0).fit(pixels(train), train[policy].astype(int))
    scores = model.predict_proba(pixels(test))[:, 1]
    return Scores(
        "logistic regression on pixels", test[policy].to_numpy(float), scores, time.perf_counter() - started
    )


def _train_test(frame: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from core.common.constants import COL_SPLIT, SPLIT_TEST, SPLIT_TRAIN

    annotated = frame[frame[policy].notna()]
    return annotated[annotated[COL_SPLIT] == SPLIT_TRAIN], annotated[annotated[COL_SPLIT] == SPLIT_TEST]


def run_dataset(name, licence, source, work, config, baseline, slice_columns=()) -> DatasetResult:
    from core.common.constants import COL_ID, COL_SPLIT, SPLIT_TEST
    from core.evaluation.evaluate import label_column, score_column, uncalibrated_column

    dataset_dir, frame = prepare(source, work, config)
    test, seconds, summary = model_scores(dataset_dir, frame, config, work)
    result = DatasetResult(name, licence, {k: int(v) for k, v in frame[COL_SPLIT].value_counts().items()})
    result.notes.append(
        f"model: {summary['epochs_run']} epochs, best {summary['best_epoch']}, calibration "
        + ", ".join(
            f"{p}: {'fitted' if c['fitted'] else 'identity'}" for p, c in summary["calibration"].items()
        )
    )
    test_rows = frame[frame[COL_SPLIT] == SPLIT_TEST].reset_index(drop=True)
    assert (test[COL_ID].to_numpy() == test_rows[COL_ID].astype(str).to_numpy()).all()
    for policy in config.policies:
        keep = test[label_column(policy)].notna().to_numpy()
        ours = Scores(
            "tns model (defaults)",
            test[label_column(policy)].to_numpy(float)[keep],
            test[score_column(policy)].to_numpy(float)[keep],
            seconds,
            test[uncalibrated_column(policy)].to_numpy(float)[keep],
        )
        result.policies[policy] = [ours, baseline(dataset_dir, frame, policy)]
        for column in slice_columns:
            values = test_rows[column].astype(str).to_numpy()[keep]
            result.slices[f"{policy} by {column}"] = _slice_table(ours, values)
    return result


def _slice_table(scores: Scores, values: np.ndarray, threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """Per slice value: rows, positives, ROC-AUC and the false-positive rate at a 0.5 calibrated score."""
    from core.evaluation import metrics

    table = {}
    for value in sorted(set(values)):
        mask = values == value
        y, s = scores.labels[mask], scores.scores[mask]
        negatives = int((y == 0).sum())
        table[value] = {
            "rows": int(mask.sum()),
            "positives": int(y.sum()),
            "roc_auc": metrics.roc_auc(y, s) if 0 < y.sum() < len(y) else None,
            "fpr": float(((s >= threshold) & (y == 0)).sum() / negatives) if negatives else None,
        }
    return table


# Report --------------------------------------------------------------------------------------------------
def _cells(scores: Scores, bootstrap: int) -> list[str]:
    from core.evaluation import metrics

    auc = metrics.roc_auc(scores.labels, scores.scores)
    low, high = metrics.bootstrap_roc_auc(scores.labels, scores.scores, bootstrap, 0) or (float("nan"),) * 2
    ece = metrics.expected_calibration_error(scores.labels, scores.scores, 10)
    before = (
        f" (before calibration {metrics.expected_calibration_error(scores.labels, scores.uncalibrated, 10):.3f})"
        if scores.uncalibrated is not None
        else ""
    )
    return [
        scores.name,
        f"{auc:.4f} [{low:.4f}, {high:.4f}]",
        f"{metrics.pr_auc(scores.labels, scores.scores):.4f}",
        f"{ece:.3f}{before}",
        f"{scores.seconds:.1f}",
    ]


def render(results: list[DatasetResult], command: str, seconds: float, bootstrap: int) -> str:
    lines = [
        "## Quality: the default model against first-try baselines",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min). Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. Test split only; ROC-AUC with a {bootstrap}-resample bootstrap "
        "95% interval; ECE over 10 equal-width bins; seconds: training (model: encoding, training, "
        "calibration; baseline: fit).",
        "",
    ]
    for result in results:
        rows = ", ".join(f"{k} {v}" for k, v in sorted(result.rows.items()))
        lines += [f"### {result.name}", "", f"Licence: {result.licence}. Rows: {rows}.", ""]
        for policy, scorers in result.policies.items():
            positives = int(scorers[0].labels.sum())
            lines += [
                f"Policy `{policy}` ({positives} positives in {len(scorers[0].labels)} test rows):",
                "",
                "| Scorer | ROC-AUC [95% CI] | PR-AUC | ECE | Seconds |",
                "|---|---|---|---|---|",
            ]
            lines += ["| " + " | ".join(_cells(s, bootstrap)) + " |" for s in scorers]
            lines.append("")
        for title, table in result.slices.items():
            lines += [
                f"Slices, {title} (model; FPR at calibrated score 0.5):",
                "",
                "| Value | Rows | Positives | ROC-AUC | FPR |",
                "|---|---|---|---|---|",
            ]
            for value, entry in table.items():
                auc = "n/a" if entry["roc_auc"] is None else f"{entry['roc_auc']:.3f}"
                fpr = "n/a" if entry["fpr"] is None else f"{entry['fpr']:.3f}"
                lines.append(f"| {value} | {entry['rows']} | {entry['positives']} | {auc} | {fpr} |")
            lines.append("")
        lines += [f"- {note}" for note in result.notes] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--work", default=os.environ.get("TNS_HOME", str(ROOT / ".tns")) + "/bench-quality")
    parser.add_argument("--rows", type=int, default=5000, help="rows per real dataset")
    parser.add_argument("--datasets", default="embedded,hatecheck,fashion-mnist")
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--set", action="append", default=[], help="run configuration override KEY=VALUE")
    args = parser.parse_args(argv)

    from core.common.env import apply_offline_environment
    from core.config.run import RunConfig
    from core.data.generate import generate_dataset

    apply_offline_environment()
    started = time.perf_counter()
    work = Path(args.work)
    overrides = dict(item.split("=", 1) for item in args.set)
    results: list[DatasetResult] = []
    wanted = args.datasets.split(",")

    def config_for(policies: list[str], **extra) -> RunConfig:
        from core.config.loading import parse_value

        changes = {"policies": policies, **extra, **{k: parse_value(v) for k, v in overrides.items()}}
        return RunConfig().with_overrides(**changes)

    if "embedded" in wanted:
        source = work / "embedded" / "raw"
        if not (source / "manifest.jsonl").is_file():
            generate_dataset(source)
        config = config_for(["hate", "violence", "sexual", "spam"])
        results.append(
            run_dataset(
                "Embedded synthetic set",
                "generated by this project (Apache-2.0)",
                source,
                work / "embedded",
                config,
                lambda d, f, p: tfidf_baseline(f, p),
                ("modality",),
            )
        )
    if "hatecheck" in wanted:
        source = write_manifest(work / "hatecheck" / "raw", hatecheck_rows(args.rows, 0))
        config = config_for(["hateful"])
        results.append(
            run_dataset(
                "Multilingual HateCheck (10 languages, split by template)",
                "CC BY 4.0 (Röttger et al., WOAH 2022)",
                source,
                work / "hatecheck",
                config,
                lambda d, f, p: tfidf_baseline(f, p),
                ("language", "target"),
            )
        )
    if "fashion-mnist" in wanted:
        source = work / "fashion-mnist" / "raw"
        write_manifest(source, fashion_mnist_rows(source, args.rows, 0))
        config = config_for(["shirt"], **{"validation.positive_rate_min": 0.0})
        results.append(
            run_dataset(
                "Fashion-MNIST training file, class 'shirt' vs the rest (image-only)",
                "MIT (Xiao et al. 2017)",
                source,
                work / "fashion-mnist",
                config,
                pixel_baseline,
            )
        )
    command = (
        f"python -m benchmarks.quality {' '.join(sys.argv[1:])}".strip()
        if sys.argv[1:]
        else "make bench-quality"
    )
    section = render(results, command, time.perf_counter() - started, args.bootstrap)
    out = Path(args.out)
    marker = "## Quality: the default model against first-try baselines"
    existing = out.read_text(encoding="utf-8") if out.is_file() else ""
    if marker in existing:
        existing = existing[: existing.index(marker)].rstrip() + "\n\n"
    out.write_text((existing + section) if existing else section, encoding="utf-8")
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
