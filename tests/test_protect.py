"""Masking, answer moderation, prompt templates and decorators through the real SDKs and the fake provider.

The fake provider echoes the prompt (x-fake-echo) or says a fixed text (x-fake-reply), in small streamed pieces, so
a placeholder or a denied term arrives split across events."""

import json
from urllib.parse import quote

import openai
import pytest

from harness import Gateway, providers_to
from test_guard_rules import SAMPLES
from tollgate.core.guard import DETECTORS

SECRETS = {name: DETECTORS[name][0].search(sample).group(0) for name, sample in SAMPLES.items()}
ECHO = {"x-fake-echo": "1", "x-fake-chunk-chars": "3"}
LEAK = "Our plan is Project Falcon: launch in May. More text follows after the codename."


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    gateway = Gateway(tmp_path_factory.mktemp("protect"), {
        "providers": providers_to(fake),
        "groups": {"interns": {}},
        "consumers": [{"name": "alice", "key": "tg-p-alice"}, {"name": "ian", "key": "tg-p-ian", "group": "interns"}],
        "guard": {"rules": [{"name": "mask-all", "action": "mask", "detectors": list(DETECTORS)}]},
        "moderation": {"refusal": "[withheld by policy {rule}]", "rules": [
            {"name": "codenames", "terms": ["project falcon"]},
            {"name": "intern-words", "terms": ["salary"], "groups": ["interns"]}]},
        "prompts": {
            "templates": [{"name": "developer-chat", "template": {"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are a {{program}} expert; you write {{language}}."},
                {"role": "user", "content": "Write a {{program}} program."}]}}],
            "decorators": [{"name": "english", "models": ["gpt-4o*", "claude-opus*"],
                            "prepend": [{"role": "system", "content": "Answer in English."}],
                            "append": [{"role": "user", "content": "End with a question."}]}]},
    })
    yield gateway
    gateway.stop()


def sent_text(fake) -> str:
    return json.dumps(fake.requests()[-1]["body"], ensure_ascii=False)


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_each_detector_is_masked_upstream_and_restored_for_the_client(gw, fake, detector):
    prompt = f"please keep {SAMPLES[detector]} safe"
    client = gw.openai("tg-p-alice")
    answer = client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": prompt}],
                                            extra_headers=ECHO)
    assert SECRETS[detector] not in sent_text(fake) and "[" in sent_text(fake)
    assert answer.choices[0].message.content == prompt
    stream = client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": prompt}],
                                            extra_headers=ECHO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == prompt
    assert SECRETS[detector] not in sent_text(fake)
    row = gw.last_row()
    assert row["guard"].startswith("mask-all:mask×") and SECRETS[detector] not in json.dumps(row)
    assert SECRETS[detector] not in gw.logs()


def test_anthropic_stream_masks_system_and_tool_results(gw, fake):
    email, key = SECRETS["email"], SECRETS["aws_access_key"]
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": f"key {key}"},
                                             {"type": "text", "text": f"mail {email}, key {key}"}]}]
    with gw.anthropic("tg-p-alice").messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=messages,
                                                    system=f"owner {email}", extra_headers=ECHO) as stream:
        text = "".join(stream.text_stream)
    sent = sent_text(fake)
    assert email not in sent and key not in sent and sent.count("[EMAIL_1]") == 2  # same original, same placeholder
    assert sent.count("[AWS_ACCESS_KEY_1]") == 2  # in the tool result and in the text
    assert text == f"mail {email}, key {key}"  # the fake echoes the last text part


def test_secret_split_across_messages_cannot_be_masked_so_it_is_blocked(gw, fake):
    before = len(fake.requests())
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai("tg-p-alice").chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "first AKIAIOSFOD"}, {"role": "user", "content": "NN7EXAMPLE second"}])
    assert "cannot be masked" in e.value.message and len(fake.requests()) == before


def test_masked_calls_are_not_cached(gw, fake):
    prompt = [{"role": "user", "content": f"mail {SECRETS['email']}"}]
    for _ in range(2):
        gw.openai("tg-p-alice").chat.completions.create(model="gpt-4.1-mini", messages=prompt, extra_headers=ECHO)
    assert gw.last_row()["cache"] != "hit"


def test_plain_answer_that_violates_is_replaced_by_a_refusal(gw):
    answer = gw.openai("tg-p-alice").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "plans?"}],
        extra_headers={"x-fake-reply": quote(LEAK)})
    assert answer.choices[0].message.content == "[withheld by policy codenames]"
    assert answer.choices[0].finish_reason == "content_filter"
    row = gw.last_row()
    assert (row["moderation"], row["decision"], row["status"]) == ("codenames:refused", "moderated", 200)
    message = gw.anthropic("tg-p-alice").messages.create(
        model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "plans?"}],
        extra_headers={"x-fake-reply": quote(LEAK)})
    assert message.content[0].text == "[withheld by policy codenames]" and message.stop_reason == "refusal"


def test_streamed_answer_is_cut_before_the_denied_text_and_ends_cleanly(gw):
    reply = {"x-fake-reply": quote(LEAK), "x-fake-chunk-chars": "2"}
    mark = gw.mark()
    chunks = list(gw.openai("tg-p-alice").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "plans?"}], extra_headers=reply, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Our plan is [withheld by policy codenames]"
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    row = gw.rows_since(mark)[-1]  # written when the upstream stream ends, after the client's cut
    assert (row["moderation"], row["decision"]) == ("codenames:cut", "moderated")
    with gw.anthropic("tg-p-alice").messages.stream(model="claude-sonnet-4-6", max_tokens=50, extra_headers=reply,
                                                    messages=[{"role": "user", "content": "plans?"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Our plan is [withheld by policy codenames]" and final.stop_reason == "refusal"
    assert "Falcon" not in text


def test_moderation_rules_per_group(gw):
    reply = {"x-fake-reply": quote("Your salary is fine.")}
    ask = [{"role": "user", "content": "salary?"}]
    assert "salary" in gw.openai("tg-p-alice").chat.completions.create(
        model="gpt-4o-mini", messages=ask, extra_headers=reply).choices[0].message.content
    assert gw.openai("tg-p-ian").chat.completions.create(
        model="gpt-4o-mini", messages=ask, extra_headers=reply).choices[0].message.content.startswith("[withheld")


def test_template_call_is_expanded_before_it_is_forwarded(gw, fake):
    client = gw.openai("tg-p-alice")
    answer = client.post("/chat/completions", cast_to=openai.types.chat.ChatCompletion, body={
        "template": "developer-chat", "properties": {"program": "quicksort", "language": "Python"}})
    assert answer.choices
    sent = fake.requests()[-1]["body"]
    assert [m["content"] for m in sent["messages"]] == [
        "Answer in English.", "You are a quicksort expert; you write Python.", "Write a quicksort program.",
        "End with a question."]  # the decorator applies to the expanded request too
    assert "template" not in sent and sent["model"] == "gpt-4o-mini"
    assert gw.last_row()["prompts"] == "template:developer-chat, decorator:english"


def test_unknown_template_or_missing_property_is_a_400_naming_it(gw, fake):
    client = gw.openai("tg-p-alice")
    before = len(fake.requests())
    with pytest.raises(openai.BadRequestError, match="unknown template 'nope'"):
        client.post("/chat/completions", cast_to=object, body={"template": "nope", "properties": {}})
    with pytest.raises(openai.BadRequestError, match="needs property 'language'"):
        client.post("/chat/completions", cast_to=object,
                    body={"template": "developer-chat", "properties": {"program": "x"}})
    assert len(fake.requests()) == before
    assert gw.last_row()["status"] == 400


def test_decorator_on_anthropic_goes_to_the_system_field(gw, fake):
    gw.anthropic("tg-p-alice").messages.create(model="claude-opus-4-1", max_tokens=5, system="Be brief.",
                                               messages=[{"role": "user", "content": "hi"}])
    sent = fake.requests()[-1]["body"]
    assert [b["text"] for b in sent["system"]] == ["Answer in English.", "Be brief."]
    assert [m["content"] for m in sent["messages"]] == ["hi", "End with a question."]
    gw.openai("tg-p-alice").chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": "hi"}])
    assert fake.requests()[-1]["body"]["messages"] == [{"role": "user", "content": "hi"}]  # model not matched
