"""tollgate: an LLM egress gateway built as mitmproxy addons. The addons are listed in addons/gateway.py."""
