// Headless Chromium's own WebTransport API against confab, driven by tests/interop.rs.
//
// A page from http://localhost (a secure context) opens two sessions, alice and bob, to
// https://localhost:PORT/wt with `serverCertificateHashes` (the dev certificate's SHA-256, no
// flags), JSON frames. `localhost` makes Chromium dial ::1 only, so this also proves the IPv6
// listener. Steps: established on the control stream; join `c1` on a stream each; a message
// both ways; a typing datagram; alice's `close({closeCode, reason})` is seen by the server at
// once (bob hears user:offline within a second); a bad token's session ends with closeCode 4003.
//
// Usage: node chromium_wt.mjs HTTP_PORT H3_PORT CERT_SHA256 ALICE_TOKEN BOB_TOKEN

import { launch } from './browser.mjs';

const [httpPort, h3Port, certHash, aliceToken, bobToken] = process.argv.slice(2);

const browser = await launch();
let failed = false;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`page: ${m.text()}`));
  await page.goto(`http://localhost:${httpPort}/healthz`);
  const result = await page.evaluate(async ({ h3Port, certHash, aliceToken, bobToken }) => {
    const WAIT = 5000;
    const hash = new Uint8Array(certHash.match(/../g).map((h) => parseInt(h, 16)));
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    const log = [];

    function varint(n) {
      if (n < 64) return [n];
      if (n < 16384) return [0x40 | (n >> 8), n & 0xff];
      return [0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
    }
    function frame(obj) {
      const body = enc.encode(JSON.stringify(obj));
      const out = new Uint8Array(varint(body.length).length + body.length);
      out.set(varint(body.length));
      out.set(body, out.length - body.length);
      return out;
    }

    // One user's session: every event lands in `events` tagged with where it came from.
    async function open(token) {
      const wt = new WebTransport(`https://localhost:${h3Port}/wt?token=${token}&codec=json`, {
        serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }],
      });
      await wt.ready;
      const u = { wt, events: [], waiters: [], next: 0, streams: {} };
      u.push = (origin, ev) => {
        u.events.push([origin, ev]);
        u.waiters.splice(0).forEach((w) => w());
      };
      u.pump = async (origin, readable) => {
        const reader = readable.getReader();
        let buf = new Uint8Array(0);
        for (;;) {
          let r;
          try { r = await reader.read(); } catch { return; }
          if (r.done) return;
          const joined = new Uint8Array(buf.length + r.value.length);
          joined.set(buf); joined.set(r.value, buf.length); buf = joined;
          for (;;) {
            if (buf.length < 1) break;
            const len = 1 << (buf[0] >> 6);
            if (buf.length < len) break;
            let n = buf[0] & 0x3f;
            for (let i = 1; i < len; i++) n = n * 256 + buf[i];
            if (buf.length < len + n) break;
            u.push(origin, JSON.parse(dec.decode(buf.slice(len, len + n))));
            buf = buf.slice(len + n);
          }
        }
      };
      u.stream = async (name) => {
        const s = await wt.createBidirectionalStream();
        u.streams[name] = s.writable.getWriter();
        u.pump(name, s.readable);
      };
      u.send = async (name, type, data) => {
        const id = `cr_${++u.next}`;
        await u.streams[name].write(frame({ type, data, message_id: id }));
        return id;
      };
      u.datagram = async (type, data) => {
        const w = wt.datagrams.writable.getWriter();
        await w.write(enc.encode(JSON.stringify({ type, data })));
        w.releaseLock();
      };
      u.expect = async (type, on) => {
        const deadline = Date.now() + WAIT;
        for (;;) {
          const i = u.events.findIndex(([, e]) => e.type === type);
          if (i >= 0) {
            const [origin, ev] = u.events.splice(i, 1)[0];
            if (on && origin !== on) throw new Error(`${type} came on ${origin}, expected ${on}`);
            return ev;
          }
          const left = deadline - Date.now();
          if (left <= 0) throw new Error(`no ${type} within ${WAIT} ms; have ${JSON.stringify(u.events)}`);
          await new Promise((res) => { u.waiters.push(res); setTimeout(res, left); });
        }
      };
      (async () => {
        const reader = wt.datagrams.readable.getReader();
        for (;;) {
          let r;
          try { r = await reader.read(); } catch { return; }
          if (r.done) return;
          u.push('datagram', JSON.parse(dec.decode(r.value)));
        }
      })();
      await u.stream('control');
      return u;
    }

    const alice = await open(aliceToken);
    const bob = await open(bobToken);
    for (const u of [alice, bob]) {
      await u.send('control', 'connection:established', { client_version: 'chromium-test', platform: 'web' });
      const est = await u.expect('connection:established', 'control');
      if (est.data.transport !== 'webtransport') throw new Error(JSON.stringify(est));
    }
    log.push('established: ok');

    for (const u of [alice, bob]) {
      await u.stream('c1');
      const rid = await u.send('c1', 'conversation:join', { conversation_id: 'c1' });
      const j = await u.expect('conversation:joined', 'c1');
      if (j.request_id !== rid) throw new Error(JSON.stringify(j));
    }
    await alice.send('c1', 'message:send', { conversation_id: 'c1', content: 'hello from chromium', type: 'text' });
    const sent = await alice.expect('message:sent', 'c1');
    const got = await bob.expect('message:new', 'c1');
    if (got.data.message.id !== sent.data.id || got.data.message.content !== 'hello from chromium') {
      throw new Error(JSON.stringify(got));
    }
    await bob.send('c1', 'message:send', { conversation_id: 'c1', content: 'and back', type: 'text' });
    let back = await alice.expect('message:new', 'c1');
    if (back.data.message.content !== 'and back') back = await alice.expect('message:new', 'c1');
    if (back.data.message.content !== 'and back') throw new Error(JSON.stringify(back));
    log.push('message: ok');

    await bob.datagram('heartbeat', { timestamp: '2026-11-22T10:00:00Z' });
    await bob.expect('heartbeat', 'datagram');
    await alice.datagram('typing:start', { conversation_id: 'c1' });
    const typing = await bob.expect('typing:indicator', 'datagram');
    if (typing.data.user_id !== 'alice' || typing.data.is_typing !== true) throw new Error(JSON.stringify(typing));
    log.push('datagrams: ok');

    const started = performance.now();
    alice.wt.close({ closeCode: 4000, reason: 'bye' });
    const off = await bob.expect('user:offline', 'control');
    const took = performance.now() - started;
    if (off.data.user_id !== 'alice') throw new Error(JSON.stringify(off));
    if (took >= 1000) throw new Error(`user:offline after ${took} ms`);
    log.push(`client close: ok (${Math.round(took)} ms)`);

    const bad = new WebTransport(`https://localhost:${h3Port}/wt?token=not-a-jwt&codec=json`, {
      serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }],
    });
    await bad.ready;
    const s = await bad.createBidirectionalStream();
    const w = s.writable.getWriter();
    // The server may refuse the session before this write lands (it stops reading once it has
    // said why): only the close matters here.
    w.write(frame({ type: 'connection:established', data: {} })).catch(() => {});
    const info = await bad.closed;
    if (info.closeCode !== 4003 || info.reason !== 'unauthorized') throw new Error(JSON.stringify(info));
    log.push(`server close: ok (${info.closeCode} ${info.reason})`);
    bob.wt.close();
    return log;
  }, { h3Port, certHash, aliceToken, bobToken });
  for (const line of result) console.log(line);
} catch (e) {
  console.error(`FAILED: ${e.message || e}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
