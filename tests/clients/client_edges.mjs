// The browser client's edges in headless Chromium, driven by tests/interop.rs: what a user
// meets when things go wrong. Each step prints `name: ok` or the script exits non-zero.
//
// - refused: a bad token over WebTransport and over WebSocket (4003), and a socket the user may
//   not have (4004): `connect()` rejects with the server's code, `close` says willReconnect
//   false, and no second try is made.
// - settles: nothing listens: `connect()` rejects (CONNECTION_ERROR) at its timeout.
// - cert hash: the JSON of GET /cert-hash is taken as `certHash`; a malformed one throws; a
//   wrong one falls back to WebSocket saying CERT_HASH_MISMATCH with the served hash.
// - liveness: the server is frozen (SIGSTOP, by the Rust test when this prints FREEZE): the
//   client's heartbeats notice within seconds; offline (the browser's event) it stops trying and
//   says `offline`; read marks made meanwhile are queued, typing is refused, history comes from
//   what it has; the server thawed (THAW) and the browser online again, it reconnects at once,
//   not after its backoff; the queued read mark arrives; a join the server refused is not
//   made again.
//
// Usage: node client_edges.mjs HTTP_PORT (the Rust test answers FREEZE/THAW lines with DONE)

import { check, driver, run } from './browser.mjs';

const [port] = process.argv.slice(2);
const base = `http://localhost:${port}`;
const test = driver();
const ask = test.ask;

// A client that never settles must fail the test, not hang it.
setTimeout(() => { console.log('FAILED: timed out (a promise of the client never settled)'); process.exit(1); }, 90000).unref();

await run(async (browser) => {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(`${base}/healthz`);
  await page.evaluate(async () => {
    window.confab = await import('/client/confab.js');
    window.config = await (await fetch('/client-config')).json();
    window.token = async (user) => (await (await fetch(`/dev/token?user_id=${user}&username=${user}`)).json()).token;
    // A client with the page's settings; `o` overrides them. Records what it says.
    window.make = (user, o = {}) => {
      const c = window.config;
      const client = new window.confab.ConfabClient({
        getToken: () => window.token(user),
        webTransportUrl: `https://localhost:${c.webtransport_port}/wt`,
        webSocketUrl: `ws://${location.host}${c.websocket_path}`,
        certHash: c.cert_sha256,
        ...o,
      });
      client.log = [];
      for (const type of ['open', 'close', 'state', 'fallback', 'error', 'message', 'receipt']) {
        client.addEventListener(type, (e) => client.log.push({ type, at: performance.now(), ...e.detail, error: e.detail?.error && { code: e.detail.error.code, message: e.detail.error.message, details: e.detail.error.details } }));
      }
      client.addEventListener('event', (e) => client.log.push({ type: 'event', at: performance.now(), event: e.detail }));
      return client;
    };
    window.wait = (ms) => new Promise((r) => setTimeout(r, ms));
    window.until = async (what, ms = 10000) => {
      const end = performance.now() + ms;
      while (!what()) {
        if (performance.now() > end) return false;
        await window.wait(25);
      }
      return true;
    };
  });

  // ---- refused: 4003 stops everything, over both transports ----
  const refused = await page.evaluate(async () => {
    const out = {};
    for (const transport of ['auto', 'websocket']) {
      let tokens = 0;
      const c = window.make('x', { transport, getToken: async () => { tokens += 1; return 'not-a-token'; } });
      const t0 = performance.now();
      let error = null;
      try { await c.connect(); } catch (e) { error = { code: e.code, closeCode: e.details.closeCode }; }
      const took = performance.now() - t0;
      await window.wait(2500);
      const closes = c.log.filter((e) => e.type === 'close');
      out[transport] = { error, took, tokens, closes, state: c.connectionState };
    }
    // 4004: a good token, a socket the user may not have (a chat it is not a member of).
    const denied = window.make('alice', { transport: 'websocket', webSocketUrl: `ws://${location.host}/api/v1/ws/chat/secret` });
    try { await denied.connect(); } catch (e) { out.denied = { code: e.code, closeCode: e.details.closeCode }; }
    await window.wait(1500);
    out.denied.closes = denied.log.filter((e) => e.type === 'close').map((e) => [e.code, e.willReconnect]);
    out.denied.state = denied.connectionState;
    return out;
  });
  const denied = refused.denied;
  delete refused.denied;
  check(denied.code === 'FORBIDDEN' && denied.closeCode === 4004 && JSON.stringify(denied.closes) === '[[4004,false]]'
    && denied.state === 'closed', `refused with 4004: ${JSON.stringify(denied)}`);
  for (const [transport, r] of Object.entries(refused)) {
    check(r.error && ['TOKEN_INVALID', 'UNAUTHORIZED'].includes(r.error.code) && r.error.closeCode === 4003,
      `refused over ${transport}: connect() ${JSON.stringify(r.error)}`);
    check(r.closes.length === 1 && r.closes[0].willReconnect === false && r.closes[0].code === 4003,
      `refused over ${transport}: close ${JSON.stringify(r.closes)}`);
    check(r.tokens === 1 && r.state === 'closed', `refused over ${transport}: tried again ${JSON.stringify(r)}`);
  }
  console.log(`refused: ok (4003 rejected in ${Math.round(refused.auto.took)} ms over WebTransport, ${Math.round(refused.websocket.took)} ms over WebSocket, 4004 as FORBIDDEN; no retry)`);

  // ---- settles: no server at all ----
  const settles = await page.evaluate(async () => {
    const c = window.make('alice', { webTransportUrl: null, webSocketUrl: 'ws://localhost:9/ws', connectTimeoutMs: 1500 });
    const t0 = performance.now();
    let error = null;
    try { await c.connect(); } catch (e) { error = e.code; }
    const took = performance.now() - t0;
    c.close();
    return { error, took };
  });
  check(settles.error === 'CONNECTION_ERROR' && settles.took < 2500, `settles: ${JSON.stringify(settles)}`);
  console.log(`settles: ok (CONNECTION_ERROR after ${Math.round(settles.took)} ms)`);

  // ---- cert hash: the JSON of /cert-hash, a malformed one, a wrong one ----
  const cert = await page.evaluate(async () => {
    const json = await (await fetch('/cert-hash')).json();
    const good = window.make('alice', { certHash: json });
    await good.connect();
    const goodTransport = good.transport;
    good.close();
    let malformed = null;
    try { window.make('alice', { certHash: 'abc' }); } catch (e) { malformed = e.code; }
    const wrong = window.make('alice', { certHash: 'ab'.repeat(32) });
    await wrong.connect();
    const out = {
      goodTransport,
      malformed,
      wrongTransport: wrong.transport,
      fallback: wrong.log.find((e) => e.type === 'fallback'),
      error: wrong.log.find((e) => e.type === 'error')?.error,
      served: json.hex,
    };
    wrong.close();
    return out;
  });
  check(cert.goodTransport === 'webtransport', `cert hash: the /cert-hash JSON: ${JSON.stringify(cert)}`);
  check(cert.malformed === 'VALIDATION_ERROR', `cert hash: malformed: ${cert.malformed}`);
  check(cert.wrongTransport === 'websocket' && cert.fallback && cert.error?.code === 'CERT_HASH_MISMATCH'
    && cert.error.details.served === cert.served, `cert hash: wrong: ${JSON.stringify(cert)}`);
  console.log('cert hash: ok (/cert-hash JSON accepted, malformed refused, wrong one reported as CERT_HASH_MISMATCH)');

  // ---- liveness, offline, queued reads, refused joins ----
  const setup = await page.evaluate(async () => {
    const fast = { heartbeatMs: 1000, heartbeatTimeoutMs: 1000, connectTimeoutMs: 4000 };
    window.alice = window.make('alice', fast);
    window.bob = window.make('bob', { ...fast, transport: 'websocket' });
    await Promise.all([window.alice.connect(), window.bob.connect()]);
    await window.alice.join('edges');
    await window.bob.join('edges');
    let refusedJoin = null;
    try { await window.alice.join('secret'); } catch (e) { refusedJoin = e.code; }
    window.bob.send('edges', 'read me later');
    await window.until(() => window.alice.log.some((e) => e.type === 'message' && e.message.content === 'read me later'));
    window.readMe = window.alice.log.find((e) => e.type === 'message').message;
    return { refusedJoin, joined: [...window.alice.joined], transports: [window.alice.transport, window.bob.transport] };
  });
  check(setup.refusedJoin === 'FORBIDDEN' && !setup.joined.includes('secret'), `join refused: ${JSON.stringify(setup)}`);

  await ask('FREEZE');
  const frozen = await page.evaluate(async () => {
    const t0 = performance.now();
    const noticed = await window.until(() => window.alice.log.some((e) => e.type === 'close'), 8000);
    return { noticed, took: performance.now() - t0, close: window.alice.log.find((e) => e.type === 'close') };
  });
  check(frozen.noticed && frozen.close.willReconnect === true, `liveness: ${JSON.stringify(frozen)}`);
  console.log(`liveness: ok (a frozen server noticed in ${(frozen.took / 1000).toFixed(1)} s: ${frozen.close.reason})`);

  await ctx.setOffline(true);
  const offline = await page.evaluate(async () => {
    const a = window.alice;
    const wentOffline = await window.until(() => a.connectionState === 'offline', 8000);
    const read = a.markRead('edges', window.readMe.id).then(() => 'queued', (e) => e.code);
    let typing = null;
    try { await a.typing('edges'); } catch (e) { typing = e.code; }
    const page = await a.history('edges').catch((e) => ({ error: e.code }));
    const unknown = await a.history('elsewhere').then(() => 'served', (e) => e.code);
    return { wentOffline, state: a.connectionState, read: await read, typing, page, unknown };
  });
  check(offline.wentOffline, `offline: state ${offline.state}`);
  check(offline.read === 'queued' && offline.typing === 'CONNECTION_ERROR', `offline: read ${offline.read}, typing ${offline.typing}`);
  check(offline.page.offline === true && offline.page.messages.some((m) => m.content === 'read me later'),
    `offline history: ${JSON.stringify(offline.page)}`);
  check(offline.unknown === 'CONNECTION_ERROR', `offline history of an unknown conversation: ${offline.unknown}`);
  console.log('offline: ok (state offline; read mark queued, typing refused, history from what it has)');

  await ask('THAW');
  await page.evaluate(() => { window.onlineAt = performance.now(); });
  await ctx.setOffline(false);
  const back = await page.evaluate(async () => {
    const a = window.alice;
    const opened = await window.until(() => a.connectionState === 'open', 8000);
    const took = performance.now() - window.onlineAt;
    await window.until(() => window.bob.connectionState === 'open', 15000);
    const viewed = await window.until(() => window.bob.log.some((e) => e.type === 'receipt' && e.state === 'read'), 8000);
    await window.wait(1000);
    const forbidden = a.log.filter((e) => e.type === 'error' && e.error.code === 'FORBIDDEN').length;
    return { opened, took, viewed, forbidden, joined: [...a.joined], states: a.log.filter((e) => e.type === 'state').map((e) => e.state) };
  });
  check(back.opened && back.took < 3000, `back online: ${JSON.stringify(back)}`);
  console.log(`back online: ok (open ${Math.round(back.took)} ms after the browser's online event; states ${back.states.join(' > ')})`);
  check(back.viewed, 'the read mark made offline reached the sender');
  check(back.forbidden === 1 && !back.joined.includes('secret'), `refused join made again: ${JSON.stringify(back)}`);
  console.log('queued and refused: ok (the offline read mark arrived; the refused join was not made again)');
}, test);
