"""Cluster mode on the command line: its options, and ``-p N`` local processes supervised.

``--kafka-cluster HOST:PORT[,...] --app-id NAME`` runs the flow as one copy
of the application (`aiowax.cluster.KafkaCluster`). ``-p N`` starts N such
copies as child processes of this one (``python -m aiowax`` with the same
arguments, without ``-p``), so a flow uses every core of a machine: a
signal here (SIGTERM, SIGINT) is passed to every child, which stops
gracefully; a child that ends on its own is reported, and the others go on.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from aiowax._util import install_hint

ENV_KAFKA_CLUSTER = "AIOWAX_KAFKA_CLUSTER"
ENV_APP_ID = "AIOWAX_APP_ID"
ENV_PROCESSES = "AIOWAX_PROCESSES"
ENV_CLUSTER_PARTITIONS = "AIOWAX_CLUSTER_PARTITIONS"
ENV_REPLICATION_FACTOR = "AIOWAX_REPLICATION_FACTOR"
ENV_KAFKA_CONFIG_FILE = "AIOWAX_KAFKA_CONFIG_FILE"
#: Set in each child of ``-p``: its index, for logs.
ENV_PROCESS_INDEX = "AIOWAX_PROCESS_INDEX"
#: Set in each child of ``-p``: the supervisor's pid (a child stops when it dies).
ENV_SUPERVISOR_PID = "AIOWAX_SUPERVISOR_PID"
#: linux/prctl.h: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Windows has no SIGHUP.
_SIGHUP: signal.Signals | None = getattr(signal, "SIGHUP", None)


def brokers(text: str) -> list[str]:
    """``--kafka-cluster``: comma-separated ``host:port``."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts) or not all(":" in part for part in parts):
        msg = f"expected HOST:PORT[,HOST:PORT...], got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return parts


def config_pair(text: str) -> tuple[str, str]:
    """``--kafka-config``: one ``KEY=VALUE`` librdkafka setting."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        msg = f"expected KEY=VALUE (a librdkafka setting), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return key.strip(), value.strip()


def config_file(text: str) -> dict[str, str]:
    """``--kafka-config-file``: a properties file of ``KEY=VALUE`` lines.

    The format of Kafka's ``client.properties``: ``#`` and ``!`` start a
    comment line, blank lines are skipped. Read at once, so a missing file
    or a bad line is a usage error that names the file and line.
    """
    try:
        lines = Path(text).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        msg = f"cannot read {text!r}: {exc.strerror or exc}"
        raise argparse.ArgumentTypeError(msg) from None
    settings: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        try:
            key, value = config_pair(line)
        except argparse.ArgumentTypeError:
            msg = f"{text!r} line {number}: expected KEY=VALUE, got {raw!r}"
            raise argparse.ArgumentTypeError(msg) from None
        settings[key] = value
    return settings


#: Bytewax 0.17.2's options of its cluster of processes: (dest, short, long).
_BYTEWAX_CLUSTER = (
    ("bytewax_process_id", "-i", "--process-id"),
    ("bytewax_addresses", "-a", "--addresses"),
)


def add_options(parser: argparse.ArgumentParser, count: Callable[[str], int]) -> None:
    """The cluster options of ``python -m aiowax``; ``count`` parses ``-p``."""
    group = parser.add_argument_group(
        "cluster mode",
        "Share the flow's work between copies of this application through Kafka "
        "consumer groups (see docs/scale-out.md).",
    )
    group.add_argument(
        "--kafka-cluster",
        metavar="HOST:PORT[,HOST:PORT...]",
        type=brokers,
        help=f"run as one copy of the application on these brokers (env {ENV_KAFKA_CLUSTER})",
    )
    group.add_argument(
        "--app-id",
        metavar="NAME",
        help="the application's name: its consumer group and the prefix of its "
        f"internal topics; needed with --kafka-cluster (env {ENV_APP_ID})",
    )
    group.add_argument(
        "-p",
        "--processes",
        metavar="N",
        type=count,
        help="start N copies as local processes and supervise them; needs "
        f"--kafka-cluster (env {ENV_PROCESSES}; default: 1, this process)",
    )
    group.add_argument(
        "--cluster-partitions",
        metavar="N",
        type=count,
        help="partitions of the internal repartition and changelog topics when they "
        "are created; checked against existing ones (env "
        f"{ENV_CLUSTER_PARTITIONS}; default: the most partitions of the source topics, "
        "else 6)",
    )
    group.add_argument(
        "--replication-factor",
        metavar="N",
        type=count,
        help=f"replication factor of the internal topics it creates (env "
        f"{ENV_REPLICATION_FACTOR}; default: 1)",
    )
    group.add_argument(
        "--kafka-config",
        metavar="KEY=VALUE",
        type=config_pair,
        action="append",
        help="a librdkafka setting for every client of the cluster (security, SASL...); "
        "repeat for more; settings here win over --kafka-config-file",
    )
    # Bytewax 0.17.2's cluster of processes, for migrated scripts (not in
    # --help): taken so the error can say what replaces them, rather than
    # argparse's "unrecognized arguments".
    for dest, short, long in _BYTEWAX_CLUSTER:
        group.add_argument(short, long, dest=dest, help=argparse.SUPPRESS)
    group.add_argument(
        "--kafka-config-file",
        metavar="PATH",
        type=config_file,
        help="a properties file of KEY=VALUE librdkafka settings: the place for secrets "
        f"(not on the command line, where 'ps' shows them) (env {ENV_KAFKA_CONFIG_FILE})",
    )


#: How to scale out instead, for the errors of Bytewax's options.
_SCALE_OUT = (
    "Start every copy with --kafka-cluster HOST:PORT --app-id NAME (-p N starts N "
    "of them here), or use -w N for N workers in one process (docs/scale-out.md)"
)

#: Options that mean something only in cluster mode (set from the command line).
_CLUSTER_ONLY = (
    # A run given an app id on its command line but no cluster (its
    # AIOWAX_KAFKA_CLUSTER unset, say) would run alone, reading everything.
    ("app_id", "--app-id"),
    ("cluster_partitions", "--cluster-partitions"),
    ("replication_factor", "--replication-factor"),
    ("kafka_config", "--kafka-config"),
    ("kafka_config_file", "--kafka-config-file"),
)


def cluster_of(
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    from_env: AbstractSet[str] = frozenset(),
) -> Any:
    """The `KafkaCluster` the options ask for, or None; usage errors for bad combinations."""
    for dest, short, long in _BYTEWAX_CLUSTER:
        if getattr(options, dest) is not None:
            parser.error(
                f"{short}/{long} is Bytewax's cluster of processes, which aiowax does not have: "
                f"copies of a flow share its work through Kafka here. {_SCALE_OUT}"
            )
    if options.kafka_cluster is None:
        if options.processes not in (None, 1):
            parser.error(f"-p/--processes needs --kafka-cluster. {_SCALE_OUT}")
        for dest, flag in _CLUSTER_ONLY:
            # From the environment alone they are only checked: a shell may
            # export them for the runs that are copies of a cluster.
            if getattr(options, dest) is not None and dest not in from_env:
                parser.error(f"{flag} needs --kafka-cluster")
        return None
    if not options.app_id:
        parser.error(f"--kafka-cluster needs --app-id NAME (or env {ENV_APP_ID})")
    if options.recovery_directory is not None:
        parser.error(
            "-r/--recovery-directory does not apply with --kafka-cluster: cluster mode "
            "keeps its state in Kafka changelog topics"
        )
    if (options.workers or 1) != 1:
        parser.error("-w/--workers does not apply with --kafka-cluster; use -p N for N copies")
    try:
        from aiowax._cluster.config import KafkaCluster
    except ImportError as exc:  # pragma: no cover - the kafka extra is missing
        parser.error(f"--kafka-cluster needs the kafka extra ({install_hint('kafka')}): {exc}")
    settings = {**(options.kafka_config_file or {}), **dict(options.kafka_config or [])}
    try:
        return KafkaCluster(
            brokers=options.kafka_cluster,
            app_id=options.app_id,
            partitions=options.cluster_partitions,
            replication_factor=options.replication_factor or 1,
            add_config=settings,
        )
    except Exception as exc:
        parser.error(str(exc))


def without_processes(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``-p``/``--processes`` option."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-p", "--processes"):
            skip = True
            continue
        if arg.startswith("--processes=") or (arg.startswith("-p") and arg[2:].isdigit()):
            continue
        out.append(arg)
    return out


def follow_supervisor(environ: Mapping[str, str]) -> None:
    """In a child of ``-p``: be sent SIGTERM, and so stop gracefully, if the supervisor dies.

    A child runs in a session of its own (see `supervise`), so neither a
    closed terminal's SIGHUP nor a SIGKILL of the supervisor reaches it:
    without this it would go on, unsupervised, holding its partitions.
    Linux's parent-death signal does it in the kernel; elsewhere a daemon
    thread looks at the parent's pid once a second.
    """
    raw = environ.get(ENV_SUPERVISOR_PID, "")
    if not raw.isdecimal():
        return
    supervisor = int(raw)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
            # Set after the fork: the supervisor may have died before.
            if os.getppid() != supervisor:
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def watch() -> None:  # pragma: no cover - the fallback off Linux
        while os.getppid() == supervisor:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="aiowax-supervisor-watch", daemon=True).start()


def exit_status(returncode: int) -> int:
    """A child's exit status as a shell reports it: 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def supervise(argv: Sequence[str], count: int, prog: str) -> int:
    """Run ``count`` copies of ``python -m aiowax argv`` until all have ended.

    Returns:
        0 if every copy ended with 0, else the first non-zero status.
    """
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signum == _SIGHUP else signum)

    # SIGHUP (the terminal closed) stops the children gracefully too: by
    # default it would kill the supervisor alone, leaving them on.
    forwarded = [signal.SIGTERM, signal.SIGINT] + ([_SIGHUP] if _SIGHUP is not None else [])
    previous = {sig: signal.signal(sig, forward) for sig in forwarded}
    try:
        for index in range(count):
            env = {
                **os.environ,
                ENV_PROCESS_INDEX: str(index),
                ENV_SUPERVISOR_PID: str(os.getpid()),
            }
            env.pop(ENV_PROCESSES, None)
            cmd = [sys.executable, "-m", "aiowax", *argv]
            # A session of its own: Ctrl-C reaches the supervisor only, which
            # passes it on once (twice would abort each child's graceful stop).
            try:
                children.append(subprocess.Popen(cmd, env=env, start_new_session=True))
            except OSError as error:
                # Out of processes or memory: the copies started stop
                # gracefully, and are waited for (none is left unsupervised).
                print(
                    f"{prog}: could not start process {index} of {count}: {error}; "
                    f"stopping the {len(children)} started",
                    file=sys.stderr,
                    flush=True,
                )
                for child in children:
                    child.terminate()
                for child in children:
                    child.wait()
                return 1
        print(
            f"{prog}: started {count} processes: {', '.join(str(c.pid) for c in children)}",
            file=sys.stderr,
            flush=True,
        )
        statuses: dict[int, int] = {}
        while len(statuses) < count:
            for index, child in enumerate(children):
                if index in statuses:
                    continue
                raw = child.poll()
                if raw is None:
                    continue
                code = statuses[index] = exit_status(raw)
                if code != 0 or not stopping:
                    left = count - len(statuses)
                    how = f"exited with status {code}"
                    if raw < 0:
                        how = f"was killed by {_signal_name(-raw)} (status {code})"
                    print(
                        f"{prog}: process {index} (pid {child.pid}) {how}; {left} still running",
                        file=sys.stderr,
                        flush=True,
                    )
            time.sleep(0.1)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [code for _, code in sorted(statuses.items()) if code != 0]
    return failed[0] if failed else 0
