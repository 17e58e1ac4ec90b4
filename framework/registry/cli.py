"""``python -m framework versions ...``: list, show, diff and alias versions in a store."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import StoreError
from .labels import diff_lines as label_diff_lines
from .store import Registry
from .versions import KINDS, Version

_MAIN_METRICS = 3


class _UsageError(Exception):
    pass


class VerbParser(argparse.ArgumentParser):
    # argparse exits on bad input; the verb must return 2 with a single line instead
    def error(self, message: str):
        raise _UsageError(message)


def parse_verb(parser: argparse.ArgumentParser, argv: list[str], verb: str) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code to return: 2 after one error line, 0 after --help."""
    try:
        return parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {verb}: {exc} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


def _parser() -> argparse.ArgumentParser:
    p = VerbParser(prog="python -m framework versions", description="Data, label and model versions in the store.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=VerbParser)
    ls = sub.add_parser("list", help="versions, newest first")
    ls.add_argument("--kind", choices=KINDS)
    ls.add_argument("name", nargs="?")
    show = sub.add_parser("show", help="the manifest of one version as JSON")
    show.add_argument("ref", help="NAME@ALIAS, NAME:ID or ID")
    show.add_argument("--kind", choices=KINDS)
    diff = sub.add_parser("diff", help="what changed from version A to version B")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument("--kind", choices=KINDS)
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    alias = sub.add_parser("alias", help="point NAME@ALIAS at a version")
    alias.add_argument("target", metavar="NAME@ALIAS")
    alias.add_argument("version", metavar="ID")
    alias.add_argument("--kind", choices=KINDS)
    return p


def versions_command(argv: list[str], store_uri: str) -> int:
    args = parse_verb(_parser(), argv, "versions")
    if isinstance(args, int):
        return args
    try:
        reg = Registry(store_uri)
        if args.command == "list":
            return _list(reg, args.kind, args.name)
        if args.command == "show":
            v = _get_any(reg, args.ref, args.kind)
            shown = v.to_dict()
            if reg.schema_flags(v):
                shown["flags"] = reg.schema_flags(v)
            print(json.dumps(shown, indent=2, sort_keys=True))
            return 0
        if args.command == "diff":
            kind = args.kind or _get_any(reg, args.a, None).kind
            d = reg.diff(args.a, args.b, kind)
            if args.json:
                print(json.dumps(d, indent=2, sort_keys=True, default=str))
            else:
                print("\n".join(diff_report(d)))
            return 0
        if args.command == "alias":
            return _alias(reg, args.target, args.version, args.kind)
    except StoreError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse requires a command


def _get_any(reg: Registry, ref: str, kind: str | None) -> Version:
    """Without --kind, a ref may name a model, a data or a label version; two matching is ambiguous."""
    if kind:
        return reg.get(ref, kind)
    found, errors = [], []
    for k in KINDS:
        try:
            found.append(reg.get(ref, k))
        except StoreError as exc:
            errors.append(exc.message)
    if len(found) == 1:
        return found[0]
    if found:
        raise StoreError(f"ref {ref!r} matches {' and '.join(f'a {v.kind}' for v in found)} version; add --kind {' or --kind '.join(v.kind for v in found)}")
    raise StoreError(errors[-1] if len(set(errors)) == 1 else " / ".join(errors))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _list(reg: Registry, kind: str | None, name: str | None) -> int:
    from rich.console import Console
    from rich.table import Table

    versions = reg.list(kind, name)
    if not versions:
        print(f"no versions in {reg.uri}" + (f" for {name!r}" if name else ""))
        return 0
    table = Table(title=f"versions in {reg.uri}")
    for col in ("name", "id", "kind", "created", "aliases", "metrics"):
        table.add_column(col, no_wrap=col in ("id", "created"))
    for v in versions:
        # quality first: the keys people compare versions by, then the rest in stored order
        keys = sorted(v.metrics, key=lambda k: (not k.startswith(("test_", "val_", "rows")), k.startswith("val_")))
        metrics = ", ".join(f"{k}={_fmt(v.metrics[k])}" for k in keys[:_MAIN_METRICS])
        created = v.created_at[:19].replace("T", " ")
        # a model trained on a label schema a migration replaced
        flagged = ["OUTDATED label schema"] if reg.schema_flags(v) else []
        table.add_row(v.name, v.id[:12], v.kind, created, ", ".join([*v.aliases, *flagged]), metrics)
    # a pipe or capture has no terminal width; do not squeeze the table into 80 columns
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    return 0


def _alias(reg: Registry, target: str, version: str, kind: str | None) -> int:
    name, sep, alias = target.partition("@")
    if not sep or not name or not alias:
        raise StoreError(f"alias target {target!r}: write NAME@ALIAS, e.g. iris@prod")
    if kind is None:
        v = _get_any(reg, f"{name}:{version}", None)
        kind = v.kind
    reg.set_alias(kind, name, alias, version)
    v = reg.get(f"{name}@{alias}", kind)
    print(f"{kind} {name}@{alias} -> {v.ref}")
    return 0


def _delta(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:+d}"
    return f"{value:+.4g}"


def _short(vid: str | None) -> str:
    return vid[:12] if vid else "-"


#: the shift report lists at most this many columns, the most moved first
_SHIFT_LINES = 20


def diff_report(d: dict, indent: str = "") -> list[str]:
    """A diff as a short readable report, one line per fact."""
    lines = [f"{d['kind']} {d['a']} -> {d['b']}" + ("  (same version)" if d["same"] else "")]
    if d["kind"] == "model":
        f = d["files"]
        changes = [f"{label} {', '.join(f[key])}" for key, label in
                   (("changed", "changed"), ("added", "added"), ("removed", "removed")) if f[key]]
        lines.append("files: " + ("; ".join(changes) if changes else "identical"))
        if d["metrics"]:
            lines.append("metrics:")
            width = max(len(k) for k in d["metrics"])
            for k, m in d["metrics"].items():
                delta = f"  ({_delta(m['delta'])})" if m["delta"] is not None else ""
                lines.append(f"  {k:<{width}}  {_fmt(m['a'])} -> {_fmt(m['b'])}{delta}")
        lines += _sections(d, ("lineage", "params", "meta"))
        lines += _recipe_lines(d.get("recipe"))
        lines += _training_data_lines(d.get("data"))
    elif d["kind"] == "label":
        return [indent + line for line in label_diff_lines(d)]
    else:
        lines += _data_lines(d)
    return [indent + line for line in lines]


def _sections(d: dict, sections: tuple[str, ...]) -> list[str]:
    lines = []
    for section in sections:
        if d.get(section):
            lines.append(f"{section}:")
            for path, change in d[section].items():
                lines.append(f"  {path}: {_fmt(change['a'])} -> {_fmt(change['b'])}")
    return lines


def _recipe_lines(recipe: dict | None) -> list[str]:
    if not recipe:
        return []
    if "note" in recipe:
        return [f"recipe: {recipe['note']}"]
    changed = recipe.get("changed") or {}
    if not changed:
        return ["recipe: identical"]
    return ["recipe:"] + [f"  {path}: {_fmt(c['a'])} -> {_fmt(c['b'])}" for path, c in changed.items()]


def _training_data_lines(data: dict | None) -> list[str]:
    if not data:
        return []
    if data.get("same") and "version" in data:
        return [f"training data: the same version ({_short(data['version'])})"]
    if "note" in data:
        return [f"training data: {data['note']}"]
    return ["training data:"] + diff_report(data, "  ")


def _data_lines(d: dict) -> list[str]:
    lines = []
    anc = d.get("ancestry") or {}
    if anc.get("a_is_ancestor_of_b") or anc.get("b_is_ancestor_of_a"):
        older, newer = ("A", "B") if anc.get("a_is_ancestor_of_b") else ("B", "A")
        path = anc["path"]
        lines.append(f"ancestry: {older} is an ancestor of {newer}, {len(path) - 1} step(s): "
                     + " -> ".join(_short(v) for v in path))
    elif not d["same"]:
        common = anc.get("common_ancestor")
        lines.append("ancestry: " + (f"not in one line; nearest common ancestor {_short(common)}" if common
                                     else "unrelated (no common ancestor)"))
    rows, rc = d["rows"], d.get("row_changes") or {}
    counts = f"{rc.get('added', d['rows_added'])} added, {rc.get('removed', d['rows_removed'])} removed"
    if rc.get("changed") is not None:
        counts += f", {rc['changed']} changed, {rc['unchanged']} unchanged"
    lines.append(f"rows: {rows['a']} -> {rows['b']} ({_delta(rows['b'] - rows['a'])}), by {rc.get('by', 'content')}: {counts}")
    if rc.get("note"):
        lines.append(f"  ({rc['note']})")
    if rc.get("changed_columns"):
        lines.append("  changed cells: " + ", ".join(f"{c} {n}" for c, n in rc["changed_columns"].items()))
    for what, keys in (rc.get("examples") or {}).items():
        if keys:
            more = " ..." if (rc.get(what) or 0) > len(keys) else ""
            lines.append(f"  {what} keys: {', '.join(map(str, keys))}{more}")
    if d["columns_added"]:
        lines.append(f"columns added: {', '.join(d['columns_added'])}")
    if d["columns_removed"]:
        lines.append(f"columns removed: {', '.join(d['columns_removed'])}")
    for col, t in d["dtypes_changed"].items():
        lines.append(f"dtype {col}: {t['a']} -> {t['b']}")
    for col, n in (d.get("nullable_changed") or {}).items():
        lines.append(f"nullable {col}: {'yes' if n['a'] else 'no'} -> {'yes' if n['b'] else 'no'}")
    lines += _shift_lines(d.get("shift") or {})
    lines += _sections(d, ("schema", "lineage", "meta"))
    return lines


def _moved(s: dict) -> float:
    return max(s.get("ks") or 0.0, s.get("tvd") or 0.0, abs(s["missing_rate"]["delta"] or 0.0),
               1.0 if s.get("new_count") or s.get("vanished_count") else 0.0)


def _shift_lines(shift: dict) -> list[str]:
    moved = sorted(((c, s) for c, s in shift.items() if _moved(s) > 0), key=lambda cs: -_moved(cs[1]))
    if not shift:
        return []
    if not moved:
        return ["shift: no column's distribution moved"]
    width = max(len(c) for c, _ in moved[:_SHIFT_LINES])
    lines = ["shift (A -> B):"]
    for col, s in moved[:_SHIFT_LINES]:
        parts = []
        if "mean" in s:
            parts.append(f"mean {_fmt(s['mean']['a'])} -> {_fmt(s['mean']['b'])}")
            parts.append(f"std {_fmt(s['std']['a'])} -> {_fmt(s['std']['b'])}")
            p50 = s["quantiles"].get("p50")
            if p50:
                parts.append(f"p50 {_fmt(p50['a'])} -> {_fmt(p50['b'])}")
        if "min" in s:
            parts.append(f"range {s['min']['a']}..{s['max']['a']} -> {s['min']['b']}..{s['max']['b']}")
        if s.get("ks") is not None:
            parts.append(f"KS {s['ks']:.3f}")
        if s.get("new_count"):
            parts.append(f"new {', '.join(s['new'])}{' ...' if s['new_count'] > len(s['new']) else ''} ({s['new_count']})")
        if s.get("vanished_count"):
            parts.append(f"vanished {', '.join(s['vanished'])}{' ...' if s['vanished_count'] > len(s['vanished']) else ''}"
                         f" ({s['vanished_count']})")
        if s.get("tvd") is not None:
            parts.append(f"TVD {s['tvd']:.3f}")
        if s.get("note"):
            parts.append(s["note"])
        m = s["missing_rate"]
        if m["delta"]:
            parts.append(f"missing {m['a']:.1%} -> {m['b']:.1%}")
        lines.append(f"  {col:<{width}}  {s['kind']:<11}  " + "  ".join(parts))
    if len(moved) > _SHIFT_LINES:
        lines.append(f"  ... {len(moved) - _SHIFT_LINES} more columns moved (--json lists all)")
    unmoved = len(shift) - len(moved)
    if unmoved:
        lines.append(f"  ({unmoved} column(s) unchanged in distribution)")
    return lines
