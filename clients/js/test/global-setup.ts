// Starts one shared `vigil serve` for the tests that do not restart or reset it; tests that do
// start their own (see helpers.ts). The URL and data dir reach the tests through env vars.
import type { TestProject } from 'vitest/node';
// @ts-expect-error plain ESM script without types
import { VigilServer } from '../scripts/server.mjs';

let server: { url: string; dataDir: string; stop(): Promise<void> } | null = null;

export default async function setup(project: TestProject) {
  server = await VigilServer.start();
  project.provide('vigilUrl', server!.url);
  project.provide('vigilDataDir', server!.dataDir);
  return async () => {
    await server?.stop();
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    vigilUrl: string;
    vigilDataDir: string;
  }
}
