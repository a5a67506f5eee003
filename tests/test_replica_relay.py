"""How a replica relays a streamed answer's events to the UI tier (studio/raytier/serve.py `_relay`), without a Ray
cluster: every event reaches the caller, in order, however the last one races the answer's end."""

from __future__ import annotations

import asyncio

from studio.raytier.serve import _relay


async def _collect(done, events, check_stop=None) -> list:
    return [event async for event in _relay(done, events, check_stop)]


def test_the_last_piece_taken_while_the_stop_word_is_checked_is_still_sent():
    """The piece that ends an answer arrives while the relay awaits its stop check; the answer ends then too. The
    relay's own reader takes that piece during the check: it must be sent, not dropped (a text once lost its tail)."""

    async def run() -> list:
        loop = asyncio.get_running_loop()
        done, events = loop.create_future(), asyncio.Queue()

        async def check_stop() -> None:
            if not done.done():
                events.put_nowait(("piece", "the end"))  # the worker's last piece, then its return
                done.set_result(None)
                for _ in range(3):
                    await asyncio.sleep(0)  # a check that waits, as the key-value lookup does on its thread

        events.put_nowait(("piece", "Once"))
        return await _collect(done, events, check_stop)

    assert asyncio.run(run()) == [("piece", "Once"), ("piece", "the end")]


def test_events_left_in_the_queue_when_the_answer_ends_are_all_sent_in_order():
    async def run() -> list:
        loop = asyncio.get_running_loop()
        done, events = loop.create_future(), asyncio.Queue()
        for i in range(5):
            events.put_nowait(("piece", str(i)))
        done.set_result(None)
        return await _collect(done, events)

    assert asyncio.run(run()) == [("piece", str(i)) for i in range(5)]
