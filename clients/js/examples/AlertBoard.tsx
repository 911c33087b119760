import { useMemo } from 'react';
import { Vigil } from '@vigil/client';
import { VigilProvider, useCommand, useConnectionState, useLive } from '@vigil/react';

export function AlertBoard() {
  const connection = useConnectionState();
  const board = useLive('alerts', { status: 'raised' });
  const ack = useCommand((vigil, id: string) => vigil.alerts.acknowledge(id));
  if (board.status === 'loading') return <p>Loading…</p>;
  const alerts = board.data?.alerts ?? []; // typed rows: alert_id, severity, message, …
  return (
    <section>
      <header>
        {connection.status === 'connected' ? 'Live' : connection.status}
        {' · '}as of {board.position}
        {ack.pending && ' · saving…'}
      </header>
      <ul>
        {alerts.map((a) => (
          <li key={a.alert_id}>
            [{a.severity}] {a.message} <button onClick={() => ack.run(a.alert_id)}>Acknowledge</button>
          </li>
        ))}
      </ul>
    </section>
  );
}

export function App(props: { baseUrl: string; hospital: string; getToken: () => Promise<string> }) {
  const vigil = useMemo(
    () => new Vigil({ baseUrl: props.baseUrl, hospital: props.hospital, token: props.getToken }),
    [props.baseUrl, props.hospital],
  );
  return (
    <VigilProvider client={vigil}>
      <AlertBoard />
    </VigilProvider>
  );
}
