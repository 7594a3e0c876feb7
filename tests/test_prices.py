"""Prices: local overrides, then the genai-prices catalogue, then `default` (counted as unpriced)."""

import pytest

from tollgate.core.config import ConfigError, load_config
from tollgate.core.prices import CATALOG, DEFAULT, OVERRIDE, PriceTable

M = 1_000_000


def usd(model, prompt, output, cached=0, written=0, provider="", table=PriceTable()):
    return table.priced(model, prompt, output, cached, written, provider)


@pytest.mark.parametrize("model, provider, input_usd, output_usd", [
    ("o3-pro", "openai", 20, 80),                        # the old prefix table said o3: 10x too cheap
    ("claude-opus-4-5", "anthropic", 5, 25),             # the old table said claude-opus-4: 3x too dear
    ("gemini-2.5-flash-lite", "gemini", 0.10, 0.40),     # was priced as gemini-2.5-flash
    ("claude-3-7-sonnet-20250219", "anthropic", 3, 15),  # fell to `default`
    ("o3-mini", "openai", 1.10, 4.40),
    ("gpt-4o-2024-08-06", "openai", 2.50, 10),           # dated names find their model
    ("gpt-4o", "azure-openai", 2.50, 10),                # another seller of the same model
])
def test_the_catalogue_prices_what_the_prefix_table_got_wrong(model, provider, input_usd, output_usd):
    assert usd(model, 100_000, 0, provider=provider).usd == pytest.approx(input_usd / 10)
    assert usd(model, 0, 100_000, provider=provider).usd == pytest.approx(output_usd / 10)
    assert usd(model, 1, 1, provider=provider).by == CATALOG


def test_anthropic_cache_reads_and_writes_are_priced_apart():
    # 100k prompt tokens: 50k read from the cache ($0.30/M), 25k written to it ($3.75/M), 25k plain ($3/M)
    priced = usd("claude-sonnet-4-5", 100_000, 0, cached=50_000, written=25_000, provider="anthropic")
    assert priced.usd == pytest.approx(0.05 * 0.30 + 0.025 * 3.75 + 0.025 * 3)


def test_long_contexts_cost_the_higher_tier():
    short = usd("gemini-2.5-pro", 100_000, 0, provider="gemini").usd
    long = usd("gemini-2.5-pro", 300_000, 0, provider="gemini").usd
    assert short == pytest.approx(0.125) and long == pytest.approx(0.75)  # $1.25/M up to 200k, $2.50/M above


def test_local_overrides_win_by_exact_name_then_longest_prefix(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "default: {input: 1, output: 2}\n"
        "models:\n"
        "  gpt-4o: {input: 2, output: 8, cached_input: 1}\n"   # a negotiated price
        "  gpt-4o-mini: {input: 0.1, output: 0.5}\n"
        "  claude-sonnet-4-5: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75}\n")
    (tmp_path / "g.yaml").write_text("providers: {openai: {type: openai}}\nprices: p.yaml\n")
    table = load_config(tmp_path / "g.yaml", env={}).prices
    assert usd("gpt-4o-2024-08-06", M, 0, table=table) == (2.0, OVERRIDE)
    assert usd("gpt-4o-mini-2024-07-18", M, M, table=table).usd == pytest.approx(0.6)
    assert usd("gpt-4o", M, 0, cached=M // 2, table=table).usd == pytest.approx(1.5)
    assert usd("claude-sonnet-4-5", M, 0, cached=M // 2, written=M // 4, table=table).usd == pytest.approx(
        0.5 * 0.3 + 0.25 * 3.75 + 0.25 * 3)
    assert usd("gpt-5", M, 0, provider="openai", table=table) == (1.25, CATALOG)  # not overridden
    assert usd("mystery-model", M, M, table=table) == (3.0, DEFAULT)


def test_the_shipped_file_prices_what_the_catalogue_lacks():
    config = load_config("config/gateway.yaml", env={"ALICE_KEY": "k"})
    assert config.priced("qwen", "qwen-plus", M, M) == (1.6, OVERRIDE)
    assert config.priced("openai", "gpt-4o-mini", M, M).by == CATALOG


def test_catalog_false_prices_from_the_file_alone(tmp_path):
    (tmp_path / "p.yaml").write_text("catalog: false\ndefault: {input: 1, output: 1}\n")
    (tmp_path / "g.yaml").write_text("providers: {openai: {type: openai}}\nprices: p.yaml\n")
    table = load_config(tmp_path / "g.yaml", env={}).prices
    assert usd("gpt-4o", M, 0, provider="openai", table=table) == (1.0, DEFAULT)


@pytest.mark.parametrize("text, error", [
    ("models: {x: {input: -1}}\n", "models.x.input: expected a price"),
    ("models: {x: {input: 1, output: 1, cache_writes: 2}}\n", "cache_write"),  # did you mean
    ("catalog: maybe\n", "catalog: expected true or false"),
])
def test_bad_price_files_are_refused(tmp_path, text, error):
    (tmp_path / "p.yaml").write_text(text)
    (tmp_path / "g.yaml").write_text("providers: {openai: {type: openai}}\nprices: p.yaml\n")
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path / "g.yaml", env={})


def test_the_fast_path_agrees_with_the_catalogue_for_every_model():
    """Untiered prices are computed from the catalogue's rates directly (the catalogue's own computation costs ~50 us
    a call); for every model of every provider, both give the same dollars."""
    import random
    from datetime import UTC, datetime

    from genai_prices import Usage, data_snapshot

    from tollgate.core.prices import _linear_rates

    rng, checked = random.Random(7), 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            rates = _linear_rates(model.get_prices(datetime.now(UTC)))
            if rates is None:
                continue
            prompt = rng.randint(0, 500_000)
            written = rng.randint(0, prompt // 3)
            cached, output = rng.randint(0, (prompt - written) // 2), rng.randint(0, 100_000)
            usage = Usage(input_tokens=prompt, output_tokens=output, cache_read_tokens=cached, cache_write_tokens=written)
            theirs = float(model.calc_price(usage, provider).total_price)
            ours = ((prompt - cached - written) * rates[0] + cached * rates[1] + written * rates[2]
                    + output * rates[3]) / 1e6
            assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), (provider.id, model.id)
            checked += 1
    assert checked > 1000
