"""`ocr-ctc`: stage 2 of the OCR pipeline (logic only, no engine): greedy CTC decoding of the recognition
model's output into text lines.

Input: one source (the recognition stage) whose item holds the model's f32 [rows, steps, classes] output as a
tensor and, as json, {"boxes": [[x0, y0, x1, y1], ...]}: one box per row, in row order. No outputs at all
means no text was detected.
Output: one item whose json is {"lines": [{"text", "score", "box"}, ...]}, in row order.

The charset is the recognition model's own: the operator grants the model to this plugin under the name in
config key `model` (default "rec"), and its `character` metadata is parsed once per instance (see
ctc.parse_charset). The decoding itself lives in ctc.py, tested natively by test_ctc.py.

Build: componentize-py -d ../../../wit/plugin -w pipeline-processor componentize app -o ocr_ctc.wasm
"""

from typing import Dict, List

import ctc
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.processor import Item, Request, Source
from wit_world.imports import compute, config, log, tensors, types

DEFAULT_MODEL = "rec"

# Parsed charsets by granted model name. Instances are pooled and reused, so this survives between calls;
# a swap of this plugin starts from a fresh module.
_CHARSETS: Dict[str, List[str]] = {}


def _internal(message: str) -> Err:
    return Err(types.PluginError_Internal(f"ocr-ctc: {message}"))


def _charset(model: str, refresh: bool = False) -> List[str]:
    cached = _CHARSETS.get(model)
    if cached is not None and not refresh:
        return cached
    try:
        with compute.open(model) as session:
            character = dict(session.metadata()).get("character")
    except Err as e:
        code = e.value.code.name.lower().replace("_", "-")  # ErrorCode.NOT_FOUND -> not-found, as in the WIT
        raise _internal(f"cannot open the recognition model `{model}` for its charset: {code}: "
                        f"{e.value.message}") from None
    if character is None:
        raise _internal(f"model `{model}` has no `character` metadata (expected one character per line)")
    charset = ctc.parse_charset(character)
    _CHARSETS[model] = charset
    log.log(log.Level.DEBUG, f"ocr-ctc: charset of `{model}`: {len(charset)} labels")
    return charset


class Processor(exports.Processor):
    def process(self, request: Request, sources: List[Source]) -> List[Item]:
        model = config.get("model") or DEFAULT_MODEL
        lines = []
        try:
            for source in sources:
                for item in source.outputs:
                    boxes = ctc.parse_boxes(item.json)
                    described = [(name, t.dimensions(), t.ty() == tensors.TensorType.FP32)
                                 for name, t in item.tensors]
                    k = ctc.pick_scores(described)
                    if k is None:
                        if boxes:
                            raise ctc.CtcError(f"{len(boxes)} boxes but no recognition tensor")
                        continue
                    dims = described[k][1]
                    charset = _charset(model)
                    if dims[2] != len(charset):  # the model behind the name may have been replaced: re-read once
                        charset = _charset(model, refresh=True)
                    data = item.tensors[k][1].read()
                    lines.extend(ctc.zip_lines(ctc.decode_rows(data, dims, charset), boxes))
                    del data
        except ctc.CtcError as e:
            raise _internal(str(e)) from None
        except Err:
            raise
        except Exception as e:  # a bug: fail the request as `internal` rather than trap the instance
            raise _internal(f"unexpected {type(e).__name__}: {e}") from None
        return [Item(text=None, token_ids=[], tensors=[], json=ctc.lines_json(lines), finish_reason=None)]
