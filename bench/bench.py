"""snapgate benchmark driver (run through bench/run).

Phase A, gateway vs database ceiling: snapgate (release, Postgres, worker off so the API path is
measured alone) is loaded with wrk at several concurrency levels for POST /v1/snapshot-jobs and
GET /v1/snapshot-jobs/{id}; pgbench then runs the same SQL per request at the same levels. Then a
worker-enabled snapgate drains the queued jobs into the emulator (zero latency) to measure
dispatch throughput.

Phase B, upstream efficiency: the emulator enforces MPS's limits (--submit-qps 50 --query-qps
100); a backlog of jobs is drained through it and the use of the submit budget, the throttled
share, query calls per job and the drain time are printed.

Only loopback traffic; every process is stopped at exit.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "snapgate")
PG = "postgres://postgres@127.0.0.1:5432"
DB = "snapgate_bench"
QUICK = "--quick" in sys.argv
PHASES = [p for p in ("api", "upstream") if f"--{p}-only" in sys.argv] or ["api", "upstream"]
LEVELS = [8, 32] if QUICK else [1, 8, 32, 64]
DURATION = 5 if QUICK else 10
BACKLOG = 1000 if QUICK else 10000
GW_PORT, EMU_PORT = 18080, 19090
WORK = tempfile.mkdtemp(prefix="snapgate-bench-")
PROCS = []

# The columns snapgate reads per job (src/store/postgres.rs JOB_COLUMNS).
JOB_COLUMNS = ("id, team, state, request, warnings, created_at, updated_at, attempts, last_error, "
               "mps_job_id, mps_state, mps_request_id, mps_count, mps_tile_count, mps_code, mps_message, "
               "mps_response, submitted_at")


def psql(sql, db=DB):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def fresh_db():
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    env = dict(os.environ, DATABASE_URL=f"{PG}/{DB}", SNAPGATE_CONFIG_DIR=os.path.join(ROOT, "config"))
    subprocess.run([BIN, "migrate"], check=True, env=env, capture_output=True)


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


def wait_http(url, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def emulator(*flags):
    p = start("emulator", ["emulator", "--listen", f"127.0.0.1:{EMU_PORT}", "--access-key", "benchid:benchsecret",
                           *flags], {})
    wait_http(f"http://127.0.0.1:{EMU_PORT}/_emulator/stats")
    return p


def gateway(worker, **env):
    base = {
        "DATABASE_URL": f"{PG}/{DB}",
        "SNAPGATE__HTTP__LISTEN": f"127.0.0.1:{GW_PORT}",
        "SNAPGATE__MPS__ENDPOINT": f"http://127.0.0.1:{EMU_PORT}",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "benchid",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "benchsecret",
        "SNAPGATE__AUTH__ENABLED": "false",
        "SNAPGATE__HTTP__SUBMIT_WAIT_MS": "0",
        "SNAPGATE__LIMITS__TEAM_REQUESTS_PER_SECOND": "1000000",
        "SNAPGATE__LIMITS__TEAM_BURST": "1000000",
        "SNAPGATE__LIMITS__TEAM_MAX_ACTIVE_JOBS": "100000000",
        "SNAPGATE__WORKER__ENABLED": "true" if worker else "false",
        "SNAPGATE__DATABASE__MIGRATE_ON_START": "false",
    }
    base.update(env)
    p = start("gateway", ["serve"], base)
    wait_http(f"http://127.0.0.1:{GW_PORT}/readyz")
    return p


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}

# A normalized job request as snapgate stores it (the README example, as POSTed by post.lua).
TEMPLATE = json.dumps({
    "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
    "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
    "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "height": None, "frame_type": "normal",
    "black_level": None,
    "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
               "lines": 10, "columns": 10, "cell_width": None, "cell_height": None, "margin": 0, "padding": 0,
               "color": "black", "keep_cells": True, "cell_step": None},
    "webvtt": None, "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000", "user_data": "bench"})


def wrk(path, script, c, extra_env=None):
    env = dict(os.environ, **(extra_env or {}))
    out = subprocess.run(["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{DURATION}s", "--latency", "-s", os.path.join(ROOT, "bench", script),
                          f"http://127.0.0.1:{GW_PORT}{path}"], capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "errors": errors}


def pgbench(sql, c):
    script = os.path.join(WORK, "script.sql")
    with open(script, "w") as f:
        f.write(sql)
    logdir = tempfile.mkdtemp(dir=WORK)
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared", f"-c{c}",
                          f"-j{min(c, 2)}", f"-T{DURATION}", "-f", script, "-l", "--log-prefix", os.path.join(logdir, "pgb"), DB],
                         capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    lat = []
    for path in glob.glob(os.path.join(logdir, "pgb*")):
        with open(path) as f:
            lat.extend(int(line.split()[2]) / 1000 for line in f)
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return {"rps": tps, "p50": pick(0.50), "p99": pick(0.99), "errors": 0}


def row(label, g, p):
    ratio = g["rps"] / p["rps"] if p["rps"] else float("nan")
    return (f"  c={label:<3} gateway {g['rps']:8.0f} req/s  p50 {g['p50']:6.2f} ms  p99 {g['p99']:6.2f} ms"
            f"{'  (' + str(g['errors']) + ' non-2xx)' if g['errors'] else ''} | pgbench {p['rps']:8.0f} tx/s"
            f"  p50 {p['p50']:6.2f} ms  p99 {p['p99']:6.2f} ms | ratio {ratio:.2f}")


def main():
    signal.signal(signal.SIGTERM, cleanup)
    print(f"machine: {os.cpu_count()} cores; {psql('SHOW server_version', db='postgres')} Postgres; "
          f"levels {LEVELS}, {DURATION} s each{'; QUICK' if QUICK else ''}")
    if "api" in PHASES:
        api_phase()
    if "upstream" in PHASES:
        upstream_phase()


def api_phase():
    fresh_db()
    emu = emulator("--latency-ms", "0", "--start-ms", "100", "--process-ms", "1000")
    gw = gateway(worker=False)

    post = {c: wrk("/v1/snapshot-jobs", "post.lua", c) for c in LEVELS}
    template = TEMPLATE
    # The read set: 10,000 jobs with ids both wrk and pgbench can name (md5 of 1..10000).
    psql("INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) "
         "SELECT md5(i::text)::uuid, 'default', 'succeeded', (SELECT request FROM jobs LIMIT 1), '[]', now(), now() "
         "FROM generate_series(1, 10000) i")
    ids_file = os.path.join(WORK, "ids.txt")
    with open(ids_file, "w") as f:
        f.write(psql("SELECT md5(i::text)::uuid FROM generate_series(1, 10000) i") + "\n")
    get = {c: wrk("/v1/snapshot-jobs/x", "get.lua", c, {"IDS_FILE": ids_file}) for c in LEVELS}
    rss_api = peak_rss_mib(gw.pid)
    stop(gw)

    escaped = template.replace("'", "''")
    submit_sql = (
        "BEGIN;\n"
        f"INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) VALUES (gen_random_uuid(), 'default', "
        f"'queued', '{escaped}'::jsonb, '[]'::jsonb, now(), now()) RETURNING {JOB_COLUMNS} \\gset\n"
        "INSERT INTO job_outbox (job_id, due_at) VALUES (:id::uuid, now());\n"
        "SELECT pg_notify('snapgate_jobs', :id);\n"
        "COMMIT;\n")
    read_sql = ("\\set k random(1, 10000)\n"
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = md5(:k::text)::uuid AND (NULL::text IS NULL OR team = NULL::text);\n")
    pg_post = {c: pgbench(submit_sql, c) for c in LEVELS}
    pg_get = {c: pgbench(read_sql, c) for c in LEVELS}

    print("\nPOST /v1/snapshot-jobs (recording path; worker off) vs pgbench of the same insert transaction")
    for c in LEVELS:
        print(row(c, post[c], pg_post[c]))
    print("\nGET /v1/snapshot-jobs/{id} vs pgbench of the same select")
    for c in LEVELS:
        print(row(c, get[c], pg_get[c]))
    print(f"\nsnapgate peak RSS during the API load: {rss_api:.1f} MiB")

    # Dispatch throughput into a zero-latency emulator, no upstream budget.
    queued = int(psql("SELECT count(*) FROM job_outbox"))
    gw = gateway(worker=True, SNAPGATE__WORKER__SUBMIT_QPS="1000000", SNAPGATE__WORKER__QUERY_QPS="1000000",
                 SNAPGATE__WORKER__BATCH_SIZE="64")
    t0 = time.time()
    time.sleep(DURATION)
    left = int(psql("SELECT count(*) FROM job_outbox"))
    dispatched = queued - left
    print(f"dispatch: {dispatched} jobs sent to the emulator in {time.time() - t0:.1f} s = "
          f"{dispatched / (time.time() - t0):.0f} jobs/s (backlog {queued}); peak RSS {peak_rss_mib(gw.pid):.1f} MiB")
    stop(gw)
    stop(emu)


def upstream_phase():
    """Phase B: upstream efficiency under MPS's limits."""
    fresh_db()
    emu = emulator("--submit-qps", "50", "--query-qps", "100", "--start-ms", "200", "--process-ms", "2000")
    escaped = TEMPLATE.replace("'", "''")
    psql("INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) "
         f"SELECT gen_random_uuid(), 'default', 'queued', '{escaped}'::jsonb, '[]', now(), now() FROM generate_series(1, {BACKLOG})")
    psql("INSERT INTO job_outbox (job_id, due_at) SELECT id, created_at FROM jobs")
    # snapgate's budget 2 % under MPS's limits (clocks and scheduling jitter).
    gw = gateway(worker=True, SNAPGATE__WORKER__SUBMIT_QPS="49", SNAPGATE__WORKER__QUERY_QPS="98")
    t0 = time.time()
    submitted_at = None
    while True:
        time.sleep(1)
        outbox = int(psql("SELECT count(*) FROM job_outbox"))
        if outbox == 0 and submitted_at is None:
            submitted_at = time.time() - t0
        final = int(psql("SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed')"))
        if final == BACKLOG:
            break
        if time.time() - t0 > BACKLOG / 50 * 3 + 60:
            print(f"drain did not finish: {final}/{BACKLOG} final")
            break
    drained = time.time() - t0
    stats = get_json(f"http://127.0.0.1:{EMU_PORT}/_emulator/stats")["calls"]
    sub, qry = stats.get("SubmitSnapshotJob", {}), stats.get("QuerySnapshotJobList", {})
    submits_ok = sub.get("Success", 0)
    throttled = sub.get("Throttling.User", 0) + qry.get("Throttling.User", 0)
    calls = sum(sub.values()) + sum(qry.values())
    failed = int(psql("SELECT count(*) FROM jobs WHERE state = 'failed'"))
    rate = submits_ok / submitted_at if submitted_at else float("nan")
    print(f"\nupstream: backlog {BACKLOG} jobs through --submit-qps 50 --query-qps 100 (process 2 s)")
    print(f"  submit phase {submitted_at:.1f} s: {rate:.1f} submits/s = {rate / 50:.1%} of the 50/s budget")
    print(f"  throttled: {throttled} of {calls} calls = {throttled / calls:.2%}")
    print(f"  query calls per job until final: {sum(qry.values()) / BACKLOG:.3f} ({sum(qry.values())} queries)")
    print(f"  drain time {drained:.1f} s vs ideal {BACKLOG / 50:.1f} s ({drained / (BACKLOG / 50):.2f}x); failed jobs {failed}; "
          f"peak RSS {peak_rss_mib(gw.pid):.1f} MiB")
    print(f"  emulator calls: {json.dumps(stats)}")
    stop(gw)
    stop(emu)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
