"""A bulk run's live-monitor events on one event loop (``events.one_loop``): the same sends in
the same order, each waited for, on one loop kept for the run instead of a new loop and thread
per page; the loop closed at the end, never used by a forked worker."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from patient_data import events
from patient_data.bulk import workers
from tests.bulk_support import (
    engine_fixture,  # noqa: F401 - the "engine" fixture
    make_session,
    run,
)


@pytest.fixture
def sent(monkeypatch) -> list[tuple[asyncio.AbstractEventLoop, list[str], str, dict]]:
    """(loop, groups, message type, message) of every send the events module makes from now
    on (recorded where the layer would be called)."""
    found: list[tuple[asyncio.AbstractEventLoop, list[str], str, dict]] = []

    async def recorded(sends):
        loop = asyncio.get_running_loop()
        found.extend((loop, groups, message["type"], message) for groups, message in sends)
        return True

    monkeypatch.setattr(events, "_asend_all", recorded)
    return found


def test_the_publishes_of_a_block_go_out_in_order_on_one_loop_closed_at_its_end(sent):
    with events.one_loop():
        assert events.publish_batch([{"n": 1}]) is True
        assert events.publish({"session_ref": "ab" * 16}) is True
        assert events.publish_batch([], epoch_advanced=True) is True
    assert [kind for _, _, kind, _ in sent] == [
        events.BATCH_TYPE,
        events.EVENT_TYPE,
        events.BATCH_TYPE,
    ]
    assert sent[1][1] == [events.conf.PATIENT_EVENT_GROUP, events.session_group("ab" * 16)]
    loops = {loop for loop, _, _, _ in sent}
    assert len(loops) == 1
    assert loops.pop().is_closed()


def test_outside_a_block_each_publish_has_a_loop_of_its_own(sent):
    events.publish_batch([])
    events.publish_batch([])
    assert sent[0][0] is not sent[1][0]
    assert all(loop.is_closed() for loop, _, _, _ in sent)


def test_a_nested_block_keeps_the_outer_loop_and_a_raising_block_still_closes_it(sent):
    with pytest.raises(ZeroDivisionError), events.one_loop():
        events.publish_batch([])
        with events.one_loop():
            events.publish_batch([])
        events.publish_batch([])
        1 / 0  # noqa: B018 - the block raises
    assert len({loop for loop, _, _, _ in sent}) == 1
    assert sent[0][0].is_closed()
    events.publish_batch([])  # after the block: a loop of its own again
    assert sent[-1][0] is not sent[0][0]


def test_a_task_left_on_the_loop_is_cancelled_when_the_block_ends(monkeypatch):
    started: list[asyncio.Task] = []

    async def leaves_a_task(sends):
        started.append(asyncio.get_running_loop().create_task(asyncio.sleep(60)))
        return True

    monkeypatch.setattr(events, "_asend_all", leaves_a_task)
    with events.one_loop():
        events.publish_batch([])
    assert started[0].cancelled()


def _loop_in_child(answers) -> None:
    answers.put(getattr(events._loops, "loop", "missing") is None)


def test_a_forked_child_does_not_inherit_the_loop(sent):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    with events.one_loop():
        assert events._loops.loop is not None
        child = context.Process(target=_loop_in_child, args=(answers,))
        child.start()
        child.join(timeout=30)
    assert answers.get(timeout=5) is True


async def test_inside_a_running_loop_the_sync_publishes_refuse_as_before(sent):
    with pytest.raises(RuntimeError):
        events.publish_batch([])
    with events.one_loop(), pytest.raises(RuntimeError):
        events.publish_batch([])
    assert sent == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ["db"], indirect=True)
@pytest.mark.parametrize("count", [1, 2])
def test_a_sweep_sends_its_pages_and_summary_on_one_loop(engine, count, sent, monkeypatch):
    forked = []
    sweep = workers.sweep
    monkeypatch.setattr(workers, "sweep", lambda run: forked.append(sweep(run)) or forked[-1])
    for _ in range(25):
        make_session(engine)
    code, _ = run(
        "cleanup_patient_sessions", "--force", "--batch-size", "2", "--workers", str(count)
    )
    assert code == 0
    assert forked == [count == 2]  # two processes: ranges of 20 rows, the last one of 5
    kinds = [kind for _, _, kind, _ in sent]
    # A batch per page (13: 10 + 3 with two ranges), then the run's summary.
    assert kinds == [events.BATCH_TYPE] * 13 + [events.EVENT_TYPE]
    # Every cleanup of the 25 sessions in the batches, once; the summary counts them.
    refs = [event["session_ref"] for *_, message in sent[:-1] for event in message["events"]]
    assert len(refs) == len(set(refs)) == 25
    assert sent[-1][3]["event"]["sessions"] == 25
    assert len({loop for loop, _, _, _ in sent}) == 1
    assert sent[0][0].is_closed()
