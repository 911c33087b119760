// @vitest-environment jsdom
// The browser's `offline`/`online` events (jsdom's window) drive the connection without waiting
// for a socket to time out.
import WebSocket from 'ws';
import { afterEach, expect, it } from 'vitest';
import { closeClients, freshHospital, makeClient, sharedUrl, waitFor } from '../../../test/helpers.js';

afterEach(() => closeClients());

it('goes offline on the window `offline` event and reconnects at once on `online`', async () => {
  const vigil = makeClient(sharedUrl(), freshHospital(), { topics: ['alerts'], WebSocket: WebSocket as never, backoff: { baseDelay: 60_000, maxDelay: 60_000 } });
  await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected');
  window.dispatchEvent(new Event('offline'));
  expect(vigil.connection.get()).toEqual({ status: 'offline' });
  // With a one-minute backoff, only the `online` event can bring it back this fast.
  window.dispatchEvent(new Event('online'));
  await waitFor(() => vigil.connection.get().status === 'connected', 5_000, 'reconnected on online');
});

it('reconnects at once when the page becomes visible while waiting to retry', async () => {
  const { TcpProxy } = await import('../../../test/helpers.js');
  const proxy = await TcpProxy.start(sharedUrl());
  proxy.down();
  const vigil = makeClient(proxy.url, freshHospital(), {
    topics: ['alerts'],
    WebSocket: WebSocket as never,
    transports: ['websocket'],
    backoff: { baseDelay: 60_000, maxDelay: 60_000 },
    random: () => 0.99,
  });
  await waitFor(() => vigil.connection.get().status === 'reconnecting', 10_000, 'waiting a minute to retry');
  proxy.up();
  expect(document.visibilityState).toBe('visible');
  document.dispatchEvent(new Event('visibilitychange'));
  await waitFor(() => vigil.connection.get().status === 'connected', 5_000, 'reconnected when visible');
  await proxy.close();
});
