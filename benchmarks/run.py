"""hpctrain against the tools users would use instead, in one run: medians of several runs, ratios.

    .venv/bin/python benchmarks/run.py                 # full sizes (2,000 files / 200 MB, 1 GB log)
    .venv/bin/python benchmarks/run.py --quick         # a tenth of the sizes, fewer runs
    .venv/bin/python benchmarks/run.py --only start,log --json out.json
    .venv/bin/python benchmarks/run.py --only polling --quick   # a 1-minute wait, not 10

Push, status and polling figures need the test cluster (`sudo scripts/test_cluster.sh up`): the
same sshd on 127.0.0.1 and the same Slurm for hpctrain and for the anchors; polling also needs
torch in this venv (its job is a torchrun job that sleeps). Prints a table (figure,
hpctrain, anchor, ratio, target) and writes it as JSON (default benchmarks/results.json).
This machine is noisy: every figure is the median of --runs runs, and ratios are taken within
one run, never across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = Path(os.environ.get("HPCTRAIN_TEST_CLUSTER", "/var/lib/hpctrain-test-cluster")) / "env"
PYTHON = sys.executable
HPCTRAIN = str(Path(PYTHON).with_name("hpctrain"))
FIXTURES = ROOT / "tests" / "fixtures" / "ketos7"


# -- measuring ----------------------------------------------------------------------------
def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise SystemExit(f"benchmark step failed: {shlex.join(argv)}\n{done.stderr[-2000:]}")
    return done


def timed(argv: list[str], runs: int, before=None) -> float:
    """Median wall time of `argv` over `runs` runs; `before()` runs untimed ahead of each."""
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        run(argv)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_with_rss(argv: list[str], runs: int) -> tuple[float, int]:
    """Median wall time and the largest peak RSS (KiB) of the child over `runs` runs."""
    times, peak = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        times.append(time.perf_counter() - start)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"benchmark step failed: {shlex.join(argv)}")
        peak = max(peak, usage.ru_maxrss)
    return statistics.median(times), peak


def row(
    figure: str, ours: float, anchor_name: str, anchor: float, target: str, met: bool, **extra
) -> dict:
    return {
        "figure": figure,
        "hpctrain_s": round(ours, 4),
        "anchor": anchor_name,
        "anchor_s": round(anchor, 4),
        "ratio": round(ours / anchor, 2) if anchor else None,
        "target": target,
        "met": met,
        **extra,
    }


def count_row(
    figure: str, ours: int, anchor_name: str, anchor: int, target: str, met: bool, **extra
) -> dict:
    """A row that counts (Slurm queries) rather than times."""
    return {
        "figure": figure,
        "hpctrain": ours,
        "anchor": anchor_name,
        "anchor_value": anchor,
        "unit": "queries",
        "ratio": round(ours / anchor, 2) if anchor else None,
        "target": target,
        "met": met,
        **extra,
    }


# -- the test cluster ---------------------------------------------------------------------
class Cluster:
    def __init__(self, env: dict):
        self.env = env
        self.host, self.port, self.user = (
            env["HPCTRAIN_TEST_HOST"],
            env["HPCTRAIN_TEST_SSH_PORT"],
            env["HPCTRAIN_TEST_USER"],
        )
        self.home = Path(env["HPCTRAIN_TEST_HOME"])
        self.ssh_options = [
            "-p",
            self.port,
            "-i",
            env["HPCTRAIN_TEST_KEY"],
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={env['HPCTRAIN_TEST_KNOWN_HOSTS']}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]

    def ssh(self, command: str) -> list[str]:
        return ["ssh", *self.ssh_options, f"{self.user}@{self.host}", command]

    def rsh(self) -> str:
        return shlex.join(["ssh", *self.ssh_options])

    def workspace(self, parent: Path, root: str) -> Path:
        ws = parent / "ssh-ws"
        run([HPCTRAIN, "init", str(ws)])
        config = ws / "hpctrain.yaml"
        config.write_text(
            config.read_text().replace("profile: local", "profile: bench")
            + f"""
  bench:
    backend: ssh
    host: {self.host}
    port: {self.port}
    user: {self.user}
    identity_file: {self.env["HPCTRAIN_TEST_KEY"]}
    known_hosts: {self.env["HPCTRAIN_TEST_KNOWN_HOSTS"]}
    root: {root}
    executor: slurm
"""
        )
        return ws

    def remove(self, rel: str) -> None:
        run(self.ssh(f"rm -rf -- {shlex.quote(rel)}"))


def load_cluster() -> Cluster | None:
    if not ENV_FILE.is_file():
        return None
    return Cluster(dict(line.split("=", 1) for line in ENV_FILE.read_text().split()))


# -- data ---------------------------------------------------------------------------------
def make_pages(folder: Path, pages: int, image_bytes: int, seed: int = 0) -> int:
    """`pages` PNG (noise, so incompressible: image_bytes each) + PageXML pairs; returns total
    bytes."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_sample_gt import page_xml
    from PIL import Image

    side = int(image_bytes**0.5)
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(pages):
        name = f"page{i:05d}.png"
        Image.frombytes("L", (side, side), rng.randbytes(side * side)).save(
            folder / name, compress_level=1
        )
        records = [("lorem ipsum", [(10, 40), (200, 40)], [(6, 6), (204, 6), (204, 50), (6, 50)])]
        (folder / f"page{i:05d}.xml").write_text(page_xml(name, (side, side), records))
    return sum(p.stat().st_size for p in folder.iterdir())


def change_some(folder: Path, fraction: float, seed: int) -> int:
    """Rewrite `fraction` of the XML files with new content (new size, new mtime)."""
    files = sorted(folder.glob("*.xml"))
    chosen = random.Random(seed).sample(files, max(1, int(len(files) * 2 * fraction)))
    for path in chosen:
        path.write_text(path.read_text().replace("lorem ipsum", f"lorem ipsum {seed}"))
    return len(chosen)


def make_log(path: Path, size: int) -> int:
    """A ketos-style log: real ketos 7.1.1 output (train, segtrain, test) repeated to `size`
    bytes."""
    block = b"".join(
        (FIXTURES / name).read_bytes()
        for name in ("train_fixed.log", "segtrain_fixed.log", "test.log")
    )
    with open(path, "wb") as handle:
        for _ in range(size // len(block) + 1):
            handle.write(block)
    return path.stat().st_size


# -- the figures --------------------------------------------------------------------------
def bench_start(tmp: Path, runs: int) -> list[dict]:
    ws = tmp / "local-ws"
    run([HPCTRAIN, "init", str(ws)])
    anchor = timed([PYTHON, "-c", "pass"], runs)
    rows = []
    for label, argv in (
        ("start: hpctrain --help", [HPCTRAIN, "--help"]),
        ("start: hpctrain status (empty workspace)", [HPCTRAIN, "-w", str(ws), "status"]),
    ):
        ours = timed(argv, runs)
        rows.append(
            row(
                label,
                ours,
                "python -c pass",
                anchor,
                "+150 ms at most",
                ours - anchor <= 0.150,
                difference_ms=round((ours - anchor) * 1000, 1),
            )
        )
    return rows


def bench_push(tmp: Path, cluster: Cluster, runs: int, quick: bool) -> list[dict]:
    pages, image_bytes = (100, 100_000) if quick else (1000, 200_000)
    remote = f"bench-{os.getpid()}"
    ws = cluster.workspace(tmp, f"{remote}/root")
    run([HPCTRAIN, "-w", str(ws), "project", "new", "Bench"])
    folder = ws / "ground_truth" / "Bench"
    total = make_pages(folder, pages, image_bytes)
    label = f"{pages * 2} files / {total / 1e6:.0f} MB"
    pushed = f"{remote}/root/Ground_Truth/Bench"
    push = [HPCTRAIN, "-w", str(ws), "push", "Bench"]
    rsync_to = [
        "rsync",
        "-a",
        "-e",
        cluster.rsh(),
        f"{folder}/",
        f"{cluster.user}@{cluster.host}:{remote}/rsync/",
    ]
    scp_to = [
        "scp",
        "-r",
        "-q",
        *["-P" if o == "-p" else o for o in cluster.ssh_options],
        str(folder),
        f"{cluster.user}@{cluster.host}:{remote}/scp",
    ]
    try:
        run(cluster.ssh(f"mkdir -p {remote}"))
        ours = timed(push, runs, before=lambda: cluster.remove(pushed))
        rsync = timed(rsync_to, runs, before=lambda: cluster.remove(f"{remote}/rsync"))
        scp = timed(scp_to, runs, before=lambda: cluster.remove(f"{remote}/scp"))
        rows = [
            row(
                f"push {label}",
                ours,
                "rsync -a",
                rsync,
                "ratio <= 1.0",
                ours <= rsync,
                mb_per_s=round(total / 1e6 / ours, 1),
            ),
            row(f"push {label}", ours, "scp -r", scp, "ratio <= 1.0", ours <= scp),
        ]
        # Both destinations hold the whole set now: the unchanged and 1 % changed re-pushes.
        ours = timed(push, runs)
        rsync = timed(rsync_to, runs)
        rows.append(
            row("re-push, nothing changed", ours, "rsync -a", rsync, "ratio <= 1.0", ours <= rsync)
        )
        seeds = iter(range(1, 1000))
        changed = []
        ours = timed(
            push, runs, before=lambda: changed.append(change_some(folder, 0.01, next(seeds)))
        )
        # rsync sees every change made so far, as hpctrain did: give it its own fresh 1 % each run.
        rsync = timed(
            rsync_to, runs, before=lambda: changed.append(change_some(folder, 0.01, next(seeds)))
        )
        rows.append(
            row(
                f"re-push, 1 % changed ({changed[0]} files)",
                ours,
                "rsync -a",
                rsync,
                "ratio <= 1.0",
                ours <= rsync,
            )
        )
        return rows
    finally:
        cluster.remove(remote)


def bench_status(tmp: Path, cluster: Cluster, runs: int, jobs: int) -> list[dict]:
    remote = f"bench-status-{os.getpid()}"
    ws = cluster.workspace(tmp / "status", f"{remote}/root")
    run([HPCTRAIN, "-w", str(ws), "setup"], timeout=600)
    run([HPCTRAIN, "-w", str(ws), "init", str(ws)])
    submit = f"for i in $(seq {jobs}); do sbatch --hold --parsable -o /dev/null --wrap true; done"
    ids = run(cluster.ssh(submit)).stdout.split()
    try:
        register(cluster.home / remote / "root", ids)
        status = [HPCTRAIN, "-w", str(ws), "status", "--json"]
        listed = json.loads(run(status).stdout)
        if len(listed) != jobs or any(r["state"] != "PENDING" for r in listed):
            states = sorted({r["state"] for r in listed})
            raise SystemExit(
                f"status listed {len(listed)} jobs in states {states}, not {jobs} pending"
            )
        ours = timed(status, runs)
        anchor = timed(cluster.ssh(f"sacct -n -X -P -o JobID,State -j {','.join(ids)}"), runs)
        return [
            row(
                f"status, {jobs} live jobs",
                ours,
                "ssh host sacct",
                anchor,
                "ratio <= 1.5",
                ours <= 1.5 * anchor,
                sacct_calls_per_status=1,
            )
        ]
    finally:
        run(cluster.ssh(f"scancel {' '.join(ids)}"))
        cluster.remove(remote)


def register(root: Path, scheduler_ids: list[str]) -> None:
    """Enter the held Slurm jobs in the benchmark root's registry, as hpctrain submit would have."""
    sys.path.insert(0, str(ROOT))
    from hpctrain.cluster.registry import JobState, Registry

    owner = root.parent.parent.stat()
    with Registry(root) as registry:
        for sid in scheduler_ids:
            record = registry.add(
                "transcription",
                "Bench",
                None,
                lambda i: f"Repertoire_model_finetune/Bench/job{i}",
                {},
            )
            registry.update(record.id, state=JobState.PENDING, scheduler_id=sid)
    for path in [root, *root.rglob("*")]:
        os.chown(path, owner.st_uid, owner.st_gid)


# A job that runs SECONDS seconds, reporting an epoch every 10 s.
SLEEPER = """
import json, sys, time
epochs = int(sys.argv[1]) // 10
for epoch in range(1, epochs + 1):
    time.sleep(10)
    print("##hpctrain " + json.dumps({"event": "metrics", "epoch": epoch, "total": epochs}),
          flush=True)
"""
NAIVE_EVERY = 5  # seconds: the naive poller's sacct per job


def bench_polling(tmp: Path, quick: bool) -> list[dict]:
    """Slurm queries (sacct and squeue, counted by wrappers first on the PATH) while `hpctrain
    wait` follows one job to its end, with the product's defaults (events looked at every second,
    Slurm asked every 5 s at first, up to every 60 s); the anchor is a naive poller's count, one
    sacct per job every 5 s, computed for the same time."""
    seconds = 60 if quick else 600
    ws = tmp / "polling-ws"
    run([HPCTRAIN, "init", str(ws)])
    config = ws / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))
    script, calls, wrappers = tmp / "sleeper.py", tmp / "slurm-calls", tmp / "bin"
    script.write_text(SLEEPER)
    wrappers.mkdir()
    for name in ("sacct", "squeue"):
        real = subprocess.run(["which", name], capture_output=True, text=True).stdout.strip()
        if not real:
            raise SystemExit(f"polling: no {name} on this machine (the test cluster's Slurm)")
        (wrappers / name).write_text(f"#!/bin/sh\necho {name} >> {calls}\nexec {real} \"$@\"\n")
        (wrappers / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCTRAIN_")}
    env["PATH"] = f"{wrappers}{os.pathsep}{env['PATH']}"
    hpctrain = [HPCTRAIN, "-w", str(ws)]
    submitted = run([*hpctrain, "submit", "torchrun", str(script), "--cpus-per-task", "1",
                     "--mem", "2G", "--partition", "publicgpu", "--time", f"{seconds // 60 + 5}",
                     "--json", "--", str(seconds)], env=env)
    job = json.loads(submitted.stdout)["job"]
    try:
        start = time.perf_counter()
        done = subprocess.run([*hpctrain, "wait", str(job["id"]), "--json"], env=env,
                              capture_output=True, text=True)
        took = time.perf_counter() - start
    finally:
        subprocess.run(["scancel", job["scheduler_id"]], capture_output=True)
    if done.returncode:
        raise SystemExit(f"polling: the job did not complete: {done.stderr[-2000:]}")
    queries = calls.read_text().split() if calls.exists() else []
    naive = round(took / NAIVE_EVERY)
    target = 0.25 if not quick else 1.0
    return [
        count_row(
            f"Slurm queries during a {took / 60:.0f}-minute wait",
            len(queries),
            f"sacct every {NAIVE_EVERY} s",
            naive,
            f"ratio <= {target}",
            len(queries) <= target * naive,
            sacct=queries.count("sacct"),
            squeue=queries.count("squeue"),
            wait_s=round(took, 1),
        )
    ]


def bench_log(tmp: Path, runs: int, quick: bool) -> list[dict]:
    rows, peaks = [], {}
    for size in (10 << 20, 100 << 20) if quick else (100 << 20, 1 << 30):
        log = tmp / f"ketos-{size >> 20}M.log"
        actual = make_log(log, size)
        ours, peaks[size] = timed_with_rss([PYTHON, "-m", "hpctrain.logparse", str(log)], runs)
        grep = timed(["grep", "-c", "^stage ", str(log)], runs)
        rows.append(
            row(
                f"parse a {actual / 2**20:.0f} MiB ketos log",
                ours,
                "grep -c epoch lines",
                grep,
                "ratio <= 10, flat memory",
                ours <= 10 * grep,
                peak_rss_mib=round(peaks[size] / 1024, 1),
            )
        )
        log.unlink()
    small, large = sorted(peaks)
    rows[-1]["memory_flat"] = peaks[large] <= peaks[small] * 1.2 + 2048
    rows[-1]["met"] = rows[-1]["met"] and rows[-1]["memory_flat"]
    return rows


# -- output -------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = [f"{'figure':46} {'hpctrain':>10} {'anchor':>22} {'ratio':>7}  target"]
    for r in rows:
        if "unit" in r:  # a count
            ours, anchor = f"{r['hpctrain']} q", f"{r['anchor']} {r['anchor_value']} q"
        else:
            ours = f"{r['hpctrain_s'] * 1000:.0f} ms"
            anchor = f"{r['anchor']} {r['anchor_s'] * 1000:.0f} ms"
        mark = "ok" if r["met"] else "MISSED"
        lines.append(
            f"{r['figure'][:46]:46} {ours:>10} {anchor:>22} {r['ratio']:>7}  "
            f"{r['target']} ({mark})"
        )
    if any("unit" in r for r in rows):
        lines.append("(q: Slurm queries, sacct and squeue calls)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the sizes, 3 runs, a 1-minute wait")
    parser.add_argument("--runs", type=int, help="runs per figure (default 7, 3 with --quick)")
    parser.add_argument("--only", default="start,push,status,polling,log",
                        help="comma-separated figures")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    only = set(args.only.split(","))
    cluster = load_cluster()
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="hpctrain-bench-") as tmp:
        tmp = Path(tmp)
        if "start" in only:
            rows += bench_start(tmp, runs * 3)
        for name, bench in (
            ("push", lambda: bench_push(tmp, cluster, runs, args.quick)),
            ("status", lambda: bench_status(tmp, cluster, runs, 200)),
            ("polling", lambda: bench_polling(tmp, args.quick)),
        ):
            if name in only and cluster is None:
                skipped.append(
                    f"{name}: no test cluster ({ENV_FILE} missing; sudo scripts/test_cluster.sh up)"
                )
            elif name in only:
                rows += bench()
        if "log" in only:
            rows += bench_log(tmp, min(runs, 3), args.quick)
    print(table(rows))
    for line in skipped:
        print(f"skipped {line}")
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "runs": runs,
        "quick": args.quick,
        "rows": rows,
        "skipped": skipped,
        "command": shlex.join(["benchmarks/run.py", *sys.argv[1:]]),
    }
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
