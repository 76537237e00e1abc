"""``python -m aiowax IMPORT_STR``: run a dataflow (see `aiowax._cli`)."""

from aiowax._cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m aiowax"))
