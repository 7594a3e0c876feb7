"""Onboarding every runtime: the page the gateway serves at http://tollgate/, scripts/onboard, and the official Node
`openai` package through the proxy with the tested Node 20 snippet (npm install into a temp dir)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import certifi
import httpx
import pytest

from conftest import ALICE_KEY, ROOT
from harness import subprocess_env


def via_proxy(gateway, path: str) -> httpx.Response:
    return httpx.get(f"http://tollgate{path}", proxy=gateway.proxy, trust_env=False, timeout=10)


def test_the_gateway_serves_its_onboarding_page(gateway, fake):
    page = via_proxy(gateway, "/")
    assert page.status_code == 200 and "HTTPS_PROXY" in page.text and "NODE_EXTRA_CA_CERTS" in page.text
    ca = Path(gateway.ca).read_text()
    assert via_proxy(gateway, "/ca.pem").text == ca
    bundle = via_proxy(gateway, "/bundle.pem").text
    assert ca.strip() in bundle and bundle.count("BEGIN CERTIFICATE") == Path(certifi.where()).read_text().count(
        "BEGIN CERTIFICATE") + 1, "the system CAs and the gateway's"
    assert 'set -gx HTTPS_PROXY "http://127.0.0.1:' in via_proxy(gateway, "/setup/fish").text
    assert '$env:SSL_CERT_FILE = "$HOME\\.tollgate\\bundle.pem"' in via_proxy(gateway, "/setup/powershell").text
    assert not [r for r in fake.requests() if "tollgate" in r["headers"].get("Host", "")], "answered at the gate"


def test_a_python_client_trusting_the_bundle_reaches_the_gateway(gateway, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(via_proxy(gateway, "/bundle.pem").text)
    with httpx.Client(proxy=gateway.proxy, verify=str(bundle), trust_env=False) as client:
        answer = client.post("https://api.openai.com/v1/chat/completions", headers={"authorization": f"Bearer {ALICE_KEY}"},
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200


@pytest.mark.parametrize("shell, assignment", [("bash", "export HTTPS_PROXY="), ("zsh", "export SSL_CERT_FILE="),
                                                ("fish", "set -gx NODE_EXTRA_CA_CERTS"),
                                                ("powershell", "$env:REQUESTS_CA_BUNDLE =")])
def test_scripts_onboard_writes_the_bundle_and_prints_the_settings(gateway, tmp_path, shell, assignment):
    out = tmp_path / "dot-tollgate"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "onboard.py"), "--proxy", gateway.proxy,
                             "--confdir", str(gateway.confdir), "--shell", shell, "--out", str(out)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert assignment in result.stdout and "EnvHttpProxyAgent" in result.stdout
    assert (out / "gateway-ca.pem").read_text() == Path(gateway.ca).read_text()
    assert Path(gateway.ca).read_text().strip() in (out / "bundle.pem").read_text()


NODE_CLIENT = """
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";
setGlobalDispatcher(new EnvHttpProxyAgent());
import OpenAI from "openai";
const client = new OpenAI({ apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });
const answer = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi from node" }] });
console.log("ANSWER " + answer.choices[0].message.content);
"""


def test_the_node_openai_package_goes_through_the_proxy(gateway, fake, tmp_path):
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        if os.environ.get("CI"):
            pytest.fail("node and npm are required in CI")
        pytest.skip("node/npm not installed")
    work = tmp_path / "node-client"
    work.mkdir()
    (work / "package.json").write_text('{"type": "module", "private": true}')
    install = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "openai@6", "undici@6"], cwd=work,
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    (work / "client.mjs").write_text(NODE_CLIENT)
    env = {**subprocess_env(), "HTTPS_PROXY": gateway.proxy, "HTTP_PROXY": gateway.proxy,
           "NODE_EXTRA_CA_CERTS": gateway.ca, "OPENAI_API_KEY": ALICE_KEY}
    run = subprocess.run([node, "client.mjs"], cwd=work, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ANSWER tollgate answers" in run.stdout
    seen = [r for r in fake.requests() if "hi from node" in str(r["body"])][-1]
    assert seen["headers"]["Authorization"].startswith("Bearer sk-org-openai-")
