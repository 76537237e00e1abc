"""``python -m aiowax.visualize FLOW``: print the graph of a flow without running it.

A thin layer: the flow is found by the importer ``python -m aiowax`` uses
(`aiowax._importer`), with the same import-string forms and messages, and
rendered by `aiowax._graph`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiowax._definition.flow import Dataflow
from aiowax._graph import to_json, to_mermaid
from aiowax._importer import (
    DEFAULT_ATTR,
    FlowImportError,
    check_dataflow,
    factory_raised,
    import_from_cwd,
    load_target,
    parse_import_str,
)

#: Exit status when the flow cannot be loaded or the command line is wrong.
EXIT_USAGE = 2

_FORMATS: dict[str, Callable[[Dataflow], str]] = {"mermaid": to_mermaid, "json": to_json}

_EPILOG = f"""\
FLOW is found as 'python -m aiowax' finds it: 'module' (its attribute
'{DEFAULT_ATTR}'), 'module:attr', 'module:factory(literal args)', or a path to a .py
file with the same suffixes. The current directory is importable. The flow
is imported (its module's top-level code runs) but not run.

output formats:
  mermaid  a Mermaid flowchart, one subgraph per input (the default)
  json     Bytewax's dataflow encoding: {{"type": "Dataflow", "steps": [...]}}

exit status:
  0  the graph was printed
  2  usage error, or the flow cannot be loaded
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m aiowax.visualize``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Print the graph of an aiowax dataflow, without running it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "import_str",
        metavar="FLOW",
        help=f"where the flow is: 'module[:attr]' (attr defaults to '{DEFAULT_ATTR}'), "
        "'module:factory(args)', or a .py path with the same suffixes",
    )
    parser.add_argument(
        "-o",
        "--output-format",
        choices=tuple(_FORMATS),
        default="mermaid",
        help="what to print (default: mermaid)",
    )
    return parser


async def _awaited(obj: Awaitable[Any]) -> Any:
    return await obj


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Print the graph of the flow FLOW names; return the exit status.

    Args:
        argv: The arguments, without the program name (default:
            ``sys.argv[1:]``).
        prog: The program name for usage and messages (default:
            ``python -m aiowax.visualize``).

    Returns:
        The exit status: 0 when the graph was printed to stdout, 2 when the
            flow cannot be loaded (the reason, and the traceback when the
            user's code raised, go to stderr).

    Raises:
        SystemExit: For ``--help`` and usage errors, as `argparse` does.
    """
    parser = build_parser(prog or "python -m aiowax.visualize")
    options = parser.parse_args(argv)
    try:
        target = parse_import_str(options.import_str)
    except FlowImportError as exc:
        parser.error(exc.message)
    import_from_cwd()
    try:
        obj = load_target(target)
        if inspect.isawaitable(obj):
            try:
                obj = asyncio.run(_awaited(obj))
            except Exception as exc:
                raise factory_raised(target, exc) from exc
        flow = check_dataflow(obj, target)
    except FlowImportError as exc:
        print(f"{parser.prog}: error: {exc.message}", file=sys.stderr)
        if exc.details:
            print(exc.details.rstrip("\n"), file=sys.stderr)
        return EXIT_USAGE
    print(_FORMATS[options.output_format](flow))
    return 0
