// Builds a JavaScript pipeline-stage processor into a WASI-p2 component with componentize-js.
//
//   node build.mjs SOURCE.js WORLD OUT.wasm
//
// SOURCE.js is the processor's entry module (the WIT glue); it may import sibling modules by relative path
// (`./lines.js`), which must live in SOURCE.js's directory or below it. WORLD is a world of the omnihost:plugin
// package (wit/plugin, found relative to this script), e.g. `pipeline-processor`. Run `npm ci` here first.
//
// Two workarounds, both for the pinned toolchain (componentize-js 0.23.0, preview2-shim 0.26.1):
// * componentize-js runs its pre-initialiser (wizer) inside Node with preview2-shim's WASI, and preview2-shim
//   0.26 no longer preopens `/`, so reading the source fails with "failed to get path metadata": preopen `/`
//   before componentizing.
// * By default the engine imports wasi:http, wasi:random and wasi:clocks (fetch(), Math.random(), Date.now());
//   the host links none of them, so those features are disabled. `console.log` (stdio) stays, but log through
//   the `log` import instead: it is attributed to the plugin by the host.
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { _setPreopens } from '@bytecodealliance/preview2-shim/filesystem';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const witPath = resolve(here, '../../wit/plugin');

const [source, world, out] = process.argv.slice(2);
if (!source || !world || !out) {
  console.error('usage: node build.mjs SOURCE.js WORLD OUT.wasm');
  process.exit(2);
}
const sourcePath = resolve(source);
const outPath = resolve(out);
await stat(sourcePath); // a clear ENOENT instead of a failure inside the pre-initialiser

// componentize-js maps the current directory to `/` for the pre-initialiser when the source lies below it;
// working from the source's own directory makes its relative imports resolve whatever the caller's cwd.
process.chdir(dirname(sourcePath));
_setPreopens({ '/': '/' });

const started = performance.now();
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: world,
  disableFeatures: ['http', 'fetch-event', 'random', 'clocks'],
});
await mkdir(dirname(outPath), { recursive: true });
await writeFile(outPath, component);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.error(`${outPath}: ${component.length} bytes in ${seconds} s`);
