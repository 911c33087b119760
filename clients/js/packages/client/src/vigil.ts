/**
 * The client core: one connection to a hospital's stream, driven by the state machine in
 * state.ts, that keeps the last position and epoch (resume), moves between transports (fallback
 * and return), feeds live queries, and owns the command outbox.
 *
 * Its central invariant: the client's position only advances over events it has handed to its
 * listeners, and an event at or below the position is dropped. Every (re)connect, on any
 * transport, resumes from that position; so no transport switch, reconnect or restart can lose
 * or repeat an event.
 */
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import type { EventFrame, ServerFrame, StreamEvent, PresenceEntry, UserRef } from './frames.js';
import { request, type FetchLike, type HttpOptions } from './http.js';
import { LiveQuery, type LiveHost, type LiveKind, type LiveKinds, type LiveResult } from './live.js';
import { Outbox, type OutboxHost, type PendingCommand } from './outbox.js';
import { CoalescingWriter, memoryStorage, type VigilStorage } from './storage.js';
import { Store, type Observable } from './store.js';
import {
  DEFAULT_POLICY,
  transition,
  type ConnectionEffect,
  type ConnectionInput,
  type ConnectionState,
  type MachineContext,
  type MachinePolicy,
  type TransportName,
} from './state.js';
import {
  openTransport,
  type EventSourceConstructor,
  type TransportConnection,
  type WebSocketConstructor,
} from './transports.js';
import { createCommands, type Commands } from './commands.js';
import { canShare, tabId, TabShare, type TabMessage } from './share.js';
import type { ClientFrame } from './frames.js';

/** Timers the client uses; injected in tests so delays are checked with a fake clock. */
export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

const systemClock: Clock = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
};

/** Options of {@link Vigil}. */
export interface VigilOptions {
  /** The server, e.g. `https://vigil.example.org` (no trailing `/api`). */
  readonly baseUrl: string;
  readonly hospital: string;
  /** Returns a valid token; called at connect, on `token_expiring`, on close 4001 and once on a REST 401. */
  readonly token: () => Promise<string>;
  /** Where position, epoch and outbox survive a reload (default: memory). */
  readonly storage?: VigilStorage;
  /** Transports in fallback order (default: websocket, sse, polling). */
  readonly transports?: readonly TransportName[];
  /** Topics to subscribe to besides those live queries, presence, typing and views need. */
  readonly topics?: readonly string[];
  /** WebSocket implementation (default: the global one; `ws` in Node 20). */
  readonly WebSocket?: WebSocketConstructor;
  /** EventSource implementation (default: the global one; the `eventsource` package in Node). */
  readonly EventSource?: EventSourceConstructor;
  /** fetch implementation (default: the global one). */
  readonly fetch?: FetchLike;
  readonly backoff?: BackoffOptions;
  /** Randomness of the jitter (default Math.random). */
  readonly random?: () => number;
  readonly clock?: Clock;
  /** Handshake failures of one transport before falling back to the next (default 2). */
  readonly fallbackAfter?: number;
  /**
   * While on SSE or polling because a proxy refuses WebSocket upgrades (the server answers
   * HTTP, the upgrade fails), how often to try WebSocket again, ms (default 30 s).
   */
  readonly upgradeInterval?: number;
  /**
   * While on SSE or polling because the server could not be reached at all (a restart, a
   * network cut), the first WebSocket probe comes after this many ms and each next one after
   * twice as long, up to `upgradeInterval` (default 1 s: 1, 2, 4, … 30 s).
   */
  readonly upgradeProbeDelay?: number;
  /** WebSocket keep-alive: a `ping` frame this often; silence for two intervals = dead (default 20 s). */
  readonly pingInterval?: number;
  /** A connection up this long resets the backoff (default 10 s). */
  readonly stablePeriod?: number;
  /** Polling: ms between polls when caught up (default 1 s). */
  readonly pollInterval?: number;
  /** REST request timeout, ms (default 15 s). */
  readonly requestTimeout?: number;
  /**
   * One attempt of a command gives up after this many ms without an answer and is retried
   * with the same key (default: `requestTimeout`).
   */
  readonly commandTimeout?: number;
  /**
   * Failed attempts in a row after which a command is reported `stuck` (default 4): it is
   * still retried, holding only its own lane; `cancel()` or `retry()` it.
   */
  readonly stuckAfter?: number;
  /** Makes Idempotency-Keys (default crypto.randomUUID). */
  readonly generateKey?: () => string;
  /** Prefix of the storage keys (default `vigil:<baseUrl>:<hospital>`). */
  readonly storageKey?: string;
  /** Listen to the browser's online/offline and visibility events (default: when present). */
  readonly watchNetwork?: boolean;
  /** Do not connect until {@link Vigil.connect} is called. */
  readonly manualConnect?: boolean;
  /**
   * Share one connection between this origin's tabs (Web Locks + BroadcastChannel; ignored where
   * they are missing). Each tab keeps its own outbox.
   */
  readonly share?: boolean;
}

/** This client's part in tab sharing: `solo` (not sharing), `leader` (holds the connection), `follower`. */
export type TabRole = 'solo' | 'leader' | 'follower';

/** Why the stream could not be resumed (`subscribed.reason`). */
export type ResetReason = 'too_old' | 'epoch_changed' | 'unknown_position';

/** Errors the server reported about a frame (`forbidden_topic`, …) or a fatal close. */
export interface VigilErrorInfo {
  readonly code: string;
  readonly message: string;
}

interface Saved {
  position: number;
  epoch: string | null;
  /**
   * The epoch came with an empty stream (head 0): the server derives it from the database's
   * identity and accepts it on WebSocket and SSE resumes, but the stream's own epoch, minted
   * with its first event, differs from it, so the polling transport (which compares epochs
   * itself) must not take the difference for a reset.
   */
  provisional?: boolean;
}

function uuid(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const hex = [...Array(32)].map(() => Math.floor(Math.random() * 16).toString(16));
  hex[12] = '4';
  hex[16] = ((parseInt(hex[16] ?? '0', 16) & 3) | 8).toString(16);
  const h = hex.join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A client of one hospital on one Vigil server. */
export class Vigil {
  /** The connection's state, observable. */
  readonly connection: Store<ConnectionState> = new Store<ConnectionState>({ status: 'connecting' });
  /** Who is online (fed while someone observes {@link Vigil.presence}). */
  private readonly presenceStore = new Store<readonly PresenceEntry[]>([]);
  /** The typed REST commands, each through the outbox. */
  readonly alerts: Commands['alerts'];
  readonly cases: Commands['cases'];
  readonly vitals: Commands['vitals'];
  readonly appointments: Commands['appointments'];
  readonly notifications: Commands['notifications'];
  /** Commands without a final answer yet (including those restored from storage). */
  readonly outbox: Outbox;
  /** Whether this tab holds the shared connection (see the `share` option). */
  readonly role = new Store<TabRole>('solo');

  private readonly options: VigilOptions;
  private readonly storage: VigilStorage;
  private readonly clock: Clock;
  private readonly policy: MachinePolicy;
  private readonly http: HttpOptions;
  private readonly transports: readonly TransportName[];
  private context: MachineContext = { attempt: 0 };
  private transport: TransportConnection | null = null;
  private transportIndex = 0;
  private handshakeFailures = 0;
  private retryTimer: unknown = null;
  private stableTimer: unknown = null;
  private pingTimer: unknown = null;
  private upgradeTimer: unknown = null;
  /**
   * Whether the last failed WebSocket handshake happened while the server answered HTTP (a
   * proxy refusing upgrades) rather than while it was unreachable; it picks the probe schedule.
   */
  private websocketBlocked = false;
  /** The reachability check of the last failed WebSocket handshake, while under way. */
  private reachability: Promise<void> | null = null;
  /** WebSocket probes since the last fallback (the exponent of the prompt schedule). */
  private upgradeAttempt = 0;
  private lastFrameAt = 0;
  private token: string | null = null;
  private tokenPromise: Promise<string> | null = null;
  private saved: Saved | null = null;
  private readonly positionWriter: CoalescingWriter;
  private readonly loaded: Promise<void>;
  private positionWaiters: ((p: number) => void)[] = [];
  private readonly topicCounts = new Map<string, number>();
  private subscribedTopics = '';
  private topicTimer: unknown = null;
  private readonly eventListeners = new Set<(e: StreamEvent) => void>();
  private readonly reloadListeners = new Set<(position: number) => void>();
  private readonly resetListeners = new Set<(reason: ResetReason) => void>();
  private readonly errorListeners = new Set<(e: VigilErrorInfo) => void>();
  private readonly frameListeners = new Set<(f: ServerFrame) => void>();
  private readonly queries = new Map<string, LiveQuery<unknown>>();
  private readonly views = new Map<string, number>();
  private readonly typingStores = new Map<string, Store<readonly UserRef[]>>();
  private readonly viewingStores = new Map<string, Store<readonly UserRef[]>>();
  private unwatch: (() => void) | null = null;
  private readonly tab: string | null;
  private readonly prefix: string;
  private tabs: TabShare | null = null;
  private readonly remoteTopics = new Map<string, readonly string[]>();
  private started = false;
  private online = true;

  constructor(options: VigilOptions) {
    this.options = options;
    this.storage = options.storage ?? memoryStorage();
    this.clock = options.clock ?? systemClock;
    this.policy = { ...DEFAULT_POLICY, backoff: options.backoff ?? DEFAULT_BACKOFF, random: options.random ?? Math.random };
    this.transports = options.transports ?? ['websocket', 'sse', 'polling'];
    const fetchImpl = options.fetch ?? ((input: string, init?: RequestInit) => globalThis.fetch(input, init));
    this.http = {
      baseUrl: options.baseUrl,
      hospital: options.hospital,
      fetch: fetchImpl,
      currentToken: () => this.currentToken(),
      renewToken: () => this.renewToken(),
      timeout: options.requestTimeout ?? 15_000,
    };
    const prefix = options.storageKey ?? `vigil:${options.baseUrl}:${options.hospital}`;
    this.prefix = prefix;
    this.tab = options.share && canShare() ? tabId() : null;
    this.positionWriter = new CoalescingWriter(this.storage, `${prefix}:position`);
    const outboxHost: OutboxHost = {
      // One attempt of a command gives up after `commandTimeout` (and is retried, same key).
      http: { ...this.http, timeout: options.commandTimeout ?? options.requestTimeout ?? 15_000 },
      ...(options.stuckAfter === undefined ? {} : { stuckAfter: options.stuckAfter }),
      storage: this.storage,
      // Tabs sharing a connection share storage too: each keeps its own outbox.
      storageKey: this.tab ? `${prefix}:outbox:${this.tab}` : `${prefix}:outbox`,
      retryDelay: (attempt) => Math.max(250, backoffDelay(attempt, this.policy.random, this.policy.backoff)),
      isOnline: () => this.online,
    };
    this.outbox = new Outbox(outboxHost);
    const commands = createCommands((record) => this.outbox.enqueue({ ...record, key: (options.generateKey ?? uuid)(), issuedAt: Date.now() }));
    this.alerts = commands.alerts;
    this.cases = commands.cases;
    this.vitals = commands.vitals;
    this.appointments = commands.appointments;
    this.notifications = commands.notifications;
    for (const t of options.topics ?? []) this.topicCounts.set(t, 1);
    this.loaded = this.storage.getItem(`${prefix}:position`).then((text) => {
      if (!text) return;
      try {
        const saved = JSON.parse(text) as Saved;
        if (typeof saved.position === 'number') this.saved = saved;
      } catch {
        /* ignore a corrupt entry: start live */
      }
    });
    if (!options.manualConnect) this.connect();
  }

  /** The last position processed (null before the first `subscribed`). */
  get position(): number | null {
    return this.saved?.position ?? null;
  }

  /** The stream's epoch as last seen. */
  get epoch(): string | null {
    return this.saved?.epoch ?? null;
  }

  /** Starts connecting (automatic unless `manualConnect`). */
  connect(): void {
    if (this.started) return;
    this.started = true;
    this.watchNetwork();
    if (this.tab) {
      this.role.set('follower');
      this.tabs = new TabShare(this.tab, this.prefix, (m) => this.onTabMessage(m), () => this.becomeLeader());
      this.tabs.post({ kind: 'hello', tab: this.tab });
      this.tabs.post({ kind: 'topics', tab: this.tab, topics: this.localTopics() });
      return;
    }
    // Let live queries created in the same tick register their topics first.
    this.clock.setTimeout(() => void this.loaded.then(() => this.input({ type: 'connect' })), 0);
  }

  /** Closes the connection for good; pending commands stay in storage for the next client. */
  close(): void {
    this.input({ type: 'close' });
    for (const query of this.queries.values()) query.dispose();
    this.outbox.close();
    this.unwatch?.();
    this.tabs?.close();
  }

  /**
   * Tells the client the network went away or came back — what React Native's NetInfo (or any
   * platform signal) knows before a socket times out. Browsers' `online`/`offline` events are
   * watched automatically.
   */
  setNetworkState(online: boolean): void {
    this.online = online;
    this.input({ type: online ? 'online' : 'offline' });
    if (online) this.outbox.kick();
  }

  /** Fires after `recovered: false` with a reason: live queries reload; other state must too. */
  onReset(listener: (reason: ResetReason) => void): () => void {
    this.resetListeners.add(listener);
    return () => this.resetListeners.delete(listener);
  }

  /** Every stream event, exactly once, in position order. */
  onEvent(listener: (e: StreamEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Errors about frames (`forbidden_topic`, …) and fatal closes. */
  onError(listener: (e: VigilErrorInfo) => void): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /** Every raw server frame (diagnostics, tests). */
  onFrame(listener: (f: ServerFrame) => void): () => void {
    this.frameListeners.add(listener);
    return () => this.frameListeners.delete(listener);
  }

  /** Adds topics to the subscription for as long as the returned function is not called. */
  subscribeTopics(topics: readonly string[]): () => void {
    this.acquireTopics(topics);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.releaseTopics(topics);
    };
  }

  /**
   * A live query: the server's read model at a known position, kept current by the stream.
   * Queries with the same kind and parameters are shared.
   */
  live<K extends LiveKind>(kind: K, params?: LiveKinds[K]['params']): LiveQuery<LiveKinds[K]['data']> {
    const p = (params ?? {}) as Record<string, unknown>;
    const key = `${kind}:${JSON.stringify(Object.keys(p).sort().map((k) => [k, p[k]]))}`;
    let query = this.queries.get(key);
    if (!query) {
      query = new LiveQuery<unknown>(this.liveHost, kind, p);
      this.queries.set(key, query);
    }
    return query as LiveQuery<LiveKinds[K]['data']>;
  }

  /** Who is online in this hospital (WebSocket only), active while observed. */
  presence(): Observable<readonly PresenceEntry[]> {
    return this.topicObservable(this.presenceStore, ['presence']);
  }

  /**
   * Who is typing in a case thread; `notify()` says the user is typing (the server throttles to
   * once a second per case, so call it on every keystroke: the client sends at most that).
   */
  typing(caseId: string): Observable<readonly UserRef[]> & { notify(): void } {
    let store = this.typingStores.get(caseId);
    if (!store) {
      store = new Store<readonly UserRef[]>([]);
      this.typingStores.set(caseId, store);
    }
    const observable = this.topicObservable(store, [`case:${caseId}`]);
    let last = -Infinity;
    return {
      ...observable,
      notify: () => {
        const now = this.clock.now();
        if (now - last < 1000) return;
        last = now;
        this.sendFrame({ type: 'typing', case: caseId });
      },
    };
  }

  /**
   * Announces that this user views `target` (`patient:<id>` or `case:<uuid>`) until `dispose()`,
   * re-announcing after every reconnect; `viewers` are the others viewing it.
   */
  view(target: string): { viewers: Observable<readonly UserRef[]>; dispose(): void } {
    let store = this.viewingStores.get(target);
    if (!store) {
      store = new Store<readonly UserRef[]>([]);
      this.viewingStores.set(target, store);
    }
    const release = this.subscribeTopics([target]);
    this.views.set(target, (this.views.get(target) ?? 0) + 1);
    if ((this.views.get(target) ?? 0) === 1) this.sendFrame({ type: 'view', target });
    let disposed = false;
    return {
      viewers: store,
      dispose: () => {
        if (disposed) return;
        disposed = true;
        const n = (this.views.get(target) ?? 1) - 1;
        if (n <= 0) {
          this.views.delete(target);
          this.sendFrame({ type: 'unview', target });
        } else this.views.set(target, n);
        release();
      },
    };
  }

  /** A REST read (with the token, the 401 renewal and the timeout). */
  async read<T>(path: string, query?: Record<string, string | number | boolean | null | undefined>): Promise<T> {
    const res = await request<T>(this.http, { method: 'GET', path, ...(query ? { query } : {}) });
    return res.body;
  }

  // ---- internals ----

  private readonly liveHost: LiveHost = {
    positioned: () => this.positioned(),
    read: (path, query) => this.read(path, query),
    acquireTopics: (t) => this.acquireTopics(t),
    releaseTopics: (t) => this.releaseTopics(t),
    onEvent: (l) => this.onEvent(l),
    onReload: (l) => {
      this.reloadListeners.add(l);
      return () => this.reloadListeners.delete(l);
    },
    retryDelay: (attempt) => Math.max(250, backoffDelay(attempt, this.policy.random, this.policy.backoff)),
  };

  private topicObservable<T>(store: Store<T>, topics: string[]): Observable<T> {
    return {
      get: () => store.get(),
      subscribe: (listener) => {
        const off = store.subscribe(listener);
        const release = this.subscribeTopics(topics);
        return () => {
          off();
          release();
        };
      },
    };
  }

  private positioned(): Promise<number> {
    if (this.positionKnown && this.saved) return Promise.resolve(this.saved.position);
    return new Promise((resolve) => this.positionWaiters.push(resolve));
  }

  /** True once this session got a `subscribed` (a stored position alone may be stale). */
  private positionKnown = false;

  private acquireTopics(topics: readonly string[]): void {
    for (const t of topics) this.topicCounts.set(t, (this.topicCounts.get(t) ?? 0) + 1);
    this.topicsChanged();
  }

  private releaseTopics(topics: readonly string[]): void {
    for (const t of topics) {
      const n = (this.topicCounts.get(t) ?? 1) - 1;
      if (n <= 0) this.topicCounts.delete(t);
      else this.topicCounts.set(t, n);
    }
    // Narrowing the subscription is not worth a reconnect: extra events are cheap.
  }

  private localTopics(): string[] {
    return [...this.topicCounts.keys()].sort();
  }

  private currentTopics(): string[] {
    const all = new Set(this.topicCounts.keys());
    for (const topics of this.remoteTopics.values()) for (const t of topics) all.add(t);
    const topics = [...all].sort();
    // A subscription needs a topic; everyone may subscribe to their own notifications.
    return topics.length ? topics : ['notifications'];
  }

  /**
   * New topics take effect by resubscribing on a fresh transport from the current position (the
   * protocol honours `last_event_id` on the first subscription only), batched over a tick.
   */
  private topicsChanged(): void {
    if (this.tab && this.tabs) this.tabs.post({ kind: 'topics', tab: this.tab, topics: this.localTopics() });
    if (!this.transport || this.topicTimer !== null) return;
    this.topicTimer = this.clock.setTimeout(() => {
      this.topicTimer = null;
      const wanted = this.currentTopics();
      const have = new Set(this.subscribedTopics.split(','));
      if (!this.transport || wanted.every((t) => have.has(t))) return;
      this.dropTransport();
      this.input({ type: 'connect' });
    }, 0);
  }

  private currentToken(): Promise<string> {
    if (this.token !== null) return Promise.resolve(this.token);
    return this.renewToken();
  }

  private renewToken(): Promise<string> {
    if (!this.tokenPromise) {
      this.tokenPromise = this.options.token().then(
        (t) => {
          this.token = t;
          this.tokenPromise = null;
          return t;
        },
        (e: unknown) => {
          this.tokenPromise = null;
          throw e;
        },
      );
    }
    return this.tokenPromise;
  }

  private input(input: ConnectionInput): void {
    const before = this.connection.get();
    const { state, context, effects } = transition(before, this.context, input, this.policy);
    this.context = context;
    this.connection.set(state);
    for (const effect of effects) this.perform(effect);
    if (state.status === 'closed' && state.error && before.status !== 'closed') {
      this.emitError({ code: String(state.error.code), message: state.error.reason });
    }
  }

  private perform(effect: ConnectionEffect): void {
    // A follower tab never opens a transport: the leader's connection serves it.
    if (this.role.get() === 'follower' && effect.type !== 'stop') return;
    this.clearTimer('retryTimer');
    switch (effect.type) {
      case 'stop':
        this.dropTransport();
        this.clearTimer('upgradeTimer');
        break;
      case 'schedule':
        this.retryTimer = this.clock.setTimeout(() => {
          this.retryTimer = null;
          this.input({ type: 'connect' });
        }, effect.delay);
        break;
      case 'open':
        void this.open();
        break;
    }
  }

  private clearTimer(name: 'retryTimer' | 'stableTimer' | 'pingTimer' | 'upgradeTimer'): void {
    if (this[name] !== null) {
      this.clock.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  private dropTransport(): void {
    this.transport?.close();
    this.transport = null;
    this.clearTimer('stableTimer');
    this.clearTimer('pingTimer');
  }

  private async open(): Promise<void> {
    this.dropTransport();
    let token: string;
    try {
      // Every connect asks for a token: the one cached may be close to expiry.
      token = await this.renewToken();
    } catch (error) {
      this.emitError({ code: 'token_failed', message: error instanceof Error ? error.message : String(error) });
      this.input({ type: 'closed', code: 4001, reason: 'token() failed' });
      return;
    }
    const status = this.connection.get().status;
    if (status !== 'connecting') return;
    const name = this.transports[this.transportIndex] ?? 'websocket';
    const topics = this.currentTopics();
    this.subscribedTopics = topics.join(',');
    let connection: TransportConnection | null = null;
    const handlers = {
      onFrame: (frame: ServerFrame) => {
        if (this.transport === connection) this.handleFrame(frame, name);
      },
      onClose: (code: number, reason: string, opened: boolean) => {
        if (this.transport !== connection) return;
        this.transport = null;
        this.clearTimer('stableTimer');
        this.clearTimer('pingTimer');
        this.handleClose(name, code, reason, opened);
      },
    };
    try {
      connection = openTransport(name, {
        http: this.http,
        token,
        topics,
        lastEventId: this.saved?.position ?? null,
        epoch: name === 'polling' && this.saved?.provisional ? null : (this.saved?.epoch ?? null),
        handlers,
        WebSocket: this.options.WebSocket,
        EventSource: this.options.EventSource,
        pollInterval: this.options.pollInterval ?? 1000,
      });
    } catch (error) {
      this.emitError({ code: 'transport_unavailable', message: error instanceof Error ? error.message : String(error) });
      this.handleClose(name, 1006, 'unavailable', false);
      return;
    }
    this.transport = connection;
    this.lastFrameAt = this.clock.now();
    if (name === 'websocket') this.schedulePing();
  }

  private handleClose(name: TransportName, code: number, reason: string, opened: boolean): void {
    if (name === 'websocket' && !opened) this.checkReachability();
    if (!opened || (name !== 'websocket' && !this.positionKnownThisConnection)) {
      this.handshakeFailures += 1;
      if (this.handshakeFailures >= (this.options.fallbackAfter ?? 2) && this.transportIndex < this.transports.length - 1) {
        this.transportIndex += 1;
        this.handshakeFailures = 0;
        if (this.transportIndex === 1) this.upgradeAttempt = 0;
        // The schedule depends on why WebSocket failed: wait for the check under way.
        void (this.reachability ?? Promise.resolve()).then(() => this.scheduleUpgrade());
      }
    }
    this.positionKnownThisConnection = false;
    this.input({ type: 'closed', code, reason });
  }

  private positionKnownThisConnection = false;

  private handleFrame(frame: ServerFrame, name: TransportName): void {
    this.lastFrameAt = this.clock.now();
    for (const l of [...this.frameListeners]) l(frame);
    if (this.tabs && (frame.type === 'presence' || frame.type === 'typing' || frame.type === 'viewing' || frame.type === 'error')) {
      this.tabs.post({ kind: 'frame', frame });
    }
    switch (frame.type) {
      case 'subscribed':
        this.onSubscribed(frame, name);
        break;
      case 'event':
        this.onStreamEvent(frame);
        break;
      case 'token_expiring':
        void this.renewToken().then(
          (token) => this.transport?.send({ type: 'refresh', token }),
          () => undefined,
        );
        break;
      case 'presence':
        this.presenceStore.set(frame.online);
        break;
      case 'typing':
        this.typingStores.get(frame.case)?.set(frame.users);
        break;
      case 'viewing':
        this.viewingStores.get(frame.target)?.set(frame.viewers);
        break;
      case 'error':
        this.emitError({ code: frame.code, message: frame.message });
        break;
      default:
        break;
    }
  }

  private onSubscribed(frame: Extract<ServerFrame, { type: 'subscribed' }>, name: TransportName): void {
    const position = Number(frame.position);
    const had = this.saved;
    const reset = !frame.recovered && frame.reason !== undefined;
    const reload = !frame.recovered;
    // On a resume, `position` is the stream's head, not the resume point: the events between
    // them follow. Only a fresh start (nothing to resume) continues from `position`.
    const provisional = position === 0 && frame.epoch != null;
    if (reload || !had) this.saved = { position, epoch: frame.epoch ?? null, provisional };
    else if (frame.epoch != null) this.saved = { position: had.position, epoch: frame.epoch, provisional };
    else this.saved = { ...had };
    void this.positionWriter.write(JSON.stringify(this.saved));
    this.positionKnownThisConnection = true;
    this.handshakeFailures = 0;
    const firstTime = !this.positionKnown;
    this.positionKnown = true;
    this.input({ type: 'subscribed', transport: name });
    this.clearTimer('stableTimer');
    this.stableTimer = this.clock.setTimeout(() => {
      this.stableTimer = null;
      this.input({ type: 'stable' });
    }, this.options.stablePeriod ?? 10_000);
    for (const target of this.views.keys()) this.sendFrame({ type: 'view', target });
    this.tabs?.post({
      kind: 'subscribed',
      position: this.saved.position,
      epoch: this.saved.epoch,
      ...(reset && frame.reason ? { reason: frame.reason } : {}),
      snapshot: false,
    });
    if (reset && frame.reason) for (const l of [...this.resetListeners]) l(frame.reason);
    if (reload && !firstTime) for (const l of [...this.reloadListeners]) l(position);
    const waiters = this.positionWaiters;
    this.positionWaiters = [];
    for (const w of waiters) w(this.saved.position);
    if (name !== 'websocket') {
      // Connected on a fallback that WebSocket did not get because the server was unreachable:
      // it is reachable now, so probe WebSocket soon rather than at the slow cadence.
      if (!this.websocketBlocked) {
        this.clearTimer('upgradeTimer');
        this.upgradeAttempt = 0;
      }
      this.scheduleUpgrade();
    } else this.clearTimer('upgradeTimer');
    this.outbox.kick();
  }

  private onStreamEvent(frame: EventFrame): void {
    const position = Number(frame.position);
    if (this.saved && position <= this.saved.position) return; // already processed: never twice
    // Since issue 17 the frame carries its position once, `topics` only when the event has
    // more than its `topic`, and no `null` fields in `data` (docs/PROTOCOL.md); older servers
    // sent `id` and `topics` always. Both shapes decode to the same StreamEvent, whose `data`
    // follows the published schema of `event_type` (checked server-side against real events).
    this.deliverEvent({
      id: frame.id ?? String(position),
      position,
      event_type: frame.event_type,
      aggregate_type: frame.aggregate_type,
      aggregate_id: frame.aggregate_id,
      sequence: frame.sequence,
      topics: frame.topics ?? (frame.topic ? [frame.topic] : []),
      data: frame.data ?? {},
      ts: frame.ts,
    } as StreamEvent);
  }

  /** Applies one event: the position rule, storage, listeners, and the other tabs. */
  private deliverEvent(event: StreamEvent): void {
    if (this.saved && event.position <= this.saved.position) return; // already processed: never twice
    this.saved = { position: event.position, epoch: this.saved?.epoch ?? null, ...(this.saved?.provisional ? { provisional: true } : {}) };
    void this.positionWriter.write(JSON.stringify(this.saved));
    if (this.role.get() === 'leader') this.tabs?.post({ kind: 'event', event });
    for (const l of [...this.eventListeners]) l(event);
  }

  /** Sends a frame on the connection, through the leader tab when this tab is a follower. */
  private sendFrame(frame: ClientFrame): void {
    if (this.role.get() === 'follower') this.tabs?.post({ kind: 'send', frame });
    else this.transport?.send(frame);
  }

  /** This tab got the lock: it opens the connection, from the last event it applied. */
  private becomeLeader(): void {
    this.role.set('leader');
    if (this.tab) this.tabs?.post({ kind: 'leader', tab: this.tab });
    this.connection.subscribe((state) => this.tabs?.post({ kind: 'state', state }));
    if (this.connection.get().status === 'closed') return;
    void this.loaded.then(() => this.input({ type: 'connect' }));
  }

  private onTabMessage(m: TabMessage): void {
    const leader = this.role.get() === 'leader';
    switch (m.kind) {
      case 'hello':
        if (this.tab) this.tabs?.post({ kind: 'topics', tab: this.tab, topics: this.localTopics() });
        if (leader) {
          if (this.positionKnown && this.saved) {
            this.tabs?.post({ kind: 'subscribed', position: this.saved.position, epoch: this.saved.epoch, snapshot: true });
          }
          this.tabs?.post({ kind: 'state', state: this.connection.get() });
          this.tabs?.post({ kind: 'frame', frame: { type: 'presence', online: this.presenceStore.get() } });
        }
        break;
      case 'topics':
        this.remoteTopics.set(m.tab, m.topics);
        if (leader) this.topicsChanged();
        break;
      case 'bye':
        this.remoteTopics.delete(m.tab);
        break;
      case 'send':
        if (leader) this.transport?.send(m.frame);
        break;
      case 'event':
        if (!leader && this.positionKnown) this.deliverEvent(m.event);
        break;
      case 'subscribed':
        if (!leader) this.followerSubscribed(m);
        break;
      case 'state':
        if (!leader) this.connection.set(m.state.status === 'closed' ? { status: 'connecting' } : m.state);
        break;
      case 'frame':
        if (!leader) this.handleSharedFrame(m.frame);
        break;
      case 'leader':
        break;
    }
  }

  /** A follower learns where the shared stream stands (on joining, and at each resubscription). */
  private followerSubscribed(m: Extract<TabMessage, { kind: 'subscribed' }>): void {
    if (!this.positionKnown) {
      // Joining: continue from the leader's position (like a fresh subscription at the head).
      this.saved = { position: m.position, epoch: m.epoch };
      this.positionKnown = true;
      const waiters = this.positionWaiters;
      this.positionWaiters = [];
      for (const w of waiters) w(m.position);
    } else if (m.reason) {
      this.saved = { position: m.position, epoch: m.epoch };
      for (const l of [...this.resetListeners]) l(m.reason);
      for (const l of [...this.reloadListeners]) l(m.position);
    } else if (this.saved) {
      this.saved = { position: this.saved.position, epoch: m.epoch ?? this.saved.epoch };
    }
    if (!m.snapshot || this.views.size) for (const target of this.views.keys()) this.sendFrame({ type: 'view', target });
    this.outbox.kick();
  }

  private handleSharedFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case 'presence':
        this.presenceStore.set(frame.online);
        break;
      case 'typing':
        this.typingStores.get(frame.case)?.set(frame.users);
        break;
      case 'viewing':
        this.viewingStores.get(frame.target)?.set(frame.viewers);
        break;
      case 'error':
        this.emitError({ code: frame.code, message: frame.message });
        break;
      default:
        break;
    }
  }

  private emitError(e: VigilErrorInfo): void {
    for (const l of [...this.errorListeners]) l(e);
  }

  /** WebSocket keep-alive: browsers hide the server's pings, so the client pings and watches silence. */
  private schedulePing(): void {
    const interval = this.options.pingInterval ?? 20_000;
    this.clearTimer('pingTimer');
    this.pingTimer = this.clock.setTimeout(() => {
      this.pingTimer = null;
      const transport = this.transport;
      if (!transport) return;
      if (this.clock.now() - this.lastFrameAt > 2 * interval) {
        // Dead: nothing (not even a pong) for two intervals.
        this.dropTransport();
        this.positionKnownThisConnection = false;
        this.input({ type: 'closed', code: 4005, reason: 'no frames from the server' });
        return;
      }
      transport.send({ type: 'ping' });
      this.schedulePing();
    }, interval);
  }

  /**
   * Asks whether the server answers plain HTTP (`GET /healthz`) right after a WebSocket
   * handshake failed: any HTTP answer means something refuses the upgrade (a proxy), a network
   * error means the server was unreachable (restarting, or the network is down). Browsers'
   * WebSocket API reports both as the same close 1006, so only this tells them apart.
   */
  private checkReachability(): Promise<void> {
    const url = `${this.http.baseUrl.replace(/\/+$/, '')}/healthz`;
    const check = this.http
      // `no-cors`: a page on another origin gets an opaque answer rather than a CORS error,
      // and any answer is all this needs to know.
      .fetch(url, { method: 'GET', mode: 'no-cors', cache: 'no-store' })
      .then(
        () => {
          this.websocketBlocked = true;
        },
        () => {
          this.websocketBlocked = false;
        },
      )
      .finally(() => {
        if (this.reachability === check) this.reachability = null;
      });
    this.reachability = check;
    return check;
  }

  /** How long until the next WebSocket probe: see `upgradeInterval` and `upgradeProbeDelay`. */
  private upgradeDelay(): number {
    const interval = this.options.upgradeInterval ?? 30_000;
    if (this.websocketBlocked) return interval;
    const first = this.options.upgradeProbeDelay ?? 1000;
    return Math.min(interval, first * 2 ** Math.min(this.upgradeAttempt, 30));
  }

  /** While on a fallback transport, tries WebSocket now and then; on success switches back. */
  private scheduleUpgrade(): void {
    if (this.transportIndex === 0 || this.upgradeTimer !== null) return;
    if (this.transports[0] !== 'websocket') return;
    if (this.connection.get().status === 'closed') return;
    const delay = this.upgradeDelay();
    this.upgradeAttempt += 1;
    this.upgradeTimer = this.clock.setTimeout(() => {
      this.upgradeTimer = null;
      void this.probeWebSocket().then(async (ok) => {
        if (this.connection.get().status === 'closed') return;
        if (ok) {
          this.transportIndex = 0;
          this.handshakeFailures = 0;
          this.upgradeAttempt = 0;
          if (this.connection.get().status !== 'offline') {
            this.dropTransport();
            this.input({ type: 'connect' });
          }
        } else {
          await this.checkReachability();
          this.scheduleUpgrade();
        }
      });
    }, delay);
  }

  private async probeWebSocket(): Promise<boolean> {
    let token: string;
    try {
      token = await this.currentToken();
    } catch {
      return false;
    }
    return new Promise((resolve) => {
      let done = false;
      const finish = (ok: boolean, conn?: TransportConnection) => {
        if (done) return;
        done = true;
        conn?.close();
        resolve(ok);
      };
      let conn: TransportConnection | undefined;
      try {
        conn = openTransport('websocket', {
          http: this.http,
          token,
          topics: [],
          lastEventId: null,
          epoch: null,
          WebSocket: this.options.WebSocket,
          pollInterval: 1000,
          handlers: {
            onFrame: (f) => {
              if (f.type === 'authenticated') finish(true, conn);
            },
            onClose: () => finish(false),
          },
        });
      } catch {
        finish(false);
      }
    });
  }

  private watchNetwork(): void {
    if (this.options.watchNetwork === false) return;
    const w = globalThis as unknown as {
      addEventListener?: (t: string, l: () => void) => void;
      removeEventListener?: (t: string, l: () => void) => void;
      document?: { visibilityState?: string; addEventListener?: (t: string, l: () => void) => void; removeEventListener?: (t: string, l: () => void) => void };
    };
    if (typeof w.addEventListener !== 'function' || !w.document) return;
    const online = () => this.setNetworkState(true);
    const offline = () => this.setNetworkState(false);
    const visible = () => {
      if (w.document?.visibilityState === 'visible' && this.connection.get().status === 'reconnecting') {
        this.input({ type: 'online' });
      }
    };
    w.addEventListener('online', online);
    w.addEventListener('offline', offline);
    w.document.addEventListener?.('visibilitychange', visible);
    this.unwatch = () => {
      w.removeEventListener?.('online', online);
      w.removeEventListener?.('offline', offline);
      w.document?.removeEventListener?.('visibilitychange', visible);
    };
  }
}

export type { LiveResult, PendingCommand };
