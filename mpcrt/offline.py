"""The offline phase: find out what material a program needs, before running it for real.

MPC programs have data-independent control flow, so the material a program asks for (one
request per product, truncation, AND...) is a function of its code and its public shapes.
A dry run in this process, with throwaway seeds, records that plan; the dealer then
generates the real material for the plan and ships it ahead (`DealerClient.prefetch`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from mpcrt import prg, ring
from mpcrt.dealer import CorrectionSource, DealerClient, LocalDealer, Request
from mpcrt.runtime import PartySettings, Program
from transports import pair, resolve_network


class _RecordingClient(DealerClient):
    """A party's dealer client that notes every request its program asks for, in order."""

    def __init__(self, party_id: int, seed: bytes, source: CorrectionSource) -> None:
        super().__init__(party_id, seed, source)
        self.requests: list[Request] = []

    async def get(self, request: Request) -> Any:
        self.requests.append(request)
        return await super().get(request)


async def record_plan(program: Program, *args: Any, frac_bits: int = ring.DEFAULT_FRAC_BITS, truncation: str = "dealer",
                      comparison: str = "auto", network: Any = None, timeout: float = 60.0,
                      owner_network: Any = None) -> list[Request]:
    """The dealer requests of `program(party, *args)`, in the order it makes them (its
    parties count as prefetched, as the run fetching this plan will, and declare the same
    links: see ops.policy.choose_method)."""
    network, owner_network = resolve_network(network), resolve_network(owner_network)
    seed0, seed1 = prg.new_key(), prg.new_key()
    dealer = LocalDealer(seed0, seed1)
    ends = pair()
    dealers = [_RecordingClient(0, seed0, dealer), _RecordingClient(1, seed1, dealer)]
    settings = PartySettings(timeout, frac_bits, truncation, comparison, network, owner_network, prefetched=True)
    parties = [settings.party(i, ends[i], dealers[i]) for i in (0, 1)]
    results = await asyncio.gather(*(p.run(program, *args) for p in parties), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"the dry run of the offline phase failed: {result!r}") from result
    return dealers[1].requests
