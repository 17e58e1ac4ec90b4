"""Every built-in traffic strategy passes the conformance suite plugin authors subclass."""
from __future__ import annotations

from framework.components import Verdict
from framework.testing import TrafficStrategyContract
from plugins.strategy_ab import ABConfig, ABStrategy
from plugins.strategy_canary import CanaryConfig, CanaryStrategy, Gates
from plugins.strategy_shadow import ShadowConfig, ShadowStrategy
from plugins.strategy_single import SingleConfig, SingleStrategy


class TestSingleContract(TrafficStrategyContract):
    strategy_cls = SingleStrategy

    def make_config(self):
        return SingleConfig()

    def arms(self):
        return {"primary": "model@champion"}

    def invalid_config(self):
        return SingleConfig(arm="not-declared")


class TestShadowContract(TrafficStrategyContract):
    strategy_cls = ShadowStrategy

    def make_config(self):
        return ShadowConfig(window_requests=100)

    def invalid_config(self):
        return ShadowConfig(fraction=1.5)


class TestShadowThreeArmsPartialMirrorContract(TrafficStrategyContract):
    strategy_cls = ShadowStrategy

    def make_config(self):
        return ShadowConfig(primary="live", fraction=0.3, window_requests=50)

    def arms(self):
        return {"candidate_a": "m:v3", "live": "m@champion", "candidate_b": "m:v4"}

    def invalid_config(self):
        return ShadowConfig(primary="not-declared")


class TestABContract(TrafficStrategyContract):
    strategy_cls = ABStrategy

    def make_config(self):
        return ABConfig(min_samples_per_arm=50)

    def invalid_config(self):
        return ABConfig(alpha=1.5)


class TestABThreeArmsRewardContract(TrafficStrategyContract):
    strategy_cls = ABStrategy

    def make_config(self):
        return ABConfig(weights={"a": 2.0, "b": 1.0, "c": 1.0}, metric="reward", min_samples_per_arm=30, auto_promote=True)

    def arms(self):
        return {"a": "m:v1", "b": "m:v2", "c": "m:v3"}

    def invalid_config(self):
        return ABConfig(weights={"a": 1.0, "not-declared": 1.0})


class TestCanaryContract(TrafficStrategyContract):
    strategy_cls = CanaryStrategy

    def make_config(self):
        # small windows so the suite's 1500 simulated requests cross several of them
        return CanaryConfig(
            window_requests=200,
            min_challenger_requests=20,
            gates=Gates(error_rate_max=0.05, p99_latency_ms_max=50.0, accuracy_delta_min=-0.2, min_feedback=10),
        )

    def invalid_config(self):
        return CanaryConfig(steps=[50.0, 25.0])

    def aa_config(self):
        # the hardest A/A: a challenger exactly at every tolerance (error rate at its max, no
        # accuracy loss allowed) over many small windows
        return CanaryConfig(steps=[10.0, 25.0, 50.0, 75.0, 100.0], window_requests=100, min_challenger_requests=20,
                            gates=Gates(error_rate_max=0.01, accuracy_delta_min=0.0, min_feedback=10))

    def aa_false_verdicts(self):
        return (Verdict.ROLLBACK,)  # promoting a challenger as good as the champion is right
