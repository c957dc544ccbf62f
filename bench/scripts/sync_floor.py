"""The disk's commit floor: a 16 KiB `pwrite` followed by `fdatasync`, N times, into a file that
grows with every write (`append`, as a fresh WAL does) or into one written beforehand
(`overwrite`, as a rewound WAL is). Prints p50, p90 and p99 in µs (docs/benchmarks.md, issue
19, seventh pass). Standard library only.

    python3 bench/scripts/sync_floor.py append 2000 target
    python3 bench/scripts/sync_floor.py overwrite 2000 target

Arguments: the mode, the number of writes, a directory on the disk to measure (the store's)."""
import os, sys, time
mode, n, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode not in ("append", "overwrite"):
    sys.exit("mode: append or overwrite")
path = os.path.join(where, f"sync-floor-{os.getpid()}.bin")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    # A WAL frame is a page (4 KiB) and a 24-byte header: four of them, about one commit.
    frame = os.urandom(16 * 1024 + 96)
    if mode == "overwrite":
        os.write(fd, b"\0" * (len(frame) * n))
        os.fsync(fd)
    times = []
    for i in range(n):
        start = time.perf_counter_ns()
        os.pwrite(fd, frame, i * len(frame))
        os.fdatasync(fd)
        times.append((time.perf_counter_ns() - start) / 1000)
    times.sort()
    print(f"{mode}: p50 {times[n // 2]:.0f} us, p90 {times[n * 9 // 10]:.0f} us, p99 {times[n * 99 // 100]:.0f} us")
finally:
    os.close(fd)
    os.unlink(path)
