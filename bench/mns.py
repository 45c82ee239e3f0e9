"""snapgate upstream benchmark with MNS on (MPS job messages): the same backlog as bench.py's upstream
phase (the emulator enforcing MPS's limits: --submit-qps 50 --query-qps 100, jobs taking 2 s),
with the emulator's MNS queue bound to every pipeline and snapgate consuming it. Prints the
QuerySnapshotJobList calls per job and the time from MPS finishing a job (the emulator's
`finished_at_ms`) to the job's final state in snapgate (`jobs.finished_at`).

Usage (after bench/run has built the release binary, or `cargo build --release`):
    python3 bench/mns.py [--quick] [--lose 0.1]
--lose R: the emulator loses that fraction of the messages (the safety-net poll must end them).

Own ports and database (18180, 19190, snapgate_bench_mns), so it does not meet bench.py's.
"""
import socket
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SNAPGATE_BENCH_BIN", os.path.join(ROOT, "target", "release", "snapgate"))
PG = "postgres://postgres@127.0.0.1:5432"
DB = "snapgate_bench_mns"
QUICK = "--quick" in sys.argv
LOSE = float(sys.argv[sys.argv.index("--lose") + 1]) if "--lose" in sys.argv else 0.0
BACKLOG = 1000 if QUICK else 10000


def free_port():
    """A port nothing listens on now (the OS's pick): never a fixed one another process may hold."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GW_PORT, EMU_PORT = free_port(), free_port()
QUEUE = "snapgate-bench"
WORK = tempfile.mkdtemp(prefix="snapgate-bench-mns-")
PROCS = []

TEMPLATE = json.dumps({
    "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
    "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
    "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "height": None, "frame_type": "normal",
    "black_level": None,
    "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
               "lines": 10, "columns": 10, "cell_width": None, "cell_height": None, "margin": 0, "padding": 0,
               "color": "black", "keep_cells": True, "cell_step": None},
    "webvtt": None, "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000", "user_data": "bench"})


def psql(sql, db=DB, tries=5):
    for i in range(tries):
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip()
        if i == tries - 1:
            raise SystemExit(f"psql failed: {sql}: {r.stderr}")
        # A busy shared machine: the server may refuse a connection for a moment.
        time.sleep(1)


def start(name, args, extra_env):
    env = {"PATH": os.environ.get("PATH", ""), "SNAPGATE_CONFIG_DIR": os.path.join(ROOT, "config"),
           "RUST_LOG": "warn"}
    env.update(extra_env)
    log = open(os.path.join(WORK, f"{name}.log"), "w")
    p = subprocess.Popen([BIN] + args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def cleanup(*_):
    for p in PROCS:
        if p.poll() is None:
            p.kill()
    shutil.rmtree(WORK, ignore_errors=True)


def wait_http(url, limit=30, proc=None):
    """Until `url` answers 200. With `proc`: that process must still be running once it does, so
    the answer is its own (a process that could not bind its port exits; another program
    answering on the port would otherwise be measured instead)."""
    end = time.time() + limit
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{url}: the process started for it exited ({proc.returncode}); see its log in {WORK}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    if proc is not None and proc.poll() is not None:
                        raise SystemExit(f"{url} answers, but not from the process started for it")
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    signal.signal(signal.SIGTERM, cleanup)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    env = dict(os.environ, DATABASE_URL=f"{PG}/{DB}", SNAPGATE_CONFIG_DIR=os.path.join(ROOT, "config"))
    subprocess.run([BIN, "migrate"], check=True, env=env, capture_output=True)
    emu = start("emulator", ["emulator", "--listen", f"127.0.0.1:{EMU_PORT}", "--access-key", "benchid:benchsecret",
                             "--submit-qps", "50", "--query-qps", "100", "--start-ms", "200", "--process-ms", "2000",
                             "--mns-queue", QUEUE, "--seed", "15"], {})
    wait_http(f"http://127.0.0.1:{EMU_PORT}/_emulator/stats", proc=emu)
    if LOSE:
        post_json(f"http://127.0.0.1:{EMU_PORT}/_emulator/faults", {"mns_lose_rate": LOSE})
    escaped = TEMPLATE.replace("'", "''")
    # Queued jobs: `due_at` set is the delivery queue (migrations/postgres/0003).
    psql("INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, due_at) "
         f"SELECT gen_random_uuid(), 'default', 'queued', '{escaped}'::jsonb, '[]', now(), now(), now() "
         f"FROM generate_series(1, {BACKLOG})")
    gw = start("gateway", ["serve"], {
        "DATABASE_URL": f"{PG}/{DB}",
        "SNAPGATE__HTTP__LISTEN": f"127.0.0.1:{GW_PORT}",
        "SNAPGATE__MPS__ENDPOINT": f"http://127.0.0.1:{EMU_PORT}",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "benchid",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "benchsecret",
        "SNAPGATE__MPS__MNS__ENDPOINT": f"http://127.0.0.1:{EMU_PORT}",
        "SNAPGATE__MPS__MNS__QUEUE": QUEUE,
        "SNAPGATE__AUTH__ENABLED": "false",
        "SNAPGATE__WORKER__SUBMIT_QPS": "49",
        "SNAPGATE__WORKER__QUERY_QPS": "98",
        "SNAPGATE__LIMITS__TEAM_MAX_ACTIVE_JOBS": "100000000",
        "SNAPGATE__DATABASE__MIGRATE_ON_START": "false",
    })
    wait_http(f"http://127.0.0.1:{GW_PORT}/readyz", proc=gw)
    t0 = time.time()
    while True:
        time.sleep(1)
        final = int(psql("SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed')"))
        if final == BACKLOG:
            break
        if time.time() - t0 > BACKLOG / 50 * 3 + 120:
            print(f"drain did not finish: {final}/{BACKLOG} final")
            break
    drained = time.time() - t0
    stats = get_json(f"http://127.0.0.1:{EMU_PORT}/_emulator/stats")["calls"]
    mns = get_json(f"http://127.0.0.1:{EMU_PORT}/_emulator/mns")["stats"]
    ledger = {j["Id"]: j["Emulator"] for j in get_json(f"http://127.0.0.1:{EMU_PORT}/_emulator/jobs")["jobs"]}
    rows = psql("SELECT mps_job_id, (extract(epoch FROM finished_at) * 1000)::bigint FROM jobs "
                "WHERE finished_at IS NOT NULL AND mps_job_id IS NOT NULL").splitlines()
    lag = []
    for line in rows:
        mps_id, done_ms = line.split("|")
        ended = ledger.get(mps_id, {}).get("finished_at_ms")
        if ended is not None:
            lag.append((int(done_ms) - ended) / 1000)
    lag.sort()
    qry = stats.get("QuerySnapshotJobList", {})
    queries = sum(qry.values())
    queried_jobs = sum(1 for e in ledger.values() if e.get("queries", 0) > 0)
    failed = int(psql("SELECT count(*) FROM jobs WHERE state = 'failed'"))
    final = int(psql("SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed')"))
    print(f"MNS on: backlog {BACKLOG} jobs through --submit-qps 50 --query-qps 100 (process 2 s), "
          f"messages lost: {LOSE:.0%}")
    print(f"  QuerySnapshotJobList calls per job: {queries / BACKLOG:.4f} ({queries} calls; "
          f"{queried_jobs} jobs named in a query)")
    print(f"  MPS finished -> snapgate final ({len(lag)} jobs): median {statistics.median(lag) * 1000:.0f} ms, "
          f"p90 {pct(lag, 0.9) * 1000:.0f} ms, p99 {pct(lag, 0.99) * 1000:.0f} ms, max {lag[-1] * 1000:.0f} ms")
    print(f"  drain time {drained:.1f} s (ideal {BACKLOG / 50:.1f} s); final {final}/{BACKLOG}; failed {failed}")
    print(f"  MNS queue: {json.dumps(mns)}")
    print(f"  emulator calls: {json.dumps(stats)}")
    stop(gw)
    stop(emu)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
