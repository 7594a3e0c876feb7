"""Decisions in plain code: no mitmproxy imports here, so everything is unit-tested on plain data."""
