// `ocr-lines`: stage 3 of the OCR pipeline (logic only, no engine) and the pipeline's final output.
//
// Input: the source items of `ocr-ctc`, each with json {"lines": [{"text", "score", "box"}, ...]}.
// Output: one item per kept line, in reading order, with json {"text", "box", "score"}; no items when no line
// is kept. Lines with empty text (after trimming) or a score below config `min_score` (default 0.5) are
// dropped. Malformed input is the pipeline's fault: `internal`.
//
// The logic lives in lines.js (tested by lines.test.js with `node --test`); see echo-stage/index.js for how a
// JavaScript processor is put together. Build (from plugins/js):
//     node build.mjs ocr-lines/index.js pipeline-processor ../dist/ocr_lines.wasm
import { get } from 'omnihost:plugin/config@0.1.2';

import { MalformedInput, ocrLines, parseMinScore } from './lines.js';

class PluginError extends Error {
  constructor(tag, message) {
    super(message);
    this.payload = { tag, val: message };
  }
}

export const processor = {
  process(request, sources) {
    let lines;
    try {
      const minScore = parseMinScore(get('min_score'));
      const docs = sources.flatMap((s) => s.outputs.map((item) => item.json));
      lines = ocrLines(docs, minScore);
    } catch (e) {
      const message = e instanceof MalformedInput ? e.message : String(e);
      throw new PluginError('internal', `ocr-lines: ${message}`);
    }
    return lines.map((line) => ({
      text: undefined,
      tokenIds: [],
      tensors: [],
      json: JSON.stringify({ text: line.text, box: line.box, score: line.score }),
      finishReason: undefined,
    }));
  },
};
