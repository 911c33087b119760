// Bundle size of @vigil/client as an application would ship it: esbuild bundle, minified, then
// gzip -9. Prints bytes; `--json` for machine use.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const entry = fileURLToPath(new URL('../packages/client/dist/index.js', import.meta.url));
const result = await build({ entryPoints: [entry], bundle: true, minify: true, format: 'esm', write: false, platform: 'browser', target: 'es2020' });
const code = result.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
const out = { minified: code.length, gzip: gz };
if (process.argv.includes('--json')) console.log(JSON.stringify(out));
else console.log(`@vigil/client: ${(code.length / 1024).toFixed(1)} KiB minified, ${(gz / 1024).toFixed(1)} KiB min+gzip`);
