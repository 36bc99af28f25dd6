"""Pure ML and data code of tns-pipelines: no kfp; imported by serving, monitoring, components, pipelines."""
