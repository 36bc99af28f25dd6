"""KFP component: data validation with Great Expectations."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from core.common.constants import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_data(dataset: Input[Dataset], config_json: str, report: Output[HTML], summary: Output[Markdown]):
    """Runs the versioned Great Expectations suite; a failed critical check fails the run.

    Args:
        dataset: Ingested dataset.
        config_json: Effective run configuration as JSON.
        report: HTML report of every check (written even when validation fails).
        summary: Markdown summary of the checks.
    """
    from components.common.failure import reported
    from components.validation.executor import validate_step
    from core.config.loading import resolve_config

    with reported("validate"):
        outcome, markdown = validate_step(dataset.path, resolve_config(config_json), report.path)
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write(markdown)
    warnings = [check.check for check in outcome.warnings()]
    summary.metadata.update({"rows": outcome.rows, "warnings": len(warnings), "warning_checks": warnings})
