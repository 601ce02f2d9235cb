"""What training reports: progress after each chunk of steps, and the results of every run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = ["LearningRateGroup", "Progress", "RunResult", "TrainResult"]


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


@dataclass(frozen=True)
class LearningRateGroup:
    """The runs trained at one learning rate (one per seed): their test accuracies."""

    learning_rate: float
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1) over the seeds; None for a single run."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else None


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

    def by_learning_rate(self) -> list[LearningRateGroup]:
        """The runs grouped by learning rate, in increasing order (none for runs of a fixed
        transform, which have no learning rate).

        Example:
            >>> runs = [RunResult(0, 0.1, 0.90, 0.3, 0.2), RunResult(1, 0.1, 0.94, 0.2, 0.1),
            ...         RunResult(0, 0.01, 0.80, 0.6, 0.5)]
            >>> result = TrainResult(runs, {}, 1, 1, 0.0, 0.0, 0.0, None, None, None)
            >>> [(g.learning_rate, g.mean, g.std) for g in result.by_learning_rate()]
            [(0.01, 0.8, None), (0.1, 0.92, 0.0283)]
        """
        rates = sorted({r.learning_rate for r in self.runs if r.learning_rate is not None})
        return [
            LearningRateGroup(lr, [r.test_accuracy for r in self.runs if r.learning_rate == lr])
            for lr in rates
        ]

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
                "by_learning_rate": [
                    {
                        "learning_rate": g.learning_rate,
                        "mean": g.mean,
                        "std": g.std,
                        "n": len(g.accuracies),
                    }
                    for g in self.by_learning_rate()
                ],
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
