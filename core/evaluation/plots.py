"""Model card figures per policy: ROC and precision-recall curves, reliability diagram, score histograms.

Drawn with matplotlib's Agg backend (no display, no fonts fetched) from the curves `evaluate_scores` stores, and
returned as PNG bytes that the HTML card embeds as `data:` URIs, so the page stays one offline file.
"""

from __future__ import annotations

import io
from typing import Any


def policy_figure(policy: str, entry: dict[str, Any]) -> bytes | None:
    """PNG of the four panels for one policy's evaluation entry; None when the curves are undefined (one class
    in the test split)."""
    roc, pr = entry.get("roc_curve") or {}, entry.get("pr_curve") or {}
    if not roc.get("fpr") or not pr.get("precision"):
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.2), dpi=80)
    roc_axes, pr_axes, reliability_axes, histogram_axes = figure.subplots(1, 4)
    roc_axes.plot(roc["fpr"], roc["tpr"], color="#0969da")
    roc_axes.plot([0, 1], [0, 1], color="#8c959f", linestyle=":")
    roc_axes.set(title=f"ROC ({entry.get('roc_auc', 0):.3f})", xlabel="false positive rate", ylabel="recall")
    pr_axes.plot(pr["recall"], pr["precision"], color="#0969da")
    pr_axes.set(title=f"Precision-recall ({entry.get('pr_auc', 0):.3f})", xlabel="recall", ylabel="precision")
    pr_axes.set_ylim(0, 1.02)
    reliability = entry.get("reliability") or {}
    reliability_axes.plot([0, 1], [0, 1], color="#8c959f", linestyle=":")
    reliability_axes.plot(
        reliability.get("score", []), reliability.get("positive_rate", []), "o-", color="#1a7f37"
    )
    ece = entry.get("ece")
    reliability_axes.set(
        title="Reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""),
        xlabel="mean score in bin",
        ylabel="positive rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    histogram = entry.get("histogram") or {}
    edges = histogram.get("edges", [])
    if edges:
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        width = edges[1] - edges[0]
        histogram_axes.bar(centers, histogram["negatives"], width=width, alpha=0.6, label="negatives")
        histogram_axes.bar(centers, histogram["positives"], width=width, alpha=0.6, label="positives")
        histogram_axes.set_yscale("symlog")
        histogram_axes.legend(fontsize=8)
    threshold = entry.get("threshold")
    if threshold is not None:
        histogram_axes.axvline(threshold, color="#cf222e", linestyle="--")
    histogram_axes.set(title="Scores by label (threshold dashed)", xlabel="score", ylabel="items")
    figure.suptitle(policy)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
