// Test helpers: real servers, tokens from `vigil token`, a TCP proxy that simulates network
// loss and upgrade-refusing middleboxes, and waiting on conditions (never fixed sleeps for
// absence checks).
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { Vigil, type StreamEvent, type VigilOptions } from '../packages/client/src/index.js';
// @ts-expect-error plain ESM script without types
import { VigilServer, vigilBinary, freePort } from '../scripts/server.mjs';

export { VigilServer, freePort };

/** The shared server's URL (started by global-setup.ts). */
/** The message of an `AlertRaised` event (the tests raise alerts), narrowed by its type. */
export function messageOf(e: StreamEvent): string | undefined {
  return e.event_type === 'AlertRaised' ? e.data.message : undefined;
}

export function sharedUrl(): string {
  return inject('vigilUrl');
}

/** A token from `vigil token` with the shared server's secret (or `dataDir`'s). */
export function mintToken(
  claims: { hospital: string; user?: string; role?: string; ttl?: string },
  dataDir: string = inject('vigilDataDir'),
): string {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  return execFileSync(
    vigilBinary(),
    [
      'token',
      '--hospital', claims.hospital,
      '--user', claims.user ?? 'nurse-amy',
      '--role', claims.role ?? 'nurse',
      '--ttl', claims.ttl ?? '1h',
      '--data-dir', dataDir,
    ],
    { env, encoding: 'utf8' },
  ).trim();
}

/** A hospital of its own for each test, so streams do not mix. */
export function freshHospital(): string {
  return `h-${randomUUID().slice(0, 8)}`;
}

/** A client on `baseUrl` with Node's WebSocket and EventSource, closed by `clients.closeAll()`. */
export function makeClient(
  baseUrl: string,
  hospital: string,
  options: Partial<VigilOptions> & { user?: string; role?: string; dataDir?: string } = {},
): Vigil {
  const { user, role, dataDir, ...rest } = options;
  const client = new Vigil({
    baseUrl,
    hospital,
    token: async () => mintToken({ hospital, user: user ?? 'nurse-amy', role: role ?? 'nurse' }, dataDir),
    WebSocket: WebSocket as unknown as VigilOptions['WebSocket'],
    EventSource: EventSource as unknown as VigilOptions['EventSource'],
    ...rest,
  });
  opened.push(client);
  return client;
}

const opened: Vigil[] = [];
/** Closes every client made since the last call. */
export function closeClients(): void {
  for (const c of opened.splice(0)) c.close();
}

/** Resolves when `predicate()` holds; fails after `timeout` ms with `message`. */
export async function waitFor<T>(predicate: () => T | undefined | false | null, timeout = 15_000, message = 'condition'): Promise<T> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${message}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A REST call straight to the server (no client): arrange and assert through the API. */
export async function api<T = unknown>(
  baseUrl: string,
  hospital: string,
  method: string,
  path: string,
  body?: unknown,
  token = mintToken({ hospital }),
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${baseUrl}/api/hospitals/${hospital}/${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/**
 * A TCP proxy between the client and the server, to fault the network for real:
 * - `refuseUpgrades`: answers WebSocket upgrade requests with 403 (a proxy that blocks them);
 * - `down()`: destroys every open connection and refuses new ones (the network is gone);
 * - `swallowResponses`: forwards requests but drops the server's answers and then cuts the
 *   connection — the request is applied, the client never learns it (the hardest case for
 *   exactly-once).
 */
export class TcpProxy {
  refuseUpgrades = false;
  /** Requests whose first line matches are answered 403 (e.g. SSE blocked too). */
  refuseRequests: RegExp | null = null;
  /**
   * Requests whose first line matches are held: never forwarded, never answered (a request
   * stuck in a proxy). The connection stays open until the client gives up.
   */
  stallRequests: RegExp | null = null;
  /** Requests held so far by `stallRequests`. */
  stalledRequests = 0;
  /** Stops forwarding in both directions without closing anything (a dead, silent link). */
  frozen = false;
  swallowResponses = false;
  private isDown = false;
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | null = null;
  port = 0;
  /** Upgrade requests refused so far. */
  refusedUpgrades = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  static async start(targetUrl: string): Promise<TcpProxy> {
    const u = new URL(targetUrl);
    const proxy = new TcpProxy({ host: u.hostname, port: Number(u.port) });
    await proxy.listen();
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private listen(): Promise<void> {
    this.server = net.createServer((client) => this.handle(client));
    return new Promise((resolve) => this.server!.listen(0, '127.0.0.1', () => {
      this.port = (this.server!.address() as net.AddressInfo).port;
      resolve();
    }));
  }

  private handle(client: net.Socket): void {
    if (this.isDown) {
      client.destroy();
      return;
    }
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => undefined);
    let upstream: net.Socket | null = null;
    let first = true;
    let stalled = false;
    client.on('data', (chunk) => {
      if (stalled) return;
      // Checked on every chunk: keep-alive connections carry several requests.
      const line = chunk.toString('latin1').split('\r\n', 1)[0] ?? '';
      if (/^[A-Z]+ \S+ HTTP\/1/.test(line) && this.stallRequests?.test(line)) {
        stalled = true;
        this.stalledRequests += 1;
        return;
      }
      if (/^[A-Z]+ \S+ HTTP\/1/.test(line) && this.refuseRequests?.test(line)) {
        client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        upstream?.destroy();
        return;
      }
      if (first) {
        first = false;
        if (this.refuseUpgrades && /^upgrade:\s*websocket/im.test(chunk.toString('latin1'))) {
          this.refusedUpgrades += 1;
          client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
          return;
        }

        upstream = net.connect(this.target.port, this.target.host);
        this.sockets.add(upstream);
        upstream.on('close', () => {
          this.sockets.delete(upstream!);
          client.destroy();
        });
        upstream.on('error', () => client.destroy());
        client.on('close', () => upstream?.destroy());
        upstream.on('data', (d) => {
          if (this.swallowResponses) {
            // The server answered: the request was applied. Cut the line before the answer.
            upstream?.destroy();
            client.destroy();
            return;
          }
          if (!this.frozen) client.write(d);
        });
      }
      if (!this.frozen) upstream?.write(chunk);
    });
  }

  /** The network goes away: every connection is cut, new ones are refused. */
  down(): void {
    this.isDown = true;
    for (const s of this.sockets) s.destroy();
  }

  /** The network is back. */
  up(): void {
    this.isDown = false;
    this.swallowResponses = false;
  }

  /** Cuts every current connection (the network blips) without refusing new ones. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.down();
    await new Promise((r) => this.server?.close(r));
  }
}
