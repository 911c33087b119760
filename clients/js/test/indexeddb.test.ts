// The IndexedDB storage adapter in headless Chromium: a page keeps its position, epoch and
// outbox in IndexedDB; after a reload it gets exactly the events it missed (none twice) and
// sends, once, the command it had queued offline before the reload.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, freshHospital, mintToken, sharedUrl } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
let browser: Browser;
let bundle = '';

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) return;
  const entry = fileURLToPath(new URL('../packages/client/src/index.ts', import.meta.url));
  const out = await build({ entryPoints: [entry], bundle: true, format: 'iife', globalName: 'VigilClient', write: false, target: 'es2020' });
  bundle = out.outputFiles[0]!.text;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-features=LocalNetworkAccessChecks',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
});

interface PageView {
  events: string[];
  state: { status: string };
  epoch: string | null;
}

/** Starts a client in the page with IndexedDB storage; `window.view()` reports what it saw. */
async function startClient(page: Page, hospital: string, token: string): Promise<void> {
  await page.evaluate(({ hospital, token }) => {
    const w = window as unknown as Record<string, unknown> & { VigilClient: typeof import('../packages/client/src/index.js') };
    const vigil = new w.VigilClient.Vigil({
      baseUrl: location.origin,
      hospital,
      token: async () => token,
      topics: ['alerts'],
      storage: w.VigilClient.indexedDbStorage({ database: 'vigil-test' }),
    });
    const events: string[] = [];
    vigil.onEvent((e) => {
      if (e.event_type === 'AlertRaised') events.push(e.data.message);
    });
    w['vigil'] = vigil;
    w['view'] = () => ({ events, state: vigil.connection.get(), epoch: vigil.epoch });
  }, { hospital, token });
}

/** Polls an asynchronous condition (a page's state) until it holds. */
async function waitFor(predicate: () => Promise<boolean>, timeout: number, message: string): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const view = (p: Page) => p.evaluate(() => (window as unknown as { view: () => PageView }).view());

describe.skipIf(!existsSync(CHROMIUM))('IndexedDB storage in Chromium', () => {
  it('a reloaded page resumes after its last event and sends its queued command once', async () => {
    const hospital = freshHospital();
    const token = mintToken({ hospital });
    const base = sharedUrl();
    const raise = (message: string) => api(base, hospital, 'POST', 'alerts', { severity: 'low', message });
    await raise('before'); // the stream has an epoch before the page subscribes
    const context = await browser.newContext();
    await context.route(`${base}/__test/**`, (route) =>
      route.fulfill({ contentType: 'text/html', body: `<!doctype html><meta charset="utf-8"><script>${bundle}</script><body>idb</body>` }),
    );
    const page = await context.newPage();
    await page.goto(`${base}/__test/storage.html`);
    await startClient(page, hospital, token);
    await waitFor(async () => (await view(page)).state.status === 'connected', 15_000, 'connected');
    await raise('a');
    await waitFor(async () => (await view(page)).events.includes('a'), 15_000, 'a');
    const epoch = (await view(page)).epoch;
    expect(epoch).toBeTruthy();

    // Offline: a command is queued and stored (in IndexedDB) before the page goes away.
    await page.evaluate(async () => {
      const vigil = (window as unknown as { vigil: import('../packages/client/src/index.js').Vigil }).vigil;
      vigil.setNetworkState(false);
      const queued = vigil.alerts.raise({ severity: 'high', message: 'queued offline' });
      await queued.stored;
      vigil.close();
    });
    await raise('b'); // missed while the page is away

    await page.reload();
    await startClient(page, hospital, token);
    await waitFor(async () => (await view(page)).events.includes('queued offline'), 15_000, 'missed and queued events');
    await raise('c');
    await waitFor(async () => (await view(page)).events.includes('c'), 15_000, 'c');
    const after = await view(page);
    // Exactly after the stored position: not `a` again, `b` missed, the queued command once.
    expect(after.events).toEqual(['b', 'queued offline', 'c']);
    expect(after.epoch).toBe(epoch);
    const board = await api<{ alerts: { message: string }[] }>(base, hospital, 'GET', 'alerts?limit=500');
    expect(board.body.alerts.filter((a) => a.message === 'queued offline')).toHaveLength(1);
    await context.close();
  });
});
