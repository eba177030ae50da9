"""Relay a push naming a model version to every peer (RECEIVER_PEERS), in the background.

A push subscription has one endpoint, so a notification reaches one replica. That
replica relays every upload or delete that names a model version (and that the settings,
the same on every replica, do not rule out), whatever it made of it: queued, already
known (its sync may have beaten the push), or skipped or refused because of its own disk
or journal, which a peer's may not match (see `intake.Outcome.for_peers`). It sends the
same body with the headers that carry the event and the token to every peer's push
endpoint, marked `X-Receiver-Relayed: 1`. The peer verifies the original token exactly
as for a direct push: the marker only stops it relaying again (and waiting for the
install in `RECEIVER_ACK=installed` mode), never any check. The journal's per-generation
dedupe makes a relay of something a peer already has a harmless duplicate.

The answer to Pub/Sub never waits for a relay: `forward` only puts the push on a bounded
schedule (`QUEUE_LIMIT` deliveries, one per push and peer) that `SENDERS` threads of
this process work through (started on first use, so in each gunicorn worker process
after the fork). A peer that does not answer, or answers 429/5xx, is tried `ATTEMPTS`
times with doubling delays; after that, or when the schedule is full (peers down while
pushes keep coming, or more peers than it holds), the relay is dropped and left to the
peer's periodic sync. Relays cut short by a shutdown are left to sync the same way.
Each (push, peer) ends counted once in `receiver_relays_total{outcome}`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import requests

from receiver import metrics
from receiver.intake import Outcome
from receiver.peers import Peers
from receiver.vocabulary import RelayOutcome

log = logging.getLogger(__name__)

RELAYED_HEADER = "X-Receiver-Relayed"

# Headers that carry the event (every delivery format events.py reads) and the token.
_FORWARDED = frozenset(
    {
        "authorization",
        "content-type",
        "content-encoding",
        "traceparent",  # the peer's log lines join the same trace
        "x-cloud-trace-context",
        # unwrapped deliveries with write-metadata: the message attributes as headers
        "eventtype",
        "bucketid",
        "objectid",
        "objectgeneration",
        "payloadformat",
        "overwrittenbygeneration",
    }
)
_FORWARDED_PREFIXES = ("ce-", "x-goog-pubsub-")

ATTEMPTS = 4
FIRST_RETRY_SECONDS = 0.5  # then 1, 2: a token lives an hour, the relay goes out at once
QUEUE_LIMIT = 256  # (push, peer) deliveries one process holds; more are dropped to sync
SENDERS = 8  # threads per process; a peer has at most one send in flight (`_send`)
BUSY_PEER_DELAY = 0.5  # seconds before a delivery to a peer with a send in flight is looked at
CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 10.0  # a peer answers once journaled: milliseconds


def concerns_peers(outcome: Outcome) -> bool:
    """Whether the peers should hear of a push that ended here with `outcome`: whenever it
    names a model version, not only when it queued something here (sync never withdraws,
    and a peer's disk may not be this replica's)."""
    return outcome.for_peers


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's headers that a peer needs to parse and verify the same push."""
    kept = {
        name: value
        for name, value in headers.items()
        if name.lower() in _FORWARDED or name.lower().startswith(_FORWARDED_PREFIXES)
    }
    kept[RELAYED_HEADER] = "1"
    return kept


@dataclass
class _Delivery:
    body: bytes
    headers: dict[str, str]
    url: str | None = None  # None: not fanned out to the peers yet
    attempt: int = 0


@dataclass
class _Schedule:
    """Deliveries by the time they are due; at most `limit` of them."""

    limit: int
    _heap: list[tuple[float, int, _Delivery]] = field(default_factory=list)
    _ready: threading.Condition = field(default_factory=threading.Condition)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _busy: int = 0  # taken and not done yet

    def put(self, delivery: _Delivery, delay: float = 0.0) -> bool:
        with self._ready:
            if len(self._heap) >= self.limit:
                return False
            due = time.monotonic() + delay
            heapq.heappush(self._heap, (due, next(self._order), delivery))
            self._ready.notify()
            return True

    def take(self) -> _Delivery:
        """The next delivery due, waiting for one; call `done` when it has been handled."""
        with self._ready:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    self._busy += 1
                    return heapq.heappop(self._heap)[2]
                self._ready.wait(self._heap[0][0] - now if self._heap else None)

    def done(self) -> None:
        with self._ready:
            self._busy -= 1

    def __len__(self) -> int:
        """Deliveries due, waiting for their time, or being handled."""
        with self._ready:
            return len(self._heap) + self._busy


class Relay:
    """One per process: `forward` a push; sender threads deliver it to every peer."""

    def __init__(
        self,
        peers: Peers,
        own_port: int,
        senders: int = SENDERS,
        limit: int = QUEUE_LIMIT,
        first_retry: float = FIRST_RETRY_SECONDS,
        session: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        self.peers = peers
        self.own_port = own_port
        self._senders = senders
        self._first_retry = first_retry
        self._session = session
        self._schedule = _Schedule(limit)
        self._started = False
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()  # peers a sender is waiting on
        self._warned_of_too_many_peers = False

    def forward(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Schedule the push for every peer; returns at once (peers are looked up later)."""
        self._start()
        if not self._schedule.put(_Delivery(body, forwarded_headers(headers))):
            # Counted once, not per peer: the peers are looked up only when a push is sent.
            self._count(RelayOutcome.DROPPED, "the peers", "the relay queue is full")

    def pending(self) -> int:
        """Deliveries waiting or being sent."""
        return len(self._schedule)

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` for what is scheduled now to be sent (at shutdown); True
        if nothing is left. Retries that are not due by then are left to sync."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.pending()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        for n in range(self._senders):
            threading.Thread(target=self._send_forever, name=f"relay-{n}", daemon=True).start()

    def _send_forever(self) -> None:
        session = self._session()
        while True:
            delivery = self._schedule.take()
            try:
                if delivery.url is None:
                    self._fan_out(delivery)
                else:
                    self._send(session, delivery)
            except Exception:  # a sender thread must outlive any one delivery
                log.exception("relay to %s failed unexpectedly", delivery.url or "the peers")
            finally:
                self._schedule.done()  # after any retry or fan-out was put back

    def _fan_out(self, delivery: _Delivery) -> None:
        urls = self.peers.resolve(self.own_port)
        if not urls:
            log.info("relay: no peers found for %s", self.peers)
        if len(urls) > self._schedule.limit:
            self._warn_of_too_many_peers(len(urls))
        random.shuffle(urls)  # no peer is always first in line behind a hung one
        for url in urls:
            if not self._schedule.put(_Delivery(delivery.body, delivery.headers, url)):
                self._count(RelayOutcome.DROPPED, url, "the relay queue is full")

    def _send(self, session: requests.Session, delivery: _Delivery) -> None:
        assert delivery.url is not None
        with self._lock:
            busy = delivery.url in self._in_flight
            self._in_flight.add(delivery.url)
        if busy:
            # A peer that hangs holds one sender, not all of them: the healthy peers'
            # deliveries go on while this one waits its turn (not counted as an attempt).
            if not self._schedule.put(delivery, BUSY_PEER_DELAY):
                self._count(RelayOutcome.DROPPED, delivery.url, "the relay queue is full")
            return
        delivery.attempt += 1
        response: requests.Response | None = None
        try:
            response = session.post(
                delivery.url,
                data=delivery.body,
                headers=delivery.headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.RequestException as exc:
            problem = f"{type(exc).__name__}"
        finally:
            with self._lock:
                self._in_flight.discard(delivery.url)
        if response is not None:
            status = response.status_code
            response.close()
            if 200 <= status < 300:
                self._count(RelayOutcome.DELIVERED, delivery.url)
                return
            if 400 <= status < 500 and status != 429:
                self._count(RelayOutcome.REFUSED, delivery.url, f"the peer answered {status}")
                return
            problem = f"the peer answered {status}"
        if delivery.attempt >= ATTEMPTS:
            self._count(RelayOutcome.FAILED, delivery.url, f"{problem}, {ATTEMPTS} attempts")
            return
        delay = self._first_retry * 2 ** (delivery.attempt - 1)
        if not self._schedule.put(delivery, delay):
            self._count(RelayOutcome.DROPPED, delivery.url, f"{problem}; the relay queue is full")

    def _warn_of_too_many_peers(self, found: int) -> None:
        # Once a process: the drops are counted and logged per peer anyway; this says why.
        # The setting's name and the numbers only: never a header (the token rides in one).
        with self._lock:
            if self._warned_of_too_many_peers:
                return
            self._warned_of_too_many_peers = True
        log.warning(
            "relay: RECEIVER_PEERS gives %d peers, more than the relay queue holds (%d "
            "deliveries a process): the peers past that get no relays, only their own sync",
            found,
            self._schedule.limit,
        )

    @staticmethod
    def _count(outcome: RelayOutcome, peer: str, reason: str = "") -> None:
        metrics.RELAYS.labels(outcome=outcome).inc()
        if outcome == RelayOutcome.DELIVERED:
            log.debug("relayed to %s", peer)
        else:
            log.warning("relay to %s %s: %s; left to its sync", peer, outcome, reason)
