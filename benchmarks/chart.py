"""One figure (six panels) from a results dictionary, drawn with matplotlib's Agg backend."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

OURS_COLOR = "#1f77b4"
PEER_COLOR = "#ff7f0e"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else math.nan


def _bars(ax: Any, labels: list[str], ours: list[float], peer: list[float], peer_label: str) -> None:
    width = 0.38
    xs = range(len(labels))
    ax.bar([x - width / 2 for x in xs], ours, width, label="ours", color=OURS_COLOR)
    ax.bar([x + width / 2 for x in xs], peer, width, label=peer_label, color=PEER_COLOR)
    ax.set_xticks(list(xs), labels)
    ax.legend(fontsize=8)


def _missing(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def render(results: dict[str, Any], path: Path) -> None:
    """Write the chart of ``results`` (the ``benchmarks`` part of latest.json) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    (herd_req, herd_lat, fan), (hot, imp, over) = axes

    herd = results.get("herd")
    if herd:
        sizes = herd["sizes"]
        labels = [f"N={s['processes']}" for s in sizes]
        _bars(
            herd_req,
            labels,
            [s["ours"]["refresh_requests_per_round_mean"] for s in sizes],
            [s["peer"]["refresh_requests_per_round_mean"] for s in sizes],
            "Authlib",
        )
        for i, s in enumerate(sizes):
            herd_req.annotate(
                f"invalid_grant\n{s['ours']['invalid_grant']} vs {s['peer']['invalid_grant']}",
                (i, s["peer"]["refresh_requests_per_round_mean"]),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        herd_req.set_ylabel("refresh requests per round (mean)")
        herd_req.set_title(f"Herd: requests per expiry ({herd['config']['rounds']} rounds)", fontsize=10)
        herd_req.margins(y=0.25)
        xs = range(len(sizes))
        for side, color in (("ours", OURS_COLOR), ("peer", PEER_COLOR)):
            name = "ours" if side == "ours" else "Authlib"
            herd_lat.plot(xs, [s[side]["p50_ms"] for s in sizes], "o-", color=color, label=f"{name} p50")
            herd_lat.plot(xs, [s[side]["p99_ms"] for s in sizes], "s--", color=color, label=f"{name} p99")
        herd_lat.set_xticks(list(xs), labels)
        herd_lat.set_yscale("log")
        herd_lat.set_ylabel("time to token (ms, log)")
        herd_lat.set_title("Herd: time to token", fontsize=10)
        herd_lat.legend(fontsize=8)
    else:
        _missing(herd_req, "Herd")
        _missing(herd_lat, "Herd")

    fanout = results.get("fanout")
    if fanout:
        ours, peer = fanout["ours"], fanout["peer"]
        ours_wall = _num(ours.get("wall_s"))
        if not ours.get("timed_out"):
            label = "ours"
        elif ours.get("phase") == "refresh_all":
            label = f"ours (stopped at {ours['budget_s']:.0f} s;\n{ours['vendor_ok']} refreshed)"
            ours_wall = _num(ours["budget_s"])
        else:
            label = f"ours (not started: keepers\nnot built in {ours['setup_budget_s']:.0f} s)"
            ours_wall = 0.0
        walls = [ours_wall, _num(peer["wall_s"])]
        bars = fan.bar([label, "Authlib (sequential)"], walls, color=[OURS_COLOR, PEER_COLOR])
        for bar, side in zip(bars, (ours, peer), strict=True):
            fan.annotate(
                f"{bar.get_height():.1f} s\npeak RSS {side['peak_rss_mib']:.0f} MiB",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        fan.axhline(
            fanout["config"]["goal_s"],
            color="green",
            linestyle=":",
            label=f"goal ({fanout['config']['goal_s']:g} s)",
        )
        fan.set_ylabel("wall time (s)")
        fan.set_title(f"Fan-out: {fanout['config']['connections']} connections, 50 ms vendor", fontsize=10)
        fan.legend(fontsize=8)
        fan.margins(y=0.2)
    else:
        _missing(fan, "Fan-out")

    hotpath = results.get("hotpath")
    if hotpath:
        r = hotpath["results"]
        names = ["ours\ncache hit", "ours\nvia store", "Authlib\nensure_active", "Authlib\n+ file read"]
        values = [r[k]["median_ns"] for k in ("ours_cache", "ours_store", "peer", "peer_file")]
        bars = hot.bar(names, values, color=[OURS_COLOR, OURS_COLOR, PEER_COLOR, PEER_COLOR])
        for bar in bars:
            hot.annotate(
                f"{bar.get_height():,.0f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        hot.set_yscale("log")
        hot.set_ylabel("ns per call (median, log)")
        hot.set_title("Hot path: valid token", fontsize=10)
    else:
        _missing(hot, "Hot path")

    imports = results.get("importcost")
    if imports:
        labels = ["same process\n(goal judged here)", "two processes subtracted\n(noisy)"]
        _bars(
            imp,
            labels,
            [imports["ours"]["in_process_ms"], imports["ours"]["cross_process_ms"]],
            [imports["peer"]["in_process_ms"], imports["peer"]["cross_process_ms"]],
            "HTTP provider",
        )
        imp.axhline(imports["config"]["goal_ms"], color="green", linestyle=":", label="goal (30 ms)")
        imp.set_ylabel("ms added to import airflow.sdk (median)")
        imp.set_title("Import cost", fontsize=10)
        imp.legend(fontsize=8)
    else:
        _missing(imp, "Import cost")

    overhead = results.get("overhead")
    if overhead:
        _bars(
            over,
            ["median", "p99"],
            [overhead["ours"]["median_us"], overhead["ours"]["p99_us"]],
            [overhead["bare"]["median_us"], overhead["bare"]["p99_us"]],
            "bare httpx post",
        )
        over.set_yscale("log")
        over.set_ylabel("µs per refresh call (log)")
        over.set_title("Overhead: RefreshClient vs bare httpx", fontsize=10)
    else:
        _missing(over, "Overhead")

    fig.suptitle("airflow-provider-tokenrefresh benchmarks (ours vs peer, emulated vendor on 127.0.0.1)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
