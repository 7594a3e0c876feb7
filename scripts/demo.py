"""The offline tour behind scripts/demo."""

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import FakeLLM, Gateway, providers_to

console = Console(width=max(Console().width, 150))
KEY = "tg-demo-alice-key"
HELLO = [{"role": "user", "content": "Hello from the tollgate demo"}]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tollgate-demo-"))
    fake = FakeLLM(work / "fake", "--delay-ms", "30")
    gateway = None
    try:
        gateway = Gateway(work / "gateway", {
            "providers": providers_to(fake),
            "models": [{"match": "gpt-3.5-turbo", "provider": "qwen", "model": "qwen-turbo"}],
            "groups": {"research": {"models": ["gpt-4o*", "gpt-3.5-turbo", "claude-*"]}},
            "consumers": [{"name": "alice", "key": KEY, "group": "research"}],
        })
        console.rule("[bold]tollgate demo")
        console.print(f"fake provider at {fake.url}; gateway proxy at {gateway.proxy} (CA {gateway.ca})")
        console.print("Clients set only HTTPS_PROXY and trust the gateway CA; their API key is a gateway key.\n")

        client = gateway.openai(KEY)
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        console.print(f"[cyan]openai plain[/]     gpt-4o-mini  -> {answer.choices[0].message.content!r}")
        text = ""
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True):
            text += chunk.choices[0].delta.content or ""
        console.print(f"[cyan]openai stream[/]    gpt-4o-mini  -> {text!r}")
        answer = client.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO)
        console.print(f"[cyan]openai mapped[/]    gpt-3.5-turbo answered by {answer.model} (qwen)")

        claude = gateway.anthropic(KEY)
        message = claude.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HELLO)
        console.print(f"[magenta]anthropic plain[/]  claude       -> {message.content[0].text!r}")
        with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=HELLO) as stream:
            console.print(f"[magenta]anthropic stream[/] claude       -> {stream.get_final_text()!r}")

        try:
            gateway.openai("sk-someones-real-key").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except Exception as e:  # the SDK raises AuthenticationError
            console.print(f"[red]wrong key[/]        {type(e).__name__}: {getattr(e, 'message', e)}")

        seen = [r for r in fake.requests() if r["method"] == "POST"]
        keys = sorted({r["headers"].get("Authorization") or r["headers"].get("x-api-key") for r in seen})
        console.print(f"\nThe provider saw only org keys: {keys}\n")

        table = Table(title=f"usage ledger ({gateway.ledger_path})")
        for column in ("consumer", "provider", "model", "streamed", "status", "prompt", "completion", "latency ms",
                       "ttft ms", "decision"):
            table.add_column(column)
        for row in gateway.rows():
            table.add_row(row["consumer"], row["provider"], row["model"] or row["requested_model"],
                          "yes" if row["streamed"] else "", str(row["status"]), str(row["prompt_tokens"]),
                          str(row["completion_tokens"]), f"{row['latency_ms'] or 0:.1f}", f"{row['ttft_ms'] or 0:.1f}",
                          row["decision"])
        console.print(table)
    finally:
        if gateway:
            gateway.stop()
        fake.stop()
        console.print("stopped the gateway and the fake provider")


if __name__ == "__main__":
    main()
