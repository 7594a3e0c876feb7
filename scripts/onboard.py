"""Onboards a developer machine: writes the gateway CA and a trust bundle (system CAs + gateway CA) to ~/.tollgate
and prints the settings for every runtime in the chosen shell's syntax. The same is served through the proxy at
http://tollgate/ (`curl -x http://gateway:8080 http://tollgate/`)."""

import argparse
from pathlib import Path

import certifi

from tollgate.core import onboarding


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/onboard", description=__doc__)
    parser.add_argument("--proxy", default="http://127.0.0.1:8080", help="the gateway's proxy URL")
    parser.add_argument("--confdir", type=Path, default=Path("~/.mitmproxy"), help="the gateway's confdir (its CA)")
    parser.add_argument("--shell", choices=onboarding.SHELLS, default="bash")
    parser.add_argument("--out", type=Path, default=Path("~/.tollgate"), help="where the CA and the bundle go")
    args = parser.parse_args()
    ca_file = args.confdir.expanduser() / "mitmproxy-ca-cert.pem"
    if not ca_file.is_file():
        parser.exit(1, f"onboard: no gateway CA at {ca_file}: start the gateway once (scripts/run), or give --confdir\n")
    out = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ca = ca_file.read_text()
    (out / "gateway-ca.pem").write_text(ca)
    (out / "bundle.pem").write_text(onboarding.bundle(Path(certifi.where()).read_text(), ca))
    print(f"# wrote {out / 'gateway-ca.pem'} and {out / 'bundle.pem'} (system CAs + gateway CA)")
    print(onboarding.settings(args.shell, args.proxy, str(out / "bundle.pem"), str(out / "gateway-ca.pem")))
    print(onboarding.notes(str(out / "gateway-ca.pem")))


if __name__ == "__main__":
    main()
