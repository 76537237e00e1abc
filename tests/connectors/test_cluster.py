"""Cluster mode end to end: copies started with the CLI share a flow through a real broker.

Each test starts copies with ``python -m aiowax FLOW --kafka-cluster ...
--app-id ...`` (the flows are in ``cluster_flows.py``), feeds a 6-partition
topic, waits until the output topic shows every key's final result, stops
the copies with SIGTERM and checks the results against what one process
computes (the counts of the input). Rebalances on Tansu take 3-4 s and a
dead copy's partitions move after the session timeout (10 s), so these
tests take tens of seconds each.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka_helpers import KafkaHelper, Record

pytestmark = pytest.mark.timeout(240)

FLOWS = Path(__file__).with_name("cluster_flows.py")
#: The longest a test waits for the copies to reach the final results.
SETTLE_S = 150.0


def _copy(kafka: KafkaHelper, factory: str, app_id: str, *more: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "aiowax",
        f"{FLOWS}:{factory}",
        "--kafka-cluster",
        kafka.bootstrap,
        "--app-id",
        app_id,
        "-s",
        "1",
        *more,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -9, err.decode(errors="replace")
    return proc.returncode, err.decode(errors="replace")


def _wait_until(
    kafka: KafkaHelper, topic: str, done: Callable[[list[Record]], bool], procs: list[Any]
) -> list[Record]:
    deadline = time.monotonic() + SETTLE_S
    records: list[Record] = []
    while time.monotonic() < deadline:
        records = kafka.consume(topic, 10**9, partitions=1, timeout=1.0)
        if done(records):
            return records
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                _, err = proc.communicate()
                pytest.fail(f"a copy exited with {proc.returncode}:\n{err.decode()[-3000:]}")
    pytest.fail(f"not settled within {SETTLE_S:g} s: {len(records)} output records")


def _counts(records: list[Record]) -> dict[str, list[tuple[int, int]]]:
    """Per key, its ``(count, pid)`` outputs in the order they were written."""
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        assert r.key is not None and r.value is not None
        count, pid = r.value.split()
        out[r.key.decode()].append((int(count), int(pid)))
    return out


def _all_counted(expected: Counter[str]) -> Callable[[list[Record]], bool]:
    def done(records: list[Record]) -> bool:
        got = _counts(records)
        return all(max((c for c, _ in got.get(k, [])), default=0) >= n for k, n in expected.items())

    return done


def _check_counts(
    records: list[Record], expected: Counter[str]
) -> dict[str, list[tuple[int, int]]]:
    got = _counts(records)
    assert set(got) == set(expected)
    for key, n in expected.items():
        counts = [c for c, _ in got[key]]
        # Exact: the newest count is the total, none ever went past it.
        assert counts[-1] == n, (key, counts[-5:], n)
        assert max(counts) == n, (key, n)
        # At least once: every running count was written.
        assert set(counts) == set(range(1, n + 1)), key
    return got


def _events(count: int, keys: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [(b"k%d" % rng.randrange(keys), b"%d" % i) for i in range(count)]


def test_three_processes_count_like_one(kafka: KafkaHelper) -> None:
    src = kafka.create_topic(6, "src")
    dst = kafka.create_topic(1, "dst")
    events = _events(20_000, 200, seed=1)
    kafka.produce(src, events)
    expected = Counter(k.decode() for k, _ in events)
    supervisor = _copy(
        kafka, f'counts("{kafka.bootstrap}", "{src}", "{dst}")', f"three-{src}", "-p", "3"
    )
    try:
        records = _wait_until(kafka, dst, _all_counted(expected), [supervisor])
    finally:
        status, err = _stop(supervisor)
    assert status == 0, err[-3000:]
    assert "started 3 processes" in err
    got = _check_counts(kafka.consume(dst, 10**9, partitions=1, timeout=1.0), expected)
    # The work was shared: every copy computed some keys.
    assert len({pid for outs in got.values() for _, pid in outs}) == 3
    assert records


def test_a_copy_killed_and_one_joining_lose_nothing(
    kafka: KafkaHelper, record_property: Callable[[str, object], None]
) -> None:
    src = kafka.create_topic(6, "src")
    dst = kafka.create_topic(1, "dst")
    events = _events(20_000, 200, seed=2)
    expected = Counter(k.decode() for k, _ in events)
    app = f"kill-{src}"
    factory = f'counts("{kafka.bootstrap}", "{src}", "{dst}")'
    copies = [_copy(kafka, factory, app) for _ in range(3)]
    try:
        kafka.produce(src, events[:10_000])
        first = Counter(k.decode() for k, _ in events[:10_000])
        # Running: all three copies have written, for their keys.
        _wait_until(
            kafka,
            dst,
            lambda rs: (
                len({int(r.value.split()[1]) for r in rs if r.value}) == 3
                and _all_counted(first)(rs)
            ),
            copies,
        )
        victim = copies[0]
        owned = {
            k
            for k, outs in _counts(kafka.consume(dst, 10**9, partitions=1)).items()
            if outs[-1][1] == victim.pid
        }
        assert owned
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.communicate()
        for start in range(10_000, 20_000, 1000):
            kafka.produce(src, events[start : start + 1000])
        joiner = _copy(kafka, factory, app)
        copies.append(joiner)
        records = _wait_until(kafka, dst, _all_counted(expected), copies[1:])
    finally:
        stopped = [_stop(proc) for proc in copies[1:]]
    for status, err in stopped:
        assert status == 0, err[-3000:]
    got = _check_counts(kafka.consume(dst, 10**9, partitions=1, timeout=1.0), expected)
    # How long the dead copy's keys waited: from the kill to the first count
    # a survivor wrote for one of them (Kafka timestamps, milliseconds).
    after = [
        r.timestamp_ms / 1000
        for r in records
        if r.key
        and r.key.decode() in owned
        and r.value
        and int(r.value.split()[1]) != victim.pid
        and r.timestamp_ms is not None
        and r.timestamp_ms / 1000 > killed_at
    ]
    assert after, "the survivors never took over the dead copy's keys"
    failover_s = min(after) - killed_at
    record_property("failover_s", round(failover_s, 2))
    print(f"\nfailover: the dead copy's keys were counted again {failover_s:.1f} s after SIGKILL")
    assert all(pid != victim.pid for outs in got.values() for _, pid in outs[-1:])


def test_event_time_windows_per_key_like_one_process(kafka: KafkaHelper) -> None:
    src = kafka.create_topic(6, "src")
    dst = kafka.create_topic(1, "dst")
    rng = random.Random(3)
    events: list[tuple[bytes, bytes]] = []
    expected: dict[tuple[str, int], int] = Counter()
    for k in range(40):
        times = sorted(rng.randrange(0, 100) for _ in range(100))
        for t in times:
            events.append((b"w%d" % k, b"%d" % t))
            expected[(f"w{k}", t // 10 * 10)] += 1
        # Far later: closes every window above (it stays open itself).
        events.append((b"w%d" % k, b"1000"))
    kafka.produce(src, events)
    supervisor = _copy(
        kafka, f'window_counts("{kafka.bootstrap}", "{src}", "{dst}")', f"win-{src}", "-p", "3"
    )

    def windows(records: list[Record]) -> dict[tuple[str, int], set[int]]:
        out: dict[tuple[str, int], set[int]] = defaultdict(set)
        for r in records:
            assert r.key is not None and r.value is not None
            start, count, _pid = r.value.split()
            out[(r.key.decode(), int(start))].add(int(count))
        return out

    try:
        _wait_until(kafka, dst, lambda rs: set(windows(rs)) >= set(expected), [supervisor])
    finally:
        status, err = _stop(supervisor)
    assert status == 0, err[-3000:]
    got = windows(kafka.consume(dst, 10**9, partitions=1, timeout=1.0))
    assert set(got) == set(expected)
    for window, n in expected.items():
        assert got[window] == {n}, (window, got[window], n)


# -- two replicas of a web app ------------------------------------------------------------

WEB_APP = Path(__file__).resolve().parents[2] / "examples" / "web_service.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Replica:
    """One ``examples/web_service.py`` process, started with the cluster flags."""

    def __init__(self, name: str, kafka: KafkaHelper, app_id: str, log: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.results: list[dict[str, Any]] = []
        #: The server ended the SSE stream (it must not while the flow runs).
        self.stream_ended = False
        self._log_file = log.open("wb")
        cmd = [
            sys.executable,
            str(WEB_APP),
            "--port",
            str(self.port),
            "--window",
            "1",
            "--lateness",
            "3",
            "--kafka-cluster",
            kafka.bootstrap,
            "--app-id",
            app_id,
            "--partitions",
            "4",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self._log_file)

    def assignments(self) -> list[str]:
        """The partitions Kafka gave this replica, one line per rebalance."""
        return [
            line.split("assigned ", 1)[1]
            for line in self.log.read_text(errors="replace").splitlines()
            if "': assigned " in line
        ]

    def stream(self, subscribed: threading.Event) -> None:
        """Collect the replica's SSE results until its stream ends (a thread)."""
        with httpx.stream("GET", f"{self.url}/stream", timeout=None) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith(": subscribed"):
                    subscribed.set()
                elif line.startswith("data: "):
                    self.results.append(json.loads(line[6:]))
        self.stream_ended = True

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self._log_file.close()
        return status, self.log.read_text(errors="replace")


def _poll(what: str, check: Callable[[], bool], replicas: list[Replica], wait: float = 60) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if check():
            return
        for replica in replicas:
            if replica.proc.poll() is not None:
                pytest.fail(
                    f"replica {replica.name} exited with {replica.proc.returncode}:\n"
                    f"{replica.log.read_text(errors='replace')[-3000:]}"
                )
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {wait:g} s")


def _healthy(replica: Replica) -> bool:
    try:
        return httpx.get(f"{replica.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_web_replicas_compute_each_sensor_on_one_of_them(
    kafka: KafkaHelper, tmp_path: Path
) -> None:
    app_id = f"web-{kafka.create_topic(1, 'marker')}"
    a = Replica("a", kafka, app_id, tmp_path / "a.log")
    replicas = [a]
    try:
        _poll(
            "replica a serves and has partitions",
            lambda: _healthy(a) and bool(a.assignments()),
            replicas,
        )
        # a's stream is opened before the rebalance that b's joining makes:
        # the sink's partitions close and are built again, the stream goes on.
        subscribed = [threading.Event(), threading.Event()]
        threading.Thread(target=a.stream, args=(subscribed[0],), daemon=True).start()
        _poll("a's stream subscribed", subscribed[0].is_set, replicas)
        b = Replica("b", kafka, app_id, tmp_path / "b.log")
        replicas.append(b)
        # Kafka has moved half the partitions to b once both have a share.
        _poll(
            "the partitions shared out between both replicas",
            lambda: (
                _healthy(b)
                and len(a.assignments()) >= 2
                and bool(b.assignments())
                and "nothing" not in a.assignments()[-1] + b.assignments()[-1]
            ),
            replicas,
        )
        threading.Thread(target=b.stream, args=(subscribed[1],), daemon=True).start()
        _poll("b's stream subscribed", subscribed[1].is_set, replicas)

        # Every sensor's readings go to both replicas, alternately.
        rng = random.Random(4)
        posted: dict[str, list[float]] = defaultdict(list)
        with httpx.Client(timeout=10) as client:
            for i in range(400):
                sensor = f"s{rng.randrange(40)}"
                value = float(rng.randrange(1000))
                replica = replicas[i % 2]
                response = client.post(
                    f"{replica.url}/events", json={"sensor": sensor, "value": value}
                )
                assert response.status_code == 202, response.text
                posted[sensor].append(value)

        def counted() -> dict[str, int]:
            totals: Counter[str] = Counter()
            for replica in replicas:
                for result in list(replica.results):
                    totals[result["sensor"]] += result["count"]
            return totals

        _poll(
            "every reading counted in a window result",
            lambda: counted() == {s: len(v) for s, v in posted.items()},
            replicas,
        )
        healths = [httpx.get(f"{r.url}/health", timeout=2).json() for r in replicas]
        assert not a.stream_ended, "a's stream ended at the rebalance"
    finally:
        stopped = [replica.stop() for replica in replicas]
    for status, log in stopped:
        # uvicorn shuts down, then re-raises the SIGTERM it caught.
        assert status == -signal.SIGTERM, log[-3000:]
        assert "Application shutdown complete." in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    assert [h["accepted"] for h in healths] == [200, 200]
    assert [h["late"] for h in healths] == [0, 0]
    computed_on: dict[str, set[str]] = defaultdict(set)
    merged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for replica in replicas:
        for result in replica.results:
            computed_on[result["sensor"]].add(replica.name)
            merged[result["sensor"]].append(result)
    # Each sensor's windows were computed on one replica only, and the work was shared.
    assert all(len(names) == 1 for names in computed_on.values()), computed_on
    assert {name for names in computed_on.values() for name in names} == {"a", "b"}
    for sensor, values in posted.items():
        results = merged[sensor]
        assert sum(r["count"] for r in results) == len(values)
        assert sum(r["sum"] for r in results) == pytest.approx(sum(values))
        assert min(r["min"] for r in results) == min(values)
        assert max(r["max"] for r in results) == max(values)
        windows = [r["window_start"] for r in results]
        assert len(windows) == len(set(windows)), sensor  # one result per window
