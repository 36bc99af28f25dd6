"""Sources of the Triton python-backend models; export copies each into a repository as `model.py`."""
