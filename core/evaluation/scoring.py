"""Scoring a saved model on dataset rows, including the modality ablations, into a score table.

The score table is what `core.evaluation.evaluate.evaluate_scores` consumes: one row per item with
labels, fusion scores, and scores with the image removed and with the text removed (multimodal rows only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.constants import COL_ID, COL_LANGUAGE, COL_MODALITY, MODALITY_BOTH
from core.evaluation.evaluate import ablation_column, label_column, score_column, uncalibrated_column


def score_frame(
    model_dir: str | Path,
    dataset_dir: str | Path,
    frame: pd.DataFrame,
    ablations: bool = True,
    slice_columns: Sequence[str] = (),
    chunk_rows: int = 2048,
    loader_workers: int | None = None,
) -> pd.DataFrame:
    """Scores `frame`'s rows with the model saved in `model_dir`.

    Args:
        model_dir: A folder written by `core.training.model.save_model`.
        dataset_dir: The ingested dataset the rows come from (image paths are relative to it).
        frame: Rows with id, text, image, modality, optional language and the label columns.
        ablations: Also score multimodal rows with one modality removed.
        slice_columns: Further columns of `frame` the table carries for slicing (absent ones are skipped).
        chunk_rows: Rows encoded at a time (what bounds the memory of their encoder features).
        loader_workers: Read the rows from the dataset's shards instead, prepared by this many DataLoader
            worker processes (0: in this process), as training does when it streams.

    Returns:
        The score table: id, modality, language, and per model policy `label_*` (when the frame has the
        label column; NaN where a row is not annotated for the policy), `score_*`, and `score_no_image_*` / `score_no_text_*` when `ablations` is set.
    """
    import torch

    from core.training.encoding import BatchRunner, EncodedItems, encode_items, encode_prepared, label_tensors
    from core.training.model import load_model
    from core.training.preprocessing import Preprocessor
    from core.training.streaming import stream_rows

    model = load_model(model_dir)
    policies = list(model.spec.policies)
    preprocessor = Preprocessor.from_model_dir(model_dir)
    frame = frame.reset_index(drop=True)
    labelled = frame.reindex(columns=[*frame.columns, *[p for p in policies if p not in frame.columns]])
    device = torch.device("cpu")
    runner = BatchRunner(model, preprocessor, device, amp=False)
    parts: dict[str, list[np.ndarray]] = {"logits": [], "image": [], "text": []}

    def score(items: EncodedItems) -> None:
        parts["logits"].append(runner.all_logits(items, calibrated=False).numpy())
        if ablations:
            for name in ("image", "text"):
                parts[name].append(runner.probabilities(items, drop=name))

    if loader_workers is None:  # encoded features of one chunk at a time, images read from their files
        for start in range(0, len(labelled), chunk_rows):
            rows = labelled.iloc[start : start + chunk_rows]
            score(encode_items(model, preprocessor, Path(dataset_dir), rows, policies, True, device))
        order = None
    else:
        ids = []
        for ids_chunk, prepared in stream_rows(
            Path(dataset_dir), frame[COL_ID].astype(str), policies, preprocessor, loader_workers
        ):
            tensors = encode_prepared(model, preprocessor, prepared, True, True, device)
            unlabelled = np.full((len(ids_chunk), len(policies)), np.nan, dtype=np.float32)
            score(EncodedItems(ids=ids_chunk, **tensors, **label_tensors(unlabelled, len(ids_chunk))))
            ids.extend(ids_chunk)
        order = _frame_order(ids, frame[COL_ID].astype(str).tolist(), dataset_dir)
    empty = np.zeros((0, len(policies)), dtype=np.float32)
    stacked = {name: np.concatenate(values) if values else empty for name, values in parts.items()}
    if order is not None:
        stacked = {name: values[order] if len(values) else values for name, values in stacked.items()}
    logits = torch.from_numpy(stacked["logits"])
    removed = {name: stacked[name] for name in ("image", "text")}

    table = pd.DataFrame({COL_ID: frame[COL_ID].astype(str), COL_MODALITY: frame[COL_MODALITY]})
    if COL_LANGUAGE in frame.columns:
        table[COL_LANGUAGE] = frame[COL_LANGUAGE]
    for column in slice_columns:
        if column in frame.columns and column not in table.columns:
            table[column] = frame[column]
    uncalibrated = torch.sigmoid(logits).numpy()
    with torch.no_grad():
        scores = torch.sigmoid(model.calibrate(logits)).numpy()
    multimodal = (frame[COL_MODALITY] == MODALITY_BOTH).to_numpy()
    removed = removed if ablations else {}
    for j, policy in enumerate(policies):
        if policy in frame.columns:
            table[label_column(policy)] = frame[policy].astype(float)  # NaN: not annotated for it
        table[score_column(policy)] = scores[:, j]
        table[uncalibrated_column(policy)] = uncalibrated[:, j]
        for name, values in removed.items():
            table[ablation_column(policy, name)] = np.where(multimodal, values[:, j], np.nan)
    return table


def _frame_order(ids: list[str], wanted: list[str], dataset_dir: str | Path) -> np.ndarray:
    """Positions in `ids` (rows as the shards gave them) of the frame's rows, in the frame's order.

    Raises:
        ValueError: When a row of the frame is not in the shards.
    """
    position = {item: row for row, item in enumerate(ids)}
    missing = [item for item in wanted if item not in position]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(wanted)} rows to score are not in the shards of {dataset_dir} "
            f"(e.g. id={missing[0]}): the dataset artifact changed after the split; ingest it again"
        )
    return np.asarray([position[item] for item in wanted], dtype=np.int64)
