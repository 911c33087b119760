/**
 * `@vigil/client`: the TypeScript client of Vigil. Resume from the last position, live queries
 * that hand a server snapshot over to the stream without a gap, an exactly-once command outbox,
 * token refresh, and WebSocket → SSE → polling fallback. No runtime dependencies.
 */
export { Vigil, type VigilOptions, type Clock, type ResetReason, type VigilErrorInfo, type TabRole } from './vigil.js';
export { backoffDelay, backoffCap, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export {
  transition,
  DEFAULT_POLICY,
  FATAL_CLOSE_CODES,
  type ConnectionState,
  type ConnectionInput,
  type ConnectionEffect,
  type MachineContext,
  type MachinePolicy,
  type Transition,
  type TransportName,
} from './state.js';
export {
  memoryStorage,
  localStorageAdapter,
  asyncStorageAdapter,
  indexedDbStorage,
  type VigilStorage,
  type SyncStorageLike,
  type AsyncStorageLike,
  type IndexedDbStorageOptions,
} from './storage.js';
export { Store, type Observable } from './store.js';
export { LiveQuery, LIVE_DEFINITIONS, type LiveKind, type LiveKinds, type LiveResult } from './live.js';
export { Outbox, PendingCommand, isRetryable, laneOf, type CommandStatus, type CommandOptions, type OutboxRecord } from './outbox.js';
export { VigilHttpError, VigilNetworkError, type FetchLike } from './http.js';
export type { Commands } from './commands.js';
export type {
  StreamEvent,
  EventType,
  EventData,
  AggregateTypeOf,
  EventFrame,
  ServerFrame,
  ClientFrame,
  PresenceEntry,
  UserRef,
} from './frames.js';
export type { WebSocketConstructor, WebSocketLike, EventSourceConstructor, EventSourceLike } from './transports.js';
export type { CommandOutcome, Problem, BodyOf, QueryOf, ResultOf, Schemas } from './api-types.js';
