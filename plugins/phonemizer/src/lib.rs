//! Speech pipeline, the Kokoro stage's input processor: English text -> Kokoro TTS inputs. The Rust twin of
//! plugins/python/phonemizer (same phonemes, same items), so an operator can swap one for the other.
//!
//! `process(request, sources)` phonemises every source item with non-empty text (the request's prompt when
//! the stage has no source) with [`g2p::phonemize`] (misaki-style American English) and cuts the phonemes
//! into pieces of at most 510 ids. Per piece it returns one item with tensors `tokens` i64 [1, n + 2]
//! (0, ids..., 0), `style` f32 [1, 256] (row n - 1 of the voice's table) and `speed` f32 [1]; `text` is the
//! source text on a source item's first piece and "" on later ones, `json` is {"phonemes", "voice"}, and the
//! source's `finish_reason` rides on its last piece. Text with nothing speakable produces no item.
//!
//! Params (JSON object): `voice` (default: config `voice`, else "jf_alpha"), `speed` (0.25..4.0, default 1).
//! Config: `vocab` (default /data/vocab.json), `voices` (default /data/voices, one NAME.npy per voice).
//!
//! Modules: [`g2p`] (text -> phonemes, with the embedded dictionary) and [`kokoro`] (ids, pieces, style
//! rows, params) compile for the host too (`phonemizer::phonemize` is callable natively, for tests and
//! benchmarks); `component` is the WIT glue, built for wasm32 only (a native cdylib cannot export the
//! component's `ns:pkg/iface@version#func` symbols).

pub mod g2p;
pub mod kokoro;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component;

pub use g2p::phonemize;

#[cfg(test)]
mod tests;
