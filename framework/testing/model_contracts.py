"""Conformance kits for the model stages: models, trainers, compressors, exporters and batch
predictors.

Subclass one in a test module, name your component, override ``make_*`` where the defaults do not
fit (the checks every kind shares are in :mod:`framework.testing.component_contract`)::

    from framework.testing import ExporterContract, ModelContract, TrainerContract

    class TestMyModelContract(ModelContract):
        model_cls = MyModel
        n_features = 64                             # a shape the model accepts (check_data)

    class TestMyTrainerContract(TrainerContract):   # a heavy kit: keep the config tiny
        trainer_cls = MyTrainer

        def make_config(self):
            return MyTrainer.Config(epochs=2)

Inputs default to scikit-learn's breast cancer table and, where a component consumes a model, a
small MLP trained in-process (:mod:`framework.testing.models`); a compressor that only works on
its own kind of module overrides ``make_model(splits)``. torch, onnxruntime and Ray are imported
inside the tests only.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, ClassVar

from ..components import (BatchPredictor, Compressor, DataSplits, ExportedModel, Exporter, FeatureSpec, InputSchema,
                          Model, Trainer, TrainedModel)
from .component_contract import ComponentContract, assert_jsonable

__all__ = ["BatchPredictorContract", "CompressorContract", "ExporterContract", "ModelContract", "TrainerContract",
           "assert_valid_trained_model"]


def default_splits() -> DataSplits:
    from .data import breast_cancer_splits

    return breast_cancer_splits()


def first_values(space: dict) -> dict:
    """One point of a search space: the first value of a choice / grid, the low end of a range."""
    from ..tuning import validate_search_space

    point = {}
    for name, spec in validate_search_space(space).items():
        if isinstance(spec, dict):
            (sampler, args), = spec.items()
            point[name] = args[0]
        else:
            point[name] = spec
    return point


def assert_logits(out: Any, rows: int, classes: int, what: str) -> None:
    import numpy as np

    out = np.asarray(out)
    assert out.shape == (rows, classes), f"{what}: output shape {out.shape}, expected ({rows}, {classes})"
    assert out.dtype == np.float32, f"{what}: output dtype {out.dtype}, expected float32"
    assert np.isfinite(out).all(), f"{what}: non-finite outputs"


def assert_valid_trained_model(model: Any, splits: DataSplits, what: str) -> None:
    """A TrainedModel whose module maps the splits' rows to logits of their classes, with schema
    and classes of the splits, JSON-able metrics and hyperparameters, in eval mode."""
    import numpy as np

    from .models import module_outputs

    assert isinstance(model, TrainedModel), f"{what} returned a {type(model).__name__}, not a TrainedModel"
    dataset = splits.dataset
    assert model.schema.names == list(dataset.features), (
        f"{what}: schema features {model.schema.names[:5]}... differ from the dataset's, in order")
    assert list(model.classes) == list(dataset.classes), f"{what}: classes {model.classes} != the dataset's {dataset.classes}"
    assert getattr(model.module, "training", False) is False, f"{what}: the module is left in training mode (call .eval())"
    x_test, _ = splits.arrays("test")
    out = module_outputs(model.module, x_test)
    assert_logits(out, len(x_test), len(dataset.classes), f"{what}: module(test rows)")
    assert np.array_equal(out, module_outputs(model.module, x_test)), f"{what}: the module answers differently twice"
    assert isinstance(model.metrics, dict) and all(isinstance(k, str) for k in model.metrics)
    for name, value in model.metrics.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{what}: metric {name}={value!r} is not a number"
    assert_jsonable(model.metrics, f"{what}: metrics")
    assert_jsonable(model.hyperparameters, f"{what}: hyperparameters")
    for i, other in enumerate(model.runners_up):
        assert isinstance(other, TrainedModel) and other.schema.names == model.schema.names \
            and list(other.classes) == list(model.classes), f"{what}: runner-up {i + 2} has another schema or classes"


def assert_same_onnx_answers(exported: ExportedModel, probabilities: Any, x: Any, atol: float, what: str) -> Any:
    """``exported`` runs in onnxruntime on ``x`` (and on a batch of one) and gives ``probabilities``."""
    import numpy as np

    from .models import onnx_session

    assert exported.format == "onnx", f"{what}: format {exported.format!r}; the core registers and serves ONNX"
    path = Path(exported.path)
    assert path.is_file() and path.stat().st_size > 0, f"{what}: {path} is not a file"
    session = onnx_session(path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    assert exported.input_name in inputs, f"{what}: input '{exported.input_name}' not in the graph's {inputs}"
    assert exported.output_name in outputs, f"{what}: output '{exported.output_name}' not in the graph's {outputs}"
    x = np.ascontiguousarray(x, dtype=np.float32)
    got = session.run([exported.output_name], {exported.input_name: x})[0]
    one = session.run([exported.output_name], {exported.input_name: x[:1]})[0]  # the batch really is dynamic
    assert got.shape == (len(x), len(exported.classes)), f"{what}: ONNX output shape {got.shape}"
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-3), f"{what}: the ONNX output rows are not class probabilities"
    if probabilities is not None:
        diff = float(np.max(np.abs(got - probabilities)))
        assert diff <= atol, f"{what}: max |onnxruntime - expected| = {diff:.3g} > atol {atol:g}"
        assert np.max(np.abs(one - probabilities[:1])) <= atol, f"{what}: a batch of one answers differently"
    assert_jsonable(exported.metrics, f"{what}: metrics")
    return got


def softmax(logits: Any) -> Any:
    import numpy as np

    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
class ModelContract(ComponentContract):
    """Subclass, set ``model_cls``; ``n_features`` / ``n_classes`` (a shape the model accepts) and
    ``make_hyperparameters()`` (default: the first point of its default search space) if needed."""

    kind = "model"
    component_attr = "model_cls"
    model_cls: ClassVar[type[Model]]
    n_features: ClassVar[int] = 16
    n_classes: ClassVar[int] = 3
    #: |onnxruntime - torch| tolerance on logits
    atol: ClassVar[float] = 1e-4

    def make_hyperparameters(self) -> dict:
        return {**self.model_cls.defaults(), **first_values(dict(self.model_cls.default_search_space))}

    def make_rows(self, batch: int = 6) -> Any:
        """Raw rows far from zero mean and unit spread: the module must standardize them itself."""
        import numpy as np

        rng = np.random.default_rng(0)
        return (50.0 + 10.0 * rng.standard_normal((batch, self.n_features))).astype(np.float32)

    def build(self, statistics: bool = True) -> Any:
        import numpy as np

        model, hp = self.model_cls(), self.make_hyperparameters()
        if not statistics:
            return model.build(hp, self.n_features, self.n_classes)
        mean = np.full(self.n_features, 50.0, dtype=np.float32)
        std = np.full(self.n_features, 10.0, dtype=np.float32)
        return model.build(hp, self.n_features, self.n_classes, mean, std)

    def test_hyperparameters_and_default_search_space(self):
        from ..tuning import validate_search_space

        cls = self.model_cls
        assert all(isinstance(k, str) for k in cls.hyperparameters), "hyperparameter names must be strings"
        space = validate_search_space(dict(cls.default_search_space), f"{cls.name}.default_search_space")
        unknown = sorted(set(space) - set(cls.hyperparameters))
        assert not unknown, f"default_search_space samples {unknown}, which are not hyperparameters"
        unset = sorted(k for k, v in cls.hyperparameters.items() if v is None and k not in space)
        assert not unset, f"hyperparameters {unset} have no default and the default search space leaves them out"
        assert isinstance(cls.per_example_loss, bool)
        assert isinstance(cls.extra_metric_names, tuple) and all(isinstance(n, str) for n in cls.extra_metric_names)

    def test_accepts_the_kit_shape(self):
        problem = self.model_cls().check_data(self.n_features, self.n_classes, self.make_hyperparameters())
        assert problem is None, f"check_data refuses the kit's shape: {problem} (set n_features / n_classes)"

    def test_build_maps_float32_rows_to_class_logits(self):
        import torch

        from .models import module_outputs

        module = self.build()
        assert isinstance(module, torch.nn.Module), f"build() returned a {type(module).__name__}, not a torch module"
        x = self.make_rows()
        assert_logits(module_outputs(module, x), len(x), self.n_classes, "module(rows)")
        assert_logits(module_outputs(module, x[:1]), 1, self.n_classes, "module(one row)")

    def test_state_dict_restores_a_module_built_without_statistics(self):
        # a trainer rebuilds its best trial with build(hp, n, classes) and loads the checkpoint:
        # the standardization statistics must travel in the state_dict
        import numpy as np

        from .models import module_outputs

        trained, rebuilt = self.build(), self.build(statistics=False)
        rebuilt.load_state_dict(trained.state_dict())
        x = self.make_rows()
        assert np.allclose(module_outputs(trained, x), module_outputs(rebuilt, x), atol=1e-6), \
            "a module rebuilt from the state_dict answers differently: keep mean/std as buffers"

    def test_loss_is_a_differentiable_scalar_and_extra_metrics_match_their_names(self):
        import numpy as np
        import torch

        model, hp = self.model_cls(), self.make_hyperparameters()
        module = self.build().train()
        x = torch.tensor(self.make_rows(12))
        target = torch.tensor(np.arange(12) % self.n_classes, dtype=torch.int64)
        loss = model.loss(module(x), target, hp)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "loss() must return a scalar tensor (the batch mean)"
        assert torch.isfinite(loss), f"loss is {loss}"
        loss.backward()
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert any(g is not None and torch.any(g != 0) for g in grads), "the loss gives the parameters no gradient"
        with torch.no_grad():
            extra = model.extra_metrics(module.eval()(x), target)
        assert set(extra) == set(model.extra_metric_names), f"extra_metrics {sorted(extra)} != extra_metric_names"
        assert all(isinstance(float(v), float) and math.isfinite(float(v)) for v in extra.values())

    def test_module_exports_to_onnx_with_a_dynamic_batch(self, tmp_path):
        # the registry and the server only ever see the ONNX file
        from .models import export_probabilities, module_outputs

        module = self.build().eval()
        x = self.make_rows()
        schema = InputSchema([FeatureSpec(f"x{i}") for i in range(self.n_features)])
        model = TrainedModel(module, schema, classes=list(range(self.n_classes)), metrics={})
        exported = export_probabilities(model, x[:2], tmp_path / "model.onnx")
        assert_same_onnx_answers(exported, softmax(module_outputs(module, x)), x, self.atol, "the exported module")

    def test_module_pickles(self):
        import numpy as np

        from .models import module_outputs

        module = self.build()
        clone = pickle.loads(pickle.dumps(module))
        x = self.make_rows()
        assert np.allclose(module_outputs(module, x), module_outputs(clone, x))


# ---------------------------------------------------------------------------------------------
class TrainerContract(ComponentContract):
    """Subclass, set ``trainer_cls``, and make ``make_config()`` tiny (epochs, trials): the kit
    fits once. A trainer on Ray needs Ray started (the kit does not start it)."""

    kind = "trainer"
    component_attr = "trainer_cls"
    trainer_cls: ClassVar[type[Trainer]]

    def make_splits(self) -> DataSplits:
        return default_splits()

    def test_fit_returns_a_trained_model_that_fits_the_splits(self, tmp_path):
        splits = self.make_splits()
        before = splits.train.copy(deep=True)
        model = self.new_component().fit(splits, self.make_context(tmp_path))
        assert_valid_trained_model(model, splits, f"{self.trainer_cls.__name__}.fit()")
        assert splits.train.equals(before), "fit() modified the training split"


# ---------------------------------------------------------------------------------------------
class _ConsumesModel(ComponentContract):
    """Inputs of a kit whose component takes a trained or exported model."""

    def make_splits(self) -> DataSplits:
        return default_splits()

    def make_model(self, splits: DataSplits) -> TrainedModel:
        """The trained model the component gets (default: a small MLP trained in-process)."""
        from .models import tiny_classifier

        return tiny_classifier(splits)

    def make_exported(self, splits: DataSplits, out_dir: Path) -> ExportedModel:
        """The exported model the component gets (default: ``make_model`` as ONNX)."""
        from .models import export_probabilities

        x_test, _ = splits.arrays("test")
        return export_probabilities(self.make_model(splits), x_test[:2], Path(out_dir) / "input.onnx")


class CompressorContract(_ConsumesModel):
    """Subclass, set ``compressor_cls``; ``make_model(splits)`` if it needs its own kind of module
    (default: a small MLP); ``min_agreement`` (share of test rows whose predicted class stays)."""

    kind = "compressor"
    component_attr = "compressor_cls"
    compressor_cls: ClassVar[type[Compressor]]
    min_agreement: ClassVar[float] = 0.9

    def test_level_and_starts_from_registry(self):
        assert self.compressor_cls.level in ("model", "onnx"), f"level must be 'model' or 'onnx', not {self.compressor_cls.level!r}"
        assert isinstance(self.compressor_cls.starts_from_registry(self.make_config()), bool)

    def test_compressed_model_keeps_schema_and_classes(self, tmp_path):
        import numpy as np

        from .models import module_outputs

        splits = self.make_splits()
        x_test, _ = splits.arrays("test")
        step = self.new_component()
        ctx = self.make_context(tmp_path, "compress")
        what = f"{self.compressor_cls.__name__}"
        if self.compressor_cls.level == "onnx":
            original = self.make_exported(splits, tmp_path / "input")
            before = Path(original.path).read_bytes()
            out = step.compress_onnx(original, splits, ctx)
            assert isinstance(out, ExportedModel), f"{what}.compress_onnx() returned a {type(out).__name__}"
            assert Path(out.path).resolve().is_relative_to(Path(ctx.out_dir).resolve()), \
                f"{what}: {out.path} is not in the stage folder {ctx.out_dir}"
            assert out.schema.names == original.schema.names and list(out.classes) == list(original.classes)
            expected = assert_same_onnx_answers(original, None, x_test, 0.0, "the input model")
            got = assert_same_onnx_answers(out, None, x_test, 0.0, f"{what}.compress_onnx()")
            assert Path(original.path).read_bytes() == before or Path(original.path) == Path(out.path), \
                f"{what} changed its input file"
        else:
            original = self.make_model(splits)
            state = {k: v.clone() for k, v in original.module.state_dict().items()}
            out = step.compress(original, splits, ctx)
            assert_valid_trained_model(out, splits, f"{what}.compress()")
            expected = module_outputs(original.module, x_test)
            got = module_outputs(out.module, x_test)
            changed = [k for k, v in original.module.state_dict().items() if k not in state or not (v == state[k]).all()]
            assert not changed, f"{what} changed the input model's parameters {changed[:3]}: work on a copy"
        agreement = float(np.mean(np.asarray(got).argmax(axis=1) == np.asarray(expected).argmax(axis=1)))
        assert agreement >= self.min_agreement, f"{what}: the predicted class changed on {1 - agreement:.1%} of the test rows"
        assert_jsonable(out.metrics, f"{what}: metrics")


class ExporterContract(_ConsumesModel):
    """Subclass, set ``exporter_cls``; ``atol`` bounds |onnxruntime - softmax(module)|."""

    kind = "exporter"
    component_attr = "exporter_cls"
    exporter_cls: ClassVar[type[Exporter]]
    atol: ClassVar[float] = 1e-4

    def test_exported_file_runs_in_onnxruntime_and_matches_the_module(self, tmp_path):
        from .models import module_outputs

        splits = self.make_splits()
        model = self.make_model(splits)
        ctx = self.make_context(tmp_path, "export")
        exported = self.new_component().export(model, splits, ctx)
        what = f"{self.exporter_cls.__name__}.export()"
        assert isinstance(exported, ExportedModel), f"{what} returned a {type(exported).__name__}, not an ExportedModel"
        assert Path(exported.path).resolve().is_relative_to(Path(ctx.out_dir).resolve()), \
            f"{what}: {exported.path} is not in the stage folder {ctx.out_dir}"
        assert exported.schema.names == model.schema.names, f"{what}: the schema changed"
        assert list(exported.classes) == list(model.classes), f"{what}: the classes changed"
        x_test, _ = splits.arrays("test")
        assert_same_onnx_answers(exported, softmax(module_outputs(model.module, x_test)), x_test, self.atol, what)


class BatchPredictorContract(_ConsumesModel):
    """Subclass, set ``predictor_cls``; ``make_frame(splits)`` (default: the test split)."""

    kind = "batch_predictor"
    component_attr = "predictor_cls"
    predictor_cls: ClassVar[type[BatchPredictor]]

    def make_frame(self, splits: DataSplits) -> Any:
        return splits.test

    @staticmethod
    def predicted_values(result: Any) -> list | None:
        """The predicted classes in ``result`` when the kit can tell where they are."""
        import numpy as np
        import pandas as pd

        if isinstance(result, pd.DataFrame):
            return result["prediction"].tolist() if "prediction" in result.columns else None
        if isinstance(result, (pd.Series, np.ndarray, list, tuple)):
            return list(np.asarray(result).tolist()) if not isinstance(result, (list, tuple)) else list(result)
        return None

    def test_one_prediction_per_row(self, tmp_path):
        import pandas as pd

        splits = self.make_splits()
        exported = self.make_exported(splits, tmp_path / "input")
        frame = self.make_frame(splits)
        before = frame.copy(deep=True)
        result = self.new_component().predict(exported, frame, self.make_context(tmp_path, "batch"))
        what = f"{self.predictor_cls.__name__}.predict()"
        assert len(result) == len(frame), f"{what}: {len(result)} predictions for {len(frame)} rows"
        if isinstance(result, (pd.DataFrame, pd.Series)):
            assert result.index.equals(frame.index), f"{what}: the result's index is not the frame's"
        values = self.predicted_values(result)
        if values is not None:
            strangers = sorted({repr(v) for v in values if v not in exported.classes})
            assert not strangers, f"{what}: predictions {strangers[:5]} are not classes {exported.classes}"
        assert frame.equals(before), f"{what} modified the input frame"
