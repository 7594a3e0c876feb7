"""The semantic cache through the OpenAI SDK and a real gateway, on both index backends: a paraphrase is answered
from the cache, nothing else is (another tenant, model, system prompt, temperature or tool set)."""

import time

import pytest

from conftest import ALICE_KEY, BOB_KEY
from harness import Gateway, providers_to

QUESTION = "What is the capital city of France?"
PARAPHRASE = "Tell me: which city is the capital of France?"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module", params=["embedded", "pgvector"])
def gw(request, tmp_path_factory, fake):
    work = tmp_path_factory.mktemp(f"semantic-{request.param}")
    if request.param == "pgvector":
        import psycopg

        vectors = request.getfixturevalue("pgvector")
        with psycopg.connect(vectors, autocommit=True) as db:
            db.execute("DROP TABLE IF EXISTS tollgate_vectors")
    else:
        vectors = str(work / "vectors.db")
    gateway = Gateway(work, {
        "providers": providers_to(fake),
        "consumers": [{"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}],
        "embeddings": {"provider": "openai", "model": "text-embedding-3-small"},
        "vectors": vectors,
        "cache": {"ttl": "10m", "semantic": {"threshold": 0.85, "scope": "consumer", "max_age": "10m",
                                             "on": ["gpt-4o*"]}},
    })
    yield gateway
    gateway.stop()


def ask(gw, key, text, **kw):
    client = gw.openai(key)
    raw = client.chat.completions.with_raw_response.create(model=kw.pop("model", "gpt-4o-mini"),
                                                           messages=kw.pop("messages", None) or
                                                           [{"role": "user", "content": text}], **kw)
    return raw.headers, raw.parse()


def test_a_paraphrase_is_answered_from_the_cache(gw):
    mark = gw.mark()
    first_headers, first = ask(gw, ALICE_KEY, QUESTION, temperature=0)
    assert first_headers["x-cache"] == "MISS"
    time.sleep(0.3)  # the answer is indexed in a spawned task, after the client has it
    headers, again = ask(gw, ALICE_KEY, PARAPHRASE, temperature=0)
    assert headers["x-cache"] == "HIT-SEMANTIC" and float(headers["x-cache-similarity"]) >= 0.85
    assert again.choices[0].message.content == first.choices[0].message.content
    rows = gw.rows_since(mark, 4)
    hit = [r for r in rows if r["cache"] == "hit"][-1]
    assert hit["decision"] == "cached" and hit["cache_similarity"] >= 0.85 and len(hit["cache_match"]) == 12
    embeddings = [r for r in rows if r["endpoint"] == "/v1/embeddings"]
    assert len(embeddings) == 2 and {r["consumer"] for r in embeddings} == {"alice"}
    assert all(r["provider"] == "openai" and r["prompt_tokens"] > 0 for r in embeddings)


@pytest.mark.parametrize("change", ["unrelated", "consumer", "model", "system", "temperature", "tools"])
def test_nothing_else_is(gw, change):
    ask(gw, ALICE_KEY, QUESTION, temperature=0)
    time.sleep(0.3)
    kw = {"temperature": 0}
    key, text = ALICE_KEY, PARAPHRASE
    if change == "unrelated":
        text = "How many legs does a spider have?"
    elif change == "consumer":
        key = BOB_KEY
    elif change == "model":
        kw["model"] = "gpt-4o"
    elif change == "system":
        kw["messages"] = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": text}]
    elif change == "temperature":
        kw["temperature"] = 0.7
    elif change == "tools":
        kw["tools"] = [TOOL]
    headers, _ = ask(gw, key, text, **kw)
    assert headers["x-cache"] == "MISS"


def test_a_streamed_hit_replays_as_a_stream(gw):
    client = gw.openai(ALICE_KEY)
    first = list(client.chat.completions.create(model="gpt-4o", stream=True, temperature=0,
                                                messages=[{"role": "user", "content": "Name the largest ocean planet-wide"}]))
    time.sleep(0.3)
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", stream=True, temperature=0,
            messages=[{"role": "user", "content": "Largest ocean, name it planet-wide"}]) as response:
        assert response.headers["x-cache"] == "HIT-SEMANTIC"
        chunks = list(response.parse())
    text = lambda cs: "".join(c.choices[0].delta.content or "" for c in cs if c.choices)  # noqa: E731
    assert len(chunks) > 3 and text(chunks) == text(first)
