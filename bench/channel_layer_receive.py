"""How much a process spends taking its sockets' messages off the channel layer.

``--messages`` cleanup events for ``--sockets`` local channels of one process, received by
one receive per channel as consumers do it: as a *burst* (all of them waiting before the
receives start: a bulk run's pages, a reconnect) and as a *trickle* (sent one by one to
waiting receives, 2 ms apart: the live side at a few hundred events a second). Compares
channels-redis' own ``RedisChannelLayer`` with the project's ``monitor.layers`` layer,
alternating, on the same Redis: the process's CPU and wall time per message (a trickle's
sends measured alone and taken off) and the Redis commands of the receiving side.

    .venv/bin/python bench/channel_layer_receive.py --redis redis://127.0.0.1:6379/2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def layers(url: str, prefix: str) -> dict:
    from channels_redis.core import RedisChannelLayer

    from monitor.layers import BlockingPoolRedisChannelLayer

    host = {"address": url, "socket_timeout": None}
    return {
        "channels_redis": lambda: RedisChannelLayer(
            hosts=[dict(host)], prefix=prefix, capacity=100_000
        ),
        "ours": lambda: BlockingPoolRedisChannelLayer(
            hosts=[dict(host, max_connections=200, timeout=20)],
            prefix=prefix,
            capacity=100_000,
        ),
    }


async def one_run(make, sockets: int, messages: int, trickle: bool) -> dict:
    from redis.asyncio.client import Redis

    layer = make()
    sender = make()
    channels = [await layer.new_channel() for _ in range(sockets)]
    event = {"session_ref": uuid.uuid4().hex[:20], "reason": "manual_cleanup", "items": 3}
    received = 0
    done = asyncio.Event()

    async def consumer(channel: str) -> None:
        nonlocal received
        while True:
            await layer.receive(channel)
            received += 1
            if received == messages:
                done.set()

    message = {"type": "patient_session.event", "event": event}
    if not trickle:  # a burst: all of it waits before the sockets' receives start
        for number in range(messages):
            await sender.send(channels[number % sockets], message)
    calls = 0
    execute = Redis.execute_command
    sender_client = sender.connection(0)

    async def counted(self, *args, **kwargs):
        nonlocal calls
        if self is not sender_client:
            calls += 1
        return await execute(self, *args, **kwargs)

    Redis.execute_command = counted
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        tasks = [asyncio.create_task(consumer(channel)) for channel in channels]
        if trickle:
            await asyncio.sleep(0.5)  # every receive waiting
            cpu, wall = time.process_time(), time.perf_counter()
            for number in range(messages):
                await sender.send(channels[number % sockets], message)
                await asyncio.sleep(0.002)
        await asyncio.wait_for(done.wait(), timeout=120)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        Redis.execute_command = execute
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await layer.flush()
    await layer.close_pools()
    await sender.close_pools()
    # The sender's CPU is in the same process: measured alone below and taken off.
    return {"cpu_s": cpu, "wall_s": wall, "receive_commands": calls}


async def sender_only(make, messages: int) -> float:
    sender = make()
    channel = await sender.new_channel()
    event = {"session_ref": uuid.uuid4().hex[:20], "reason": "manual_cleanup", "items": 3}
    cpu = time.process_time()
    for _ in range(messages):
        await sender.send(channel, {"type": "patient_session.event", "event": event})
        await asyncio.sleep(0.002)
    cpu = time.process_time() - cpu
    await sender.flush()
    await sender.close_pools()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ncp_asgi.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    prefix = f"ncp_bench_layer_{uuid.uuid4().hex[:8]}"
    makers = layers(args.redis, prefix)
    results: dict = {}
    for mode in ("burst", "trickle"):
        trickle = mode == "trickle"
        rows: dict = {name: [] for name in makers}
        for _ in range(args.rounds):
            for name, make in makers.items():
                run = asyncio.run(one_run(make, args.sockets, args.messages, trickle))
                if trickle:  # the sends were part of the measured time: take them off
                    run["cpu_s"] -= asyncio.run(sender_only(make, args.messages))
                rows[name].append(run)
        results[mode] = {
            name: {
                "cpu_us_per_message": statistics.median(r["cpu_s"] for r in runs)
                / args.messages
                * 1e6,
                "wall_ms_total": statistics.median(r["wall_s"] for r in runs) * 1e3,
                "receive_commands_per_message": statistics.median(
                    r["receive_commands"] for r in runs
                )
                / args.messages,
            }
            for name, runs in rows.items()
        }
        stock, ours = (results[mode][n]["cpu_us_per_message"] for n in makers)
        results[mode]["cpu_ratio_channels_redis_to_ours"] = stock / ours if ours else None
    results["load_average"] = os.getloadavg()
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
