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

from core.common.env import apply_offline_environment
from core.config.run import RunConfig, TrainConfig, ValidationConfig
from core.data.split import read_split_frame
from core.training import efficientnet
from core.training.calibration import fit_calibration
from core.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from core.training.distributed import (
    World,
    all_reduce_sum,
    barrier,
    broadcast_flags,
    data_parallel,
    join,
    leave,
    require_same_epoch,
    world_from_environment,
)
from core.training.encoding import BatchRunner
from core.training.lexical import idf_from_frequency
from core.training.model import (
    IMAGE_ENCODER_CNN,
    build_model,
    resolve_text_encoder,
    save_model,
)
from core.training.preprocessing import TOKENIZER_FILE, PreprocessingSpec, Preprocessor
from core.training.sources import CALIBRATION, VALIDATION, InMemoryData, TrainingData
from core.training.streaming import StreamedData, streams

CNN_IMAGE_SIZE = 64  # the side of train.image_size 0 for the small CNN
EpochCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int, nn.Module], None]


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
    world_size: int = 1
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


def positive_weights(positives: torch.Tensor, annotated: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Negative/positive ratio per policy over its annotated train rows (`positives` and `annotated` counts per
    policy), clipped to [1, 50]; ones when class weighting is off."""
    if not enabled:
        return torch.ones(len(positives))
    negatives = annotated - positives
    return (negatives / positives.clamp(min=1.0)).clamp(1.0, 50.0)


def masked_bce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor,
    annotated_cells: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy averaged over the annotated (row, policy) cells only.

    A cell with `mask` 0 (not annotated for that policy) contributes neither loss nor gradient; with every cell
    annotated this equals `BCEWithLogitsLoss(pos_weight=...)`. `annotated_cells` replaces the mask's own count
    as the divisor: a rank's share of the global batch's count, so that DDP's mean of the ranks' gradients is
    the gradient of the global batch's mean.
    """
    cells = nn.functional.binary_cross_entropy_with_logits(
        logits, labels, pos_weight=pos_weight, reduction="none"
    )
    divisor = mask.sum() if annotated_cells is None else annotated_cells
    return (cells * mask).sum() / divisor.clamp(min=1.0)


def train_model(
    dataset_dir: str | Path,
    rows: pd.DataFrame | str | Path,
    config: RunConfig,
    out_dir: str | Path,
    on_epoch_end: EpochCallback | None = None,
    on_step_end: StepCallback | None = None,
    world: World | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainingResult:
    """Trains the fusion classifier on the train split, early-stops on validation and saves the best model.

    Started by `torchrun` (a world of several processes), each rank encodes its share of the rows, trains on its
    share of every epoch with `train.batch_size` as the global batch, and DDP averages the gradients; validation
    metrics are gathered from every rank and rank 0 decides early stopping for all. Rank 0 alone calls
    `on_epoch_end`, fits the calibration and writes the model.

    Args:
        dataset_dir: Ingested dataset artifact (image paths are relative to it).
        rows: Its rows joined with a `split` column (`core.data.split.read_split_frame`), trained on in memory;
            or its splits folder (`splits.parquet`): the rows stream from the dataset's shards when the train
            and validation splits hold more than `train.stream_above_rows` rows, and are read into memory
            otherwise (see `core.training.streaming`).
        config: Run configuration (`policies` and `train` are used).
        out_dir: Model folder to write (safetensors weights, spec, encoder configs, tokenizer).
        on_epoch_end: Called on rank 0 with (epoch, metrics) after each epoch, e.g. to log to MLflow.
        on_step_end: Called on every rank with (step, model) after each optimizer step.
        world: The ranks (default: what `torchrun` exported; a world of one without it).
        checkpoint_dir: Folder rank 0 checkpoints every epoch to, and every rank resumes from when it holds a
            checkpoint of this run (a worker restarted by torchrun goes on from the last finished epoch).

    Returns:
        Summary of the run; per-epoch metrics are in `history`.
    """
    apply_offline_environment()
    settings: TrainConfig = config.train
    world = world_from_environment() if world is None else world
    if settings.batch_size % world.size:
        raise ValueError(
            f"train.batch_size {settings.batch_size} is the global batch and must split evenly over the "
            f"{world.size} training processes; choose a multiple of {world.size}"
        )
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    joined = join(world, device)
    data, finished = None, False
    try:
        data = open_training_data(dataset_dir, rows, config, world, device, checkpoint_dir)
        result = _train(data, config, out_dir, on_epoch_end, on_step_end, world, device, checkpoint_dir)
        finished = True
        return result
    finally:
        if data is not None:
            data.close(finished)
        if joined:
            leave(world)


def open_training_data(
    dataset_dir: str | Path,
    rows: pd.DataFrame | str | Path,
    config: RunConfig,
    world: World,
    device: torch.device,
    cache_dir: str | Path | None = None,
) -> TrainingData:
    """In-memory rows for a frame or a splits folder of at most `train.stream_above_rows` train and
    validation rows; rows streamed from the shards above it."""
    if isinstance(rows, pd.DataFrame):
        return InMemoryData(dataset_dir, rows, config, world, device)
    if streams(rows, config):
        return StreamedData(dataset_dir, rows, config, world, device, cache_dir)
    return InMemoryData(dataset_dir, read_split_frame(dataset_dir, rows), config, world, device)


def _train(
    data: TrainingData,
    config: RunConfig,
    out_dir: str | Path,
    on_epoch_end: EpochCallback | None,
    on_step_end: StepCallback | None,
    world: World,
    device: torch.device,
    checkpoint_dir: str | Path | None,
) -> TrainingResult:
    settings: TrainConfig = config.train
    policies = list(config.policies)
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
    data.encode(model, preprocessor, settings.freeze_text_encoder, freeze_image)
    if model.lexical is not None:
        idf = idf_from_frequency(*data.document_frequency(spec.ngram_buckets))
        model.lexical.idf.copy_(torch.from_numpy(idf).to(device))
    runner = BatchRunner(model, preprocessor, device, settings.mixed_precision)
    if world.distributed:
        runner.wrap(lambda module: data_parallel(module, device))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    local_batch = settings.batch_size // world.size
    total_steps = data.steps_per_epoch(local_batch) * settings.epochs
    if settings.max_steps > 0:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = learning_rate_schedule(optimizer, settings.learning_rate, total_steps)
    scaler = torch.amp.GradScaler(enabled=runner.amp_dtype == torch.float16)
    pos_weight = positive_weights(*data.label_counts(), settings.class_weighting).to(device)

    best_state: dict[str, torch.Tensor] | None = None
    progress = Progress()
    if checkpoint_dir is not None:
        restored = load_checkpoint(checkpoint_dir, data.fingerprint, model, optimizer, scheduler, scaler)
        if restored is not None:
            progress, best_state = restored
            if world.is_main:
                print(
                    f"resuming after epoch {progress.epoch} from {checkpoint_dir}",
                    file=sys.stderr,
                    flush=True,
                )
        require_same_epoch(progress.epoch, world, device, checkpoint_dir)
    epoch = progress.epoch
    while not progress.stopped_early and epoch < settings.epochs:
        if settings.max_steps > 0 and progress.steps >= settings.max_steps:
            break
        epoch += 1
        model.train()
        if settings.freeze_text_encoder:
            model.text_encoder.eval()
        # dropout and modality dropout draw from streams of (seed, epoch, rank): a resumed epoch draws the same
        epoch_seed = int(np.random.SeedSequence([settings.seed, epoch, world.rank]).generate_state(1)[0])
        torch.manual_seed(epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        epoch_start = time.perf_counter()
        epoch_totals = torch.zeros(2, dtype=torch.float64)  # this rank's loss x items, items
        for batch in _progress(data.batches(epoch, local_batch), f"epoch {epoch}/{settings.epochs}", world):
            has_text, has_image = _modality_dropout(
                batch.has_text, batch.has_image, settings.modality_dropout, generator
            )
            index = torch.arange(len(batch))
            logits = runner.logits(batch, index, has_text, has_image, training=True)
            mask = batch.label_mask.to(device)
            share = all_reduce_sum(mask.sum(), world) / world.size
            loss = masked_bce_loss(logits, batch.labels.to(device), mask, pos_weight, share)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            progress.steps += 1
            epoch_totals += torch.tensor([float(loss.item()) * len(batch), len(batch)], dtype=torch.float64)
            if on_step_end is not None:
                on_step_end(progress.steps, model)
            if settings.max_steps > 0 and progress.steps >= settings.max_steps:
                break
        progress.train_seconds += time.perf_counter() - epoch_start
        epoch_loss, seen = all_reduce_sum(epoch_totals.to(device), world).cpu().tolist()
        progress.samples += int(seen)

        validation = data.scored(runner, VALIDATION)
        validation_loss = float(
            masked_bce_loss(
                validation.logits.to(device),
                validation.labels.to(device),
                validation.label_mask.to(device),
                pos_weight,
            ).item()
        )
        validation_auc = macro_roc_auc(
            validation.labels.numpy(),
            torch.sigmoid(validation.logits).numpy(),
            validation.label_mask.numpy(),
        )
        metrics = {
            "train_loss": epoch_loss / max(seen, 1),
            "validation_loss": validation_loss,
            "validation_macro_roc_auc": validation_auc if validation_auc is not None else float("nan"),
            "learning_rate": scheduler.get_last_lr()[0],
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        progress.epoch = epoch
        progress.history.append({"epoch": epoch, **metrics})
        score = validation_auc if validation_auc is not None else -validation_loss
        improved = score > progress.best_score + 1e-4 or (
            abs(score - progress.best_score) <= 1e-4 and validation_loss < progress.best_loss
        )
        improved, out_of_patience = broadcast_flags(  # decided once, by rank 0, for every rank
            [improved, not improved and progress.patience + 1 >= settings.early_stopping_patience],
            world,
            device,
        )
        if world.is_main:
            print(
                f"epoch {epoch}: train_loss={metrics['train_loss']:.4f} validation_loss={validation_loss:.4f} "
                f"validation_macro_roc_auc={metrics['validation_macro_roc_auc']:.4f}",
                file=sys.stderr,
                flush=True,
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)
        if improved:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            progress.best_score, progress.best_epoch, progress.best_loss = score, epoch, validation_loss
            progress.patience = 0
        else:
            progress.patience += 1
        progress.stopped_early = out_of_patience
        if checkpoint_dir is not None and world.is_main:
            save_checkpoint(
                checkpoint_dir, data.fingerprint, progress, model, best_state, optimizer, scheduler, scaler
            )
        barrier(world)  # a rank that dies from here on finds this epoch's checkpoint when restarted

    calibration: dict[str, dict] = {}
    if best_state is not None:
        model.load_state_dict(best_state)
    held = data.scored(runner, CALIBRATION)
    if world.is_main:
        calibration = fit_calibration(model, held.logits, held.labels, held.label_mask, policies)
        save_model(model.cpu(), out_dir, sources)
    barrier(world)  # the other ranks wait for the model folder
    best_score = progress.best_score
    return TrainingResult(
        epochs_run=progress.epoch,
        best_epoch=progress.best_epoch,
        steps=progress.steps,
        seconds=time.perf_counter() - started,
        train_samples_per_second=progress.samples / max(progress.train_seconds, 1e-9),
        device=str(device),
        best_validation_loss=progress.best_loss,
        best_validation_macro_roc_auc=None if best_score == -math.inf or best_score < 0 else best_score,
        stopped_early=progress.stopped_early,
        world_size=world.size,
        calibration=calibration,
        history=progress.history,
    )


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


def _progress(iterable, description: str, world: World):
    from tqdm import tqdm

    disable = None if world.is_main else True  # one progress bar, rank 0's
    return tqdm(iterable, desc=description, leave=False, mininterval=2.0, file=sys.stderr, disable=disable)
