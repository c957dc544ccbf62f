// The admin console (/admin) in headless Chromium, driven by tests/operator.rs, after the test
// made real traffic: a wrong API key is refused; the right one shows the live figures (the
// connections, a messages-per-second chart above zero, the conversation, the error a client
// provoked); a screenshot is saved; then the user's device is disconnected with its button.
//
// Usage: node admin_console.mjs HTTP_PORT API_KEY CONNECTIONS CONVERSATION ERROR_CODE USER SCREENSHOT
// Prints `figures: {...}` and `disconnected: CONNECTION_ID`.

import { check, run } from './browser.mjs';

const [port, key, connections, conversation, errorCode, user, screenshot] = process.argv.slice(2);
const T = { timeout: 15000 };

await run(async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(`http://localhost:${port}/admin`);

  await page.fill('#api-key', `${key}-wrong`);
  await page.click('#signin-button');
  await page.waitForSelector('#signin-error:not([hidden])', T);
  check((await page.textContent('#signin-error')).includes('Wrong API key'), 'the wrong key is refused');
  check(await page.isHidden('#console'), 'no console with a wrong key');
  console.log('wrong key: refused');

  await page.fill('#api-key', key);
  await page.click('#signin-button');
  await page.waitForSelector('#console:not([hidden])', T);
  await page.waitForFunction((n) => document.getElementById('total-connections').textContent === n, connections, T);
  await page.waitForFunction(() => Number(document.getElementById('chart-rate').dataset.max) > 0, null, T);
  await page.waitForFunction((c) => document.getElementById('conversations').textContent.includes(c), conversation, T);
  await page.waitForFunction((code) => document.getElementById('incidents').textContent.includes(code), errorCode, T);
  const figures = await page.evaluate(() => ({
    connections: Number(document.getElementById('total-connections').textContent),
    users_online: Number(document.getElementById('users-online').textContent),
    max_rate: Number(document.getElementById('chart-rate').dataset.max),
    kinds: [...document.querySelectorAll('#kinds tr')].map((tr) => [...tr.children].map((td) => td.textContent)),
    conversations: [...document.querySelectorAll('#conversations tr')].map((tr) => [...tr.children].map((td) => td.textContent)),
    incidents: [...document.querySelectorAll('#incidents tr')].map((tr) => tr.children[1]?.textContent),
    certificate: document.getElementById('certificate').textContent,
  }));
  console.log(`figures: ${JSON.stringify(figures)}`);

  await page.fill('#user-id', user);
  await page.click('#user-lookup');
  await page.waitForSelector('#devices button[data-connection-id]', T);
  await page.screenshot({ path: screenshot, fullPage: true });
  const button = page.locator('#devices button[data-connection-id]').first();
  const id = await button.getAttribute('data-connection-id');
  await button.click();
  await page.waitForFunction(() => !document.querySelector('#devices button[data-connection-id]'), null, T);
  console.log(`disconnected: ${id}`);
});
