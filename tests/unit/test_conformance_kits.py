"""The kits catch what they promise to catch: each broken component below fails the kit test
aimed at its defect (a kit that passes everything would prove nothing)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from framework import CheckReport, DataCheck, DataSource, Exporter, Monitor, MonitorReport, RecipeError
from framework.testing import (BatchPredictorContract, CompressorContract, DataCheckContract, DataSourceContract,
                               ExporterContract, ModelContract, MonitorContract)
from framework.testing.data import breast_cancer_splits
from plugins.model_mlp import MLPModel

KIT_FAILURE = (AssertionError, pytest.fail.Exception)


def breast_cancer():
    return breast_cancer_splits().dataset


# -- shared checks ------------------------------------------------------------------------------
class TwoArgumentCheck(DataSource):
    name = "two_argument_check"

    @classmethod
    def check_config(cls, config, key):  # the planner passes refs too
        pass

    def load(self, ctx):
        return breast_cancer()


class SkipsValidation(DataSource):
    name = "skips_validation"

    @dataclass
    class Config:
        rows: int = 10

    @classmethod
    def check_config(cls, config, key, refs=None):
        if config.rows < 1:
            raise RecipeError(f"{key}.rows: must be >= 1")

    def __init__(self, config=None, refs=None):  # forgets super().__init__: nothing validated
        self.config = config or self.Config()

    def load(self, ctx):
        return breast_cancer()


class NotADataclassConfig(DataSource):
    name = "plain_config"

    class Config:
        rows = 10

    def load(self, ctx):
        return breast_cancer()


def test_check_config_without_refs_is_caught():
    kit = type("Kit", (DataSourceContract,), {"source_cls": TwoArgumentCheck})()
    with pytest.raises(KIT_FAILURE, match="expected \\(config, key, refs=None\\)"):
        kit.test_check_config_signature_is_config_key_refs()


def test_a_constructor_that_skips_check_config_is_caught():
    kit = type("Kit", (DataSourceContract,), {"source_cls": SkipsValidation,
                                              "invalid_config": lambda self: SkipsValidation.Config(rows=0)})()
    with pytest.raises(KIT_FAILURE, match="DID NOT RAISE"):
        kit.test_constructor_validates_its_config()


def test_a_config_that_is_not_a_dataclass_is_caught():
    kit = type("Kit", (DataSourceContract,), {"source_cls": NotADataclassConfig})()
    with pytest.raises(KIT_FAILURE, match="dataclass"):
        kit.test_is_a_registered_style_component()


# -- data ---------------------------------------------------------------------------------------
class TargetAmongFeatures(DataSource):
    name = "target_among_features"

    def load(self, ctx):
        dataset = breast_cancer()
        return dataclasses.replace(dataset, features=dataset.features + [dataset.target])


class ClassesMissAValue(DataSource):
    name = "classes_miss_a_value"

    def load(self, ctx):
        return dataclasses.replace(breast_cancer(), classes=["benign"])


@pytest.mark.parametrize("source, message", [(TargetAmongFeatures, "also a feature"),
                                             (ClassesMissAValue, "not among classes")])
def test_a_dataset_the_core_cannot_use_is_caught(source, message, tmp_path):
    kit = type("Kit", (DataSourceContract,), {"source_cls": source})()
    with pytest.raises(KIT_FAILURE, match=message):
        kit.test_load_returns_a_dataset_the_core_can_use(tmp_path)


class PassesWithFailures(DataCheck):
    name = "passes_with_failures"

    def check(self, dataset, ctx):
        return CheckReport(self.name, True, len(dataset.frame), failures=[{"column": "x", "check": "c", "rows": [0]}])


class DropsRows(DataCheck):
    name = "drops_rows"

    def check(self, dataset, ctx):
        dataset.frame.drop(index=dataset.frame.index[:5], inplace=True)
        return CheckReport(self.name, True, len(dataset.frame))


def test_an_inconsistent_check_report_is_caught(tmp_path):
    kit = type("Kit", (DataCheckContract,), {"check_cls": PassesWithFailures})()
    with pytest.raises(KIT_FAILURE, match="passed report lists failures"):
        kit.test_passes_good_data_with_a_consistent_report(tmp_path)


def test_a_check_that_modifies_the_data_is_caught(tmp_path):
    kit = type("Kit", (DataCheckContract,), {"check_cls": DropsRows})()
    with pytest.raises(KIT_FAILURE, match="modified"):
        kit.test_leaves_the_dataset_unchanged(tmp_path)


# -- models -------------------------------------------------------------------------------------
class StatisticsOutsideTheStateDict(MLPModel):
    """Standardizes with plain attributes: a module rebuilt from a checkpoint forgets them."""

    name = "forgetful_mlp"

    def build(self, hp, n_features, n_classes, mean=None, std=None):
        import torch

        inner = super().build(hp, n_features, n_classes)

        class Forgetful(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner
                self.mean = torch.as_tensor(0.0 if mean is None else mean)
                self.std = torch.as_tensor(1.0 if std is None else std)

            def forward(self, x):
                return self.inner((x - self.mean) / self.std)

        return Forgetful()


def test_statistics_lost_on_a_state_dict_load_are_caught():
    kit = type("Kit", (ModelContract,), {"model_cls": StatisticsOutsideTheStateDict})()
    with pytest.raises(KIT_FAILURE, match="buffers"):
        kit.test_state_dict_restores_a_module_built_without_statistics()


class ExportsLogits(Exporter):
    """Forgets the softmax: the served 'probabilities' are logits."""

    name = "exports_logits"

    def export(self, model, splits, ctx):
        from framework.testing.models import export_probabilities

        x, _ = splits.arrays("test")
        exported = export_probabilities(model, x[:2], ctx.out_dir / "model.onnx")
        import onnx

        graph = onnx.load(str(exported.path))
        softmax = next(n for n in graph.graph.node if n.op_type == "Softmax")
        graph.graph.node.remove(softmax)
        graph.graph.node[-1].output[0] = exported.output_name
        onnx.save(graph, str(exported.path))
        return exported


def test_an_export_that_does_not_give_probabilities_is_caught(tmp_path):
    kit = type("Kit", (ExporterContract,), {"exporter_cls": ExportsLogits})()
    with pytest.raises(KIT_FAILURE, match="not class probabilities"):
        kit.test_exported_file_runs_in_onnxruntime_and_matches_the_module(tmp_path)


def test_a_compressor_that_changes_its_input_is_caught(tmp_path):
    import torch

    from framework import Compressor

    class ZeroesInPlace(Compressor):
        name = "zeroes_in_place"

        def compress(self, model, splits, ctx):
            with torch.no_grad():
                first = next(model.module.parameters())
                first[first.abs() < first.abs().median()] = 0.0  # prunes the caller's module
            return model

    kit = type("Kit", (CompressorContract,), {"compressor_cls": ZeroesInPlace})()
    with pytest.raises(KIT_FAILURE, match="work on a copy"):
        kit.test_compressed_model_keeps_schema_and_classes(tmp_path)


# -- serving side -------------------------------------------------------------------------------
class NumpyMetrics(Monitor):
    name = "numpy_metrics"

    def evaluate(self, served, reference, ctx):
        import numpy as np

        return MonitorReport(self.name, metrics={"rows": np.int64(len(served.frame))})


def test_a_report_that_is_not_json_is_caught(tmp_path):
    kit = type("Kit", (MonitorContract,), {"monitor_cls": NumpyMetrics})()
    with pytest.raises(KIT_FAILURE, match="not JSON-able"):
        kit.test_reports_on_served_traffic(tmp_path)


def test_a_batch_predictor_that_drops_rows_is_caught(tmp_path):
    from framework import BatchPredictor

    class FirstTen(BatchPredictor):
        name = "first_ten"

        def predict(self, model, frame, ctx):
            return [model.classes[0]] * min(10, len(frame))

    kit = type("Kit", (BatchPredictorContract,), {"predictor_cls": FirstTen})()
    with pytest.raises(KIT_FAILURE, match="predictions for"):
        kit.test_one_prediction_per_row(tmp_path)
