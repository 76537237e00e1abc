"""0.17.2 file inputs subclassed the way 0.17.2's own CSVInput is written.

``JSONLInput(FileInput)`` overrides ``build_part(for_part, resume_state)``,
checks ``for_part`` against ``str(self._path)`` and reads ``self._path``
and ``self._batch_size``, as ``CSVInput`` does in 0.17.2's files.py; a
second subclass opens ``for_part`` itself as the path; a ``DirInput``
subclass opens ``self._dir_path / for_part``; a ``CSVInput`` subclass
passes ``self._fmtparams`` on. Run twice on one recovery directory, with
lines appended in between: the second run reads only the new ones.
"""

import json
import tempfile
from csv import DictReader
from datetime import timedelta
from pathlib import Path

from aiowax.connectors.files import CSVInput, DirInput, FileInput
from aiowax.dataflow import Dataflow
from aiowax.inputs import StatefulSource
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingOutput, run_main


class _Lines(StatefulSource):
    """One file's lines, parsed by ``parse``, one line a batch; its offset as the snapshot."""

    def __init__(self, path, resume_state, parse):
        self._f = open(path)  # noqa: SIM115 (closed by close(), as 0.17.2 sources are)
        if resume_state is not None:
            self._f.seek(resume_state)
        self._parse = parse

    def next_batch(self):
        line = self._f.readline()
        if not line:
            raise StopIteration()
        return [self._parse(line)]

    def snapshot(self):
        return self._f.tell()

    def close(self):
        self._f.close()


class JSONLInput(FileInput):
    def build_part(self, for_part, resume_state):
        assert for_part == str(self._path), "Can't resume reading from different file"
        assert self._batch_size == 10
        return _Lines(self._path, resume_state, json.loads)


class OpenByPart(FileInput):
    def build_part(self, for_part, resume_state):
        return _Lines(for_part, resume_state, str.strip)


class TaggedDir(DirInput):
    def build_part(self, for_part, resume_state):
        assert self._glob_pat == "*.txt" and self._batch_size == 1000
        return _Lines(self._dir_path / for_part, resume_state, lambda x: f"{for_part}:{x.strip()}")


class SemicolonRows(CSVInput):
    def build_part(self, for_part, resume_state):
        with open(self._path) as f:
            fields = next(DictReader(f, **self._fmtparams)).keys()
        return _Lines(self._path, resume_state, lambda x: (sorted(fields), x.strip()))


def run(tmp, db):
    inputs = {
        "jsonl": JSONLInput(tmp / "a.jsonl", batch_size=10),
        "by_part": OpenByPart(str(tmp / "b.txt")),
        "dir": TaggedDir(tmp / "in", glob_pat="*.txt"),
        "csv": SemicolonRows(tmp / "t.csv", delimiter=";"),
    }
    for name, inp in inputs.items():
        if name != "dir":
            print(name, "parts match the path:", inp.list_parts() == [str(inp._path)])
        else:
            print(name, "parts:", inp.list_parts())
    flow = Dataflow()
    outs = {}
    for name, inp in inputs.items():
        flow.input(name, inp)
        flow.output(f"{name}_out", TestingOutput(outs.setdefault(name, [])))
    run_main(flow, recovery_config=RecoveryConfig(db), epoch_interval=timedelta(0))
    for name, out in outs.items():
        print(name, sorted(out, key=str))


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    db = tmp / "db"
    db.mkdir()
    init_db_dir(db, 1)
    (tmp / "in").mkdir()
    (tmp / "a.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp / "b.txt").write_text("b1\nb2\n")
    (tmp / "in" / "x.txt").write_text("x1\n")
    (tmp / "in" / "y.txt").write_text("y1\n")
    (tmp / "t.csv").write_text("name;qty\napple;1\n")
    run(tmp, db)
    with (tmp / "a.jsonl").open("a") as f:
        f.write('{"a": 3}\n')
    with (tmp / "b.txt").open("a") as f:
        f.write("b3\n")
    with (tmp / "in" / "y.txt").open("a") as f:
        f.write("y2\n")
    with (tmp / "t.csv").open("a") as f:
        f.write("pear;2\n")
    run(tmp, db)
