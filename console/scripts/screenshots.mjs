// Photographs every console screen for the README (docs/console/*.png), the way a new user
// meets it: `vigil serve --demo` (the release build by default, whose embedded console is the
// committed console/dist), the links it prints opened in headless Chromium.
//
//   cargo build --release && node console/scripts/screenshots.mjs
//
// VIGIL_BIN picks another binary; CHROMIUM_PATH another Chromium. It also prints the headers
// the console is served with, for a look at caching and the Content-Security-Policy.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from '../../clients/js/node_modules/playwright-core/index.mjs';
import { repoRoot, VigilServer } from '../../clients/js/scripts/server.mjs';

process.env.VIGIL_BIN ??= join(repoRoot, 'target', 'release', 'vigil');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OUT = join(repoRoot, 'docs', 'console');
/** Time for a screen's live queries to render after navigation (a picture, not a test). */
const SETTLE_MS = 800;

mkdirSync(OUT, { recursive: true });
const server = await VigilServer.start({ args: ['--demo'] });
let browser;
try {
  // The demo seeds right after the server is ready; its links are printed once it has.
  const deadline = Date.now() + 60_000;
  while (!/console#token=/.test(server.log) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const links = Object.fromEntries([...server.log.matchAll(/^\s+(\S+)\s+(http:\/\/\S+\/console#token=\S+)$/gm)].map((m) => [m[1], m[2]]));
  links['admin-1'] = `${server.url}/console#token=${server.token({ hospital: 'demo', user: 'admin-1', role: 'admin', ttl: '1h' })}`;
  console.log(`vigil: ${server.bin}\nlinks for: ${Object.keys(links).join(', ')}`);

  for (const path of ['/console/', `/console/${(await (await fetch(`${server.url}/console/`)).text()).match(/assets\/[^"]+\.js/)?.[0]}`]) {
    const r = await fetch(`${server.url}${path}`);
    console.log(`\nGET ${path} → ${r.status}`);
    for (const h of ['content-type', 'cache-control', 'content-security-policy', 'x-content-type-options', 'referrer-policy']) console.log(`  ${h}: ${r.headers.get(h)}`);
  }

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const open = async (who, viewport = { width: 1280, height: 900 }) => {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.log(`  [${who}] console error: ${m.text()}`); });
    await page.goto(links[who]);
    await page.locator('[data-testid="connection"][data-status="connected"]').waitFor({ timeout: 30_000 });
    return { context, page };
  };
  const go = async (page, path) => {
    await page.evaluate((p) => { history.pushState(null, '', `/console/${p}`); dispatchEvent(new PopStateEvent('popstate')); }, path);
    await page.locator('main h1').first().waitFor();
    await page.waitForTimeout(SETTLE_MS);
  };
  const shot = async (page, name, fullPage = true) => {
    await page.screenshot({ path: join(OUT, `${name}.png`), fullPage });
    console.log(`  wrote docs/console/${name}.png`);
  };

  const nurse = await open('nurse-amy');
  const doctor = await open('dr-rao');
  await go(nurse.page, 'alerts');
  await shot(nurse.page, 'alerts', false);
  await go(doctor.page, 'cases');
  const firstCase = doctor.page.getByTestId('case').first();
  await firstCase.waitFor();
  await shot(doctor.page, 'cases');
  await go(doctor.page, `cases/${await firstCase.getAttribute('data-case-id')}`);
  await shot(doctor.page, 'case-thread');
  // The patient with two viewers: each sees the other.
  await go(nurse.page, 'patients/p-1001');
  await go(doctor.page, 'patients/p-1001');
  await nurse.page.getByTestId('viewing').waitFor();
  await shot(nurse.page, 'patient');
  for (const screen of ['schedule', 'notifications', 'presence']) {
    await go(doctor.page, screen);
    await shot(doctor.page, screen);
  }
  const admin = await open('admin-1');
  await go(admin.page, 'admin');
  await shot(admin.page, 'admin');

  const chw = await open('chw-ravi', { width: 390, height: 844 });
  await go(chw.page, 'cases');
  const hers = chw.page.getByTestId('case').first();
  await hers.waitFor();
  await go(chw.page, `cases/${await hers.getAttribute('data-case-id')}`);
  await shot(chw.page, 'case-thread-phone');

  // Offline with one acknowledge queued.
  await go(nurse.page, 'alerts');
  await nurse.context.setOffline(true);
  await nurse.page.locator('[data-testid="connection"][data-status="offline"]').waitFor();
  await nurse.page.getByRole('button', { name: /^Acknowledge/ }).first().click();
  await nurse.page.getByTestId('queued').waitFor();
  await shot(nurse.page, 'offline', false);
  await nurse.context.setOffline(false);
} finally {
  await browser?.close();
  await server.stop();
}
