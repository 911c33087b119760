/**
 * The always-visible connection indicator: live / reconnecting in N s / offline with N queued
 * commands; after a resume "caught up, N events" (the events the stream replayed since the
 * position this tab had), after `recovered: false` "reloaded" (every live query re-read).
 * Everything comes from the client: its connection state, its outbox, its frames.
 */
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { useConnectionState, useObservable, useVigil } from '@vigil/react';
import { useNow } from './common';

type Note = { kind: 'caught_up'; head: number; count: number } | { kind: 'reloaded'; reason: string } | null;

export function ConnectionIndicator(): ReactNode {
  const vigil = useVigil();
  const state = useConnectionState();
  const queued = useObservable(vigil.outbox.pending).length;
  const [note, setNote] = useState<Note>(null);
  const subscribedOnce = useRef(false);
  /** Set while the connection is down, so a topic re-subscription is not reported as a resume. */
  const wasDown = useRef(false);
  if (state.status === 'reconnecting' || state.status === 'offline') wasDown.current = true;
  const since = useRef({ status: state.status, at: Date.now() });
  if (since.current.status !== state.status) since.current = { status: state.status, at: Date.now() };
  const now = useNow(state.status === 'reconnecting' ? 250 : 5000);

  useEffect(() => {
    const offFrame = vigil.onFrame((frame) => {
      if (frame.type !== 'subscribed') return;
      const first = !subscribedOnce.current;
      subscribedOnce.current = true;
      if (!frame.recovered && !first) setNote({ kind: 'reloaded', reason: frame.reason ?? 'reset' });
      else if (frame.recovered && !first && wasDown.current) setNote({ kind: 'caught_up', head: Number(frame.position), count: 0 });
      wasDown.current = false;
    });
    const offEvent = vigil.onEvent((e) =>
      setNote((n) => (n?.kind === 'caught_up' && e.position <= n.head ? { ...n, count: n.count + 1 } : n)),
    );
    const offReset = vigil.onReset((reason) => setNote({ kind: 'reloaded', reason }));
    return () => {
      offFrame();
      offEvent();
      offReset();
    };
  }, [vigil]);

  let text: string;
  let icon: string;
  switch (state.status) {
    case 'connected':
      icon = '●';
      text = `Live (${state.transport})`;
      break;
    case 'reconnecting': {
      icon = '↻';
      const left = Math.max(0, Math.ceil((since.current.at + state.delay - now) / 1000));
      text = left > 0 ? `Reconnecting in ${left} s` : 'Reconnecting…';
      break;
    }
    case 'offline':
      icon = '✕';
      text = 'Offline';
      break;
    case 'closed':
      icon = '■';
      text = `Disconnected${state.error ? `: ${state.error.reason}` : ''}`;
      break;
    default:
      icon = '…';
      text = 'Connecting…';
  }
  const extra =
    state.status === 'connected' && note
      ? note.kind === 'caught_up'
        ? `caught up, ${note.count} event${note.count === 1 ? '' : 's'}`
        : `reloaded (${note.reason.replace('_', ' ')})`
      : null;
  return (
    <div className={`conn conn-${state.status}`} role="status" aria-live="polite" data-testid="connection" data-status={state.status}>
      <span aria-hidden="true">{icon} </span>
      <span>{text}</span>
      {queued > 0 && <span data-testid="queued"> · {queued} queued command{queued === 1 ? '' : 's'}</span>}
      {extra && <span data-testid="connection-note"> · {extra}</span>}
    </div>
  );
}
