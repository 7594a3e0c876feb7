"""Provider specs: one row of data per provider type. Adding a provider is adding a row."""

from __future__ import annotations

from dataclasses import dataclass

from .dialects import ANTHROPIC, GEMINI, OPENAI

BEARER = ("authorization", "Bearer ")

# Every header a client may put an API key in; all of them are removed before a request leaves.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


@dataclass(frozen=True)
class ProviderSpec:
    type: str
    hosts: tuple[str, ...]           # default hosts ("host" means port 443, or "host:port")
    base_url: str                    # where OpenAI-wire endpoints live, e.g. https://api.openai.com/v1
    dialects: tuple[str, ...]        # wire formats it speaks
    auth: dict[str, tuple[str, str]]  # dialect -> (header, value prefix) used to send the org key
    deployment_paths: bool = False   # Azure: model is the deployment in the path, api-version in the query


def _openai_like(type_: str, hosts: tuple[str, ...], base_url: str) -> ProviderSpec:
    return ProviderSpec(type_, hosts, base_url, (OPENAI,), {OPENAI: BEARER})


SPECS: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        _openai_like("openai", ("api.openai.com",), "https://api.openai.com/v1"),
        ProviderSpec("azure-openai", (), "https://{host}/openai", (OPENAI,), {OPENAI: ("api-key", "")},
                     deployment_paths=True),
        ProviderSpec("anthropic", ("api.anthropic.com",), "https://api.anthropic.com/v1", (ANTHROPIC,),
                     {ANTHROPIC: ("x-api-key", "")}),
        # Gemini: native generateContent plus its OpenAI-compatible endpoint, which takes a Bearer key.
        ProviderSpec("gemini", ("generativelanguage.googleapis.com",),
                     "https://generativelanguage.googleapis.com/v1beta/openai", (GEMINI, OPENAI),
                     {GEMINI: ("x-goog-api-key", ""), OPENAI: BEARER}),
        _openai_like("qwen", ("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com"),
                     "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        _openai_like("deepseek", ("api.deepseek.com",), "https://api.deepseek.com/v1"),
        _openai_like("mistral", ("api.mistral.ai",), "https://api.mistral.ai/v1"),
        _openai_like("groq", ("api.groq.com",), "https://api.groq.com/openai/v1"),
        _openai_like("openrouter", ("openrouter.ai",), "https://openrouter.ai/api/v1"),
        _openai_like("xai", ("api.x.ai",), "https://api.x.ai/v1"),
        # Self-hosted vLLM / Ollama / LM Studio: hosts come from the config, often plain HTTP.
        _openai_like("openai-compatible", (), "http://{host}/v1"),
    )
}


def normalize_host(host: str) -> str:
    """One spelling per host name: lower case, no brackets, no trailing dot ("API.OpenAI.com." is api.openai.com)."""
    return host.strip().strip("[]").rstrip(".").lower()


def split_host(hostport: str, default_port: int = 443) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit() and not host.endswith(":"):  # not the end of a bare IPv6 address
        return normalize_host(host), int(port)
    return normalize_host(hostport), default_port
