// What the browser scripts share: Debian's Chromium launched headless with the flags this
// machine's closed network needs, a check that fails the script, and the line protocol with
// the Rust test that drives it (the script prints a request, the test answers on stdin).

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

export function check(cond, what) {
  if (!cond) throw new Error(what);
}

/**
 * Runs a script's steps in a fresh browser: a step that throws prints `FAILED: why` and the
 * process exits non-zero; the browser and the line protocol are closed either way.
 */
export async function run(steps, test) {
  const browser = await launch();
  let failed = false;
  try {
    await steps(browser);
  } catch (e) {
    console.log(`FAILED: ${e.message || e}`);
    failed = true;
  } finally {
    await browser.close();
    test?.close();
  }
  process.exit(failed ? 1 : 0);
}

/** The test's answers: `ask(line)` prints a request and resolves with the answer. */
export function driver() {
  const lines = createInterface({ input: process.stdin });
  const nextLine = () => new Promise((resolve) => lines.once('line', resolve));
  return {
    ask: async (what) => { console.log(what); return nextLine(); },
    close: () => lines.close(),
  };
}
