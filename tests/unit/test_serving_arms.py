"""ArmPool and RecordBuffer without Ray: in-process arms, faults, shadows, explanations, records."""
from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from framework.components import FeatureSpec, InputSchema, Outcome, Route
from framework.errors import RequestError, ServingError
from framework.serving.arms import ArmFailure, ArmPool
from framework.serving.records import RecordBuffer
from framework.serving.types import RECORD_FIELDS, ServedModel

FEATURES = ["a", "b", "c"]


def linear_softmax(seed: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "linear_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def served(arm: str, seed: int, baseline=None) -> ServedModel:
    schema = InputSchema([FeatureSpec(n) for n in FEATURES])
    return ServedModel(arm, f"v-{arm}", linear_softmax(seed), schema, ["no", "yes"], "input", "probabilities",
                       baseline=baseline)


@pytest.fixture
def outcomes() -> list[Outcome]:
    return []


def pool(outcomes, **kwargs) -> ArmPool:
    models = [served("one", 0, baseline=[0.0, 0.0, 0.0]), served("two", 1)]
    return ArmPool(models, outcomes.append, **kwargs)


X = np.asarray([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]], dtype=np.float32)


def test_the_arms_module_imports_neither_ray_nor_starlette():
    import subprocess

    code = ("import sys, framework.serving.arms, framework.serving.ledger, framework.serving.records; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'starlette')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_construction_validates(outcomes):
    with pytest.raises(ServingError, match="serve.faults.nope: no such arm"):
        pool(outcomes, faults={"nope": {"error_rate": 1.0}})
    with pytest.raises(ServingError, match=r"no deployment handle for arm\(s\) \['two'\]"):
        pool(outcomes, handles={"one": object()})
    with pytest.raises(ServingError, match="serve.rank_class"):
        pool(outcomes, rank_class="maybe")


def test_primary_answers_labels_and_rankings(outcomes):
    arms = pool(outcomes, rank_class="no")
    p = asyncio.run(arms.run_primary("one", X, "rid", 0.0))
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1.0)
    assert arms.labeler["one"](p) == [["no", "yes"][i] for i in p.argmax(axis=1)]
    expected = ["i0", "i1"] if p[0, 0] >= p[1, 0] else ["i1", "i0"]
    assert arms.ranking("one", p, ["i0", "i1"]) == expected
    assert outcomes == []  # a primary's success is observed by the caller, with its own latency


def test_an_injected_fault_fails_the_primary_and_is_observed(outcomes):
    arms = pool(outcomes, faults={"two": {"error_rate": 1.0, "extra_latency_ms": 0.0, "seed": 0}})
    with pytest.raises(ArmFailure, match="injected fault in arm 'two'"):
        asyncio.run(arms.run_primary("two", X, "rid", 0.0))
    assert [(o.arm, o.error) for o in outcomes] == [("two", True)]
    assert arms.fault_settings() == {"two": {"error_rate": 1.0, "extra_latency_ms": 0.0}}


def test_merged_routes_run_every_arm_and_keep_the_ones_that_answered(outcomes):
    arms = pool(outcomes, faults={"two": {"error_rate": 1.0}})
    assert arms.merge_arms(Route("one", ("two", "ghost", "one", "two"), merge=True)) == ["one", "two"]
    answered, failure = asyncio.run(arms.run_all(["one", "two"], X, "rid"))
    assert list(answered) == ["one"] and failure is None
    assert {(o.arm, o.error) for o in outcomes} == {("one", False), ("two", True)}


def test_shadows_run_in_the_background_and_are_counted(outcomes):
    arms = pool(outcomes)

    async def serve_one():
        arms.spawn_shadows(("one", "two", "ghost"), "one", X, "rid", None)  # the primary and unknown arms dropped
        assert outcomes == [] and arms.shadow_summary()["running"] == 1  # the answer leaves first
        while arms.shadow_summary()["running"]:
            await asyncio.sleep(0.001)

    asyncio.run(serve_one())
    expected = arms.labeler["two"](asyncio.run(arms.call("two", X)))
    assert [(o.arm, o.error, o.prediction) for o in outcomes] == [("two", False, expected)]
    assert arms.shadow_summary() == {"started": 1, "skipped": 0, "errors": 0, "running": 0}


def test_explanations_need_a_baseline_and_a_bounded_size(outcomes):
    arms = pool(outcomes)
    with pytest.raises(RequestError) as info:
        arms.check_explainable(["one", "two"], X.shape)
    assert info.value.status == 409 and "without training means" in info.value.reason
    with pytest.raises(RequestError) as info:
        arms.check_explainable(["one"], (20_000, 3))
    assert info.value.status == 413
    top = asyncio.run(arms.explain("one", X))
    assert len(top) == 2 and all(f in FEATURES for f, _ in top[0])


def test_record_buffer_keeps_the_latest_rows_as_columns():
    records = RecordBuffer(FEATURES, capacity=3)
    assert records.columns() == {**{f: [] for f in FEATURES}, **{k: [] for k in RECORD_FIELDS}}
    records.append([[1, 2, 3], [4, 5, 6]], ["no", "yes"], "v1", "one", 1.5, "r1")
    records.append([[7, 8, 9], [10, 11, 12]], ["yes", "yes"], "v2", "two", 2.5, "r2")
    columns = records.columns()
    assert columns["a"] == [4, 7, 10] and columns["c"] == [6, 9, 12]
    assert columns["prediction"] == ["yes", "yes", "yes"] and columns["request_id"] == ["r1", "r2", "r2"]
    assert columns["model_version"] == ["v1", "v2", "v2"] and columns["latency_ms"] == [1.5, 2.5, 2.5]
    assert list(columns)[:3] == FEATURES and all(isinstance(t, float) for t in columns["timestamp"])
