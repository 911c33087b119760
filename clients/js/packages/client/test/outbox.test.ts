import { afterEach, describe, expect, it } from 'vitest';
import type { CommandStatus, PendingCommand, StreamEvent } from '../src/index.js';
import { api, closeClients, freshHospital, makeClient, sharedUrl, TcpProxy, waitFor } from '../../../test/helpers.js';

afterEach(() => closeClients());

describe('the command outbox', () => {
  it('applies every command exactly once, and the stream shows each exactly once, across a lost network', async () => {
    // Invariant: for each command issued, one alert exists and one AlertRaised event reached
    // the client, whatever happened to requests, answers and the stream in between.
    const hospital = freshHospital();
    const proxy = await TcpProxy.start(sharedUrl());
    const vigil = makeClient(proxy.url, hospital, {
      topics: ['alerts'],
      backoff: { baseDelay: 100, maxDelay: 400 },
      upgradeInterval: 500,
      requestTimeout: 3000,
    });
    const events: StreamEvent[] = [];
    vigil.onEvent((e) => events.push(e));
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected');

    const commands: PendingCommand[] = [];
    const statuses = new Map<string, CommandStatus[]>();
    const issue = (message: string) => {
      const c = vigil.alerts.raise({ severity: 'high', message });
      statuses.set(message, []);
      c.subscribe((s) => statuses.get(message)!.push(s));
      commands.push(c);
    };

    // 1. Requests reach the server and are applied, but every answer is lost.
    proxy.swallowResponses = true;
    for (let i = 0; i < 4; i++) issue(`swallowed-${i}`);
    await waitFor(() => (statuses.get('swallowed-0')?.length ?? 0) >= 2, 15_000, 'the first command retried');
    // 2. The network goes away altogether; more commands are issued offline.
    proxy.down();
    for (let i = 0; i < 4; i++) issue(`offline-${i}`);
    await waitFor(() => vigil.connection.get().status === 'reconnecting', 15_000, 'the stream noticed');
    // 3. The network comes back.
    proxy.up();

    const outcomes = await Promise.all(commands.map((c) => c.result));
    expect(commands.map((c) => c.get().status)).toEqual(Array(8).fill('committed'));
    // The first command was applied before its answer was lost: its retry was a replay.
    expect(commands[0]!.get()).toMatchObject({ status: 'committed', replayed: true });

    // Applied once each: one alert per message on the server.
    const board = await api<{ alerts: { message: string; id: string }[] }>(sharedUrl(), hospital, 'GET', 'alerts?limit=500');
    const messages = board.body.alerts.map((a) => a.message).sort();
    expect(messages).toEqual([...statuses.keys()].sort());
    // Outcomes name distinct aggregates, in the order issued (positions increase).
    const positions = outcomes.map((o) => Number(o.events[0]!.position));
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);

    // Seen once each on the stream, whichever transports carried it.
    await waitFor(() => events.length >= 8, 30_000, 'eight events');
    const raised = events.filter((e) => e.event_type === 'AlertRaised').map((e) => String(e.data['message'])).sort();
    expect(raised).toEqual([...statuses.keys()].sort());
    expect(new Set(events.map((e) => e.position)).size).toBe(events.length);
    await proxy.close();
  });

  it('sends commands in the order issued and reports a rejected one without blocking the rest', async () => {
    const hospital = freshHospital();
    const vigil = makeClient(sharedUrl(), hospital, { topics: ['alerts'] });
    const raised = vigil.alerts.raise({ severity: 'critical', message: 'x' });
    const { aggregate_id: id } = await raised.result;
    const ack1 = vigil.alerts.acknowledge(id);
    const ack2 = vigil.alerts.acknowledge(id); // rejected: already acknowledged
    const resolve = vigil.alerts.resolve(id, { note: 'done' });
    await expect(ack1.result).resolves.toMatchObject({ aggregate_id: id });
    await expect(ack2.result).rejects.toMatchObject({ status: 409, code: 'alert_already_acknowledged' });
    await expect(resolve.result).resolves.toMatchObject({ aggregate_id: id });
    expect(ack2.get()).toMatchObject({ status: 'rejected', httpStatus: 409, problem: { code: 'alert_already_acknowledged' } });
    const p1 = (ack1.get() as { positions: number[] }).positions[0]!;
    const p3 = (resolve.get() as { positions: number[] }).positions[0]!;
    expect(p3).toBeGreaterThan(p1);
  });
});
