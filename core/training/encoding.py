"""Model inputs for a set of rows, encoded once and held in memory, and the runner that feeds them to the model.

`encode_items` preprocesses rows a single time: text as cached features of a frozen text encoder or as token
ids, n-gram ids for the lexical branch, images as cached features of a frozen pretrained image encoder or as
uint8 pixels for one that is trained. `BatchRunner` runs the model on slices of those `EncodedItems`, on the
chosen device, with optional autocast; training (`core.training.trainer`) and scoring both go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_TEXT,
    TENSOR_ATTENTION_MASK,
    TENSOR_HAS_TEXT,
    TENSOR_INPUT_IDS,
    TENSOR_NGRAM_IDS,
)
from core.common.images import DEFAULT_MAX_IMAGE_BYTES, read_image_file
from core.training import efficientnet
from core.training.distributed import World, gather_rows
from core.training.model import IMAGE_ENCODER_CNN, FusionClassifier
from core.training.preprocessing import Preprocessor


@dataclass
class EncodedItems:
    """Model inputs for a set of items, held in memory as tensors."""

    ids: list[str]
    labels: torch.Tensor  # (N, P) float, 0 where not annotated
    label_mask: torch.Tensor  # (N, P) float: 1 where the row is annotated for the policy
    has_text: torch.Tensor  # (N,) float
    has_image: torch.Tensor  # (N,) float
    ngram_ids: torch.Tensor  # (N, K) int32, 0 = padding
    pixels: torch.Tensor | None = None  # (N, 3, S, S) uint8 when the image encoder is trained
    image_features: torch.Tensor | None = None  # (N, D) when it is frozen
    text_features: torch.Tensor | None = None  # (N, D) when the text encoder is frozen
    input_ids: torch.Tensor | None = None  # (N, L) otherwise
    attention_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors held (absent inputs left out), by field name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }

    def take(self, index: torch.Tensor) -> EncodedItems:
        """The items at `index`, as a new `EncodedItems`."""
        rows = index.tolist()
        return EncodedItems(
            ids=[self.ids[i] for i in rows], **{k: v[index] for k, v in self.tensors().items()}
        )


def load_inputs(
    dataset_dir: Path, frame: pd.DataFrame, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> tuple[list[str | None], list[bytes | None]]:
    """Texts and encoded image bytes of the rows of an ingested dataset (image paths contained and bounded).

    Raises:
        ImageFileError: When an image path leads outside the dataset, or its file is missing or too large.
    """
    texts = [t if isinstance(t, str) else None for t in frame[COL_TEXT]]
    images = [
        read_image_file(dataset_dir, p, max_image_bytes) if isinstance(p, str) else None
        for p in frame[COL_IMAGE]
    ]
    return texts, images


PIXELS, HAS_IMAGE = "pixels", "has_image"  # what `prepare_inputs` adds to the tokenized text


def prepare_inputs(
    preprocessor: Preprocessor, texts: list[str | None], images: list[bytes | None]
) -> dict[str, np.ndarray]:
    """The CPU part of preprocessing, what DataLoader workers run: token ids, attention mask, n-gram ids and
    presence of the texts, decoded uint8 pixels and presence of the images."""
    prepared = preprocessor.encode_texts(texts)
    prepared[PIXELS], prepared[HAS_IMAGE] = preprocessor.images_to_uint8(images)
    return prepared


@torch.no_grad()
def encode_prepared(
    model: FusionClassifier,
    preprocessor: Preprocessor,
    prepared: dict[str, np.ndarray],
    freeze_text: bool,
    freeze_image: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The `EncodedItems` tensors of prepared items (labels aside): features of the frozen encoders, token ids
    or uint8 pixels where an encoder is trained."""
    values = {name: torch.from_numpy(np.asarray(prepared[name])) for name in prepared}
    out = {
        "has_text": values[TENSOR_HAS_TEXT].float(),
        "has_image": values[HAS_IMAGE].float(),
        "ngram_ids": values[TENSOR_NGRAM_IDS].to(torch.int32),
    }
    if freeze_text:
        model.text_encoder.eval()
        mask = values[TENSOR_ATTENTION_MASK].to(device)
        length = max(int(mask.sum(1).max().item()) if len(mask) else 1, 1)
        ids = values[TENSOR_INPUT_IDS][:, :length].to(device)
        out["text_features"] = (
            model.text_encoder(ids, mask[:, :length]).float().cpu()
            if len(ids)
            else torch.zeros(0, model.text_encoder.output_dim)
        )
    else:
        out["input_ids"], out["attention_mask"] = values[TENSOR_INPUT_IDS], values[TENSOR_ATTENTION_MASK]
    if not (freeze_image and model.spec.image_encoder["kind"] != IMAGE_ENCODER_CNN):
        out[PIXELS] = values[PIXELS]
        return out
    model.image_encoder.eval()
    encoder, memory = model.image_encoder, torch.contiguous_format
    if isinstance(encoder, efficientnet.EfficientNetLite0):
        encoder, memory = efficientnet.feature_extractor(encoder), torch.channels_last
    features = torch.zeros(len(out["has_image"]), model.image_encoder.output_dim)
    with_image = np.flatnonzero(prepared[HAS_IMAGE])
    if len(with_image):
        batch = torch.from_numpy(preprocessor.normalize(np.asarray(prepared[PIXELS])[with_image])).to(device)
        features[torch.from_numpy(with_image)] = encoder(batch.contiguous(memory_format=memory)).float().cpu()
    out["image_features"] = features
    return out


def concat_rows(parts: list[torch.Tensor], value: int = 0) -> torch.Tensor:
    """Concatenates row blocks whose second dimension may differ (token and n-gram ids padded to each block's
    longest), padding with `value`."""
    if parts[0].dim() < 2 or len({p.shape[1] for p in parts}) == 1:
        return torch.cat(parts)
    width = max(p.shape[1] for p in parts)
    return torch.cat([nn.functional.pad(p, (0, width - p.shape[1]), value=value) for p in parts])


def concat_fields(parts: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Concatenates blocks of `EncodedItems` tensors field by field (token ids padded with `pad_token_id`)."""
    return {
        name: concat_rows([p[name] for p in parts], pad_token_id if name == "input_ids" else 0)
        for name in parts[0]
    }


def encode_items(
    model: FusionClassifier,
    preprocessor: Preprocessor,
    dataset_dir: Path,
    frame: pd.DataFrame,
    policies: list[str],
    freeze_text: bool,
    device: torch.device,
    freeze_image: bool = True,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> EncodedItems:
    """Preprocesses the rows of an ingested dataset once (see `encode_inputs`). Image files larger than
    `max_image_bytes` (`validation.image_max_bytes`) are refused."""
    texts, images = load_inputs(dataset_dir, frame, max_image_bytes)
    labels = frame[policies].to_numpy(dtype=np.float32)
    ids = [str(i) for i in frame[COL_ID]]
    return encode_inputs(model, preprocessor, ids, texts, images, labels, freeze_text, device, freeze_image)


def encode_inputs(
    model: FusionClassifier,
    preprocessor: Preprocessor,
    ids: list[str],
    texts: list[str | None],
    images: list[bytes | None],
    labels: np.ndarray,
    freeze_text: bool,
    device: torch.device,
    freeze_image: bool = True,
    chunk: int = 128,
) -> EncodedItems:
    """Preprocesses items once, `chunk` at a time (a frozen encoder at 224 pixels never holds every decoded
    image at once): text as cached features or token ids plus n-gram ids; images as cached features (frozen
    pretrained encoder) or uint8 pixels (a trained one); `labels` (N, P) with NaN where a row is not annotated."""
    parts = [
        encode_prepared(
            model,
            preprocessor,
            prepare_inputs(preprocessor, texts[start : start + chunk], images[start : start + chunk]),
            freeze_text,
            freeze_image,
            device,
        )
        for start in range(0, max(len(ids), 1), chunk)
    ]
    tensors = concat_fields(parts, preprocessor.spec.pad_token_id)
    tensors.update(label_tensors(labels, len(ids)))
    return EncodedItems(ids=list(ids), **tensors)


def label_tensors(labels: np.ndarray, rows: int) -> dict[str, torch.Tensor]:
    """`labels` (0 where not annotated) and `label_mask` (1 where annotated) of labels with NaN gaps."""
    labels = np.asarray(labels, dtype=np.float32).reshape(rows, -1)
    annotated = ~np.isnan(labels)
    return {
        "labels": torch.from_numpy(np.where(annotated, labels, 0.0).astype(np.float32)),
        "label_mask": torch.from_numpy(annotated.astype(np.float32)),
    }


def gather_items(block: EncodedItems, ids: list[str], world: World, device: torch.device) -> EncodedItems:
    """The whole `EncodedItems` on every rank from each rank's encoded block (`core.training.distributed.shard`
    of the same rows): each rank encodes only its block, so a world of several encodes in parallel."""
    if not world.distributed:
        return block
    values = {}
    for item_field in fields(EncodedItems):
        value = getattr(block, item_field.name)
        values[item_field.name] = (
            gather_rows(value, world, device) if isinstance(value, torch.Tensor) else value
        )
    values["ids"] = list(ids)
    return EncodedItems(**values)


class EncodedForward(nn.Module):
    """The model's forward from what `EncodedItems` hold: cached features where an encoder is frozen, token ids
    or uint8 pixels where it is trained. One module, so that DDP can wrap the whole training forward."""

    def __init__(self, model: FusionClassifier, image_mean: torch.Tensor, image_std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("image_mean", image_mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", image_std.view(1, 3, 1, 1), persistent=False)

    def forward(
        self,
        text: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        image: torch.Tensor,
        has_text: torch.Tensor,
        has_image: torch.Tensor,
        ngram_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Uncalibrated logits. `text` is features or (input ids, attention mask); `image` is features
        (floating point) or uint8 pixels."""
        if isinstance(text, tuple):
            text = self.model.text_encoder(*text)
        if not image.is_floating_point():
            pixels = image.float().div_(255.0)
            image = self.model.image_encoder(
                (pixels - self.image_mean) / self.image_std * has_image.view(-1, 1, 1, 1)
            )
        return self.model.fuse(text, image, has_text, has_image, ngram_ids)


class BatchRunner:
    """Runs the model on slices of `EncodedItems`, on the chosen device, with optional autocast.

    `train_forward` is what training steps call: the plain `forward` or the same module wrapped by DDP
    (`wrap`); scoring always calls the plain one, so ranks may score different numbers of batches."""

    def __init__(
        self, model: FusionClassifier, preprocessor: Preprocessor, device: torch.device, amp: bool
    ) -> None:
        self.model = model
        self.device = device
        self.amp_dtype = None
        if amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        mean = torch.tensor(preprocessor.spec.image_mean, dtype=torch.float32)
        std = torch.tensor(preprocessor.spec.image_std, dtype=torch.float32)
        self.forward = EncodedForward(model, mean, std).to(device)
        self.train_forward: nn.Module = self.forward

    def wrap(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Routes training steps through `wrapper(forward)` (e.g. DistributedDataParallel)."""
        self.train_forward = wrapper(self.forward)

    def logits(
        self,
        items: EncodedItems,
        index: torch.Tensor,
        has_text: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        training: bool = False,
    ) -> torch.Tensor:
        """Logits for `items[index]`; `has_text`/`has_image` override the presence flags (modality dropout,
        ablations); `training` runs them through `train_forward`."""
        device = self.device
        has_text = (items.has_text[index] if has_text is None else has_text).to(device)
        has_image = (items.has_image[index] if has_image is None else has_image).to(device)
        ngrams = items.ngram_ids[index]
        width = max(int((ngrams > 0).sum(1).max().item()) if len(ngrams) else 1, 1)
        ngrams = ngrams[:, :width].to(device=device, dtype=torch.int64)
        if items.text_features is not None:
            text = items.text_features[index].to(device)
        else:
            mask = items.attention_mask[index]
            length = int(mask.sum(1).max().item())
            text = (items.input_ids[index, :length].to(device), mask[:, :length].to(device))
        if items.image_features is not None:
            image = items.image_features[index].to(device)
        else:
            image = items.pixels[index].to(device)
        module = self.train_forward if training else self.forward
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return module(text, image, has_text, has_image, ngrams).float()

    @torch.no_grad()
    def all_logits(
        self,
        items: EncodedItems,
        drop: str | None = None,
        batch_size: int = 256,
        calibrated: bool = True,
        rows: range | None = None,
    ) -> torch.Tensor:
        """Logits for all items, or those of `rows` (on CPU); `drop` in {None, 'text', 'image'} removes that
        modality; calibrated unless `calibrated` is false."""
        self.model.eval()
        rows = range(len(items)) if rows is None else rows
        outputs = [torch.zeros(0, items.labels.shape[1])]
        for start in range(rows.start, rows.stop, batch_size):
            index = torch.arange(start, min(start + batch_size, rows.stop))
            has_text = torch.zeros(len(index)) if drop == "text" else None
            has_image = torch.zeros(len(index)) if drop == "image" else None
            logits = self.logits(items, index, has_text, has_image)
            outputs.append((self.model.calibrate(logits) if calibrated else logits).cpu())
        return torch.cat(outputs)

    def probabilities(
        self, items: EncodedItems, drop: str | None = None, calibrated: bool = True
    ) -> np.ndarray:
        """Sigmoid outputs for all items, as a numpy array of shape (N, P)."""
        return torch.sigmoid(self.all_logits(items, drop, calibrated=calibrated)).numpy()
