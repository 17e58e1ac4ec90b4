"""The news-feed recipe end to end: train, serve, score the recently seen users with Ray Data,
store the prediction table (tied to the model and data versions), load it into the running app,
and look up users sampled from everyone: the recent ones from the table, the others online."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from framework.plugins import default_components
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.timeout(600)]

CSV = Path(__file__).resolve().parents[2] / "recipes" / "data" / "feed_users.csv"


def test_news_feed_precomputes_recent_users_and_serves_the_others_online(ray_session, serve_port, tmp_path):
    plan = plan_recipe(["+recipe=news_feed", f"data.path={CSV}", f"store.uri={tmp_path / 'store'}",
                        f"runs_dir={tmp_path / 'runs'}", f"serve.port={serve_port}", "train.max_epochs=5",
                        "train.num_samples=1", "serve.keep_serving=false"])
    result = execute(plan, default_components(), Reporter(quiet=True), keep_serving=False)
    batch = next(s for s in result.stages if s.stage == "batch")
    assert batch.status == "ok", batch
    m = batch.metrics
    users = pd.read_csv(CSV)
    recent = users[users["last_seen_days"] <= 3]
    assert m["rows"] == len(recent)
    # users sampled from everyone: about the recent share comes from the table, the rest online
    assert m["lookup_requests"] == 300 and m["lookup_not_found"] == 0
    assert m["lookup_online"] + round(m["hit_rate"] * 300) == 300
    assert abs(m["hit_rate"] - len(recent) / len(users)) < 0.12
    assert m["stale_share"] == 0.0 and m["age_p50_s"] < 600

    registry = Registry(tmp_path / "store")
    table = registry.get(m["prediction_table"], kind="prediction")
    assert table.lineage["model_version"] == m["table_model_version"]
    assert table.lineage["data_version"] == m["table_data_version"] and "last_seen_days <= 3" in table.lineage["rows"]
    stored = registry.load_predictions(table)
    assert sorted(stored["key"]) == sorted(recent["user_id"])  # keyed by the data's own key column
    assert set(stored["prediction"]) <= {"sports", "politics", "tech"}
