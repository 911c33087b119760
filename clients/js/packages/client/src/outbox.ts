/**
 * The command outbox: every command gets an `Idempotency-Key`, is persisted before it is sent,
 * and is sent in order, one at a time. When the answer is lost (network error, timeout), or the
 * server says the outcome is not final (503 `unavailable`/`outcome_unknown`, 409
 * `idempotency_key_in_flight`, 429), the same request with the same key is sent again later —
 * when the connection returns or after a backoff. The server applies a keyed command at most
 * once (a retry of a committed command replays its first answer), and the outbox retries until
 * it has an answer, so each command is applied exactly once.
 *
 * Order: a command is not sent before every earlier one has an answer, so a `resolve` issued
 * offline after a `raise` never overtakes it.
 */
import type { CommandOutcome, Problem } from './api-types.js';
import { request, VigilHttpError, VigilNetworkError, type HttpOptions } from './http.js';
import { Store, type Observable } from './store.js';
import type { VigilStorage } from './storage.js';

/** A command as stored in the outbox. */
export interface OutboxRecord {
  /** The `Idempotency-Key`: the command's identity across retries and restarts. */
  readonly key: string;
  readonly method: 'POST' | 'PUT';
  /** Path below `/api/hospitals/{hospital}/`. */
  readonly path: string;
  readonly body?: unknown;
  /** When it was issued (ms since the epoch). */
  readonly issuedAt: number;
}

/** Where a command stands, for optimistic UI. */
export type CommandStatus =
  | { readonly status: 'pending'; readonly attempts: number; readonly lastError?: string }
  | {
      readonly status: 'committed';
      readonly outcome: CommandOutcome;
      /** Stream positions of the command's events: read with `min_position` to see them. */
      readonly positions: readonly number[];
      /** The answer is the replay of an earlier attempt that had committed. */
      readonly replayed: boolean;
    }
  | { readonly status: 'rejected'; readonly problem: Problem | undefined; readonly httpStatus: number };

/** A command's handle: observe its status, or await its outcome. */
export class PendingCommand implements Observable<CommandStatus> {
  private readonly store = new Store<CommandStatus>({ status: 'pending', attempts: 0 });
  /** Resolves with the outcome once committed; rejects with a {@link VigilHttpError} if rejected. */
  readonly result: Promise<CommandOutcome>;
  private settle!: { resolve: (o: CommandOutcome) => void; reject: (e: VigilHttpError) => void };
  /**
   * Resolves once the command is in storage: from then on it survives a reload or an app
   * restart (await it before telling the user "saved, will send when online").
   */
  stored: Promise<void> = Promise.resolve();

  constructor(readonly record: OutboxRecord) {
    this.result = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // A caller that only observes the status must not see an unhandled rejection.
    this.result.catch(() => undefined);
  }

  get key(): string {
    return this.record.key;
  }
  get(): CommandStatus {
    return this.store.get();
  }
  subscribe(listener: (s: CommandStatus) => void): () => void {
    return this.store.subscribe(listener);
  }

  /** @internal */
  update(status: CommandStatus, error?: VigilHttpError): void {
    this.store.set(status);
    if (status.status === 'committed') this.settle.resolve(status.outcome);
    if (status.status === 'rejected' && error) this.settle.reject(error);
  }
}

/** What the outbox needs from the client core. */
export interface OutboxHost {
  readonly http: HttpOptions;
  readonly storage: VigilStorage;
  readonly storageKey: string;
  /** Delay before retry `attempt` after a network error or 503. */
  retryDelay(attempt: number): number;
  /** False while the platform or the connection says the network is down. */
  isOnline(): boolean;
}

/** Is this failure one whose retry (same key) is safe and may succeed? */
export function isRetryable(error: unknown): boolean {
  if (error instanceof VigilNetworkError) return true;
  if (!(error instanceof VigilHttpError)) return false;
  if (error.status === 503 || error.status === 429) return true;
  return error.status === 409 && error.code === 'idempotency_key_in_flight';
}

/** The ordered, persisted queue of commands without a final answer. */
export class Outbox {
  private readonly queue: PendingCommand[] = [];
  /** Every command not yet answered, oldest first. */
  readonly pending = new Store<readonly PendingCommand[]>([]);
  private draining = false;
  private wake: (() => void) | null = null;
  private loaded: Promise<void>;
  private closed = false;

  constructor(private readonly host: OutboxHost) {
    this.loaded = this.restore();
  }

  /** Queues a command and starts sending; the handle reports its fate. */
  enqueue(record: OutboxRecord): PendingCommand {
    const command = new PendingCommand(record);
    this.queue.push(command);
    this.publish();
    command.stored = this.loaded.then(() => this.persist());
    command.stored.catch(() => undefined);
    void command.stored.then(() => this.kick());
    return command;
  }

  /** Retry now (the connection came back, the network is online). */
  kick(): void {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
      return;
    }
    if (!this.draining) void this.drain();
  }

  /** Stops sending (the client was closed); queued commands stay persisted. */
  close(): void {
    this.closed = true;
    this.kick();
  }

  private publish(): void {
    this.pending.set([...this.queue]);
  }

  private async restore(): Promise<void> {
    const text = await this.host.storage.getItem(this.host.storageKey);
    if (!text) return;
    try {
      const records = JSON.parse(text) as OutboxRecord[];
      const known = new Set(this.queue.map((c) => c.key));
      this.queue.unshift(...records.filter((r) => !known.has(r.key)).map((r) => new PendingCommand(r)));
      this.publish();
    } catch {
      /* a corrupt outbox is dropped rather than blocking every later command */
    }
  }

  private async persist(): Promise<void> {
    await this.host.storage.setItem(this.host.storageKey, JSON.stringify(this.queue.map((c) => c.record)));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      await this.loaded;
      let attempt = 0;
      while (!this.closed) {
        const head = this.queue[0];
        if (!head) break;
        if (!this.host.isOnline()) {
          await this.sleep(this.host.retryDelay(attempt));
          continue;
        }
        try {
          const res = await request<CommandOutcome>(this.host.http, {
            method: head.record.method,
            path: head.record.path,
            body: head.record.body,
            headers: { 'idempotency-key': head.record.key },
          });
          attempt = 0;
          this.queue.shift();
          await this.persist();
          this.publish();
          head.update({
            status: 'committed',
            outcome: res.body,
            positions: res.body.events.map((e) => Number(e.position)),
            replayed: res.headers.get('idempotent-replayed') === 'true',
          });
        } catch (error) {
          if (isRetryable(error)) {
            const wait =
              error instanceof VigilHttpError && error.retryAfter !== undefined
                ? error.retryAfter * 1000
                : this.host.retryDelay(attempt);
            attempt += 1;
            head.update({
              status: 'pending',
              attempts: attempt,
              lastError: error instanceof Error ? error.message : String(error),
            });
            await this.sleep(wait);
            continue;
          }
          attempt = 0;
          this.queue.shift();
          await this.persist();
          this.publish();
          if (error instanceof VigilHttpError) {
            head.update({ status: 'rejected', problem: error.problem, httpStatus: error.status }, error);
          } else {
            head.update(
              { status: 'rejected', problem: undefined, httpStatus: 0 },
              new VigilHttpError(0, undefined, null),
            );
          }
        }
      }
    } finally {
      this.draining = false;
    }
  }
}
