"""Test helpers for plugin authors: conformance suites to subclass, and a seeded traffic simulator.

    from framework.testing import TrafficStrategyContract

See :mod:`framework.testing.strategy_contract` for how to use it; small real datasets for
plugin tests are in :mod:`framework.testing.data`.
"""
from .strategy_contract import SimulatedArm, SimulationResult, TrafficStrategyContract, simulate_traffic

__all__ = ["SimulatedArm", "SimulationResult", "TrafficStrategyContract", "simulate_traffic"]
