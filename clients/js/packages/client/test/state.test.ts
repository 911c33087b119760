import { describe, expect, it } from 'vitest';
import {
  backoffCap,
  backoffDelay,
  transition,
  type ConnectionInput,
  type ConnectionState,
  type MachinePolicy,
} from '../src/index.js';

const policy: MachinePolicy = {
  backoff: { baseDelay: 500, maxDelay: 20_000 },
  random: () => 0.5,
  quickReconnectMax: 1000,
};

const connected: ConnectionState = { status: 'connected', transport: 'websocket' };
const connecting: ConnectionState = { status: 'connecting' };
const offline: ConnectionState = { status: 'offline' };
const reconnecting: ConnectionState = { status: 'reconnecting', attempt: 1, delay: 250 };

// [name, from, attempt, input, expected state, expected effects, expected attempt after]
const table: [string, ConnectionState, number, ConnectionInput, ConnectionState, unknown[], number][] = [
  ['connect opens', connecting, 0, { type: 'connect' }, connecting, [{ type: 'open' }], 0],
  ['subscribed connects', connecting, 2, { type: 'subscribed', transport: 'sse' }, { status: 'connected', transport: 'sse' }, [], 2],
  ['a stable period resets the backoff', connected, 4, { type: 'stable' }, connected, [], 0],
  ['server shutdown (1001): quick jittered reconnect, no backoff growth', connected, 0,
    { type: 'closed', code: 1001, reason: 'server_shutdown' },
    { status: 'reconnecting', attempt: 0, delay: 500, reason: 'server_shutdown' }, [{ type: 'schedule', delay: 500 }], 0],
  ['slow consumer (4008): resume at once', connected, 0, { type: 'closed', code: 4008 },
    { status: 'reconnecting', attempt: 1, delay: 0 }, [{ type: 'schedule', delay: 0 }], 1],
  ['slow consumer again before the connection was stable: back off', connected, 3, { type: 'closed', code: 4008 },
    { status: 'reconnecting', attempt: 4, delay: 2000 }, [{ type: 'schedule', delay: 2000 }], 4],
  ['token expired (4001): reconnect at once (with a new token)', connected, 0, { type: 'closed', code: 4001, reason: 'token_expired' },
    { status: 'reconnecting', attempt: 1, delay: 0, reason: 'token_expired' }, [{ type: 'schedule', delay: 0 }], 1],
  ['token expired again at once (token() returns stale tokens): back off', connecting, 1, { type: 'closed', code: 4001 },
    { status: 'reconnecting', attempt: 2, delay: 500 }, [{ type: 'schedule', delay: 500 }], 2],
  ['too many connections (4013): back off', connected, 2, { type: 'closed', code: 4013 },
    { status: 'reconnecting', attempt: 3, delay: 1000 }, [{ type: 'schedule', delay: 1000 }], 3],
  ['a refused handshake (1006): back off', connecting, 0, { type: 'closed', code: 1006 },
    { status: 'reconnecting', attempt: 1, delay: 250 }, [{ type: 'schedule', delay: 250 }], 1],
  ['authentication failed (4003): stop with the error', connected, 0, { type: 'closed', code: 4003, reason: 'authentication_failed' },
    { status: 'closed', error: { code: 4003, reason: 'authentication_failed' } }, [{ type: 'stop' }], 0],
  ['policy violation (1008): stop with the error', connected, 0, { type: 'closed', code: 1008, reason: 'policy_violation' },
    { status: 'closed', error: { code: 1008, reason: 'policy_violation' } }, [{ type: 'stop' }], 0],
  ['offline stops the transport', connected, 0, { type: 'offline' }, offline, [{ type: 'stop' }], 0],
  ['a retry timer does not connect while offline', offline, 1, { type: 'connect' }, offline, [], 1],
  ['a close while offline changes nothing', offline, 1, { type: 'closed', code: 1006 }, offline, [], 1],
  ['online reconnects at once', offline, 3, { type: 'online' }, connecting, [{ type: 'open' }], 3],
  ['online while waiting to reconnect reconnects at once', reconnecting, 1, { type: 'online' }, connecting, [{ type: 'open' }], 1],
  ['online while connected changes nothing', connected, 0, { type: 'online' }, connected, [], 0],
  ['close stops', connected, 0, { type: 'close' }, { status: 'closed' }, [{ type: 'stop' }], 0],
  ['nothing leaves closed', { status: 'closed' }, 0, { type: 'connect' }, { status: 'closed' }, [], 0],
];

describe('the connection state machine', () => {
  it.each(table)('%s', (_name, from, attempt, input, state, effects, attemptAfter) => {
    const t = transition(from, { attempt }, input, policy);
    expect(t.state).toEqual(state);
    expect(t.effects).toEqual(effects);
    expect(t.context.attempt).toBe(attemptAfter);
  });
});

describe('backoff with full jitter', () => {
  it('the cap doubles from the base delay up to the maximum', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) => backoffCap(a))).toEqual([
      500, 1000, 2000, 4000, 8000, 16_000, 20_000, 20_000, 20_000,
    ]);
  });

  it('every delay lies between zero and the cap of its attempt', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      expect(backoffDelay(attempt, () => 0)).toBe(0);
      expect(backoffDelay(attempt, () => 0.999999)).toBe(backoffCap(attempt) - 1);
      for (let i = 0; i < 100; i++) {
        const d = backoffDelay(attempt, Math.random);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(backoffCap(attempt));
      }
    }
  });
});
