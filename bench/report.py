"""The verdicts against the targets, the printed tables, and the machine the figures come from."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import ONCE_TARGET_FROM, ROOT, TARGETS
from bench.replicas import RESUME_MARGIN


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    """Each target the measured parts bear on, as "backend/target"."""
    return {
        f"{name}/{key}": met
        for name in r.get("states", {})
        for key, met in backend_verdicts(view(r, name)).items()
    }


def view(r: dict[str, Any], name: str) -> dict[str, Any]:
    """One backend's figures, with those every backend shares: (b) the naive poller, and (g),
    which runs on SQLite (the cron user's state) and is shown in the first column."""
    first = next(iter(r["states"]))
    shared: dict[str, Any] = {k: r[k] for k in ("versions", "models", "naive") if k in r}
    if "once" in r and name == first:
        shared["once"] = r["once"]
    prefix = f"{name}/"
    judged = {k[len(prefix) :]: v for k, v in r.get("verdicts", {}).items() if k.startswith(prefix)}
    return {**r["states"][name], **shared, "verdicts": judged}


def backend_verdicts(r: dict[str, Any]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    if "steady" in r:
        steady = r["steady"]
        requests = max(steady["quiet"]["requests_max"], steady["one_change"]["requests_max"])
        found["steady_requests"] = requests <= TARGETS["steady_requests"]
        if "naive" in r:
            found["speedup"] = speedup(r) >= TARGETS["speedup"]
    if "daemon" in r:
        daemon = r["daemon"]
        found["latency_p99_s"] = (daemon["latency_p99_s"] or 1e9) <= TARGETS["latency_p99_s"]
        found["peak_rss_mb"] = daemon["peak_rss_mb"] <= TARGETS["peak_rss_mb"]
        found["every_event_delivered"] = daemon["all_delivered"]
    if "reconcile" in r:
        share = r["reconcile"]["median"]["inside_share"]
        found["reconcile_inside_share"] = share <= TARGETS["reconcile_inside_share"]
    if "throughput" in r:
        found["throughput_eps"] = r["throughput"]["events_per_s"] >= TARGETS["throughput_eps"]
    if "once" in r and r["versions"] >= ONCE_TARGET_FROM:
        found["once_own_share"] = r["once"]["median"]["own_share"] <= TARGETS["once_own_share"]
    if "daemon_drain" in r:
        rate = r["daemon_drain"]["events_per_s"] or 0.0
        found["daemon_throughput_eps"] = rate >= TARGETS["throughput_eps"]
    if "replicas" in r:
        found.update(resume_verdicts(r["replicas"]))
    if "console" in r:
        found["console_page_ms"] = r["console"]["worst_p95_ms"] < TARGETS["console_page_ms"]
    if "hints" in r:
        found.update(hints_verdicts(r["hints"]))
    return found


def hints_verdicts(k: dict[str, Any]) -> dict[str, bool]:
    """(k): each hinted kind's p99 within its target, the stage transitions' within theirs
    (no hint: the poll's), and the read duty; a kind with a change undelivered fails."""
    found: dict[str, bool] = {}
    for label, stats in k["kinds"].items():
        target = hints_target(label)
        delivered = label not in k["undelivered"] and stats["p99_s"] is not None
        found[f"hints_{label.replace(' ', '_')}"] = delivered and stats["p99_s"] <= target
    found["hints_read_duty"] = (k["duty_budgeted"] or 0.0) <= TARGETS["read_duty"]
    return found


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def hints_target(label: str) -> float:
    return TARGETS["latency_p99_s" if label == "stage transition" else "hinted_p99_s"]


def resume_verdicts(i: dict[str, Any]) -> dict[str, bool]:
    """(i): a restart and each takeover resume within an interval plus the margin, with an
    incremental first poll; a failover within its bound; a handover within its target."""
    found: dict[str, bool] = {}
    restart = i["restart"]
    found["restart_delivery_s"] = restart["start_to_delivery_s"] <= restart["bound_s"]
    found["restart_first_poll"] = incremental(restart["first_poll_read"])
    for f in i.get("failover", []):
        at = f"{f['interval_s']:g}s"
        margin = f["interval_s"] + RESUME_MARGIN
        h = f["handover"]
        found[f"failover_{at}"] = f["kill_to_delivery_s"] <= f["bound_s"]
        found[f"takeover_delivery_{at}"] = f["takeover_to_delivery_s"] <= margin
        found[f"takeover_first_poll_{at}"] = incremental(f["first_poll_read"])
        found[f"handover_{at}"] = h["handover_s"] <= h["target_s"]
        found[f"handover_delivery_{at}"] = h["takeover_to_delivery_s"] <= margin
        found[f"handover_first_poll_{at}"] = incremental(h["first_poll_read"])
    return found


def incremental(read: Any) -> bool:
    """A poll that read incrementally (the scans it owes, if any, in the background)."""
    kinds = str(read).split("+")
    return kinds[0] == "incremental" and all("(background)" in k for k in kinds[1:])


def speedup(r: dict[str, Any]) -> float:
    return float(r["naive"]["wall_s_median"] / r["steady"]["quiet"]["wall_s_median"])


# --------------------------------------------------------------------------- output


Row = tuple[str, str, str, str]
OK = {True: "pass", False: "FAIL"}


def info(measure: str, value: str) -> Row:
    """A row that only reports: no target, no verdict."""
    return (measure, value, "", "")


def judged(measure: str, value: str, target: str, met: bool) -> Row:
    """A row measured against its target, with the verdict."""
    return (measure, value, target, OK[met])


def table(r: dict[str, Any]) -> str:
    """One column per backend; a row's verdict is each backend's, in the columns' order."""
    names = list(r.get("states", {}))
    merged: dict[str, dict[str, Row]] = {}
    for name in names:
        for row in backend_rows(view(r, name)):
            merged.setdefault(row[0], {})[name] = row
    header = ("measure", *names, "target", "")
    rows = [
        (
            measure,
            *(by[n][1] if n in by else "-" for n in names),
            next(row[2] for row in by.values()),
            " / ".join(by[n][3] or "-" for n in names if n in by).strip(" /-"),
        )
        for measure, by in merged.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    title = f"{r['versions']:,} versions over {r['models']:,} models"
    lines = [title, "-" * len(title)]
    lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append("-|-".join("-" * w for w in widths))
    lines += [
        " | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def backend_rows(r: dict[str, Any]) -> list[Row]:
    """One backend's rows (``view``), in the order of the table."""
    rows: list[Row] = []
    if "steady" in r:
        rows += steady_rows(r)
    if "daemon" in r:
        rows += latency_rows(r["daemon"], r["verdicts"])
    if "reconcile" in r:
        rows += reconcile_rows(r["reconcile"]["median"], r["verdicts"])
    if "once" in r:
        rows += once_rows(r["once"], r["verdicts"])
    if "daemon" in r:
        c = r["daemon"]
        rows.append(
            judged(
                "daemon peak RSS (VmHWM, after full scans)",
                f"{c['peak_rss_mb']:.0f} MB",
                f"<= {TARGETS['peak_rss_mb']:.0f} MB",
                r["verdicts"]["peak_rss_mb"],
            )
        )
    if "throughput" in r:
        rows += throughput_rows(r["throughput"], r["verdicts"])
    if "daemon_drain" in r:
        rows += drain_rows(r["daemon_drain"], r["verdicts"])
    if "replicas" in r:
        rows += resume_rows(r["replicas"], r["verdicts"])
    if "daemon" in r:
        rows += event_rows(r["daemon"], r["verdicts"])
    if "console" in r:
        rows += console_rows(r["console"], r["verdicts"])
    if "hints" in r:
        rows += hints_rows(r["hints"], r["verdicts"])
    return rows


def hints_rows(k: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    """(k): per kind of change, p99 / worst (n delivered), and the read duty."""
    rows: list[Row] = []
    for label, stats in k["kinds"].items():
        value = "-" if stats["p99_s"] is None else f"{stats['p99_s']} / {stats['worst_s']} s"
        rows.append(
            judged(
                f"hints on: {label} -> webhook, p99 / worst (n)",
                f"{value} ({stats['n']})",
                f"p99 <= {hints_target(label):g} s",
                v[f"hints_{label.replace(' ', '_')}"],
            )
        )
    cadences = k["cadences"]
    rows += [
        judged(
            "hints on: read duty within max_duty (scans + polls hints started)",
            f"{percent(k['duty_budgeted'])}",
            f"<= {TARGETS['read_duty'] * 100:.0f}%",
            v["hints_read_duty"],
        ),
        info(
            "  scans / polls hints started; the interval's polls; all reading",
            f"{percent(k['duty_scans'])} / {percent(k['duty_hinted_polls'])}"
            f"; {percent(k['duty_other_polls'])}; {percent(k['read_duty'])}",
        ),
        info(
            "  hints accepted / refused; polls (reading hinted models, their median reading)",
            f"{k['hints_accepted']} / {k['hints_refused']}; {k['polls']} ({k['hinted_polls']},"
            f" {k.get('hinted_poll_reading_ms_median') or '-'} ms) in {k['wall_s']:.0f} s",
        ),
        info(
            "  cadences: models / versions scan",
            f"{cadences.get('models_scan_every_s', '-')} / "
            f"{cadences.get('versions_scan_every_s', '-')} s",
        ),
    ]
    return rows


def console_rows(j: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    """(j): each console page's median / p95 / worst; the target is the deliveries page's
    (every filter, and a page deep in the log): its worst p95."""
    target = f"< {TARGETS['console_page_ms']:.0f} ms"
    rows: list[Row] = [
        judged(
            f"console on {j['rows']:,} deliveries: deliveries page, worst filter's p95",
            f"{j['worst_p95_ms']:.0f} ms",
            target,
            v["console_page_ms"],
        )
    ]
    for name, t in j["pages"].items():
        rows.append(
            info(
                f"  {name.replace('_', ' ')}: median / p95 / worst",
                f"{t['median_ms']:.0f} / {t['p95_ms']:.0f} / {t['max_ms']:.0f} ms",
            )
        )
    return rows


def drain_rows(h: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    rate = h["events_per_s"]
    return [
        judged(
            f"  through the daemon (polling every {h['interval_s']:g} s): first to last arrival",
            "-" if rate is None else f"{rate:.0f} events/s",
            f">= {TARGETS['throughput_eps']:.0f}/s",
            v["daemon_throughput_eps"],
        ),
        info(
            "  through the daemon: from the process start / polls meanwhile",
            f"{h['events_per_s_from_start']:.0f} events/s / {h['polls_while_draining']}",
        ),
    ]


def resume_rows(i: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    restart = i["restart"]
    rows: list[Row] = [
        judged(
            f"restart at a {restart['interval_s']:g} s interval: start -> delivery, first poll",
            f"{restart['start_to_delivery_s']:.2f} s, {restart['first_poll_read']}",
            f"<= {restart['bound_s']:g} s, incremental",
            v["restart_delivery_s"] and v["restart_first_poll"],
        )
    ]
    for f in i.get("failover", []):
        at = f"{f['interval_s']:g}s"
        h = f["handover"]
        margin = f["interval_s"] + RESUME_MARGIN
        rows += [
            judged(
                f"failover at a {at} interval (lease {f['lease_s']:g} s): kill -9 -> delivery",
                f"{f['kill_to_delivery_s']:.2f} s (takeover after {f['to_takeover_s']:.2f} s)",
                f"< {f['bound_s']:g} s",
                v[f"failover_{at}"],
            ),
            judged(
                f"  the kill's takeover -> delivery, first poll ({at})",
                f"{f['takeover_to_delivery_s']:.2f} s, {f['first_poll_read']}",
                f"<= {margin:g} s, incremental",
                v[f"takeover_delivery_{at}"] and v[f"takeover_first_poll_{at}"],
            ),
            judged(
                f"handover at a {at} interval: SIGTERM -> leader.acquired",
                f"{h['handover_s']:.3f} s" + ("" if h["released"] else " (not released)"),
                f"< {h['target_s']:g} s",
                v[f"handover_{at}"],
            ),
            judged(
                f"  the handover's takeover -> delivery, first poll ({at})",
                f"{h['takeover_to_delivery_s']:.2f} s, {h['first_poll_read']}",
                f"<= {margin:g} s, incremental",
                v[f"handover_delivery_{at}"] and v[f"handover_first_poll_{at}"],
            ),
        ]
    return rows


def steady_rows(r: dict[str, Any]) -> list[Row]:
    s, v, kb = r["steady"], r["verdicts"], 1024
    rows: list[Row] = [
        info(
            "steady cycle, no change: wall (median)", f"{s['quiet']['wall_s_median'] * 1000:.0f} ms"
        ),
        info(
            "steady cycle, one change: wall (median)",
            f"{s['one_change']['wall_s_median'] * 1000:.0f} ms",
        ),
        info(
            "steady cycle, no change: waiting for MLflow / watcher's own",
            f"{s['quiet']['mlflow_ms_median']:.0f} / "
            f"{s['quiet']['duration_ms_median'] - s['quiet']['mlflow_ms_median']:.0f} ms",
        ),
        judged(
            "steady cycle: requests (max, no change / one change)",
            f"{s['quiet']['requests_max']} / {s['one_change']['requests_max']}",
            f"<= {TARGETS['steady_requests']}",
            v["steady_requests"],
        ),
        info(
            "steady cycle: bytes read (median, no change / one change)",
            f"{s['quiet']['bytes_median'] / kb:.0f} / "
            f"{s['one_change']['bytes_median'] / kb:.0f} KiB",
        ),
    ]
    if "naive" in r:
        n = r["naive"]
        rows += [
            info(
                f"naive full scan (MlflowClient, page {n['page_size']}): wall (median)",
                f"{n['wall_s_median']:.2f} s, {n['requests']} requests",
            ),
            judged(
                "naive / steady wall time",
                f"{speedup(r):.0f}x",
                f">= {TARGETS['speedup']:.0f}x",
                v["speedup"],
            ),
        ]
    return rows


def latency_rows(c: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    return [
        judged(
            "stage transition -> webhook, p50 / p99 (n)",
            f"{c['latency_p50_s']} / {c['latency_p99_s']} s ({c['transitions_delivered']})",
            f"p99 <= {TARGETS['latency_p99_s']:g} s",
            v["latency_p99_s"],
        ),
        info(
            "  transitions made while a full scan ran: n, max latency",
            f"{c['transitions_during_scans']}, "
            + (f"{max(c['latencies_during_scans_s'])} s" if c["latencies_during_scans_s"] else "-"),
        ),
        info(
            "  full scans after the baseline: kind, duration",
            scan_summary(
                c["scans_ms"][1:]
                if c["scans_ms"][:1] and c["scans_ms"][0][0] == "full"
                else c["scans_ms"]
            ),
        ),
        info(
            "  polls with or merging a scan: kind, duration", scan_summary(c["scan_polls_ms"][1:])
        ),
        info("  slowest poll", f"{c['slowest_poll_ms'] / 1000:.2f} s"),
    ]


def reconcile_rows(d: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    return [
        info(
            "full reconcile: total / waiting for MLflow",
            f"{d['duration_ms'] / 1000:.2f} / {d['mlflow_ms'] / 1000:.2f} s",
        ),
        judged(
            "full reconcile: watcher time / MLflow time",
            f"{d['inside_share'] * 100:.1f}%",
            f"<= {TARGETS['reconcile_inside_share'] * 100:.0f}%",
            v["reconcile_inside_share"],
        ),
    ]


def once_rows(once: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    o, full = once["median"], once.get("full_mlflow", {}).get("median")
    return [
        info(
            "run --once, whole command: wall / waiting for MLflow / own",
            f"{o['wall_s']:.2f} / {o['mlflow_s']:.2f} / {o['own_s']:.2f} s"
            f" (CPU {o['cpu_s']:.2f} s)",
        ),
        *(
            []
            if full is None
            else [
                info(
                    "  the same with the full mlflow package: own / MLflow",
                    f"{full['own_s']:.2f} / {full['mlflow_s']:.2f} s:"
                    f" {full['own_share'] * 100:.1f}%",
                )
            ]
        ),
        (
            "run --once: watcher's own time / MLflow time",
            f"{o['own_share'] * 100:.1f}%",
            f"<= {TARGETS['once_own_share'] * 100:.0f}%"
            + ("" if "once_own_share" in v else f" at {ONCE_TARGET_FROM // 1000}k"),
            OK[v["once_own_share"]] if "once_own_share" in v else "",
        ),
    ]


def throughput_rows(t: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    return [
        judged(
            f"delivery throughput, backlog {t['backlog']} on {t['lanes']} lanes",
            f"{t['events_per_s']:.0f} events/s",
            f">= {TARGETS['throughput_eps']:.0f}/s",
            v["throughput_eps"],
        ),
        info(
            f"  the same backlog on {t['ten_lanes']['lanes']} lanes",
            f"{t['ten_lanes']['events_per_s']:.0f} events/s",
        ),
    ]


def event_rows(c: dict[str, Any], v: dict[str, bool]) -> list[Row]:
    rows: list[Row] = [
        judged(
            "every event type delivered",
            "yes" if c["all_delivered"] else "NO: " + ", ".join(c["undelivered"]),
            "all",
            v["every_event_delivered"],
        )
    ]
    for label, worst in c["worst_latency_by_change_s"].items():
        if label != "stage transition":
            rows.append(
                (f"  worst latency: {label}", "-" if worst is None else f"{worst} s", "", "")
            )
    return rows


def scan_summary(polls: list[list[Any]]) -> str:
    """ "incremental+models x6 (max 1.2 s), ..." from [kind, duration_ms] pairs."""
    kinds: dict[str, list[float]] = {}
    for kind, ms in polls:
        kinds.setdefault(str(kind), []).append(float(ms) / 1000)
    return ", ".join(f"{k} x{len(v)} (max {max(v):.1f} s)" for k, v in sorted(kinds.items())) or "-"


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_mb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "mlflow": metadata.version("mlflow"),
        "watcher_commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
