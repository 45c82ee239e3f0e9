#!/usr/bin/env python3
"""Runs the built image (snapgate:local) on a machine with no Docker engine: every process is the
image's binary in the image's filesystem (`buildah run --isolation chroot`, one working container
per compose container), as the image's user (uid 65532), on the host's network.

1. `snapgate --version`; the image's user is 65532 and not root.
2. `snapgate migrate` against a fresh database on the local Postgres.
3. The image's default command (`serve`) and the image's own HEALTHCHECK command: fails before the
   server is up, passes once it is, and the serving process runs as uid 65532.
4. The compose topology of docker-compose.yml, read from the file (commands, env files,
   environment, depends_on conditions, replicas, health checks), not restated here: the local
   Postgres stands in for the `postgres` service; every other service runs from the image. Since
   all share the host's network, each container's listening port is mapped to a free one and
   references to `<service>:<port>` are rewritten to 127.0.0.1:<its port>. A job is submitted
   through replica 1, replica 1 is stopped (SIGTERM, as `docker compose stop` does), and replica 2
   finishes the job.

Usage: image-check.py [IMAGE]   (needs root, buildah, psql, ss; PyYAML)
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = sys.argv[1] if len(sys.argv) > 1 else "snapgate:local"
PG = {"host": "127.0.0.1", "port": "5432", "admin": "postgres"}
RUN_ID = f"{int(time.time())}_{os.getpid()}"

containers = []  # working containers to remove
procs = []  # (name, Popen, log path, port it listens on)
databases = []
roles = []  # roles this run created (the compose file's Postgres user)
LOG_DIR = os.path.join(ROOT, "target", "image-check")
os.makedirs(LOG_DIR, exist_ok=True)


def say(msg):
    print(f"image-check: {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"image-check: FAILED: {msg}")


def sh(*argv, check=True, **kw):
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kw)


def psql(sql, db="postgres"):
    out = sh("psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["admin"], "-d", db,
             "-v", "ON_ERROR_STOP=1", "-Atc", sql)
    return out.stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_config():
    info = json.loads(sh("buildah", "inspect", "--type", "image", IMAGE).stdout)
    docker = info.get("Docker", {}).get("config", {}) or {}
    oci = info.get("OCIv1", {}).get("config", {}) or {}
    env = dict(e.split("=", 1) for e in (oci.get("Env") or docker.get("Env") or []))
    return {
        "user": oci.get("User") or docker.get("User"),
        "entrypoint": oci.get("Entrypoint") or docker.get("Entrypoint") or [],
        "cmd": oci.get("Cmd") or docker.get("Cmd") or [],
        "env": env,
        "workdir": oci.get("WorkingDir") or docker.get("WorkingDir"),
        "healthcheck": docker.get("Healthcheck"),
    }


def new_container(name):
    ctr = sh("buildah", "from", "--pull=never", "--format", "docker", "--name", f"sg-{name}-{RUN_ID}", IMAGE).stdout.strip()
    containers.append(ctr)
    return ctr


def run_argv(ctr, argv, env):
    """`buildah run` of argv in ctr as the image's user; env on top of the image's."""
    cmd = ["buildah", "run", "--isolation", "chroot", "--user", "65532:65532"]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    return cmd + [ctr, "--"] + list(argv)


def run(ctr, argv, env, timeout=120):
    return subprocess.run(run_argv(ctr, argv, env), text=True, capture_output=True, timeout=timeout)


def start(name, ctr, argv, env, port=None):
    log = os.path.join(LOG_DIR, f"{name}.log")
    f = open(log, "w")
    p = subprocess.Popen(run_argv(ctr, argv, env), stdout=f, stderr=subprocess.STDOUT,
                         start_new_session=True)
    procs.append((name, p, log, port))
    return p


def listener_pid(port):
    """The host pid of the process listening on 127.0.0.1:port (the chroot shares the network)."""
    out = sh("ss", "-Hltnp", f"sport = :{port}").stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return line.split()[1:]
    return None


last = {}  # the last failed probe's output, for the message when waiting gives up


def wait_until(what, check, timeout, interval=0.5):
    deadline = time.monotonic() + timeout
    last.clear()
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    fail(f"{what}: not within {timeout} s (last: {last.get('out', '-')})")


def http(method, url, token=None, body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def fresh_database(user=None, password=None):
    name = f"snapgate_image_{RUN_ID}_{len(databases)}"
    if user and user != PG["admin"]:
        if psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'") != "1":
            psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
            roles.append(user)
    psql(f"CREATE DATABASE \"{name}\" OWNER \"{user or PG['admin']}\"")
    databases.append(name)
    return name


# ---------------------------------------------------------------------------------------------
def check_version_and_user(cfg):
    t0 = time.monotonic()
    user = cfg["user"] or ""
    if user.split(":")[0] in ("", "0", "root"):
        fail(f"the image runs as root (User {user!r})")
    if user != "65532:65532":
        fail(f"the image's user is {user!r}, not 65532:65532")
    ctr = new_container("version")
    out = run(ctr, ["snapgate", "--version"], {})
    want = re.search(r'^version = "([^"]+)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
    if out.returncode != 0 or want not in out.stdout:
        fail(f"snapgate --version: exit {out.returncode}: {out.stdout}{out.stderr}")
    # No shell in the runtime image (distroless).
    sh_out = run(ctr, ["/bin/sh", "-c", "true"], {})
    if sh_out.returncode == 0:
        fail("the runtime image has a shell")
    say(f"--version: {out.stdout.strip()} as {user}; no /bin/sh ({time.monotonic() - t0:.1f} s)")


def check_migrate():
    t0 = time.monotonic()
    db = fresh_database()
    ctr = new_container("migrate")
    url = f"postgres://{PG['admin']}@{PG['host']}:{PG['port']}/{db}"
    out = run(ctr, ["snapgate", "migrate"], {"DATABASE_URL": url})
    if out.returncode != 0:
        fail(f"snapgate migrate: exit {out.returncode}: {out.stdout}{out.stderr}")
    applied = int(psql("SELECT count(*) FROM _sqlx_migrations WHERE success", db=db))
    files = len([f for f in os.listdir(os.path.join(ROOT, "migrations", "postgres")) if f.endswith(".sql")])
    if applied != files:
        fail(f"migrate applied {applied} migrations, migrations/postgres has {files}")
    say(f"migrate: {applied} migrations applied to {db} ({time.monotonic() - t0:.1f} s)")
    return url


def check_serve_and_healthcheck(cfg, url):
    t0 = time.monotonic()
    hc = cfg["healthcheck"]
    if not hc or not hc.get("Test"):
        fail("the image has no HEALTHCHECK (built without --format docker?)")
    test = hc["Test"]
    if test[0] != "CMD":
        fail(f"HEALTHCHECK is not in exec form: {test}")
    port = free_port()
    listen = cfg["env"].get("SNAPGATE__HTTP__LISTEN", "0.0.0.0:8080")
    env = {
        "DATABASE_URL": url,
        # The host's network is shared: the image's address with a free port, and the built-in
        # emulator (no MPS key here) on a free port too.
        "SNAPGATE__HTTP__LISTEN": f"{listen.rsplit(':', 1)[0]}:{port}",
        "SNAPGATE__EMULATOR__LISTEN": "127.0.0.1:0",
    }
    # No auth.master_key: serve creates data/master.key, so the image's data/ must be writable
    # by its user.
    ctr = new_container("serve")
    down = run(ctr, test[1:], env)
    if down.returncode == 0:
        fail(f"the HEALTHCHECK passes with nothing listening: {down.stdout}")
    p = start("serve", ctr, cfg["entrypoint"] + cfg["cmd"], env, port)
    start_period = hc.get("StartPeriod", 10_000_000_000) / 1e9
    retries = hc.get("Retries", 3)
    interval = hc.get("Interval", 10_000_000_000) / 1e9
    healthy = []

    def probe():
        if p.poll() is not None:
            fail(f"serve exited {p.returncode}; see {procs[-1][2]}")
        r = run(ctr, test[1:], env)
        if r.returncode == 0:
            healthy.append(r.stdout.strip())
        last["out"] = f"exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}"
        return r.returncode == 0

    wait_until("the image's HEALTHCHECK", probe, start_period + retries * interval)
    pid = listener_pid(port)
    uid = uid_of(pid) if pid else None
    if not uid or set(uid) != {"65532"}:
        fail(f"serve (pid {pid}) runs with uids {uid}, not 65532")
    stop(p, port)
    say(f"serve + HEALTHCHECK {test[1:]}: {healthy[0]}; failed while down; serving pid runs as "
        f"uid 65532 ({time.monotonic() - t0:.1f} s)")


def stop(p, port=None, timeout=30):
    """SIGTERM to the process serving `port` (snapgate itself, inside the chroot), else to the
    `buildah run` process group; SIGKILL after `timeout`."""
    if p.poll() is not None:
        return
    pid = listener_pid(port) if port else None
    if pid:
        os.kill(pid, signal.SIGTERM)
    else:
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# --- the compose topology -------------------------------------------------------------------
def compose_env(service, image_env):
    env = dict(image_env)
    files = service.get("env_file") or []
    for f in [files] if isinstance(files, str) else files:
        for line in open(os.path.join(ROOT, f)):
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) for e in environment)
    for k, v in environment.items():
        env[k] = "true" if v is True else "false" if v is False else str(v)
    return env


def listen_port(argv, env):
    """The container port a service listens on: its `--listen` or the image's http.listen."""
    if "--listen" in argv:
        return int(argv[argv.index("--listen") + 1].rsplit(":", 1)[1])
    return int(env.get("SNAPGATE__HTTP__LISTEN", "0.0.0.0:8080").rsplit(":", 1)[1])


def rewrite(value, services_ports, own):
    """`<service>:<port>` → `127.0.0.1:<its host port>`; `<address>:<port>` of the container
    itself (0.0.0.0, 127.0.0.1, localhost) → the same address with its host port."""
    for name, (cport, hport) in services_ports.items():
        value = re.sub(rf"(?<=[/@]){re.escape(name)}:{cport}\b", f"127.0.0.1:{hport}", value)
    if own:
        cport, hport = own
        value = re.sub(rf"\b(127\.0\.0\.1|0\.0\.0\.0|localhost):{cport}\b", rf"\1:{hport}", value)
    return value


def check_compose(cfg):
    t0 = time.monotonic()
    doc = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    services = doc["services"]
    image = [n for n, s in services.items() if "build" not in s and "image" in s]
    # The services not built from this repository: only Postgres, played by the local cluster.
    if len(image) != 1 or not services[image[0]]["image"].startswith("postgres:"):
        fail(f"expected one non-built service, Postgres; got {image}")
    pg_name = image[0]
    pg_env = services[pg_name].get("environment") or {}
    pg_user, pg_pass = pg_env.get("POSTGRES_USER", "postgres"), pg_env.get("POSTGRES_PASSWORD", "")
    pg_db = pg_env.get("POSTGRES_DB", pg_user)
    db = fresh_database(pg_user, pg_pass)

    # Containers: (service, replica index) with argv, env and ports.
    plan = {}
    ports = {pg_name: (5432, int(PG["port"]))}
    for name, s in services.items():
        if name == pg_name:
            continue
        if s.get("image") not in (None, "snapgate:local"):
            fail(f"service {name} uses image {s.get('image')}, this check runs {IMAGE}")
        command = s.get("command") or cfg["cmd"]
        argv = cfg["entrypoint"] + (shlex.split(command) if isinstance(command, str) else command)
        env = compose_env(s, cfg["env"])
        replicas = (s.get("deploy") or {}).get("replicas", 1)
        cport = listen_port(argv, env)
        reps = [free_port() for _ in range(replicas)]
        plan[name] = {"argv": argv, "env": env, "cport": cport, "hports": reps, "service": s}
        ports[name] = (cport, reps[0])
    for name, p in plan.items():
        env = {}
        for k, v in p["env"].items():
            v = rewrite(v, ports, None)
            # The compose database, made fresh on the local cluster.
            v = re.sub(rf"(@127\.0\.0\.1:{PG['port']})/{re.escape(pg_db)}\b", rf"\1/{db}", v)
            env[k] = v
        p["env"] = env

    def replica(name, i):
        p = plan[name]
        hport = p["hports"][i]
        env = {k: rewrite(v, {}, (p["cport"], hport)) for k, v in p["env"].items()}
        if "--listen" not in p["argv"] and "SNAPGATE__HTTP__LISTEN" not in env:
            env["SNAPGATE__HTTP__LISTEN"] = f"0.0.0.0:{hport}"
        argv = [rewrite(a, {}, (p["cport"], hport)) for a in p["argv"]]
        hc = (p["service"].get("healthcheck") or {})
        test = None if hc.get("disable") else [rewrite(a, {}, (p["cport"], hport)) for a in hc["test"]]
        return argv, env, test, hport

    running = {}  # (name, i) -> (ctr, popen, env, test, hport)
    order, done = [], set()

    def visit(name):
        if name in done or name == pg_name:
            return
        for dep in (plan[name]["service"].get("depends_on") or {}):
            visit(dep)
        done.add(name)
        order.append(name)

    for name in plan:
        visit(name)

    def healthy(name):
        for i in range(len(plan[name]["hports"])):
            ctr, p, env, test, _ = running[(name, i)]
            if test is None or test[0] != "CMD":
                fail(f"service {name}: health check {test}")
            if p.poll() is not None:
                fail(f"service {name}[{i}] exited {p.returncode}; see target/image-check/{name}-{i}.log")
            r = run(ctr, test[1:], env)
            if r.returncode != 0:
                last["out"] = f"{name}[{i}] exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}"
                return False
        return True

    for name in order:
        for dep, cond in (plan[name]["service"].get("depends_on") or {}).items():
            cond = cond.get("condition") if isinstance(cond, dict) else "service_started"
            if dep == pg_name:
                continue  # the local cluster is up (CI checked pg_isready)
            if cond == "service_healthy":
                wait_until(f"service {dep} healthy", lambda: healthy(dep), 60)
            elif cond == "service_completed_successfully":
                for i in range(len(plan[dep]["hports"])):
                    p = running[(dep, i)][1]
                    p.wait(120)
                    if p.returncode != 0:
                        fail(f"service {dep} exited {p.returncode}; see target/image-check/{dep}-{i}.log")
        for i in range(len(plan[name]["hports"])):
            argv, env, test, hport = replica(name, i)
            ctr = new_container(f"{name}-{i}")
            proc = start(f"{name}-{i}", ctr, argv, env, None if test is None else hport)
            running[(name, i)] = (ctr, proc, env, test, hport)
    serving = [n for n in plan if plan[n]["argv"][1:2] == ["serve"]]
    if len(serving) != 1 or len(plan[serving[0]]["hports"]) < 2:
        fail(f"expected one serve service with two replicas: {serving}")
    web = serving[0]
    wait_until(f"service {web} healthy (both replicas)", lambda: healthy(web), 60)
    up = time.monotonic() - t0
    shape = ", ".join(f"{n} x{len(plan[n]['hports'])}" for n in order)
    say(f"compose: {shape} up and healthy ({up:.1f} s; database {db})")

    # A team key, made as an operator would (`docker compose run --rm <service> key create`):
    # a container of its own with the replicas' environment.
    _, p0, env0, _, port0 = running[(web, 0)]
    _, p1, _, _, port1 = running[(web, 1)]
    cli = new_container("cli")
    team = run(cli, ["snapgate", "team", "create", "image-check"], env0)
    key = run(cli, ["snapgate", "key", "create", "--team", "image-check"], env0)
    try:
        token = json.loads(key.stdout)["token"]
    except (ValueError, KeyError):
        fail(f"team create: exit {team.returncode} {team.stdout} {team.stderr}; key create: exit "
             f"{key.returncode}, stdout {key.stdout!r}, stderr {key.stderr}")
    loc = {"location": "oss-cn-shanghai", "bucket": "media"}
    job = {"input": {**loc, "object": "uploads/clip.mp4"},
           "output": {**loc, "object": "thumbs/image-check/{Count}.jpg"},
           "time_ms": 0, "interval_s": 2, "num": 4, "width": 320}
    t1 = time.monotonic()
    submit_status, answer = http("POST", f"http://127.0.0.1:{port0}/v1/snapshot-jobs", token, job)
    if submit_status not in (201, 202):
        fail(f"submit through replica 1: {submit_status} {answer}")
    job_id = answer["id"]
    # Replica 1 goes away (SIGTERM, as `docker compose stop`); replica 2 must finish the job.
    stop(p0, port0)
    if p0.returncode != 0:
        fail(f"replica 1 exited {p0.returncode} on SIGTERM")
    status, seen = http("GET", f"http://127.0.0.1:{port1}/v1/snapshot-jobs/{job_id}", token)
    if status != 200:
        fail(f"replica 2 does not know job {job_id}: {status} {seen}")
    state_at_handover = seen["state"]
    if state_at_handover in ("succeeded", "failed"):
        fail(f"job {job_id} was already {state_at_handover} when replica 1 stopped: nothing left "
             "for replica 2 to show")
    final = {}

    def finished():
        s, j = http("GET", f"http://127.0.0.1:{port1}/v1/snapshot-jobs/{job_id}", token)
        if s == 200 and j["state"] in ("succeeded", "failed"):
            final.update(j)
            return True
        return False

    wait_until(f"job {job_id} final through replica 2", finished, 90)
    if final["state"] != "succeeded":
        fail(f"job {job_id} ended {final['state']}: {final.get('last_error')}")
    if p1.poll() is not None:
        fail("replica 2 exited")
    # The replicas' JSON logs say which one recorded the end.
    def recorded_end(name):
        for line in open(os.path.join(LOG_DIR, f"{name}.log")):
            if line.startswith("{"):
                e = json.loads(line)
                if (e.get("message") == "job state changed" and e.get("job_id") == job_id
                        and e.get("state") == "succeeded"):
                    return True
        return False

    if not recorded_end(f"{web}-1") or recorded_end(f"{web}-0"):
        fail(f"the log of replica 2 does not show it recording job {job_id} succeeded (or replica 1's does)")
    say(f"compose: job {job_id} submitted through replica 1 ({submit_status} {answer['state']}), replica 1 "
        f"stopped (exit {p0.returncode}) with the job {state_at_handover}, replica 2 recorded it "
        f"succeeded (its log), {len(final['outputs']['snapshots'])} snapshots, "
        f"{time.monotonic() - t1:.1f} s after submit")


def cleanup():
    for _, p, _, port in procs:
        try:
            stop(p, port, timeout=10)
        except ProcessLookupError:
            pass
    for ctr in containers:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
    for db in databases:
        subprocess.run(["psql", "-h", PG["host"], "-U", PG["admin"], "-d", "postgres", "-qc",
                        f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], capture_output=True)
    for role in roles:  # fails, and stays, if a database of another run still uses it
        subprocess.run(["psql", "-h", PG["host"], "-U", PG["admin"], "-d", "postgres", "-qc",
                        f'DROP ROLE IF EXISTS "{role}"'], capture_output=True)


def main():
    t0 = time.monotonic()
    try:
        cfg = image_config()
        check_version_and_user(cfg)
        url = check_migrate()
        check_serve_and_healthcheck(cfg, url)
        check_compose(cfg)
    except BaseException:
        for name, _, log, _ in procs:
            print(f"--- last lines of {name} ({log})", file=sys.stderr)
            print("".join(open(log).readlines()[-15:]), file=sys.stderr)
        raise
    finally:
        cleanup()
    say(f"all checks passed in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
