/**
 * The connection state machine: the states a Vigil connection can be in, and every transition
 * between them in one function, so reconnect behaviour is read (and tested) as a table rather
 * than reconstructed from scattered callbacks.
 */
import { backoffDelay, type BackoffOptions, DEFAULT_BACKOFF } from './backoff.js';

/** Which transport carries the stream. */
export type TransportName = 'websocket' | 'sse' | 'polling';

/** What the application sees of the connection. */
export type ConnectionState =
  | { readonly status: 'connecting' }
  | { readonly status: 'connected'; readonly transport: TransportName }
  | { readonly status: 'reconnecting'; readonly attempt: number; readonly delay: number; readonly reason?: string }
  | { readonly status: 'offline' }
  | { readonly status: 'closed'; readonly error?: { readonly code: number; readonly reason: string } };

/** What can happen to a connection. */
export type ConnectionInput =
  /** The application started the client, or a scheduled retry fired. */
  | { readonly type: 'connect' }
  /** The stream is flowing: the server answered `subscribed`. */
  | { readonly type: 'subscribed'; readonly transport: TransportName }
  /** The transport ended; `code` is the WebSocket close code (or the `closing` frame's). */
  | { readonly type: 'closed'; readonly code: number; readonly reason?: string }
  /** The platform says the network went away (browser `offline`, React Native NetInfo). */
  | { readonly type: 'offline' }
  /** The network is back, or the page became visible again. */
  | { readonly type: 'online' }
  /** The connection stayed up for the stable period: later failures start backing off afresh. */
  | { readonly type: 'stable' }
  /** The application closed the client. */
  | { readonly type: 'close' };

/** What the machine asks its owner to do after a transition. */
export type ConnectionEffect =
  /** Open a transport now (with a token from `token()`). */
  | { readonly type: 'open' }
  /** Open a transport after `delay` ms. */
  | { readonly type: 'schedule'; readonly delay: number }
  /** Tear the transport down and cancel timers: nothing will reconnect. */
  | { readonly type: 'stop' };

/** The machine's memory beside the visible state. */
export interface MachineContext {
  /** Failed attempts since the connection was last stable; drives the backoff. */
  readonly attempt: number;
}

/** The machine's parameters: the backoff and its randomness. */
export interface MachinePolicy {
  readonly backoff: BackoffOptions;
  readonly random: () => number;
  /** The cap of the quick, jittered reconnect after a server shutdown (1001), in ms. */
  readonly quickReconnectMax: number;
}

/** Defaults for {@link MachinePolicy}. */
export const DEFAULT_POLICY: MachinePolicy = {
  backoff: DEFAULT_BACKOFF,
  random: Math.random,
  quickReconnectMax: 1_000,
};

/** Close codes after which reconnecting cannot help: the application must act. */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([4003, 1008]);

/** Result of one transition. */
export interface Transition {
  readonly state: ConnectionState;
  readonly context: MachineContext;
  readonly effects: readonly ConnectionEffect[];
}

function reconnect(
  context: MachineContext,
  delay: number,
  reason: string | undefined,
  nextAttempt: number,
): Transition {
  const state: ConnectionState =
    reason === undefined
      ? { status: 'reconnecting', attempt: nextAttempt, delay }
      : { status: 'reconnecting', attempt: nextAttempt, delay, reason };
  return { state, context: { ...context, attempt: nextAttempt }, effects: [{ type: 'schedule', delay }] };
}

/**
 * Every transition of the connection. Pure: the owner performs the effects.
 *
 * Close codes (docs/PROTOCOL.md, "Closing"): 1001 `server_shutdown` → a quick reconnect with
 * jitter (the whole fleet lost that node at once); 4008 `slow_consumer` and 4001 `token_expired`
 * → at once (4001 with a new token, which every open fetches), backing off if it repeats before
 * the connection was stable; 4013 `too_many_connections` and
 * anything else → exponential backoff with full jitter; 4003/1008 → closed with the error,
 * since retrying the same credentials or frames would fail the same way.
 */
export function transition(
  state: ConnectionState,
  context: MachineContext,
  input: ConnectionInput,
  policy: MachinePolicy = DEFAULT_POLICY,
): Transition {
  if (state.status === 'closed') return { state, context, effects: [] };
  switch (input.type) {
    case 'close':
      return { state: { status: 'closed' }, context, effects: [{ type: 'stop' }] };
    case 'connect':
      if (state.status === 'offline') return { state, context, effects: [] };
      return { state: { status: 'connecting' }, context, effects: [{ type: 'open' }] };
    case 'subscribed':
      return { state: { status: 'connected', transport: input.transport }, context, effects: [] };
    case 'stable':
      return { state, context: { ...context, attempt: 0 }, effects: [] };
    case 'offline':
      return { state: { status: 'offline' }, context, effects: [{ type: 'stop' }] };
    case 'online':
      if (state.status === 'offline' || state.status === 'reconnecting') {
        return { state: { status: 'connecting' }, context, effects: [{ type: 'open' }] };
      }
      return { state, context, effects: [] };
    case 'closed': {
      if (state.status === 'offline') return { state, context, effects: [] };
      const { code } = input;
      const reason = input.reason;
      if (FATAL_CLOSE_CODES.has(code)) {
        return {
          state: { status: 'closed', error: { code, reason: reason ?? '' } },
          context,
          effects: [{ type: 'stop' }],
        };
      }
      if (code === 4008 || code === 4001) {
        // At once the first time; if it happens again before the connection was stable (a
        // token() that keeps returning expired tokens, a consumer that cannot keep up), back
        // off rather than hammer the server.
        const delay = context.attempt === 0 ? 0 : backoffDelay(context.attempt, policy.random, policy.backoff);
        return reconnect(context, delay, reason, context.attempt + 1);
      }
      if (code === 1001) {
        const delay = Math.floor(policy.random() * policy.quickReconnectMax);
        return reconnect(context, delay, reason, context.attempt);
      }
      const delay = backoffDelay(context.attempt, policy.random, policy.backoff);
      return reconnect(context, delay, reason, context.attempt + 1);
    }
  }
}
