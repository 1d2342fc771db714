// `echo-stage`: the template for a pipeline-stage processor written in JavaScript, and the processor the per-hop
// benchmark uses (it does next to nothing, so what is measured is the host's cost of one hop).
//
// A first stage (no sources) returns one item: the request's prompt as text, its inputs as tensors. A later
// stage returns its sources' items as they came. Config `prefix` (default empty) is put before every text.
//
// How a JavaScript processor is put together
// ------------------------------------------
// * The WIT world is `pipeline-processor` (wit/plugin/plugin.wit, package omnihost:plugin@0.1.2). componentize-js
//   turns this ES module, with the SpiderMonkey engine, into a component of that world.
// * The component exports the `processor` interface: this module exports an object named `processor` with a
//   `process(request, sources)` method.
// * Imports are ES modules named after their interface: `omnihost:plugin/log@0.1.2` (log), `.../config@0.1.2`
//   (get, keys), `.../tensors@0.1.2` (Tensor), `.../compute@0.1.2` (open). Every one of them is linked whether
//   or not the module uses it.
// * WIT names become camelCase in JS: `request-id` is `requestId`, `token-ids` is `tokenIds`. An `option<T>`
//   is the value or `undefined`; enums and variant tags are their WIT names as strings (`'debug'`,
//   `'invalid-input'`); a `list<u32>` arrives as a Uint32Array and may be returned as an array or typed array.
// * Build (from plugins/js, after `npm ci`):
//       node build.mjs echo-stage/index.js pipeline-processor ../dist/echo_stage_js.wasm
//   Modules imported by relative path (`./echo.js`) are bundled; they must sit in this directory or below.
// * Keep the logic in a plain module (echo.js) with its own tests (echo.test.js, `node --test`): this glue
//   cannot be imported outside the component, its `omnihost:` imports exist only there.
//
// The processor keeps no state between calls (any pooled instance may serve any call). Module-level constants
// are fine as caches of facts that do not change: instances are reused.
//
// Errors
// ------
// `process` returns `result<list<item>, plugin-error>`. Return the list for `ok`; for `err`, throw an Error whose
// own `payload` property is the plugin-error (`PluginError` below does that):
// * `{ tag: 'invalid-input', val: message }`: the client's request is wrong (HTTP 400, the host names the stage);
// * `{ tag: 'internal', val: message }`: anything else, the pipeline's fault (HTTP 500);
// * `{ tag: 'unsupported', val: message }`: an operation this processor does not implement (HTTP 501).
// An Error thrown without a `payload` (a TypeError from a bug) traps the instance: the host fails the request
// and discards the instance.
import { get } from 'omnihost:plugin/config@0.1.2';
import { log } from 'omnihost:plugin/log@0.1.2';

import { echo, InvalidInput } from './echo.js';

/** An error `process` returns as its `err` value (the bindings read the own property `payload`). */
class PluginError extends Error {
  /** @param {'invalid-input' | 'internal' | 'unsupported'} tag @param {string} message */
  constructor(tag, message) {
    super(message);
    this.payload = { tag, val: message };
  }
}

/**
 * An item is what flows between stages (see `record item` in the WIT):
 * - text          the text an LLM or embedding engine reads, or an LLM wrote (undefined: none);
 * - tokenIds      token ids, when a stage works on tokens;
 * - tensors       named tensors as host handles: an ONNX engine reads its inputs from here by name;
 * - json          a JSON document: structured results, or facts a later stage needs (they travel along);
 * - finishReason  why an LLM stopped (`stop`, `length`); undefined elsewhere.
 */
function item(text, tensors) {
  return { text, tokenIds: [], tensors, json: undefined, finishReason: undefined };
}

export const processor = {
  /**
   * request.requestId  the pipeline request's id (for log lines);
   * request.stageId    the stage this call is for;
   * request.prompt     the request's text prompt, or undefined;
   * request.inputs     the request's binary inputs by name, [name, Tensor] pairs (e.g. `image`: the encoded
   *                    file as u8 [bytes]);
   * request.params     this stage's sampling parameters, a JSON object as a string (defaults overlaid with the
   *                    request's);
   * request.chunk      the chunk index when this stage consumes its source as a stream, else 0.
   * sources            what each source stage produced, in the stage's configured order: for each, its
   *                    stageId and its outputs (items). Empty for a pipeline's first stage.
   *
   * Tensor handles are owned by this call: returning one in an item hands it back to the host without a copy;
   * `tensor.read()` copies its bytes into the plugin as a Uint8Array (only do that when the logic needs them).
   */
  process(request, sources) {
    // Configuration is read-only and set per plugin by the operator: `get(key)` is the value or undefined.
    const prefix = get('prefix') ?? '';
    try {
      return echo(request.prompt, request.inputs, sources.map((s) => s.outputs), item, prefix);
    } catch (e) {
      if (e instanceof InvalidInput) {
        log('debug', `echo-stage: request ${request.requestId}: ${e.message}`);
        throw new PluginError('invalid-input', `echo-stage: ${e.message}`);
      }
      throw new PluginError('internal', `echo-stage: ${e}`);
    }
  },
};
