"""Batch predictor ``ray_data``: the exported ONNX file over a table with Ray Data, in parallel.

The frame is cut into blocks and streamed through ``map_batches`` to ``concurrency`` scoring
actors (a class-based UDF: each builds one onnxruntime session, once), each holding
``num_cpus`` CPUs and feeding ``batch_size`` rows per call, built exactly as the server builds
them from JSON (``InputLayout.feeds``: raw typed rows, strings and missing values), so batch and
online answers agree. Each answer carries the time its batch was scored (``computed_at``). Runs
on whatever Ray the run uses: the local one, or a cluster (``ray.address``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

from framework import BatchConfig, BatchPredictor, hookimpl
from framework.errors import RecipeError, StageError

#: seconds to wait for the CPUs the scoring actors need (a previous job's actors releasing theirs)
FREE_WAIT_S = 15.0
#: the position column the scorer carries, so answers go back to their rows in any order
ROW = "__row__"
ANSWER = "__answer__"
NODE = "__node__"


class OnnxScorer:
    """The Ray Data UDF: one onnxruntime session per actor; a pandas batch in, answers out."""

    def __init__(self, onnx_bytes: bytes, layout: dict, output_name: str, regression: bool, threads: int):
        import onnxruntime as ort

        from framework import InputLayout

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # the actor's CPUs, no more: actors share the machine
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.layout = InputLayout(**layout)
        self.output_name = output_name
        self.regression = regression
        import ray

        # which node answered (a number: cheap to ship back), for the "nodes" metric
        self.node = int(ray.get_runtime_context().get_node_id()[:15], 16)

    def __call__(self, batch):
        import time

        import numpy as np

        out = self.session.run([self.output_name], self.layout.feeds(batch))[0]
        # numbers only on the way back (a class index, not its label): cheap to ship through Arrow
        answer = out[:, 0].astype(np.float64) if self.regression else out.argmax(axis=1).astype(np.int32)
        return {ROW: batch[ROW].to_numpy(), ANSWER: answer, "computed_at": np.full(len(answer), time.time()),
                NODE: np.full(len(answer), self.node, dtype=np.int64)}


class RayDataBatchPredictor(BatchPredictor):
    name = "ray_data"
    summary = "the exported ONNX file over any data version with Ray Data (map_batches, parallel actors)"

    @dataclass
    class Config(BatchConfig):
        #: rows per onnxruntime call
        batch_size: int = 4096
        #: CPUs each scoring actor holds (and onnxruntime threads it uses, rounded up)
        num_cpus: float = 1.0
        #: scoring actors running at once
        concurrency: int = 1
        #: rows per Ray Data block (0: enough blocks to keep every actor busy)
        block_rows: int = 0

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        super().check_config(config, key, refs)
        if int(config.batch_size) < 1:
            raise RecipeError(f"{key}.batch_size: must be >= 1, got {config.batch_size}")
        if not (isinstance(config.num_cpus, (int, float)) and 0 < float(config.num_cpus) <= 256):
            raise RecipeError(f"{key}.num_cpus: CPUs per scoring actor, a number in (0, 256], got {config.num_cpus}")
        if int(config.concurrency) < 1:
            raise RecipeError(f"{key}.concurrency: scoring actors, must be >= 1, got {config.concurrency}")
        if int(config.block_rows) < 0:
            raise RecipeError(f"{key}.block_rows: must be >= 0 (0: automatic), got {config.block_rows}")

    def predict(self, model, frame, ctx):
        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import ray

        if not ray.is_initialized():
            raise StageError("batch (ray_data): Ray is not running; the batch stage starts it in a run")
        c = self.config
        wanted = float(c.num_cpus) * int(c.concurrency)
        deadline = time.monotonic() + FREE_WAIT_S
        # the actors of a previous job give their CPUs back a moment after it ends
        while (free := float(ray.available_resources().get("CPU", 0.0))) < wanted and time.monotonic() < deadline:
            time.sleep(0.2)
        if wanted > free:  # Ray Data would wait for CPUs that never come
            total = float(ray.cluster_resources().get("CPU", 0.0))
            raise StageError(f"batch (ray_data): batch.num_cpus x batch.concurrency = {wanted:g} CPUs, but the Ray "
                             f"cluster has {free:g} free (of {total:g}); lower them or give Ray more (ray.num_cpus)")
        columns = list(dict.fromkeys(model.schema.names))
        rows = frame[columns].copy()
        rows[ROW] = np.arange(len(rows))
        concurrency = int(c.concurrency)
        block = int(c.block_rows) or max(int(c.batch_size), math.ceil(len(rows) / (concurrency * 4)) or 1)
        # Arrow blocks: strings and missing values cross to the actors without pickling objects;
        # each actor sees them as pandas again, the frame the server's feeds are built from
        blocks = [pa.Table.from_pandas(rows.iloc[i:i + block], preserve_index=False)
                  for i in range(0, len(rows), block)] or [pa.Table.from_pandas(rows, preserve_index=False)]
        ds = ray.data.from_arrow(blocks)
        regression = getattr(model, "task", "classification") == "regression"
        scored = ds.map_batches(
            OnnxScorer,
            fn_constructor_kwargs={"onnx_bytes": model.path.read_bytes(), "layout": model.layout.to_dict(),
                                   "output_name": model.output_name, "regression": regression,
                                   "threads": max(1, math.ceil(float(c.num_cpus)))},
            batch_size=int(c.batch_size), batch_format="pandas", num_cpus=float(c.num_cpus),
            compute=ray.data.ActorPoolStrategy(size=concurrency),
        )
        progress = ctx.progress(len(rows), "batch rows")
        positions, answers, times, nodes = [], [], [], set()
        for part in scored.iter_batches(batch_format="numpy", batch_size=None):
            positions.append(part[ROW])
            answers.append(part[ANSWER])
            times.append(part["computed_at"])
            nodes.update(np.unique(part[NODE]).tolist())
            progress.advance(len(part[ROW]))
        position = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        if len(position) != len(frame) or not np.array_equal(np.sort(position), np.arange(len(frame))):
            raise StageError(f"batch (ray_data): {len(position)} answers for {len(frame)} rows")
        order = np.argsort(position, kind="stable")  # answers come back in any order
        answer = np.concatenate(answers)[order]
        labels = answer if regression else np.asarray(list(model.classes), dtype=object)[answer]
        computed = pd.to_datetime(np.concatenate(times)[order], unit="s", utc=True)
        ctx.metric("blocks", len(blocks))
        ctx.metric("nodes", len(nodes))  # Ray nodes whose actors scored rows
        return pd.DataFrame({"prediction": labels, "computed_at": computed}, index=frame.index)


@hookimpl
def register_batch_predictors():
    return [RayDataBatchPredictor]
