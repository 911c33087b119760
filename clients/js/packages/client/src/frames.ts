/**
 * The realtime frames of docs/PROTOCOL.md as TypeScript types.
 *
 * Events are typed from the server's OpenAPI document: `WireEvent` there is a union
 * discriminated by the event type, one payload schema per type (generated into
 * `generated/openapi.ts`), so `if (e.event_type === 'AlertRaised') e.data.severity` type-checks
 * and a payload field the server drops is a compile error. The other frames are not in the
 * document (it describes REST only) and are written from the protocol document; the decoder
 * tolerates the optional fields being absent rather than `null`.
 */
import type { components } from './generated/openapi.js';

/** An event as the REST API publishes it: a union discriminated by `type`. */
type WireEvent = components['schemas']['WireEvent'];

/** Every event type the server writes, e.g. `'AlertRaised'`. */
export type EventType = WireEvent['type'];

/** The payload (`data`) of one event type. */
export type EventData<T extends EventType = EventType> = Extract<WireEvent, { type: T }>['data'];

/** The aggregate type of one event type (`alert`, `case_thread`, …). */
export type AggregateTypeOf<T extends EventType = EventType> = Extract<WireEvent, { type: T }>['aggregate_type'];

/** The fields every event has, whatever its type. */
interface StreamEventCommon {
  /** The position as a string (what a client sends back as its last-event-id). */
  readonly id: string;
  /** Position in the hospital's stream: dense, increasing, the resume point. */
  readonly position: number;
  readonly aggregate_id: string;
  /** The aggregate's version after this event. */
  readonly sequence: number;
  /** The topics the event belongs to (derived client-side for polled events). */
  readonly topics: readonly string[];
  /** Commit time (RFC 3339). */
  readonly ts: string;
}

/**
 * One event of the hospital's stream, the same on every transport: a union discriminated by
 * `event_type`, so switching on it narrows `data` (and `aggregate_type`).
 * `StreamEvent<'AlertRaised'>` is the one variant.
 */
export type StreamEvent<T extends EventType = EventType> = T extends EventType
  ? StreamEventCommon & {
      /** The domain event, e.g. `AlertRaised`. */
      readonly event_type: T;
      /** `alert`, `case_thread`, `patient_vitals`, `appointment` or `notification`. */
      readonly aggregate_type: AggregateTypeOf<T>;
      /** The event's fields. */
      readonly data: Readonly<EventData<T>>;
    }
  : never;

/** The loosely typed event frame as it arrives (decoded into a [`StreamEvent`]). */
export interface EventFrame {
  readonly type: 'event';
  /** Sent by servers before issue 17 only: the position as a string. */
  readonly id?: string;
  readonly position: number | string;
  readonly event_type: string;
  readonly aggregate_type: string;
  readonly aggregate_id: string;
  readonly sequence: number;
  /** The subscribed topic the event was delivered on (may be absent). */
  readonly topic?: string;
  /** All topics of the event; may be absent when it equals `[topic]`. */
  readonly topics?: readonly string[];
  readonly data?: Readonly<Record<string, unknown>>;
  readonly ts: string;
}

/** Who is online (topic `presence`). */
export interface PresenceEntry {
  readonly user: string;
  readonly role: string;
  readonly connections: number;
}

/** A user typing in, or viewing, something. */
export interface UserRef {
  readonly user: string;
  readonly role: string;
}

/** Frames the server sends. */
export type ServerFrame =
  | { readonly type: 'authenticated'; readonly user: string; readonly role: string; readonly hospital: string; readonly expires_at: string }
  | {
      readonly type: 'subscribed';
      readonly id?: string | number;
      readonly topics: readonly string[];
      readonly recovered: boolean;
      readonly reason?: 'too_old' | 'epoch_changed' | 'unknown_position';
      readonly position: string | number;
      /** Absent or `null` when the hospital's stream has no epoch yet (older servers). */
      readonly epoch?: string | null;
    }
  | EventFrame
  | { readonly type: 'unsubscribed'; readonly id?: string | number; readonly topics: readonly string[] }
  | { readonly type: 'presence'; readonly online: readonly PresenceEntry[] }
  | { readonly type: 'typing'; readonly case: string; readonly users: readonly UserRef[] }
  | { readonly type: 'viewing'; readonly target: string; readonly viewers: readonly UserRef[] }
  | { readonly type: 'token_expiring'; readonly expires_at: string; readonly seconds_left: number }
  | { readonly type: 'error'; readonly id?: string | number; readonly code: string; readonly message: string }
  | { readonly type: 'pong'; readonly id?: string | number }
  | { readonly type: 'closing'; readonly code: number; readonly reason: string };

/** Frames the client sends over a WebSocket. */
export type ClientFrame =
  | { readonly type: 'auth'; readonly token: string }
  | {
      readonly type: 'subscribe';
      readonly id: string;
      readonly topics: readonly string[];
      readonly last_event_id?: string;
      readonly epoch?: string;
    }
  | { readonly type: 'typing'; readonly case: string }
  | { readonly type: 'view' | 'unview'; readonly target: string }
  | { readonly type: 'refresh'; readonly token: string }
  | { readonly type: 'ping'; readonly id?: string };

/** An event as the polling endpoint returns it (`type` is the domain event there). */
export interface PolledEvent {
  readonly id: string;
  readonly position: number;
  readonly type: string;
  readonly aggregate_type: string;
  readonly aggregate_id: string;
  readonly sequence: number;
  readonly data: Readonly<Record<string, unknown>>;
  readonly ts: string;
}

/**
 * The topics of an event from its routing facts, for polled events (which carry no `topics`).
 * Mirrors the topic table of docs/PROTOCOL.md.
 */
export function topicsOf(e: { aggregate_type: string; aggregate_id: string; data: Readonly<Record<string, unknown>> }): string[] {
  const topics: string[] = [];
  switch (e.aggregate_type) {
    case 'alert':
      topics.push('alerts');
      break;
    case 'case_thread':
      topics.push('cases', `case:${e.aggregate_id}`);
      break;
    case 'appointment':
      topics.push('appointments');
      break;
    case 'notification':
      topics.push('notifications');
      break;
    default:
      break;
  }
  const patient = e.data['patient'];
  if (typeof patient === 'string') topics.push(`patient:${patient}`);
  else if (e.aggregate_type === 'patient_vitals') topics.push(`patient:${e.aggregate_id}`);
  return topics;
}
