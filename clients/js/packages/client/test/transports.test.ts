import { afterEach, describe, expect, it } from 'vitest';
import type { ConnectionState, StreamEvent } from '../src/index.js';
import { api, closeClients, freshHospital, makeClient, sharedUrl, TcpProxy, waitFor, messageOf } from '../../../test/helpers.js';

afterEach(() => closeClients());

const transportOf = (s: ConnectionState) => (s.status === 'connected' ? s.transport : undefined);

describe('transport fallback', () => {
  it('falls back to SSE, then polling, and returns to WebSocket, never losing or repeating a position', async () => {
    const hospital = freshHospital();
    const proxy = await TcpProxy.start(sharedUrl());
    proxy.refuseUpgrades = true;
    const vigil = makeClient(proxy.url, hospital, {
      topics: ['alerts'],
      backoff: { baseDelay: 50, maxDelay: 200 },
      upgradeInterval: 300,
      pollInterval: 100,
    });
    const events: StreamEvent[] = [];
    vigil.onEvent((e) => events.push(e));
    const transports: string[] = [];
    vigil.connection.subscribe((s) => {
      const t = transportOf(s);
      if (t && transports.at(-1) !== t) transports.push(t);
    });
    let n = 0;
    const raise = async () => {
      const r = await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: `e${n++}` });
      expect(r.status).toBe(201);
    };

    // A proxy that refuses WebSocket upgrades: SSE, with a ticket.
    await waitFor(() => transportOf(vigil.connection.get()) === 'sse', 15_000, 'sse');
    expect(proxy.refusedUpgrades).toBeGreaterThanOrEqual(2);
    await raise();
    await raise();
    await waitFor(() => events.length === 2, 15_000, 'two events over SSE');

    // SSE is blocked as well: the stream moves to polling and resumes after the last position.
    proxy.refuseRequests = /events\/stream/;
    proxy.cut();
    await raise();
    await waitFor(() => transportOf(vigil.connection.get()) === 'polling', 15_000, 'polling');
    await raise();
    await waitFor(() => events.length === 4, 15_000, 'four events, two over polling');

    // The proxy lets WebSocket through again: the client moves back to it.
    proxy.refuseUpgrades = false;
    proxy.refuseRequests = null;
    await waitFor(() => transportOf(vigil.connection.get()) === 'websocket', 15_000, 'back on websocket');
    await raise();
    await waitFor(() => events.length === 5, 15_000, 'five events');

    expect(transports).toEqual(['sse', 'polling', 'websocket']);
    expect(events.map((e) => messageOf(e))).toEqual(['e0', 'e1', 'e2', 'e3', 'e4']);
    const positions = events.map((e) => e.position);
    expect(new Set(positions).size).toBe(5);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    await proxy.close();
  });

  it('detects a dead connection from missing pongs and reconnects', async () => {
    const hospital = freshHospital();
    const proxy = await TcpProxy.start(sharedUrl());
    const vigil = makeClient(proxy.url, hospital, {
      topics: ['alerts'],
      pingInterval: 200,
      backoff: { baseDelay: 50, maxDelay: 200 },
    });
    const events: StreamEvent[] = [];
    vigil.onEvent((e) => events.push(e));
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected');
    const reasons: string[] = [];
    vigil.connection.subscribe((s) => s.status === 'reconnecting' && reasons.push(s.reason ?? ''));

    // The link goes silent without closing: no FIN, no RST, nothing.
    proxy.frozen = true;
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: 'during' });
    await waitFor(() => reasons.length > 0, 5_000, 'the dead link detected');
    expect(reasons[0]).toBe('no frames from the server');
    proxy.frozen = false;
    proxy.cut();
    await waitFor(() => events.length === 1, 15_000, 'the event sent while the link was dead');
    expect(messageOf(events[0]!)).toBe('during');
    await proxy.close();
  });
});
