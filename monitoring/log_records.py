"""What a log record must be, and records (or a pyarrow table of them) as the flat columns of `read_logs`.

`check_record` checks one parsed line field by field against `FIELD_KINDS` (the schema table of
`monitoring.schema`); `checked_table` checks a whole pyarrow table's column types at once, so that well-formed
files skip the per-record checks; `columns_from_table` / `columns_from_records` flatten either into numpy
columns, and `canonical_columns` gives every column the one dtype the reader's sample keeps it in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from core.common.constants import EMBEDDING_DIM
from monitoring.schema import (
    FLAG_PREFIX,
    IMAGE_EMBEDDING_PREFIX,
    LABEL_PREFIX,
    LOG_SCHEMA_VERSION,
    SCORE_PREFIX,
    TEXT_EMBEDDING_PREFIX,
    LogSchemaError,
)

REQUIRED_FIELDS: tuple[str, ...] = ("schema_version", "request_id", "item", "timestamp", "model_version")
SCALAR_FIELDS: tuple[str, ...] = (
    "request_id",
    "item",
    "timestamp",
    "model_name",
    "model_version",
    "text_present",
    "text_length",
    "text_words",
    "text_non_letter_share",
    "text_upper_share",
    "text_url_count",
    "text_emoji_count",
    "text_language",
    "text_sha256",
    "text",
    "image_present",
    "image_width",
    "image_height",
    "image_format",
    "image_bytes",
    "action",
    "latency_ms",
    "error",
)
# The JSON type of each scalar field (the schema table of `monitoring.schema`): "int" excludes booleans,
# "number" is a finite int or float, "version" a str or int, "timestamp" an ISO 8601 str (which pyarrow may read
# as a timestamp); a trailing "?" admits null.
FIELD_KINDS: dict[str, str] = {
    "schema_version": "int",
    "request_id": "str",
    "item": "int",
    "timestamp": "timestamp",
    "model_name": "str?",
    "model_version": "version",
    "text_present": "bool?",
    "text_length": "int?",
    "text_words": "int?",
    "text_non_letter_share": "number?",
    "text_upper_share": "number?",
    "text_url_count": "int?",
    "text_emoji_count": "int?",
    "text_language": "str?",
    "text_sha256": "str?",
    "text": "str?",
    "image_present": "bool?",
    "image_width": "int?",
    "image_height": "int?",
    "image_format": "str?",
    "image_bytes": "int?",
    "image_sha256": "str?",
    "action": "str?",
    "latency_ms": "number?",
    "error": "str?",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _of_kind(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("?")
    kind = kind.rstrip("?")
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "version":
        return isinstance(value, str | int) and not isinstance(value, bool)
    return isinstance(value, str)


def _mapping_problem(record: dict, name: str, valid: Callable[[Any], bool], what: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and valid(v) for k, v in value.items()):
        return f"{name} is not an object of {what}"
    return None


def check_record(record: Any) -> str | None:
    """Why a parsed line is not a usable record (None when it is): every field is checked against its type, so
    that whatever a line holds it is either read or skipped and counted. Raises on a schema version mismatch."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not _of_kind(record["schema_version"], "int"):
        return "schema_version is not of type int"
    if record["schema_version"] != LOG_SCHEMA_VERSION:
        raise LogSchemaError(
            f"log schema version {record['schema_version']!r} (request {record.get('request_id')!r}); this "
            f"version of tns reads schema version {LOG_SCHEMA_VERSION} only"
        )
    for name, kind in FIELD_KINDS.items():
        if not _of_kind(record.get(name), kind):
            return f"{name} is not of type {kind.rstrip('?')}" + (" or null" if kind.endswith("?") else "")
    if not record.get("error") and record.get("scores") is None:
        return "scores missing on a served row"
    problem = (
        _mapping_problem(record, "scores", _is_number, "finite numbers")
        or _mapping_problem(record, "flags", lambda v: isinstance(v, bool), "booleans")
        or _mapping_problem(record, "labels", lambda v: v is None or (_is_number(v) and v in (0, 1)), "0/1")
    )
    if problem:
        return problem
    for name in ("text_embedding", "image_embedding"):
        value = record.get(name)
        if value is not None and (
            not isinstance(value, list) or len(value) != EMBEDDING_DIM or not all(map(_is_number, value))
        ):
            return f"{name} is not a list of {EMBEDDING_DIM} finite numbers"
    try:
        datetime.fromisoformat(record["timestamp"])
    except ValueError:
        return f"timestamp {record['timestamp']!r} is not ISO 8601"
    return None


def checked_table(table):
    """`table` (records read by pyarrow) when every column has the type the schema says, else None (the rows
    then go through `check_record` one by one, so that each bad one is named and counted)."""
    import pyarrow as pa

    names = set(table.column_names)
    if not set(REQUIRED_FIELDS) <= names or "scores" not in names:
        return None
    scores_type = table.schema.field("scores").type
    if not pa.types.is_struct(scores_type) or not all(
        pa.types.is_floating(f.type) or pa.types.is_integer(f.type) or pa.types.is_null(f.type)
        for f in scores_type
    ):
        return None
    for name in ("text_embedding", "image_embedding"):
        if name in names and not (
            pa.types.is_list(table.schema.field(name).type) or pa.types.is_null(table.schema.field(name).type)
        ):
            return None
        if name in names and pa.types.is_list(table.schema.field(name).type):
            element = table.schema.field(name).type.value_type
            if not (
                pa.types.is_floating(element) or pa.types.is_integer(element) or pa.types.is_null(element)
            ):
                return None
    if not _arrow_types_match(table):
        return None
    return table


def _arrow_types_match(table) -> bool:
    """Whether every column pyarrow inferred has the type `FIELD_KINDS` (and the flag and label objects) say."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {
        "int": pa.types.is_integer,
        "number": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
        "bool": pa.types.is_boolean,
        "version": lambda t: pa.types.is_string(t) or pa.types.is_integer(t),
        "str": pa.types.is_string,
        "timestamp": lambda t: pa.types.is_string(t) or pa.types.is_timestamp(t),
    }
    schema = table.schema
    for name, kind in FIELD_KINDS.items():
        if name in schema.names:
            arrow_type = schema.field(name).type
            if not (pa.types.is_null(arrow_type) or kinds[kind.rstrip("?")](arrow_type)):
                return False
    for name, valid in (("flags", pa.types.is_boolean), ("labels", kinds["number"])):
        if name not in schema.names or pa.types.is_null(schema.field(name).type):
            continue
        arrow_type = schema.field(name).type
        if not pa.types.is_struct(arrow_type) or not all(
            valid(f.type) or pa.types.is_null(f.type) for f in arrow_type
        ):
            return False
    if "labels" in schema.names and pa.types.is_struct(schema.field("labels").type):
        labels = table.column("labels").combine_chunks()
        for index, sub in enumerate(labels.type):
            if pa.types.is_null(sub.type):
                continue
            values = labels.field(index)
            allowed = pc.is_in(values, value_set=pa.array([0, 1], type=sub.type))
            if pc.any(pc.and_(pc.is_valid(values), pc.invert(allowed))).as_py():  # null: no label, allowed
                return False
    return True


def columns_from_table(table) -> dict[str, np.ndarray] | None:
    """Flat numpy columns of a pyarrow table of records (None when a row needs the line-by-line checks)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    versions = table.column("schema_version")
    if versions.null_count or not pa.types.is_integer(versions.type):
        return None
    wrong = pc.not_equal(versions, LOG_SCHEMA_VERSION)
    if pc.any(wrong).as_py():
        found = pc.filter(versions, wrong)[0].as_py()
        raise LogSchemaError(
            f"log schema version {found!r}; this version of tns reads schema version {LOG_SCHEMA_VERSION} only"
        )
    for name in REQUIRED_FIELDS:
        if table.column(name).null_count:
            return None
    errors = table.column("error") if "error" in table.column_names else None
    failed = (
        pc.fill_null(pc.greater(pc.utf8_length(errors), 0), False).to_numpy(zero_copy_only=False)
        if errors is not None and pa.types.is_string(errors.type)
        else np.zeros(table.num_rows, dtype=bool)
    )
    scores = table.column("scores").combine_chunks()
    if pc.any(pc.and_(pc.is_null(scores), pc.invert(pa.array(failed)))).as_py():
        return None  # a served row without scores: let the line reader name it
    columns: dict[str, np.ndarray] = {}
    for name in SCALAR_FIELDS:
        if name in table.column_names:
            column = table.column(name)
            columns[name] = (
                column.to_pandas(deduplicate_objects=True).to_numpy()
                if pa.types.is_string(column.type)
                else column.to_numpy(zero_copy_only=False)
            )
    for struct_name, prefix in (("scores", SCORE_PREFIX), ("flags", FLAG_PREFIX), ("labels", LABEL_PREFIX)):
        if struct_name not in table.column_names or not pa.types.is_struct(
            table.schema.field(struct_name).type
        ):
            continue
        array = table.column(struct_name).combine_chunks()
        for index, sub in enumerate(array.type):
            values = pc.if_else(pc.is_null(array), None, array.field(index))
            columns[prefix + sub.name] = values.to_numpy(zero_copy_only=False).astype(np.float64)
    for list_name, prefix in (
        ("text_embedding", TEXT_EMBEDDING_PREFIX),
        ("image_embedding", IMAGE_EMBEDDING_PREFIX),
    ):
        matrix = np.full((table.num_rows, EMBEDDING_DIM), np.nan, dtype=np.float32)
        if list_name in table.column_names and pa.types.is_list(table.schema.field(list_name).type):
            array = table.column(list_name).combine_chunks()
            present = pc.invert(pc.is_null(array)).to_numpy(zero_copy_only=False)
            lengths = pc.fill_null(pc.list_value_length(array), EMBEDDING_DIM).to_numpy(zero_copy_only=False)
            if (lengths != EMBEDDING_DIM).any():
                return None
            values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.float32)
            matrix[present] = values.reshape(-1, EMBEDDING_DIM)
        for index in range(EMBEDDING_DIM):
            columns[f"{prefix}{index}"] = matrix[:, index]
    columns["_failed"] = failed
    return columns


def columns_from_records(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The same flat columns as `columns_from_table`, from records `check_record` passed."""
    n = len(records)
    columns: dict[str, np.ndarray] = {}
    for name in SCALAR_FIELDS:
        columns[name] = np.asarray([record.get(name) for record in records], dtype=object)
    for struct_name, prefix in (("scores", SCORE_PREFIX), ("flags", FLAG_PREFIX), ("labels", LABEL_PREFIX)):
        keys = list(dict.fromkeys(key for record in records for key in (record.get(struct_name) or {})))
        for key in keys:
            columns[prefix + key] = np.asarray(
                [float((record.get(struct_name) or {}).get(key, np.nan)) for record in records],
                dtype=np.float64,
            )
    for list_name, prefix in (
        ("text_embedding", TEXT_EMBEDDING_PREFIX),
        ("image_embedding", IMAGE_EMBEDDING_PREFIX),
    ):
        matrix = np.full((n, EMBEDDING_DIM), np.nan, dtype=np.float32)
        for row, record in enumerate(records):
            if record.get(list_name) is not None:
                matrix[row] = record[list_name]
        for index in range(EMBEDDING_DIM):
            columns[f"{prefix}{index}"] = matrix[:, index]
    columns["_failed"] = np.asarray([bool(record.get("error")) for record in records], dtype=bool)
    return columns


def canonical_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns with one dtype per name, whichever reader made them: `item` int64, numbers float64 (NaN for
    null), booleans, strings and versions objects (None for null), scores, flags and labels float64,
    embeddings float32. The timestamp column is left as it came (the reader parses it)."""
    out: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        kind = FIELD_KINDS.get(name, "").rstrip("?")
        if name == "item":
            out[name] = values.astype(np.int64)
        elif kind in ("int", "number"):
            out[name] = values.astype(np.float64)
        elif kind in ("bool", "str", "version"):
            out[name] = values if values.dtype == object else values.astype(object)
        else:
            out[name] = values
    return out


def flag_counts(flags: np.ndarray) -> tuple[int, int]:
    """(rows flagged, rows with a flag) of a flag column (1.0 / 0.0, NaN where the row has none)."""
    counted = ~np.isnan(flags)
    return int((flags[counted] > 0.5).sum()), int(counted.sum())
