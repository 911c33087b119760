/** Who is online in the hospital, by role (the server's presence frames). */
import type { ReactNode } from 'react';
import { usePresence } from '@vigil/react';

export function Presence(): ReactNode {
  const online = usePresence();
  const roles = [...new Set(online.map((p) => p.role))].sort();
  return (
    <section aria-labelledby="presence-title">
      <h1 id="presence-title">Who is online <span className="muted small">({online.length})</span></h1>
      {roles.map((role) => (
        <div key={role}>
          <h2>{role}</h2>
          <ul className="cards" data-testid={`presence-${role}`}>
            {online.filter((p) => p.role === role).map((p) => (
              <li key={p.user}><span aria-hidden="true">● </span>{p.user} <span className="muted small">({p.connections} connection{p.connections === 1 ? '' : 's'})</span></li>
            ))}
          </ul>
        </div>
      ))}
      {online.length === 0 && <p className="empty">Nobody (presence comes over the WebSocket transport).</p>}
    </section>
  );
}
