"""MLflow tracking and registry: where runs are logged, where the champion lives, how aliases move.

Models are logged as plain artifact folders (safetensors + JSON spec), never as pickled MLflow flavours, and
registered with `create_model_version(source=...)`. A blessed model is registered as `challenger`; only after
its export loaded and answered correctly in a real Triton server does `champion` move to it (the old one
becomes `previous`). A version whose export or infra validation failed is tagged with the reason.
"""

from __future__ import annotations

import getpass
import os
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.common.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, ALIAS_PREVIOUS, MLFLOW_EXPERIMENT
from core.common.env import apply_offline_environment, tns_home

MODEL_ARTIFACT_PATH = "model"


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else an sqlite database under the local state folder."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{tns_home() / 'mlflow' / 'mlflow.db'}"


def configure(tracking_uri: str = "") -> str:
    """Points MLflow at `tracking_uri` (or the default), creating the local folder and the experiment.

    Returns:
        The tracking URI in use.
    """
    apply_offline_environment()
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (database.parent / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:
        try:
            mlflow.create_experiment(MLFLOW_EXPERIMENT, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:
            if mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:  # not a create race: re-raise
                raise
    mlflow.set_experiment(MLFLOW_EXPERIMENT)
    return uri


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flattens nested config values to dotted MLflow params."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version and where its files are."""

    name: str
    version: str
    source: str
    run_id: str | None


def get_alias(model_name: str, alias: str = ALIAS_CHAMPION) -> ModelVersionInfo | None:
    """The version behind an alias, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return ModelVersionInfo(model_name, str(found.version), found.source, found.run_id)


def download_model(info: ModelVersionInfo, destination: str | Path | None = None) -> Path:
    """Downloads a registered version's model folder (safetensors + spec) and returns its local path."""
    import mlflow

    destination = Path(destination or tempfile.mkdtemp(prefix="tns-champion-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(destination)))


def log_model_folder(run_id: str, model_dir: str | Path) -> str:
    """Logs a model folder as artifacts of a run; returns the artifact URI to register."""
    import mlflow

    client = _client()
    client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
    return f"{mlflow.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"


def register_challenger(
    model_name: str, run_id: str, source: str, tags: dict[str, str], description: str = ""
) -> ModelVersionInfo:
    """Creates a registered-model version under the alias `challenger`; `champion` does not move.

    The challenger becomes champion only through `promote_version`, after its export was proven to serve.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(
            model_name, description="Multimodal content-safety classifier (tns-pipelines)."
        )
    created = client.create_model_version(
        model_name, source=source, run_id=run_id, tags=tags, description=description or None
    )
    client.set_registered_model_alias(model_name, ALIAS_CHALLENGER, str(created.version))
    return ModelVersionInfo(model_name, str(created.version), source, run_id)


class PromotionConflict(RuntimeError):
    """The registry moved since the gate looked (another promotion won): nothing was changed."""


class PromotionLockTimeout(PromotionConflict):
    """Another promotion held the lock for longer than the promoter waits: nothing was changed."""


ANY_CHAMPION = "*"  # `promote_version(expected_champion=...)`: move whatever champion there is now
LOCK_SUFFIX = ".tns-promotion-lock"
LOCK_LEASE_S = 300.0
LOCK_WAIT_S = LOCK_LEASE_S + 60.0  # longer than a lease: a crashed holder's lock expires while we wait
_TAG_OWNER, _TAG_EXPIRES = "tns.lock.owner", "tns.lock.expires"


class _HeldLock:
    """What `promotion_lock` yields: its owner id, and whether the lock is still ours."""

    def __init__(self, client, name: str, owner: str) -> None:
        self.client, self.name, self.owner = client, name, owner

    def still_held(self) -> bool:
        return _lock_tags(self.client, self.name).get(_TAG_OWNER) == self.owner


@contextmanager
def promotion_lock(model_name: str, lease_s: float = LOCK_LEASE_S, wait_s: float = LOCK_WAIT_S):
    """Holds the promotion lock of `model_name` around a read-check-write of its aliases.

    MLflow has no conditional alias update. The lock is a registered model named `<model>` + `LOCK_SUFFIX`:
    creating a registered model whose name exists fails on database-backed registries (sqlite, PostgreSQL,
    MySQL, and a tracking server backed by one: the name is unique in the database), so creating it is an
    atomic test-and-set, and deleting it releases. MLflow's plain file store checks then creates, which is not
    atomic: do not run concurrent promotions against it. The lock carries its owner and a lease expiry as tags;
    a lock past its lease (a promoter that died) is broken by the next one.

    Guarantees: while every promoter goes through this lock, at most one read-check-write of the aliases runs at
    a time, as long as none takes longer than the lease; a holder checks that the lock is still its own
    (`still_held`) right before it writes. Breaking an expired lock re-reads its owner before deleting it, which
    narrows, but cannot close, the window in which two breakers race. Aliases moved by hand are outside it.

    Yields:
        The held lock (`owner`, `still_held()`).

    Raises:
        PromotionLockTimeout: When the lock is still held by a live owner after `wait_s` seconds (names it).
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    name = model_name + LOCK_SUFFIX
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            client.create_registered_model(
                name,
                tags={_TAG_OWNER: owner, _TAG_EXPIRES: f"{time.time() + lease_s:.3f}"},
                description=f"Promotion lock of {model_name} (tns-pipelines); deleted when the promotion ends.",
            )
            break
        except MlflowException as error:
            # Taken; or taken and released at once (MLflow looks the existing model up after the failed insert).
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        holder = _lock_tags(client, name)
        if holder and _expires(holder) < time.time():
            _release(client, name, holder.get(_TAG_OWNER, ""))  # a dead promoter's lock: break it
        elif time.monotonic() > deadline:
            raise PromotionLockTimeout(
                f"the promotion lock of {model_name} is held by {holder.get(_TAG_OWNER, 'unknown')} "
                f"(registered model {name!r}); nothing was promoted. Wait for that promotion and re-run; a lock "
                f"left by a crashed promoter expires after {lease_s:.0f} s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    try:
        yield _HeldLock(client, name, owner)
    finally:
        _release(client, name, owner)


def _expires(tags: dict[str, str]) -> float:
    try:
        return float(tags.get(_TAG_EXPIRES, 0))
    except ValueError:
        return 0.0  # an unreadable lease counts as expired


def _lock_tags(client, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException:
        return {}


def _release(client, name: str, owner: str) -> None:
    """Deletes the lock if `owner` still holds it."""
    from mlflow.exceptions import MlflowException

    if _lock_tags(client, name).get(_TAG_OWNER) != owner:
        return
    with suppress(MlflowException):  # released (or broken) meanwhile
        client.delete_registered_model(name)


def promote_version(
    model_name: str,
    version: str,
    expected_champion: str | None = ANY_CHAMPION,
    require_challenger: bool = False,
) -> ModelVersionInfo | None:
    """Moves `champion` to `version`, keeping the old champion as `previous`, and drops `challenger` from it:
    a compare-and-swap under `promotion_lock`.

    `previous` moves before `champion`, so a failure part-way leaves `champion` on a complete version. Promoting
    the version that already is champion changes nothing (a retried step).

    Args:
        model_name: Registered-model name.
        version: The version to promote.
        expected_champion: The champion version the gate compared against (None: there was none);
            `ANY_CHAMPION` skips the check.
        require_challenger: Refuse unless `version` still holds the `challenger` alias.

    Returns:
        The champion that was replaced, or None.

    Raises:
        PromotionConflict: When the champion moved since the gate, or `version` is no longer the challenger
            (both versions named; no alias moves).
    """
    client = _client()
    version = str(version)
    with promotion_lock(model_name) as lock:
        old = get_alias(model_name, ALIAS_CHAMPION)
        if old is not None and old.version == version:
            _drop_challenger(model_name, version)
            return get_alias(model_name, ALIAS_PREVIOUS)
        current = old.version if old else None
        if expected_champion != ANY_CHAMPION and (expected_champion or None) != current:
            raise PromotionConflict(
                f"not promoting version {version} of {model_name}: the gate compared it against champion "
                f"{_named(expected_champion)}, but the champion is now {_named(current)} (another run was "
                "promoted meanwhile). Re-run the pipeline to gate it against the new champion"
            )
        challenger = get_alias(model_name, ALIAS_CHALLENGER)
        if require_challenger and (challenger is None or challenger.version != version):
            raise PromotionConflict(
                f"not promoting version {version} of {model_name}: it is no longer the challenger (the challenger "
                f"is {_named(challenger.version if challenger else None)}; champion {_named(current)}). A newer "
                "run registered its model after this one; re-run to compete with it"
            )
        if not lock.still_held():
            raise PromotionConflict(
                f"not promoting version {version} of {model_name}: the promotion lock expired or was broken "
                "while this promotion held it; nothing was changed. Re-run the promotion"
            )
        if old is not None:
            client.set_registered_model_alias(model_name, ALIAS_PREVIOUS, old.version)
        client.set_registered_model_alias(model_name, ALIAS_CHAMPION, version)
        _drop_challenger(model_name, version)
    return old


def _named(version: str | None) -> str:
    return f"version {version}" if version else "none"


def mark_version_failed(model_name: str, version: str, stage: str, reason: str) -> None:
    """Tags a version whose export or infra validation failed, and drops its `challenger` alias.

    No alias moves to it; `champion` stays where it was.
    """
    client = _client()
    client.set_model_version_tag(model_name, str(version), "tns.promotion", "BLOCKED")
    client.set_model_version_tag(model_name, str(version), "tns.blocked_at", stage)
    client.set_model_version_tag(model_name, str(version), "tns.blocked_reason", reason[:5000])
    _drop_challenger(model_name, version)


def _drop_challenger(model_name: str, version: str) -> None:
    current = get_alias(model_name, ALIAS_CHALLENGER)
    if current is not None and current.version == str(version):
        _client().delete_registered_model_alias(model_name, ALIAS_CHALLENGER)


def version_tags(model_name: str, version: str) -> dict[str, str]:
    """The tags of a registered version."""
    return dict(_client().get_model_version(model_name, version).tags)


def set_version_tags(model_name: str, version: str, tags: dict[str, str]) -> None:
    """Sets tags on a registered-model version."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value)[:5000])


def record_forced_promotion(run_id: str, reason: str) -> None:
    """Records on the run who forced a NOT_BLESSED model through the gate, and why."""
    client = _client()
    client.set_tag(run_id, "tns.forced_promotion", "true")
    client.set_tag(run_id, "tns.forced_by", os.environ.get("TNS_USER") or getpass.getuser())
    client.set_tag(run_id, "tns.force_reason", reason)


def latest_versions(model_name: str) -> list[str]:
    """All version numbers of a registered model (empty when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return sorted(
            (str(v.version) for v in _client().search_model_versions(f"name='{model_name}'")), key=int
        )
    except MlflowException:
        return []
