/**
 * Live queries: one REST read gives the rows and `as_of` (the stream position the read model
 * reflects); every later relevant event triggers a re-read with `min_position` = that event's
 * position, so the result always equals what the server's read model says at a known position.
 * Re-reading instead of patching rows client-side keeps the server's projection logic (counts,
 * ordering, unread numbers, in-range flags) in one place.
 *
 * The snapshot→live handoff has no gap: a query loads only once the client knows its stream
 * position P (from `subscribed`) and asks for `min_position = P`, so `as_of ≥ P`; the stream
 * then delivers every event after P, and the query ignores those at or below `as_of`.
 */
import type { QueryOf, ResultOf } from './api-types.js';
import type { StreamEvent } from './frames.js';
import { VigilHttpError, VigilNetworkError } from './http.js';
import { Store, type Observable } from './store.js';

type H = '/api/hospitals/{hospital}';

/** Every kind of live query, its parameters and its result. */
export interface LiveKinds {
  alerts: { params: QueryOf<`${H}/alerts`, 'get'>; data: ResultOf<`${H}/alerts`, 'get'> };
  cases: { params: QueryOf<`${H}/cases`, 'get'>; data: ResultOf<`${H}/cases`, 'get'> };
  case: { params: { id: string }; data: ResultOf<`${H}/cases/{id}`, 'get'> };
  patient: { params: { patient: string }; data: ResultOf<`${H}/patients/{patient}`, 'get'> };
  appointments: { params: QueryOf<`${H}/appointments`, 'get'>; data: ResultOf<`${H}/appointments`, 'get'> };
  notifications: { params: QueryOf<`${H}/notifications`, 'get'>; data: ResultOf<`${H}/notifications`, 'get'> };
  metrics: { params: Record<string, never>; data: ResultOf<`${H}/metrics`, 'get'> };
}
/** A live query's name. */
export type LiveKind = keyof LiveKinds;

/** What a live query shows. */
export interface LiveResult<T> {
  /** `loading` until the first read; `error` if a read was refused (a 4xx). */
  readonly status: 'loading' | 'ready' | 'error';
  readonly data: T | undefined;
  /** The stream position `data` reflects (the read's `as_of`). */
  readonly position: number | null;
  /** True while a re-read for newer events is under way. */
  readonly refreshing: boolean;
  readonly error: unknown;
}

interface Definition {
  path(params: Record<string, unknown>): string;
  query(params: Record<string, unknown>): Record<string, string | number | boolean | null | undefined>;
  topics(params: Record<string, unknown>): string[];
  relevant(event: StreamEvent, params: Record<string, unknown>): boolean;
}

type Query = Record<string, string | number | boolean | null | undefined>;
const asQuery = (p: Record<string, unknown>): Query => p as Query;

/** How each kind is read and which events concern it. */
export const LIVE_DEFINITIONS: Record<LiveKind, Definition> = {
  alerts: { path: () => 'alerts', query: asQuery, topics: () => ['alerts'], relevant: (e) => e.aggregate_type === 'alert' },
  cases: { path: () => 'cases', query: asQuery, topics: () => ['cases'], relevant: (e) => e.aggregate_type === 'case_thread' },
  case: {
    path: (p) => `cases/${encodeURIComponent(String(p['id']))}`,
    query: () => ({}),
    topics: (p) => [`case:${String(p['id'])}`],
    relevant: (e, p) => e.aggregate_type === 'case_thread' && e.aggregate_id === p['id'],
  },
  patient: {
    path: (p) => `patients/${encodeURIComponent(String(p['patient']))}`,
    query: () => ({}),
    topics: (p) => [`patient:${String(p['patient'])}`],
    relevant: (e, p) => e.topics.includes(`patient:${String(p['patient'])}`),
  },
  appointments: { path: () => 'appointments', query: asQuery, topics: () => ['appointments'], relevant: (e) => e.aggregate_type === 'appointment' },
  notifications: { path: () => 'notifications', query: asQuery, topics: () => ['notifications'], relevant: (e) => e.aggregate_type === 'notification' },
  // The `metrics` topic is not served yet (PROTOCOL: topic_unavailable): alerts drive the numbers.
  metrics: {
    path: () => 'metrics',
    query: () => ({}),
    topics: () => ['alerts'],
    relevant: (e) => e.aggregate_type === 'alert' || e.aggregate_type === 'case_thread',
  },
};

/** What a live query needs from the client core. */
export interface LiveHost {
  /** Resolves with the stream position once the client has one (after `subscribed`). */
  positioned(): Promise<number>;
  read<T>(path: string, query: Query): Promise<T>;
  acquireTopics(topics: readonly string[]): void;
  releaseTopics(topics: readonly string[]): void;
  onEvent(listener: (e: StreamEvent) => void): () => void;
  /** After `recovered: false`: `position` is where the stream continues. */
  onReload(listener: (position: number) => void): () => void;
  /** ms to wait before re-reading after a failed read (503, network). */
  retryDelay(attempt: number): number;
}

const INITIAL: LiveResult<never> = { status: 'loading', data: undefined, position: null, refreshing: false, error: undefined };

/** One live query: an {@link Observable} of its {@link LiveResult}, active while observed. */
export class LiveQuery<T> implements Observable<LiveResult<T>> {
  private readonly store = new Store<LiveResult<T>>(INITIAL);
  private readonly definition: Definition;
  private stopFns: (() => void)[] = [];
  private active = false;
  private loading = false;
  /** The newest position a read must reach (an event or a reset asked for it). */
  private wanted = 0;
  private stopTimer: ReturnType<typeof setTimeout> | null = null;
  private generation = 0;

  constructor(
    private readonly host: LiveHost,
    readonly kind: LiveKind,
    private readonly params: Record<string, unknown>,
  ) {
    this.definition = LIVE_DEFINITIONS[kind];
  }

  get(): LiveResult<T> {
    return this.store.get();
  }

  /**
   * Observes the result. The first listener starts the query; when the last leaves it stops a
   * tick later, so a React strict-mode unmount/remount does not read twice.
   */
  subscribe(listener: (value: LiveResult<T>) => void): () => void {
    const off = this.store.subscribe(listener);
    if (this.stopTimer) {
      clearTimeout(this.stopTimer);
      this.stopTimer = null;
    }
    if (!this.active) this.start();
    return () => {
      off();
      if (this.store.listenerCount === 0 && this.active && !this.stopTimer) {
        this.stopTimer = setTimeout(() => {
          this.stopTimer = null;
          if (this.store.listenerCount === 0) this.stop();
        }, 0);
      }
    };
  }

  /** Resolves with the first (or current) ready result. */
  async ready(): Promise<LiveResult<T>> {
    const now = this.get();
    if (now.status === 'ready') return now;
    return new Promise((resolve, reject) => {
      const off = this.subscribe((r) => {
        if (r.status === 'ready') {
          queueMicrotask(off);
          resolve(r);
        } else if (r.status === 'error') {
          queueMicrotask(off);
          reject(r.error);
        }
      });
    });
  }

  /** Stops following the stream now (the client is closing), whoever still listens. */
  dispose(): void {
    if (this.stopTimer) clearTimeout(this.stopTimer);
    this.stopTimer = null;
    if (this.active) this.stop();
  }

  private start(): void {
    this.active = true;
    const generation = ++this.generation;
    const topics = this.definition.topics(this.params);
    this.host.acquireTopics(topics);
    this.stopFns = [
      () => this.host.releaseTopics(topics),
      this.host.onEvent((e) => {
        if (!this.definition.relevant(e, this.params)) return;
        const { position } = this.get();
        if (position !== null && e.position <= position) return;
        this.want(e.position);
      }),
      this.host.onReload((position) => this.want(position, true)),
    ];
    void this.host.positioned().then((p) => {
      if (this.generation === generation) this.want(p, true);
    });
  }

  private stop(): void {
    this.active = false;
    this.generation += 1;
    for (const fn of this.stopFns) fn();
    this.stopFns = [];
  }

  /**
   * Asks for a read at `position` or later. `reset`: the stream restarted at `position` (another
   * history after `recovered: false`), so older wishes are void — they may lie beyond its end.
   */
  private want(position: number, reset = false): void {
    if (reset) {
      this.forced = true;
      this.wanted = position;
      if (this.get().position !== null) this.store.set({ ...this.get(), position: null });
    } else this.wanted = Math.max(this.wanted, position);
    if (!this.loading) void this.load();
  }

  private forced = false;

  private async load(): Promise<void> {
    const generation = this.generation;
    this.loading = true;
    let attempt = 0;
    try {
      for (;;) {
        const current = this.get();
        const need = this.forced || current.position === null || this.wanted > current.position;
        if (!need || !this.active || generation !== this.generation) return;
        const target = this.wanted;
        this.forced = false;
        if (current.status === 'ready') this.store.set({ ...current, refreshing: true });
        try {
          const body = await this.host.read<T & { as_of: number }>(this.definition.path(this.params), {
            ...this.definition.query(this.params),
            ...(target > 0 ? { min_position: target } : {}),
          });
          if (generation !== this.generation) return;
          attempt = 0;
          this.store.set({ status: 'ready', data: body, position: body.as_of, refreshing: false, error: undefined });
        } catch (error) {
          if (generation !== this.generation) return;
          const retryable =
            error instanceof VigilNetworkError || (error instanceof VigilHttpError && (error.status === 503 || error.status === 429));
          if (!retryable) {
            this.store.set({ ...this.get(), status: 'error', refreshing: false, error });
            return;
          }
          this.forced = true;
          await new Promise((r) => setTimeout(r, this.host.retryDelay(attempt)));
          attempt += 1;
        }
      }
    } finally {
      this.loading = false;
    }
  }
}
