"""The disk's floor for `--sync full`: messages arrive at RATE a second; each `fdatasync` covers
every message that arrived before its write began (group commit, as the store's front does),
written as ROW bytes each over zeros already on disk (the journal's spare). A message's latency
runs from its arrival to the end of the sync that covered it. Nothing else runs: no CPU of a
server, no SQLite. Prints the messages' p50, p99 and p99.9, and the syncs' (docs/benchmarks.md,
issue 19, fourteenth pass). Standard library only.

    python3 bench/scripts/group_sync_floor.py 5000 10 target 700

Arguments: messages a second, seconds, a directory on the disk to measure (the store's), bytes
a message."""
import os, sys, time

rate, secs, where, row = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
path = os.path.join(where, f"group-sync-floor-{os.getpid()}.bin")
size = 8 << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    os.write(fd, b"\0" * size)
    os.fsync(fd)
    n = int(rate * secs)
    start = time.perf_counter() + 0.05
    arrival = lambda i: start + i / rate
    latencies, syncs = [], []
    covered, at = 0, 0
    while covered < n:
        now = time.perf_counter()
        due = min(n, int((now - start) * rate) + 1) if now >= start else 0
        if due <= covered:
            time.sleep(max(0.0, arrival(covered) - now) * 0.9)
            continue
        record = os.urandom(row * (due - covered))
        if at + len(record) > size:
            at = 0
        began = time.perf_counter()
        os.pwrite(fd, record, at)
        os.fdatasync(fd)
        done = time.perf_counter()
        at += len(record)
        syncs.append(done - began)
        latencies.extend(done - arrival(i) for i in range(covered, due))
        covered = due
    latencies.sort()
    syncs.sort()
    q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))] * 1e6
    print(
        f"rate {rate:.0f}: messages p50 {q(latencies, .5):.0f} p99 {q(latencies, .99):.0f} "
        f"p99.9 {q(latencies, .999):.0f} us; {len(syncs)} syncs p50 {q(syncs, .5):.0f} "
        f"p99 {q(syncs, .99):.0f} max {q(syncs, 1):.0f} us"
    )
finally:
    os.close(fd)
    os.unlink(path)
