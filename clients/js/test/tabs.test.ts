// One connection per browser, in headless Chromium: three tabs of one origin share one
// WebSocket (Web Locks + BroadcastChannel); closing the leader's tab hands the connection over
// with no gap and no duplicate in any remaining tab.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, closeClients, freshHospital, makeClient, mintToken, sharedUrl, waitFor } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
let browser: Browser;
let bundle = '';

beforeAll(async () => {
  const entry = fileURLToPath(new URL('../packages/client/src/index.ts', import.meta.url));
  const out = await build({ entryPoints: [entry], bundle: true, format: 'iife', globalName: 'VigilClient', write: false, target: 'es2020' });
  bundle = out.outputFiles[0]!.text;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The test serves its page through Playwright's router, which Chromium's Local Network
      // Access checks treat as a public page reaching a loopback address: they would block the
      // WebSocket (the client then falls back to SSE, which is not what this test is about).
      '--disable-features=LocalNetworkAccessChecks',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  closeClients();
});

interface TabView {
  state: { status: string; transport?: string };
  role: string;
  events: string[];
  board: number;
}

describe.skipIf(!existsSync(CHROMIUM))('tab sharing in Chromium', () => {
  it('three tabs share one connection, and the leader closing hands over without a gap or duplicate', async () => {
    const hospital = freshHospital();
    const token = mintToken({ hospital, user: 'nurse-amy' });
    const base = sharedUrl();
    const context = await browser.newContext();
    // The page is served on the server's own origin (no CORS needed), by the test.
    await context.route(`${base}/__test/**`, (route) =>
      route.fulfill({
        contentType: 'text/html',
        body: `<!doctype html><meta charset="utf-8"><script>${bundle}</script><body>tab</body>`,
      }),
    );
    const open = async (): Promise<Page> => {
      const page = await context.newPage();
      await page.goto(`${base}/__test/board.html`);
      await page.evaluate(({ hospital, token }) => {
        const w = window as unknown as Record<string, unknown> & { VigilClient: typeof import('../packages/client/src/index.js') };
        const vigil = new w.VigilClient.Vigil({ baseUrl: location.origin, hospital, token: async () => token, share: true, topics: ['alerts'] });
        const events: string[] = [];
        vigil.onEvent((e) => events.push(`${e.position}:${String((e.data as Record<string, unknown>)['message'])}`));
        const board = vigil.live('alerts');
        let count = -1;
        board.subscribe((r) => {
          if (r.status === 'ready') count = (r.data as { alerts: unknown[] }).alerts.length;
        });
        w['view'] = () => ({ role: vigil.role.get(), events, board: count, state: vigil.connection.get() });
      }, { hospital, token });
      return page;
    };
    const view = (p: Page) => p.evaluate(() => (window as unknown as { view: () => TabView }).view());
    const pages = [await open(), await open(), await open()];

    // Exactly one leader; the user holds one connection for three tabs.
    const watcher = makeClient(base, hospital, { user: 'dr-rao', role: 'physician' });
    const presence = watcher.presence();
    presence.subscribe(() => undefined);
    const roles = async () => Promise.all(pages.map(async (p) => (await view(p)).role));
    for (let i = 0; i < 100 && (await roles()).filter((r) => r === 'leader').length !== 1; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await roles()).sort()).toEqual(['follower', 'follower', 'leader']);
    for (let i = 0; i < 100 && (await view(pages[0]!)).state.transport !== 'websocket'; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await Promise.all(pages.map(view))).map((v) => v.state)).toEqual(Array(3).fill({ status: 'connected', transport: 'websocket' }));
    await waitFor(() => presence.get().find((e) => e.user === 'nurse-amy')?.connections === 1, 15_000,
      'one connection for three tabs').catch(async (e) => {
      throw new Error(`${String(e)}: ${JSON.stringify(presence.get())} ${JSON.stringify(await Promise.all(pages.map(view)))}`);
    });

    const raise = (m: string) => api(base, hospital, 'POST', 'alerts', { severity: 'low', message: m }, mintToken({ hospital, user: 'ops', role: 'operator' }));
    for (const m of ['a1', 'a2', 'a3']) await raise(m);
    const allHave = async (ps: Page[], n: number) => {
      for (let i = 0; i < 200; i++) {
        const views = await Promise.all(ps.map(view));
        if (views.every((v) => v.events.length >= n && v.board >= n)) return views;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`not every tab got ${n} events: ${JSON.stringify(await Promise.all(ps.map(view)))}`);
    };
    await allHave(pages, 3);

    // The leader's tab closes; alerts keep coming during the hand-over.
    const leaderIndex = (await roles()).indexOf('leader');
    const leader = pages[leaderIndex]!;
    const rest = pages.filter((p) => p !== leader);
    const closing = leader.close();
    for (const m of ['b1', 'b2', 'b3']) await raise(m);
    await closing;
    const views = await allHave(rest, 6);

    const messages = ['a1', 'a2', 'a3', 'b1', 'b2', 'b3'];
    for (const v of views) {
      expect(v.events.map((e) => e.split(':')[1])).toEqual(messages);
      expect(new Set(v.events).size).toBe(6);
      expect(v.board).toBe(6);
    }
    expect(views.map((v) => v.role).sort()).toEqual(['follower', 'leader']);
    await waitFor(() => presence.get().find((e) => e.user === 'nurse-amy')?.connections === 1, 15_000, 'still one connection');
    await context.close();
  });
});
