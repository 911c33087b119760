import { afterEach, describe, expect, it } from 'vitest';
import { api, closeClients, freshHospital, makeClient, mintToken, sharedUrl, waitFor } from '../../../test/helpers.js';

afterEach(() => closeClients());

describe('every kind of live query follows the stream', () => {
  it('case thread, case list, patient, notifications, appointments and metrics update on others’ commands', async () => {
    const hospital = freshHospital();
    const doctor = mintToken({ hospital, user: 'dr-rao', role: 'physician' });
    const opened = await api<{ aggregate_id: string }>(sharedUrl(), hospital, 'POST', 'cases', { patient: 'p-7', title: 'cough' }, doctor);
    const caseId = opened.body.aggregate_id;
    const vigil = makeClient(sharedUrl(), hospital, { user: 'nurse-amy' });
    const thread = vigil.live('case', { id: caseId });
    const cases = vigil.live('cases');
    const patient = vigil.live('patient', { patient: 'p-7' });
    const inbox = vigil.live('notifications');
    const today = new Date().toISOString().slice(0, 10);
    const schedule = vigil.live('appointments', { date: today });
    const metrics = vigil.live('metrics');
    for (const q of [thread, cases, patient, inbox, schedule, metrics]) q.subscribe(() => undefined);
    await Promise.all([thread, cases, patient, inbox, schedule, metrics].map((q) => q.ready()));
    expect(thread.get().data!.messages).toHaveLength(0);
    expect(cases.get().data!.cases).toHaveLength(1);
    expect(patient.get().data!.history).toHaveLength(0);
    expect(inbox.get().data!.unread_count).toBe(0);
    expect(schedule.get().data!.appointments).toHaveLength(0);

    const message = await api<{ events: { position: number }[] }>(
      sharedUrl(), hospital, 'POST', `cases/${caseId}/messages`, { body: 'chest x-ray please' }, doctor);
    expect(message.status).toBeLessThan(300);
    const messagePosition = Number(message.body.events[0]!.position);
    expect((await api(sharedUrl(), hospital, 'POST', 'patients/p-7/vitals', { heart_rate: 88 }, doctor)).status).toBeLessThan(300);
    expect((await api(sharedUrl(), hospital, 'POST', 'notifications',
      { recipient: 'nurse-amy', content: { kind: 'lab_result', patient: 'p-7', test: 'CBC', summary: 'Hb 9.1', urgent: true } }, doctor)).status).toBeLessThan(300);
    const start = new Date(Date.now() + 3600_000);
    const end = new Date(start.getTime() + 1800_000);
    expect((await api(sharedUrl(), hospital, 'POST', 'appointments',
      { patient: 'p-7', clinician: 'dr-rao', start: start.toISOString(), end: end.toISOString() }, doctor)).status).toBeLessThan(300);
    const raised = await api<{ events: { position: number }[] }>(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'high', message: 'm' }, doctor);

    await waitFor(() => thread.get().data?.messages.length === 1, 15_000, 'the message in the thread');
    await waitFor(() => patient.get().data?.history.length === 1, 15_000, 'the reading on the patient');
    await waitFor(() => inbox.get().data?.unread_count === 1, 15_000, 'the notification in the inbox');
    if (start.toISOString().slice(0, 10) === today) {
      await waitFor(() => schedule.get().data?.appointments.length === 1, 15_000, 'the appointment on the schedule');
    }
    await waitFor(() => (metrics.get().position ?? 0) >= Number(raised.body.events[0]!.position), 15_000, 'metrics after the alert');
    await waitFor(() => (cases.get().position ?? 0) >= messagePosition, 15_000, 'the case list after the message');
  });
});
