"""Money per call, from config/prices.yaml (USD per million tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float


@dataclass(frozen=True)
class PriceTable:
    default: Price = Price(1.0, 4.0, 0.5)
    models: dict[str, Price] = field(default_factory=dict)

    def price(self, model: str) -> Price:
        """Exact name, else the longest listed prefix, else the default."""
        if model in self.models:
            return self.models[model]
        prefixes = [m for m in self.models if model.startswith(m)]
        return self.models[max(prefixes, key=len)] if prefixes else self.default

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        p = self.price(model)
        cached = min(cached_tokens, prompt_tokens)
        return ((prompt_tokens - cached) * p.input + cached * p.cached_input + completion_tokens * p.output) / 1e6
