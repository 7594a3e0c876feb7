"""The mitmproxy internals tollgate patches: checked at load; what can degrade does, what guards a key refuses."""

import logging

import pytest
from mitmproxy.proxy.layers.http import HttpStream

from tollgate import internals


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def pristine():
    yield
    internals.uninstall()


def test_this_mitmproxy_has_every_shape_tollgate_relies_on():
    assert internals.check_shapes() == {"events": [], "body_limit": [], "debug_checks": [], "dispatch": []}


def test_a_changed_body_limit_internal_is_logged_once_and_mitmproxy_limits_instead(pristine, caplog):
    with caplog.at_level(logging.ERROR, logger="tollgate"):
        internals.install({"events": [], "body_limit": ["HttpStream.check_body_size(self, request) changed"]})
    assert HttpStream.check_body_size is internals._original_check_body_size  # left alone
    assert HttpStream._handle_event is internals._handle_event
    assert [r.message for r in caplog.records if "body_size_limit applies" in r.message] != []


def test_without_the_event_handler_the_gateway_refuses_to_start(pristine):
    with pytest.raises(RuntimeError, match="not supported: HttpStream._handle_event is no longer a generator"):
        internals.install({"events": ["HttpStream._handle_event is no longer a generator"], "body_limit": []})
    assert HttpStream._handle_event is internals._original_handle_event  # nothing patched, nothing half-done


def test_mitmproxy_builds_requests_and_responses_without_its_debug_type_checks(pristine):
    """They cost ~50 µs a message and left every request and response, body included, in a reference cycle."""
    import gc
    import weakref

    from mitmproxy import http

    internals.install()
    gc.collect()
    gc.disable()
    try:
        response = http.Response.make(200, b"x" * 1000, {"content-type": "application/json"})
        gone = weakref.ref(response.data)
        del response
        assert gone() is None  # freed at once, not by the collector
    finally:
        gc.enable()
    internals.uninstall()
    with pytest.raises(TypeError):  # mitmproxy's own check is back once the gateway unloads
        http.Response(b"HTTP/1.1", 200, b"OK", http.Headers(), b"", None, "not a time", None)


def test_a_message_check_that_does_more_than_check_stays_on(pristine, caplog):
    from mitmproxy import http

    with caplog.at_level(logging.WARNING, logger="tollgate"):
        internals.install({"events": [], "body_limit": [], "debug_checks": ["MessageData.__post_init__ does more"]})
    assert http.MessageData.__post_init__ is internals._original_message_check
    assert [r.message for r in caplog.records if "message checks stay on" in r.message] != []


class _Calls:
    """An addon that notes each hook it gets; `fails` makes its request hook raise, `halts` stop the event."""

    def __init__(self, name, log, children=(), fails=False, halts=False, asynchronous=False):
        self.name, self.log, self.addons, self.fails, self.halts = name, log, list(children), fails, halts
        if asynchronous:
            self.request = self._async_request

    def request(self, flow):
        self._note()

    async def _async_request(self, flow):
        self._note()

    def _note(self):
        self.log.append(self.name)
        if self.fails:
            raise ValueError(f"{self.name} broke")
        if self.halts:
            from mitmproxy.exceptions import AddonHalt
            raise AddonHalt()


def _chain(log):
    return [_Calls("a", log, [_Calls("a1", log, fails=True), _Calls("a2", log)]),
            _Calls("b", log, [_Calls("b1", log, asynchronous=True)]),
            _Calls("c", log, halts=True), _Calls("d", log)]


async def _dispatch(patched: bool, caplog) -> tuple[list[str], list[str]]:
    from mitmproxy.proxy.layers.http._hooks import HttpRequestHook
    from mitmproxy.test import taddons, tflow

    log = []
    if patched:
        internals.install()
        from mitmproxy.addonmanager import AddonManager
        assert AddonManager.trigger_event is internals._trigger_event
    with taddons.context() as tctx:
        tctx.master.addons.add(*_chain(log))
        caplog.clear()
        for _ in range(2):  # the second time over the kept walk
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    internals.uninstall()
    return log, [r.getMessage() for r in caplog.records if "Addon error" in r.getMessage()]


@pytest.mark.anyio
async def test_the_kept_dispatch_calls_what_mitmproxys_own_calls_in_its_order_failures_and_halts_included(caplog):
    """Children in order, sync and async hooks; a failing child skips its siblings and is logged as mitmproxy logs
    it, the next top-level addon still runs; AddonHalt ends the event."""
    own = await _dispatch(False, caplog)
    kept = await _dispatch(True, caplog)
    assert own == (["a", "a1", "b", "b1", "c"] * 2, ["Addon error: a1 broke"] * 2)
    assert kept == own


@pytest.mark.anyio
async def test_an_addon_added_removed_or_reordered_after_a_dispatch_takes_part_in_the_next(pristine):
    from mitmproxy.proxy.layers.http._hooks import HttpRequestHook
    from mitmproxy.test import taddons, tflow

    log = []
    internals.install()
    with taddons.context() as tctx:
        manager = tctx.master.addons
        first, second = _Calls("first", log), _Calls("second", log)
        manager.add(first)
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
        manager.add(second)
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
        manager.remove(first)
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
        first.addons = [_Calls("child", log)]  # a parent's own list, as mitmproxy's ScriptLoader keeps its scripts
        manager.remove(second)
        manager.add(first)
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
    assert log == ["first", "first", "second", "second", "first", "child"]


@pytest.mark.anyio
async def test_children_reordered_by_configure_take_part_in_their_new_order_and_log_lines_keep_the_walk(pristine):
    """mitmproxy's ScriptLoader reorders its scripts in configure: a kept walk goes then. A log line also reaches the
    addons through AddonManager.trigger (once per line): it changes no addon, so the walk is kept."""
    from mitmproxy.hooks import ConfigureHook
    from mitmproxy.log import AddLogHook, LogEntry
    from mitmproxy.proxy.layers.http._hooks import HttpRequestHook
    from mitmproxy.test import taddons, tflow

    log = []
    internals.install()
    with taddons.context() as tctx:
        manager = tctx.master.addons
        parent = _Calls("parent", log, [_Calls("x", log), _Calls("y", log)])
        manager.add(parent)
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
        walks = manager._tollgate_walks
        manager.trigger(AddLogHook(LogEntry("a log line", "info")))
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
        kept_over_log_line = manager._tollgate_walks is walks
        parent.addons.reverse()
        manager.trigger(ConfigureHook({"scripts"}))
        await manager.trigger_event(HttpRequestHook(tflow.tflow()))
    assert kept_over_log_line
    assert log == ["parent", "x", "y", "parent", "x", "y", "parent", "y", "x"]


def test_a_changed_addon_dispatch_is_left_to_mitmproxy_and_logged(pristine, caplog):
    from mitmproxy.addonmanager import AddonManager

    with caplog.at_level(logging.WARNING, logger="tollgate"):
        internals.install({"events": [], "body_limit": [], "debug_checks": [],
                           "dispatch": ["AddonManager.trigger_event changed"]})
    assert AddonManager.trigger_event is internals._original_dispatch["trigger_event"]
    assert [r.message for r in caplog.records if "addon dispatch stays as it is" in r.message] != []
