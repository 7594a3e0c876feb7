"""The mitmproxy internals tollgate patches: checked at load; what can degrade does, what guards a key refuses."""

import logging

import pytest
from mitmproxy.proxy.layers.http import HttpStream

from tollgate import internals


@pytest.fixture
def pristine():
    yield
    internals.uninstall()


def test_this_mitmproxy_has_every_shape_tollgate_relies_on():
    assert internals.check_shapes() == {"events": [], "body_limit": [], "debug_checks": []}


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
