// Browser builds of the sockjs-client releases that npm ships as sources only (1.0.0 to 1.1.1 have no dist/).
//
// Run by `make deps` after `npm ci` as `npm run build` (the Heroku Node.js buildpack runs `build` too). For every
// installed sockjs-client package (web/package.json installs each release under an alias, e.g.
// node_modules/sockjs-client-1.0.3) that has no dist/sockjs.min.js, this bundles the package's own lib/entry.js
// with esbuild into dist/sockjs.min.js: the layout of the releases that ship a build, and a script that defines
// the global SockJS as the official builds do. esbuild-wasm is pure JavaScript and WebAssembly, so it needs
// neither optional platform packages nor install scripts (`npm ci --omit=optional --ignore-scripts` suffices).
// Built as the official builds were: the package's "browser" field replaces the Node drivers, NODE_ENV=production
// drops the debug logging, ES5 output for the old browsers the iframe transports exist for.
// Warren serves these files to the SockJS iframe (app/transport/iframe.py); the tests load them in pages too.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild-wasm';

const modules = join(fileURLToPath(new URL('.', import.meta.url)), 'node_modules');
const built = [];
for (const name of readdirSync(modules).filter((entry) => /^sockjs-client(-.+)?$/.test(entry)).sort()) {
  const root = join(modules, name);
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  if (manifest.name !== 'sockjs-client' || existsSync(join(root, 'dist', 'sockjs.min.js'))) continue;
  await esbuild.build({
    entryPoints: [join(root, 'lib', 'entry.js')],
    outfile: join(root, 'dist', 'sockjs.min.js'),
    bundle: true,
    minify: true,
    platform: 'browser',
    format: 'iife',
    globalName: 'SockJS',
    target: 'es5',
    define: { 'process.env.NODE_ENV': '"production"', global: 'window' },
    banner: { js: `/* sockjs-client v${manifest.version} | http://sockjs.org | MIT license | built by Warren from the npm sources */` },
    logLevel: 'warning',
  });
  built.push(manifest.version);
}
await esbuild.stop?.();
console.log(built.length ? `sockjs-client builds made for ${built.join(', ')}` : 'sockjs-client builds: all present');
