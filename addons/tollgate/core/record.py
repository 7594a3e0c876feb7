"""The one record per LLM call: created when a flow is classified, enriched by each addon, written by the ledger."""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from enum import StrEnum

METADATA_KEY = "tollgate"  # flow.metadata key of the finished call's ledger row (flow dumps, mitmweb)


class Decision(StrEnum):
    """What the gateway did with a call: the one vocabulary of the ledger, metrics, reports and mitmweb."""
    FORWARDED = "forwarded"              # sent to the provider with the org key
    BYOK = "byok"                        # sent with the client's own provider key (unknown_keys: passthrough)
    CACHED = "cached"                    # answered from the cache
    REJECTED = "rejected"                # refused by a check (auth, access, guard, bad input)
    LIMITED = "limited"                  # refused by a rate limit
    OVER_BUDGET = "over_budget"          # refused by a budget
    UNAPPROVED = "unapproved"            # a known AI host that is not a configured provider, recorded
    MODERATED = "moderated"              # the answer was withheld by moderation
    UPSTREAM_ERROR = "upstream_error"    # the provider could not be reached or failed
    UPSTREAM_TIMEOUT = "upstream_timeout"  # the provider did not answer, or went silent mid-answer
    CLIENT_ABORTED = "client_aborted"    # the client went away before the answer ended
    GATEWAY_ERROR = "gateway_error"      # tollgate itself failed: refused, never passed through
    UNAVAILABLE = "unavailable"          # refused because the gateway cannot account for it (ledger down)


def transient(default=None, **kw):
    """A field that lives only while the flow does; the ledger does not store it."""
    return field(default=default, repr=False, compare=False, metadata={"transient": True}, **kw)


@dataclass
class CallRecord:
    id: str
    started_at: float                 # epoch seconds, when the request arrived
    client_ip: str
    dialect: str                      # openai | anthropic | gemini: the client's wire format
    endpoint: str                     # request path without the query
    source: str = ""                  # provider whose host the client called ("" on the reverse listener)
    consumer: str = ""
    group: str = ""
    provider: str = ""                # provider that answered
    requested_model: str = ""
    model: str = ""                   # model sent upstream
    route_rule: str = ""
    upstream_dialect: str = ""        # the wire format the provider was spoken to in (differs: translated)
    attempts: int = 0                 # targets tried (fallback within the call)
    failed_targets: str = ""          # "provider/key:status, …" of the attempts that failed (never a key)
    dropped: str = ""                 # request fields the provider's wire format has no counterpart for
    streamed: bool = False
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0            # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0       # prompt tokens written to it (Anthropic prices them apart)
    usage_source: str = ""            # provider | estimate | cache | none
    cost_usd: float = 0.0             # money spent (priced from config/prices.yaml); 0 for a cache hit
    saved_usd: float = 0.0            # a cache hit: what the call would have cost
    priced_by: str = ""               # override (config/prices.yaml) | catalog (genai-prices) | default (unpriced)
    latency_ms: float | None = None
    ttft_ms: float | None = None
    decision: str = Decision.FORWARDED  # a Decision
    reason: str = ""
    byok: bool = False                # the client's own provider key went upstream (unknown_keys: passthrough)
    cache: str = ""                   # hit | miss | bypass ("" when the call never reached the cache)
    cache_similarity: float | None = None  # a semantic hit: how close the question was to the stored one
    cache_match: str = ""             # a semantic hit: the entry that answered (a short id of its cache key)
    knowledge: str = ""               # passages added: "base:chunk-id,chunk-id" per knowledge base
    guard: str = ""                   # prompt-rule findings: "rule:action×count, …" (never the matched text)
    moderation: str = ""              # answer rule that withheld the answer: "rule:refused" | "rule:cut"
    content_security: str = ""        # service verdicts other than allow: "rule:verdict:category, …"
    prompts: str = ""                 # template and decorators applied: "template:name, decorator:name"
    limited_by: str = ""              # the limit or budget rule that refused the call
    body: dict | None = transient()   # the request's JSON, parsed once
    form: dict | None = transient()   # the text fields of a form upload (audio transcription, files)
    account: object = transient()           # the Consumer entry the key belongs to
    byok_key: str = transient("")           # the client's own provider key (byok): its cache tenant
    untouched: bool = transient(False)      # forwarded as the client sent it (byok, recorded unapproved host)
    answered_here: bool = transient(False)  # the gateway answered (a refusal, a cache hit): nothing came from upstream
    stored_usage: object = transient()      # a cache hit: the usage stored with the answer (dialects.Usage)
    cache_key: str = transient("")
    cache_lookup: bool = transient(False)   # the cache may answer this call (cache_key is set)
    cache_fetched: bool = transient(False)  # cache_entry holds what the store had under cache_key
    cache_entry: bytes | None = transient()
    cache_keep_bytes: int = transient(0)    # a streamed miss keeps this many bytes of events for the cache
    masked: dict | None = transient()       # placeholder -> original of masked prompt findings; never stored
    reservations: list | None = transient()  # what the limits reserved at admission, settled when the call ends
    limit_headers: dict | None = transient()  # x-ratelimit-* for the answer
    answer_headers: dict | None = transient()  # what steps add to the provider's answer: set in one pass
    client_headers: object = transient()  # flows.HeaderView of the request as the client sent it, less its credentials
    body_changed: bool = transient(False)   # body edited by an addon; serialised once before it leaves
    usage_injected: bool = transient(False)  # we asked for stream usage; the client did not
    first_token_at: float | None = transient()
    tap: object = transient()         # the StreamTap a streamed answer flows through (core/sse.py)
    session: object = transient()     # realtime.Session of a WebSocket LLM session
    session_open: bool = transient(False)  # a WebSocket session under way: its row is written when it ends
    written: bool = transient(False)
    overhead_s: float = transient(0.0)      # time spent in tollgate's steps (metrics)
    client_url: tuple | None = transient()  # (scheme, host, port, path) the client called, shown once the call ends
    origin: tuple | None = transient()      # (path, query) as the client sent them, before any route rewrote them
    routes: list | None = transient()       # routing.Route: the pool's targets not tried yet, in order
    query_vector: list | None = transient()  # the last user message, embedded (semantic cache and knowledge)
    semantic_namespace: str = transient("")  # where this call's answer goes in the semantic cache
    cache_stored: bool = transient(False)   # CacheFill kept the answer (the semantic entry may point at it)
    extra_usd: float = transient(0.0)       # spent on the call's behalf (its embeddings): counts in its budgets
    url_prompt: bool = transient(False)     # GET /?text=… on the reverse listener: answered as text (url_prompt.py)
    target: object = transient()            # routing.Route of the current attempt
    key_id: str = transient("")             # short id of the org key the current attempt carries

    def add_answer_headers(self, headers: dict[str, str]) -> None:
        """Headers for the provider's answer, replacing its own of the same names (the Pipeline sets them all in one
        pass once the answer's head is in: one rewrite of its headers instead of one per step)."""
        if self.answer_headers is None:
            self.answer_headers = dict(headers)
        else:
            self.answer_headers.update(headers)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def row(self) -> dict:
        """The stored fields as plain values (the ledger row, and what a flow dump keeps)."""
        row = dict(zip(_STORED, _stored_values(self)))
        row["decision"] = str(row["decision"])
        return row

    def comment(self) -> str:
        """The mitmweb comment column, most important first so a cut-off column still says it:
        `200 · alice (research) · gpt-4o-mini · 812→96 tok · $0.0002` or `403 rejected · bob · gpt-4o · … · why`."""
        head = str(self.status) if self.status else "-"
        if self.decision not in (Decision.FORWARDED, Decision.CACHED):
            head += f" {self.decision}"
        parts = [head, self.consumer + (f" ({self.group})" if self.group else "") if self.consumer else "-",
                 self.model or self.requested_model or self.endpoint,
                 f"{self.prompt_tokens}→{self.completion_tokens} tok"]
        if self.cost_usd:
            parts.append(f"${self.cost_usd:.4f}")
        if self.cache == "hit":
            parts.append("cache hit")
        if self.attempts > 1:
            parts.append(f"{self.attempts} attempts")
        if self.upstream_dialect and self.upstream_dialect != self.dialect:
            parts.append(f"via {self.upstream_dialect}")
        if self.prompts:
            parts.append(self.prompts)
        if self.guard:
            parts.append(f"guard {self.guard}")
        if self.moderation:
            parts.append(f"moderation {self.moderation}")
        if self.reason and self.decision != Decision.FORWARDED:
            parts.append(self.reason)
        return " · ".join(parts)


_STORED = tuple(f.name for f in dataclasses.fields(CallRecord) if not f.metadata.get("transient"))
_stored_values = operator.attrgetter(*_STORED)  # all of them in one C call


def stored_columns() -> dict[str, str]:
    """Stored column -> SQLite type, from the field annotations."""
    types = {"int": "INTEGER", "bool": "INTEGER", "float": "REAL"}
    return {f.name: types.get(str(f.type).split(" ")[0], "TEXT")
            for f in dataclasses.fields(CallRecord) if not f.metadata.get("transient")}
