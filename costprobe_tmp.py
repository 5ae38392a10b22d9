import time, torch, mpcrt, sys
from mpcrt import ops
async def prog(party, sizes, methods):
    torch.set_num_threads(1)
    out = {}
    for n in sizes:
        x = await party.input(torch.randn(n) if party.id == 0 else None, src=0)
        for m in methods:
            for kind in ("ge0", "relu"):
                ts = []
                for i in range(5):
                    await (await party.input(torch.zeros(1) if party.id == 0 else None, src=0)).reveal()
                    t = time.perf_counter()
                    if kind == "ge0":
                        await ops.is_non_negative(x, m)
                    else:
                        await ops.relu(x, m)
                    ts.append(time.perf_counter() - t)
                out[(n, m, kind)] = sorted(ts[1:])[1] * 1e3
    return out
if __name__ == "__main__":
    r0, r1 = mpcrt.run_local(prog, [100, 1000, 10000, 100000], ["tree", "dcf"], transport="tcp", processes=True, offline=True)
    for k in r0: print(k, f"{max(r0[k], r1[k]):.2f} ms")
