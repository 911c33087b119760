/**
 * The alert board: open alerts by severity with counts, acknowledge / escalate / resolve through
 * the client's outbox (a row shows its command as pending — queued while offline — until the
 * server answers and the live query re-reads), a countdown to each raised alert's escalation
 * (the row's `escalation_due_at`, the scheduler's own due time, which every role reads — the
 * deadlines settings themselves are admin-only), and new critical alerts announced in an assertive ARIA live region as well as on screen.
 * Every open alert is loaded (page after page, kept live: see `../board`), and the list is
 * windowed: only the rows in view (plus a margin) are in the DOM, so 10,000 stay responsive.
 */
import { useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { useObservable, useVigil } from '@vigil/react';
import type { PendingCommand } from '@vigil/client';
import type { Session } from '../session';
import { SEVERITIES, type AlertRow, type Severity } from '../types';
import { useBoard } from '../board';
import { duration, problemText, SeverityBadge, time, useNow } from './common';
import { Link } from '../router';

/** Row height of the windowed list, px (fixed, so the window is arithmetic). */
const ROW = 96;
/** Rows rendered above and below the visible ones. */
const OVERSCAN = 6;

/** What is pending for each alert, from the outbox: `alerts/<id>/<action>`. */
function pendingByAlert(pending: readonly PendingCommand[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const p of pending) {
    const m = /^alerts\/([^/]+)\/(acknowledge|escalate|resolve)$/.exec(p.record.path);
    if (m?.[1] && m[2]) map.set(decodeURIComponent(m[1]), m[2]);
  }
  return map;
}

export function AlertBoard(props: { session: Session }): ReactNode {
  const vigil = useVigil();
  const [severity, setSeverity] = useState<Severity | ''>('');
  const board = useBoard(severity);
  const pending = pendingByAlert(useObservable(vigil.outbox.pending));
  const alerts = board.alerts;
  const counts = board.counts;
  const total = severity ? (counts[severity] ?? 0) : SEVERITIES.reduce((n, s) => n + (counts[s] ?? 0), 0);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [announcement, setAnnouncement] = useState('');
  const seen = useRef<Set<string> | null>(null);

  // Announce critical alerts that appear after the first load (not the ones already open).
  useEffect(() => {
    if (board.status !== 'ready') return;
    const ids = new Set(alerts.map((a) => a.alert_id));
    if (seen.current) {
      const fresh = alerts.filter((a) => a.severity === 'critical' && !seen.current?.has(a.alert_id));
      if (fresh.length > 0) setAnnouncement(`Critical alert: ${fresh.map((a) => a.message).join('; ')}`);
      for (const id of ids) seen.current.add(id);
    } else {
      seen.current = ids;
    }
  }, [board.status, alerts]);

  const act = (id: string, run: () => PendingCommand): void => {
    setErrors(({ [id]: _, ...rest }) => rest);
    run().result.catch((e: unknown) => setErrors((m) => ({ ...m, [id]: problemText(e) })));
  };

  return (
    <section aria-labelledby="board-title">
      <h1 id="board-title">Alert board</h1>
      <div className="live-critical" role="alert" aria-live="assertive" data-testid="critical-announcement">
        {announcement && (
          <p className="banner banner-critical">
            <span aria-hidden="true">‼ </span>
            {announcement}{' '}
            <button type="button" className="link" onClick={() => setAnnouncement('')}>Dismiss</button>
          </p>
        )}
      </div>
      <ul className="counts" aria-label="Open alerts by severity">
        {SEVERITIES.map((s) => (
          <li key={s} data-testid={`count-${s}`}>
            <SeverityBadge severity={s} count={counts[s] ?? 0} />
          </li>
        ))}
      </ul>
      <div className="toolbar">
        <label>
          Severity{' '}
          <select value={severity} onChange={(e) => setSeverity(e.target.value as Severity | '')}>
            <option value="">All</option>
            {SEVERITIES.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <span className="muted" aria-live="off">
          {board.status === 'loading'
            ? 'Loading…'
            : `${alerts.length} shown${board.partial ? ` of ${total} (reading the rest)` : ''} · as of position ${board.position ?? '–'}`}
          {board.refreshing ? ' · updating' : ''}
        </span>
      </div>
      <RaiseAlert />
      {board.status === 'error' && <p role="alert" className="error">Cannot read the board: {problemText(board.error)}</p>}
      <AlertList
        alerts={alerts}
        render={(a) => (
          <AlertItem
            alert={a}
            pending={pending.get(a.alert_id)}
            error={errors[a.alert_id]}
            deadline={a.escalation_due_at ? Date.parse(a.escalation_due_at) : null}
            onAck={() => act(a.alert_id, () => vigil.alerts.acknowledge(a.alert_id))}
            onEscalate={() => act(a.alert_id, () => vigil.alerts.escalate(a.alert_id, { reason: `Escalated by ${props.session.user}`, expected_level: a.level }))}
            onResolve={() => act(a.alert_id, () => vigil.alerts.resolve(a.alert_id, { note: `Resolved by ${props.session.user}` }))}
          />
        )}
      />
    </section>
  );
}

/** A windowed list: a scroll box of `alerts.length * ROW` px with only the visible rows placed. */
function AlertList(props: { alerts: readonly AlertRow[]; render: (a: AlertRow) => ReactNode }): ReactNode {
  const box = useRef<HTMLDivElement>(null);
  const [scroll, setScroll] = useState({ top: 0, height: 600 });
  const empty = props.alerts.length === 0;
  // Attached when the scroll box appears (an empty board renders none).
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const update = (): void => setScroll({ top: el.scrollTop, height: el.clientHeight });
    update();
    el.addEventListener('scroll', update, { passive: true });
    window.addEventListener('resize', update);
    return () => {
      el.removeEventListener('scroll', update);
      window.removeEventListener('resize', update);
    };
  }, [empty]);
  const total = props.alerts.length;
  const first = Math.max(0, Math.floor(scroll.top / ROW) - OVERSCAN);
  const last = Math.min(total, Math.ceil((scroll.top + scroll.height) / ROW) + OVERSCAN);
  const visible = useMemo(() => props.alerts.slice(first, last), [props.alerts, first, last]);
  if (total === 0) return <p className="empty">No open alerts.</p>;
  return (
    <div className="window" ref={box} data-testid="alert-list" tabIndex={0} aria-label={`Open alerts, ${total}`} role="region">
      <ul style={{ height: total * ROW, position: 'relative' }} aria-label="Alerts">
        {visible.map((a, i) => (
          <li key={a.alert_id} style={{ position: 'absolute', top: (first + i) * ROW, height: ROW, left: 0, right: 0 }} aria-setsize={total} aria-posinset={first + i + 1}>
            {props.render(a)}
          </li>
        ))}
      </ul>
    </div>
  );
}

const PENDING_TEXT: Record<string, string> = { acknowledge: 'Acknowledging', escalate: 'Escalating', resolve: 'Resolving' };

function AlertItem(props: {
  alert: AlertRow;
  pending: string | undefined;
  error: string | undefined;
  deadline: number | null;
  onAck: () => void;
  onEscalate: () => void;
  onResolve: () => void;
}): ReactNode {
  const a = props.alert;
  const now = useNow();
  const busy = props.pending !== undefined;
  const left = props.deadline !== null && a.status === 'raised' ? (props.deadline - now) / 1000 : null;
  return (
    <article className={`alert alert-${a.severity}`} data-testid="alert" data-alert-id={a.alert_id} data-status={a.status} aria-busy={busy}>
      <div className="alert-head">
        <SeverityBadge severity={a.severity} />
        <span className="alert-msg">{a.message}</span>
      </div>
      <div className="alert-meta">
        <span data-testid="alert-status">
          {busy ? `${PENDING_TEXT[props.pending ?? ''] ?? 'Sending'}… (pending)` : a.status}
          {a.status === 'acknowledged' && a.acknowledged_by && !busy ? ` by ${a.acknowledged_by}` : ''}
        </span>
        {a.level > 0 && <span> · level {a.level}</span>}
        {a.patient && <> · <Link to={`patients/${a.patient}`}>{a.patient}</Link></>}
        <span> · raised {time(a.raised_at)} by {a.raised_by}</span>
        {left !== null && (
          <span className={left < 0 ? 'overdue' : ''} data-testid="escalation-countdown"> · {left < 0 ? `escalation overdue by ${duration(-left)}` : `escalates in ${duration(left)}`}</span>
        )}
      </div>
      <div className="alert-actions">
        {a.status === 'raised' && (
          <button type="button" onClick={props.onAck} disabled={busy} aria-label={`Acknowledge: ${a.message}`}>Acknowledge</button>
        )}
        <button type="button" onClick={props.onEscalate} disabled={busy} aria-label={`Escalate: ${a.message}`}>Escalate</button>
        <button type="button" onClick={props.onResolve} disabled={busy} aria-label={`Resolve: ${a.message}`}>Resolve</button>
        {props.error && <span role="alert" className="error"> {props.error}</span>}
      </div>
    </article>
  );
}

function RaiseAlert(): ReactNode {
  const vigil = useVigil();
  const [severity, setSeverity] = useState<Severity>('high');
  const [message, setMessage] = useState('');
  const [patient, setPatient] = useState('');
  const [status, setStatus] = useState('');
  return (
    <details className="raise">
      <summary>Raise an alert</summary>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (!message.trim()) return;
          const cmd = vigil.alerts.raise({ severity, message: message.trim(), patient: patient.trim() || null });
          setStatus('Sending…');
          cmd.result.then(() => setStatus('Raised.'), (err: unknown) => setStatus(`Rejected: ${problemText(err)}`));
          setMessage('');
        }}
      >
        <label>
          Severity{' '}
          <select value={severity} onChange={(e) => setSeverity(e.target.value as Severity)} data-testid="raise-severity">
            {SEVERITIES.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <label>
          Message <input value={message} onChange={(e) => setMessage(e.target.value)} data-testid="raise-message" required maxLength={500} />
        </label>
        <label>
          Patient <input value={patient} onChange={(e) => setPatient(e.target.value)} placeholder="p-1001" />
        </label>
        <button type="submit">Raise</button>
        <span role="status" className="muted">{status}</span>
      </form>
    </details>
  );
}
