"""The ``pii`` check: detectors, policies (fail, drop, keyed hash, redact), keys kept out of the
recipe, and raw PII planted in a real table never reaching a file the run writes: data > checks >
version through the stage functions into a tmp run directory and store, every file grepped
(parquet blobs decoded too: their compression would hide a raw value from a byte search)."""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os

import pandas as pd
import pytest
from data_stages import Stages, make_plan

from framework.errors import DataCheckError, RecipeError
from plugins.check_pii import DETECTORS, PiiCheck, luhn_valid, scan

KEY = "k" * 16 + "0123456789abcdef0123"  # 36 bytes, a test key only


@pytest.mark.parametrize("detector, found, not_found", [
    ("email", ["a.b+c@mail.example.com", "mail me: jo@site.io!"], ["x@y", "at @ home"]),
    ("phone", ["+44 20 7946 0958", "(555) 123-4567", "555.123.4567", "020 7946 0958", "06 12 34 56 78"],
     ["2024-01-15", "12345", "3.14159"]),
    ("card", ["4111 1111 1111 1111", "5500000000000004", "3400-0000-0000-009"],
     ["4111-1111-1111-1112", "1234567812345678", "9999 9999 9999 9995"]),
    ("ssn", ["536-22-1234", "536 22 1234"],
     ["000-12-3456", "666-12-3456", "912-12-3456", "536-00-1234", "536-22-0000", "078-05-1120", "536-22 1234"]),
    ("nino", ["AB 12 34 56 C", "AB123456C"], ["QQ 12 34 56 C", "BG 12 34 56 A", "AB 12 34 56 E"]),
    ("ipv4", ["192.168.1.20", "host 10.0.0.1 down"], ["999.1.1.1", "v1.2.3", "1.2.3.4.5"]),
    ("ipv6", ["2001:db8::1", "fe80::1ff:fe23:4567:890a"], ["12:30:45", "::", "a:b"]),
])
def test_detectors(detector, found, not_found):
    hits = scan(pd.Series(found + not_found), DETECTORS[detector]).tolist()
    assert hits == [True] * len(found) + [False] * len(not_found)


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713") and not luhn_valid("79927398710")


def luhn_number(prefix: str, length: int, i: int) -> str:
    """A Luhn-valid card-like number (test data)."""
    body = prefix + str(i).zfill(length - len(prefix) - 1)
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError


def plant(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Breast cancer with personal data in four columns; the planted values, for the grep."""
    n = len(frame)
    out = frame.copy()
    out["email"] = [f"patient{i}@clinic-example.org" for i in range(n)]
    out["phone"] = [f"+44 20 7946 {i:04d}" for i in range(n)]
    cards = [" ".join(luhn_number("4", 16, 7000 + i)[j:j + 4] for j in range(0, 16, 4)) for i in range(n)]
    ssns = [f"536-{22 + i % 70:02d}-{1000 + i:04d}" for i in range(n)]
    out["notes"] = [f"paid with {c}; ssn {s}; from 10.{i // 250}.{i % 250}.7" for i, (c, s) in enumerate(zip(cards, ssns))]
    out["ward"] = ["A", "B"] * (n // 2) + ["A"] * (n % 2)  # text without PII
    planted = list(out["email"]) + list(out["phone"]) + cards + ssns + [f"10.{i // 250}.{i % 250}.7" for i in range(n)]
    return out, planted


def test_policies_on_a_real_table(stage_ctx, monkeypatch):
    from plugins.data_sklearn import SklearnDataSource

    monkeypatch.setenv("TEST_PII_KEY", KEY)
    ds = SklearnDataSource().load(None)
    frame, planted = plant(ds.frame)
    ds = dataclasses.replace(ds, frame=frame, features=ds.features + ["ward", "notes", "email", "phone"])
    config = PiiCheck.Config(columns={"email": "hash", "phone": "drop", "notes": "redact"}, key_env="TEST_PII_KEY")
    check = PiiCheck(config)
    ctx = stage_ctx("checks")
    report = check.check(ds, ctx)
    assert report.passed  # every column with PII has a policy that handles it
    assert report.details["found"] == {"email": {"email": 569}, "phone": {"phone": 569},
                                       "notes": {"card": 569, "ssn": 569, "ipv4": 569}}
    out = check.apply(ds, report, ctx)
    assert "phone" not in out.frame.columns and "phone" not in out.features
    expected = hmac.new(KEY.encode(), b"patient0@clinic-example.org", hashlib.sha256).hexdigest()
    assert out.frame.loc[0, "email"] == expected  # keyed: the same value gives the same pseudonym
    assert out.frame.loc[0, "notes"] == "paid with [REDACTED]; ssn [REDACTED]; from [REDACTED]"
    assert out.frame["ward"].equals(frame["ward"]) and out.frame.index.equals(frame.index)
    assert ds.frame.loc[0, "email"] == "patient0@clinic-example.org"  # the input is not modified

    failing = PiiCheck(PiiCheck.Config(columns={"email": "fail"}, default="redact")).check(ds, ctx)
    assert not failing.passed
    assert failing.failures == [{"column": "email", "check": "pii_email", "count": 569, "rows": list(range(20))}]
    assert not any(value in str(failing) for value in planted)


def test_the_hash_key_never_comes_from_the_recipe(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_PII_KEY", raising=False)
    hashing = {"columns": {"email": "hash"}}
    with pytest.raises(RecipeError, match="set exactly one of key_env"):
        PiiCheck.check_config(PiiCheck.Config(**hashing), "checks[0]")
    with pytest.raises(RecipeError, match="checks.0..key_env: environment variable TEST_PII_KEY is not set"):
        PiiCheck.check_config(PiiCheck.Config(**hashing, key_env="TEST_PII_KEY"), "checks[0]")
    monkeypatch.setenv("TEST_PII_KEY", "short-key")
    with pytest.raises(RecipeError) as info:
        PiiCheck.check_config(PiiCheck.Config(**hashing, key_env="TEST_PII_KEY"), "checks[0]")
    assert "is 9 bytes; use at least 32" in str(info.value) and "short-key" not in str(info.value)
    key_file = tmp_path / "pii.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    with pytest.raises(RecipeError, match=r"readable by others \(mode 0644\); chmod 600 it"):
        PiiCheck.check_config(PiiCheck.Config(**hashing, key_file=str(key_file)), "checks[0]")
    key_file.chmod(0o600)
    PiiCheck.check_config(PiiCheck.Config(**hashing, key_file=str(key_file)), "checks[0]")
    with pytest.raises(RecipeError, match="policy 'mask' is unknown"):
        PiiCheck.check_config(PiiCheck.Config(columns={"email": "mask"}), "checks[0]")
    with pytest.raises(RecipeError, match="token: the redaction token must not itself look like PII"):
        PiiCheck.check_config(PiiCheck.Config(token="x@example.com"), "checks[0]")


def test_a_key_written_in_the_recipe_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="checks.0..key: unknown key"):
        make_plan(tmp_path, "- {type: pii, key: not-here}\n")


# ---------------------------------------------------------------------------------------------
def files_holding(roots: list, planted: list[str]) -> dict[str, list[str]]:
    """file -> the planted values found in it: raw bytes, and every cell of a parquet file."""
    import io

    found: dict[str, list[str]] = {}
    needles = [v.encode() for v in planted]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            hits = [v for v, b in zip(planted, needles) if b in data]
            if data[:4] == b"PAR1":
                frame = pd.read_parquet(io.BytesIO(data))
                cells = {str(v) for v in frame.to_numpy().ravel().tolist()} | {str(i) for i in frame.index}
                text = "\n".join(cells)
                hits += [v for v in planted if v in text]
            if hits:
                found[str(path)] = sorted(set(hits))[:3]
    return found


def run_with_pii(tmp_path, checks: str, monkeypatch):
    monkeypatch.setenv("TEST_PII_KEY", KEY)
    plan, components = make_plan(tmp_path, checks)
    stages = Stages(tmp_path, plan, components)
    stages.run_dir.mkdir(parents=True)
    handler = logging.FileHandler(stages.run_dir / "run.log")
    logger = logging.getLogger("framework")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        stages.run("data")
        frame, planted = plant(stages.state.dataset.frame)
        repeats = frame.loc[[3, 4]].copy()  # quarantined before the pii check runs
        repeats.index = [3000, 3001]
        dataset = stages.state.dataset
        stages.state.dataset = dataclasses.replace(dataset, frame=pd.concat([frame, repeats]),
                                                   features=dataset.features + ["notes", "ward"])
        error = None
        try:
            stages.run("checks")
            stages.run("version")
        except DataCheckError as exc:
            error = exc
    finally:
        logger.removeHandler(handler)
        handler.close()
    return stages, planted, error


def test_planted_pii_never_reaches_the_run_directory_store_or_logs(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    checks = """\
- {type: duplicates, severity: quarantine}
- type: pii
  key_env: TEST_PII_KEY
  columns: {email: hash, phone: drop, notes: redact}
- {type: pandera_schema, severity: quarantine, features: {dtype: any}}
"""
    stages, planted, error = run_with_pii(tmp_path, checks, monkeypatch)
    assert error is None
    registry = stages.state.registry
    stored = registry.load_frame(stages.state.data_version)
    assert "phone" not in stored.columns and stored.loc[0, "notes"].count("[REDACTED]") == 3
    quarantine = registry.load_frame(registry.get("breast_cancer.quarantine@latest", kind="data"))
    assert sorted(quarantine.index) == [3000, 3001]  # taken out before the pii check, redacted all the same
    assert "phone" not in quarantine.columns and quarantine.loc[3000, "notes"].count("[REDACTED]") == 3
    leaks = files_holding([stages.run_dir, tmp_path / "store"], planted)
    assert leaks == {}, leaks
    assert not [v for v in planted if v in caplog.text]
    assert "pii: cells with personal data per column and detector" in (stages.run_dir / "run.log").read_text()


def test_a_fail_policy_stops_the_run_without_showing_the_values(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    stages, planted, error = run_with_pii(tmp_path, "- {type: pii, columns: {phone: drop, email: drop}}\n", monkeypatch)
    assert isinstance(error, DataCheckError)  # notes: card, ssn and ip found, default policy fail
    assert "checks[0] (pii): column 'notes' check 'pii_card' rows [0, 1, 2, 3, 4]..." in str(error)
    assert stages.state.data_version is None  # nothing was versioned
    assert not [v for v in planted if v in str(error) or v in str(error.failures) or v in caplog.text]
    assert files_holding([stages.run_dir, tmp_path / "store"], planted) == {}
    assert os.listdir(tmp_path / "store") == ["catalogue.sqlite"]
