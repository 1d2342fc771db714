"""Kokoro's side of the `phonemizer` stage: phonemes -> token ids, pieces of at most 510 ids, style rows.

Kokoro v1.0 reads `tokens` i64 [1, n + 2] = (0, ids..., 0) with n <= 510, `style` f32 [1, 256] = row n - 1 of
the voice's [510, 1, 256] table, and `speed` f32 [1]. Pure stdlib (no numpy inside the component): the .npy
header is parsed here, and the tensors are packed with `struct`. `app.py` is the glue; test_g2p.py tests this
natively. The Rust port (plugins/phonemizer/src/kokoro.rs) must split and pick rows identically.
"""

from __future__ import annotations

# Every import at the top: componentize-py bundles only the modules imported while it builds the component.
import ast
import json
import math
import struct
from typing import Dict, List, Tuple

# The most phoneme ids one Kokoro run takes (its context is 512 with the two boundary zeros).
MAX_IDS = 510
STYLE_DIM = 256
# Where a long phoneme string may be cut, best first: after a sentence, after a clause, at a word.
SENTENCE_ENDS = ".!?…"
CLAUSE_ENDS = ",;:—"
NPY_MAGIC = b"\x93NUMPY"


DEFAULT_VOICE = "jf_alpha"
MIN_SPEED = 0.25
MAX_SPEED = 4.0


class KokoroError(ValueError):
    """Kokoro's data files are not what this stage expects (the operator's fault, never the client's)."""


class ParamError(ValueError):
    """The request's params are wrong (the client's fault: `invalid-input`)."""


def parse_params(doc: str, default_voice: str) -> Tuple[str, float]:
    """The request's params (a JSON object; empty means {}) -> (voice, speed). `voice` defaults to
    `default_voice`, `speed` to 1.0 and must lie in 0.25..4.0. The voice's existence is checked later."""
    try:
        params = json.loads(doc) if doc.strip() else {}
    except ValueError:
        raise ParamError("params are not a JSON object") from None
    if not isinstance(params, dict):
        raise ParamError("params are not a JSON object")
    voice = params.get("voice")
    if voice is None:
        voice = default_voice
    elif not isinstance(voice, str):
        raise ParamError("`voice` must be a string")
    speed = params.get("speed")
    if speed is None:
        speed = 1.0
    elif isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise ParamError("`speed` must be a number")
    try:
        speed = float(speed)
    except OverflowError:  # an integer too large for a float
        raise ParamError(f"`speed` must be between {MIN_SPEED} and {MAX_SPEED}") from None
    if not (math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED):
        raise ParamError(f"`speed` must be between {MIN_SPEED} and {MAX_SPEED}")
    return voice, speed


def is_voice_name(name: str) -> bool:
    """Whether a client's voice name is a plain file stem (letters, digits, _ and -): nothing else may reach
    the file system."""
    return name != "" and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def unknown_voice(name: str, available: List[str]) -> str:
    return f"unknown voice `{name}`; available: {', '.join(available) or '(none)'}"


def parse_vocab(doc: str) -> Dict[str, int]:
    """vocab.json ({"vocab": {symbol: id}}) -> {symbol: id}."""
    try:
        value = json.loads(doc)
    except ValueError as e:
        raise KokoroError(f"vocab is not valid JSON: {e}") from None
    vocab = value.get("vocab") if isinstance(value, dict) else None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in vocab.values()):
        raise KokoroError("vocab has no `vocab` object of symbol -> integer id")
    return vocab


def to_ids(phonemes: str, vocab: Dict[str, int]) -> List[int]:
    """Phonemes -> token ids, one per character. The phonemiser emits only vocabulary symbols; a character
    outside it (a vocabulary that lost a symbol) is skipped rather than sent as a wrong id."""
    return [vocab[c] for c in phonemes if c in vocab]


def _cut(text: str, limit: int) -> int:
    """Where to end the first piece of `text` (longer than `limit`): just after the last sentence end within
    the limit that a space follows, else after the last clause end, else at the last space, else hard."""
    for marks in (SENTENCE_ENDS, CLAUSE_ENDS):
        for k in range(limit, 0, -1):  # the piece would be text[:k]
            if text[k - 1] in marks and text[k] == " ":
                return k
    for k in range(limit, 0, -1):
        if text[k] == " ":
            return k
    return limit


def split_phonemes(phonemes: str, limit: int = MAX_IDS) -> List[str]:
    """Cuts a phoneme string into pieces of at most `limit` characters (one id each), at sentence or clause
    punctuation, then at spaces. The spaces at a cut are dropped."""
    pieces: List[str] = []
    rest = phonemes.strip(" ")
    while len(rest) > limit:
        k = _cut(rest, limit)
        piece = rest[:k].rstrip(" ")
        if piece:
            pieces.append(piece)
        rest = rest[k:].lstrip(" ")
    if rest:
        pieces.append(rest)
    return pieces


def tokens_tensor(ids: List[int]) -> Tuple[List[int], bytes]:
    """The `tokens` input: dimensions [1, n + 2] and little-endian i64 data (0, ids..., 0)."""
    padded = [0] + ids + [0]
    return [1, len(padded)], struct.pack(f"<{len(padded)}q", *padded)


def speed_tensor(speed: float) -> Tuple[List[int], bytes]:
    return [1], struct.pack("<f", speed)


class VoiceTable:
    """One voice's style table from its .npy file: f32 little-endian, C order, [rows, 1, 256]."""

    def __init__(self, blob: bytes, name: str):
        self.name = name
        if blob[:6] != NPY_MAGIC or len(blob) < 10:
            raise KokoroError(f"voice `{name}` is not a .npy file")
        major = blob[6]
        if major == 1:
            (header_len,) = struct.unpack_from("<H", blob, 8)
            start = 10
        else:
            (header_len,) = struct.unpack_from("<I", blob, 8)
            start = 12
        try:
            header = ast.literal_eval(blob[start:start + header_len].decode("latin-1"))
        except (ValueError, SyntaxError) as e:
            raise KokoroError(f"voice `{name}`: unreadable .npy header: {e}") from None
        shape = header.get("shape") if isinstance(header, dict) else None
        if (not isinstance(header, dict) or header.get("descr") != "<f4" or header.get("fortran_order")
                or not isinstance(shape, tuple) or len(shape) < 2 or shape[-1] != STYLE_DIM
                or any(d != 1 for d in shape[1:-1]) or shape[0] < 1):
            raise KokoroError(f"voice `{name}`: expected a little-endian f32 [rows, 1, {STYLE_DIM}] table, got "
                              f"{header!r}")
        self.rows = shape[0]
        self.data_start = start + header_len
        if len(blob) < self.data_start + self.rows * STYLE_DIM * 4:
            raise KokoroError(f"voice `{name}`: the file is shorter than its [{self.rows}, 1, {STYLE_DIM}] table")
        self.blob = blob

    def style(self, n_ids: int) -> bytes:
        """The style row for an input of `n_ids` phoneme ids (row n - 1, clamped to the table), as the bytes of
        an f32 [1, 256] tensor."""
        row = min(max(n_ids, 1), self.rows) - 1
        offset = self.data_start + row * STYLE_DIM * 4
        return self.blob[offset:offset + STYLE_DIM * 4]
