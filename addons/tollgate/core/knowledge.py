"""Embeddings through tollgate's own providers, and knowledge bases (RAG): configuration and plain decisions.

`embeddings:` names the provider and model every embedding goes to (any OpenAI-format /embeddings endpoint: OpenAI,
Azure, DashScope's text-embedding-v3, Gemini's OpenAI-compatible endpoint, a local server). `vectors:` is where the
index lives: a file (the embedded index) or postgresql://… (pgvector). `knowledge:` lists knowledge bases and when
their passages are added to a prompt."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from .schema import ConfigError, count, known_names, list_of, mapping, patterns, string, unique

HEADER = "x-tollgate-knowledge"


@dataclass(frozen=True)
class Embeddings:
    provider: str
    model: str
    dimensions: int | None = None     # asked of models that can shorten their vectors (text-embedding-3-*)


@dataclass(frozen=True)
class KnowledgeBase:
    name: str
    top_k: int = 4
    min_score: float = 0.75
    models: tuple[str, ...] | None = None      # apply to these routed models (globs)
    groups: tuple[str, ...] | None = None
    consumers: tuple[str, ...] | None = None
    template: str = "Answer using these passages; cite them as [n].\n{passages}"
    chunk_chars: int = 1200
    overlap_chars: int = 200

    @property
    def namespace(self) -> str:
        return f"kb:{self.name}"

    def applies_to(self, model: str, consumer: str, group: str, asked: set[str]) -> bool:
        """By the request's x-tollgate-knowledge header, or by apply: (all of models, groups, consumers given)."""
        if self.name in asked:
            return True
        if self.models is None and self.groups is None and self.consumers is None:
            return False  # no apply: only on request
        return ((self.models is None or any(fnmatchcase(model, p) for p in self.models))
                and (self.groups is None or group in self.groups)
                and (self.consumers is None or consumer in self.consumers))


def parse_embeddings(node, providers: dict) -> Embeddings | None:
    if node is None:
        return None
    node = mapping(node, "embeddings", {"provider", "model", "dimensions"})
    provider = string(node.get("provider"), "embeddings.provider")
    if provider not in providers:
        raise ConfigError(f"embeddings.provider: no provider named {provider!r} (have: {', '.join(providers)})")
    dimensions = node.get("dimensions")
    return Embeddings(provider, string(node.get("model"), "embeddings.model"),
                      count(dimensions, "embeddings.dimensions") if dimensions is not None else None)


def parse_knowledge(node, groups: dict, consumer_names: set[str]) -> tuple[KnowledgeBase, ...]:
    bases, names = [], set()
    for i, item in enumerate(list_of(node, "knowledge")):
        path = f"knowledge[{i}]"
        item = mapping(item, path, {"name", "top_k", "min_score", "apply", "template", "chunk_chars",
                                    "overlap_chars"})
        name = unique(string(item.get("name"), f"{path}.name"), names, f"{path}.name", "knowledge base")
        apply = mapping(item.get("apply"), f"{path}.apply", {"models", "groups", "consumers"})
        known_names(apply, f"{path}.apply", groups, consumer_names)
        min_score = item.get("min_score", 0.75)
        if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or not -1 <= min_score <= 1:
            raise ConfigError(f"{path}.min_score: expected a similarity from -1 to 1, got {min_score!r}")
        template = string(item.get("template", KnowledgeBase.template), f"{path}.template")
        if "{passages}" not in template:
            raise ConfigError(f"{path}.template: must contain {{passages}}")
        chunk = count(item.get("chunk_chars", 1200), f"{path}.chunk_chars", minimum=100)
        overlap = count(item.get("overlap_chars", 200), f"{path}.overlap_chars", minimum=0)
        if overlap >= chunk:
            raise ConfigError(f"{path}.overlap_chars: must be less than chunk_chars ({chunk})")
        bases.append(KnowledgeBase(name, count(item.get("top_k", 4), f"{path}.top_k"), float(min_score),
                                   patterns(apply, "models", path), patterns(apply, "groups", path),
                                   patterns(apply, "consumers", path), template, chunk, overlap))
    return tuple(bases)


def passages_message(base: KnowledgeBase, texts: list[str]) -> str:
    return base.template.replace("{passages}", "\n\n".join(f"[{n}] {t}" for n, t in enumerate(texts, 1)))


def chunks(text: str, size: int, overlap: int) -> list[tuple[int, str]]:
    """(character offset, text) pieces of about size characters, overlapping by overlap, cut at paragraph or
    sentence ends where one is near."""
    text = text.strip()
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start + size // 2:end]
            for mark in ("\n\n", "\n", ". "):
                cut = window.rfind(mark)
                if cut != -1:
                    end = start + size // 2 + cut + len(mark)
                    break
        piece = text[start:end].strip()
        if piece:
            out.append((start, piece))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return out
