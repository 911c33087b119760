import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { memoryStorage, type ResetReason, type StreamEvent } from '../src/index.js';
import { api, closeClients, freshHospital, makeClient, mintToken, VigilServer, waitFor, messageOf } from '../../../test/helpers.js';

afterEach(() => closeClients());

let server: VigilServer;
beforeAll(async () => {
  server = await VigilServer.start();
});
afterAll(async () => {
  await server?.stop();
});

const raise = (hospital: string, message: string) =>
  api(server.url, hospital, 'POST', 'alerts', { severity: 'low', message }, mintToken({ hospital }, server.dataDir));

function client(hospital: string, storage = memoryStorage()) {
  return makeClient(server.url, hospital, { storage, topics: ['alerts'], dataDir: server.dataDir, backoff: { baseDelay: 100, maxDelay: 500 } });
}

describe('resume', () => {
  it('a client restarted with the same storage gets exactly the events it missed', async () => {
    const hospital = freshHospital();
    const storage = memoryStorage();
    const first = client(hospital, storage);
    const seen: string[] = [];
    first.onEvent((e) => seen.push(String(messageOf(e))));
    await waitFor(() => first.connection.get().status === 'connected');
    await raise(hospital, 'a');
    await waitFor(() => seen.length === 1);
    first.close();

    await raise(hospital, 'b');
    await raise(hospital, 'c');

    const second = client(hospital, storage);
    const subscribed: unknown[] = [];
    second.onFrame((f) => f.type === 'subscribed' && subscribed.push(f));
    second.onEvent((e) => seen.push(String(messageOf(e))));
    await waitFor(() => seen.length === 3);
    await raise(hospital, 'd');
    await waitFor(() => seen.length === 4);
    expect(seen).toEqual(['a', 'b', 'c', 'd']);
    expect(subscribed).toMatchObject([{ recovered: true }]);
  });

  it('resumes across a server restart without a gap or a duplicate', async () => {
    const hospital = freshHospital();
    const vigil = client(hospital);
    const seen: StreamEvent[] = [];
    vigil.onEvent((e) => seen.push(e));
    await waitFor(() => vigil.connection.get().status === 'connected');
    await raise(hospital, 'before');
    await waitFor(() => seen.length === 1);

    await server.stopProcess();
    await waitFor(() => vigil.connection.get().status === 'reconnecting', 15_000, 'reconnecting');
    await server.startProcess();
    await raise(hospital, 'after-1');
    await raise(hospital, 'after-2');
    await waitFor(() => seen.length === 3, 30_000, 'three events');
    expect(seen.map((e) => messageOf(e))).toEqual(['before', 'after-1', 'after-2']);
    expect(seen.map((e) => e.position)).toEqual([seen[0]!.position, seen[0]!.position + 1, seen[0]!.position + 2]);
  });

  it('is back on WebSocket within seconds of a server restart, without losing or repeating an event', async () => {
    const hospital = freshHospital();
    // The default probe schedule (upgradeInterval 30 s): only the prompt probes after an
    // unreachable server can bring it back in time.
    const vigil = client(hospital);
    const seen: StreamEvent[] = [];
    vigil.onEvent((e) => seen.push(e));
    const transports: string[] = [];
    let attempts = 0;
    vigil.connection.subscribe((s) => {
      if (s.status === 'connected' && transports.at(-1) !== s.transport) transports.push(s.transport);
      if (s.status === 'reconnecting') attempts = Math.max(attempts, s.attempt);
    });
    await waitFor(() => vigil.connection.get().status === 'connected');
    await raise(hospital, 'before');
    await waitFor(() => seen.length === 1);

    await server.stopProcess();
    // Long enough down for WebSocket and SSE handshakes to fail twice each (a fallback).
    await waitFor(() => attempts >= 6, 15_000, 'six reconnect attempts');
    await server.startProcess();
    const up = Date.now();
    await raise(hospital, 'after-1');
    await waitFor(() => {
      const s = vigil.connection.get();
      return s.status === 'connected' && s.transport === 'websocket';
    }, 8_000, 'back on WebSocket');
    const back = Date.now() - up;
    await raise(hospital, 'after-2');
    await waitFor(() => seen.length === 3, 15_000, 'three events');
    expect(transports[0]).toBe('websocket');
    // Meanwhile it fell back (WebSocket and SSE handshakes failed twice each); whether SSE or
    // polling connected before the first prompt probe depends on how fast the server came up.
    expect(transports.at(-1)).toBe('websocket');
    expect(back).toBeLessThan(8_000);
    expect(seen.map((e) => messageOf(e))).toEqual(['before', 'after-1', 'after-2']);
    expect(seen.map((e) => e.position)).toEqual([seen[0]!.position, seen[0]!.position + 1, seen[0]!.position + 2]);
  });

  it('fires onReset and reloads live queries when the database was reset (epoch changed)', async () => {
    const hospital = freshHospital();
    // The stream exists before the client subscribes, so `subscribed` tells it the epoch (a
    // hospital with no events yet has none; the client then learns it at its next subscribe).
    await raise(hospital, 'old-1');
    const vigil = client(hospital);
    const resets: ResetReason[] = [];
    vigil.onReset((r) => resets.push(r));
    const board = vigil.live('alerts');
    board.subscribe(() => undefined);
    await raise(hospital, 'old-2');
    await waitFor(() => board.get().data?.alerts.length === 2, 15_000, 'two alerts');
    const oldEpoch = vigil.epoch;
    expect(oldEpoch).toBeTruthy();

    // The database is replaced: a new PostgreSQL under the same data dir (new epoch, empty streams).
    await server.stopProcess();
    rmSync(join(server.dataDir, 'postgres'), { recursive: true, force: true });
    await server.startProcess();
    await raise(hospital, 'new-1');

    await waitFor(() => resets.length > 0, 30_000, 'onReset');
    expect(resets).toEqual(['epoch_changed']);
    expect(vigil.epoch).not.toBe(oldEpoch);
    await waitFor(() => {
      const alerts = board.get().data?.alerts as unknown as { message: string }[] | undefined;
      return alerts?.length === 1 && alerts[0]!.message === 'new-1';
    }, 15_000, 'the board reloaded from the new database');
  });

  it('stores an epoch from a hospital with no events yet, and resumes with it once events exist', async () => {
    const hospital = freshHospital();
    const storage = memoryStorage();
    const first = client(hospital, storage);
    await waitFor(() => first.connection.get().status === 'connected');
    const emptyEpoch = first.epoch;
    expect(emptyEpoch).toBeTruthy();
    first.close();

    await raise(hospital, 'x'); // the stream's real epoch is minted now
    const second = client(hospital, storage);
    const seen: string[] = [];
    const resets: ResetReason[] = [];
    second.onEvent((e) => seen.push(String(messageOf(e))));
    second.onReset((r) => resets.push(r));
    await waitFor(() => seen.length === 1, 15_000, 'the missed event');
    expect(seen).toEqual(['x']);
    expect(resets).toEqual([]);
    expect(second.epoch).toBeTruthy();
    expect(second.epoch).not.toBe(emptyEpoch); // now the stream's own
  });

  it('detects a replaced database even when the client first subscribed before the hospital had events', async () => {
    const hospital = freshHospital();
    const storage = memoryStorage();
    const first = client(hospital, storage);
    const seen: string[] = [];
    first.onEvent((e) => seen.push(String(messageOf(e))));
    await waitFor(() => first.connection.get().status === 'connected');
    await raise(hospital, 'old-1');
    await raise(hospital, 'old-2');
    await waitFor(() => seen.length === 2, 15_000, 'two events');
    first.close();

    await server.stopProcess();
    rmSync(join(server.dataDir, 'postgres'), { recursive: true, force: true });
    await server.startProcess();
    for (const m of ['new-1', 'new-2', 'new-3']) await raise(hospital, m);

    // Its stored position (2) exists in the new history: only the epoch tells them apart.
    const second = client(hospital, storage);
    const resets: ResetReason[] = [];
    const after: string[] = [];
    second.onReset((r) => resets.push(r));
    second.onEvent((e) => after.push(String(messageOf(e))));
    await waitFor(() => resets.length > 0, 15_000, 'onReset');
    expect(resets).toEqual(['epoch_changed']);
    expect(after).toEqual([]); // not `new-3` alone: the live queries reload instead
  });
});

