"""The dispatcher: deliver due outbox rows to their queue's channels, and staff replies.

One round claims a batch of due rows (see `bot.notifications.outbox` for the claim
protocol), sends each to every destination of its queue that does not have it yet,
commits one `NotificationAttempt` per send, and then marks the row delivered, schedules
a retry (exponential backoff with jitter, never sooner than a channel's retry_after), or
marks it dead after `notifications.max_attempts` rounds.

Rate limits: a WeCom group robot takes about 20 posts a minute.  Before each post the
dispatcher counts the attempts to that robot in the last minute in the shared attempt
log, so every worker of the service keeps to one limit without a new table; when the
minute is used up the destination waits (this costs the row no attempt).  Two workers
checking at the same instant can still overshoot by a post; WeCom's 45009 answer is then
honoured with a minute's wait.  Telegram's limits are kept by the bot's own rate limiter.

A round also pushes staff messages to consumers whose channel can push (Telegram), in
order per consumer; the others are shown by the engine at the consumer's next message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import db
from bot.config import NotificationsConfig
from bot.models import ConsumerMessage, QueueChannel, utcnow
from bot.notifications import outbox
from bot.notifications.channels import DeliveryError, Sender, TargetMoved
from bot.notifications.queues import Destination, channel_ids_for, destinations
from bot.notifications.render import Labels, Notice, render

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Push = Callable[[str, str], Awaitable[None]]
RATE_WINDOW = timedelta(minutes=1)
BATCH_SIZE = 20
RELEASED = "released"
LOST = "lost"


@dataclass
class _PushFailures:
    """How often one consumer message failed in this process, and when to try again."""

    count: int
    not_before: datetime


class Dispatcher:
    """Delivers the outbox; `run` loops, `run_once` is one round (tests drive it)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: NotificationsConfig,
        senders: Mapping[str, Sender],
        labels: Labels,
        *,
        consumer_push: Mapping[str, Push] | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.senders = dict(senders)
        self.labels = labels
        self.consumer_push = dict(consumer_push or {})
        self.clock = clock
        self.rng = rng or random.Random()
        self.batch_size = batch_size
        self.rate_limits = {"wecom": settings.wecom_per_minute}
        self._push_failures: dict[int, _PushFailures] = {}
        # SQLite: one worker, one writer at a time, chat turns included (`_push_one`).
        self._single_writer = db.is_in_process(sessions.kw["bind"])

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver whatever is due every `poll_seconds`, until cancelled."""
        while True:
            try:
                claimed = await self.run_once()
            except Exception as error:  # noqa: BLE001 - the loop must outlive a bad round
                where = "".join(traceback.format_tb(error.__traceback__))
                log.error("notification round failed with %s\n%s", type(error).__name__,
                          where)
                claimed = 0
            if claimed < self.batch_size:
                await asyncio.sleep(self.settings.poll_seconds)

    async def run_once(self) -> int:
        """One round: claim due rows and deliver them, then push staff replies."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            await outbox.release_expired(session, now)
        async with self.sessions() as session, session.begin():
            claims = await outbox.claim_due(
                session, now, outbox.after(now, self.settings.lease_seconds), self.batch_size)
        unfinished = list(claims)
        try:
            while unfinished:
                await self.deliver(unfinished[0])
                unfinished.pop(0)
        except asyncio.CancelledError:
            await self._release(unfinished)
            raise
        await self.push_consumer_messages()
        return len(claims)

    async def _release(self, claims: list[outbox.Claim]) -> None:
        """Hand back rows this worker will not finish (it is stopping)."""
        if not claims:
            return
        async with self.sessions() as session, session.begin():
            for claim in claims:
                await outbox.release(session, claim, self.clock())

    # -- one row ----------------------------------------------------------------------------
    async def deliver(self, claim: outbox.Claim) -> str:
        """Send a claimed row to each destination that lacks it; returns its new status."""
        notice = render(claim.kind, claim.payload, claim.idempotency_key, self.labels,
                        self.clock())
        async with self.sessions() as session:
            targets = await destinations(session, claim.queue_id)
            done = await outbox.delivered_channel_ids(session, claim.id)
        failures: list[DeliveryError] = []
        waits: list[float] = []
        tried = False
        if not targets:
            failures.append(DeliveryError(f"queue {claim.queue_id} has no active channel"))
            await self._record(claim.id, None, failures[-1].reason)
        for destination in targets:
            if done.intersection(destination.channel_ids):
                continue
            if self._lease_left(claim) < self.settings.send_timeout_seconds:
                async with self.sessions() as session, session.begin():
                    await outbox.release(session, claim, self.clock())
                return RELEASED
            wait = await self._rate_wait(destination)
            if wait > 0:
                waits.append(wait)
                continue
            tried = True
            error = await self._send(destination, notice)
            await self._record(claim.id, destination.channel_id, error.reason if error else None)
            if isinstance(error, TargetMoved):
                await self._move(destination, error.new_target)
                waits.append(0.0)
            elif error is not None:
                failures.append(error)
        return await self._finish(claim, failures, waits, tried)

    def _lease_left(self, claim: outbox.Claim) -> float:
        return (claim.lease - self.clock()).total_seconds()

    async def _send(self, destination: Destination, notice: Notice) -> DeliveryError | None:
        """One send, bounded in time; every failure becomes a DeliveryError."""
        sender = self.senders.get(destination.kind)
        if sender is None:
            return DeliveryError(f"{destination.kind} channel is off in this service")
        try:
            async with asyncio.timeout(self.settings.send_timeout_seconds):
                await sender.send(destination.target, notice)
        except DeliveryError as error:
            return error
        except TimeoutError:
            return DeliveryError(f"{destination.kind} send timed out")
        except Exception as error:  # noqa: BLE001 - one broken channel must not stop the rest
            log.error("%s sender failed with %s\n%s", destination.kind, type(error).__name__,
                      "".join(traceback.format_tb(error.__traceback__)))
            return DeliveryError(f"{destination.kind} {type(error).__name__}")
        return None

    async def _record(self, notification_id: int, channel_id: int | None,
                      error: str | None) -> None:
        """Commit one attempt at once: a crash after a send must not forget it."""
        async with self.sessions() as session, session.begin():
            outbox.record_attempt(session, notification_id, channel_id, self.clock(), error)

    async def _rate_wait(self, destination: Destination) -> float:
        """Seconds until the destination's per-minute budget has room (0: send now)."""
        limit = self.rate_limits.get(destination.kind)
        if not limit:
            return 0.0
        now = self.clock()
        async with self.sessions() as session:
            ids = await channel_ids_for(session, destination.kind, destination.target)
            recent = await outbox.attempt_times(session, ids, now - RATE_WINDOW)
        if len(recent) < limit:
            return 0.0
        return max(0.0, (recent[-limit] + RATE_WINDOW - now).total_seconds())

    async def _move(self, destination: Destination, new_target: str) -> None:
        """Follow a chat that moved (a group upgraded to a supergroup)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(QueueChannel).where(QueueChannel.id.in_(destination.channel_ids))
                .values(target=new_target))
        log.info("queue channel %s moved to a new chat id", destination.channel_id)

    async def _finish(self, claim: outbox.Claim, failures: list[DeliveryError],
                      waits: list[float], tried: bool) -> str:
        """Delivered, retry later, or dead; nothing when another worker took the row."""
        now = self.clock()
        attempts = claim.attempts + (1 if tried or failures else 0)
        async with self.sessions() as session, session.begin():
            if failures:
                error = "; ".join(dict.fromkeys(failure.reason for failure in failures))
                if attempts >= self.settings.max_attempts:
                    settled = await outbox.mark_dead(session, claim, attempts, now, error)
                    status = outbox.DEAD
                else:
                    delay = max(
                        outbox.backoff_seconds(attempts, self.settings.backoff_base_seconds,
                                               self.settings.backoff_max_seconds, self.rng),
                        *(failure.retry_after or 0.0 for failure in failures))
                    settled = await outbox.schedule_retry(
                        session, claim, attempts, outbox.after(now, delay), error)
                    status = outbox.PENDING
            elif waits:
                settled = await outbox.schedule_retry(
                    session, claim, attempts, outbox.after(now, min(waits)), None)
                status = outbox.PENDING
            else:
                settled = await outbox.mark_delivered(session, claim, attempts, now)
                status = outbox.DELIVERED
        if not settled:
            log.warning("notification %s was taken over by another worker", claim.id)
            return LOST
        if status == outbox.DEAD:
            log.warning("notification %s is dead after %d attempts: %s", claim.id, attempts,
                        error)
        elif failures:
            log.info("notification %s will be retried (attempt %d failed: %s)", claim.id,
                     attempts, error)
        elif status == outbox.DELIVERED:
            log.info("notification %s delivered", claim.id)
        return status

    # -- staff replies to consumers ---------------------------------------------------------
    async def push_consumer_messages(self) -> int:
        """Push undelivered staff messages on channels that can push, oldest first."""
        pushed = 0
        for channel, push in self.consumer_push.items():
            async with self.sessions() as session:
                waiting = (await session.execute(
                    select(ConsumerMessage.id, ConsumerMessage.user_id)
                    .where(ConsumerMessage.channel == channel,
                           ConsumerMessage.delivered_at.is_(None))
                    .order_by(ConsumerMessage.id).limit(self.batch_size))).all()
            held: set[str] = set()  # a consumer whose earlier message failed waits for it
            for message_id, user_id in waiting:
                if user_id in held or not self._push_due(message_id):
                    held.add(user_id)
                    continue
                if await self._push_one(message_id, push):
                    pushed += 1
                else:
                    held.add(user_id)
        return pushed

    def _push_due(self, message_id: int) -> bool:
        failures = self._push_failures.get(message_id)
        return failures is None or failures.not_before <= self.clock()

    async def _push_one(self, message_id: int, push: Push) -> bool:
        """Send one staff message to its consumer and mark it delivered.

        On PostgreSQL every worker runs a dispatcher, so the row stays locked (FOR UPDATE
        SKIP LOCKED) while it is sent and no two workers send it.  SQLite serves one worker
        and admits one writer at a time (`bot.db`); holding its write lock across a
        network call would stall every chat turn for up to the send timeout.
        There the message is read, sent, then marked: a consumer who writes at that very
        moment may see it twice, never not at all.
        """
        if self._single_writer:
            return await self._push_unlocked(message_id, push)
        async with self.sessions() as session, session.begin():
            message = await session.scalar(
                select(ConsumerMessage)
                .where(ConsumerMessage.id == message_id, ConsumerMessage.delivered_at.is_(None))
                .with_for_update(skip_locked=True))
            if message is None:
                return True  # another worker or the engine delivered it
            if not await self._send_push(message_id, push, message.user_id, message.text):
                return False
            message.delivered_at = self.clock()
        self._push_failures.pop(message_id, None)
        return True

    async def _push_unlocked(self, message_id: int, push: Push) -> bool:
        async with self.sessions() as session:
            message = await session.scalar(
                select(ConsumerMessage)
                .where(ConsumerMessage.id == message_id, ConsumerMessage.delivered_at.is_(None)))
        if message is None:
            return True  # the engine showed it in the chat meanwhile
        if not await self._send_push(message_id, push, message.user_id, message.text):
            return False
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(ConsumerMessage)
                .where(ConsumerMessage.id == message_id, ConsumerMessage.delivered_at.is_(None))
                .values(delivered_at=self.clock()))
        self._push_failures.pop(message_id, None)
        return True

    async def _send_push(self, message_id: int, push: Push, user_id: str, text: str) -> bool:
        try:
            async with asyncio.timeout(self.settings.send_timeout_seconds):
                await push(user_id, text)
        except (DeliveryError, TimeoutError) as error:
            self._note_push_failure(message_id, error)
            return False
        return True

    def _note_push_failure(self, message_id: int, error: Exception) -> None:
        previous = self._push_failures.get(message_id)
        count = (previous.count if previous else 0) + 1
        reason = error.reason if isinstance(error, DeliveryError) else "timed out"
        if count >= self.settings.max_attempts:
            # Left undelivered: the engine shows it at the consumer's next message.
            self._push_failures[message_id] = _PushFailures(count, datetime.max.replace(
                tzinfo=self.clock().tzinfo))
            log.warning("consumer message %s not pushed after %d attempts (%s); it waits "
                        "for the consumer's next message", message_id, count, reason)
            return
        delay = outbox.backoff_seconds(count, self.settings.backoff_base_seconds,
                                       self.settings.backoff_max_seconds, self.rng)
        retry_after = error.retry_after if isinstance(error, DeliveryError) else None
        self._push_failures[message_id] = _PushFailures(
            count, outbox.after(self.clock(), max(delay, retry_after or 0.0)))
        log.info("consumer message %s not pushed (%s); retrying", message_id, reason)
