"""The command line: ``python -m framework VERB [HYDRA OVERRIDES...]``.

The verb is taken off argv before Hydra sees the overrides.
"""
from __future__ import annotations

import json
import sys

USAGE = """usage: python -m framework VERB [ARGS]

verbs:
  run +recipe=NAME [key=value ...]    validate the recipe, then run every stage
  serve +recipe=NAME [key=value ...]  like run, then keep serving until Ctrl-C
  plan +recipe=NAME [key=value ...]   print the resolved plan; nothing heavy starts (--json for JSON)
  recipes [recipes_dir=PATH]          list the recipes that +recipe= can name
  stages                              the stages of a run, in order, and what configures each
  plugins                             every hook and component, and which plugin provides it
  versions [--store URI] list|show|diff|alias ...   data, label and model versions in the store
  labels [--store URI] export LABELS --out tasks.json | import EXPORT.json --labels LABELS
                                      the Label Studio round trip of a label version
  evaluate-strategy +recipe=NAME log=PATH|obd:random|obd:bts [method=replay,ips,snips,dr]
          [arms=A,B,...] [max_rows=N] [policy_samples=32] [arm_column=C reward_column=C
          propensity_column=C] [--json] [key=value ...]
                                      the recipe's traffic strategy replayed on a logged file of
                                      requests, arms, propensities and rewards (CSV/Parquet):
                                      what it would have earned, with 95% intervals

  monitor +recipe=NAME [records=DIR] [every=SECONDS] [--json] [key=value ...]
                                      the recipe's monitors on the durable record log of its
                                      deployment (default: the newest), off the request path:
                                      drift per model version and window; every=S follows it

A recipe is recipes/NAME.yaml, or NAME.yaml in a folder given by recipes_dir=PATH or the
FRAMEWORK_RECIPES environment variable. Any key can be overridden: train.max_epochs=5.
"""


def _fail(message: str, code: int = 2) -> int:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return code


def cmd_plan(args: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from .run import plan_recipe

    as_json = "--json" in args
    plan = plan_recipe([a for a in args if a != "--json"])
    if as_json:
        print(json.dumps(plan.describe(), indent=2, default=str))
        return 0
    table = Table(title=f"plan of recipe '{plan.recipe.name}' ({plan.recipe_path})")
    for col in ("#", "stage", "component", "plugin", "options"):
        table.add_column(col)
    for i, stage in enumerate(plan.stages):
        if not stage.enabled:
            table.add_row(str(i), f"[dim]{stage.name}[/]", "[dim]skipped[/]", "", f"[dim]{stage.note or 'not in recipe'}[/]")
            continue
        if not stage.components:
            table.add_row(str(i), stage.name, "core", "framework", "")
        for c in stage.components:
            options = json.dumps(c.describe()["config"], default=str)
            table.add_row(str(i), stage.name, c.type, c.plugin, options if len(options) < 90 else options[:87] + "...")
    Console().print(table)
    print(f"recipe hash {plan.recipe_hash[:12]}; store {plan.recipe.store.uri}; runs in {plan.recipe.runs_dir}/")
    return 0


def cmd_run(args: list[str], keep_serving: bool | None = None) -> int:
    from .errors import RecipeError
    from .plugins import default_components
    from .run import execute, plan_recipe

    plan = plan_recipe(args)  # a bad recipe fails here, before Ray or torch start
    try:
        result = execute(plan, default_components(), keep_serving=keep_serving)
    except RecipeError:
        raise
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0 if result.status == "ok" else 1


def cmd_serve(args: list[str]) -> int:
    """``run``, then keep serving until Ctrl-C; then exit at once. Everything is stopped by then
    (the app, or the whole local Ray) and the run directory written; what is left is the
    interpreter's own teardown of torch, onnxruntime and Ray's core worker, ≈ 5 s measured here,
    which made a Ctrl-C look ignored."""
    import logging
    import os

    code = cmd_run(args, keep_serving=True)
    from .engine import stop_ray

    stop_ray()  # a cluster given by ray.address: disconnect as a finished driver, not a crashed one
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_recipes(args: list[str]) -> int:
    from .errors import RecipeError
    from .recipe import available_recipes, recipe_folders, split_recipe_override

    recipe, recipes_dir, rest = split_recipe_override(args)
    unknown = [a for a in rest if not a.lstrip("+").startswith("recipes_dir=")]
    if recipe is not None or unknown:
        raise RecipeError(f"recipes: takes only recipes_dir=PATH, got {' '.join(unknown or [f'+recipe={recipe}'])}")
    folders = recipe_folders([recipes_dir] if recipes_dir else None)
    for name, path in sorted(available_recipes(folders).items()):
        print(f"{name:24s} {path}")
    return 0


def cmd_stages(args: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from .pipeline import STAGES

    table = Table(title="stages of a run, in order (framework/pipeline.py)")
    for col in ("#", "stage", "recipe key", "component kind", "Ray", "what it does"):
        table.add_column(col)
    for i, spec in enumerate(STAGES):
        key = (spec.recipe_key + ("[]" if spec.many else "")) if spec.recipe_key else "-"
        table.add_row(str(i), spec.name, key, spec.kind or "core", "yes" if spec.needs_ray else "", spec.summary)
    Console().print(table)
    return 0


def cmd_plugins(args: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import hookspecs
    from .components import COMPONENT_KINDS
    from .plugins import default_components

    components = default_components()
    pm = components.pm
    console = Console()
    plugins = Table(title="plugins (entry-point group 'framework')")
    plugins.add_column("plugin")
    plugins.add_column("module")
    plugins.add_column("hooks")
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: str(x[0])):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        plugins.add_row(str(name), getattr(plugin, "__name__", repr(plugin)), ", ".join(hooks))
    console.print(plugins)

    comps = Table(title="components (recipe 'type:' names)")
    for col in ("kind", "type", "plugin", "summary"):
        comps.add_column(col)
    for kind in COMPONENT_KINDS:
        for name in components.names(kind):
            entry = components.by_kind[kind][name]
            comps.add_row(kind, name, entry.plugin, entry.cls.summary)
    console.print(comps)

    hooks = Table(title="hooks")
    hooks.add_column("hook")
    hooks.add_column("implemented by")
    for hook_name in sorted(n for n in dir(hookspecs) if n.startswith(("register_", "on_", "recipe_"))):
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        hooks.add_row(hook_name, ", ".join(sorted(pm.get_name(i.plugin) or "?" for i in impls)) or "[dim]-[/]")
    console.print(hooks)
    return 0


def cmd_versions(args: list[str]) -> int:
    from .registry.cli import versions_command

    return _with_store(args, versions_command)


def cmd_labels(args: list[str]) -> int:
    from .registry.labels_cli import labels_command

    return _with_store(args, labels_command)


def _with_store(args: list[str], command) -> int:
    """``command(args, store)``: the store from ``--store PATH_OR_URL``, else the recipes' default."""
    from .recipe import StoreConfig

    store = StoreConfig().uri
    if "--store" in args:
        i = args.index("--store")
        if i + 1 >= len(args):
            return _fail("--store needs a path or URL")
        store = args[i + 1]
        args = args[:i] + args[i + 2:]
    return command(args, store)


def _verb_options(args: list[str], names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """A verb's own ``name=value`` options (``names``), and the rest: the recipe's overrides
    (``--json`` is the verb's too, read by the caller)."""
    options: dict[str, str] = {}
    rest = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in names:
            options[key.lstrip("+")] = value
        elif arg != "--json":
            rest.append(arg)
    return options, rest


#: the evaluate-strategy options taken off the command line before the recipe is composed
EVALUATE_OPTIONS = ("log", "method", "arms", "max_rows", "policy_samples", "arm_column", "reward_column",
                    "propensity_column")


def cmd_evaluate_strategy(args: list[str]) -> int:
    from .errors import RecipeError
    from .offline_eval import evaluate, format_report, read_log
    from .run import plan_recipe

    options, rest = _verb_options(args, EVALUATE_OPTIONS)
    if "log" not in options:
        raise RecipeError("evaluate-strategy: name the log, e.g. log=path/to/log.csv or log=obd:random "
                          "(the Open Bandit Dataset sample in the obp package)")
    plan = plan_recipe(rest)  # the whole recipe is validated, the strategy's options too
    strategy = plan.stage("serve").component
    if strategy is None:
        raise RecipeError("strategy: missing; evaluate-strategy replays the recipe's traffic strategy")

    def integer(name: str) -> int | None:
        if name not in options:
            return None
        try:
            return int(options[name])
        except ValueError:
            raise RecipeError(f"{name}={options[name]}: expected an integer") from None

    log = read_log(
        options["log"],
        arm_column=options.get("arm_column"),
        reward_column=options.get("reward_column"),
        propensity_column=options.get("propensity_column"),
        arms=[a for a in options["arms"].split(",") if a] if options.get("arms") else None,
        max_rows=integer("max_rows"),
    )
    methods = [m for m in options["method"].split(",") if m] if options.get("method") else None
    # the recipe's strategy over the log's arms (serve.models names no arm of a log)
    report = evaluate(lambda arms: strategy.cls(strategy.config, arms, refs=strategy.refs), log, methods,
                      policy_samples=integer("policy_samples") or 32)
    if "--json" in args:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(format_report(report))
    return 0


MONITOR_OPTIONS = ("records", "every")


def cmd_monitor(args: list[str]) -> int:
    import time
    from pathlib import Path

    from .errors import RecipeError
    from .plugins import default_components
    from .run import plan_recipe
    from .stages.monitor import monitor_records, newest_record_log

    options, rest = _verb_options(args, MONITOR_OPTIONS)
    plan = plan_recipe(rest)
    records = Path(options["records"]).expanduser() if options.get("records") else newest_record_log(plan)
    if records is None:
        raise RecipeError(f"monitor: no record log of '{plan.recipe.name}' found (serve.record_log "
                          f"{plan.recipe.serve.record_log!r}); give records=DIR")
    every = None
    if options.get("every"):
        try:
            every = float(options["every"])
        except ValueError:
            raise RecipeError(f"every={options['every']}: expected seconds, e.g. every=30") from None
        if not every > 0:
            raise RecipeError(f"every={options['every']}: expected seconds > 0")
    components = default_components()
    while True:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = Path(plan.recipe.runs_dir) / f"{stamp}-monitor-{plan.recipe.name}"
        result = monitor_records(plan, components, records, out_dir)
        if "--json" in args:
            print(json.dumps(result, indent=2, default=str))
        else:
            print(format_monitor(result))
        if every is None:
            return 0
        sys.stdout.flush()
        time.sleep(every)


def format_monitor(result: dict) -> str:
    """The terminal summary of ``monitor``: per model version and window, what drifted and since when."""
    lines = [f"record log {result['records']}: {result['answers']} answers ({result['rows']} rows), "
             f"{result['feedback']} feedback items; reference {result['reference']}"]
    for report in result["reports"]:
        lines.append(f"monitor {report['monitor']}:")
        # a monitor that cuts windows lists them in its metrics (whylogs_drift does)
        for w in report["metrics"].get("drift_by_window") or ():
            moved = ", ".join(w["drifted"]) or "no drift"
            lines.append(f"  {w['model_version']}  {w['start']} .. {w['end']}  {w['rows']:>6} rows  "
                         f"{w['tests']:>3} tests  {moved}")
        for alert in report["alerts"]:
            lines.append(f"  ALERT {alert}")
        if not report["alerts"]:
            lines.append("  no alert")
    for event in result.get("actions") or ():
        detail = event.get("error") or event.get("note") or json.dumps(event.get("result", {}), default=str)[:200]
        lines.append(f"ACTION {event['action']} {event['status']} on {event['alert_kind']} alert: {detail}")
    lines.append(f"reports in {result['out_dir']}")
    return "\n".join(lines)


VERBS = {
    "run": cmd_run,
    "monitor": cmd_monitor,
    "serve": cmd_serve,
    "plan": cmd_plan,
    "recipes": cmd_recipes,
    "stages": cmd_stages,
    "plugins": cmd_plugins,
    "versions": cmd_versions,
    "labels": cmd_labels,
    "evaluate-strategy": cmd_evaluate_strategy,
}


def main(argv: list[str] | None = None) -> int:
    from .errors import FrameworkError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    verb, args = argv[0], argv[1:]
    if verb not in VERBS:
        import difflib

        close = difflib.get_close_matches(verb, list(VERBS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return _fail(f"unknown verb '{verb}'.{hint} Verbs: {', '.join(VERBS)}")
    try:
        return VERBS[verb](args)
    except FrameworkError as exc:
        from .errors import RecipeError, PluginError

        return _fail(str(exc), 2 if isinstance(exc, (RecipeError, PluginError)) else 1)

