/**
 * Admin: projection status (checkpoint, lag), a rebuild with live progress and cancel, the
 * escalation deadlines, and metrics (open alerts now and over the time this screen is open, mean
 * time to acknowledge and resolve). Projection endpoints are node-level admin REST, not hospital
 * reads, so they are polled with the session's token rather than read through a live query.
 */
import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';
import { useLive, useVigil } from '@vigil/react';
import type { Schemas } from '@vigil/client';
import type { Session } from '../session';
import { SEVERITIES, type Severity } from '../types';
import { duration, problemText, SeverityBadge } from './common';

type Status = Schemas['ProjectionsStatus'];
/** How often the projections are polled while this screen is open (ms). */
const POLL = 1000;

export function Admin(props: { session: Session }): ReactNode {
  const vigil = useVigil();
  const [status, setStatus] = useState<Status | null>(null);
  const [error, setError] = useState('');
  const [policy, setPolicy] = useState<Record<Severity, number> | null>(null);
  const metrics = useLive('metrics', {});
  const series = useRef<{ t: number; open: number }[]>([]);

  const auth = useCallback(
    (init: RequestInit = {}): RequestInit => ({ ...init, headers: { ...(init.headers ?? {}), Authorization: `Bearer ${props.session.token}`, 'Content-Type': 'application/json' } }),
    [props.session.token],
  );
  useEffect(() => {
    let stop = false;
    const poll = async (): Promise<void> => {
      try {
        const r = await fetch('/api/admin/projections', auth());
        if (!r.ok) throw new Error(`${r.status} ${((await r.json()) as { detail?: string }).detail ?? ''}`);
        if (!stop) {
          setStatus((await r.json()) as Status);
          setError('');
        }
      } catch (e) {
        if (!stop) setError(`Projection status unavailable: ${String(e instanceof Error ? e.message : e)}`);
      }
    };
    void poll();
    const t = setInterval(() => void poll(), POLL);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, [auth]);
  useEffect(() => {
    vigil.read<Record<Severity, number>>('policies/escalation').then(setPolicy, () => setPolicy(null));
  }, [vigil]);

  const open = (metrics.data?.open_alerts ?? {}) as unknown as Partial<Record<Severity, number>>;
  const totalOpen = SEVERITIES.reduce((n, s) => n + (open[s] ?? 0), 0);
  if (metrics.status === 'ready' && series.current.at(-1)?.open !== totalOpen) {
    series.current = [...series.current, { t: Date.now(), open: totalOpen }].slice(-60);
  }
  const max = Math.max(1, ...SEVERITIES.map((s) => open[s] ?? 0));

  const rebuild = async (name: string): Promise<void> => {
    const r = await fetch(`/api/admin/projections/${encodeURIComponent(name)}/rebuild`, auth({ method: 'POST', body: JSON.stringify({ scope: 'hospital' }) }));
    if (!r.ok) setError(`Rebuild refused: ${r.status}`);
  };
  const cancel = async (name: string): Promise<void> => {
    await fetch(`/api/admin/projections/${encodeURIComponent(name)}/rebuild`, auth({ method: 'DELETE' }));
  };

  return (
    <section aria-labelledby="admin-title">
      <h1 id="admin-title">Admin</h1>
      {error && <p role="alert" className="error">{error}</p>}
      <h2>Projections</h2>
      <table className="table" data-testid="projections">
        <thead><tr><th scope="col">Read model</th><th scope="col">State</th><th scope="col">Checkpoint / head</th><th scope="col">Lag</th><th scope="col">Rebuild</th></tr></thead>
        <tbody>
          {(status?.projectors ?? []).map((p) => {
            const rb = p.rebuild;
            const running = rb?.status === 'running';
            const pct = rb?.total ? Math.round(((rb.done ?? 0) / rb.total) * 100) : null;
            return (
              <tr key={p.name} data-testid={`projection-${p.name}`}>
                <th scope="row">{p.name} <span className="muted small">v{p.version}</span></th>
                <td>{p.state.replace('_', ' ')}</td>
                <td>{p.checkpoint} / {p.head}</td>
                <td>{p.lag_events} events, {p.lag_seconds.toFixed(1)} s</td>
                <td>
                  {rb && (
                    <span className="small" data-testid="rebuild-status">
                      {rb.status}
                      {pct !== null && <> <progress max={100} value={pct} aria-label={`${p.name} rebuild progress`}>{pct}%</progress> {pct}%</>}
                      {rb.events_per_second ? ` · ${Math.round(rb.events_per_second)} ev/s` : ''}
                      {rb.error ? ` · ${rb.error}` : ''}{' '}
                    </span>
                  )}
                  {running ? (
                    <button type="button" onClick={() => void cancel(p.name)} aria-label={`Cancel the rebuild of ${p.name}`}>Cancel</button>
                  ) : (
                    <button type="button" onClick={() => void rebuild(p.name)} aria-label={`Rebuild ${p.name}`}>Rebuild</button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <h2>Escalation deadlines</h2>
      {policy ? (
        <ul className="counts">
          {SEVERITIES.map((s) => <li key={s}><SeverityBadge severity={s} />: escalates after {duration(policy[s])}</li>)}
        </ul>
      ) : (
        <p className="muted">Not available.</p>
      )}
      <h2>Metrics</h2>
      {metrics.status === 'error' && <p role="alert" className="error">{problemText(metrics.error)}</p>}
      <div className="charts">
        <figure className="chart">
          <svg viewBox="0 0 320 130" role="img" aria-label={`Open alerts by severity: ${SEVERITIES.map((s) => `${s} ${open[s] ?? 0}`).join(', ')}`}>
            {SEVERITIES.map((s, i) => {
              const h = ((open[s] ?? 0) / max) * 75;
              return (
                <g key={s}>
                  <rect x={20 + i * 75} y={100 - h} width="50" height={h} className={`bar bar-${s}`} />
                  <text x={45 + i * 75} y="118" textAnchor="middle">{s}</text>
                  <text x={45 + i * 75} y={95 - h} textAnchor="middle">{open[s] ?? 0}</text>
                </g>
              );
            })}
          </svg>
          <figcaption>Open alerts by severity</figcaption>
        </figure>
        <figure className="chart">
          <Sparkline points={series.current.map((p) => p.open)} />
          <figcaption>Open alerts over time (while this screen is open): now {totalOpen}</figcaption>
        </figure>
      </div>
      <dl className="kv">
        <dt>Mean time to acknowledge</dt>
        <dd>{metrics.data?.mean_seconds_to_acknowledge != null ? duration(metrics.data.mean_seconds_to_acknowledge) : '–'}</dd>
        <dt>Mean time to resolve</dt>
        <dd>{metrics.data?.mean_seconds_to_resolve != null ? duration(metrics.data.mean_seconds_to_resolve) : '–'}</dd>
        <dt>As of position</dt>
        <dd>{metrics.position ?? '–'}</dd>
      </dl>
    </section>
  );
}

function Sparkline(props: { points: number[] }): ReactNode {
  const W = 320;
  const H = 130;
  const max = Math.max(1, ...props.points);
  const n = props.points.length;
  const path = props.points.map((v, i) => `${n <= 1 ? W / 2 : 10 + (i * (W - 20)) / (n - 1)},${H - 15 - (v / max) * (H - 30)}`).join(' ');
  return (
    <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`Open alerts over time, ${n} samples, latest ${props.points.at(-1) ?? 0}`}>
      <polyline fill="none" className="line" points={path} />
      {path.split(' ').filter(Boolean).map((xy, i) => {
        const [x, y] = xy.split(',').map(Number);
        return <circle key={i} cx={x} cy={y} r="3" className="point" />;
      })}
    </svg>
  );
}
