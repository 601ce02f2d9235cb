"""Test settings: strict dtype promotion, so silent float64 or mixed-precision bugs surface;
every warning an error; and XLA compiling fast.

Compiling is most of the suite's time (thousands of small programs), so XLA compiles fast:
with LLVM's optimisations off, and with XLA:CPU's older elemental emitters for fusions (the
newer MLIR fusion emitters take three to four times as long to compile a small optimizer step),
and with the machine code emitted as one module rather than split into parts compiled on threads
of their own (tests/test_flat.py and test_complex.py on two workers and two cores: 108 to 125 s
with the split, 84 to 94 s without).
The flags are set here before JAX starts its backend and are inherited by every subprocess and
notebook kernel the tests start. The programs XLA builds (their operations and fusions) are the
same; the machine code differs in speed, and in where a multiply-add is fused or a loop
vectorised, which can move a result by ulps. ``OPTJAX_TEST_XLA_DEFAULTS=1``
runs the suite with XLA's defaults, as users compile; it passes too."""

import gc
import os

if not os.environ.get("OPTJAX_TEST_XLA_DEFAULTS"):
    fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    fast += " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {fast}".strip()

import jax  # after XLA_FLAGS (read when the backend starts), though importing starts nothing
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

# Tracing makes objects by the million: with Python's default thresholds the cyclic collector
# runs thousands of times and walks every module imported (tests/test_flat.py: 2491
# collections, 3.5 s of 133 s; 13 and 0.8 s with these). Memory use is unchanged.
gc.freeze()
gc.set_threshold(50_000, 20, 20)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "error")


# The tests that run a whole program (a notebook, the command line in processes of its own, a
# benchmark) take seconds to a minute each: run first, they keep every worker busy until the
# end instead of leaving one to finish them alone.
WHOLE_PROGRAMS = ("test_notebooks.py::test_notebook_runs", "test_cli.py::test_cli_on_eight")


def pytest_collection_modifyitems(items: list) -> None:
    items.sort(key=lambda item: not any(name in item.nodeid for name in WHOLE_PROGRAMS))


@pytest.fixture
def standard_promotion():
    """Standard dtype promotion for a test that runs optax, which needs it (optax raises 0.9 to
    an int32 power); optjax's own code runs under strict promotion everywhere else."""
    with jax.numpy_dtype_promotion("standard"):
        yield
