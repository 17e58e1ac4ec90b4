"""Run data > checks > version of a recipe through the core's stage functions, into a tmp run
directory and store: what the data-check tests share (imported by name: tests/unit is on
pytest's import path)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path


def make_plan(tmp_path: Path, checks: str | None, extra: list | None = None, body: str = "", group: str | None = None):
    """A breast-cancer recipe whose ``checks:`` is ``checks`` (YAML list items), or the conf group
    ``group`` (conf/checks/GROUP.yaml), planned with every installed plugin plus ``extra``."""
    from framework.plan import build_plan
    from framework.plugins import Components, default_components, get_plugin_manager
    from framework.recipe import compose

    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    defaults = "  - override /data: breast_cancer\n" + (f"  - override /checks: {group}\n" if group else "")
    listed = "checks:\n" + textwrap.indent(textwrap.dedent(checks), "  ") if checks is not None else ""
    (recipes / "r.yaml").write_text(f"# @package _global_\ndefaults:\n{defaults}name: r\n"
                                    f"store: {{uri: {tmp_path / 'store'}}}\n" + body + listed)
    components = Components.collect(get_plugin_manager(extra=extra)) if extra else default_components()
    cfg, path = compose([f"recipes_dir={recipes}", "+recipe=r"])
    return build_plan(cfg, path, components), components


class Stages:
    """data > checks > version of a plan, stage by stage, into ``tmp_path/run``."""

    def __init__(self, tmp_path: Path, plan, components):
        from framework.registry import Registry
        from framework.stages import RunState

        self.plan, self.components = plan, components
        self.run_dir = tmp_path / "run"
        self.state = RunState(registry=Registry(plan.recipe.store.uri))
        self.ctx: dict = {}

    def run(self, name: str) -> None:
        import logging

        from framework.context import RunStageContext

        stage = self.plan.stage(name)
        index = [s.name for s in self.plan.stages].index(name)
        ctx = RunStageContext(name, self.run_dir / "stages" / f"{index:02d}-{name}", seed=self.plan.recipe.seed,
                              logger=logging.getLogger(f"framework.stage.{name}"), registry=self.state.registry)
        self.ctx[name] = ctx
        stage.spec.load_runner()(self.plan, stage, self.state, ctx, self.components)

    def metrics(self, name: str) -> dict:
        return self.ctx[name].metrics

    def reports(self, name: str, file: str = "reports.json") -> list[dict]:
        return json.loads((self.ctx[name].out_dir / file).read_text())
