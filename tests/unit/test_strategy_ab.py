"""The `ab` traffic strategy: routing, sticky keys and the significance tests, without Ray."""
from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
import sys

import pytest
from scipy import stats

from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.testing import SimulatedArm, simulate_traffic
from plugins import strategy_ab
from plugins.strategy_ab import ABConfig, ABStrategy

ARMS = {"champion": "m@champion", "challenger": "m:v2"}


def make(arms=ARMS, **kwargs) -> ABStrategy:
    return ABStrategy(ABConfig(**kwargs), arms=arms)


def labelled(s: ABStrategy, arm: str, n: int, correct: int, start: int = 0) -> None:
    """n labelled answers of arm, the first `correct` of them right."""
    for i in range(n):
        s.feedback(Feedback(f"{arm}-{start + i}", arm, label=1, prediction=1 if i < correct else 0))


def test_registered_through_the_hook():
    assert strategy_ab.register_traffic_strategies() == [ABStrategy]
    assert issubclass(ABStrategy, TrafficStrategy) and ABStrategy.name == "ab"


def test_arm_and_config_validation_name_the_recipe_keys():
    with pytest.raises(RecipeError, match="serve.models"):
        ABStrategy.arm_names(ABConfig(), {"only": "x"})
    with pytest.raises(RecipeError, match="strategy.weights") as info:
        ABStrategy.arm_names(ABConfig(weights={"champion": 1.0, "ghost": 1.0}), ARMS)
    assert "ghost" in str(info.value) and "serve.models" in str(info.value)
    with pytest.raises(RecipeError, match="strategy.weights"):
        ABStrategy.arm_names(ABConfig(weights={"champion": 0.0, "challenger": 0.0}), ARMS)
    with pytest.raises(RecipeError, match="strategy.weights"):
        ABStrategy.arm_names(ABConfig(weights={"champion": 1.0}), ARMS)  # one live arm: no test
    with pytest.raises(RecipeError, match=r"strategy\.metric"):
        ABStrategy.check_config(ABConfig(metric="ctr"), "strategy")
    with pytest.raises(RecipeError, match=r"strategy\.alpha"):
        ABStrategy.check_config(ABConfig(alpha=0.0), "strategy")
    with pytest.raises(RecipeError, match=r"strategy\.weights"):
        ABStrategy.check_config(ABConfig(weights={"champion": -1.0}), "strategy")
    three = {"a": "x", "b": "y", "c": "z"}
    assert list(ABStrategy.arm_names(ABConfig(weights={"a": 1, "c": 3}), three)) == ["a", "c"]


@pytest.mark.parametrize("weights", [{}, {"champion": 0.8, "challenger": 0.2}, {"champion": 3, "challenger": 1}])
def test_weights_are_respected(weights):
    s = make(weights=weights)
    total = sum(weights.values()) if weights else 2
    expected = {a: (weights[a] / total if weights else 0.5) for a in ARMS}
    n = 20_000
    counts = {a: 0 for a in ARMS}
    for i in range(n):
        counts[s.route(RouteRequest(f"r{i}", key=f"user{i}")).primary] += 1
    for arm in ARMS:
        assert abs(counts[arm] / n - expected[arm]) < 0.015, counts
    assert s.state()["weights"] == pytest.approx(expected)


def test_sticky_key_always_reaches_the_same_arm_across_replicas_and_seeds():
    s, replica = make(), pickle.loads(pickle.dumps(make()))
    for u in range(300):
        arms = {s.route(RouteRequest(f"req{u}-{j}", key=f"user{u}")).primary for j in range(10)}
        assert len(arms) == 1
        assert replica.route(RouteRequest("other", key=f"user{u}")).primary in arms
    reseeded = make(seed=1)
    moved = sum(
        s.route(RouteRequest("r", key=f"user{u}")) != reseeded.route(RouteRequest("r", key=f"user{u}")) for u in range(1000)
    )
    assert 400 < moved < 600  # a new seed reshuffles about half the users between two equal arms


def test_no_key_falls_back_to_the_request_id():
    s = make()
    assert s.route(RouteRequest("abc")) == s.route(RouteRequest("xyz", key="abc"))


def test_needs_more_samples_with_few():
    s = make(min_samples_per_arm=100)
    labelled(s, "champion", 100, 80)
    labelled(s, "challenger", 37, 35)
    d = s.decide()
    assert d.verdict is Verdict.HOLD
    assert d.reason.startswith("need 63 more samples for arm challenger")
    assert s.state()["winner"] is None


def test_finds_the_better_arm_with_simulated_traffic():
    s = make(min_samples_per_arm=100)
    behaviours = {"champion": SimulatedArm(accuracy=0.80), "challenger": SimulatedArm(accuracy=0.90)}
    reasons = []
    simulate_traffic(s, behaviours, requests=6000, seed=3, users=5000, on_decision=lambda i, d: reasons.append(d.reason))
    assert any(r.startswith("need ") for r in reasons)  # early on
    winner = s.state()["winner"]
    assert winner is not None and winner["arm"] == "challenger"
    d = s.decide()
    assert d.verdict is Verdict.HOLD  # auto_promote is off: an operator promotes
    assert re.match(r"arm challenger beats champion on accuracy: 0\.\d{3} vs 0\.\d{3}, p=[\d.e-]+ \(n=\d+ vs \d+\)", d.reason), d.reason
    assert winner["p_value"] < 0.05 and winner["value"] > winner["versus"]["champion"]
    assert s.candidate() == "challenger"
    s.apply(Decision(Verdict.PROMOTE, "operator"))
    assert {s.route(RouteRequest(f"x{i}", key=f"user{i}")) for i in range(200)} == {Route("challenger")}
    json.dumps(s.state())


def test_auto_promote_returns_promote_once_with_weights():
    s = make(min_samples_per_arm=100, auto_promote=True)
    behaviours = {"champion": SimulatedArm(accuracy=0.95), "challenger": SimulatedArm(accuracy=0.75)}
    result = simulate_traffic(s, behaviours, requests=6000, seed=4)
    d = result.final
    assert d is not None and d.verdict is Verdict.PROMOTE
    assert d.reason.startswith("arm champion beats challenger on accuracy")
    assert dict(d.weights) == {"champion": 1.0, "challenger": 0.0}
    after = s.decide()
    assert after.verdict is Verdict.HOLD and after.reason.startswith("experiment finished")
    s.apply(d)
    assert {s.route(RouteRequest(f"r{i}")) for i in range(200)} == {Route("champion")}


def test_no_difference_reports_p_value_and_power_sample_size():
    s = make(min_samples_per_arm=200)
    labelled(s, "champion", 200, 170)  # 0.850
    labelled(s, "challenger", 200, 176)  # 0.880
    d = s.decide()
    assert d.verdict is Verdict.HOLD
    # pooled two-proportion z-test, as scipy would compute it
    p_pool = 346 / 400
    z = (0.88 - 0.85) / math.sqrt(p_pool * (1 - p_pool) * 2 / 200)
    p = 2 * stats.norm.sf(z)
    assert f"p={p:.3g}" in d.reason
    # 80 % power at the observed effect (two-sided 5 %), the classic two-proportion formula
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    bar = 0.865
    n = math.ceil(((za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(0.85 * 0.15 + 0.88 * 0.12)) / 0.03) ** 2)
    assert f"~{n} samples per arm needed for 80% power" in d.reason, d.reason
    assert d.reason.startswith("no significant difference on accuracy yet (look 1)")
    assert "next look at 400 per arm" in d.reason


def test_tests_only_at_looks():
    s = make(min_samples_per_arm=100)
    labelled(s, "champion", 100, 85)
    labelled(s, "challenger", 100, 86)
    first = s.decide()
    labelled(s, "challenger", 50, 50, start=100)  # would be significant now, but it is no look yet
    assert s.decide().reason == first.reason
    labelled(s, "champion", 100, 85, start=100)
    labelled(s, "challenger", 50, 50, start=150)  # both arms at 200: look 2
    assert s.decide().reason.startswith("arm challenger beats champion")


def test_reward_metric_uses_welch_t_test():
    s = make(metric="reward", min_samples_per_arm=50)
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.5, 50)
    b = rng.normal(1.3, 1.5, 50)
    for i, (x, y) in enumerate(zip(a, b)):
        s.feedback(Feedback(f"a{i}", "champion", reward=float(x)))
        s.feedback(Feedback(f"b{i}", "challenger", reward=float(y)))
    s.feedback(Feedback("nan", "challenger", reward=float("nan")))  # ignored
    s.feedback(Feedback("none", "challenger"))  # ignored
    d = s.decide()
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert f"p={expected:.3g}" in d.reason, d.reason
    assert s.state()["arms"]["challenger"]["feedback"] == 50


def test_three_arms_are_bonferroni_corrected():
    arms = {"a": "x", "b": "y", "c": "z"}
    s = make(arms=arms, min_samples_per_arm=300)
    labelled(s, "a", 300, 240)
    labelled(s, "b", 300, 270)
    labelled(s, "c", 300, 245)
    d = s.decide()
    assert d.reason.startswith("arm b beats a, c on accuracy: 0.900 vs 0.800, 0.817")
    assert "Bonferroni alpha 0.025" in d.reason
    assert s.state()["winner"]["alpha"] == 0.025


def test_set_weights_and_operator_rollback():
    s = make()
    s.set_weights({"champion": 1, "challenger": 9})
    assert s.state()["weights"] == pytest.approx({"champion": 0.1, "challenger": 0.9})
    with pytest.raises(ValueError, match="ghost"):
        s.set_weights({"ghost": 1.0})
    with pytest.raises(ValueError):
        s.set_weights({"champion": -1.0, "challenger": 2.0})
    s.apply(Decision(Verdict.ROLLBACK, "bad reviews"))
    assert {s.route(RouteRequest(f"r{i}", key=str(i))) for i in range(100)} == {Route("champion")}
    assert s.decide().reason.startswith("experiment finished: rolled back to champion")


def test_latency_and_errors_per_arm():
    s = make()
    for i in range(1, 101):
        s.observe(Outcome(f"r{i}", "challenger", float(i)))
    s.observe(Outcome("x", "challenger", 1.0, error=True))
    arm = s.state()["arms"]["challenger"]
    assert arm["requests"] == 101 and arm["errors"] == 1
    assert arm["latency_ms"] == {"window": 100, "p50": 50.0, "p99": 99.0}


def test_no_ray_import():
    code = "import sys, plugins.strategy_ab; print('ray' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
