// The logic of `echo-stage`, kept free of the WIT imports so that `node --test` tests it natively.
//
// A template: copy this directory, rename, and replace `echo` with your stage's logic. Keep it a plain function
// of plain values where you can; the glue in index.js only translates between the host's records and these.
//
// `echo` never builds or reads a tensor: it hands back the very objects it was given. That is how a processor
// passes tensors on without a copy: a tensor handle received in a request or a source and returned in an item
// moves back to the host untouched; only `tensor.read()` copies data into the plugin.
//
// It behaves as the Rust template (plugins/echo-stage) does, so the two swap for one another, with one
// difference: a first stage without a prompt but with inputs echoes the inputs instead of failing.

/** The client's request cannot be served: the glue returns `invalid-input` (HTTP 400). */
export class InvalidInput extends Error {}

/**
 * What `echo-stage` returns for one call.
 *
 * - No source stages (the pipeline's first stage): one item holding the request's prompt as `text` and the
 *   request's binary inputs as its tensors (`makeItem(text, tensors)` builds it). A first stage with neither a
 *   prompt nor inputs has nothing to echo: the client sent an empty request.
 * - Otherwise: every source's outputs, sources in the order given, items in the order each source produced
 *   them, unchanged but for `prefix` (config `prefix`, empty by default) put before every text they have: a
 *   test's way to see which processor, and which version of it, built a stage's items.
 *
 * @param {string | undefined} prompt the request's prompt (undefined: none)
 * @param {Array<[string, unknown]>} inputs the request's named input tensors
 * @param {Array<Array<{text?: string}>>} sourceOutputs each source's outputs, in source order
 * @param {(text: string | undefined, tensors: Array<[string, unknown]>) => unknown} makeItem
 * @param {string} prefix
 */
export function echo(prompt, inputs, sourceOutputs, makeItem, prefix = '') {
  if (sourceOutputs.length === 0) {
    if (prompt === undefined && inputs.length === 0) {
      throw new InvalidInput('the request has neither a prompt nor inputs');
    }
    return [makeItem(prompt === undefined ? prompt : prefix + prompt, [...inputs])];
  }
  const items = sourceOutputs.flat();
  if (prefix === '') return items; // the very objects received
  return items.map((item) => (item.text === undefined ? item : { ...item, text: prefix + item.text }));
}
