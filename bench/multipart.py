"""Multipart throughput against the local object store: one file (default 1 GiB) sent as
presigned UploadPart requests (V1 query signatures made here as snapgate's `Presigner::url_with`
makes them, `PARALLEL` parts at a time) then completed, against a single `curl -T` PutObject of
the same file to the same store, in the same run (alternating, `ROUNDS` times each). The store
process's resident memory (VmRSS) is sampled every 50 ms during each upload: the store streams
parts to disk and concatenates file to file, so its RSS must stay flat whatever the file's size.

Usage (a built binary: SNAPGATE_BENCH_BIN, else target/release/snapgate, else target/debug):
    python3 bench/multipart.py [--size-mb 1024] [--part-mb 16] [--parallel 4] [--rounds 2]
Prints one JSON object (MB/s of each path per round, their ratio, the RSS figures).
"""
import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AK, SECRET, BUCKET = "benchid", "benchsecret", "media"


def binary():
    env = os.environ.get("SNAPGATE_BENCH_BIN")
    if env:
        return env
    for kind in ("release", "debug"):
        p = os.path.join(ROOT, "target", kind, "snapgate")
        if os.path.exists(p):
            return p
    sys.exit("build snapgate first (cargo build --release)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def presign(method, key, sub, expires):
    """OSS V1 presigned query (as `oss::v1::Presigner::url_with`)."""
    resource = "/%s/%s" % (BUCKET, key)
    if sub:
        resource += "?" + "&".join(k if v == "" else "%s=%s" % (k, v) for k, v in sorted(sub.items()))
    to_sign = "%s\n\n\n%d\n%s" % (method, expires, resource)
    sig = base64.b64encode(hmac.new(SECRET.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    q = dict(sub)
    q.update({"OSSAccessKeyId": AK, "Expires": str(expires), "Signature": sig})
    return "/%s/%s?%s" % (BUCKET, key, urllib.parse.urlencode(q))


class Rss:
    """Samples a process's VmRSS (KiB) in the background."""

    def __init__(self, pid):
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def read(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def run(self):
        while not self.stop.is_set():
            self.samples.append(self.read())
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join()


def send(port, method, path, body_file=None, offset=0, length=0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.putrequest(method, path, skip_accept_encoding=True)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    if body_file:
        with open(body_file, "rb") as f:
            f.seek(offset)
            left = length
            while left:
                chunk = f.read(min(left, 1 << 20))
                conn.send(chunk)
                left -= len(chunk)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    if res.status not in (200, 204):
        raise RuntimeError("%s %s: %d %s" % (method, path[:80], res.status, data[:300]))
    return res, data


def multipart(port, path, size, part, parallel, key):
    exp = int(time.time()) + 3600
    _, data = send(port, "POST", presign("POST", key, {"uploads": ""}, exp).replace("uploads=", "uploads"))
    upload_id = data.decode().split("<UploadId>")[1].split("</UploadId>")[0]
    count = (size + part - 1) // part

    def one(n):
        off = (n - 1) * part
        url = presign("PUT", key, {"partNumber": str(n), "uploadId": upload_id}, exp)
        res, _ = send(port, "PUT", url, path, off, min(part, size - off))
        return n, res.getheader("ETag")

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        etags = sorted(pool.map(one, range(1, count + 1)))
    xml = "<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % "".join(
        "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>" % (n, e) for n, e in etags)
    url = presign("POST", key, {"uploadId": upload_id}, exp)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", url, body=xml.encode())
    res = conn.getresponse()
    res.read()
    if res.status != 200:
        raise RuntimeError("complete: %d" % res.status)
    return count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--part-mb", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="snapgate-mp-bench-")
    try:
        src = os.path.join(work, "src.bin")
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(a.size_mb):
                f.write(block)
        size = a.size_mb << 20
        port = free_port()
        store = os.path.join(work, "oss")
        proc = subprocess.Popen(
            [binary(), "emulator", "--listen", "127.0.0.1:%d" % port, "--access-key", "%s:%s" % (AK, SECRET),
             "--oss-dir", store], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            out = {"binary": binary(), "size_mb": a.size_mb, "part_mb": a.part_mb, "parallel": a.parallel,
                   "rounds": []}
            for r in range(a.rounds):
                row = {}
                for kind in ("curl", "parts") if r % 2 == 0 else ("parts", "curl"):
                    key = "bench/%s-%d.bin" % (kind, r)
                    with Rss(proc.pid) as rss:
                        t = time.monotonic()
                        if kind == "curl":
                            subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-T", src,
                                            "http://127.0.0.1:%d/%s/%s" % (port, BUCKET, key)], check=True)
                        else:
                            row["part_count"] = multipart(port, src, size, a.part_mb << 20, a.parallel, key)
                        dt = time.monotonic() - t
                    got = os.path.getsize(os.path.join(store, BUCKET, key))
                    assert got == size, (kind, got)
                    row[kind] = {"seconds": round(dt, 2), "mb_s": round(a.size_mb / dt, 1),
                                 "rss_kib_first": rss.samples[0], "rss_kib_max": max(rss.samples),
                                 "rss_kib_last": rss.samples[-1]}
                    os.remove(os.path.join(store, BUCKET, key))
                row["ratio_parts_to_curl"] = round(row["parts"]["mb_s"] / row["curl"]["mb_s"], 2)
                out["rounds"].append(row)
            print(json.dumps(out, indent=1))
        finally:
            proc.terminate()
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
