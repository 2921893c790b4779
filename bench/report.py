"""The bench's figures as one markdown table (and the targets checked against them)."""

from __future__ import annotations

from typing import Any

#: Figures compared as raybatch ÷ peer.
RATIO_KEYS = (
    "makespan_s",
    "makespan_ratio_to_ideal",
    "slot_utilisation",
    "status_calls_per_job",
    "fetch_latency_p50_s",
    "fetch_latency_p95_s",
    "cpu_s_per_1000_jobs",
    "peak_rss_mb",
)


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """raybatch ÷ peer for each comparable figure."""
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = ours.get(key), theirs.get(key)
        out[key] = round(a / b, 4) if a is not None and b else None
    return out


def _target(name: str, value: Any, bound: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "bound": bound, "met": met}


def targets(f: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 5 that the run measured: value, bound, met."""
    found: list[dict[str, Any]] = []
    ms = f.get("makespan")
    if ms:
        ours, ratio = ms["raybatch"], ms["ratio"]
        ratio_to_ideal = ours["makespan_ratio_to_ideal"]
        found.append(
            _target("makespan ÷ ideal bound", ratio_to_ideal, "≤ 1.03", _le(ratio_to_ideal, 1.03))
        )
        found.append(
            _target(
                "status calls per job, raybatch ÷ peer",
                ratio["status_calls_per_job"],
                "≤ 0.1",
                _le(ratio["status_calls_per_job"], 0.1),
            )
        )
        found.append(
            _target(
                "completion → result fetched, p95 (s)",
                ours["fetch_latency_p95_s"],
                "≤ 1.5",
                _le(ours["fetch_latency_p95_s"], 1.5),
            )
        )
        found.append(
            _target(
                "CPU per job, raybatch ÷ peer (makespan run)",
                ratio["cpu_s_per_1000_jobs"],
                "≤ 1",
                _le(ratio["cpu_s_per_1000_jobs"], 1.0),
            )
        )
    for point in f.get("cpu_curve", []):
        found.append(
            _target(
                f"CPU per job, raybatch ÷ peer ({point['jobs']:,} short jobs)",
                point["cpu_ratio"],
                "≤ 1",
                _le(point["cpu_ratio"], 1.0),
            )
        )
    scale = f.get("scale") or []
    big = max(scale, key=lambda p: p["jobs"], default=None)
    if big is not None:
        n = f"{big['jobs']:,} jobs"
        found.append(_target(f"plan time, {n} (s)", big["plan_s"], "≤ 5", _le(big["plan_s"], 5)))
        found.append(
            _target(
                f"plan peak RSS, {n} (MB)",
                big["plan_peak_rss_mb"],
                "≤ 300",
                _le(big["plan_peak_rss_mb"], 300),
            )
        )
        found.append(
            _target(
                f"resume to first submission, {n} (s)",
                big["resume_to_first_submit_s"],
                "≤ 2",
                _le(big["resume_to_first_submit_s"], 2),
            )
        )
        found.append(
            _target(f"status time, {n} (s)", big["status_s"], "≤ 1", _le(big["status_s"], 1))
        )
    tr = f.get("transfer")
    if tr:
        for way in ("download", "upload"):
            t = tr[way]
            met = t["ratio"] >= 0.8
            found.append(_target(f"{way} throughput ÷ curl", t["ratio"], "≥ 0.8", met))
            found.append(
                _target(
                    f"{way} RSS growth (MB)",
                    t["raybatch_rss_growth_mb"],
                    "≤ 50",
                    t["raybatch_rss_growth_mb"] <= 50,
                )
            )
    return found


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(f: dict[str, Any]) -> str:
    """The whole result as markdown: setting, comparison, curve, scale, transfers, targets."""
    m = f["machine"]
    c = f["config"]
    lines = [
        f"Bench of {f['date']} on {m['nproc']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Python {m['python']}"
        + (" — QUICK MODE (harness check, not figures)" if c.get("quick") else ""),
        "",
    ]
    ms = f.get("makespan")
    if ms:
        low, high = c["durations"]
        lines += [
            f"**{ms['raybatch']['jobs']:,} jobs, account limit {c['limit']}, job durations "
            f"{low:g}–{high:g} s** (video-to-video, synthetic 256 KiB outputs; fresh emulator "
            "per side, same seed)",
            "",
            "| figure | raybatch | peer (fal_client) | raybatch ÷ peer |",
            "|---|---:|---:|---:|",
        ]
        rows = [
            ("makespan (s), process start → exit", "makespan_s"),
            ("ideal lower bound (s)", "ideal_s"),
            ("makespan ÷ ideal", "makespan_ratio_to_ideal"),
            ("remote slot utilisation", "slot_utilisation"),
            ("status calls per job (stream opens + polls)", "status_calls_per_job"),
            ("completion → result fetched p50 (s)", "fetch_latency_p50_s"),
            ("completion → result fetched p95 (s)", "fetch_latency_p95_s"),
            ("CPU s per 1,000 jobs (user + sys)", "cpu_s_per_1000_jobs"),
            ("peak RSS (MB)", "peak_rss_mb"),
            ("start → first submission (s)", "first_submit_s"),
            ("submits / outputs written", None),
        ]
        for label, key in rows:
            if key is None:
                ours, theirs = ms["raybatch"], ms["peer"]
                lines.append(
                    f"| {label} | {ours['submits']:,} / {ours['outputs']:,} "
                    f"| {theirs['submits']:,} / {theirs['outputs']:,} | |"
                )
                continue
            lines.append(
                f"| {label} | {_fmt(ms['raybatch'].get(key))} | {_fmt(ms['peer'].get(key))} "
                f"| {_fmt(ms['ratio'].get(key))} |"
            )
        lines.append("")
    curve = f.get("cpu_curve")
    if curve:
        low, high = c["curve_durations"]
        lines += [
            f"**CPU curve** (pass-through endpoint, 1 KiB outputs, limit {c['curve_limit']}, "
            f"jobs {low:g}–{high:g} s)",
            "",
            "| jobs | raybatch CPU s / 1k jobs | peer CPU s / 1k jobs | ratio "
            "| raybatch peak RSS (MB) | peer peak RSS (MB) | raybatch makespan (s) "
            "| peer makespan (s) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in curve:
            ours, theirs = p["raybatch"], p["peer"]
            lines.append(
                f"| {p['jobs']:,} | {_fmt(ours['cpu_s_per_1000_jobs'])} "
                f"| {_fmt(theirs['cpu_s_per_1000_jobs'])} | {_fmt(p['cpu_ratio'])} "
                f"| {_fmt(ours['peak_rss_mb'])} | {_fmt(theirs['peak_rss_mb'])} "
                f"| {_fmt(ours['makespan_s'])} | {_fmt(theirs['makespan_s'])} |"
            )
        lines.append("")
    scale = f.get("scale")
    if scale:
        lines += [
            "**Scale** (library manifest: clips × 10 looks; state half done for resume/status)",
            "",
            "| jobs | plan, first (s) | plan peak RSS (MB) | plan again, remembered (s) "
            "| resume → first submission (s) | resume peak RSS (MB) | status (s) "
            "| status peak RSS (MB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in scale:
            lines.append(
                f"| {p['jobs']:,} | {_fmt(p['plan_s'])} | {_fmt(p['plan_peak_rss_mb'])} "
                f"| {_fmt(p.get('plan_again_s'))} | {_fmt(p['resume_to_first_submit_s'])}"
                f" | {_fmt(p['resume_peak_rss_mb'])} "
                f"| {_fmt(p['status_s'])} | {_fmt(p['status_peak_rss_mb'])} |"
            )
        lines.append("")
    tr = f.get("transfer")
    if tr:
        lines += [
            f"**Transfers** ({tr['size_mib']:g} MiB file on loopback, best of {tr['repeats']})",
            "",
            "| | raybatch (MiB/s) | curl (MiB/s) | raybatch ÷ curl | raybatch RSS growth (MB) |",
            "|---|---:|---:|---:|---:|",
        ]
        unsynced = tr.get("curl_download_unsynced_mib_s")
        for way in ("download", "upload"):
            t = tr[way]
            lines.append(
                f"| {way} | {_fmt(t['raybatch_mib_s'])} | {_fmt(t['curl_mib_s'])} "
                f"| {_fmt(t['ratio'])} | {_fmt(t['raybatch_rss_growth_mb'])} |"
            )
        if unsynced:
            ratio = tr["download"]["raybatch_mib_s"] / unsynced
            lines.append(
                f"| download, against curl without fsync | {_fmt(tr['download']['raybatch_mib_s'])}"
                f" | {_fmt(unsynced)} | {_fmt(round(ratio, 3))} | |"
            )
        lines.append("")
    streams = f.get("streams")
    if streams:
        lines += [
            f"**Status-stream faults** (raybatch alone, {streams[0]['jobs']} jobs each, fresh"
            " emulator per fault)",
            "",
            "| fault | status calls per job | makespan (s) | exit |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['fault']} | {_fmt(r['status_calls_per_job'])} | {_fmt(r['makespan_s'])} |"
            f" {r['exit_code']} |"
            for r in streams
        ]
        lines.append("")
    lines += ["**Targets**", "", "| target | value | bound | met |", "|---|---:|---:|---|"]
    for t in f["targets"]:
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {t['bound']} | {_fmt(t['met'])} |")
    return "\n".join(lines) + "\n"
