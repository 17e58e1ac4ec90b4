"""Compressors ``prune_magnitude`` and ``prune_structured``: pruning of the trained torch MLP.

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
  of the next one), ranked by the L2 norm of their incoming weights (optionally times the norm of
  their outgoing weights). The network is rebuilt with smaller ``nn.Linear`` layers, so the
  exported ONNX file really is smaller and faster.

Importing this module is cheap: torch is imported inside functions.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from framework import Compressor, DataSplits, TrainedModel, hookimpl
from framework.errors import RecipeError, StageError

#: how a hidden neuron is ranked by ``prune_structured``
IMPORTANCE = ("incoming", "incoming_x_outgoing")
#: layers ``prune_structured`` may keep between two Linear layers: element-wise, no parameters
ELEMENTWISE = ("ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "ELU", "Mish", "Hardtanh", "ReLU6",
               "Dropout", "AlphaDropout", "Identity")

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
    return int(sum(p.numel() for p in module.parameters()))


def _linears(module) -> list:
    import torch

    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def evaluate(module, splits: DataSplits, classes: list) -> dict:
    """val/test accuracy, test macro F1 and test loss, as the trainer reports them."""
    from sklearn.metrics import f1_score

    from plugins.train_tune_mlp import _evaluate

    x_val, y_val = splits.arrays("val")
    x_test, y_test = splits.arrays("test")
    val_acc, val_loss, _ = _evaluate(module, x_val, y_val)
    test_acc, test_loss, pred = _evaluate(module, x_test, y_test)
    f1 = float(f1_score(y_test, pred, average="macro", labels=list(range(len(classes))), zero_division=0))
    return {"val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc,
            "test_f1_macro": f1, "test_loss": test_loss}


def fine_tune(module, splits: DataSplits, *, epochs: int, lr: float, batch_size: int, seed: int) -> dict:
    """Adam on the train split for ``epochs``; the best state on the validation split (accuracy,
    then loss; epoch 0 = as pruned) is loaded back. Returns {best_epoch, best_val_accuracy}."""
    import torch

    from plugins.train_tune_mlp import _evaluate

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
        module.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), int(batch_size)):
            idx = order[start:start + int(batch_size)]
            optimizer.zero_grad()
            loss_fn(module(xt[idx]), yt[idx]).backward()
            optimizer.step()
        acc, loss, _ = _evaluate(module, x_val, y_val)
        if (acc, -loss) > best:
            best, best_epoch, best_state = (acc, -loss), epoch, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    module.eval()
    return {"best_epoch": best_epoch, "best_val_accuracy": best[0]}


class _PruneCompressor(Compressor):
    level: ClassVar[str] = "model"

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.check_config(self.config, "compress")  # constructed directly (tests, notebooks)

    def _start(self, model: TrainedModel, splits: DataSplits):
        where = f"compress ({self.name})"
        for part in ("train", "val", "test"):
            if len(getattr(splits, part)) == 0:
                raise StageError(f"{where}: the {part} split is empty")
        import torch

        if not isinstance(model.module, torch.nn.Module):
            raise StageError(f"{where}: needs a torch nn.Module, got {type(model.module).__name__}")
        return where, copy.deepcopy(model.module).eval()  # the input model stays as it was

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
    def check_config(cls, config: Any, key: str) -> None:
        _fraction(config.sparsity, key, "sparsity")
        _check_common(config, key)

    def compress(self, model: TrainedModel, splits: DataSplits, ctx) -> TrainedModel:
        from torch.nn.utils import prune

        c = self.config
        where, module = self._start(model, splits)
        linears = _linears(module)
        if not linears:
            raise StageError(f"{where}: the model ({type(module).__name__}) has no nn.Linear layer to prune")
        before = evaluate(module, splits, model.classes)
        report_before = sparsity_report(module)
        prune.global_unstructured([(m, "weight") for m in linears], pruning_method=prune.L1Unstructured,
                                  amount=float(c.sparsity))
        # the masks stay in place while fine-tuning: pruned weights get gradients but stay zero
        tuned = fine_tune(module, splits, epochs=c.fine_tune_epochs, lr=c.lr, batch_size=c.batch_size, seed=int(ctx.seed))
        for m in linears:
            prune.remove(m, "weight")  # weight = weight_orig * mask, a plain parameter again
        module.eval()
        after = evaluate(module, splits, model.classes)
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
# Structured pruning: whole neurons removed, smaller Linear layers
# ---------------------------------------------------------------------------------------------
@dataclass
class StructuredConfig:
    #: share of the neurons of every hidden Linear layer removed, 0 < amount < 1
    amount: float = 0.5
    fine_tune_epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    #: incoming (L2 norm of a neuron's incoming weights) | incoming_x_outgoing (times the L2
    #: norm of its outgoing weights)
    importance: str = "incoming"


def _stack(module, where: str):
    """The nn.Sequential holding the Linear/activation/Dropout stack, and its name prefix.

    Accepted: the trainer's TabularMLP (``standardize`` then ``body``), or an nn.Sequential whose
    leading parameter-free modules (the standardization) come before the stack.
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
        "needs the trainer's TabularMLP (standardize, body) or an nn.Sequential of Linear / activation / Dropout layers"
    )


def _plan_layers(stack, prefix: str, where: str) -> list[int]:
    """Indices of the Linear layers in ``stack``; StageError naming any layer it cannot handle."""
    import torch

    linear_idx: list[int] = []
    for i, layer in enumerate(stack):
        name = f"{prefix}{i}"
        kind = type(layer).__name__
        if isinstance(layer, torch.nn.Linear):
            if linear_idx and stack[linear_idx[-1]].out_features != layer.in_features:
                raise StageError(f"{where}: layer {name} (Linear) takes {layer.in_features} inputs but the "
                                 f"previous Linear gives {stack[linear_idx[-1]].out_features}")
            linear_idx.append(i)
        elif kind in ELEMENTWISE:
            continue
        elif not linear_idx and not any(True for _ in layer.parameters()):
            continue  # parameter-free preprocessing in front (the standardization)
        else:
            raise StageError(
                f"{where}: cannot prune through layer {name} ({kind}): only Linear layers, element-wise "
                f"activations ({', '.join(ELEMENTWISE[:-3])}), Dropout and Identity are supported"
            )
    if len(linear_idx) < 2:
        raise StageError(f"{where}: the model has {len(linear_idx)} Linear layer(s) and so no hidden layer to prune")
    return linear_idx


def prune_structured_module(module, amount: float, importance: str = "incoming", where: str = "prune_structured"):
    """Remove ``amount`` of the neurons of every hidden Linear layer of ``module`` in place
    (new, smaller nn.Linear layers). Returns [(layer name, neurons before, neurons after)]."""
    import torch

    stack, prefix = _stack(module, where)
    linear_idx = _plan_layers(stack, prefix, where)
    changes = []
    with torch.no_grad():
        for pos, i in enumerate(linear_idx[:-1]):  # the output layer keeps its classes
            layer, nxt_i = stack[i], linear_idx[pos + 1]
            nxt = stack[nxt_i]
            n = layer.out_features
            keep_n = max(1, int(round(n * (1.0 - float(amount)))))
            score = layer.weight.norm(dim=1)  # incoming weights of each neuron (inputs already pruned)
            if importance == "incoming_x_outgoing":
                score = score * nxt.weight.norm(dim=0)
            keep = torch.sort(torch.topk(score, keep_n).indices).values  # original order kept
            new = torch.nn.Linear(layer.in_features, keep_n, bias=layer.bias is not None)
            new.weight.copy_(layer.weight[keep])
            if layer.bias is not None:
                new.bias.copy_(layer.bias[keep])
            new_next = torch.nn.Linear(keep_n, nxt.out_features, bias=nxt.bias is not None)
            new_next.weight.copy_(nxt.weight[:, keep])
            if nxt.bias is not None:
                new_next.bias.copy_(nxt.bias)
            stack[i], stack[nxt_i] = new, new_next
            changes.append((f"{prefix}{i}", n, keep_n))
    return changes


def hidden_sizes(module) -> list[int]:
    """Output widths of every Linear layer but the last (what ``build_pruned_module`` takes)."""
    return [m.out_features for m in _linears(module)[:-1]]


def build_pruned_module(hp: dict, sizes: list[int], n_features: int, n_classes: int):
    """An empty TabularMLP with per-layer hidden widths ``sizes``, to load a pruned state_dict into
    (``hp``: the trainer's hyperparameters, for the dropout)."""
    import torch

    from plugins.train_tune_mlp import build_module, with_defaults

    hp = with_defaults({**hp, "hidden": sizes[0] if sizes else 1, "layers": len(sizes)})
    module = build_module(hp, n_features, n_classes)
    width, blocks = n_features, []
    for size in sizes:
        blocks += [torch.nn.Linear(width, int(size)), torch.nn.ReLU(), torch.nn.Dropout(float(hp["dropout"]))]
        width = int(size)
    blocks.append(torch.nn.Linear(width, int(n_classes)))
    module.body = torch.nn.Sequential(*blocks)
    return module.eval()


class PruneStructured(_PruneCompressor):
    name = "prune_structured"
    Config = StructuredConfig
    summary = "structured pruning: removes hidden neurons (smaller Linear layers, smaller and faster ONNX) + fine-tuning"
    HEADLINE = ("parameters_before", "parameters_after", "parameter_ratio", "test_accuracy",
                "input_test_accuracy", "accuracy_delta")

    @classmethod
    def check_config(cls, config: Any, key: str) -> None:
        _fraction(config.amount, key, "amount")
        _check_common(config, key)
        if str(config.importance) not in IMPORTANCE:
            raise RecipeError(f"{key}.importance: '{config.importance}' is not one of {', '.join(IMPORTANCE)}")

    def compress(self, model: TrainedModel, splits: DataSplits, ctx) -> TrainedModel:
        c = self.config
        where, module = self._start(model, splits)
        before = evaluate(module, splits, model.classes)
        params_before = count_parameters(module)
        changes = prune_structured_module(module, float(c.amount), str(c.importance), where)
        params_after = count_parameters(module)
        tuned = fine_tune(module, splits, epochs=c.fine_tune_epochs, lr=c.lr, batch_size=c.batch_size, seed=int(ctx.seed))
        after = evaluate(module, splits, model.classes)
        extra: dict[str, Any] = {
            "parameters_before": params_before,
            "parameters_after": params_after,
            "parameter_ratio": params_before / params_after,
            "fine_tune_best_epoch": tuned["best_epoch"],
        }
        for k, (name, n_before, n_after) in enumerate(changes, start=1):
            extra[f"hidden{k}_neurons_before"] = n_before
            extra[f"hidden{k}_neurons_after"] = n_after
        ctx.metric(f"{self.name}_neurons", ", ".join(f"{n}: {a} -> {b}" for n, a, b in changes))
        ctx.logger.info(
            "%s: neurons %s; parameters %d -> %d (x%.2f fewer); test accuracy %.4f -> %.4f (%+.4f), "
            "best fine-tuning epoch %d",
            self.name, ", ".join(f"{n} {a}->{b}" for n, a, b in changes), params_before, params_after,
            params_before / params_after, before["test_accuracy"], after["test_accuracy"],
            after["test_accuracy"] - before["test_accuracy"], tuned["best_epoch"],
        )
        sizes = hidden_sizes(module)
        details = {"layers": [{"layer": n, "neurons_before": a, "neurons_after": b} for n, a, b in changes],
                   "fine_tune": tuned, "input_evaluation": before}
        return self._finish(model, module, before, after, extra, {"hidden_sizes": sizes}, details, ctx)


@hookimpl
def register_compressors():
    return [PruneMagnitude, PruneStructured]
