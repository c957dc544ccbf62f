// The demo page and the browser client in headless Chromium, driven by tests/interop.rs.
//
// Alice (WebTransport) and Bob (forced onto WebSocket) open the demo page served by confab at
// http://localhost:PORT/, in two browser contexts, and chat: presence, typing, messages both
// ways, read ticks, an ephemeral photo. Then the server is restarted under them (the Rust test
// does it when this script prints RESTART, and answers RESTARTED on stdin): both clients
// reconnect, messages sent meanwhile are delivered, and both pages end with every message
// exactly once, in order. A screenshot of Alice's page is saved to SCREENSHOT.
//
// Usage: node demo_chat.mjs HTTP_PORT SCREENSHOT

import { check, driver, run } from './browser.mjs';

const [port, screenshot] = process.argv.slice(2);
const base = `http://localhost:${port}`;
const conv = 'demo-alice-bob';
const T = { timeout: 10000 };
const test = driver();

await run(async (browser) => {
  const open = async (user, extra = '') => {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => console.log(`${user} page error: ${e.message}`));
    await page.goto(`${base}/?user=${user}&conversation=${conv}${extra}`);
    return page;
  };
  const alice = await open('alice');
  const bob = await open('bob', '&transport=websocket');
  await alice.waitForSelector('#transport[data-transport="webtransport"]', T);
  await bob.waitForSelector('#transport[data-transport="websocket"]', T);
  check((await alice.textContent('#transport')) === 'WebTransport', 'alice badge');
  check((await bob.textContent('#transport')) === 'WebSocket', 'bob badge');
  console.log('transports: ok (alice WebTransport, bob WebSocket)');

  // Presence: each sees the other online.
  await alice.waitForSelector('.conv .dot[data-user="bob"].online', T);
  await bob.waitForSelector('.conv .dot[data-user="alice"].online', T);
  console.log('presence: ok');

  // Typing, then the message, its delivery and read ticks.
  await alice.waitForSelector('#text:not([disabled])', T);
  await bob.waitForSelector('#text:not([disabled])', T);
  await alice.type('#text', 'Hi Bob', { delay: 30 });
  await bob.waitForFunction(() => document.querySelector('#typing').textContent.includes('alice is typing'), null, T);
  console.log('typing: ok');
  await alice.press('#text', 'Enter');
  await bob.waitForFunction(() => [...document.querySelectorAll('.bubble.theirs .text')].some((e) => e.textContent === 'Hi Bob'), null, T);
  await alice.waitForSelector('.bubble.mine .tick[data-state="read"]', T);
  await bob.waitForFunction(() => document.querySelector('#typing').textContent === '', null, T);
  await bob.fill('#text', 'Hey Alice! Over WebSocket here.');
  await bob.press('#text', 'Enter');
  await alice.waitForFunction(() => [...document.querySelectorAll('.bubble.theirs .text')].some((e) => e.textContent.startsWith('Hey Alice!')), null, T);
  await bob.waitForSelector('.bubble.mine .tick[data-state="read"]', T);
  console.log('messages and read ticks: ok');

  // A reload: the history reads oldest first, Alice's own message keeps its read tick (the
  // server's watermarks at the join), and every presence dot of Bob agrees.
  await alice.reload();
  await alice.waitForSelector('#transport[data-transport="webtransport"]', T);
  await alice.waitForFunction(() => document.querySelectorAll('.bubble .text').length >= 2, null, T);
  const order = await alice.evaluate(() => [...document.querySelectorAll('.bubble .text')].map((e) => e.textContent));
  check(order[0] === 'Hi Bob' && order[1].startsWith('Hey Alice!'), `history after a reload: ${JSON.stringify(order)}`);
  await alice.waitForSelector('.bubble.mine .tick[data-state="read"]', T);
  await alice.waitForFunction(() => {
    const dots = [...document.querySelectorAll('.dot[data-user="bob"]')];
    return dots.length >= 2 && dots.every((d) => d.classList.contains('online'));
  }, null, T);
  console.log('reload: ok (oldest first, ticks kept, header and sidebar dots agree)');

  // An ephemeral photo: Bob views it and sees its countdown.
  await alice.click('#photo');
  await bob.waitForSelector('.bubble.photo button', T);
  await bob.click('.bubble.photo button');
  await bob.waitForSelector('.bubble.photo img', T);
  await bob.waitForFunction(() => /\d+s/.test(document.querySelector('.countdown')?.textContent || ''), null, T);
  console.log('ephemeral photo: ok');

  // Carol's browser cannot reach WebTransport (a closed UDP port): the client falls back to
  // WebSocket within its 1.5 s budget. Her tokens live 3 s: the client refreshes them
  // (auth:refresh) and the connection outlives them.
  const carol = await open('carol', '&wt_port=9&ttl=3');
  await carol.waitForSelector('#transport[data-transport="websocket"]', T);
  const took = await carol.evaluate(() => window.demo.openedAt - window.demo.startedAt);
  check(took < 4000, `fallback took ${took} ms`);
  console.log(`fallback: ok (WebSocket after ${Math.round(took)} ms)`);
  await new Promise((r) => setTimeout(r, 5000));
  const carolState = await carol.evaluate(() => ({
    closes: window.demo.closes.length,
    refreshed: window.demo.events.filter((e) => e.type === 'connection:authenticated').length,
    transport: window.demo.client.transport,
  }));
  check(carolState.closes === 0 && carolState.refreshed >= 1 && carolState.transport === 'websocket',
    `token refresh: ${JSON.stringify(carolState)}`);
  console.log(`token refresh: ok (${carolState.refreshed} refreshes, no disconnect)`);
  await carol.close();

  // The events behind the page: one message:new per message, with the right fields.
  const news = await bob.evaluate(() => window.demo.events.filter((e) => e.type === 'message:new').map((e) => e.data.message));
  check(news.filter((m) => m.content === 'Hi Bob' && m.sender_id === 'alice').length === 1, 'bob got Hi Bob once');

  // The screenshot: Alice's page while Bob types.
  await bob.type('#text', 'Nice photo', { delay: 30 });
  await alice.waitForFunction(() => document.querySelector('#typing').textContent.includes('bob is typing'), null, T);
  await alice.screenshot({ path: screenshot });
  await bob.fill('#text', '');

  // The server goes away and comes back; meanwhile both send.
  const restarted = test.ask('RESTART');
  await alice.waitForSelector('#transport.offline', T);
  await bob.waitForSelector('#transport.offline', T);
  const myDot = await alice.evaluate(() => document.querySelector('#me .dot').classList.contains('online'));
  check(!myDot, 'my own presence dot stays green while the page reconnects');
  for (const t of ['away 1', 'away 2', 'away 3']) { await alice.fill('#text', t); await alice.press('#text', 'Enter'); }
  await bob.fill('#text', 'bob away');
  await bob.press('#text', 'Enter');
  await restarted;
  await alice.waitForSelector('#transport[data-transport="webtransport"]', { timeout: 30000 });
  await bob.waitForSelector('#transport[data-transport="websocket"]', { timeout: 30000 });
  console.log('reconnect: ok');
  const expected = ['Hi Bob', 'Hey Alice! Over WebSocket here.', 'away 1', 'away 2', 'away 3', 'bob away'];
  const texts = (page) => page.evaluate(() => [...document.querySelectorAll('.bubble .text')].map((e) => e.textContent));
  for (const [name, page] of [['alice', alice], ['bob', bob]]) {
    await page.waitForFunction((n) => document.querySelectorAll('.bubble .text').length >= n, expected.length, { timeout: 20000 });
    await new Promise((r) => setTimeout(r, 500));
    const got = await texts(page);
    // Alice's three and Bob's one were sent concurrently: compare each sender's order, and
    // that nothing is missing or doubled.
    const sorted = [...got].sort();
    check(JSON.stringify(sorted) === JSON.stringify([...expected].sort()), `${name} has ${JSON.stringify(got)}`);
    const mine = got.filter((t) => t.startsWith('away'));
    check(JSON.stringify(mine) === JSON.stringify(['away 1', 'away 2', 'away 3']), `${name} order ${JSON.stringify(got)}`);
  }
  await alice.waitForFunction(() => [...document.querySelectorAll('.bubble.mine .tick')].every((t) => t.dataset.state !== 'sending'), null, T);
  console.log('after restart: every message once, in order: ok');
}, test);
