"""mitmweb in a real headless browser: after a call through the gateway, the flow list shows the call record as
the flow comment. The screenshot is kept in test-artifacts/mitmweb.png."""

import os
import shutil
import subprocess

import openai
import pytest

from conftest import ROOT
from harness import Gateway, free_port, providers_to

HELLO = [{"role": "user", "content": "show me in mitmweb"}]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,700", "--virtual-time-budget=8000"]


@pytest.fixture
def chromium():
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("TOLLGATE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (TOLLGATE_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def browse(chromium: str, profile, *args: str) -> str:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=90).stdout


def test_mitmweb_flow_list_shows_the_comment(tmp_path, fake, chromium):
    columns = [a for c in ("tls", "icon", "path", "method", "status", "size", "time", "comment")
               for a in ("--set", f"web_columns={c}")]
    gw = Gateway(tmp_path / "gw", {"providers": providers_to(fake),
                                   "consumers": [{"name": "alice", "key": "tg-web-alice"}]},
                 tool="mitmweb", extra=("--set", f"web_port={free_port()}", "--set", "web_open_browser=false",
                                        "--set", "store_streamed_bodies=true", *columns))
    try:
        client = gw.openai("tg-web-alice").with_options(max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            gw.openai("tg-web-nobody").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        with pytest.raises(openai.InternalServerError):  # the provider's own 5xx: forwarded, and marked
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                           extra_headers={"x-fake-status": "503"})
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        gw.rows_since(0, 3)
        comment = gw.last_row()["consumer"] + " · gpt-4o-mini · "
        dom = browse(chromium, tmp_path / "profile1", "--dump-dom", gw.web_url)
        assert comment in dom, dom[-2000:]
        assert "12 tok" in dom or "→12 tok" in dom
        assert "401 rejected" in dom and "503 · alice" in dom
        # markers in symbols every system font has (DejaVu here): ✖ refused, ⚠ a 5xx answer
        assert dom.count("\u2716") == 1 and dom.count("\u26a0") == 1
        assert "127.0.0.1" not in dom.split("<tbody")[1].split("</tbody>")[0]  # the URL the client called, not the rewritten upstream
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shot = artifacts / "mitmweb.png"
        shot.unlink(missing_ok=True)
        browse(chromium, tmp_path / "profile2", f"--screenshot={shot}", gw.web_url)
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    finally:
        gw.stop()
