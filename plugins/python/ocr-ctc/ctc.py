"""Greedy CTC decoding of a text-recognition model's output: the pure logic of the `ocr-ctc` stage.

Nothing here touches the WIT bindings, so `python -m unittest` runs it natively (see test_ctc.py); `app.py`
is the thin glue that reads the host's tensors and metadata and calls into this module.

Speed: this code runs in CPython compiled to WebAssembly, where a per-element Python loop over a
[T, 18710] score matrix costs seconds. Every pass over the scores is therefore a C-level bytes operation
(a strided slice, `bytes.find`), and Python code runs once per timestep, not once per class:

* Non-negative IEEE-754 floats order exactly like their bit patterns read as unsigned integers, so the
  largest value of a timestep has the largest top byte (sign bit + the high 7 exponent bits). One strided
  slice `data[3::4]` per row collects the top byte of every score; per timestep, `bytes.find` locates the
  largest top byte present, scanning downwards from the largest one possible (0x3F for probabilities <= 1.0,
  so a confident timestep costs one or two `memchr` passes); the few scores sharing that top byte are
  compared in full.
* Any negative score (a model that outputs logits) is handled too: the argmax of a timestep whose maximum is
  non-negative is still exact by the rule above; a timestep whose scores are all negative falls back to
  `max()` / `.index()` on an `array.array` slice. Without a softmax in the model, the score of a kept step is
  computed as softmax(max) = 1 / sum(exp(x - max)) (a C-level `map`, slower; PP-OCR models apply the softmax
  themselves).
"""

from __future__ import annotations

# Every import at the top: componentize-py bundles only the modules imported while it builds the component, so
# an import inside a function fails at run time with ModuleNotFoundError.
import array
import json
import math
import struct
import sys
from itertools import repeat
from operator import sub
from typing import List, Optional, Sequence, Tuple

# The CTC blank is index 0 of the charset.
BLANK = 0

# `bytes` objects of one byte, indexed by value: the needles of the top-byte search.
_BYTE = [bytes((b,)) for b in range(256)]
_F32 = struct.Struct("<f")
_LITTLE = sys.byteorder == "little"


class CtcError(ValueError):
    """The inputs cannot be decoded (a shape, a charset or a box list that does not fit). The glue maps it to
    the stage's `internal` error: these are facts about the pipeline, never about the client's request."""


def parse_charset(character: str) -> List[str]:
    """Builds the CTC label list from a PP-OCR model's `character` metadata.

    The metadata holds one character per line, newline-separated, with no trailing newline (PP-OCRv6_rec_small:
    18708 lines). As in rapidocr's CTCLabelDecode, the label list is: index 0 the CTC blank, then the lines in
    order, then a space at the end (18710 labels for 18708 lines). `str.splitlines` is what rapidocr uses, so
    the same characters split the same way.
    """
    chars = character.splitlines()
    if not chars:
        raise CtcError("the model's `character` metadata is empty")
    return ["blank"] + chars + [" "]


def looks_like_probabilities(data: bytes, classes: int) -> bool:
    """True when the first timestep's scores are non-negative and sum to 1: the model applied a softmax."""
    if len(data) < classes * 4:
        return True
    first = array.array("f")
    first.frombytes(data[: classes * 4])
    if not _LITTLE:
        first.byteswap()
    return min(first) >= 0.0 and abs(math.fsum(first) - 1.0) < 1e-3


def argmax_steps(data: bytes, steps: int, classes: int, row: int = 0,
                 probabilities: Optional[bool] = None) -> Tuple[List[int], List[float]]:
    """Per timestep of row `row` of a little-endian f32 [rows, steps, classes] tensor: the index of the largest
    score and that timestep's probability of it (the score itself when the model outputs probabilities,
    softmax(max) otherwise). `probabilities` is `looks_like_probabilities(data, classes)` when not given.
    """
    if probabilities is None:
        probabilities = looks_like_probabilities(data, classes)
    base = row * steps * classes  # first score of the row, in elements
    if len(data) < (base + steps * classes) * 4:
        raise CtcError(f"tensor of {len(data)} bytes is smaller than row {row} of [*, {steps}, {classes}] f32")
    # The top byte of every score of the row (one C-level strided copy, a quarter of the row's size).
    top = data[base * 4 + 3:(base + steps * classes) * 4:4]
    # Scores are <= 1.0 (top byte <= 0x3F) when they are probabilities; otherwise any non-negative float.
    highest = 0x3F if probabilities else 0x7F
    find = top.find
    unpack = _F32.unpack_from
    byte = _BYTE
    indices: List[int] = []
    probs: List[float] = []
    for t in range(steps):
        start = t * classes  # in `top`; the scores of this timestep are data[(base + start) * 4:...]
        end = start + classes
        # The largest top byte present among the non-negative scores of this timestep.
        i = -1
        b = highest
        while b >= 0:
            i = find(byte[b], start, end)
            if i >= 0:
                break
            b -= 1
        if i < 0:
            # Every score is negative (logits): the slow but exact path.
            idx, best = _argmax_slow(data, base + start, classes)
        else:
            needle = byte[b]
            best = unpack(data, (base + i) * 4)[0]
            idx = i
            j = find(needle, i + 1, end)
            while j >= 0:  # scores sharing the top byte: compare them in full (first one wins ties)
                v = unpack(data, (base + j) * 4)[0]
                if v > best:
                    best, idx = v, j
                j = find(needle, j + 1, end)
            idx -= start
        indices.append(idx)
        probs.append(best if probabilities else _softmax_of_max(data, base + start, classes, best))
    return indices, probs


def _row_array(data: bytes, start: int, classes: int) -> array.array:
    a = array.array("f")
    a.frombytes(data[start * 4:(start + classes) * 4])
    if not _LITTLE:
        a.byteswap()
    return a


def _argmax_slow(data: bytes, start: int, classes: int) -> Tuple[int, float]:
    a = _row_array(data, start, classes)
    best = max(a)
    return a.index(best), best


def _softmax_of_max(data: bytes, start: int, classes: int, best: float) -> float:
    a = _row_array(data, start, classes)
    total = math.fsum(map(math.exp, map(sub, a, repeat(best))))
    return 1.0 / total if total > 0.0 else 0.0


def collapse(indices: Sequence[int], probs: Sequence[float], charset: Sequence[str]) -> Tuple[str, float]:
    """Greedy CTC collapse: merge runs of the same label, drop the blank. Returns the text and the mean
    probability of the kept steps (0.0 when nothing was kept), as rapidocr does."""
    chars: List[str] = []
    kept: List[float] = []
    previous = -1
    n = len(charset)
    for idx, p in zip(indices, probs):
        if idx != previous and idx != BLANK:
            if idx >= n:
                raise CtcError(f"label {idx} is outside the charset of {n} labels")
            chars.append(charset[idx])
            kept.append(p)
        previous = idx
    score = math.fsum(kept) / len(kept) if kept else 0.0
    return "".join(chars), score


def decode_rows(data: bytes, dims: Sequence[int], charset: Sequence[str]) -> List[Tuple[str, float]]:
    """Decodes every row of a little-endian f32 [rows, steps, classes] tensor: (text, score) per row."""
    if len(dims) != 3:
        raise CtcError(f"expected a 3-D [rows, steps, classes] tensor, got dimensions {list(dims)}")
    rows, steps, classes = (int(d) for d in dims)
    if classes != len(charset):
        raise CtcError(f"the model outputs {classes} classes but its charset has {len(charset)} labels "
                       f"(blank + `character` lines + space)")
    if len(data) != rows * steps * classes * 4:
        raise CtcError(f"{len(data)} bytes do not hold an f32 tensor of dimensions {list(dims)}")
    if rows == 0 or steps == 0:
        return [("", 0.0)] * rows
    probabilities = looks_like_probabilities(data, classes)
    out = []
    for r in range(rows):
        indices, probs = argmax_steps(data, steps, classes, r, probabilities)
        out.append(collapse(indices, probs, charset))
    return out


def pick_scores(tensors: Sequence[Tuple[str, Sequence[int], bool]]) -> Optional[int]:
    """Which of an item's tensors holds the recognition scores: the one f32 3-D tensor, whatever the model
    named it (PP-OCRv6_rec_small calls it `fetch_name_0`). `tensors` is (name, dimensions, is-f32) per tensor.
    None when the item has no tensor at all; an error when none or several fit."""
    if not tensors:
        return None
    fits = [i for i, (_, dims, is_f32) in enumerate(tensors) if is_f32 and len(dims) == 3]
    if len(fits) != 1:
        described = ", ".join(f"{name} {list(dims)}{'' if f32 else ' (not f32)'}" for name, dims, f32 in tensors)
        raise CtcError(f"expected exactly one f32 [rows, steps, classes] tensor, found {len(fits)} among: "
                       f"{described}")
    return fits[0]


def zip_lines(decoded: Sequence[Tuple[str, float]], boxes: Sequence[Sequence[float]]
              ) -> List[Tuple[str, float, Sequence[float]]]:
    """Pairs each decoded row with its box: (text, score, box). The recognition batch has one row per box."""
    if len(decoded) != len(boxes):
        raise CtcError(f"the recognition output has {len(decoded)} rows but the item lists {len(boxes)} boxes")
    return [(text, score, box) for (text, score), box in zip(decoded, boxes)]


def parse_boxes(doc: Optional[str]) -> List[List[float]]:
    """The `boxes` of an item's JSON: a list of [x0, y0, x1, y1], one per row of the recognition batch."""
    if doc is None:
        raise CtcError("the recognition item carries no json (expected {\"boxes\": [[x0,y0,x1,y1], ...]})")
    try:
        value = json.loads(doc)
    except ValueError as e:
        raise CtcError(f"the recognition item's json is not valid JSON: {e}") from None
    boxes = value.get("boxes") if isinstance(value, dict) else None
    if not isinstance(boxes, list):
        raise CtcError("the recognition item's json has no `boxes` list")
    for i, box in enumerate(boxes):
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in box)):
            raise CtcError(f"box {i} is not [x0, y0, x1, y1]: {box!r}")
    return boxes


def lines_json(lines: Sequence[Tuple[str, float, Sequence[float]]]) -> str:
    """The stage's output document: {"lines": [{"text", "score", "box"}, ...]}, in row order."""
    return json.dumps(
        {"lines": [{"text": text, "score": round(score, 5), "box": list(box)} for text, score, box in lines]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
