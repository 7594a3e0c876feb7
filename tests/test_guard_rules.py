"""Prompt rules on plain data: every detector's sample, adversarial inputs, speed, and pathological regexes."""

import time

import pytest

from tollgate.core.config import ConfigError, parse_config
from tollgate.core.guard import DETECTORS, Rule, compile_rule, scan
from tollgate.core.tokens import prompt_text

SAMPLES = {
    "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...",
    "aws_access_key": "key id AKIAIOSFODNN7EXAMPLE here",
    "github_token": "ghp_" + "a1B2" * 9,
    "gitlab_token": "glpat-abcdefghij0123456789",
    "slack_token": "xoxb-1234567890-abcdefghij",
    "openai_key": "sk-proj-abcdefghijklmnopqrstuvwx",
    "anthropic_key": "sk-ant-api03-abcdefghijklmnopqrstuv",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "credit_card": "card 4111 1111 1111 1111 exp",
    "iban": "IBAN DE89 3704 0044 0532 0130 00 please",
    "email": "write to alice@example.com today",
    "phone": "call +1 415 555 0132 now",
    "ipv4": "server at 10.20.30.40 is down",
}


def rules(*rules_: Rule) -> tuple:
    return tuple(compile_rule(r) for r in rules_)


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_each_detector_finds_its_sample_and_only_it(detector):
    assert [f.rule for f in scan(rules(Rule("r", detectors=(detector,))), [SAMPLES[detector]], "a", "")] == ["r"]
    clean = "The quick brown fox jumps over 13 lazy dogs at 9 o'clock, version 1.2.3."
    assert scan(rules(Rule("r", detectors=(detector,))), [clean], "a", "") == []


def test_validators_reject_lookalike_numbers():
    r = rules(Rule("cards", detectors=("credit_card", "iban")))
    assert scan(r, ["order 4111 1111 1111 1112 and DE89 3704 0044 0532 0130 01"], "a", "") == []


def test_adversarial_inputs():
    secret = rules(Rule("secrets", detectors=("aws_access_key",)), Rule("pw", keywords=("password",)))
    body = {"system": [{"type": "text", "text": "ignore"}],
            "messages": [{"role": "user", "content": "first half AKIAIOSFOD"},
                         {"role": "user", "content": [{"type": "text", "text": "NN7EXAMPLE second half"}]}]}
    assert [f.rule for f in scan(secret, prompt_text(body), "a", "")] == ["secrets"]   # split across messages
    assert scan(secret, prompt_text({"system": "my PassWord is x", "messages": []}), "a", "")[0].rule == "pw"
    tool = {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": [{"text": "PASSWORD"}]}]}]}
    assert scan(secret, prompt_text(tool), "a", "")[0].rule == "pw"
    assert scan(secret, ["ｐａｓｓｗｏｒｄ (full-width)"], "a", "")[0].rule == "pw"          # Unicode look-alikes
    assert scan(secret, prompt_text({"model": "password-model", "messages": []}), "a", "") == []  # not model names


def test_whole_word_case_sensitive_and_per_group():
    whole = rules(Rule("w", keywords=("pass",), whole_word=True), Rule("c", keywords=("Secret",), case_sensitive=True),
                  Rule("g", keywords=("budget",), groups=("finance",)))
    assert [f.rule for f in scan(whole, ["passport secret"], "a", "")] == []
    assert [f.rule for f in scan(whole, ["the pass, the Secret, the budget"], "a", "finance")] == ["w", "c", "g"]


def test_scanning_100k_characters_with_every_detector_is_fast():
    every = rules(Rule("all", detectors=tuple(DETECTORS)), Rule("kw", keywords=("password", "secret", "internal")))
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit 12345. " * 1600)[:100_000]
    scan(every, [text], "a", "")
    start = time.perf_counter()
    scan(every, [text], "a", "")
    elapsed_ms = (time.perf_counter() - start) * 1000
    assert elapsed_ms < 50, elapsed_ms  # generous for slow CI; scripts/bench reports the real figure


def test_pathological_regex_runs_in_linear_time_and_unsupported_ones_are_refused():
    evil = rules(Rule("evil", regexes=("(a+)+$",)))  # catastrophic for backtracking engines
    start = time.perf_counter()
    assert scan(evil, ["a" * 50_000 + "!"], "a", "") == []
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ConfigError, match=r"guard.rules\[0\]: regex\[0\] cannot be run in linear time"):
        parse_config({"providers": {"openai": {"type": "openai"}},
                      "guard": {"rules": [{"name": "x", "regex": ["(a)\\1"]}]}}, env={})
    with pytest.raises(ConfigError, match=r"guard.rules\[0\]: unknown detector 'nope'"):
        parse_config({"providers": {"openai": {"type": "openai"}},
                      "guard": {"rules": [{"name": "x", "detectors": ["nope"]}]}}, env={})
