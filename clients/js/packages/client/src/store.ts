/**
 * A minimal observable value: the one shape every stateful thing in the client exposes
 * (connection state, live query results, presence, a command's status), so any framework can
 * bind it — React through `useSyncExternalStore`, others through `subscribe`.
 */

/** A value that changes over time and tells its listeners. */
export interface Observable<T> {
  /** The current value; the same object until it changes (safe for `useSyncExternalStore`). */
  get(): T;
  /** Calls `listener` after every change; returns the unsubscribe function. */
  subscribe(listener: (value: T) => void): () => void;
}

/** An {@link Observable} its owner can set. */
export class Store<T> implements Observable<T> {
  private readonly listeners = new Set<(value: T) => void>();

  constructor(private value: T) {}

  get(): T {
    return this.value;
  }

  set(value: T): void {
    if (Object.is(value, this.value)) return;
    this.value = value;
    for (const listener of [...this.listeners]) listener(value);
  }

  subscribe(listener: (value: T) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** How many listeners are attached (live queries stop when the last one leaves). */
  get listenerCount(): number {
    return this.listeners.size;
  }
}
