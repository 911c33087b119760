// The console is served by `vigil serve` under /console (src/http/console.rs embeds dist/).
// No plugin: esbuild compiles TSX with the automatic runtime; the output has no inline script,
// so the server's Content-Security-Policy can forbid them.
import { fileURLToPath } from 'node:url';
import type { UserConfig } from 'vite';

// The console is a workspace of clients/js (one `npm ci` there), whose node_modules is not an
// ancestor of this directory: bare imports are resolved there.
const modules = fileURLToPath(new URL('../clients/js/node_modules/', import.meta.url));

const config: UserConfig = {
  base: '/console/',
  esbuild: { jsx: 'automatic' },
  resolve: {
    alias: [{ find: /^(react|react-dom|@vigil\/client|@vigil\/react)(\/.*)?$/, replacement: `${modules}$1$2` }],
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
};

export default config;
