/**
 * One connection per browser: the tabs of one origin that use the same server and hospital elect
 * a leader with the Web Locks API (the lock is released when the leader's tab closes or crashes,
 * and the next waiting tab gets it) and talk over a BroadcastChannel. The leader holds the only
 * transport and broadcasts every event it processes; followers apply the same position rule as
 * the leader (an event at or below the position is dropped), so when a follower becomes leader it
 * resumes from the last event it applied — no tab sees a gap or a duplicate.
 *
 * Every tab announces its topics to all tabs (not only to the leader), so a tab promoted to
 * leader already subscribes to everyone's topics from its first connect.
 */
import type { ClientFrame, ServerFrame, StreamEvent } from './frames.js';
import type { ConnectionState } from './state.js';

/** Messages between tabs. */
export type TabMessage =
  | { readonly kind: 'hello'; readonly tab: string }
  | { readonly kind: 'bye'; readonly tab: string }
  | { readonly kind: 'leader'; readonly tab: string }
  | { readonly kind: 'topics'; readonly tab: string; readonly topics: readonly string[] }
  | { readonly kind: 'send'; readonly frame: ClientFrame }
  | { readonly kind: 'event'; readonly event: StreamEvent }
  | {
      readonly kind: 'subscribed';
      readonly position: number;
      readonly epoch: string | null;
      readonly reason?: 'too_old' | 'epoch_changed' | 'unknown_position';
      /** The leader's answer to a `hello`, not a new subscription. */
      readonly snapshot: boolean;
    }
  | { readonly kind: 'state'; readonly state: ConnectionState }
  | { readonly kind: 'frame'; readonly frame: ServerFrame };

/** What the browser offers (all present in current browsers; absent in Node and React Native). */
interface LockManagerLike {
  request(name: string, options: { ifAvailable?: boolean }, cb: (lock: unknown) => Promise<void> | void): Promise<unknown>;
}
interface BroadcastChannelLike {
  postMessage(message: unknown): void;
  close(): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
}
type BroadcastChannelCtor = new (name: string) => BroadcastChannelLike;

/** Whether this platform can share a connection between tabs. */
export function canShare(): boolean {
  const g = globalThis as { navigator?: { locks?: unknown }; BroadcastChannel?: unknown };
  return Boolean(g.navigator?.locks) && typeof g.BroadcastChannel === 'function';
}

/** This tab's id, stable across reloads of the tab (sessionStorage), so its outbox is found again. */
export function tabId(): string {
  const g = globalThis as { sessionStorage?: { getItem(k: string): string | null; setItem(k: string, v: string): void } };
  const fresh = Math.random().toString(36).slice(2) + Date.now().toString(36);
  try {
    const existing = g.sessionStorage?.getItem('vigil:tab-id');
    if (existing) return existing;
    g.sessionStorage?.setItem('vigil:tab-id', fresh);
  } catch {
    /* storage disabled: a fresh id */
  }
  return fresh;
}

/** The tab's side of the election and the channel. */
export class TabShare {
  private readonly channel: BroadcastChannelLike;
  private release: (() => void) | null = null;
  private closed = false;

  constructor(
    readonly tab: string,
    name: string,
    private readonly onMessage: (m: TabMessage) => void,
    private readonly onLeader: () => void,
  ) {
    const Ctor = (globalThis as unknown as { BroadcastChannel: BroadcastChannelCtor }).BroadcastChannel;
    this.channel = new Ctor(`vigil:${name}`);
    this.channel.onmessage = (ev) => {
      if (!this.closed) this.onMessage(ev.data as TabMessage);
    };
    const locks = (globalThis as unknown as { navigator: { locks: LockManagerLike } }).navigator.locks;
    void locks.request(`vigil:${name}`, {}, () => {
      if (this.closed) return;
      this.onLeader();
      // Held until the tab closes (the browser releases it) or the client is closed.
      return new Promise<void>((resolve) => {
        this.release = resolve;
      });
    });
    const g = globalThis as { addEventListener?: (t: string, l: () => void) => void };
    g.addEventListener?.('pagehide', () => this.post({ kind: 'bye', tab: this.tab }));
  }

  post(message: TabMessage): void {
    if (!this.closed) this.channel.postMessage(message);
  }

  close(): void {
    this.post({ kind: 'bye', tab: this.tab });
    this.closed = true;
    this.channel.close();
    this.release?.();
  }
}
