"""Knowledge bases (RAG) through scripts/kb and a real gateway: ingest Markdown and PDF, retrieve the right passages
for the consumers and models the base applies to, and let the guard see them like any prompt text."""

import json
import subprocess

import pytest

from conftest import ALICE_KEY, BOB_KEY, ROOT
from harness import Gateway, providers_to, subprocess_env

HANDBOOK = """# Laptops

New employees receive a laptop on their first day. To replace a broken laptop, open a ticket with the IT desk
and bring the broken laptop to room 4.

# Holidays

Every employee has thirty holiday days per year. Holiday requests go to your manager two weeks ahead.

# People team

Questions about payroll go to the people team at payroll@corp.example.
"""


def pdf(text: str) -> bytes:
    """A one-page PDF with the text in Helvetica (what pypdf reads back)."""
    lines = [line.replace("(", "").replace(")", "") for line in text.splitlines()]
    stream = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R "
               "/Resources << /Font << /F1 5 0 R >> >> >>",
               f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture(scope="module")
def kb(tmp_path_factory, fake):
    work = tmp_path_factory.mktemp("knowledge")
    docs = work / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_text(HANDBOOK)
    (docs / "security.pdf").write_bytes(pdf("Security policy\nBadges must be worn visibly inside the office.\n"
                                            "Lost badges are reported to the security desk at once."))
    config = {
        "providers": providers_to(fake),
        "groups": {"research": {}},
        "consumers": [{"name": "alice", "key": ALICE_KEY, "group": "research"}, {"name": "bob", "key": BOB_KEY}],
        "embeddings": {"provider": "openai", "model": "text-embedding-3-small"},
        "vectors": str(work / "vectors.db"),
        "knowledge": [{"name": "handbook", "top_k": 2, "min_score": 0.3, "chunk_chars": 200, "overlap_chars": 20,
                       "apply": {"models": ["gpt-4o*"], "groups": ["research"]},
                       "template": "Answer using these passages; cite them as [n].\n{passages}"}],
        "guard": {"rules": [{"name": "email", "detectors": ["email"], "action": "mask"}]},
        "ledger": {"path": str(work / "usage.db")},
    }
    (work / "gateway.yaml").write_text(json.dumps(config))
    out = subprocess.run([str(ROOT / "scripts" / "kb"), "--config", str(work / "gateway.yaml"), "ingest", "handbook",
                          str(docs / "handbook.md"), str(docs / "security.pdf")],
                         capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert out.returncode == 0, out.stdout + out.stderr
    gateway = Gateway(work / "gw", config)
    yield gateway, work, out.stdout
    gateway.stop()


def ask(gw, key, text, model="gpt-4o-mini"):
    raw = gw.openai(key).chat.completions.with_raw_response.create(model=model,
                                                                  messages=[{"role": "user", "content": text}])
    return raw.headers


def seen_system(fake) -> str:
    body = [r for r in fake.requests() if r["path"].endswith("/chat/completions")][-1]["body"]
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


def test_ingest_lists_and_searches(kb):
    gw, work, ingested = kb
    assert "handbook.md:" in ingested and "security.pdf: 1 chunks" in ingested
    run = lambda *a: subprocess.run([str(ROOT / "scripts" / "kb"), "--config", str(work / "gateway.yaml"), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert "handbook\t" in run("list").stdout
    found = run("search", "handbook", "lost badge security desk").stdout.splitlines()
    assert "security.pdf" in found[0] and "badge" in found[0].lower()
    rows = [r for r in gw.rows() if r["consumer"] == "system:embeddings"]
    assert rows and all(r["endpoint"] == "/v1/embeddings" and r["status"] == 200 for r in rows)


def test_a_question_gets_the_right_passages(kb, fake):
    gw, _, _ = kb
    mark = gw.mark()
    headers = ask(gw, ALICE_KEY, "How do I replace a broken laptop?")
    assert headers["x-tollgate-knowledge"].startswith("handbook:")
    system = seen_system(fake)
    assert system.startswith("Answer using these passages") and "broken laptop" in system and "[1]" in system
    row = [r for r in gw.rows_since(mark, 2) if r["endpoint"] == "/v1/chat/completions"][-1]
    assert row["knowledge"].startswith("handbook:") and len(row["knowledge"].split(":")[1].split(",")[0]) == 12
    headers = ask(gw, ALICE_KEY, "What should I do about a lost badge?")  # from the PDF
    assert "Lost badges are reported" in seen_system(fake)


def test_no_passages_below_min_score_or_outside_apply(kb, fake):
    gw, _, _ = kb
    headers = ask(gw, ALICE_KEY, "Quantum chromodynamics gluon confinement")
    assert headers.get("x-tollgate-knowledge") == "handbook:0" and seen_system(fake) == ""
    assert "x-tollgate-knowledge" not in ask(gw, BOB_KEY, "How do I replace a broken laptop?")  # not in research
    assert seen_system(fake) == ""
    assert "x-tollgate-knowledge" not in ask(gw, ALICE_KEY, "How do I replace a broken laptop?", model="o3-mini")


def test_passages_pass_the_prompt_guard(kb, fake):
    gw, _, _ = kb
    ask(gw, ALICE_KEY, "Who do payroll questions go to in the people team?")
    system = seen_system(fake)
    assert "people team" in system and "payroll@corp.example" not in system and "[EMAIL_1]" in system
