// Starts a real `vigil serve` for the tests and the OpenAPI generator: its own temporary data dir
// (embedded PostgreSQL), a free port, tokens minted with `vigil token`. No mocks.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (clients/js/scripts → ../../..). */
export const repoRoot = resolve(here, '..', '..', '..');

/** The vigil binary: VIGIL_BIN, else target/release, else target/debug (built if missing). */
export function vigilBinary() {
  if (process.env.VIGIL_BIN) return process.env.VIGIL_BIN;
  // The newest of the release and debug builds (a stale one must not shadow a fresh one).
  const built = ['release', 'debug']
    .map((profile) => join(repoRoot, 'target', profile, 'vigil'))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (built[0]) return built[0];
  execFileSync('cargo', ['build', '--bin', 'vigil'], { cwd: repoRoot, stdio: 'inherit' });
  return join(repoRoot, 'target', 'debug', 'vigil');
}

function withoutDatabaseUrl() {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  return env;
}

export async function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

/**
 * A running server. `stop()` ends it (SIGTERM, so it stops its PostgreSQL); `restart()` stops
 * and starts it again on the same port and data dir (positions and epoch survive).
 */
export class VigilServer {
  constructor({ dataDir, port, env, args }) {
    this.dataDir = dataDir;
    this.port = port;
    this.env = env ?? {};
    /** Extra `vigil serve` arguments (the console's tests pass `--demo`). */
    this.args = args ?? [];
    this.bin = vigilBinary();
    this.proc = null;
    this.log = '';
  }

  static async start(opts = {}) {
    const dataDir = mkdtempSync(join(tmpdir(), 'vigil-js-'));
    const server = new VigilServer({ dataDir, port: await freePort(), env: opts.env, args: opts.args });
    await server.startProcess();
    return server;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async startProcess() {
    const env = { ...withoutDatabaseUrl(), ...this.env };
    this.proc = spawn(this.bin, ['serve', '--bind', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, ...this.args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const append = (d) => {
      this.log += d.toString();
      if (this.log.length > 200_000) this.log = this.log.slice(-100_000);
    };
    this.proc.stdout.on('data', append);
    this.proc.stderr.on('data', append);
    const exited = new Promise((res) => this.proc.once('exit', res));
    this.exited = exited;
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`vigil serve exited: ${this.log}`);
      try {
        const r = await fetch(`${this.url}/readyz`);
        if (r.ok) return;
      } catch {
        /* not up yet */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`vigil serve did not become ready: ${this.log}`);
  }

  async stopProcess() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(killer);
  }

  async restart() {
    await this.stopProcess();
    await this.startProcess();
  }

  token({ hospital = 'h1', user = 'nurse-amy', role = 'nurse', ttl = '1h' } = {}) {
    return execFileSync(
      this.bin,
      ['token', '--hospital', hospital, '--user', user, '--role', role, '--ttl', ttl, '--data-dir', this.dataDir],
      { env: withoutDatabaseUrl(), encoding: 'utf8' },
    ).trim();
  }

  async stop() {
    await this.stopProcess();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
