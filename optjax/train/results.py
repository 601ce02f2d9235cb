"""What training reports: progress after each chunk of steps, and the results of every run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from flax import nnx


@dataclass
class Progress:
    """What a callback sees after each chunk of steps (metrics averaged over runs)."""

    step: int
    steps: int
    train_loss: float
    train_accuracy: float
    steps_per_second: float
    test_accuracy: float | None = None


@dataclass
class RunResult:
    seed: int
    learning_rate: float | None
    test_accuracy: float
    test_loss: float
    train_loss: float


@dataclass
class TrainResult:
    """Per-run results, curves (``history``: arrays with one column per run), timings, and the
    trained state of all runs stacked on a leading axis (``model(i)`` rebuilds run i, in
    evaluation mode)."""

    runs: list[RunResult]
    history: dict[str, np.ndarray]
    steps: int
    batch_size: int
    wall_seconds: float
    compile_seconds: float
    steps_per_second: float
    graphdef: Any = field(repr=False)  # the model in evaluation mode
    params: Any = field(repr=False)
    other: Any = field(repr=False)

    @property
    def test_accuracies(self) -> np.ndarray:
        return np.array([r.test_accuracy for r in self.runs])

    @property
    def mean(self) -> float:
        return float(self.test_accuracies.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1) of the test accuracy over runs; 0 for one run."""
        acc = self.test_accuracies
        return float(acc.std(ddof=1)) if len(acc) > 1 else 0.0

    def model(self, i: int = 0) -> nnx.Module:
        params, other = jax.tree.map(lambda x: x[i], (self.params, self.other))
        return nnx.merge(self.graphdef, params, other)

    def to_dict(self) -> dict:
        return {
            "runs": [vars(r).copy() for r in self.runs],
            "summary": {
                "test_accuracy_mean": self.mean,
                "test_accuracy_std": self.std,
                "num_runs": len(self.runs),
            },
            "steps": self.steps,
            "batch_size": self.batch_size,
            "timing": {
                "wall_seconds": self.wall_seconds,
                "compile_seconds": self.compile_seconds,
                "steps_per_second": self.steps_per_second,
            },
            "history": {k: np.asarray(v).tolist() for k, v in self.history.items()},
        }
