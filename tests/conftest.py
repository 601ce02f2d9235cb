"""Test settings: strict dtype promotion, so silent float64 or mixed-precision bugs surface, and
every warning an error."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "error")


@pytest.fixture
def standard_promotion():
    """Standard dtype promotion for a test that runs optax, which needs it (optax raises 0.9 to
    an int32 power); optjax's own code runs under strict promotion everywhere else."""
    with jax.numpy_dtype_promotion("standard"):
        yield
