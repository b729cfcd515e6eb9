"""Downward flow of coding standards through one node: fetch, verify, apply, re-serve.

Every node pins the ministry's TUF root (`[standards] trusted_root`). A non-ministry node polls
its parent's `/v1/standards/files/...` on a schedule, verifies everything with
`security.tuf_client.StandardsClient` against that root (so a relaying province cannot alter
what it passes on), makes the verified release the one in force atomically, and serves exactly
the verified bytes to its own children. The ministry serves its publishing repository folder
(`[standards] repository`) and verifies its own publication through the same client, reading
files directly.

Release contents are opaque here: `on_release(version, data)` hands them to whoever interprets
them. This module does not publish (see `security.tuf_publish` and `lsnet standards`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from hierarchy_config.model import NodeConfig
from node.clock import Clock
from node.validation import followed_provinces
from security.audit import AuditKind
from security.standards_trust import StandardsFileMissing, StandardsTrustError, VerifiedTarget
from security.tuf_client import StandardsClient
from sync.transport import client_session

if TYPE_CHECKING:
    from node.security_events import SecurityEvents

log = logging.getLogger("lsnet.standards")

FILES_PATH = "/v1/standards/files/"
WAIT_PATH = "/v1/standards/wait"


class StandardsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge(
            "lsnet_standards_release_version",
            "Version of the standards release in force here (0 = none yet)",
            registry=registry,
        )
        self.expires = Gauge(
            "lsnet_standards_expires_timestamp_seconds",
            "Earliest expiry of the verified standards metadata",
            registry=registry,
        )
        self.refused = Counter(
            "lsnet_standards_refused",
            "Standards updates refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.updates = Counter(
            "lsnet_standards_updates", "Standards releases put in force", registry=registry
        )


class StandardsChannel:
    def __init__(
        self,
        *,
        config: NodeConfig,
        state_dir: Path,
        clock: Clock,
        registry: CollectorRegistry,
        on_release: Callable[[int, bytes, Mapping[str, bytes]], None],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.events: SecurityEvents | None = None
        settings = config.standards
        assert settings.trusted_root is not None
        self.config = config
        self.clock = clock
        self.metrics = StandardsMetrics(registry)
        self.on_release = on_release
        self.repository = settings.repository
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[asyncio.Future[None]] = set()
        self._refreshing = asyncio.Lock()
        self._queued: asyncio.Future[bool] | None = None  # a refresh waiting to start
        self._session: aiohttp.ClientSession | None = None
        # The node's request-signing middleware (RFC 9421), set by the composition root.
        self.client_middlewares: tuple[aiohttp.ClientMiddlewareType, ...] = ()
        self.last_error: str | None = None
        self.provinces = followed_provinces(config)
        self.client = StandardsClient(
            settings.trusted_root.read_bytes(),
            state_dir / "metadata",
            state_dir / "targets",
            self._fetch_local if self.repository is not None else self._fetch_parent,
            settings.max_release_bytes,
            provinces=self.provinces,
            clock=lambda: datetime.fromtimestamp(clock.time_ms() / 1000, tz=UTC),
        )
        self.version = 0
        self.generation = 0  # bumps whenever what this node serves changes
        self._changed = asyncio.Event()
        self._repo_stamp: float | None = None
        self._state: tuple[int, tuple[str, ...]] = (0, ())
        self._announce(initial=True)

    # -- what this node serves -----------------------------------------------------------------
    def served_file(self, relative: str) -> bytes | None:
        """Bytes of one standards file this node serves to its children, or None."""
        if self.repository is not None:
            return _read_inside(self.repository, relative)
        return self.client.served_files().get(relative)

    # -- refresh ---------------------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Fetch, verify and put in force the newest release. True if the version changed.

        Calls that arrive while a refresh runs wait for one more refresh that starts after it
        (it sees whatever prompted them) and share its answer; they wait on the event loop, not
        on a worker thread. Without this every caller (start-up, the long-poll hint, the poll
        job, a rollout) took a thread of the loop's default executor only to wait on the
        client's lock: with hundreds of nodes in one process, half the threads did nothing
        while the fetches they waited for queued behind them."""
        while (waiting := self._queued) is not None:
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                if not waiting.cancelled():
                    raise  # this caller was cancelled
                # the caller that owned the queued refresh was cancelled: queue one again
        queued: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued = queued
        try:
            async with self._refreshing:
                if self._queued is queued:
                    self._queued = None
                changed = await self._refresh_once()
        except BaseException as exc:
            if self._queued is queued:
                self._queued = None
            if isinstance(exc, asyncio.CancelledError):
                queued.cancel()
            else:
                queued.set_exception(exc)
                queued.exception()  # retrieved: no warning when nobody else was waiting
            raise
        queued.set_result(changed)
        return changed

    async def _refresh_once(self) -> bool:
        self._loop = asyncio.get_running_loop()
        try:
            # The worker thread cannot be cancelled: keep it, so close() waits for it and a
            # restarted node never reads the state directory while it is being rewritten.
            task = asyncio.ensure_future(asyncio.to_thread(self.client.refresh))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            await asyncio.shield(task)
        except StandardsTrustError as exc:
            self.metrics.refused.labels(exc.code).inc()
            self.last_error = f"{exc.code}: {exc}"
            # A parent that is down or has nothing verified yet is routine; anything else is an
            # attack or a broken publication and must be seen.
            level = logging.INFO if exc.can_retry else logging.WARNING
            log.log(level, "STD refresh refused (%s): %s", exc.code, exc)
            if not exc.can_retry and self.events is not None:
                peer = self.config.parent.id if self.config.parent else self.config.node_id
                await self.events.emit(AuditKind.STANDARDS_REFUSED, peer=peer, code=str(exc.code))
            return False
        self.last_error = None
        changed = self._announce(initial=False)
        if changed and self.events is not None:
            kind = (
                AuditKind.STANDARDS_PUBLISHED
                if self.repository is not None
                else AuditKind.STANDARDS_IN_FORCE
            )
            await self.events.emit(
                kind,
                code="release",
                detail={"version": self.version, "generation": self.generation},
            )
        return changed

    def _announce(self, *, initial: bool) -> bool:
        try:
            release: VerifiedTarget = self.client.current_release()
        except StandardsTrustError:
            return False
        expires = self.client.expires()
        if expires is not None:
            self.metrics.expires.set(expires.timestamp())
        extensions = {}
        for province in self.provinces:
            ext = self.client.extension(province)
            if ext is not None:
                extensions[province] = ext
        state = (release.version, tuple(f"{p}:{e.sha256}" for p, e in sorted(extensions.items())))
        if state == self._state:
            return False
        self.on_release(release.version, release.data, {p: e.data for p, e in extensions.items()})
        self._state = state
        self.version = release.version
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        self.metrics.version.set(release.version)
        if not initial:
            self.metrics.updates.inc()
            log.info("STD release %d in force", release.version)
        return True

    # -- change notification (the "push hint": children long-poll their parent) ------------------
    async def wait_for_change(self, after: int, timeout_s: float) -> int:
        """Return the generation as soon as it differs from `after`, or after `timeout_s`."""
        if self.generation != after:
            return self.generation
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout_s)
        return self.generation

    def release_waiters(self) -> None:
        """Answer every pending long-poll now (the node is stopping)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow_parent(self, hint_timeout_s: float = 25.0) -> None:
        """Long-poll the parent's change hint and refresh at once when it fires; runs until
        cancelled. The scheduled poll stays as the safety net."""
        assert self.config.parent is not None
        url = self.config.parent.url + WAIT_PATH
        seen: int | None = None
        while True:
            try:
                generation = await self._wait_remote(url, seen, hint_timeout_s)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
                await self.clock.sleep(min(self.config.standards.poll_interval_s, 5.0))
                continue
            if generation != seen:
                if seen is not None:
                    await self.refresh()
                seen = generation

    async def _wait_remote(self, url: str, seen: int | None, timeout_s: float) -> int:
        session = self._client()
        params = {"after": str(-1 if seen is None else seen), "timeout": str(timeout_s)}
        per_call = aiohttp.ClientTimeout(total=timeout_s + 10)
        async with session.get(url, params=params, timeout=per_call) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            return int((await resp.json())["generation"])

    async def refresh_if_published(self) -> bool:
        """Ministry: refresh as soon as the repository's timestamp changes (cheap stat)."""
        if self.repository is None:
            return False
        try:
            stamp = (self.repository / "metadata" / "timestamp.json").stat().st_mtime
        except OSError:
            return False
        if stamp == self._repo_stamp:
            return False
        self._repo_stamp = stamp
        return await self.refresh()

    def _client(self) -> aiohttp.ClientSession:
        """The channel's one HTTP session towards the parent (made on first use)."""
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.sync.request_timeout_s)
            self._session = client_session(timeout, self.ssl_context, self.client_middlewares)
        return self._session

    async def close(self) -> None:
        if self._inflight:  # a refresh still running on its worker thread
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- fetchers (called on the refresh worker thread) -----------------------------------------
    def _fetch_local(self, relative: str, limit: int) -> bytes:
        assert self.repository is not None
        data = _read_inside(self.repository, relative, limit)
        if data is None:
            raise StandardsFileMissing(relative)
        return data

    def _fetch_parent(self, relative: str, limit: int) -> bytes:
        assert self._loop is not None and self.config.parent is not None
        url = self.config.parent.url + FILES_PATH + relative
        future = asyncio.run_coroutine_threadsafe(self._get(url, limit), self._loop)
        return future.result(timeout=self.config.sync.request_timeout_s + 5)

    async def _get(self, url: str, limit: int) -> bytes:
        session = self._client()
        async with session.get(url) as resp:
            if resp.status == 404:
                raise StandardsFileMissing(url)
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status} from {url}")
            if resp.content_length is not None:
                # Over the limit: the client reports the excess as too large.
                return (await resp.read())[: limit + 1]
            buf = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                buf.extend(chunk)
                if len(buf) > limit:
                    break  # the client reports the excess as too large
            return bytes(buf)


def _read_inside(root: Path, relative: str, limit: int | None = None) -> bytes | None:
    """Read `root/relative` only if it lies inside `root` (no traversal) and is a file."""
    if not relative or relative.startswith("/") or "\\" in relative:
        return None
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] not in ("metadata", "targets"):
        return None
    path = root.joinpath(*parts)
    try:
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            return fh.read() if limit is None else fh.read(limit + 1)
    except OSError:
        return None
