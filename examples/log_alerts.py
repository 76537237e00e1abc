"""Turn a stream of web-server log lines into alerts.

Runs with nothing but aiowax installed:

    python -m aiowax examples/log_alerts.py

The flow parses each line, drops the healthy requests, looks up the owner
of each failing path with an ``async def`` call (standing in for a database
or HTTP lookup), and prints one alert per failure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import anyio

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource

PATHS = ["/", "/login", "/api/orders", "/api/users", "/static/app.js"]
OWNERS = {"/api/orders": "team-orders", "/api/users": "team-identity"}


def fake_log(count: int, seed: int = 7) -> list[str]:
    """A reproducible access log: ``METHOD PATH STATUS MILLISECONDS``."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        status = rng.choices([200, 404, 500, 503], weights=[90, 5, 3, 2])[0]
        lines.append(f"GET {rng.choice(PATHS)} {status} {rng.randint(1, 900)}")
    return lines


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    millis: int


def parse(line: str) -> Request:
    method, path, status, millis = line.split()
    return Request(method, path, int(status), int(millis))


def is_server_error(req: Request) -> bool:
    return req.status >= 500


async def with_owner(req: Request) -> tuple[Request, str]:
    await anyio.sleep(0)  # a real lookup would await the network here
    return req, OWNERS.get(req.path, "team-web")


def alert(pair: tuple[Request, str]) -> str:
    req, owner = pair
    return f"ALERT {req.status} on {req.path} ({req.millis} ms) -> page {owner}"


flow = Dataflow()
flow.input("access_log", TestingSource(fake_log(2_000), batch_size=100))
flow.map("parse", parse)
flow.filter("server_errors", is_server_error)
flow.map("lookup_owner", with_owner)
flow.map("format", alert)
flow.output("stdout", StdOutSink())
