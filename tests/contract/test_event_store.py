"""One contract, every store: the in-memory store and the Postgres store."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from commands.store import ConcurrencyError, DuplicateCommand, IdempotencyClaim
from domain.envelope import START, Actor, Cursor, Metadata, NewEvent, StreamAppend

TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")


def meta(**kw: object) -> Metadata:
    base: dict[str, object] = {
        "actor": Actor(kind="user", id="u-1"),
        "tenant_id": TENANT,
        "correlation_id": uuid.uuid4(),
    }
    base.update(kw)
    return Metadata(**base)  # type: ignore[arg-type]


def ev(n: int, kind: str = "thing.happened") -> NewEvent:
    return NewEvent(event_type=kind, payload=b'{"n":%d}' % n)


def put(stream: str, expected: int, *events: NewEvent) -> StreamAppend:
    return StreamAppend(
        stream_id=stream, stream_type="thing", expected_version=expected, events=events
    )


async def test_append_then_read_stream_returns_events_with_their_envelope(harness) -> None:
    m = meta(command_id="cmd-1", causation_id=uuid.uuid4())
    result = await harness.store.append([put("s-1", 0, ev(1), ev(2))], m)
    assert len(result.positions) == 2
    assert result.positions[0] < result.positions[1]
    events = await harness.store.read_stream("s-1")
    assert [e.stream_version for e in events] == [1, 2]
    # Payloads are stored byte for byte (json, not jsonb).
    assert [e.payload for e in events] == [b'{"n":1}', b'{"n":2}']
    first = events[0]
    assert first.actor == m.actor
    assert first.tenant_id == TENANT
    assert first.correlation_id == m.correlation_id
    assert first.causation_id == m.causation_id
    assert first.command_id == "cmd-1"
    assert first.stream_type == "thing"
    assert first.transaction_id == result.transaction_id


async def test_read_stream_after_version_skips_earlier_events(harness) -> None:
    await harness.store.append([put("s-1", 0, ev(1), ev(2), ev(3))], meta())
    later = await harness.store.read_stream("s-1", after_version=1)
    assert [e.stream_version for e in later] == [2, 3]
    assert await harness.store.read_stream("missing") == []


async def test_append_conflicts_when_expected_version_is_stale(harness) -> None:
    await harness.store.append([put("s-1", 0, ev(1), ev(2))], meta())
    with pytest.raises(ConcurrencyError):
        await harness.store.append([put("s-1", 1, ev(3))], meta())
    with pytest.raises(ConcurrencyError):
        await harness.store.append([put("s-1", 0, ev(3))], meta())
    assert len(await harness.store.read_stream("s-1")) == 2


async def test_append_conflicts_when_expected_version_is_ahead_of_the_stream(harness) -> None:
    await harness.store.append([put("s-1", 0, ev(1))], meta())
    with pytest.raises(ConcurrencyError):
        await harness.store.append([put("s-1", 5, ev(2))], meta())
    assert [e.stream_version for e in await harness.store.read_stream("s-1")] == [1]


async def test_append_to_several_streams_is_all_or_nothing(harness) -> None:
    await harness.store.append([put("a", 0, ev(1))], meta())
    with pytest.raises(ConcurrencyError):
        await harness.store.append([put("b", 0, ev(1)), put("a", 0, ev(2))], meta())
    assert await harness.store.read_stream("b") == []
    await harness.store.append([put("b", 0, ev(1)), put("a", 1, ev(2))], meta())
    assert len(await harness.store.read_stream("a")) == 2


async def test_concurrent_appends_at_the_same_version_let_exactly_one_win(harness) -> None:
    await harness.store.append([put("s-1", 0, ev(0))], meta())

    async def attempt(i: int) -> bool:
        try:
            await harness.store.append([put("s-1", 1, ev(i))], meta())
        except ConcurrencyError:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert sum(outcomes) == 1
    assert [e.stream_version for e in await harness.store.read_stream("s-1")] == [1, 2]


async def test_idempotency_claim_is_recorded_once_and_blocks_a_repeat(harness) -> None:
    claim = IdempotencyClaim(
        principal="user:u-1", key="k-1", request_hash="h1", status_code=201, body=b'{"id":1}'
    )
    first = await harness.store.append([put("s-1", 0, ev(1))], meta(), idempotency=claim)
    with pytest.raises(DuplicateCommand):
        await harness.store.append([put("s-2", 0, ev(1))], meta(), idempotency=claim)
    assert await harness.store.read_stream("s-2") == []
    stored = await harness.store.find_response("user:u-1", "k-1")
    assert stored is not None
    assert (stored.status_code, stored.body, stored.request_hash) == (201, b'{"id":1}', "h1")
    assert stored.last_position == first.last_position
    assert await harness.store.find_response("user:u-2", "k-1") is None


async def test_idempotency_claim_without_events_is_still_recorded(harness) -> None:
    claim = IdempotencyClaim(principal="p", key="k", request_hash="h", status_code=200, body=b"{}")
    result = await harness.store.append([], meta(), idempotency=claim)
    assert result.positions == ()
    stored = await harness.store.find_response("p", "k")
    assert stored is not None
    assert stored.last_position is None


async def test_a_conflicting_command_records_no_idempotency_claim(harness) -> None:
    await harness.store.append([put("s-1", 0, ev(1))], meta())
    claim = IdempotencyClaim(principal="p", key="k", request_hash="h", status_code=200, body=b"{}")
    with pytest.raises(ConcurrencyError):
        await harness.store.append([put("s-1", 0, ev(2))], meta(), idempotency=claim)
    assert await harness.store.find_response("p", "k") is None


async def test_feed_returns_events_in_commit_order_after_a_cursor(harness) -> None:
    for i in range(5):
        await harness.store.append([put(f"s-{i}", 0, ev(i), ev(i + 100))], meta())
    everything = await harness.feed.read_after(START, 100)
    assert len(everything) == 10
    cursors = [e.cursor for e in everything]
    assert cursors == sorted(cursors)
    rest = await harness.feed.read_after(everything[3].cursor, 100)
    assert [e.event_id for e in rest] == [e.event_id for e in everything[4:]]
    page = await harness.feed.read_after(everything[3].cursor, 2)
    assert [e.event_id for e in page] == [e.event_id for e in everything[4:6]]
    assert await harness.feed.read_after(everything[-1].cursor, 10) == []


async def test_feed_cursor_orders_by_transaction_then_position() -> None:
    a = Cursor(transaction_id=5, position=100)
    b = Cursor(transaction_id=6, position=1)
    assert a < b
    assert Cursor(transaction_id=5, position=1) < a


async def test_wait_for_change_returns_when_an_append_commits(harness) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await harness.store.append([put("s-1", 0, ev(1))], meta())

    if hasattr(harness.feed, "listen"):
        await harness.feed.listen()
    task = asyncio.create_task(later())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await harness.feed.wait_for_change(5.0)
    assert loop.time() - started < 2.0
    await task
    assert len(await harness.feed.read_after(START, 10)) == 1


async def test_recorded_time_round_trips_to_the_microsecond(harness) -> None:
    from datetime import UTC, datetime

    moment = datetime(2026, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
    await harness.store.append([put("s-1", 0, ev(1))], meta(recorded_at=moment))
    (event,) = await harness.store.read_stream("s-1")
    assert event.recorded_at == moment
    (fed,) = await harness.feed.read_after(START, 10)
    assert fed.recorded_at == moment
