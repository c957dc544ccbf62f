"""Idle WebSockets against a running `confab` in dev mode: its resident memory per connection,
measured as `confab-bench --only density` measures its own `--serve` child, but for the real
binary with its default logging (the bench's child logs nothing, so it has no tracing span per
connection). Standard library only.

    target/release/confab --http 127.0.0.1:18080 --https off --data-dir /tmp/d & \
    python3 bench/scripts/density_real.py 18080 5000 $!

Arguments: the HTTP port, the number of connections (each its own user; the open-files limit
must allow them), the server's PID. Prints one JSON line (docs/benchmarks.md, issue 19, sixth
pass)."""
import asyncio, base64, json, os, sys, urllib.request
port = int(sys.argv[1]); n = int(sys.argv[2]); pid = int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
def token(u):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/dev/token?user_id={u}"))["token"]
async def conn(tok):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    k = base64.b64encode(os.urandom(16)).decode()
    w.write(f"GET /ws?token={tok}&codec=msgpack HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await w.drain()
    got = b""
    while b"\r\n\r\n" not in got:
        got += await r.read(4096)
    assert got.startswith(b"HTTP/1.1 101"), got[:100]
    # The greeting frame, if it did not come with the head.
    if len(got.split(b"\r\n\r\n", 1)[1]) == 0:
        await r.read(4096)
    return r, w
async def main():
    tag = os.getpid()
    toks = [token(f"dr{tag}u{i}") for i in range(n + 1)]
    keep = [await conn(toks[n])]
    await asyncio.sleep(0.5)
    before = rss()
    for i in range(0, n, 64):
        keep += await asyncio.gather(*[conn(toks[j]) for j in range(i, min(n, i + 64))])
    await asyncio.sleep(1.0)
    after = rss()
    print(json.dumps({"clients": n, "rss_before_kib": before, "rss_after_kib": after, "kib_per_connection": round((after - before) / n, 2)}))
asyncio.run(main())
