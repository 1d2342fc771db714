"""`phonemizer`: the input processor of the speech pipeline's Kokoro stage: English text -> Kokoro TTS inputs.

Input: the chat stage's items (one sentence each when it streams), or the request's prompt when the stage has
no source. Every item with non-empty text is phonemised (g2p.py, misaki-style American English) and cut into
pieces of at most 510 phoneme ids (kokoro.py). Output, per piece, one item with tensors `tokens` i64 [1, n + 2]
(0, ids..., 0), `style` f32 [1, 256] (row n - 1 of the voice's table) and `speed` f32 [1]; `text` is the
source text on a source item's first piece and "" on later ones (so the texts concatenate to the
transcript), `json` is {"phonemes", "voice"}, and the source's `finish_reason` rides on its last piece. Text
with nothing speakable produces no item.

Params (the request's, as a JSON object): `voice` (default: config `voice`, else "jf_alpha") and `speed`
(0.25..4.0, default 1.0); a bad one is `invalid-input`. Config: `vocab` (default /data/vocab.json) and
`voices` (default /data/voices, one NAME.npy per voice): Kokoro's files, granted read-only under /data.

The lexicon is baked in at build time (see g2p.py), so an instance never reads it. The Rust port
(plugins/phonemizer) produces identical items, so the two can be swapped for one another.

Build: componentize-py -d ../../../wit/plugin -w pipeline-processor componentize -p . -p ../../../.setup/lexicon
app -o phonemizer_py.wasm
"""

import json
import os
from typing import Dict, List, Optional

import g2p
import kokoro
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.processor import Item, Request, Source
from wit_world.imports import config, tensors, types

DEFAULT_VOCAB = "/data/vocab.json"
DEFAULT_VOICES = "/data/voices"

# Parsed data files by path. Instances are pooled and reused, so these survive between calls; a swap of this
# plugin starts from a fresh module.
_VOCABS: Dict[str, Dict[str, int]] = {}
_VOICES: Dict[str, kokoro.VoiceTable] = {}


def _internal(message: str) -> Err:
    return Err(types.PluginError_Internal(f"phonemizer: {message}"))


def _invalid(message: str) -> Err:
    return Err(types.PluginError_InvalidInput(f"phonemizer: {message}"))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _internal(f"cannot read the {what} {path}: {e.strerror or e}") from None


def _vocab(path: str) -> Dict[str, int]:
    cached = _VOCABS.get(path)
    if cached is None:
        cached = kokoro.parse_vocab(_read(path, "Kokoro vocab").decode("utf-8"))
        _VOCABS[path] = cached
    return cached


def _available_voices(folder: str) -> List[str]:
    try:
        return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".npy"))
    except OSError:
        return []


def _voice(folder: str, name: str) -> kokoro.VoiceTable:
    path = f"{folder}/{name}.npy"
    cached = _VOICES.get(path)
    if cached is not None:
        return cached
    if not kokoro.is_voice_name(name) or not os.path.isfile(path):
        raise _invalid(kokoro.unknown_voice(name, _available_voices(folder)))
    table = kokoro.VoiceTable(_read(path, "voice"), name)
    _VOICES[path] = table
    return table


def _tensor(dims: List[int], ty: tensors.TensorType, data: bytes) -> tensors.Tensor:
    try:
        return tensors.Tensor.create(dims, ty, data)
    except Err as e:
        raise _internal(f"cannot create a tensor {dims}: {e.value.message}") from None


def _items(text: str, finish_reason: Optional[str], voice: str, table: kokoro.VoiceTable,
           vocab: Dict[str, int], speed: bytes) -> List[Item]:
    phonemes = g2p.phonemize(text)
    pieces = [p for p in kokoro.split_phonemes(phonemes) if g2p.speakable(p)]
    items = []
    for k, piece in enumerate(pieces):
        ids = kokoro.to_ids(piece, vocab)
        dims, data = kokoro.tokens_tensor(ids)
        last = k + 1 == len(pieces)
        items.append(Item(
            text=text if k == 0 else "",
            token_ids=[],
            tensors=[
                ("tokens", _tensor(dims, tensors.TensorType.I64, data)),
                ("style", _tensor([1, kokoro.STYLE_DIM], tensors.TensorType.FP32, table.style(len(ids)))),
                ("speed", _tensor([1], tensors.TensorType.FP32, speed)),
            ],
            json=json.dumps({"phonemes": piece, "voice": voice}, ensure_ascii=False, separators=(",", ":")),
            finish_reason=finish_reason if last else None,
        ))
    return items


class Processor(exports.Processor):
    def process(self, request: Request, sources: List[Source]) -> List[Item]:
        try:
            voice, speed = kokoro.parse_params(request.params, config.get("voice") or kokoro.DEFAULT_VOICE)
        except kokoro.ParamError as e:
            raise _invalid(str(e)) from None
        if sources:
            texts = [(item.text, item.finish_reason) for source in sources for item in source.outputs
                     if item.text]
        elif request.prompt is not None:
            texts = [(request.prompt, None)]
        else:
            raise _invalid("this stage needs text: a prompt, or source items with text")
        try:
            table = _voice(config.get("voices") or DEFAULT_VOICES, voice)
            vocab = _vocab(config.get("vocab") or DEFAULT_VOCAB)
            speed_data = kokoro.speed_tensor(speed)[1]
            items: List[Item] = []
            for text, finish_reason in texts:
                items.extend(_items(text, finish_reason, voice, table, vocab, speed_data))
            return items
        except kokoro.KokoroError as e:
            raise _internal(str(e)) from None
        except Err:
            raise
        except Exception as e:  # a bug: fail the request as `internal` rather than trap the instance
            raise _internal(f"unexpected {type(e).__name__}: {e}") from None
