"""The offline evaluator: replay, IPS, SNIPS and DR of any strategy on a logged file, tested on
synthetic logs with a known answer and on real logged clicks (the Open Bandit Dataset sample
that ships in the obp wheel; read as a file, obp is never imported)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from framework.errors import RecipeError
from framework.offline_eval import (
    evaluate,
    log_from_frame,
    obd_sample_path,
    policy_probabilities,
    read_log,
)
from framework.components import RouteRequest
from plugins.strategy_ab import ABConfig, ABStrategy
from plugins.strategy_bandit import BanditConfig, BanditStrategy
from plugins.strategy_single import SingleConfig, SingleStrategy


def uniform_log(means, rows, seed=0, propensity=True):
    rng = np.random.default_rng(seed)
    arms = rng.integers(0, len(means), rows)
    rewards = (rng.random(rows) < np.asarray(means)[arms]).astype(float)
    frame = pd.DataFrame({"arm": [f"a{i}" for i in arms], "reward": rewards})
    if propensity:
        frame["propensity"] = 1.0 / len(means)
    return frame


def skewed_log(means, probs, rows, seed=0):
    rng = np.random.default_rng(seed)
    arms = rng.choice(len(means), size=rows, p=probs)
    rewards = (rng.random(rows) < np.asarray(means)[arms]).astype(float)
    return pd.DataFrame({"arm": [f"a{i}" for i in arms], "reward": rewards, "propensity": np.asarray(probs)[arms]})


def fixed_arm(arm):
    return lambda arms: SingleStrategy(SingleConfig(arm=arm), arms)


def test_replay_of_a_fixed_arm_is_that_arms_mean():
    log = log_from_frame(uniform_log((0.2, 0.5, 0.7), 30_000, seed=1))
    report = evaluate(fixed_arm("a1"), log, ["replay"])
    est = report.estimates["replay"]
    assert est.ci[0] < 0.5 < est.ci[1]
    assert 9_000 < est.events < 11_000  # about a third of the rows count
    assert report.baselines["best_arm"] == "a2"


def test_ips_snips_dr_of_a_fixed_arm_on_a_skewed_log_are_unbiased():
    means, probs = (0.1, 0.3, 0.6), (0.7, 0.2, 0.1)
    log = log_from_frame(skewed_log(means, probs, 40_000, seed=2))
    assert not log.uniform
    report = evaluate(fixed_arm("a2"), log, ["ips", "snips", "dr"], policy_samples=4)
    for method, est in report.estimates.items():
        assert est.ci[0] < 0.6 < est.ci[1], (method, est)
    # the rare arm gets few rows: the weights say so
    assert report.estimates["ips"].effective_n < 0.2 * len(log)
    with pytest.raises(RecipeError, match="uniformly random"):
        evaluate(fixed_arm("a2"), log, ["replay"])
    with pytest.raises(RecipeError, match="only a uniformly random log can be restricted"):
        log_from_frame(skewed_log(means, probs, 1000), arms=["a0", "a2"])


def test_a_learning_bandit_beats_uniform_in_replay():
    log = log_from_frame(uniform_log((0.1, 0.2, 0.8), 30_000, seed=3))
    report = evaluate(lambda arms: BanditStrategy(BanditConfig(algorithm="thompson", min_rewards_per_arm=20), arms),
                      log, ["replay", "ips"], policy_samples=8)
    replay = report.estimates["replay"]
    assert replay.value > report.baselines["uniform"] + 0.2  # it learnt to play a2 mostly
    assert replay.ci[0] > report.baselines["uniform"]
    assert report.estimates["ips"].value > report.baselines["uniform"] + 0.2
    assert max(report.allocation, key=report.allocation.get) == "a2"
    # it promoted the best arm on the way, with its evidence
    assert report.decisions and report.decisions[0]["verdict"] == "promote" and report.decisions[0]["arm"] == "a2"
    assert report.decisions[0]["evidence"]["bound"]["a2"][0] > 0.6


def test_policy_probabilities_ask_choose_without_side_effects():
    s = ABStrategy(ABConfig(), {"a": "x", "b": "y"})
    before = json.dumps(s.state(), sort_keys=True)
    pi = policy_probabilities(s, RouteRequest("r1"), ["a", "b"], 400)
    assert abs(pi["a"] - 0.5) < 0.1 and math.isclose(sum(pi.values()), 1.0)
    assert json.dumps(s.state(), sort_keys=True) == before


def test_log_columns_and_errors(tmp_path):
    frame = uniform_log((0.5, 0.5), 100, propensity=False).rename(columns={"arm": "action", "reward": "click"})
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    log = read_log(path)
    assert log.arms == ["a0", "a1"] and log.propensity is None and len(log) == 100
    with pytest.raises(RecipeError, match="propensities"):
        evaluate(fixed_arm("a0"), log, ["ips"])
    with pytest.raises(RecipeError, match="no reward column"):
        log_from_frame(frame.drop(columns=["click"]))
    with pytest.raises(RecipeError, match="never logged"):
        log_from_frame(frame, arms=["a0", "zz"])
    with pytest.raises(RecipeError, match="no such file"):
        read_log(tmp_path / "missing.csv")
    with pytest.raises(RecipeError, match="not an estimator"):
        evaluate(fixed_arm("a0"), log, ["magic"])


# -- real logged data ------------------------------------------------------------------------
obd = pytest.importorskip("importlib.util").find_spec("obp")
needs_obd = pytest.mark.skipif(obd is None, reason="the obp package (test extra) ships the Open Bandit Dataset sample")


@needs_obd
def test_obd_sample_is_read_without_importing_obp():
    code = ("import sys; from framework.offline_eval import read_log; log = read_log('obd:random'); "
            "print(len(log), len(log.arms), log.uniform, 'obp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10000", "80", "True", "False"]
    assert obd_sample_path("bts").name == "all.csv"


@needs_obd
def test_replay_on_real_uniform_clicks_matches_the_logged_rate():
    log = read_log("obd:random")
    # a strategy that splits evenly over every arm is the logging policy: replay must agree
    report = evaluate(lambda arms: ABStrategy(ABConfig(), arms), log, ["replay"])
    est = report.estimates["replay"]
    assert est.ci[0] <= report.log["mean_reward"] <= est.ci[1]
    assert 0.002 < report.log["mean_reward"] < 0.006  # clicks at real rates (0.38 %)


@needs_obd
@pytest.mark.parametrize("algorithm", ["thompson", "kl_ucb", "ucb1", "epsilon_greedy"])
def test_bandit_strategies_on_real_logged_clicks(algorithm):
    # four arms of the uniform log (fixed in advance, so the rows left are uniform over them)
    log = read_log("obd:random", arms=["18", "49", "53", "58"])
    report = evaluate(
        lambda arms: BanditStrategy(BanditConfig(algorithm=algorithm, reward="clicks", min_rewards_per_arm=20), arms),
        log, ["replay", "ips", "snips", "dr"], policy_samples=8,
    )
    assert report.log["rows"] < 10_000 and report.log["uniform"]
    for est in report.estimates.values():
        assert 0.0 <= est.value <= 0.2 and est.stderr >= 0 and est.events > 0
    # at 0.4 % clicks nothing is sure after a few hundred rows: no promotion, by design
    assert not report.decisions
    json.dumps(report.to_dict())


@needs_obd
def test_ips_on_the_real_thompson_log():
    log = read_log("obd:bts")
    assert not log.uniform
    report = evaluate(lambda arms: ABStrategy(ABConfig(), arms), log, ["ips", "snips", "dr"], policy_samples=4)
    uniform = report.baselines["uniform"]
    for est in report.estimates.values():  # an even split over the arms is the uniform policy
        assert est.ci[0] - 0.002 <= uniform <= est.ci[1] + 0.002, (est, uniform)


@needs_obd
def test_cli_verb_on_the_real_log():
    out = subprocess.run(
        [sys.executable, "-m", "framework", "evaluate-strategy", "+recipe=offline_bandit", "log=obd:random",
         "arms=18,49,53,58", "method=replay,ips", "policy_samples=4", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["strategy"] == "bandit" and set(report["estimates"]) == {"replay", "ips"}
    assert report["config"]["reward"] == "clicks" and report["log"]["arms"] == 4
    missing = subprocess.run([sys.executable, "-m", "framework", "evaluate-strategy", "+recipe=offline_bandit"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "log=" in missing.stderr
