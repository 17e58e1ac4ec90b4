"""Differentially private training (DP-SGD with Opacus) for the framework's torch trainers.

A trainer that supports ``privacy.enabled`` wraps its module, optimizer and training rows with
``make_private``: Poisson-sampled minibatches, per-sample gradients clipped to ``max_grad_norm``,
Gaussian noise calibrated to ``target_epsilon`` after the planned epochs (or a fixed
``noise_multiplier``), and an accountant that tells the (ε, δ) actually spent.

Importing this module is cheap: torch and opacus are imported inside functions. The recipe's
``train.privacy`` section (``PrivacyConfig``) and its plan-time checks are in
``plugins.privacy_config``; a trainer imports this module only to train with privacy enabled.

What ε covers (say it this way in the README and the model card):
  * (ε, δ) bounds what the trained weights reveal about any single row of the TRAINING split,
    for ONE training run (one Tune trial): rows are Poisson-sampled, per-row gradients clipped,
    noise added; neighbouring datasets differ by one added/removed row (Opacus's accounting).
  * Every iterate is covered, so keeping the best epoch by validation score (early stopping,
    checkpointing) is post-processing. Quote ``epsilon()`` after the LAST step trained, not the
    value at the checkpointed epoch: the choice looked at all epochs up to the stop.
What ε does NOT cover:
  * the ``standardize`` mean/std buffers: computed from the training split without noise and
    shipped in the model and the ONNX file; they reveal per-feature means/stds of training rows;
  * hyperparameter search: all K Tune trials train on the same rows and the released model is
    picked among them by validation score, so the end-to-end guarantee is weaker than one
    trial's ε (basic composition: up to K·ε and K·δ) unless the search itself is made private;
  * the validation and test splits (used without noise for early stopping, trial selection and
    reported metrics), the class list, the feature set, the training set size (it sets the
    sampling rate and the default δ), data checks and monitoring profiles;
  * implementation-level attacks: with ``secure_mode: false`` (the default) the sampling and the
    noise come from torch's seeded pseudo-RNG (reproducible runs) and plain float Gaussian
    sampling. Opacus recommends a final retraining with ``secure_mode: true`` (needs the
    ``torchcsprng`` package, not installed with the framework) for a guarantee against those.
  * ``accountant: gdp`` is Opacus's experimental Gaussian-DP accountant and can underestimate ε;
    ``prv`` (default, tightest) and ``rdp`` are upper bounds.

Warnings (opacus 1.6.0 on torch 2.13): none at import. Silenced locally, in the calls below only:
  * Opacus's "Secure RNG turned off ..." on every PrivacyEngine: secure_mode=False is the
    documented choice above, recorded in ``summary()``, logged once at INFO;
  * torch's "Full backward hook is firing when gradients are computed with respect to module
    outputs since no inputs require gradients" on each backward: harmless (the first layer's
    input is data, which needs no gradient; Opacus hooks every trainable layer). Silenced inside
    ``train_epoch`` and ``quiet()``; a trial loop that calls backward() itself wraps it in
    ``with pt.quiet():``;
  * RDP's "Optimal order is the largest (smallest) alpha": the ε reported is still a valid (looser)
    upper bound;
  * GDP's "experimental ... can underestimate": replaced by one logged warning per
    ``make_private`` (repeated hundreds of times while calibrating otherwise).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
import zlib
from typing import Callable, Optional

from framework.errors import RecipeError, StageError

# the recipe-level configuration and its cheap checks (importable without this module)
from plugins.privacy_config import (
    ACCOUNTANTS, DEFAULT_WHERE, MAX_NOISE_MULTIPLIER, MIN_NOISE_MULTIPLIER, PrivacyConfig, privacy_config_from,
    resolve_delta,
)

log = logging.getLogger(__name__)

_QUIET_MESSAGES = (
    r"Secure RNG turned off",
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
    r"Optimal order is the (largest|smallest) alpha",
    r"GDP accounting is experimental",
)


# ---------------------------------------------------------------------------------------------
# Heavy helpers (torch / opacus imported inside)
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet():
    """Silence, for the block only, the harmless warnings listed in this module's docstring."""
    with warnings.catch_warnings():
        for message in _QUIET_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        yield


def privacy_incompatibility(module) -> list[str]:
    """Why ``module`` cannot be trained with DP-SGD: one line per offending submodule (empty: it can).

    Stricter than Opacus's ModuleValidator, which only looks at submodules with trainable
    parameters: a BatchNorm without affine parameters still mixes the rows of a batch."""
    from opacus.validators import ModuleValidator
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm

    reasons: list[str] = []
    if not any(p.requires_grad for p in module.parameters()):
        reasons.append("the model has no trainable parameters")
    for name, sub in module.named_modules():
        label = f"{name or '<model>'} ({type(sub).__name__})"
        if isinstance(sub, _BatchNorm):
            reasons.append(
                f"{label}: batch normalization makes each row's output (and gradient) depend on the "
                f"other rows of its batch, so per-row clipping bounds nothing; use GroupNorm or LayerNorm"
            )
            continue
        if isinstance(sub, nn.modules.instancenorm._InstanceNorm) and sub.track_running_stats:
            reasons.append(
                f"{label}: track_running_stats keeps running statistics of the training rows outside the "
                f"noisy gradients; set track_running_stats=False"
            )
            continue
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        if validator is not None:
            reasons.extend(f"{label}: {err}" for err in validator(sub))
    return reasons


def _epsilon_of(accountant: str, sigma: float, sample_rate: float, steps: int, delta: float) -> float:
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(sigma), float(sample_rate), int(steps))]
    try:
        with quiet():
            return float(acc.get_epsilon(delta=delta))
    except (ValueError, OverflowError, FloatingPointError):  # gdp / prv fail on tiny noise: ε is huge
        return math.inf


@functools.lru_cache(maxsize=256)
def epsilon_spent(accountant: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε that ``steps`` Poisson-sampled DP-SGD steps at ``sample_rate`` with ``noise_multiplier``
    spend at ``delta`` by ``accountant``: what ``PrivateTraining.epsilon()`` says, computed from
    the numbers a trial reports (for the driver: no module or engine needed). 0 for no steps;
    inf when the accountant cannot bound it (noise far too small)."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; one of {', '.join(ACCOUNTANTS)}")
    if int(steps) <= 0:
        return 0.0
    return _epsilon_of(accountant, float(noise_multiplier), float(sample_rate), int(steps), float(delta))


def _solve_sigma(eps_of: Callable[[float], float], target: float, tol: float, start: float,
                 floor: float, factor: float = 1.5) -> tuple[float, float]:
    """A sigma >= floor with target - tol <= eps_of(sigma) <= target (eps_of decreases in sigma),
    or the floor when even it spends less than the target. Bracketing, then Illinois regula falsi
    on log ε vs log σ (nearly a line): a handful of accountant calls instead of opacus's
    ~20-step bisection."""
    hi = max(start, floor)
    e_hi = eps_of(hi)
    lo, e_lo = None, None
    while e_hi > target:  # too little noise: go up
        lo, e_lo = hi, e_hi
        hi *= factor
        if hi > MAX_NOISE_MULTIPLIER:
            raise OverflowError
        e_hi = eps_of(hi)
    if target - e_hi <= tol:
        return hi, e_hi
    if lo is None:  # go down until the budget is exceeded
        lo = hi
        while True:
            lo = max(floor, lo / factor)
            e_lo = eps_of(lo)
            if e_lo > target:
                break
            hi, e_hi = lo, e_lo
            if target - e_hi <= tol or lo <= floor:
                return hi, e_hi
    aim = target - tol / 2
    tl, th = math.log(lo), math.log(hi)
    gl = min(math.log(e_lo / aim), 50.0)
    gh = math.log(e_hi / aim)
    side = 0
    for _ in range(60):
        t = th - gh * (th - tl) / (gh - gl)
        t = min(max(t, tl + 1e-4 * (th - tl)), th - 1e-4 * (th - tl))
        s = math.exp(t)
        e = eps_of(s)
        g = min(math.log(e / aim), 50.0) if e > 0 else -50.0
        if e > target:
            tl, gl = t, g
            if side == -1:
                gh /= 2
            side = -1
        else:
            th, gh, hi, e_hi = t, g, s, e
            if target - e <= tol:
                break
            if side == 1:
                gl /= 2
            side = 1
        if th - tl < 1e-7:
            break
    return hi, e_hi


@functools.lru_cache(maxsize=64)
def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "prv", rel_tol: float = 0.01) -> float:
    """Noise multiplier with which ``steps`` Poisson-sampled steps at ``sample_rate`` spend ε in
    [target·(1 - rel_tol), target] at ``delta`` by ``accountant`` (σ never below
    MIN_NOISE_MULTIPLIER: a very loose target then spends less). OverflowError when no σ up to
    MAX_NOISE_MULTIPLIER is enough."""
    tol = max(1e-3, rel_tol * target_epsilon)
    # rdp is cheap (~0.02 s a call) and its bound is looser than prv's: its σ is a close upper
    # start for prv (0.1-0.8 s a call), which then only refines
    sigma, _ = _solve_sigma(lambda s: _epsilon_of("rdp", s, sample_rate, steps, delta),
                            target_epsilon, tol, 1.0, MIN_NOISE_MULTIPLIER)
    if accountant != "rdp":
        sigma, _ = _solve_sigma(lambda s: _epsilon_of(accountant, s, sample_rate, steps, delta),
                                target_epsilon, tol, sigma, MIN_NOISE_MULTIPLIER, factor=1.15)
    return float(sigma)


def _seed_of(seed: int, purpose: str) -> int:
    return zlib.crc32(f"{int(seed)}:{purpose}".encode())


def make_private(module, optimizer, x_train, y_train, batch_size: int, epochs: int,
                 config: PrivacyConfig, seed: int = 0, where: str = DEFAULT_WHERE) -> "PrivateTraining":
    """Wrap ``module`` (raw features -> logits) and its ``optimizer`` (built on
    ``module.parameters()``) for DP-SGD over the training rows ``x_train`` / ``y_train``.

    ``batch_size`` is the EXPECTED Poisson batch size (each row is in each step with probability
    1 / ceil(n / batch_size)); ``epochs`` the planned maximum (the noise is calibrated for it when
    ``config.target_epsilon`` is set; stopping earlier spends less). ``seed`` fixes the sampling
    and the noise (unless secure_mode); weight init and dropout use torch's global RNG: seed it
    (``torch.manual_seed``) before building the module, as the trial already does.

    RecipeError (naming ``{where}.KEY``) for settings the data makes impossible or a module that
    cannot be trained privately."""
    import numpy as np
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    config = privacy_config_from(config, where)
    if not config.enabled:
        raise RecipeError(f"{where}.enabled: make_private called with privacy disabled")
    reasons = privacy_incompatibility(module)
    if reasons:
        raise RecipeError(
            f"{where}: this model cannot be trained with differential privacy: " + "; ".join(reasons)
            + f". Change the architecture or set {where}.enabled: false"
        )
    x = torch.tensor(np.asarray(x_train, dtype=np.float32))
    y = torch.tensor(np.asarray(y_train, dtype=np.int64))
    n = int(x.shape[0])
    if y.shape[0] != n:
        raise ValueError(f"x_train has {n} rows but y_train {y.shape[0]}")
    delta = resolve_delta(config, n, where)
    if not 1 <= int(batch_size) <= n:
        raise RecipeError(f"{where}: batch_size must be between 1 and the {n} training rows, got {batch_size}")
    if int(epochs) < 1:
        raise RecipeError(f"{where}: epochs must be >= 1, got {epochs}")

    with quiet():
        engine = PrivacyEngine(accountant=config.accountant, secure_mode=config.secure_mode)
    if not config.secure_mode:
        log.info("%s: secure_mode is off: seeded pseudo-random sampling and noise (reproducible; "
                 "not hardened against floating-point attacks)", where)
    if config.accountant == "gdp":
        log.warning("%s.accountant: gdp is experimental in Opacus and can underestimate ε; "
                    "prv or rdp give upper bounds", where)
    loader_rng = None if config.secure_mode else torch.Generator().manual_seed(_seed_of(seed, "sampling"))
    noise_rng = None if config.secure_mode else torch.Generator().manual_seed(_seed_of(seed, "noise"))
    plain = DataLoader(TensorDataset(x, y), batch_size=int(batch_size), shuffle=False, generator=loader_rng)
    # opacus samples each row with probability 1 / len(plain) per step, len(plain) steps an epoch
    sample_rate = 1.0 / len(plain)
    steps_per_epoch = int(1 / sample_rate)
    if config.target_epsilon is not None:
        try:
            sigma = calibrate_noise(float(config.target_epsilon), delta, sample_rate,
                                    steps_per_epoch * int(epochs), config.accountant)
        except OverflowError:
            raise RecipeError(
                f"{where}.target_epsilon: {config.target_epsilon} cannot be reached in {epochs} epochs of "
                f"{steps_per_epoch} steps at δ={delta:.3g} (noise multiplier > {MAX_NOISE_MULTIPLIER:g}); "
                f"raise it, or train fewer epochs / with larger batches"
            ) from None
    else:
        sigma = float(config.noise_multiplier)

    module.train()
    with quiet():
        wrapped, dp_optimizer, dp_loader = engine.make_private(
            module=module, optimizer=optimizer, data_loader=plain, noise_multiplier=sigma,
            max_grad_norm=float(config.max_grad_norm), poisson_sampling=True, noise_generator=noise_rng,
        )
    return PrivateTraining(engine, wrapped, dp_optimizer, dp_loader, module, config=config, delta=delta,
                           noise_multiplier=sigma, epochs=int(epochs), n_train=n, where=where)


class PrivateTraining:
    """One private training run: train ``module`` with ``optimizer`` on minibatches of ``loader``.

    ``module`` is Opacus's GradSampleModule (its state_dict keys start with ``_module.``);
    ``unwrap()`` / ``state_dict()`` give the original module / its keys."""

    def __init__(self, engine, module, optimizer, loader, original, *, config: PrivacyConfig, delta: float,
                 noise_multiplier: float, epochs: int, n_train: int, where: str):
        self.engine = engine
        self.module = module
        self.optimizer = optimizer
        self.loader = loader
        self.original = original
        self.config = config
        self.delta = float(delta)
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(config.max_grad_norm)
        self.accountant = config.accountant
        self.sample_rate = float(loader.sample_rate)
        self.steps_per_epoch = len(loader)
        self.planned_epochs = int(epochs)
        self.planned_steps = self.steps_per_epoch * self.planned_epochs
        self.n_train = int(n_train)
        self.where = where
        self.empty_batches = 0
        self._closed = False
        self._eps_cache: dict[tuple[int, float], float] = {}

    @property
    def expected_batch_size(self) -> float:
        return self.n_train * self.sample_rate

    @property
    def steps(self) -> int:
        """Noisy steps taken so far (what the accountant has counted)."""
        return int(sum(h[2] for h in self.engine.accountant.history))

    def epsilon(self, delta: Optional[float] = None) -> float:
        """ε spent so far at ``delta`` (default: the run's δ). 0.1-1 s with prv: call it per epoch
        at most, and quote the value after the last step."""
        delta = self.delta if delta is None else float(delta)
        key = (self.steps, delta)
        if key not in self._eps_cache:
            if key[0] == 0:
                self._eps_cache[key] = 0.0
            else:
                with quiet():
                    self._eps_cache[key] = float(self.engine.get_epsilon(delta))
        return self._eps_cache[key]

    def quiet(self):
        """Context manager silencing the harmless per-backward warnings (see module docstring)."""
        return quiet()

    def train_epoch(self, loss_fn: Optional[Callable] = None) -> float:
        """One pass over ``loader`` (``steps_per_epoch`` noisy steps); the mean training loss per
        row (nan if every batch was empty). ``loss_fn(logits, y)`` must average over the batch
        (default: cross-entropy). Empty Poisson batches still take their noise-only step: the
        accounting assumes every step is released."""
        import torch

        if self._closed:
            raise StageError(f"{self.where}: train_epoch after close()")
        if self.config.target_epsilon is not None and self.steps + self.steps_per_epoch > self.planned_steps:
            raise StageError(
                f"{self.where}: the noise was calibrated for {self.planned_epochs} epochs "
                f"(ε={self.config.target_epsilon}); another epoch would spend more: pass the trial's "
                f"max epochs to make_private"
            )
        loss_fn = loss_fn or torch.nn.functional.cross_entropy
        self.module.train()
        total, rows = 0.0, 0
        with quiet():
            for xb, yb in self.loader:
                self.optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self.module(xb), yb)
                loss.backward()  # an empty batch: nan loss, empty per-sample grads, noise-only step
                self.optimizer.step()
                if len(yb):
                    total += float(loss.detach()) * len(yb)
                    rows += len(yb)
                else:
                    self.empty_batches += 1
        return total / rows if rows else math.nan

    def unwrap(self):
        """The original module (same object, trained in place; Opacus hooks stay attached and
        are inert in eval mode / under no_grad until ``close()``)."""
        return self.original

    def state_dict(self) -> dict:
        """A detached copy of the original module's state_dict (same keys as before wrapping)."""
        return {k: v.detach().clone() for k, v in self.original.state_dict().items()}

    def close(self):
        """Remove Opacus's hooks and what it left on the module (per-layer ``activations``,
        per-parameter ``grad_sample`` / ``summed_grad`` / counters, ``.grad``); returns the plain
        original module, which pickles without opacus. No training after this."""
        if not self._closed:
            self.module.to_standard_module()  # hooks + grad_sample, _forward_counter, ...
            for sub in self.original.modules():
                if isinstance(sub.__dict__.get("activations"), list):
                    del sub.activations
            for p in self.original.parameters():
                for attr in ("summed_grad", "_processed", "grad_sample", "_forward_counter"):
                    if attr in p.__dict__:
                        delattr(p, attr)
                p.grad = None
            self._closed = True
        return self.original

    def summary(self) -> dict:
        """Plain values for metrics / the model card."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "target_epsilon": self.config.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.expected_batch_size,
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "empty_batches": self.empty_batches,
            "n_train": self.n_train,
            "secure_mode": self.config.secure_mode,
        }
