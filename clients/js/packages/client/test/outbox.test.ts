import { afterEach, describe, expect, it } from 'vitest';
import { asyncStorageAdapter, memoryStorage, type AsyncStorageLike, type CommandStatus, type PendingCommand, type StreamEvent } from '../src/index.js';
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
    const last = Math.max(...outcomes.map((o) => Number(o.events[0]!.position)));
    const board = await api<{ alerts: { message: string }[] }>(
      sharedUrl(), hospital, 'GET', `alerts?limit=500&min_position=${last}`);
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
    const p1 = (ack1.get() as { readonly positions: readonly number[] }).positions[0]!;
    const p3 = (resolve.get() as { readonly positions: readonly number[] }).positions[0]!;
    expect(p3).toBeGreaterThan(p1);
  });
});

describe('a stuck command', () => {
  it('holds only its own lane: later independent commands commit, it is reported stuck, and it can be retried or cancelled', async () => {
    const hospital = freshHospital();
    const [a, b, c] = await Promise.all(
      ['a', 'b', 'c'].map(async (message) => {
        const r = await api<{ aggregate_id: string }>(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'high', message });
        return r.body.aggregate_id;
      }),
    );
    const proxy = await TcpProxy.start(sharedUrl());
    const vigil = makeClient(proxy.url, hospital, {
      topics: ['alerts'],
      backoff: { baseDelay: 100, maxDelay: 400 },
      commandTimeout: 400,
      stuckAfter: 2,
    });
    // The proxy holds every request about alert `a` or `c` (no answer, never forwarded).
    proxy.stallRequests = new RegExp(`/alerts/(${a}|${c})/`);

    const ackA = vigil.alerts.acknowledge(a!);
    const resolveA = vigil.alerts.resolve(a!, { note: 'after the acknowledge' }); // same lane: waits
    const ackB = vigil.alerts.acknowledge(b!); // another alert: does not wait
    const raised = vigil.alerts.raise({ severity: 'low', message: 'new' }); // a create: does not wait
    const ackC = vigil.alerts.acknowledge(c!);

    await expect(ackB.result).resolves.toMatchObject({ aggregate_id: b });
    await expect(raised.result).resolves.toBeTruthy();
    await waitFor(() => ackA.get().status === 'stuck' && ackC.get().status === 'stuck', 15_000, 'reported stuck');
    expect(ackA.get()).toMatchObject({ status: 'stuck', reason: 'timed out' });
    expect(resolveA.get()).toMatchObject({ status: 'pending', attempts: 0 }); // never sent before ackA
    expect(proxy.stalledRequests).toBeGreaterThanOrEqual(4);

    // Cancelled: out of the outbox, its result rejects, nothing was applied.
    ackC.cancel();
    expect(ackC.get()).toMatchObject({ status: 'failed', reason: 'cancelled' });
    await expect(ackC.result).rejects.toBeTruthy();
    expect(vigil.outbox.pending.get()).not.toContain(ackC);

    // The proxy lets go; `retry()` sends at once, the lane then continues in order.
    proxy.stallRequests = null;
    ackA.retry();
    const [outA, outResolve] = await Promise.all([ackA.result, resolveA.result]);
    expect(Number(outResolve.events[0]!.position)).toBeGreaterThan(Number(outA.events[0]!.position));
    // The cancelled one, retried with its key, is applied once.
    ackC.retry();
    const outC = await ackC.result;
    expect(outC.aggregate_id).toBe(c);
    const last = Math.max(Number(outResolve.events[0]!.position), Number(outC.events[0]!.position));
    const board = await api<{ alerts: { alert_id: string; status: string }[] }>(
      sharedUrl(), hospital, 'GET', `alerts?status=acknowledged&min_position=${last}`);
    expect(board.body.alerts.map((x) => x.alert_id).sort()).toEqual([b, c].sort());
    expect(vigil.outbox.pending.get()).toEqual([]);
    await proxy.close();
  });
});

describe('the outbox across restarts and offline', () => {
  it('a command issued offline survives an app restart and is sent once when the network returns', async () => {
    const hospital = freshHospital();
    const storage = memoryStorage();
    const proxy = await TcpProxy.start(sharedUrl());
    proxy.down();
    const first = makeClient(proxy.url, hospital, { storage, topics: ['alerts'] });
    first.setNetworkState(false); // what the platform says (browser `offline`, NetInfo)
    const c = first.alerts.raise({ severity: 'critical', message: 'issued offline' });
    await c.stored;
    expect(first.outbox.pending.get()).toHaveLength(1);
    expect(c.get().status).toBe('pending');
    first.close();

    // The app restarts with the same storage; the network is back.
    proxy.up();
    const second = makeClient(proxy.url, hospital, { storage, topics: ['alerts'] });
    let restored: PendingCommand | undefined;
    second.outbox.pending.subscribe((list) => (restored ??= list[0]));
    await waitFor(() => restored, 5_000, 'restored');
    if (!restored) throw new Error('unreachable');
    expect(restored.key).toBe(c.key);
    const outcome = await restored.result;
    expect(outcome.events[0]!.type).toBe('AlertRaised');
    expect(second.outbox.pending.get()).toHaveLength(0);
    const board = await api<{ alerts: { message: string }[] }>(
      sharedUrl(), hospital, 'GET', `alerts?min_position=${outcome.events[0]!.position}`);
    expect(board.body.alerts.map((a) => a.message)).toEqual(['issued offline']);
    await proxy.close();
  });

  it('holds commands while the platform says offline and sends them, in order, once it says online', async () => {
    const hospital = freshHospital();
    const vigil = makeClient(sharedUrl(), hospital, { topics: ['alerts'] });
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected');
    vigil.setNetworkState(false);
    expect(vigil.connection.get()).toEqual({ status: 'offline' });
    const a = vigil.alerts.raise({ severity: 'low', message: 'first' });
    const b = vigil.alerts.raise({ severity: 'low', message: 'second' });
    // Nothing is sent while offline: the server's board stays empty.
    const during = await api<{ alerts: unknown[] }>(sharedUrl(), hospital, 'GET', 'alerts');
    expect(during.body.alerts).toHaveLength(0);
    expect([a.get().status, b.get().status]).toEqual(['pending', 'pending']);
    vigil.setNetworkState(true);
    const [oa, ob] = await Promise.all([a.result, b.result]);
    expect(Number(ob.events[0]!.position)).toBeGreaterThan(Number(oa.events[0]!.position));
    await waitFor(() => vigil.connection.get().status === 'connected', 15_000, 'connected again');
  });
});

/**
 * Shaped like React Native's AsyncStorage: every call answers on a later turn, and values are
 * strings kept outside the client (here a Map that outlives the "killed" app).
 */
class FakeAsyncStorage implements AsyncStorageLike {
  readonly data = new Map<string, string>();
  private later<T>(f: () => T): Promise<T> {
    return new Promise((resolve) => setTimeout(() => resolve(f()), 1));
  }
  getItem(key: string) {
    return this.later(() => this.data.get(key) ?? null);
  }
  setItem(key: string, value: string) {
    return this.later(() => void this.data.set(key, value));
  }
  removeItem(key: string) {
    return this.later(() => void this.data.delete(key));
  }
}

describe('React Native storage', () => {
  it('an app killed and restarted over an AsyncStorage-shaped store resumes after its last event and sends its queued command once', async () => {
    const hospital = freshHospital();
    const store = new FakeAsyncStorage();
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: 'before' });
    const seen: string[] = [];
    let last = 0;
    const track = (e: StreamEvent) => {
      if (e.event_type === 'AlertRaised') seen.push(e.data.message);
      last = Math.max(last, e.position);
    };
    const first = makeClient(sharedUrl(), hospital, { storage: asyncStorageAdapter(store), topics: ['alerts'] });
    first.onEvent(track);
    await waitFor(() => first.connection.get().status === 'connected', 15_000, 'connected');
    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: 'a' });
    await waitFor(() => seen.includes('a'), 15_000, 'a');
    first.setNetworkState(false); // NetInfo: no signal
    const queued = first.alerts.raise({ severity: 'high', message: 'queued' });
    await queued.stored;
    await waitFor(() => store.data.get(`vigil:${sharedUrl()}:${hospital}:position`)?.includes(`"position"`), 5_000, 'position stored');
    first.close(); // the OS kills the app

    await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'low', message: 'b' });
    seen.length = 0;
    const second = makeClient(sharedUrl(), hospital, { storage: asyncStorageAdapter(store), topics: ['alerts'] });
    second.onEvent(track);
    await waitFor(() => seen.includes('queued') && seen.includes('b'), 15_000, 'missed and queued');
    expect(seen).toEqual(['b', 'queued']);
    // The board is a projection: read it at (or after) the last event seen, as a live query does.
    const board = await api<{ alerts: { message: string }[] }>(
      sharedUrl(), hospital, 'GET', `alerts?limit=500&min_position=${last}`);
    expect(board.body.alerts.filter((a) => a.message === 'queued')).toHaveLength(1);
  });
});

