// @vitest-environment jsdom
import { StrictMode, createElement as h } from 'react';
import { act, render, screen, waitFor as rtlWaitFor, cleanup } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { VigilProvider, useCommand, useConnectionState, useLive, usePresence, useTyping, useViewing } from '../src/index.js';
import { api } from '../../../test/helpers.js';
import { closeClients, freshHospital, makeClient, sharedUrl } from '../../../test/helpers.js';

afterEach(() => {
  cleanup();
  closeClients();
});

function AlertBoard() {
  const state = useConnectionState();
  const board = useLive('alerts');
  const raise = useCommand((v, message: string) => v.alerts.raise({ severity: 'high', message }));
  const alerts = (board.data?.alerts ?? []) as unknown as { alert_id: string; message: string }[];
  return h('div', null,
    h('p', { 'data-testid': 'state' }, state.status),
    h('p', { 'data-testid': 'command' }, raise.status?.status ?? 'idle'),
    h('button', { onClick: () => raise.run('Bed 7: HR 150') }, 'raise'),
    h('ul', null, alerts.map((a) => h('li', { key: a.alert_id }, a.message))),
  );
}

describe('@vigil/react', () => {
  it('renders a live board under StrictMode with one read per change, and follows a command to committed', async () => {
    const hospital = freshHospital();
    const reads: string[] = [];
    const vigil = makeClient(sharedUrl(), hospital, {
      fetch: (url, init) => {
        if ((init?.method ?? 'GET') === 'GET') reads.push(url);
        return fetch(url, init);
      },
    });
    render(h(StrictMode, null, h(VigilProvider, { client: vigil }, h(AlertBoard))));
    await rtlWaitFor(() => expect(screen.getByTestId('state').textContent).toBe('connected'), { timeout: 15_000 });
    await rtlWaitFor(() => expect(reads.length).toBe(1), { timeout: 15_000 });

    await act(async () => {
      screen.getByText('raise').click();
    });
    await rtlWaitFor(() => expect(screen.getByText('Bed 7: HR 150')).toBeTruthy(), { timeout: 15_000 });
    expect(screen.getByTestId('command').textContent).toBe('committed');
    // Strict mode mounted twice, yet the board was read once, then once for the new event.
    expect(reads.filter((u) => u.includes('/alerts')).length).toBe(2);
  });

  it('usePresence and useViewing show other users', async () => {
    const hospital = freshHospital();
    const nurse = makeClient(sharedUrl(), hospital, { user: 'nurse-amy' });
    const doctor = makeClient(sharedUrl(), hospital, { user: 'dr-rao', role: 'physician' });
    const doctorView = doctor.view('patient:p-1');
    function Who() {
      const online = usePresence();
      const viewers = useViewing('patient:p-1');
      return h('div', null,
        h('p', { 'data-testid': 'online' }, online.map((o) => o.user).sort().join(',')),
        h('p', { 'data-testid': 'viewers' }, viewers.map((o) => o.user).sort().join(',')),
      );
    }
    render(h(StrictMode, null, h(VigilProvider, { client: nurse }, h(Who))));
    await rtlWaitFor(() => expect(screen.getByTestId('online').textContent).toBe('dr-rao,nurse-amy'), { timeout: 15_000 });
    await rtlWaitFor(() => expect(screen.getByTestId('viewers').textContent).toContain('dr-rao'), { timeout: 15_000 });
    doctorView.dispose();
    await rtlWaitFor(() => expect(screen.getByTestId('viewers').textContent).not.toContain('dr-rao'), { timeout: 15_000 });
  });

  it('useTyping shows who is typing in a case thread', async () => {
    const hospital = freshHospital();
    const opened = await api<{ aggregate_id: string }>(sharedUrl(), hospital, 'POST', 'cases', { patient: 'p-2', title: 'rash' });
    const caseId = opened.body.aggregate_id;
    const nurse = makeClient(sharedUrl(), hospital, { user: 'nurse-amy' });
    const doctor = makeClient(sharedUrl(), hospital, { user: 'dr-rao', role: 'physician' });
    function Typing() {
      const { users } = useTyping(caseId);
      return h('p', { 'data-testid': 'typing' }, users.map((u) => u.user).join(','));
    }
    render(h(StrictMode, null, h(VigilProvider, { client: nurse }, h(Typing))));
    const doctorTyping = doctor.typing(caseId);
    doctorTyping.subscribe(() => undefined);
    await rtlWaitFor(() => expect(nurse.connection.get().status).toBe('connected'), { timeout: 15_000 });
    await rtlWaitFor(() => expect(doctor.connection.get().status).toBe('connected'), { timeout: 15_000 });
    // Typing is ephemeral: say it until the other side shows it (the first may precede its subscription).
    await rtlWaitFor(() => {
      doctorTyping.notify();
      expect(screen.getByTestId('typing').textContent).toContain('dr-rao');
    }, { timeout: 15_000, interval: 1100 });
  });
});
