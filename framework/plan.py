"""Recipe ▸ Plan. All validation lives here, and nothing heavy (Ray, torch) is imported.

A Plan is the ordered list of stages, each bound to the plugin components it will run, with every
component's options already validated against that component's ``Config`` dataclass.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .components import ALERT_KINDS, is_registry_ref
from .errors import FrameworkError, PluginError, RecipeError
from .expressions import ExpressionError, RowFilter, parse_filter
from .pipeline import STAGES, StageSpec
from .plugins import Components
from .recipe import Bounds, RecipeConfig, describe_omegaconf_error
from .tokens import ServiceTokens, resolve_token

THIS_RUN = re.compile(r"^this_run(#[1-9][0-9]*)?$")
#: what ``gates.champion.metric`` may compare, per task (the first is the default)
CHAMPION_METRICS = {"classification": ("accuracy", "f1_macro", "log_loss"), "regression": ("r2", "mae", "mse")}


def is_model_ref(text: str) -> bool:
    """``this_run``, ``this_run#K`` or a registered version (``NAME@ALIAS`` / ``NAME:ID``)."""
    return bool(THIS_RUN.match(text)) or is_registry_ref(text)


def this_run_rank(ref: str) -> int | None:
    """``this_run`` -> 1 (the best candidate), ``this_run#3`` -> 3, a registry ref -> None."""
    if ref == "this_run":
        return 1
    if ref.startswith("this_run#"):
        return int(ref.split("#", 1)[1])
    return None


@dataclass
class DataWindow:
    """``data.window``: which stored rows a run trains on (the split then cuts those rows).

    ``versions: N`` keeps the rows added by the newest N appended batches (needs
    ``data.append: true``); ``since`` / ``until`` keep rows whose time column (the source's
    ``Dataset.time``) is ``>= since`` and ``< until`` (ISO dates or date-times). Both may be given.
    """

    versions: int | None = None
    since: str | None = None
    until: str | None = None

    def describe(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class DataVersioning:
    """The core's keys of the ``data`` section: how the loaded rows become a data version."""

    #: store the loaded rows as a new batch on top of the newest version of the dataset
    append: bool = False
    window: DataWindow | None = None

    def describe(self) -> dict:
        return {"append": self.append, **({"window": self.window.describe()} if self.window else {})}


@dataclass
class HiddenLabels:
    """``label.hide``: a simulation. The labels of the rows of ``parts`` are hidden from the
    labeler, except ``keep`` of them (a fraction < 1, or a number of rows); the hidden labels are
    what the simulated annotator answers from and what the stored labels are scored against."""

    parts: list[str] = field(default_factory=lambda: ["train"])
    keep: float = 0.0
    seed: int = 0


@dataclass
class Annotator:
    """``label.annotator``: who labels the rows a labeler queues. ``simulated``: a stand-in that
    answers from the hidden true labels through real Label Studio files (``error_rate`` of its
    answers wrong); ``files``: the tasks are written for people and nobody answers in the run
    (``python -m framework labels import`` brings their export back as a label version)."""

    type: str = "simulated"
    error_rate: float = 0.0


@dataclass
class Labeling:
    """The core's keys of the ``label`` section."""

    hide: HiddenLabels | None = None
    annotator: Annotator | None = None
    #: aliases the stored label version gets (``NAME.labels@ALIAS``), beside ``@latest``
    aliases: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        out: dict = {k: dataclasses.asdict(v) for k, v in (("hide", self.hide), ("annotator", self.annotator)) if v}
        return {**out, **({"aliases": list(self.aliases)} if self.aliases else {})}


@dataclass
class Trigger:
    """The core's keys of an action: which alert kinds start it, and its cooldown."""

    on: list[str] = field(default_factory=lambda: ["any"])
    cooldown_s: float = 0.0

    def matches(self, kind: str) -> bool:
        return "any" in self.on or kind in self.on


def _trigger(options: dict, key: str) -> Trigger:
    on = ["any"]
    # YAML 1.1 (Hydra's loader) reads an unquoted `on:` key as the boolean true
    for spelling in ("on", True, "True"):
        if spelling in options:
            on = options.pop(spelling)
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, (list, tuple)) or not on:
        raise RecipeError(f"{key}.on: expected a list of alert kinds ({', '.join(ALERT_KINDS)}), got {on!r}")
    for i, kind in enumerate(on):
        if kind not in ALERT_KINDS:
            close = difflib.get_close_matches(str(kind), ALERT_KINDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RecipeError(f"{key}.on[{i}]: unknown alert kind '{kind}'.{hint} Known: {', '.join(ALERT_KINDS)}")
    cooldown = options.pop("cooldown_s", 0.0)
    if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or cooldown < 0:
        raise RecipeError(f"{key}.cooldown_s: expected a number of seconds >= 0, got {cooldown!r}")
    return Trigger([str(k) for k in on], float(cooldown))


@dataclass
class PlannedComponent:
    key: str  # recipe key path, e.g. "checks[0]"
    type: str
    plugin: str
    cls: type
    config: Any  # an instance of cls.Config
    #: the components this one's config names (``cls.references``), resolved: field -> class
    refs: dict[str, type] = field(default_factory=dict)
    #: data checks only: what a failed report does (``fail`` stops the run, ``warn`` reports,
    #: ``quarantine`` moves the flagged rows into the quarantine set)
    severity: str | None = None
    #: data checks only: keep the rows a ``quarantine`` check flags (still reported)
    readmit: bool = False
    #: data sources only: ``data.append`` and ``data.window``
    versioning: DataVersioning | None = None
    #: labelers only: ``label.hide`` and ``label.annotator``
    labeling: Labeling | None = None
    #: actions only: the alert kinds it acts on (``on``) and its ``cooldown_s``
    trigger: Trigger | None = None

    def build(self, *args: Any) -> Any:
        return self.cls(self.config, *args, refs=self.refs)

    def describe(self) -> dict:
        described = {"key": self.key, "type": self.type, "plugin": self.plugin, "config": _jsonable(self.config)}
        if self.refs:
            described["refs"] = {name: cls.name for name, cls in self.refs.items()}
        if self.severity:
            described["severity"] = self.severity
        if self.readmit:
            described["readmit"] = True
        if self.versioning and (self.versioning.append or self.versioning.window):
            described["versioning"] = self.versioning.describe()
        if self.labeling and self.labeling.describe():
            described["labeling"] = self.labeling.describe()
        if self.trigger:
            described["trigger"] = dataclasses.asdict(self.trigger)
        return described


@dataclass
class PlannedStage:
    spec: StageSpec
    components: list[PlannedComponent] = field(default_factory=list)
    enabled: bool = True
    note: str = ""

    @property
    def component(self) -> PlannedComponent:
        return self.components[0]

    @property
    def name(self) -> str:
        return self.spec.name

    def label(self) -> str:
        return ", ".join(c.type for c in self.components) or "core"


@dataclass
class Plan:
    recipe: RecipeConfig
    recipe_path: Path | None
    resolved: dict  # the whole composed recipe, JSON-able
    stages: list[PlannedStage]
    #: the served app's tokens, read from the environment or 0600 files: never in ``resolved``
    tokens: ServiceTokens = field(default_factory=ServiceTokens, repr=False)

    @property
    def recipe_hash(self) -> str:
        blob = json.dumps(self.resolved, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    def enabled(self, name: str) -> bool:
        return any(s.name == name and s.enabled for s in self.stages)

    def describe(self) -> dict:
        return {
            "recipe": self.recipe.name,
            "recipe_path": str(self.recipe_path) if self.recipe_path else None,
            "recipe_hash": self.recipe_hash,
            "stages": [
                {
                    "stage": s.name,
                    "enabled": s.enabled,
                    "note": s.note,
                    "components": [c.describe() for c in s.components],
                }
                for s in self.stages
            ],
        }


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "value") and obj.__class__.__module__ != "builtins":  # enums
        return obj.value
    return obj


def validate_component_config(cls: type, options: dict, key: str) -> Any:
    """Options of one component checked against its ``Config`` dataclass; errors name key paths."""
    schema = OmegaConf.structured(cls.Config)
    try:
        merged = OmegaConf.merge(schema, options)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        message = describe_omegaconf_error(exc, prefix=key)
        if "unknown key" in message:
            accepted = ", ".join(f.name for f in dataclasses.fields(cls.Config)) or "no options"
            message += (f". '{cls.name}' accepts: {accepted} (a key left over from another type? "
                        f"remove it with '~{key}.KEY' or switch the whole group)")
        raise RecipeError(message) from None


#: ``checks[i].severity``: what a failed check report does; the core enforces it
SEVERITIES = ("fail", "warn", "quarantine")


def _component(components: Components, kind: str, node: Any, key: str) -> PlannedComponent:
    if not isinstance(node, dict):
        raise RecipeError(f"{key}: expected a mapping with 'type: NAME', got {node!r}")
    options = dict(node)
    name = options.pop("type", None)
    if not name:
        known = ", ".join(components.names(kind))
        raise RecipeError(f"{key}: missing 'type'. Choose one of: {known}")
    severity, readmit = None, False
    if kind == "data_check":  # core keys of every check, not options of the plugin
        severity = str(options.pop("severity", "fail"))
        if severity not in SEVERITIES:
            raise RecipeError(f"{key}.severity: must be one of {', '.join(SEVERITIES)}, got '{severity}'")
        readmit = options.pop("readmit", False)
        if not isinstance(readmit, bool):
            raise RecipeError(f"{key}.readmit: must be true or false, got {readmit!r}")
        if readmit and severity != "quarantine":
            raise RecipeError(f"{key}.readmit: only a check with 'severity: quarantine' has rows to re-admit "
                              f"(this one has severity '{severity}')")
    versioning = None
    if kind == "data_source":  # core keys of the data section, not options of the source
        versioning = _data_versioning(options, key)
    labeling = _labeling(options, key) if kind == "labeler" else None  # core keys of the label section
    trigger = _trigger(options, key) if kind == "action" else None  # core keys of every action
    entry = components.get(kind, str(name), where=f"{key}.type")
    accepted = getattr(entry.cls, "severities", None)
    if severity is not None and accepted is not None and severity not in accepted:
        raise RecipeError(f"{key}.severity: '{name}' accepts {', '.join(accepted)} only, got '{severity}'")
    config = validate_component_config(entry.cls, options, key)
    refs = {field: components.get(ref_kind, str(getattr(config, field)), where=f"{key}.{field}").cls
            for field, ref_kind in entry.cls.references.items()}
    entry.cls.check_config(config, key, refs)  # cheap, plugin-specific validation (no heavy imports)
    planned = PlannedComponent(key=key, type=str(name), plugin=entry.plugin, cls=entry.cls, config=config, refs=refs,
                               severity=severity, readmit=readmit, versioning=versioning, labeling=labeling,
                               trigger=trigger)
    if versioning is not None and versioning.window is not None:
        _check_time_column(planned)
    return planned


#: ``data.window`` keys
WINDOW_KEYS = ("versions", "since", "until")
#: the parts ``label.hide.parts`` may name, and the annotators ``label.annotator.type`` may name
SPLIT_PARTS = ("train", "val", "test")
ANNOTATORS = ("simulated", "files")


def _labeling(options: dict, key: str) -> Labeling:
    """``label.hide`` and ``label.annotator`` taken out of the labeler's options and checked."""
    out = Labeling()
    raw = options.pop("hide", None)
    if raw is not None:
        hide = _core_section(HiddenLabels, raw, f"{key}.hide")
        unknown = [p for p in hide.parts if p not in SPLIT_PARTS]
        if unknown or not hide.parts:
            raise RecipeError(f"{key}.hide.parts: name parts among {', '.join(SPLIT_PARTS)}, got {list(hide.parts)}")
        if hide.keep < 0 or (hide.keep >= 1 and hide.keep != int(hide.keep)):
            raise RecipeError(f"{key}.hide.keep: a fraction in [0, 1) or a whole number of rows, got {hide.keep}")
        out.hide = hide
    raw = options.pop("annotator", None)
    if raw is not None:
        annotator = _core_section(Annotator, raw, f"{key}.annotator")
        if annotator.type not in ANNOTATORS:
            raise RecipeError(f"{key}.annotator.type: one of {', '.join(ANNOTATORS)}, got '{annotator.type}'")
        if not 0.0 <= annotator.error_rate < 1.0:
            raise RecipeError(f"{key}.annotator.error_rate: a fraction in [0, 1), got {annotator.error_rate}")
        out.annotator = annotator
    aliases = options.pop("aliases", None) or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and re.match(r"^[A-Za-z0-9_.-]{1,128}$", a) for a in aliases):
        raise RecipeError(f"{key}.aliases: a list of alias names (letters, digits, '_', '.', '-'), got {aliases!r}")
    out.aliases = list(aliases)
    return out


def _core_section(schema: type, raw: Any, key: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"{key}: expected a mapping, got {raw!r}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))
    except OmegaConfBaseException as exc:
        raise RecipeError(describe_omegaconf_error(exc, prefix=key)) from None


def _data_versioning(options: dict, key: str) -> DataVersioning:
    append = options.pop("append", False)
    if not isinstance(append, bool):
        raise RecipeError(f"{key}.append: expected true or false, got {append!r}")
    raw = options.pop("window", None)
    if raw is None:
        return DataVersioning(append=append)
    if not isinstance(raw, dict) or not raw:
        raise RecipeError(f"{key}.window: expected a mapping with {', '.join(WINDOW_KEYS)}, "
                          f"e.g. {{versions: 3}} or {{since: '2024-01-01'}}; got {raw!r}")
    unknown = sorted(set(raw) - set(WINDOW_KEYS))
    if unknown:
        raise RecipeError(f"{key}.window.{unknown[0]}: unknown key; use {', '.join(WINDOW_KEYS)}")
    versions = raw.get("versions")
    if versions is not None:
        if isinstance(versions, bool) or not isinstance(versions, int) or versions < 1:
            raise RecipeError(f"{key}.window.versions: expected a whole number >= 1, got {versions!r}")
        if not append:
            raise RecipeError(f"{key}.window.versions: counts appended batches; set {key}.append: true "
                              f"(or use since/until for a time window)")
    bounds = {b: _iso_time(raw.get(b), f"{key}.window.{b}") for b in ("since", "until")}
    since, until = bounds["since"], bounds["until"]
    if since is not None and until is not None:
        if (since.tzinfo is None) != (until.tzinfo is None):
            raise RecipeError(f"{key}.window: give since and until both with or both without a time zone")
        if since >= until:
            raise RecipeError(f"{key}.window: since {since.isoformat()} is not before until {until.isoformat()}")
    window = DataWindow(versions=versions, since=since.isoformat() if since else None,
                        until=until.isoformat() if until else None)
    return DataVersioning(append=append, window=window)


def _iso_time(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):  # a YAML loader may hand a bare date over as a date
        return datetime(value.year, value.month, value.day)
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise RecipeError(f"{key}: expected an ISO date or date-time such as '2024-01-31' or "
                          f"'2024-01-31T12:00:00+00:00', got {value!r}") from None


def _check_time_column(planned: PlannedComponent) -> None:
    """A time window needs the source's time column: refuse at plan time when the source says
    (a ``time`` option, or ``describe()`` naming its time column) that it has none."""
    window = planned.versioning.window
    if window.since is None and window.until is None:
        return
    bound = "since" if window.since is not None else "until"
    where = f"{planned.key}.window.{bound}"
    fields = {f.name for f in dataclasses.fields(planned.cls.Config)} if dataclasses.is_dataclass(planned.cls.Config) else set()
    if "time" in fields:
        column = getattr(planned.config, "time")
        if not column:
            raise RecipeError(f"{where}: a time window needs the rows' time column; set {planned.key}.time")
        return
    described = planned.build().describe()
    if described is None or not hasattr(described, "time"):
        return  # not knowable before loading: the version stage checks Dataset.time
    if not described.time:
        raise RecipeError(f"{where}: a time window needs the rows' time column, and data source "
                          f"'{planned.type}' declares none")
    if described.names and described.time not in described.names:
        raise RecipeError(f"{where}: the time column '{described.time}' is not among the source's columns")


def build_plan(cfg: DictConfig, recipe_path: Path | None, components: Components) -> Plan:
    """Validate the composed recipe completely; return the Plan or raise RecipeError."""
    try:
        recipe: RecipeConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise RecipeError(describe_omegaconf_error(exc, prefix="")) from None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for node in resolved.get("actions") or []:  # YAML 1.1 reads an unquoted `on:` key as true
        if isinstance(node, dict) and True in node:
            node["on"] = node.pop(True)
    _check_core_settings(recipe)

    stages: list[PlannedStage] = []
    for spec in STAGES:
        stage = PlannedStage(spec)
        node = getattr(recipe, spec.recipe_key) if spec.kind else None
        if spec.kind is not None:
            key = spec.recipe_key
            if spec.many:
                if not isinstance(node, list):
                    raise RecipeError(f"{key}: expected a list of components, got {type(node).__name__}")
                stage.components = [_component(components, spec.kind, item, f"{key}[{i}]") for i, item in enumerate(node)]
                stage.enabled = bool(stage.components)
            elif node:
                stage.components = [_component(components, spec.kind, node, key)]
            else:
                stage.enabled = False
        stages.append(stage)
    plan = Plan(recipe=recipe, recipe_path=recipe_path, resolved=resolved, stages=stages)
    _bind_compression_chain(plan)
    _check_stage_dependencies(plan, components)
    plan.tokens = service_tokens(recipe)
    check_data_source(plan)
    _check_batch(plan)
    return plan


def _check_batch(plan: Plan) -> None:
    """``batch.where`` parsed by the filter grammar (never evaluated); ``batch.lookup`` needs a served app."""
    stage = plan.stage("batch")
    if not stage.enabled:
        return
    config = stage.component.config
    where = getattr(config, "where", None)
    if where is not None:
        try:
            parse_filter(where)
        except ExpressionError as exc:
            raise RecipeError(f"batch.where: {exc}") from None
    lookup = getattr(config, "lookup", None)
    if lookup is not None and lookup.enabled and not (plan.recipe.serve.enabled and plan.recipe.target == "cloud"):
        raise RecipeError("batch.lookup.enabled: answers by key are served by the app the serve stage deploys; "
                          "set serve.enabled: true (target: cloud)")


def service_tokens(recipe: RecipeConfig) -> ServiceTokens:
    """The admin and client tokens (RecipeError for a literal, empty, short or readable-by-others
    one); read only when the recipe serves, but a literal is refused in any case."""
    serve = recipe.serve
    for kind in ("admin", "client"):
        if getattr(serve, f"{kind}_token") is not None:  # refused whatever else is set
            resolve_token(getattr(serve, f"{kind}_token"), getattr(serve, f"{kind}_token_env"), None, f"serve.{kind}_token")
    if not serve.enabled:
        return ServiceTokens()
    admin = resolve_token(None, serve.admin_token_env, serve.admin_token_file, "serve.admin_token")
    client = resolve_token(None, serve.client_token_env, serve.client_token_file, "serve.client_token")
    if admin is not None and admin == client:
        raise RecipeError("serve.client_token: the same as the admin token; a client must not be able to administer")
    return ServiceTokens(admin=admin, client=client)


def _bind_compression_chain(plan: Plan) -> None:
    """Model-level compressors stay in the compress stage (before export); ONNX-level ones run
    right after the exporter, in the export stage. The chain keeps its recipe order."""
    compress = plan.stage("compress")
    chain = compress.components
    first_onnx = next((i for i, c in enumerate(chain) if getattr(c.cls, "level", "model") == "onnx"), len(chain))
    for c in chain[first_onnx:]:
        if getattr(c.cls, "level", "model") != "onnx":
            raise RecipeError(
                f"{c.key}: '{c.type}' works on the trained model, but comes after "
                f"'{chain[first_onnx].type}' ({chain[first_onnx].key}), which works on the exported ONNX "
                f"model; put model-level steps (distillation, pruning) before ONNX-level ones (quantization)"
            )
    compress.components = chain[:first_onnx]
    compress.enabled = bool(compress.components)
    export = plan.stage("export")
    if chain[first_onnx:] and not export.components:
        raise RecipeError(f"{chain[first_onnx].key}: '{chain[first_onnx].type}' needs an exporter (export: {{type: onnx}})")
    export.components.extend(chain[first_onnx:])


def _check_core_settings(recipe: RecipeConfig) -> None:
    split = recipe.split
    for part in ("val", "test"):
        value = getattr(split, part)
        if not 0.0 < value < 1.0:
            raise RecipeError(f"split.{part}: must be between 0 and 1 (exclusive), got {value}")
    if split.val + split.test >= 0.9:
        raise RecipeError(f"split: val + test = {split.val + split.test:.2f} leaves too little to train on; keep it < 0.9")
    serve = recipe.serve
    if serve.placement not in ("ingress", "deployment"):
        raise RecipeError(f"serve.placement: must be 'ingress' or 'deployment', got '{serve.placement}'")
    if not 0 < serve.port < 65536:
        raise RecipeError(f"serve.port: must be a TCP port (1-65535), got {serve.port}")
    from .serving.app import validate_autoscaling, validate_batching, validate_ingress  # plain checks, no Ray import

    validate_ingress(serve.ingress, serve.balancer_port)
    validate_autoscaling(serve.autoscaling)
    validate_batching(serve.batching)
    if serve.autoscaling and serve.replicas > 1:
        raise RecipeError("serve.replicas: set either a fixed replica count or serve.autoscaling, not both")
    if serve.replicas < 1:
        raise RecipeError(f"serve.replicas: must be >= 1, got {serve.replicas}")
    if not serve.route_prefix.startswith("/"):
        raise RecipeError(f"serve.route_prefix: must start with '/', got '{serve.route_prefix}'")
    if serve.record_log_fsync not in ("batch", "never"):
        raise RecipeError(f"serve.record_log_fsync: must be 'batch' or 'never', got '{serve.record_log_fsync}'")
    if not str(serve.record_log).strip():
        raise RecipeError("serve.record_log: a folder for the durable record log, or 'off'")
    if not serve.models:
        serve.models = {"primary": "this_run"}
    for arm, ref in serve.models.items():
        if not is_model_ref(str(ref)):
            raise RecipeError(
                f"serve.models.{arm}: '{ref}' is not a model reference; use 'this_run' (the best model of this "
                f"run), 'this_run#2' (the runner-up ...), 'NAME@ALIAS' or 'NAME:VERSION_ID'"
            )
    for metric, raw in list(recipe.gates.thresholds.items()):
        try:
            bounds = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Bounds), raw))
        except OmegaConfBaseException as exc:
            raise RecipeError(describe_omegaconf_error(exc, prefix=f"gates.thresholds.{metric}")) from None
        recipe.gates.thresholds[metric] = bounds
        if bounds.min is None and bounds.max is None:
            raise RecipeError(f"gates.thresholds.{metric}: give a min, a max or both")
        if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
            raise RecipeError(f"gates.thresholds.{metric}: min {bounds.min} > max {bounds.max}")
    champion = recipe.gates.champion
    if champion.metric is not None and champion.metric not in CHAMPION_METRICS["classification"] + CHAMPION_METRICS["regression"]:
        raise RecipeError(f"gates.champion.metric: use accuracy, f1_macro or log_loss (classification), r2, mae or mse "
                          f"(regression); got '{champion.metric}'")
    if champion.ref is not None and not is_registry_ref(champion.ref):
        raise RecipeError(f"gates.champion.ref: '{champion.ref}' is not a registry reference (NAME@ALIAS or NAME:ID)")
    if recipe.gates.latency_runs < 10:
        raise RecipeError(f"gates.latency_runs: must be >= 10, got {recipe.gates.latency_runs}")
    if recipe.target not in ("cloud", "device"):
        raise RecipeError(f"target: must be 'cloud' (Ray Serve) or 'device' (a bundle), got '{recipe.target}'")
    for budget in ("max_size_mb", "max_p95_latency_ms", "max_ram_mb"):
        value = getattr(recipe.device, budget)
        if value is not None and value <= 0:
            raise RecipeError(f"device.{budget}: must be > 0, got {value}")
    traffic = recipe.traffic
    if traffic.endpoint not in ("predict", "rank"):
        raise RecipeError(f"traffic.endpoint: must be 'predict' or 'rank', got '{traffic.endpoint}'")
    if traffic.source not in ("train", "val", "test"):
        raise RecipeError(f"traffic.source: must be train, val or test, got '{traffic.source}'")
    for name in ("requests", "concurrency", "users", "rank_size"):
        if getattr(traffic, name) < 1:
            raise RecipeError(f"traffic.{name}: must be >= 1, got {getattr(traffic, name)}")
    for arm, fault in serve.faults.items():
        if arm not in serve.models:
            raise RecipeError(f"serve.faults.{arm}: no such arm; arms: {', '.join(serve.models)}")
        unknown = sorted(set(fault) - {"error_rate", "extra_latency_ms", "seed"})
        if unknown:
            raise RecipeError(f"serve.faults.{arm}.{unknown[0]}: unknown key; use error_rate, extra_latency_ms, seed")
        if not 0.0 <= float(fault.get("error_rate", 0.0)) <= 1.0:
            raise RecipeError(f"serve.faults.{arm}.error_rate: must be in [0, 1], got {fault['error_rate']}")
    if recipe.ray.num_cpus < 1:
        raise RecipeError(f"ray.num_cpus: must be >= 1, got {recipe.ray.num_cpus}")
    if recipe.online_eval.rows < 1:
        raise RecipeError(f"online_eval.rows: must be >= 1, got {recipe.online_eval.rows}")
    slice_filters(recipe)
    if not re.match(r"^[A-Za-z0-9_.-]+$", recipe.register.model_name):
        raise RecipeError(f"register.model_name: use letters, digits, '_', '.', '-' only; got '{recipe.register.model_name}'")


def starts_from_registry(plan: Plan) -> bool:
    """The run makes a model without training one: no trainer, and the compression chain's first
    step starts from a registered version (a distillation whose teacher is ``NAME@ALIAS``)."""
    chain = plan.stage("compress").components
    return not plan.enabled("train") and bool(chain) and chain[0].cls.starts_from_registry(chain[0].config)


def _check_stage_dependencies(plan: Plan, components: Components) -> None:
    recipe = plan.recipe
    if not plan.enabled("data"):
        raise RecipeError("data: every recipe needs a data source, e.g. 'data: {type: sklearn, dataset: breast_cancer}'")
    uses_this_run = any(this_run_rank(str(r)) for r in recipe.serve.models.values())
    # a model is made by training, or by a compression chain that starts from a registered teacher
    makes_model = plan.enabled("train") or starts_from_registry(plan)
    if not plan.enabled("train") and plan.stage("compress").components and not makes_model:
        first = plan.stage("compress").components[0]
        raise RecipeError(f"{first.key}: '{first.type}' needs a model trained by this run, and the recipe has no 'train' "
                          "(only a distillation from a registered teacher can start a chain without training)")
    if not makes_model and (uses_this_run or not recipe.serve.enabled):
        raise RecipeError("train: missing; a recipe that serves 'this_run' needs a trainer, e.g. 'train: {type: tune, model: mlp}' "
                          "(or a first compression step that starts from a registered model, e.g. "
                          "'compress: [{type: distill, teacher: NAME@prod}]')")
    if makes_model and not plan.enabled("export"):
        raise RecipeError("export: missing; a trained model must be exported to be registered and served, e.g. 'export: {type: onnx}'")
    serve_stage = plan.stage("serve")
    if recipe.target == "device":
        if not makes_model:
            raise RecipeError("target: 'device' bundles this run's model; the recipe needs a trainer and an exporter")
        recipe.serve.enabled = False  # a device bundle is the deliverable; nothing is served
        serve_stage.note = "target: device"
    else:
        plan.stage("device").enabled = False
        plan.stage("device").note = "target: cloud"
    if not recipe.serve.enabled:
        serve_stage.enabled = False
        serve_stage.note = serve_stage.note or "serve.enabled=false"
        plan.stage("online_eval").enabled = False
        plan.stage("online_eval").note = "needs serving"
        plan.stage("traffic").enabled = False
        plan.stage("traffic").note = "needs serving"
        monitor = plan.stage("monitor")
        if monitor.enabled:
            monitor.enabled = False
            monitor.note = "needs serving"
    act = plan.stage("act")
    if act.enabled and not plan.enabled("monitor"):
        raise RecipeError(f"{act.components[0].key}: actions act on the monitors' alerts, and this recipe monitors "
                          f"nothing{' (' + plan.stage('monitor').note + ')' if plan.stage('monitor').note else ''}; "
                          "declare one, e.g. 'monitor: [{type: whylogs_drift}]'")
    else:
        if not serve_stage.components:
            raise RecipeError("strategy: missing; serving needs a traffic strategy, e.g. 'strategy: {type: single}'")
        strategy = serve_stage.component
        strategy.cls.arm_names(strategy.config, dict(recipe.serve.models))
        if not recipe.traffic.enabled:
            plan.stage("traffic").enabled = False
            plan.stage("traffic").note = "traffic.enabled=false"
        if not recipe.online_eval.enabled:
            plan.stage("online_eval").enabled = False
            plan.stage("online_eval").note = "online_eval.enabled=false"
    gates = recipe.gates
    if not gates.thresholds and not gates.champion.ref:
        plan.stage("gate").enabled = False
        plan.stage("gate").note = "no gates declared"
    if not makes_model:
        for name in ("features", "compress", "export", "gate", "register"):
            plan.stage(name).enabled = False
            plan.stage(name).note = "no training in this recipe"
    elif not plan.enabled("train"):
        plan.stage("train").note = f"the model comes from {plan.stage('compress').components[0].key}"


# ---------------------------------------------------------------------------------------------
# The data source, checked before anything runs
# ---------------------------------------------------------------------------------------------
#: config fields of a data source that name a column of its table
DATA_COLUMN_FIELDS = ("target", "features", "key", "time", "columns", "column")
#: config fields of a data check that name columns of the table
CHECK_COLUMN_FIELDS = ("columns", "column")
#: config fields that say where a source's rows are, quoted in messages
SOURCE_LOCATION_FIELDS = ("path", "database", "dataset", "uri", "url", "table")


def check_data_source(plan: Plan) -> None:
    """What the recipe asks of the data, checked cheaply before anything runs (no rows are read):

    * the data's task is one the trainer's model can do (a source tells its task at plan time
      with a ``planned_task(config)`` classmethod or a ``task`` option; a model with ``tasks``);
    * when the source's ``describe()`` returns a SourceSchema: every column the data section names
      (target, features, key, time, typed columns), every column a data check names (a
      ``columns`` / ``column`` option) and every column a model card slice's query names is in the
      table. A missing one is a RecipeError naming its key path and the nearest column names.
    """
    data = plan.stage("data")
    if not data.enabled or not data.components:
        return
    planned = data.component
    _check_task(plan, planned)
    try:
        described = planned.build().describe()
    except FrameworkError:
        raise
    except Exception as exc:  # a source's bug, not the recipe's: name the plugin
        raise PluginError(f"data ({planned.type}, plugin {planned.plugin}): describe() failed: {exc!r}") from exc
    if described is None:
        return
    names = list(described.names)
    where = _source_label(planned)
    named = _named_columns(planned.config, "data", DATA_COLUMN_FIELDS)
    named += [("data.target", described.target)] if described.target else []
    named += [("data.features", f) for f in described.features or []]
    checks = plan.stage("checks")
    for check in checks.components if checks.enabled else []:
        named += _named_columns(check.config, check.key, CHECK_COLUMN_FIELDS)
    for slice_name, row_filter in slice_filters(plan.recipe).items():
        named += [(f"register.card.slices.{slice_name}", c) for c in row_filter.columns()]
    present = set(names)
    for key_path, column in named:
        if column not in present:
            raise RecipeError(f"{key_path}: no column '{column}' in data ({where}); {_nearest_columns(column, names)}")


def _check_task(plan: Plan, data: PlannedComponent) -> None:
    """The data's task (known at plan time) is one every planned component can work with: the
    trainer's model (``Model.tasks``), the trainer, the compression steps, the exporter, the
    traffic strategy... (``Component.check_task``), and the champion gate's metric."""
    task = data.cls.planned_task(data.config)
    if task is None:
        return
    if plan.enabled("train"):
        trainer = plan.stage("train").component
        parts = [(f"{trainer.key}.{f}", cls.name, cls) for f, cls in trainer.refs.items() if cls.kind == "model"]
        for key, name, cls in parts:
            if task not in cls.tasks:
                raise RecipeError(f"{key}: model '{name}' can do {' and '.join(cls.tasks)}, but the data's task is {task} "
                                  f"(data: {_source_label(data)}); choose a model that does {task}, or another data task")
    for stage in plan.stages:
        if stage.enabled and stage.name != "data":
            for planned in stage.components:
                planned.cls.check_task(planned.config, task, planned.key)
    champion = plan.recipe.gates.champion
    metrics = CHAMPION_METRICS.get("regression" if task == "regression" else "classification")
    if champion.ref and champion.metric is not None and champion.metric not in metrics:
        raise RecipeError(f"gates.champion.metric: '{champion.metric}' does not measure a {task} model; "
                          f"use {', '.join(metrics)}")


def _named_columns(config: Any, key: str, fields: tuple[str, ...]) -> list[tuple[str, str]]:
    """(key path, column name) of every column a component's config names in ``fields``: a
    string, a list of strings, or a mapping keyed by column name."""
    named: list[tuple[str, str]] = []
    for name in fields:
        value = getattr(config, name, None)
        if isinstance(value, str) and value:
            named.append((f"{key}.{name}", value))
        elif isinstance(value, dict):
            named += [(f"{key}.{name}.{column}", str(column)) for column in value]
        elif isinstance(value, (list, tuple)):
            named += [(f"{key}.{name}[{i}]", column) for i, column in enumerate(value) if isinstance(column, str)]
    return named


def slice_filters(recipe: RecipeConfig) -> dict[str, RowFilter]:
    """Every model card slice parsed by the filter grammar (never evaluated); a filter outside it
    is a RecipeError naming ``register.card.slices.NAME`` and the character position."""
    parsed: dict[str, RowFilter] = {}
    for name, text in recipe.register.card.slices.items():
        try:
            parsed[str(name)] = parse_filter(text)
        except ExpressionError as exc:
            raise RecipeError(f"register.card.slices.{name}: {exc}") from None
    return parsed


def _source_label(data: PlannedComponent) -> str:
    """``csv, path data/cars.csv``: the source's type and where its rows are."""
    for name in SOURCE_LOCATION_FIELDS:
        value = getattr(data.config, name, None)
        if value:
            return f"{data.type}, {name} {value}"
    query = getattr(data.config, "query", None)
    if query:
        line = next((line.strip() for line in str(query).splitlines() if line.strip()), "")
        return f"{data.type}, query '{line[:60]}'"
    return data.type


def _nearest_columns(column: str, names: list[str]) -> str:
    lowered: dict[str, str] = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    close = [lowered[c] for c in difflib.get_close_matches(column.lower(), list(lowered), n=3, cutoff=0.6)]
    if close:
        return "nearest: " + ", ".join(f"'{c}'" for c in close)
    shown = ", ".join(f"'{n}'" for n in names[:20])
    return f"columns: {shown}{' ...' if len(names) > 20 else ''}" if names else "the source has no columns"
