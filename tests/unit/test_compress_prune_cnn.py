"""``prune_structured`` on a small CNN (plugins.nets.ImageCNN, conv [16, 32], hidden 64) trained
in-process on scikit-learn's 8x8 digits: conv channels and hidden neurons really removed, the
pruned network exports to a smaller ONNX file, rebuilds from its recorded hyperparameters."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from framework.components import DataSplits, Dataset, FeatureSpec, InputSchema, TrainedModel
from framework.context import RunStageContext
from framework.errors import StageError
from plugins.compress_prune import (
    PruneStructured, conv_channels, count_parameters, evaluate, hidden_sizes, prune_structured_module,
)

HP = {"conv_channels": [16, 32], "hidden": 64, "kernel_size": 3, "dropout": 0.0}


def digits_splits(seed: int = 0) -> DataSplits:
    """load_digits (1797 rows, 64 pixel features, classes "0".."9"), 70/15/15 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits(as_frame=True)
    frame = raw.frame.copy()
    frame["target"] = frame["target"].astype(str)
    features = [str(c) for c in raw.feature_names]
    dataset = Dataset("digits", frame, features, "target", classes=[str(i) for i in range(10)])
    train, rest = train_test_split(frame, test_size=0.3, stratify=frame["target"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["target"], random_state=seed)
    return DataSplits(dataset, train, val, test)


def train_cnn(splits: DataSplits, hp: dict, epochs: int = 15, seed: int = 0) -> TrainedModel:
    """CNNModel().build(hp), mini-batch (64) Adam lr 3e-3, seeded."""
    import torch

    from plugins.model_cnn import CNNModel
    from plugins.nets import train_epoch, training_stats

    torch.manual_seed(seed)
    x, y = splits.arrays("train")
    module = CNNModel().build(hp, x.shape[1], 10, *training_stats(x))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(module, optimizer, len(xt), 64, generator,
                    lambda idx: torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]))
    module.eval()
    classes = list(splits.dataset.classes)
    metrics = {k: v for k, v in evaluate(module, splits, classes).items() if k != "val_loss"}
    schema = InputSchema([FeatureSpec(n, "float") for n in splits.dataset.features])
    return TrainedModel(module, schema, classes, metrics, hyperparameters=dict(hp), details={"trial_id": "cnn"})


@pytest.fixture(scope="module")
def threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: threads only add contention on 2 cores
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return digits_splits()


@pytest.fixture(scope="module")
def trained(splits, threads) -> TrainedModel:
    return train_cnn(splits, HP)


@pytest.fixture(scope="module")
def pruned(trained, splits, tmp_path_factory):
    """(input state before compressing, the stage context, the pruned TrainedModel)."""
    before = {k: v.clone() for k, v in trained.module.state_dict().items()}
    ctx = RunStageContext(stage="compress", out_dir=tmp_path_factory.mktemp("compress"), seed=0)
    # the default fine-tuning (10 epochs, batch 32, ~2 s): 3 epochs leave 2-3 points lost at 50%
    config = PruneStructured.Config(amount=0.5, fine_tune_epochs=10)
    return before, ctx, PruneStructured(config).compress(trained, splits, ctx)


def _conv_weights(module) -> list:
    import torch

    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def test_channels_and_neurons_halved_accuracy_kept(trained, pruned):
    import torch

    before, ctx, result = pruned
    m = result.metrics
    assert trained.metrics["test_accuracy"] >= 0.97  # a real digits CNN to prune
    assert conv_channels(trained.module) == [16, 32] and hidden_sizes(trained.module) == [64]
    assert conv_channels(result.module) == [8, 16] and hidden_sizes(result.module) == [32]
    assert (m["conv1_channels_before"], m["conv1_channels_after"]) == (16, 8)
    assert (m["conv2_channels_before"], m["conv2_channels_after"]) == (32, 16)
    assert (m["hidden1_neurons_before"], m["hidden1_neurons_after"]) == (64, 32)
    assert "hidden2_neurons_before" not in m  # the output layer keeps its 10 classes
    # the layers really are smaller: conv-conv weights a quarter, first Linear a quarter
    body_before, body_after = trained.module.body, result.module.body
    assert tuple(body_after[1].weight.shape) == (8, 1, 3, 3)
    assert tuple(body_after[4].weight.shape) == (16, 8, 3, 3)
    assert _conv_weights(result.module)[1].numel() * 4 == _conv_weights(trained.module)[1].numel()
    assert body_after[8].weight.numel() * 4 == body_before[8].weight.numel()  # (64, 32*2*2) -> (32, 16*2*2)
    assert tuple(body_after[-1].weight.shape) == (10, 32)
    assert m["parameters_after"] == count_parameters(result.module)
    assert m["parameters_after"] <= 0.3 * m["parameters_before"]
    # accuracy after fine-tuning: at most 2 points lost
    assert m["input_test_accuracy"] == pytest.approx(trained.metrics["test_accuracy"])
    assert m["accuracy_delta"] >= -0.02
    # bookkeeping: per-layer report, metrics in the context, architecture in the hyperparameters
    assert result.details["layers"] == [
        {"layer": "body.1", "kind": "Conv2d", "channels_before": 16, "channels_after": 8},
        {"layer": "body.4", "kind": "Conv2d", "channels_before": 32, "channels_after": 16},
        {"layer": "body.8", "kind": "Linear", "neurons_before": 64, "neurons_after": 32},
    ]
    assert ctx.metrics["prune_structured_channels"] == "body.1: 16 -> 8, body.4: 32 -> 16"
    assert ctx.metrics["prune_structured_neurons"] == "body.8: 64 -> 32"
    hp = result.hyperparameters
    assert (hp["conv_channels"], hp["hidden"], hp["hidden_sizes"]) == ([8, 16], [32], [32])
    assert hp["kernel_size"] == 3 and hp["prune_structured"]["amount"] == 0.5
    assert result.details["teacher_metrics"] == trained.metrics
    # the standardization is kept; the input model is untouched
    assert torch.equal(result.module.standardize.std, trained.module.standardize.std)
    assert conv_channels(trained.module) == [16, 32]
    assert trained.hyperparameters == HP
    assert all(torch.equal(before[k], v) for k, v in trained.module.state_dict().items())


def test_rebuilt_from_hyperparameters_loads_strictly(pruned, splits):
    import io

    import torch

    from plugins.model_cnn import CNNModel

    _, _, result = pruned
    buf = io.BytesIO()
    torch.save(result.module.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    hp = result.hyperparameters
    empty = CNNModel().build({**hp, "conv_channels": hp["conv_channels"], "hidden": hp["hidden"]}, 64, 10).eval()
    empty.load_state_dict(state, strict=True)
    x_test, _ = splits.arrays("test")
    with torch.no_grad():
        assert torch.equal(empty(torch.tensor(x_test)), result.module(torch.tensor(x_test)))


def test_exports_smaller_onnx_that_matches_torch(trained, pruned, splits, tmp_path):
    import onnx

    from plugins.export_onnx import INPUT_NAME, OUTPUT_NAME, export_module, ort_session
    from plugins.nets import logits_of

    _, _, result = pruned
    x_test, _ = splits.arrays("test")
    big = export_module(trained.module, x_test[:8], tmp_path / "full" / "model.onnx")
    small = export_module(result.module, x_test[:8], tmp_path / "pruned" / "model.onnx")
    onnx.checker.check_model(str(small))
    assert small.stat().st_size < 0.35 * big.stat().st_size
    # the exported graph outputs softmax(logits): compare its log with torch's log-softmax
    got = ort_session(small).run([OUTPUT_NAME], {INPUT_NAME: x_test})[0]
    logits = logits_of(result.module, x_test)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.allclose(got, expected, atol=1e-5)
    assert np.array_equal(got.argmax(1), logits.argmax(1))
    single = ort_session(small).run([OUTPUT_NAME], {INPUT_NAME: x_test[:1]})[0]
    assert np.allclose(single, expected[:1], atol=1e-5)


def test_pruning_is_exact_for_the_channels_it_keeps(trained, splits):
    """Without fine-tuning, the pruned network computes what the original one computes with the
    removed channels / neurons zeroed: the consumer columns (conv inputs, the h*w Flatten columns
    of each channel) are the right ones."""
    import torch

    module = copy.deepcopy(trained.module)
    body = module.body
    with torch.no_grad():  # make the channels to drop the weakest ones, and known
        drop = {1: [0, 3, 5, 6, 9, 10, 12, 15], 4: list(range(1, 32, 2)), 8: list(range(0, 64, 2))}
        for i, rows in drop.items():
            body[i].weight[rows] *= 1e-3
    reference = copy.deepcopy(module)
    with torch.no_grad():
        for i, rows in drop.items():
            reference.body[i].weight[rows] = 0.0
            reference.body[i].bias[rows] = 0.0
    for importance in ("incoming", "incoming_x_outgoing"):
        pruned = copy.deepcopy(module)
        changes = prune_structured_module(pruned, 0.5, importance)
        assert changes == [("body.1", 16, 8), ("body.4", 32, 16), ("body.8", 64, 32)]
        x_test, _ = splits.arrays("test")
        with torch.no_grad():
            got = pruned.eval()(torch.tensor(x_test))
            want = reference.eval()(torch.tensor(x_test))
        assert torch.allclose(got, want, atol=1e-5)
        kept = [r for r in range(16) if r not in drop[1]]
        assert torch.equal(pruned.body[1].weight, module.body[1].weight[kept])


def test_plain_sequential_cnn_avgpool_no_bias_dilation(splits, threads, tmp_path):
    import torch

    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)),
        torch.nn.Conv2d(1, 12, 3, padding=1, bias=False), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(12, 8, 3, padding=2, dilation=2), torch.nn.ReLU(), torch.nn.Dropout2d(0.0),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10),
    ).eval()
    model = TrainedModel(seq, InputSchema([FeatureSpec(n) for n in splits.dataset.features]),
                         list(splits.dataset.classes), {}, {})
    ctx = RunStageContext("compress", tmp_path, seed=0)
    config = PruneStructured.Config(amount=0.25, fine_tune_epochs=0, importance="incoming_x_outgoing")
    result = PruneStructured(config).compress(model, splits, ctx)
    pruned = result.module
    assert conv_channels(pruned) == [9, 6] and hidden_sizes(pruned) == []
    assert pruned[1].bias is None and pruned[4].dilation == (2, 2) and tuple(pruned[8].weight.shape) == (10, 6 * 16)
    assert result.hyperparameters["conv_channels"] == [9, 6] and result.hyperparameters["hidden"] == []
    assert ctx.metrics["prune_structured_neurons"] == ""
    assert conv_channels(seq) == [12, 8]
    # not fine-tuned: the same outputs as the original with the removed channels zeroed
    reference = copy.deepcopy(seq)
    with torch.no_grad():
        kept_first = [r for r in range(12) if any(
            torch.equal(seq[1].weight[r], w) for w in pruned[1].weight)]
        assert len(kept_first) == 9
        reference[1].weight[[r for r in range(12) if r not in kept_first]] = 0.0
        kept_second = [r for r in range(8) if any(
            torch.equal(seq[4].weight[r][kept_first], w) for w in pruned[4].weight)]
        assert len(kept_second) == 6
        dropped = [r for r in range(8) if r not in kept_second]
        reference[4].weight[dropped] = 0.0
        reference[4].bias[dropped] = 0.0
        x_test, _ = splits.arrays("test")
        assert torch.allclose(pruned(torch.tensor(x_test)), reference(torch.tensor(x_test)), atol=1e-5)


def _refused(module, splits, message, where):
    model = TrainedModel(module, InputSchema([FeatureSpec(n) for n in splits.dataset.features]),
                         list(splits.dataset.classes), {}, {})
    with pytest.raises(StageError, match=message):
        PruneStructured(PruneStructured.Config(fine_tune_epochs=0)).compress(model, splits, RunStageContext("c", where))


def test_refuses_layers_it_cannot_prune_through(trained, splits, tmp_path):
    import torch

    from plugins.nets import ImageCNN

    # a BatchNorm2d after the first conv: named, with its position in the body
    module = copy.deepcopy(trained.module)
    layers = list(module.body)
    module.body = torch.nn.Sequential(*layers[:2], torch.nn.BatchNorm2d(16), *layers[2:])
    _refused(module, splits, r"prune_structured\): cannot prune through layer body\.2 \(BatchNorm2d\)", tmp_path)

    def seq(*layers):
        return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), *layers)

    grouped = seq(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1, groups=2),
                  torch.nn.Flatten(), torch.nn.Linear(256, 10))
    _refused(grouped, splits, r"layer 2 \(Conv2d with groups=2\)", tmp_path)
    no_flatten = seq(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(8, 10))
    _refused(no_flatten, splits, r"layer 2 \(Linear\): it follows layer 1 \(Conv2d\) without a Flatten", tmp_path)
    odd_linear = seq(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(254, 10))
    _refused(odd_linear, splits, r"layer 3 \(Linear\) takes 254 inputs, not a whole number .* 4 channels of layer 1",
             tmp_path)
    mismatch = seq(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(5, 4, 3, padding=1))
    _refused(mismatch, splits, r"layer 2 \(Conv2d\) takes 5 input channels but layer 1 \(Conv2d\) gives 4", tmp_path)
    pool_after_flatten = seq(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.MaxPool1d(2),
                             torch.nn.Linear(128, 10))
    _refused(pool_after_flatten, splits, r"layer 3 \(MaxPool1d\)", tmp_path)
    unflatten_inside = seq(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(256, 64),
                           torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(),
                           torch.nn.Linear(72, 10))
    _refused(unflatten_inside, splits, r"layer 4 \(Unflatten\)", tmp_path)
    single = ImageCNN(64, 10, conv_channels=[], hidden=[])
    _refused(single, splits, "1 Linear/Conv2d layer.* no hidden layer", tmp_path)
