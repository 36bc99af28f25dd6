"""Fixtures of the monitoring tests: the serving tests' tiny exported repository (and its server), shared."""

from tests.serving.conftest import exported_repository, serving_tns_home, triton_server  # noqa: F401
