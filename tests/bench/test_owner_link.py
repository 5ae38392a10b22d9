"""The owner-link benchmark: both methods, on demand and fetched ahead, at a tiny size, on fast links."""

from __future__ import annotations

from bench import owner_link


def test_every_method_and_phase_is_measured_and_auto_picks_one_of_them(capsys, tmp_path):
    assert owner_link.main(["--n", "64", "--owner", "lan", "--network", "lan", "--repeats", "1",
                            "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "owner link lan" in out and out.count("dcf") >= 2 and out.count("tree") >= 2
    rows = owner_link.measure(64, "lan", "lan", 1)
    assert [(r.material, r.method) for r in rows] == [("on demand", "dcf"), ("on demand", "tree"),
                                                      ("fetched ahead", "dcf"), ("fetched ahead", "tree")]
    on_demand = {r.method: r for r in rows if r.material == "on demand"}
    assert sum(on_demand["dcf"].dealer_bytes) > 10 * sum(on_demand["tree"].dealer_bytes) > 0  # the keys
    assert all(r.auto_picks in owner_link.METHODS for r in rows) and (tmp_path / "rows.json").exists()
