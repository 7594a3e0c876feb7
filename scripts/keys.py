"""Gateway keys behind scripts/keys. Keys are shown once and stored only as SHA-256 digests in the consumers file
named by `consumers_file:` in the gateway configuration. Every change is validated with the gateway's own loader
before it replaces the file (atomically), so a running gateway never sees a broken file."""

import argparse
import os
import re
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tollgate.core.config import ConfigError, key_digest, parse_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "gateway.yaml"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def consumers_path(config_path: Path) -> Path:
    data = yaml.safe_load(config_path.read_text()) or {}
    if not data.get("consumers_file"):
        sys.exit(f"keys: {config_path} names no consumers_file; add `consumers_file: consumers.yaml` to it")
    return config_path.parent / data["consumers_file"]


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return list((yaml.safe_load(path.read_text()) or {}).get("consumers") or [])


def write(config_path: Path, path: Path, consumers: list[dict]) -> None:
    """Validates the new consumers file with the gateway's own loader, then swaps it in atomically: a running
    gateway never sees a broken or half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("# Managed by scripts/keys: keys are stored as SHA-256 digests only.\n"
                   + yaml.safe_dump({"consumers": consumers}, sort_keys=False))
    main = yaml.safe_load(config_path.read_text()) or {}
    try:
        parse_config({**main, "consumers_file": os.path.relpath(tmp, config_path.parent)}, base_dir=config_path.parent)
    except ConfigError as e:
        tmp.unlink()
        sys.exit(f"keys: change refused, the configuration would be invalid: {str(e).replace(tmp.name, path.name)}")
    tmp.replace(path)


def new_key() -> str:
    return "tg-" + secrets.token_urlsafe(32)


def find(consumers: list[dict], name: str) -> dict:
    for entry in consumers:
        if entry.get("name") == name:
            return entry
    sys.exit(f"keys: no consumer named {name!r} in the consumers file")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/keys", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="gateway configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a consumer and print its key (once)")
    create.add_argument("name")
    create.add_argument("--group", default="")
    create.add_argument("--expires", default="", help="date the key stops working, e.g. 2027-01-01")
    sub.add_parser("list", help="list every consumer with the file it comes from (never keys)")
    sub.add_parser("revoke", help="disable a consumer's key").add_argument("name")
    sub.add_parser("rotate", help="replace an active consumer's key and print the new one (once)").add_argument("name")
    sub.add_parser("restore", help="re-enable a revoked consumer with a new key, printed once").add_argument("name")
    args = parser.parse_args()

    path = consumers_path(args.config)
    consumers = read(path)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.command == "create":
        if not NAME.fullmatch(args.name):
            sys.exit(f"keys: {args.name!r} is not a consumer name (letters, digits, . _ @ -; at most 64)")
        if any(c.get("name") == args.name for c in consumers):
            sys.exit(f"keys: consumer {args.name!r} exists already (rotate gives it a new key)")
        key = new_key()
        entry = {"name": args.name, "key_sha256": key_digest(key), "created": now}
        if args.group:
            entry["group"] = args.group
        if args.expires:
            entry["expires"] = args.expires
        write(args.config, path, consumers + [entry])
        print(key)
        print(f"created {args.name}; this key is shown once and stored only as a hash", file=sys.stderr)
    elif args.command in ("rotate", "restore"):
        entry = find(consumers, args.name)
        if args.command == "rotate" and entry.get("disabled"):
            sys.exit(f"keys: {args.name} is revoked and stays revoked; `scripts/keys restore {args.name}` re-enables "
                     f"it with a new key")
        key = new_key()
        entry.update(key_sha256=key_digest(key), rotated=now, disabled=False)
        entry.pop("key", None)
        entry.pop("revoked", None)
        write(args.config, path, consumers)
        print(key)
        print(f"{args.command}d {args.name}: the old key stops working within 2 seconds", file=sys.stderr)
    elif args.command == "revoke":
        entry = find(consumers, args.name)
        entry.update(disabled=True, revoked=now)
        write(args.config, path, consumers)
        print(f"revoked {args.name}: the key stops working within 2 seconds", file=sys.stderr)
    else:
        main = yaml.safe_load(args.config.read_text()) or {}
        listed = [(c, args.config.name) for c in main.get("consumers") or []] + [(c, path.name) for c in consumers]
        if not listed:
            print(f"no consumers in {args.config.name} or {path.name}: `scripts/keys create NAME` adds one")
        for c, source in listed:
            state = "revoked" if c.get("disabled") else "active"
            print(f"{c.get('name')!s:20} {c.get('group') or '-':12} {state:8} expires {c.get('expires', 'never')!s:12} "
                  f"{source}")


if __name__ == "__main__":
    main()
