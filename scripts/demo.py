"""The offline tour behind scripts/demo: every part of the gate in a few lines each, against the fake provider."""

import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import FakeLLM, Gateway, providers_to

console = Console(width=max(Console().width, 150))
KEY, BOB = "tg-demo-alice-key", "tg-demo-bob-key"
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
            "consumers": [{"name": "alice", "key": KEY, "group": "research"},
                          {"name": "bob", "key": BOB, "group": "research"}],
            "guard": {"rules": [{"name": "secrets", "detectors": ["aws_access_key", "private_key", "openai_key"]},
                                {"name": "pii", "detectors": ["email"], "action": "mask"}]},
            "limits": {"rules": [{"name": "bob-per-minute", "per": "consumer", "consumers": ["bob"],
                                  "requests_per_minute": 2}]},
            "cache": {"ttl": "1h", "only_deterministic": True},
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

        console.rule("guard")
        secret = [{"role": "user", "content": "deploy with AKIAIOSFODNN7EXAMPLE please"}]
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=secret)
        except Exception as e:  # PermissionDeniedError: the prompt never left
            console.print(f"[red]secret blocked[/]   {type(e).__name__}: {getattr(e, 'message', e)}")
        echo = client.with_options(default_headers={"x-fake-echo": "1"})
        email = [{"role": "user", "content": "write to jane.doe@example.com"}]
        answer = echo.chat.completions.create(model="gpt-4o-mini", messages=email)
        sent = fake.requests()[-1]["body"]["messages"][-1]["content"]
        console.print(f"[yellow]email masked[/]     the provider saw {sent!r}; alice got {answer.choices[0].message.content!r}")

        console.rule("limits")
        bob = gateway.openai(BOB).with_options(max_retries=0)
        for i in range(3):
            try:
                bob.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
                console.print(f"[green]bob call {i + 1}[/]       served")
            except Exception as e:  # RateLimitError on the third call within the minute
                console.print(f"[red]bob call {i + 1}[/]       {type(e).__name__} "
                              f"(429, retry-after {e.response.headers.get('retry-after')} s)")

        console.rule("cache")
        question = [{"role": "user", "content": "What is a tollgate?"}]
        for i in range(2):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question,
                                                                   temperature=0)
            console.print(f"[blue]same question {i + 1}[/]  x-cache: {raw.headers.get('x-cache')}")
        gateway.rows_since(0, 13)

        console.rule("ledger")
        table = Table(title=f"usage ledger ({gateway.ledger_path})")
        for column in ("consumer", "provider", "model", "streamed", "status", "prompt", "completion", "cost $",
                       "ttft ms", "decision", "cache", "guard / limit"):
            table.add_column(column)
        for row in gateway.rows():
            table.add_row(row["consumer"], row["provider"], row["model"] or row["requested_model"],
                          "yes" if row["streamed"] else "", str(row["status"]), str(row["prompt_tokens"]),
                          str(row["completion_tokens"]), f"{row['cost_usd']:.6f}", f"{row['ttft_ms'] or 0:.1f}",
                          row["decision"], row["cache"], row["guard"] or row["limited_by"])
        console.print(table)

        console.rule("report")
        chart = work / "usage.png"
        report = subprocess.run([sys.executable, str(Path(__file__).with_name("usage_report.py")), "--ledger",
                                 str(gateway.ledger_path), "--chart", str(chart)], capture_output=True, text=True)
        console.print(report.stdout.rstrip() or report.stderr)
        console.print(f"chart: {chart} ({chart.stat().st_size if chart.exists() else 0:,} bytes); "
                      f"scripts/usage-report --format html > usage.html for the page a manager reads")
    finally:
        if gateway:
            gateway.stop()
        fake.stop()
        console.print("stopped the gateway and the fake provider")


if __name__ == "__main__":
    main()
