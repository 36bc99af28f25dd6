"""Register and promote steps: a blessed model becomes a `challenger` version with lineage; after its export
passed infra validation it is promoted to `champion`."""

from __future__ import annotations

from core.common.constants import BLESSED
from core.config.run import RunConfig
from core.registry.mlflow_registry import (
    ModelVersionInfo,
    PromotionConflict,
    PromotionLockTimeout,
    configure,
    promote_version,
    record_forced_promotion,
    register_challenger,
    set_version_tags,
)


def register_step(
    run_id: str, decision: dict, config: RunConfig, lineage: dict[str, str], tracking_uri: str = ""
) -> ModelVersionInfo:
    """Registers the run's logged model folder as a new version under the alias `challenger`.

    Args:
        run_id: MLflow run that logged the model folder.
        decision: The gate's decision record; must be BLESSED.
        config: Effective run configuration (model name).
        lineage: Tags for the new version (dataset fingerprint, git commit, pipeline run, ...).
        tracking_uri: MLflow tracking URI ('' = default).

    Raises:
        ValueError: When the decision is not BLESSED (nothing is registered).
    """
    import mlflow

    if decision.get("decision") != BLESSED:
        raise ValueError(f"refusing to register a model whose gate decision is {decision.get('decision')!r}")
    configure(tracking_uri)
    if decision.get("forced"):
        record_forced_promotion(run_id, decision.get("force_reason") or "")
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/model"
    tags = {
        **{f"tns.{k}": str(v) for k, v in lineage.items()},
        "tns.run_id": run_id,
        "tns.gate_decision": decision["decision"],
        "tns.forced": str(bool(decision.get("forced"))).lower(),
    }
    return register_challenger(
        config.model_name, run_id, source, tags, description=decision.get("summary", "")
    )


def promote_step(
    model_name: str,
    version: str,
    infra_validation: dict,
    tracking_uri: str = "",
    decision: dict | None = None,
) -> str:
    """Moves `champion` to a version whose export passed infra validation, if the registry is still as the
    gate saw it (compare-and-swap: `promote_version` under the promotion lock).

    Args:
        model_name: Registered-model name.
        version: The challenger version.
        infra_validation: The infra validation report (must have passed).
        tracking_uri: MLflow tracking URI ('' = default).
        decision: The gate's decision: its `champion_version` is the champion the version must still replace,
            and the version must still be `challenger` (None: no such checks, for tools outside the pipeline).

    Returns:
        The replaced champion version, or ''.

    Raises:
        ValueError: When the report did not pass (nothing moves).
        PromotionConflict: When another promotion moved the champion or the challenger meanwhile.
    """
    if not infra_validation.get("passed"):
        raise ValueError(
            f"refusing to promote version {version}: infra validation did not pass "
            f"({infra_validation.get('reason', 'no report')})"
        )
    configure(tracking_uri)
    checks = (
        {"expected_champion": decision.get("champion_version"), "require_challenger": True}
        if decision is not None
        else {}
    )
    try:
        old = promote_version(model_name, version, **checks)
    except PromotionLockTimeout:
        raise  # another promotion was running: nothing is wrong with this version
    except PromotionConflict as error:
        set_version_tags(model_name, version, {"tns.promotion": "REFUSED", "tns.refused_reason": str(error)})
        raise
    set_version_tags(model_name, version, {"tns.promotion": "PROMOTED", "tns.infra_validation": "PASSED"})
    return old.version if old else ""


def record_rejection_step(run_id: str, decision: dict, tracking_uri: str = "") -> None:
    """Tags a run whose model the gate did not bless, with the failed checks."""
    from mlflow import MlflowClient

    configure(tracking_uri)
    client = MlflowClient()
    client.set_tag(run_id, "tns.gate_decision", decision["decision"])
    failed = [r["message"] for r in decision.get("reasons", []) if not r.get("passed")]
    client.set_tag(run_id, "tns.gate_failed_checks", "; ".join(failed)[:5000])
