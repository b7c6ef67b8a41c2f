"""The threads pool wakes the worker's event loop when a task finishes (celery/celery#6941).

Without it, a worker holding its prefetch limit of late-acknowledged runs idled until its next
timer (up to 2 s) after finishing them: bench/runs.py measured 2.8 runs/s end to end, 13 to 16
with the wake-up. Timings are the bench's business; this checks the mechanism: the finished
task's acknowledgement (its callback) is followed by a readable event on the loop's poller.
"""

import threading
from types import SimpleNamespace

from celery.concurrency.prefork import TaskPool as PreforkTaskPool
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from kombu.asynchronous import Hub

from swrly.celery import WakeLoopWhenTaskDone, app


def test_the_step_is_part_of_every_worker():
    assert WakeLoopWhenTaskDone in app.steps["worker"]


def test_a_finished_task_wakes_the_event_loop_after_its_acknowledgement():
    hub = Hub()
    pool = ThreadTaskPool(limit=1)
    pool.start()
    try:
        WakeLoopWhenTaskDone(SimpleNamespace()).register_with_event_loop(
            SimpleNamespace(pool=pool), hub
        )
        assert hub.poller.poll(0) in (None, [])  # nothing to read before any task
        acked = threading.Event()
        order: list[str] = []

        def ack(result):
            order.append(f"acked {result}")
            acked.set()

        pool.apply_async(lambda: "done", callback=ack)
        assert acked.wait(10)
        events = hub.poller.poll(5)  # returns at once when the pipe is readable
        [(fd, _)] = events
        assert fd in hub.readers
        assert order == ["acked done"]
        hub.readers[fd][0]()  # the loop's reader drains the pipe
        assert hub.poller.poll(0) in (None, [])
    finally:
        pool.stop()
        hub.close()


def test_a_consumer_restart_watches_the_same_pipe_and_wraps_the_pool_once():
    """After a lost broker connection the consumer runs a new loop and registers the steps
    again: the new loop is woken, and the pool's callback is not wrapped a second time."""
    pool = ThreadTaskPool(limit=1)
    pool.start()
    first, second = Hub(), Hub()
    worker = SimpleNamespace(pool=pool)
    step = WakeLoopWhenTaskDone(SimpleNamespace())
    try:
        step.register_with_event_loop(worker, first)
        wrapped = pool.on_apply
        first.close()  # the consumer's loop ends with the connection
        step.register_with_event_loop(worker, second)
        assert pool.on_apply is wrapped
        acked = threading.Event()
        pool.apply_async(lambda: None, callback=lambda _: acked.set())
        assert acked.wait(10)
        [(fd, _)] = second.poller.poll(5)
        assert fd == pool.swrly_wake_fd
    finally:
        pool.stop()
        second.close()


def test_other_pools_are_left_alone():
    hub = Hub()
    step = WakeLoopWhenTaskDone(SimpleNamespace())
    prefork = SimpleNamespace(pool=PreforkTaskPool.__new__(PreforkTaskPool))
    step.register_with_event_loop(prefork, hub)
    assert not hub.readers  # prefork's results already wake the loop
    hub.close()
