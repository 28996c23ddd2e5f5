"""What a running cmschat holds for its lifetime: settings, database, clock, shared clients."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis, RedisCluster

from cmschat.accounts.auth import DummyHash
from cmschat.accounts.ratelimit import FailureCounter
from cmschat.admission import Admission
from cmschat.attachments.erasure import Eraser
from cmschat.attachments.storage import Storage
from cmschat.attachments.uploads import Limits
from cmschat.chat.caches import HotCaches
from cmschat.chat.messages.group_commit import GroupCommit
from cmschat.chat.messages.sending import SendRules
from cmschat.chat.ratelimit import SendLimiter
from cmschat.clock import Clock
from cmschat.db.session import Database
from cmschat.observability import instruments
from cmschat.realtime.broker import Broker
from cmschat.realtime.connections import Hub
from cmschat.realtime.presence import Presence
from cmschat.settings import Settings


@dataclass
class AppContext:
    """Built once at start-up by ``create_app``'s lifespan and shared by every request."""

    settings: Settings
    clock: Clock
    db: Database
    failures: FailureCounter
    token_key: bytes
    broker: Broker
    hub: Hub
    storage: Storage
    eraser: Eraser
    attachment_limits: Limits
    presence: Presence
    """Who is online on any instance (realtime/presence.py)."""
    caches: HotCaches | None = None
    """This process's membership and user caches (chat/caches.py); None: none kept."""
    redis: Redis | RedisCluster | None = None
    send_limiter: SendLimiter | None = None
    """Per-user message rate (``CMSCHAT_CHAT__SEND_RATE``); None when turned off."""
    dummy_hash: DummyHash = field(default_factory=DummyHash)
    draining: bool = False
    """Set on shutdown: /readyz answers 503 so load balancers move traffic away."""
    admission: Admission = field(init=False)
    """Sends in flight in this process (``CMSCHAT_CHAT__SENDS_IN_FLIGHT``); see admission.py."""
    sends: GroupCommit = field(init=False)
    """This process's send writer: concurrent sends share one transaction."""

    def __post_init__(self) -> None:
        chat = self.settings.chat
        self.admission = Admission(
            chat.sends_in_flight,
            retry_after=chat.busy_retry_after_seconds,
            on_refused=instruments.process_full,
        )
        self.sends = GroupCommit(self.db, lambda: self.send_rules, caches=self.caches)

    @property
    def send_rules(self) -> SendRules:
        """The limits every send obeys, whichever transport it came by."""
        return SendRules(
            max_length=self.settings.chat.max_message_length, limiter=self.send_limiter
        )
