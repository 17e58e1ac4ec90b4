"""Test helpers for plugin authors: one conformance kit per component kind, to subclass in a test
module, and seeded inputs for them.

    from framework.testing import DataSourceContract, MonitorContract, TrafficStrategyContract

    class TestMySourceContract(DataSourceContract):
        source_cls = MySource

Each kit checks what every component shares (:mod:`framework.testing.component_contract`) and
what its kind promises; the modules say how to use them: :mod:`~framework.testing.data_contracts`
(data sources, data checks, labelers), :mod:`~framework.testing.features_contract` (preprocessors), :mod:`~framework.testing.model_contracts` (models,
trainers, compressors, exporters, batch predictors), :mod:`~framework.testing.monitor_contract`, :mod:`~framework.testing.action_contract` (actions),
:mod:`~framework.testing.strategy_contract` (traffic strategies, with a seeded traffic simulator).
Small real datasets are in :mod:`framework.testing.data`, a small trained model and its ONNX
export in :mod:`framework.testing.models`. PLUGINS.md walks through writing a plugin.
"""
from .action_contract import ActionContract, RecordingActionContext, drift_alert
from .component_contract import ComponentContract, assert_jsonable, make_stage_context
from .data_contracts import (DataCheckContract, DataSourceContract, LabelerContract, assert_valid_dataset,
                             assert_valid_labelset)
from .features_contract import PreprocessorContract
from .model_contracts import (BatchPredictorContract, CompressorContract, ExporterContract, ModelContract,
                              TrainerContract, assert_valid_trained_model)
from .monitor_contract import MonitorContract, served_window
from .strategy_contract import SimulatedArm, SimulationResult, TrafficStrategyContract, simulate_traffic

#: component kind -> its conformance kit
CONTRACTS = {
    "data_source": DataSourceContract,
    "data_check": DataCheckContract,
    "labeler": LabelerContract,
    "preprocessor": PreprocessorContract,
    "model": ModelContract,
    "trainer": TrainerContract,
    "compressor": CompressorContract,
    "exporter": ExporterContract,
    "traffic_strategy": TrafficStrategyContract,
    "batch_predictor": BatchPredictorContract,
    "monitor": MonitorContract,
    "action": ActionContract,
}

__all__ = [
    "CONTRACTS", "ActionContract", "RecordingActionContext", "drift_alert", "BatchPredictorContract", "ComponentContract", "CompressorContract", "DataCheckContract",
    "DataSourceContract", "ExporterContract", "LabelerContract", "ModelContract", "MonitorContract",
    "PreprocessorContract", "SimulatedArm", "SimulationResult", "TrafficStrategyContract", "TrainerContract", "assert_jsonable",
    "assert_valid_dataset", "assert_valid_labelset", "assert_valid_trained_model", "make_stage_context", "served_window", "simulate_traffic",
]
