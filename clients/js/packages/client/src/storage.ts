/**
 * Where the client keeps what must survive a reload or an app restart: each hospital's last
 * position and epoch (so the stream resumes exactly after the last event processed) and the
 * command outbox (so a command issued offline is still sent, once, after a restart).
 *
 * The interface is asynchronous because React Native's AsyncStorage and IndexedDB are; the
 * synchronous `localStorage` is wrapped.
 */

/** A string key/value store. Implement it over AsyncStorage, IndexedDB, a file, … */
export interface VigilStorage {
  getItem(key: string): Promise<string | null>;
  setItem(key: string, value: string): Promise<void>;
  removeItem(key: string): Promise<void>;
}

/** Keeps everything in this process: a reload starts afresh (the default). */
export function memoryStorage(): VigilStorage {
  const map = new Map<string, string>();
  return {
    getItem: async (key) => map.get(key) ?? null,
    setItem: async (key, value) => {
      map.set(key, value);
    },
    removeItem: async (key) => {
      map.delete(key);
    },
  };
}

/** The subset of the Web Storage API the adapter uses (`window.localStorage`). */
export interface SyncStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Wraps `localStorage` (or `sessionStorage`) so a reloaded page resumes where it stopped. */
export function localStorageAdapter(storage: SyncStorageLike): VigilStorage {
  return {
    getItem: async (key) => storage.getItem(key),
    setItem: async (key, value) => storage.setItem(key, value),
    removeItem: async (key) => storage.removeItem(key),
  };
}

/**
 * React Native's `@react-native-async-storage/async-storage` already has this shape; the
 * adapter only narrows the type, so any promise-based store with these three methods fits.
 */
export function asyncStorageAdapter(storage: VigilStorage): VigilStorage {
  return {
    getItem: (key) => storage.getItem(key),
    setItem: (key, value) => storage.setItem(key, value),
    removeItem: (key) => storage.removeItem(key),
  };
}

/**
 * Serializes writes of one key and coalesces bursts: while a write is in flight only the newest
 * value waits, so an event burst costs two writes, not one per event.
 */
export class CoalescingWriter {
  private pending: string | null = null;
  private writing: Promise<void> | null = null;

  constructor(
    private readonly storage: VigilStorage,
    private readonly key: string,
  ) {}

  /** Schedules `value` to be written; resolves once it (or a newer value) is stored. */
  write(value: string): Promise<void> {
    this.pending = value;
    if (!this.writing) this.writing = this.flush();
    return this.writing;
  }

  private async flush(): Promise<void> {
    try {
      while (this.pending !== null) {
        const value = this.pending;
        this.pending = null;
        await this.storage.setItem(this.key, value);
      }
    } finally {
      this.writing = null;
    }
  }
}
