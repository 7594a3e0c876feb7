"""Prompt rules through the real SDKs: blocked calls raise the exception of the configured status, never echo the
secret and never reach the provider; log findings are recorded and the call goes on."""

import json

import anthropic
import openai
import pytest

from harness import Gateway, providers_to
from test_guard_rules import SAMPLES


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    gateway = Gateway(tmp_path_factory.mktemp("guard"), {
        "providers": providers_to(fake),
        "groups": {"finance": {}},
        "consumers": [{"name": "alice", "key": "tg-g-alice"}, {"name": "fin", "key": "tg-g-fin", "group": "finance"}],
        "guard": {"headers": ["x-note"], "rules": [
            {"name": "secrets", "detectors": ["private_key", "aws_access_key", "github_token", "gitlab_token",
                                              "slack_token", "openai_key", "anthropic_key", "jwt"]},
            {"name": "cards", "detectors": ["credit_card", "iban"], "status": 400},
            {"name": "no-passwords", "keywords": ["password"]},
            {"name": "pii", "detectors": ["email", "phone", "ipv4"], "action": "log"},
            {"name": "finance-only", "keywords": ["merger"], "groups": ["finance"]},
        ]},
    })
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("detector", ["private_key", "aws_access_key", "github_token", "gitlab_token", "slack_token",
                                      "openai_key", "anthropic_key", "jwt"])
def test_secrets_are_blocked_with_403(gw, fake, detector):
    before = len(fake.requests())
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai("tg-g-alice").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"please debug {SAMPLES[detector]}"}])
    assert "blocked by rule 'secrets'" in e.value.message and SAMPLES[detector] not in json.dumps(e.value.body)
    assert len(fake.requests()) == before
    row = gw.last_row()
    assert (row["status"], row["guard"]) == (403, "secrets:block×1") and SAMPLES[detector] not in json.dumps(row)
    assert SAMPLES[detector] not in gw.logs()


@pytest.mark.parametrize("detector", ["credit_card", "iban"])
def test_configured_status_maps_to_the_sdk_exception(gw, detector):
    with pytest.raises(anthropic.BadRequestError) as e:
        gw.anthropic("tg-g-alice").messages.create(model="claude-sonnet-4-6", max_tokens=5, system=SAMPLES[detector],
                                                   messages=[{"role": "user", "content": "hi"}])
    assert "blocked by rule 'cards'" in str(e.value)


def test_keyword_in_tool_result_header_and_url(gw):
    client = gw.openai("tg-g-alice")
    tool_messages = [{"role": "user", "content": "run it"},
                     {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                      "function": {"name": "read", "arguments": "{}"}}]},
                     {"role": "tool", "tool_call_id": "1", "content": "the PASSWORD is hunter2"}]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=tool_messages)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-note": "my password"})
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       extra_query={"q": "password"})


def test_log_findings_are_recorded_and_the_call_goes_on(gw, fake):
    answer = gw.openai("tg-g-alice").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "mail bob@example.com or call +1 415 555 0132"}])
    assert answer.choices
    row = gw.last_row()
    assert (row["status"], row["guard"], row["decision"]) == (200, "pii:log×2", "forwarded")
    assert "bob@example.com" in json.dumps(fake.requests()[-1]["body"])  # log does not change the prompt


def test_rules_per_group(gw):
    gw.openai("tg-g-alice").chat.completions.create(model="gpt-4o-mini",
                                                    messages=[{"role": "user", "content": "the merger"}])
    with pytest.raises(openai.PermissionDeniedError):
        gw.openai("tg-g-fin").chat.completions.create(model="gpt-4o-mini",
                                                      messages=[{"role": "user", "content": "the merger"}])


def test_the_one_pass_prefilter_never_hides_a_finding():
    """A rule first searches all its patterns at once; whatever text, it finds what each pattern finds alone."""
    import dataclasses

    from hypothesis import given, settings, strategies as st

    from tollgate.core.guard import DETECTORS, Rule, compile_rule

    rule = compile_rule(Rule("all", detectors=tuple(DETECTORS), keywords=("Secret", "pass word"), regexes=(r"x\d+y",)))
    unfiltered = dataclasses.replace(rule, _prefilter=None)
    samples = ["AKIAIOSFODNN7EXAMPLE", "jane@example.com", "4111 1111 1111 1111", "sk-ant-" + "a" * 24, "SECRET",
               "x42y", "PASS WORD", "10.0.0.1", "+49 30 1234 5678", "DE89 3704 0044 0532 0130 00"]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(samples), st.text(max_size=30)), max_size=6))
    def check(parts):
        text = " ".join(parts)
        assert list(rule.spans(text)) == list(unfiltered.spans(text))

    check()
    assert rule._prefilter is not None and not rule.may_match("nothing to see here")
