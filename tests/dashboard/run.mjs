// Drives zashboard (a real Clash dashboard, not written here) in headless Debian chromium
// through playwright-core, for tests/dashboard.rs. One argument, a JSON object:
//   {"ui": URL the dashboard is served at, "api": controller base URL (http://host:port),
//    "secret": controller secret, "select": node to click in the GLOBAL group,
//    "screenshot": PNG path, "chromium": browser binary (default /usr/bin/chromium)}
// It logs in through the setup form (host, port, password), opens the GLOBAL group, reads
// the node names shown, clicks `select`, waits for the dashboard's PUT /proxies/GLOBAL and
// for the node to turn active, saves a screenshot, and prints one JSON line:
//   {"shown": [...], "active_before": name, "put_status": 204, "active_after": name,
//    "page_errors": [...], "requests": ["GET /version", ...]}
// Exit 0 when all of that happened; 1 with the reason on stderr otherwise. Every wait is
// bounded; the whole run is capped by OVERALL_LIMIT_MS.
import { chromium } from 'playwright-core';

const OVERALL_LIMIT_MS = 90_000;
const STEP_LIMIT_MS = 15_000;
// The setup form's submit button enables only after its own probe of /version succeeds.
const LOGIN_LIMIT_MS = 20_000;
const MEMBER_CARD = 'div.cursor-pointer.flex-col.rounded-md';
const ACTIVE_CLASS = 'proxy-active-card';

const watchdog = setTimeout(() => {
  console.error(`run.mjs: gave up after ${OVERALL_LIMIT_MS} ms`);
  process.exit(1);
}, OVERALL_LIMIT_MS);

const fail = (msg) => {
  throw new Error(msg);
};

const args = JSON.parse(process.argv[2] ?? fail('usage: run.mjs JSON'));
const api = new URL(args.api);

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const card = (page, name) =>
  page.locator(MEMBER_CARD, { has: page.locator('span', { hasText: new RegExp(`^${escape(name)}$`) }) }).first();

async function login(page) {
  await page.goto(args.ui, { timeout: STEP_LIMIT_MS });
  await page.waitForURL(/#\/setup/, { timeout: STEP_LIMIT_MS });
  await page.getByPlaceholder('127.0.0.1', { exact: true }).fill(api.hostname);
  await page.getByPlaceholder('9090', { exact: true }).fill(api.port);
  await page.locator('input[type=password]').fill(args.secret);
  const submit = page.getByRole('button', { name: 'Submit', exact: true });
  await submit.click({ timeout: LOGIN_LIMIT_MS }); // waits until enabled
  await page.waitForURL(/#\/proxies/, { timeout: STEP_LIMIT_MS });
  // The dashboard also auto-probes 127.0.0.1:9090; make sure it is logged in to ours.
  const active = await page.evaluate(() => {
    const list = JSON.parse(localStorage.getItem('setup/api-list') || '[]');
    return list.find((b) => b.uuid === localStorage.getItem('setup/active-uuid'));
  });
  if (!active || active.host !== api.hostname || active.port !== api.port) {
    fail(`logged in to the wrong backend: ${JSON.stringify(active)}`);
  }
}

async function openGlobal(page) {
  await page.getByText('GLOBAL', { exact: true }).first().click({ timeout: STEP_LIMIT_MS });
  await page.locator(MEMBER_CARD).first().waitFor({ timeout: STEP_LIMIT_MS });
}

function shownNodes(page) {
  return page.evaluate(
    ([sel, cls]) =>
      [...document.querySelectorAll(sel)].map((el) => ({
        name: el.querySelector('span')?.textContent?.trim() ?? '',
        active: el.classList.contains(cls),
      })),
    [MEMBER_CARD, ACTIVE_CLASS],
  );
}

async function select(page) {
  const put = page.waitForResponse(
    (r) => r.request().method() === 'PUT' && new URL(r.url()).pathname === '/proxies/GLOBAL',
    { timeout: STEP_LIMIT_MS },
  );
  await card(page, args.select).click({ timeout: STEP_LIMIT_MS });
  const status = (await put).status();
  if (status < 200 || status > 299) fail(`PUT /proxies/GLOBAL answered ${status}`);
  await page.waitForFunction(
    ([sel, cls, name]) =>
      [...document.querySelectorAll(sel)].some(
        (el) => el.classList.contains(cls) && el.querySelector('span')?.textContent?.trim() === name,
      ),
    [MEMBER_CARD, ACTIVE_CLASS, args.select],
    { timeout: STEP_LIMIT_MS },
  );
  return status;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: args.chromium || '/usr/bin/chromium',
    headless: true,
    // Tests run as root in CI containers, where chromium's sandbox cannot start.
    args: ['--no-sandbox'],
    timeout: STEP_LIMIT_MS,
  });
  const out = { page_errors: [], requests: [] };
  let page;
  try {
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (e) => out.page_errors.push(e.message));
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.host === api.host && !u.pathname.startsWith(new URL(args.ui).pathname)) {
        out.requests.push(`${r.method()} ${u.pathname}`);
      }
    });
    await login(page);
    await openGlobal(page);
    const before = await shownNodes(page);
    out.shown = before.map((n) => n.name);
    out.active_before = before.find((n) => n.active)?.name ?? null;
    out.put_status = await select(page);
    out.active_after = (await shownNodes(page)).find((n) => n.active)?.name ?? null;
    await page.screenshot({ path: args.screenshot, fullPage: true });
  } catch (e) {
    console.error(`run.mjs: ${e.message}\n${JSON.stringify(out)}`);
    // What the page showed when it failed, next to where the good screenshot would be.
    const failed = args.screenshot.replace(/\.png$/, '') + '-failed.png';
    if (page) await page.screenshot({ path: failed, fullPage: true }).catch(() => {});
    console.error(`run.mjs: page at failure: ${failed}`);
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
}

await main();
