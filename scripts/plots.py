"""PNG plots for docs/benchmarks.md from the benchmarks' JSON results under docs/img/.

  python -m scripts.plots [--dir docs/img]

Inputs (each optional; a plot whose input is missing is skipped):

* ``fanout.json`` (and any ``fanout_*.json``): ``elimu bench fanout --json`` — p50/p99
  delivery-to-all against the number of connections, one line per publish rate;
* ``memory.json``: ``elimu bench memory --json`` — MB per 100k users, history vs one event each;
* ``throughput.json``: events/s of the worker, raw aiokafka and Quix Streams (the worker and raw
  figures are those of ``elimu bench throughput`` recorded in docs/benchmarks.md; ``quix.json``
  from ``elimu bench quix --json`` is merged in when present);
* ``match.json``: ``elimu bench match`` figures — index vs full scan.

matplotlib is an optional dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fanout(out: Path, results: list[dict[str, Any]]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for res in sorted(
        results, key=lambda r: (-r["baseline"]["rate"], not r["baseline"].get("compression", True))
    ):
        rows = [res["baseline"], *res["runs"]]
        xs = [r["connections"] for r in rows]
        rate = rows[0]["rate"]
        what = f"{rate:g} msg/s" + ("" if rows[0].get("compression", True) else ", no deflate")
        (line,) = ax.plot(xs, [r["p99_ms"] for r in rows], "o-", label=f"p99, {what}")
        ax.plot(
            xs, [r["p50_ms"] for r in rows], "s--", alpha=0.5, color=line.get_color(), label=f"p50, {what}"
        )
        for r in rows:
            if r["delivered"] < r["expected"]:
                ax.annotate(
                    f"{100 * r['delivered'] / r['expected']:.0f}% delivered",
                    (r["connections"], r["p99_ms"]),
                    textcoords="offset points",
                    xytext=(-40, 8),
                    fontsize=8,
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("websocket connections on one API process (one public channel)")
    ax.set_ylabel("publish → last client (ms)")
    ax.set_title("Fan-out: delivery to all connections (1 connection = baseline)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fanout_p99.png", dpi=110)
    plt.close(fig)


def memory(out: Path, res: dict[str, Any]) -> None:
    plt = _pyplot()
    h, b = res["history"], res["baseline_one_event"]
    labels = ["RSS", "live objects", "changelog (encoded)"]
    keys = ["rss_mb_per_100k", "live_mb_per_100k", "changelog_mb_per_100k"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], [b[k] for k in keys], 0.4, label="1 event per user (baseline)")
    ax.bar([x + 0.2 for x in xs], [h[k] for k in keys], 0.4, label=f"{h['events_per_user']} events per user")
    for x, k in zip(xs, keys, strict=True):
        ax.annotate(f"{h[k]:.0f}", (x + 0.2, h[k]), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{b[k]:.0f}", (x - 0.2, b[k]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("MB per 100,000 users")
    ax.set_title("Engagement state per 100k users (10 days of simulator traffic)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)


def throughput(out: Path, res: dict[str, Any], quix: dict[str, Any] | None) -> None:
    plt = _pyplot()
    bars: list[tuple[str, float]] = [(b["label"], b["eps"]) for b in res["bars"]]
    if quix is not None:
        bars.append(("Quix Streams\n(count+sum, RocksDB)", quix["quix_eps"]))
        bars.append(("raw aiokafka\n(Quix run)", quix["raw_aiokafka_eps"]))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.bar([label for label, _ in bars], [v for _, v in bars], color="tab:blue")
    for i, (_, v) in enumerate(bars):
        ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("events/s (log)")
    ax.set_title("Throughput on the embedded broker (2 cores)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


def match(out: Path, res: dict[str, Any]) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.8))
    left.bar(
        ["index p50", "index p99", "full scan p50"],
        [res["indexed_p50_ms"], res["indexed_p99_ms"], res["scan_p50_ms"]],
    )
    left.set_ylabel("ms per posting")
    left.set_title(f"posting → alerts, {res['profiles']:,} profiles", fontsize=9)
    right.bar(
        ["index", "full scan"], [res["indexed_postings_per_s"], res["scan_postings_per_s"]], color="tab:green"
    )
    right.set_ylabel("postings/s (one core)")
    right.set_title(f"{res['speedup_vs_scan']}× faster than a scan", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "match.png", dpi=110)
    plt.close(fig)


def latency(out: Path, res: dict[str, Any]) -> None:
    """produce → websocket p50/p99 against the steady produce rate (``latency.json``)."""
    plt = _pyplot()
    runs = res["runs"]
    rates = [r["rate"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(rates, [r["p50_ms"] for r in runs], marker="o", label="p50")
    ax.plot(rates, [r["p99_ms"] for r in runs], marker="o", label="p99")
    ax.set_xlabel("events/s produced (steady)")
    ax.set_ylabel("produce → websocket, ms")
    ax.set_title("Latency to the subscribed client (one worker, one API)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.plots")
    p.add_argument("--dir", type=Path, default=Path("docs/img"))
    args = p.parse_args(argv)
    d: Path = args.dir
    made = []
    fan = [_load(f) for f in sorted(d.glob("fanout*.json"))]
    if fan:
        fanout(d, [f for f in fan if f])
        made.append("fanout_p99.png")
    if (mem := _load(d / "memory.json")) is not None:
        memory(d, mem)
        made.append("memory.png")
    if (tp := _load(d / "throughput.json")) is not None:
        throughput(d, tp, _load(d / "quix.json"))
        made.append("throughput.png")
    if (lat := _load(d / "latency.json")) is not None:
        latency(d, lat)
        made.append("latency.png")
    if (m := _load(d / "match.json")) is not None:
        match(d, m)
        made.append("match.png")
    print("wrote " + ", ".join(str(d / name) for name in made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
