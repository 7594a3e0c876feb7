"""The real gateway, with failures a test can trigger: a request carrying `x-test-fault: Step.hook` makes that
step's hook raise (with a secret in the exception's message, which must never be logged). `Stream.tap` breaks the
stream tap's answer editor instead. Run as `mitmdump -s tests/fault_gateway.py`."""

import functools
import inspect
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "addons"))

import gateway  # noqa: E402
from tollgate.flows import record_of  # noqa: E402
from tollgate.pipeline import Pipeline  # noqa: E402

SECRET_IN_MESSAGE = "sk-fault-secret-0123456789"


def _fault(flow, name: str) -> bool:
    return flow.request is not None and flow.request.headers.get("x-test-fault") == name


def _breaking(step, hook: str):
    original = getattr(step, hook)
    name = f"{type(step).__name__}.{hook}"
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def wrapper(flow):
            if _fault(flow, name):
                raise RuntimeError(f"injected fault {SECRET_IN_MESSAGE}")
            return await original(flow)
    else:
        @functools.wraps(original)
        def wrapper(flow):
            if _fault(flow, name):
                raise RuntimeError(f"injected fault {SECRET_IN_MESSAGE}")
            return original(flow)
    return wrapper


class _BrokenEditor:
    violated = None

    def event(self, raw):
        raise RuntimeError(f"injected tap fault {SECRET_IN_MESSAGE}")

    def end(self):
        return []


def _with_broken_tap(plain, flow):  # not named like a hook: mitmproxy calls a script's module-level hooks
    plain(flow)
    record = record_of(flow)
    if _fault(flow, "Stream.tap") and record is not None and record.tap is not None:
        record.tap.editor = _BrokenEditor()


pipeline = gateway.addons[1]
for step in pipeline.steps:
    for hook in ("requestheaders", "request", "responseheaders", "response", "error"):
        if callable(getattr(step, hook, None)):
            setattr(step, hook, _breaking(step, hook))
    if type(step).__name__ == "Stream":
        step.responseheaders = functools.partial(_with_broken_tap, step.responseheaders)

addons = [gateway.settings, Pipeline(*pipeline.steps)]
