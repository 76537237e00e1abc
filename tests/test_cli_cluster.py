"""The cluster options of the command line (`aiowax._cli_cluster`): usage errors and -p.

The copies themselves run against a broker in tests/connectors/test_cluster.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiowax._cli import main
from aiowax._cli_cluster import without_processes
from aiowax.recovery import init_db_dir

FLOW = "examples/log_alerts.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kafka-cluster", "h:1"], "--kafka-cluster needs --app-id NAME"),
        (["-p", "2"], "-p/--processes needs --kafka-cluster"),
        (["--kafka-cluster", "h:1", "--app-id", "a", "-w", "2"], "use -p N for N copies"),
        (["--kafka-cluster", "nohostport", "--app-id", "a"], "expected HOST:PORT"),
        (["--kafka-cluster", "h:1", "--app-id", "a", "-p", "0"], "must be an integer >= 1"),
        (["--kafka-cluster", "h:1", "--app-id", "bad id"], "cannot be part of a Kafka topic"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([FLOW, *args], prog="aiowax")
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_recovery_directory_is_refused_with_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_db_dir(tmp_path, 1)
    with pytest.raises(SystemExit):
        main([FLOW, "--kafka-cluster", "h:1", "--app-id", "a", "-r", str(tmp_path)], prog="aiowax")
    assert "keeps its state in Kafka changelog topics" in capsys.readouterr().err


def test_environment_gives_the_cluster_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIOWAX_KAFKA_CLUSTER", "h:1")
    with pytest.raises(SystemExit):
        main([FLOW], prog="aiowax")
    assert "--kafka-cluster needs --app-id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["f.py", "-p", "3", "-s", "1"], ["f.py", "-s", "1"]),
        (["f.py", "--processes", "3"], ["f.py"]),
        (["f.py", "--processes=3", "--app-id", "x"], ["f.py", "--app-id", "x"]),
        (["f.py", "-p3"], ["f.py"]),
    ],
)
def test_children_get_the_arguments_without_p(argv: list[str], expected: list[str]) -> None:
    assert without_processes(argv) == expected
