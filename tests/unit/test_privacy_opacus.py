"""Differentially private training (plugins/privacy_opacus.py) on real data: breast cancer (MLP)
and digits (CNN). The modules here mirror plugins.nets (``standardize`` buffers + ``body``)."""
from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.privacy_config import (
    ACCOUNTANTS, PrivacyConfig, check_privacy_config, privacy_config_from, resolve_delta,
)
from plugins.privacy_opacus import epsilon_spent, make_private, privacy_incompatibility

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
from torch import nn  # noqa: E402

BATCH, EPOCHS, LR = 64, 30, 1e-2


class Standardize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    def forward(self, x):
        return (x - self.mean) / self.std


class Net(nn.Module):
    """raw features -> logits: standardize (training mean/std) then ``body``."""

    def __init__(self, x, body: nn.Sequential):
        super().__init__()
        std = x.std(0)
        self.standardize = Standardize(x.mean(0), np.where(std > 1e-6, std, 1.0))  # digits: constant pixels
        self.body = body

    def forward(self, x):
        return self.body(self.standardize(x))


def mlp(x, n_classes=2, hidden=64, dropout=0.1, seed=0):
    torch.manual_seed(seed)
    return Net(x, nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout),
                                nn.Linear(hidden, n_classes)))


def cnn(x, seed=0):
    torch.manual_seed(seed)
    return Net(x, nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)))


def accuracy_loss(module, x, y):
    module.eval()
    with torch.no_grad():
        logits = module(torch.tensor(x))
    return (float((logits.argmax(1).numpy() == y).mean()),
            float(nn.functional.cross_entropy(logits, torch.tensor(y))))


def private_run(module, x, y, config, epochs=EPOCHS, batch=BATCH, seed=0, lr=LR):
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    pt = make_private(module, optimizer, x, y, batch, epochs, config, seed=seed)
    losses = [pt.train_epoch() for _ in range(epochs)]
    return pt, losses


def plain_run(module, x, y, epochs=EPOCHS, batch=BATCH, seed=0, lr=LR):
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
                                         batch_size=batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        module.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(xb), yb).backward()
            optimizer.step()
    return module


@pytest.fixture(scope="module")
def bc():
    splits = breast_cancer_splits()
    return {part: splits.arrays(part) for part in ("train", "val", "test")}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=42)
    return {"train": (xtr, ytr), "test": (xte, yte)}


@pytest.fixture(scope="module")
def eps3(bc):
    """The MLP trained privately at ε=3 (prv, δ=1/(10n)) for the planned 30 epochs."""
    x, y = bc["train"]
    module = mlp(x)
    keys = list(module.state_dict())
    pt, losses = private_run(module, x, y, PrivacyConfig(enabled=True, target_epsilon=3.0))
    return pt, losses, keys


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def test_import_is_cheap():
    code = "import sys, plugins.privacy_opacus; print('torch' in sys.modules, 'opacus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_defaults_valid_and_accountants_exist_in_opacus():
    from opacus.accountants import create_accountant

    check_privacy_config(PrivacyConfig(), "train.privacy")
    check_privacy_config(PrivacyConfig(enabled=True), "train.privacy")
    check_privacy_config(PrivacyConfig(enabled=True, target_epsilon=None, noise_multiplier=1.1), "x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gdp: "experimental, can underestimate" (logged by make_private)
        for name in ACCOUNTANTS:
            assert create_accountant(name).mechanism() == name


@pytest.mark.parametrize("kwargs, message", [
    ({"target_epsilon": 0.0}, "train.privacy.target_epsilon: must be > 0, got 0.0"),
    ({"target_epsilon": -1}, "train.privacy.target_epsilon: must be > 0"),
    ({"target_epsilon": float("inf")}, "train.privacy.target_epsilon: must be finite"),
    ({"target_epsilon": "3"}, "train.privacy.target_epsilon: must be a number"),
    ({"target_epsilon": None, "noise_multiplier": 0.1}, "train.privacy.noise_multiplier: must be between 0.3"),
    ({"delta": 1.0}, "train.privacy.delta: must be between 0 and 1"),
    ({"max_grad_norm": 0}, "train.privacy.max_grad_norm: must be > 0"),
    ({"accountant": "moments"}, "train.privacy.accountant: must be one of prv, rdp, gdp"),
    ({"noise_multiplier": 1.0}, "train.privacy: set exactly one of target_epsilon"),
    ({"target_epsilon": None}, "got neither"),
    ({"secure_mode": True}, "train.privacy.secure_mode: true needs the torchcsprng package"),
    ({"enabled": "yes"}, "train.privacy.enabled: must be true or false"),
])
def test_config_errors_name_the_key(kwargs, message):
    kwargs = {"enabled": True, **kwargs}
    with pytest.raises(RecipeError) as err:
        check_privacy_config(PrivacyConfig(**kwargs), "train.privacy")
    assert message in str(err.value)


def test_disabled_skips_the_exactly_one_rule_but_not_ranges():
    check_privacy_config(PrivacyConfig(enabled=False, noise_multiplier=1.0), "p")
    with pytest.raises(RecipeError, match=r"p\.max_grad_norm"):
        check_privacy_config(PrivacyConfig(enabled=False, max_grad_norm=-1.0), "p")


def test_from_mapping_and_as_nested_recipe_dataclass():
    from dataclasses import dataclass, field

    from omegaconf import OmegaConf

    assert privacy_config_from(None) == PrivacyConfig()
    assert privacy_config_from({"enabled": True, "target_epsilon": 1.0}).target_epsilon == 1.0
    with pytest.raises(RecipeError, match=r"train\.privacy\.epsilon: unknown key"):
        privacy_config_from({"epsilon": 1.0})

    @dataclass
    class TrainerConfig:  # how a trainer's Config embeds it: the planner merges the recipe into it
        privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig),
                                                 {"privacy": {"enabled": True, "target_epsilon": None,
                                                              "noise_multiplier": 0.8}}))
    assert isinstance(merged.privacy, PrivacyConfig) and merged.privacy.noise_multiplier == 0.8
    check_privacy_config(merged.privacy, "train.privacy")


def test_delta_defaults_to_one_tenth_over_n_and_is_checked_against_n(bc):
    x, y = bc["train"]
    n = len(x)
    assert resolve_delta(PrivacyConfig(enabled=True), n) == pytest.approx(1 / (10 * n))
    assert resolve_delta(PrivacyConfig(enabled=True, delta=1e-5), n) == 1e-5
    with pytest.raises(RecipeError, match=rf"train\.privacy\.delta: must be < 1/n_train .* for {n} training rows"):
        make_private(mlp(x), torch.optim.SGD(mlp(x).parameters(), lr=0.1), x, y, BATCH, 1,
                     PrivacyConfig(enabled=True, delta=1 / n))
    module = mlp(x)
    with pytest.raises(RecipeError, match=r"train\.privacy: batch_size must be between 1 and"):
        make_private(module, torch.optim.SGD(module.parameters(), lr=0.1), x, y, len(x) + 1, 1,
                     PrivacyConfig(enabled=True))


def test_unreachable_budget_names_target_epsilon(bc):
    x, y = bc["train"]
    module = mlp(x)
    # one row per batch over 10^4 epochs at ε=1e-4: no noise up to 10^4 is enough
    with pytest.raises(RecipeError, match=r"train\.privacy\.target_epsilon: 0\.0001 cannot be reached"):
        make_private(module, torch.optim.SGD(module.parameters(), lr=0.1), x, y, len(x), 10_000,
                     PrivacyConfig(enabled=True, target_epsilon=1e-4, accountant="rdp"))


# ---------------------------------------------------------------------------------------------
# models opacus cannot train
# ---------------------------------------------------------------------------------------------
def test_batchnorm_refused_with_a_clear_error(bc):
    x, y = bc["train"]
    assert privacy_incompatibility(mlp(x)) == [] and privacy_incompatibility(cnn(np.zeros((4, 64), np.float32))) == []
    torch.manual_seed(0)
    net = Net(x, nn.Sequential(nn.Linear(30, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)))
    with pytest.raises(RecipeError) as err:
        make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, BATCH, 1,
                     PrivacyConfig(enabled=True), where="train.privacy")
    text = str(err.value)
    assert text.startswith("train.privacy: this model cannot be trained with differential privacy")
    assert "body.1 (BatchNorm1d)" in text and "GroupNorm" in text and "train.privacy.enabled: false" in text
    # without affine parameters opacus's own validator lets it through; it still mixes rows
    quiet_bn = Net(x, nn.Sequential(nn.Linear(30, 16), nn.BatchNorm1d(16, affine=False), nn.Linear(16, 2)))
    from opacus.validators import ModuleValidator

    assert ModuleValidator.is_valid(quiet_bn)
    assert any("body.1 (BatchNorm1d)" in r for r in privacy_incompatibility(quiet_bn))
    lstm = nn.Sequential(nn.LSTM(4, 4))
    assert any("0 (LSTM)" in r and "DPLSTM" in r for r in privacy_incompatibility(lstm))


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def test_calibrated_epsilon_reaches_target_and_model_is_useful(eps3, bc):
    pt, losses, _ = eps3
    x, y = bc["train"]
    assert pt.delta == pytest.approx(1 / (10 * len(x)))
    assert pt.steps == pt.planned_steps == EPOCHS * pt.steps_per_epoch
    eps = pt.epsilon()
    assert 0.9 * 3.0 <= eps <= 3.0
    # what the Tune driver recomputes from a trial's reported numbers
    assert epsilon_spent("prv", pt.noise_multiplier, pt.sample_rate, pt.steps, pt.delta) == pytest.approx(eps, rel=1e-6)
    assert epsilon_spent("prv", pt.noise_multiplier, pt.sample_rate, 0, pt.delta) == 0.0
    assert pt.noise_multiplier > 1.0  # real noise, not a formality
    acc, test_loss = accuracy_loss(pt.unwrap(), *bc["test"])
    assert acc >= 0.85
    assert losses[-1] < losses[0]
    # the same architecture, seed and batches without privacy fits the training rows better
    plain = plain_run(mlp(x), x, y)
    assert accuracy_loss(plain, x, y)[1] <= accuracy_loss(pt.unwrap(), x, y)[1]
    summary = pt.summary()
    assert summary["epsilon"] == eps and summary["accountant"] == "prv" and summary["secure_mode"] is False


def test_another_epoch_beyond_the_calibrated_plan_is_refused(eps3):
    pt = eps3[0]
    with pytest.raises(StageError, match="calibrated for 30 epochs"):
        pt.train_epoch()


def test_fixed_noise_epsilon_grows_with_epochs(bc):
    x, y = bc["train"]
    module = mlp(x)
    config = PrivacyConfig(enabled=True, target_epsilon=None, noise_multiplier=1.0, accountant="rdp")
    pt = make_private(module, torch.optim.Adam(module.parameters(), lr=LR), x, y, BATCH, 4, config)
    assert pt.epsilon() == 0.0 and pt.noise_multiplier == 1.0
    spent = []
    for _ in range(4):
        pt.train_epoch()
        spent.append(pt.epsilon())
    assert all(a < b for a, b in zip(spent, spent[1:])), spent
    assert pt.train_epoch()  # fixed noise: no plan to exceed, ε just grows
    assert pt.epsilon() > spent[-1]


def test_state_dict_keys_match_the_original_module(eps3, bc):
    pt, _, keys = eps3
    assert list(pt.state_dict()) == keys
    assert all(k.startswith("_module.") for k in pt.module.state_dict())
    fresh = mlp(bc["train"][0], seed=123)
    fresh.load_state_dict(pt.state_dict())
    xt = torch.tensor(bc["test"][0])
    fresh.eval()
    pt.unwrap().eval()
    with torch.no_grad():
        assert torch.equal(fresh(xt), pt.unwrap()(xt))


def test_exports_to_onnx_with_the_same_logits(eps3, bc, tmp_path):
    import onnxruntime as ort

    pt = eps3[0]
    module = pt.close()  # hooks and per-parameter attributes gone: a plain nn.Module again
    assert not any(vars(p) for p in module.parameters())  # no grad_sample / summed_grad left
    assert not any(m._forward_hooks or m._backward_hooks or "activations" in vars(m) for m in module.modules())
    blob = pickle.dumps(module)
    assert b"GradSample" not in blob and b"opacus." not in blob
    module.eval()
    xt = bc["test"][0]
    path = tmp_path / "private.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.tensor(xt[:2]),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {"x": xt})[0]
    with torch.no_grad():
        torch_logits = module(torch.tensor(xt)).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-5)


def test_same_seed_same_weights_other_seed_differs(bc):
    x, y = bc["train"]
    config = PrivacyConfig(enabled=True, target_epsilon=None, noise_multiplier=1.0, accountant="rdp")
    runs = [private_run(mlp(x, seed=0), x, y, config, epochs=3, seed=seed)[0].state_dict() for seed in (7, 7, 8)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_empty_poisson_batches_take_a_noise_only_step(bc):
    x, y = bc["train"]
    x, y = x[:20], y[:20]
    module = mlp(x, dropout=0.0)
    config = PrivacyConfig(enabled=True, target_epsilon=None, noise_multiplier=1.0, accountant="rdp")
    pt = make_private(module, torch.optim.SGD(module.parameters(), lr=0.1), x, y, 1, 3, config, seed=1)
    assert pt.steps_per_epoch == 20  # each row in each step with probability 1/20: ~36% empty
    losses = [pt.train_epoch() for _ in range(3)]
    assert pt.empty_batches > 0 and all(np.isfinite(losses))
    assert pt.steps == 60  # empty batches are accounted steps too
    assert all(torch.isfinite(v).all() for v in pt.state_dict().values())


def test_cnn_trains_privately_on_digits(digits):
    x, y = digits["train"]
    module = cnn(x)
    keys = list(module.state_dict())
    pt, losses = private_run(module, x, y, PrivacyConfig(enabled=True, target_epsilon=8.0), epochs=8, batch=128,
                             lr=3e-2)
    assert pt.epsilon() <= 8.0 and list(pt.state_dict()) == keys
    acc, _ = accuracy_loss(pt.unwrap(), *digits["test"])
    assert acc >= 0.8, acc
    assert losses[-1] < losses[0]


def test_no_warnings_leak_from_a_private_run(bc):
    x, y = bc["train"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = mlp(x)
        pt = make_private(module, torch.optim.Adam(module.parameters(), lr=LR), x, y, BATCH, 2,
                          PrivacyConfig(enabled=True, target_epsilon=1.0))
        pt.train_epoch()
        pt.epsilon()
        with pt.quiet():  # a trial loop doing its own steps
            for xb, yb in pt.loader:
                pt.optimizer.zero_grad()
                nn.functional.cross_entropy(pt.module(xb), yb).backward()
                pt.optimizer.step()
        pt.epsilon()
    assert [str(w.message)[:80] for w in caught] == []


def test_the_framework_nets_train_privately(bc, digits):
    nets = pytest.importorskip("plugins.nets")
    x, y = bc["train"]
    torch.manual_seed(0)
    tab = nets.TabularMLP(30, 2, hidden=32, layers=2, dropout=0.1, mean=x.mean(0), std=x.std(0))
    xd, yd = digits["train"]
    img = nets.ImageCNN(64, 10, conv_channels=[8], hidden=32, dropout=0.1, mean=xd.mean(0), std=np.where(xd.std(0) > 1e-6, xd.std(0), 1.0))
    for module, (xs, ys) in ((tab, (x, y)), (img, (xd, yd))):
        keys = list(module.state_dict())
        pt, _ = private_run(module, xs, ys, PrivacyConfig(enabled=True, target_epsilon=8.0, accountant="rdp"),
                            epochs=1, batch=128)
        assert list(pt.state_dict()) == keys and 0 < pt.epsilon() <= 8.0
