"""Group commit (commands/group_commit.py): appends that share a transaction keep
their own answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from commands.pgstore import PgEventStore
from commands.store import ConcurrencyError
from domain.envelope import Actor, AppendResult, Metadata, NewEvent, StreamAppend
from schema.pg import LeanPool


def meta(kind: str = "system", tenant: uuid.UUID | None = None) -> Metadata:
    return Metadata(
        actor=Actor(kind=kind, id="test"), tenant_id=tenant, correlation_id=uuid.uuid4()
    )


def put(stream: str, expected: int, i: int = 0) -> StreamAppend:
    return StreamAppend(
        stream_id=stream,
        stream_type="t",
        expected_version=expected,
        events=(NewEvent(event_type="t.e", payload=b'{"i":%d}' % i),),
    )


@pytest.fixture
async def store(database: str) -> AsyncIterator[PgEventStore]:
    s = PgEventStore(LeanPool(database, size=8), group_commit=True)
    assert s.group is not None
    s.group.max_inflight = 1  # everything that arrives during a write waits for one group
    yield s
    await s.close()


async def test_concurrent_appends_share_transactions_and_each_gets_its_own_position(
    store, pool
) -> None:
    tenants = [uuid.uuid4() for _ in range(200)]
    results = await asyncio.gather(
        *(store.append([put(f"g-{i}", 0, i)], meta(tenant=t)) for i, t in enumerate(tenants))
    )
    assert store.group is not None and store.group.groups >= 1
    assert store.group.grouped >= 100  # most of them were written in groups
    rows = await pool.fetch(
        "SELECT stream_id, position, transaction_id, tenant_id, payload::text AS p FROM events"
    )
    by_stream = {r["stream_id"]: r for r in rows}
    assert len(rows) == 200
    transactions = {r["transaction_id"] for r in rows}
    assert len(transactions) < 200  # commits were shared
    for i, result in enumerate(results):
        row = by_stream[f"g-{i}"]
        assert result.positions == (row["position"],)
        assert result.transaction_id == int(str(row["transaction_id"]))
        assert row["tenant_id"] == tenants[i]  # each keeps its own envelope
        assert row["p"] == f'{{"i":{i}}}'


async def test_a_stale_append_fails_alone_in_its_group(store, pool) -> None:
    for i in range(20):
        await store.append([put(f"s-{i}", 0)], meta())
    # Even streams: expected version 1 (right); odd: 0 (stale) or 5 (ahead).
    appends = [put(f"s-{i}", 1 if i % 2 == 0 else (0 if i % 4 == 1 else 5), 1) for i in range(20)]
    outcomes = await asyncio.gather(
        *(store.append([a], meta()) for a in appends), return_exceptions=True
    )
    for i, outcome in enumerate(outcomes):
        if i % 2 == 0:
            assert isinstance(outcome, AppendResult), outcome
        else:
            assert isinstance(outcome, ConcurrencyError)
            assert outcome.stream_id == f"s-{i}"
    versions = await pool.fetch(
        "SELECT stream_id, max(stream_version) AS v FROM events GROUP BY stream_id"
    )
    assert {r["stream_id"]: r["v"] for r in versions} == {
        f"s-{i}": 2 if i % 2 == 0 else 1 for i in range(20)
    }
    assert store.group is not None and store.group.groups >= 1


async def test_racing_appends_to_one_stream_let_exactly_one_win(store, database, pool) -> None:
    await store.append([put("race", 0)], meta())
    # Another process (its own store and pool) races this one for version 2.
    other = PgEventStore(LeanPool(database, size=8), group_commit=True)
    try:
        outcomes = await asyncio.gather(
            *(s.append([put("race", 1, i)], meta()) for i in range(10) for s in (store, other)),
            return_exceptions=True,
        )
    finally:
        await other.close()
    assert sum(isinstance(o, AppendResult) for o in outcomes) == 1
    assert all(isinstance(o, AppendResult | ConcurrencyError) for o in outcomes)
    rows = await pool.fetch("SELECT stream_version FROM events WHERE stream_id = 'race'")
    assert sorted(r[0] for r in rows) == [1, 2]


async def test_appends_to_one_stream_that_follow_each_other_are_not_grouped_together(
    store, pool
) -> None:
    # A second append to a stream waits for the next group, where it sees the first.
    blockers = [store.append([put(f"b-{i}", 0)], meta()) for i in range(5)]
    first = store.append([put("seq", 0, 1)], meta())
    second = store.append([put("seq", 1, 2)], meta())
    await asyncio.gather(*blockers, first, second)
    rows = await pool.fetch(
        "SELECT stream_version, payload::text AS p FROM events WHERE stream_id = 'seq' "
        "ORDER BY stream_version"
    )
    assert [(r[0], r[1]) for r in rows] == [(1, '{"i":1}'), (2, '{"i":2}')]


async def test_a_bad_append_gets_its_own_error_and_the_rest_of_its_group_is_written(
    store, pool
) -> None:
    good = [store.append([put(f"ok-{i}", 0)], meta()) for i in range(10)]
    bad = store.append([put("bad", 0)], meta(kind="nobody"))  # fails a check constraint
    outcomes = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(isinstance(o, AppendResult) for o in outcomes[:-1])
    assert not isinstance(outcomes[-1], AppendResult | ConcurrencyError)
    assert "actor_kind" in str(outcomes[-1])
    assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'ok-%'") == 10
    assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'bad'") == 0


async def test_an_idle_store_writes_an_append_at_once_alone(store) -> None:
    assert store.group is not None
    await store.append([put("alone", 0)], meta())
    assert store.group.groups == 0


async def test_a_group_keeps_every_field_as_given(store, pool) -> None:
    # The group travels as one JSON document: every column must come back as
    # the caller gave it, whatever JSON makes of it on the way.
    tenant, causation = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    payloads = [
        b'{"text":"caf\xc3\xa9 \\"quoted\\" \\\\ \\u00e9\\n","n":-1.5e3}',
        b'[1, 2,  {"spaced" : null}]',
        b'"a string"',
        b"42",
    ]
    given = [
        StreamAppend(
            stream_id=f"f-{i} é",
            stream_type="t",
            expected_version=0,
            events=(
                NewEvent(
                    event_type="t.e",
                    payload=payload,
                    schema_version=i + 1,
                    event_id=uuid.uuid4() if i % 2 else None,
                ),
            ),
        )
        for i, payload in enumerate(payloads)
    ]
    metas = [
        Metadata(
            actor=Actor(kind="user", id="ü-1"),
            tenant_id=tenant,
            correlation_id=uuid.uuid4(),
            causation_id=causation,
            command_id="cmd-not-a-uuid",
            recorded_at=at,
        ),
        Metadata(actor=Actor(kind="system", id="s"), tenant_id=None, correlation_id=uuid.uuid4()),
    ]
    before = await pool.fetchval("SELECT now()")
    await asyncio.gather(
        *(store.append([a], metas[i % 2]) for i, a in enumerate(given)),
        *(store.append([put(f"pad-{i}", 0)], meta()) for i in range(20)),  # make groups
    )
    assert store.group is not None and store.group.groups >= 1
    for i, a in enumerate(given):
        (event,) = await store.read_stream(a.stream_id)
        m = metas[i % 2]
        assert event.payload == payloads[i]
        assert event.stream_type == "t" and event.event_type == "t.e"
        assert event.stream_version == 1 and event.schema_version == i + 1
        assert event.event_id == a.events[0].event_id or a.events[0].event_id is None
        assert (event.tenant_id, event.causation_id) == (m.tenant_id, m.causation_id)
        assert (event.actor_kind, event.actor_id) == (m.actor.kind, m.actor.id)
        assert (event.correlation_id, event.command_id) == (m.correlation_id, m.command_id)
        if m.recorded_at is not None:
            assert event.recorded_at == at
        else:
            assert event.recorded_at >= before
    grouped = await pool.fetchval(
        "SELECT count(DISTINCT transaction_id) FROM events WHERE stream_id LIKE 'f-%'"
    )
    assert grouped < len(given)  # they did share commits


async def test_a_payload_that_is_not_one_json_value_cannot_reach_its_neighbours(
    store, pool
) -> None:
    # Spliced into the group's document as is, this would finish its own row
    # and start a row of its own, which the document's next keys complete.
    forged = (
        b'{"i":1},"tenant_id":null,"actor_kind":"system","actor_id":"x",'
        b'"correlation_id":"%s","causation_id":null,"command_id":null,"recorded_at":null},'
        b'{"event_id":null,"stream_id":"forged","stream_type":"t","stream_version":1,'
        b'"event_type":"t.e","schema_version":1,"payload":{"x":1}'
    ) % str(uuid.uuid4()).encode()
    bad = StreamAppend(
        stream_id="malformed",
        stream_type="t",
        expected_version=0,
        events=(NewEvent(event_type="t.e", payload=forged),),
    )
    good = [store.append([put(f"ok-{i}", 0)], meta()) for i in range(10)]
    outcomes = await asyncio.gather(*good, store.append([bad], meta()), return_exceptions=True)
    assert all(isinstance(o, AppendResult) for o in outcomes[:-1])
    assert isinstance(outcomes[-1], Exception)
    assert "json" in str(outcomes[-1]).lower()
    assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'ok-%'") == 10
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id <> ALL($1)", [f"ok-{i}" for i in range(10)]
        )
        == 0
    )
