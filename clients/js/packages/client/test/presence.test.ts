import { afterEach, describe, expect, it } from 'vitest';
import type { UserRef } from '../src/index.js';
import { api, closeClients, freshHospital, makeClient, sharedUrl, TcpProxy, waitFor } from '../../../test/helpers.js';

afterEach(() => closeClients());

describe('presence, typing, viewing', () => {
  it('shows who types in a case thread', async () => {
    const hospital = freshHospital();
    const opened = await api<{ aggregate_id: string }>(sharedUrl(), hospital, 'POST', 'cases', { patient: 'p-1', title: 'fever' });
    const caseId = opened.body.aggregate_id;
    const nurse = makeClient(sharedUrl(), hospital, { user: 'nurse-amy' });
    const doctor = makeClient(sharedUrl(), hospital, { user: 'dr-rao', role: 'physician' });
    const seen: (readonly UserRef[])[] = [];
    const nurseView = nurse.typing(caseId);
    nurseView.subscribe((users) => seen.push(users));
    const doctorTyping = doctor.typing(caseId);
    doctorTyping.subscribe(() => undefined);
    await waitFor(() => nurse.connection.get().status === 'connected' && doctor.connection.get().status === 'connected');
    doctorTyping.notify();
    doctorTyping.notify(); // throttled client-side: the server would refuse a second within 1 s
    await waitFor(() => seen.some((u) => u.some((x) => x.user === 'dr-rao')), 10_000, 'dr-rao typing');
  });

  it('re-announces a view after a reconnect, and withdraws it on dispose', async () => {
    const hospital = freshHospital();
    const proxy = await TcpProxy.start(sharedUrl());
    const watcher = makeClient(sharedUrl(), hospital, { user: 'dr-rao', role: 'physician' });
    const viewer = makeClient(proxy.url, hospital, { user: 'nurse-amy', backoff: { baseDelay: 50, maxDelay: 100 } });
    const watched = watcher.view('patient:p-9');
    const names = () => watched.viewers.get().map((v) => v.user);
    // Every change the watcher is told about, so a quick drop-and-return is not missed.
    const history: boolean[] = [];
    watched.viewers.subscribe((v) => history.push(v.some((x) => x.user === 'nurse-amy')));
    const view = viewer.view('patient:p-9');
    await waitFor(() => names().includes('nurse-amy'), 10_000, 'the view announced');
    const before = history.length;

    // The viewer's connection drops: the server forgets its view; the client announces it again.
    proxy.cut();
    await waitFor(() => {
      const after = history.slice(before);
      const gone = after.indexOf(false);
      return gone >= 0 && after.slice(gone).includes(true);
    }, 10_000, 'the view gone with the connection, then re-announced');

    view.dispose();
    await waitFor(() => !names().includes('nurse-amy'), 10_000, 'the view withdrawn');
    await proxy.close();
  });
});
