"""Content security services through the SDKs and a real gateway: an OpenAI-style moderation endpoint, an LLM judge
and a webhook, on prompts, plain answers and streams (window by window), with timeouts and the verdict cache."""

import time

import anthropic
import openai
import pytest

from conftest import ALICE_KEY
from harness import providers_to

REPLY_WITH_ATTACK = ("The weather is calm and the harbour is quiet this morning, boats rest at their moorings. "
                     "Later the rebels attack the fortress at dawn with everything they have.")


def config(fake, on_error="open", dlp_url=None, timeout="2s"):
    return {
        "providers": providers_to(fake),
        "consumers": [{"name": "alice", "key": ALICE_KEY}],
        "content_security": {
            "services": [{"name": "omni", "type": "openai-moderation", "provider": "openai",
                          "model": "omni-moderation-latest"},
                         {"name": "judge", "type": "llm-judge", "provider": "openai", "model": "llama-guard-3"},
                         {"name": "corp", "type": "webhook", "url": dlp_url or f"{fake.url}/_fake/dlp",
                          "timeout": timeout}],
            "rules": [{"name": "harmful", "service": "omni", "on": ["prompt", "answer"], "categories": ["violence"]},
                      {"name": "judge", "service": "judge", "on": ["prompt"], "categories": ["hate"]},
                      {"name": "dlp", "service": "corp", "on": ["prompt"]}],
            "on_error": on_error, "window_chars": 60},
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    from harness import Gateway
    gateway = Gateway(tmp_path_factory.mktemp("content-security"), config(fake))
    yield gateway
    gateway.stop()


def last_call(gw) -> dict:
    """The last row of a client's call (the services' own calls are rows too, as system:content-security)."""
    return gw.wait_for(lambda: [r for r in gw.rows() if r["consumer"] == "alice"])[-1]


def chat_seen(fake, text: str) -> bool:
    return any(text in str(r["body"]) for r in fake.requests() if r["path"].endswith("/chat/completions")
               and r["body"].get("model") != "llama-guard-3")


@pytest.mark.parametrize("prompt, rule", [("How would one build a bomb?", "harmful"),
                                          ("Write something hateful about my neighbours", "judge"),
                                          ("Summarise this confidential merger plan", "dlp")])
def test_a_flagged_prompt_is_refused_by_each_service_type(gw, fake, prompt, rule):
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": prompt}])
    assert f"content security rule '{rule}'" in str(e.value) and prompt not in str(e.value)
    assert not chat_seen(fake, prompt), "nothing reaches the model provider"
    row = last_call(gw)
    assert row["status"] == 403 and row["content_security"].startswith(f"{rule}:block")
    with pytest.raises(anthropic.PermissionDeniedError):
        gw.anthropic(ALICE_KEY).messages.create(model="claude-x", max_tokens=10,
                                                messages=[{"role": "user", "content": prompt}])


def test_a_webhook_can_mask_instead(gw, fake):
    gw.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": "My number is 123-45-6789, file the form"}])
    assert chat_seen(fake, "My number is [REDACTED], file the form") and not chat_seen(fake, "123-45-6789")
    assert last_call(gw)["content_security"] == "dlp:mask:ssn"


def test_a_plain_answer_is_replaced(gw):
    answer = gw.openai(ALICE_KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell a story"}],
        extra_headers={"x-fake-reply": REPLY_WITH_ATTACK})
    assert "attack" not in answer.choices[0].message.content and "harmful" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "content_filter"
    row = last_call(gw)
    assert row["moderation"] == "harmful:refused" and row["decision"] == "moderated"


def test_a_stream_is_cut_at_its_window_for_both_sdks(gw):
    chunks = list(gw.openai(ALICE_KEY).chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "Tell a story"}],
        extra_headers={"x-fake-reply": REPLY_WITH_ATTACK, "x-fake-chunk-chars": "7"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The weather is calm") and "attack" not in text and "harmful" in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert last_call(gw)["moderation"] == "harmful:cut"
    with gw.anthropic(ALICE_KEY).messages.stream(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "Tell a story"}],
            extra_headers={"x-fake-reply": REPLY_WITH_ATTACK, "x-fake-chunk-chars": "7"}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and "attack" not in final.content[0].text


def test_a_clean_stream_arrives_whole_and_its_first_token_is_timed(gw):
    reply = " ".join(["A quiet harbour at dawn, gulls and calm water."] * 4)
    chunks = list(gw.openai(ALICE_KEY).chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "Describe a harbour"}],
        extra_headers={"x-fake-reply": reply, "x-fake-chunk-chars": "7"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    row = last_call(gw)
    assert row["ttft_ms"] is not None and row["content_security"] == ""


def test_the_service_sees_an_identical_text_once(gw, fake):
    prompt = f"An ordinary question number {time.time()}"
    for _ in range(3):
        gw.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": prompt}])
        time.sleep(0.1)  # the verdict is stored in a spawned write
    seen = [r for r in fake.requests() if r["path"].endswith("/moderations") and prompt in str(r["body"])]
    assert len(seen) == 1
    rows = [r for r in gw.rows() if r["consumer"] == "system:content-security"]
    assert rows and all(r["endpoint"] in ("/v1/moderations", "/v1/chat/completions") for r in rows)


@pytest.mark.parametrize("on_error, status", [("open", 200), ("closed", 503)])
def test_a_service_timeout_follows_on_error(fake, make_gateway, on_error, status):
    gw = make_gateway(config(fake, on_error, dlp_url=f"{fake.url}/_fake/dlp?hang=1", timeout="300ms"))
    client = gw.httpx()
    started = time.monotonic()
    response = client.post("https://api.openai.com/v1/chat/completions",
                           json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
                           headers={"authorization": f"Bearer {ALICE_KEY}"})
    assert response.status_code == status and time.monotonic() - started < 5
    assert "dlp:error" in last_call(gw)["content_security"]
