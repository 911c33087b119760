// Prints one plain closing line, `vigil-js: N passed, N failed, N skipped`, after vitest's own
// summary, so CI logs that read a runner's closing line understand this run.
import type { Reporter, RunnerTestFile, RunnerTask } from 'vitest';

function count(tasks: readonly RunnerTask[], acc = { passed: 0, failed: 0, skipped: 0 }) {
  for (const t of tasks) {
    if (t.type === 'suite') count(t.tasks, acc);
    else if (t.mode === 'skip' || t.mode === 'todo' || t.result?.state === 'skip') acc.skipped += 1;
    else if (t.result?.state === 'pass') acc.passed += 1;
    else acc.failed += 1;
  }
  return acc;
}

export default class PlainSummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = [], errors: unknown[] = []): void {
    const c = count(files);
    const failed = c.failed + (errors.length > 0 && c.failed === 0 ? errors.length : 0);
    process.stdout.write(`\nvigil-js: ${c.passed} passed, ${failed} failed, ${c.skipped} skipped\n`);
  }
}
