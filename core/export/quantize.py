"""INT8 for CPU hosts: a dynamically quantized copy of the exported classifier, and how far it is from fp32.

Where the time goes (onnxruntime's profiler, the default model, batches of 16 items as served, this 2-core AVX2
host without VNNI; `docs/benchmarks.md`, "Serving on CPU: int8 against fp32"): of 301 ms per batch, the text
encoder takes 150 ms, the image encoder 151 ms, the head and the rest 9 ms. So only the text encoder is
quantized:

- dynamic quantization turns a Conv into ConvInteger, which onnxruntime runs through a generic im2col path:
  the image encoder became five times slower, and a statically quantized (QLinearConv) one was no faster than
  onnxruntime's fp32 NCHWc kernels here;
- the head and the embedding projections are small Gemms: quantizing them costs accuracy and buys nothing;
- the feed-forward output projections (`.../output/dense`, 1536 -> 384) stay fp32: quantized alone they moved
  scores most (up to 0.32 on one test item), and with them the int8 model missed 99.5% decision agreement.

Weights are int8 per output channel, activations are quantized on the fly per batch (so an item's int8 score
depends a little on its batch); no calibration data. The text encoder then takes 114 ms instead of 150 ms; the
whole model would be at most 1.94 times faster even if the text encoder cost nothing, since the image encoder
stays. The quantized file is compared with fp32 on the test split
(decision agreement per policy and per language, ROC-AUC per policy) and on the golden batch, and refused past
the configured tolerances.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.config.run import RunConfig

QUANTIZED_SCOPE = "/text_encoder/"  # ONNX node-name prefix of the text encoder in the exported graph
QUANTIZED_OP_TYPES: tuple[str, ...] = ("MatMul",)
KEPT_FP32 = re.compile(r"/layer\.\d+/output/dense/")  # BERT-style feed-forward output projections


class QuantizationError(RuntimeError):
    """The classifier could not be quantized, or the quantized one is too far from fp32."""


def quantized_nodes(onnx_path: str | Path) -> list[str]:
    """The names of the nodes `quantize_int8` quantizes: the text encoder's MatMuls by a weight, except the
    feed-forward output projections."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {initializer.name for initializer in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZED_OP_TYPES
        and node.name.startswith(QUANTIZED_SCOPE)
        and not KEPT_FP32.search(node.name)
        and any(name in weights for name in node.input)
    ]


def quantize_int8(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Writes a dynamically quantized copy of an exported classifier (same inputs and outputs).

    The file is written under a temporary name and renamed when complete.

    Raises:
        QuantizationError: When the graph has no text-encoder MatMul or onnxruntime's quantizer fails.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = quantized_nodes(onnx_path)
    if not nodes:
        raise QuantizationError(
            f"{onnx_path} has no {'/'.join(QUANTIZED_OP_TYPES)} node under {QUANTIZED_SCOPE}: nothing to quantize"
        )
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    quantizer_log = logging.getLogger()  # the quantizer warns through the root logger about shape inference
    level = quantizer_log.level
    quantizer_log.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(onnx_path),
            str(partial),
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            nodes_to_quantize=nodes,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        os.replace(partial, out_path)
    except Exception as error:
        partial.unlink(missing_ok=True)
        raise QuantizationError(f"int8 quantization failed: {type(error).__name__}: {error}") from error
    finally:
        quantizer_log.setLevel(level)
    return out_path


@dataclass
class QuantizationReport:
    """int8 against fp32 on the test split and the golden batch.

    Agreement is the share of items whose decision (score >= the policy's threshold) is the same in both.
    Languages with fewer than `min_language_rows` rows are reported but not held to `min_language_agreement`
    (see `language_rows_needed`).
    """

    items: int
    min_agreement: float
    min_language_agreement: float
    max_roc_auc_drop: float
    min_language_rows: int
    agreement: dict[str, float] = field(default_factory=dict)  # per policy
    language_agreement: dict[str, dict] = field(default_factory=dict)  # language -> rows, worst policy, value
    roc_auc_fp32: dict[str, float | None] = field(default_factory=dict)
    roc_auc_int8: dict[str, float | None] = field(default_factory=dict)
    golden_max_abs_diff: float = 0.0
    test_max_abs_diff: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def roc_auc_drop(self) -> dict[str, float]:
        """fp32 minus int8 ROC-AUC per policy where both are defined."""
        return {
            policy: self.roc_auc_fp32[policy] - self.roc_auc_int8[policy]
            for policy in self.roc_auc_fp32
            if self.roc_auc_fp32[policy] is not None and self.roc_auc_int8.get(policy) is not None
        }

    def to_dict(self) -> dict:
        return {**asdict(self), "roc_auc_drop": self.roc_auc_drop(), "passed": self.passed}

    def describe(self) -> str:
        worst_policy = min(self.agreement, key=self.agreement.get) if self.agreement else "-"
        drops = self.roc_auc_drop()
        text = (
            f"int8 vs fp32 on {self.items} test items: decision agreement >= "
            f"{min(self.agreement.values(), default=1.0):.4f} (lowest: {worst_policy}), largest ROC-AUC drop "
            f"{max(drops.values(), default=0.0):+.4f}, golden max |diff| {self.golden_max_abs_diff:.2e}"
        )
        if self.failures:
            text += (
                "; refused: " + "; ".join(self.failures) + ". Serve fp32 on CPU (export.cpu_quantization: "
                "none) or loosen export.int8_min_agreement, int8_min_language_agreement or int8_max_roc_auc_drop"
            )
        return text


def language_rows_needed(min_agreement: float, min_slice_rows: int) -> int:
    """Rows a language needs before it is held to `min_agreement`: at least `min_slice_rows`, and enough that
    one changed decision alone cannot fail it (200 rows at 0.995), since a single item near a threshold flips
    under any numeric change."""
    import math

    if min_agreement >= 1.0:
        return min_slice_rows
    return max(min_slice_rows, math.ceil(1.0 / (1.0 - min_agreement) - 1e-9))


def decision_agreement(fp32: np.ndarray, int8: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per policy, the share of rows whose decision (score >= threshold) is the same for both score matrices."""
    limits = np.asarray(thresholds, dtype=np.float32)
    same = (np.asarray(fp32, dtype=np.float32) >= limits) == (np.asarray(int8, dtype=np.float32) >= limits)
    return same.mean(axis=0) if len(same) else np.ones(len(limits))


def compare_int8(
    fp32: np.ndarray,
    int8: np.ndarray,
    labels: np.ndarray,
    languages: Sequence[str | None],
    policies: Sequence[str],
    thresholds: dict[str, float],
    min_agreement: float,
    min_language_agreement: float,
    max_roc_auc_drop: float,
    min_language_rows: int,
) -> QuantizationReport:
    """Compares int8 with fp32 scores of the same test items.

    Args:
        fp32: (N, P) fp32 onnxruntime probabilities.
        int8: (N, P) int8 onnxruntime probabilities of the same items.
        labels: (N, P) 0/1 labels, NaN where an item is not annotated for a policy.
        languages: One language per item (None: unknown; those items count only in the overall figures).
        policies: Column order of the matrices.
        thresholds: Operating threshold per policy.
        min_agreement: Least agreement per policy.
        min_language_agreement: Least agreement per policy within each (large enough) language.
        max_roc_auc_drop: Largest ROC-AUC loss per policy.
        min_language_rows: Languages with fewer rows are reported, not gated.

    Returns:
        The report; `failures` names every tolerance that was passed.
    """
    from core.evaluation.metrics import roc_auc

    limits = [float(thresholds[p]) for p in policies]
    report = QuantizationReport(
        items=len(fp32),
        min_agreement=min_agreement,
        min_language_agreement=min_language_agreement,
        max_roc_auc_drop=max_roc_auc_drop,
        min_language_rows=min_language_rows,
        test_max_abs_diff=float(np.abs(fp32 - int8).max()) if len(fp32) else 0.0,
    )
    bad = int((~np.isfinite(int8)).any(axis=1).sum()) if len(int8) else 0
    if bad:
        report.failures.append(f"{bad} item(s) got a non-finite int8 score (NaN or inf)")
    for policy, share in zip(policies, decision_agreement(fp32, int8, limits), strict=True):
        report.agreement[policy] = float(share)
        if share < min_agreement:
            report.failures.append(f"{policy}: decisions agree on {share:.4f} < {min_agreement} of the items")
    codes = np.asarray([str(code) if code else "" for code in languages], dtype=object)
    for language in sorted(set(codes) - {""}):
        rows = codes == language
        shares = decision_agreement(fp32[rows], int8[rows], limits)
        worst = int(np.argmin(shares))
        gated = int(rows.sum()) >= min_language_rows
        report.language_agreement[language] = {
            "rows": int(rows.sum()),
            "policy": policies[worst],
            "agreement": float(shares[worst]),
            "gated": gated,
        }
        if gated and shares[worst] < min_language_agreement:
            report.failures.append(
                f"language {language}: {policies[worst]} decisions agree on {shares[worst]:.4f} < "
                f"{min_language_agreement} of its {int(rows.sum())} items"
            )
    for j, policy in enumerate(policies):
        annotated = ~np.isnan(labels[:, j]) & np.isfinite(int8[:, j])  # a non-finite score failed above
        report.roc_auc_fp32[policy] = roc_auc(labels[annotated, j], fp32[annotated, j])
        report.roc_auc_int8[policy] = roc_auc(labels[annotated, j], int8[annotated, j])
    for policy, drop in report.roc_auc_drop().items():
        if drop > max_roc_auc_drop:
            report.failures.append(f"{policy}: ROC-AUC {drop:.4f} below fp32 > {max_roc_auc_drop}")
    return report


def onnx_scores(
    onnx_paths: Sequence[str | Path],
    model_dir: str | Path,
    dataset_dir: str | Path,
    frame: pd.DataFrame,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Probabilities of `frame`'s rows from each ONNX file, fed exactly as served (`serving_inputs`).

    The rows' raw items are read one batch at a time, so memory does not grow with the split.

    Returns:
        One (len(frame), P) float32 matrix per file, in `onnx_paths` order.
    """
    from core.common.constants import TENSOR_PROBABILITIES
    from core.export.golden import raw_items
    from core.export.onnx_export import INPUT_NAMES, onnx_session
    from core.training.preprocessing import Preprocessor

    preprocessor = Preprocessor.from_model_dir(model_dir)
    sessions = [onnx_session(path) for path in onnx_paths]
    parts: list[list[np.ndarray]] = [[] for _ in sessions]
    for start in range(0, len(frame), batch_size):
        texts, images = raw_items(dataset_dir, frame.iloc[start : start + batch_size])
        tensors = preprocessor.serving_inputs(texts, images)
        feed = {name: tensors[name] for name in INPUT_NAMES}
        for session, scores in zip(sessions, parts, strict=True):
            scores.append(session.run([TENSOR_PROBABILITIES], feed)[0])
    return [np.concatenate(scores).astype(np.float32) for scores in parts]


def measure_int8(
    model_dir: str | Path,
    dataset_dir: str | Path,
    frame: pd.DataFrame,
    golden_ids: Sequence[str],
    onnx_path: Path,
    int8_path: Path,
    thresholds: dict[str, float],
    config: RunConfig,
) -> QuantizationReport:
    """Scores the test split with the fp32 and the int8 classifier and compares them (`compare_int8`), with the
    golden items' largest difference beside.

    Args:
        model_dir: The saved model (preprocessing).
        dataset_dir: The ingested dataset.
        frame: The split frame; its test rows are scored.
        golden_ids: Ids of the golden batch (test items).
        onnx_path: The fp32 export.
        int8_path: Its quantized copy.
        thresholds: Operating threshold per policy.
        config: `policies`, the `export.int8_*` tolerances and `evaluation.min_slice_rows`.
    """
    from core.common.constants import COL_ID, COL_LANGUAGE, COL_SPLIT, SPLIT_TEST

    policies = list(config.policies)
    test = frame[frame[COL_SPLIT] == SPLIT_TEST].sort_values(COL_ID, kind="stable").reset_index(drop=True)
    fp32, int8 = onnx_scores([onnx_path, int8_path], model_dir, dataset_dir, test)
    labels = test.reindex(columns=policies).to_numpy(dtype=np.float64)
    languages = test[COL_LANGUAGE].tolist() if COL_LANGUAGE in test.columns else [None] * len(test)
    settings = config.export
    report = compare_int8(
        fp32, int8, labels, languages, policies, thresholds, settings.int8_min_agreement,
        settings.int8_min_language_agreement, settings.int8_max_roc_auc_drop,
        language_rows_needed(settings.int8_min_language_agreement, config.evaluation.min_slice_rows),
    )  # fmt: skip
    in_golden = test[COL_ID].astype(str).isin(list(golden_ids)).to_numpy()
    if in_golden.any():
        report.golden_max_abs_diff = float(np.abs(fp32[in_golden] - int8[in_golden]).max())
    return report
