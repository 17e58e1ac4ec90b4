"""Gate declarations are validated before anything runs."""
import pytest

from framework.errors import RecipeError
from framework.run import plan_recipe


def test_gate_stage_only_when_gates_are_declared():
    assert not plan_recipe(["+recipe=quickstart"]).enabled("gate")
    plan = plan_recipe(["+recipe=quickstart", "+gates.thresholds.accuracy.min=0.9"])
    assert plan.enabled("gate") and plan.recipe.gates.thresholds["accuracy"].min == 0.9


@pytest.mark.parametrize("override, message", [
    ("+gates.thresholds.accuracy.mn=0.9", "gates.thresholds.accuracy.mn: unknown key"),
    ("+gates.thresholds.accuracy.min=high", "gates.thresholds.accuracy.min: wrong type"),
    ("+gates.thresholds.accuracy={}", "gates.thresholds.accuracy: give a min, a max or both"),
    ("gates.champion.metric=auc", "gates.champion.metric: use accuracy, f1_macro or log_loss"),
    ("gates.champion.ref=this_run", "gates.champion.ref: 'this_run' is not a registry reference"),
])
def test_bad_gate_declarations_name_the_key(override, message):
    with pytest.raises(RecipeError) as info:
        plan_recipe(["+recipe=quickstart", override])
    assert str(info.value).startswith(message), str(info.value)
