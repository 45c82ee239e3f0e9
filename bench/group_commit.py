"""What the group commit's batching costs the database, in counts that hold on a busy machine:
commits, WAL syncs and sessions waiting on a lock per POSTed job, with snapgate's rate.

One team posts at c=16 for 5 s (bench.py's gateway in its default configuration, worker on, the
emulator with MPS's limits). Usage: `BENCH_BIN=… BENCH_CONFIG_DIR=… python3 bench/group_commit.py`
(after `cargo build --release`); run two builds one after the other to compare them.
"""
import collections
import json
import os
import threading
import time

import bench as b

WAITING = []  # the statements seen waiting on a lock, one entry per sample and session


def stats():
    r = b.psql("SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
               " (SELECT wal_sync FROM pg_stat_wal), (SELECT count(*) FROM jobs)")
    return [int(x) for x in r.split("|")]


def main():
    b.fresh_db()
    b.emulator("--submit-qps", "50", "--query-qps", "100", "--start-ms", "200", "--process-ms", "1000")
    b.cli("team", "create", "t0")
    token = json.loads(b.cli("key", "create", "--team", "t0"))["token"]
    b.gateway(default_config=True)
    b.wrk("warm", "/v1/snapshot-jobs", "post.lua", 16, {"TOKEN": token}, seconds=1)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            rows = b.psql("SELECT left(query, 90) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            rows = [r for r in rows.splitlines() if r]
            samples.append(len(rows))
            WAITING.extend(rows)
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    s0 = stats()
    snap = b.wrk("POST", "/v1/snapshot-jobs", "post.lua", 16, {"TOKEN": token}, seconds=5)
    s1 = stats()
    stop.set()
    t.join()
    jobs = s1[2] - s0[2]
    print(f"{os.path.basename(b.BIN)}: {snap['rps']:.0f}/s; jobs {jobs}; commits/job {(s1[0] - s0[0]) / jobs:.3f}; "
          f"WAL syncs/job {(s1[1] - s0[1]) / jobs:.3f}; sessions waiting on a lock "
          f"(mean of {len(samples)} samples) {sum(samples) / len(samples):.2f}")
    print("most seen waiting:", collections.Counter(WAITING).most_common(3))


if __name__ == "__main__":
    try:
        main()
    finally:
        b.cleanup()
