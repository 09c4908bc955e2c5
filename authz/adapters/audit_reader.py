"""Reading the audit stream back (the admin audit query); the writer is ``audit_stream``.

Stream IDs are assigned by Redis when a batch is written, so an entry's ID time is its
*write* time: at or after the event's ``time`` (by up to the flush interval, or the length of a
Redis outage). ``query`` maps its time bounds to IDs with that in mind and filters on the
event's own ``time``; events are parsed by the schema's reader (``audit_event.parse_event``).
"""

from __future__ import annotations

from redis.asyncio import Redis

from authz.domain.audit_event import AuditRecord, as_text, parse_event
from authz.domain.audit_event import stream_id_ms as _ms


class AuditReader:
    def __init__(
        self,
        client: Redis,
        stream: str,
        *,
        query_lag_seconds: float = 3600.0,
        clock_skew_seconds: float = 60.0,
    ) -> None:
        """``query_lag_seconds``/``clock_skew_seconds``: how far an entry's write time (its ID)
        may lag behind / run ahead of the event time."""
        self._client = client
        self._stream = stream
        self._query_lag = query_lag_seconds
        self._clock_skew = clock_skew_seconds

    async def query(
        self,
        *,
        token_id: str | None = None,
        user: str | None = None,
        since: float | None = None,
        until: float | None = None,
        decision: str | None = None,
        limit: int = 100,
        page_size: int = 1000,
    ) -> list[AuditRecord]:
        """Events matching every given filter, newest (last written) first, at most ``limit``.

        ``since``/``until`` (epoch seconds, inclusive) bound the event ``time``. They narrow the
        scanned ID range only by margins the IDs can be trusted for: an entry is written at
        most ``query_lag_seconds`` after its event (longer Redis outages excepted) and a
        replica clock may run ``clock_skew_seconds`` ahead of Redis's.
        """
        if limit <= 0:
            return []
        hi = "+" if until is None else str(_ms(until + self._query_lag))
        lo = "-" if since is None else str(_ms(since - self._clock_skew))
        want_decision = decision.lower() if decision else None
        # Event times have millisecond resolution: compare in whole milliseconds.
        since_ms = None if since is None else _ms(since)
        until_ms = None if until is None else _ms(until)
        out: list[AuditRecord] = []
        while True:
            entries = await self._client.xrevrange(self._stream, max=hi, min=lo,
                                                   count=page_size)
            for entry_id, fields in entries or ():
                rec = parse_event(fields, entry_id)
                if token_id is not None and rec.token_id != token_id:
                    continue
                if user is not None and not rec.matches_user(user):
                    continue
                if want_decision is not None and rec.decision.lower() != want_decision:
                    continue
                if since_ms is not None or until_ms is not None:
                    ts = round(rec.timestamp * 1000)
                    if (since_ms is not None and ts < since_ms) or (
                        until_ms is not None and ts > until_ms
                    ):
                        continue
                out.append(rec)
                if len(out) >= limit:
                    return out
            if not entries or len(entries) < page_size:
                return out
            hi = "(" + as_text(entries[-1][0])
