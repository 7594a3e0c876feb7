"""Token counting: the right encoding per model family, real tiktoken counts, prompt text from every place."""

import pytest

from tollgate.core import tokens


@pytest.mark.parametrize("model, encoding", [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4.1", "o200k_base"), ("o3-mini", "o200k_base"), ("gpt-5", "o200k_base"),
    ("openai/gpt-4o", "o200k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("claude-sonnet-4-6", "cl100k_base"), ("qwen-turbo", "cl100k_base"),
])
def test_encoding_per_family(model, encoding):
    assert tokens.encoding_name(model) == encoding


def test_counts_with_tiktoken_once_preloaded():
    tokens.preload()
    assert tokens._encodings["o200k_base"] is not None, "set TIKTOKEN_CACHE_DIR to ../shared/tiktoken-cache"
    assert tokens.count_text("gpt-4o", "hello world") == 2
    assert tokens.count_text("gpt-4", "tiktoken is great!") == 6


def test_prompt_text_from_messages_parts_system_and_tool_results():
    body = {"system": [{"type": "text", "text": "S"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "image_url"}]},
                         {"role": "tool", "content": "T"},
                         {"role": "user", "content": [{"type": "tool_result", "content": [{"text": "R"}]}]}]}
    assert sorted(tokens.prompt_text(body)) == ["A", "R", "S", "T"]
    assert tokens.estimate_prompt("gpt-4o", body) == 4 + 3 * 3 + 3
