/**
 * A typed method per REST command, its body type taken by path from the generated OpenAPI types.
 * Every command goes through the outbox: it gets an Idempotency-Key and is retried until it has
 * a final answer; the returned {@link PendingCommand} reports `pending → committed | rejected`.
 */
import type { BodyOf } from './api-types.js';
import type { CommandOptions, OutboxRecord, PendingCommand } from './outbox.js';

type H = '/api/hospitals/{hospital}';
type Enqueue = (record: Omit<OutboxRecord, 'key' | 'issuedAt'>) => PendingCommand;

const seg = (id: string): string => encodeURIComponent(id);

/** Builds the command groups over an enqueue function. */
export function createCommands(enqueue: Enqueue) {
  const post = (path: string, body?: unknown, options?: CommandOptions): PendingCommand =>
    enqueue({
      method: 'POST',
      path,
      ...(body === undefined ? {} : { body }),
      ...(options?.lane === undefined ? {} : { lane: options.lane }),
    });
  return {
    alerts: {
      /** Raise an alert. */
      raise: (body: BodyOf<`${H}/alerts`, 'post'>, options?: CommandOptions) => post('alerts', body, options),
      /** Acknowledge an alert (a second acknowledge is rejected). */
      acknowledge: (id: string, options?: CommandOptions) => post(`alerts/${seg(id)}/acknowledge`, undefined, options),
      /** Escalate an alert, optionally only if it is still at `expected_level`. */
      escalate: (id: string, body: BodyOf<`${H}/alerts/{id}/escalate`, 'post'>, options?: CommandOptions) => post(`alerts/${seg(id)}/escalate`, body, options),
      /** Resolve an alert. */
      resolve: (id: string, body: BodyOf<`${H}/alerts/{id}/resolve`, 'post'>, options?: CommandOptions) => post(`alerts/${seg(id)}/resolve`, body, options),
    },
    cases: {
      /** Open a case thread. */
      open: (body: BodyOf<`${H}/cases`, 'post'>, options?: CommandOptions) => post('cases', body, options),
      /** Assign a case. */
      assign: (id: string, body: BodyOf<`${H}/cases/{id}/assign`, 'post'>, options?: CommandOptions) => post(`cases/${seg(id)}/assign`, body, options),
      /** Change a case's status. */
      changeStatus: (id: string, body: BodyOf<`${H}/cases/{id}/status`, 'post'>, options?: CommandOptions) => post(`cases/${seg(id)}/status`, body, options),
      /** Post a message to a case thread. */
      postMessage: (id: string, body: BodyOf<`${H}/cases/{id}/messages`, 'post'>, options?: CommandOptions) => post(`cases/${seg(id)}/messages`, body, options),
      /** Mark a thread read up to a message. */
      markRead: (id: string, body: BodyOf<`${H}/cases/{id}/read`, 'post'>, options?: CommandOptions) => post(`cases/${seg(id)}/read`, body, options),
    },
    vitals: {
      /** Record a vitals reading for a patient. */
      record: (patient: string, body: BodyOf<`${H}/patients/{patient}/vitals`, 'post'>, options?: CommandOptions) =>
        post(`patients/${seg(patient)}/vitals`, body, options),
    },
    appointments: {
      /** Schedule an appointment. */
      schedule: (body: BodyOf<`${H}/appointments`, 'post'>, options?: CommandOptions) => post('appointments', body, options),
      /** Move an appointment. */
      reschedule: (id: string, body: BodyOf<`${H}/appointments/{id}/reschedule`, 'post'>, options?: CommandOptions) =>
        post(`appointments/${seg(id)}/reschedule`, body, options),
      /** Check a patient in. */
      checkIn: (id: string, options?: CommandOptions) => post(`appointments/${seg(id)}/check-in`, undefined, options),
      /** Cancel an appointment. */
      cancel: (id: string, body: BodyOf<`${H}/appointments/{id}/cancel`, 'post'>, options?: CommandOptions) => post(`appointments/${seg(id)}/cancel`, body, options),
    },
    notifications: {
      /** Notify one user. */
      send: (body: BodyOf<`${H}/notifications`, 'post'>, options?: CommandOptions) => post('notifications', body, options),
      /** Mark one of your notifications read. */
      markRead: (id: string, options?: CommandOptions) => post(`notifications/${seg(id)}/read`, undefined, options),
    },
  };
}

/** The command groups of a {@link Vigil} client. */
export type Commands = ReturnType<typeof createCommands>;
