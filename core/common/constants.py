"""Names that cross boundaries: policies, columns, artifact files, aliases, decisions, images, exit codes.

Every module, component, pipeline and test imports these; none spells them out again.
"""

from __future__ import annotations

PACKAGE_VERSION = "0.1.0"

# Container images. The tag follows the package version so that a compiled pipeline names the code it runs.
IMAGE_REGISTRY = "ghcr.io/tns-pipelines"
COMPONENT_IMAGE = f"{IMAGE_REGISTRY}/tns-pipelines:{PACKAGE_VERSION}"
TRAINING_GPU_IMAGE = f"{IMAGE_REGISTRY}/tns-pipelines-gpu:{PACKAGE_VERSION}"
TRAINING_ACCELERATOR = "nvidia.com/gpu"
# Resources of one training process (the train step's pod; a TrainJob node gets this per worker).
TRAINING_CPU_PER_WORKER = 8
TRAINING_MEMORY_GB_PER_WORKER = 32
# MLflow's location and credentials on a cluster: this Kubernetes secret's keys become these variables, for the
# pipeline steps and the TrainJob's nodes alike (by reference: never in the compiled YAML or the TrainJob).
MLFLOW_SECRET = "mlflow-credentials"
MLFLOW_SECRET_KEYS: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}

# Policies of the embedded default dataset; a run configuration may name others.
DEFAULT_POLICIES: tuple[str, ...] = ("hate", "violence", "sexual", "spam")
HATEFUL_MEMES_POLICY = "hateful"

# Dataset format: a folder with one manifest, one row per item; the project writes DATASET_MANIFEST_FILE.
DATASET_MANIFEST_FILE = "manifest.jsonl"
MANIFEST_NAMES: tuple[str, ...] = (DATASET_MANIFEST_FILE, "manifest.csv", "manifest.parquet")
HATEFUL_MEMES_FILES: dict[str, str] = {
    "train.jsonl": "train",
    "dev.jsonl": "validation",
    "test.jsonl": "test",
}
COL_ID = "id"
COL_TEXT = "text"
COL_IMAGE = "image"
COL_SPLIT = "split"
COL_LANGUAGE = "language"
COL_CREATED_AT = "created_at"
COL_GROUP = "group"  # author, campaign or template: a group never straddles two splits (`split.group_column`)
OPTIONAL_COLUMNS: tuple[str, ...] = (COL_SPLIT, COL_LANGUAGE, COL_CREATED_AT, COL_GROUP)
# Columns of a retraining dataset (monitoring.retraining_data): where a row comes from and how it was sampled.
COL_DATA_ORIGIN = "data_origin"  # ORIGIN_ORIGINAL (the champion's training data) or ORIGIN_NEW (new labels)
ORIGIN_ORIGINAL = "original"
ORIGIN_NEW = "new"
COL_LABEL_SOURCE = "label_source"  # who labeled a new row: `delayed`, `review`, ...
LABEL_SOURCE_DELAYED = "delayed"  # a label line's `source`: a moderator decision that arrived after serving
LABEL_SOURCE_REVIEW = "review"  # ... an import of a review-queue batch (`tns review import`)
COL_SAMPLING_STRATUM = (
    "sampling_stratum"  # `uniform`, `uncertainty`, `drift_segment`: only uniform rows enter test
)
STRATUM_UNIFORM = "uniform"
# Columns that ingest derives from content (never read from a manifest).
COL_IMAGE_SHA256 = "image_sha256"
COL_ITEM_HASH = "item_hash"
COL_MODALITY = "modality"
# Label values that are neither 0/1 nor empty, as written in the manifest (JSON {policy: text}), for messages.
COL_INVALID_LABELS = "invalid_labels"

# A policy label may be missing (null, an empty cell): "not annotated for this policy" (`data.missing_labels`).
MISSING_LABELS_MASK = "mask"  # no loss and no metric for that row and policy
MISSING_LABELS_NEGATIVE = "negative"  # counted as 0
MISSING_LABELS_REFUSE = "refuse"  # validation refuses the dataset
MISSING_LABEL_MODES: tuple[str, ...] = (MISSING_LABELS_MASK, MISSING_LABELS_NEGATIVE, MISSING_LABELS_REFUSE)
# What counts as a copy of an item (`split.duplicate_key`): the same text and image bytes, or the same text up to
# case, whitespace, URLs and digits (and the same image bytes).
DUPLICATE_KEY_EXACT = "exact"
DUPLICATE_KEY_NORMALIZED = "normalized"
DUPLICATE_KEYS: tuple[str, ...] = (DUPLICATE_KEY_EXACT, DUPLICATE_KEY_NORMALIZED)
# Validation check severities (`validation.severity`).
SEVERITY_CRITICAL = "critical"
SEVERITY_WARNING = "warning"

SPLIT_TRAIN = "train"
SPLIT_VALIDATION = "validation"
SPLIT_TEST = "test"
SPLITS: tuple[str, ...] = (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_TEST)

MODALITY_BOTH = "text+image"
MODALITY_TEXT = "text-only"
MODALITY_IMAGE = "image-only"
MODALITY_NONE = "none"
MODALITIES: tuple[str, ...] = (MODALITY_BOTH, MODALITY_TEXT, MODALITY_IMAGE)

# Files inside artifacts.
DATASET_TABLE = "dataset.parquet"
DATASET_IMAGES_DIR = "images"
DATASET_SHARDS_DIR = "shards"  # the rows with their image bytes, for streaming (core.data.shards)
DATASET_SHARD_INDEX = "index.json"
DATASET_FINGERPRINT = "fingerprint.json"
DATASET_PREPARATION = "preparation.json"  # what ingest collapsed, merged, filled or dropped, and why
DATASET_LINEAGE_FILE = (
    "lineage.json"  # a built dataset's sources (a retraining dataset: base data + label files)
)
SPLITS_TABLE = "splits.parquet"
MODEL_WEIGHTS = "model.safetensors"
MODEL_SPEC = "model_spec.json"
TEXT_ENCODER_DIR = "text_encoder"
IMAGE_ENCODER_DIR = "image_encoder"
TRAINING_SUMMARY_FILE = "training_summary.json"
EVALUATION_FILE = "evaluation.json"
MODEL_CARD_FILE = "model_card.json"  # the model card's inputs: data, label counts, training
TEST_SCORES_FILE = "test_scores.parquet"
GATE_DECISION_FILE = "gate_decision.json"  # the gate step's decision (BLESSED / NOT_BLESSED)
TRIGGER_DECISION_FILE = "trigger_decision.json"  # the retrain trigger's decision (fired, suppressed, ...)
DRIFT_SUMMARY_FILE = "summary.json"  # the drift check's machine-readable summary
RUN_LOG_FILE = "run.log"  # the KFP local runner's full output, in the run folder

# Gate decisions and registry aliases.
BLESSED = "BLESSED"
NOT_BLESSED = "NOT_BLESSED"
ALIAS_CHAMPION = "champion"
ALIAS_PREVIOUS = "previous"
ALIAS_CHALLENGER = "challenger"
DEFAULT_MODEL_NAME = "content-safety"
MLFLOW_EXPERIMENT = "tns-training"

# Model input tensor names (shared by training, export and serving).
TENSOR_INPUT_IDS = "input_ids"
TENSOR_ATTENTION_MASK = "attention_mask"
TENSOR_PIXEL_VALUES = "pixel_values"
TENSOR_HAS_TEXT = "has_text"
TENSOR_HAS_IMAGE = "has_image"
TENSOR_NGRAM_IDS = "ngram_ids"  # hashed word and character n-grams of the text (core/training/lexical.py)
# The classifier's inputs, in the order of `FusionClassifier.forward` and of the exported graph.
MODEL_INPUTS: tuple[str, ...] = (
    TENSOR_INPUT_IDS,
    TENSOR_ATTENTION_MASK,
    TENSOR_PIXEL_VALUES,
    TENSOR_HAS_TEXT,
    TENSOR_HAS_IMAGE,
    TENSOR_NGRAM_IDS,
)
TENSOR_PROBABILITIES = "probabilities"
# Pooled encoder features, projected to EMBEDDING_DIM dims by a fixed random projection: served with the scores so
# that drift monitoring can compare what the model "sees" (see monitoring/schema.py).
TENSOR_TEXT_EMBEDDING = "text_embedding"
TENSOR_IMAGE_EMBEDDING = "image_embedding"
EMBEDDING_DIM = 16
# Served texts are read up to this many characters: the model sees the first `max_text_length` tokens and at most
# `max_ngrams` n-grams anyway, and the text descriptors of the inference log look no further (`text_length` and
# `text_sha256` still cover the whole text). Bounds the work one request can cause.
MAX_TEXT_CHARS = 20_000
MAX_IMAGE_PIXELS = 25_000_000  # width*height, checked on the header before decoding
MAX_IMAGE_BYTES = 20_000_000  # an encoded image file
EMBEDDING_PROJECTION_SEED = 20261125  # changing it changes every logged embedding: a log schema change

# ONNX export.
ONNX_MODEL_FILE = "model.onnx"
# The dynamically quantized classifier, beside the fp32 one in the same version folder; the CPU config names it
# (`default_model_filename`) when the export asks for `export.cpu_quantization: int8`.
ONNX_INT8_MODEL_FILE = "model.int8.onnx"
CPU_QUANTIZATION_NONE = "none"
CPU_QUANTIZATION_INT8 = "int8"
CPU_QUANTIZATIONS: tuple[str, ...] = (CPU_QUANTIZATION_NONE, CPU_QUANTIZATION_INT8)
# Opset 17: the newest that the legacy TorchScript exporter emits reliably, and supported by the onnxruntime
# of every Triton release since 22.x (Triton 24.x ships onnxruntime 1.19+, which reads opsets up to 21).
ONNX_OPSET = 17
EXPORT_REPORT_FILE = "export_report.json"
GOLDEN_DIR = "golden"
REPOSITORY_DIR = "model_repository"
TRITON_REPOSITORY_ARTIFACT = "triton_repository"  # MLflow run artifact path of the exported repository
# SHA-256 of every repository file (`core.common.integrity`): beside the repository in the export folder,
# a run artifact at the root of the run, and its own hash in a registered-version tag.
REPOSITORY_MANIFEST_FILE = "repository_manifest.json"
TAG_REPOSITORY_MANIFEST = "tns.export.repository_manifest_sha256"
INFRA_VALIDATION_FILE = "infra_validation.json"

# Triton model repository: model names and the ensemble's raw inputs and outputs.
TRITON_ENSEMBLE = "content_safety"
TRITON_PREPROCESS = "preprocess"
TRITON_CLASSIFIER = "classifier"
TRITON_POSTPROCESS = "postprocess"
TRITON_INPUT_TEXT = "TEXT"
TRITON_INPUT_IMAGE = "IMAGE"
TRITON_OUTPUT_SCORES = "SCORES"
TRITON_OUTPUT_FLAGS = "FLAGS"
TRITON_OUTPUT_DECISION = "DECISION"
# Prometheus metrics the `postprocess` model publishes (labels: model_name, model_version, and policy or action;
# never an item, request or user), beside tritonserver's own `nv_inference_*`.
METRIC_ITEMS_SCORED = "tns_items_scored_total"
METRIC_ITEMS_FLAGGED = "tns_items_flagged_total"
METRIC_DECISIONS = "tns_decisions_total"
METRIC_POLICY_SCORE = "tns_policy_score"
# ContentSafetyClient's own metrics (`serving/client_metrics.py`), in the caller's process, when asked for.
METRIC_CLIENT_REQUESTS = "tns_client_requests_total"
METRIC_CLIENT_RETRIES = "tns_client_retries_total"
METRIC_CLIENT_REQUEST_SECONDS = "tns_client_request_seconds"
METRIC_SCORE_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
TRITON_OUTPUT_TEXT_EMBEDDING = "TEXT_EMBEDDING"
TRITON_OUTPUT_IMAGE_EMBEDDING = "IMAGE_EMBEDDING"
TRITON_CPU_CONFIG = "cpu"  # configs/cpu.pbtxt, selected with --model-config-name=cpu
SERVING_METADATA_FILE = "serving_metadata.json"
PREPROCESSING_FILE = "preprocessing.json"
SERVING_IMAGE = f"{IMAGE_REGISTRY}/tns-pipelines-triton:{PACKAGE_VERSION}"

# CLI exit codes.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_BLESSED = 3
EXIT_DRIFT = 10  # `tns drift`: drift detected (0: no drift or insufficient data, 1: error)
EXIT_DRIFT_RETRAIN_FAILED = (
    11  # `tns drift --retrain-rules`: drift, and the retraining could not be submitted (or failed)
)

# Environment.
ENV_HOME = "TNS_HOME"
DEFAULT_HOME = ".tns"
ENV_FAILURE_FILE = "TNS_FAILURE_FILE"
ENV_SERVING_ENV = "TNS_SERVING_ENV"  # Python env of the python-backend models (numpy<2, tokenizers, ...)
ENV_TRITONSERVER = "TNS_TRITONSERVER"  # a tritonserver binary to use instead of the nvidia-pytriton one
ENV_TRITON_BACKENDS = "TNS_TRITON_BACKENDS"  # a backend directory to use instead of the generated one
OFFLINE_ENVIRONMENT: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # MLflow, Evidently
    "ITERATIVE_DO_NOT_TRACK": "true",  # the telemetry library under Evidently
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}

# Where the retrain trigger keeps its state (decision ledger and locks) so that its guardrails survive pods: the
# compiled monitoring pipeline mounts this PersistentVolumeClaim at this path in the trigger step.
MONITORING_STATE_PVC = "tns-monitoring-state"
MONITORING_STATE_MOUNT = "/var/lib/tns-monitoring"
ENV_LEDGER = "TNS_LEDGER"  # a decision ledger file path that overrides the defaults
