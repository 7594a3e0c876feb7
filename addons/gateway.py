"""tollgate: run with `mitmdump -s addons/gateway.py` (or scripts/run).

The addons below are the pipeline, in order: each LLM request passes them top to bottom, and they talk only through
the call record that Classify puts in flow.metadata.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the tollgate package sits beside this script

from tollgate.annotate import Annotate  # noqa: E402
from tollgate.answer_guard import AnswerGuard  # noqa: E402
from tollgate.authenticate import Authenticate  # noqa: E402
from tollgate.authorize import Authorize  # noqa: E402
from tollgate.cache import CacheFill, CacheLookup  # noqa: E402
from tollgate.classify import Classify  # noqa: E402
from tollgate.forward import Forward  # noqa: E402
from tollgate.guard import Guard  # noqa: E402
from tollgate.ledger import Ledger  # noqa: E402
from tollgate.limits import Admit, Settle  # noqa: E402
from tollgate.llmview import LLMView  # noqa: E402
from tollgate.meter import Meter  # noqa: E402
from tollgate.metrics import Metrics  # noqa: E402
from tollgate.prompts import Prompts  # noqa: E402
from tollgate.route import Route  # noqa: E402
from tollgate.settings import Settings  # noqa: E402
from tollgate.stream import Stream  # noqa: E402

settings = Settings()

addons = [
    settings,                 # loads config/gateway.yaml, reloads on edit, decrypts only provider hosts
    Classify(settings),       # is this an LLM call? open its record, parse the body once (400/413)
    Authenticate(settings),   # which consumer: gateway key from any header or proxy auth (401)
    Prompts(settings),        # template calls expanded (400 if unknown), decorators add their messages
    Route(settings),          # provider + model mapping, destination rewrite, org key injected
    Authorize(settings),      # may this consumer use this model at this provider? (403)
    Guard(settings),          # prompt rules: secrets, PII, keywords, regexes → block (403), mask or log
    Admit(settings),          # rate limits and budgets: reserve the worst case, or 429 with retry-after
    CacheLookup(settings),    # identical request, same tenant: answered here (x-cache: HIT)
    Stream(),                 # ask for stream usage; stream SSE through a metering tap
    Forward(settings),        # serialise the body once; 502/504 in the provider's shape
    AnswerGuard(settings),    # masked originals back into the answer; moderation refuses or cuts (streams)
    Meter(settings),          # status, latency, time to first token, tokens (reported or counted)
    Settle(settings),         # limits: the reservation corrected to what the call used
    CacheFill(settings),      # a 200 answer (plain or its whole event stream) goes into the cache
    Annotate(),               # mitmweb: comment and marker
    LLMView(),                # mitmweb: the "LLM" content view (conversation, reassembled stream, usage)
    Metrics(settings),        # Prometheus counters and histograms, /healthz (tollgate_metrics_port)
    Ledger(settings),         # one SQLite row per call, committed before the answer completes
]
