"""The offline phase: find out what material a program needs, before running it for real.

MPC programs have data-independent control flow, so the material a program asks for (one
request per product, truncation, AND...) is a function of its code and its public shapes.
A dry run in this process, with throwaway seeds, records that plan; the dealer then
generates the real material for the plan and ships it ahead (`DealerClient.prefetch`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from mpcrt import prg
from mpcrt.dealer import CorrectionSource, DealerClient, LocalDealer, Request
from mpcrt.runtime import Party, Program
from transports import pair, resolve_network


class _Recorder(CorrectionSource):
    def __init__(self, inner: CorrectionSource) -> None:
        self.inner = inner
        self.requests: list[Request] = []

    async def fetch(self, request: Request, party_id: int) -> list[torch.Tensor]:
        if party_id == 1:
            self.requests.append(request)
        return await self.inner.fetch(request, party_id)


async def record_plan(program: Program, *args: Any, frac_bits: int = 16, truncation: str = "dealer",
                      comparison: str = "auto", network: Any = None, timeout: float = 60.0,
                      owner_network: Any = None) -> list[Request]:
    """The dealer requests of `program(party, *args)`, in the order it makes them (its
    parties count as prefetched, as the run fetching this plan will, and declare the same
    links: see ops.policy.choose_method)."""
    network, owner_network = resolve_network(network), resolve_network(owner_network)
    seed0, seed1 = prg.new_key(), prg.new_key()
    recorder = _Recorder(LocalDealer(seed0, seed1))
    ends = pair()
    dealers = [DealerClient(0, seed0, recorder), DealerClient(1, seed1, recorder)]
    parties = [Party(i, ends[i], timeout=timeout, frac_bits=frac_bits, dealer=dealers[i], truncation=truncation,
                     comparison=comparison, network=network, prefetched=True, owner_network=owner_network)
               for i in (0, 1)]
    results = await asyncio.gather(*(p.run(program, *args) for p in parties), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"the dry run of the offline phase failed: {result!r}") from result
    return recorder.requests
