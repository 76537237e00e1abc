"""0.17.2's file connectors: FileInput, DirInput and CSVInput in; FileOutput and DirOutput out.

Run twice on one recovery directory: the second run reads only the lines
appended since, and the outputs go on where they stopped. DirOutput keeps
0.17.2's default ``assign_file`` (Adler-32 of the key), so each key's lines
land in the file they did with 0.17.2.
"""

import tempfile
from datetime import timedelta
from pathlib import Path

from aiowax.connectors.files import CSVInput, DirInput, DirOutput, FileInput, FileOutput
from aiowax.dataflow import Dataflow
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingOutput, run_main


def run(tmp, db):
    flow = Dataflow()
    flow.input("file", FileInput(tmp / "words.txt"))
    flow.map(lambda word: (word[0], word.upper()))
    flow.output("one_file", FileOutput(tmp / "out.txt"))
    flow.output("dir", DirOutput(tmp / "out", 3))
    rows = []
    flow.input("csv", CSVInput(tmp / "table.csv"))
    flow.output("rows", TestingOutput(rows))
    lines = []
    flow.input("dir_in", DirInput(tmp / "in", glob_pat="*.txt"))
    flow.output("lines", TestingOutput(lines))
    run_main(flow, recovery_config=RecoveryConfig(db), epoch_interval=timedelta(0))
    print("out.txt:", (tmp / "out.txt").read_text().splitlines())
    for part in sorted((tmp / "out").iterdir()):
        print(f"out/{part.name}:", part.read_text().splitlines())
    print("rows:", rows)
    # Files of a directory interleave: sorted.
    print("dir lines:", sorted(lines))


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    db = tmp / "db"
    db.mkdir()
    init_db_dir(db, 1)
    (tmp / "out").mkdir()
    (tmp / "in").mkdir()
    (tmp / "words.txt").write_text("apple\nbanana\ncherry\n")
    (tmp / "table.csv").write_text("name,qty\napple,1\nbanana,2\n")
    (tmp / "in" / "x.txt").write_text("x1\nx2\n")
    (tmp / "in" / "y.txt").write_text("y1\n")
    (tmp / "in" / "skip.log").write_text("not read\n")
    run(tmp, db)
    with (tmp / "words.txt").open("a") as f:
        f.write("date\navocado\n")
    with (tmp / "table.csv").open("a") as f:
        f.write("cherry,3\n")
    with (tmp / "in" / "y.txt").open("a") as f:
        f.write("y2\n")
    run(tmp, db)
