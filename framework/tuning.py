"""Search spaces written in YAML, turned into Ray Tune sampling objects.

A recipe declares one entry per hyperparameter, either a plain constant or a mapping with exactly
one sampler key::

    search_space:
      hidden:  {choice: [16, 32, 64]}
      lr:      {loguniform: [0.001, 0.03]}
      dropout: {uniform: [0.0, 0.3]}
      layers:  {randint: [1, 3]}     # [low, high): high is exclusive, as in ray.tune.randint
      act:     {grid: [relu, tanh]}  # every value is tried (times num_samples)
      batch:   32                    # a constant

``validate_search_space`` checks all of that without importing Ray, so the planner can reject a
bad recipe before anything heavy starts; ``search_space_from_config`` validates, then builds the
``ray.tune`` objects.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import RecipeError

#: sampler key -> what it takes (for messages)
SAMPLERS: dict[str, str] = {
    "choice": "a non-empty list of values",
    "grid": "a non-empty list of values",
    "uniform": "[low, high] numbers with low < high",
    "loguniform": "[low, high] numbers with 0 < low < high",
    "randint": "[low, high] integers with low < high (high exclusive)",
}

_CONSTANT_TYPES = (str, int, float, bool, type(None))


def plain_container(value: Any) -> Any:
    """OmegaConf containers (and tuples) as plain dicts / lists, so Ray gets picklable values."""
    try:  # omegaconf is a core dependency, but do not require it for plain input
        from omegaconf import Container, OmegaConf

        if isinstance(value, Container):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {k: plain_container(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain_container(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `uniform: [false, true]` is a recipe mistake, not a range
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid_list() -> str:
    return ", ".join(sorted(SAMPLERS))


def _check_bounds(key: str, sampler: str, args: Any) -> None:
    expects = SAMPLERS[sampler]
    if not isinstance(args, list) or len(args) != 2:
        raise RecipeError(f"{key}: '{sampler}' takes {expects}; got {args!r}")
    low, high = args
    if sampler == "randint":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise RecipeError(f"{key}: '{sampler}' takes {expects}; got {args!r}")
    elif not (_is_number(low) and _is_number(high)):
        raise RecipeError(f"{key}: '{sampler}' takes {expects}; got {args!r}")
    if low >= high:
        raise RecipeError(f"{key}: '{sampler}' needs low < high; got low={low!r}, high={high!r}")
    if sampler == "loguniform" and low <= 0:
        raise RecipeError(f"{key}: 'loguniform' needs 0 < low (it samples in log space); got low={low!r}")


def _check_values(key: str, sampler: str, args: Any) -> None:
    if not isinstance(args, list) or not args:
        raise RecipeError(f"{key}: '{sampler}' takes {SAMPLERS[sampler]}; got {args!r}")


def validate_search_space(space: Any, prefix: str = "train.search_space") -> dict[str, Any]:
    """Check a YAML search space without importing Ray; return it as plain dicts and lists.

    Every error is a :class:`RecipeError` that names ``<prefix>.<param>``.
    """
    if space is None:
        return {}
    space = plain_container(space)
    if not isinstance(space, dict):
        raise RecipeError(f"{prefix}: expected a mapping of hyperparameter -> sampler, got {type(space).__name__}")
    for param, spec in space.items():
        key = f"{prefix}.{param}"
        if not isinstance(param, str) or not param:
            raise RecipeError(f"{key}: hyperparameter names must be non-empty strings")
        if isinstance(spec, list):
            # a bare list is almost always a forgotten `choice:`; a list constant is not supported
            raise RecipeError(
                f"{key}: a bare list is ambiguous; write {{choice: {spec!r}}} or {{grid: {spec!r}}}"
            )
        if isinstance(spec, _CONSTANT_TYPES):
            continue
        if not isinstance(spec, dict):
            raise RecipeError(f"{key}: expected a constant or {{SAMPLER: ARGS}}, got {type(spec).__name__}")
        if len(spec) != 1:
            found = ", ".join(map(str, spec)) or "none"
            merged = " (a recipe's mapping is merged into the config group's: to swap a sampler, "\
                     "override the group with another YAML or set the key with the same sampler)" if len(spec) > 1 else ""
            raise RecipeError(
                f"{key}: exactly one sampler key expected, found {len(spec)} ({found}){merged}. "
                f"Valid samplers: {_valid_list()}"
            )
        (sampler, args), = spec.items()
        if sampler not in SAMPLERS:
            close = difflib.get_close_matches(str(sampler), list(SAMPLERS), n=1, cutoff=0.7)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RecipeError(f"{key}: unknown sampler '{sampler}'.{hint} Valid samplers: {_valid_list()}")
        if sampler in ("choice", "grid"):
            _check_values(key, sampler, args)
        else:
            _check_bounds(key, sampler, args)
    return space


def search_space_from_config(space: Any, prefix: str = "train.search_space") -> dict[str, Any]:
    """A ``param_space`` for ``ray.tune.Tuner``: samplers become ``ray.tune`` objects, constants stay."""
    space = validate_search_space(space, prefix)
    from ray import tune  # only here: validation must work before Ray is imported

    builders = {
        "choice": lambda a: tune.choice(a),
        "grid": lambda a: tune.grid_search(a),
        "uniform": lambda a: tune.uniform(a[0], a[1]),
        "loguniform": lambda a: tune.loguniform(a[0], a[1]),
        "randint": lambda a: tune.randint(a[0], a[1]),
    }
    out: dict[str, Any] = {}
    for param, spec in space.items():
        if isinstance(spec, dict):
            (sampler, args), = spec.items()
            out[param] = builders[sampler](args)
        else:
            out[param] = spec
    return out
