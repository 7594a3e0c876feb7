"""Masking, restoring, moderation and prompt templates on plain data (no proxy)."""

import json

import pytest

from tollgate.core.answers import Moderator, Restorer, StreamEditor, answer_slots, refuse_answer
from tollgate.core.config import ConfigError, parse_config
from tollgate.core.dialects import ANTHROPIC, GEMINI, OPENAI
from tollgate.core.guard import Rule, compile_rule, mask
from tollgate.core.prompts import Decorator, PromptError, Template, decorate, expand, placeholders
from tollgate.core.sse import parse_event

EMAIL = compile_rule(Rule("pii", action="mask", detectors=("email", "aws_access_key")))


def test_mask_gives_each_original_one_placeholder_that_never_collides():
    texts = ["mail a@x.io and b@y.io", "again a@x.io, key AKIAIOSFODNN7EXAMPLE", "[EMAIL_1] is literal text"]
    masked, originals = mask((EMAIL,), texts, "alice", "")
    assert masked[0] == "mail [EMAIL_2] and [EMAIL_3]"  # [EMAIL_1] is taken by the prompt itself
    assert masked[1] == "again [EMAIL_2], key [AWS_ACCESS_KEY_1]"
    assert masked[2] == texts[2]
    assert originals == {"[EMAIL_2]": "a@x.io", "[EMAIL_3]": "b@y.io", "[AWS_ACCESS_KEY_1]": "AKIAIOSFODNN7EXAMPLE"}


def test_mask_skips_rules_of_other_groups_and_other_actions():
    only_fin = compile_rule(Rule("pii", action="mask", detectors=("email",), groups=("finance",)))
    logged = compile_rule(Rule("pii", action="log", detectors=("email",)))
    assert mask((only_fin, logged), ["a@x.io"], "alice", "research") == (["a@x.io"], {})


def test_restorer_finds_placeholders_split_anywhere():
    originals = {"[EMAIL_1]": "a@x.io", "[EMAIL_12]": "z@z.io"}
    text = "to [EMAIL_1] and [EMAIL_12], [not a placeholder] [EMAIL"
    for size in range(1, len(text) + 1):
        restorer = Restorer(originals)
        out = "".join(restorer.feed(text[i:i + size]) for i in range(0, len(text), size)) + restorer.flush()
        assert out == "to a@x.io and z@z.io, [not a placeholder] [EMAIL", size


def test_moderator_holds_back_only_a_possible_term_start():
    moderator = Moderator((compile_rule(Rule("codenames", keywords=("project falcon",))),), window=64)
    assert moderator.feed("we ship Proj") == ("we ship ", None)  # "Proj" could start the term
    assert moderator.feed("ects soon") == ("Projects soon", None)
    released, rule = moderator.feed(" about PROJECT FAL")
    assert rule is None and "FAL" not in released
    released, rule = moderator.feed("CON now")
    assert rule.name == "codenames" and "FALCON" not in released


def test_moderator_window_for_regexes():
    moderator = Moderator((compile_rule(Rule("ids", regexes=(r"ID-\d{6}",))),), window=9)
    out, rule = moderator.feed("alpha beta gamma ID-12")
    assert rule is None and out == "alpha beta ga"  # the last 9 characters wait
    out, rule = moderator.feed("3456 end")
    assert rule.name == "ids" and "ID-" not in out


def _events(dialect, pieces):
    """A provider's stream of text pieces, as raw SSE events."""
    raw = []
    for i, piece in enumerate(pieces):
        if dialect == OPENAI:
            raw.append({"id": "c", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        elif dialect == ANTHROPIC:
            raw.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": piece}}))
        else:
            cand = {"content": {"parts": [{"text": piece}]}, **({"finishReason": "STOP"} if i == len(pieces) - 1 else {})}
            raw.append({"candidates": [cand]})
    if dialect == OPENAI:
        raw += [{"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]"]
    elif dialect == ANTHROPIC:
        raw += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_stop", {"type": "message_stop"})]
    out = []
    for item in raw:
        name, obj = item if isinstance(item, tuple) else ("", item)
        data = obj if isinstance(obj, str) else json.dumps(obj)
        out.append((f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode())
    return out


def _client_text(dialect, events):
    text, finish = "", None
    for raw in events:
        name, data = parse_event(raw)
        if data == "[DONE]":
            continue
        obj = json.loads(data)
        if dialect == OPENAI:
            choice = obj["choices"][0]
            text += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
        elif dialect == ANTHROPIC:
            text += obj.get("delta", {}).get("text", "") if obj["type"] == "content_block_delta" else ""
            finish = obj.get("delta", {}).get("stop_reason") or finish
        else:
            cand = obj["candidates"][0]
            text += "".join(p["text"] for p in cand["content"]["parts"])
            finish = cand.get("finishReason") or finish
    return text, finish


@pytest.mark.parametrize("dialect", [OPENAI, ANTHROPIC, GEMINI])
def test_stream_restores_split_placeholders(dialect):
    answer = "Reply to [EMAIL_1] today; [EMAIL_1] again."
    pieces = [answer[i:i + 3] for i in range(0, len(answer), 3)]
    editor = StreamEditor(dialect, {"[EMAIL_1]": "a@x.io"}, (), 0)
    out = [e for raw in _events(dialect, pieces) for e in editor.event(raw)] + editor.end()
    assert _client_text(dialect, out)[0] == "Reply to a@x.io today; a@x.io again."


@pytest.mark.parametrize("dialect,finish", [(OPENAI, "content_filter"), (ANTHROPIC, "refusal"), (GEMINI, "SAFETY")])
def test_stream_is_cut_at_the_violation_and_ends_cleanly(dialect, finish):
    rule = compile_rule(Rule("codenames", keywords=("falcon",)))
    pieces = ["The plan ", "is Fal", "con and more", " text after"]
    editor = StreamEditor(dialect, {}, (rule,), 64, "[withheld: {rule}]")
    out = [e for raw in _events(dialect, pieces) for e in editor.event(raw)] + editor.end()
    text, reason = _client_text(dialect, out)
    assert text == "The plan is [withheld: codenames]" and reason == finish
    assert editor.violated.name == "codenames"
    if dialect == OPENAI:
        assert out[-1] == b"data: [DONE]\n\n"
    if dialect == ANTHROPIC:
        assert parse_event(out[-1])[0] == "message_stop"


def test_plain_answer_refusal_in_each_shape():
    openai_body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "secret"},
                                "finish_reason": "stop"}]}
    anthropic_body = {"content": [{"type": "text", "text": "secret"}], "stop_reason": "end_turn"}
    gemini_body = {"candidates": [{"content": {"parts": [{"text": "sec"}, {"text": "ret"}]}, "finishReason": "STOP"}]}
    for dialect, body in ((OPENAI, openai_body), (ANTHROPIC, anthropic_body), (GEMINI, gemini_body)):
        assert "".join(c[k] for c, k in answer_slots(dialect, body)) == "secret"
        refuse_answer(dialect, body, "no")
        assert "".join(c[k] for c, k in answer_slots(dialect, body)) == "no"
    assert openai_body["choices"][0]["finish_reason"] == "content_filter"
    assert anthropic_body["stop_reason"] == "refusal" and gemini_body["candidates"][0]["finishReason"] == "SAFETY"


TEMPLATES = {"developer-chat": Template("developer-chat", body := {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "You are a {{program}} expert writing {{ language }}."},
                 {"role": "user", "content": "Write a {{program}} program."}]}, placeholders(body))}


def test_template_expands_and_request_fields_win():
    out = expand(TEMPLATES, {"template": "developer-chat", "properties": {"program": "quicksort",
                                                                         "language": "Python"}, "stream": True})
    assert out["messages"][0]["content"] == "You are a quicksort expert writing Python."
    assert out["messages"][1]["content"] == "Write a quicksort program." and out["stream"] is True
    assert "template" not in out and "properties" not in out


def test_template_errors_name_what_is_wrong():
    with pytest.raises(PromptError, match="unknown template 'nope'"):
        expand(TEMPLATES, {"template": "nope"})
    with pytest.raises(PromptError, match="template 'developer-chat' needs property 'language'"):
        expand(TEMPLATES, {"template": "developer-chat", "properties": {"program": "x"}})


def test_decorators_place_messages_where_each_format_keeps_them():
    english = Decorator("english", prepend=({"role": "system", "content": "Answer in English."},),
                        append=({"role": "user", "content": "Ask a question back."},), models=("gpt-*", "claude-*"))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert decorate(OPENAI, "/v1/chat/completions", body, (english,), "gpt-4o", "a", "") == ["english"]
    assert [m["content"] for m in body["messages"]] == ["Answer in English.", "hi", "Ask a question back."]
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}
    decorate(ANTHROPIC, "/v1/messages", body, (english,), "claude-sonnet-4-6", "a", "")
    assert [b["text"] for b in body["system"]] == ["Answer in English.", "Be brief."]
    assert [m["content"] for m in body["messages"]] == ["hi", "Ask a question back."]
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert decorate(OPENAI, "/v1/chat/completions", body, (english,), "o3", "a", "") == []  # model not matched
    assert decorate(OPENAI, "/v1/embeddings", {"input": "x"}, (english,), "gpt-4o", "a", "") == []


def test_config_for_moderation_and_prompts():
    base = {"providers": {"openai": {"type": "openai", "keys": ["k"]}}}
    config = parse_config({**base, "moderation": {"rules": [{"name": "c", "terms": ["falcon"]}], "window": 10},
                           "prompts": {"templates": [{"name": "t", "template": {"messages": ["{{a}}"]}}],
                                       "decorators": [{"prepend": [{"content": "x"}]}]},
                           "guard": {"rules": [{"name": "m", "action": "mask", "detectors": ["email"]}]}})
    assert config.moderation.window == 10 and config.prompts.templates["t"].properties == {"a"}
    assert config.prompts.decorators[0].prepend == ({"role": "system", "content": "x"},)
    with pytest.raises(ConfigError, match=r"moderation.rules\[0\]: give detectors, terms or regex"):
        parse_config({**base, "moderation": {"rules": [{"name": "c"}]}})
    with pytest.raises(ConfigError, match=r"moderation.refusal: only \{rule\}"):
        parse_config({**base, "moderation": {"refusal": "{oops}", "rules": [{"name": "c", "terms": ["x"]}]}})
    with pytest.raises(ConfigError, match=r"prompts.decorators\[0\]: give prepend or append"):
        parse_config({**base, "prompts": {"decorators": [{"name": "d"}]}})
