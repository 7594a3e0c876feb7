"""Embeddings, the semantic cache and knowledge bases (RAG) at the gate (decisions in core/knowledge.py and
core/cache.py, the index in core/vectors.py).

- Embedder: embeddings go to `embeddings.provider` with its org key like any call, and each is a ledger row of its
  own (the consumer it served, or system:embeddings); what it cost counts in the served call's budgets.
- Knowledge (after authorisation, before the guard): the last user message is embedded once, the top passages of
  every knowledge base that applies (by `apply`, or asked for with x-tollgate-knowledge) above `min_score` are
  added as a system message in the call's own wire format. The guard then scans them like any prompt text, and the
  cache keys on the augmented request. The answer says `x-tollgate-knowledge: base:count`; the ledger has the
  chunk ids.
- SemanticLookup (after an exact miss): the nearest stored question of the same tenant and context (provider, routed
  model, system prompt, tools, sampling, earlier turns, plain or streamed) answers if it is close enough and young
  enough (x-cache: HIT-SEMANTIC, x-cache-similarity). SemanticFill indexes an answer the exact cache kept.
An embedding or index that fails is logged and means no passages and a cache miss: never a failed call."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from tollgate.cache import STATUS_HEADER, answer_from
from tollgate.core import wire
from tollgate.core.cache import Entry, context_digest, tenant
from tollgate.core.knowledge import HEADER, passages_message
from tollgate.core.record import CallRecord
from tollgate.core.vectors import open_index
from tollgate.flows import pending, record_of
from tollgate.own_calls import OwnCalls

log = logging.getLogger("tollgate")
SIMILARITY_HEADER = "x-cache-similarity"


class Embedder:
    """The one way tollgate embeds text, and the vector index it keeps."""

    def __init__(self, settings, calls: OwnCalls):
        self.settings = settings
        self.calls = calls
        self._index = None
        self._index_url = ""
        self._failing = False

    def index(self):
        url = self.settings.config.vectors
        if self._index is None or url != self._index_url:
            self._index, self._index_url = open_index(url), url
        return self._index

    async def embed(self, texts: list[str], record: CallRecord | None = None) -> list[list[float]] | None:
        """The texts' vectors, or None when the provider could not give them (logged once per outage)."""
        setup = self.settings.config.embeddings
        body = {"model": setup.model, "input": texts, **({"dimensions": setup.dimensions} if setup.dimensions else {})}
        answer, row = await self.calls.post(setup.provider, "/v1/embeddings", body,
                                            consumer=record.consumer if record else "system:embeddings",
                                            group=record.group if record else "")
        if record is not None:
            record.extra_usd += row.cost_usd
        try:
            data = sorted(answer["data"], key=lambda d: d["index"])
            vectors = [[float(x) for x in d["embedding"]] for d in data]
            if len(vectors) != len(texts):
                raise ValueError("the provider returned a different number of vectors")
        except (TypeError, KeyError, ValueError) as e:
            if not self._failing:
                log.error("tollgate: embeddings at provider %s failed (%s); no knowledge passages and no semantic "
                          "cache hits until they work", setup.provider, row.reason or type(e).__name__)
            self._failing = True
            return None
        if self._failing:
            log.warning("tollgate: embeddings work again")
        self._failing = False
        return vectors

    async def query_vector(self, record) -> list[float] | None:
        """The call's last user message, embedded once for the cache and every knowledge base."""
        if record.query_vector is None:
            text = wire.of(record.dialect).last_user_text(record.body or {})
            if not text.strip():
                return None
            vectors = await self.embed([text], record)
            record.query_vector = vectors[0] if vectors else []
        return record.query_vector or None


class Knowledge:
    def __init__(self, settings, embedder: Embedder):
        self.settings = settings
        self.embedder = embedder

    @staticmethod
    def active(config) -> bool:  # the pipeline leaves it out while no knowledge base is set
        return bool(config.knowledge)

    async def request(self, flow):
        if not (record := pending(flow)) or record.body is None:
            return
        config = self.settings.config
        asked = {n.strip() for n in flow.request.headers.pop(HEADER, "").split(",") if n.strip()}
        bases = [b for b in config.knowledge
                 if b.applies_to(record.model or record.requested_model, record.consumer, record.group, asked)]
        if not bases or not (vector := await self.embedder.query_vector(record)):
            return
        found, texts = [], []
        for base in bases:
            try:
                hits = await self.embedder.index().search(base.namespace, vector, base.top_k)
            except Exception as e:  # an index outage: no passages, the call goes on
                log.error("tollgate: knowledge base %s unavailable: %s", base.name, type(e).__name__)
                continue
            hits = [h for h in hits if h.score >= base.min_score]
            found.append(f"{base.name}:" + ",".join(h.id for h in hits))
            if hits:
                texts.append(passages_message(base, [h.payload.get("text", "") for h in hits]))
        record.knowledge = "; ".join(found)
        if texts and wire.of(record.dialect).decorate(record.body, record.endpoint,
                                                      [{"role": "system", "content": "\n\n".join(texts)}], []):
            record.body_changed = True

    def responseheaders(self, flow):
        record = record_of(flow)
        if record is not None and record.knowledge:
            flow.response.headers[HEADER] = _summary(record.knowledge)

    def response(self, flow):  # answers made at the gate (cache hits) pass no responseheaders hook
        record = record_of(flow)
        if record is not None and record.knowledge and HEADER not in flow.response.headers:
            flow.response.headers[HEADER] = _summary(record.knowledge)


def _summary(knowledge: str) -> str:
    """"handbook:3, faq:0" from "handbook:a,b,c; faq:"."""
    parts = []
    for item in knowledge.split("; "):
        name, _, ids = item.partition(":")
        parts.append(f"{name}:{len([i for i in ids.split(',') if i])}")
    return ", ".join(parts)


class SemanticLookup:
    def __init__(self, settings, embedder: Embedder):
        self.settings = settings
        self.embedder = embedder

    @staticmethod
    def active(config) -> bool:  # only with a semantic cache
        return config.cache is not None and config.cache.semantic is not None

    async def request(self, flow):
        if not (record := pending(flow)) or record.cache != "miss" or record.body is None:
            return
        cache = self.settings.config.cache
        semantic = cache.semantic if cache else None
        if semantic is None or not semantic.applies_to(record.model or record.requested_model):
            return
        scope = tenant(semantic.scope, record.consumer, record.group, record.byok_key)
        digest = context_digest(record.body, wire.of(record.dialect).MESSAGES, record.provider,
                                record.model or record.requested_model, record.streamed, scope)
        if not (vector := await self.embedder.query_vector(record)):
            return
        record.semantic_namespace = f"cache:{digest}"
        if not record.cache_lookup:  # refresh: store anew, never answer from the cache
            return
        try:
            hits = await self.embedder.index().search(record.semantic_namespace, vector, 1)
        except Exception as e:
            log.error("tollgate: the semantic cache index is unavailable: %s", type(e).__name__)
            return
        if not hits or hits[0].score < semantic.threshold or time.time() - hits[0].created_at > semantic.max_age_s:
            return
        key = hits[0].payload.get("cache_key", "")
        data = await self.settings.store().lookup(key) if key else None
        entry = Entry.unpack(data) if data else None
        if entry is None or entry.streamed != record.streamed:
            return  # the answer it pointed at has expired from the exact cache
        similarity = round(hits[0].score, 4)
        answer_from(flow, record, entry, {STATUS_HEADER: "HIT-SEMANTIC", SIMILARITY_HEADER: f"{similarity:.4f}"})
        record.cache_similarity = similarity
        record.cache_match = hashlib.sha256(key.encode()).hexdigest()[:12]


class SemanticFill:
    def __init__(self, settings, embedder: Embedder):
        self.settings = settings
        self.embedder = embedder
        self._tasks: set[asyncio.Task] = set()  # the loop holds tasks weakly

    @staticmethod
    def active(config) -> bool:  # only with a semantic cache
        return config.cache is not None and config.cache.semantic is not None

    def response(self, flow):  # the answer does not wait for the index
        record = record_of(flow)
        if record is None or not record.cache_stored or not record.semantic_namespace or not record.query_vector:
            return
        semantic = self.settings.config.cache.semantic if self.settings.config.cache else None
        if semantic is None:
            return
        task = asyncio.get_running_loop().create_task(self._add(record, semantic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add(self, record, semantic) -> None:
        try:
            await self.embedder.index().add(record.semantic_namespace,
                                            [(record.cache_key, record.query_vector, {"cache_key": record.cache_key})],
                                            limit=semantic.max_entries)
        except Exception as e:
            log.error("tollgate: the semantic cache index is unavailable: %s", type(e).__name__)
