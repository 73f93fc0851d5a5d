// Drives the storefront at / in headless Chromium (Debian's `chromium`, through puppeteer-core;
// no browser is downloaded). Run by tests/tests/storefront.rs, which starts the real app:
//
//   node tests/browser/storefront.mjs <scenario> <base-url> '<json arguments>'
//
// Exits 0 when the scenario passed, 1 with the reason otherwise. Every wait is for a condition
// on the page, never a fixed sleep.
import { setTimeout as sleep } from 'node:timers/promises';
import puppeteer from 'puppeteer-core';

const [scenarioName, base, rawArgs = '{}'] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
const WAIT = Number(process.env.BROWSER_WAIT_MS || 30000);
const PASSWORD = 'correct-horse-battery';

// ---------------------------------------------------------------- harness

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

const step = (text) => console.log(`  · ${text}`);

async function launch() {
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run',
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows'],
  });
}

/** A page in its own browser context (its own cookies and sessionStorage: another person). */
async function visitor(browser, name, viewport = { width: 1280, height: 900 }) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport(viewport);
  page.setDefaultTimeout(WAIT);
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`${name}: uncaught ${error.message}`));
  page.on('console', (message) => {
    const text = message.text();
    // Answers like 409 sold_out are part of the scenarios; the page shows them in words.
    if (message.type() === 'error' && !text.startsWith('Failed to load resource')) {
      page.problems.push(`${name}: console error: ${text}`);
    }
  });
  page.context = context;
  return page;
}

async function open(page) {
  const response = await page.goto(base, { waitUntil: 'domcontentloaded' });
  check(response.ok(), `GET / answered ${response.status()}`);
  await page.waitForSelector('#live[data-state="live"]');
  // Set once per load: still there later means the page was never reloaded.
  await page.evaluate(() => { window.loadedOnce = 'yes'; });
}

async function notReloaded(page) {
  check(await page.evaluate(() => window.loadedOnce === 'yes'), 'the page was reloaded');
}

/** The drop card whose heading is `name`. */
async function drop(page, name) {
  await page.waitForFunction((n) => [...document.querySelectorAll('li.drop')]
    .some((li) => li.querySelector('h3').textContent === n), {}, name);
  return page.evaluateHandle((n) => [...document.querySelectorAll('li.drop')]
    .find((li) => li.querySelector('h3').textContent === n), name);
}

async function product(page, name) {
  await page.waitForFunction((n) => [...document.querySelectorAll('li.product')]
    .some((li) => li.querySelector('h3').textContent === n), {}, name);
  return page.evaluateHandle((n) => [...document.querySelectorAll('li.product')]
    .find((li) => li.querySelector('h3').textContent === n), name);
}

/** Waits until the drop card called `name` shows `count` units left. */
async function waitForStock(page, name, count) {
  await page.waitForFunction((n, c) => {
    const card = [...document.querySelectorAll('li.drop')].find((li) => li.querySelector('h3').textContent === n);
    return card && card.querySelector('.stock-count').textContent === String(c);
  }, {}, name, count).catch(async () => {
    fail(`${name} did not show ${count} left; it shows ${await stockOf(page, name)}`);
  });
}

async function stockOf(page, name) {
  return page.evaluate((n) => {
    const card = [...document.querySelectorAll('li.drop')].find((li) => li.querySelector('h3').textContent === n);
    return card ? card.querySelector('.stock-count').textContent : '(no card)';
  }, name);
}

/** Waits until `selector` inside the drop card `name` contains `text`; answers its text. */
async function waitInDrop(page, name, selector, text) {
  const handle = await page.waitForFunction((n, s, t) => {
    const card = [...document.querySelectorAll('li.drop')].find((li) => li.querySelector('h3').textContent === n);
    const el = card && [...card.querySelectorAll(s)].find((e) => e.textContent.includes(t));
    return el ? el.textContent : false;
  }, {}, name, selector, text).catch(async () => {
    const shown = await page.evaluate((n) => {
      const card = [...document.querySelectorAll('li.drop')].find((li) => li.querySelector('h3').textContent === n);
      return card ? card.innerText : '(no card)';
    }, name);
    fail(`${name}: no ${selector} saying "${text}"; the card says:\n${shown}`);
  });
  return handle.jsonValue();
}

async function clickInDrop(page, name, action) {
  const card = await drop(page, name);
  const button = await card.waitForSelector(`button[data-action="${action}"]:not(:disabled)`);
  await button.click();
}

async function signUp(page, email) {
  await page.type('#auth-email', email);
  await page.type('#auth-password', PASSWORD);
  await page.click('#sign-in button[value="signup"]');
  await page.waitForFunction((e) => {
    const who = document.querySelector('#whoami');
    return !who.hidden && who.textContent.includes(e);
  }, {}, email);
  // Signing in reconnects the socket with the token, for the owner's own events.
  await page.waitForSelector('#live[data-state="live"]');
}

/**
 * The verification email's link (read from the development outbox with an admin's token),
 * opened in the buyer's browser: a page whose button verifies. Waitlist offers and draws
 * take verified buyers.
 */
async function verifyEmail(page, email, adminToken) {
  step(`${email} follows the link of the verification email and presses its button`);
  let link;
  for (let tries = 0; !link && tries < 100; tries += 1) {
    const res = await fetch(new URL('/api/admin/outbox?limit=50', base),
      { headers: { Authorization: `Bearer ${adminToken}` } });
    const mails = res.ok ? await res.json() : [];
    const mail = mails.find((m) => m.to.includes(email) && m.subject.includes('Verify'));
    link = mail && mail.links.find((l) => l.includes('/api/auth/verify-email?token='));
    if (!link) await new Promise((r) => setTimeout(r, 100));
  }
  if (!link) fail(`no verification email to ${email}`);
  const tab = await page.context.newPage();
  await tab.goto(link, { waitUntil: 'domcontentloaded' });
  await Promise.all([tab.waitForNavigation(), tab.click('form button[type="submit"]')]);
  await tab.waitForFunction(() => document.body.textContent.includes('Your email is verified'));
  await tab.close();
}

async function logIn(page, email, password) {
  await page.type('#auth-email', email);
  await page.type('#auth-password', password);
  await page.click('#sign-in button[value="login"]');
  await page.waitForFunction((e) => {
    const who = document.querySelector('#whoami');
    return !who.hidden && who.textContent.includes(e);
  }, {}, email);
  await page.waitForSelector('#live[data-state="live"]');
}

/** Every WebSocket frame the page receives, as parsed JSON. */
async function recordFrames(page) {
  const frames = [];
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketFrameReceived', ({ response }) => {
    try {
      frames.push(JSON.parse(response.payloadData));
    } catch {
      // not JSON: not one of ours
    }
  });
  return frames;
}

async function text(page, selector) {
  return page.$eval(selector, (el) => el.textContent);
}

/** Replaces what a field holds with `value`, typed as a person would. */
async function fill(field, value) {
  await field.evaluate((el) => { el.value = ''; });
  await field.type(value);
}

// ---------------------------------------------------------------- scenarios

const scenarios = {
  /** Sign up, reserve (countdown), buy; a second visitor sees stock fall live; release. */
  async buy(browser) {
    const { drop: name, other, screenshot } = args;
    const buyer = await visitor(browser, 'buyer');
    const watcher = await visitor(browser, 'watcher');
    await open(buyer);
    await open(watcher);
    await drop(buyer, name);
    // Each page renders the listing on its own: wait for the watcher's card too (read too
    // early, it was "(no card)", NaN).
    await drop(watcher, name);
    const start = Number(await stockOf(watcher, name));
    check(start > 1, `${name} should start with a few units, shows ${start}`);

    step('the first Tab lands on "Skip to content", the next on the home link');
    await watcher.keyboard.press('Tab');
    check(await watcher.evaluate(() => document.activeElement.classList.contains('skip')),
      `first Tab focused ${await watcher.evaluate(() => document.activeElement.outerHTML)}`);
    await watcher.keyboard.press('Tab');
    check(await watcher.evaluate(() => document.activeElement.classList.contains('brand')),
      `second Tab focused ${await watcher.evaluate(() => document.activeElement.outerHTML)}`);

    step('a visitor who is not signed in is asked to sign in to reserve');
    await waitInDrop(watcher, name, 'button[data-action="reserve"]', 'Sign in to reserve');

    step('sign up');
    await signUp(buyer, 'ada@example.com');

    step('reserve from the keyboard: the countdown runs and focus moves to Buy');
    const card = await drop(buyer, name);
    await (await card.$('button[data-action="reserve"]')).focus();
    await buyer.keyboard.press('Enter');
    const first = await buyer.waitForFunction((n) => {
      const c = [...document.querySelectorAll('li.drop')].find((li) => li.querySelector('h3').textContent === n);
      const timer = c && c.querySelector('.hold .timer');
      return timer && /^\d+:\d\d$/.test(timer.textContent) ? timer.textContent : false;
    }, {}, name).then((v) => v.jsonValue());
    await buyer.waitForFunction((n, t) => {
      const c = [...document.querySelectorAll('li.drop')].find((li) => li.querySelector('h3').textContent === n);
      const timer = c && c.querySelector('.hold .timer');
      return timer && /^\d+:\d\d$/.test(timer.textContent) && timer.textContent !== t;
    }, {}, name, first);
    check(await buyer.evaluate(() => document.activeElement.dataset.action === 'buy'),
      `focus should be on Buy after reserving, is on ${await buyer.evaluate(() => document.activeElement.outerHTML)}`);

    step('the other visitor sees the stock go down, without reloading');
    await waitForStock(watcher, name, start - 1);
    await notReloaded(watcher);
    await waitForStock(buyer, name, start - 1);

    if (screenshot) {
      step(`screenshot → ${screenshot}`);
      await buyer.evaluate(() => window.scrollTo(0, 0));
      await buyer.screenshot({ path: screenshot, fullPage: true });
    }

    step('buy');
    await buyer.keyboard.press('Enter');
    await waitInDrop(buyer, name, '.outcome', `You bought ${name}`);
    await waitForStock(watcher, name, start - 1);

    step('a second reserve is refused, and the page says why in words');
    await clickInDrop(buyer, name, 'reserve');
    await waitInDrop(buyer, name, '.error', 'you have bought as many of this drop as allowed');

    step('reserve and release another drop: the unit goes back on sale for everyone');
    const otherStart = Number(await stockOf(watcher, other));
    await clickInDrop(buyer, other, 'reserve');
    await waitInDrop(buyer, other, '.hold .timer-label', 'Held for you');
    await waitForStock(watcher, other, otherStart - 1);
    await clickInDrop(buyer, other, 'release');
    await waitInDrop(buyer, other, '.outcome', 'Released');
    await waitForStock(watcher, other, otherStart);
    await notReloaded(watcher);

    step('a wrong password is answered in words');
    await watcher.type('#auth-email', 'ada@example.com');
    await watcher.type('#auth-password', 'not-the-password');
    await watcher.click('#sign-in button[value="login"]');
    await watcher.waitForFunction(() => document.querySelector('#auth-error').textContent
      .includes('email or password is incorrect'));

    step('every field has a label, every image a text alternative, the API docs a link');
    const a11y = await watcher.evaluate(() => ({
      unlabelled: [...document.querySelectorAll('input, select, textarea')]
        .filter((i) => i.labels.length === 0 && !i.getAttribute('aria-label')).map((i) => i.outerHTML),
      nameless: [...document.querySelectorAll('button, a')]
        .filter((b) => !b.textContent.trim() && !b.getAttribute('aria-label')).map((b) => b.outerHTML),
      imagesWithoutAlt: [...document.querySelectorAll('img')].filter((i) => !i.hasAttribute('alt')).length,
      docs: [...document.querySelectorAll('a')].some((a) => a.getAttribute('href') === '/docs'),
    }));
    check(a11y.unlabelled.length === 0, `inputs without a label: ${a11y.unlabelled.join(', ')}`);
    check(a11y.nameless.length === 0, `buttons or links without text: ${a11y.nameless.join(', ')}`);
    check(a11y.imagesWithoutAlt === 0, 'images without alt');
    check(a11y.docs, 'no link to /docs');

    step('on a phone-sized screen nothing overflows sideways');
    await watcher.setViewport({ width: 375, height: 740, isMobile: true, hasTouch: true });
    await watcher.waitForFunction(() => window.innerWidth === 375);
    const overflow = await watcher.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `the page is ${overflow}px wider than a 375px screen`);
    const smallest = await watcher.evaluate(() => Math.min(...[...document.querySelectorAll('li.drop button')]
      .map((b) => b.getBoundingClientRect().height)));
    check(smallest >= 44, `a drop button is only ${smallest}px tall on a phone`);

    step('/docs answers');
    const docs = await watcher.goto(`${base}/docs`);
    check(docs.ok(), `/docs answered ${docs.status()}`);
    return [buyer, watcher];
  },

  /** A hold left to run out: the page says so when the server's reservation_expired arrives. */
  /** A drop that asks for proof of work: the page fetches an ALTCHA challenge, solves it
   * with WebCrypto and sends the solution with the reserve. */
  async challenge(browser) {
    const { drop: name } = args;
    const buyer = await visitor(browser, 'buyer');
    await open(buyer);
    await drop(buyer, name);
    await signUp(buyer, 'pat@example.com');

    step('reserve: the page solves the challenge and the unit is held');
    await clickInDrop(buyer, name, 'reserve');
    await waitInDrop(buyer, name, '.hold .timer', ':');
    return [buyer];
  },

  async expire(browser) {
    const { drop: name } = args;
    const buyer = await visitor(browser, 'buyer');
    const frames = await recordFrames(buyer);
    await open(buyer);
    await drop(buyer, name);
    const start = Number(await stockOf(buyer, name));
    await signUp(buyer, 'grace@example.com');

    step('reserve; the countdown is shown');
    await clickInDrop(buyer, name, 'reserve');
    await waitInDrop(buyer, name, '.hold .timer', ':');
    await waitForStock(buyer, name, start - 1);
    const reservationId = Number(await buyer.evaluate((n) => [...document.querySelectorAll('li.drop')]
      .find((li) => li.querySelector('h3').textContent === n).querySelector('[data-hold]').dataset.hold, name));

    step('wait for the hold to end unbought: the page hears it on its socket');
    await waitInDrop(buyer, name, '.outcome', 'ended before you bought it');
    const source = await buyer.evaluate((n) => [...document.querySelectorAll('li.drop')]
      .find((li) => li.querySelector('h3').textContent === n).querySelector('.outcome').dataset.source, name);
    check(source === 'socket', `the expiry was noticed by ${source}, not by the reservation_expired frame`);
    check(frames.some((f) => f.event === 'reservation_expired' && f.data.reservationId === reservationId),
      `no reservation_expired frame for reservation ${reservationId}; frames: ${JSON.stringify(frames)}`);
    await waitForStock(buyer, name, start);
    check(await buyer.evaluate((n) => ![...document.querySelectorAll('li.drop')]
      .find((li) => li.querySelector('h3').textContent === n).querySelector('button[data-action="buy"]'), name),
    'the Buy button is still shown after the hold ended');
    await notReloaded(buyer);
    return [buyer];
  },

  /** Notify me → the confirmation link from the outbox → an admin restock → the alert. */
  async restock(browser) {
    const { product: name, admin: adminEmail, adminPassword, email } = args;
    const shopper = await visitor(browser, 'shopper');
    const admin = await visitor(browser, 'admin');
    await open(shopper);

    step('a sold-out product offers "Notify me" and explains the confirmation email');
    const card = await product(shopper, name);
    check(await card.$eval('.badge', (b) => b.textContent) === 'Sold out', `${name} is not shown as sold out`);
    const hint = await card.$eval('.notify .hint', (p) => p.textContent);
    check(hint.includes('confirmation email'), `the form does not explain the confirmation email: ${hint}`);
    await (await card.$('.notify input[type="email"]')).type(email);
    await (await card.$('.notify button[type="submit"]')).click();
    await shopper.waitForFunction((n) => {
      const c = [...document.querySelectorAll('li.product')].find((li) => li.querySelector('h3').textContent === n);
      return c && c.querySelector('.notify .note').textContent.includes('Check your inbox');
    }, {}, name);

    step('the admin signs in and finds the confirmation email in the outbox');
    await open(admin);
    await logIn(admin, adminEmail, adminPassword);
    await admin.waitForSelector('#admin:not([hidden]) #outbox');
    const confirmSubject = `Confirm: tell me when ${name} is back`;
    const confirmLink = await admin.waitForFunction((s, to) => {
      const mail = [...document.querySelectorAll('#outbox .mail')]
        .find((m) => m.querySelector('h4').textContent === s && m.querySelector('.mail-meta').textContent.includes(to));
      const link = mail && [...mail.querySelectorAll('a')].find((a) => a.href.includes('/api/subscriptions/confirm?token='));
      return link ? link.href : false;
    }, {}, confirmSubject, email).then((v) => v.jsonValue());

    step('the confirmation link opens a page whose Confirm button confirms the subscription');
    const linkHandle = await admin.evaluateHandle((href) =>
      [...document.querySelectorAll('#outbox a')].find((a) => a.href === href), confirmLink);
    const opened = admin.context.waitForTarget((t) => t.url() === confirmLink);
    await linkHandle.click();
    const confirmPage = await (await opened).page();
    await confirmPage.waitForSelector('form[method="post"] button');
    await Promise.all([confirmPage.waitForNavigation(), confirmPage.click('form[method="post"] button')]);
    await confirmPage.waitForFunction(() => document.body && document.body.textContent.includes("You're on the list"));
    await confirmPage.close();
    await admin.waitForFunction((n) => {
      const row = [...document.querySelectorAll('[data-admin-product]')].find((r) => r.querySelector('strong').textContent === n);
      const figures = row && row.querySelector('[data-stats]');
      return figures && /1 confirmed/.test(figures.textContent);
    }, {}, name);

    step('the admin brings it back in stock');
    const row = await admin.evaluateHandle((n) => [...document.querySelectorAll('[data-admin-product]')]
      .find((r) => r.querySelector('strong').textContent === n), name);
    await fill(await row.$('input[type="number"]'), '7');
    await (await row.$('button[data-action="restock"]')).click();
    await admin.waitForFunction((n) => [...document.querySelectorAll('[data-admin-product]')]
      .some((r) => r.querySelector('strong').textContent === n && r.querySelector('.badge').textContent === 'In stock'),
    {}, name).catch(async () => fail(`the admin's restock did not go through: ${await text(admin, '#admin-products')}`));

    step('the shopper sees it back in stock live');
    await shopper.waitForFunction((n) => {
      const c = [...document.querySelectorAll('li.product')].find((li) => li.querySelector('h3').textContent === n);
      return c && c.querySelector('.badge').textContent === 'Back in stock' && !c.querySelector('.notify') &&
        c.textContent.includes('7 left');
    }, {}, name).catch(async () => fail(`the shopper's page shows: ${await text(shopper, '#product-list')}`));
    await notReloaded(shopper);

    step('the alert goes out: counted as sent, and in the outbox');
    await admin.waitForFunction((n) => {
      const r = [...document.querySelectorAll('[data-admin-product]')].find((x) => x.querySelector('strong').textContent === n);
      const alerts = r && r.querySelector('[data-alerts]');
      return alerts && /0 queued · 1 sent · 0 failed/.test(alerts.textContent);
    }, {}, name).catch(async () => fail(`alerts not counted as sent: ${await text(admin, '#admin-products')}`));
    await admin.waitForFunction((s, to) => [...document.querySelectorAll('#outbox .mail')]
      .some((m) => m.querySelector('h4').textContent === s && m.querySelector('.mail-meta').textContent.includes(to) &&
        m.querySelector('pre').textContent.includes('Unsubscribe')), {}, `${name} is back in stock`, email);
    return [shopper, admin];
  },

  /** A customer sees no admin controls; an admin does, and what they create shows up live. */
  async roles(browser) {
    const { admin: adminEmail, adminPassword } = args;
    const customer = await visitor(browser, 'customer');
    const admin = await visitor(browser, 'admin');
    await open(customer);
    await signUp(customer, 'carol@example.com');

    step('a customer has no admin section, link or controls');
    const leaks = await customer.evaluate(() => ({
      section: !document.querySelector('#admin').hidden || document.querySelector('#admin').children.length,
      nav: !document.querySelector('#nav-admin').hidden,
      controls: document.querySelectorAll('[data-action="restock"], [data-action="add-stock"], #outbox').length,
      text: document.body.innerText.includes('Create drop'),
    }));
    check(!leaks.section && !leaks.nav && !leaks.controls && !leaks.text,
      `admin controls visible to a customer: ${JSON.stringify(leaks)}`);

    step('an admin has them');
    await open(admin);
    await logIn(admin, adminEmail, adminPassword);
    await admin.waitForSelector('#admin:not([hidden]) form');
    await admin.waitForSelector('#nav-admin:not([hidden])');

    step('a drop the admin creates appears on the customer page, live');
    await fill(await admin.$('#new-drop-name'), 'Evening Swarm');
    await fill(await admin.$('#new-drop-stock'), '4');
    await admin.evaluate(() => document.querySelector('#new-drop-name').form.requestSubmit());
    await admin.waitForFunction(() => document.querySelector('#admin').textContent.includes('Created “Evening Swarm” with 4 units.'));
    await waitForStock(customer, 'Evening Swarm', 4);
    // The new card grows the admin's own drop grid too; clicking before that lands elsewhere.
    await waitForStock(admin, 'Evening Swarm', 4);

    step('units the admin adds appear on the customer page, live');
    const row = (await admin.waitForFunction(() => [...document.querySelectorAll('[data-admin-drop]')]
      .find((r) => r.querySelector('strong').textContent === 'Evening Swarm'))).asElement();
    await fill(await row.$('input[type="number"]'), '3');
    await (await row.$('button[data-action="add-stock"]')).click();
    await admin.waitForFunction(() => [...document.querySelectorAll('[data-admin-drop]')]
      .some((r) => r.querySelector('strong').textContent === 'Evening Swarm' && r.textContent.includes('7 of 7 on sale')))
      .catch(async () => fail(`the admin's drops do not show 7 units: ${await text(admin, '#admin')}`));
    await waitForStock(customer, 'Evening Swarm', 7);
    await customer.waitForFunction(() => [...document.querySelectorAll('li.drop')]
      .some((li) => li.querySelector('h3').textContent === 'Evening Swarm' && li.textContent.includes('7 of 7 left')));
    await notReloaded(customer);
    return [customer, admin];
  },

  /** An expired access token is exchanged for a new one, and the buyer never notices. */
  async refresh(browser) {
    const { drop: name } = args;
    const buyer = await visitor(browser, 'buyer');
    await open(buyer);
    await signUp(buyer, 'linus@example.com');
    const before = await buyer.evaluate(() => JSON.parse(sessionStorage.getItem('honeydrop.session')));
    check(before && before.accessToken && before.refreshToken, 'no tokens kept in sessionStorage');

    step('wait until the API refuses the first access token');
    const deadline = Date.now() + WAIT;
    for (;;) {
      const res = await fetch(`${base}/api/auth/me`, { headers: { Authorization: `Bearer ${before.accessToken}` } });
      if (res.status === 401) break;
      check(res.status === 200, `/api/auth/me answered ${res.status}`);
      check(Date.now() < deadline, 'the first access token was never refused');
      await sleep(250); // the interval of polling that condition, not a guess at how long it takes
    }

    step('reserving still works: the page refreshed its token');
    await clickInDrop(buyer, name, 'reserve');
    await waitInDrop(buyer, name, '.hold .timer-label', 'Held for you');
    const after = await buyer.evaluate(() => JSON.parse(sessionStorage.getItem('honeydrop.session')));
    check(after.accessToken !== before.accessToken, 'the access token was not replaced');
    check(after.refreshToken !== before.refreshToken, 'the refresh token was not rotated');
    return [buyer];
  },

  /**
   * A sold-out drop's line: a buyer joins it from the card, and when the holder lets go the
   * unit is held for them at once; then a draw entered from its card, won when it closes.
   */
  async fairness(browser) {
    const { drop: name, draw, adminToken } = args;
    const holder = await visitor(browser, 'holder');
    const waiter = await visitor(browser, 'waiter');
    await open(holder);
    await open(waiter);
    await signUp(holder, 'hana@example.com');
    await signUp(waiter, 'wim@example.com');
    await verifyEmail(waiter, 'wim@example.com', adminToken);

    step('the holder takes the only unit; the other buyer is offered the line');
    await clickInDrop(holder, name, 'reserve');
    await waitInDrop(holder, name, '.hold .timer-label', 'Held for you');
    await waitInDrop(waiter, name, 'button[data-action="join-waitlist"]', 'Join the waitlist');

    step('join the line: the card says where you stand');
    await clickInDrop(waiter, name, 'join-waitlist');
    await waitInDrop(waiter, name, '.outcome', 'You are number 1 in line');

    step('the holder lets go: the unit is held for the first in line, live');
    await clickInDrop(holder, name, 'release');
    await waitInDrop(waiter, name, '.hold .timer-label', 'Your turn');
    await notReloaded(waiter);
    await clickInDrop(waiter, name, 'buy');
    await waitInDrop(waiter, name, '.outcome', `You bought ${name}`);
    await waitInDrop(holder, name, '.badge', 'Sold out');

    step('enter a draw from its card');
    await waitInDrop(waiter, draw, '.badge', 'Draw');
    await clickInDrop(waiter, draw, 'enter-draw');
    const entered = await waitInDrop(waiter, draw, '.outcome', 'You are in the draw');
    const entryId = Number(/entry #(\d+)/.exec(entered)[1]);

    step('entries close: the only entrant wins a hold, told live');
    const card = await drop(waiter, draw);
    const dropId = Number(await card.evaluate((li) => li.dataset.dropId));
    const closed = await fetch(`${base}/api/admin/drops/${dropId}`, {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ entriesCloseAt: new Date(Date.now() + 500).toISOString() }),
    });
    check(closed.ok, `closing the draw's entries answered ${closed.status}`);
    await waitInDrop(waiter, draw, '.hold .timer-label', 'You won the draw');
    await notReloaded(waiter);
    const record = await (await fetch(`${base}/api/drops/${dropId}/draw`)).json();
    check(record.order.length === 1 && record.order[0].entryId === entryId && record.order[0].won,
      `the draw's record does not show entry ${entryId} winning: ${JSON.stringify(record)}`);
    return [holder, waiter];
  },
};

// ---------------------------------------------------------------- main

const scenario = scenarios[scenarioName];
if (!scenario || !base) {
  console.error(`usage: node storefront.mjs <${Object.keys(scenarios).join('|')}> <base-url> '<json>'`);
  process.exit(2);
}

let browser;
let code = 0;
try {
  browser = await launch();
  console.log(`storefront ${scenarioName} (${await browser.version()})`);
  const pages = await scenario(browser);
  const problems = pages.flatMap((p) => p.problems);
  check(problems.length === 0, `the page reported problems:\n${problems.join('\n')}`);
  console.log(`storefront ${scenarioName}: passed`);
} catch (error) {
  code = 1;
  console.error(`storefront ${scenarioName}: FAILED\n${error.stack || error}`);
} finally {
  if (browser) await browser.close().catch(() => {});
}
process.exit(code);
