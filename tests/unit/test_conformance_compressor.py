"""Every built-in compressor passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations


import pytest

from framework.components import TrainedModel
from framework.testing import CompressorContract
from framework.testing.models import schema_of
from plugins.compress_distill import DistillCompressor, DistillConfig
from plugins.compress_onnx_quantize import Fp16, Int8Dynamic, Int8Static
from plugins.compress_prune import PruneMagnitude, PruneStructured



class _BuiltinMLPInput:
    """Pruning and distillation work on the built-in model modules: train the `mlp` briefly."""

    def make_model(self, splits):
        from plugins.train_tune import fit_in_process

        module = fit_in_process({"hidden": 32, "lr": 0.01}, splits, epochs=15)
        return TrainedModel(module, schema_of(splits), list(splits.dataset.classes), metrics={"test_accuracy": 0.0},
                            hyperparameters={"model": "mlp", "hidden": 32, "layers": 1, "dropout": 0.0, "lr": 0.01})


# -- ONNX level ---------------------------------------------------------------------------------
class TestInt8DynamicContract(CompressorContract):
    compressor_cls = Int8Dynamic

    def invalid_config(self):
        return Int8Dynamic.Config(weight_type="int4")



class TestInt8StaticContract(CompressorContract):
    compressor_cls = Int8Static

    def make_config(self):
        return Int8Static.Config(calibration_rows=64)

    def invalid_config(self):
        return Int8Static.Config(calibration_rows=0)



class TestFp16Contract(CompressorContract):
    compressor_cls = Fp16

    def invalid_config(self):
        return Fp16.Config(mode="half")



# -- model level --------------------------------------------------------------------------------
class TestPruneMagnitudeContract(_BuiltinMLPInput, CompressorContract):
    compressor_cls = PruneMagnitude

    def make_config(self):
        return PruneMagnitude.Config(sparsity=0.5, fine_tune_epochs=2)

    def invalid_config(self):
        return PruneMagnitude.Config(sparsity=1.5)



class TestPruneStructuredContract(_BuiltinMLPInput, CompressorContract):
    compressor_cls = PruneStructured

    def make_config(self):
        return PruneStructured.Config(amount=0.25, fine_tune_epochs=2)

    def invalid_config(self):
        return PruneStructured.Config(importance="random")



class TestDistillContract(_BuiltinMLPInput, CompressorContract):
    compressor_cls = DistillCompressor

    def make_config(self):
        return DistillConfig(student={"hidden": 8}, epochs=5)

    def invalid_config(self):
        return DistillConfig(alpha=0.0)

    @pytest.mark.ray
    def test_compressed_model_keeps_schema_and_classes(self, tmp_path, ray_session):  # a Ray Tune job
        super().test_compressed_model_keeps_schema_and_classes(tmp_path)
