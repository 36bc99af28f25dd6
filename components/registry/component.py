"""KFP component: register a blessed model in MLflow and move the champion alias."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from core.common.constants import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register_model(
    decision: Input[Artifact],
    dataset: Input[Dataset],
    splits: Input[Dataset],
    config_json: str,
    mlflow_run_id: str,
    mlflow_tracking_uri: str,
    git_commit: str,
    summary: Output[Markdown],
) -> str:
    """Creates a registered-model version with lineage tags under the alias `challenger`; `champion` moves
    only after export and infra validation (promote_model).

    Args:
        decision: Gate decision (must be BLESSED).
        dataset: Ingested dataset (for lineage: its artifact URI and fingerprint).
        splits: Split assignment of the dataset (for lineage: the champion's test split can be found again).
        config_json: Effective run configuration as JSON.
        mlflow_run_id: Training run that logged the model.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).
        git_commit: Commit of the training code.
        summary: What was registered, as Markdown.

    Returns:
        The new registered-model version.
    """
    from components.common.failure import reported
    from components.registry.executor import register_step
    from core.common.markup import escape_markdown, markdown_code
    from core.config.loading import resolve_config
    from core.data.ingest import read_fingerprint
    from core.data.lineage import DataLineage, artifact_uri
    from core.evaluation.gate import read_decision

    with reported("register"):
        fingerprint = read_fingerprint(dataset.path)
        data = DataLineage(
            uri=artifact_uri(dataset.uri, dataset.path),
            splits_uri=artifact_uri(splits.uri, splits.path),
            fingerprint=fingerprint["fingerprint"],
            sources=list(fingerprint.get("sources") or [fingerprint.get("source", "")]),
        )
        lineage = {
            "dataset_fingerprint": fingerprint["fingerprint"],
            "git_commit": git_commit,
            **{key.removeprefix("tns."): value for key, value in data.to_tags().items()},
        }
        info = register_step(
            mlflow_run_id,
            read_decision(decision.path),
            resolve_config(config_json),
            lineage,
            mlflow_tracking_uri,
        )
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write(
            f"Registered **{escape_markdown(info.name)}** version **{escape_markdown(info.version)}** as "
            f"`challenger` (run {markdown_code(mlflow_run_id)}).\n"
        )
    return info.version


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def record_rejection(decision: Input[Artifact], mlflow_run_id: str, mlflow_tracking_uri: str) -> str:
    """Tags the training run with the NOT_BLESSED decision and its failed checks; no alias moves.

    Args:
        decision: Gate decision.
        mlflow_run_id: Training run to tag.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).

    Returns:
        The gate's summary.
    """
    from components.registry.executor import record_rejection_step
    from core.evaluation.gate import read_decision

    record = read_decision(decision.path)
    record_rejection_step(mlflow_run_id, record, mlflow_tracking_uri)
    return record["summary"]


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote_model(
    validation: Input[Artifact],
    decision: Input[Artifact],
    config_json: str,
    model_version: str,
    mlflow_tracking_uri: str,
    summary: Output[Markdown],
) -> str:
    """Moves `champion` to the challenger whose export passed infra validation, if the champion is still the
    one the gate compared against and the version is still `challenger`; the old champion becomes `previous`.

    Args:
        validation: Infra validation folder (must record a pass).
        decision: Gate decision (the champion version it compared against).
        config_json: Effective run configuration as JSON.
        model_version: The challenger's registered-model version.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).
        summary: What moved, as Markdown.

    Returns:
        The new champion version.
    """
    from components.common.failure import reported
    from components.export.executor import read_infra_validation
    from components.registry.executor import promote_step
    from core.common.markup import escape_markdown
    from core.config.loading import resolve_config
    from core.evaluation.gate import read_decision

    with reported("promote"):
        config = resolve_config(config_json)
        replaced = promote_step(
            config.model_name,
            model_version,
            read_infra_validation(validation.path),
            mlflow_tracking_uri,
            decision=read_decision(decision.path),
        )
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write(
            f"Promoted **{escape_markdown(config.model_name)}** version **{escape_markdown(model_version)}** "
            "to `champion`"
            + (f"; version {escape_markdown(replaced)} is now `previous`.\n" if replaced else ".\n")
        )
    return model_version
