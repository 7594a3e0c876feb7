"""What a developer needs to use the gateway, as text: a trust bundle (the system's CAs plus the gateway's, so other
HTTPS sites keep working) and the exact settings for each runtime, in each shell's syntax."""

from __future__ import annotations

SHELLS = ("bash", "zsh", "fish", "powershell")

# Runtime -> the variables it reads (the bundle replaces a runtime's whole trust store, so it must hold the system CAs).
VARIABLES = [
    ("proxy (curl, Python, Go, pip, git, newer Node)", [("HTTPS_PROXY", "{proxy}"), ("HTTP_PROXY", "{proxy}"),
                                                         ("NO_PROXY", "localhost,127.0.0.1")]),
    ("Python (openai, anthropic, httpx, requests), pip", [("SSL_CERT_FILE", "{bundle}"),
                                                          ("REQUESTS_CA_BUNDLE", "{bundle}"),
                                                          ("PIP_CERT", "{bundle}")]),
    ("curl, git, OpenSSL tools", [("CURL_CA_BUNDLE", "{bundle}"), ("GIT_SSL_CAINFO", "{bundle}")]),
    ("Node (adds the gateway CA to Node's own list)", [("NODE_EXTRA_CA_CERTS", "{ca}"),
                                                       ("NODE_USE_ENV_PROXY", "1")]),
]

NODE_20 = """// Node 20 (the openai package ignores HTTPS_PROXY; Node >= 22.21 / 24 honours NODE_USE_ENV_PROXY=1 instead):
//   npm install openai undici
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";
setGlobalDispatcher(new EnvHttpProxyAgent());   // every fetch, the openai SDK's included, goes through HTTPS_PROXY
import OpenAI from "openai";
const client = new OpenAI({ apiKey: process.env.OPENAI_API_KEY });   // your gateway key
"""

JAVA = ("Java: -Dhttps.proxyHost=HOST -Dhttps.proxyPort=PORT, and import the CA: keytool -importcert -alias tollgate "
        "-file {ca} -cacerts -storepass changeit")
GO = "Go: reads HTTPS_PROXY and SSL_CERT_FILE (set above) by itself."


def bundle(system_pem: str, gateway_pem: str) -> str:
    """The system's CAs followed by the gateway's: trust both, so tunnelled sites keep their real certificates."""
    return system_pem.rstrip("\n") + "\n\n# tollgate gateway CA\n" + gateway_pem.strip() + "\n"


def _assign(shell: str, name: str, value: str) -> str:
    """Double quotes: $HOME in a path expands in every one of these shells."""
    if shell == "fish":
        return f'set -gx {name} "{value}"'
    if shell == "powershell":
        return f'$env:{name} = "{value}"'
    return f'export {name}="{value}"'


def home_path(shell: str, name: str) -> str:
    """Where the downloaded files go on a developer machine, in the shell's spelling."""
    return f"$HOME\\.tollgate\\{name}" if shell == "powershell" else f"$HOME/.tollgate/{name}"


def settings(shell: str, proxy: str, bundle_path: str, ca_path: str) -> str:
    """The settings block for one shell (bash and zsh share theirs)."""
    if shell not in SHELLS:
        raise ValueError(f"unknown shell {shell!r} (one of: {', '.join(SHELLS)})")
    comment = "#"
    lines = []
    for runtime, variables in VARIABLES:
        lines.append(f"{comment} {runtime}")
        for name, value in variables:
            lines.append(_assign(shell, name, value.format(proxy=proxy, bundle=bundle_path, ca=ca_path)))
    lines.append(f"{comment} your personal gateway key, where the SDKs look for an API key")
    lines.append(_assign(shell, "OPENAI_API_KEY", "tg-..."))
    lines.append(_assign(shell, "ANTHROPIC_API_KEY", "tg-..."))
    return "\n".join(lines) + "\n"


def notes(ca_path: str) -> str:
    return "\n".join([GO, JAVA.format(ca=ca_path), "", NODE_20])
