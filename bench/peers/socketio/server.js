// The Socket.IO relay confab-bench compares confab with: a chat relay written the way a
// Socket.IO user writes one (JWT in the handshake's auth, a room per conversation, `send` with
// an acknowledgement, the message broadcast to the room's other members).
//
//   node server.js --secret S [--store memory|sqlite:PATH]
//
// Listens on 127.0.0.1 on a free port, prints `READY port=N`, exits when stdin closes.
// With `--store sqlite:PATH` each message is inserted (WAL, synchronous=FULL: an fsync per
// commit) before it is broadcast and acknowledged, as confab's `--sync full` does.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const jwt = require('jsonwebtoken');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const secret = arg('--secret');
const store = arg('--store', 'memory');
if (!secret) {
  console.error('socketio peer: --secret is required');
  process.exit(2);
}

let insert = null;
if (store.startsWith('sqlite:')) {
  const Database = require('better-sqlite3');
  const db = new Database(store.slice('sqlite:'.length));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec(`CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL)`);
  const stmt = db.prepare(
    'INSERT INTO messages (id, conversation_id, seq, sender_id, content, created_at) VALUES (?, ?, ?, ?, ?, ?)');
  insert = (m) => stmt.run(m.id, m.conversationId, m.seq, m.senderId, m.content, m.createdAt);
} else if (store !== 'memory') {
  console.error(`socketio peer: unknown --store ${store}`);
  process.exit(2);
}

const server = http.createServer();
// Pings every two minutes: the benchmark's clients only read, and a scenario is shorter.
const io = new Server(server, { transports: ['websocket'], pingInterval: 120000, pingTimeout: 60000 });

io.use((socket, next) => {
  try {
    const claims = jwt.verify(socket.handshake.auth.token, secret, { algorithms: ['HS256'] });
    socket.data.userId = String(claims.sub);
    next();
  } catch (e) {
    next(new Error('unauthorized'));
  }
});

const seqs = new Map();
let counter = 0;

io.on('connection', (socket) => {
  socket.on('join', (conversationId, ack) => {
    if (typeof conversationId !== 'string' || conversationId.length === 0) {
      if (typeof ack === 'function') ack({ error: 'bad conversation id' });
      return;
    }
    socket.join(conversationId);
    if (typeof ack === 'function') ack({ ok: true });
  });
  socket.on('send', (body, ack) => {
    if (!body || typeof body.conversationId !== 'string' || typeof body.content !== 'string') {
      if (typeof ack === 'function') ack({ error: 'bad message' });
      return;
    }
    if (!socket.rooms.has(body.conversationId)) {
      if (typeof ack === 'function') ack({ error: 'not joined' });
      return;
    }
    const seq = (seqs.get(body.conversationId) || 0) + 1;
    seqs.set(body.conversationId, seq);
    counter += 1;
    const message = {
      id: `m${Date.now().toString(36)}${counter.toString(36)}`,
      conversationId: body.conversationId,
      seq,
      senderId: socket.data.userId,
      content: body.content,
      createdAt: new Date().toISOString(),
    };
    if (insert) insert(message);
    socket.to(body.conversationId).emit('message', message);
    if (typeof ack === 'function') ack({ id: message.id, seq });
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`READY port=${server.address().port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
