"""Shared test settings: a reproducible hypothesis profile (the same examples on every run, in CI too)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "a2i",
    derandomize=True,  # a failure in CI is the same failure on a developer's machine
    database=None,  # nothing written into the checkout
    deadline=None,  # decoding times vary on a loaded 2-core machine; hangs are caught by pytest-timeout
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("a2i")
