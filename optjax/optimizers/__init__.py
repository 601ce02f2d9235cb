"""The optimizers: each a chain of primitives, with optax's names, arguments and defaults, in
one module per family.

The update rule of each lives on its primitives (see optjax.transforms); an optimizer's docstring
says what is chained.
"""

from optjax.optimizers.classic import adadelta as adadelta
from optjax.optimizers.classic import adafactor as adafactor
from optjax.optimizers.classic import adafactor_relative_step as adafactor_relative_step
from optjax.optimizers.classic import adagrad as adagrad
from optjax.optimizers.classic import adam as adam
from optjax.optimizers.classic import adamax as adamax
from optjax.optimizers.classic import adamaxw as adamaxw
from optjax.optimizers.classic import adamw as adamw
from optjax.optimizers.classic import amsgrad as amsgrad
from optjax.optimizers.classic import lion as lion
from optjax.optimizers.classic import nadam as nadam
from optjax.optimizers.classic import nadamw as nadamw
from optjax.optimizers.classic import radam as radam
from optjax.optimizers.classic import rmsprop as rmsprop
from optjax.optimizers.classic import sgd as sgd

__all__ = [
    "adadelta",
    "adafactor",
    "adafactor_relative_step",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "amsgrad",
    "lion",
    "nadam",
    "nadamw",
    "radam",
    "rmsprop",
    "sgd",
]
