// Offline tests of ocr-lines' logic: `node --test` in plugins/js (no WebAssembly needed).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  DEFAULT_MIN_SCORE, MalformedInput, keepLines, ocrLines, parseLines, parseMinScore, readingOrder,
} from './lines.js';

const doc = (lines) => JSON.stringify({ lines });
const line = (text, box, score = 0.9) => ({ text, box, score });

test('min_score defaults to 0.5 and parses numbers', () => {
  assert.equal(parseMinScore(undefined), DEFAULT_MIN_SCORE);
  assert.equal(parseMinScore(''), DEFAULT_MIN_SCORE);
  assert.equal(parseMinScore('0.8'), 0.8);
  assert.equal(parseMinScore('0'), 0);
  assert.throws(() => parseMinScore('high'), MalformedInput);
});

test('drops empty text and low scores, trims the text kept', () => {
  const kept = keepLines([
    line('  hello ', [0, 0, 10, 10], 0.9),
    line('   ', [0, 20, 10, 30], 0.99),
    line('', [0, 40, 10, 50], 0.99),
    line('faint', [0, 60, 10, 70], 0.49),
    line('edge', [0, 80, 10, 90], 0.5),
  ], 0.5);
  assert.deepEqual(kept.map((l) => l.text), ['hello', 'edge']);
});

test('top to bottom, then left to right within a row', () => {
  const lines = [
    line('second row right', [300, 52, 400, 72]),
    line('first row right', [200, 12, 300, 30]),
    line('second row left', [10, 50, 120, 70]),
    line('first row left', [10, 10, 100, 30]),
    line('third', [10, 100, 100, 120]),
  ];
  assert.deepEqual(readingOrder(lines).map((l) => l.text),
    ['first row left', 'first row right', 'second row left', 'second row right', 'third']);
});

test('centres more than half a line height apart are different rows', () => {
  // height 20: same row when the centres are within 10
  const a = line('right but higher', [200, 0, 300, 20]); // centre 10
  const b = line('left, 11 lower', [0, 11, 100, 31]); // centre 21
  assert.deepEqual(readingOrder([b, a]).map((l) => l.text), ['right but higher', 'left, 11 lower']);
  const c = line('left, 9 lower', [0, 9, 100, 29]); // centre 19
  assert.deepEqual(readingOrder([a, c]).map((l) => l.text), ['left, 9 lower', 'right but higher']);
});

test('a row is anchored at its first line: a slant does not chain every line into one row', () => {
  // each line 8 lower than the one to its left; line height 20 (tolerance 10)
  const lines = [0, 1, 2, 3].map((i) => line(`w${i}`, [i * 100, i * 8, i * 100 + 90, i * 8 + 20]));
  // rows: {w0, w1} (centres 10, 18), {w2, w3} (26, 34)
  assert.deepEqual(readingOrder([...lines].reverse()).map((l) => l.text), ['w0', 'w1', 'w2', 'w3']);
  const tall = [line('b', [100, 16, 190, 36]), line('a', [0, 0, 90, 20]), line('c', [200, 17, 290, 37])];
  // centres 10 (a), 26 (b), 27 (c): b and c form the second row
  assert.deepEqual(readingOrder(tall).map((l) => l.text), ['a', 'b', 'c']);
});

test('reading order is stable and keeps the boxes', () => {
  const lines = [line('x', [0, 0, 10, 10]), line('y', [0, 0, 10, 10])];
  const out = readingOrder(lines);
  assert.deepEqual(out.map((l) => l.text), ['x', 'y']);
  assert.deepEqual(out[0].box, [0, 0, 10, 10]);
});

test('documents of several items are merged before ordering', () => {
  const out = ocrLines([
    doc([line('bottom', [0, 100, 50, 120])]),
    doc([line('top', [0, 0, 50, 20]), line('low', [0, 40, 50, 60], 0.1)]),
  ], 0.5);
  assert.deepEqual(out, [
    { text: 'top', box: [0, 0, 50, 20], score: 0.9 },
    { text: 'bottom', box: [0, 100, 50, 120], score: 0.9 },
  ]);
});

test('no lines (nothing detected) gives nothing', () => {
  assert.deepEqual(ocrLines([doc([])], 0.5), []);
  assert.deepEqual(ocrLines([], 0.5), []);
});

test('malformed input is rejected with a message saying what is wrong', () => {
  const cases = [
    [undefined, /no json/],
    ['{"lines": ', /not valid JSON/],
    ['[]', /no "lines" array/],
    ['{"lines": {}}', /no "lines" array/],
    [doc([null]), /line 0 is not an object/],
    [doc([{ score: 1, box: [0, 0, 1, 1] }]), /line 0 has no string "text"/],
    [doc([{ text: 'a', score: '1', box: [0, 0, 1, 1] }]), /line 0 has no numeric "score"/],
    [doc([{ text: 'a', score: 1, box: [0, 0, 1] }]), /line 0 has no "box"/],
    [doc([{ text: 'a', score: 1, box: [0, 0, 1, '1'] }]), /line 0 has no "box"/],
  ];
  for (const [input, message] of cases) {
    assert.throws(() => parseLines(input, 'source item 0'), (e) => e instanceof MalformedInput
      && message.test(e.message) && e.message.startsWith('source item 0'), String(input));
  }
});
