"""Measure TeckoChecker against the floor of each task, in one run.

Every scenario runs TeckoChecker and a floor (the least work that task could
cost on this machine) one after the other against the same simulator on
127.0.0.1, and prints the ratio next to its target. Nothing here is asserted;
``tests/test_benchmarks.py`` only checks that the script runs at tiny sizes.

Usage:
    python benchmarks/run.py                 # the sizes of the targets
    python benchmarks/run.py --scale 0.01    # a quick run at 1 % of the sizes
    python benchmarks/run.py --only poll,startup
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.simulator import Simulator

OPENAI_KEY = "sk-bench-openai"
KEBOOLA_TOKEN = "bench-keboola-token"
COMPONENT = "kds-team.app-custom-python"
CONFIG = "12345"
FIVE = [
    "batch_ids_completed",
    "batch_ids_failed",
    "batch_count_total",
    "batch_count_completed",
    "batch_count_failed",
]
FOREVER = [{"status": "in_progress", "seconds": 10**9}, {"status": "completed"}]
DONE = [{"status": "completed"}]


@dataclass
class Row:
    """One line of the result table."""

    scenario: str
    measure: str
    teckochecker: float
    floor: float
    target: str
    unit: str = "s"

    @property
    def ratio(self) -> float | None:
        return self.teckochecker / self.floor if self.floor else None


def scenario_dict(batches: dict[str, Any], latency: float = 0.0) -> dict[str, Any]:
    # Real batches have a creation time from the start; a simulated batch
    # without one gets it at its first read, which reorders the list pages.
    start = 1_700_000_000
    for index, batch in enumerate(batches.values()):
        batch.setdefault("created_at", start + index)
    scenario: dict[str, Any] = {
        "openai": {"api_keys": [OPENAI_KEY], "batches": batches},
        "keboola": {
            "tokens": [KEBOOLA_TOKEN],
            "configurations": [
                {"component": COMPONENT, "id": CONFIG, "variables": FIVE}
            ],
            "job_seconds": 0,
        },
    }
    if latency:
        scenario["faults"] = [{"service": "openai", "latency": latency}]
    return scenario


def write_jobs(directory: Path, port: int, jobs: dict[str, list[str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, batch_ids in jobs.items():
        ids = "\n".join(f"  - {b}" for b in batch_ids)
        (directory / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                batch_ids:
                {{ids}}
                openai:
                  api_key: env:BENCH_OPENAI_KEY
                  base_url: http://127.0.0.1:{port}/v1
                keboola:
                  stack_url: http://127.0.0.1:{port}
                  queue_url: http://127.0.0.1:{port}
                  token: env:BENCH_KEBOOLA_TOKEN
                  component_id: {COMPONENT}
                  configuration_id: "{CONFIG}"
                """
            ).replace("{ids}", ids),
            encoding="utf-8",
        )


def env(state_dir: Path, **extra: str) -> dict[str, str]:
    values = dict(os.environ)
    values.update(
        TC_STATE_DIR=str(state_dir),
        TC_ALLOWED_HOSTS="127.0.0.1",
        BENCH_OPENAI_KEY=OPENAI_KEY,
        BENCH_KEBOOLA_TOKEN=KEBOOLA_TOKEN,
        **extra,
    )
    return values


def tc(*args: str, environ: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Run tc in a subprocess; return its wall time and standard output."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"tc {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall, done.stdout


def python(code: str, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stdout


FLOOR_LOOP = textwrap.dedent(
    """\
    import asyncio, json, sys, time
    import httpx

    # argv: method, file of URLs (one per line), concurrency, key, token
    async def main():
        method, concurrency = sys.argv[1], int(sys.argv[3])
        urls = open(sys.argv[2]).read().split()
        headers = {"Authorization": "Bearer " + sys.argv[4],
                   "X-StorageApi-Token": sys.argv[5]}
        body = {"mode": "run", "component": "kds-team.app-custom-python",
                "config": "12345"}
        limiter = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, headers=headers) as client:
            async def one(url):
                async with limiter:
                    if method == "GET":
                        response = await client.get(url)
                    else:
                        response = await client.post(url, json=body)
                    response.json()
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(url) for url in urls))
            print(json.dumps({"wall": time.perf_counter() - wall,
                              "cpu": time.process_time() - cpu}))

    asyncio.run(main())
    """
)


def floor_loop(method: str, urls: list[str], concurrency: int) -> dict[str, float]:
    """Time a bare httpx loop making the same requests, in a subprocess."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(urls))
    try:
        _, out = python(
            FLOOR_LOOP, method, handle.name, str(concurrency), OPENAI_KEY, KEBOOLA_TOKEN
        )
    finally:
        os.unlink(handle.name)
    return dict(json.loads(out))


@contextmanager
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tc-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def count_requests(sim: Simulator, service: str) -> int:
    return sum(1 for r in sim.requests() if r["service"] == service)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_of(runs: int, action: Callable[[], float]) -> float:
    return min(action() for _ in range(runs))


# Scenarios


def bench_poll(scale: float) -> list[Row]:
    """1,000 jobs of 10 distinct batches each, 10 ms latency, concurrency 50."""
    jobs_n = max(2, round(1000 * scale))
    per_job, latency, concurrency = 10, 0.010, 50
    jobs = {
        f"job-{j}": [f"batch_p{j}_{b}" for b in range(per_job)] for j in range(jobs_n)
    }
    batches = {b: {"script": FOREVER} for ids in jobs.values() for b in ids}
    with workspace() as root, Simulator(scenario_dict(batches, latency)) as sim:
        write_jobs(root / "jobs.d", sim.port, jobs)
        # Single GETs, so both sides make the same requests.
        environ = env(
            root / "state", TC_POLL_STRATEGY="get", TC_CONCURRENCY=str(concurrency)
        )
        before = count_requests(sim, "openai")
        _, out = tc("apply", "-o", "json", "jobs.d", environ=environ, cwd=root)
        requests = count_requests(sim, "openai") - before
        poll = json.loads(out)["timings"]["poll"]
        urls = [f"{sim.url}/v1/batches/{b}" for b in batches]
        floor = floor_loop("GET", urls, concurrency)
    count = len(batches)
    return [
        Row(
            "poll cycle", f"wall, {count} GETs", poll["wall"], floor["wall"], "<= 1.2x"
        ),
        Row("poll cycle", "CPU", poll["cpu"], floor["cpu"], "<= 1.5x"),
        Row("poll cycle", "requests", requests, count, "= 1x", unit="req"),
    ]


def bench_shared(scale: float) -> list[Row]:
    """500 jobs listing the same 10 batches: each is fetched once."""
    jobs_n = max(2, round(500 * scale))
    shared = [f"batch_shared_{b}" for b in range(10)]
    batches = {b: {"script": FOREVER} for b in shared}
    with workspace() as root, Simulator(scenario_dict(batches)) as sim:
        write_jobs(
            root / "jobs.d", sim.port, {f"job-{j}": shared for j in range(jobs_n)}
        )
        environ = env(root / "state")
        tc("apply", "jobs.d", environ=environ, cwd=root)
        requests = count_requests(sim, "openai")
    return [
        Row("shared batches", f"requests, {jobs_n} jobs", requests, 10, "= 1x", "req")
    ]


def bench_burst_and_settled(scale: float) -> list[Row]:
    """1,000 jobs ready at once; then the same jobs settled."""
    jobs_n = max(2, round(1000 * scale))
    concurrency = 50
    jobs = {f"job-{j}": [f"batch_t{j}"] for j in range(jobs_n)}
    batches = {ids[0]: {"script": DONE} for ids in jobs.values()}
    rows: list[Row] = []
    with workspace() as root, Simulator(scenario_dict(batches)) as sim:
        write_jobs(root / "jobs.d", sim.port, jobs)
        environ = env(root / "state", TC_CONCURRENCY=str(concurrency))
        _, out = tc("apply", "-o", "json", "jobs.d", environ=environ, cwd=root)
        trigger = json.loads(out)["timings"]["trigger"]
        created = len(sim.keboola_jobs())
        floor = floor_loop("POST", [f"{sim.url}/jobs"] * jobs_n, concurrency)
        rows.append(
            Row(
                "trigger burst",
                f"wall, {jobs_n} triggers",
                trigger["wall"],
                floor["wall"],
                "<= 1.5x",
            )
        )
        rows.append(
            Row(
                "trigger burst", "Keboola jobs created", created, jobs_n, "= 1x", "jobs"
            )
        )

        # Follow the Keboola jobs until they have finished; then nothing is left.
        for _ in range(5):
            _, out = tc("apply", "-o", "json", "jobs.d", environ=environ, cwd=root)
        files = sorted((root / "jobs.d").glob("*.yaml"))
        job_files = [str(f) for f in files if not f.name.endswith(".status.yaml")]
        before = count_requests(sim, "openai") + count_requests(sim, "keboola")
        settled = best_of(
            3, lambda: tc("apply", "jobs.d", environ=environ, cwd=root)[0]
        )
        _, out = tc("apply", "-o", "json", "jobs.d", environ=environ, cwd=root)
        written = len(json.loads(out)["status_files_written"])
        after = count_requests(sim, "openai") + count_requests(sim, "keboola")
        parse = textwrap.dedent(
            """\
            import sys, yaml
            for name in open(sys.argv[1]).read().split():
                with open(name, "rb") as handle:
                    yaml.load(handle, Loader=yaml.CSafeLoader)
            """
        )
        listing = root / "files.txt"
        listing.write_text("\n".join(job_files), encoding="utf-8")
        floor_parse = best_of(3, lambda: python(parse, str(listing))[0])
        rows.append(
            Row(
                "apply, nothing to do",
                f"wall, {jobs_n} job files",
                settled,
                floor_parse,
                "<= 2x",
            )
        )
        rows.append(
            Row("quiet cycle", "status files written", written, 0, "= 0", "files")
        )
        rows.append(
            Row("quiet cycle", "HTTP requests", after - before, 0, "= 0", "req")
        )

        table = best_of(3, lambda: tc("status", environ=environ, cwd=root)[0])
        as_json = best_of(
            3, lambda: tc("status", "-o", "json", environ=environ, cwd=root)[0]
        )
        version = best_of(3, lambda: tc("--version", environ=environ, cwd=root)[0])
        rows.append(
            Row("status", f"tc status, {jobs_n} jobs", table, version, "<= 1.5x")
        )
        rows.append(Row("status", "tc status -o json", as_json, version, "<= 1.5x"))
    return rows


def bench_startup(scale: float) -> list[Row]:
    """tc --version against importing typer alone."""
    with workspace() as root:
        environ = env(root / "state")
        version = best_of(5, lambda: tc("--version", environ=environ, cwd=root)[0])
    typer = best_of(5, lambda: python("import typer")[0])
    return [Row("start-up", "tc --version", version, typer, "<= 2x")]


def bench_list(scale: float, untracked: int) -> list[Row]:
    """10,000 pending batches that are the key's newest, maybe behind newer ones."""
    tracked_n = max(20, round(10_000 * scale))
    untracked_n = round(untracked * scale)
    start = 1_700_000_000
    tracked = [f"batch_l{i}" for i in range(tracked_n)]
    batches: dict[str, Any] = {
        b: {"script": FOREVER, "created_at": start + i} for i, b in enumerate(tracked)
    }
    for i in range(untracked_n):
        batches[f"batch_u{i}"] = {
            "script": FOREVER,
            "created_at": start + tracked_n + i,
        }
    jobs = {
        f"job-{j}": tracked[j * 10 : (j + 1) * 10] for j in range((tracked_n + 9) // 10)
    }
    with workspace() as root, Simulator(scenario_dict(batches)) as sim:
        write_jobs(root / "jobs.d", sim.port, jobs)
        environ = env(root / "state")
        tc("apply", "jobs.d", environ=environ, cwd=root)
        before = count_requests(sim, "openai")
        cpu = child_cpu()
        tc("apply", "jobs.d", environ=environ, cwd=root)
        cpu = child_cpu() - cpu
        requests = count_requests(sim, "openai") - before
    label = (
        f"list mode, {tracked_n} newest"
        if not untracked_n
        else (f"list mode, behind {untracked_n} newer")
    )
    target = "<= 0.02x" if not untracked_n else "<= 1x"
    return [
        Row(label, "requests vs single GETs", requests, tracked_n, target, "req"),
        Row(
            label,
            "CPU per tracked batch, ms",
            cpu * 1000 / tracked_n,
            1.0,
            "<= 1x",
            "ms",
        ),
    ]


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size of a process in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


@contextmanager
def daemon(root: Path, environ: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `tc watch jobs.d` until the block ends, then stop it with SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "watch", "jobs.d"],
        cwd=root,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def wait_for_status_files(directory: Path, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(list(directory.glob("*.status.yaml"))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon wrote no {count} status files in time")
        time.sleep(0.2)


def bench_idle(scale: float) -> list[Row]:
    """100 jobs waiting between polls: the daemon's CPU share over 60 s."""
    jobs_n = max(2, round(100 * scale))
    window = max(3.0, 60 * min(scale, 1.0))
    jobs = {f"job-{j}": [f"batch_i{j}"] for j in range(jobs_n)}
    batches = {ids[0]: {"script": FOREVER} for ids in jobs.values()}
    with workspace() as root, Simulator(scenario_dict(batches)) as sim:
        write_jobs(root / "jobs.d", sim.port, jobs)
        with daemon(root, env(root / "state")) as process:
            wait_for_status_files(root / "jobs.d", jobs_n, 120)
            time.sleep(2)
            before, started = cpu_seconds(process.pid), time.monotonic()
            time.sleep(window)
            used = cpu_seconds(process.pid) - before
            share = used / (time.monotonic() - started) * 100
    label = f"CPU share of one core, {jobs_n} jobs, {window:.0f} s"
    return [Row("idle daemon", label, share, 0, "< 1%", unit="%")]


def bench_memory(scale: float) -> list[Row]:
    """Peak RSS of the daemon tracking 10,000 batches against no jobs."""
    jobs_n = max(2, round(1000 * scale))
    jobs = {f"job-{j}": [f"batch_m{j}_{b}" for b in range(10)] for j in range(jobs_n)}
    batches = {b: {"script": FOREVER} for ids in jobs.values() for b in ids}
    with workspace() as root, Simulator(scenario_dict(batches)) as sim:
        (root / "jobs.d").mkdir()
        with daemon(root, env(root / "empty-state")) as process:
            time.sleep(3)
            empty = peak_rss_mb(process.pid)
        write_jobs(root / "jobs.d", sim.port, jobs)
        with daemon(root, env(root / "state")) as process:
            wait_for_status_files(root / "jobs.d", jobs_n, 600)
            time.sleep(1)
            tracking = peak_rss_mb(process.pid)
    label = f"peak RSS, {len(batches)} batches"
    return [Row("memory", label, tracking, empty, "+ <= 50 MB", unit="MB")]


SCENARIOS: dict[str, Callable[[float], list[Row]]] = {
    "poll": bench_poll,
    "shared": bench_shared,
    "burst": bench_burst_and_settled,
    "startup": bench_startup,
    "list": lambda scale: bench_list(scale, 0),
    "list-behind": lambda scale: bench_list(scale, 50_000),
    "idle": bench_idle,
    "memory": bench_memory,
}


def render(rows: list[Row], command: str, seconds: float) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d')}; run took {seconds:.0f} s.",
        "",
        "| scenario | measure | TeckoChecker | floor | ratio | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        unit = f" {row.unit}" if row.unit else ""
        lines.append(
            f"| {row.scenario} | {row.measure} | {row.teckochecker:.4g}{unit} | "
            f"{row.floor:.4g}{unit} | {ratio} | {row.target} |"
        )
    return "\n".join(lines)


def compile_package() -> None:
    """Byte-compile the reconciler package, as installing it from a wheel does.

    An editable install leaves compiling to the first import. With
    PYTHONDONTWRITEBYTECODE set no import keeps the result, so every run of
    tc would compile its modules again. The floors import libraries that pip
    compiled when it installed them.
    """
    import reconciler

    compileall.compile_dir(Path(reconciler.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size factor")
    parser.add_argument("--only", default="", help="comma-separated scenarios")
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    started = time.perf_counter()
    compile_package()
    rows: list[Row] = []
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(SCENARIOS[name](args.scale))
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    print(render(rows, command.strip(), time.perf_counter() - started))


if __name__ == "__main__":
    main()
