"""The benchmark: chunkyard against restic and borg on one reproducible data set.

Generates (or reuses) the data set, runs each selected tool N times with fresh repositories,
prints the medians and whether chunkyard meets its targets, runs the micro-benchmarks that
exist, and appends a dated section to docs/benchmarks.md. Exit status 1 if any tool failed
(including a restore that did not give back the source bytes); unmet targets are reported,
not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import dataset
import peers
import treecmp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"
MICRO_BENCHES = ("bench_chunker.py", "bench_locks.py")
MICRO_TIMEOUT = 900
MICRO_MAX_LINES = 120
PEERS = ("restic", "borg")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="chunkyard vs restic vs borg (see docs/benchmarks.md)")
    p.add_argument(
        "--tools",
        default="chunkyard,restic,borg",
        help="comma-separated subset of: " + ",".join(peers.TOOLS),
    )
    p.add_argument("--runs", type=int, default=3, help="repetitions; the median is reported")
    p.add_argument(
        "--size-mib",
        type=int,
        default=dataset.DEFAULT_SIZE_MIB,
        help="data set size (default %(default)s MiB, at least 1 GiB)",
    )
    p.add_argument("--seed", type=int, default=dataset.DEFAULT_SEED)
    p.add_argument(
        "--work",
        type=Path,
        default=dataset.DEFAULT_WORK,
        help="scratch directory (data set, repositories, logs)",
    )
    p.add_argument(
        "--no-record",
        action="store_true",
        help=f"do not append the results to {DOC.relative_to(REPO)}",
    )
    p.add_argument(
        "--skip-micro", action="store_true", help="do not run " + " and ".join(MICRO_BENCHES)
    )
    args = p.parse_args(argv)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in names if t not in peers.TOOLS]
    if unknown or not names:
        p.error(f"--tools: unknown {unknown or 'empty list'}; choose from {list(peers.TOOLS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.size_mib < 1:
        p.error("--size-mib must be at least 1")
    args.tool_names = names
    return args


def command_line(argv: list[str]) -> str:
    """How this run was started, as a reader would type it again."""
    direct = "python bench/run.py" + (" " + shlex.join(argv) if argv else "")
    if os.environ.get("MAKELEVEL") and not argv:
        return f"`make bench` (= `{direct}`)"
    return f"`{direct}`"


def machine() -> dict[str, str]:
    cpu = "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": mem,
        "python": platform.python_version(),
        "load average at start": load,
    }


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def results_table(results: list[peers.ToolResult]) -> list[str]:
    head = ["tool", *(f"{m} (s)" for m in peers.MEASUREMENTS), "repository after first backup"]
    rows = [head, ["---"] * len(head)]
    for r in results:
        if r.error:
            rows.append([r.name, *["failed"] * len(peers.MEASUREMENTS), "—"])
            continue
        size = median([float(b) for b in r.repo_bytes])
        rows.append(
            [
                r.name,
                *(fmt_s(median(r.times[m])) for m in peers.MEASUREMENTS),
                "—" if size is None else f"{size / dataset.MIB:.0f} MiB",
            ]
        )
    return ["| " + " | ".join(row) + " |" for row in rows]


def runs_lines(results: list[peers.ToolResult]) -> list[str]:
    out = []
    for r in results:
        for m in peers.MEASUREMENTS:
            if r.times[m]:
                out.append(f"- {r.name}, {m}: " + ", ".join(f"{t:.2f}" for t in r.times[m]))
    return out


def ratio_table(results: list[peers.ToolResult]) -> list[str]:
    by = {r.name: r for r in results if r.repo_bytes and not r.error}
    cy = by.get("chunkyard")
    peers_here = [p for p in PEERS if p in by]
    if cy is None or not peers_here:
        return []
    head = ["measurement", *(f"chunkyard/{p}" for p in peers_here)]
    rows = [head, ["---"] * len(head)]
    for m in peers.MEASUREMENTS:
        rows.append(
            [m, *(fmt_ratio(median(cy.times[m]), median(by[p].times[m])) for p in peers_here)]
        )
    cy_size = median([float(b) for b in cy.repo_bytes])
    rows.append(
        [
            "repository size",
            *(fmt_ratio(cy_size, median([float(b) for b in by[p].repo_bytes])) for p in peers_here),
        ]
    )
    return ["| " + " | ".join(row) + " |" for row in rows]


def targets(results: list[peers.ToolResult]) -> list[str]:
    """The issue's targets: first backup faster than both peers; unchanged re-backup and
    restore no slower than the faster peer."""
    by = {r.name: r for r in results if r.repo_bytes and not r.error}
    cy = by.get("chunkyard")
    peers_here = [p for p in PEERS if p in by]
    if cy is None:
        return ["- not evaluated: chunkyard has no result"]
    if not peers_here:
        return ["- not evaluated: no peer has a result"]
    missing = [p for p in PEERS if p not in peers_here]
    caveat = (
        f" (only against {', '.join(peers_here)}; no result for {', '.join(missing)})"
        if missing
        else ""
    )
    lines = []
    for m, strict, text in (
        ("first backup", True, "first backup faster than both peers"),
        ("unchanged backup", False, "unchanged re-backup no slower than the faster peer"),
        ("restore", False, "restore no slower than the faster peer"),
    ):
        mine = median(cy.times[m])
        best_peer = min(peers_here, key=lambda p: median(by[p].times[m]) or 0.0)
        theirs = median(by[best_peer].times[m])
        assert mine is not None and theirs is not None
        met = mine < theirs if strict else mine <= theirs
        lines.append(
            f"- {text}: **{'MET' if met else 'NOT MET'}** — chunkyard {mine:.2f} s vs "
            f"{best_peer} {theirs:.2f} s{caveat}"
        )
    return lines


def run_micro(names: list[str]) -> list[tuple[str, str]]:
    """Run the micro-benchmarks that exist; (name, output or error) for each."""
    out = []
    for name in names:
        script = HERE / name
        if not script.exists():
            continue
        print(f"micro: running {name}", flush=True)
        try:
            proc = subprocess.run(
                [sys.executable, str(script)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=MICRO_TIMEOUT,
                check=False,
            )
            text = (proc.stdout + proc.stderr).rstrip()
            if proc.returncode != 0:
                text += f"\n(exited with {proc.returncode})"
        except subprocess.TimeoutExpired:
            text = f"(did not finish in {MICRO_TIMEOUT} s)"
        lines = text.splitlines()
        if len(lines) > MICRO_MAX_LINES:
            lines = [*lines[:MICRO_MAX_LINES], f"... ({len(lines) - MICRO_MAX_LINES} more lines)"]
        print("\n".join(lines), flush=True)
        out.append((name, "\n".join(lines)))
    return out


def section(
    args: argparse.Namespace,
    argv: list[str],
    mach: dict[str, str],
    info: dataset.DatasetInfo,
    results: list[peers.ToolResult],
    micro: list[tuple[str, str]],
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## {when} — {info.total_bytes / dataset.MIB:.0f} MiB, median of {args.runs} "
        f"run{'s' if args.runs != 1 else ''}",
        "",
        f"Command: {command_line(argv)}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in mach.items()),
        "",
        "Tools:",
        *(f"- {r.name}: {r.version}; {r.notes}" for r in results),
        "",
        "Data set:",
        *(f"- {line}" for line in info.describe()),
        "",
        "Medians in seconds (wall clock of the whole command, hot caches):",
        "",
        *results_table(results),
        "",
    ]
    ratios = ratio_table(results)
    if ratios:
        lines += ["Ratios (below 1 means chunkyard is faster or smaller):", "", *ratios, ""]
    lines += ["Targets:", "", *targets(results), ""]
    all_runs = runs_lines(results)
    if all_runs:
        lines += ["All runs (s):", "", *all_runs, ""]
    errors = [r for r in results if r.error]
    if errors:
        lines += ["Errors:", "", *(f"- {r.name}: {r.error}" for r in errors), ""]
    for name, text in micro:
        lines += [f"`bench/{name}`:", "", "```", text, "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    mach = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in mach.items()), flush=True)

    info = dataset.ensure_dataset(
        dataset.DatasetSpec(seed=args.seed, size_mib=args.size_mib), work / "data"
    )
    data = work / "data"
    started = time.perf_counter()
    source = treecmp.summarize(data)  # also warms the page cache: all runs see hot caches
    print(
        f"dataset: {len(source)} entries hashed in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    tools = [peers.TOOLS[n](work / "state" / n) for n in args.tool_names]
    results = [peers.ToolResult(t.name, version=t.version(), notes=t.notes) for t in tools]
    for r in results:
        print(f"{r.name}: {r.version}", flush=True)

    # Repetitions outside, tools inside: a noisy minute on the shared machine then hurts
    # every tool a little rather than one tool a lot.
    for rep in range(args.runs):
        for tool, result in zip(tools, results, strict=True):
            if result.error:
                continue
            print(f"run {rep + 1}/{args.runs}: {tool.name} ...", end=" ", flush=True)
            try:
                peers.measure_once(tool, data, source, work, rep, result)
            except peers.ToolError as exc:
                result.error = f"run {rep + 1}: {exc}"
                print(f"FAILED\n!!! {tool.name}: {exc}", flush=True)
                continue
            print(
                ", ".join(f"{m} {result.times[m][-1]:.2f} s" for m in peers.MEASUREMENTS)
                + f", repository {result.repo_bytes[-1] / dataset.MIB:.0f} MiB",
                flush=True,
            )

    micro = [] if args.skip_micro else run_micro(list(MICRO_BENCHES))

    print()
    print("\n".join(results_table(results)))
    ratios = ratio_table(results)
    if ratios:
        print()
        print("\n".join(ratios))
    print()
    print("\n".join(targets(results)))

    text = section(args, argv, mach, info, results, micro)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (work / "results").mkdir(exist_ok=True)
    (work / "results" / f"{stamp}.json").write_text(
        json.dumps(
            {
                "argv": argv,
                "machine": mach,
                "dataset": asdict(info),
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    (work / "results" / f"{stamp}.md").write_text(text + "\n")
    if args.no_record:
        print(f"\n(not recorded; section saved in {work / 'results' / f'{stamp}.md'})")
    else:
        with DOC.open("a") as f:
            f.write("\n" + text + "\n")
        print(f"\nappended to {DOC.relative_to(REPO)}")

    failed = [r.name for r in results if r.error]
    if failed:
        print(
            f"\nFAILED: {', '.join(failed)} (see Errors above and the logs under {work}/logs)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
