// Offline tests of echo-stage's logic: `node --test` in plugins/js (no WebAssembly needed). The WIT records are
// stood in for by plain objects: the logic only moves them around.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { echo, InvalidInput } from './echo.js';

/** Stands in for a host tensor handle: the logic must return the very same object, never read it. */
class Handle {
  read() {
    throw new Error('echo must not read tensors');
  }
}

const makeItem = (text, tensors) => ({ text, tensors });

test('first stage echoes the prompt and passes the inputs along', () => {
  const image = new Handle();
  const out = echo('hello', [['image', image]], [], makeItem);
  assert.equal(out.length, 1);
  assert.equal(out[0].text, 'hello');
  assert.equal(out[0].tensors[0][0], 'image');
  assert.equal(out[0].tensors[0][1], image);
});

test('first stage without a prompt still passes the inputs', () => {
  const image = new Handle();
  const [item] = echo(undefined, [['image', image]], [], makeItem);
  assert.equal(item.text, undefined);
  assert.equal(item.tensors[0][1], image);
});

test('an empty prompt is still a prompt', () => {
  assert.equal(echo('', [], [], makeItem)[0].text, '');
});

test('an empty request is invalid input', () => {
  assert.throws(() => echo(undefined, [], [], makeItem), InvalidInput);
});

test('sources are returned unchanged, in order', () => {
  const [a1, a2, b1] = [{}, {}, {}];
  const out = echo('ignored', [['image', new Handle()]], [[a1, a2], [], [b1]], makeItem);
  assert.equal(out.length, 3);
  assert.equal(out[0], a1);
  assert.equal(out[1], a2);
  assert.equal(out[2], b1);
});

test('prefix goes before every text, tensors stay the same handles', () => {
  assert.equal(echo('hi', [], [], makeItem, 'v2:')[0].text, 'v2:hi');
  const h = new Handle();
  const out = echo(undefined, [], [[{ text: 'x', tensors: [['t', h]] }, { text: undefined }]], makeItem, 'v2:');
  assert.deepEqual(out.map((i) => i.text), ['v2:x', undefined]);
  assert.equal(out[0].tensors[0][1], h);
});

test('sources without outputs give no items', () => {
  assert.deepEqual(echo('p', [], [[], []], makeItem), []);
});
