"""Configuration of differentially private training (``train.privacy``) and its cheap checks.

The planner validates a recipe's ``train.privacy`` with what is here, without importing torch or
Opacus; the training itself (``make_private``, the accountant) is in ``plugins.privacy_opacus``,
which a trainer imports only when ``privacy.enabled``. What ε covers and does not cover is said
there too.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional

from framework.errors import RecipeError

#: accountants of opacus 1.6 (``opacus.accountants.registry._ACCOUNTANTS``)
ACCOUNTANTS = ("prv", "rdp", "gdp")
#: below this noise multiplier ε is in the hundreds for any usual sampling rate, gdp fails and
#: prv needs minutes (sigma 0.1: 146 s) to say so
MIN_NOISE_MULTIPLIER = 0.3
MAX_NOISE_MULTIPLIER = 1e4
DEFAULT_WHERE = "train.privacy"


@dataclass
class PrivacyConfig:
    """Recipe section ``train.privacy`` (a trainer's ``privacy`` option)."""

    #: train with DP-SGD (per-sample clipping + noise); off: plain training
    enabled: bool = False
    #: calibrate the noise so that ε reaches this value after the planned (max) epochs
    target_epsilon: Optional[float] = 3.0
    #: or: fixed noise (std / max_grad_norm); set target_epsilon: null to use it
    noise_multiplier: Optional[float] = None
    #: None -> 1 / (10 · n_train); when given it must be < 1 / n_train
    delta: Optional[float] = None
    #: per-sample gradient L2 clipping bound
    max_grad_norm: float = 1.0
    #: privacy accountant: prv (tightest), rdp, gdp (experimental, can underestimate)
    accountant: str = "prv"
    #: cryptographically secure sampling and noise (needs torchcsprng; not reproducible)
    secure_mode: bool = False


def privacy_config_from(value: Any, where: str = DEFAULT_WHERE) -> PrivacyConfig:
    """A PrivacyConfig from None (disabled), a mapping (recipe section) or a PrivacyConfig;
    validated with ``check_privacy_config``."""
    if value is None:
        config = PrivacyConfig()
    elif isinstance(value, PrivacyConfig):
        config = value
    elif isinstance(value, Mapping):  # a plain dict or an OmegaConf DictConfig
        value = dict(value)
        known = {f.name for f in fields(PrivacyConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise RecipeError(f"{where}.{unknown[0]}: unknown key; accepted: {', '.join(sorted(known))}")
        config = PrivacyConfig(**value)
    else:
        raise RecipeError(f"{where}: expected a mapping of privacy options, got {value!r}")
    check_privacy_config(config, where)
    return config


def _number(value: Any, key: str, *, optional: bool) -> Optional[float]:
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{key}: required, got null")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"{key}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise RecipeError(f"{key}: must be finite, got {value!r}")
    return float(value)


def check_privacy_config(config: PrivacyConfig, where: str = DEFAULT_WHERE) -> None:
    """RecipeError naming ``{where}.KEY`` for values that are wrong whatever the data.

    What needs the data (δ < 1/n_train, batch size <= n_train, a budget too small to reach) is
    checked by ``make_private``."""
    if not isinstance(config.enabled, bool):
        raise RecipeError(f"{where}.enabled: must be true or false, got {config.enabled!r}")
    if not isinstance(config.secure_mode, bool):
        raise RecipeError(f"{where}.secure_mode: must be true or false, got {config.secure_mode!r}")
    eps = _number(config.target_epsilon, f"{where}.target_epsilon", optional=True)
    if eps is not None and eps <= 0:
        raise RecipeError(f"{where}.target_epsilon: must be > 0, got {config.target_epsilon!r}")
    sigma = _number(config.noise_multiplier, f"{where}.noise_multiplier", optional=True)
    if sigma is not None and not MIN_NOISE_MULTIPLIER <= sigma <= MAX_NOISE_MULTIPLIER:
        raise RecipeError(
            f"{where}.noise_multiplier: must be between {MIN_NOISE_MULTIPLIER} and {MAX_NOISE_MULTIPLIER:g}, "
            f"got {config.noise_multiplier!r} (below {MIN_NOISE_MULTIPLIER} the guarantee is void: ε in the "
            f"hundreds; to train without privacy set {where}.enabled: false)"
        )
    delta = _number(config.delta, f"{where}.delta", optional=True)
    if delta is not None and not 0.0 < delta < 1.0:
        raise RecipeError(f"{where}.delta: must be between 0 and 1 (exclusive; < 1/n_train), got {config.delta!r}")
    clip = _number(config.max_grad_norm, f"{where}.max_grad_norm", optional=False)
    if clip <= 0:
        raise RecipeError(f"{where}.max_grad_norm: must be > 0, got {config.max_grad_norm!r}")
    if config.accountant not in ACCOUNTANTS:
        raise RecipeError(f"{where}.accountant: must be one of {', '.join(ACCOUNTANTS)}, got {config.accountant!r}")
    if not config.enabled:
        return
    if (eps is None) == (sigma is None):
        got = "both" if eps is not None else "neither"
        raise RecipeError(
            f"{where}: set exactly one of target_epsilon (noise calibrated to that budget) and "
            f"noise_multiplier (fixed noise), got {got}; for a fixed noise set "
            f"{where}.target_epsilon: null"
        )
    if config.secure_mode and importlib.util.find_spec("torchcsprng") is None:
        raise RecipeError(
            f"{where}.secure_mode: true needs the torchcsprng package (cryptographically secure "
            f"sampling and noise), which is not installed; install it or set {where}.secure_mode: false"
        )


def resolve_delta(config: PrivacyConfig, n_train: int, where: str = DEFAULT_WHERE) -> float:
    """δ for ``n_train`` training rows: the configured one (checked < 1/n_train) or 1/(10·n_train)."""
    if n_train < 1:
        raise RecipeError(f"{where}: no training rows to train on")
    if config.delta is None:
        return 1.0 / (10.0 * n_train)
    if not config.delta < 1.0 / n_train:
        raise RecipeError(
            f"{where}.delta: must be < 1/n_train = {1.0 / n_train:.3g} for {n_train} training rows "
            f"(a larger δ allows releasing a whole row), got {config.delta!r}; leave it null for "
            f"1/(10·n_train) = {1.0 / (10 * n_train):.3g}"
        )
    return float(config.delta)
