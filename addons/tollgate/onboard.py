"""The onboarding page: through the proxy, http://tollgate/ gives a developer the gateway CA, a trust bundle (system
CAs + gateway CA) and the settings for every runtime in their shell's syntax. Answered at the gate; nothing leaves."""

from __future__ import annotations

import html
from pathlib import Path

import certifi
from mitmproxy import ctx, http

from tollgate.core import onboarding
from tollgate.core.providers import normalize_host

HOST = "tollgate"


class Onboard:
    def requestheaders(self, flow):
        if normalize_host(flow.request.host) != HOST or flow.request.scheme != "http":
            return
        path = flow.request.path.split("?", 1)[0]
        ca_path = Path(ctx.options.confdir).expanduser() / "mitmproxy-ca-cert.pem"
        ca = ca_path.read_text()
        proxy = "http://{}:{}".format(*flow.client_conn.sockname[:2])
        if path == "/ca.pem":
            flow.response = http.Response.make(200, ca, {"content-type": "application/x-pem-file"})
        elif path == "/bundle.pem":
            bundle = onboarding.bundle(Path(certifi.where()).read_text(), ca)
            flow.response = http.Response.make(200, bundle, {"content-type": "application/x-pem-file"})
        elif (shell := path.removeprefix("/setup/")) in onboarding.SHELLS:
            text = onboarding.settings(shell, proxy, onboarding.home_path(shell, "bundle.pem"),
                                       onboarding.home_path(shell, "gateway-ca.pem"))
            flow.response = http.Response.make(200, text, {"content-type": "text/plain; charset=utf-8"})
        else:
            flow.response = http.Response.make(200, _page(proxy), {"content-type": "text/html; charset=utf-8"})


def _page(proxy: str) -> str:
    blocks = "".join(
        f"<h3>{shell}</h3><pre>{html.escape(onboarding.settings(shell, proxy, onboarding.home_path(shell, 'bundle.pem'), onboarding.home_path(shell, 'gateway-ca.pem')))}</pre>"
        for shell in onboarding.SHELLS)
    fetch = (f"mkdir -p ~/.tollgate && curl -sx {proxy} http://tollgate/ca.pem -o ~/.tollgate/gateway-ca.pem "
             f"&& curl -sx {proxy} http://tollgate/bundle.pem -o ~/.tollgate/bundle.pem")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tollgate onboarding</title></head><body>"
            f"<h1>Using the tollgate LLM gateway</h1><p>1. Get the gateway CA and a trust bundle (your system's CAs "
            f"plus the gateway's, so every other HTTPS site keeps working):</p><pre>{html.escape(fetch)}</pre>"
            f"<p><a href='/ca.pem'>ca.pem</a> · <a href='/bundle.pem'>bundle.pem</a></p>"
            f"<p>2. Set these (or <code>eval \"$(curl -sx {proxy} http://tollgate/setup/bash)\"</code>):</p>{blocks}"
            f"<h3>Node 20, Go, Java</h3><pre>{html.escape(onboarding.notes('~/.tollgate/gateway-ca.pem'))}</pre>"
            f"</body></html>")
