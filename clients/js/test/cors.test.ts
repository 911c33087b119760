// CORS: a hospital app on another origin (https://ward.example) calls a Vigil that allows it
// (`--cors-allowed-origins`): preflight, REST answers (problems included), SSE and the
// WebSocket Origin check, with real requests; then the whole client in headless Chromium from
// a page of that origin. A Vigil that does not list the origin (the default) refuses it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser } from 'playwright-core';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshHospital, mintToken, sharedUrl, VigilServer } from './helpers.js';

const WARD = 'https://ward.example';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
let server: VigilServer;

beforeAll(async () => {
  server = await VigilServer.start({ args: ['--cors-allowed-origins', `${WARD},https://clinic.example`] });
});
afterAll(async () => {
  await server?.stop();
});

/** Opens a WebSocket with `origin` (or none); resolves with the handshake's status. */
function upgrade(base: string, hospital: string, origin?: string): Promise<number> {
  const url = `${base.replace('http', 'ws')}/api/hospitals/${hospital}/ws`;
  return new Promise((resolve) => {
    const ws = new WebSocket(url, origin ? { origin } : {});
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('error', () => undefined);
  });
}

describe('CORS with an allowed origin', () => {
  it('answers the preflight of a command from the allowed origin', async () => {
    const hospital = freshHospital();
    const res = await fetch(`${server.url}/api/hospitals/${hospital}/alerts`, {
      method: 'OPTIONS',
      headers: {
        origin: WARD,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type, idempotency-key',
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe(WARD);
    expect(res.headers.get('access-control-allow-methods')).toContain('POST');
    expect(res.headers.get('access-control-allow-headers')).toContain('idempotency-key');
    expect(res.headers.get('access-control-allow-headers')).toContain('authorization');
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('marks answers, problems included, for the allowed origin and exposes the headers clients read', async () => {
    const hospital = freshHospital();
    const token = mintToken({ hospital }, server.dataDir);
    const created = await fetch(`${server.url}/api/hospitals/${hospital}/alerts`, {
      method: 'POST',
      headers: { origin: WARD, authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': crypto.randomUUID() },
      body: JSON.stringify({ severity: 'high', message: 'from the ward app' }),
    });
    expect(created.status).toBe(201);
    expect(created.headers.get('access-control-allow-origin')).toBe(WARD);
    expect(created.headers.get('access-control-expose-headers')).toContain('idempotent-replayed');
    expect(created.headers.get('vary')).toContain('Origin');
    const refused = await fetch(`${server.url}/api/hospitals/${hospital}/alerts`, { headers: { origin: WARD } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe(WARD);
  });

  it('gives no CORS headers to another origin', async () => {
    const hospital = freshHospital();
    const preflight = await fetch(`${server.url}/api/hospitals/${hospital}/alerts`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    const read = await fetch(`${server.url}/api/hospitals/${hospital}/alerts`, { headers: { origin: 'https://evil.example' } });
    expect(read.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('marks the SSE stream for the allowed origin', async () => {
    const hospital = freshHospital();
    const token = mintToken({ hospital }, server.dataDir);
    const ticket = await fetch(`${server.url}/api/hospitals/${hospital}/events/stream/tickets`, {
      method: 'POST',
      headers: { origin: WARD, authorization: `Bearer ${token}` },
    });
    expect(ticket.headers.get('access-control-allow-origin')).toBe(WARD);
    const { ticket: value } = (await ticket.json()) as { ticket: string };
    const controller = new AbortController();
    const stream = await fetch(`${server.url}/api/hospitals/${hospital}/events/stream?ticket=${value}&topics=alerts`, {
      headers: { origin: WARD, accept: 'text/event-stream' },
      signal: controller.signal,
    });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('access-control-allow-origin')).toBe(WARD);
    controller.abort();
  });

  it('lets WebSocket upgrades from its own origin, the allowed origins and non-browsers in, and refuses other origins', async () => {
    const hospital = freshHospital();
    expect(await upgrade(server.url, hospital, WARD)).toBe(101);
    expect(await upgrade(server.url, hospital, 'https://clinic.example')).toBe(101);
    expect(await upgrade(server.url, hospital, server.url)).toBe(101);
    expect(await upgrade(server.url, hospital)).toBe(101);
    expect(await upgrade(server.url, hospital, 'https://evil.example')).toBe(403);
  });
});

describe('CORS by default', () => {
  it('allows no other origin: no CORS headers, WebSocket refused', async () => {
    const hospital = freshHospital();
    const preflight = await fetch(`${sharedUrl()}/api/hospitals/${hospital}/alerts`, {
      method: 'OPTIONS',
      headers: { origin: WARD, 'access-control-request-method': 'POST' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    expect(await upgrade(sharedUrl(), hospital, WARD)).toBe(403);
    expect(await upgrade(sharedUrl(), hospital)).toBe(101);
  });
});

describe.skipIf(!existsSync(CHROMIUM))('a page of another origin in Chromium', () => {
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
        // The page's origin is served by Playwright's router; Local Network Access checks would
        // treat it as a public site reaching a loopback address, which is not what this tests.
        '--disable-features=LocalNetworkAccessChecks',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });

  /** Runs the client in a page of https://ward.example against `base`; reports what it saw. */
  async function runWardApp(base: string) {
    const hospital = freshHospital();
    const token = mintToken({ hospital }, base === server.url ? server.dataDir : undefined);
    const context = await browser.newContext();
    await context.route(`${WARD}/**`, (route) =>
      route.fulfill({ contentType: 'text/html', body: `<!doctype html><meta charset="utf-8"><script>${bundle}</script><body>ward</body>` }),
    );
    const page = await context.newPage();
    await page.goto(`${WARD}/board.html`);
    const seen = await page.evaluate(
      async ({ base, hospital, token }) => {
        const w = window as unknown as { VigilClient: typeof import('../packages/client/src/index.js') };
        const vigil = new w.VigilClient.Vigil({ baseUrl: base, hospital, token: async () => token, topics: ['alerts'], requestTimeout: 3000 });
        const board = vigil.live('alerts');
        board.subscribe(() => undefined);
        const raised = vigil.alerts.raise({ severity: 'critical', message: 'bed 4' });
        const deadline = Date.now() + 8000;
        while (Date.now() < deadline) {
          const s = vigil.connection.get();
          if (s.status === 'connected' && board.get().data?.alerts.length === 1 && raised.get().status === 'committed') break;
          await new Promise((r) => setTimeout(r, 100));
        }
        const result = {
          origin: location.origin,
          state: vigil.connection.get(),
          alerts: board.get().data?.alerts.length ?? -1,
          command: raised.get().status,
        };
        vigil.close();
        return result;
      },
      { base, hospital, token },
    );
    await context.close();
    return seen;
  }

  it('the client connects over WebSocket, reads and commands from an allowed origin', async () => {
    const seen = await runWardApp(server.url);
    expect(seen).toEqual({ origin: WARD, state: { status: 'connected', transport: 'websocket' }, alerts: 1, command: 'committed' });
  });

  it('gets nothing through from an origin the server does not allow', async () => {
    const seen = await runWardApp(sharedUrl());
    expect(seen.origin).toBe(WARD);
    expect(seen.state.status).not.toBe('connected');
    expect(seen.alerts).toBe(-1);
    expect(seen.command).not.toBe('committed');
  });
});
