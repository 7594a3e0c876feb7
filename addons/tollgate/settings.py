"""Loads the configuration, reloads it when the file changes, and sets the mitmproxy options it implies."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

from mitmproxy import ctx
from mitmproxy.proxy import mode_specs

from tollgate.core.access import host_pattern
from tollgate.core.config import Config, ConfigError, load_config, reload_problem
from tollgate.core.store import Store, open_store
from tollgate.flows import SharedStore
from tollgate.metrics import RELOADS

log = logging.getLogger("tollgate")

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "gateway.yaml")
POLL_SECONDS = 1.0


def host_regex(hostport: str) -> str:
    """allow_hosts entries are unanchored regexes over host:port: anchor them; '*' matches within the host; a
    trailing dot is the same host (mitmproxy matches case-insensitively)."""
    host, _, port = hostport.rpartition(":")
    return "^" + re.escape(host).replace(r"\*", "[^:]*") + r"\.?:" + re.escape(port) + "$"


class Settings:
    def __init__(self):
        self.config: Config | None = None
        self._store: Store | None = None
        self._shared: SharedStore | None = None
        self._store_url = ""
        self._closing: asyncio.Task | None = None  # closing a replaced store (the loop holds tasks weakly)
        self._stamp: tuple | None = None
        self._watcher: asyncio.Task | None = None

    def load(self, loader):
        loader.add_option("tollgate_config", str, DEFAULT_CONFIG,
                          "tollgate configuration file (YAML); edits are picked up without a restart")

    def configure(self, updated):
        if "tollgate_config" in updated:
            try:
                self._load()
            except ConfigError as e:
                if self.config is None:  # one line, no traceback: mitmproxy exits on an error logged at start
                    log.error("tollgate: bad configuration: %s", e)
                    return
                log.error("tollgate: configuration not reloaded, keeping the previous one: %s", e)
        if updated & {"tollgate_config", "mode", "connection_strategy", "allow_hosts"} and self.config:
            self._apply_options()

    def running(self):  # sync on purpose: an async running() breaks hot reload of the script
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def done(self):
        if self._watcher:
            self._watcher.cancel()
            self._watcher = None

    def current_store(self) -> Store | None:
        """The store if one is open (metrics read its error count without opening one)."""
        return self._store

    def store(self) -> SharedStore:
        """The shared store the configuration names (opened on first use, reopened when `store:` changes).
        A method, not a property: mitmproxy reads every attribute of an addon when it registers it."""
        memory_bytes = self.config.cache.memory_bytes if self.config.cache else 64 * 2**20
        if self._store is None or self._store_url != self.config.store:
            if self._store is not None:
                self._closing = asyncio.get_running_loop().create_task(self._store.close())
            self._store, self._store_url = open_store(self.config.store, memory_bytes), self.config.store
            self._shared = SharedStore(self._store)
            log.info("tollgate: shared store %s", self.config.store.split("@")[-1])  # no password in the log
        return self._shared

    def _file_stamp(self) -> tuple | None:
        """Changes when the main file or the consumers file it names changes."""
        stamp = []
        for path in (ctx.options.tollgate_config, self.config.consumers_file if self.config else ""):
            try:
                st = os.stat(path) if path else None
            except OSError:
                return None
            stamp.append((st.st_mtime_ns, st.st_size, st.st_ino) if st else None)
        return tuple(stamp)

    def _load(self) -> None:
        try:
            config = load_config(ctx.options.tollgate_config)
        except ConfigError:
            RELOADS.labels("failed").inc()
            raise
        if problem := reload_problem(self.config, config):
            RELOADS.labels("refused").inc()
            raise ConfigError(problem)
        self._adopt(config, None, "loaded")

    def _adopt(self, config: Config, stamp: tuple | None, verb: str) -> None:
        """Makes config the current one. stamp: the files' stamp taken before reading them, so an edit made while
        they were read is seen on the next poll (None: take it now, or when the consumers file changed)."""
        same_files = self.config is not None and config.consumers_file == self.config.consumers_file
        self.config = config
        RELOADS.labels("ok").inc()
        self._stamp = stamp if stamp is not None and same_files else self._file_stamp()
        for warning in config.warnings:
            log.warning("tollgate: %s", warning)
        log.info("tollgate: configuration %s from %s (%d providers, %d consumers)", verb,
                 ctx.options.tollgate_config, len(config.providers), len(config.consumers))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            stamp = self._file_stamp()
            if stamp is None or stamp == self._stamp:
                continue
            try:
                config = await asyncio.to_thread(load_config, ctx.options.tollgate_config)
            except ConfigError as e:
                RELOADS.labels("failed").inc()
                log.error("tollgate: configuration not reloaded, keeping the previous one: %s", e)
                self._stamp = stamp  # report a bad edit once, not every second
                continue
            if problem := reload_problem(self.config, config):
                RELOADS.labels("refused").inc()
                log.error("tollgate: configuration not reloaded, keeping the previous one: %s", problem)
                self._stamp = stamp
                continue
            self._adopt(config, stamp, "reloaded")
            self._apply_options()

    def _apply_options(self) -> None:
        """Decrypt only provider hosts, hosts with a transformation, and reverse-listener targets; connect upstream
        only after routing."""
        hosts = [h for p in self.config.providers.values() for h in p.hosts]
        hosts += [host_pattern(entry) for entry in self.config.known_ai_hosts]  # to refuse or record them
        hosts += [rule.hostport for rule in self.config.transform]  # decrypted only because a rule lists them
        for spec in ctx.options.mode:
            mode = mode_specs.ProxyMode.parse(spec)
            if isinstance(mode, mode_specs.ReverseMode):
                hosts.append("{}:{}".format(*mode.address))
        allow = sorted({host_regex(h) for h in hosts})
        changes = {}
        if ctx.options.connection_strategy != "lazy":
            changes["connection_strategy"] = "lazy"
        if list(ctx.options.allow_hosts) != allow:
            changes["allow_hosts"] = allow
        if changes:
            ctx.options.update(**changes)
