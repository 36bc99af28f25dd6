"""Simulated moderators: a review batch answered from the simulator's ground truth, as a Label Studio export.

`simulate_review_export` reads a batch folder (`monitoring.review`: `batch.json`, `tasks.json`) and the simulated
traffic's `truth.jsonl` (`monitoring.traffic`: every item's true labels under its log key) and answers every
task, every policy, with the true label, except a seeded share (`disagreement`, default 3%) of the task-policy
answers, which are flipped: moderators make mistakes. Gold tasks are answered from their known labels (the
batch's gold refs) with the same flip rate, so the gold disagreement `tns review import` reports is the share of
flipped gold answers. Each task is labeled by one of `moderators` simulated moderators (seeded), named
`moderator-<n>@simulated` in `completed_by`.

The export is exactly what `monitoring.label_studio.read_export` reads from Label Studio: a JSON list of tasks
(`id`, `data` as imported) with one annotation each (`id`, `completed_by {id, email}`, `result[]` of
`{from_name, to_name: "text", type: "choices", value: {choices: ["yes"|"no"]}}`, `was_cancelled`,
`created_at`, `updated_at`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitoring.label_studio import CHOICE_NO, CHOICE_YES, TEXT_OBJECT
from monitoring.review import TASKS_FILE, ReviewError

DEFAULT_DISAGREEMENT = 0.03
DEFAULT_MODERATORS = 3


@dataclass
class SimulatedReview:
    """What the simulated moderators answered.

    Attributes:
        export_file: The Label Studio JSON export written.
        tasks: Tasks answered (window and gold).
        answers: Task-policy answers given.
        flipped: The answers that differ from the truth, as `(ref, policy)`.
        gold_answers: Answers on gold tasks for policies with a known label.
        gold_flipped: Of those, the flipped ones.
        labelers: Tasks per simulated moderator.
    """

    export_file: Path
    tasks: int
    answers: int
    flipped: list[tuple[str, str]] = field(default_factory=list)
    gold_answers: int = 0
    gold_flipped: int = 0
    labelers: dict[str, int] = field(default_factory=dict)

    @property
    def gold_disagreement(self) -> float | None:
        """Share of flipped gold answers (what `tns review import` reports as the gold disagreement)."""
        return round(self.gold_flipped / self.gold_answers, 6) if self.gold_answers else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "export_file": str(self.export_file),
            "tasks": self.tasks,
            "answers": self.answers,
            "flipped": len(self.flipped),
            "gold_answers": self.gold_answers,
            "gold_flipped": self.gold_flipped,
            "gold_disagreement": self.gold_disagreement,
            "labelers": self.labelers,
        }


def read_truth(path: str | Path) -> dict[tuple[str, int], dict[str, int]]:
    """The true labels of a simulation's `truth.jsonl`, by log key `(request_id, item)`.

    Raises:
        ReviewError: The file cannot be read.
    """
    truth: dict[tuple[str, int], dict[str, int]] = {}
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                truth[(str(entry["request_id"]), int(entry["item"]))] = dict(entry["labels"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReviewError(f"{path} cannot be read as a simulation's truth.jsonl: {error}") from None
    return truth


def simulate_review_export(
    batch_dir: str | Path,
    truth_file: str | Path,
    export_file: str | Path,
    disagreement: float = DEFAULT_DISAGREEMENT,
    moderators: int = DEFAULT_MODERATORS,
    seed: int = 0,
) -> SimulatedReview:
    """Answers every task of a batch from the truth (a seeded share flipped) and writes a Label Studio export.

    Args:
        batch_dir: The batch folder `tns review sample --out` wrote.
        truth_file: `truth.jsonl` of the simulated traffic the batch's window holds.
        export_file: Where the JSON export goes.
        disagreement: Probability that one task-policy answer is flipped.
        moderators: Simulated moderators the tasks are spread over.
        seed: Seed of the flips and the moderator of each task.

    Returns:
        What was answered, and which answers were flipped.

    Raises:
        ReviewError: Not a batch folder, an unreadable truth file, a window item missing from the truth, or a bad
            `disagreement` / `moderators`.
    """
    import numpy as np

    from monitoring.label_studio import control_names
    from monitoring.review_import import read_batch

    if not 0.0 <= disagreement <= 1.0:
        raise ReviewError(f"disagreement must be in [0, 1], got {disagreement}")
    if moderators < 1:
        raise ReviewError(f"moderators must be at least 1, got {moderators}")
    manifest = read_batch(Path(batch_dir))
    tasks = json.loads((Path(batch_dir) / TASKS_FILE).read_text(encoding="utf-8"))
    truth = read_truth(truth_file)
    policies = list(manifest["policies"])
    controls = control_names(policies)
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).isoformat()
    export: list[dict[str, Any]] = []
    result = SimulatedReview(export_file=Path(export_file), tasks=0, answers=0)
    for number, task in enumerate(tasks, start=1):
        ref = task["data"]["ref"]
        known: dict[str, int] = {}
        if ref in manifest["gold"]:
            known = {p: int(v) for p, v in manifest["gold"][ref]["labels"].items()}
            labels = dict(known)
        else:
            key = manifest["items"][ref]
            labels = truth.get((str(key["request_id"]), int(key["item"])))
            if labels is None:
                raise ReviewError(
                    f"{truth_file} has no truth for {ref} (request {key['request_id']!r}, item {key['item']}): "
                    "give the truth.jsonl of the simulation the batch's window holds"
                )
        results = []
        for policy in policies:
            value = int(labels.get(policy, 0))
            if rng.random() < disagreement:
                value = 1 - value
                result.flipped.append((ref, policy))
                result.gold_flipped += policy in known
            result.answers += 1
            result.gold_answers += policy in known
            results.append(
                {
                    "from_name": controls[policy],
                    "to_name": TEXT_OBJECT,
                    "type": "choices",
                    "value": {"choices": [CHOICE_YES if value else CHOICE_NO]},
                }
            )
        moderator = int(rng.integers(moderators)) + 1
        labeler = f"moderator-{moderator}@simulated"
        result.labelers[labeler] = result.labelers.get(labeler, 0) + 1
        annotation = {
            "id": number,
            "completed_by": {"id": moderator, "email": labeler},
            "result": results,
            "was_cancelled": False,
            "created_at": now,
            "updated_at": now,
        }
        export.append({"id": number, "data": task["data"], "annotations": [annotation]})
        result.tasks += 1
    result.labelers = dict(sorted(result.labelers.items()))
    Path(export_file).parent.mkdir(parents=True, exist_ok=True)
    Path(export_file).write_text(json.dumps(export, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
