"""What ACME's components do, beyond the kits: the shipped recipe plans, the source reads the
sample, the strategy splits exactly, the monitor alerts on a shifted class mix."""
from __future__ import annotations

from framework import Decision, RouteRequest, Verdict
from framework.testing import served_window
from framework.testing.data import breast_cancer_splits

from acme_plugins.class_share import ClassShareMonitor
from acme_plugins.jsonl_source import JsonLinesSource
from acme_plugins.round_robin import RoundRobinStrategy


def test_the_shipped_recipe_plans_with_every_acme_component():
    from framework.run import plan_recipe

    plan = plan_recipe(["+recipe=acme_widgets"])
    assert plan.recipe_path.name == "acme_widgets.yaml"
    assert plan.stage("data").component.type == "acme_jsonl"
    assert plan.stage("serve").component.type == "acme_round_robin"
    assert [c.type for c in plan.stage("monitor").components] == ["acme_class_share"]
    assert plan.stage("data").component.plugin == "acme_jsonl"


def test_sample_table_loads_with_numeric_features_only():
    dataset = JsonLinesSource().load(None)
    assert len(dataset.frame) == 600 and dataset.classes == ["ok", "rework", "scrap"]
    assert "widget_id" not in dataset.features and len(dataset.features) == 6


def test_round_robin_splits_exactly_by_weight():
    s = RoundRobinStrategy(RoundRobinStrategy.Config(weights={"a": 3, "b": 1}), arms={"a": "m:1", "b": "m:2"})
    served = [s.route(RouteRequest(f"r{i}")).primary for i in range(8)]
    assert served.count("a") == 6 and served.count("b") == 2
    assert s.choose(RouteRequest("x")) == s.choose(RouteRequest("y"))  # choose() moves nothing


def test_round_robin_rollback_names_the_candidate():
    from framework import Outcome

    s = RoundRobinStrategy(RoundRobinStrategy.Config(min_requests=10), arms={"old": "m:1", "new": "m:2"})
    for i in range(10):
        s.observe(Outcome(f"r{i}", "new", 1.0, error=i % 2 == 0))
    decision = s.decide()
    assert (decision.verdict, decision.arm) == (Verdict.ROLLBACK, "new")
    s.apply(decision)
    assert s.route(RouteRequest("after")).primary == "old"
    assert s.decide().verdict is Verdict.HOLD and isinstance(s.decide(), Decision)


def test_class_share_alerts_only_beyond_max_shift():
    reference = breast_cancer_splits()
    rows = reference.test
    truth = served_window(rows, reference.dataset.features, rows["diagnosis"].tolist())
    quiet = ClassShareMonitor(ClassShareMonitor.Config(max_shift=0.1)).evaluate(truth, reference, None)
    assert quiet.alerts == [] and quiet.metrics["largest_shift"] < 0.1
    skewed = served_window(rows, reference.dataset.features, ["benign"] * len(rows))
    loud = ClassShareMonitor(ClassShareMonitor.Config(max_shift=0.1)).evaluate(skewed, reference, None)
    assert len(loud.alerts) == 2 and "class 'benign'" in loud.alerts[0]
