"""Test settings: strict dtype promotion, so silent float64 or mixed-precision bugs surface, and
every warning an error."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "error")
