"""Training: seeds, class weighting, modality dropout, early stopping, calibration, mixed precision on CUDA.

With frozen encoders (the default) their features are computed once per item and cached
(`core.training.encoding`), which makes an epoch cost only the fusion head and the lexical branch.
`train.freeze_text_encoder: false` and `train.freeze_image_encoder: false` fine-tune them. The validation split
is cut in two by a hash of the item id: one part early-stops, the other (`train.calibration_share`) only fits
the per-policy Platt calibration, so the calibration is fitted on rows the model was not selected on.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.common.constants import COL_ID, COL_SPLIT, SPLIT_TRAIN, SPLIT_VALIDATION
from core.common.env import apply_offline_environment
from core.config.run import RunConfig, TrainConfig, ValidationConfig
from core.training import efficientnet
from core.training.encoding import BatchRunner, EncodedItems, encode_items
from core.training.lexical import inverse_document_frequency
from core.training.model import (
    IMAGE_ENCODER_CNN,
    FusionClassifier,
    build_model,
    resolve_text_encoder,
    save_model,
)
from core.training.preprocessing import TOKENIZER_FILE, PreprocessingSpec, Preprocessor

CNN_IMAGE_SIZE = 64  # the side of train.image_size 0 for the small CNN
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainingResult:
    """Summary of a training run (also logged to MLflow)."""

    epochs_run: int
    best_epoch: int
    steps: int
    seconds: float
    train_samples_per_second: float
    device: str
    best_validation_loss: float
    best_validation_macro_roc_auc: float | None
    stopped_early: bool
    calibration: dict[str, dict] = field(default_factory=dict)  # per policy: scale, bias, rows, positives
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(name: str) -> torch.device:
    """Resolves 'auto' to CUDA when present."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def macro_roc_auc(labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Mean ROC-AUC over the columns that have both classes, each on its annotated rows (`mask` 1)."""
    from sklearn.metrics import roc_auc_score

    mask = np.ones_like(labels, dtype=bool) if mask is None else mask.astype(bool)
    values = []
    for j in range(labels.shape[1]):
        y, s = labels[mask[:, j], j], scores[mask[:, j], j]
        if 0 < y.sum() < len(y):
            values.append(roc_auc_score(y, s))
    return float(np.mean(values)) if values else None


def positive_weights(labels: torch.Tensor, mask: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Negative/positive ratio per policy over its annotated rows, clipped to [1, 50]; ones when class
    weighting is off."""
    if not enabled:
        return torch.ones(labels.shape[1])
    positives = (labels * mask).sum(0)
    negatives = mask.sum(0) - positives
    return (negatives / positives.clamp(min=1.0)).clamp(1.0, 50.0)


def masked_bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy averaged over the annotated (row, policy) cells only.

    A cell with `mask` 0 (not annotated for that policy) contributes neither loss nor gradient; with every cell
    annotated this equals `BCEWithLogitsLoss(pos_weight=...)`.
    """
    cells = nn.functional.binary_cross_entropy_with_logits(
        logits, labels, pos_weight=pos_weight, reduction="none"
    )
    return (cells * mask).sum() / mask.sum().clamp(min=1.0)


def train_model(
    dataset_dir: str | Path,
    frame: pd.DataFrame,
    config: RunConfig,
    out_dir: str | Path,
    on_epoch_end: EpochCallback | None = None,
) -> TrainingResult:
    """Trains the fusion classifier on the train split, early-stops on validation and saves the best model.

    Args:
        dataset_dir: Ingested dataset artifact (image paths are relative to it).
        frame: Its rows joined with a `split` column (see `core.data.split.read_split_frame`).
        config: Run configuration (`policies` and `train` are used).
        out_dir: Model folder to write (safetensors weights, spec, encoder configs, tokenizer).
        on_epoch_end: Called with (epoch, metrics) after each epoch, e.g. to log to MLflow.

    Returns:
        Summary of the run; per-epoch metrics are in `history`.
    """
    apply_offline_environment()
    settings: TrainConfig = config.train
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    dataset_dir, policies = Path(dataset_dir), list(config.policies)
    train_rows = frame[frame[COL_SPLIT] == SPLIT_TRAIN].reset_index(drop=True)
    validation_rows = frame[frame[COL_SPLIT] == SPLIT_VALIDATION].reset_index(drop=True)
    if train_rows.empty or validation_rows.empty:
        raise ValueError(f"need train and validation rows, got {len(train_rows)} and {len(validation_rows)}")

    validation_rows, calibration_rows = split_for_calibration(validation_rows, settings.calibration_share)

    text_folder = resolve_text_encoder(settings.text_encoder)
    spec = _preprocessing_spec(settings, text_folder, config.validation)
    preprocessor = Preprocessor(spec, text_folder / TOKENIZER_FILE)
    model, sources = build_model(
        policies, settings.text_encoder, settings.image_encoder, settings.hidden_dim, settings.dropout, spec
    )
    model.to(device)
    if settings.freeze_text_encoder:
        model.text_encoder.requires_grad_(False)
    freeze_image = settings.freeze_image_encoder and settings.image_encoder != IMAGE_ENCODER_CNN
    if freeze_image:
        model.image_encoder.requires_grad_(False)
    started = time.perf_counter()

    def encode(rows: pd.DataFrame) -> EncodedItems:
        return encode_items(
            model,
            preprocessor,
            dataset_dir,
            rows,
            policies,
            settings.freeze_text_encoder,
            device,
            freeze_image,
            config.validation.image_max_bytes,
        )

    train_items, validation_items, calibration_items = (
        encode(rows) for rows in (train_rows, validation_rows, calibration_rows)
    )
    if model.lexical is not None:
        idf = inverse_document_frequency(train_items.ngram_ids.numpy(), spec.ngram_buckets)
        model.lexical.idf.copy_(torch.from_numpy(idf).to(device))
    runner = BatchRunner(model, preprocessor, device, settings.mixed_precision)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_items) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps > 0:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = learning_rate_schedule(optimizer, settings.learning_rate, total_steps)
    scaler = torch.amp.GradScaler(enabled=runner.amp_dtype == torch.float16)
    pos_weight = positive_weights(train_items.labels, train_items.label_mask, settings.class_weighting).to(
        device
    )
    generator = torch.Generator().manual_seed(settings.seed)

    best_state, best_score, best_epoch, best_loss = None, -math.inf, 0, math.inf
    history: list[dict[str, float]] = []
    steps, samples, patience, stopped_early, epoch = 0, 0, 0, False, 0
    train_seconds = 0.0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        if settings.freeze_text_encoder:
            model.text_encoder.eval()
        epoch_start, epoch_loss, seen = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(train_items), generator=generator)
        batches = range(0, len(order), settings.batch_size)
        for start in _progress(batches, f"epoch {epoch}/{settings.epochs}"):
            index = order[start : start + settings.batch_size]
            has_text, has_image = _modality_dropout(
                train_items.has_text[index],
                train_items.has_image[index],
                settings.modality_dropout,
                generator,
            )
            logits = runner.logits(train_items, index, has_text, has_image)
            loss = masked_bce_loss(
                logits,
                train_items.labels[index].to(device),
                train_items.label_mask[index].to(device),
                pos_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            steps += 1
            seen += len(index)
            epoch_loss += float(loss.item()) * len(index)
            if settings.max_steps > 0 and steps >= settings.max_steps:
                break
        train_seconds += time.perf_counter() - epoch_start
        samples += seen

        validation_logits = runner.all_logits(validation_items, calibrated=False)
        validation_loss = float(
            masked_bce_loss(
                validation_logits.to(device),
                validation_items.labels.to(device),
                validation_items.label_mask.to(device),
                pos_weight,
            ).item()
        )
        validation_scores = torch.sigmoid(validation_logits).numpy()
        validation_auc = macro_roc_auc(
            validation_items.labels.numpy(), validation_scores, validation_items.label_mask.numpy()
        )
        metrics = {
            "train_loss": epoch_loss / max(seen, 1),
            "validation_loss": validation_loss,
            "validation_macro_roc_auc": validation_auc if validation_auc is not None else float("nan"),
            "learning_rate": scheduler.get_last_lr()[0],
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        history.append({"epoch": epoch, **metrics})
        print(
            f"epoch {epoch}: train_loss={metrics['train_loss']:.4f} validation_loss={validation_loss:.4f} "
            f"validation_macro_roc_auc={metrics['validation_macro_roc_auc']:.4f}",
            file=sys.stderr,
            flush=True,
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        score = validation_auc if validation_auc is not None else -validation_loss
        if score > best_score + 1e-4 or (abs(score - best_score) <= 1e-4 and validation_loss < best_loss):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_score, best_epoch, best_loss, patience = score, epoch, validation_loss, 0
        else:
            patience += 1
        if settings.max_steps > 0 and steps >= settings.max_steps:
            break
        if patience >= settings.early_stopping_patience:
            stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    calibration = fit_calibration(model, runner, calibration_items, policies)
    save_model(model.cpu(), out_dir, sources)
    return TrainingResult(
        epochs_run=epoch,
        best_epoch=best_epoch,
        steps=steps,
        seconds=time.perf_counter() - started,
        train_samples_per_second=samples / max(train_seconds, 1e-9),
        device=str(device),
        best_validation_loss=best_loss,
        best_validation_macro_roc_auc=None if best_score == -math.inf or best_score < 0 else best_score,
        stopped_early=stopped_early,
        calibration=calibration,
        history=history,
    )


def split_for_calibration(rows: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cuts validation rows into (early-stopping rows, calibration rows) by a stable hash of the item id, so
    that the cut is the same for every run on the same data."""
    import zlib

    buckets = np.asarray([zlib.crc32(str(i).encode("utf-8")) % 1000 for i in rows[COL_ID]])
    held = buckets < int(round(share * 1000))
    if held.all() or not held.any():
        raise ValueError(
            f"the validation split of {len(rows)} rows cannot be cut into early-stopping and calibration rows "
            f"(train.calibration_share={share}); raise split.validation_fraction"
        )
    return rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)


def platt_scaling(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(scale, bias) maximising the likelihood of `labels` under `sigmoid(scale * logits + bias)`."""
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")
    z, y = logits.double(), labels.double()

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = (float(v) for v in params.detach())
    return scale, bias


def fit_calibration(
    model: FusionClassifier,
    runner: BatchRunner,
    items: EncodedItems,
    policies: list[str],
    min_per_class: int = 5,
) -> dict[str, dict]:
    """Fits Platt scaling per policy (`sigmoid(scale * logit + bias)`, by maximum likelihood) on the
    calibration rows annotated for it, and stores it in the model's calibration buffers.

    A policy with fewer than `min_per_class` positives or negatives there keeps the identity (noted in the
    returned record, which the model card shows).
    """
    logits = runner.all_logits(items, calibrated=False)
    labels, mask = items.labels, items.label_mask.bool()
    record: dict[str, dict] = {}
    scale = torch.ones(len(policies))
    bias = torch.zeros(len(policies))
    for j, policy in enumerate(policies):
        z, y = logits[mask[:, j], j].double(), labels[mask[:, j], j].double()
        positives = int(y.sum().item())
        entry = {"rows": int(len(y)), "positives": positives, "fitted": False, "scale": 1.0, "bias": 0.0}
        if min(positives, len(y) - positives) >= min_per_class:
            a, b = platt_scaling(z, y)
            if (
                math.isfinite(a) and math.isfinite(b) and a > 0
            ):  # a non-positive slope would invert the ranking
                scale[j], bias[j] = a, b
                entry.update(fitted=True, scale=a, bias=b)
        record[policy] = entry
    model.calibration_scale.copy_(scale.to(model.calibration_scale.device))
    model.calibration_bias.copy_(bias.to(model.calibration_bias.device))
    return record


def learning_rate_schedule(
    optimizer: torch.optim.Optimizer, learning_rate: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle schedule (10% warm-up, cosine decay); a constant rate for runs too short to have phases.

    OneCycleLR divides by the length of its warm-up phase, so the warm-up is at least two steps.
    """
    if total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=total_steps, pct_start=max(0.1, 2.0 / total_steps)
    )


def _preprocessing_spec(
    settings: TrainConfig, text_folder: Path, limits: ValidationConfig
) -> PreprocessingSpec:
    """The preprocessing saved with the model; the input size limits are validation's, so that serving refuses
    what validation refused."""
    import json

    image_size, mean, std = CNN_IMAGE_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if settings.image_encoder == efficientnet.ENCODER_NAME:
        image_size, mean, std = efficientnet.INPUT_SIZE, efficientnet.IMAGE_MEAN, efficientnet.IMAGE_STD
    elif settings.image_encoder != IMAGE_ENCODER_CNN:
        folder = Path(settings.image_encoder).expanduser()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        image_size = int(config.get("vision_config", config).get("image_size", image_size))
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            values = json.loads(processor.read_text(encoding="utf-8"))
            mean = tuple(values.get("image_mean", mean))
            std = tuple(values.get("image_std", std))
    if settings.image_size and settings.image_encoder in (IMAGE_ENCODER_CNN, efficientnet.ENCODER_NAME):
        image_size = (
            settings.image_size
        )  # a Hugging Face backbone keeps the size its positions were built for
    tokenizer_config = json.loads((text_folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    pad_id = (tokenizer_config.get("padding") or {}).get("pad_id", 0)
    return PreprocessingSpec(
        max_text_length=settings.max_text_length,
        image_size=image_size,
        image_mean=mean,
        image_std=std,
        max_image_pixels=limits.image_max_pixels,
        max_text_bytes=limits.text_max_bytes,
        pad_token_id=int(pad_id),
        ngram_buckets=settings.lexical_buckets,
    )


def _modality_dropout(
    has_text: torch.Tensor, has_image: torch.Tensor, rate: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hides the text (or the image) of items that have both, each with probability `rate`."""
    if rate <= 0:
        return has_text, has_image
    both = (has_text > 0) & (has_image > 0)
    roll = torch.rand(len(has_text), generator=generator)
    drop_text = both & (roll < rate)
    drop_image = both & (roll >= rate) & (roll < 2 * rate)
    return has_text * (~drop_text).float(), has_image * (~drop_image).float()


def _progress(iterable, description: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=description, leave=False, mininterval=2.0, file=sys.stderr, disable=None)
