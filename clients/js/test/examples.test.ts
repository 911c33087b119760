// The README's examples are files in examples/, checked to appear verbatim in the README and run
// here against a real server, so the documentation cannot drift from working code.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freshHospital, mintToken, sharedUrl, waitFor } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(`${root}/README.md`, 'utf8');

describe('the README examples', () => {
  it('quotes every example file verbatim', () => {
    for (const file of ['examples/node-board.mjs', 'examples/AlertBoard.tsx']) {
      expect(readme).toContain(readFileSync(`${root}/${file}`, 'utf8').trim());
    }
  });

  it('the Node alert board shows the alert it raised, then drops it once acknowledged', async () => {
    const hospital = freshHospital();
    const child = spawn(process.execPath, ['examples/node-board.mjs'], {
      cwd: root,
      env: { ...process.env, VIGIL_URL: sharedUrl(), VIGIL_HOSPITAL: hospital, VIGIL_TOKEN: mintToken({ hospital }) },
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      await waitFor(() => /1 unacknowledged alerts[\s\S]*Bed 12: SpO2 82%/.test(out), 20_000, `the raised alert on the board:\n${out}`);
      await waitFor(() => /raise: committed/.test(out), 20_000, 'committed');
      await waitFor(() => /1 unacknowledged[\s\S]*0 unacknowledged alerts/.test(out), 20_000, `the acknowledged alert leaves:\n${out}`);
      expect(out).toContain('connection: connected');
    } finally {
      child.kill();
    }
  });
});
