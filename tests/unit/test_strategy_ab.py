"""The `ab` traffic strategy: routing, sticky keys, the anytime-valid and fixed-horizon tests and
the guardrails, without Ray."""
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
    """n answers of arm (outcome, then a label), the first `correct` of them right."""
    for i in range(n):
        s.observe(Outcome(f"{arm}-{start + i}", arm, 5.0, prediction=1 if i < correct else 0))
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
    assert re.match(r"arm challenger beats champion on accuracy: 0\.\d+ vs 0\.\d+, always-valid p=[\d.e-]+ < 0\.05 \(n=\d+ vs \d+\)", d.reason), d.reason
    assert winner["p_value"] < 0.05 and winner["value"] > winner["versus"]["champion"]
    evidence = winner["evidence"]
    assert evidence["statistic"] >= 20 and evidence["alpha"] == 0.05 and evidence["minimum_effect"] == 0.05
    # each stream's own confidence sequence (the verdict rests on their product, so a bound may
    # still include 1 when the e-value already passed)
    assert set(evidence["bound"]) == {"success_rate_ratio", "failure_rate_ratio"}
    assert evidence["bound"]["failure_rate_ratio"][0] < 1.0
    assert s.candidate() == "challenger"
    s.apply(Decision(Verdict.PROMOTE, "operator"))
    assert {s.route(RouteRequest(f"x{i}", key=f"user{i}")) for i in range(200)} == {Route("challenger")}
    json.dumps(s.state())


def test_auto_promote_returns_promote_once_with_weights_and_evidence():
    s = make(min_samples_per_arm=100, auto_promote=True)
    behaviours = {"champion": SimulatedArm(accuracy=0.95), "challenger": SimulatedArm(accuracy=0.75)}
    result = simulate_traffic(s, behaviours, requests=6000, seed=4)
    d = result.final
    assert d is not None and d.verdict is Verdict.PROMOTE
    assert d.reason.startswith("arm champion beats challenger on accuracy")
    assert dict(d.weights) == {"champion": 1.0, "challenger": 0.0}
    assert {"method", "statistic", "p_value", "bound", "samples", "alpha", "minimum_effect"} <= set(d.evidence)
    assert d.evidence["p_value"] < 0.05 and set(d.evidence["samples"]) == set(ARMS)
    json.dumps(d.evidence)
    after = s.decide()
    assert after.verdict is Verdict.HOLD and after.reason.startswith("experiment finished")
    s.apply(d)
    assert {s.route(RouteRequest(f"r{i}")) for i in range(200)} == {Route("champion")}


def test_hold_reports_the_e_value_and_always_valid_p_value():
    s = make(min_samples_per_arm=200)
    labelled(s, "champion", 200, 170)  # 0.850
    labelled(s, "challenger", 200, 176)  # 0.880
    d = s.decide()
    assert d.verdict is Verdict.HOLD
    assert d.reason.startswith("no winner on accuracy yet: challenger 0.88 vs champion 0.85, e-value ")
    assert "the test may be read at any time" in d.reason
    # the same e-value as framework.sequential computes for these counts (equal split)
    from framework import sequential as sq

    mixture = sq.two_arm_mixture(0.5, 0.05)
    log_e = sq.two_arm_bernoulli_log_e(170, 30, 176, 24, 0.5, mixture)
    assert d.evidence["statistic"] == pytest.approx(math.exp(log_e))
    assert d.evidence["p_value"] == pytest.approx(min(1.0, math.exp(-log_e)))


def test_the_verdict_can_come_at_any_feedback_and_the_p_value_never_rises():
    s = make(min_samples_per_arm=20)
    p_values = []
    for i in range(400):
        labelled(s, "champion", 1, int(i % 10 < 7), start=i)  # 0.7
        labelled(s, "challenger", 1, int(i % 10 < 9), start=i)  # 0.9
        d = s.decide()
        if d.evidence and "p_value" in d.evidence:
            p_values.append(d.evidence["p_value"])
        if s.state()["winner"]:
            break
    assert s.state()["winner"]["arm"] == "challenger" and i < 300
    assert all(b <= a for a, b in zip(p_values, p_values[1:]))  # always-valid: a running minimum


def test_equal_arms_are_declared_equivalent_once_the_bounds_are_tight():
    s = make(minimum_effect=0.2, min_samples_per_arm=100)
    for i in range(6000):
        s.feedback(Feedback(f"a{i}", "champion", label=1, prediction=int(i % 5 != 0)))
        s.feedback(Feedback(f"b{i}", "challenger", label=1, prediction=int(i % 5 != 1)))
    d = s.decide()
    assert s.state()["equivalent"] and d.reason.startswith("no effect of 20% or more between the arms")
    assert s.state()["winner"] is None


def test_clicks_metric_counts_a_click_as_a_success():
    s = make(metric="clicks", min_samples_per_arm=2)
    s.feedback(Feedback("a", "champion", clicks=("item-1",)))
    s.feedback(Feedback("b", "champion"))  # answered, not clicked
    s.feedback(Feedback("c", "champion", label=1))  # a label says nothing about clicks
    s.feedback(Feedback("d", "challenger", reward=1.0))
    arms = s.state()["arms"]
    assert (arms["champion"]["feedback"], arms["champion"]["successes"]) == (2, 1)
    assert (arms["challenger"]["feedback"], arms["challenger"]["successes"]) == (1, 1)


def test_reward_metric_uses_the_gaussian_msprt():
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
    variance = a.var(ddof=1) / 50 + b.var(ddof=1) / 50
    tau2 = (0.05 * abs(a.mean())) ** 2  # the minimum effect times the incumbent's mean
    delta = b.mean() - a.mean()
    log_e = 0.5 * math.log(variance / (variance + tau2)) + tau2 * delta**2 / (2 * variance * (variance + tau2))
    assert d.evidence["p_value"] == pytest.approx(min(1.0, math.exp(-log_e)), rel=1e-9)
    assert s.state()["arms"]["challenger"]["feedback"] == 50


def test_three_arms_split_alpha_over_every_pair():
    arms = {"a": "x", "b": "y", "c": "z"}
    s = make(arms=arms, min_samples_per_arm=300)
    labelled(s, "a", 1500, 1200)
    labelled(s, "b", 1500, 1350)
    labelled(s, "c", 1500, 1225)
    d = s.decide()
    assert d.reason.startswith("arm b beats a, c on accuracy: 0.9 vs 0.8, 0.8167")
    assert "alpha 0.0167 per pair of 3" in d.reason
    assert s.state()["winner"]["alpha"] == pytest.approx(0.05 / 3)


def test_fixed_horizon_plans_the_sample_size_and_tests_once():
    from framework import sequential as sq

    s = make(mode="fixed_horizon", baseline=0.8, minimum_effect=0.1, power=0.8)
    planned = sq.sample_size_two_proportions(0.8, 0.88, 0.05, 0.8)
    assert s.state()["planned_per_arm"] == planned
    # the classic formula, by hand
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    bar = 0.84
    expected = math.ceil(((za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(0.8 * 0.2 + 0.88 * 0.12)) / 0.08) ** 2)
    assert planned == expected
    labelled(s, "champion", planned - 1, int(0.8 * planned))
    labelled(s, "challenger", planned - 1, int(0.95 * planned))  # would be significant already
    d = s.decide()
    assert d.reason.startswith(f"fixed horizon: collecting {planned} samples per arm")
    labelled(s, "champion", 1, 1, start=planned)
    labelled(s, "challenger", 1, 1, start=planned)
    d = s.decide()
    assert d.reason.startswith("arm challenger beats champion on accuracy") and f"planned {planned} per arm" in d.reason
    assert d.evidence["planned_per_arm"] == planned


def test_fixed_horizon_without_a_difference_ends_the_experiment():
    s = make(mode="fixed_horizon", baseline=0.8, minimum_effect=0.2)
    n = s.state()["planned_per_arm"]
    labelled(s, "champion", n, int(0.8 * n))
    labelled(s, "challenger", n, int(0.8 * n))
    d = s.decide()
    assert d.verdict is Verdict.HOLD and d.reason.startswith("no significant difference on accuracy at the planned")
    assert s.state()["finished"]


def test_fixed_horizon_needs_a_baseline():
    with pytest.raises(RecipeError, match=r"strategy\.baseline"):
        ABStrategy.check_config(ABConfig(mode="fixed_horizon"), "strategy")
    with pytest.raises(RecipeError, match=r"strategy\.baseline_sd"):
        ABStrategy.check_config(ABConfig(mode="fixed_horizon", metric="reward", baseline=1.0), "strategy")
    with pytest.raises(RecipeError, match=r"strategy\.mode"):
        ABStrategy.check_config(ABConfig(mode="bayesian"), "strategy")
    with pytest.raises(RecipeError, match=r"strategy\.minimum_effect"):
        ABStrategy.check_config(ABConfig(minimum_effect=0.0), "strategy")


# -- guardrails -------------------------------------------------------------------------------
def test_error_rate_guardrail_rolls_back_even_when_the_primary_metric_wins():
    from plugins.strategy_ab import ABGuardrails

    s = make(min_samples_per_arm=50, auto_promote=True, guardrails=ABGuardrails(min_samples=300))
    behaviours = {"champion": SimulatedArm(accuracy=0.8, error_rate=0.01),
                  "challenger": SimulatedArm(accuracy=0.95, error_rate=0.2)}
    reasons = []
    result = simulate_traffic(s, behaviours, requests=6000, seed=5, on_decision=lambda i, d: reasons.append(d.reason))
    d = result.final
    assert d.verdict is Verdict.ROLLBACK and d.arm == "challenger", d
    # the primary metric had already found the challenger better: it waited for the guardrails
    assert any("waiting for the guardrails' minimum samples" in r for r in reasons)
    assert d.reason.startswith("guardrail error_rate breached by arm challenger")
    assert d.evidence["guardrail"] == "error_rate" and set(d.evidence["bound"]) == {"challenger", "champion"}
    lo = d.evidence["bound"]["challenger"][0]
    assert lo > d.evidence["bound"]["champion"][1]
    s.apply(d)
    assert {s.route(RouteRequest(f"r{i}", key=f"u{i}")) for i in range(100)} == {Route("champion")}


def test_latency_guardrail_and_reward_guardrail():
    from plugins.strategy_ab import ABGuardrails

    s = make(guardrails=ABGuardrails(latency_p95_ms_max=20.0))
    slow = {"champion": SimulatedArm(latency_ms=5), "challenger": SimulatedArm(latency_ms=30)}
    d = simulate_traffic(s, slow, requests=3000, seed=1).final
    assert d.verdict is Verdict.ROLLBACK and d.reason.startswith("guardrail latency_p95 breached by arm challenger")

    s = make(guardrails=ABGuardrails(reward_drop_max=0.05))  # accuracy primary, revenue as reward
    poorer = {"champion": SimulatedArm(reward_mean=1.0), "challenger": SimulatedArm(reward_mean=0.7)}
    d = simulate_traffic(s, poorer, requests=3000, seed=2).final
    assert d.verdict is Verdict.ROLLBACK and d.reason.startswith("guardrail reward breached by arm challenger")
    assert d.evidence["samples"]["challenger"]["rewards"] >= 100


def test_healthy_arms_trip_no_guardrail():
    from plugins.strategy_ab import ABGuardrails

    tripped = 0
    for seed in range(20):
        s = make(guardrails=ABGuardrails(latency_p95_ms_max=20.0, reward_drop_max=0.0))
        same = {arm: SimulatedArm(error_rate=0.02, latency_ms=10, reward_mean=1.0) for arm in ARMS}
        result = simulate_traffic(s, same, requests=2000, seed=seed)
        tripped += result.final is not None and result.final.verdict is Verdict.ROLLBACK
    assert tripped <= 2


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
    assert arm["latency_ms"] == {"window": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_no_ray_import():
    code = "import sys, plugins.strategy_ab; print('ray' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
