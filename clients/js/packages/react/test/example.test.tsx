// @vitest-environment jsdom
// The README's React example (examples/AlertBoard.tsx) rendered against a real server, with
// jsdom's own WebSocket standing in for the browser's.
import { StrictMode } from 'react';
import { cleanup, render, screen, waitFor } from '@testing-library/react';
import { afterEach, expect, it } from 'vitest';
import { App } from '../../../examples/AlertBoard.js';
import { api, freshHospital, mintToken, sharedUrl } from '../../../test/helpers.js';

afterEach(() => cleanup());

it('the README alert board shows a new alert live and acknowledges it from its button', async () => {
  const hospital = freshHospital();
  const token = mintToken({ hospital });
  render(
    <StrictMode>
      <App baseUrl={sharedUrl()} hospital={hospital} getToken={async () => token} />
    </StrictMode>,
  );
  await waitFor(() => expect(screen.getByText(/Live/)).toBeTruthy(), { timeout: 15_000 });
  await api(sharedUrl(), hospital, 'POST', 'alerts', { severity: 'critical', message: 'Bed 3: BP 80/40' });
  await waitFor(() => expect(screen.getByText(/Bed 3: BP 80\/40/)).toBeTruthy(), { timeout: 15_000 });
  screen.getByText('Acknowledge').click();
  await waitFor(() => expect(screen.queryByText(/Bed 3: BP 80\/40/)).toBeNull(), { timeout: 15_000 });
  const board = await api<{ alerts: { status: string }[] }>(sharedUrl(), hospital, 'GET', 'alerts');
  expect(board.body.alerts.map((a) => a.status)).toEqual(['acknowledged']);
});
