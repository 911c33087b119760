/**
 * The command outbox: every command gets an `Idempotency-Key`, is persisted before it is sent,
 * and is retried with the same key until it has a final answer. When the answer is lost
 * (network error, timeout), or the server says the outcome is not final (503
 * `unavailable`/`outcome_unknown`, 409 `idempotency_key_in_flight`, 429), the same request with
 * the same key is sent again later — when the connection returns or after a backoff. The server
 * applies a keyed command at most once (a retry of a committed command replays its first
 * answer), so each command is applied exactly once.
 *
 * Order, by lane: commands of one lane are sent one at a time in the order issued (a `resolve`
 * never overtakes the `acknowledge` of the same alert); lanes are independent, so one command
 * that keeps failing or hangs holds only its own lane. The default lane is the aggregate a
 * command targets (`alerts/<id>`), or its collection for a create (`alerts`: alerts raised
 * offline are raised in order); `{ lane }` on a command overrides it. A command retried
 * `stuckAfter` times is reported `stuck` (still retried), and can be cancelled or retried now.
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
  /** Commands of one lane are sent in order (default: {@link laneOf} the path). */
  readonly lane?: string;
}

/** Per-command options, the last argument of every command method. */
export interface CommandOptions {
  /**
   * Commands with the same lane are sent one after another in the order issued; commands of
   * different lanes do not wait for each other. Default: the targeted aggregate
   * (`alerts/<id>`), or the collection for a create (`alerts`).
   */
  readonly lane?: string;
}

/** The default lane of a command path: `alerts/<id>/acknowledge` → `alerts/<id>`; `alerts` → `alerts`. */
export function laneOf(path: string): string {
  return path.split('/').slice(0, 2).join('/');
}

/** Where a command stands, for optimistic UI. */
export type CommandStatus =
  | { readonly status: 'pending'; readonly attempts: number; readonly lastError?: string }
  | {
      /**
       * Still retried, but `attempts` failed in a row (`stuckAfter`): say so in the UI, offer
       * `cancel()` or `retry()`. Other lanes are not held by it.
       */
      readonly status: 'stuck';
      readonly attempts: number;
      /** Why the last attempt failed (e.g. `timed out`, `503 unavailable`). */
      readonly reason: string;
    }
  | {
      readonly status: 'committed';
      readonly outcome: CommandOutcome;
      /** Stream positions of the command's events: read with `min_position` to see them. */
      readonly positions: readonly number[];
      /** The answer is the replay of an earlier attempt that had committed. */
      readonly replayed: boolean;
    }
  | { readonly status: 'rejected'; readonly problem: Problem | undefined; readonly httpStatus: number }
  | {
      /**
       * No longer retried: `cancelled` by the application. If it had been sent (`attempts` >
       * 0) it may have been applied; `retry()` sends it again with the same key, which
       * either applies it or replays the first answer — never twice.
       */
      readonly status: 'failed';
      readonly reason: 'cancelled';
      readonly attempts: number;
      readonly lastError?: string;
    };

/** A command's handle: observe its status, or await its outcome. */
export class PendingCommand implements Observable<CommandStatus> {
  private readonly store = new Store<CommandStatus>({ status: 'pending', attempts: 0 });
  /** Resolves with the outcome once committed; rejects with a {@link VigilHttpError} if rejected. */
  result: Promise<CommandOutcome>;
  private settle!: { resolve: (o: CommandOutcome) => void; reject: (e: VigilHttpError) => void };
  /**
   * Resolves once the command is in storage: from then on it survives a reload or an app
   * restart (await it before telling the user "saved, will send when online").
   */
  stored: Promise<void> = Promise.resolve();

  /** @internal The outbox that holds it (set when queued). */
  owner: { cancel(c: PendingCommand): void; retry(c: PendingCommand): void } | null = null;

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

  /**
   * Stops retrying it and takes it out of the outbox (status `failed`, reason `cancelled`);
   * `result` rejects. No effect once it is committed or rejected.
   */
  cancel(): void {
    this.owner?.cancel(this);
  }

  /** Sends it again now: a `stuck` one without waiting out its backoff, a `failed` one at all. */
  retry(): void {
    this.owner?.retry(this);
  }

  /** @internal */
  update(status: CommandStatus, error?: VigilHttpError): void {
    this.store.set(status);
    if (status.status === 'committed') this.settle.resolve(status.outcome);
    if ((status.status === 'rejected' || status.status === 'failed') && error) this.settle.reject(error);
  }

  /** @internal A command retried after `failed` answers on a fresh `result`. */
  reopen(): void {
    this.result = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.result.catch(() => undefined);
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
  /** Failed attempts in a row after which a command is reported `stuck` (default 4). */
  readonly stuckAfter?: number;
}

/** Is this failure one whose retry (same key) is safe and may succeed? */
export function isRetryable(error: unknown): boolean {
  if (error instanceof VigilNetworkError) return true;
  if (!(error instanceof VigilHttpError)) return false;
  if (error.status === 503 || error.status === 429) return true;
  return error.status === 409 && error.code === 'idempotency_key_in_flight';
}

/** The persisted queue of commands without a final answer, sent in order per lane. */
export class Outbox {
  private readonly queue: PendingCommand[] = [];
  /** Every command not yet answered, oldest first. */
  readonly pending = new Store<readonly PendingCommand[]>([]);
  /** The lanes being sent, each by one worker. */
  private readonly workers = new Set<string>();
  /** Wakes a lane's worker from its backoff (to retry now). */
  private readonly wakers = new Map<string, () => void>();
  private loaded: Promise<void>;
  private closed = false;

  constructor(private readonly host: OutboxHost) {
    this.loaded = this.restore();
  }

  /** Queues a command and starts sending; the handle reports its fate. */
  enqueue(record: OutboxRecord): PendingCommand {
    const command = new PendingCommand(record);
    this.add(command);
    command.stored = this.loaded.then(() => this.persist());
    command.stored.catch(() => undefined);
    void command.stored.then(() => this.kick());
    return command;
  }

  private add(command: PendingCommand): void {
    command.owner = this;
    this.queue.push(command);
    this.publish();
  }

  /** Retry now (the connection came back, the network is online). */
  kick(): void {
    for (const wake of [...this.wakers.values()]) wake();
    if (this.closed) return;
    void this.loaded.then(() => {
      for (const command of this.queue) this.startLane(lane(command));
    });
  }

  /** Stops sending (the client was closed); queued commands stay persisted. */
  close(): void {
    this.closed = true;
    this.kick();
  }

  /** @internal See {@link PendingCommand.cancel}. */
  cancel(command: PendingCommand): void {
    const index = this.queue.indexOf(command);
    if (index < 0) return;
    this.queue.splice(index, 1);
    void this.persist();
    this.publish();
    const before = command.get();
    const attempts = before.status === 'pending' || before.status === 'stuck' ? before.attempts : 0;
    const lastError = before.status === 'pending' ? before.lastError : before.status === 'stuck' ? before.reason : undefined;
    command.update(
      { status: 'failed', reason: 'cancelled', attempts, ...(lastError === undefined ? {} : { lastError }) },
      new VigilHttpError(0, undefined, null),
    );
    this.wakers.get(lane(command))?.();
  }

  /** @internal See {@link PendingCommand.retry}. */
  retry(command: PendingCommand): void {
    if (this.queue.includes(command)) {
      this.wakers.get(lane(command))?.();
      return;
    }
    if (command.get().status !== 'failed') return;
    command.reopen();
    command.update({ status: 'pending', attempts: 0 });
    this.add(command);
    void this.persist().then(() => this.kick());
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
      const restored = records.filter((r) => !known.has(r.key)).map((r) => new PendingCommand(r));
      for (const c of restored) c.owner = this;
      this.queue.unshift(...restored);
      this.publish();
    } catch {
      /* a corrupt outbox is dropped rather than blocking every later command */
    }
  }

  private async persist(): Promise<void> {
    await this.host.storage.setItem(this.host.storageKey, JSON.stringify(this.queue.map((c) => c.record)));
  }

  private sleep(laneName: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakers.delete(laneName);
        resolve();
      }, ms);
      this.wakers.set(laneName, () => {
        this.wakers.delete(laneName);
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private startLane(name: string): void {
    if (this.closed || this.workers.has(name)) return;
    this.workers.add(name);
    void this.drain(name).finally(() => this.workers.delete(name));
  }

  /** Sends the commands of one lane, one at a time, oldest first, until none is left. */
  private async drain(name: string): Promise<void> {
    await this.loaded;
    let attempt = 0;
    while (!this.closed) {
      const head = this.queue.find((c) => lane(c) === name);
      if (!head) break;
      if (!this.host.isOnline()) {
        await this.sleep(name, this.host.retryDelay(attempt));
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
        // The answer is the truth even for a command cancelled meanwhile.
        const index = this.queue.indexOf(head);
        if (index >= 0) this.queue.splice(index, 1);
        await this.persist();
        this.publish();
        head.update({
          status: 'committed',
          outcome: res.body,
          positions: res.body.events.map((e) => Number(e.position)),
          replayed: res.headers.get('idempotent-replayed') === 'true',
        });
      } catch (error) {
        if (!this.queue.includes(head)) {
          attempt = 0; // cancelled while the attempt was under way
          continue;
        }
        if (isRetryable(error)) {
          const wait =
            error instanceof VigilHttpError && error.retryAfter !== undefined
              ? error.retryAfter * 1000
              : this.host.retryDelay(attempt);
          attempt += 1;
          const reason = describe(error);
          head.update(
            attempt >= (this.host.stuckAfter ?? 4)
              ? { status: 'stuck', attempts: attempt, reason }
              : { status: 'pending', attempts: attempt, lastError: reason },
          );
          await this.sleep(name, wait);
          continue;
        }
        attempt = 0;
        const index = this.queue.indexOf(head);
        if (index >= 0) this.queue.splice(index, 1);
        await this.persist();
        this.publish();
        if (error instanceof VigilHttpError) {
          head.update({ status: 'rejected', problem: error.problem, httpStatus: error.status }, error);
        } else {
          head.update({ status: 'rejected', problem: undefined, httpStatus: 0 }, new VigilHttpError(0, undefined, null));
        }
      }
    }
  }
}

function lane(command: PendingCommand): string {
  return command.record.lane ?? laneOf(command.record.path);
}

function describe(error: unknown): string {
  if (error instanceof VigilHttpError) return `${error.status} ${error.code}`;
  if (error instanceof VigilNetworkError) {
    const cause = error.cause;
    return cause instanceof Error && cause.name === 'AbortError' ? 'timed out' : 'network error';
  }
  return error instanceof Error ? error.message : String(error);
}
