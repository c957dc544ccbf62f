// confab browser client: one dependency-free ES module.
//
// WebTransport first (a control stream, one stream per joined conversation, length-prefixed
// JSON frames), WebSocket (`/ws`, JSON) when WebTransport is missing or does not open within
// `fallbackMs`. The app sees the same events and API either way. Reconnects with exponential
// backoff and jitter, re-joins with `since_seq`, deduplicates by message id, queues sends while
// offline (with `local_id`, which the server deduplicates), refreshes the token before it
// expires, and debounces typing. Protocol: docs/protocol.md (§10 WebSocket, §10b WebTransport).

/** Every error code the server sends (docs/protocol.md §6). */
export const ERROR_CODES = [
  'VALIDATION_ERROR', 'UNAUTHORIZED', 'TOKEN_EXPIRED', 'TOKEN_INVALID', 'FORBIDDEN', 'NOT_FOUND',
  'CONVERSATION_NOT_FOUND', 'MESSAGE_NOT_FOUND', 'USER_NOT_FOUND', 'PERMISSION_DENIED',
  'RATE_LIMITED', 'MESSAGE_TOO_LARGE', 'INVALID_MESSAGE_TYPE', 'CONVERSATION_FULL',
  'CONNECTION_ERROR', 'INTERNAL_ERROR',
];

/** A refusal from the server: `code` is one of ERROR_CODES. */
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
      if (r.done) break;
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
}

/** WebSocket: one socket, JSON text frames. */
class WsLink {
  constructor(url, onEvent, onClose) {
    this.name = 'websocket';
    this.ws = new WebSocket(url);
    this.closed = false;
    this.ws.onmessage = (m) => { if (typeof m.data === 'string') onEvent(JSON.parse(m.data)); };
    this.ws.onclose = (e) => { if (!this.closed) { this.closed = true; onClose(this, e.code, e.reason); } };
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error('websocket failed'));
    });
  }
  async send(env) {
    if (this.ws.readyState !== WebSocket.OPEN) throw new Error('closed');
    this.ws.send(JSON.stringify(env));
  }
  close() {
    try { this.ws.close(1000, 'bye'); } catch { /* already closed */ }
  }
}

/**
 * A connection to confab that survives network changes.
 *
 * Events (`addEventListener`; each `detail` is given): `open` {transport}, `close` {code,
 * reason, willReconnect}, `message` {message, sender} (each message once), `message-state`
 * {localId, id, conversationId, state}, `typing` {conversationId, userId, isTyping},
 * `presence` {userId, online}, `unread` {conversationId, count, lastMessage}, `error`
 * (a ConfabError as `detail.error`), and `event` for every server event as received.
 */
export class ConfabClient extends EventTarget {
  /**
   * @param {object} o
   * @param {() => Promise<string>} o.getToken a fresh token (called at each connect and before expiry)
   * @param {string} [o.webTransportUrl] e.g. `https://chat.example.com:4433/wt`
   * @param {string} [o.webSocketUrl] e.g. `wss://chat.example.com/ws`
   * @param {string} [o.certHash] SHA-256 (hex) of a self-signed dev certificate
   * @param {'auto'|'webtransport'|'websocket'} [o.transport]
   * @param {number} [o.fallbackMs] how long WebTransport gets before falling back
   */
  constructor(o) {
    super();
    this.o = { transport: 'auto', fallbackMs: 1500, ...o };
    this.link = null;
    this.state = 'idle';
    this.userId = null;
    this.joined = new Set();
    this.lastSeq = new Map(); // conversation -> highest seq seen
    this.seen = new Set(); // message ids already given to the app (the newest SEEN_MAX)
    this.outbox = new Map(); // local_id -> {conversationId, content, type, metadata, state, id}
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.typingTimers = new Map();
    this.attempt = 0;
    this.nextRequest = 0;
    this.stopped = false;
  }

  /** 'webtransport', 'websocket', or null while disconnected. */
  get transport() {
    return this.state === 'open' && this.link ? this.link.name : null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Connects (and keeps reconnecting until `close()`). Resolves once open. */
  connect() {
    this.stopped = false;
    return new Promise((resolve) => {
      const onOpen = () => { this.removeEventListener('open', onOpen); resolve(); };
      this.addEventListener('open', onOpen);
      this.dial();
    });
  }

  async dial() {
    if (this.stopped) return;
    this.state = 'connecting';
    let token;
    try {
      token = await this.o.getToken();
    } catch (e) {
      return this.retry(`token: ${e.message}`);
    }
    this.token = token;
    const q = `token=${encodeURIComponent(token)}&codec=json`;
    const tryWt = this.o.transport !== 'websocket' && this.o.webTransportUrl && typeof WebTransport !== 'undefined';
    const onEvent = (ev) => this.onEvent(ev);
    const onClose = (l, c, r) => this.onClose(l, c, r);
    let opened = null;
    if (tryWt) {
      opened = await this.openLink(() => new WtLink(`${this.o.webTransportUrl}?${q}`, this.o.certHash, onEvent, onClose),
        this.o.fallbackMs);
    }
    if (!opened && this.o.transport !== 'webtransport') {
      opened = await this.openLink(() => new WsLink(`${this.o.webSocketUrl}?${q}`, onEvent, onClose), 10000);
    }
    if (!opened) return this.retry();
    if (this.stopped) { opened.link.close(); return; }
    this.link = opened.link;
    this.onOpen(opened.established);
  }

  /** Opens a link and waits for `connection:established`, within `ms`. */
  async openLink(make, ms) {
    let link;
    let timer;
    try {
      link = make();
      const established = new Promise((resolve, reject) => {
        this.waitEstablished = resolve;
        link.failOpen = reject;
      });
      // It may fail after the race is lost (the link closing as it is given up): not an error.
      established.catch(() => {});
      const deadline = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('timeout')), ms); });
      const ev = await Promise.race([link.open().then(() => established), deadline]);
      clearTimeout(timer);
      return { link, established: ev };
    } catch {
      clearTimeout(timer);
      this.waitEstablished = null;
      if (link) link.close();
      return null;
    }
  }

  async onOpen(established) {
    this.userId = established.data.user_id;
    this.state = 'open';
    this.attempt = 0;
    this.scheduleRefresh();
    this.emit('open', { transport: this.link.name, established: established.data });
    // Re-join with since_seq so that nothing sent while away is missed, then flush the outbox.
    for (const c of this.joined) this.sendJoin(c).catch(() => {});
    for (const [localId, m] of this.outbox) {
      if (m.state === 'sending') this.sendQueued(localId, m);
    }
  }

  onClose(link, code, reason) {
    if (link !== this.link) {
      // A link still opening (or one given up on): its opener hears about it.
      if (link.failOpen) link.failOpen(new Error(`closed ${code}`));
      return;
    }
    this.link = null;
    this.state = 'closed';
    clearTimeout(this.refreshTimer);
    for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new ConfabError('CONNECTION_ERROR', 'disconnected')); }
    this.pending.clear();
    // 4003 (unauthorized) and 4004 (access denied) are final; everything else reconnects.
    const final = this.stopped || code === 4003 || code === 4004;
    this.emit('close', { code, reason, willReconnect: !final });
    if (!final) this.retry(reason);
  }

  retry() {
    if (this.stopped) return;
    this.state = 'reconnecting';
    // 1 s doubling to 30 s, with full jitter so that a restarted server is not stampeded.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    const wait = ceiling / 2 + Math.random() * (ceiling / 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.dial(), wait);
  }

  /** Ends the connection for good. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    if (this.link) this.link.close();
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
    this.emit('event', ev);
    const d = ev.data || {};
    const p = ev.request_id && this.pending.get(ev.request_id);
    if (ev.type === 'connection:established') {
      if (this.waitEstablished) { this.waitEstablished(ev); this.waitEstablished = null; }
      return;
    }
    if (ev.type === 'error') {
      const err = new ConfabError(d.code, d.message, d.details || {});
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
        const entry = d.local_id && this.outbox.get(d.local_id);
        if (entry) {
          entry.id = d.id;
          this.setState(d.local_id, entry, 'sent');
        }
        this.remember(d.id);
        break;
      }
      case 'message:delivered': this.markOwn(d.message_id, 'delivered'); break;
      case 'message:viewed': if (d.user_id !== this.userId) this.markOwn(d.message_id, 'read', d.conversation_id); break;
      case 'typing:indicator':
        this.emit('typing', { conversationId: d.conversation_id, userId: d.user_id, isTyping: d.is_typing });
        break;
      case 'user:online': this.emit('presence', { userId: d.user_id, online: true }); break;
      case 'user:offline': this.emit('presence', { userId: d.user_id, online: false, lastSeen: d.last_seen }); break;
      case 'conversation:unread':
        this.emit('unread', { conversationId: d.conversation_id, count: d.unread_count, lastMessage: d.last_message });
        break;
      case 'conversation:joined': if (d.last_seq != null && !this.lastSeq.has(d.conversation_id)) this.lastSeq.set(d.conversation_id, 0); break;
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
    this.emit('message', { message, sender });
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

  setState(localId, entry, state) {
    const order = ['sending', 'sent', 'delivered', 'read'];
    if (entry.state === 'failed' || order.indexOf(state) <= order.indexOf(entry.state)) return;
    entry.state = state;
    this.emit('message-state', { localId, id: entry.id, conversationId: entry.conversationId, state });
    // Read is final: nothing more will happen to it, so the outbox does not grow with the chat.
    if (state === 'read') this.outbox.delete(localId);
  }

  /** A receipt for one of our messages: that message (and, for `read`, every earlier one). */
  markOwn(messageId, state, conversationId) {
    let target = null;
    for (const [, e] of this.outbox) if (e.id === messageId) target = e;
    for (const [localId, e] of this.outbox) {
      if (e.id === messageId) this.setState(localId, e, state);
      else if (state === 'read' && target && e.id && e.conversationId === (conversationId || target.conversationId)
        && e.seq != null && target.seq != null && e.seq < target.seq) this.setState(localId, e, state);
    }
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

  /** Fire and forget (typing, read receipts). Dropped while offline. */
  post(type, data) {
    if (this.link && this.state === 'open') this.link.send(this.envelope(type, data)).catch(() => {});
  }

  sendJoin(conversationId) {
    const since = this.lastSeq.get(conversationId);
    const data = { conversation_id: conversationId };
    if (since != null) data.since_seq = since;
    return this.request('conversation:join', data);
  }

  /** Joins a conversation (and re-joins it after every reconnect, with `since_seq`). */
  async join(conversationId) {
    this.joined.add(conversationId);
    if (this.state === 'open') return this.sendJoin(conversationId);
    return null;
  }

  async leave(conversationId) {
    this.joined.delete(conversationId);
    if (this.state === 'open') return this.request('conversation:leave', { conversation_id: conversationId });
    return null;
  }

  /**
   * Sends a message. Returns its local id at once; its state goes sending -> sent -> delivered
   * -> read (or failed) through `message-state` events. Queued while offline.
   */
  send(conversationId, content, { type = 'text', metadata } = {}) {
    const localId = `l_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 10)}`;
    const entry = { conversationId, content, type, metadata, state: 'sending', id: null };
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
        entry.error = err;
        entry.state = 'failed';
        this.emit('message-state', { localId, id: null, conversationId: entry.conversationId, state: 'failed', error: err });
      },
    );
  }

  /** Tells the others we read up to `messageId`. */
  markRead(conversationId, messageId) {
    this.post('message:read', { conversation_id: conversationId, message_id: messageId });
  }

  /** Call on every keystroke: sends `typing:start` once, and `typing:stop` after 3 s idle. */
  typing(conversationId) {
    if (!this.typingTimers.has(conversationId)) this.post('typing:start', { conversation_id: conversationId });
    clearTimeout(this.typingTimers.get(conversationId));
    this.typingTimers.set(conversationId, setTimeout(() => this.stopTyping(conversationId), TYPING_IDLE_MS));
  }

  stopTyping(conversationId) {
    if (!this.typingTimers.has(conversationId)) return;
    clearTimeout(this.typingTimers.get(conversationId));
    this.typingTimers.delete(conversationId);
    this.post('typing:stop', { conversation_id: conversationId });
  }

  history(conversationId, { beforeSeq, limit } = {}) {
    const data = { conversation_id: conversationId };
    if (beforeSeq != null) data.before_seq = beforeSeq;
    if (limit != null) data.limit = limit;
    return this.request('history:get', data).then((ev) => {
      for (const m of ev.data.messages) { this.noteSeq(conversationId, m.seq); this.remember(m.id); }
      return ev.data;
    });
  }

  setStatus(status, statusMessage) {
    return this.request('status:update', { status, status_message: statusMessage });
  }

  sendEphemeralPhoto(conversationId, photoUrl, expiresIn) {
    this.post('ephemeral_photo:send', { conversation_id: conversationId, photo_url: photoUrl, expires_in: expiresIn });
  }

  viewEphemeralPhoto(photoId) {
    return this.request('ephemeral_photo:view', { photo_id: photoId }).then((ev) => ev.data);
  }
}
