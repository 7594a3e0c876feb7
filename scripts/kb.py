"""scripts/kb: knowledge bases for retrieval at the gate (RAG).

  scripts/kb ingest handbook docs/*.md docs/*.pdf   chunk, embed (through the configured embeddings provider, each
                                                    batch a ledger row as system:embeddings) and store
  scripts/kb list                                   knowledge bases and their chunk counts
  scripts/kb search handbook "how do I get a laptop?"
  scripts/kb drop handbook

The base's chunk size and overlap come from its `knowledge:` entry (or --chunk-chars / --overlap-chars); the index
is the configuration's `vectors:` (a file, or postgresql://… with pgvector)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addons"))

from tollgate.core.config import ConfigError, load_config  # noqa: E402
from tollgate.core.knowledge import KnowledgeBase, chunks  # noqa: E402
from tollgate.core.ledger import LedgerDB  # noqa: E402

BATCH = 64


def read_text(path: Path) -> str:
    """Plain text of a Markdown or PDF file (markdown-it for Markdown, pypdf for PDF), or of any text file."""
    if path.suffix.lower() == ".pdf":
        from pypdf import PdfReader

        return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() not in (".md", ".markdown"):
        return text
    from markdown_it import MarkdownIt

    blocks, current = [], []
    for token in MarkdownIt().parse(text):
        if token.type == "inline":
            current.append(token.content)
        elif token.type.endswith("_close") and token.level == 0 and current:
            blocks.append(" ".join(current))
            current = []
    return "\n\n".join(blocks + ([" ".join(current)] if current else []))


class _Settings:
    def __init__(self, config):
        self.config = config


class _Ledger:
    def __init__(self, config):
        self.db = LedgerDB(config.ledger_path)

    def write(self, row: dict) -> None:
        self.db.write(row)


def chunk_id(source: str, offset: int) -> str:
    return hashlib.sha256(f"{source}:{offset}".encode()).hexdigest()[:12]


async def main_async(args) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"kb: bad configuration: {e}", file=sys.stderr)
        return 2
    if config.embeddings is None:
        print("kb: the configuration has no `embeddings: {provider, model}`", file=sys.stderr)
        return 2
    from tollgate.knowledge import Embedder
    from tollgate.own_calls import OwnCalls

    embedder = Embedder(_Settings(config), OwnCalls(_Settings(config), _Ledger(config)))
    index = embedder.index()
    try:
        if args.command == "list":
            for namespace, count in (await index.namespaces("kb:")).items():
                print(f"{namespace[3:]}\t{count} chunks")
            return 0
        if args.command == "drop":
            print(f"kb: dropped {await index.drop(f'kb:{args.name}')} chunks of {args.name}")
            return 0
        base = next((b for b in config.knowledge if b.name == args.name), KnowledgeBase(args.name))
        if args.command == "search":
            vectors = await embedder.embed([args.query])
            if not vectors:
                return 1
            for hit in await index.search(base.namespace, vectors[0], args.top_k or base.top_k):
                text = hit.payload.get("text", "").replace("\n", " ")
                print(f"{hit.score:.3f}  {hit.id}  {hit.payload.get('source')}@{hit.payload.get('position')}  "
                      f"{text[:160]}")
            return 0
        size, overlap = args.chunk_chars or base.chunk_chars, args.overlap_chars or base.overlap_chars
        total = 0
        for name in args.files:
            path = Path(name)
            pieces = chunks(read_text(path), size, overlap)
            for start in range(0, len(pieces), BATCH):
                batch = pieces[start:start + BATCH]
                vectors = await embedder.embed([text for _, text in batch])
                if vectors is None:
                    print(f"kb: embedding failed for {path}; see the ledger for the reason", file=sys.stderr)
                    return 1
                await index.add(base.namespace, [(chunk_id(path.name, offset), vector,
                                                  {"text": text, "source": path.name, "position": offset})
                                                 for (offset, text), vector in zip(batch, vectors)])
            total += len(pieces)
            print(f"kb: {path.name}: {len(pieces)} chunks")
        print(f"kb: {args.name}: {total} chunks ingested")
        return 0
    finally:
        await index.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/kb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "gateway.yaml")
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest")
    ingest.add_argument("name")
    ingest.add_argument("files", nargs="+")
    ingest.add_argument("--chunk-chars", type=int)
    ingest.add_argument("--overlap-chars", type=int)
    commands.add_parser("list")
    search = commands.add_parser("search")
    search.add_argument("name")
    search.add_argument("query")
    search.add_argument("--top-k", type=int)
    drop = commands.add_parser("drop")
    drop.add_argument("name")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
