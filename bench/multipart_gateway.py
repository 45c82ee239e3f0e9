"""A large browser upload through snapgate's multipart intents, end to end, against one
`curl -T` PutObject of the same file to the same store, in the same run (alternating).

`snapgate emulator` is the object store (its own process), and `snapgate serve` the gateway (its
own process: SQLite, auth off, worker off, uploads to that store). The "browser" here makes the
intent (`POST /v1/uploads`: snapgate initiates the OSS multipart upload), asks snapgate for part
URLs 100 at a time, `PUT`s the parts straight to the store (`PARALLEL` at a time), and calls
`complete` (snapgate lists the parts, completes the upload and records the job). The time runs
from the intent to `complete`'s answer. The VmRSS of both processes is sampled every 50 ms:
snapgate never carries a byte of the file, so its RSS must stay flat whatever the file's size.

Usage (a built binary: SNAPGATE_BENCH_BIN, else target/release/snapgate, else target/debug):
    python3 bench/multipart_gateway.py [--size-mb 1024] [--parallel 4] [--rounds 2]
Prints one JSON object (MB/s of each path per round, their ratio, both processes' RSS).
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multipart import AK, BUCKET, ROOT, SECRET, Rss, binary, free_port, send  # noqa: E402


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("nothing listens on %d" % port)


def api(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    res = conn.getresponse()
    text = res.read()
    conn.close()
    if res.status >= 300:
        raise RuntimeError("%s %s: %d %s" % (method, path, res.status, text[:300]))
    return json.loads(text)


def through_gateway(gw, store_port, src, size, parallel):
    """Intent, part URLs, parts to the store, complete: the number of parts."""
    intent = api(gw, "POST", "/v1/uploads", {"preset": "bench", "filename": "src.bin",
                                             "content_type": "application/octet-stream", "size_bytes": size})
    plan, uid = intent["multipart"], intent["upload_id"]
    assert intent["form"] is None and plan, intent
    part, count = plan["part_size"], plan["part_count"]
    urls = []
    for first in range(1, count + 1, 100):
        numbers = list(range(first, min(first + 100, count + 1)))
        urls += api(gw, "POST", "/v1/uploads/%s/parts" % uid, {"part_numbers": numbers})["parts"]

    def one(p):
        u = urllib.parse.urlsplit(p["url"])
        assert u.port == store_port, p["url"]
        off = (p["part_number"] - 1) * part
        send(store_port, "PUT", u.path + "?" + u.query, src, off, p["size"])

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, urls))
    done = api(gw, "POST", "/v1/uploads/%s/complete" % uid)
    assert done["state"] != "waiting" and done["job"], done
    return count, done["object"]["object"]


def start(work):
    store_port, gw = free_port(), free_port()
    emulator = subprocess.Popen(
        [binary(), "emulator", "--listen", "127.0.0.1:%d" % store_port, "--access-key", "%s:%s" % (AK, SECRET),
         "--oss-dir", os.path.join(work, "oss")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SNAPGATE_CONFIG_DIR": os.path.join(ROOT, "config"),
        "SNAPGATE__HTTP__LISTEN": "127.0.0.1:%d" % gw,
        "DATABASE_URL": "sqlite://%s/snapgate.db" % work,
        "SNAPGATE__MPS__ENDPOINT": "http://127.0.0.1:%d" % store_port,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "SNAPGATE__AUTH__ENABLED": "false",
        "SNAPGATE__WORKER__ENABLED": "false",
        "SNAPGATE__UPLOADS__ENDPOINT": "http://127.0.0.1:%d/%s" % (store_port, BUCKET),
        "SNAPGATE__UPLOADS__MAX_SIZE_BYTES": str(1 << 40),
        # Every size measured here goes the multipart way (the default threshold is 100 MiB).
        "SNAPGATE__UPLOADS__MULTIPART_THRESHOLD_BYTES": str(1 << 20),
        "RUST_LOG": "warn",
    }
    gateway = subprocess.Popen([binary(), "serve"], env=env, stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(work, "gateway.log"), "w"))
    wait_port(store_port)
    wait_port(gw)
    out = lambda k: {"location": "oss-cn-shanghai", "bucket": BUCKET, "object": k}  # noqa: E731
    api(gw, "POST", "/v1/presets", {"name": "bench", "request": {
        "output": out("thumbs/{UploadId}/{Count}.jpg"), "num": 1, "frame_type": "normal"}})
    return emulator, gateway, store_port, gw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="snapgate-mpgw-bench-")
    procs = []
    try:
        src = os.path.join(work, "src.bin")
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(a.size_mb):
                f.write(block)
        size = a.size_mb << 20
        emulator, gateway, store_port, gw = start(work)
        procs = [gateway, emulator]
        out = {"binary": binary(), "size_mb": a.size_mb, "parallel": a.parallel, "rounds": []}
        for r in range(a.rounds):
            row = {}
            for kind in ("curl", "snapgate") if r % 2 == 0 else ("snapgate", "curl"):
                with Rss(gateway.pid) as g_rss, Rss(emulator.pid) as s_rss:
                    t = time.monotonic()
                    if kind == "curl":
                        key = "bench/curl-%d.bin" % r
                        subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-T", src,
                                        "http://127.0.0.1:%d/%s/%s" % (store_port, BUCKET, key)], check=True)
                    else:
                        row["part_count"], key = through_gateway(gw, store_port, src, size, a.parallel)
                    dt = time.monotonic() - t
                stored = os.path.join(work, "oss", BUCKET, key)
                assert os.path.getsize(stored) == size, (kind, os.path.getsize(stored))
                os.remove(stored)
                row[kind] = {"seconds": round(dt, 2), "mb_s": round(a.size_mb / dt, 1),
                             "gateway_rss_kib": [g_rss.samples[0], max(g_rss.samples), g_rss.samples[-1]],
                             "store_rss_kib": [s_rss.samples[0], max(s_rss.samples), s_rss.samples[-1]]}
            row["ratio_snapgate_to_curl"] = round(row["snapgate"]["mb_s"] / row["curl"]["mb_s"], 2)
            out["rounds"].append(row)
        print(json.dumps(out, indent=1))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
