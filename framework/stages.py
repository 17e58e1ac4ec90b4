"""The stages of a run: what each does with its plugin components and the core services
(registry, serving). ``run.py`` calls them in plan order through ``RUNNERS``."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .components import DataSplits, ExportedModel, InputSchema, ServedWindow, TrainedModel
from .context import RunStageContext
from .errors import StageError
from .plan import Plan, PlannedStage, this_run_rank
from .plugins import Components


@dataclass
class RunState:
    """What earlier stages hand to later ones."""

    dataset: Any = None
    splits: DataSplits | None = None
    data_version: Any = None
    trained: Any = None
    exported: ExportedModel | None = None
    model_version: Any = None
    exports: dict[int, ExportedModel] = field(default_factory=dict)  # candidate rank -> export
    model_versions: dict[int, Any] = field(default_factory=dict)  # candidate rank -> version
    #: the best candidate's export, then each ONNX-level compression of it: {name, exported, version}
    variants: list[dict] = field(default_factory=list)
    variant_table: list[dict] = field(default_factory=list)  # their measured comparison
    app: Any = None
    registry: Any = None


@functools.lru_cache(maxsize=1)
def _code_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            return rev.stdout.strip()[:12] + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, sort_keys=False))
    os.replace(tmp, path)


def _stage_data(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    dataset = stage.component.build().load(ctx)
    if dataset.target not in dataset.frame.columns:
        raise StageError(f"data ({stage.component.type}): target column '{dataset.target}' is not in the frame")
    if dataset.classes is None:
        dataset.classes = sorted(dataset.frame[dataset.target].unique().tolist())
    state.dataset = dataset
    ctx.metric("rows", int(len(dataset.frame)))
    ctx.metric("features", len(dataset.features))
    ctx.metric("classes", len(dataset.classes))


def _stage_checks(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    passed = 0
    reports = []
    for planned in stage.components:
        report = planned.build().check(state.dataset, ctx)
        reports.append(dataclasses.asdict(report))
        if report.passed:
            passed += 1
        else:
            ctx.logger.warning("non-blocking check %s failed: %s", planned.key, report.failures)
    _write_json(ctx.out_dir / "reports.json", reports)
    ctx.metric("checks_passed", f"{passed}/{len(stage.components)}")


def _split(plan: Plan, dataset: Any) -> DataSplits:
    from sklearn.model_selection import train_test_split

    cfg = plan.recipe.split
    frame = dataset.frame
    strat = frame[dataset.target] if cfg.stratify and dataset.task == "classification" else None
    rest, test = train_test_split(frame, test_size=cfg.test, random_state=plan.recipe.seed, stratify=strat)
    strat_rest = rest[dataset.target] if strat is not None else None
    train, val = train_test_split(
        rest, test_size=cfg.val / (1.0 - cfg.test), random_state=plan.recipe.seed + 1, stratify=strat_rest
    )
    return DataSplits(dataset=dataset, train=train, val=val, test=test)


def _stage_version(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    dataset = state.dataset
    schema = {
        "features": list(dataset.features),
        "target": dataset.target,
        "classes": list(dataset.classes),
        "dtypes": {c: str(t) for c, t in dataset.frame.dtypes.items()},
    }
    version = state.registry.put_data(
        dataset.name, dataset.frame, schema=schema, meta={"description": dataset.description, "recipe": plan.recipe.name}
    )
    components.notify("on_data_versioned", version=version)
    state.data_version = version
    state.splits = _split(plan, dataset)
    split_index = {p: [str(i) for i in getattr(state.splits, p).index] for p in ("train", "val", "test")}
    _write_json(ctx.out_dir / "split.json", {"seed": plan.recipe.seed, **split_index})
    ctx.metric("data_version", version.ref)
    ctx.metric("train_rows", len(state.splits.train))
    ctx.metric("val_rows", len(state.splits.val))
    ctx.metric("test_rows", len(state.splits.test))


def _stage_label(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    state.dataset = stage.component.build().label(state.dataset, ctx)
    state.splits = _split(plan, state.dataset)
    ctx.metric("rows", len(state.dataset.frame))


def _stage_train(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    trained = stage.component.build().fit(state.splits, ctx)
    state.trained = trained
    for key, value in trained.metrics.items():
        ctx.metric(key, value)
    _write_json(ctx.out_dir / "hyperparameters.json", trained.hyperparameters)


def _stage_compress(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Model-level compression steps, in recipe order (ONNX-level ones run in the export stage)."""
    if state.trained is None:  # no training: the chain starts from a registered version (see plan)
        state.trained = _registered_input(stage.components[0], state)
    teacher = state.trained
    for i, planned in enumerate(stage.components):
        sub = ctx.child(ctx.out_dir / f"{i:02d}-{planned.type}")
        compressed = planned.build().compress(state.trained, state.splits, sub)
        compressed.runners_up = teacher.runners_up  # the other candidates stay as they were
        state.trained = compressed
        for key, value in sub.metrics.items():  # each step's own (prefixed) figures, in the stage's
            ctx.metric(key, value)
    # the comparison table's teacher is the trained model, not the input of the last step
    state.trained.details["teacher_metrics"] = teacher.metrics
    for key, value in state.trained.metrics.items():
        ctx.metric(key, value)


def _registered_input(first: Any, state: RunState) -> TrainedModel:
    """What a chain that starts from a registered version gets as its input model: no module,
    the version's schema, classes and metrics."""
    ref = next(iter(first.cls.registry_refs(first.config).values()))
    version = state.registry.get(ref, kind="model")
    manifest = json.loads(state.registry.read_file(version, "serving.json"))
    return TrainedModel(module=None, schema=InputSchema.from_dict(manifest["schema"]), classes=list(manifest["classes"]),
                        metrics=dict(version.metrics), hyperparameters={},
                        details={"registered": version.ref, "trainer": version.lineage.get("trainer")})


def _trainer_label(plan: Plan, state: RunState) -> str:
    """Who made the model: the trainer's type, or the registered version the chain started from."""
    train = plan.stage("train")
    if train.components:
        return train.component.type
    first = plan.stage("compress").components[0]
    refs = ", ".join(first.cls.registry_refs(first.config).values())
    return f"none ({first.type} from {refs})"


def _served_ranks(plan: Plan) -> list[int]:
    """Which candidates of this run the recipe serves: 1 is the best, 2 the runner-up ..."""
    return sorted({1} | {r for r in map(this_run_rank, map(str, plan.recipe.serve.models.values())) if r})


def _candidate(state: RunState, rank: int, where: str) -> Any:
    if rank == 1:
        return state.trained
    runners_up = state.trained.runners_up
    if rank - 2 >= len(runners_up):
        raise StageError(f"{where}: this_run#{rank} asked for, but training produced {len(runners_up) + 1} candidate(s)")
    return runners_up[rank - 2]


def _stage_export(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    exporter = stage.component.build()
    for rank in _served_ranks(plan):
        where = next((f"serve.models.{a}" for a, r in plan.recipe.serve.models.items() if this_run_rank(str(r)) == rank), "export")
        model = _candidate(state, rank, where)
        # every candidate gets its own folder: exporters write fixed file names
        sub = ctx if rank == 1 else ctx.child(ctx.out_dir / f"this_run-{rank}")
        state.exports[rank] = exporter.export(model, state.splits, sub)
    exported = state.exports[1]
    state.variants = [{"name": stage.component.type, "exported": exported}]
    for i, planned in enumerate(stage.components[1:]):  # ONNX-level compression steps, in order
        sub = ctx.child(ctx.out_dir / f"{i:02d}-{planned.type}")
        exported = planned.build().compress_onnx(exported, state.splits, sub)
        state.variants.append({"name": planned.type, "exported": exported})
    state.exports[1] = state.exported = exported
    for key, value in exported.metrics.items():
        ctx.metric(key, value)
    if len(state.exports) > 1:
        ctx.metric("candidates_exported", len(state.exports))
    if len(state.variants) > 1 or plan.enabled("compress"):
        table = state.variant_table = _variant_table(plan, state)
        _write_json(ctx.out_dir / "variants.json", table)
        def shown(value: float, fmt: str) -> str:
            return "-" if value != value else format(value, fmt)  # NaN: not measured (the teacher)

        ctx.metric("variants", {row["variant"]: f"acc {row['accuracy']:.4f}, {shown(row['size_kb'], '.1f')} KB, "
                                f"p50 {shown(row['latency_b1_p50_ms'], '.3f')} ms" for row in table})


def _variant_table(plan: Plan, state: RunState) -> list[dict]:
    """Accuracy, size and one-thread latency (batch 1 and 64) of every variant, the teacher's
    training metrics and the current champion, all measured on the same test rows."""
    x_test, _ = state.splits.arrays("test")
    batch = x_test[:64]

    def measure(name: str, onnx_bytes: bytes, model: Any) -> dict:
        quality = _onnx_quality(onnx_bytes, model.input_name, model.output_name, model.classes, state.splits)
        b1 = _onnx_latency(onnx_bytes, model.input_name, x_test[:1], 100)
        b64 = _onnx_latency(onnx_bytes, model.input_name, batch, 30)
        return {"variant": name, "accuracy": quality["accuracy"], "size_kb": len(onnx_bytes) / 1024,
                "latency_b1_p50_ms": b1["latency_p50_ms"], "latency_b64_p50_ms": b64["latency_p50_ms"]}

    rows = [measure(v["name"], Path(v["exported"].path).read_bytes(), v["exported"]) for v in state.variants]
    teacher = state.trained.details.get("teacher_metrics")
    if teacher:
        rows.insert(0, {"variant": "teacher (before compression)", "accuracy": teacher.get("test_accuracy", float("nan")),
                        "size_kb": float("nan"), "latency_b1_p50_ms": float("nan"), "latency_b64_p50_ms": float("nan")})
    try:
        champion = state.registry.get(f"{plan.recipe.register.model_name}@prod")
    except Exception:  # no champion yet
        champion = None
    if champion is not None:
        model = served_model_from_registry(state.registry, f"{champion.name}:{champion.id}", "champion")
        rows.append(measure(f"champion {champion.ref}", model.onnx_bytes, model))
    return rows


def _register_export(plan: Plan, state: RunState, exported: ExportedModel, trained: Any, components: Components,
                     lineage_extra: dict, aliases: list[str], extra_files: dict[str, bytes] | None = None) -> Any:
    """Store one exported model as a version (reusing an identical one) with its lineage."""
    from .explain import training_means
    from .model_card import render_markdown

    x_train, _ = state.splits.arrays("train")
    manifest = {
        "format": exported.format,
        "input_name": exported.input_name,
        "output_name": exported.output_name,
        "classes": list(exported.classes),
        "schema": exported.schema.to_dict(),
        "baseline": training_means(x_train),  # for explain: true (occlusion against an average case)
    }
    onnx_bytes = Path(exported.path).read_bytes()
    card = _model_card(plan, state, exported, onnx_bytes, {**trained.metrics, **exported.metrics}, trained)
    files = {
        "model.onnx": onnx_bytes,
        "serving.json": json.dumps(manifest, sort_keys=True).encode(),
        "model_card.json": json.dumps(card, sort_keys=True, default=str).encode(),
        "model_card.md": render_markdown(card).encode(),
        **(extra_files or {}),
    }
    lineage = {
        "recipe": plan.recipe.name,
        "recipe_hash": plan.recipe_hash,
        "data_version": state.data_version.id if state.data_version else None,
        "code_revision": _code_revision(),
        "trainer": _trainer_label(plan, state),
        "hyperparameters": trained.hyperparameters,
        "seed": plan.recipe.seed,
        **lineage_extra,
    }
    registry = state.registry
    name = plan.recipe.register.model_name
    hashes = {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}
    existing = next((v for v in registry.list(kind="model", name=name) if v.files == hashes), None)
    if existing is not None:  # an identical re-run reuses its version
        version = existing
    else:
        previous = registry.list(kind="model", name=name)
        parent = previous[0].id if previous else None
        version = registry.put_model(name, files=files, metrics={**trained.metrics, **exported.metrics},
                                     lineage=lineage, parent=parent)
    for alias in aliases:
        registry.set_alias("model", name, alias, version.id)
    version = registry.get(f"{name}:{version.id}")
    components.notify("on_model_registered", version=version)
    return version


def _model_card(plan: Plan, state: RunState, exported: ExportedModel, onnx_bytes: bytes, metrics: dict, trained: Any) -> dict:
    """The card of one version: measured overall and per declared slice on the test split, what
    the model relies on most (permutation importance), and the recipe's intended use and limits."""
    import onnxruntime as ort

    from .explain import permutation_importance
    from .model_card import build_model_card, slice_metrics

    card_cfg = plan.recipe.register.card
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def probabilities(x: Any) -> Any:
        return session.run([exported.output_name], {exported.input_name: x.astype("float32")})[0]

    x_test, y_test = state.splits.arrays("test")
    dataset = state.splits.dataset
    try:
        slices = slice_metrics(probabilities, state.splits.test, dataset.features, dataset.target,
                               list(exported.classes), dict(card_cfg.slices))
    except ValueError as exc:
        raise StageError(f"register.card.slices: {exc}") from None
    return build_model_card(
        f"{plan.recipe.register.model_name} (this version)",
        state.data_version.ref if state.data_version else None,
        metrics,
        slices,
        permutation_importance(probabilities, x_test, y_test, exported.schema.names, seed=plan.recipe.seed),
        card_cfg.intended_use or "Not stated: the recipe has no register.card.intended_use.",
        list(card_cfg.limitations),
        {"target": dataset.target, "classes": list(exported.classes), "trainer": _trainer_label(plan, state),
         "hyperparameters": trained.hyperparameters, "features": len(dataset.features),
         "rows": {"train": len(state.splits.train), "val": len(state.splits.val), "test": len(state.splits.test)},
         **({"privacy": trained.details["privacy"]} if trained.details.get("privacy") else {})},
    )


def _stage_register(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    # runners-up and intermediate compression variants first, so the served model is the newest
    for rank in sorted(state.exports, reverse=True):
        if rank == 1:
            for step, variant in enumerate(state.variants[:-1]):
                version = _register_export(plan, state, variant["exported"], state.trained, components,
                                           {"candidate_rank": 1, "variant": variant["name"], "compression_step": step}, [])
                variant["version"] = version.ref
        chain = [v["name"] for v in state.variants] if rank == 1 else []
        state.model_versions[rank] = _register_export(
            plan, state, state.exports[rank], _candidate(state, rank, "register"), components,
            {"candidate_rank": rank, **({"compression_chain": chain} if len(chain) > 1 else {})},
            list(plan.recipe.register.aliases) if rank == 1 else [],
            # the compression comparison travels with the served version
            {"variants.json": json.dumps(state.variant_table, default=str).encode()} if rank == 1 and state.variant_table else None,
        )
    state.model_version = state.model_versions[1]
    ctx.metric("model_version", state.model_version.ref)
    ctx.metric("aliases", ",".join(state.model_version.aliases))
    if len(state.model_versions) > 1:
        ctx.metric("candidates", {f"this_run#{r}": v.ref for r, v in sorted(state.model_versions.items())})


def _onnx_quality(onnx_bytes: bytes, input_name: str, output_name: str, classes: list, splits: DataSplits) -> dict:
    """accuracy, f1_macro and log_loss of an ONNX model on the test split (ONNX Runtime)."""
    import numpy as np
    import onnxruntime as ort
    from sklearn.metrics import f1_score, log_loss

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x, y = splits.arrays("test")
    probs = session.run([output_name], {input_name: x})[0]
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(probs, 1e-7, 1.0), labels=labels)),
    }


def _onnx_latency(onnx_bytes: bytes, input_name: str, x_row: Any, runs: int) -> dict:
    """Batch-1 latency on one thread, the way a device or a small replica runs the model."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    feed = {input_name: x_row}
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p95_ms": float(np.percentile(times, 95))}


def _stage_gate(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Quality gates: thresholds on every metric, and the champion on the same test rows."""
    from .errors import GateError

    cfg = plan.recipe.gates
    exported = state.exported
    onnx_bytes = Path(exported.path).read_bytes()
    measured = _onnx_quality(onnx_bytes, exported.input_name, exported.output_name, exported.classes, state.splits)
    x_test, _ = state.splits.arrays("test")
    measured.update(_onnx_latency(onnx_bytes, exported.input_name, x_test[:1], cfg.latency_runs))
    measured["size_mb"] = len(onnx_bytes) / 1e6
    metrics = {**state.trained.metrics, **exported.metrics, **measured}
    rows: list[dict] = []
    for name, bounds in cfg.thresholds.items():
        if name not in metrics:
            raise StageError(f"gates.thresholds.{name}: no such metric in this run; known: {', '.join(sorted(metrics))}")
        value = float(metrics[name])
        ok = (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)
        rule = " and ".join(filter(None, (f">= {bounds.min:g}" if bounds.min is not None else "",
                                          f"<= {bounds.max:g}" if bounds.max is not None else "")))
        rows.append({"gate": name, "value": value, "rule": rule, "passed": ok})
    champion = cfg.champion
    if champion.ref:
        try:
            version = state.registry.get(champion.ref, kind="model")
        except Exception as exc:  # no champion yet
            if not champion.missing_ok:
                raise StageError(f"gates.champion.ref: {exc}") from exc
            rows.append({"gate": f"champion {champion.metric}", "value": None,
                         "rule": f"no champion '{champion.ref}' yet (missing_ok)", "passed": True})
        else:
            champ = served_model_from_registry(state.registry, f"{version.name}:{version.id}", "champion")
            theirs = _onnx_quality(champ.onnx_bytes, champ.input_name, champ.output_name, champ.classes, state.splits)
            ours, base = measured[champion.metric], theirs[champion.metric]
            delta = (base - ours) if champion.metric == "log_loss" else (ours - base)
            rows.append({"gate": f"champion {champion.metric}", "value": delta,
                         "rule": f"this run {ours:.4f} vs {version.ref} {base:.4f}: delta >= {champion.min_delta:g}",
                         "passed": delta >= champion.min_delta})
            ctx.metric("champion", version.ref)
            ctx.metric(f"champion_{champion.metric}", base)
    for key, value in measured.items():
        ctx.metric(key, value)
    passed = sum(r["passed"] for r in rows)
    ctx.metric("gates_passed", f"{passed}/{len(rows)}")
    _write_json(ctx.out_dir / "gates.json", rows)
    if passed < len(rows):
        table = "\n".join(
            f"  {'PASS' if r['passed'] else 'FAIL'}  {r['gate']:<28} {'-' if r['value'] is None else format(r['value'], '.4g'):>10}  {r['rule']}"
            for r in rows
        )
        raise GateError(f"quality gates failed ({len(rows) - passed} of {len(rows)}); the model was not registered:\n{table}", rows)


def _stage_device(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """target: device: measure every variant (size, one-thread p95 latency, RAM, accuracy), take
    the most accurate within the budgets, write a bundle and run it in a clean process."""
    from .device import measure_variant, pick_variant, verify_bundle, write_bundle

    cfg = plan.recipe.device
    budget = {k: getattr(cfg, k) for k in ("max_size_mb", "max_p95_latency_ms", "max_ram_mb")}
    x_test, y_test = state.splits.arrays("test")
    candidates = []
    for variant in state.variants:
        exported = variant["exported"]
        figures = measure_variant(Path(exported.path).read_bytes(), exported.input_name, x_test, y_test)
        candidates.append({"name": variant["name"], "exported": exported,
                           "version": variant.get("version") or state.model_version.ref, **figures})
    _write_json(ctx.out_dir / "candidates.json", [{k: v for k, v in c.items() if k != "exported"} for c in candidates])
    chosen = pick_variant(candidates, budget)
    measured = {k: chosen[k] for k in ("size_mb", "latency_p50_ms", "latency_p95_ms", "ram_mb", "accuracy")}
    out_dir = Path(cfg.bundle_dir).expanduser().resolve() if cfg.bundle_dir else ctx.out_dir / "bundle"
    bundle = write_bundle(chosen["exported"], out_dir, {
        "model_version": chosen["version"], "variant": chosen["name"], "budget": budget, "measured": measured,
        "recipe": plan.recipe.name, "data_version": state.data_version.ref if state.data_version else None,
    })
    exported = chosen["exported"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    expected = [exported.classes[i] for i in session.run([exported.output_name], {exported.input_name: x_test})[0].argmax(axis=1)]
    rows = [{f: float(v) for f, v in zip(exported.schema.names, r)} for r in x_test]
    check = verify_bundle(bundle, rows, expected)
    ctx.metric("variant", chosen["name"])
    ctx.metric("model_version", chosen["version"])
    for key, value in measured.items():
        ctx.metric(key, value)
    ctx.metric("bundle", str(bundle))
    ctx.metric("bundle_agreement", check["agreement"])
    ctx.metric("bundle_modules", ",".join(check["modules_loaded"]) or "onnxruntime, numpy only")


def _registry_ref(state: RunState, ref: str, where: str) -> str:
    """A recipe's model reference as a registry reference (``this_run#k`` -> NAME:ID)."""
    rank = this_run_rank(ref)
    if rank is None:
        return ref
    version = state.model_versions.get(rank)
    if version is None:
        raise StageError(f"{where}: '{ref}' but this run registered no such model")
    return f"{version.name}:{version.id}"


def served_model_from_registry(registry: Any, ref: str, arm: str) -> Any:
    """A ServedModel for ``arm`` from a registered version (reads only ONNX and JSON)."""
    from .serving import ServedModel

    version = registry.get(ref, kind="model")
    manifest = json.loads(registry.read_file(version, "serving.json"))
    return ServedModel(
        arm=arm,
        version=version.ref,
        onnx_bytes=registry.read_file(version, "model.onnx"),
        schema=InputSchema.from_dict(manifest["schema"]),
        classes=manifest["classes"],
        input_name=manifest["input_name"],
        output_name=manifest["output_name"],
        baseline=manifest.get("baseline"),  # versions registered before explanations have none
    )


def _stage_serve(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from .serving import deploy

    serve_cfg = plan.recipe.serve
    models = [
        served_model_from_registry(state.registry, _registry_ref(state, str(ref), f"serve.models.{arm}"), arm)
        for arm, ref in serve_cfg.models.items()
    ]
    strategy = stage.component
    state.app = deploy(
        models,
        strategy.cls,
        strategy.config,
        host=serve_cfg.host,
        port=serve_cfg.port,
        route_prefix=serve_cfg.route_prefix,
        app_name=plan.recipe.name,
        placement=serve_cfg.placement,
        replicas=serve_cfg.replicas,
        record_buffer=serve_cfg.record_buffer,
        admin_token=serve_cfg.admin_token,
        **({"faults": dict(serve_cfg.faults)} if serve_cfg.faults else {}),
        autoscaling=dict(serve_cfg.autoscaling or {}),
        batching=dict(serve_cfg.batching or {}),
    )
    ctx.metric("url", state.app.predict_url)
    ctx.metric("arms", {m.arm: m.version for m in models})
    _write_json(ctx.out_dir / "endpoint.json", {"predict_url": state.app.predict_url, "models": {m.arm: m.version for m in models}})


def _stage_online_eval(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Send a held-out slice over HTTP; compare every answer with the offline ONNX prediction of
    the arm that gave it (a strategy may route a row to any arm)."""
    import httpx
    import numpy as np
    import onnxruntime as ort

    cfg = plan.recipe.online_eval
    splits = state.splits
    rows = splits.test.head(cfg.rows)
    features = splits.dataset.features
    x = rows[features].to_numpy(dtype=np.float32)
    offline: dict[str, Callable[[int, int], Any]] = {}
    classes: dict[str, list] = {}
    for arm, ref in plan.recipe.serve.models.items():
        model = served_model_from_registry(state.registry, _registry_ref(state, str(ref), f"serve.models.{arm}"), arm)
        session = ort.InferenceSession(model.onnx_bytes, providers=["CPUExecutionProvider"])
        # offline answers for exactly the rows of each request: a dynamically quantized model's
        # activation scales depend on the batch it sees
        offline[arm] = (lambda a, b, s=session, m=model: s.run([m.output_name], {m.input_name: x[a:b]})[0])
        classes[arm] = model.classes

    served_probs, expected_probs = [], []
    served_labels, offline_labels, truth, arms = [], [], [], []
    latencies: list[float] = []
    injected = 0
    progress = ctx.progress(total=len(rows), description="held-out rows over HTTP")
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(rows), cfg.batch_size):
            chunk = rows.iloc[start:start + cfg.batch_size]
            body = {"instances": [{f: float(v) for f, v in zip(features, r)} for r in chunk[features].to_numpy()]}
            t0 = time.perf_counter()
            resp = client.post(state.app.predict_url, json=body)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            progress.advance(len(chunk))
            if resp.status_code == 503 and "injected fault" in resp.text and plan.recipe.serve.faults:
                injected += 1  # the recipe asked for these failures (serve.faults)
                continue
            if resp.status_code != 200:
                raise StageError(f"online_eval: {state.app.predict_url} answered {resp.status_code}: {resp.text[:300]}")
            answer = resp.json()
            arm = answer["arm"]
            expected = offline[arm](start, start + len(chunk))
            served_probs.extend(answer["probabilities"])
            expected_probs.extend(expected.tolist())
            served_labels.extend(answer["predictions"])
            offline_labels.extend(classes[arm][i] for i in expected.argmax(axis=1))
            truth.extend(chunk[splits.dataset.target].tolist())
            arms.extend([arm] * len(chunk))
    served = np.asarray(served_probs, dtype=np.float64)
    max_abs_diff = float(np.max(np.abs(served - np.asarray(expected_probs)))) if len(served) else 0.0
    agreement = float(np.mean([a == b for a, b in zip(served_labels, offline_labels)])) if served_labels else 0.0
    served_accuracy = float(np.mean([a == b for a, b in zip(served_labels, truth)])) if served_labels else 0.0
    ctx.metric("rows_sent", len(rows))
    ctx.metric("rows_compared", len(served_labels))
    ctx.metric("requests", len(latencies))
    ctx.metric("max_abs_diff", max_abs_diff)
    ctx.metric("agreement", agreement)
    ctx.metric("served_accuracy", served_accuracy)
    ctx.metric("latency_p50_ms", float(np.percentile(latencies, 50)))
    ctx.metric("latency_p99_ms", float(np.percentile(latencies, 99)))
    if injected:
        ctx.metric("injected_faults", injected)
    _write_json(
        ctx.out_dir / "comparison.json",
        {"served_predictions": served_labels, "offline_predictions": offline_labels, "truth": truth,
         "arms": arms, "max_abs_diff": max_abs_diff},
    )
    if not served_labels:
        raise StageError("online_eval: no answer to compare (every request failed)")
    if max_abs_diff > cfg.tolerance or agreement < 1.0:
        raise StageError(
            f"online_eval: served answers differ from offline ONNX predictions "
            f"(max |diff| {max_abs_diff:.3g} > tolerance {cfg.tolerance}, agreement {agreement:.3f})"
        )


def _stage_batch(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    predictions = stage.component.build().predict(state.exported, state.splits.test, ctx)
    ctx.metric("rows", len(predictions))


def _stage_monitor(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from .serving import fetch_records

    frame = fetch_records(state.app)
    served = ServedWindow(frame=frame, features=list(state.splits.dataset.features))
    alerts: list[str] = []
    reports = []
    for planned in stage.components:
        report = planned.build().evaluate(served, state.splits, ctx)
        reports.append(dataclasses.asdict(report))
        for alert in report.alerts:
            alerts.append(f"{planned.type}: {alert}")
            components.notify("on_alert_raised", monitor=planned.type, alert=alert)
        for key, value in report.metrics.items():
            ctx.metric(key, value)
    ctx.metric("alerts", len(alerts))
    _write_json(ctx.out_dir / "reports.json", reports)


from .traffic import stage_traffic  # noqa: E402  (after the helpers it imports lazily)

RUNNERS: dict[str, Callable[..., None]] = {
    "data": _stage_data,
    "checks": _stage_checks,
    "version": _stage_version,
    "label": _stage_label,
    "train": _stage_train,
    "compress": _stage_compress,
    "export": _stage_export,
    "gate": _stage_gate,
    "register": _stage_register,
    "device": _stage_device,
    "serve": _stage_serve,
    "online_eval": _stage_online_eval,
    "traffic": stage_traffic,
    "batch": _stage_batch,
    "monitor": _stage_monitor,
}

RAY_STAGES = {"train", "compress", "serve", "batch"}
