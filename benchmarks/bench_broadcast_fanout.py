"""Issue 11 acceptance, by hand: BroadcastSink, 100 subscribers (80 fast, 10 slow,
10 quitting) under an N-item flow, for one overflow policy.

usage: python benchmarks/bench_broadcast_fanout.py POLICY [N] [SLOW_EVERY]  (FAST=pure or mixed)
Slow reader k (k=0..9) sleeps 1 ms every SLOW_EVERY + 10*k items: reader 0 is the
slowest. Prints the run time, the slowest reader's own pace (the same reader alone
on the same flow, policy block), and what each kind of reader got.
"""
import asyncio
import os
import sys
import time

MIXED = os.environ.get("FAST", "mixed") == "mixed"

import aiowax
from aiowax.connectors.inproc import BroadcastSink, SubscriberOverflowError
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource


async def enrich(x):
    return x


def make_flow(n, sink):
    flow = Dataflow()
    flow.input("in", TestingSource(range(n), batch_size=1000))
    flow.map("enrich", enrich)  # async: batches up to 4096
    flow.output("out", sink)
    return flow


async def read_fast(sub, index):
    every = (1, 7, 0)[index % 3] if MIXED else 0
    expect = 0
    async for item in sub:
        assert item == expect, (item, expect)
        expect += 1
        if every and item % every == 0:
            await asyncio.sleep(0)
    return expect


async def read_slow(sub, every):
    got = 0
    last = -1
    try:
        async for item in sub:
            assert item > last
            last = item
            got += 1
            if got % every == 0:
                await asyncio.sleep(0.001)
    except SubscriberOverflowError:
        return got, "disconnected"
    return got, f"dropped={sub.dropped}"


async def read_quit(sub, after):
    got = 0
    if after == 0:
        sub.close()
        return 0
    async for item in sub:
        assert item == got
        got += 1
        if got == after:
            break
    return got


async def scenario(policy, n, slow_every):
    sink = BroadcastSink(buffer=1024, overflow=policy)
    fast = [asyncio.create_task(read_fast(sink.subscribe(), i)) for i in range(80)]
    slow = [asyncio.create_task(read_slow(sink.subscribe(), slow_every + 10 * k)) for k in range(10)]
    quit_ = [asyncio.create_task(read_quit(sink.subscribe(), n * i // 10)) for i in range(10)]
    t0 = time.monotonic()
    await aiowax.run(make_flow(n, sink))
    t_flow = time.monotonic() - t0
    fast_got = await asyncio.gather(*fast)
    slow_got = await asyncio.gather(*slow)
    quit_got = await asyncio.gather(*quit_)
    t_all = time.monotonic() - t0
    assert fast_got == [n] * 80, fast_got
    assert quit_got == [n * i // 10 for i in range(10)]
    return t_flow, t_all, slow_got


async def alone(n, slow_every):
    sink = BroadcastSink(buffer=1024, overflow="block")
    task = asyncio.create_task(read_slow(sink.subscribe(), slow_every))
    t0 = time.monotonic()
    await aiowax.run(make_flow(n, sink))
    await task
    return time.monotonic() - t0


def main():
    policy = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    slow_every = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    t_flow, t_all, slow_got = asyncio.run(scenario(policy, n, slow_every))
    print(f"{policy}: {n} items, 100 subscribers: flow {t_flow:.1f} s, all readers done {t_all:.1f} s")
    print(f"  fast: 80 x all {n} in order; quitting: 10 x their prefix; slow: {slow_got[:3]}...")
    if policy == "block":
        pace = asyncio.run(alone(n, slow_every))
        print(f"  slowest reader alone on the same flow: {pace:.1f} s -> ratio {t_all / pace:.2f}")


main()
