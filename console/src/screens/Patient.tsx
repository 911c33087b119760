/**
 * A patient: latest vitals against their normal ranges (the server's flags say which are out of
 * range; the ranges shown are the reference ones of the vitals aggregate), a chart of recent
 * readings with out-of-range points marked by shape and label, the patient's open alerts, cases
 * and today's appointments, and a banner naming whoever else is viewing the patient.
 */
import { useState, type ReactNode } from 'react';
import { useLive, useViewing, useVigil } from '@vigil/react';
import { rows, type AlertRow, type AppointmentRow, type CaseRow, type VitalsRow } from '../types';
import { problemText, SeverityBadge, time, ViewingBanner } from './common';
import { Link, navigate } from '../router';

type Sign = 'heart_rate' | 'systolic' | 'diastolic' | 'spo2' | 'temperature_c' | 'respiratory_rate';
const SIGNS: readonly { key: Sign; flag: string; label: string; unit: string; range: [number, number] }[] = [
  { key: 'heart_rate', flag: 'heart_rate', label: 'Heart rate', unit: 'bpm', range: [60, 100] },
  { key: 'systolic', flag: 'systolic', label: 'Systolic BP', unit: 'mmHg', range: [90, 140] },
  { key: 'diastolic', flag: 'diastolic', label: 'Diastolic BP', unit: 'mmHg', range: [60, 90] },
  { key: 'spo2', flag: 'spo2', label: 'SpO₂', unit: '%', range: [95, 100] },
  { key: 'temperature_c', flag: 'temperature', label: 'Temperature', unit: '°C', range: [36.1, 37.8] },
  { key: 'respiratory_rate', flag: 'respiratory_rate', label: 'Respiratory rate', unit: '/min', range: [12, 20] },
];

function deviation(v: VitalsRow, flag: string): string | null {
  return v.out_of_range.find((o) => o.sign === flag)?.deviation ?? null;
}

export function Patient(props: { patient: string; me: string }): ReactNode {
  const id = props.patient;
  const vigil = useVigil();
  const view = useLive('patient', { patient: id });
  const alerts = rows<AlertRow>(useLive('alerts', { patient: id }).data?.alerts);
  const cases = rows<CaseRow>(useLive('cases', {}).data?.cases).filter((c) => c.patient === id);
  const appts = rows<AppointmentRow>(useLive('appointments', {}).data?.appointments).filter((a) => a.patient === id);
  const viewers = useViewing(`patient:${id}`);
  const [other, setOther] = useState(id);
  const [hr, setHr] = useState('');
  const [spo2, setSpo2] = useState('');
  const [note, setNote] = useState('');
  const latest = view.data?.latest as unknown as VitalsRow | null | undefined;
  const history = rows<VitalsRow>(view.data?.history);
  return (
    <section aria-labelledby="patient-title">
      <h1 id="patient-title">Patient {id}</h1>
      <form className="row" onSubmit={(e) => { e.preventDefault(); if (other.trim()) navigate(`patients/${other.trim()}`); }}>
        <label>Patient id <input value={other} onChange={(e) => setOther(e.target.value)} /></label>
        <button type="submit">Open</button>
      </form>
      <ViewingBanner viewers={viewers} me={props.me} what="patient" />
      {view.status === 'error' && <p role="alert" className="error">{problemText(view.error)}</p>}
      <h2>Latest vitals {latest && <span className="muted small">recorded {time(latest.recorded_at)} by {latest.recorded_by}</span>}</h2>
      {latest ? (
        <table className="vitals" data-testid="vitals">
          <thead>
            <tr><th scope="col">Sign</th><th scope="col">Value</th><th scope="col">Normal range</th><th scope="col">Status</th></tr>
          </thead>
          <tbody>
            {SIGNS.map((s) => {
              const value = latest[s.key];
              const dev = deviation(latest, s.flag);
              return (
                <tr key={s.key} className={dev ? 'out' : ''}>
                  <th scope="row">{s.label}</th>
                  <td>{value ?? '–'} {value !== null && s.unit}</td>
                  <td>{s.range[0]}–{s.range[1]} {s.unit}</td>
                  <td>{value === null ? 'not measured' : dev ? <strong>{dev === 'high' ? '▲ HIGH' : '▼ LOW'}</strong> : '✓ normal'}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : (
        view.status === 'ready' && <p className="empty">No readings yet.</p>
      )}
      <div className="charts">
        <Chart history={history} sign={SIGNS[0]!} />
        <Chart history={history} sign={SIGNS[3]!} />
      </div>
      <details className="raise">
        <summary>Record vitals</summary>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            const body = { heart_rate: hr ? Number(hr) : null, spo2: spo2 ? Number(spo2) : null };
            vigil.vitals.record(id, body).result.then(() => setNote('Recorded.'), (err: unknown) => setNote(`Rejected: ${problemText(err)}`));
          }}
        >
          <label>Heart rate <input inputMode="numeric" value={hr} onChange={(e) => setHr(e.target.value)} /></label>
          <label>SpO₂ <input inputMode="numeric" value={spo2} onChange={(e) => setSpo2(e.target.value)} /></label>
          <button type="submit">Record</button>
          <span role="status" className="muted">{note}</span>
        </form>
      </details>
      <h2>Open alerts</h2>
      <ul className="cards">
        {alerts.map((a) => <li key={a.alert_id}><SeverityBadge severity={a.severity} /> {a.message} <span className="muted">({a.status})</span></li>)}
        {alerts.length === 0 && <li className="empty">None.</li>}
      </ul>
      <h2>Cases</h2>
      <ul className="cards">
        {cases.map((c) => <li key={c.case_id}><Link to={`cases/${c.case_id}`}>{c.title}</Link> <span className="muted">({c.status.replace('_', ' ')})</span></li>)}
        {cases.length === 0 && <li className="empty">None.</li>}
      </ul>
      <h2>Appointments today</h2>
      <ul className="cards">
        {appts.map((a) => <li key={a.appointment_id}>{time(a.starts_at)} with {a.clinician} <span className="muted">({a.status})</span></li>)}
        {appts.length === 0 && <li className="empty">None.</li>}
      </ul>
    </section>
  );
}

/** One sign over the recent readings: a line, the normal band, out-of-range points as ✕ with a label. */
function Chart(props: { history: VitalsRow[]; sign: (typeof SIGNS)[number] }): ReactNode {
  const { sign } = props;
  const points = props.history
    .map((v) => ({ v, value: v[sign.key] }))
    .filter((p): p is { v: VitalsRow; value: number } => typeof p.value === 'number')
    .slice(-30);
  const W = 320;
  const H = 120;
  const values = points.map((p) => p.value).concat(sign.range);
  const lo = Math.min(...values) - 2;
  const hi = Math.max(...values) + 2;
  const x = (i: number): number => (points.length <= 1 ? W / 2 : 10 + (i * (W - 20)) / (points.length - 1));
  const y = (v: number): number => H - 10 - ((v - lo) / (hi - lo || 1)) * (H - 20);
  const outCount = points.filter((p) => deviation(p.v, sign.flag)).length;
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${sign.label}: ${points.length} readings, ${outCount} out of range`}>
        <rect x="0" y={y(sign.range[1])} width={W} height={Math.max(0, y(sign.range[0]) - y(sign.range[1]))} className="band" />
        <polyline fill="none" className="line" points={points.map((p, i) => `${x(i)},${y(p.value)}`).join(' ')} />
        {points.map((p, i) =>
          deviation(p.v, sign.flag) ? (
            <g key={p.v.reading} className="out-point">
              <path d={`M${x(i) - 5},${y(p.value) - 5} l10,10 m0,-10 l-10,10`} />
              <text x={x(i) + 7} y={y(p.value) - 6}>{p.value}</text>
            </g>
          ) : (
            <circle key={p.v.reading} cx={x(i)} cy={y(p.value)} r="3" className="point" />
          ),
        )}
      </svg>
      <figcaption>{sign.label} ({sign.unit}); shaded: normal {sign.range[0]}–{sign.range[1]}; ✕ out of range ({outCount})</figcaption>
    </figure>
  );
}
