"""KFP components: ingest and split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from core.common.constants import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest_data(data_uri: str, config_json: str, policies: list, dataset: Output[Dataset]) -> str:
    """Reads a dataset into a self-contained, fingerprinted Dataset artifact: copies of an item collapsed (labels
    merged) and missing labels resolved as the configuration says, everything done recorded in preparation.json.

    Args:
        data_uri: Dataset folder or manifest path ('' = generate the embedded default dataset).
        config_json: Run configuration as JSON ('{}' = defaults).
        policies: Policy columns overriding the configuration (empty list = keep the configuration's).
        dataset: Output folder with dataset.parquet, images/, preparation.json and fingerprint.json.

    Returns:
        The effective run configuration as JSON, for the following steps.
    """
    import os

    from components.common.failure import reported
    from components.data.executor import ingest_step
    from core.config.loading import resolve_config

    with reported("ingest"):
        config = resolve_config(config_json, policies)
        os.makedirs(dataset.path, exist_ok=True)
        summary = ingest_step(data_uri, config, dataset.path)
    dataset.metadata.update(
        {k: summary[k] for k in ("rows", "rows_read", "fingerprint", "source", "policies")}
    )
    return config.to_json()


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def split_data(dataset: Input[Dataset], config_json: str, splits: Output[Dataset]):
    """Assigns stratified train/validation/test splits; an item or a group (split.group_column) never straddles
    two splits.

    Args:
        dataset: Ingested dataset.
        config_json: Effective run configuration as JSON.
        splits: Output folder with splits.parquet (id, split).
    """
    from components.common.failure import reported
    from components.data.executor import split_step
    from core.config.loading import resolve_config

    with reported("split"):
        counts = split_step(dataset.path, resolve_config(config_json), splits.path)
    splits.metadata.update(counts)
