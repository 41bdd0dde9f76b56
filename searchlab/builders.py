"""The network a trial trains: searchlab's MLP, or the user's own Keras builder named by import path.

With `model=custom model.builder=module:function`, every stage builds its networks by calling
`function(n_features=..., n_outputs=..., task=..., **hyperparameters)`: `task` is binary, multiclass or
regression, and the hyperparameters are the searched ones its signature names (all of them with `**kwargs`):
searchlab's (`searchlab.space.BUILD_PARAMS`) and its own, declared in `search.coarse.space` like searchlab's. A
keyword the search does not set keeps the function's default. It returns a Keras model on the scaled features
whose output is the built-in MLP's: `n_outputs` softmax probabilities (multiclass), one sigmoid unit (binary) or
one linear unit (regression, trained on standardized targets). searchlab compiles it with the searched optimizer
and learning rate and the task's loss; one that comes compiled keeps its optimizer and loss. Either way
searchlab adds its metrics, which early stopping and the scores read.

A `Builder` is a small picklable value: the coarse stage's worker processes, the fine stage's trial process and
its distributed workers import the function by path, from the folders it records (the working directory).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np

from searchlab.config import ModelConfig, shipped_space_entries
from searchlab.data import Dataset
from searchlab.errors import ConfigError
from searchlab.model import build_model, compile_for_task, make_optimizer, n_outputs
from searchlab.space import BUILD_PARAMS, FIT_PARAMS, HYPERPARAMETERS, SCALING_PARAMS, Param

#: What a custom builder is always called with, besides the hyperparameters.
CONTEXT = ("n_features", "n_outputs", "task")
_COMPILE_PARAMS = ("learning_rate", "optimizer")  # used by searchlab's compile, whether or not the function takes them
_OUTPUTS = {"binary": "one sigmoid unit (the probability of the second class)",
            "multiclass": "a softmax unit per class (class probabilities)",
            "regression": "one linear unit"}


@dataclass(frozen=True)
class Builder:
    """How to build a trial's compiled network: searchlab's MLP (`path` None) or a user's function.

    Made by `load_builder`, which checks the function once.
    """

    path: str | None = None  # module:function
    search_path: tuple[str, ...] = ()  # folders the module is imported from, before the Python path
    takes: tuple[str, ...] = BUILD_PARAMS  # the hyperparameter keywords its signature names
    takes_any: bool = False  # it has **kwargs: every hyperparameter of the network is passed
    compiles: bool = True  # False: the function returns compiled models, with their own optimizer

    def can_search(self, name: str) -> bool:
        """Whether a search can vary hyperparameter `name` with this builder: one the function takes, the
        training loop's and the scaling's, and the optimizer's unless the models come compiled."""
        if name in FIT_PARAMS or name in SCALING_PARAMS or (name in _COMPILE_PARAMS and self.compiles):
            return True
        return name in self.takes or self.takes_any

    def build(self, *, n_features: int, task: str, n_classes: int = 0, steps_per_execution: int = 1,
              target_scale: float = 1.0, **hyperparameters: Any) -> keras.Model:
        """A compiled network for `task`; `hyperparameters` are the network's (`split_hyperparameters`), those
        not given at their defaults.

        `target_scale` is the regression targets' standard deviation, so RMSE/MAE read in target units.
        """
        if self.path is None:
            return build_model(n_features=n_features, task=task, n_classes=n_classes,
                               steps_per_execution=steps_per_execution, target_scale=target_scale, **hyperparameters)
        model = self.network(n_features, task, n_classes, hyperparameters)
        if model.compiled:  # the user's optimizer and loss; searchlab's metrics
            optimizer, loss = model.optimizer, model.loss
        else:
            optimizer = make_optimizer(hyperparameters.get("optimizer", "adam"),
                                       hyperparameters.get("learning_rate", 1e-3))
            loss = None
        compile_for_task(model, task, optimizer=optimizer, loss=loss, steps_per_execution=steps_per_execution,
                         target_scale=target_scale)
        return model

    def network(self, n_features: int, task: str, n_classes: int, hyperparameters: Mapping[str, Any]) -> keras.Model:
        """What the user's function returns for these inputs and hyperparameters (those it takes).

        Raises:
            TypeError: it did not return a Keras model.
        """
        assert self.path is not None
        function = _import(self.path, self.search_path)
        values = dict(hyperparameters) if self.takes_any else \
            {name: hyperparameters[name] for name in self.takes if name in hyperparameters}
        model = function(n_features=n_features, n_outputs=n_outputs(task, n_classes), task=task, **values)
        if not isinstance(model, keras.Model):
            raise TypeError(f"{self.path} returned {type(model).__name__}, not a Keras model (keras.Model); "
                            "end it with `return model`.")
        return model


def load_builder(settings: ModelConfig, data: Dataset) -> Builder:
    """The builder `settings` names, its function imported (from the working directory or the Python path) and
    called once on `data`'s shape with the default hyperparameters, to check what it returns.

    Raises:
        ConfigError: the module does not import, has no such function, its signature lacks the context
            keywords or requires others, or it fails, returns no Keras model or a model with the wrong outputs.
    """
    if settings.builder is None:
        return Builder()
    path, search_path = settings.builder, (os.getcwd(),)
    takes, takes_any = _takes(path, _import(path, search_path))
    builder = Builder(path, search_path, takes, takes_any)
    defaults = {name: value for name, value in settings.hyperparameters().items()
                if name in BUILD_PARAMS and (takes_any or name in takes)}
    n_out = n_outputs(data.task, data.n_classes)
    called = (f"{path}(n_features={data.n_features}, n_outputs={n_out}, task={data.task!r}, "
              + ", ".join(f"{name}={value!r}" for name, value in defaults.items()) + ")")
    try:
        model = builder.network(data.n_features, data.task, data.n_classes, defaults)
        output = model(np.zeros((2, data.n_features), dtype="float32"))
    except Exception as exc:
        raise ConfigError(f"model.builder: {called} failed: {type(exc).__name__}: {exc}") from None
    shape = tuple(getattr(output, "shape", ()))
    if shape != (2, n_out):
        raise ConfigError(f"model.builder: {called} returned a model whose output for 2 rows has shape {shape}; "
                          f"a {data.task} task needs {_OUTPUTS[data.task]}, shape (2, {n_out}).")
    return replace(builder, compiles=not model.compiled)


def searched_space(builder: Builder, space: Mapping[str, Param], entries: Mapping[str, Any]) -> tuple[
        dict[str, Param], str]:
    """The part of the coarse `space` `builder` can search, and a note on what was left out ("" if nothing).

    A hyperparameter the builder cannot take is dropped when its entry (in `entries`, the configured
    `search.coarse.space`) is one of searchlab's shipped ranges; an entry added or changed for this search was
    meant for the builder, so it is an error.

    Raises:
        ConfigError: such an entry, or nothing left to search.
    """
    left_out = [name for name in space if not builder.can_search(name)]
    if not left_out:
        return dict(space), ""
    shipped = shipped_space_entries()
    for name in left_out:
        if entries[name] not in shipped.get(name, []):
            why = ("it comes compiled with its own optimizer" if name in _COMPILE_PARAMS
                   else f"its signature has no `{name}` keyword")
            raise ConfigError(f"search.coarse.space.{name}: {builder.path} does not take {name} ({why}); add the "
                              f"keyword to the function, or drop the range with '~search.coarse.space.{name}'.")
    kept = {name: param for name, param in space.items() if name not in left_out}
    if not kept:
        raise ConfigError(f"search.coarse.space: {builder.path} takes none of {', '.join(space)}; declare ranges for "
                          f"the hyperparameters it takes ({', '.join(builder.takes)}).")
    return kept, (f"{builder.path} takes {', '.join(builder.takes) or 'no hyperparameters'}"
                  f"{'' if builder.compiles else ' and comes compiled'}; not searched: {', '.join(left_out)}.")


def _import(path: str, search_path: tuple[str, ...]) -> Callable[..., Any]:
    """The function at `module:function`, its module imported with `search_path` first on the Python path (only
    while importing: the interpreter's path is left as it was)."""
    module_name, _, function_name = path.partition(":")
    if module_name == "__main__":
        raise ConfigError(f"model.builder: {path!r} is defined in a script or notebook, which worker processes "
                          "cannot import; put the function in a module file (e.g. my_model.py beside the notebook) "
                          "and name it as my_model:" + function_name + ".")
    added = [folder for folder in search_path if folder not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise ConfigError(f"model.builder: no module {module_name!r} in the working directory "
                              f"({', '.join(search_path)}) or on the Python path; run from the folder that holds "
                              f"it, or add that folder to PYTHONPATH.") from None
        raise ConfigError(f"model.builder: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"model.builder: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    finally:
        for folder in added:
            sys.path.remove(folder)
    function = getattr(module, function_name, None)
    if not callable(function):
        found = sorted(name for name, value in vars(module).items()
                       if inspect.isfunction(value) and not name.startswith("_"))
        raise ConfigError(f"model.builder: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                          f"function {function_name!r}; its functions: {', '.join(found) or 'none'}.")
    return function


def _takes(path: str, function: Callable[..., Any]) -> tuple[tuple[str, ...], bool]:
    """The hyperparameter keywords `function` names (searchlab's first), and whether it takes any (`**kwargs`),
    after checking it can be called the way searchlab calls it."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or extension function without a signature: trust it
        return BUILD_PARAMS, True
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    keywords = {name for name, p in parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    missing = [name for name in CONTEXT if name not in keywords]
    if missing and not any_keyword:
        raise ConfigError(f"model.builder: {path} must take the keywords {', '.join(CONTEXT)}; its signature "
                          f"{inspect.signature(function)} lacks {', '.join(missing)}.")
    passed = {*CONTEXT, *BUILD_PARAMS}
    required = [name for name, p in parameters.items() if p.default is p.empty and name not in passed
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if required:
        raise ConfigError(f"model.builder: {path} requires {', '.join(required)}, which searchlab may not pass "
                          f"(it passes {', '.join(CONTEXT)} and the hyperparameters the search sets; the others keep "
                          "the function's defaults): give them defaults.")
    own = [name for name in keywords if name not in CONTEXT and name not in HYPERPARAMETERS]
    return (*(name for name in BUILD_PARAMS if any_keyword or name in keywords), *own), any_keyword
