"""Hyperparameters and search spaces, free of Keras and MLflow.

The names in `HYPERPARAMETERS` are the model builder's keywords and are used
unchanged in YAML, in scikit-learn (`model__units`), in KerasTuner and in
MLflow params.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

OPTIMIZERS = ("adam", "adamw", "nadam", "rmsprop", "sgd", "adagrad")
ACTIVATIONS = ("relu", "elu", "gelu", "selu", "silu", "tanh", "sigmoid", "leaky_relu")
SCALINGS = ("standard", "quantile", "piecewise")  # see searchlab.scaling

# name -> (kind, lower bound, whether the lower bound is allowed, upper bound (exclusive) or None)
_NUMERIC_LIMITS: dict[str, tuple[str, float, bool, float | None]] = {
    "units": ("int", 1, True, None),
    "layers": ("int", 0, True, None),
    "dropout": ("float", 0.0, True, 1.0),
    "l1": ("float", 0.0, True, None),
    "l2": ("float", 0.0, True, None),
    "noise": ("float", 0.0, True, None),
    "learning_rate": ("float", 0.0, False, None),
    "batch_size": ("int", 1, True, None),
    "epochs": ("int", 1, True, None),
}
#: The choice hyperparameters and the values each accepts.
CHOICES: dict[str, tuple[str, ...]] = {"optimizer": OPTIMIZERS, "activation": ACTIVATIONS, "scaling": SCALINGS}

#: Keywords of `searchlab.model.build_model`.
BUILD_PARAMS = ("units", "layers", "dropout", "l1", "l2", "noise", "learning_rate", "optimizer", "activation")
#: Keywords of the training loop rather than the network. Every other hyperparameter is the network's: these,
#: and with model=custom the builder's own keywords (see searchlab.builders).
FIT_PARAMS = ("batch_size", "epochs")
#: How the features are scaled before they reach the network.
SCALING_PARAMS = ("scaling",)
HYPERPARAMETERS = BUILD_PARAMS + FIT_PARAMS + SCALING_PARAMS

Kind = Literal["int", "float", "choice"]


def allowed(name: str) -> str:
    """Describe the values hyperparameter `name` accepts, for error messages."""
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    kind, low, inclusive, high = _NUMERIC_LIMITS[name]
    lower = f"{'>=' if inclusive else '>'} {low:g}"
    article = "an" if kind == "int" else "a"
    return f"{article} {kind} {lower}" + (f" and < {high:g}" if high is not None else "")


def check_value(name: str, value: Any) -> str | None:
    """Return why `value` is not a valid setting of hyperparameter `name`, or None."""
    if name not in HYPERPARAMETERS:
        return f"is not a hyperparameter; known ones are {', '.join(HYPERPARAMETERS)}"
    if name in CHOICES:
        return None if value in CHOICES[name] else f"must be {allowed(name)}, got {value!r}"
    kind, low, inclusive, high = _NUMERIC_LIMITS[name]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value) or (kind == "int" and float(value) != int(value)):
        return f"must be {allowed(name)}, got {value!r}"
    too_low = value < low if inclusive else value <= low
    if too_low or (high is not None and value >= high):
        return f"must be {allowed(name)}, got {value!r}"
    return None


def parse_value(name: str, text: str) -> Any:
    """A hyperparameter value from its text form (as MLflow stores params). A custom builder's own hyperparameter
    reads as a number when its text is one."""
    if name in CHOICES:
        return text
    if name not in _NUMERIC_LIMITS:
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                pass
        return text
    kind = _NUMERIC_LIMITS[name][0]
    return int(float(text)) if kind == "int" else float(text)


@dataclass(frozen=True)
class Param:
    """One searchable hyperparameter: an int or float range (optionally log-scaled) or a choice."""

    name: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    values: tuple[Any, ...] = ()

    @property
    def is_numeric(self) -> bool:
        return self.kind != "choice"

    def distribution(self) -> Any:
        """A scikit-learn `ParameterSampler` distribution (an object with `rvs`, or a list)."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return _IntDistribution(int(self.low), int(self.high), self.log)
        if self.log:
            return stats.loguniform(self.low, self.high)
        return stats.uniform(self.low, self.high - self.low)

    def grid(self, points: int) -> list[Any]:
        """At most `points` values spread evenly (geometrically if log) over the range."""
        if self.kind == "choice":
            return list(self.values)
        if self.low == self.high:
            return [self.cast(self.low)]
        spread = np.geomspace if self.log else np.linspace
        values = [self.cast(v) for v in spread(self.low, self.high, points)]
        return sorted(set(values))

    def cast(self, value: Any) -> Any:
        """Convert a sampled or stored value to this parameter's Python type."""
        if self.kind == "int":
            return int(round(float(value)))
        if self.kind == "float":
            return float(value)
        for choice in self.values:  # values read back from MLflow are strings
            if choice == value or str(choice) == str(value):
                return choice
        raise ValueError(f"{value!r} is not one of {self.name}'s choices {list(self.values)}")

    def declare(self, hp: Any) -> Any:
        """Declare this parameter on a KerasTuner `HyperParameters` object, continuous ranges kept."""
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values))
        sampling = "log" if self.log else "linear"
        if self.kind == "int":
            return hp.Int(self.name, int(self.low), int(self.high), sampling=sampling)
        return hp.Float(self.name, self.low, self.high, sampling=sampling)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {list(self.values)}"
        scale = ", log" if self.log else ""
        return f"{self.name} in [{self.low:.4g}, {self.high:.4g}] ({self.kind}{scale})"

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"type": "choice", "values": list(self.values)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


Space = Mapping[str, Param]


def grid_size(space: Space, points: int) -> int:
    """Points of the grid over `space` with `points` values per numeric range (`Param.grid`)."""
    return math.prod(len(param.grid(points)) for param in space.values())


def stratify_choices(candidates: list[dict[str, Any]], distributions: Mapping[str, Any],
                     seed: int) -> list[dict[str, Any]]:
    """`candidates` with each choice (a list of 2 or more values in `distributions`) drawn again, stratified:
    every value comes up equally often (those that get one more, when the values do not divide the candidates,
    at random), in a random order. Drawn independently, one of three values comes up 3 times or fewer among 20
    candidates in 18% of searches (4 or fewer in 44%): too few to tell whether it helps."""
    rng = np.random.default_rng(seed)
    stratified = [dict(candidate) for candidate in candidates]
    for key in sorted(distributions):
        values = distributions[key]
        if not isinstance(values, list) or len(values) < 2:
            continue
        drawn = rng.permutation(np.resize(rng.permutation(len(values)), len(stratified)))
        for candidate, index in zip(stratified, drawn, strict=True):
            candidate[key] = values[index]
    return stratified


def space_as_dict(space: Space) -> dict[str, dict[str, Any]]:
    """A plain, YAML-friendly view of a space."""
    return {name: param.as_dict() for name, param in space.items()}


class _IntDistribution:
    """Integers in [low, high], uniform or log-uniform; scipy's randint has no log scale."""

    def __init__(self, low: int, high: int, log: bool) -> None:
        self.low, self.high, self.log = low, high, log

    def rvs(self, random_state: np.random.RandomState) -> int:
        if self.log:
            value = math.exp(random_state.uniform(math.log(self.low), math.log(self.high + 1)))
        else:
            value = random_state.uniform(self.low, self.high + 1)
        return min(int(value), self.high)
