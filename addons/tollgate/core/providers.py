"""Provider specs: one row of data per provider type. Adding a provider is adding a row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .dialects import ANTHROPIC, GEMINI, OPENAI
from .schema import ConfigError, choice, list_of, mapping, string

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


@dataclass(frozen=True)
class Provider:
    name: str
    spec: ProviderSpec
    hosts: tuple[str, ...]        # "host:port", lower case; "*.suffix:port" matches any subdomain
    keys: tuple[str, ...]
    base_url: str                 # scheme://host[:port]/prefix of OpenAI-wire endpoints
    upstream: str = ""            # if set, traffic goes to this base URL instead (tests, private mirrors)
    api_version: str = ""         # Azure only
    keyless: bool = False         # `auth: none`: a self-hosted server that takes no key; others need a key

    @property
    def configured(self) -> bool:
        """Can calls go out? A provider without an org key answers 503 instead of forwarding without one."""
        return bool(self.keys) or self.keyless


def parse_provider(name: str, node, path: str, warnings: list[str]) -> Provider:
    node = mapping(node, path, {"type", "keys", "hosts", "upstream", "base_url", "api_version", "auth"})
    type_ = string(node.get("type"), f"{path}.type")
    spec = SPECS.get(type_)
    if spec is None:
        raise ConfigError(f"{path}.type: unknown provider type {type_!r} (known: {', '.join(sorted(SPECS))})")
    keys = []
    for i, key in enumerate(list_of(node.get("keys"), f"{path}.keys")):
        key = string(key, f"{path}.keys[{i}]", required=False)
        if key:  # an unset ${VAR} leaves an empty key: dropped, with the warning already recorded
            keys.append(key)
    hosts = [string(h, f"{path}.hosts[{i}]") for i, h in enumerate(list_of(node.get("hosts"), f"{path}.hosts"))]
    hosts = hosts or list(spec.hosts)
    if not hosts:
        raise ConfigError(f"{path}.hosts: provider type {type_!r} has no default host; list its hosts")
    normalized = tuple("{}:{}".format(*split_host(h)) for h in hosts)
    base_url = string(node.get("base_url"), f"{path}.base_url", required=False) or spec.base_url.format(
        host=hosts[0].lstrip("*.")
    )
    upstream = string(node.get("upstream"), f"{path}.upstream", required=False)
    for key_name, url in (("base_url", base_url), ("upstream", upstream)):
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{path}.{key_name}: expected an http(s) URL, got {url!r}")
    api_version = string(node.get("api_version"), f"{path}.api_version", required=False)
    if spec.deployment_paths and not api_version:
        api_version = "2024-10-21"
    keyless = choice(node.get("auth", "key"), f"{path}.auth", ("key", "none")) == "none"
    if keyless and keys:
        raise ConfigError(f"{path}.auth: 'none' means the provider takes no key, but keys are configured")
    if not keys and not keyless:
        warnings.append(f"{path}.keys: no org key configured; calls to {name} are refused with 503 "
                        f"provider_not_configured (a self-hosted server without keys says auth: none)")
    return Provider(name, spec, normalized, tuple(keys), base_url.rstrip("/"), upstream.rstrip("/"), api_version,
                    keyless)


KNOWN_AI_HOSTS_FILE = Path(__file__).resolve().parents[3] / "config" / "known-ai-hosts.txt"


def load_known_hosts(path: Path = KNOWN_AI_HOSTS_FILE) -> tuple[str, ...]:
    """Host entries ('host', '*.suffix', or 'host/path-prefix'), one a line, '#' comments."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ()
    return tuple(line.split("#", 1)[0].strip().lower() for line in lines if line.split("#", 1)[0].strip())
