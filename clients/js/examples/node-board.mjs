// A live alert board in a terminal: node examples/node-board.mjs
// (VIGIL_URL, VIGIL_HOSPITAL, VIGIL_TOKEN from `vigil token --hospital h1 --user nurse-amy --role nurse`)
import { Vigil } from '@vigil/client';
import WebSocket from 'ws'; // Node 20 has no global WebSocket (Node 22 does)
import { EventSource } from 'eventsource'; // only needed if WebSocket is blocked

const vigil = new Vigil({
  baseUrl: process.env.VIGIL_URL ?? 'http://127.0.0.1:8080',
  hospital: process.env.VIGIL_HOSPITAL ?? 'h1',
  token: async () => process.env.VIGIL_TOKEN, // in an app: ask your auth service
  WebSocket,
  EventSource,
});

vigil.connection.subscribe((state) => console.log('connection:', state.status));
vigil.onReset((reason) => console.log('stream reset:', reason, '(the board reloads)'));

const board = vigil.live('alerts', { status: 'raised' });
board.subscribe(({ status, data, position }) => {
  if (status !== 'ready') return;
  console.log(`${data.alerts.length} unacknowledged alerts (as of position ${position})`);
  for (const a of data.alerts) console.log(`  [${a.severity}] ${a.message}  ${a.alert_id}`);
});

// Commands are typed, carry an Idempotency-Key, and wait in the outbox while offline.
const raised = vigil.alerts.raise({ severity: 'critical', message: 'Bed 12: SpO2 82%', patient: 'p-1001' });
raised.subscribe((s) => console.log('raise:', s.status));
const { aggregate_id } = await raised.result;
await vigil.alerts.acknowledge(aggregate_id).result; // leaves the `raised` board
