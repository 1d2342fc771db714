"""`echo-stage`: the template for a pipeline-stage processor written in Python, and the processor the per-hop
benchmark uses (it does next to nothing, so what is measured is the host's cost of one hop).

A first stage (no sources) returns one item: the request's prompt as text, its inputs as tensors. A later stage
returns its sources' items as they came. Config `prefix` (default empty) is put before every text.

How a Python processor is put together
--------------------------------------
* The WIT world is `pipeline-processor` (wit/plugin/plugin.wit, package omnihost:plugin@0.1.2). componentize-py
  generates its bindings, the `wit_world` package, at build time; to read them (types, docstrings) run
      componentize-py -d ../../../wit/plugin -w pipeline-processor bindings /tmp/bindings
* The component exports the `processor` interface: this module, `app`, defines a class named `Processor`
  that subclasses `wit_world.exports.Processor` and implements `process`.
* The plugin may import `log`, `config`, `tensors` and `compute` (wit_world.imports.*).
* Build (from this directory):
      componentize-py -d ../../../wit/plugin -w pipeline-processor componentize app -o ../../dist/echo_stage_py.wasm
  Only modules that `app` imports end up in the component (tests are left out).
* Keep the logic in a plain module (echo.py) with its own tests (test_echo.py, `python -m unittest`): the
  glue below cannot be imported outside the component.

The processor keeps no state between calls (any pooled instance may serve any call). Module globals are fine
as caches of facts that do not change (a parsed charset, a tokenizer): instances are reused.

Errors
------
`process` returns `result<list<item>, plugin-error>`; in Python, return the list for `ok` and raise
`componentize_py_types.Err(<plugin-error case>)` for `err`:
* `types.PluginError_InvalidInput(msg)`: the client's request is wrong (HTTP 400, the host names the stage);
* `types.PluginError_Internal(msg)`: anything else, the pipeline's fault (HTTP 500);
* `types.PluginError_Unsupported(msg)`: an operation this processor does not implement (HTTP 501).
Any other exception escaping `process` traps the instance: the host fails the request and discards the
instance, so raise `Err` for every failure you expect.
"""

# Every import at the top: componentize-py bundles only the modules imported while it builds the component, so
# an import inside a function fails at run time with ModuleNotFoundError.
from typing import List, Optional, Tuple

import echo
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.processor import Item, Request, Source
from wit_world.imports import config, log, tensors, types


def _item(text: Optional[str], tensor_list: List[Tuple[str, tensors.Tensor]]) -> Item:
    # An item is what flows between stages (see `record item` in the WIT):
    #   text           the text an LLM or embedding engine reads, or an LLM wrote;
    #   token_ids      token ids, when a stage works on tokens;
    #   tensors        named tensors as host handles: an ONNX engine reads its inputs from here by name;
    #   json           a JSON document: structured results, or facts a later stage needs (they travel along);
    #   finish_reason  why an LLM stopped (`stop`, `length`); None elsewhere.
    return Item(text=text, token_ids=[], tensors=tensor_list, json=None, finish_reason=None)


class Processor(exports.Processor):
    def process(self, request: Request, sources: List[Source]) -> List[Item]:
        # request.request_id  the pipeline request's id (for log lines);
        # request.stage_id    the stage this call is for;
        # request.prompt      the request's text prompt, or None;
        # request.inputs      the request's binary inputs by name (e.g. `image`: the encoded file, u8 [bytes]);
        # request.params      this stage's sampling parameters, a JSON object (defaults overlaid with the
        #                     request's);
        # request.chunk       the chunk index when this stage consumes its source as a stream, else 0.
        # sources             what each source stage produced, in the stage's configured order: for each,
        #                     its stage_id and its outputs (items). Empty for a pipeline's first stage.
        #
        # Tensor handles are owned by this call: returning one in an item hands it back to the host without a
        # copy; `t.read()` copies its bytes into the plugin (only do that when the logic needs the data).
        # Configuration is read-only and set per plugin by the operator: `config.get(key)` is the value or None.
        prefix = config.get("prefix") or ""
        try:
            return echo.echo(request.prompt, request.inputs, [s.outputs for s in sources], _item, prefix)
        except echo.InvalidInput as e:
            log.log(log.Level.DEBUG, f"echo-stage: request {request.request_id}: {e}")
            raise Err(types.PluginError_InvalidInput(f"echo-stage: {e}")) from None
