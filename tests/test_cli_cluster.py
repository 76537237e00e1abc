"""The cluster options of the command line (`aiowax._cli_cluster`): usage errors and -p.

The copies themselves run against a broker in tests/connectors/test_cluster.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiowax._cli import _apply_env_defaults, build_parser, main
from aiowax._cli_cluster import cluster_of, without_processes
from aiowax.recovery import init_db_dir

FLOW = "examples/log_alerts.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kafka-cluster", "h:1"], "--kafka-cluster needs --app-id NAME"),
        (["-p", "2"], "-p/--processes needs --kafka-cluster. Start every copy with"),
        # Bytewax 0.17.2's cluster of processes was "unrecognized arguments"
        # (improved on purpose: the error says what scales out instead).
        (["-i", "0"], "-i/--process-id is Bytewax's cluster of processes"),
        (
            ["--addresses", "a:1;b:2", "--kafka-cluster", "h:1", "--app-id", "a"],
            "-a/--addresses is Bytewax's cluster of processes",
        ),
        (["-a", "a:1"], "--kafka-cluster HOST:PORT --app-id NAME (-p N starts N of them"),
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


def _cluster(argv: list[str], environ: dict[str, str] | None = None) -> Any:
    parser = build_parser("aiowax")
    options = parser.parse_args([FLOW, *argv])
    from_env = _apply_env_defaults(parser, options, environ or {})
    return cluster_of(parser, options, from_env)


def test_partitions_replication_and_client_settings_reach_the_cluster(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# TLS and SASL\n"
        "security.protocol=SASL_SSL\n"
        "\n"
        "! a comment too\n"
        "sasl.mechanism = PLAIN\n"
        "sasl.username=u\n"
    )
    cluster = _cluster(
        [
            "--kafka-cluster", "h:1", "--app-id", "a",
            "--cluster-partitions", "12", "--replication-factor", "3",
            "--kafka-config-file", str(props),
            "--kafka-config", "sasl.username=override",
            "--kafka-config", "client.id=copy-1",
        ]
    )  # fmt: skip
    assert cluster.partitions == 12
    assert cluster.replication_factor == 3
    assert dict(cluster.add_config) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        # The command line wins over the file.
        "sasl.username": "override",
        "client.id": "copy-1",
    }


def test_the_cluster_settings_come_from_the_environment_too(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("client.id=from-file\n")
    environ = {
        "AIOWAX_KAFKA_CLUSTER": "h:1,h:2",
        "AIOWAX_APP_ID": "orders",
        "AIOWAX_CLUSTER_PARTITIONS": "4",
        "AIOWAX_REPLICATION_FACTOR": "2",
        "AIOWAX_KAFKA_CONFIG_FILE": str(props),
    }
    cluster = _cluster([], environ)
    assert cluster.brokers == ("h:1", "h:2")
    assert (cluster.app_id, cluster.partitions, cluster.replication_factor) == ("orders", 4, 2)
    assert dict(cluster.add_config) == {"client.id": "from-file"}
    # Exported for other runs, they are ignored by one without a cluster.
    del environ["AIOWAX_KAFKA_CLUSTER"]
    assert _cluster([], environ) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster-partitions", "3"], "--cluster-partitions needs --kafka-cluster"),
        (["--kafka-config", "a=b"], "--kafka-config needs --kafka-cluster"),
        (["--app-id", "orders"], "--app-id needs --kafka-cluster"),
        (
            ["--kafka-cluster", "h:1", "--app-id", "a", "--kafka-config", "novalue"],
            "expected KEY=VALUE",
        ),
        (
            ["--kafka-cluster", "h:1", "--app-id", "a", "--kafka-config", "bogus.key=1"],
            "bogus.key",
        ),
        (
            ["--kafka-cluster", "h:1", "--app-id", "a", "--kafka-config", "group.id=x"],
            "group.id",
        ),
        (
            ["--kafka-cluster", "h:1", "--app-id", "a", "--cluster-partitions", "0"],
            "must be an integer >= 1",
        ),
        (
            ["--kafka-cluster", "h:1", "--app-id", "a", "--kafka-config-file", "/no/such"],
            "cannot read '/no/such'",
        ),
    ],
)
def test_bad_cluster_settings_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([FLOW, *args], prog="aiowax")
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_line_of_the_config_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    props = tmp_path / "client.properties"
    props.write_text("client.id=x\njust words\n")
    with pytest.raises(SystemExit):
        main(
            [FLOW, "--kafka-cluster", "h:1", "--app-id", "a", "--kafka-config-file", str(props)],
            prog="aiowax",
        )
    assert f"'{props}' line 2: expected KEY=VALUE, got 'just words'" in capsys.readouterr().err


def test_a_flow_cluster_mode_cannot_run_is_one_line_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # helper-58: it was a traceback through aiowax's internals, with exit
    # status 1, and only after 30 s of asking brokers that do not answer.
    # Nothing listens on port 1: the refusal must not need the brokers.
    status = main([FLOW, "--kafka-cluster", "127.0.0.1:1", "--app-id", "demo"], prog="aiowax")
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("aiowax: error: cluster mode: step 'access_log' (input) uses TestingS")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
