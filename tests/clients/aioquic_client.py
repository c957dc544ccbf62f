#!/usr/bin/env python3
"""An independent WebTransport client on Python's aioquic, driven by tests/interop.rs.

Two users (alice, bob) in conversation `c1`, JSON frames (`?codec=json`):
  1. both get `connection:established` on their control stream;
  2. both join `c1` on a stream of its own; alice sends, bob gets `message:new` on his `c1`
     stream, alice gets `message:sent`;
  3. bob sends a heartbeat datagram (so he reads datagrams); alice's `typing:start` datagram
     reaches bob as a `typing:indicator` datagram;
  4. alice closes her session with a CLOSE_WEBTRANSPORT_SESSION capsule; bob hears
     `user:offline` within a second (the server saw the close at once);
  5. a bad token: the server's close capsule carries 4003.
Prints one line per step and exits 0 when every check passed.

Usage: aioquic_client.py HOST:PORT CERT_SHA256 ALICE_TOKEN BOB_TOKEN
"""

import asyncio
import hashlib
import json
import ssl
import sys
import time

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, H3Stream
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated

WAIT = 5.0
CLOSE_WEBTRANSPORT_SESSION = 0x2843


def varint(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def read_varint(buf, at):
    if at >= len(buf):
        return None
    n = 1 << (buf[at] >> 6)
    if at + n > len(buf):
        return None
    v = buf[at] & 0x3F
    for b in buf[at + 1 : at + n]:
        v = (v << 8) | b
    return v, n


def frame(obj):
    payload = json.dumps(obj).encode()
    return varint(len(payload)) + payload


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.session_id = None
        self.status = None
        self.ready = asyncio.Event()
        self.events = asyncio.Queue()
        self.buffers = {}
        self.names = {}
        self.capsules = b""
        self.close_info = None
        self.closed = asyncio.Event()
        self.next_id = 0

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.closed.set()
            self.ready.set()
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_id == self.session_id:
                self.status = dict(ev.headers).get(b":status")
                self.ready.set()
            elif isinstance(ev, DataReceived) and ev.stream_id == self.session_id:
                # The CONNECT stream: capsules (the server's close).
                self.capsules += ev.data
                parsed = parse_close(self.capsules)
                if parsed is not None:
                    self.close_info = parsed
                if ev.stream_ended:
                    self.closed.set()
            elif isinstance(ev, WebTransportStreamDataReceived):
                buf = self.buffers.get(ev.stream_id, b"") + ev.data
                while True:
                    r = read_varint(buf, 0)
                    if r is None or r[1] + r[0] > len(buf):
                        break
                    length, n = r
                    self.events.put_nowait((self.names.get(ev.stream_id, "?"), json.loads(buf[n : n + length])))
                    buf = buf[n + length :]
                self.buffers[ev.stream_id] = buf
            elif isinstance(ev, DatagramReceived):
                self.events.put_nowait(("datagram", json.loads(ev.data)))

    def open_session(self, authority, path):
        self.session_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            stream_id=self.session_id,
            headers=[
                (b":method", b"CONNECT"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b":protocol", b"webtransport"),
                (b"origin", b"http://localhost"),
            ],
        )
        self.transmit()

    def open_stream(self, name):
        sid = self.h3.create_webtransport_stream(self.session_id, is_unidirectional=False)
        # The one line of help: aioquic does not mark the bidirectional streams its client
        # opens as WebTransport streams, so it would parse the server's answers as HTTP/3
        # frames. Record the stream as belonging to the session.
        self.h3._stream[sid] = st = H3Stream(sid); st.frame_type = FrameType.WEBTRANSPORT_STREAM; st.session_id = self.session_id  # noqa: E702
        self.names[sid] = name
        return sid

    def send(self, sid, kind, data):
        self.next_id += 1
        rid = f"py_{self.next_id}"
        self._quic.send_stream_data(sid, frame({"type": kind, "data": data, "message_id": rid}))
        self.transmit()
        return rid

    def datagram(self, kind, data):
        self.h3.send_datagram(self.session_id, json.dumps({"type": kind, "data": data}).encode())
        self.transmit()

    def close_session(self, code, reason):
        payload = code.to_bytes(4, "big") + reason.encode()
        capsule = varint(CLOSE_WEBTRANSPORT_SESSION) + varint(len(payload)) + payload
        self.h3.send_data(self.session_id, capsule, end_stream=True)
        self.transmit()

    async def expect(self, kind, on=None):
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} within {WAIT}s")
            origin, ev = await asyncio.wait_for(self.events.get(), left)
            if ev.get("type") == kind:
                if on is not None:
                    assert origin == on, f"{kind} came on {origin}, expected {on}"
                return ev


def parse_close(buf):
    at = 0
    while True:
        t = read_varint(buf, at)
        if t is None:
            return None
        ln = read_varint(buf, at + t[1])
        if ln is None:
            return None
        start = at + t[1] + ln[1]
        if start + ln[0] > len(buf):
            return None
        if t[0] == CLOSE_WEBTRANSPORT_SESSION:
            body = buf[start : start + ln[0]]
            return int.from_bytes(body[:4], "big"), body[4:].decode()
        at = start + ln[0]


def config(expected_hash):
    c = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    # The dev certificate is trusted by its hash (as browsers' serverCertificateHashes), checked below.
    c.verify_mode = ssl.CERT_NONE
    c.server_name = "localhost"
    return c


def check_hash(client, expected_hash):
    cert = client._quic.tls._peer_certificate
    from cryptography.hazmat.primitives.serialization import Encoding

    got = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    assert got == expected_hash, f"certificate hash {got} != {expected_hash}"


async def session(host, port, expected_hash, token, stack):
    cm = connect(host, port, configuration=config(expected_hash), create_protocol=Client)
    client = await stack.enter_async_context(cm)
    check_hash(client, expected_hash)
    client.open_session(f"{host}:{port}", f"/wt?token={token}&codec=json")
    await asyncio.wait_for(client.ready.wait(), WAIT)
    assert client.status == b"200", f"CONNECT answered {client.status}"
    client.control = client.open_stream("control")
    return client


async def main():
    addr, expected_hash, alice_token, bob_token = sys.argv[1:5]
    host, port = addr.rsplit(":", 1)
    port = int(port)
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        alice = await session(host, port, expected_hash, alice_token, stack)
        bob = await session(host, port, expected_hash, bob_token, stack)
        # The control stream exists once the client writes on it: say hello.
        for c in (alice, bob):
            c.send(c.control, "connection:established", {"client_version": "aioquic-test", "platform": "web"})
            est = await c.expect("connection:established", on="control")
            assert est["data"]["transport"] == "webtransport" and est["data"]["codec"] == "json", est
        print("established: ok")

        for c in (alice, bob):
            c.c1 = c.open_stream("c1")
            rid = c.send(c.c1, "conversation:join", {"conversation_id": "c1"})
            j = await c.expect("conversation:joined", on="c1")
            assert j["request_id"] == rid, j
        rid = alice.send(alice.c1, "message:send", {"conversation_id": "c1", "content": "hello from aioquic", "type": "text"})
        sent = await alice.expect("message:sent", on="c1")
        assert sent["request_id"] == rid and sent["data"]["seq"] == 1, sent
        new = await bob.expect("message:new", on="c1")
        assert new["data"]["message"]["content"] == "hello from aioquic", new
        assert new["data"]["message"]["id"] == sent["data"]["id"], new
        print("message: ok")

        bob.datagram("heartbeat", {"timestamp": "2026-11-22T10:00:00Z"})
        await bob.expect("heartbeat", on="datagram")
        alice.datagram("typing:start", {"conversation_id": "c1"})
        t = await bob.expect("typing:indicator", on="datagram")
        assert t["data"]["user_id"] == "alice" and t["data"]["is_typing"] is True, t
        print("datagrams: ok")

        started = time.monotonic()
        alice.close_session(4000, "bye")
        off = await bob.expect("user:offline", on="control")
        took = time.monotonic() - started
        assert off["data"]["user_id"] == "alice", off
        assert took < 1.0, f"user:offline took {took:.3f}s"
        print(f"client close: ok ({took * 1000:.0f} ms)")

        bad = await session(host, port, expected_hash, "not-a-jwt", stack)
        bad.send(bad.control, "connection:established", {})
        err = await bad.expect("error", on="control")
        assert err["data"]["code"] == "TOKEN_INVALID", err
        await asyncio.wait_for(bad.closed.wait(), WAIT)
        assert bad.close_info == (4003, "unauthorized"), bad.close_info
        print("server close: ok (4003 unauthorized)")


if __name__ == "__main__":
    asyncio.run(main())
