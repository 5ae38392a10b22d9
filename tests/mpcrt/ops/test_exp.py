"""exp, and LP-GAN's sigmoid/tanh construction (exp + Newton reciprocal), against torch."""

from __future__ import annotations

import torch

from mpcrt import ops
from tests.conftest import run_pair

ULP = 2.0 ** -16


async def exps(party, x):
    X = await party.input(x if party.id == 0 else None, src=0)
    return [await v.reveal() for v in (await ops.exp(X), await ops.sigmoid_lpgan(X), await ops.tanh_lpgan(X))]


async def test_exp_and_lpgan_sigmoid():
    x = torch.cat([torch.linspace(-15.9, 16.6, 4001), torch.tensor([0.0, ULP, -ULP, 1.0, -1.0])]).double()
    clipped = torch.tensor([-100.0, 100.0, -1e4, 1e4], dtype=torch.float64)
    held = torch.round(x / ULP) * ULP
    for e, s, t in await run_pair(exps, torch.cat([x, clipped]), timeout=60):
        ref = held.exp()
        n = len(x)
        # the worst case of every truncation's error added up (mpcrt.ops.exp's docstring), not
        # a seed's: 40 runs reached half of it
        assert float(((e[:n] - ref).abs() / (ref * 6e-5 + 2 * ULP)).max()) <= 1
        # clipped: 2^-23 rounds to 0 at f = 16; above: just under 2^24
        low, high = e[n:][0::2], e[n:][1::2]
        assert low.tolist() == [0.0, 0.0] and float(((high - 2.0 ** 24) / 2.0 ** 24).abs().max()) < 1e-4
        assert float((s[:n] - torch.sigmoid(held)).abs().max()) <= 5e-4
        assert float((t[:n] - torch.tanh(held)).abs().max()) <= 5e-4
        assert s[n:].tolist()[0] < 1e-6 and abs(s[n:].tolist()[1] - 1) < 1e-4
