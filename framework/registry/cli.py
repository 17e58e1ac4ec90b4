"""``python -m framework versions ...``: list, show, diff and alias versions in a store."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import StoreError
from .store import Registry
from .versions import KINDS, Version

_MAIN_METRICS = 3


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse exits on bad input; the verb must return 2 with a single line instead
    def error(self, message: str):
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m framework versions", description="Data and model versions in the store.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
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
    alias = sub.add_parser("alias", help="point NAME@ALIAS at a version")
    alias.add_argument("target", metavar="NAME@ALIAS")
    alias.add_argument("version", metavar="ID")
    alias.add_argument("--kind", choices=KINDS)
    return p


def versions_command(argv: list[str], store_uri: str) -> int:
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"error: versions: {exc} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        reg = Registry(store_uri)
        if args.command == "list":
            return _list(reg, args.kind, args.name)
        if args.command == "show":
            v = _get_any(reg, args.ref, args.kind)
            print(json.dumps(v.to_dict(), indent=2, sort_keys=True))
            return 0
        if args.command == "diff":
            kind = args.kind or _get_any(reg, args.a, None).kind
            _print_diff(reg.diff(args.a, args.b, kind))
            return 0
        if args.command == "alias":
            return _alias(reg, args.target, args.version, args.kind)
    except StoreError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse requires a command


def _get_any(reg: Registry, ref: str, kind: str | None) -> Version:
    """Without --kind, a ref may name a model or a data version; both matching is ambiguous."""
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
        raise StoreError(f"ref {ref!r} matches a data and a model version; add --kind data or --kind model")
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
        table.add_row(v.name, v.id[:12], v.kind, created, ", ".join(v.aliases), metrics)
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


def _print_diff(d: dict) -> None:
    print(f"{d['kind']} {d['a']} -> {d['b']}" + ("  (same version)" if d["same"] else ""))
    if d["kind"] == "model":
        f = d["files"]
        changes = [f"{label} {', '.join(f[key])}" for key, label in
                   (("changed", "changed"), ("added", "added"), ("removed", "removed")) if f[key]]
        print("files: " + ("; ".join(changes) if changes else "identical"))
        if d["metrics"]:
            print("metrics:")
            width = max(len(k) for k in d["metrics"])
            for k, m in d["metrics"].items():
                delta = f"  ({_delta(m['delta'])})" if m["delta"] is not None else ""
                print(f"  {k:<{width}}  {_fmt(m['a'])} -> {_fmt(m['b'])}{delta}")
        sections = ("lineage", "params", "meta")
    else:
        rows = d["rows"]
        print(
            f"rows: {rows['a']} -> {rows['b']} ({_delta(rows['b'] - rows['a'])}): "
            f"{d['rows_added']} added, {d['rows_removed']} removed"
        )
        if d["columns_added"]:
            print(f"columns added: {', '.join(d['columns_added'])}")
        if d["columns_removed"]:
            print(f"columns removed: {', '.join(d['columns_removed'])}")
        for col, t in d["dtypes_changed"].items():
            print(f"dtype {col}: {t['a']} -> {t['b']}")
        sections = ("schema", "lineage", "meta")
    for section in sections:
        if d[section]:
            print(f"{section}:")
            for path, change in d[section].items():
                print(f"  {path}: {_fmt(change['a'])} -> {_fmt(change['b'])}")
