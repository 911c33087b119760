import { afterEach, describe, expect, it } from 'vitest';
import { VigilHttpError, type ServerFrame, type StreamEvent } from '../src/index.js';
import { api, closeClients, freshHospital, makeClient, mintToken, sharedUrl, waitFor, messageOf } from '../../../test/helpers.js';

afterEach(() => closeClients());

describe('tokens', () => {
  it('refreshes before expiry over the open WebSocket, without reconnecting', async () => {
    const hospital = freshHospital();
    const tokens = [mintToken({ hospital, ttl: '63s' }), mintToken({ hospital, ttl: '1h' })];
    let calls = 0;
    const vigil = makeClient(sharedUrl(), hospital, { topics: ['alerts'], token: async () => tokens[Math.min(calls++, 1)]! });
    const frames: ServerFrame[] = [];
    vigil.onFrame((f) => frames.push(f));
    await waitFor(() => frames.some((f) => f.type === 'token_expiring'), 20_000, 'token_expiring');
    const auth = await waitFor(() => {
      const a = frames.filter((f) => f.type === 'authenticated');
      return a.length === 2 ? a : undefined;
    }, 10_000, 'the refresh answered');
    const [first, second] = auth as Extract<ServerFrame, { type: 'authenticated' }>[];
    expect(Date.parse(second!.expires_at)).toBeGreaterThan(Date.parse(first!.expires_at) + 30 * 60_000);
    expect(calls).toBe(2);
    expect(frames.filter((f) => f.type === 'subscribed')).toHaveLength(1);
    expect(vigil.connection.get()).toEqual({ status: 'connected', transport: 'websocket' });
  });

  it('on close 4001 gets a new token and resumes without a gap', async () => {
    const hospital = freshHospital();
    // The refresh is refused (an invalid token), so the server closes with 4001 at expiry.
    const tokens = [mintToken({ hospital, ttl: '3s' }), 'not-a-token', mintToken({ hospital, ttl: '1h' })];
    let calls = 0;
    const vigil = makeClient(sharedUrl(), hospital, { topics: ['alerts'], token: async () => tokens[Math.min(calls++, 2)]! });
    const events: StreamEvent[] = [];
    vigil.onEvent((e) => events.push(e));
    const reasons: string[] = [];
    vigil.connection.subscribe((s) => s.status === 'reconnecting' && reasons.push(s.reason ?? ''));
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected');
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: 'one' });
    await waitFor(() => reasons.length > 0, 15_000, 'closed at expiry');
    expect(reasons[0]).toBe('token_expired');
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: 'two' });
    await waitFor(() => events.length === 2, 15_000, 'both events');
    expect(vigil.connection.get().status).toBe('connected');
    expect(events.map((e) => messageOf(e))).toEqual(['one', 'two']);
    expect(calls).toBe(3);
  });

  it('asks for a new token once on a REST 401, then gives up', async () => {
    const hospital = freshHospital();
    let calls = 0;
    const good = makeClient(sharedUrl(), hospital, {
      manualConnect: true,
      token: async () => (calls++ === 0 ? 'expired-or-garbage' : mintToken({ hospital })),
    });
    await expect(good.read('alerts')).resolves.toMatchObject({ alerts: [] });
    expect(calls).toBe(2);

    let badCalls = 0;
    const bad = makeClient(sharedUrl(), hospital, {
      manualConnect: true,
      token: async () => {
        badCalls++;
        return 'garbage';
      },
    });
    const error = await bad.read('alerts').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VigilHttpError);
    expect((error as VigilHttpError).status).toBe(401);
    expect(badCalls).toBe(2);
  });
});
