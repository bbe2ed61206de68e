"""The ``eventsourcing`` library's recorder test suite, run against our store.

The library's own test cases (``eventsourcing.tests.persistence``) exercise the
adapter in ops/esrecorder.py on a fresh migrated database each. Where our
ordering semantics differ on purpose, the case is marked xfail with the reason;
see docs/decisions/0003-eventsourcing-recorder-conformance.md.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from eventsourcing.tests import persistence as es_tests

from domain.envelope import Metadata, NewEvent, StreamAppend
from ops.esrecorder import ACTOR, ByteorApplicationRecorder, Factory
from schema.pg import connect


class _OnFreshDatabase:
    """``create_recorder`` returns an adapter on this test's fresh database."""

    dsn: str
    recorders: list[ByteorApplicationRecorder]

    @pytest.fixture(autouse=True)
    def _fresh_database(self, database: str) -> Iterator[None]:
        self.dsn = database
        self.recorders = []
        yield
        for recorder in self.recorders:
            recorder.close()

    def create_recorder(self) -> ByteorApplicationRecorder:
        recorder = ByteorApplicationRecorder(self.dsn, pool_size=12)
        self.recorders.append(recorder)
        return recorder


class TestApplicationRecorder(
    _OnFreshDatabase, es_tests.ApplicationRecorderTestCase[ByteorApplicationRecorder]
):
    def test_insert_subscribe(self) -> None:
        # Optional in the library's suite; our subscribe follows the commit-ordered feed.
        self.optional_test_insert_subscribe()


class TestNonInterleavingNotificationIDs(
    _OnFreshDatabase, es_tests.NonInterleavingNotificationIDsBaseCase
):
    # One race of two 1,000-event appends shows interleaved ids in most runs but
    # not all (measured: 40-85% of runs): whether the two statements overlap in the
    # server is timing. A recorder with the library's guarantee passes every race,
    # so repeating the race changes nothing for it, and makes our outcome certain.
    ATTEMPTS = 30

    @pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason=(
            "no table lock: positions come from a sequence drawn row by row, so ids of "
            "concurrent appends interleave; the gap-safe order is the feed's "
            "(transaction id, position), see docs/decisions/0003"
        ),
    )
    def test(self) -> None:
        for _ in range(self.ATTEMPTS):
            super().test()


def test_id_order_can_pass_over_a_late_commit_that_the_feed_order_delivers(
    database: str,
) -> None:
    """Why the adapter's subscribe() follows the feed, not the notification ids.

    Transaction A has the lower transaction id but draws its position after B;
    A commits while B is still open. An id-ordered reader then sees id 2 and,
    once B commits, never id 1 after it; the feed, ordered by transaction id,
    delivers B's event after A's.
    """
    recorder = ByteorApplicationRecorder(database)
    meta = Metadata(actor=ACTOR, tenant_id=None, correlation_id=uuid.uuid4())

    def one(state: bytes) -> list[StreamAppend]:
        payload = b'{"b64": "%s"}' % base64.b64encode(state)
        event = NewEvent(event_type="topic", payload=payload)
        return [
            StreamAppend(
                stream_id=str(uuid.uuid4()),
                stream_type=recorder.stream_type,
                expected_version=0,
                events=(event,),
            )
        ]

    async def begin() -> tuple[asyncpg.Connection, Transaction]:
        conn = await connect(database)
        tx = conn.transaction()
        await tx.start()
        return conn, tx

    try:
        a, a_tx = recorder.run(begin())
        b, b_tx = recorder.run(begin())
        # A takes its transaction id first (as a handler that wrote before appending).
        recorder.run(a.fetchval("SELECT pg_current_xact_id()"))
        b_positions = recorder.run(recorder.store.append(one(b"b"), meta, conn=b)).positions
        a_positions = recorder.run(recorder.store.append(one(b"a"), meta, conn=a)).positions
        assert (b_positions, a_positions) == ((1,), (2,))
        recorder.run(a_tx.commit())

        with recorder.subscribe(gt=None) as subscription:
            assert [n.id for n in recorder.select_notifications(None, 10)] == [2]
            assert next(subscription).id == 2

            recorder.run(b_tx.commit())
            # Following ids from 2 passes over 1; the feed still delivers it.
            assert recorder.select_notifications(2, 10, inclusive_of_start=False) == []
            assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2]
            late = next(subscription)
            assert (late.id, late.state) == (1, b"b")
        recorder.run(a.close())
        recorder.run(b.close())
    finally:
        recorder.close()


# An eventsourcing Application persisting through the adapter.


class Dog(Aggregate):
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(Application[uuid.UUID]):
    def register(self, name: str) -> uuid.UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: uuid.UUID, trick: str) -> None:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        self.save(dog)

    def tricks(self, dog_id: uuid.UUID) -> list[str]:
        dog: Dog = self.repository.get(dog_id)
        return list(dog.tricks)


def test_application_saves_and_reloads_through_the_adapter(database: str) -> None:
    env = {"PERSISTENCE_MODULE": "ops.esrecorder", "BYTEOR_CLOUD_DATABASE_URL": database}
    writer = DogSchool(env=env)
    try:
        assert isinstance(writer.factory, Factory)
        dog_id = writer.register("Fido")
        writer.add_trick(dog_id, "roll over")
        writer.add_trick(dog_id, "play dead")
    finally:
        writer.close()

    reader = DogSchool(env=env)
    try:
        assert reader.tricks(dog_id) == ["roll over", "play dead"]
        notifications = reader.notification_log.select(start=1, limit=10)
        assert [n.originator_version for n in notifications] == [1, 2, 3]
        assert {n.originator_id for n in notifications} == {dog_id}

        # The same events, as our store recorded them.
        recorder = reader.recorder
        assert isinstance(recorder, ByteorApplicationRecorder)

        async def rows() -> list[asyncpg.Record]:
            async with recorder.pool.acquire() as conn:
                return await conn.fetch(
                    "SELECT stream_id, stream_type, stream_version, event_type, actor_kind "
                    "FROM events ORDER BY position"
                )

        recorded = recorder.run(rows())
        assert [r["stream_version"] for r in recorded] == [1, 2, 3]
        assert {r["stream_id"] for r in recorded} == {str(dog_id)}
        assert {r["stream_type"] for r in recorded} == {"eventsourcing"}
        assert {r["actor_kind"] for r in recorded} == {"system"}
        assert recorded[1]["event_type"].endswith("Dog.TrickAdded")
    finally:
        reader.close()


def test_stale_application_write_is_an_integrity_error(database: str) -> None:
    env = {"PERSISTENCE_MODULE": "ops.esrecorder", "BYTEOR_CLOUD_DATABASE_URL": database}
    app = DogSchool(env=env)
    try:
        dog_id = app.register("Rex")
        first: Dog = app.repository.get(dog_id)
        second: Dog = app.repository.get(dog_id)
        first.add_trick("sit")
        app.save(first)
        second.add_trick("stay")
        with pytest.raises(IntegrityError):
            app.save(second)
        assert app.tricks(dog_id) == ["sit"]
    finally:
        app.close()
