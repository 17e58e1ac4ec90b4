"""Data check ``pii``: personal data found per column, and a policy per column for it.

    checks:
      - type: pii                      # put it first: later checks and stages see its output
        default: fail                  # policy of every other text column where PII is found
        key_env: FRAMEWORK_PII_KEY     # the HMAC key of `hash` (or key_file: a 0600 file)
        columns:
          email: hash                  # keyed HMAC-SHA256 of every value: a stable pseudonym
          notes: redact                # each PII span replaced by the token "[REDACTED]"
          phone: drop                  # the column leaves the data (and the features)
          card: fail                   # any PII found stops the run

Detectors (``detectors:``, default all): ``email``; ``phone`` (international +CC numbers,
North-American (555) 123-4567 / 555.123.4567, trunk-prefix national forms 020 7946 0958; 9-15
digits); ``card`` (13-19 digits of a known issuer range, Luhn checksum valid); ``ssn`` (US
social security numbers written 123-45-6789 or 123 45 6789, the never-issued ranges 000, 666,
900-999, group 00, serial 0000 and the published sample numbers excluded); ``nino`` (UK
National Insurance numbers, invalid prefixes excluded); ``ipv4``, ``ipv6`` (validated by
``ipaddress``). Text columns (strings, categories) are scanned, and any column named under
``columns`` (a phone number stored as an integer, say); undashed 9-digit SSNs are not detected
(too many false positives in numeric data).

Policies: ``fail`` (the report fails: the run stops), ``drop``, ``hash`` and ``redact`` (the
check's ``apply``, which the core calls right after ``check``; a declared ``drop``/``hash``
applies whether or not a detector fires: the column is declared personal). The ``hash`` key
comes from the environment variable ``key_env`` or the file ``key_file`` (mode 0600 or
stricter), never from the recipe text; a missing or short (< 32 bytes) key is refused at plan
time. Reports, logs and errors carry counts per column and detector, never a value, and the
check accepts severity ``fail`` only: ``warn`` would let found PII on into the stored data, and
``quarantine`` would store it in the quarantine set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import RecipeError

POLICIES = ("fail", "drop", "hash", "redact")
MIN_KEY_BYTES = 32
REDACTED = "[REDACTED]"
#: rows listed per failing (column, detector)
MAX_ROWS = 20


# ---------------------------------------------------------------------------------------------
# Detectors: a candidate regex (fast, vectorised by pandas) and an optional validator per match
# ---------------------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_issuer_known(digits: str) -> bool:
    """Issuer ranges of the major networks (Visa, Mastercard, Amex, Discover, JCB, Diners,
    UnionPay) with their lengths: a Luhn-valid number outside them is not taken for a card."""
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16
    if two in (34, 37):
        return n == 15
    if digits.startswith("6011") or 644 <= int(digits[:3]) <= 649 or two == 65:
        return 16 <= n <= 19
    if 3528 <= four <= 3589:
        return 16 <= n <= 19
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38, 39):
        return 14 <= n <= 19
    if two == 62:
        return 16 <= n <= 19
    return False


def is_card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and card_issuer_known(digits) and luhn_valid(digits)


def is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return (8 if match.lstrip().startswith("+") else 10) <= len(digits) <= 15


#: published sample SSNs (an advertised wallet card, a textbook example): never a person's
SAMPLE_SSNS = {"078051120", "219099999", "123456789"}


def is_ssn(match: str) -> bool:
    return re.sub(r"\D", "", match) not in SAMPLE_SSNS


def is_ip(match: str) -> bool:
    if not any(c.isalnum() for c in match):  # "::" alone is punctuation, not an address
        return False
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: str
    validate: Callable[[str], bool] | None = None

    @property
    def regex(self) -> re.Pattern:
        return re.compile(self.pattern)


DETECTORS: dict[str, Detector] = {d.name: d for d in (
    Detector("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    Detector("card", r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", is_card),
    Detector("ssn", r"(?<![\d-])(?!000|666|9\d\d)\d{3}(?:-(?!00)\d{2}-| (?!00)\d{2} )(?!0000)\d{4}(?![\d-])", is_ssn),
    Detector("nino", r"(?<![A-Za-z0-9])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"),
    # not right after "digit + separator": the tail of a card number's groups is not a phone
    Detector("phone", r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}(?:[ -]?\(?\d{1,4}\)?){2,5}|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}"
                      r"|0\d{1,4}(?:[ -]\d{2,4}){2,4})(?![\w])", is_phone),
    Detector("ipv4", r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])", is_ip),
    Detector("ipv6", r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])", is_ip),
)}
#: ssn before phone: "123 45 6789" is an SSN; card before phone: a card's groups look like one
ORDER = ("email", "card", "ssn", "nino", "phone", "ipv4", "ipv6")


def scan(values: Any, detector: Detector) -> Any:
    """Boolean Series: which cells hold at least one (validated) match of ``detector``."""
    text = values.astype(str)
    hit = text.str.contains(detector.pattern, regex=True, na=False)
    if detector.validate is not None and hit.any():
        regex, check = detector.regex, detector.validate
        confirmed = [any(check(m.group(0)) for m in regex.finditer(v)) for v in text[hit]]
        hit = hit.copy()
        hit[hit] = confirmed
    return hit & values.notna()


def redact(value: str, detectors: list[Detector], token: str) -> str:
    for d in detectors:
        if d.validate is None:
            value = d.regex.sub(token, value)
        else:
            value = d.regex.sub(lambda m, check=d.validate: token if check(m.group(0)) else m.group(0), value)
    return value


def read_key(key_env: str | None, key_file: str | None, where: str) -> bytes:
    """The HMAC key from the environment or a private file; RecipeError (naming where, never the
    key) when it is missing, readable by others or shorter than MIN_KEY_BYTES."""
    if bool(key_env) == bool(key_file):
        raise RecipeError(f"{where}: 'hash' needs a key: set exactly one of key_env (an environment variable) or "
                          f"key_file (a file readable by its owner only); a key is never written in the recipe")
    if key_env:
        raw = os.environ.get(key_env)
        if raw is None:
            raise RecipeError(f"{where}.key_env: environment variable {key_env} is not set")
        key = raw.encode()
        source = f"environment variable {key_env}"
    else:
        path = Path(key_file).expanduser()
        try:
            info = path.stat()
        except OSError as exc:
            raise RecipeError(f"{where}.key_file: cannot read '{path}': {exc.strerror or exc}") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RecipeError(f"{where}.key_file: '{path}' is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                              f"chmod 600 it")
        key = path.read_bytes().strip()
        source = f"file '{path}'"
    if len(key) < MIN_KEY_BYTES:
        raise RecipeError(f"{where}: the key in {source} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                          f"(e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
    return key


class PiiCheck(DataCheck):
    name = "pii"
    summary = "emails, phones, card numbers (Luhn), SSN/NINO, IP addresses per column; policy fail, drop, hash (HMAC) or redact"
    severities = ("fail",)

    @dataclass
    class Config:
        #: column -> policy (fail, drop, hash, redact); other text columns get ``default``
        columns: Dict[str, str] = field(default_factory=dict)
        default: str = "fail"
        detectors: List[str] = field(default_factory=lambda: list(ORDER))
        key_env: Optional[str] = None
        key_file: Optional[str] = None
        token: str = REDACTED

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        for column, policy in list(config.columns.items()) + [("default", config.default)]:
            if policy not in POLICIES:
                where = f"{key}.default" if column == "default" else f"{key}.columns.{column}"
                raise RecipeError(f"{where}: policy '{policy}' is unknown; use {', '.join(POLICIES)}")
        unknown = [d for d in config.detectors if d not in DETECTORS]
        if unknown or not config.detectors:
            raise RecipeError(f"{key}.detectors: {unknown or 'none'}; choose among {', '.join(ORDER)}")
        if "hash" in config.columns.values() or config.default == "hash":
            read_key(config.key_env, config.key_file, key)
        if any(d.regex.search(config.token) for d in cls._detectors(config)):
            raise RecipeError(f"{key}.token: the redaction token must not itself look like PII")

    @staticmethod
    def _detectors(config: Any) -> list[Detector]:
        return [DETECTORS[name] for name in ORDER if name in config.detectors]

    def scanned_columns(self, dataset: Dataset) -> list[str]:
        import pandas as pd

        frame = dataset.frame
        text = [c for c in frame.columns
                if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
                        or pd.api.types.is_datetime64_any_dtype(frame[c]))]
        return list(dict.fromkeys(text + [c for c in self.config.columns if c in frame.columns]))

    def policy(self, column: str) -> str:
        return self.config.columns.get(column, self.config.default)

    def find(self, dataset: Dataset) -> dict[str, dict[str, Any]]:
        """column -> detector -> boolean Series of the cells where it fires."""
        found: dict[str, dict[str, Any]] = {}
        for column in self.scanned_columns(dataset):
            values = dataset.frame[column]
            for detector in self._detectors(self.config):
                hit = scan(values, detector)
                if hit.any():
                    found.setdefault(column, {})[detector.name] = hit
        return found

    def check(self, dataset: Dataset, ctx) -> CheckReport:
        frame = dataset.frame
        declared_target = [c for c in self.config.columns if c == dataset.target and self.policy(c) != "fail"]
        if declared_target:
            raise RecipeError(f"checks (pii).columns.{dataset.target}: the target cannot be dropped, hashed or redacted")
        found = self.find(dataset)
        failures = []
        for column, hits in found.items():
            if self.policy(column) != "fail":
                continue
            for detector, hit in hits.items():
                rows = frame.index[hit.to_numpy()].tolist()
                failures.append({"column": column, "check": f"pii_{detector}", "count": len(rows), "rows": rows[:MAX_ROWS]})
        counts = {c: {d: int(h.sum()) for d, h in hits.items()} for c, hits in found.items()}
        actions = {c: self.policy(c) for c in self.scanned_columns(dataset) if c in found or c in self.config.columns}
        if counts:  # counts only: a value never reaches a log
            ctx.logger.info("pii: cells with personal data per column and detector: %s; policies: %s", counts, actions)
        details = {"scanned_columns": len(self.scanned_columns(dataset)), "found": counts, "policies": actions}
        return CheckReport(self.name, not failures, len(frame), failures=failures, details=details)

    def apply(self, dataset: Dataset, report: CheckReport, ctx) -> Dataset:
        """drop / hash / redact, column by column. Works on any rows (the core also passes the
        rows earlier checks quarantined), so it detects again instead of trusting ``report``."""
        frame = dataset.frame
        columns = self.scanned_columns(dataset)
        changed = {c: self.policy(c) for c in columns if self.policy(c) in ("drop", "hash", "redact") and c != dataset.target}
        if not changed:
            return dataset
        detectors = self._detectors(self.config)
        # a default policy acts where a detector fires; a declared one on the whole column
        acting = {c: p for c, p in changed.items()
                  if c in self.config.columns or any(scan(frame[c], d).any() for d in detectors)}
        if not acting:
            return dataset
        out = frame.copy()
        key = read_key(self.config.key_env, self.config.key_file, "checks (pii)") if "hash" in acting.values() else b""
        for column, policy in acting.items():
            if policy == "drop":
                out = out.drop(columns=[column])
                continue
            values = out[column]
            present = values.notna()
            text = values[present].astype(str)
            if policy == "hash":
                new = [hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in text]
            else:
                new = [redact(v, detectors, self.config.token) for v in text]
            column_values = values.astype(object)
            column_values[present] = new
            out[column] = column_values
        dropped = [c for c, p in acting.items() if p == "drop"]
        features = [f for f in dataset.features if f not in dropped]
        schema = dataset.schema
        if schema is not None:
            specs = [dataclasses.replace(s, dtype="category", categories=None) if s.name in acting else s
                     for s in schema.features if s.name not in dropped]
            schema = dataclasses.replace(schema, features=specs)
        if ctx is not None:
            ctx.logger.info("pii: applied %s", acting)
        return dataclasses.replace(dataset, frame=out, features=features, schema=schema)


@hookimpl
def register_data_checks():
    return [PiiCheck]
