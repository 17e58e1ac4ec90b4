"""Compressors ``prune_magnitude`` and ``prune_structured``: pruning of the trained torch MLP / CNN.

Both work on the trained model before export (``level = "model"``), fine-tune what is left on the
train split (the best epoch on the validation split is kept, the pruned-but-not-fine-tuned state
included) and return a TrainedModel with the same serving contract: raw float32 features in,
logits out, standardization inside.

- ``prune_magnitude``: global unstructured L1 magnitude pruning of every Linear weight
  (``torch.nn.utils.prune``), fine-tuned with the masks held, then made permanent. The zeros are
  real, but they are still stored: ONNX keeps dense tensors and onnxruntime runs dense GEMMs, so
  the exported file is NOT smaller and NOT faster. The metrics report the sparsity and the size
  a sparse storage format *would* take, and say so.
- ``prune_structured``: removes whole hidden neurons (rows of a Linear and the matching columns
  of the next one) and whole conv channels (output filters of a Conv2d and the matching input
  channels of the next Conv2d, or across pooling and Flatten the h*w columns each channel owns in
  the first Linear), ranked by the L2 norm of their incoming weights / filter (optionally times
  the norm of their outgoing weights). The network is rebuilt with smaller ``nn.Linear`` and
  ``nn.Conv2d`` layers, so the exported ONNX file really is smaller and faster. The pruned
  architecture is recorded in the hyperparameters under the model's own names: ``hidden`` (the
  per-layer widths; also as ``hidden_sizes``) and, with convolutions, ``conv_channels``. When the
  trained model names the model component that built it (``hyperparameters["model"]``, as the
  trainer and ``distill`` record it), the pruned network is rebuilt through that component's
  ``build`` from those hyperparameters with a strict state_dict load, before fine-tuning: a model
  whose ``build`` cannot take per-layer widths fails there, naming the model. A module that no
  model component names (an ``nn.Sequential`` built by hand) is pruned in place.

Importing this module is cheap: torch is imported inside functions.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping, Optional

from framework import Compressor, DataSplits, Model, TrainedModel, hookimpl
from framework.errors import RecipeError, StageError

#: how a hidden neuron is ranked by ``prune_structured``
IMPORTANCE = ("incoming", "incoming_x_outgoing")
#: layers ``prune_structured`` may keep anywhere between two weighted layers: element-wise, no parameters
ELEMENTWISE = ("ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "ELU", "Mish", "Hardtanh", "ReLU6",
               "Dropout", "AlphaDropout", "Identity")
#: per-channel, parameter-free layers ``prune_structured`` may keep after a Conv2d (before the Flatten)
SPATIAL = ("MaxPool2d", "AvgPool2d", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d", "Dropout2d")

SIZE_NOTE = (
    "ONNX stores dense tensors and onnxruntime runs dense matrix products: the exported file is "
    "not smaller and inference is not faster. sparse_bytes is what the weights would take stored "
    "as non-zero values plus a 1-bit mask per weight (a storage format, not what is exported); "
    "zlib_bytes is the zlib-compressed size of the raw float32 parameters."
)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------
def _check_common(config: Any, key: str) -> None:
    if int(config.fine_tune_epochs) < 0:
        raise RecipeError(f"{key}.fine_tune_epochs: must be >= 0, got {config.fine_tune_epochs}")
    if not float(config.lr) > 0:
        raise RecipeError(f"{key}.lr: must be > 0, got {config.lr}")
    if int(config.batch_size) < 1:
        raise RecipeError(f"{key}.batch_size: must be >= 1, got {config.batch_size}")


def _fraction(value: Any, key: str, field: str) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{key}.{field}: must be a number strictly between 0 and 1, got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise RecipeError(f"{key}.{field}: must be strictly between 0 and 1, got {value}")


def count_parameters(module) -> int:
    """``plugins.nets.count_parameters``, importable from here without torch."""
    from plugins.nets import count_parameters as count

    return count(module)


def _linears(module) -> list:
    import torch

    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def evaluate(module, splits: DataSplits, classes: list) -> dict:
    """``plugins.nets.evaluate_splits`` (val/test accuracy, test macro F1, losses), importable from
    here without torch."""
    from plugins.nets import evaluate_splits

    return evaluate_splits(module, splits, classes)


def fine_tune(module, splits: DataSplits, *, epochs: int, lr: float, batch_size: int, seed: int) -> dict:
    """Adam on the train split for ``epochs``; the best state on the validation split (accuracy,
    then loss; epoch 0 = as pruned) is loaded back. Returns {best_epoch, best_val_accuracy}."""
    import torch

    from plugins.nets import evaluate as _evaluate
    from plugins.nets import train_epoch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = splits.arrays("train")
    x_val, y_val = splits.arrays("val")
    xt, yt = torch.tensor(x), torch.tensor(y)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=float(lr))
    loss_fn = torch.nn.CrossEntropyLoss()

    acc, loss, _ = _evaluate(module, x_val, y_val)
    best, best_epoch, best_state = (acc, -loss), 0, copy.deepcopy(module.state_dict())
    for epoch in range(1, int(epochs) + 1):
        train_epoch(module, optimizer, len(xt), batch_size, generator, lambda idx: loss_fn(module(xt[idx]), yt[idx]))
        acc, loss, _ = _evaluate(module, x_val, y_val)
        if (acc, -loss) > best:
            best, best_epoch, best_state = (acc, -loss), epoch, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    module.eval()
    return {"best_epoch": best_epoch, "best_val_accuracy": best[0]}


class _PruneCompressor(Compressor):
    level: ClassVar[str] = "model"

    def _start(self, model: TrainedModel, splits: DataSplits, where: str):
        for part in ("train", "val", "test"):
            if len(getattr(splits, part)) == 0:
                raise StageError(f"{where}: the {part} split is empty")
        import torch

        if not isinstance(model.module, torch.nn.Module):
            raise StageError(f"{where}: needs a torch nn.Module, got {type(model.module).__name__}")
        return copy.deepcopy(model.module).eval()  # the input model stays as it was

    def _finish(self, model: TrainedModel, module, before: dict, after: dict, extra: dict,
                hyperparameters: dict, details: dict, ctx) -> TrainedModel:
        metrics: dict[str, Any] = {k: v for k, v in after.items() if k != "val_loss"}
        metrics.update(extra)
        metrics["input_test_accuracy"] = before["test_accuracy"]
        metrics["accuracy_delta"] = after["test_accuracy"] - before["test_accuracy"]
        for key, value in metrics.items():
            if key in self.HEADLINE:
                ctx.metric(f"{self.name}_{key}", value)
        return TrainedModel(
            module=module.eval(),
            schema=model.schema,
            classes=list(model.classes),
            metrics=metrics,
            hyperparameters={**model.hyperparameters, **hyperparameters,
                             self.name: {"type": self.name, **asdict(self.config)}},
            details={**details, "teacher_metrics": dict(model.metrics)},
        )


# ---------------------------------------------------------------------------------------------
# Unstructured magnitude pruning
# ---------------------------------------------------------------------------------------------
@dataclass
class MagnitudeConfig:
    #: share of all Linear weights (pooled over layers) set to zero, 0 < sparsity < 1
    sparsity: float = 0.5
    fine_tune_epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32


def sparsity_report(module) -> dict:
    """Share of exactly-zero Linear weights, parameter counts and dense vs sparse storage sizes."""
    import numpy as np

    from plugins.nets import count_parameters

    weights = [m.weight.detach() for m in _linears(module)]
    total = int(sum(w.numel() for w in weights))
    zeros = int(sum(int((w == 0).sum()) for w in weights))
    parameters = count_parameters(module)
    dense = parameters * 4
    # non-zero weights as float32 + a 1-bit mask per weight; biases and the rest stay dense
    sparse = (parameters - total) * 4 + (total - zeros) * 4 + (total + 7) // 8
    raw = b"".join(p.detach().cpu().numpy().astype(np.float32).tobytes() for p in module.parameters())
    return {
        "sparsity": zeros / total if total else 0.0,
        "parameters": parameters,
        "nonzero_parameters": parameters - zeros,
        "dense_bytes": dense,
        "sparse_bytes": sparse,
        "zlib_bytes": len(zlib.compress(raw, 6)),
    }


class PruneMagnitude(_PruneCompressor):
    name = "prune_magnitude"
    Config = MagnitudeConfig
    summary = "global unstructured L1 magnitude pruning + fine-tuning (sparse weights; ONNX stays dense: no size or speed gain)"
    HEADLINE = ("sparsity", "parameters", "nonzero_parameters", "dense_bytes", "sparse_bytes",
                "test_accuracy", "input_test_accuracy", "accuracy_delta")

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        _fraction(config.sparsity, key, "sparsity")
        _check_common(config, key)

    def compress(self, model: TrainedModel, splits: DataSplits, ctx) -> TrainedModel:
        from torch.nn.utils import prune

        from plugins.nets import evaluate_splits

        c = self.config
        where = f"compress ({self.name})"
        module = self._start(model, splits, where)
        linears = _linears(module)
        if not linears:
            raise StageError(f"{where}: the model ({type(module).__name__}) has no nn.Linear layer to prune")
        before = evaluate_splits(module, splits, model.classes)
        report_before = sparsity_report(module)
        prune.global_unstructured([(m, "weight") for m in linears], pruning_method=prune.L1Unstructured,
                                  amount=float(c.sparsity))
        # the masks stay in place while fine-tuning: pruned weights get gradients but stay zero
        tuned = fine_tune(module, splits, epochs=c.fine_tune_epochs, lr=c.lr, batch_size=c.batch_size, seed=int(ctx.seed))
        for m in linears:
            prune.remove(m, "weight")  # weight = weight_orig * mask, a plain parameter again
        module.eval()
        after = evaluate_splits(module, splits, model.classes)
        report = sparsity_report(module)
        extra = {**report, "size_ratio_if_sparse": report["dense_bytes"] / report["sparse_bytes"],
                 "fine_tune_best_epoch": tuned["best_epoch"]}
        ctx.metric(f"{self.name}_size_note", SIZE_NOTE)
        ctx.logger.info(
            "%s: %.1f%% of Linear weights zero (asked %.1f%%), %d of %d parameters non-zero; "
            "test accuracy %.4f -> %.4f (%+.4f); dense %d bytes, %d if stored sparse. %s",
            self.name, 100 * report["sparsity"], 100 * float(c.sparsity), report["nonzero_parameters"],
            report["parameters"], before["test_accuracy"], after["test_accuracy"],
            after["test_accuracy"] - before["test_accuracy"], report["dense_bytes"], report["sparse_bytes"], SIZE_NOTE,
        )
        details = {"input_sparsity": report_before["sparsity"], "size_note": SIZE_NOTE,
                   "fine_tune": tuned, "input_evaluation": before}
        return self._finish(model, module, before, after, extra, {}, details, ctx)


# ---------------------------------------------------------------------------------------------
# Structured pruning: whole neurons / channels removed, smaller Linear and Conv2d layers
# ---------------------------------------------------------------------------------------------
@dataclass
class StructuredConfig:
    #: share of the neurons of every hidden Linear layer and of the output channels of every
    #: Conv2d layer (but an output layer's) removed, 0 < amount < 1
    amount: float = 0.5
    fine_tune_epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    #: incoming (L2 norm of a neuron's incoming weights / of a channel's filter) |
    #: incoming_x_outgoing (times the L2 norm of the weights that read it in the next layer)
    importance: str = "incoming"


def _stack(module, where: str):
    """The nn.Sequential holding the layer stack, and its name prefix.

    Accepted: the built-in models' layout (``standardize`` then ``body``: TabularMLP, ImageCNN),
    or an nn.Sequential whose leading parameter-free modules (the standardization) come before the
    stack.
    """
    import torch

    if isinstance(module, torch.nn.Sequential):
        return module, ""
    names = [n for n, _ in module.named_children()]
    body = getattr(module, "body", None)
    if names == ["standardize", "body"] and isinstance(body, torch.nn.Sequential):
        return body, "body."
    raise StageError(
        f"{where}: cannot prune a {type(module).__name__} with children {names}: structured pruning "
        "needs a built-in model (standardize, body: TabularMLP, ImageCNN) or an nn.Sequential of "
        "Conv2d / pooling / Flatten / Linear / activation / Dropout layers"
    )


def _plan_layers(stack, prefix: str, where: str) -> list[tuple[int, int]]:
    """The weighted layers of ``stack`` in order, as (index, group): ``group`` is how many input
    columns of that layer belong to one output of the previous weighted layer (1, or h*w for the
    first Linear after the last Conv2d's Flatten; 0 for the first layer, whose inputs stay).
    StageError naming any layer it cannot prune through."""
    import torch

    plan: list[tuple[int, int]] = []
    flattened = False  # a Flatten since the last Conv2d
    for i, layer in enumerate(stack):
        name = f"{prefix}{i}"
        kind = type(layer).__name__
        prev = stack[plan[-1][0]] if plan else None
        prev_name = f"{prefix}{plan[-1][0]}" if plan else ""
        if isinstance(layer, torch.nn.Conv2d):
            if layer.groups != 1:
                raise StageError(f"{where}: cannot prune through layer {name} (Conv2d with groups={layer.groups}): "
                                 "only ordinary (groups=1) convolutions are supported")
            if isinstance(prev, torch.nn.Linear) or (isinstance(prev, torch.nn.Conv2d) and flattened):
                raise StageError(f"{where}: cannot prune through layer {name} (Conv2d): it comes after the "
                                 f"flat features of layer {prev_name}; convolutions must come before the Flatten")
            if isinstance(prev, torch.nn.Conv2d) and prev.out_channels != layer.in_channels:
                raise StageError(f"{where}: layer {name} (Conv2d) takes {layer.in_channels} input channels but "
                                 f"layer {prev_name} (Conv2d) gives {prev.out_channels}")
            plan.append((i, 1 if plan else 0))
            flattened = False
        elif isinstance(layer, torch.nn.Linear):
            group = 1
            if isinstance(prev, torch.nn.Linear) and prev.out_features != layer.in_features:
                raise StageError(f"{where}: layer {name} (Linear) takes {layer.in_features} inputs but the "
                                 f"previous Linear gives {prev.out_features}")
            if isinstance(prev, torch.nn.Conv2d):
                if not flattened:
                    raise StageError(f"{where}: cannot prune through layer {name} (Linear): it follows layer "
                                     f"{prev_name} (Conv2d) without a Flatten in between")
                if layer.in_features % prev.out_channels:
                    raise StageError(
                        f"{where}: layer {name} (Linear) takes {layer.in_features} inputs, not a whole number of "
                        f"positions for each of the {prev.out_channels} channels of layer {prev_name} (Conv2d)"
                    )
                group = layer.in_features // prev.out_channels  # h*w consecutive columns per channel
            plan.append((i, group if plan else 0))
        elif kind in ELEMENTWISE:
            continue
        elif not plan and not any(True for _ in layer.parameters()):
            continue  # parameter-free preprocessing in front (the standardization, Unflatten)
        elif kind in SPATIAL and isinstance(prev, torch.nn.Conv2d) and not flattened:
            continue  # per-channel pooling between a Conv2d and the Flatten
        elif kind == "Flatten" and (layer.start_dim, layer.end_dim) == (1, -1) and isinstance(
                prev, (torch.nn.Conv2d, torch.nn.Linear)):
            flattened = flattened or isinstance(prev, torch.nn.Conv2d)  # on flat features: a no-op
        else:
            raise StageError(
                f"{where}: cannot prune through layer {name} ({kind}): only Conv2d (groups=1) and Linear layers, "
                f"element-wise activations ({', '.join(ELEMENTWISE[:-3])}), Dropout, Identity, "
                f"{', '.join(SPATIAL)} between convolutions and Flatten(1, -1) are supported, and parameter-free "
                "preprocessing (standardization, Unflatten) in front"
            )
    if len(plan) < 2:
        raise StageError(f"{where}: the model has {len(plan)} Linear/Conv2d layer(s) and so no hidden layer or "
                         "channel to prune")
    return plan


def _outputs(layer) -> int:
    return layer.out_channels if hasattr(layer, "out_channels") else layer.out_features


def _rebuilt(layer, rows=None, columns=None):
    """A new Linear/Conv2d holding ``layer``'s weights restricted to output ``rows`` and input
    ``columns`` (index tensors; None = all)."""
    import torch

    weight = layer.weight
    bias = layer.bias
    if rows is not None:
        weight = weight[rows]
        bias = None if bias is None else bias[rows]
    if columns is not None:
        weight = weight[:, columns]
    if isinstance(layer, torch.nn.Conv2d):
        new = torch.nn.Conv2d(weight.shape[1], weight.shape[0], layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, bias=bias is not None,
                              padding_mode=layer.padding_mode)
    else:
        new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    return new.train(layer.training)


def prune_structured_module(module, amount: float, importance: str = "incoming", where: str = "prune_structured"):
    """Remove ``amount`` of the output channels of every Conv2d and of the neurons of every hidden
    Linear layer of ``module`` in place (new, smaller layers; the last layer keeps its outputs).
    The consumer shrinks with it: the next Conv2d's input channels, the next Linear's input
    columns, or, across Flatten, the h*w columns each channel of the last Conv2d owns.
    Returns [(layer name, channels/neurons before, after)]."""
    import torch

    stack, prefix = _stack(module, where)
    plan = _plan_layers(stack, prefix, where)
    changes = []
    with torch.no_grad():
        for pos, (i, _) in enumerate(plan[:-1]):  # the output layer keeps its classes
            nxt_i, group = plan[pos + 1]
            layer, nxt = stack[i], stack[nxt_i]
            n = _outputs(layer)
            keep_n = max(1, int(round(n * (1.0 - float(amount)))))
            score = layer.weight.reshape(n, -1).norm(dim=1)  # a neuron's / filter's weights (inputs already pruned)
            if importance == "incoming_x_outgoing":
                # every weight of the next layer that reads output c: [out, n, group or kh*kw] -> [n]
                reads = nxt.weight.reshape(nxt.weight.shape[0], n, -1).transpose(0, 1)
                score = score * reads.reshape(n, -1).norm(dim=1)
            keep = torch.sort(torch.topk(score, keep_n).indices).values  # original order kept
            columns = (keep[:, None] * group + torch.arange(group, device=keep.device)).reshape(-1) \
                if group > 1 else keep
            stack[i] = _rebuilt(layer, rows=keep)
            stack[nxt_i] = _rebuilt(nxt, columns=columns)
            changes.append((f"{prefix}{i}", n, keep_n))
    return changes


def hidden_sizes(module) -> list[int]:
    """Output widths of every Linear layer but the last (what ``build_pruned_module`` takes; the
    ``hidden`` list of an ImageCNN)."""
    return [m.out_features for m in _linears(module)[:-1]]


def conv_channels(module) -> list[int]:
    """Output channels of every Conv2d layer, in order (an ImageCNN's ``conv_channels``)."""
    import torch

    return [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def pruned_architecture(module) -> dict[str, Any]:
    """The hyperparameters a model's ``build`` needs for the widths of a pruned ``module``:
    ``hidden`` (every Linear layer's output width but the last), ``conv_channels`` when it has
    convolutions, and ``hidden_sizes`` (= ``hidden``, the name earlier runs recorded)."""
    sizes = hidden_sizes(module)
    architecture: dict[str, Any] = {"hidden": list(sizes), "hidden_sizes": list(sizes)}
    channels = conv_channels(module)
    if channels:
        architecture["conv_channels"] = channels
    return architecture


def trained_model_component(model: TrainedModel, where: str) -> Optional[type[Model]]:
    """The model component that built ``model``, as its hyperparameters (or details) name it; None
    when they name none (a module built by hand). StageError when that model is not installed."""
    name = model.hyperparameters.get("model") or model.details.get("model")
    if name is None:
        return None
    from framework.plugins import default_components

    try:
        return default_components().get("model", str(name), where=f"{where}: the trained model's builder").cls
    except RecipeError as exc:
        raise StageError(str(exc)) from None


def rebuild_pruned_module(model_cls: type[Model], hp: Mapping[str, Any], n_features: int, n_classes: int,
                          state: Optional[Mapping[str, Any]] = None, where: str = "prune_structured"):
    """``model_cls().build(hp)`` of a pruned network (``hp``: its hyperparameters, with the widths
    ``pruned_architecture`` records) in eval mode, with the pruned ``state`` loaded strictly when
    given. StageError naming the model when its ``build`` cannot make that network."""
    own = {k: v for k, v in hp.items() if k in model_cls.hyperparameters}
    try:
        module = model_cls().build(own, n_features, n_classes)
        if state is not None:
            module.load_state_dict(state)
    except Exception as exc:  # a third party's build may fail any way: say which model and why
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = " ".join(lines[:2])  # torch's load error: a header line, then the first mismatch
        raise StageError(
            f"{where}: model '{model_cls.name}' cannot rebuild the pruned network from its hyperparameters "
            f"({type(exc).__name__}: {reason}); structured pruning needs a model whose build() takes the "
            f"per-layer widths it records: hidden (a list) and, with convolutions, conv_channels"
        ) from exc
    return module.eval()


class PruneStructured(_PruneCompressor):
    name = "prune_structured"
    Config = StructuredConfig
    summary = ("structured pruning: removes conv channels and hidden neurons (smaller Conv2d/Linear layers, "
               "smaller and faster ONNX) + fine-tuning")
    HEADLINE = ("parameters_before", "parameters_after", "parameter_ratio", "test_accuracy",
                "input_test_accuracy", "accuracy_delta")

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        _fraction(config.amount, key, "amount")
        _check_common(config, key)
        if str(config.importance) not in IMPORTANCE:
            raise RecipeError(f"{key}.importance: '{config.importance}' is not one of {', '.join(IMPORTANCE)}")

    def compress(self, model: TrainedModel, splits: DataSplits, ctx) -> TrainedModel:
        import torch

        from plugins.nets import count_parameters, evaluate_splits

        c = self.config
        stage = f"compress ({self.name})"
        component = trained_model_component(model, stage)
        where = stage if component is None else f"{stage}, model '{component.name}'"
        module = self._start(model, splits, where)
        _plan_layers(*_stack(module, where), where)  # a layer it cannot prune: said before any evaluation
        before = evaluate_splits(module, splits, model.classes)
        params_before = count_parameters(module)
        changes = prune_structured_module(module, float(c.amount), str(c.importance), where)
        convs = [ch for ch in changes if isinstance(module.get_submodule(ch[0]), torch.nn.Conv2d)]
        neurons = [ch for ch in changes if ch not in convs]
        architecture = pruned_architecture(module)
        if component is not None:  # the network the model's own build makes, as a reload would
            module = rebuild_pruned_module(component, {**model.hyperparameters, **architecture},
                                           len(model.schema.features), len(model.classes), module.state_dict(), stage)
        params_after = count_parameters(module)
        tuned = fine_tune(module, splits, epochs=c.fine_tune_epochs, lr=c.lr, batch_size=c.batch_size, seed=int(ctx.seed))
        after = evaluate_splits(module, splits, model.classes)
        extra: dict[str, Any] = {
            "parameters_before": params_before,
            "parameters_after": params_after,
            "parameter_ratio": params_before / params_after,
            "fine_tune_best_epoch": tuned["best_epoch"],
        }
        for k, (name, n_before, n_after) in enumerate(convs, start=1):
            extra[f"conv{k}_channels_before"] = n_before
            extra[f"conv{k}_channels_after"] = n_after
        for k, (name, n_before, n_after) in enumerate(neurons, start=1):
            extra[f"hidden{k}_neurons_before"] = n_before
            extra[f"hidden{k}_neurons_after"] = n_after
        if convs:
            ctx.metric(f"{self.name}_channels", ", ".join(f"{n}: {a} -> {b}" for n, a, b in convs))
        ctx.metric(f"{self.name}_neurons", ", ".join(f"{n}: {a} -> {b}" for n, a, b in neurons))
        ctx.logger.info(
            "%s: %sneurons %s; parameters %d -> %d (x%.2f fewer); test accuracy %.4f -> %.4f (%+.4f), "
            "best fine-tuning epoch %d",
            self.name, "".join(f"channels {n} {a}->{b}, " for n, a, b in convs),
            ", ".join(f"{n} {a}->{b}" for n, a, b in neurons), params_before, params_after,
            params_before / params_after, before["test_accuracy"], after["test_accuracy"],
            after["test_accuracy"] - before["test_accuracy"], tuned["best_epoch"],
        )
        layers = [{"layer": n, "kind": "Conv2d", "channels_before": a, "channels_after": b} for n, a, b in convs]
        layers += [{"layer": n, "kind": "Linear", "neurons_before": a, "neurons_after": b} for n, a, b in neurons]
        details = {"layers": layers, "fine_tune": tuned, "input_evaluation": before}
        return self._finish(model, module, before, after, extra, architecture, details, ctx)


@hookimpl
def register_compressors():
    return [PruneMagnitude, PruneStructured]
