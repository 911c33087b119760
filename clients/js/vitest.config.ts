import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// One file at a time: the tests start real servers (embedded PostgreSQL) on a 2-core machine.
export default defineConfig({
  // The tests use the sources, so the React bindings and the client helpers share one copy.
  resolve: {
    alias: { '@vigil/client': fileURLToPath(new URL('./packages/client/src/index.ts', import.meta.url)) },
  },
  esbuild: { jsx: 'automatic' },
  test: {
    include: ['packages/*/test/**/*.test.{ts,tsx}', 'test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 180_000,
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default', './test/plain-summary-reporter.ts'],
  },
});
