import { afterEach, describe, expect, it } from 'vitest';
import { backoffCap, type ConnectionState } from '../src/index.js';
import { FakeClock } from '../../../test/fake-clock.js';
import { closeClients, freshHospital, makeClient, sharedUrl, TcpProxy, waitFor } from '../../../test/helpers.js';

afterEach(() => closeClients());

describe('reconnect backoff against a real, unreachable server', () => {
  it('waits within the full-jitter bounds, grows to the cap, and starts afresh after a stable connection', async () => {
    const proxy = await TcpProxy.start(sharedUrl());
    proxy.down();
    const clock = new FakeClock();
    const backoff = { baseDelay: 500, maxDelay: 8000 };
    const vigil = makeClient(proxy.url, freshHospital(), {
      clock,
      backoff,
      random: () => 0.999999, // the top of every jitter interval: the bound itself
      transports: ['websocket'],
      stablePeriod: 10_000,
      topics: ['alerts'],
    });
    const states: ConnectionState[] = [];
    vigil.connection.subscribe((s) => states.push(s));
    clock.advance(0); // the deferred first connect

    const delays: number[] = [];
    for (let attempt = 1; attempt <= 6; attempt++) {
      const s = await waitFor(() => {
        const st = vigil.connection.get();
        return st.status === 'reconnecting' && st.attempt === attempt ? st : undefined;
      }, 10_000, `reconnecting attempt ${attempt}`);
      delays.push(s.delay);
      // No reconnect before the delay has passed…
      clock.advance(s.delay - 1);
      expect(vigil.connection.get().status).toBe('reconnecting');
      // …and one right after.
      clock.advance(1);
      expect(vigil.connection.get().status).toBe('connecting');
    }
    expect(delays).toEqual([0, 1, 2, 3, 4, 5].map((a) => backoffCap(a, backoff) - 1));
    expect(delays.at(-1)).toBe(7999);

    // The network returns: connected; after the stable period a failure backs off from the start.
    proxy.up();
    await waitFor(() => {
      const st = vigil.connection.get();
      if (st.status === 'reconnecting') clock.advance(st.delay);
      return vigil.connection.get().status === 'connected';
    }, 15_000, 'connected');
    clock.advance(10_000);
    proxy.down();
    const after = await waitFor(() => {
      const st = vigil.connection.get();
      return st.status === 'reconnecting' ? st : undefined;
    }, 10_000, 'reconnecting after a stable period');
    expect(after).toMatchObject({ attempt: 1, delay: backoffCap(0, backoff) - 1 });
    await proxy.close();
  });
});
