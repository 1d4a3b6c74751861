"""The quality benchmark's paired table (benchmarks/bench_quality.py): the oracle's headroom verdict, paired
95 % t-intervals against random and the share of the headroom each method captures."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _common import paired_interval  # noqa: E402
from bench_quality import headroom_table  # noqa: E402


def _rows(budget: float, accuracy: dict[str, list[float]]) -> list[dict]:
    return [
        {"strategy": s, "budget": budget, "seed": k, "accuracy": a, "n_selected": 100, "steps": 10}
        for s, values in accuracy.items()
        for k, a in enumerate(values)
    ]


def test_the_oracle_row_decides_whether_shares_of_headroom_are_reported():
    room = {
        "random": [0.20, 0.22, 0.21, 0.19, 0.20],
        "oracle": [0.30, 0.33, 0.31, 0.29, 0.30],
        "progress": [0.25, 0.27, 0.26, 0.24, 0.25],
    }
    none = {
        "random": [0.20, 0.22, 0.21, 0.19, 0.20],
        "oracle": [0.18, 0.25, 0.20, 0.19, 0.22],
        "progress": room["progress"],
    }
    table = pd.DataFrame(_rows(0.2, room) + _rows(0.3, none))
    variants = pd.DataFrame(_rows(0.2, {"progress[allocation=damped]": [0.20, 0.22, 0.21, 0.19, 0.20]}))
    variants["variant"] = "allocation=damped"
    text = headroom_table(table, variants).splitlines()
    assert text[0].split(" | ")[1:4] == [
        "oracle − random (headroom?)",
        "progress − random",
        "progress[allocation=damped] − random",
    ]
    at_20, at_30 = text[2], text[3]
    assert "+0.102 [+0.096, +0.108] (yes, SE 0.002)" in at_20
    assert at_20.endswith("progress +0.49, progress[allocation=damped] +0.00 |"), "half the oracle's gain"
    assert "(no, SE" in at_30 and at_30.endswith("no headroom |")


def test_paired_interval_is_a_t_interval_of_the_mean_difference():
    assert paired_interval(pd.Series([0.1, 0.3])) == "+0.200 [-1.071, +1.471]"
    assert paired_interval(pd.Series([0.05])) == "+0.050" and paired_interval(pd.Series([], dtype=float)) == "-"


def test_a_second_oracle_gets_its_own_verdict_and_shares_follow_the_one_with_most_headroom():
    accuracy = {
        "random": [0.20, 0.22, 0.21, 0.19, 0.20],
        "oracle": [0.18, 0.25, 0.20, 0.19, 0.22],
        "oracle_every_round": [0.30, 0.33, 0.31, 0.29, 0.30],
        "progress": [0.25, 0.27, 0.26, 0.24, 0.25],
    }
    header, _, row = headroom_table(pd.DataFrame(_rows(0.2, accuracy))).splitlines()
    assert header.split(" | ")[1:3] == ["oracle − random (headroom?)", "oracle_every_round − random (headroom?)"]
    assert "(no, SE" in row.split(" | ")[1] and "(yes, SE 0.002)" in row.split(" | ")[2]
    assert row.endswith("of oracle_every_round: progress +0.49 |")


def test_proxy_table_reports_both_oracles_and_only_the_variants_that_ran():
    from bench_proxy import pool_table

    accuracy = {
        "random": [0.20, 0.22, 0.21, 0.19, 0.20],
        "oracle": [0.30, 0.33, 0.31, 0.29, 0.30],
        "oracle[every round]": [0.18, 0.25, 0.20, 0.19, 0.22],
        "balanced": [0.25, 0.27, 0.26, 0.24, 0.25],
    }
    rows = pd.DataFrame(_rows(0.2, accuracy)).rename(columns={"strategy": "variant"}).assign(pool="default")
    lines = pool_table(rows, "default").splitlines()
    assert lines[4] == "| budget | random | oracle | oracle[every round] | balanced |"
    assert lines[-3].split(" | ")[1:4] == [
        "oracle − random (headroom?)",
        "oracle[every round] − random (headroom?)",
        "balanced − random",
    ]
    assert lines[-1].endswith("| of oracle: balanced +0.49 |")


def test_proxy_table_gives_no_share_when_no_oracle_has_headroom():
    from bench_proxy import pool_table

    accuracy = {
        "random": [0.20, 0.22, 0.21, 0.19, 0.20],
        "oracle": [0.18, 0.20, 0.19, 0.18, 0.19],
        "paper": [0.15, 0.17, 0.16, 0.14, 0.15],
    }
    rows = pd.DataFrame(_rows(0.2, accuracy)).rename(columns={"strategy": "variant"}).assign(pool="none")
    last = pool_table(rows, "none").splitlines()[-1]
    assert "(no, SE" in last and last.endswith("| no headroom |"), "a share of a negative gain flips its sign"
