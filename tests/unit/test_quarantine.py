"""The core's severities on real data: quarantine takes flagged rows out into a versioned set tied
to the data version, readmit keeps them (still reported), checks after the split act on the
split, and a check's ``apply`` is held to its contract. Runs data > checks > version through the
stage functions into a tmp run directory and store (faults injected into the loaded table)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from data_stages import Stages, make_plan

from framework import CheckReport, DataCheck, hookimpl
from framework.errors import DataCheckError, RecipeError, StageError


def inject_duplicates_and_nulls(state) -> tuple[list, list]:
    """Three repeats of rows 0-2 (new labels 900-902) and NaN in rows 7 and 11."""
    frame = state.dataset.frame
    repeats = frame.loc[[0, 1, 2]].copy()
    repeats.index = [900, 901, 902]
    frame = pd.concat([frame, repeats])
    frame.loc[[7, 11], "mean radius"] = np.nan
    state.dataset = dataclasses.replace(state.dataset, frame=frame)
    return [900, 901, 902], [7, 11]


CHECKS = """\
- {type: duplicates, severity: quarantine}
- {type: pandera_schema, severity: quarantine}
"""


def test_quarantined_rows_leave_the_data_and_are_stored_with_their_reason(tmp_path):
    plan, components = make_plan(tmp_path, CHECKS)
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    repeats, nulls = inject_duplicates_and_nulls(stages.state)
    stages.run("checks")
    stages.run("version")

    registry = stages.state.registry
    version = stages.state.data_version
    stored = registry.load_frame(version)
    assert len(stored) == 569 - len(nulls) and not set(repeats + nulls) & set(stored.index)

    quarantine = registry.get("breast_cancer.quarantine@latest", kind="data")
    rows = registry.load_frame(quarantine)
    assert sorted(rows.index) == sorted(nulls + repeats)
    assert set(rows.loc[repeats, "reason"]) == {"exact duplicate"}
    assert rows.loc[900, "evidence"] == "same values as row 0"
    assert set(rows.loc[nulls, "reason"]) == {"not_nullable (mean radius)"}
    assert set(rows["check"]) == {"checks[0] (duplicates)", "checks[1] (pandera_schema)"}
    assert set(rows["split"]) == {"before_split"}
    assert rows.loc[900, "mean texture"] == stored.loc[0, "mean texture"]  # the row's values are kept
    assert quarantine.meta["data_version"] == version.ref and quarantine.parent == version.id
    assert quarantine.meta["checks"]["checks[0] (duplicates)"] == {"rows": 3, "reasons": {"exact duplicate": 3}}

    # the stage's metrics (and so the run summary) say how many rows and why, per check
    checks = stages.metrics("checks")
    assert checks["quarantined_rows"] == 5 and checks["rows"] == 567 and checks["checks_passed"] == "0/2"
    assert checks["quarantine"]["checks[1] (pandera_schema)"] == {
        "rows": 2, "reasons": {"not_nullable (mean radius)": 2}, "readmitted": False}
    assert stages.metrics("version")["quarantine_set"] == quarantine.ref
    report = stages.reports("checks")[0]
    assert report["outcome"] == "quarantine" and report["flagged_rows"] == 3
    # later checks never see quarantined rows: the schema check saw 569 + 3 - 3 rows
    assert stages.reports("checks")[1]["rows_checked"] == 569


def test_readmit_keeps_the_flagged_rows_and_still_reports_them(tmp_path):
    plan, components = make_plan(tmp_path, CHECKS.replace("severity: quarantine}", "severity: quarantine, readmit: true}"))
    assert plan.stage("checks").components[0].describe()["readmit"] is True
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    repeats, nulls = inject_duplicates_and_nulls(stages.state)
    stages.run("checks")
    stages.run("version")

    stored = stages.state.registry.load_frame(stages.state.data_version)
    assert len(stored) == 572 and set(repeats + nulls) <= set(stored.index)
    checks = stages.metrics("checks")
    assert checks["quarantined_rows"] == 0 and checks["readmitted_rows"] == 5
    assert checks["quarantine"]["checks[0] (duplicates)"]["readmitted"] is True
    assert [r["outcome"] for r in stages.reports("checks")] == ["readmit", "readmit"]
    assert "quarantine_set" not in stages.metrics("version")
    assert not [v for v in stages.state.registry.list("data") if v.name.endswith(".quarantine")]


def test_a_failure_without_rows_cannot_be_quarantined_and_stops_the_run(tmp_path):
    plan, components = make_plan(tmp_path, "- {type: pandera_schema, severity: quarantine, min_rows: 1000}\n")
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    with pytest.raises(DataCheckError) as info:
        stages.run("checks")
    message = str(info.value)
    assert "checks[0] (pandera_schema)" in message and "names no rows to quarantine" in message
    assert "severity quarantine" in message


def test_leakage_after_the_split_takes_evaluation_copies_out_of_their_split(tmp_path):
    plan, components = make_plan(tmp_path, "- {type: leakage, severity: quarantine}\n")
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    frame = stages.state.dataset.frame
    copies = frame.iloc[:60].copy()  # 60 rows twice: the split puts many pairs on both sides
    copies.index = range(1000, 1060)
    stages.state.dataset = dataclasses.replace(stages.state.dataset, frame=pd.concat([frame, copies]))
    stages.run("checks")
    assert stages.metrics("checks")["checks_after_split"] == 1
    stages.run("version")

    splits = stages.state.splits
    train_keys = {tuple(r) for r in splits.train[stages.state.dataset.features].to_numpy().tolist()}
    for part in (splits.val, splits.test):  # no evaluation row equals a training row any more
        assert not {tuple(r) for r in part[stages.state.dataset.features].to_numpy().tolist()} & train_keys
    registry = stages.state.registry
    rows = registry.load_frame(registry.get("breast_cancer.quarantine@latest", kind="data"))
    assert len(rows) > 0 and set(rows["split"]) <= {"val", "test"}
    assert all(e.startswith("same features as train row") for e in rows["evidence"])
    split_index = json.loads((stages.ctx["version"].out_dir / "split.json").read_text())
    recorded = set(split_index["train"]) | set(split_index["val"]) | set(split_index["test"])
    assert not {str(i) for i in rows.index} & recorded  # the split written is the split used
    assert not set(rows.index) & set(stages.state.dataset.frame.index)
    assert stages.metrics("version")["quarantined_rows"] == len(rows)
    assert stages.reports("version", "split_checks.json")[0]["outcome"] == "quarantine"
    # the data version keeps them: version + quarantine set + seed give the exact parts
    assert set(rows.index) <= set(registry.load_frame(stages.state.data_version).index)


def test_a_failing_split_check_stops_the_run_after_the_quarantine_set_is_stored(tmp_path):
    plan, components = make_plan(tmp_path, "- {type: duplicates, severity: quarantine}\n- {type: leakage}\n")
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    frame = stages.state.dataset.frame
    twins = frame.iloc[:60].copy()
    twins.index = range(1000, 1060)
    twins["target"] = 1 - twins["target"]  # same features, other label: not an exact duplicate
    repeats = frame.iloc[[5, 6]].copy()
    repeats.index = [2000, 2001]
    stages.state.dataset = dataclasses.replace(stages.state.dataset, frame=pd.concat([frame, twins, repeats]))
    stages.run("checks")
    with pytest.raises(DataCheckError, match=r"checks\[1\] \(leakage\)"):
        stages.run("version")
    registry = stages.state.registry
    quarantine = registry.get("breast_cancer.quarantine@latest", kind="data")
    assert sorted(registry.load_frame(quarantine).index) == [2000, 2001]
    assert quarantine.meta["data_version"] == stages.state.data_version.ref


class DropsRows(DataCheck):
    """A broken transforming check (fault injection): its apply loses rows."""

    name = "drops_rows"

    def check(self, dataset, ctx):
        return CheckReport(self.name, True, len(dataset.frame))

    def apply(self, dataset, report, ctx):
        return dataclasses.replace(dataset, frame=dataset.frame.iloc[1:])


class FlagsStrangers(DataCheck):
    """A broken check (fault injection): it flags labels that are not in the frame."""

    name = "flags_strangers"

    def check(self, dataset, ctx):
        return CheckReport(self.name, False, len(dataset.frame), failures=[{"column": None, "check": "x", "rows": [-5]}],
                           flagged=[{"row": -5, "reason": "x"}])


class ChecksNothing(DataCheck):
    """A broken check (fault injection): neither check nor check_splits."""

    name = "checks_nothing"


class BrokenPlugin:
    @staticmethod
    @hookimpl
    def register_data_checks():
        return [DropsRows, FlagsStrangers, ChecksNothing]


@pytest.mark.parametrize("check, message", [
    ("checks_nothing", r"checks\[0\] \(checks_nothing\): implements neither check\(dataset, ctx\) nor check_splits"),
    ("drops_rows", r"checks\[0\] \(drops_rows\).apply changed the rows; a check takes rows out only through severity quarantine"),
    ("flags_strangers", r"checks\[0\] \(flags_strangers\) flagged rows \[-5\] that are not labels of the data's index"),
])
def test_a_check_that_breaks_the_contract_is_named(tmp_path, check, message):
    plan, components = make_plan(tmp_path, f"- {{type: {check}, severity: quarantine}}\n", extra=[BrokenPlugin])
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    with pytest.raises(StageError, match=message):
        stages.run("checks")


@pytest.mark.parametrize("checks, message", [
    ("- {type: pii, severity: quarantine}\n", "checks[0].severity: 'pii' accepts fail only, got 'quarantine'"),
    ("- {type: drift, severity: quarantine}\n", "checks[0].severity: 'drift' accepts fail, warn only, got 'quarantine'"),
    ("- {type: duplicates, readmit: true}\n", "checks[0].readmit: only a check with 'severity: quarantine' has rows to re-admit"),
    ("- {type: duplicates, severity: quarantine, readmit: maybe}\n", "checks[0].readmit: must be true or false, got 'maybe'"),
])
def test_severity_and_readmit_are_checked_at_plan_time(tmp_path, checks, message):
    with pytest.raises(RecipeError) as info:
        make_plan(tmp_path, checks)
    assert str(info.value).startswith(message), str(info.value)


def test_the_quarantine_checks_group_runs_on_breast_cancer(tmp_path):
    """conf/checks/quarantine.yaml: every hygiene check on a real table, through the stages."""
    plan, components = make_plan(tmp_path, None, group="quarantine")
    assert [c.type for c in plan.stage("checks").components] == [
        "pandera_schema", "duplicates", "label_issues", "outliers", "leakage", "data_valuation"]
    stages = Stages(tmp_path, plan, components)
    stages.run("data")
    stages.run("checks")
    stages.run("version")
    checks, version = stages.metrics("checks"), stages.metrics("version")
    assert checks["checks_passed"].endswith("/4") and checks["checks_after_split"] == 2
    assert version["split_checks_passed"].endswith("/2")
    kept = len(stages.state.registry.load_frame(stages.state.data_version))
    assert kept == 569 - checks.get("quarantined_rows", 0)
    assert version["train_rows"] + version["val_rows"] + version["test_rows"] == kept - version.get("quarantined_rows", 0)
