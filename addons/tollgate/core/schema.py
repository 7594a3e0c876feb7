"""Shared validation of configuration sections: each feature parses its own section (next to its types) with these
helpers, and every problem is a ConfigError saying `key.path: reason`."""

from __future__ import annotations

import difflib
import re
from datetime import date, datetime, timezone
from pathlib import Path

import yaml


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.I)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "ki": 1024, "m": 1e6, "mb": 1e6, "mib": 2**20,
               "mi": 2**20, "g": 1e9, "gb": 1e9, "gib": 2**30, "gi": 2**30}


_DURATION_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    pass


def parse_size(value, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(str(value))
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"{path}: expected a size such as 1048576, 512KB or 1MB, got {value!r}")
    return int(float(m[1]) * _SIZE_UNITS[(m[2] or "").lower()])


def parse_duration(value, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = _DURATION.match(str(value))
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"{path}: expected a duration such as 30, 500ms, 30s, 5m or 1h, got {value!r}")
    return float(m[1]) * _DURATION_UNITS[(m[2] or "").lower()]


def mapping(node, path: str, allowed: set[str]) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(node).__name__}")
    if "on" in allowed and True in node:  # YAML 1.1 reads an unquoted `on:` key as true
        node = {("on" if key is True else key): value for key, value in node.items()}
    unknown = sorted(set(map(str, node)) - allowed)
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, 1, 0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{path}.{unknown[0]}: unknown key ({hint}expected one of: {', '.join(sorted(allowed))})")
    return node


def list_of(node, path: str) -> list:
    if node is None:
        return []
    if not isinstance(node, list):
        raise ConfigError(f"{path}: expected a list, got {type(node).__name__}")
    return node


def string(node, path: str, required: bool = True) -> str:
    if node is None and not required:
        return ""
    if not isinstance(node, (str, int, float)) or isinstance(node, bool) or (required and str(node) == ""):
        raise ConfigError(f"{path}: expected a non-empty string, got {node!r}")
    return str(node)


def patterns(node: dict, key: str, path: str) -> tuple[str, ...] | None:
    if node.get(key) is None:
        return None
    return tuple(string(p, f"{path}.{key}[{i}]") for i, p in enumerate(list_of(node[key], f"{path}.{key}")))


def date_time(value, path: str) -> datetime | None:
    """A date (expiring at 00:00 UTC that day) or an ISO date-time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        return date_time(datetime.fromisoformat(str(value)), path)
    except ValueError:
        raise ConfigError(f"{path}: expected a date such as 2027-01-01, got {value!r}") from None


def boolean(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    return value


def choice(value, path: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{path}: expected one of {', '.join(options)}, got {value!r}")
    return value


def read_yaml(path: str | Path):
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


def count(value, path: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{path}: expected a whole number from {minimum}, got {value!r}")
    return value


def known_names(node: dict, path: str, groups: dict, consumer_names: set[str]) -> None:
    """`groups` and `consumers` lists of a rule must name groups and consumers that exist."""
    for key, known in (("groups", groups), ("consumers", consumer_names)):
        for j, value in enumerate(patterns(node, key, path) or ()):
            if value not in known:
                raise ConfigError(f"{path}.{key}[{j}]: no {key[:-1]} named {value!r}")



def unique(name: str, seen: set[str], path: str, what: str = "rule") -> str:
    """The one "defined twice" check: names of rules, templates and consumers are unique within their list."""
    if name in seen:
        raise ConfigError(f"{path}: {what} {name!r} is defined twice")
    seen.add(name)
    return name


def error_status(value, path: str) -> int:
    """The one status check: a refusal's HTTP status."""
    if not isinstance(value, int) or isinstance(value, bool) or not 400 <= value <= 599:
        raise ConfigError(f"{path}: expected an HTTP error status (400-599), got {value!r}")
    return value


def redacted(url: str) -> str:
    """A URL without its password, for logs and errors (any scheme, several hosts too)."""
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)
