import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import type { ConnectionState } from '../src/index.js';
import { closeClients, freshHospital, makeClient, mintToken, sharedUrl, waitFor } from '../../../test/helpers.js';

afterEach(() => closeClients());

/** A raw, authenticated WebSocket for `user` (holding one of the user's 16 slots). */
async function hold(hospital: string, user: string): Promise<WebSocket> {
  const ws = new WebSocket(`${sharedUrl().replace('http', 'ws')}/api/hospitals/${hospital}/ws`);
  await new Promise<void>((resolve, reject) => {
    ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', token: mintToken({ hospital, user }) })));
    ws.on('message', (d) => {
      const f = JSON.parse(String(d)) as { type: string };
      if (f.type === 'authenticated') resolve();
      else if (f.type === 'error') reject(new Error(String(d)));
    });
    ws.on('error', reject);
  });
  return ws;
}

describe('the per-user connection limit', () => {
  it('backs off on 4013 and connects once a slot is free', async () => {
    const hospital = freshHospital();
    const held = [];
    for (let i = 0; i < 16; i++) held.push(await hold(hospital, 'busy-nurse'));
    const vigil = makeClient(sharedUrl(), hospital, { user: 'busy-nurse', topics: ['alerts'], backoff: { baseDelay: 100, maxDelay: 400 } });
    const retries: ConnectionState[] = [];
    vigil.connection.subscribe((s) => s.status === 'reconnecting' && retries.push(s));
    await waitFor(() => retries.length >= 3, 15_000, 'three refused attempts');
    expect(retries.every((s) => s.status === 'reconnecting' && s.reason === 'too_many_connections')).toBe(true);
    expect(retries.map((s) => (s.status === 'reconnecting' ? s.attempt : 0)).slice(0, 3)).toEqual([1, 2, 3]);
    expect(vigil.connection.get().status).not.toBe('closed');

    held.pop()!.close();
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected in the freed slot');
    for (const ws of held) ws.close();
  });
});
