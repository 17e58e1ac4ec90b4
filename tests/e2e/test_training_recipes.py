"""Training recipes end to end: differentially private training reports ε in the run and the card."""
from __future__ import annotations

import json

import pytest

from framework.plugins import default_components
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def test_private_training_recipe_registers_epsilon_and_its_limits(ray_session, tmp_path):
    pytest.importorskip("opacus")
    plan = plan_recipe(["+recipe=private_training", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        "train.num_samples=1", "train.max_epochs=6", "train.privacy.target_epsilon=1.5"])
    result = execute(plan, default_components(), Reporter(quiet=True))
    train = next(s for s in result.stages if s.stage == "train")
    assert 1.3 <= train.metrics["epsilon"] <= 1.5 and train.metrics["model"] == "mlp"
    registry = Registry(tmp_path / "store")
    version = registry.get("breast_cancer_private@latest", kind="model")
    assert version.metrics["epsilon"] == train.metrics["epsilon"]
    card = json.loads(registry.read_file(version, "model_card.json"))
    assert card["training"]["privacy"]["epsilon"] == train.metrics["epsilon"]
    page = registry.read_file(version, "model_card.md").decode()
    assert "## Privacy" in page and "Not covered: the feature means" in page
