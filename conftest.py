"""Names the docstring examples use, so each reads like user code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import optjax

    doctest_namespace.update(
        jax=jax, jnp=jnp, np=np, optjax=optjax, NamedSharding=NamedSharding, P=PartitionSpec
    )
