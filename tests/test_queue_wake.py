"""A request starts as soon as it reaches Gradio's queue (studio/queue_wake.py), though the idle queue only
looks for work now and then. The idle look is stretched to 30 s here: without the wake-up each call would wait
up to 30 s to start, so answers within a few seconds show that arrival itself starts the work."""

import asyncio
import concurrent.futures

import gradio as gr

import studio.queue_wake as queue_wake


def test_the_idle_sleep_ends_when_woken_and_other_sleeps_are_untouched(monkeypatch):
    monkeypatch.setattr(queue_wake, "IDLE_LOOK_SECONDS", 30.0)
    wakeable = queue_wake._Wakeable(asyncio)

    async def scenario():
        idle = asyncio.create_task(wakeable.sleep(30.0, "looked"))
        await asyncio.sleep(0.05)
        assert not idle.done()
        wakeable.wake()
        assert await asyncio.wait_for(idle, 5) == "looked"
        other = asyncio.create_task(wakeable.sleep(0.2, "slept"))  # any other sleep is asyncio's own
        await asyncio.sleep(0.05)
        wakeable.wake()
        await asyncio.sleep(0.05)
        assert not other.done()
        assert await asyncio.wait_for(other, 5) == "slept"
        assert wakeable.get_running_loop() is asyncio.get_running_loop()  # the rest of asyncio as it is

    asyncio.run(scenario())


def test_queued_calls_start_on_arrival_not_on_the_next_idle_look(monkeypatch):
    from gradio_client import Client

    monkeypatch.setattr(queue_wake, "IDLE_LOOK_SECONDS", 30.0)

    def double(x: float) -> float:
        return 2 * x

    with gr.Blocks() as app:
        gr.api(double, api_name="double", concurrency_limit=1)
    app.queue()
    queue_wake.wake_on_arrival(app._queue)
    assert app._queue.sleep_when_free == 30.0
    app.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            # one after another, then three at once through one slot: each waits for the one before, never
            # for the idle look, so all answer within seconds
            assert pool.submit(client.predict, 1.0, api_name="/double").result(timeout=10) == 2.0
            assert pool.submit(client.predict, 2.0, api_name="/double").result(timeout=10) == 4.0
            calls = [pool.submit(client.predict, float(x), api_name="/double") for x in (3, 4, 5)]
            assert [call.result(timeout=15) for call in calls] == [6.0, 8.0, 10.0]
    finally:
        app.close()
