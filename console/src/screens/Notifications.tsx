/** The inbox: urgent lab results first, then unread, then the rest; mark read through the outbox. */
import type { ReactNode } from 'react';
import { useLive, useVigil } from '@vigil/react';
import { rows, type NotificationRow } from '../types';
import { time } from './common';

function summary(n: NotificationRow): string {
  const c = n.content;
  if (n.kind === 'lab_result') return `Lab result ${String(c['test'] ?? '')} for ${String(c['patient'] ?? '')}: ${String(c['summary'] ?? '')}`;
  return String(c['text'] ?? c['message'] ?? c['summary'] ?? n.kind);
}

export function Notifications(): ReactNode {
  const vigil = useVigil();
  const inbox = useLive('notifications', {});
  const list = rows<NotificationRow>(inbox.data?.notifications)
    .slice()
    .sort((a, b) => Number(b.urgent) - Number(a.urgent) || Number(a.read_at !== null) - Number(b.read_at !== null) || b.sent_at.localeCompare(a.sent_at));
  return (
    <section aria-labelledby="inbox-title">
      <h1 id="inbox-title">Notifications <span className="muted small">({inbox.data?.unread_count ?? 0} unread)</span></h1>
      <ul className="cards" data-testid="inbox">
        {list.map((n) => (
          <li key={n.notification_id} className={n.read_at ? 'read' : 'unread'}>
            {n.urgent && <strong className="sev sev-critical"><span aria-hidden="true">‼ </span>URGENT </strong>}
            {!n.read_at && <span className="badge">new</span>} {summary(n)}
            <span className="muted small"> · from {n.sent_by} at {time(n.sent_at)}</span>{' '}
            {!n.read_at && <button type="button" onClick={() => vigil.notifications.markRead(n.notification_id)}>Mark read</button>}
          </li>
        ))}
        {inbox.status === 'ready' && list.length === 0 && <li className="empty">Nothing here.</li>}
      </ul>
    </section>
  );
}
