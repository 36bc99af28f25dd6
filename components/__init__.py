"""Pure ML and data code of tns-pipelines, plus thin KFP component wrappers (`component.py` files)."""
