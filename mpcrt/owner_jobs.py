"""The owner's side of a served job: connect to both edge servers, start the job, be its dealer.

`start_job` opens, over mutual TLS, a control channel to each server (the job's
description: session id, program name, the server's dealer seed, options, arguments) and a
dealer channel (each party's corrections come from the owner), and returns a `Job` whose
`client` (mpcrt.owner_link.OwnerClient) shares inputs and receives outputs. Servers that are not
up yet are retried with backoff until `connect_timeout`; every failure names the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpcrt import ring
from mpcrt.dealer import DealerLimits, DealerRefused, DealerService
from mpcrt.owner_link import OwnerClient, ServerFailed, ServerLog
from mpcrt.server import CONTROL, DEALER, MAX_JOB_TIMEOUT, hello
from transports import TLSConfig, Transport, TransportError, connect, load_credentials, resolve_network

DEALER_REFUSED = "DealerRefused"  # ServerFailed.kind of a job the owner's dealer stopped


class ServerUnreachable(ConnectionError):
    """A server could not be reached, refused the job, or failed its TLS handshake."""

    def __init__(self, party_id: int, message: str) -> None:
        super().__init__(message)
        self.party_id = party_id


@dataclass
class Job:
    """A started job: `client` talks to the servers; close() ends the owner's side."""

    session: str
    client: OwnerClient
    dealer: DealerService
    names: tuple[str, str]
    _connections: list[Transport] = field(default_factory=list)
    _serving: list[asyncio.Task] = field(default_factory=list)

    async def close(self) -> None:
        await self.client.close()
        for task in self._serving:
            task.cancel()
        for conn in self._connections:
            await conn.close()


async def start_job(servers: tuple[tuple[str, int], tuple[str, int]], certs: str | Path, program: str,
                    args: dict[str, Any], seeds: tuple[bytes, bytes], *, name: str = "job",
                    frac_bits: int = ring.DEFAULT_FRAC_BITS,
                    truncation: str = "dealer", comparison: str = "auto", network: Any = None,
                    timeout: float = 120.0, connect_timeout: float = 30.0,
                    on_event: Callable[[int, dict], None] | None = None,
                    dealer_limits: DealerLimits | None = None, owner_network: Any = None,
                    on_log: Callable[[int, ServerLog], None] | None = None, dealer_workers: int = 0) -> Job:
    """Start `program` on both servers (the program's name in their registry).

    `network` and `owner_network`: the servers' link and this owner's link to each server
    (None, a preset name or {"bandwidth_mbps": ..., "rtt_ms": ...}), declared to both servers
    ("auto" weighs them) and simulated on top of the real links.
    `dealer_limits`: the most material the owner's dealer makes for this job (the program's
    plan bounds it; gan.budget for the GAN programs). A request the dealer refuses (beyond
    the limits, a repeated step, an unknown kind) ends the job with ServerFailed naming the
    server that asked. `timeout` (silence that ends the job) and `connect_timeout` (for
    reaching a server and its answer) are seconds above 0; the servers take timeouts up to
    MAX_JOB_TIMEOUT. `dealer_workers`: processes that make the dealer's material
    (mpcrt.dealer.workers; 0: this process makes it)."""
    for key, value, most in (("timeout", timeout, MAX_JOB_TIMEOUT), ("connect_timeout", connect_timeout, math.inf)):
        if (not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value)
                or not 0 < value <= most):
            limit = f" and at most {most:g}" if most < math.inf else ""
            raise ValueError(f"{key} must be a number of seconds above 0{limit}, got {value!r}")
    credentials = load_credentials(certs, "owner")
    session = secrets.token_hex(16)
    names = (f"server 0 ({servers[0][0]}:{servers[0][1]})", f"server 1 ({servers[1][0]}:{servers[1][1]})")
    opened: list[Transport] = []

    async def channel(i: int, fields: dict[str, Any]) -> Transport:
        host, port = servers[i]
        try:
            conn = await connect(host, port, tls=TLSConfig(credentials, f"party{i}"), timeout=connect_timeout)
        except TransportError as exc:
            raise ServerUnreachable(i, f"{names[i]}: {exc}; is `lpgan serve --party {i}` running there?") from exc
        opened.append(conn)
        try:
            await hello(conn, {**fields, "session": session}, connect_timeout, names[i])
        except ConnectionError as exc:
            raise ServerUnreachable(i, str(exc)) from exc
        return conn

    def control(i: int) -> dict[str, Any]:
        return {"channel": CONTROL, "program": program, "party": i, "seed": seeds[i], "args": args, "name": name,
                "frac_bits": frac_bits, "truncation": truncation, "comparison": comparison,
                "network": network, "owner_network": owner_network, "timeout": timeout}

    async def both(make: Any) -> list[Transport]:
        tasks = [asyncio.ensure_future(make(i)) for i in (0, 1)]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # the other server's channel may still be connecting: stop it first
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    try:
        controls = await both(lambda i: channel(i, control(i)))
        dealers = await both(lambda i: channel(i, {"channel": DEALER}))
    except BaseException:
        for conn in opened:
            with contextlib.suppress(Exception):
                await conn.close()
        raise
    client = OwnerClient((controls[0], controls[1]), seeds[1], frac_bits, timeout, on_event, names, on_log=on_log)

    def refused(refusal: DealerRefused) -> None:
        client.fail(ServerFailed(refusal.party_id, f"{names[refusal.party_id]}: {refusal}"
                                 if refusal.party_id in (0, 1) else str(refusal), DEALER_REFUSED))

    service = DealerService(*seeds, dealer_limits, on_refusal=refused, link=resolve_network(owner_network),
                            workers=dealer_workers)
    loop = asyncio.get_running_loop()
    serving = [loop.create_task(service.serve_connection(conn)) for conn in dealers]
    client.start()
    return Job(session, client, service, names, [*dealers], serving)
