/**
 * Type test (checked by `npm run typecheck`, part of `npm test`): events and live-query rows are
 * typed by the schemas the server publishes. Each `@ts-expect-error` line must be an error; if
 * the types loosened (e.g. `data` back to `Record<string, unknown>`, or rows to
 * `Record<string, never>`), tsc would report the directive as unused and fail.
 */
import type { EventData, EventType, LiveResult, LiveKinds, StreamEvent, Vigil } from '@vigil/client';

declare const vigil: Vigil;

vigil.onEvent((e) => {
  // Narrowing on the event type gives that type's payload.
  if (e.event_type === 'AlertRaised') {
    const severity: 'low' | 'medium' | 'high' | 'critical' = e.data.severity;
    // Frame shape 2 leaves null fields out of `data`: a nullable field may also be absent.
    const department: string | null | undefined = e.data.department;
    const aggregate: 'alert' = e.aggregate_type;
    void severity, department, aggregate;
    // @ts-expect-error AlertRaised carries no `up_to`.
    void e.data.up_to;
  }
  if (e.event_type === 'MessagePosted') {
    const id: number = e.data.message_id;
    const body: string = e.data.body;
    void id, body;
    // @ts-expect-error MessagePosted has no severity.
    void e.data.severity;
  }
  switch (e.event_type) {
    case 'VitalsRecorded':
      void e.data.signs.heart_rate;
      void e.data.out_of_range.map((o) => o.deviation);
      break;
    case 'NotificationSent':
      if (e.data.content.kind === 'lab_result') void e.data.content.urgent;
      break;
    default:
      break;
  }
  // Without narrowing, a type-specific field is not there.
  // @ts-expect-error `severity` is only on alert events.
  void e.data.severity;
  // @ts-expect-error not an event type the server writes.
  if (e.event_type === 'AlertExploded') void 0;
});

// A single variant by name.
const raised: EventData<'AlertRaised'> = {
  severity: 'high',
  message: 'SpO2 88%',
  department: null,
  patient: null,
  by: 'nurse-1',
  at: '2026-03-14T09:30:00Z',
};
void raised;
// @ts-expect-error `severity` is an enum, not any string.
const wrong: EventData<'AlertRaised'> = { ...raised, severity: 'urgent' };
void wrong;
const only: StreamEvent<'CaseOpened'>['data']['title'] = 'Chest pain';
void only;
const types: EventType[] = ['AlertRaised', 'CaseOpened', 'NotificationRead'];
void types;

// Live-query rows are typed too.
declare const board: LiveResult<LiveKinds['alerts']['data']>;
const firstSeverity: string | undefined = board.data?.alerts[0]?.severity;
const critical: number | undefined = board.data?.counts.critical;
void firstSeverity, critical;
// @ts-expect-error rows have no `nonsense` field.
void board.data?.alerts[0]?.nonsense;
declare const cases: LiveResult<LiveKinds['case']['data']>;
const unread: number | undefined = cases.data?.case.unread;
void unread;
// @ts-expect-error `unread` is a number.
const unreadText: string | undefined = cases.data?.case.unread;
void unreadText;
