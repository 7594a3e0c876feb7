"""Access decisions on plain data: is a key usable, may a consumer call a model at a provider, does a key look like
a real provider key, is a host a known AI provider that the organisation has not approved."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timezone
from fnmatch import fnmatchcase

from .config import Config, Consumer
from .providers import normalize_host

# Prefixes of real provider keys: a client sending one bypasses the gateway's accounting, so it is told to use its
# gateway key instead (unless unknown_keys: passthrough).
PROVIDER_KEY = re.compile(r"^(sk-|sk_|AIza|gsk_|xai-|pplx-|r8_|hf_|csk-|fw_|nvapi-)")



def key_problem(consumer: Consumer, now: datetime | None = None) -> str:
    """Why a known key cannot be used, or '' if it can."""
    if consumer.disabled:
        return f"the gateway key of {consumer.name} is disabled"
    now = now or datetime.now(timezone.utc)
    if consumer.expires is not None and now >= consumer.expires:
        return f"the gateway key of {consumer.name} expired on {consumer.expires:%Y-%m-%d}"
    return ""


def access_problem(config: Config, consumer: Consumer, model: str, provider: str, endpoint: str = "") -> str:
    """Why the consumer may not make this call, or '' if it may. The consumer's own lists narrow its group's: both
    must allow. `models` governs calls that name a model (a multipart form's `model` field counts); `endpoints`
    (path globs) governs calls that name none (files, batches, uploads, fine-tuning, assistants, vector stores: a
    batch can name any model inside its file). Without `endpoints`, a scope that restricts models allows no such
    call, and a scope that restricts nothing allows every one."""
    group = config.groups.get(consumer.group)
    for scope, rules in (("group " + consumer.group, group), ("consumer " + consumer.name, consumer)):
        if rules is None:
            continue
        if rules.providers is not None and provider not in rules.providers:
            return f"{scope} may not use provider {provider}"
        if model:
            if rules.models is not None and not any(fnmatchcase(model, p) for p in rules.models):
                return f"{scope} may not use model {model}"
        elif rules.endpoints is not None:
            if not any(fnmatchcase(endpoint, p) for p in rules.endpoints):
                return f"{scope} may not call {endpoint} (it names no model; an operator can grant it under endpoints)"
        elif rules.models is not None:
            return (f"{scope} may use only the models it is given, and {endpoint or 'this call'} names none "
                    f"(an operator can grant it under endpoints)")
    return ""


def looks_like_provider_key(key: str) -> bool:
    return bool(PROVIDER_KEY.match(key))


def proxy_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of a Proxy-Authorization: Basic header."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):  # binascii.Error, and non-ASCII text
        return None
    return (user, password) if sep else None


def user_id(consumer_name: str) -> str:
    """A stable pseudonymous id for the provider's abuse tracking (OpenAI's `user`): no name leaves the company."""
    return "tg-" + hashlib.sha256(f"tollgate-user:{consumer_name}".encode()).hexdigest()[:24]


def unapproved_entry(known: tuple[str, ...], host: str, path: str) -> str:
    """The known-AI-host entry this request matches, or ''. The caller has checked it is not a configured provider."""
    host = normalize_host(host)
    for entry in known:
        entry_host, _, prefix = entry.partition("/")
        if entry_host.startswith("*."):
            hit = host.endswith(entry_host[1:])
        elif "*" in entry_host:
            hit = fnmatchcase(host, entry_host)
        else:
            hit = host == entry_host
        if hit and (not prefix or path.startswith("/" + prefix)):
            return entry
    return ""


def host_pattern(entry: str) -> str:
    """The host part of an entry as an allow_hosts-style 'host:443' pattern ('*.' kept for the caller to expand)."""
    return entry.partition("/")[0] + ":443"
