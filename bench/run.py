"""Run kern_tasks' benchmarks: `python -m bench.run [--quick] [--only throughput,lag,claims,agno,workflow]`.

Needs Postgres and Redis (bench/common.py says where; Redis database 12 is flushed).
Results: a table on stdout, and bench/results/<full|quick>.json and .md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import dump_json, loadavg, log, machine_info

BENCHMARKS = ("throughput", "lag", "claims", "agno", "workflow")
RESULTS = Path(__file__).resolve().parent / "results"


def _ok(value: bool) -> str:
    return "yes" if value else "**no**"


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table: measure, kern, baseline, ratio, target, met."""
    rows = ["| Benchmark | kern_tasks | Baseline (same run) | Ratio | Target | Met |", "|---|---|---|---|---|---|"]
    if t := results.get("throughput"):
        for c in t["configs"]:
            cmd = f"`-P {c['pool']} -c {c['concurrency']}`"
            rows.append(
                f"| 1. End to end, {c['n']} due at once, {cmd} "
                f"| {c['kern_per_s']:.0f} fires/s | hand-written task {c['hand_per_s']:.0f}/s; raw no-op {c['raw_per_s']:.0f}/s "
                f"| x{c['ratio_vs_hand']:.2f} of hand-written; x{c['ratio']:.2f} of no-op | >= x1.0 of hand-written "
                f"| {_ok(c['ratio_vs_hand'] >= 1.0)} |"
            )
            k = min(c["kern_runs"], key=lambda r: r["app_cpu_ms"])
            h = min(c["hand_runs"], key=lambda r: r["app_cpu_ms"])
            w = min(c["raw_runs"], key=lambda r: r["app_cpu_ms"])
            rows.append(
                f"| 1'. CPU per job (worker + beat/publisher + Postgres backends), {cmd} "
                f"| worker {k['worker_cpu_ms']} + beat {k['beat_cpu_ms']} + Postgres {k['postgres_cpu_ms']} "
                f"= {k['app_cpu_ms']} ms (target {k['target_cpu_ms']}) "
                f"| hand-written: worker {h['worker_cpu_ms']} + publisher {h['publisher_cpu_ms']} + Postgres "
                f"{h['postgres_cpu_ms']} = {h['app_cpu_ms']} ms (target {h['target_cpu_ms']}); no-op {w['app_cpu_ms']} ms "
                f"| x{k['app_cpu_ms'] / h['app_cpu_ms']:.2f} of hand-written; x{k['app_cpu_ms'] / w['app_cpu_ms']:.1f} of no-op "
                f"| <= x1.0 of hand-written | {_ok(k['app_cpu_ms'] <= h['app_cpu_ms'])} |"
            )
            kc = min(r["sessions_per_job"] for r in c["kern_runs"])
            hc = min(r["sessions_per_job"] for r in c["hand_runs"])
            rows.append(
                f"| 1''. Postgres per job, {cmd} | {min(r['commits_per_job'] for r in c['kern_runs'])} commits, "
                f"{min(r['rows_written_per_job'] for r in c['kern_runs'])} rows written, {kc} connections opened "
                f"| hand-written: {min(r['commits_per_job'] for r in c['hand_runs'])} commits, "
                f"{min(r['rows_written_per_job'] for r in c['hand_runs'])} rows written, {hc} connections opened "
                f"| | no connection opened after warm-up | {_ok(kc < 0.01)} |"
            )
    if lg := results.get("lag"):
        b, l = lg["baseline"], lg["loaded"]
        rows.append(
            f"| 2. Fire lag, {l['schedules']} schedules every second, {l['duration_s']} s "
            f"| p50 {l['p50_s']:.3f} s, p99 {l['p99_s']:.3f} s; {l['fired']}/{l['expected_slots']} slots fired "
            f"| {b['schedules']} schedules: p50 {b['p50_s']:.3f} s, p99 {b['p99_s']:.3f} s "
            f"| p99 x{l['p99_s'] / b['p99_s']:.1f} | p99 <= 0.5 s | {_ok(l['p99_s'] <= 0.5)} |"
        )
        if r := lg.get("ramp"):
            steps = ", ".join(f"{s['schedules']}/s: p99 {s['p99_s']:.2f} s" + (f" ({s['missing']} missing)" if s["missing"] else "")
                              for s in r["steps"])  # fmt: skip
            rows.append(
                f"| 2'. Rising rate until fire lag p99 passes 1 s | {steps} | | "
                f"passes 1 s at {r['p99_passes_1s_at'] or 'none tried'}/s (kept up at "
                f"{r['last_kept_up'] or lg['loaded']['schedules']}/s) | (report) | |"
            )
    if c := results.get("claims"):
        s, g = c["small"], c["large"]
        rows.append(
            f"| 3a. Claim + materialise 500 due, N = {g['n']:,} | {g['claim_ms_median']} ms "
            f"| N = {s['n']:,}: {s['claim_ms_median']} ms | x{c['claim_ratio']} | <= x1.5 | {_ok(c['claim_ratio'] <= 1.5)} |"
        )
        rows.append(
            f"| 3b. Dispatch 500 due (claim, materialise, publish), N = {g['n']:,} | {g['dispatch_ms_median']} ms "
            f"(beat's sweep, about once a second, {g.get('sweep_ms_median')} ms more) "
            f"| N = {s['n']:,}: {s['dispatch_ms_median']} ms | x{g['dispatch_ms_median'] / s['dispatch_ms_median']:.2f} "
            f"| <= 100 ms | {_ok(g['dispatch_ms_median'] <= 100)} |"
        )
        rows.append(
            f"| 3c. Beat RSS after dispatching 500, N = {g['n']:,}: the Procfile's `python -m beat`, runtime-only "
            f"install (the Dockerfile's) | {g['beat_rss_mib']} MiB "
            f"| N = {s['n']:,}: {s['beat_rss_mib']} MiB; plain `celery beat` (no-op app) {c['plain_celery_beat_rss_mib']} MiB "
            f"| x{c['rss_ratio']} | flat; <= 70 MiB | {_ok(c['rss_ratio'] <= 1.1 and g['beat_rss_mib'] <= 70)} |"
        )
        for key, what in (("celery_beat", "`celery -A beat beat`, the same install"),
                          ("test_venv_beat", "`python -m beat` in the test venv (its test-only packages loaded)")):  # fmt: skip
            rows.append(
                f"| 3c'. {what}, N = {g['n']:,} | {g[key + '_rss_mib']} MiB | N = {s['n']:,}: {s[key + '_rss_mib']} MiB "
                f"| x{g[key + '_rss_mib'] / s[key + '_rss_mib']:.2f} | (report) | |"
            )
    if a := results.get("agno"):
        d, m = a["agno_default"], a["agno_max_concurrent"]
        rows.append(
            f"| 4. {a['schedules']} due at once vs agno's poller (poll_interval 1 s) | {a['kern_per_s']:.0f} fires/s "
            f"| agno {d['per_s']:.1f}/s (max_concurrent 10), {m['per_s']:.1f}/s (max_concurrent {m['max_concurrent']}) "
            f"| x{a['ratio_vs_agno_default']} / x{a['ratio_vs_agno_max_concurrent']} | (peer) | |"
        )
    if w := results.get("workflow"):
        for key, what, raw, unit in (("sequence", f"a sequence of {w['steps']} no-op Steps", "chain", "step"),
                                     ("parallel", f"a Parallel of {w['branches']} no-op Steps", "chord", "branch")):
            r = w[key]
            rows.append(
                f"| 5. {what}, submit to end, `-P {w['pool']} -c {w['concurrency']}`, median of {w['reps']} "
                f"| {r['kern_ms_per_step']} ms/{unit} (worker CPU {r['kern_worker_cpu_ms']} ms "
                f"+ Postgres {r['kern_postgres_cpu_ms']}) "
                f"| raw Celery {raw} {r['raw_ms_per_step']} ms/{unit} (worker CPU {r['raw_worker_cpu_ms']} ms) "
                f"| x{r['ratio']} (CPU x{r['cpu_ratio']}) | <= x2 | {_ok(r['ratio'] <= 2)} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 3 minutes)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {sorted(unknown)}")

    mode = "quick" if args.quick else "full"
    started = time.time()
    results: dict[str, Any] = {"mode": mode, "machine": machine_info()}
    log(f"{mode} run on {results['machine']['nproc']} CPU(s), load average {loadavg()}")
    pool, concurrency = "threads", 16
    if "throughput" in chosen:
        from bench import throughput

        results["throughput"] = throughput.run(args.quick)
        pool, concurrency = results["throughput"]["best"]["pool"], results["throughput"]["best"]["concurrency"]
    if "lag" in chosen:
        from bench import lag

        results["lag"] = lag.run(args.quick, pool, concurrency)
    if "claims" in chosen:
        from bench import claim_cost

        results["claims"] = claim_cost.run(args.quick)
    if "agno" in chosen:
        try:
            import agno.scheduler  # noqa: F401  (the `test` extra)
        except ImportError:
            log("agno is not installed (pip install -e '.[test]'): benchmark 4 skipped")
        else:
            from bench import agno_peer

            results["agno"] = agno_peer.run(args.quick, pool, concurrency)
    if "workflow" in chosen:
        from bench import workflow

        results["workflow"] = workflow.run(args.quick)
    results["seconds"] = round(time.time() - started, 1)
    results["loadavg_at_end"] = loadavg()

    RESULTS.mkdir(exist_ok=True)
    # A subset does not overwrite the last whole run: full-workflow.json, quick-lag.json, ...
    name = mode if set(chosen) == set(BENCHMARKS) else f"{mode}-{'-'.join(chosen)}"
    dump_json(RESULTS / f"{name}.json", results)
    md = table(results)
    if "claims" in results:
        md += f"\n\nEXPLAIN (ANALYZE, BUFFERS) of the claim at N = {results['claims']['large']['n']:,}:\n\n```\n"
        md += results["claims"]["large"]["explain"] + "\n```\n"
    machine = results["machine"]
    header = (
        f"{mode} run, {machine['date']}, {results['seconds']} s; {machine['nproc']} x {machine['cpu']}, "
        f"{machine['ram_gib']} GiB; Python {machine['python']}, Postgres {machine['postgres']}, "
        f"Redis {machine['redis']}, Celery {machine['celery']}, kombu {machine['kombu']}; "
        f"load average {machine['loadavg_at_start']} at start, {results['loadavg_at_end']} at end\n\n"
    )
    (RESULTS / f"{name}.md").write_text(header + md + "\n")
    print()
    print(header + md)
    log(f"done in {results['seconds']} s; results in {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
