"""The recipe schema and how a recipe is composed with Hydra.

The top level is a dataclass structured config registered in Hydra's ConfigStore, so a misspelt
core key fails with its full key path. Component sections (``data``, ``train``, ``strategy`` ...)
hold ``type: NAME`` plus that component's own options; ``plan.py`` validates those against the
component's ``Config`` dataclass once the plugin is known.

``+recipe=NAME`` resolves ``NAME.yaml`` in the recipe folders (the project's ``recipes/``, the
folders named in ``FRAMEWORK_RECIPES`` or ``recipes_dir=...``, and folders plugins ship) through a
small Hydra ConfigSource that maps those folders onto the ``recipe`` config group.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .errors import RecipeError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
PROJECT_RECIPES = PROJECT_ROOT / "recipes"
RECIPES_ENV = "FRAMEWORK_RECIPES"


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------
@dataclass
class RayConfig:
    #: an existing cluster ("ray://host:10001" or "auto"); None starts a local Ray
    address: Optional[str] = None
    num_cpus: int = 2
    namespace: str = "framework"


@dataclass
class StoreConfig:
    #: a local folder or an fsspec URL (s3://bucket/prefix, memory://x ...)
    uri: str = ".framework/store"


@dataclass
class SplitConfig:
    val: float = 0.15
    test: float = 0.15
    stratify: bool = True


@dataclass
class ModelCardConfig:
    """What the model card of every registered version says beyond the measured figures."""

    intended_use: str = ""
    limitations: List[str] = field(default_factory=list)
    #: slice name -> row filter over the test split, e.g. {large: "`mean radius` > 15"}: column
    #: comparisons joined by and / or / not (framework/expressions.py), never evaluated as Python
    slices: Dict[str, str] = field(default_factory=dict)


@dataclass
class RegisterConfig:
    card: ModelCardConfig = field(default_factory=ModelCardConfig)
    model_name: str = "model"
    #: aliases moved to the new version when it is registered
    aliases: List[str] = field(default_factory=lambda: ["latest"])


@dataclass
class ServeConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    #: Ray Serve's HTTP proxy port (the app's URL with ingress "proxy"; it reaches the app either way)
    port: int = 8000
    route_prefix: str = "/"
    #: "direct": clients reach the ingress replica on its own port, no proxy hop (the default:
    #: 10x faster on a small model); several ingress replicas get a load balancer in front, on
    #: balancer_port. "proxy": through Ray Serve's HTTP proxy on `port` (README, "Serving fast")
    ingress: str = "direct"
    #: the load balancer's port when the ingress has several replicas (0: a free port)
    balancer_port: int = 0
    #: keep serving after the run until Ctrl-C
    keep_serving: bool = False
    #: "ingress": the ONNX model runs inside the ingress replica (no extra hop, the default);
    #: "deployment": each model in its own Ray Serve deployment
    placement: str = "ingress"
    #: a fixed replica count (of each arm with placement "deployment", of the ingress otherwise)
    replicas: int = 1
    #: {min_replicas, max_replicas, target_ongoing_requests}: Ray Serve autoscaling instead of a
    #: fixed `replicas` (same deployments as `replicas`); empty: fixed
    autoscaling: Dict[str, Any] = field(default_factory=dict)
    #: {max_batch_size, batch_wait_timeout_s}: concurrent requests to one arm answered by one
    #: onnxruntime call (@serve.batch), with either placement; empty or max_batch_size 0: off
    batching: Dict[str, Any] = field(default_factory=dict)
    #: arm name -> model reference ("this_run", "this_run#2", "NAME@ALIAS" or "NAME:VERSION_ID");
    #: empty means {primary: this_run}. (Empty, not that default: a recipe's arms replace it
    #: rather than being merged next to it.)
    models: Dict[str, str] = field(default_factory=dict)
    #: served rows kept in memory for monitors (a ring buffer, off the request path)
    record_buffer: int = 10000
    #: refused when set: a token in the recipe or on the command line is visible to every user of
    #: the machine. The admin token (every ``-/`` endpoint) comes from the environment variable
    #: named by admin_token_env, or from admin_token_file (mode 0600); with neither, the run makes
    #: up a random one that only its own stages know
    admin_token: Optional[str] = None
    admin_token_env: Optional[str] = "FRAMEWORK_ADMIN_TOKEN"
    admin_token_file: Optional[str] = None
    #: likewise refused; the optional token of predict, rank and feedback ("Authorization: Bearer
    #: TOKEN"): from client_token_env or client_token_file; with neither, those endpoints are open
    client_token: Optional[str] = None
    client_token_env: Optional[str] = "FRAMEWORK_CLIENT_TOKEN"
    client_token_file: Optional[str] = None
    #: the durable record log (every served prediction and feedback item, surviving replica
    #: restarts): a local folder (relative paths are under the store when it is local) or "off"
    record_log: str = "records"
    #: when the record log is forced to disk: "batch" (an fsync per write batch, off the request
    #: path) or "never" (written at once, flushed to disk when the OS decides)
    record_log_fsync: str = "batch"
    #: operational metrics in Prometheus' text format on GET /metrics of each ingress replica
    #: (request count, latency histogram, errors per model version and arm, CPU, memory); false: off
    metrics: bool = True
    #: with several ingress replicas (replicas > 1 or autoscaling, placement "ingress"): one
    #: strategy decides for all of them (a Ray actor; replicas route from a copy synced every
    #: 50 ms). false: each replica keeps its own strategy state, counts and events
    shared_decisions: bool = True
    #: fault injection for demos and tests only: arm -> {error_rate, extra_latency_ms, seed}
    faults: Dict[str, Any] = field(default_factory=dict)
    #: arms that predict different classes (an old and a new label schema) are compared through
    #: this mapping, class -> class both are judged in (a split's new classes -> the old one);
    #: without it such arms are refused in one comparison
    label_mapping: Dict[str, str] = field(default_factory=dict)


@dataclass
class TrafficConfig:
    """Simulated users sending traffic and feedback through the served endpoint, so that a
    traffic strategy's decision is seen happening (canary, A/B, bandit, interleaving)."""

    enabled: bool = False
    requests: int = 1000
    concurrency: int = 4
    #: split the request rows are drawn from (with replacement)
    source: str = "test"
    #: or a CSV file of rows with the data's feature and target columns (e.g. later, drifted
    #: rows than the model learnt from); relative to the working directory
    path: Optional[str] = None
    #: distinct simulated users (the sticky key, sent as X-User-Id)
    users: int = 200
    feedback: bool = True
    #: answers between a request and its feedback: feedback arrives late and out of order
    feedback_lag: int = 25
    #: "predict": one instance per request, the true label as feedback;
    #: "rank": rank_size candidates per request, clicks on relevant ones as feedback
    endpoint: str = "predict"
    rank_size: int = 10
    #: stop sending once the strategy promoted or rolled back
    stop_on_decision: bool = True
    seed: Optional[int] = None


@dataclass
class OnlineEvalConfig:
    """Send a held-out slice through the served endpoint and compare with offline predictions."""

    enabled: bool = True
    rows: int = 64
    batch_size: int = 8
    #: maximal allowed |served probability - offline probability|
    tolerance: float = 1e-5


@dataclass
class Bounds:
    min: Optional[float] = None
    max: Optional[float] = None


@dataclass
class ChampionGate:
    """Compare this run's model with the current champion on the same test rows."""

    #: the champion, e.g. "breast_cancer_mlp@prod"; unset: no comparison
    ref: Optional[str] = None
    #: classification: accuracy | f1_macro | log_loss; regression: r2 | mae | mse (lower is
    #: better for log_loss, mae and mse); unset: accuracy, or r2 for a regression
    metric: Optional[str] = None
    #: challenger minus champion must be >= this (lower-is-better metrics: champion minus challenger)
    min_delta: float = 0.0
    #: no champion yet (a first run): the comparison passes and says so
    missing_ok: bool = True


@dataclass
class GatesConfig:
    """Quality gates for CI/CD: a failed gate stops the run before the model is registered or
    served, prints the gate table and makes ``python -m framework run`` exit non-zero."""

    #: metric name -> bounds; any metric of train/export, plus the gate's own measurements:
    #: accuracy, f1_macro, log_loss (classification) or mse, mae, r2 (regression) (ONNX on the
    #: test split), size_mb, latency_p50_ms,
    #: latency_p95_ms (batch 1, one thread)
    #: (each value is {min, max}; plan.py checks it against Bounds)
    thresholds: Dict[str, Any] = field(default_factory=dict)
    champion: ChampionGate = field(default_factory=ChampionGate)
    latency_runs: int = 200


@dataclass
class DeviceConfig:
    """``target: device``: the best model variant that fits every budget, as a bundle that needs
    only onnxruntime and numpy (no torch, no Ray)."""

    max_size_mb: Optional[float] = None
    #: batch 1, one thread
    max_p95_latency_ms: Optional[float] = None
    #: peak memory of running the model, over a bare interpreter with onnxruntime loaded
    max_ram_mb: Optional[float] = None
    #: where the bundle goes; unset: the device stage's folder in the run directory
    bundle_dir: Optional[str] = None


@dataclass
class RecipeConfig:
    name: str = "unnamed"
    description: str = ""
    seed: int = 0
    runs_dir: str = "runs"
    recipes_dir: Optional[str] = None
    store: StoreConfig = field(default_factory=StoreConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: Dict[str, Any] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    checks: List[Any] = field(default_factory=list)
    label: Dict[str, Any] = field(default_factory=dict)  # empty: no labeling stage
    #: preprocessing fitted on the train split (typed features: missing values, categories);
    #: conf/config.yaml picks ``features: tabular``; empty: no features stage
    features: Dict[str, Any] = field(default_factory=dict)
    train: Dict[str, Any] = field(default_factory=dict)
    compress: List[Any] = field(default_factory=list)
    export: Dict[str, Any] = field(default_factory=dict)
    gates: GatesConfig = field(default_factory=GatesConfig)
    #: "cloud": serve on Ray Serve; "device": pick a variant within device budgets, write a bundle
    target: str = "cloud"
    device: DeviceConfig = field(default_factory=DeviceConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    strategy: Dict[str, Any] = field(default_factory=lambda: {"type": "single"})
    online_eval: OnlineEvalConfig = field(default_factory=OnlineEvalConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    batch: Dict[str, Any] = field(default_factory=dict)  # empty: no batch prediction
    monitor: List[Any] = field(default_factory=list)
    #: what to do when a monitor alerts, in order: [{type: log}, {type: webhook, url: ...},
    #: {type: rollback}, {type: retrain, on: [drift], cooldown_s: 600}]; ``on`` and ``cooldown_s``
    #: are the core's keys of every action
    actions: List[Any] = field(default_factory=list)


SCHEMA_NAME = "recipe_schema"


# ---------------------------------------------------------------------------------------------
# Recipe folders (Hydra sees each as the `recipe` group through hydra_plugins/framework_recipes)
# ---------------------------------------------------------------------------------------------
def recipe_folders(extra: list[str] | None = None) -> list[Path]:
    """Where recipes are looked up, in order: user folders, the project's, then plugins'."""
    folders: list[Path] = []
    for raw in (extra or []) + os.environ.get(RECIPES_ENV, "").split(os.pathsep):
        if raw:
            folders.append(Path(raw).expanduser().resolve())
    folders.append(PROJECT_RECIPES)
    try:
        from .plugins import default_components

        folders.extend(Path(p).resolve() for p in default_components().recipe_dirs())
    except Exception:  # plugin errors surface later, with their own message
        pass
    seen: list[Path] = []
    for f in folders:
        if f not in seen:
            seen.append(f)
    return seen


def available_recipes(folders: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def split_recipe_override(overrides: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Take ``+recipe=NAME`` and ``recipes_dir=...`` out of the override list."""
    recipe, recipes_dir, rest = None, None, []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+") == "recipe" and _:
            recipe = value
            if not key.startswith("+"):
                raise RecipeError(f"'{item}': select a recipe with '+recipe={value}' (note the '+').")
        elif key.lstrip("+") == "recipes_dir" and _:
            recipes_dir = value
            rest.append(f"{'' if key.startswith('+') else ''}recipes_dir={value}")
        else:
            rest.append(item)
    return recipe, recipes_dir, rest


#: recipe sections that hold one component (``type: NAME`` plus its options), each a conf/ group
COMPONENT_SECTIONS = ("data", "label", "features", "train", "export", "strategy", "batch")


def compose(overrides: list[str]) -> tuple[DictConfig, Path | None]:
    """Compose ``conf/`` + the chosen recipe + command-line overrides into one validated config.

    Returns the config and the recipe file. Raises RecipeError naming the key or file at fault.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    import yaml
    from hydra.errors import HydraException

    recipe, recipes_dir, rest = split_recipe_override(overrides)
    folders = recipe_folders([recipes_dir] if recipes_dir else None)
    recipes = available_recipes(folders)
    recipe_path = None
    recipe_yaml: dict = {}
    if recipe is not None:
        if recipe not in recipes:
            close = difflib.get_close_matches(recipe, list(recipes), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RecipeError(
                f"+recipe={recipe}: no recipe '{recipe}.yaml' in {', '.join(str(f) for f in folders)}.{hint} "
                f"Recipes that exist: {', '.join(sorted(recipes)) or '(none)'}"
            )
        recipe_path = recipes[recipe]
        text = recipe_path.read_text()
        if "@package _global_" not in text[:1024]:
            # without it Hydra nests the whole file under a `recipe:` key
            raise RecipeError(f"{recipe_path}: a recipe must start with the line '# @package _global_'")
        recipe_yaml = load_yaml_file(recipe_path, text)
    rest = [_component_override(item) for item in rest]

    ConfigStore.instance().store(name=SCHEMA_NAME, node=RecipeConfig)
    search = ",".join(f"recipes://{f}" for f in folders if f.is_dir())
    hydra_overrides = [f"hydra.searchpath=[{search}]"] + rest
    if recipe is not None:
        hydra_overrides.append(f"+recipe={recipe}")

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=hydra_overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise RecipeError(_explain_compose_error(exc, recipe_path)) from None
    except AssertionError as exc:  # Hydra asserts on some impossible overrides (e.g. into a null node)
        raise RecipeError(f"recipe composition failed on overrides {rest}: {exc}") from None
    except (TypeError, KeyError, AttributeError, IndexError) as exc:  # Hydra's own crash on odd values
        groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
        named = [o.split("=", 1)[0].lstrip("+~") for o in rest if o.split("=", 1)[0].lstrip("+~") in groups]
        hint = (f"; {', '.join(named)} picks file(s) of conf/{named[0]}/ by name, e.g. {named[0]}=NAME or "
                f"{named[0]}=[NAME1,NAME2]") if named else ""
        raise RecipeError(f"{', '.join(named) or 'overrides'}: recipe composition failed on overrides {rest}: "
                          f"{type(exc).__name__}: {exc}{hint}") from None
    except yaml.YAMLError as exc:  # what PyYAML lets pass and OmegaConf's loader refuses (a duplicate key)
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{recipe_path or 'a config file'}:{mark.line + 1}:{mark.column + 1}" if mark else str(recipe_path)
        what = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc)
        raise RecipeError(f"{where}: YAML error: {what}") from None
    finally:
        GlobalHydra.instance().clear()
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        _drop_group_leftovers(cfg, choices, recipe_yaml, rest)
        check_schema_keys(cfg, RecipeConfig)
    except OmegaConfBaseException as exc:  # e.g. an interpolation to a key that does not exist
        message = describe_omegaconf_error(exc, prefix="")
        if message.startswith(": "):  # OmegaConf did not say where: find the section that fails
            message = f"{_unresolvable_key(cfg)}{message}"
        raise RecipeError(message) from None
    return cfg, recipe_path


def _unresolvable_key(cfg: DictConfig, path: str = "") -> str:
    """The first key path (depth first) whose value does not resolve, or "recipe"."""
    for key in cfg.keys():
        where = f"{path}.{key}" if path else str(key)
        try:
            value = cfg[key]
        except OmegaConfBaseException:
            return where
        if isinstance(value, DictConfig):
            inner = _unresolvable_key(value, where)
            if inner != "recipe":
                return inner
    return "recipe"


def load_yaml_file(path: Path, text: str | None = None) -> dict:
    """A YAML file's mapping; a syntax error is one RecipeError naming file, line and column."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text() if text is None else text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(filter(None, (exc.context, exc.problem)))
        raise RecipeError(f"{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: YAML error: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got a {type(data).__name__}")
    return data


def _component_override(item: str) -> str:
    """``train.cpus_per_trial=2`` sets a component option the group file does not list: Hydra
    would call the key unknown (the section is a struct), so it becomes ``++`` (add or set). The
    component's own Config still refuses a misspelt option at plan time, naming the key."""
    key, eq, _ = item.partition("=")
    if not eq or key.startswith(("+", "~")) or "." not in key:
        return item
    return f"++{item}" if key.split(".", 1)[0] in COMPONENT_SECTIONS else item


def _drop_group_leftovers(cfg: DictConfig, choices: dict, recipe_yaml: dict, overrides: list[str]) -> None:
    """A recipe that switches a component section to another ``type`` in its own body (not with
    ``- override /GROUP: ...``) would keep the default group file's options for the old type.
    Drop those: options the group file set, that still hold its values and that neither the
    recipe nor an override set explicitly."""
    for section in COMPONENT_SECTIONS:
        choice = choices.get(section)
        node = cfg.get(section)
        if not choice or choice == "null" or not isinstance(node, DictConfig):
            continue
        group_file = CONF_DIR / section / f"{choice}.yaml"
        if not group_file.is_file():
            continue
        group = load_yaml_file(group_file)
        if "type" not in node or node.get("type") == group.get("type"):
            continue
        explicit = set((recipe_yaml.get(section) or {}) if isinstance(recipe_yaml.get(section), dict) else {})
        explicit |= {o.lstrip("+").split("=", 1)[0].split(".", 2)[1] for o in overrides
                     if o.lstrip("+").startswith(section + ".")}
        with open_dict(node):
            for key, value in group.items():
                if key != "type" and key not in explicit and key in node and _plain(node[key]) == value:
                    del node[key]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def check_schema_keys(cfg: Any, schema: type, path: str = "") -> None:
    """Every key of a schema section is a field of its dataclass. Hydra lets ``+key=value`` add a
    key anywhere, and OmegaConf then drops it without a word; a misspelt key must fail instead."""
    import dataclasses
    import typing

    if not isinstance(cfg, DictConfig):
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in cfg.keys():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RecipeError(f"{where}: unknown key.{hint} Keys under {path or 'the top level'}: {', '.join(fields)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            check_schema_keys(cfg.get(key), kind, where)


def _explain_compose_error(exc: Exception, recipe_path: Path | None) -> str:
    where = f" (in recipe {recipe_path} or the command-line overrides)" if recipe_path else ""
    cause = exc
    while cause.__cause__ is not None and isinstance(cause.__cause__, (OmegaConfBaseException, ValueError)):
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return describe_omegaconf_error(cause, prefix="") + where
    text = str(exc).strip()
    return f"recipe composition failed{where}: {text}"


def describe_omegaconf_error(exc: OmegaConfBaseException, prefix: str) -> str:
    """'KEY.PATH: what is wrong' from an OmegaConf validation error."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    full_key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
    path = ".".join(p for p in (prefix, str(full_key)) if p)
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)) and "not in" in msg:
        parent = path.rsplit(".", 1)[0] if "." in path else "(top level)"
        return f"{path}: unknown key. {msg}; check the spelling of the keys under {parent}"
    if isinstance(exc, ValidationError):
        import re

        wanted = re.search(r"converted to (\w+)|not a valid (\w+)|to be (?:an? )?(\w+)", msg)
        names = {"integer": "int", "boolean": "bool", "string": "str"}
        word = next((g for g in wanted.groups() if g), "").lower() if wanted else ""
        expected = f" expected {names.get(word, word)}," if word else ""
        return f"{path}: wrong type:{expected} got {getattr(exc, 'value', None)!r}. {msg}"
    return f"{path}: {msg}"


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
