// The logic of `ocr-lines` (stage 3 of the OCR pipeline), free of the WIT imports so `node --test` tests it.
//
// Input: JSON documents {"lines": [{"text": str, "score": number, "box": [x0, y0, x1, y1]}, ...]} (from
// `ocr-ctc`). Output: the lines worth keeping, in reading order.

export const DEFAULT_MIN_SCORE = 0.5;

/** The input cannot be used: the glue returns `internal` (the pipeline's fault, not the client's). */
export class MalformedInput extends Error {}

const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

/**
 * The `min_score` config value: a number (lines scoring below it are dropped); the default when unset.
 * @param {string | undefined} value
 */
export function parseMinScore(value) {
  if (value === undefined || value.trim() === '') return DEFAULT_MIN_SCORE;
  const n = Number(value);
  if (!Number.isFinite(n)) {
    throw new MalformedInput(`config min_score must be a number, got ${JSON.stringify(value)}`);
  }
  return n;
}

/**
 * The lines of one document, checked: each has a string `text`, a finite `score` and a `box` of four finite
 * numbers. Anything else is malformed: an error naming the line and what is wrong.
 * @param {string | undefined} doc
 * @param {string} where names the document in error messages
 */
export function parseLines(doc, where = 'input') {
  if (doc === undefined || doc === null) {
    throw new MalformedInput(`${where}: the item has no json (expected {"lines": [...]})`);
  }
  let value;
  try {
    value = JSON.parse(doc);
  } catch (e) {
    throw new MalformedInput(`${where}: the item's json is not valid JSON: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || !Array.isArray(value.lines)) {
    throw new MalformedInput(`${where}: the item's json has no "lines" array`);
  }
  return value.lines.map((line, i) => {
    if (line === null || typeof line !== 'object') {
      throw new MalformedInput(`${where}: line ${i} is not an object`);
    }
    const { text, score, box } = line;
    if (typeof text !== 'string') throw new MalformedInput(`${where}: line ${i} has no string "text"`);
    if (!isNumber(score)) throw new MalformedInput(`${where}: line ${i} has no numeric "score"`);
    if (!Array.isArray(box) || box.length !== 4 || !box.every(isNumber)) {
      throw new MalformedInput(`${where}: line ${i} has no "box" [x0, y0, x1, y1]`);
    }
    return { text, score, box };
  });
}

/**
 * Keeps lines whose trimmed text is not empty and whose score is at least `minScore`; the kept text is trimmed.
 * @param {Array<{text: string, score: number, box: number[]}>} lines
 */
export function keepLines(lines, minScore) {
  return lines
    .map((l) => ({ text: l.text.trim(), box: l.box, score: l.score }))
    .filter((l) => l.text !== '' && l.score >= minScore);
}

/**
 * Sorts lines in reading order: top to bottom, and left to right within a row. Lines belong to one row when
 * their vertical centres are within half a line height of the row's first (topmost) line, the line height
 * being the mean height of the two lines. Grouping against the row's first line, rather than comparing pairs,
 * keeps the order well defined (a pairwise tolerance is not transitive) and a slanted page from chaining every
 * line into one row. Stable: equal positions keep their input order.
 * @template {{box: number[]}} L
 * @param {L[]} lines
 * @returns {L[]}
 */
export function readingOrder(lines) {
  const geo = lines.map((line, index) => {
    const [x0, y0, x1, y1] = line.box;
    const top = Math.min(y0, y1);
    const height = Math.abs(y1 - y0);
    return { line, index, left: Math.min(x0, x1), centre: top + height / 2, height };
  });
  geo.sort((a, b) => a.centre - b.centre || a.left - b.left || a.index - b.index);
  const rows = [];
  for (const g of geo) {
    const row = rows[rows.length - 1];
    if (row && Math.abs(g.centre - row[0].centre) <= (g.height + row[0].height) / 4) {
      row.push(g);
    } else {
      rows.push([g]);
    }
  }
  return rows.flatMap((row) => row.sort((a, b) => a.left - b.left || a.index - b.index).map((g) => g.line));
}

/**
 * The stage's result for the given documents (one per source item, in order): the kept lines, in reading
 * order, as {text, box, score}.
 * @param {Array<string | undefined>} docs
 * @param {number} minScore
 */
export function ocrLines(docs, minScore) {
  const lines = docs.flatMap((doc, i) => parseLines(doc, `source item ${i}`));
  return readingOrder(keepLines(lines, minScore));
}
