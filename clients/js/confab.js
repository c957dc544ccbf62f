// confab browser client: one dependency-free ES module.
//
// WebTransport first (a control stream, one stream per joined conversation, length-prefixed
// JSON frames), WebSocket (`/ws`, JSON) when WebTransport is missing or does not open within
// `fallbackMs`. The app sees the same events and API either way. Reconnects with exponential
// backoff and jitter (at once when the browser comes back online), re-joins with `since_seq`,
// deduplicates by message id, queues sends and read marks while offline (sends with a
// `local_id`, which the server deduplicates), notices a dead path by its own heartbeats,
// refreshes the token before it expires, and debounces typing. `connect()` always settles.
// Protocol: docs/protocol.md (§10 WebSocket, §10b WebTransport).

/** Every error code the server sends (docs/protocol.md §6). */
export const ERROR_CODES = [
  'VALIDATION_ERROR', 'UNAUTHORIZED', 'TOKEN_EXPIRED', 'TOKEN_INVALID', 'FORBIDDEN', 'NOT_FOUND',
  'CONVERSATION_NOT_FOUND', 'MESSAGE_NOT_FOUND', 'USER_NOT_FOUND', 'PERMISSION_DENIED',
  'RATE_LIMITED', 'MESSAGE_TOO_LARGE', 'INVALID_MESSAGE_TYPE', 'CONVERSATION_FULL',
  'CONNECTION_ERROR', 'INTERNAL_ERROR', 'SERVICE_UNAVAILABLE',
];

/** Codes the client itself raises (never sent by the server). */
export const CLIENT_ERROR_CODES = ['CERT_HASH_MISMATCH'];

/** A refusal: `code` is one of ERROR_CODES or CLIENT_ERROR_CODES. */
export class ConfabError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = 'ConfabError';
    this.code = code;
    this.details = details;
  }
}

const TYPING_IDLE_MS = 3000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 15000;
// Message ids kept for deduplication; older ones are forgotten.
const SEEN_MAX = 10000;
// Messages kept per conversation for history() while offline.
const CACHE_MAX = 500;
// Close codes after which reconnecting cannot help (docs/protocol.md §13).
const FINAL_CLOSES = new Map([[4003, 'UNAUTHORIZED'], [4004, 'FORBIDDEN']]);
// Answers to a join that will not change by trying again.
const FINAL_JOIN_ERRORS = ['FORBIDDEN', 'CONVERSATION_NOT_FOUND', 'NOT_FOUND', 'PERMISSION_DENIED'];

const enc = new TextEncoder();
const dec = new TextDecoder();

function varint(n) {
  if (n < 0x40) return Uint8Array.of(n);
  if (n < 0x4000) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  return Uint8Array.of(0x80 | (n >>> 24), (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** One length-prefixed frame (docs/protocol.md §8). */
function frame(obj) {
  const body = enc.encode(JSON.stringify(obj));
  const prefix = varint(body.length);
  const out = new Uint8Array(prefix.length + body.length);
  out.set(prefix);
  out.set(body, prefix.length);
  return out;
}

/** Splits a byte stream into frames, whatever the chunking. */
class FrameReader {
  constructor() { this.buf = new Uint8Array(0); }
  push(chunk) {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
    const out = [];
    for (;;) {
      if (this.buf.length < 1) break;
      const len = 1 << (this.buf[0] >> 6);
      if (this.buf.length < len) break;
      let n = this.buf[0] & 0x3f;
      for (let i = 1; i < len; i++) n = n * 256 + this.buf[i];
      if (this.buf.length < len + n) break;
      out.push(JSON.parse(dec.decode(this.buf.subarray(len, len + n))));
      this.buf = this.buf.slice(len + n);
    }
    return out;
  }
}

/**
 * A certificate hash as 64 lowercase hex digits, from what an app may have at hand: the hex
 * (any case, `:` separators as openssl prints them), the JSON of `GET /cert-hash`
 * (`{hex}` or `{value: [32 bytes]}`), or 32 bytes. Anything else throws.
 */
export function normalizeCertHash(h) {
  let hex = null;
  if (typeof h === 'string') hex = h.replace(/:/g, '').trim().toLowerCase();
  else if (h && typeof h.hex === 'string') return normalizeCertHash(h.hex);
  else if (h && Array.isArray(h.value)) return normalizeCertHash(h.value);
  else if (h instanceof ArrayBuffer || ArrayBuffer.isView(h) || Array.isArray(h)) {
    const bytes = h instanceof ArrayBuffer ? new Uint8Array(h) : Uint8Array.from(h);
    if (bytes.length === 32 && [...bytes].every((b) => b >= 0 && b <= 255)) {
      hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
    }
  }
  if (!hex || !/^[0-9a-f]{64}$/.test(hex)) {
    throw new ConfabError('VALIDATION_ERROR',
      'certHash: the certificate\'s SHA-256 as 64 hex digits, the JSON of GET /cert-hash, or 32 bytes');
  }
  return hex;
}

function hexToBytes(hex) {
  return new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
}

/** The `exp` claim of a JWT, in ms, or null. */
function tokenExpiry(token) {
  try {
    const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return typeof payload.exp === 'number' ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** WebTransport: control stream + a stream per conversation. */
class WtLink {
  constructor(url, certHash, onEvent, onClose) {
    this.name = 'webtransport';
    this.onEvent = onEvent;
    this.onClose = onClose;
    const options = certHash ? { serverCertificateHashes: [{ algorithm: 'sha-256', value: hexToBytes(certHash) }] } : {};
    this.wt = new WebTransport(url, options);
    this.writers = new Map(); // route ('control' or conversation id) -> writer
    this.closed = false;
    this.wt.closed.then(
      (info) => this.finish(info.closeCode ?? 1000, info.reason || ''),
      () => this.finish(1006, 'connection lost'),
    );
    this.wt.ready.catch(() => {});
  }
  async open() {
    await this.wt.ready;
    await this.openStream('control');
  }
  async openStream(route) {
    const s = await this.wt.createBidirectionalStream();
    const writer = s.writable.getWriter();
    this.writers.set(route, writer);
    this.pump(route, s.readable);
    return writer;
  }
  async pump(route, readable) {
    const reader = readable.getReader();
    const frames = new FrameReader();
    for (;;) {
      let r;
      try { r = await reader.read(); } catch { break; }
      if (r.done || this.closed) break;
      for (const ev of frames.push(r.value)) this.onEvent(ev);
    }
    if (this.writers.get(route) && route !== 'control') this.writers.delete(route);
  }
  /** `conversation:join` opens the conversation's own stream; the rest go on the control stream. */
  async send(env) {
    if (this.closed) throw new Error('closed');
    if (env.type === 'conversation:join') {
      const old = this.writers.get(env.data.conversation_id);
      const writer = await this.openStream(env.data.conversation_id);
      if (old) old.close().catch(() => {});
      return writer.write(frame(env));
    }
    const route = env.data && this.writers.has(env.data.conversation_id) ? env.data.conversation_id : 'control';
    return this.writers.get(route).write(frame(env));
  }
  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this, code, reason);
  }
  close() {
    try { this.wt.close({ closeCode: 1000, reason: 'bye' }); } catch { /* already closed */ }
    this.finish(1000, 'bye');
  }
  /** Gives up on a path that stopped answering: closed now, not when the network says so. */
  abort(reason) {
    this.finish(1006, reason);
    try { this.wt.close({ closeCode: 1000, reason }); } catch { /* already closed */ }
  }
}

/** WebSocket: one socket, JSON text frames. */
class WsLink {
  constructor(url, onEvent, onClose) {
    this.name = 'websocket';
    this.ws = new WebSocket(url);
    this.closed = false;
    this.onClose = onClose;
    this.ws.onmessage = (m) => { if (!this.closed && typeof m.data === 'string') onEvent(JSON.parse(m.data)); };
    this.ws.onclose = (e) => this.finish(e.code, e.reason);
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error('websocket failed'));
    });
  }
  async send(env) {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) throw new Error('closed');
    this.ws.send(JSON.stringify(env));
  }
  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this, code, reason);
  }
  close() {
    try { this.ws.close(1000, 'bye'); } catch { /* already closed */ }
  }
  /** Gives up on a path that stopped answering: a frozen socket's close would wait for it. */
  abort(reason) {
    this.finish(1006, reason);
    try { this.ws.close(4000, 'no answer'); } catch { /* already closed */ }
  }
}

/**
 * A connection to confab that survives network changes.
 *
 * Events (`addEventListener`; each `detail` is given): `state` {state, transport} on every
 * change of `connectionState`; `open` {transport, established}; `close` {code, reason,
 * willReconnect}; `fallback` {from, to, reason} when WebTransport did not open; `message`
 * {message, sender} (each message once); `message-state` {localId, id, conversationId, state};
 * `receipt` {conversationId, state: 'delivered'|'read', upToSeq, userId?, deliveredCount?,
 * recipientCount?} (the app's own messages up to `upToSeq` are delivered or read: also for
 * messages it loaded from history); `typing` {conversationId, userId, isTyping}; `presence`
 * {userId, online}; `unread` {conversationId, count, lastMessage}; `error` (a ConfabError as
 * `detail.error`); and `event` for every server event as received.
 */
export class ConfabClient extends EventTarget {
  /**
   * @param {object} o
   * @param {() => Promise<string>} o.getToken a fresh token (called at each connect and before expiry)
   * @param {string} [o.webTransportUrl] e.g. `https://chat.example.com:4433/wt`
   * @param {string} [o.webSocketUrl] e.g. `wss://chat.example.com/ws`
   * @param {string|object|Uint8Array} [o.certHash] SHA-256 of a self-signed dev certificate:
   *   hex, or the JSON of `GET /cert-hash`, or its 32 bytes (see normalizeCertHash)
   * @param {'auto'|'webtransport'|'websocket'} [o.transport]
   * @param {number} [o.fallbackMs] how long WebTransport gets before falling back (1500)
   * @param {number} [o.connectTimeoutMs] when `connect()` gives up and rejects (10000)
   * @param {number} [o.heartbeatMs] after this long without hearing the server, ask (10000)
   * @param {number} [o.heartbeatTimeoutMs] no answer within this: the path is dead (5000)
   */
  constructor(o) {
    super();
    this.o = {
      transport: 'auto', fallbackMs: 1500, connectTimeoutMs: 10000, heartbeatMs: 10000, heartbeatTimeoutMs: 5000, ...o,
    };
    this.certHash = o.certHash == null ? null : normalizeCertHash(o.certHash);
    this.link = null;
    this.state = 'idle';
    this.userId = null;
    this.joined = new Set();
    this.lastSeq = new Map(); // conversation -> highest seq seen
    this.seen = new Set(); // message ids already given to the app (the newest SEEN_MAX)
    this.cache = new Map(); // conversation -> messages seen, oldest first (the newest CACHE_MAX)
    this.outbox = new Map(); // local_id -> {conversationId, content, type, metadata, state, id, seq}
    this.reads = new Map(); // conversation -> message id, read marks made offline
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.waiters = new Set(); // connect() calls not settled yet
    this.typingTimers = new Map();
    this.attempt = 0;
    this.nextRequest = 0;
    this.stopped = true;
    this.lastHeard = 0;
    this.probeSentAt = 0;
    this.wtRefused = null; // why WebTransport is not tried any more
    if (typeof window !== 'undefined' && window.addEventListener) {
      this.onOnline = () => this.networkBack();
      this.onOffline = () => this.networkGone();
      window.addEventListener('online', this.onOnline);
      window.addEventListener('offline', this.onOffline);
    }
  }

  /** 'webtransport', 'websocket', or null while not connected. */
  get transport() {
    return this.state === 'open' && this.link ? this.link.name : null;
  }

  /** 'idle', 'connecting', 'open', 'reconnecting', 'offline' (the browser says so) or 'closed'. */
  get connectionState() {
    return this.state;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state, transport: this.transport });
  }

  /**
   * Connects, and keeps the connection up until `close()`. Resolves once open; rejects with a
   * ConfabError when the server refuses the token or the user (4003/4004: no more tries), or
   * when no server answered within `connectTimeoutMs` (CONNECTION_ERROR: it keeps trying, and
   * `open` follows if it gets through).
   */
  connect() {
    if (this.state === 'open') return Promise.resolve();
    const settled = new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new ConfabError('CONNECTION_ERROR', `no answer from the server within ${this.o.connectTimeoutMs} ms`));
      }, this.o.connectTimeoutMs);
      this.waiters.add(w);
    });
    if (this.stopped) {
      this.stopped = false;
      this.attempt = 0;
      this.dial();
    }
    return settled;
  }

  settle(error) {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      if (error) w.reject(error); else w.resolve();
    }
    this.waiters.clear();
  }

  async dial() {
    if (this.stopped || this.dialing) return;
    this.dialing = true;
    try {
      await this.dialOnce();
    } finally {
      this.dialing = false;
    }
  }

  async dialOnce() {
    clearTimeout(this.retryTimer);
    this.setState(this.attempt === 0 && !this.userId ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await this.o.getToken();
    } catch {
      // The app's token source failed: try again later, as for a server that did not answer.
      return this.retry();
    }
    this.token = token;
    const q = `token=${encodeURIComponent(token)}&codec=json`;
    // The app's URL may carry a query of its own (`?dialect=`, `?conversation_id=`).
    const withQuery = (url) => `${url}${url.includes('?') ? '&' : '?'}${q}`;
    const tryWt = this.o.transport !== 'websocket' && this.o.webTransportUrl && typeof WebTransport !== 'undefined'
      && !this.wtRefused;
    const onEvent = (ev) => this.onEvent(ev);
    const onClose = (l, c, r) => this.onClose(l, c, r);
    let opened = null;
    let wtFailure = null;
    if (tryWt) {
      opened = await this.openLink(() => new WtLink(withQuery(this.o.webTransportUrl), this.certHash, onEvent, onClose),
        this.o.fallbackMs);
      if (opened.final) return this.fail(opened.final);
      wtFailure = opened.failure;
      if (wtFailure) opened = null;
    }
    if (!opened && this.o.transport !== 'webtransport' && this.o.webSocketUrl) {
      opened = await this.openLink(() => new WsLink(withQuery(this.o.webSocketUrl), onEvent, onClose),
        this.o.connectTimeoutMs);
      if (opened.final) return this.fail(opened.final);
      if (opened.failure) opened = null;
    }
    if (!opened) return this.retry();
    if (this.stopped) { opened.link.close(); return; }
    this.link = opened.link;
    if (wtFailure) this.fellBack(wtFailure, opened.established);
    this.onOpen(opened.established);
  }

  /**
   * Opens a link and waits for `connection:established`, within `ms`. Returns {link,
   * established}, or {final} for a refusal that ends everything, or {failure}.
   */
  async openLink(make, ms) {
    let link;
    let timer;
    this.openError = null;
    try {
      link = make();
      const established = new Promise((resolve, reject) => {
        this.waitEstablished = resolve;
        link.failOpen = reject;
      });
      // It may fail after the race is lost (the link closing as it is given up): not an error.
      established.catch(() => {});
      const deadline = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('timed out')), ms); });
      const ev = await Promise.race([link.open().then(() => established), deadline]);
      clearTimeout(timer);
      return { link, established: ev };
    } catch (e) {
      clearTimeout(timer);
      this.waitEstablished = null;
      if (link) link.close();
      if (FINAL_CLOSES.has(e.closeCode)) {
        // The server said why before it closed (an `error` event): that is the app's answer.
        const why = this.openError;
        const code = why?.code || FINAL_CLOSES.get(e.closeCode);
        return { final: new ConfabError(code, why?.message || e.reason || code, { closeCode: e.closeCode }) };
      }
      return { failure: e.message || String(e) };
    }
  }

  /** WebTransport did not open, WebSocket did: say so, and say why if the server can tell. */
  fellBack(why, established) {
    const served = established?.data?.certificate_sha256;
    this.emit('fallback', { from: 'webtransport', to: 'websocket', reason: why });
    if (this.certHash && served && served !== this.certHash) {
      // Chromium reports a wrong hash and blocked UDP alike; the server's greeting tells them
      // apart. A wrong hash will not get better: WebTransport is not tried again.
      this.wtRefused = 'certHash does not match the server\'s certificate';
      const err = new ConfabError('CERT_HASH_MISMATCH',
        `certHash ${this.certHash} is not the server's certificate (${served}): using WebSocket`,
        { given: this.certHash, served });
      this.emit('error', { error: err });
    }
  }

  /** A refusal no retry can mend (4003, 4004): stop, say so, reject `connect()`. */
  fail(error) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stopLiveness();
    this.setState('closed');
    this.emit('close', { code: error.details.closeCode, reason: error.message, willReconnect: false });
    this.emit('error', { error });
    this.settle(error);
  }

  onOpen(established) {
    this.userId = established.data.user_id;
    this.attempt = 0;
    this.lastHeard = Date.now();
    this.probeSentAt = 0;
    this.setState('open');
    this.scheduleRefresh();
    this.startLiveness();
    this.emit('open', { transport: this.link.name, established: established.data });
    this.settle(null);
    // Re-join with since_seq so that nothing sent while away is missed, then flush what waited.
    for (const c of this.joined) {
      this.sendJoin(c).catch((e) => this.joinRefused(c, e));
    }
    for (const [c, messageId] of this.reads) this.post('message:read', { conversation_id: c, message_id: messageId }).catch(() => {});
    this.reads.clear();
    for (const [localId, m] of this.outbox) {
      if (m.state === 'sending') this.sendQueued(localId, m);
    }
  }

  onClose(link, code, reason) {
    if (link !== this.link) {
      // A link still opening (or one given up on): its opener hears about it.
      if (link.failOpen) link.failOpen(Object.assign(new Error(`closed ${code}`), { closeCode: code, reason }));
      return;
    }
    this.link = null;
    this.stopLiveness();
    clearTimeout(this.refreshTimer);
    for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new ConfabError('CONNECTION_ERROR', 'disconnected')); }
    this.pending.clear();
    if (FINAL_CLOSES.has(code)) {
      const e = this.openError;
      return this.fail(new ConfabError(e?.code || FINAL_CLOSES.get(code), reason || e?.message, { closeCode: code }));
    }
    const final = this.stopped;
    if (final) this.setState('closed');
    this.emit('close', { code, reason, willReconnect: !final });
    if (!final) this.retry();
  }

  retry() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    // Offline, a try cannot succeed: wait for the browser's `online` instead.
    if (typeof navigator !== 'undefined' && navigator.onLine === false) {
      this.setState('offline');
      return;
    }
    this.setState('reconnecting');
    // 1 s doubling to 30 s, with full jitter so that a restarted server is not stampeded.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    const wait = ceiling / 2 + Math.random() * (ceiling / 2);
    this.retryTimer = setTimeout(() => this.dial(), wait);
  }

  /** The browser lost its network: stop trying; an open link must prove it still works. */
  networkGone() {
    if (this.stopped) return;
    if (this.state === 'open') this.probe();
    else { clearTimeout(this.retryTimer); this.setState('offline'); }
  }

  /** The network is back: try at once rather than wait out the backoff. */
  networkBack() {
    if (this.stopped) return;
    if (this.state === 'open') { this.probe(); return; }
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    this.dial();
  }

  /** Ends the connection for good. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    this.stopLiveness();
    if (typeof window !== 'undefined' && this.onOnline) {
      window.removeEventListener('online', this.onOnline);
      window.removeEventListener('offline', this.onOffline);
    }
    if (this.link) this.link.close();
    this.setState('closed');
    this.settle(new ConfabError('CONNECTION_ERROR', 'closed by the app'));
  }

  // ---- liveness: the client's own heartbeats, with a deadline on the answer ----

  startLiveness() {
    this.stopLiveness();
    const tick = Math.max(250, Math.min(this.o.heartbeatMs, this.o.heartbeatTimeoutMs) / 2);
    this.livenessTimer = setInterval(() => this.checkLiveness(), tick);
  }

  stopLiveness() {
    clearInterval(this.livenessTimer);
    this.probeSentAt = 0;
  }

  checkLiveness() {
    if (!this.link || this.state !== 'open') return;
    const now = Date.now();
    if (this.probeSentAt && this.lastHeard < this.probeSentAt && now - this.probeSentAt > this.o.heartbeatTimeoutMs) {
      // Nothing at all since we asked: the path is dead, whatever the socket says.
      this.link.abort(`no answer to a heartbeat within ${this.o.heartbeatTimeoutMs} ms`);
    } else if (!this.probeSentAt && now - this.lastHeard > this.o.heartbeatMs) {
      this.probe();
    }
  }

  /** Asks the server for a sign of life now. */
  probe() {
    if (!this.link || this.probeSentAt) return;
    this.probeSentAt = Date.now();
    this.link.send(this.envelope('heartbeat', { timestamp: new Date().toISOString() })).catch(() => {});
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    // A minute before expiry, or at 80% of the life of a token shorter than two minutes.
    const life = exp - Date.now();
    const at = Math.max(500, life > 120000 ? life - 60000 : life * 0.8);
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await this.o.getToken();
        await this.request('auth:refresh', { token });
        this.token = token;
        this.scheduleRefresh();
      } catch (e) {
        this.emit('error', { error: e instanceof ConfabError ? e : new ConfabError('TOKEN_EXPIRED', e.message) });
      }
    }, at);
  }

  onEvent(ev) {
    this.lastHeard = Date.now();
    this.probeSentAt = 0;
    this.emit('event', ev);
    const d = ev.data || {};
    const p = ev.request_id && this.pending.get(ev.request_id);
    if (ev.type === 'connection:established') {
      if (this.waitEstablished) { this.waitEstablished(ev); this.waitEstablished = null; }
      return;
    }
    if (ev.type === 'error') {
      const err = new ConfabError(d.code, d.message, d.details || {});
      // Before a refusal's close: the reason the app will be given.
      if (this.state !== 'open') this.openError = err;
      const pend = d.request_id && this.pending.get(d.request_id);
      if (pend) { this.pending.delete(d.request_id); clearTimeout(pend.timer); pend.reject(err); }
      this.emit('error', { error: err, requestId: d.request_id });
      return;
    }
    if (p) { this.pending.delete(ev.request_id); clearTimeout(p.timer); p.resolve(ev); }
    switch (ev.type) {
      case 'message:new': this.deliver(d.message, d.sender); break;
      case 'message:sent': {
        this.noteSeq(d.conversation_id, d.seq);
        this.keep(d);
        const entry = d.local_id && this.outbox.get(d.local_id);
        if (entry) {
          entry.id = d.id;
          entry.seq = d.seq;
          this.setMessageState(d.local_id, entry, 'sent');
        }
        this.remember(d.id);
        break;
      }
      case 'message:delivered':
        this.receipt(d.conversation_id, 'delivered', d.seq ?? this.seqOf(d.message_id), {
          userId: d.user_id, deliveredCount: d.delivered_count, recipientCount: d.recipient_count,
        });
        break;
      case 'message:viewed':
        if (d.user_id !== this.userId) this.receipt(d.conversation_id, 'read', d.seq ?? this.seqOf(d.message_id), { userId: d.user_id });
        break;
      case 'typing:indicator':
        this.emit('typing', { conversationId: d.conversation_id, userId: d.user_id, isTyping: d.is_typing });
        break;
      case 'user:online': this.emit('presence', { userId: d.user_id, online: true }); break;
      case 'user:offline': this.emit('presence', { userId: d.user_id, online: false, lastSeen: d.last_seen }); break;
      case 'conversation:unread':
        this.emit('unread', { conversationId: d.conversation_id, count: d.unread_count, lastMessage: d.last_message });
        break;
      case 'conversation:joined':
        if (d.last_seq != null && !this.lastSeq.has(d.conversation_id)) this.lastSeq.set(d.conversation_id, 0);
        // What the others have had and read, whatever receipts were missed while away.
        if (d.others_delivered_seq) this.receipt(d.conversation_id, 'delivered', d.others_delivered_seq, {});
        if (d.others_read_seq) this.receipt(d.conversation_id, 'read', d.others_read_seq, {});
        break;
      default: break;
    }
  }

  noteSeq(c, seq) {
    if (typeof seq === 'number' && seq > (this.lastSeq.get(c) || 0)) this.lastSeq.set(c, seq);
  }

  deliver(message, sender) {
    if (!message) return;
    this.noteSeq(message.conversation_id, message.seq);
    if (this.seen.has(message.id)) return;
    this.remember(message.id);
    this.keep(message);
    this.emit('message', { message, sender });
  }

  /** Keeps a message for history() while offline: the newest CACHE_MAX per conversation. */
  keep(m) {
    if (!m || typeof m.seq !== 'number') return;
    const list = this.cache.get(m.conversation_id) || [];
    if (list.some((x) => x.id === m.id)) return;
    list.push(m);
    list.sort((a, b) => a.seq - b.seq);
    if (list.length > CACHE_MAX) list.splice(0, list.length - CACHE_MAX);
    this.cache.set(m.conversation_id, list);
  }

  /** Remembers a message id for deduplication; a Set keeps insertion order, so the oldest go
   * first once there are SEEN_MAX (a repeat is only ever of a recent message: a replay after
   * a reconnect starts at the last seq seen). */
  remember(id) {
    this.seen.add(id);
    if (this.seen.size > SEEN_MAX) {
      for (const old of this.seen) {
        this.seen.delete(old);
        if (this.seen.size <= SEEN_MAX) break;
      }
    }
  }

  seqOf(messageId) {
    for (const [, e] of this.outbox) if (e.id === messageId) return e.seq;
    return undefined;
  }

  setMessageState(localId, entry, state) {
    const order = ['sending', 'sent', 'delivered', 'read'];
    if (entry.state === 'failed' || order.indexOf(state) <= order.indexOf(entry.state)) return;
    entry.state = state;
    this.emit('message-state', { localId, id: entry.id, conversationId: entry.conversationId, state });
    // Read is final: nothing more will happen to it, so the outbox does not grow with the chat.
    if (state === 'read') this.outbox.delete(localId);
  }

  /** A receipt is a watermark: every own message of the conversation up to `upToSeq`. */
  receipt(conversationId, state, upToSeq, extra) {
    if (typeof upToSeq !== 'number') return;
    for (const [localId, e] of [...this.outbox]) {
      if (e.conversationId === conversationId && e.seq != null && e.seq <= upToSeq) this.setMessageState(localId, e, state);
    }
    this.emit('receipt', { conversationId, state, upToSeq, ...extra });
  }

  envelope(type, data) {
    this.nextRequest += 1;
    return { type, data, message_id: `js_${Date.now().toString(36)}_${this.nextRequest}` };
  }

  /** Sends and waits for the answer carrying our request id (or its error). */
  request(type, data) {
    if (!this.link || this.state !== 'open') return Promise.reject(new ConfabError('CONNECTION_ERROR', 'not connected'));
    const env = this.envelope(type, data);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(env.message_id);
        reject(new ConfabError('CONNECTION_ERROR', `no answer to ${type}`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(env.message_id, { resolve, reject, timer });
      this.link.send(env).catch((e) => { clearTimeout(timer); this.pending.delete(env.message_id); reject(e); });
    });
  }

  /** Sends without an answer; rejects (CONNECTION_ERROR) when not connected. */
  post(type, data) {
    if (!this.link || this.state !== 'open') {
      return Promise.reject(new ConfabError('CONNECTION_ERROR', `not connected: ${type} not sent`));
    }
    return this.link.send(this.envelope(type, data)).catch(() => {
      throw new ConfabError('CONNECTION_ERROR', `${type} not sent: the connection closed`);
    });
  }

  sendJoin(conversationId) {
    const since = this.lastSeq.get(conversationId);
    const data = { conversation_id: conversationId };
    if (since != null) data.since_seq = since;
    return this.request('conversation:join', data);
  }

  /** A join the server refused for good is not made again after a reconnect. */
  joinRefused(conversationId, e) {
    if (FINAL_JOIN_ERRORS.includes(e?.code)) this.joined.delete(conversationId);
  }

  /** Joins a conversation (and re-joins it after every reconnect, with `since_seq`, unless
   * the server refused it: FORBIDDEN, CONVERSATION_NOT_FOUND). */
  async join(conversationId) {
    this.joined.add(conversationId);
    if (this.state !== 'open') return null;
    try {
      return await this.sendJoin(conversationId);
    } catch (e) {
      this.joinRefused(conversationId, e);
      throw e;
    }
  }

  async leave(conversationId) {
    this.joined.delete(conversationId);
    if (this.state === 'open') return this.request('conversation:leave', { conversation_id: conversationId });
    return null;
  }

  /**
   * Sends a message. Returns its local id at once; its state goes sending -> sent -> delivered
   * -> read (or failed) through `message-state` events. Queued while offline, and kept while
   * the server cannot store (SERVICE_UNAVAILABLE: sent again after `retry_after`).
   */
  send(conversationId, content, { type = 'text', metadata } = {}) {
    const localId = `l_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 10)}`;
    const entry = { conversationId, content, type, metadata, state: 'sending', id: null, seq: null };
    this.outbox.set(localId, entry);
    this.emit('message-state', { localId, id: null, conversationId, state: 'sending' });
    this.stopTyping(conversationId);
    if (this.state === 'open') this.sendQueued(localId, entry);
    return localId;
  }

  sendQueued(localId, entry) {
    const data = { conversation_id: entry.conversationId, content: entry.content, type: entry.type, local_id: localId };
    if (entry.metadata) data.metadata = entry.metadata;
    this.request('message:send', data).then(
      (ev) => { entry.seq = ev.data.seq; },
      (err) => {
        // Disconnected: it stays queued and is resent (same local_id) on reconnect.
        if (err.code === 'CONNECTION_ERROR') return;
        if (err.code === 'SERVICE_UNAVAILABLE') {
          const wait = 1000 * (Number(err.details?.retry_after) || 5);
          setTimeout(() => { if (this.state === 'open' && entry.state === 'sending') this.sendQueued(localId, entry); }, wait);
          return;
        }
        entry.error = err;
        entry.state = 'failed';
        this.emit('message-state', { localId, id: null, conversationId: entry.conversationId, state: 'failed', error: err });
      },
    );
  }

  /** Tells the others we read up to `messageId`; made offline, it is sent on reconnect (the
   * newest per conversation). */
  markRead(conversationId, messageId) {
    if (this.state === 'open') {
      return this.post('message:read', { conversation_id: conversationId, message_id: messageId }).catch(() => {
        this.reads.set(conversationId, messageId);
      });
    }
    this.reads.set(conversationId, messageId);
    return Promise.resolve();
  }

  /** Call on every keystroke: sends `typing:start` once, and `typing:stop` after 3 s idle.
   * Offline it rejects (CONNECTION_ERROR): a typing indicator is news only now. */
  typing(conversationId) {
    if (this.state !== 'open') {
      return Promise.reject(new ConfabError('CONNECTION_ERROR', 'not connected: typing indicators are not queued'));
    }
    const sent = this.typingTimers.has(conversationId) ? Promise.resolve()
      : this.post('typing:start', { conversation_id: conversationId });
    clearTimeout(this.typingTimers.get(conversationId));
    this.typingTimers.set(conversationId, setTimeout(() => this.stopTyping(conversationId), TYPING_IDLE_MS));
    return sent;
  }

  stopTyping(conversationId) {
    if (!this.typingTimers.has(conversationId)) return;
    clearTimeout(this.typingTimers.get(conversationId));
    this.typingTimers.delete(conversationId);
    // Offline there is nothing to stop: the server clears a typing state when the connection ends.
    if (this.state === 'open') this.post('typing:stop', { conversation_id: conversationId }).catch(() => {});
  }

  /**
   * A page of history, oldest first: `{messages, has_more}`. Offline it is served from the
   * messages this client has seen (`offline: true`), or rejects (CONNECTION_ERROR) when it has
   * none of that conversation.
   */
  history(conversationId, { beforeSeq, limit = 50 } = {}) {
    if (this.state !== 'open') {
      const kept = (this.cache.get(conversationId) || []).filter((m) => beforeSeq == null || m.seq < beforeSeq);
      if (!kept.length) {
        return Promise.reject(new ConfabError('CONNECTION_ERROR', 'not connected, and no messages of this conversation are kept'));
      }
      const messages = kept.slice(-limit);
      const hasMore = kept.length > messages.length || messages[0].seq > 1;
      return Promise.resolve({ conversation_id: conversationId, messages, has_more: hasMore, offline: true });
    }
    const data = { conversation_id: conversationId };
    if (beforeSeq != null) data.before_seq = beforeSeq;
    if (limit != null) data.limit = limit;
    return this.request('history:get', data).then((ev) => {
      for (const m of ev.data.messages) { this.noteSeq(conversationId, m.seq); this.remember(m.id); this.keep(m); }
      return ev.data;
    });
  }

  setStatus(status, statusMessage) {
    return this.request('status:update', { status, status_message: statusMessage });
  }

  /** Rejects (CONNECTION_ERROR) when not connected. */
  sendEphemeralPhoto(conversationId, photoUrl, expiresIn) {
    return this.post('ephemeral_photo:send', { conversation_id: conversationId, photo_url: photoUrl, expires_in: expiresIn });
  }

  viewEphemeralPhoto(photoId) {
    return this.request('ephemeral_photo:view', { photo_id: photoId }).then((ev) => ev.data);
  }
}
