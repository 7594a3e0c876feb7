"""tollgate: run with `mitmdump -s addons/gateway.py` (or scripts/run).

The story of an LLM call, top to bottom. mitmproxy sees one addon, the Pipeline; it runs these steps in order for
every hook, inside one guard: a step that fails refuses the call (500 gateway_error in the provider's shape,
nothing sent upstream) and the call still gets its ledger row (see tollgate/pipeline.py). Steps talk only through
the call record that Classify puts in flow.metadata.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the tollgate package sits beside this script

from tollgate.annotate import Annotate  # noqa: E402
from tollgate.answer_guard import AnswerGuard  # noqa: E402
from tollgate.authenticate import Authenticate  # noqa: E402
from tollgate.authorize import Authorize  # noqa: E402
from tollgate.cache import CacheFill, CacheKey, CacheLookup  # noqa: E402
from tollgate.classify import Classify  # noqa: E402
from tollgate.client_address import ClientAddress  # noqa: E402
from tollgate.collector import CollectorTuning  # noqa: E402
from tollgate.content_security import AnswerSecurity, Checker, PromptSecurity  # noqa: E402
from tollgate.fallback import Fallback  # noqa: E402
from tollgate.forward import Forward  # noqa: E402
from tollgate.guard import Guard  # noqa: E402
from tollgate.knowledge import Embedder, Knowledge, SemanticFill, SemanticLookup  # noqa: E402
from tollgate.health import Health  # noqa: E402
from tollgate.ledger import Ledger, LedgerAdmission  # noqa: E402
from tollgate.limits import Admit, Settle  # noqa: E402
from tollgate.llmview import LLMView  # noqa: E402
from tollgate.meter import Meter  # noqa: E402
from tollgate.metrics import Metrics  # noqa: E402
from tollgate.onboard import Onboard  # noqa: E402
from tollgate.own_calls import OwnCalls  # noqa: E402
from tollgate.pipeline import Pipeline  # noqa: E402
from tollgate.prompts import Prompts  # noqa: E402
from tollgate.realtime import Realtime  # noqa: E402
from tollgate.route import Route  # noqa: E402
from tollgate.settings import Settings  # noqa: E402
from tollgate.stream import Stream  # noqa: E402
from tollgate.transform import Transformer  # noqa: E402
from tollgate.translate import Translate  # noqa: E402
from tollgate.url_prompt import UrlPromptIn, UrlPromptOut  # noqa: E402

settings = Settings()
admit, settle = Admit(settings), Settle(settings)  # limits act at two places (and in realtime sessions)
ledger = Ledger(settings)                 # one row per call (and per embedding made on a call's behalf)
calls = OwnCalls(settings, ledger)        # calls the gateway makes itself (embeddings, content security)
embedder = Embedder(settings, calls)      # embeddings through the gateway's own provider; the vector index
checker = Checker(settings, calls)        # content security services: verdict cache, timeouts, on_error
health = Health(settings)                 # keys and providers: cooling down, out, breakers (shared via the store)
route = Route(settings, health)

addons = [
    settings,                     # loads config/gateway.yaml, reloads on edit, decrypts only provider hosts
    Pipeline(
        CollectorTuning(),        # the cycle collector: what start-up made is frozen out of its scans
        Onboard(),                # http://tollgate/ through the proxy: the CA, a trust bundle, settings per runtime
        UrlPromptIn(settings),    # GET /?text=… on the reverse listener becomes a chat completion (url_prompt)
        Classify(settings),       # is this an LLM call (every name it carries)? open its record; read the body strictly
        Transformer(settings, calls),  # listed non-LLM hosts: request/response rewritten by a model (transform:)
        ClientAddress(settings),  # behind a trusted balancer: the client's address from X-Forwarded-For
        LedgerAdmission(settings),  # ledger.on_error: closed and the ledger cannot write: 503
        Authenticate(settings),   # which consumer: gateway key from any header or proxy auth (401)
        Prompts(settings),        # template calls expanded (400 if unknown), decorators add their messages
        route,                    # the pool's first healthy target: destination, model, wire format, org key (503)
        Authorize(settings),      # may this consumer use this model at this provider? (403)
        Knowledge(settings, embedder),  # RAG: passages of the knowledge bases that apply, as a system message
        Realtime(settings, admit, settle),  # WebSocket sessions: events guarded, each response reserved and settled
        Guard(settings),          # prompt rules: secrets, PII, keywords, regexes → block (403), mask or log
        PromptSecurity(settings, checker),  # moderation services, LLM judges, webhooks on the prompt (403, masked)
        CacheKey(settings),       # may the cache answer, under which key (tenant, provider, model, body)?
        admit,                    # rate limits and budgets: reserve the worst case (and fetch the cache entry), or 429
        CacheLookup(settings),    # identical request, same tenant: answered here (x-cache: HIT)
        SemanticLookup(settings, embedder),  # a close enough question, same tenant and context (HIT-SEMANTIC)
        Stream(),                 # ask for stream usage; stream SSE through a metering (and translating) tap
        Forward(settings),        # serialise the body once (translated); watch the provider: 502/504, silence
        Fallback(settings, route, health, calls),  # the attempt failed before the client saw a byte: the next target
        Translate(),              # a translated answer back in the client's wire format (x-tollgate-dropped)
        AnswerGuard(settings),    # masked originals back into the answer; moderation refuses or cuts (streams)
        AnswerSecurity(settings, checker),  # the services on the answer: plain whole, streams window by window
        Meter(settings),          # status, latency, time to first token, tokens (reported or counted)
        health,                   # the final attempt's outcome; x-tollgate-attempts
        settle,                   # limits: the reservation corrected to what the call used
        CacheFill(settings),      # a 200 answer (plain or its whole event stream) goes into the cache
        SemanticFill(settings, embedder),  # and its question into the semantic index
        UrlPromptOut(settings),   # the prompt-in-URL endpoint answers in plain text (or its small JSON)
        Annotate(),               # mitmweb: comment and marker
        LLMView(),                # mitmweb: the "LLM" content view (conversation, reassembled stream, usage)
        ledger,                   # one row per call, on disk before the answer completes (closed: or no answer)
        Metrics(settings),        # Prometheus counters and histograms (what the client got), /healthz
        settings=settings,        # steps of features the configuration leaves unset are not called
    ),
]
