"""Every configuration in one place: the run (`run`), the drift check (`drift`), the retraining rules
(`retrain_rules`), their field checks (`fields`) and YAML / `--set` loading (`loading`)."""
