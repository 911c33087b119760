/**
 * Where the client keeps what must survive a reload or an app restart: each hospital's last
 * position and epoch (so the stream resumes exactly after the last event processed) and the
 * command outbox (so a command issued offline is still sent, once, after a restart).
 *
 * The interface is asynchronous because React Native's AsyncStorage and IndexedDB are; the
 * synchronous `localStorage` is wrapped. Adapters: {@link memoryStorage} (the default),
 * {@link localStorageAdapter}, {@link indexedDbStorage}, {@link asyncStorageAdapter}.
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
 * The interface of React Native's `@react-native-async-storage/async-storage` (and of any
 * promise-based string store: MMKV wrappers, expo-secure-store, a file): three methods, every
 * one returning a promise. `AsyncStorage` itself fits as it is.
 */
export interface AsyncStorageLike {
  /** The value stored under `key`, or `null` when there is none. */
  getItem(key: string): Promise<string | null>;
  /** Stores `value`; resolves once it is written (the outbox awaits it before "saved"). */
  setItem(key: string, value: string): Promise<void>;
  removeItem(key: string): Promise<void>;
}

/**
 * Keeps position, epoch and outbox in React Native's AsyncStorage (or anything
 * {@link AsyncStorageLike}), so an app the OS killed resumes after its last event and still
 * sends, once, the commands it had queued.
 */
export function asyncStorageAdapter(storage: AsyncStorageLike): VigilStorage {
  return {
    getItem: (key) => storage.getItem(key),
    setItem: (key, value) => storage.setItem(key, value),
    removeItem: (key) => storage.removeItem(key),
  };
}

/** Options of {@link indexedDbStorage}. */
export interface IndexedDbStorageOptions {
  /** Database name (default `vigil`). */
  readonly database?: string;
  /** Object store name (default `kv`). */
  readonly store?: string;
  /** The IndexedDB factory (default `globalThis.indexedDB`; a worker's, or a fake in tests). */
  readonly indexedDB?: IDBFactory;
}

/**
 * Keeps position, epoch and outbox in IndexedDB: like `localStorage` it survives a reload or a
 * browser restart, but it is asynchronous (no main-thread stall writing an outbox), available
 * in workers, and not limited to ~5 MB per origin. One database, one object store of strings;
 * each write is its own transaction and resolves once it has committed.
 */
export function indexedDbStorage(options: IndexedDbStorageOptions = {}): VigilStorage {
  const storeName = options.store ?? 'kv';
  let opened: Promise<IDBDatabase> | null = null;
  const open = (): Promise<IDBDatabase> => {
    if (opened) return opened;
    const factory = options.indexedDB ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (!factory) return Promise.reject(new Error('IndexedDB is not available here'));
    opened = new Promise<IDBDatabase>((resolve, reject) => {
      const request = factory.open(options.database ?? 'vigil', 1);
      request.onupgradeneeded = () => {
        if (!request.result.objectStoreNames.contains(storeName)) request.result.createObjectStore(storeName);
      };
      request.onsuccess = () => {
        const db = request.result;
        // Another tab upgrading the database: close so it is not blocked; reopen on next use.
        db.onversionchange = () => {
          db.close();
          opened = null;
        };
        resolve(db);
      };
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error('IndexedDB open blocked by another tab'));
    });
    opened.catch(() => {
      opened = null;
    });
    return opened;
  };
  const run = async <T>(mode: IDBTransactionMode, act: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> => {
    const db = await open();
    return new Promise<T>((resolve, reject) => {
      const tx = db.transaction(storeName, mode);
      const request = act(tx.objectStore(storeName));
      // Resolved when the transaction commits, not when the request succeeds: a write is then durable.
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error ?? request.error);
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    });
  };
  return {
    getItem: async (key) => {
      const value = await run<unknown>('readonly', (store) => store.get(key));
      return typeof value === 'string' ? value : null;
    },
    setItem: async (key, value) => {
      await run('readwrite', (store) => store.put(value, key));
    },
    removeItem: async (key) => {
      await run('readwrite', (store) => store.delete(key));
    },
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
