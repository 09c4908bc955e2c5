"""Audit events -> Redis Stream, off the decision path (docs/product.md §7).

``emit`` only appends to a bounded in-memory buffer, so a decision never waits for Redis. A
background task writes the buffer in batches, one Lua script per batch (so a batch lands
entirely or not at all), and removes a batch from the buffer only after Redis acknowledged it:
while Redis is down events stay buffered in order and are written once on recovery.

Exactly once: each batch carries this writer's sequence number, and the script skips a batch
whose number the stream has already seen (kept in one small key per writer process). A retry
after a lost reply — Redis ran the script, the client timed out — therefore adds nothing.

What does not fit in the buffer, or is still buffered when ``close`` gives up, is counted in
``stats.dropped`` and logged (by count and token id only; never event content).

Stream IDs are assigned by Redis (``*``) when a batch is written, so an entry's ID time is its
*write* time: at or after the event's ``time`` (by up to the flush interval, or the length of a
Redis outage); ``audit_reader`` reads the stream back with that in mind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from authz.config import AuditConfig
from authz.domain.audit_event import format_time
from authz.domain.audit_event import stream_id_ms as _ms

log = logging.getLogger(__name__)

RecordUse = Callable[[dict[str, tuple[int, float]]], Awaitable[None]]
"""Token store callback: token id -> (uses in this batch, latest use time, epoch seconds)."""

_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0
_DROP_LOG_INTERVAL = 1.0
_FAIL_LOG_INTERVAL = 30.0

_MARK_TTL_SECONDS = 7 * 86400
"""How long a writer's last batch number is kept after its last write."""

# KEYS: stream, writer mark. ARGV: mark ttl, batch seq, maxlen, minid ('' = no age trim), then
# one argument per event: its fields and values joined by NUL (see ``_encode_event``). One
# argument instead of two per field: packing ~37 arguments per event in redis-py's asyncio
# connection (pure Python) cost more CPU than the decision itself; splitting runs in Redis.
_WRITE_BATCH = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
if ARGV[4] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4]) end
local n = 0
for i = 5, #ARGV do
  local s = ARGV[i]
  local args = {KEYS[1], 'MAXLEN', '~', ARGV[3], '*'}
  local pos = 1
  while true do
    local e = string.find(s, '\\0', pos, true)
    if not e then
      args[#args + 1] = string.sub(s, pos)
      break
    end
    args[#args + 1] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
  redis.call('XADD', unpack(args))
  n = n + 1
end
return n
"""

_SEP = "\x00"


def _encode_event(event: dict[str, str]) -> bytes:
    """Fields and values alternately, NUL-joined, as UTF-8 (``_WRITE_BATCH`` splits it).

    NUL cannot occur in HTTP header values or paths; where it occurs anyway (a label set
    through the admin API) it becomes U+FFFD so the split stays exact. Lone surrogates
    cannot be encoded and become '?' rather than failing the whole batch forever.
    """
    joined = _SEP.join(itertools.chain.from_iterable(event.items()))
    if joined.count(_SEP) != 2 * len(event) - 1:
        joined = _SEP.join(
            x.replace(_SEP, "\ufffd") for x in itertools.chain.from_iterable(event.items())
        )
    return joined.encode("utf-8", "replace")


def _client_key(ip: str) -> str:
    """IPv6 clients counted per /64: one host usually holds a whole /64 to rotate through."""
    if ":" not in ip:
        return ip
    try:
        net = ipaddress.ip_network(f"{ip}/64", strict=False)
    except ValueError:
        return ip[:64]
    return f"{net.network_address}/64"


class UntrustedBudget:
    """Rate bound of events for calls without a valid token (docs/product.md §7).

    Anyone can send ``Authorization: Bearer jat_x``: such events are admitted per fixed window
    up to ``per_client`` per client address and ``total`` over all, the rest only counted. At
    the end of a window with suppressed calls, one summary event carries the counts (by
    reason and top client addresses). Memory is bounded by ``max_clients`` addresses per
    window; calls from further addresses are suppressed (and counted).
    """

    def __init__(self, cfg: AuditConfig) -> None:
        self.window = cfg.untrusted_window_seconds
        self.per_client = max(1, int(cfg.untrusted_per_client_per_second * self.window))
        self.total = max(1, int(cfg.untrusted_per_second * self.window))
        self.max_clients = cfg.untrusted_max_clients
        self.started = float("-inf")
        self.admitted = 0
        self.by_client: dict[str, int] = {}
        self.suppressed = 0
        self.suppressed_by_client: dict[str, int] = {}
        self.suppressed_by_reason: dict[str, int] = {}
        self.suppressed_total = 0
        """Since start: the metric's value."""

    def admit(self, client: str, reason: str, now: float) -> tuple[bool, dict[str, str] | None]:
        """Whether this event is written, and the summary of a window that just ended."""
        summary = self.roll(now)
        client = _client_key(client)
        seen = self.by_client.get(client)
        if seen is None and len(self.by_client) >= self.max_clients:
            ok = False
        else:
            ok = self.admitted < self.total and (seen or 0) < self.per_client
        if ok:
            self.admitted += 1
            self.by_client[client] = (seen or 0) + 1
            return True, summary
        self.suppressed += 1
        self.suppressed_total += 1
        if client in self.suppressed_by_client or len(self.suppressed_by_client) < 1000:
            self.suppressed_by_client[client] = self.suppressed_by_client.get(client, 0) + 1
        key = reason[:64]
        if key in self.suppressed_by_reason or len(self.suppressed_by_reason) < 64:
            self.suppressed_by_reason[key] = self.suppressed_by_reason.get(key, 0) + 1
        return False, summary

    def roll(self, now: float) -> dict[str, str] | None:
        """Start a new window when the current one is over; its summary if it suppressed any."""
        if now < self.started + self.window:
            return None
        summary = self._summary(now) if self.suppressed else None
        self.started = now
        self.admitted = 0
        self.by_client = {}
        self.suppressed = 0
        self.suppressed_by_client = {}
        self.suppressed_by_reason = {}
        return summary

    def _summary(self, now: float) -> dict[str, str]:
        top = sorted(self.suppressed_by_client.items(), key=lambda kv: -kv[1])[:10]
        reasons = sorted(self.suppressed_by_reason.items(), key=lambda kv: -kv[1])
        return {
            "time": format_time(now),
            "kind": "summary",
            "decision": "suppressed",
            "reason": "untrusted_rate_bound",
            "suppressed": str(self.suppressed),
            "window_start": format_time(self.started),
            "window_seconds": f"{self.window:g}",
            "clients": str(len(self.by_client) + sum(
                1 for c in self.suppressed_by_client if c not in self.by_client)),
            "top_clients": ",".join(f"{c[:64]}={n}" for c, n in top),
            "reasons": ",".join(f"{r}={n}" for r, n in reasons),
        }


_Item = tuple[dict[str, str], str | None, float]
"""(event, token id whose use it counts or None, emit time)."""


@dataclass(slots=True)
class AuditStats:
    """Counters for metrics. ``emitted`` counts events accepted into the buffer, so
    emitted == flushed + depth + (dropped at close); ``dropped`` also counts refused emits."""

    emitted: int = 0
    flushed: int = 0
    dropped: int = 0
    flush_errors: int = 0
    suppressed: int = 0
    """Events of calls without a valid token not written one by one (rate bound); each
    window's count is in a summary event."""
    _depth: Callable[[], int] = field(default=lambda: 0, repr=False, compare=False)

    @property
    def depth(self) -> int:
        """Events buffered, not yet written (the audit queue depth gauge)."""
        return self._depth()


class AuditStream:
    """Batched, bounded, asynchronous writer of the audit stream (``audit_reader`` reads it)."""

    def __init__(
        self,
        client: Redis,
        cfg: AuditConfig,
        token_store_record_use: RecordUse | None = None,
        clock: Callable[[], float] = time.time,
        *,
        age_trim_interval: float = 60.0,
        use_flush_interval: float = 1.0,
    ) -> None:
        """``client`` (standalone, Sentinel or Cluster; owned by the caller) should have short
        socket timeouts: the flush task retries with its own backoff. ``age_trim_interval``:
        how often the MINID trim runs when ``cfg.max_age_days`` > 0.
        """
        self._client = client
        self._cfg = cfg
        self._record_use = token_store_record_use
        self._clock = clock
        self._age_trim_interval = age_trim_interval
        self._buf: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._pending_uses: dict[str, tuple[int, float]] = {}
        self._use_flush_interval = use_flush_interval
        self._last_use_flush = float("-inf")
        self._next_age_trim = 0.0
        self._writer = uuid.uuid4().hex
        self._script: Any = None
        self._seq = 0
        self._pending: tuple[int, int] | None = None
        """(events, sequence number) of a batch whose write failed: retried unchanged."""
        self._drops_unlogged = 0
        self._drop_token = ""
        self._last_drop_log = float("-inf")
        self._last_fail_log = float("-inf")
        self.stats = AuditStats(_depth=self._buf.__len__)
        self._budget = UntrustedBudget(cfg)

    # --- decision path (synchronous, O(1)) -----------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._buf)

    def would_accept(self) -> bool:
        """Whether ``emit`` would keep an event now; strict mode denies the call otherwise."""
        return not self._closed and len(self._buf) < self._cfg.buffer_size

    def emit(
        self, event: dict[str, str], *, token_id: str | None = None, used: bool = False
    ) -> bool:
        """Queue one event; False when it was dropped (buffer full or stream closed).

        ``used``: the call counts as one use of ``token_id`` (default: the event's token id);
        uses are aggregated per written batch and passed to the token store callback.
        """
        tid = token_id if token_id is not None else event.get("token_id", "")
        if not event.get("token_id"):
            # No valid token: rate-bounded, the excess counted into a summary event.
            ok, summary = self._budget.admit(
                event.get("client_ip", ""), event.get("reason", ""), self._clock()
            )
            if summary is not None:
                self._queue(summary, "")
            if not ok:
                self.stats.suppressed += 1
                return True
        return self._queue(event, tid, used)

    def _queue(self, event: dict[str, str], tid: str, used: bool = False) -> bool:
        if not self.would_accept():
            self.stats.dropped += 1
            self._drops_unlogged += 1
            self._drop_token = tid
            self._log_drops()
            return False
        self._buf.append((event, tid if used and tid else None, self._clock()))
        self.stats.emitted += 1
        if len(self._buf) >= self._cfg.batch_size:
            self._wake.set()
        return True

    def _log_drops(self, *, force: bool = False) -> None:
        # Rate-limited so a full buffer under load cannot flood the log.
        now = time.monotonic()
        if self._drops_unlogged and (force or now - self._last_drop_log >= _DROP_LOG_INTERVAL):
            log.warning(
                "audit: dropped %d events (buffer of %d full or stream closed; last token id %s); "
                "%d dropped in total",
                self._drops_unlogged,
                self._cfg.buffer_size,
                self._drop_token or "-",
                self.stats.dropped,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now

    # --- background flushing -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the flush task (idempotent)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="audit-stream-flush")

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._stop.is_set() and len(self._buf) < self._cfg.batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._cfg.flush_interval_seconds):
                        await self._wake.wait()
            self._wake.clear()
            summary = self._budget.roll(self._clock())
            if summary is not None:
                self._queue(summary, "")
            self._log_drops()
            await self._maybe_flush_uses()  # also when traffic stopped after a batch
            if await self._drain():
                if failures:
                    log.info("audit: stream writable again after %d failed flushes", failures)
                failures = 0
                if self._stop.is_set() and not self._buf:
                    return
                continue
            failures += 1
            delay = min(_BACKOFF_CAP, _BACKOFF_START * 2 ** (failures - 1))
            if self._stop.is_set():
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()  # close() retries at once

    async def _drain(self) -> bool:
        """Write batches while there is a full one (the first, due by time, may be partial)."""
        first = True
        while self._buf and (
            first or self._stop.is_set() or len(self._buf) >= self._cfg.batch_size
        ):
            first = False
            if self._pending is None:
                self._seq += 1
                self._pending = (min(self._cfg.batch_size, len(self._buf)), self._seq)
            n, seq = self._pending
            batch = list(itertools.islice(self._buf, n))
            try:
                await self._write(batch, seq)
            except Exception as e:  # any Redis/network error: keep the batch, back off, retry
                self.stats.flush_errors += 1
                now = time.monotonic()
                loud = now - self._last_fail_log >= _FAIL_LOG_INTERVAL
                if loud:
                    self._last_fail_log = now
                log.log(
                    logging.WARNING if loud else logging.DEBUG,
                    "audit: writing %d events failed (%s: %s); %d buffered, retrying",
                    n,
                    type(e).__name__,
                    e,
                    len(self._buf),
                )
                return False
            # Only the flush task pops, only from the left; emit appends on the right: the
            # first n items are still exactly ``batch``.
            for _ in range(n):
                self._buf.popleft()
            self._pending = None
            self.stats.flushed += n
            await self._record_uses(batch)
        return True

    def _mark_key(self) -> str:
        """The writer's last-batch key, in the stream's cluster slot."""
        stream = self._cfg.stream
        base = stream if "{" in stream else "{" + stream + "}"
        return f"{base}:writer:{self._writer}"

    async def _write(self, batch: list[_Item], seq: int) -> None:
        cfg = self._cfg
        trim_age = cfg.max_age_days > 0 and time.monotonic() >= self._next_age_trim
        minid = str(_ms(self._clock() - cfg.max_age_days * 86400)) if trim_age else ""
        args: list[str | int | bytes] = [_MARK_TTL_SECONDS, seq, cfg.max_len, minid]
        args += [_encode_event(event) for event, _, _ in batch]
        if self._script is None:
            self._script = self._client.register_script(_WRITE_BATCH)
        await self._script(keys=[cfg.stream, self._mark_key()], args=args)
        if trim_age:
            self._next_age_trim = time.monotonic() + self._age_trim_interval

    async def _record_uses(self, batch: list[_Item]) -> None:
        if self._record_use is None:
            return
        pending = self._pending_uses
        for _, tid, at in batch:
            if tid is not None:
                count, last = pending.get(tid, (0, 0.0))
                pending[tid] = (count + 1, max(last, at))
        await self._maybe_flush_uses()

    async def _maybe_flush_uses(self) -> None:
        """Use counts are bookkeeping, not audit: aggregated over ``use_flush_interval`` they
        cost one store call per token per interval instead of one per batch."""
        now = time.monotonic()
        if self._pending_uses and now - self._last_use_flush >= self._use_flush_interval:
            self._last_use_flush = now
            await self._flush_uses()

    async def _flush_uses(self) -> None:
        # Uses of a failed callback are kept and merged into the next batch's: the events are
        # already written, so they must not be retried for the sake of the counters.
        if not self._pending_uses or self._record_use is None:
            return
        uses, self._pending_uses = self._pending_uses, {}
        try:
            await self._record_use(uses)
        except Exception as e:
            log.warning(
                "audit: recording use of %d tokens failed (%s); retrying with the next batch",
                len(uses),
                type(e).__name__,
            )
            for tid, (count, last) in uses.items():
                c, ts = self._pending_uses.get(tid, (0, 0.0))
                self._pending_uses[tid] = (c + count, max(ts, last))

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (for at most ``timeout`` seconds), then stop.

        Events still buffered after that are counted as dropped and logged.
        """
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-stream-flush")
        task = self._task
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            log.exception("audit: flush task failed")
        self._closed = True
        lost = len(self._buf)
        if lost:
            self._buf.clear()
            self.stats.dropped += lost
            log.error("audit: %d buffered events could not be written before shutdown", lost)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(0.1, timeout / 10)):
                await self._flush_uses()
        if self._pending_uses:
            log.warning("audit: use counts of %d tokens were not recorded", len(self._pending_uses))
            self._pending_uses.clear()
        self._log_drops(force=True)

    async def write_now(self, event: dict[str, str]) -> None:
        """One event written at once, past the buffer (an administrative action: the caller
        waits, and a failure is its error); capped by the stream's MAXLEN like a batch."""
        await self._client.xadd(self._cfg.stream, event,  # type: ignore[arg-type]
                                maxlen=self._cfg.max_len, approximate=True)
