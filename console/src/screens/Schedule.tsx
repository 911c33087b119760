/** A day's appointments, live: reschedules, check-ins and cancellations appear as they happen. */
import { useState, type ReactNode } from 'react';
import { useLive, useVigil } from '@vigil/react';
import { rows, type AppointmentRow } from '../types';
import { problemText, time } from './common';
import { Link } from '../router';

export function Schedule(): ReactNode {
  const vigil = useVigil();
  const [date, setDate] = useState(() => new Date().toISOString().slice(0, 10));
  const page = useLive('appointments', { date });
  const appts = rows<AppointmentRow>(page.data?.appointments);
  const [error, setError] = useState('');
  const run = (p: { result: Promise<unknown> }): void => {
    setError('');
    p.result.catch((e: unknown) => setError(problemText(e)));
  };
  const later = (a: AppointmentRow, minutes: number) => ({
    start: new Date(Date.parse(a.starts_at) + minutes * 60_000).toISOString(),
    end: new Date(Date.parse(a.ends_at) + minutes * 60_000).toISOString(),
  });
  return (
    <section aria-labelledby="schedule-title">
      <h1 id="schedule-title">Schedule</h1>
      <label>Day (UTC) <input type="date" value={date} onChange={(e) => e.target.value && setDate(e.target.value)} /></label>
      {error && <p role="alert" className="error">{error}</p>}
      <table className="table" data-testid="schedule">
        <caption className="sr-only">Appointments on {date}</caption>
        <thead><tr><th scope="col">Time</th><th scope="col">Patient</th><th scope="col">Clinician</th><th scope="col">Status</th><th scope="col">Actions</th></tr></thead>
        <tbody>
          {appts.map((a) => (
            <tr key={a.appointment_id}>
              <td>{time(a.starts_at)}–{time(a.ends_at)}</td>
              <td><Link to={`patients/${a.patient}`}>{a.patient}</Link>{a.reason ? ` · ${a.reason}` : ''}</td>
              <td>{a.clinician}</td>
              <td>{a.status.replace('_', ' ')}{a.cancel_reason ? ` (${a.cancel_reason})` : ''}</td>
              <td className="actions">
                {a.status === 'scheduled' && (
                  <>
                    <button type="button" onClick={() => run(vigil.appointments.checkIn(a.appointment_id))}>Check in</button>
                    <button type="button" onClick={() => run(vigil.appointments.reschedule(a.appointment_id, later(a, 30)))}>+30 min</button>
                    <button type="button" onClick={() => run(vigil.appointments.cancel(a.appointment_id, { reason: 'Cancelled from the console' }))}>Cancel</button>
                  </>
                )}
              </td>
            </tr>
          ))}
          {page.status === 'ready' && appts.length === 0 && <tr><td colSpan={5} className="empty">No appointments on {date}.</td></tr>}
        </tbody>
      </table>
    </section>
  );
}
