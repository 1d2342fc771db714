"""The logic of `echo-stage`, kept free of the WIT bindings so that `python -m unittest` tests it natively.

A template: copy this directory, rename, and replace `echo` with your stage's logic. Keep it a plain function of
plain values where you can; the glue in app.py only translates between the host's records and these values.

`echo` never builds or reads a tensor: it hands back the very objects it was given. That is how a processor
passes tensors on without a copy: a tensor handle received in a request or a source and returned in an item
moves back to the host untouched; only `tensor.read()` copies data into the plugin.

It behaves as the Rust template (plugins/echo-stage) does, so the two swap for one another, with one
difference: a first stage without a prompt but with inputs echoes the inputs instead of failing.
"""

# Every import at the top: componentize-py bundles only the modules imported while it builds the component, so
# an import inside a function fails at run time with ModuleNotFoundError.
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

Item = TypeVar("Item")
Tensor = TypeVar("Tensor")


class InvalidInput(ValueError):
    """The client's request cannot be served (the glue returns `invalid-input`: HTTP 400)."""


def echo(prompt: Optional[str], inputs: List[Tuple[str, Tensor]], source_outputs: Sequence[Sequence[Item]],
         make_item: Callable[[Optional[str], List[Tuple[str, Tensor]]], Item], prefix: str = "") -> List[Item]:
    """What `echo-stage` returns for one call.

    * No source stages (the pipeline's first stage): one item holding the request's prompt as `text` and the
      request's binary inputs as its tensors (`make_item(text, tensors)` builds it). A first stage with neither
      a prompt nor inputs has nothing to echo: the client sent an empty request.
    * Otherwise: every source's outputs, sources in the order given, items in the order each source produced
      them, unchanged but for `prefix` (config `prefix`, empty by default) put before every text they have: a
      test's way to see which processor, and which version of it, built a stage's items. The items are the
      objects given (their `text` attribute is rewritten only when there is a prefix).
    """
    if not source_outputs:
        if prompt is None and not inputs:
            raise InvalidInput("the request has neither a prompt nor inputs")
        return [make_item(prompt if prompt is None else prefix + prompt, list(inputs))]
    out: List[Item] = []
    for outputs in source_outputs:
        for item in outputs:
            if prefix and item.text is not None:
                item.text = prefix + item.text
            out.append(item)
    return out
