/**
 * `@vigil/react`: thin React bindings over `@vigil/client`, each hook a `useSyncExternalStore`
 * over one of the client's observables — so rendering is tear-free under concurrent rendering,
 * and React 18/19 strict mode's mount/unmount/mount does not subscribe twice (the client's live
 * queries stop only a tick after their last listener leaves, and are shared by key).
 */
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';
import type {
  CommandStatus,
  ConnectionState,
  LiveKind,
  LiveKinds,
  LiveResult,
  Observable,
  PendingCommand,
  PresenceEntry,
  UserRef,
  Vigil,
} from '@vigil/client';

const VigilContext = createContext<Vigil | null>(null);

/** Makes a client available to the hooks below it. Create the client once, outside render. */
export function VigilProvider(props: { client: Vigil; children?: ReactNode }): ReactNode {
  return createElement(VigilContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest {@link VigilProvider}. */
export function useVigil(): Vigil {
  const client = useContext(VigilContext);
  if (!client) throw new Error('useVigil: no <VigilProvider> above this component');
  return client;
}

/** Subscribes a component to an {@link Observable}. */
export function useObservable<T>(observable: Observable<T>): T {
  const subscribe = useCallback((onChange: () => void) => observable.subscribe(() => onChange()), [observable]);
  const get = useCallback(() => observable.get(), [observable]);
  return useSyncExternalStore(subscribe, get, get);
}

/** The connection's state (`connecting`, `connected`, `reconnecting{attempt, delay}`, …). */
export function useConnectionState(): ConnectionState {
  return useObservable(useVigil().connection);
}

/**
 * A live query's current result: the server's read model at `position`, re-read as relevant
 * events arrive. Components asking for the same kind and parameters share one query.
 */
export function useLive<K extends LiveKind>(kind: K, params?: LiveKinds[K]['params']): LiveResult<LiveKinds[K]['data']> {
  const vigil = useVigil();
  const key = JSON.stringify(params ?? {});
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const query = useMemo(() => vigil.live(kind, params), [vigil, kind, key]);
  return useObservable(query);
}

/**
 * Runs a command through the outbox and follows its status for optimistic UI:
 * `const raise = useCommand((v, body) => v.alerts.raise(body)); raise.run({...})`.
 */
export function useCommand<A extends unknown[]>(
  command: (vigil: Vigil, ...args: A) => PendingCommand,
): { run: (...args: A) => PendingCommand; status: CommandStatus | null; pending: boolean } {
  const vigil = useVigil();
  const commandRef = useRef(command);
  commandRef.current = command;
  const [current, setCurrent] = useState<PendingCommand | null>(null);
  const run = useCallback((...args: A) => {
    const pending = commandRef.current(vigil, ...args);
    setCurrent(pending);
    return pending;
  }, [vigil]);
  const idle = useMemo<Observable<CommandStatus | null>>(() => ({ get: () => null, subscribe: () => () => undefined }), []);
  const status = useObservable<CommandStatus | null>(current ?? idle);
  // A stuck command is still being retried: still pending for the UI (its status says why).
  return { run, status, pending: status?.status === 'pending' || status?.status === 'stuck' };
}

/** Who is online in the hospital (WebSocket transport). */
export function usePresence(): readonly PresenceEntry[] {
  const vigil = useVigil();
  const presence = useMemo(() => vigil.presence(), [vigil]);
  return useObservable(presence);
}

/** Who is typing in a case thread, and `notify()` to say this user is. */
export function useTyping(caseId: string): { users: readonly UserRef[]; notify: () => void } {
  const vigil = useVigil();
  const typing = useMemo(() => vigil.typing(caseId), [vigil, caseId]);
  const users = useObservable(typing);
  return { users, notify: typing.notify };
}

/**
 * Announces that this user views `target` while the component is mounted (re-announced after
 * reconnects, withdrawn on unmount) and returns the others viewing it.
 */
export function useViewing(target: string): readonly UserRef[] {
  const vigil = useVigil();
  const [viewers, setViewers] = useState<Observable<readonly UserRef[]> | null>(null);
  useEffect(() => {
    const handle = vigil.view(target);
    setViewers(handle.viewers);
    return () => handle.dispose();
  }, [vigil, target]);
  const none = useMemo<Observable<readonly UserRef[]>>(() => ({ get: () => EMPTY, subscribe: () => () => undefined }), []);
  return useObservable(viewers ?? none);
}

const EMPTY: readonly UserRef[] = [];
