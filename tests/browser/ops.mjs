// Drives the operations console at /ops in headless Chromium (Debian's `chromium`, through
// puppeteer-core), as an operator would. Run by tests/tests/operations_console.rs, which starts
// the real store, worker processes and SMTP sink:
//
//   node tests/browser/ops.mjs <scenario> <base-url> '<json arguments>'
//
// Every scenario signs in with the admin's email and password, then acts through the page's
// own buttons and waits for the page to show the outcome. Exits 0 when the scenario passed,
// 1 with the reason otherwise. Every wait is for a condition on the page, never a fixed sleep.
import puppeteer from 'puppeteer-core';

const [scenarioName, base, rawArgs = '{}'] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
const WAIT = Number(process.env.BROWSER_WAIT_MS || 30000);

const step = (text) => console.log(`  · ${text}`);

async function console_(browser) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  page.on('dialog', (dialog) => dialog.accept());
  page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
  await page.goto(`${base}/ops`);
  await page.type('#email', args.admin);
  await page.type('#password', args.adminPassword);
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#queues tbody tr', { timeout: WAIT });
  step(`signed in as ${args.admin}`);
  return page;
}

/** Waits until the queue's row shows `expected` (column name → text), e.g. `{failed: '0'}`. */
async function waitForQueue(page, queue, expected) {
  step(`waiting until ${queue} shows ${JSON.stringify(expected)}`);
  await page.waitForFunction(
    (queue, expected) => {
      const row = document.querySelector(`#queues tr[data-queue="${queue}"]`);
      if (!row) return false;
      const names = ['queue', 'ready', 'scheduled', 'inFlight', 'retrying', 'failed', 'done', 'lag', 'chart', 'state'];
      const cells = [...row.children].map((c) => c.textContent.trim());
      return Object.entries(expected).every(([name, text]) => cells[names.indexOf(name)] === text);
    },
    { timeout: WAIT, polling: 200 },
    queue,
    expected,
  );
}

/**
 * Presses a button once it is on screen. Found and clicked in one task of the page, so the
 * once-a-second refresh cannot swap the row out between the two.
 */
async function press(page, selector, what) {
  step(`pressing ${what}`);
  await page.waitForSelector(selector, { visible: true, timeout: WAIT });
  await page.$eval(selector, (button) => button.click());
}

async function waitForWorker(page, name, state) {
  step(`waiting until worker ${name} is ${state}`);
  await page.waitForSelector(`#workers tr[data-worker="${name}"][data-state="${state}"]`, { timeout: WAIT });
}

const scenarios = {
  /** Pauses a queue with its button; the row says so. */
  async pause(page) {
    await press(page, `#queues tr[data-queue="${args.queue}"] [data-action=pause]`, `Pause on ${args.queue}`);
    await waitForQueue(page, args.queue, { state: 'Paused' });
  },
  /** Waits until the queue holds `ready` items, then resumes it and sees them drain. */
  async resume(page) {
    await waitForQueue(page, args.queue, { ready: String(args.ready), state: 'Paused' });
    if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
    await press(page, `#queues tr[data-queue="${args.queue}"] [data-action=resume]`, `Resume on ${args.queue}`);
    await waitForQueue(page, args.queue, { ready: '0', state: 'Running' });
  },
  /** Waits for `failed` failed items, looks at them, presses Retry all, sees the list empty. */
  async 'retry-all'(page) {
    await waitForQueue(page, args.queue, { failed: String(args.failed) });
    await press(page, `#queues tr[data-queue="${args.queue}"] th`, `the ${args.queue} row`);
    await page.waitForFunction(
      (n) => document.querySelectorAll('#items tbody tr').length === n,
      { timeout: WAIT },
      args.failed,
    );
    const error = await page.$eval('#items tbody tr td.err', (td) => td.textContent);
    if (!error.includes('550')) throw new Error(`the failed item shows no SMTP error: ${error}`);
    step(`the failed items show their error (${error.slice(0, 60)}…)`);
    if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
    await press(page, `#queues tr[data-queue="${args.queue}"] [data-action=retry-all]`, 'Retry all');
    await waitForQueue(page, args.queue, { failed: '0' });
    await page.waitForFunction(() => document.querySelector('#audit').textContent.includes('retry_all'), { timeout: WAIT });
    step('the audit trail lists the retry');
  },
  /** Waits until the worker is shown gone (it was killed). */
  async gone(page) {
    await waitForWorker(page, args.worker, 'gone');
  },
  /** Quiets a running worker with its button; the row says quiet. */
  async quiet(page) {
    await waitForWorker(page, args.worker, 'running');
    await press(page, `#workers tr[data-worker="${args.worker}"] [data-action=quiet]`, `Quiet on ${args.worker}`);
    await waitForWorker(page, args.worker, 'quiet');
  },
};

const scenario = scenarios[scenarioName];
if (!scenario) {
  console.error(`unknown scenario ${scenarioName}; known: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  console.log(`ops scenario ${scenarioName}`);
  await scenario(await console_(browser));
  console.log('passed');
} catch (error) {
  console.error(`failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
