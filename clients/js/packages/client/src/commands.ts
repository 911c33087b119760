/**
 * A typed method per REST command, its body type taken by path from the generated OpenAPI types.
 * Every command goes through the outbox: it gets an Idempotency-Key and is retried until it has
 * a final answer; the returned {@link PendingCommand} reports `pending → committed | rejected`.
 */
import type { BodyOf } from './api-types.js';
import type { OutboxRecord, PendingCommand } from './outbox.js';

type H = '/api/hospitals/{hospital}';
type Enqueue = (record: Omit<OutboxRecord, 'key' | 'issuedAt'>) => PendingCommand;

const seg = (id: string): string => encodeURIComponent(id);

/** Builds the command groups over an enqueue function. */
export function createCommands(enqueue: Enqueue) {
  const post = (path: string, body?: unknown): PendingCommand =>
    enqueue(body === undefined ? { method: 'POST', path } : { method: 'POST', path, body });
  return {
    alerts: {
      /** Raise an alert. */
      raise: (body: BodyOf<`${H}/alerts`, 'post'>) => post('alerts', body),
      /** Acknowledge an alert (a second acknowledge is rejected). */
      acknowledge: (id: string) => post(`alerts/${seg(id)}/acknowledge`),
      /** Escalate an alert, optionally only if it is still at `expected_level`. */
      escalate: (id: string, body: BodyOf<`${H}/alerts/{id}/escalate`, 'post'>) => post(`alerts/${seg(id)}/escalate`, body),
      /** Resolve an alert. */
      resolve: (id: string, body: BodyOf<`${H}/alerts/{id}/resolve`, 'post'>) => post(`alerts/${seg(id)}/resolve`, body),
    },
    cases: {
      /** Open a case thread. */
      open: (body: BodyOf<`${H}/cases`, 'post'>) => post('cases', body),
      /** Assign a case. */
      assign: (id: string, body: BodyOf<`${H}/cases/{id}/assign`, 'post'>) => post(`cases/${seg(id)}/assign`, body),
      /** Change a case's status. */
      changeStatus: (id: string, body: BodyOf<`${H}/cases/{id}/status`, 'post'>) => post(`cases/${seg(id)}/status`, body),
      /** Post a message to a case thread. */
      postMessage: (id: string, body: BodyOf<`${H}/cases/{id}/messages`, 'post'>) => post(`cases/${seg(id)}/messages`, body),
      /** Mark a thread read up to a message. */
      markRead: (id: string, body: BodyOf<`${H}/cases/{id}/read`, 'post'>) => post(`cases/${seg(id)}/read`, body),
    },
    vitals: {
      /** Record a vitals reading for a patient. */
      record: (patient: string, body: BodyOf<`${H}/patients/{patient}/vitals`, 'post'>) =>
        post(`patients/${seg(patient)}/vitals`, body),
    },
    appointments: {
      /** Schedule an appointment. */
      schedule: (body: BodyOf<`${H}/appointments`, 'post'>) => post('appointments', body),
      /** Move an appointment. */
      reschedule: (id: string, body: BodyOf<`${H}/appointments/{id}/reschedule`, 'post'>) =>
        post(`appointments/${seg(id)}/reschedule`, body),
      /** Check a patient in. */
      checkIn: (id: string) => post(`appointments/${seg(id)}/check-in`),
      /** Cancel an appointment. */
      cancel: (id: string, body: BodyOf<`${H}/appointments/{id}/cancel`, 'post'>) => post(`appointments/${seg(id)}/cancel`, body),
    },
    notifications: {
      /** Notify one user. */
      send: (body: BodyOf<`${H}/notifications`, 'post'>) => post('notifications', body),
      /** Mark one of your notifications read. */
      markRead: (id: string) => post(`notifications/${seg(id)}/read`),
    },
  };
}

/** The command groups of a {@link Vigil} client. */
export type Commands = ReturnType<typeof createCommands>;
