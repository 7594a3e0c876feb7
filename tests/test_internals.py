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
    assert internals.check_shapes() == {"events": [], "body_limit": []}


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
