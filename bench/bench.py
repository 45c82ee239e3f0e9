"""snapgate benchmark driver (run through bench/run).

Phase A, the default configuration next to the database's ceiling: snapgate (release, Postgres,
auth on, worker on, a separate `snapgate emulator` as MPS with MPS's limits; only the team limits
raised out of the way) is loaded with wrk at c = 1, 16, 64 for POST /v1/snapshot-jobs, GET of
queued and of final jobs (a hot set: from the job cache), of 10,000 jobs across the table (admin key:
mostly database reads), the list `?state=succeeded&limit=50` and its next page by cursor. Right
after each snapgate measurement pgbench runs the ceiling on the same Postgres — one durable INSERT
of the same row / one primary-key SELECT / the same list SQL per transaction — so both see the
same machine state. Done with 10,000 and then 1,000,000 jobs in the table (10 teams, populated
with SQL). Prints the ratios, the scale ratios (p99 at 1M / p99 at 10k) and snapgate's peak RSS;
the figures also go to target/bench-results.json.

Phase B, upstream efficiency: the emulator enforces MPS's limits (--submit-qps 50 --query-qps
100); a backlog of jobs is drained through it and the use of the submit budget, the throttled
share, query calls per job and the drain time are printed.

Phase D, foreground work while a purge runs (issue 33): PURGE_JOBS final jobs older than the
retention (with their MPS responses, and PURGE_EVENTS old webhook events, deliveries, attempts) are put in
the table with SQL; POST /v1/snapshot-jobs and GET of a queued job (the wrk scripts of phase A)
are measured first without a purge, then while `snapgate purge` (the CLI, default pacing unless
BENCH_PURGE_ENV sets another) deletes them, each next to its pgbench ceiling; the rows the purge
deleted during each window are printed (table counts before and after), and each figure's ratio
to the one without a purge (goal >= 0.9).

Only loopback traffic; every process is stopped at exit.
"""
import socket
import base64
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
# BENCH_BIN / BENCH_CONFIG_DIR: measure another build (e.g. a baseline) with its own config folder.
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target", "release", "snapgate"))
CONFIG_DIR = os.environ.get("BENCH_CONFIG_DIR", os.path.join(ROOT, "config"))
PG = "postgres://postgres@127.0.0.1:5432"
# BENCH_DB: another database name (two runs on one Postgres must not share one: each drops it).
DB = os.environ.get("BENCH_DB", "snapgate_bench")
QUICK = "--quick" in sys.argv
ALL_PHASES = ("api", "purge", "upstream", "drain")
PHASES = [p for p in ALL_PHASES if f"--{p}-only" in sys.argv] or list(ALL_PHASES)
# BENCH_LEVELS="16,64" / BENCH_SIZES="10000": a part of the run (e.g. to find what raised the RSS).
LEVELS = [int(x) for x in os.environ.get("BENCH_LEVELS", "16" if QUICK else "1,16,64").split(",")]
DURATION = 2 if QUICK else 4
BACKLOG = 1000 if QUICK else 10000
DRAIN_BACKLOG = 100_000 if QUICK else 1_000_000
DRAIN_SECONDS = 10 if QUICK else 60
# Phase D: final jobs past the retention in the table (each with copies of a real job's MPS
# responses), a tenth as many old webhook events (a delivery and an attempt each), and the
# length of each measured window (longer than the other phases': the purge's batches and pauses
# must average out within one).
PURGE_JOBS = int(os.environ.get("BENCH_PURGE_JOBS", 300_000 if QUICK else 1_000_000))
PURGE_WINDOW = int(os.environ.get("BENCH_PURGE_WINDOW", 5 if QUICK else 10))
# Old webhook events: few by default. webhook_deliveries has no index on event_id, so every
# event the purge deletes seq-scans the deliveries for its ON DELETE CASCADE (1,000 events of
# 30,000: 3.4 s a batch, 200 rows/s); with many, the windows would see only that class and the
# jobs never. BENCH_PURGE_EVENTS=30000 measures that case.
PURGE_EVENTS = int(os.environ.get("BENCH_PURGE_EVENTS", 1000))
# BENCH_TESTS="POST,GET queued": only these figures (each with its pgbench ceiling).
TESTS = set(filter(None, os.environ.get("BENCH_TESTS", "").split(",")))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10000,100000" if QUICK else "10000,1000000").split(",")]
TEAMS = 10
PAGES = 15  # next-page requests pick one of this many cursors
QUEUED_READ_SET = 1000
# GET final reads the same number of t0's jobs at every table size, spread evenly over them (a
# hot set that fits the job cache, as pollers of recent jobs make); GET uncached reads 5x the
# cache's default 2,000 entries, spread evenly over the whole table with an admin key: mostly
# database reads. So the table's size is the only thing that differs between the sizes.
FINAL_READ_SET = 1000
UNCACHED_READ_SET = 10_000
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # a fixed bench-only key (32 bytes)
RESULTS = os.path.join(ROOT, "target", "bench-results.json")


def free_port():
    """A port nothing listens on now (the OS's pick): never a fixed one another process may hold."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GW_PORT, EMU_PORT = free_port(), free_port()
WORK = tempfile.mkdtemp(prefix="snapgate-bench-")
PROCS = []

# The columns snapgate reads per job (src/store/rows.rs JOB_COLUMNS).
JOB_COLUMNS = ("id, team, state, request, warnings, created_at, updated_at, attempts, last_error, "
               "mps_job_id, mps_state, mps_request_id, mps_count, mps_tile_count, mps_code, mps_message, "
               "mps_response, submitted_at")

# The README example, as post.lua sends it.
EXAMPLE = {
    "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
    "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
    "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "frame_type": "normal",
    "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
               "lines": 10, "columns": 10},
    "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000", "user_data": "bench"}

# A normalized job request as snapgate stores it (phase B's backlog).
TEMPLATE = json.dumps({
    "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
    "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
    "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "height": None, "frame_type": "normal",
    "black_level": None,
    "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
               "lines": 10, "columns": 10, "cell_width": None, "cell_height": None, "margin": 0, "padding": 0,
               "color": "black", "keep_cells": True, "cell_step": None},
    "webvtt": None, "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000", "user_data": "bench"})


def wanted(label):
    return not TESTS or label in TESTS


def psql(sql, db=DB):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def fresh_db():
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    cli("migrate")


def start(name, args, extra_env):
    env = {"PATH": os.environ.get("PATH", ""), "SNAPGATE_CONFIG_DIR": CONFIG_DIR,
           "RUST_LOG": "warn"}
    if extra_env.get("RUST_LOG") is None and "RUST_LOG" in extra_env:
        del env["RUST_LOG"]  # the configured log level (the default configuration logs at info)
        del extra_env["RUST_LOG"]
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
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def proc_status_mib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid):
    return proc_status_mib(pid, "VmHWM")


def rss_now_mib(pid):
    return proc_status_mib(pid, "VmRSS")


def emulator(*flags):
    p = start("emulator", ["emulator", "--listen", f"127.0.0.1:{EMU_PORT}", "--access-key", "benchid:benchsecret",
                           *flags], {})
    wait_http(f"http://127.0.0.1:{EMU_PORT}/_emulator/stats", proc=p)
    return p


def gateway(worker=True, default_config=False, **env):
    """snapgate serving on GW_PORT. `default_config`: auth on, worker on and every built-in default
    (submit_wait_ms, batch size, budgets, pool) — only the team limits raised out of the way."""
    base = {
        "DATABASE_URL": f"{PG}/{DB}",
        "SNAPGATE__HTTP__LISTEN": f"127.0.0.1:{GW_PORT}",
        "SNAPGATE__MPS__ENDPOINT": f"http://127.0.0.1:{EMU_PORT}",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "benchid",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "benchsecret",
        "SNAPGATE__AUTH__MASTER_KEY": MASTER_KEY,
        "SNAPGATE__LIMITS__TEAM_REQUESTS_PER_SECOND": "1000000",
        "SNAPGATE__LIMITS__TEAM_BURST": "1000000",
        "SNAPGATE__LIMITS__TEAM_MAX_ACTIVE_JOBS": "100000000",
        "SNAPGATE__DATABASE__MIGRATE_ON_START": "false",
    }
    if default_config:
        base["RUST_LOG"] = None  # logs at the configured level (info), to a file
    else:
        base.update({
            "SNAPGATE__AUTH__ENABLED": "false",
            "SNAPGATE__HTTP__SUBMIT_WAIT_MS": "0",
            "SNAPGATE__WORKER__ENABLED": "true" if worker else "false",
        })
    base.update(env)
    # BENCH_GATEWAY_ENV="SNAPGATE__DATABASE__MAX_CONNECTIONS=8 MIMALLOC_PURGE_DELAY=0": try a setting.
    base.update(kv.split("=", 1) for kv in os.environ.get("BENCH_GATEWAY_ENV", "").split())
    p = start("gateway", ["serve"], base)
    wait_http(f"http://127.0.0.1:{GW_PORT}/readyz", proc=p)
    return p


def cli(*args):
    env = {"PATH": os.environ.get("PATH", ""), "SNAPGATE_CONFIG_DIR": CONFIG_DIR,
           "DATABASE_URL": f"{PG}/{DB}", "SNAPGATE__AUTH__MASTER_KEY": MASTER_KEY, "RUST_LOG": "warn"}
    return subprocess.run([BIN, *args], env=env, check=True, capture_output=True, text=True).stdout


def api(path, token, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{GW_PORT}{path}", method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


# BENCH_PROFILE="GET queued@16,POST@16": perf-record snapgate (cpu-clock, call graphs) while those
# figures are measured (label@c, first size only); reports go to target/bench-profile-<label>-c<c>.txt.
PROFILE = set(filter(None, os.environ.get("BENCH_PROFILE", "").split(",")))
GATEWAY_PID = None
PROFILED = set()


def wrk(label, path, script, c, extra_env, seconds=None):
    """wrk (closed loop, c connections); p50/p99 from its latency distribution."""
    env = dict(os.environ, **extra_env)
    perf = None
    if f"{label}@{c}" in PROFILE and label not in PROFILED and GATEWAY_PID and shutil.which("perf"):
        PROFILED.add(label)
        data = os.path.join(ROOT, "target", f"bench-profile-{label.replace(' ', '-')}-c{c}.data")
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384", "-o", data,
                                 "-p", str(GATEWAY_PID)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{seconds or DURATION}s", "--latency", "-s",
                          os.path.join(ROOT, "bench", script), f"http://127.0.0.1:{GW_PORT}{path}"],
                         capture_output=True, text=True, env=env, check=True).stdout
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
        report = os.path.join(ROOT, "target", f"bench-profile-{label.replace(' ', '-')}-c{c}.txt")
        with open(report, "w") as f:
            # Where the time goes by binary, then each function's own time, then its inclusive time.
            for extra in (["--no-children", "--sort", "dso"], ["--no-children", "--sort", "dso,symbol"],
                          ["--children", "--sort", "symbol"]):
                subprocess.run(["perf", "report", "-i", data, "--percent-limit", "1", "--stdio", "-g", "none",
                                *extra], stdout=f, stderr=subprocess.DEVNULL)
        print(f"  profile of snapgate: {report}", flush=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "errors": errors}


def pgbench(scripts, c, seconds=None):
    """pgbench -M prepared with `scripts` (one SQL text, or several picked at random, equally)."""
    if isinstance(scripts, str):
        scripts = [scripts]
    args = []
    for i, sql in enumerate(scripts):
        path = os.path.join(WORK, f"script{i}.sql")
        with open(path, "w") as f:
            f.write(sql)
        args += ["-f", path]
    logdir = tempfile.mkdtemp(dir=WORK)
    run = subprocess.run(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared", f"-c{c}",
                          f"-j{min(c, 2)}", f"-T{seconds or DURATION}", *args, "-l", "--log-prefix", os.path.join(logdir, "pgb"), DB],
                         capture_output=True, text=True)
    if run.returncode != 0:
        # e.g. Postgres out of connections (other clients of the same server): no ceiling figure.
        print(f"  pgbench -c{c} failed: {run.stderr.strip().splitlines()[-1:]}", flush=True)
        return {"rps": float("nan"), "p50": float("nan"), "p99": float("nan"), "errors": 0}
    out = run.stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    lat = []
    for path in glob.glob(os.path.join(logdir, "pgb*")):
        with open(path) as f:
            lat.extend(int(line.split()[2]) / 1000 for line in f)
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return {"rps": tps, "p50": pick(0.50), "p99": pick(0.99), "errors": 0}


def main():
    signal.signal(signal.SIGTERM, cleanup)
    print(f"machine: {os.cpu_count()} cores; Postgres {psql('SHOW server_version', db='postgres')}; "
          f"levels {LEVELS}, {DURATION} s each{'; QUICK' if QUICK else ''}", flush=True)
    if "api" in PHASES:
        api_phase()
    if "purge" in PHASES:
        purge_phase()
    if "upstream" in PHASES:
        upstream_phase()
    if "drain" in PHASES:
        drain_phase()


# --- Phase A ---------------------------------------------------------------------------------

def populate(upto, start):
    """Generated jobs `start+1 ..= upto`: final (`succeeded`) copies of a real succeeded job's row
    (so each read returns what a real one does), ids md5('j'||i), team t(i % 10), one every 50 ms."""
    step = 200_000
    for lo in range(start + 1, upto + 1, step):
        hi = min(upto, lo + step - 1)
        psql(f"""
            INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, attempts,
                              mps_job_id, mps_state, mps_request_id, mps_count, mps_tile_count,
                              mps_response, submitted_at, finished_at, polls)
            SELECT md5('j' || i)::uuid, 't' || (i % {TEAMS}), 'succeeded', t.request, t.warnings,
                   ts, ts + interval '2 s', 1, md5('m' || i), t.mps_state, t.mps_request_id,
                   t.mps_count, t.mps_tile_count, t.mps_response, ts, ts + interval '2 s', 1
            FROM bench_template t, generate_series({lo}, {hi}) i,
                 LATERAL (SELECT timestamptz '2026-01-01' + i * interval '50 ms' AS ts) x""")
        print(f"  populated {hi:,} generated jobs", flush=True)
    psql("VACUUM ANALYZE jobs")


def measure(label, size, c, snap, ceiling, results):
    r = {"test": label, "size": size, "c": c, "snapgate": snap, "pgbench": ceiling}
    results.append(r)
    ratio = snap["rps"] / ceiling["rps"] if ceiling and ceiling["rps"] else float("nan")
    errs = f" ({snap['errors']} non-2xx)" if snap["errors"] else ""
    line = (f"  {label:<13} {size:>9,} c={c:<3} snapgate {snap['rps']:7.0f}/s p50 {snap['p50']:7.2f} p99 {snap['p99']:7.2f} ms{errs}")
    if ceiling:
        line += (f" | pgbench {ceiling['rps']:7.0f}/s p50 {ceiling['p50']:6.2f} p99 {ceiling['p99']:6.2f} ms"
                 f" | ratio {ratio:.2f}")
    if GATEWAY_PID:
        # snapgate's peak RSS so far, and its RSS now: which figure raised the peak.
        r["peak_rss_mib"] = peak_rss_mib(GATEWAY_PID)
        line += f" | RSS peak {r['peak_rss_mib']:.1f} now {rss_now_mib(GATEWAY_PID):.1f} MiB"
    print(line, flush=True)


INSERT_SQL = ("INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) "
              "SELECT gen_random_uuid(), 'pgbench', 'queued', request, warnings, now(), now() FROM bench_template;\n")


def template_job(token):
    """A real job through the real path, once succeeded: the template of every generated row
    (table bench_template); its id."""
    job = api("/v1/snapshot-jobs", token, EXAMPLE)
    for _ in range(100):
        if api(f"/v1/snapshot-jobs/{job['id']}", token)["state"] == "succeeded":
            break
        time.sleep(0.2)
    else:
        raise SystemExit("the template job did not succeed")
    psql(f"CREATE TABLE bench_template AS SELECT * FROM jobs WHERE id = '{job['id']}'")
    return job["id"]


def queued_read_set():
    """Queued jobs that stay queued (a retry scheduled tomorrow): the "GET a queued job" read
    set; the file of their paths for paths.lua."""
    psql(f"""INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, due_at, attempts)
             SELECT md5('q' || i)::uuid, 't0', 'queued', t.request, t.warnings, now(), now(),
                    now() + interval '1 day', 1
             FROM bench_template t, generate_series(1, {QUEUED_READ_SET}) i""")
    queued_paths = os.path.join(WORK, "queued.txt")
    with open(queued_paths, "w") as f:
        f.write(psql(f"SELECT '/v1/snapshot-jobs/' || md5('q' || i)::uuid FROM generate_series(1, {QUEUED_READ_SET}) i") + "\n")
    return queued_paths


def api_phase():
    fresh_db()
    # MPS's own limits; jobs take 1 s.
    emu = emulator("--submit-qps", "50", "--query-qps", "100", "--start-ms", "200", "--process-ms", "1000")
    for i in range(TEAMS):
        cli("team", "create", f"t{i}")
    token = json.loads(cli("key", "create", "--team", "t0"))["token"]
    cli("team", "create", "ops")
    admin_token = json.loads(cli("key", "create", "--team", "ops", "--admin"))["token"]
    gw = gateway(default_config=True)
    global GATEWAY_PID
    GATEWAY_PID = gw.pid
    auth = {"TOKEN": token}

    template_job(token)
    queued_paths = queued_read_set()
    list_where = "team = 't0' AND state = 'succeeded'"
    list_sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {list_where} ORDER BY created_at DESC, id DESC LIMIT 51;\n"

    results, done, rss = [], 0, {}
    for size in SIZES:
        print(f"\npopulating to {size:,} jobs ({TEAMS} teams)", flush=True)
        populate(size, done)
        done = size
        # Job i is md5('j' || i), of team t(i % TEAMS).
        final_step = size // TEAMS // FINAL_READ_SET * TEAMS
        final_paths = os.path.join(WORK, "final.txt")
        with open(final_paths, "w") as f:
            f.write(psql(f"SELECT '/v1/snapshot-jobs/' || md5('j' || (k * {final_step})::text)::uuid "
                         f"FROM generate_series(1, {FINAL_READ_SET}) k") + "\n")
        uncached_step = size // UNCACHED_READ_SET
        uncached_paths = os.path.join(WORK, "uncached.txt")
        with open(uncached_paths, "w") as f:
            f.write(psql(f"SELECT '/v1/snapshot-jobs/' || md5('j' || (k * {uncached_step})::text)::uuid "
                         f"FROM generate_series(1, {UNCACHED_READ_SET}) k") + "\n")
        # The cursors of pages 2 ..= PAGES + 1, walked through the API.
        list_path = "/v1/snapshot-jobs?state=succeeded&limit=50"
        cursors, page = [], api(list_path, token)
        for _ in range(PAGES):
            cursors.append(page["next_cursor"])
            page = api(f"{list_path}&cursor={page['next_cursor']}", token)
        next_paths = os.path.join(WORK, "next.txt")
        with open(next_paths, "w") as f:
            f.write("".join(f"{list_path}&cursor={c}\n" for c in cursors))
        list_file = os.path.join(WORK, "list.txt")
        with open(list_file, "w") as f:
            f.write(list_path + "\n")
        next_sql = []
        for cur in cursors:
            micros, jid = base64.urlsafe_b64decode(cur + "=" * (-len(cur) % 4)).decode().split("|")
            next_sql.append(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {list_where} AND (created_at, id) < "
                            f"(timestamptz 'epoch' + {int(micros)} * interval '1 microsecond', '{jid}'::uuid) "
                            "ORDER BY created_at DESC, id DESC LIMIT 51;\n")
        pk_sql = (f"\\set k random(1, {FINAL_READ_SET})\n"
                  f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = md5('j' || (:k * {final_step})::text)::uuid;\n")
        pk_uncached_sql = (f"\\set k random(1, {UNCACHED_READ_SET})\n"
                           f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = md5('j' || (:k * {uncached_step})::text)::uuid;\n")

        for c in LEVELS:
            if wanted("GET final") or wanted("GET queued"):
                ceiling = pgbench(pk_sql, c)
            if wanted("GET final"):
                measure("GET final", size, c, wrk("GET final", "/", "paths.lua", c, dict(auth, PATHS_FILE=final_paths)), ceiling, results)
            if wanted("GET queued"):
                measure("GET queued", size, c, wrk("GET queued", "/", "paths.lua", c, dict(auth, PATHS_FILE=queued_paths)), ceiling, results)
            if wanted("GET uncached"):
                snap = wrk("GET uncached", "/", "paths.lua", c, dict(TOKEN=admin_token, PATHS_FILE=uncached_paths))
                measure("GET uncached", size, c, snap, pgbench(pk_uncached_sql, c), results)
            if wanted("list"):
                snap = wrk("list", "/", "paths.lua", c, dict(auth, PATHS_FILE=list_file))
                measure("list", size, c, snap, pgbench(list_sql, c), results)
            if wanted("next page"):
                snap = wrk("next page", "/", "paths.lua", c, dict(auth, PATHS_FILE=next_paths))
                measure("next page", size, c, snap, pgbench(next_sql, c), results)
        # Warm-up, not measured (as pgbench's figures leave out its connection set-up): the
        # first POSTs of a burst wait for their MPS id while the queue is empty (201), the
        # dispatcher and pool start; the figures are the steady state of a burst.
        posts_from = psql("SELECT clock_timestamp()")
        if wanted("POST"):
            wrk("POST warm-up", "/v1/snapshot-jobs", "post.lua", 16, auth, seconds=1)
        for c in LEVELS if wanted("POST") else []:
            snap = wrk("POST", "/v1/snapshot-jobs", "post.lua", c, auth)
            measure("POST", size, c, snap, pgbench(INSERT_SQL, c), results)
        psql("DELETE FROM jobs WHERE team = 'pgbench'")
        # The jobs just POSTed go too: the next size's figures then meet the table of that size
        # and an idle worker, as this size's reads did (not a backlog of these, dispatched at
        # the MPS budget for minutes while they run).
        posted = psql(f"WITH d AS (DELETE FROM jobs WHERE team = 't0' AND created_at >= '{posts_from}' "
                      "RETURNING 1) SELECT count(*) FROM d")
        print(f"  deleted the {int(posted):,} jobs POSTed at this size", flush=True)
        rss[size] = peak_rss_mib(gw.pid)
        print(f"  snapgate peak RSS so far: {rss[size]:.1f} MiB; jobs in the table: {psql('SELECT count(*) FROM jobs')}",
              flush=True)
    stop(gw)
    stop(emu)

    print("\n| test | jobs | c | snapgate req/s | p50 ms | p99 ms | pgbench tx/s | p50 ms | p99 ms | ratio | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s, p = r["snapgate"], r["pgbench"]
        errs = f" ({s['errors']} non-2xx)" if s["errors"] else ""
        print(f"| {r['test']} | {r['size']:,} | {r['c']} | {s['rps']:.0f}{errs} | {s['p50']:.2f} | {s['p99']:.2f} | "
              f"{p['rps']:.0f} | {p['p50']:.2f} | {p['p99']:.2f} | {s['rps'] / p['rps']:.2f} | {s['p99'] / p['p99']:.2f} |")
    if len(SIZES) >= 2:
        small, large = SIZES[0], SIZES[-1]
        print(f"\nscale: p99 at {large:,} jobs / p99 at {small:,} jobs (goal <= 1.5)")
        by = {(r["test"], r["size"], r["c"]): r["snapgate"] for r in results}
        for test in [t for t in ("GET final", "GET queued", "GET uncached", "list", "next page") if wanted(t)]:
            print(f"  {test:<11} " + "  ".join(f"c={c}: {by[(test, large, c)]['p99'] / by[(test, small, c)]['p99']:.2f}"
                                               for c in LEVELS))
    print(f"\nsnapgate peak RSS (VmHWM): " + ", ".join(f"{rss[s]:.1f} MiB after {s:,} jobs" for s in SIZES))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({"results": results, "rss_mib": rss}, f, indent=1)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


# --- Phase D ---------------------------------------------------------------------------------

PURGE_C = 16
OLD_ROWS_SQL = """SELECT (SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed')
                           AND finished_at < now() - interval '90 days'),
                         (SELECT count(*) FROM mps_responses WHERE received_at < now() - interval '90 days'),
                         (SELECT count(*) FROM webhook_events WHERE created_at < now() - interval '30 days'),
                         (SELECT count(*) FROM webhook_attempts WHERE attempted_at < now() - interval '30 days')"""
OLD_TABLES = ("jobs", "mps_responses", "webhook_events", "webhook_attempts")


def old_rows():
    """Rows past the default retention, per table (the purge's progress)."""
    return dict(zip(OLD_TABLES, map(int, psql(OLD_ROWS_SQL).split("|"))))


def populate_old(n, template_id):
    """`n` final jobs ended in 2025 (past the 90-day retention; ids md5('o'||i), 10 teams), each
    with copies of the template job's MPS responses; PURGE_EVENTS webhook events of 2025, one
    delivered delivery and one attempt each, to a disabled endpoint (nothing is sent)."""
    step = 100_000
    ts = "timestamptz '2025-06-01' + i * interval '10 ms'"
    for lo in range(1, n + 1, step):
        hi = min(n, lo + step - 1)
        psql(f"""
            INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, attempts,
                              mps_job_id, mps_state, mps_request_id, mps_count, mps_tile_count,
                              mps_response, submitted_at, finished_at, polls)
            SELECT md5('o' || i)::uuid, 't' || (i % {TEAMS}), 'succeeded', t.request, t.warnings,
                   {ts}, {ts} + interval '2 s', 1, md5('n' || i), t.mps_state, t.mps_request_id,
                   t.mps_count, t.mps_tile_count, t.mps_response, {ts}, {ts} + interval '2 s', 1
            FROM bench_template t, generate_series({lo}, {hi}) i;
            INSERT INTO mps_responses (job_id, action, request_id, code, body, received_at)
            SELECT md5('o' || i)::uuid, r.action, r.request_id, r.code, r.body, {ts}
            FROM mps_responses r, generate_series({lo}, {hi}) i WHERE r.job_id = '{template_id}'""")
        print(f"  populated {hi:,} old final jobs", flush=True)
    events = PURGE_EVENTS
    psql(f"""
        INSERT INTO webhook_endpoints (id, team, url, event_types, secret_ciphertext, created_at,
                                       updated_at, disabled_at, disabled_reason)
        VALUES (md5('e')::uuid, 't0', 'http://127.0.0.1:9/', '["job.succeeded"]', 'bench', now(), now(),
                now(), 'manual');
        INSERT INTO webhook_events (id, team, event_type, created_at, data)
        SELECT 'evt_old_' || i, 't0', 'job.succeeded', {ts}, '{{}}' FROM generate_series(1, {events}) i;
        INSERT INTO webhook_deliveries (id, event_id, endpoint_id, state, attempts, created_at, updated_at)
        SELECT md5('d' || i)::uuid, 'evt_old_' || i, md5('e')::uuid, 'succeeded', 1, {ts}, {ts}
        FROM generate_series(1, {events}) i;
        INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms)
        SELECT md5('d' || i)::uuid, {ts}, 200, 5 FROM generate_series(1, {events}) i""")
    print(f"  populated {events:,} old webhook events (a delivery and an attempt each)", flush=True)
    psql("VACUUM ANALYZE")


def purge_process():
    """`snapgate purge` (one run, default pacing; BENCH_PURGE_ENV="SNAPGATE__LIFECYCLE__PURGE_PAUSE_MS=200"
    tries another), its report on stdout."""
    env = {"PATH": os.environ.get("PATH", ""), "SNAPGATE_CONFIG_DIR": CONFIG_DIR,
           "DATABASE_URL": f"{PG}/{DB}", "SNAPGATE__AUTH__MASTER_KEY": MASTER_KEY, "RUST_LOG": "warn"}
    env.update(kv.split("=", 1) for kv in os.environ.get("BENCH_PURGE_ENV", "").split())
    out = open(os.path.join(WORK, "purge.out"), "w+")
    p = subprocess.Popen([BIN, "purge"], env=env, stdout=out, stderr=subprocess.STDOUT)
    PROCS.append(p)
    return p, out


def purge_windows(mode, tests, purge):
    """Each test measured once; the rows the purge deleted during it (table counts around it)."""
    rows = []
    for label, run in tests:
        before, t0 = old_rows(), time.time()
        fig = run()
        elapsed, after = time.time() - t0, old_rows()
        purged = {t: before[t] - after[t] for t in OLD_TABLES}
        running = purge is not None and purge.poll() is None
        rows.append({"test": label, "mode": mode, "fig": fig, "purged": purged, "purge_running": running})
        note = ""
        if purge is not None:
            note = (f" | purged in the window: " + ", ".join(f"{purged[t]:,} {t}" for t in OLD_TABLES)
                    + f" ({sum(purged.values()) / elapsed:,.0f} rows/s)"
                    + ("" if running else " | THE PURGE HAD ENDED BEFORE THE WINDOW DID"))
        print(f"  {mode:<13} {label:<15} {fig['rps']:7.0f}/s p50 {fig['p50']:6.2f} p99 {fig['p99']:6.2f} ms"
              + (f" ({fig['errors']} non-2xx)" if fig["errors"] else "") + note, flush=True)
    return rows


def purge_phase():
    """Foreground work while a purge runs: see the module's Phase D."""
    fresh_db()
    emu = emulator("--submit-qps", "50", "--query-qps", "100", "--start-ms", "200", "--process-ms", "1000")
    for i in range(TEAMS):
        cli("team", "create", f"t{i}")
    token = json.loads(cli("key", "create", "--team", "t0"))["token"]
    # The default configuration, its background purge off: the purge is the CLI's, started when
    # the second set of windows begins (a background run could otherwise start in the first).
    gw = gateway(default_config=True, SNAPGATE__LIFECYCLE__PURGE_ENABLED="false")
    global GATEWAY_PID
    GATEWAY_PID = gw.pid
    auth = {"TOKEN": token}
    template_id = template_job(token)
    queued_paths = queued_read_set()
    print(f"\npurge: {PURGE_JOBS:,} final jobs past the retention, c={PURGE_C}, {PURGE_WINDOW} s windows", flush=True)
    populate_old(PURGE_JOBS, template_id)
    print(f"  past the retention: {old_rows()}", flush=True)
    pk_sql = (f"\\set k random(1, {QUEUED_READ_SET})\n"
              f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = md5('q' || :k)::uuid;\n")
    c, w = PURGE_C, PURGE_WINDOW
    tests = [("POST", lambda: wrk("POST", "/v1/snapshot-jobs", "post.lua", c, auth, seconds=w)),
             ("pgbench INSERT", lambda: pgbench(INSERT_SQL, c, seconds=w)),
             ("GET queued", lambda: wrk("GET queued", "/", "paths.lua", c, dict(auth, PATHS_FILE=queued_paths), seconds=w)),
             ("pgbench SELECT", lambda: pgbench(pk_sql, c, seconds=w))]
    posts_from = psql("SELECT clock_timestamp()")
    wrk("POST warm-up", "/v1/snapshot-jobs", "post.lua", 16, auth, seconds=1)
    rows = []
    for mode in ("without purge", "during purge"):
        purge, out = purge_process() if mode == "during purge" else (None, None)
        if purge:
            time.sleep(1)  # its first batches: the windows meet it deleting
        rows += purge_windows(mode, tests, purge)
        # The jobs POSTed (and pgbench's rows) go: both sets of windows meet the same, empty, backlog.
        psql(f"DELETE FROM jobs WHERE team = 'pgbench' OR (team = 't0' AND created_at >= '{posts_from}' "
             f"AND id NOT IN (SELECT md5('q' || i)::uuid FROM generate_series(1, {QUEUED_READ_SET}) i))")
        if purge:
            purge.wait(900)
            out.seek(0)
            report = out.read()
            try:
                classes = json.loads(report)["classes"]
                print("  purge run: " + ", ".join(f"{k['class']} {k['deleted']:,} (+{k['related_deleted']:,})"
                                                  f" in {k['batches']} batches" for k in classes), flush=True)
            except (ValueError, KeyError, TypeError):
                print(f"  purge output: {report.strip()[:500]}", flush=True)
    stop(gw)
    stop(emu)
    purge_table(rows)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


def purge_table(rows):
    base = {r["test"]: r["fig"] for r in rows if r["mode"] == "without purge"}
    print(f"\n| test | c | without purge /s | p99 ms | during purge /s | p99 ms | rows purged in the window "
          "(jobs + MPS responses + webhook events + attempts) | ratio | >= 0.9 |")
    print("|---|---|---|---|---|---|---|---|---|")
    below = []
    for r in (r for r in rows if r["mode"] == "during purge"):
        b, f = base[r["test"]], r["fig"]
        ratio = f["rps"] / b["rps"] if b["rps"] else float("nan")
        ok = ratio >= 0.9 and r["purge_running"]
        if not ok and not r["test"].startswith("pgbench"):
            below.append(r["test"])
        ended = "" if r["purge_running"] else " (purge ended within the window)"
        print(f"| {r['test']} | {PURGE_C} | {b['rps']:.0f} | {b['p99']:.2f} | {f['rps']:.0f} | {f['p99']:.2f} | "
              f"{sum(r['purged'].values()):,}{ended} | {ratio:.2f} | {'yes' if ok else 'NO'} |")
    print("\npurge goal (snapgate's accept and read >= 0.9x without a purge): "
          + ("met" if not below else f"NOT met for {', '.join(below)}: try another pacing (batch size, pause), "
             "e.g. BENCH_PURGE_ENV='SNAPGATE__LIFECYCLE__PURGE_PAUSE_MS=200', and repeat the run (one run's ratio "
             "carries the machine's drift: docs/benchmarks.md)"), flush=True)
    with open(os.path.join(ROOT, "target", "bench-purge-results.json"), "w") as f:
        json.dump(rows, f, indent=1)


# --- Phase B ---------------------------------------------------------------------------------

def upstream_phase():
    """Upstream efficiency under MPS's limits."""
    fresh_db()
    emu = emulator("--submit-qps", "50", "--query-qps", "100", "--start-ms", "200", "--process-ms", "2000")
    escaped = TEMPLATE.replace("'", "''")
    psql("INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, due_at) "
         f"SELECT gen_random_uuid(), 'default', 'queued', '{escaped}'::jsonb, '[]', now(), now(), now() "
         f"FROM generate_series(1, {BACKLOG})")
    # snapgate's budget 2 % under MPS's limits (clocks and scheduling jitter).
    gw = gateway(worker=True, SNAPGATE__WORKER__SUBMIT_QPS="49", SNAPGATE__WORKER__QUERY_QPS="98")
    t0 = time.time()
    submitted_at = None
    while True:
        time.sleep(1)
        queued = int(psql("SELECT count(*) FROM jobs WHERE due_at IS NOT NULL"))
        if queued == 0 and submitted_at is None:
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


# --- Phase C ---------------------------------------------------------------------------------

def drain_phase():
    """Memory while draining a large backlog: DRAIN_BACKLOG queued jobs, snapgate in the default
    configuration but with the upstream budget out of the way (an emulator without limits), for
    DRAIN_SECONDS; snapgate's peak RSS and its dispatch rate."""
    fresh_db()
    emu = emulator("--start-ms", "200", "--process-ms", "1000")
    escaped = TEMPLATE.replace("'", "''")
    step = 200_000
    for lo in range(0, DRAIN_BACKLOG, step):
        psql("INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, due_at) "
             f"SELECT gen_random_uuid(), 't' || (i % {TEAMS}), 'queued', '{escaped}'::jsonb, '[]', "
             f"now(), now(), now() FROM generate_series(1, {min(step, DRAIN_BACKLOG - lo)}) i")
    psql("VACUUM ANALYZE jobs")
    print(f"\ndrain: {DRAIN_BACKLOG:,} queued jobs, worker on, MPS without limits, {DRAIN_SECONDS} s", flush=True)
    gw = gateway(default_config=True, SNAPGATE__WORKER__SUBMIT_QPS="100000", SNAPGATE__WORKER__QUERY_QPS="100000")
    t0 = time.time()
    rss = []
    while time.time() - t0 < DRAIN_SECONDS:
        time.sleep(5)
        rss.append(rss_now_mib(gw.pid))
    elapsed = time.time() - t0
    sent = int(psql("SELECT count(*) FROM jobs WHERE mps_job_id IS NOT NULL"))
    print(f"  {sent:,} jobs sent in {elapsed:.0f} s ({sent / elapsed:.0f}/s); RSS every 5 s: "
          + ", ".join(f"{r:.1f}" for r in rss) + f" MiB; peak RSS (VmHWM) {peak_rss_mib(gw.pid):.1f} MiB", flush=True)
    stop(gw)
    stop(emu)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
