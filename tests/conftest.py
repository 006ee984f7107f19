"""Shared test settings: a reproducible hypothesis profile (the same examples on every run, in CI too), one thread."""

import pytest
from hypothesis import HealthCheck, settings

from a2i_utils.devices import cpu_threads

settings.register_profile(
    "a2i",
    derandomize=True,  # a failure in CI is the same failure on a developer's machine
    database=None,  # nothing written into the checkout
    deadline=None,  # decoding times vary on a loaded 2-core machine; hangs are caught by pytest-timeout
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("a2i")


@pytest.fixture
def one_torch_thread():
    """Tiny models on one torch thread (restored afterwards): the cores are shared, and 2 threads waiting on each
    other are slower. A test file opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    with cpu_threads(1):
        yield
