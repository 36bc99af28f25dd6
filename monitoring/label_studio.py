"""Label Studio formats of the review queue: the labeling config, the tasks, and reading an export back.

**Labeling config** (`labeling_config`): the item's text and image, then one required yes/no `Choices` block per
policy. Control names are `label_<policy>` made safe for XML names (the batch keeps the name-to-policy map), and
everything taken from data (policy names) is XML-escaped.

**Tasks** (Label Studio's task import format, a JSON list): `{"data": {"ref", "batch_id", "text", "image",
"modality", "note"}, "meta": {"ref", "batch_id"}}`. The image is a data URI (`data:image/png;base64,...`, at most
`max_image_bytes`, else a 1x1 placeholder and a note). A task names nothing but its opaque `ref`: request ids,
strata, weights and the known labels of gold items stay in the batch manifest, so gold items look like any other
task and moderators are not anchored by why an item was picked.

**Export** (`read_export`): Label Studio's JSON export, a list of tasks with `annotations[]`, each with
`result[]` regions (`{"from_name", "to_name", "type": "choices", "value": {"choices": ["yes"]}}`),
`completed_by` (a user id, or a user object with `email`), `was_cancelled`, `created_at` / `updated_at`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

__all__ = [
    "CHOICE_NO",
    "CHOICE_YES",
    "ExportError",
    "ReviewedTask",
    "control_names",
    "image_data_uri",
    "labeling_config",
    "make_task",
    "read_export",
]

CHOICE_YES = "yes"
CHOICE_NO = "no"
CHOICE_VALUES = {CHOICE_YES: 1, CHOICE_NO: 0}
TEXT_OBJECT = "text"
IMAGE_OBJECT = "image"
# A transparent 1x1 PNG: shown where an item has no image (Label Studio needs a value for every object).
PLACEHOLDER_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PLACEHOLDER_URI = f"data:image/png;base64,{PLACEHOLDER_PNG}"
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


class ExportError(ValueError):
    """A Label Studio export cannot be imported; the message names the task and what to fix."""


def control_names(policies: list[str]) -> dict[str, str]:
    """The `Choices` control name of each policy: `label_<policy>` with unsafe characters as `_` (unique)."""
    names: dict[str, str] = {}
    for index, policy in enumerate(policies):
        name = f"label_{_UNSAFE_NAME.sub('_', policy)}"
        names[policy] = name if name not in names.values() else f"{name}_{index}"
    return names


def labeling_config(policies: list[str]) -> str:
    """The labeling config XML: the text, the image and one required yes/no `Choices` per policy."""
    lines = [
        "<View>",
        '  <Header value="Item $ref ($modality)"/>',
        '  <Text name="text" value="$text"/>',
        '  <Image name="image" value="$image" maxWidth="480px"/>',
        '  <Text name="note" value="$note"/>',
    ]
    for policy, name in control_names(policies).items():
        shown = policy.replace("$", "")  # `$name` in a value is a Label Studio variable
        lines += [
            f"  <Header value={quoteattr(f'Does it violate {shown}?')}/>",
            f'  <Choices name={quoteattr(name)} toName="{TEXT_OBJECT}" choice="single-radio" required="true" '
            'showInline="true">',
            f'    <Choice value="{CHOICE_YES}"/>',
            f'    <Choice value="{CHOICE_NO}"/>',
            "  </Choices>",
        ]
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def _mime_type(image: bytes) -> str | None:
    for magic, mime in _IMAGE_MAGIC:
        if image.startswith(magic):
            return mime
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_data_uri(image: bytes | None, max_bytes: int) -> tuple[str, str]:
    """The image as a data URI, and a note for the moderator ('' when the image is shown as it is)."""
    if not image:
        return PLACEHOLDER_URI, ""
    if len(image) > max_bytes:
        return (
            PLACEHOLDER_URI,
            f"image not shown: {len(image)} bytes, more than the {max_bytes} a task embeds",
        )
    mime = _mime_type(image)
    if mime is None:
        return PLACEHOLDER_URI, "image not shown: not a PNG, JPEG, GIF, BMP or WebP file"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}", ""


def make_task(ref: str, batch_id: str, text: str | None, image_uri: str, modality: str, note: str) -> dict:
    """One task in Label Studio's import format."""
    return {
        "data": {
            "ref": ref,
            "batch_id": batch_id,
            "text": text or "",
            "image": image_uri,
            "modality": modality,
            "note": note,
        },
        "meta": {"ref": ref, "batch_id": batch_id},
    }


@dataclass(frozen=True)
class ReviewedTask:
    """One task's labels as read from an export."""

    ref: str
    labels: dict[str, int]
    labeler: str
    labeled_at: str | None
    annotations: int


def _where(task: Any, index: int) -> str:
    if isinstance(task, dict):
        ref = (task.get("data") or {}).get("ref") if isinstance(task.get("data"), dict) else None
        return f"task {index} (id {task.get('id')!r}, ref {ref!r})"
    return f"task {index}"


def _labeler(annotation: dict, field: str) -> str:
    """Who labeled: the dotted `field` of the annotation (`completed_by`: a user object gives its email or id)."""
    value: Any = annotation
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict):
        value = value.get("email") or value.get("id")
    return "" if value is None else str(value)


def _chosen(annotation: dict, controls: dict[str, str], where: str) -> dict[str, int]:
    """The policy labels of one annotation's result."""
    result = annotation.get("result")
    if not isinstance(result, list):
        raise ExportError(f"{where}: the annotation has no 'result' list; export the project as JSON")
    labels: dict[str, int] = {}
    for region in result:
        if not isinstance(region, dict) or region.get("type") != "choices":
            continue
        name = region.get("from_name")
        if name not in controls:
            raise ExportError(
                f"{where}: choice {name!r} is not a policy of this batch (known: {sorted(controls)}); import the "
                "export of the project made from this batch's labeling_config.xml"
            )
        value = region.get("value") if isinstance(region.get("value"), dict) else {}
        choices = value.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or choices[0] not in CHOICE_VALUES:
            raise ExportError(
                f"{where}: {name} must be exactly one of {sorted(CHOICE_VALUES)}, got {choices!r}; fix the "
                "annotation in Label Studio and export again"
            )
        labels[controls[name]] = CHOICE_VALUES[choices[0]]
    missing = [name for name, policy in controls.items() if policy not in labels]
    if missing:
        raise ExportError(
            f"{where}: no choice for {missing}; every policy is required: complete the annotation in Label "
            "Studio (or skip the task there) and export again"
        )
    return labels


def read_export(
    export: Any, controls: dict[str, str], refs: set[str], labeler_field: str = "completed_by"
) -> tuple[list[ReviewedTask], int]:
    """The labeled tasks of a Label Studio JSON export, and how many tasks had no usable annotation.

    Each task's annotation is its ground-truth one if marked, else its latest (by `updated_at`, `created_at`)
    that was not cancelled (skipped); a task without one is counted, not imported.

    Args:
        export: The parsed export (a list of tasks).
        controls: Control name -> policy, as the batch's labeling config names them.
        refs: The batch's task refs.
        labeler_field: Dotted path in an annotation naming who labeled (default `completed_by`).

    Raises:
        ExportError: Naming the task and what to fix: not a list of tasks, a task of another batch, a
            missing or unknown choice, a task given twice.
    """
    if not isinstance(export, list):
        raise ExportError("the export must be a JSON list of tasks (Label Studio: Export > JSON)")
    reviewed: list[ReviewedTask] = []
    seen: set[str] = set()
    unlabeled = 0
    for index, task in enumerate(export):
        where = _where(task, index)
        data = task.get("data") if isinstance(task, dict) else None
        ref = data.get("ref") if isinstance(data, dict) else None
        if not isinstance(ref, str) or ref not in refs:
            raise ExportError(
                f"{where}: not a task of this batch (its data.ref {ref!r} is not in batch.json); give the "
                "--batch folder whose tasks.json was imported into that project"
            )
        if ref in seen:
            raise ExportError(f"{where}: ref {ref!r} appears twice; import each task into the project once")
        seen.add(ref)
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise ExportError(f"{where}: 'annotations' must be a list")
        usable = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
        if not usable:
            unlabeled += 1
            continue
        usable.sort(
            key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or a.get("created_at")))
        )
        chosen = usable[-1]
        reviewed.append(
            ReviewedTask(
                ref=ref,
                labels=_chosen(chosen, controls, where),
                labeler=_labeler(chosen, labeler_field),
                labeled_at=str(chosen.get("updated_at") or chosen.get("created_at") or "") or None,
                annotations=len(usable),
            )
        )
    return reviewed, unlabeled
