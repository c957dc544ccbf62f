"""The native client through its generated Python bindings (UniFFI), against a real server.

Run by tests/native_client.rs, which generates the bindings into a folder on PYTHONPATH
(with libconfab_ffi.so beside them), starts the server, and plays bob, a WebSocket user of its
own (no confab-client code). This script is alice. It asks the test for bob's part by printing
`ASK {json}` and reads the answer, one JSON line, from standard input; it ends with `PASS`.

Usage: ffi_chat.py SERVER CERT_SHA256 CLIENT_FILE
"""

import json
import sys
import threading

import confab_ffi as confab

SERVER, CERT, CLIENT_FILE = sys.argv[1], sys.argv[2], sys.argv[3]


def log(*what):
    print(*what, file=sys.stderr, flush=True)


def ask(what, **args):
    print("ASK " + json.dumps({"ask": what, **args}), flush=True)
    answer = json.loads(sys.stdin.readline())
    assert answer.get("ok"), answer
    return answer


class DevTokens(confab.TokenProvider):
    """Fetches a dev token through the library itself, and counts how often it was asked."""

    def __init__(self, user):
        self.user = user
        self.asked = 0

    def token(self):
        self.asked += 1
        return confab.dev_token(SERVER, self.user, CERT)


class BadToken(confab.TokenProvider):
    def token(self):
        return "not-a-token"


def config(transport=confab.Transport.AUTO, client_file=CLIENT_FILE):
    c = confab.default_config(SERVER)
    c.cert_sha256 = CERT
    c.transport = transport
    c.client_file = client_file
    c.keepalive_ms = 1000
    return c


def expect(client, what, pred, timeout_s=15.0):
    """The next event `pred` accepts; the others are returned in `seen` order to the caller's log."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        e = client.next_event(200)
        if e is None:
            continue
        log("alice:", e)
        if pred(e):
            return e
        assert not e.is_stopped(), f"stopped while waiting for {what}"
    raise AssertionError(f"no {what} within {timeout_s}s")


def main():
    # The defaults the library documents.
    d = confab.default_config(SERVER)
    assert d.transport == confab.Transport.AUTO and d.client_file is None, d
    assert (d.webtransport_deadline_ms, d.connect_timeout_ms, d.keepalive_ms) == (3000, 10000, 10000), d

    # A bad certificate hash is a configuration error, before any network.
    bad = config()
    bad.cert_sha256 = "abc"
    try:
        confab.ConfabClient.connect(bad, DevTokens("alice"))
        raise AssertionError("a bad hash connected")
    except confab.ConfabError.Config as e:
        log("refused config:", e)

    # A refused token: the error the server gave, as a typed exception with its code.
    try:
        confab.ConfabClient.connect(config(client_file=None), BadToken())
        raise AssertionError("a bad token connected")
    except confab.ConfabError.Refused as e:
        assert e.code in ("UNAUTHORIZED", "TOKEN_INVALID"), e
        assert e.close_code == 4003, e

    # 1. WebTransport first; a message both ways with its states in order.
    tokens = DevTokens("alice")
    alice = confab.ConfabClient.connect(config(), tokens)
    e = expect(alice, "connected", lambda e: e.is_connected())
    assert e.transport == confab.Transport.WEB_TRANSPORT, e
    assert tokens.asked == 1, tokens.asked
    alice.join("c1")
    expect(alice, "joined", lambda e: e.is_joined() and e.conversation_id == "c1")

    local_id = alice.send("c1", "hello from python")
    assert local_id, local_id
    states = []

    def state_of(e, wanted):
        if e.is_state() and e.local_id == local_id:
            states.append(e.state)
            return e.state == wanted
        return False

    sent = expect(alice, "sent", lambda e: state_of(e, confab.MessageState.SENT))
    got = ask("bob_expect", content="hello from python")
    assert got["id"] == sent.message_id, (got, sent)
    expect(alice, "delivered", lambda e: state_of(e, confab.MessageState.DELIVERED))
    ask("bob_read", message_id=sent.message_id)
    expect(alice, "read", lambda e: state_of(e, confab.MessageState.READ))
    assert states == [
        confab.MessageState.SENDING,
        confab.MessageState.SENT,
        confab.MessageState.DELIVERED,
        confab.MessageState.READ,
    ], states

    ask("bob_say", text="hi python, from a websocket")
    m = expect(alice, "bob's message", lambda e: e.is_message()).message
    assert (m.sender_id, m.content, m.message_type, m.conversation_id) == (
        "bob",
        "hi python, from a websocket",
        "text",
        "c1",
    ), m
    assert m.seq == 2 and m.id and m.created_at.endswith("Z"), m
    assert json.loads(m.metadata_json) == {}, m
    alice.close()
    expect(alice, "stopped", lambda e: e.is_stopped())
    assert alice.next_event(10) is None

    # 2. A cold start: the chat from the client file before any connection...
    cached = confab.cached_messages(CLIENT_FILE, "c1", 50)
    assert [(c.seq, c.content) for c in cached] == [(1, "hello from python"), (2, "hi python, from a websocket")], cached
    assert [c.content for c in confab.cached_messages(CLIENT_FILE, "c1", 1)] == ["hi python, from a websocket"]
    assert confab.cached_messages(CLIENT_FILE, "elsewhere", 50) == []

    # ...and what bob said meanwhile arrives once, nothing before it again; this time through a
    # listener (a Python object the library calls on its own thread).
    ask("bob_say", text="while you were away")
    heard = []
    done = threading.Event()
    stopped = threading.Event()

    class Listener(confab.EventListener):
        def on_event(self, event):
            log("alice (listener):", event)
            heard.append(event)
            if event.is_message() and event.message.content == "after the restart":
                done.set()
            if event.is_stopped():
                stopped.set()

    alice = confab.ConfabClient.connect(config(), DevTokens("alice"))
    assert [c.seq for c in alice.cached_messages("c1", 10)] == [1, 2]
    alice.listen(Listener())
    alice.join("c1")
    ask("bob_say", text="after the restart")
    assert done.wait(15), heard
    contents = [e.message.content for e in heard if e.is_message()]
    assert contents == ["while you were away", "after the restart"], contents
    seqs = [e.message.seq for e in heard if e.is_message()]
    assert seqs == [3, 4], seqs

    # 3. Typing goes to bob (a datagram on WebTransport).
    alice.typing("c1")
    ask("bob_expect_typing")
    alice.set_status("busy", "in a meeting")
    alice.close()
    # The listener hears the end on its own thread, last.
    assert stopped.wait(5), heard[-1]
    assert heard[-1].is_stopped() and sum(e.is_stopped() for e in heard) == 1, heard

    # 4. Forced onto WebSocket, the same API.
    alice = confab.ConfabClient.connect(config(confab.Transport.WEB_SOCKET, None), DevTokens("alice"))
    e = expect(alice, "connected", lambda e: e.is_connected())
    assert e.transport == confab.Transport.WEB_SOCKET, e
    alice.join("c1")
    expect(alice, "joined", lambda e: e.is_joined())
    local_id = alice.send("c1", "over websocket")
    expect(alice, "sent", lambda e: e.is_state() and e.local_id == local_id and e.state == confab.MessageState.SENT)
    ask("bob_expect", content="over websocket")
    alice.history("c1", None, 2)
    h = expect(alice, "history", lambda e: e.is_history())
    assert [m.content for m in h.messages] == ["after the restart", "over websocket"] and h.has_more, h
    alice.close()
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
