"""Shared fixtures: one Ray instance and one Serve HTTP port for the whole test session."""
from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once (2 CPUs, no dashboard, loopback) and shut it down at the end."""
    from framework.engine import start_ray, stop_ray

    start_ray(num_cpus=2)
    yield
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    stop_ray()


@pytest.fixture(scope="session")
def serve_port(ray_session) -> int:
    """The loopback port Ray Serve's HTTP proxy listens on for this session (fixed once started)."""
    return int(os.environ.get("FRAMEWORK_TEST_SERVE_PORT") or _free_port())


@pytest.fixture
def stage_ctx(tmp_path):
    from framework.context import RunStageContext

    def make(stage: str = "test", seed: int = 0) -> RunStageContext:
        return RunStageContext(stage=stage, out_dir=tmp_path / stage, seed=seed)

    return make


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory):
    """A 30 -> 256 -> 2 MLP trained briefly in-process on breast cancer (framework.testing's
    splits), exported as the onnx exporter does: built once for every compression/device test."""
    import torch

    from framework.components import ExportedModel, FeatureSpec, InputSchema
    from framework.testing.data import breast_cancer_splits
    from plugins.export_onnx import INPUT_NAME, OUTPUT_NAME, export_module
    from plugins.model_mlp import build_mlp as build_module

    splits = breast_cancer_splits()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add contention on a shared CI machine
    try:
        x, y = splits.arrays("train")
        module = build_module({"hidden": 256, "lr": 0.01, "dropout": 0.0}, x.shape[1], 2, x.mean(0), x.std(0))
        optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
        xt, yt = torch.tensor(x), torch.tensor(y)
        for _ in range(30):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xt), yt).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    x_test, _ = splits.arrays("test")
    path = export_module(module.eval(), x_test[:8], tmp_path_factory.mktemp("export") / "model.onnx")
    schema = InputSchema([FeatureSpec(n, "float") for n in splits.dataset.features])
    return ExportedModel(path, "onnx", schema, list(splits.dataset.classes), INPUT_NAME, OUTPUT_NAME)


@pytest.fixture(scope="session")
def train_mlp_model():
    """A factory: ``train_mlp_model(hp, epochs)`` -> a TrainedModel of the trainer's MLP, trained
    in-process on breast cancer (mini-batch Adam, seeded): the input of the compressor tests."""

    def train(hp: dict, epochs: int):
        import torch

        from framework.components import FeatureSpec, InputSchema, TrainedModel
        from framework.testing.data import breast_cancer_splits
        from plugins.compress_prune import evaluate
        from plugins.model_mlp import build_mlp as build_module
        from plugins.nets import train_epoch, training_stats

        splits = breast_cancer_splits()
        torch.manual_seed(0)
        x, y = splits.arrays("train")
        module = build_module(hp, x.shape[1], 2, *training_stats(x))
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        xt, yt = torch.tensor(x), torch.tensor(y)
        generator = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            train_epoch(module, optimizer, len(xt), 32, generator,
                        lambda idx: torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]))
        module.eval()
        classes = list(splits.dataset.classes)
        metrics = {k: v for k, v in evaluate(module, splits, classes).items() if k != "val_loss"}
        schema = InputSchema([FeatureSpec(n, "float") for n in splits.dataset.features])
        return TrainedModel(module, schema, classes, metrics, hyperparameters=dict(hp), details={"trial_id": "t0"})

    return train
