/**
 * The rows of the read models as the server sends them. The published OpenAPI document does not
 * describe row shapes yet (`Record<string, never>`), so these are written from the projections'
 * documented columns; they are only read, never sent back.
 */
export type Severity = 'critical' | 'high' | 'medium' | 'low';
export const SEVERITIES: readonly Severity[] = ['critical', 'high', 'medium', 'low'];

export interface AlertRow {
  alert_id: string;
  severity: Severity;
  status: 'raised' | 'acknowledged' | 'resolved';
  message: string;
  department: string | null;
  patient: string | null;
  level: number;
  raised_by: string;
  raised_at: string;
  acknowledged_by: string | null;
  acknowledged_at: string | null;
  resolved_at: string | null;
  /** When the system escalates it unless acknowledged first; null once acknowledged or resolved, or at the last level. */
  escalation_due_at: string | null;
}

export interface CaseRow {
  case_id: string;
  patient: string;
  title: string;
  status: string;
  assignee: string | null;
  opened_by: string;
  opened_at: string;
  updated_at: string;
  message_count: number;
  last_message_body: string | null;
  last_message_by: string | null;
  unread: number;
}

export interface MessageRow {
  message_id: number;
  author: string;
  body: string;
  posted_at: string;
}

export interface ReceiptRow {
  user: string;
  up_to: number;
  read_at: string;
}

export interface VitalsRow {
  reading: number;
  heart_rate: number | null;
  systolic: number | null;
  diastolic: number | null;
  spo2: number | null;
  temperature_c: number | null;
  respiratory_rate: number | null;
  out_of_range: { sign: string; deviation: string }[];
  any_out_of_range: boolean;
  recorded_by: string;
  recorded_at: string;
  flags?: Record<string, string>;
}

export interface AppointmentRow {
  appointment_id: string;
  patient: string;
  clinician: string;
  starts_at: string;
  ends_at: string;
  status: string;
  reason: string | null;
  checked_in_at: string | null;
  cancel_reason: string | null;
}

export interface NotificationRow {
  notification_id: string;
  kind: string;
  urgent: boolean;
  patient: string | null;
  content: Record<string, unknown>;
  sent_by: string;
  sent_at: string;
  read_at: string | null;
}

/** Rows of a loosely typed page, as the console reads them. */
export function rows<T>(value: unknown): T[] {
  return Array.isArray(value) ? (value as T[]) : [];
}
