// Smoke test of the built JavaScript and Python processors, without the omnihost host: each component in
// plugins/dist is transpiled to JS with jco and run in Node against stand-ins of the host's imports
// (smoke/host/*.js), through its real WIT exports. It checks what the offline unit tests cannot: that the glue
// binds to the world, that errors come out as the right plugin-error, that tensor handles pass back untouched.
//
//   cd plugins/js && npm ci && node smoke/smoke.mjs [DIST_DIR]     (after building the components)
//
// Python components use Wasm extended constant expressions, which Node 20 only validates with
// --experimental-wasm-extended-const: the script restarts itself with that flag when the running Node needs it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// (module (global i32 (i32.add (i32.const 1) (i32.const 2))))
const EXTENDED_CONST = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 6, 9, 1, 127, 0, 65, 1, 65, 2, 106, 11]);
if (!WebAssembly.validate(EXTENDED_CONST)) {
  if (process.execArgv.includes('--experimental-wasm-extended-const')) {
    throw new Error('this Node cannot run Wasm extended constant expressions (Python components need them)');
  }
  const run = spawnSync(process.execPath,
    ['--experimental-wasm-extended-const', ...process.execArgv, fileURLToPath(import.meta.url),
      ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

const { transpile } = await import('@bytecodealliance/jco');
const { Tensor } = await import('./host/tensors.js');
const tensors = await import('./host/tensors.js');
const { CONFIG } = await import('./host/config.js');
const { LOGS } = await import('./host/log.js');
const compute = await import('./host/compute.js');

const here = dirname(fileURLToPath(import.meta.url));
const dist = resolve(process.argv[2] ?? join(here, '../../dist'));
// Inside node_modules: ignored by git, and the transpiled modules find preview2-shim from there.
const work = join(here, '../node_modules/.cache/omnihost-smoke');

async function load(name) {
  const component = await readFile(join(dist, `${name}.wasm`));
  const hostDir = pathToFileURL(join(here, 'host')).href;
  const { files } = await transpile(component, {
    name,
    map: { 'omnihost:plugin/*': `${hostDir}/*.js` },
  });
  const out = join(work, name);
  await rm(out, { recursive: true, force: true });
  for (const [file, bytes] of Object.entries(files)) {
    await mkdir(dirname(join(out, file)), { recursive: true });
    await writeFile(join(out, file), bytes);
  }
  const t = performance.now();
  const mod = await import(pathToFileURL(join(out, `${name}.js`)).href);
  console.log(`${name}: instantiated in ${(performance.now() - t).toFixed(0)} ms`);
  return mod.processor;
}

const request = (over = {}) => ({
  requestId: 'smoke', stageId: 0, prompt: undefined, inputs: [], params: '{}', chunk: 0, ...over,
});
const item = (over = {}) => ({
  text: undefined, tokenIds: [], tensors: [], json: undefined, finishReason: undefined, ...over,
});
function pluginError(f) {
  try {
    f();
  } catch (e) {
    assert.ok(e.payload, `expected a plugin-error, got ${e}`);
    return e.payload;
  }
  assert.fail('expected a plugin-error');
}

async function echoStage(name) {
  const processor = await load(name);
  const readsBefore = tensors.reads;
  const image = new Tensor([3], 'u8', new Uint8Array([1, 2, 3]));
  let out = processor.process(request({ prompt: 'hi', inputs: [['image', image]] }), []);
  assert.equal(out.length, 1);
  assert.equal(out[0].text, 'hi');
  assert.equal(out[0].tensors[0][0], 'image');
  assert.equal(out[0].tensors[0][1], image, 'the input tensor comes back as the same handle');

  const a = new Tensor([2], 'fp32', new Uint8Array(8));
  const b = new Tensor([1], 'i64', new Uint8Array(8));
  const first = {
    stageId: 1,
    outputs: [item({ text: 'x', tokenIds: [1, 2], tensors: [['a', a]], json: '{"k":1}', finishReason: 'stop' }),
      item({ text: 'y' })],
  };
  const second = { stageId: 2, outputs: [item({ tensors: [['b', b]] })] };
  out = processor.process(request({ stageId: 3, prompt: 'ignored' }), [first, second]);
  assert.deepEqual(out.map((i) => i.text), ['x', 'y', undefined]);
  assert.deepEqual([...out[0].tokenIds], [1, 2]);
  assert.equal(out[0].json, '{"k":1}');
  assert.equal(out[0].finishReason, 'stop');
  assert.equal(out[0].tensors[0][1], a);
  assert.equal(out[2].tensors[0][1], b);
  assert.equal(tensors.reads, readsBefore, 'echo reads no tensor');

  CONFIG.set('prefix', 'v2:');
  assert.equal(processor.process(request({ prompt: 'hi' }), [])[0].text, 'v2:hi');
  assert.deepEqual(processor.process(request(), [first]).map((i) => i.text), ['v2:x', 'v2:y']);
  CONFIG.delete('prefix');

  const e = pluginError(() => processor.process(request(), []));
  assert.equal(e.tag, 'invalid-input');

  const n = 1000;
  const t = performance.now();
  for (let i = 0; i < n; i += 1) processor.process(request({ prompt: 'hello' }), []);
  console.log(`${name}: OK (${((performance.now() - t) / n * 1000).toFixed(0)} us per call under jco)`);
}

async function ocrCtc() {
  const processor = await load('ocr_ctc');
  // Labels: blank, a, b, c, space (the model's `character` metadata is "a\nb\nc").
  compute.MODELS.set('rec', [['character', 'a\nb\nc']]);
  const rows = [[1, 1, 0, 2, 4, 3], [0, 0, 0, 0, 0, 0]]; // "ab c", ""
  const scores = new Float32Array(rows.length * 6 * 5);
  rows.flat().forEach((label, step) => {
    for (let c = 0; c < 5; c += 1) scores[step * 5 + c] = c === label ? 0.8 : 0.05;
  });
  const rec = () => new Tensor([2, 6, 5], 'fp32', new Uint8Array(scores.buffer));
  const boxes = JSON.stringify({ boxes: [[1, 2, 3, 4], [5, 6, 7, 8]] });
  const call = (json, tensorList) => processor.process(request({ stageId: 2 }),
    [{ stageId: 1, outputs: [item({ json, tensors: tensorList })] }]);

  let out = call(boxes, [['fetch_name_0', rec()]]);
  assert.equal(out.length, 1);
  const doc = JSON.parse(out[0].json);
  assert.deepEqual(doc.lines.map((l) => [l.text, l.box]), [['ab c', [1, 2, 3, 4]], ['', [5, 6, 7, 8]]]);
  assert.ok(Math.abs(doc.lines[0].score - 0.8) < 1e-5 && doc.lines[1].score === 0);
  call(boxes, [['fetch_name_0', rec()]]);
  assert.equal(compute.opens, 1, 'the charset is read once per instance');

  assert.deepEqual(JSON.parse(processor.process(request(), [{ stageId: 1, outputs: [] }])[0].json), { lines: [] });
  let e = pluginError(() => call(JSON.stringify({ boxes: [[0, 0, 1, 1]] }), [['fetch_name_0', rec()]]));
  assert.equal(e.tag, 'internal');
  assert.match(e.val, /2 rows but the item lists 1 boxes/);
  e = pluginError(() => call(boxes, [['ids', new Tensor([2, 6], 'i64', new Uint8Array(96))]]));
  assert.match(e.val, /exactly one f32/);
  CONFIG.set('model', 'missing');
  e = pluginError(() => call(boxes, [['fetch_name_0', rec()]]));
  assert.equal(e.tag, 'internal');
  assert.match(e.val, /not-found/);
  CONFIG.delete('model');
  console.log('ocr_ctc: OK');
}

async function ocrLines() {
  const processor = await load('ocr_lines');
  const doc = JSON.stringify({
    lines: [
      { text: ' right ', score: 0.9, box: [200, 12, 300, 30] },
      { text: 'left', score: 0.8, box: [10, 10, 100, 30] },
      { text: 'low', score: 0.3, box: [10, 50, 100, 70] },
      { text: '  ', score: 0.99, box: [10, 90, 100, 110] },
      { text: 'last', score: 0.7, box: [10, 130, 100, 150] },
    ],
  });
  const call = (json) => processor.process(request({ stageId: 3 }), [{ stageId: 2, outputs: [item({ json })] }]);
  assert.deepEqual(call(doc).map((i) => JSON.parse(i.json)), [
    { text: 'left', box: [10, 10, 100, 30], score: 0.8 },
    { text: 'right', box: [200, 12, 300, 30], score: 0.9 },
    { text: 'last', box: [10, 130, 100, 150], score: 0.7 },
  ]);
  CONFIG.set('min_score', '0.75');
  assert.deepEqual(call(doc).map((i) => JSON.parse(i.json).text), ['left', 'right']);
  CONFIG.delete('min_score');
  assert.deepEqual(call('{"lines":[]}'), []);
  const e = pluginError(() => call('{"lines":[{"text":1}]}'));
  assert.equal(e.tag, 'internal');
  assert.match(e.val, /line 0 has no string "text"/);
  console.log('ocr_lines: OK');
}

await echoStage('echo_stage_js');
await echoStage('echo_stage_py');
await ocrCtc();
await ocrLines();
assert.ok(LOGS.every(([level]) => ['trace', 'debug', 'info', 'warn', 'error'].includes(level)));
console.log('all components OK');
