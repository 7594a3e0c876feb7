"""Every piece of mitmproxy's internals tollgate relies on, in one place, checked when the gateway loads.

mitmproxy's addon API has no hook for four things a gateway needs, so they are patched in here (and two things it
does that a gateway does not need are turned off or done once):
- The org key exists only on the wire: the flow's request (what mitmweb, flow dumps and the log show, at any
  moment) carries a redacted header, and the key is put into a copy of the request as it is handed to the upstream
  connection (HTTP/1 and HTTP/2 alike).
- Errors mitmproxy itself answers (upstream unreachable or cut off, request body too large) are rendered as an
  LLM flow's provider error shape, for HTTP/1 and HTTP/2 clients alike, instead of mitmproxy's HTML page; a stream
  that already started ends with a final error event the SDKs understand.
- The request body limit is per flow (gateway.max_request_bytes for LLM calls), decided from Content-Length before
  the body is read and while a chunked body is read, so memory stays bounded by the limit.
- An LLM call can close its upstream connection (timeouts).
- mitmproxy's debug-only type check of every request and response it builds (`MessageData.__post_init__`, which
  `python -O` leaves out) is skipped: it raised and caught several TypeErrors per message, ~50 µs each (a tenth of
  a call's CPU in mitmproxy), and their tracebacks made every request and response, body included, a reference
  cycle that only the collector frees. What it checks is what mitmproxy's own parser just built.
- mitmproxy's addon dispatch (`AddonManager.trigger_event`) walks all of its ~35 addons and their children for each
  of a call's eight events (four hooks, each followed by `update`), asking each for the hook by name, though only a
  dozen addons handle any of them and nobody handles `update`: 0.5 to 1.1 ms of the 1.8 to 3.5 ms of CPU plain
  mitmdump spends on a call on this 2-core machine (scripts/bench: its two floors). The walk is made once per event
  name and kept until an addon is registered or removed (a script loaded, reloaded or dropped) or an option
  changes (configure; not the other events of `AddonManager.trigger`, such as each log line, mitmproxy's "Streaming
  response" once a stream): the same handlers are called in the same order, with the same error handling
  (`safecall` per top-level addon, `AddonHalt`). An addon that grows a hook method after it was registered is the
  one thing it does not see; tollgate's and mitmproxy's own addons never do.

If a mitmproxy upgrade changes these shapes, install() finds out before patching anything. The request body limit
degrades: logged once, mitmproxy's own body_size_limit then applies to every flow. The event handler carries the
org key onto the wire, so without it the gateway refuses to start (fail closed: a key must never show)."""

from __future__ import annotations

import copy
import inspect
import logging
import weakref
from dataclasses import dataclass

from mitmproxy import addonmanager, ctx, exceptions, flow as mflow, http
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import HttpStream, SendHttp
from mitmproxy.proxy.layers.http._events import (ErrorCode, RequestHeaders, ResponseData, ResponseEndOfMessage,
                                                 ResponseHeaders, ResponseProtocolError)
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook, HttpRequestHeadersHook
from mitmproxy.net.http.http1 import expected_http_body_size

from tollgate.flows import set_headers

# Requests on their way upstream -> (header, value) to send instead of the redacted one. Weak: a flow that ends
# takes its entry with it.
_wire_credentials: "weakref.WeakKeyDictionary[http.Request, tuple[str, str]]" = weakref.WeakKeyDictionary()

_original_handle_event = HttpStream._handle_event
_original_message_check = http.MessageData.__dict__.get("__post_init__")  # None under python -O
_CHECK_NAMES = {"fields", "getattr", "typecheck", "check_option_type", "name", "type"}  # all that it may do
_original_check_body_size = HttpStream.check_body_size
_Manager = addonmanager.AddonManager
_original_dispatch = {name: _Manager.__dict__[name] for name in ("trigger_event", "trigger", "register", "remove",
                                                                     "clear")}
# What trigger_event and invoke_addon read, as written against (mitmproxy 11.0 to 12.2): anything else and the
# dispatch stays mitmproxy's own.
_DISPATCH_NAMES = {"trigger_event": {"chain", "safecall", "invoke_addon", "exceptions", "AddonHalt"},
                   "invoke_addon": {"_iter_hooks", "args", "inspect", "isawaitable"}}

# Set by the pipeline: flow -> (record or None). The request body limit of a flow that is the gateway's, or None.
request_limit = lambda flow: None  # noqa: E731
# Set by the pipeline: (flow, status, message) -> (status, headers, body) of the error answer an LLM client gets,
# or None to leave mitmproxy's own; and (flow) -> final stream bytes for a stream that already started.
error_answer = lambda flow, status, message: None  # noqa: E731
stream_end = lambda flow, message: b""  # noqa: E731
# Set by the pipeline: records that the flow's body was refused as too large (before the error hook runs).
too_large = lambda flow, message: None  # noqa: E731
# Set by content security: (flow, final) -> an awaitable the stream's next chunk (or its end) must wait for, or None.
stream_wait = lambda flow, final: None  # noqa: E731


@dataclass
class TollgateStreamWaitHook(commands.StartHook):
    """Yielded before a streamed answer's next chunk (or its end) is processed, while an earlier window's check is
    out: the Pipeline's `tollgate_stream_wait(flow)` awaits it (waiting_for(flow)), so nothing unchecked passes and
    nothing piles up. (mitmproxy's hooks take one argument.)"""
    name = "tollgate_stream_wait"
    flow: http.HTTPFlow


_waiting: "weakref.WeakKeyDictionary[http.HTTPFlow, object]" = weakref.WeakKeyDictionary()


def waiting_for(flow):
    """The awaitable a TollgateStreamWaitHook was yielded for (once)."""
    return _waiting.pop(flow, None)


def check_shapes() -> dict[str, list[str]]:
    """What differs from the internals this module was written against, per patch: {"events": [...],
    "body_limit": [...]} (empty lists: all as expected)."""
    events, body_limit = [], []
    if not inspect.isgeneratorfunction(inspect.unwrap(_original_handle_event)):
        events.append("HttpStream._handle_event is no longer a generator")
    if not {"stream_id", "request", "end_stream", "replay_flow"} <= set(RequestHeaders.__dataclass_fields__):
        events.append("RequestHeaders(stream_id, request, end_stream, replay_flow) changed")
    if list(inspect.signature(_original_check_body_size).parameters) != ["self", "request"]:
        body_limit.append("HttpStream.check_body_size(self, request) changed")
    for name in ("state_errored", "state_consume_request_body", "handle_protocol_error"):
        if not callable(getattr(HttpStream, name, None)):
            body_limit.append(f"HttpStream.{name} is gone")
    if "request_body_buf" not in inspect.getsource(HttpStream.__init__):
        body_limit.append("HttpStream.request_body_buf is gone")
    if ErrorCode.REQUEST_TOO_LARGE.http_status_code() != 413:
        body_limit.append("ErrorCode.REQUEST_TOO_LARGE no longer maps to 413")
    debug_checks = []
    if _original_message_check is not None and not set(_original_message_check.__code__.co_names) <= _CHECK_NAMES:
        debug_checks.append("MessageData.__post_init__ does more than type checks")
    dispatch = []
    for name, reads in _DISPATCH_NAMES.items():
        method = getattr(_Manager, name, None)
        if not inspect.iscoroutinefunction(method) or set(method.__code__.co_names) != reads:
            dispatch.append(f"AddonManager.{name} changed")
    if not callable(getattr(_Manager, "_iter_hooks", None)) or not callable(getattr(addonmanager, "safecall", None)):
        dispatch.append("AddonManager._iter_hooks or addonmanager.safecall is gone")
    return {"events": events, "body_limit": body_limit, "debug_checks": debug_checks, "dispatch": dispatch}


def _handle_event(self, event):
    """HttpStream's event handler, with the protocol errors it sends to an LLM client rewritten on the way out.
    Commands are passed through one by one (with their replies), so mitmproxy's own flow logic is untouched."""
    if isinstance(event, (ResponseData, ResponseEndOfMessage)) and getattr(self, "flow", None) is not None:
        try:
            waiting = stream_wait(self.flow, isinstance(event, ResponseEndOfMessage))
        except Exception:  # never take the proxy down; the tap then finds the check unfinished and holds the text
            logging.getLogger("tollgate").exception("tollgate: preparing a stream check failed")
            waiting = None
        if waiting is not None:
            _waiting[self.flow] = waiting
            yield TollgateStreamWaitHook(self.flow)
    gen = _original_handle_event(self, event)
    reply = None
    while True:
        try:
            command = gen.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = None
        if isinstance(command, SendHttp) and isinstance(command.event, RequestHeaders) and _wire_credentials:
            command = _with_credential(command)
        elif isinstance(command, SendHttp) and command.connection is self.context.client:
            if isinstance(command.event, ResponseHeaders):
                self.tollgate_headers_sent = True
            elif isinstance(command.event, ResponseProtocolError):
                try:
                    replacement = _replace_error(self, command.event)
                except Exception:  # never take the proxy down: mitmproxy's own error answer is the fallback
                    logging.getLogger("tollgate").exception("tollgate: rendering an error answer failed")
                    replacement = None
                if replacement is not None:
                    yield from replacement
                    continue
        reply = yield command


def send_with_credential(request: http.Request, header: str, value: str, shown: str) -> None:
    """The request shows `shown` in `header`; upstream gets `value` there."""
    set_headers(request.headers, {header: shown})
    _wire_credentials[request] = (header, value)


def wire_headers(request: http.Request) -> list[tuple[bytes, bytes]]:
    """The request's headers as the wire gets them (its credential in place): for a request the gateway sends
    itself (a fallback attempt)."""
    credential = _wire_credentials.get(request)
    headers = request.headers.copy()
    if credential is not None:
        headers[credential[0]] = credential[1]
    return list(headers.fields)


def _with_credential(command):
    request = command.event.request
    credential = _wire_credentials.get(request)
    if credential is None:
        return command
    wire = copy.copy(request)  # shallow, with headers of its own: a full copy() serialises the body as well
    wire.data = copy.copy(request.data)
    wire.data.headers = request.headers.copy()
    wire.headers[credential[0]] = credential[1]
    return SendHttp(RequestHeaders(command.event.stream_id, wire, command.event.end_stream,
                                   command.event.replay_flow), command.connection)


def _replace_error(self, event: ResponseProtocolError):
    flow = getattr(self, "flow", None)
    if flow is None or flow.request is None or not (self.context.client.state & ConnectionState.CAN_WRITE):
        return None
    h2 = flow.request.is_http2 or flow.request.is_http3
    if getattr(self, "tollgate_headers_sent", False):
        tail = stream_end(flow, event.message)
        if not tail:
            return None
        out = [SendHttp(ResponseData(self.stream_id, tail), self.context.client),
               SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)]
        return out if h2 else out + [commands.CloseConnection(self.context.client)]
    if flow.error is None and flow.response is not None:  # an addon answered in the error hook (a fallback)
        response, body = flow.response, flow.response.raw_content or b""
    else:
        status = event.code.http_status_code()
        answer = error_answer(flow, status, event.message) if status is not None else None
        if answer is None:
            return None
        status, headers, body = answer
        response = http.Response.make(status, body, headers)
    if h2:
        response.http_version = flow.request.http_version
    else:
        response.headers["connection"] = "close"
    self.tollgate_headers_sent = True
    out = [SendHttp(ResponseHeaders(self.stream_id, response, end_stream=False), self.context.client),
           SendHttp(ResponseData(self.stream_id, body), self.context.client),
           SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)]
    return out if h2 else out + [commands.CloseConnection(self.context.client)]


def _check_body_size(self, request: bool):
    """The request body limit of an LLM call: refused from Content-Length before the body is read, or as soon as
    a chunked body passes the limit; mitmproxy's own body_size_limit still applies to everything else."""
    limit = request_limit(self.flow) if request else None
    if limit is not None:
        try:
            size = len(self.request_body_buf) or expected_http_body_size(self.flow.request, None)
        except ValueError:
            size = None
        if size is not None and size > limit:
            message = f"request body of {size} bytes exceeds the gateway limit of {limit} bytes"
            if not self.request_body_buf:
                yield HttpRequestHeadersHook(self.flow)
            too_large(self.flow, message)
            self.flow.error = mflow.Error(message)
            yield HttpErrorHook(self.flow)
            yield SendHttp(ResponseProtocolError(self.stream_id, message, ErrorCode.REQUEST_TOO_LARGE),
                                    self.context.client)
            self.client_state = self.state_errored
            self.flow.live = False
            return True
    return (yield from _original_check_body_size(self, request))


_generation = 0  # moves on whenever an addon comes or goes: every manager's walks are made again
_LIFECYCLE = frozenset({"running", "done"})  # once a run, while addons are still being set up: walked live


def _walked(manager, event) -> tuple:
    """((top-level addon, ((addon, hook), ...)), ...) of one event name: mitmproxy's own walk (_iter_hooks), kept."""
    kept = manager.__dict__.get("_tollgate_walks")
    if kept is None or kept[0] != _generation:
        kept = manager._tollgate_walks = (_generation, {})
    walks = kept[1]
    if (walk := walks.get(event.name)) is None:
        walk = walks[event.name] = tuple((top, hooks) for top in manager.chain
                                         if (hooks := tuple(manager._iter_hooks(top, event))))
    return walk


async def _trigger_event(self, event) -> None:
    """AddonManager.trigger_event over the walk kept for the event's name (see the module's docstring)."""
    if event.name in _LIFECYCLE:
        return await _original_dispatch["trigger_event"](self, event)
    try:
        walk = _walked(self, event)
    except Exception:  # a hook that is not callable, say: mitmproxy's own dispatch reports it as it always has
        return await _original_dispatch["trigger_event"](self, event)
    if not walk:
        return
    args = event.args()
    for _, hooks in walk:
        try:
            for _, hook in hooks:
                result = hook(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
        except exceptions.AddonHalt:
            return
        except Exception as e:  # mitmproxy's own handling (safecall): logged, the next top-level addon goes on
            with addonmanager.safecall():
                raise e


def _changes_addons(name: str, changes=lambda *args, **kwargs: True):
    """The AddonManager method `name`, made to drop the kept walks when `changes(its arguments)` says it may change
    the addons."""
    original = _original_dispatch[name]

    def changed(self, *args, **kwargs):
        global _generation
        if not changes(*args, **kwargs):
            return original(self, *args, **kwargs)
        _generation += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            _generation += 1  # and once more when done: a walk made meanwhile (a load hook's) is not kept

    changed.__name__ = changed.__qualname__ = name
    return changed


def _unchecked(self) -> None:
    """MessageData.__post_init__ without its debug-only type checks (see the module's docstring)."""


def install(problems: dict[str, list[str]] | None = None) -> None:
    problems = check_shapes() if problems is None else problems
    if problems["events"]:  # the org key could not be kept off the flow: refuse rather than show it
        raise RuntimeError("tollgate: this mitmproxy version is not supported: " + "; ".join(problems["events"]))
    HttpStream._handle_event = _handle_event
    if problems["body_limit"]:
        logging.getLogger("tollgate").error(
            "tollgate: per-call request body limits are off on this mitmproxy version (%s); mitmproxy's "
            "body_size_limit applies to every flow instead", "; ".join(problems["body_limit"]))
    else:
        HttpStream.check_body_size = _check_body_size
    speed_up(problems)


def speed_up(problems: dict[str, list[str]] | None = None) -> None:
    """What tollgate changes in mitmproxy that is no feature of its own, only work saved: its debug checks off, its
    addon dispatch walked once (the bench's like-for-like floor runs mitmproxy so too)."""
    global _generation
    problems = check_shapes() if problems is None else problems
    if problems.get("debug_checks"):  # it is no longer only a check: leave it as it is
        logging.getLogger("tollgate").warning("tollgate: mitmproxy's message checks stay on (%s)",
                                              "; ".join(problems["debug_checks"]))
    elif _original_message_check is not None:
        http.MessageData.__post_init__ = _unchecked
    if problems.get("dispatch"):
        logging.getLogger("tollgate").warning("tollgate: mitmproxy's addon dispatch stays as it is (%s)",
                                              "; ".join(problems["dispatch"]))
    else:
        _generation += 1  # walks kept by an earlier install are not trusted
        _Manager.trigger_event = _trigger_event
        for name in ("register", "remove", "clear"):
            setattr(_Manager, name, _changes_addons(name))
        # trigger also carries each log line and update; of its events only configure may reorder addons (scripts)
        _Manager.trigger = _changes_addons("trigger", lambda event: getattr(event, "name", None) in ("configure", None))


def uninstall() -> None:
    global _generation
    _generation += 1
    for name, method in _original_dispatch.items():
        setattr(_Manager, name, method)
    HttpStream._handle_event = _original_handle_event
    HttpStream.check_body_size = _original_check_body_size
    if _original_message_check is not None:
        http.MessageData.__post_init__ = _original_message_check


def close_upstream(flow) -> None:
    """Closes the flow's upstream connection: mitmproxy then fails the flow (error hook) and answers the client."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
    if handler is not None and flow.server_conn in handler.transports:
        handler.close_connection(flow.server_conn)
    else:
        flow.kill()
