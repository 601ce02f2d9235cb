"""Tests on 8 simulated CPU devices. JAX fixes its device count when its backend starts, so
these run in a pytest process of their own (``pytest tests/multidevice``; the main run skips
this folder), which asks for the devices here, before anything starts the backend."""

import sys
from pathlib import Path

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tables in tests/


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if len(jax.devices()) < 8:  # the backend started before this file: skip, loudly
        reason = f"needs 8 devices, has {len(jax.devices())}: run `pytest tests/multidevice` alone"
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))
