import { afterEach, describe, expect, it } from 'vitest';
import type { StreamEvent } from '../src/index.js';
import { api, closeClients, freshHospital, makeClient, sharedUrl, waitFor, messageOf } from '../../../test/helpers.js';

afterEach(() => closeClients());

describe('live delivery', () => {
  it('delivers events raised by another user to a subscribed client, each once and in order', async () => {
    const hospital = freshHospital();
    const vigil = makeClient(sharedUrl(), hospital, { topics: ['alerts'] });
    const seen: StreamEvent[] = [];
    vigil.onEvent((e) => seen.push(e));
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected');
    expect(vigil.connection.get()).toEqual({ status: 'connected', transport: 'websocket' });

    for (let i = 0; i < 5; i++) {
      const r = await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'high', message: `m${i}` }, undefined);
      expect(r.status).toBe(201);
    }
    await waitFor(() => seen.length >= 5, 15_000, 'five events');
    expect(seen.map((e) => messageOf(e))).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
    const positions = seen.map((e) => e.position);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(vigil.position).toBe(positions.at(-1));
  });

  it('a live alert board hands the snapshot over to the stream without a gap', async () => {
    const hospital = freshHospital();
    // Alerts before the client exists are in the snapshot.
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'critical', message: 'before' });
    const vigil = makeClient(sharedUrl(), hospital);
    const board = vigil.live('alerts', { status: 'raised' });
    const values: number[] = [];
    board.subscribe((r) => {
      if (r.status === 'ready') values.push(r.data!.alerts.length);
    });
    const first = await board.ready();
    expect(first.data!.alerts.length).toBe(1);
    expect(first.position).toBeGreaterThanOrEqual(1);

    // Commands from the client itself and from someone else both reach the board.
    const mine = vigil.alerts.raise({ severity: 'low', message: 'mine' });
    const outcome = await mine.result;
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'medium', message: 'theirs' });
    await waitFor(() => board.get().data?.alerts.length === 3, 15_000, 'three alerts on the board');
    const last = board.get();
    expect(last.position).toBeGreaterThanOrEqual(Number(outcome.events[0]!.position));
    const messages = (last.data!.alerts as unknown as { message: string }[]).map((a) => a.message).sort();
    expect(messages).toEqual(['before', 'mine', 'theirs']);

    // Acknowledging moves it off a `status: raised` board.
    await vigil.alerts.acknowledge(outcome.aggregate_id).result;
    await waitFor(() => board.get().data?.alerts.length === 2, 15_000, 'acknowledged alert leaves the board');
  });
});
