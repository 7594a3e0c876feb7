"""Prompt templates and decorators on plain data.

A template is a request body with {{property}} placeholders; a client sends {"template": name, "properties": {...}}
(plus any fields to set on top, such as "stream") and the gateway expands it into a normal request. A decorator
adds messages before and after the conversation of every chat request it matches (by model, group or consumer),
placed where the wire format keeps them: Anthropic's `system` field, Gemini's systemInstruction and contents."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from . import wire
from .schema import ConfigError, choice, known_names, list_of, mapping, patterns, string, unique

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    body: dict
    properties: frozenset[str]


@dataclass(frozen=True)
class Decorator:
    name: str
    prepend: tuple[dict, ...] = ()
    append: tuple[dict, ...] = ()
    models: tuple[str, ...] | None = None   # globs; None: every model
    groups: tuple[str, ...] = ()            # empty (with consumers empty): everyone
    consumers: tuple[str, ...] = ()

    def applies_to(self, model: str, consumer: str, group: str) -> bool:
        if self.models is not None and not any(fnmatchcase(model, m) for m in self.models):
            return False
        return (not self.groups and not self.consumers) or group in self.groups or consumer in self.consumers


def placeholders(node) -> frozenset[str]:
    if isinstance(node, str):
        return frozenset(_PLACEHOLDER.findall(node))
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return frozenset().union(*map(placeholders, node)) if node else frozenset()
    return frozenset()


def _fill(node, properties: dict):
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: _text(properties[m.group(1)]), node)
    if isinstance(node, dict):
        return {k: _fill(v, properties) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, properties) for v in node]
    return node


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def is_template_call(body) -> bool:
    return isinstance(body, dict) and "template" in body


def expand(templates: dict[str, Template], body: dict) -> dict:
    """The request a template call stands for; PromptError naming the unknown template or missing property."""
    name = body.get("template")
    if not isinstance(name, str) or name not in templates:
        known = ", ".join(sorted(templates)) or "none configured"
        raise PromptError(f"unknown template {name!r} (known: {known})")
    template = templates[name]
    properties = body.get("properties", {})
    if not isinstance(properties, dict):
        raise PromptError(f"template {name!r}: properties must be an object")
    missing = sorted(template.properties - set(properties))
    if missing:
        raise PromptError(f"template {name!r} needs propert{'ies' if len(missing) > 1 else 'y'} "
                          + ", ".join(repr(m) for m in missing))
    expanded = _fill(copy.deepcopy(template.body), properties)
    expanded.update({k: v for k, v in body.items() if k not in ("template", "properties")})
    return expanded


def decorate(dialect: str, endpoint: str, body: dict, decorators: tuple[Decorator, ...], model: str, consumer: str,
             group: str) -> list[str]:
    """Adds the matching decorators' messages to a chat request (in place); returns the names applied."""
    applied = []
    for decorator in decorators:
        if decorator.applies_to(model, consumer, group) and _add(dialect, endpoint, body, decorator):
            applied.append(decorator.name)
    return applied


def _add(dialect: str, endpoint: str, body: dict, decorator: Decorator) -> bool:
    return wire.of(dialect).decorate(body, endpoint, list(decorator.prepend), list(decorator.append))


@dataclass(frozen=True)
class Prompts:
    templates: dict = field(default_factory=dict)   # name -> core.prompts.Template
    decorators: tuple = ()                           # core.prompts.Decorator


def parse_prompts(node, groups: dict, consumer_names: set[str]) -> Prompts:
    node = mapping(node, "prompts", {"templates", "decorators"})
    templates = {}
    for i, item in enumerate(list_of(node.get("templates"), "prompts.templates")):
        path = f"prompts.templates[{i}]"
        item = mapping(item, path, {"name", "template"})
        name = unique(string(item.get("name"), f"{path}.name"), set(templates), f"{path}.name", "template")
        body = mapping(item.get("template"), f"{path}.template", set(map(str, item.get("template") or {})))
        if not body:
            raise ConfigError(f"{path}.template: expected the request body to expand into")
        templates[name] = Template(name, body, placeholders(body))
    decorators = []
    for i, item in enumerate(list_of(node.get("decorators"), "prompts.decorators")):
        path = f"prompts.decorators[{i}]"
        item = mapping(item, path, {"name", "models", "groups", "consumers", "prepend", "append"})
        known_names(item, path, groups, consumer_names)
        messages = {}
        for key in ("prepend", "append"):
            messages[key] = []
            for j, message in enumerate(list_of(item.get(key), f"{path}.{key}")):
                message = mapping(message, f"{path}.{key}[{j}]", {"role", "content"})
                role = choice(message.get("role", "system"), f"{path}.{key}[{j}].role", ("system", "user", "assistant"))
                messages[key].append({"role": role, "content": string(message.get("content"), f"{path}.{key}[{j}].content")})
        if not messages["prepend"] and not messages["append"]:
            raise ConfigError(f"{path}: give prepend or append messages")
        decorators.append(Decorator(string(item.get("name", f"decorator-{i}"), f"{path}.name"),
                                    tuple(messages["prepend"]), tuple(messages["append"]),
                                    patterns(item, "models", path), patterns(item, "groups", path) or (),
                                    patterns(item, "consumers", path) or ()))
    return Prompts(templates, tuple(decorators))
