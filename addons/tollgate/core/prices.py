"""Money per call: local overrides (config/prices.yaml) first, then the maintained `genai-prices` catalogue (tiers for
long contexts, cache reads and writes, time-of-day prices), then the `default` price, which is counted as unpriced."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from decimal import Decimal
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from genai_prices import Usage, data_snapshot
from .schema import ConfigError, mapping, read_yaml, string

# tollgate's provider types under their catalogue names; the others (qwen, self-hosted) are found by model name alone.
CATALOG_PROVIDER = {"openai": "openai", "azure-openai": "azure", "anthropic": "anthropic", "gemini": "google",
                    "deepseek": "deepseek", "mistral": "mistral", "groq": "groq", "openrouter": "openrouter",
                    "xai": "x-ai"}

OVERRIDE, CATALOG, DEFAULT = "override", "catalog", "default"  # how a call was priced (ledger `priced_by`)


@dataclass(frozen=True)
class Price:
    """A local price in USD per million tokens."""
    input: float
    output: float
    cached_input: float       # prompt tokens read from the provider's cache
    cache_write: float = -1   # prompt tokens written to the provider's cache; -1: as `input`

    def cost(self, prompt: int, output: int, cached: int, written: int) -> float:
        written = min(written, prompt)
        cached = min(cached, prompt - written)
        plain = prompt - cached - written
        write = self.input if self.cache_write < 0 else self.cache_write
        return (plain * self.input + cached * self.cached_input + written * write + output * self.output) / 1e6


class Priced(NamedTuple):
    usd: float
    by: str  # override | catalog | default


@functools.lru_cache(maxsize=2048)  # model names come from clients: bounded
def _catalog_model(provider_type: str, model: str):
    """(provider, model) entries of the catalogue for a call, or None."""
    snapshot = data_snapshot.get_snapshot()
    wanted = CATALOG_PROVIDER.get(provider_type)
    providers = [p for p in snapshot.providers if p.id == wanted] if wanted else []
    for provider in providers:  # the provider's own list, then the model's maker wherever it is sold
        if entry := provider.find_model(model.lower(), all_providers=snapshot.providers):
            return provider, entry
    for provider in snapshot.providers:
        if provider.model_match is not None and provider.model_match.is_match(model.lower()):
            if entry := provider.find_model(model.lower(), all_providers=snapshot.providers):
                return provider, entry
    return None


_TOKEN_PRICES = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "output_mtok")
_rates: dict[int, tuple | None] = {}  # id(ModelPrice) -> rates; the catalogue's price objects live as long as it


def _linear_rates(price) -> tuple[float, float, float, float] | None:
    """(input, cache read, cache write, output) USD per million tokens when the price has no tiers and prices
    nothing but text tokens, else None (the catalogue computes those calls itself). tests/test_prices.py holds
    this to the catalogue's own results for every model in it."""
    key = id(price)
    if key not in _rates:
        values = {name: getattr(price, name) for name in _TOKEN_PRICES}
        others = {name for name, value in price.__dict__.items() if value is not None} - set(_TOKEN_PRICES)
        if values["input_mtok"] is None or not all(isinstance(v, Decimal | None) for v in values.values()) or (
                others - _IGNORED):
            _rates[key] = None
        else:
            base = float(values["input_mtok"])
            _rates[key] = tuple(base if values[name] is None else float(values[name]) for name in _TOKEN_PRICES[:3]) + (
                float(values["output_mtok"] or 0),)
    return _rates[key]


_IGNORED = {"web_searches_kcount", "storage_searches_kcount"}  # tools a chat call's usage never reports


@dataclass(frozen=True)
class PriceTable:
    default: Price = Price(1.0, 4.0, 0.5)
    models: dict[str, Price] = field(default_factory=dict)  # local overrides: exact name or prefix
    catalog: bool = True                                    # consult genai-prices
    _how: dict = field(default_factory=dict, compare=False, repr=False)  # (type, model, minute) -> how priced

    def override(self, model: str) -> Price | None:
        """Exact name, else the longest listed prefix."""
        if model in self.models:
            return self.models[model]
        prefixes = [m for m in self.models if model.startswith(m)]
        return self.models[max(prefixes, key=len)] if prefixes else None

    def priced(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
               cache_write_tokens: int = 0, provider_type: str = "", at: float | None = None) -> Priced:
        """prompt_tokens counts every input token, cached and cache-written ones included."""
        at = time.time() if at is None else at
        key = (provider_type, model, int(at // 60))  # how a model is priced, found once a minute (twice a call)
        if (how := self._how.get(key)) is None:
            if len(self._how) >= 4096:  # model names come from clients: bounded
                self._how.clear()
            how = self._how[key] = self._find(model, provider_type, at)
        kind, price = how
        if kind == OVERRIDE:
            return Priced(price.cost(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens), OVERRIDE)
        written = min(cache_write_tokens, prompt_tokens)
        cached = min(cached_tokens, prompt_tokens - written)
        if kind == CATALOG:  # linear rates: the common case, ~50x cheaper than the catalogue's own computation
            plain = prompt_tokens - cached - written
            return Priced((plain * price[0] + cached * price[1] + written * price[2]
                           + completion_tokens * price[3]) / 1e6, CATALOG)
        if kind == "tiered":
            provider, entry = price
            usage = Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens, cache_read_tokens=cached,
                          cache_write_tokens=written)
            try:
                return Priced(float(entry.calc_price(usage, provider, genai_request_timestamp=datetime.fromtimestamp(
                    at, UTC)).total_price), CATALOG)
            except (ValueError, ArithmeticError):  # a price the catalogue cannot compute for this usage
                pass
        return Priced(self.default.cost(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens), DEFAULT)

    def _find(self, model: str, provider_type: str, at: float) -> tuple[str, object]:
        """(OVERRIDE, Price) | (CATALOG, linear rates) | ("tiered", (provider, entry)) | (DEFAULT, None)."""
        if (local := self.override(model)) is not None:
            return OVERRIDE, local
        found = _catalog_model(provider_type, model) if self.catalog and model else None
        if found is None:
            return DEFAULT, None
        provider, entry = found
        if (rates := _linear_rates(entry.get_prices(datetime.fromtimestamp(at, UTC)))) is not None:
            return CATALOG, rates
        return "tiered", found


DEFAULT_PRICES = Path(__file__).resolve().parents[3] / "config" / "prices.yaml"


def _price(node, path: str) -> Price:
    names = ("input", "output", "cached_input", "cache_write")
    node = mapping(node, path, set(names))
    values = {}
    for name in names:
        value = node.get(name, node.get("input") if name == "cached_input" else -1 if name == "cache_write" else None)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (value < 0 and name != "cache_write"):
            raise ConfigError(f"{path}.{name}: expected a price in USD per million tokens, got {value!r}")
        values[name] = float(value)
    return Price(**values)


def parse_prices(value, base_dir) -> PriceTable:
    """The local price file: `prices: PATH` (relative to the config file), default config/prices.yaml."""
    path = Path(base_dir or ".") / string(value, "prices") if value is not None else DEFAULT_PRICES
    if value is None and not path.is_file():
        return PriceTable()
    data = mapping(read_yaml(path), str(path), {"default", "models", "catalog"})
    models = mapping(data.get("models"), f"{path}: models", set(map(str, data.get("models") or {})))
    catalog = data.get("catalog", True)
    if not isinstance(catalog, bool):
        raise ConfigError(f"{path}: catalog: expected true or false, got {catalog!r}")
    return PriceTable(
        default=_price(data["default"], f"{path}: default") if data.get("default") else PriceTable().default,
        models={str(m): _price(node, f"{path}: models.{m}") for m, node in models.items()},
        catalog=catalog,
    )
