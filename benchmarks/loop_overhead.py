"""Per-step overhead of agent loops: this project against its peers.

Workload: a scripted model asks for a no-op tool N times (one call per
turn, argument i) and then answers "done"; the framework must run its
real loop -- ask the model, dispatch the tool through its own machinery,
feed the result back.  Every scripted model hands its framework the calls
structured, as an OpenAI-compatible server does; the row "ours (raw
text)" has ours parse each turn from model text as well.  Reported
figure: median wall time of a whole run divided by its N + 1 model turns,
in microseconds.

Every framework runs in its own subprocess (``benchmarks/peers/*.py``);
ours with the project's virtualenv, the peers with ``.bench-venv``.  For
each N and each round, every framework runs once (1 warm-up + its timed
runs) and the order rotates from round to round, so slow drifts of the
machine spread over all frameworks instead of landing on one.  The timed
runs per round are ``--reps`` x 100 / N, at least ``--reps`` (30 at N = 10,
6 at N = 50, 3 at N = 200 by default): every N is timed over about the same
number of steps, so a short run's median does not rest on a handful of
millisecond-long samples.  Every framework gets the same count at an N.

    .venv/bin/python benchmarks/loop_overhead.py               # full run
    .venv/bin/python benchmarks/loop_overhead.py --quick       # smoke run
    .venv/bin/python benchmarks/loop_overhead.py --rounds 3 --ns 10,50,200 --json out.json
    .venv/bin/python benchmarks/loop_overhead.py --only ours,smolagents --against HEAD~3  # before/after

``--against REV`` adds a row for ours (run log on) with the packages of git
revision REV, run interleaved with the rest: a before/after figure for a
change, measured under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
MAIN_PY = REPO / ".venv" / "bin" / "python"
BENCH_PY = REPO / ".bench-venv" / "bin" / "python"

# Targets the project holds itself to.
TARGET_PEER_FACTOR = 5.0  # ours <= 1/5 of the fastest peer's per-step overhead
TARGET_GROWTH = 1.3  # ours: us/step at the largest N <= 1.3 x at the smallest N
# The project's import packages, copied to a snapshot before measuring.
OUR_PACKAGES = ("agent", "tools", "memory", "guards")


@dataclass
class Framework:
    key: str
    script: str
    python: Path
    args: list[str] = field(default_factory=list)
    module: str | None = None  # import probe for peers
    ours: bool = False
    baseline: bool = False  # ours at another revision (--against): neither ours nor a peer
    env: dict[str, str] = field(default_factory=dict)  # for this framework's subprocess only
    label: str = ""
    version: str = "?"
    skip: str | None = None
    times: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[int, list[float]] = field(default_factory=dict)
    by_round: dict[int, dict[int, float]] = field(default_factory=dict)  # N -> round -> median run time
    errors: list[str] = field(default_factory=list)
    versions_seen: set[str] = field(default_factory=set)


def our_python() -> Path:
    """The project's virtualenv interpreter, or this one when there is none."""
    return MAIN_PY if MAIN_PY.exists() else Path(sys.executable)


def frameworks(with_prebuilt: bool) -> list[Framework]:
    main_py = our_python()
    fws = [
        Framework("ours", "ours_loop.py", main_py, ["--variant", "log"], ours=True),
        Framework("ours-nolog", "ours_loop.py", main_py, ["--variant", "nolog"], ours=True),
        Framework("ours-thread", "ours_loop.py", main_py, ["--variant", "thread"], ours=True),
        Framework("ours-text", "ours_loop.py", main_py, ["--variant", "log", "--script", "text"], ours=True),
        Framework("smolagents", "smolagents_loop.py", BENCH_PY, module="smolagents"),
        Framework("langgraph", "langgraph_loop.py", BENCH_PY, ["--variant", "graph"], module="langgraph"),
        Framework("pydantic-ai", "pydantic_ai_loop.py", BENCH_PY, module="pydantic_ai"),
        Framework("openai-agents", "openai_agents_loop.py", BENCH_PY, module="agents"),
    ]
    if with_prebuilt:
        fws.insert(
            4,
            Framework(
                "langgraph-prebuilt",
                "langgraph_loop.py",
                BENCH_PY,
                ["--variant", "prebuilt"],
                module="langgraph",
            ),
        )
    return fws


_OURS_ENV: dict[str, str] = {}


def our_version() -> str:
    """`<agent.__version__>+<HEAD>[-dirty]`; dirty = uncommitted changes in the project's packages."""
    version = "?"
    init = REPO / "agent" / "__init__.py"
    if init.exists():
        for line in init.read_text().splitlines():
            if line.startswith("__version__"):
                version = line.split("=", 1)[1].strip().strip("\"'")
    git_env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # keeps `git status` read-only
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", *OUR_PACKAGES],
            capture_output=True,
            text=True,
            timeout=5,
            env=git_env,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return version + (f"+{sha}" if sha else "") + ("-dirty" if dirty else "")


def snapshot_ours() -> Path:
    """Copy the project's packages so edits made during the benchmark do not change what is measured."""
    root = Path(tempfile.mkdtemp(prefix="loop-overhead-src-"))
    for name in OUR_PACKAGES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def revision_packages(rev: str) -> tuple[Path, str]:
    """The project's packages as of git revision `rev`, unpacked in a temporary folder, and its short sha."""
    shown = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if shown.returncode != 0:
        raise SystemExit(f"--against {rev}: not a commit here ({shown.stderr.strip()})")
    sha = shown.stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="loop-overhead-rev-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", sha, "--", *OUR_PACKAGES], capture_output=True
    )
    if archive.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise SystemExit(f"--against {rev}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root, sha


def child_env(fw: Framework | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if fw is not None and fw.ours:
        env.update(_OURS_ENV)
    if fw is not None:
        env.update(fw.env)
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING", "LOGFIRE_TOKEN"):
        env.pop(var, None)
    env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OPENAI_API_KEY", "sk-unused")  # nothing calls out; some SDKs want the variable set
    return env


def probe(fw: Framework) -> None:
    """Mark `fw` skipped (with a reason) when its interpreter or package is missing."""
    if not (PEERS / fw.script).exists():
        fw.skip = f"missing script peers/{fw.script}"
        return
    if not fw.python.exists():
        fw.skip = f"{fw.python.relative_to(REPO)} not found (see benchmarks/README.md for the setup)"
        return
    if fw.module:
        res = subprocess.run(
            [str(fw.python), "-c", f"import {fw.module}"], capture_output=True, text=True, env=child_env()
        )
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["import failed"])[-1]
            fw.skip = f"cannot import {fw.module} in .bench-venv: {last}"


def reps_at(n: int, reps: int) -> int:
    """Timed runs per round at N: about the same number of timed steps at every N."""
    return max(reps, round(reps * 100 / max(n, 1)))


def run_once(fw: Framework, n: int, reps: int, timeout: float, warmup: int = 1, round_: int = 0) -> None:
    cmd = [str(fw.python), str(PEERS / fw.script), *fw.args, "--n", str(n), "--reps", str(reps)]
    cmd += ["--warmup", str(warmup)]
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=child_env(fw), cwd=REPO
        )
    except subprocess.TimeoutExpired:
        fw.errors.append(f"N={n}: timed out after {timeout:.0f}s")
        return
    record = None
    for line in reversed(res.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                record = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if res.returncode != 0 or record is None:
        tail = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["no output"])[-1]
        fw.errors.append(f"N={n}: exit {res.returncode}: {tail}")
        return
    fw.label = fw.label or record["framework"]
    fw.version = record["version"]
    fw.versions_seen.add(record["version"])
    fw.times.setdefault(n, []).extend(record["times_s"])
    fw.by_round.setdefault(n, {})[round_] = statistics.median(record["times_s"])
    fw.cpu.setdefault(n, []).extend(record.get("cpu_s", []))


def us_per_step(fw: Framework, n: int, cpu: bool = False) -> float | None:
    times = (fw.cpu if cpu else fw.times).get(n)
    if not times:
        return None
    return statistics.median(times) / (n + 1) * 1e6


def marginal_us(fw: Framework, ns: list[int]) -> float | None:
    """Extra time per extra step between the two largest N: the per-step cost without fixed per-run costs."""
    if len(ns) < 2:
        return None
    lo, hi = ns[-2], ns[-1]
    t_lo, t_hi = fw.times.get(lo), fw.times.get(hi)
    if not t_lo or not t_hi:
        return None
    return (statistics.median(t_hi) - statistics.median(t_lo)) / (hi - lo) * 1e6


def paired_ratio(peer: Framework, ours: Framework, n: int) -> float | None:
    """The median over rounds of peer / ours, each round's pair measured minutes apart at
    most: a drift of the machine's speed (which moved every row by a fifth between the
    rounds of one run here) cancels out of each pair, as it does not out of a ratio of
    medians taken over all rounds."""
    mine, theirs = ours.by_round.get(n, {}), peer.by_round.get(n, {})
    ratios = [theirs[r] / mine[r] for r in mine if r in theirs and mine[r] > 0]
    return statistics.median(ratios) if ratios else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def python_version(py: Path) -> str:
    if not py.exists():
        return "missing"
    res = subprocess.run(
        [str(py), "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    )
    return res.stdout.strip() or "?"


def machine_info() -> dict[str, str]:
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "platform": platform.platform(),
        "python (ours, .venv)": python_version(our_python()),
        "python (peers, .bench-venv)": python_version(BENCH_PY),
        "load average at start": load,
    }


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def build_table(fws: list[Framework], ns: list[int]) -> tuple[list[str], list[list[str]], dict]:
    ours = next((f for f in fws if f.key == "ours" and f.times), None)
    ratio_ns = ns[1:] if len(ns) > 1 else ns
    header = ["framework", "version"] + [f"us/step N={n}" for n in ns]
    header += [f"growth {ns[-1]}/{ns[0]}"]
    if len(ns) > 1:
        header += [f"marginal {ns[-2]}->{ns[-1]}"]
    header += [f"x ours N={n}" for n in ratio_ns]
    rows: list[list[str]] = []
    summary: dict = {}
    for fw in fws:
        if not fw.times:
            continue
        per = {n: us_per_step(fw, n) for n in ns}
        growth = per[ns[-1]] / per[ns[0]] if per[ns[-1]] and per[ns[0]] else None
        ratios = {}
        for n in ratio_ns:
            base = us_per_step(ours, n) if ours else None
            ratios[n] = per[n] / base if per[n] and base and fw is not ours else None
        marginal = marginal_us(fw, ns)
        row = [fw.label or fw.key, fw.version] + [fmt(per[n]) for n in ns] + [fmt(growth, ".2f")]
        if len(ns) > 1:
            row.append(fmt(marginal))
        row += ["(ref)" if fw is ours else fmt(ratios[n], ".1f") for n in ratio_ns]
        rows.append(row)
        summary[fw.key] = {
            "label": fw.label or fw.key,
            "version": fw.version,
            "us_per_step": {str(n): per[n] for n in ns},
            "growth": growth,
            "marginal_us_per_step": marginal,
            "ratio_to_ours": {str(n): ratios[n] for n in ratio_ns},
            "cpu_us_per_step": {str(n): us_per_step(fw, n, cpu=True) for n in ns},
            "runs": {str(n): len(fw.times.get(n, [])) for n in ns},
        }
    return header, rows, summary


def print_table(
    header: list[str],
    rows: list[list[str]],
    use_rich: bool,
    title: str = "Agent loop overhead (median wall-clock us per model turn; lower is better)",
    text_cols: int = 2,
) -> None:
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            for i, h in enumerate(header):
                table.add_column(h, justify="left" if i < text_cols else "right")
            for row in rows:
                table.add_row(*row)
            Console().print(table)
            return
        except ImportError:
            pass
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_cols else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(title)
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def target_checks(fws: list[Framework], ns: list[int]) -> list[dict]:
    checks: list[dict] = []
    peers = [f for f in fws if not f.ours and not f.baseline and f.times]
    for key in ("ours", "ours-nolog", "ours-thread", "ours-text"):
        ours = next((f for f in fws if f.key == key and f.times), None)
        if ours is None:
            continue
        name = ours.label or key
        for n in ns:
            mine = us_per_step(ours, n)
            peer_vals = [(us_per_step(p, n), p.label or p.key) for p in peers]
            peer_vals = [(v, lbl) for v, lbl in peer_vals if v is not None]
            if mine is None or not peer_vals:
                continue
            fastest, who = min(peer_vals)
            peer = next(p for p in peers if (p.label or p.key) == who)
            paired = paired_ratio(peer, ours, n)
            # Judged on the rounds' paired ratio where there is one (see paired_ratio); the
            # ratio of the medians is shown beside it.
            factor = paired if paired is not None else fastest / mine
            pairs = f"; per round, paired: {paired:.1f}x" if paired is not None else ""
            checks.append(
                {
                    "check": f"{name}: us/step <= 1/{TARGET_PEER_FACTOR:g} of fastest peer at N={n}",
                    "detail": f"{mine:,.0f} vs {who} {fastest:,.0f} "
                    f"(fastest peer is {fastest / mine:.1f}x ours{pairs})",
                    "ok": factor >= TARGET_PEER_FACTOR,
                    "ratio_of_medians": fastest / mine,
                    "paired_ratio": paired,
                }
            )
        first, last = us_per_step(ours, ns[0]), us_per_step(ours, ns[-1])
        if first and last and len(ns) > 1:
            growth = last / first
            checks.append(
                {
                    "check": f"{name}: growth us/step N={ns[-1]} / N={ns[0]} <= {TARGET_GROWTH}",
                    "detail": f"{growth:.2f}",
                    "ok": growth <= TARGET_GROWTH,
                }
            )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per N (each runs every framework once)")
    parser.add_argument(
        "--reps",
        type=int,
        default=3,
        help="timed runs per framework per round at N = 100 (x 100 / N, at least this)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per subprocess before the timed ones (default 1)"
    )
    parser.add_argument("--ns", default="10,50,200", help="comma-separated tool-call counts")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 rep")
    parser.add_argument("--only", default="", help="comma-separated framework keys to run (default: all)")
    parser.add_argument(
        "--with-prebuilt", action="store_true", help="also run langgraph's create_react_agent"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per framework subprocess")
    parser.add_argument("--json", dest="json_path", default=None, help="write all results to this JSON file")
    parser.add_argument("--rich", action="store_true", help="print the table with rich")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before starting, wait up to this long for the 1-minute load average to drop below half the cores",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run ours (run log on) with the packages of this git revision, interleaved: before/after a change",
    )
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="measure the live working tree instead of a copy of the project's packages taken at the start",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep stdout and the stderr progress lines in order

    if args.quick:
        args.rounds, args.reps = 1, 1
    ns = sorted({int(x) for x in args.ns.split(",") if x.strip()})
    fws = frameworks(args.with_prebuilt)
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        fws = [f for f in fws if f.key in wanted]

    baseline_src = None
    if args.against:
        baseline_src, sha = revision_packages(args.against)
        fws.insert(
            1,
            Framework(
                "ours-against",
                "ours_loop.py",
                our_python(),
                ["--variant", "log"],
                env={
                    "LOOP_OVERHEAD_SRC": str(baseline_src),
                    "LOOP_OVERHEAD_VERSION": f"{args.against} ({sha})",
                },
                label=f"ours at {args.against}",
                baseline=True,
            ),
        )

    cores = os.cpu_count() or 1
    if args.wait_idle > 0 and hasattr(os, "getloadavg"):
        deadline = time.monotonic() + args.wait_idle
        while os.getloadavg()[0] >= cores / 2 and time.monotonic() < deadline:
            print(
                f"waiting for the machine to go idle (load {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(15)
    info = machine_info()
    print("Machine")
    for k, v in info.items():
        print(f"  {k}: {v}")
    print(
        f"Settings: N={ns}, rounds={args.rounds}, "
        f"reps/round={', '.join(f'{reps_at(n, args.reps)} at N={n}' for n in ns)} "
        f"(+{args.warmup} warm-up per subprocess)"
    )
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores / 2:
        print(
            f"WARNING: the machine is busy (load {os.getloadavg()[0]:.2f} on {cores} cores); timings will be noisy"
        )
    print()

    for fw in fws:
        probe(fw)
        if fw.skip:
            print(f"SKIP {fw.key}: {fw.skip}")
    active = [f for f in fws if not f.skip]
    if not active:
        print("nothing to run")
        return 1
    snapshot = None
    if any(f.ours for f in active):
        version = our_version()
        _OURS_ENV["LOOP_OVERHEAD_VERSION"] = version
        if not args.no_snapshot:
            snapshot = snapshot_ours()
            _OURS_ENV["LOOP_OVERHEAD_SRC"] = str(snapshot)
            print(f"Ours: {version}, measured from a snapshot of {', '.join(OUR_PACKAGES)} taken now")
        else:
            print(f"Ours: {version}, measured from the live working tree")

    started = time.perf_counter()
    for n in ns:
        for r in range(args.rounds):
            shift = r % len(active)
            order = active[shift:] + active[:shift]
            for fw in order:
                if fw.skip:
                    continue
                before = len(fw.errors)
                run_once(fw, n, reps_at(n, args.reps), args.timeout, args.warmup, r)
                if len(fw.errors) > before:
                    print(f"ERROR {fw.key}: {fw.errors[-1]}", file=sys.stderr)
            elapsed = time.perf_counter() - started
            print(
                f"  N={n} round {r + 1}/{args.rounds} done ({elapsed:.0f}s elapsed)",
                file=sys.stderr,
                flush=True,
            )
    total = time.perf_counter() - started
    for folder in (snapshot, baseline_src):
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass

    header, rows, summary = build_table(fws, ns)
    print()
    print_table(header, rows, args.rich)
    print()
    print("us/step = median wall time of a whole run / (N + 1) model turns.  growth = us/step at largest N /")
    print(
        "at smallest N (1.0 = constant per-step cost).  marginal = (median run time at the largest N - at the"
    )
    print("next N) / their difference in steps, in us: the per-step cost with fixed per-run costs taken out.")
    print("x ours = that row's us/step / ours (with run log).")
    print(
        "ours: the no-op tool is declared @tool(blocking=False) and runs on the event loop (as smolagents runs"
    )
    print("its tools); ours (tool on a thread): a plain @tool, which runs on a worker thread, the default.")
    print(
        "Every model hands over structured tool calls; ours (raw text) parses them from model text as well."
    )
    cpu_rows = [
        [f.label or f.key] + [fmt(us_per_step(f, n, cpu=True)) for n in ns]
        for f in fws
        if f.cpu and any(f.cpu.values())
    ]
    if cpu_rows:
        print()
        print_table(
            ["framework"] + [f"cpu us/step N={n}" for n in ns],
            cpu_rows,
            args.rich,
            "Same runs, process CPU time (all threads) per model turn -- less sensitive to other load",
            text_cols=1,
        )
    peers_versions = {f.label or f.key: f.version for f in fws if not f.ours and not f.baseline and f.times}
    if peers_versions:
        print("Peer versions: " + ", ".join(f"{k} {v}" for k, v in peers_versions.items()))
    for fw in fws:
        if len(fw.versions_seen) > 1:
            print(
                f"WARNING {fw.key}: the code changed during the benchmark ({', '.join(sorted(fw.versions_seen))})"
            )
        if fw.skip:
            print(f"Skipped {fw.key}: {fw.skip}")
        for err in fw.errors:
            print(f"Failed {fw.key}: {err}")

    checks = target_checks(fws, ns)
    if checks:
        print()
        print("Targets")
        for c in checks:
            print(f"  [{'PASS' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}")
    print(f"\nBenchmark wall time: {total:.0f}s; load average at end: {info.get('load average at end', '?')}")

    if args.json_path:
        out = {
            "machine": info,
            "settings": {
                "ns": ns,
                "rounds": args.rounds,
                "reps": {n: reps_at(n, args.reps) for n in ns},
                "warmup": args.warmup,
            },
            "results": summary,
            "raw_times_s": {f.key: {str(n): t for n, t in f.times.items()} for f in fws if f.times},
            "raw_cpu_s": {f.key: {str(n): t for n, t in f.cpu.items()} for f in fws if f.cpu},
            # each round's median run time, by framework and N: the pairs the peer factor is judged on
            "round_medians_s": {
                f.key: {str(n): [rounds[r] for r in sorted(rounds)] for n, rounds in f.by_round.items()}
                for f in fws
                if f.by_round
            },
            "skipped": {f.key: f.skip for f in fws if f.skip},
            "errors": {f.key: f.errors for f in fws if f.errors},
            "versions_seen": {f.key: sorted(f.versions_seen) for f in fws if f.versions_seen},
            "targets": checks,
            "wall_s": total,
        }
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")
        print(f"Results written to {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
