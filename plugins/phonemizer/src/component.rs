//! The `pipeline-processor` glue: params, data files (cached per instance), items. See the crate doc.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::{g2p, kokoro};
use exports::omnihost::plugin::processor::{Guest, Item, PluginError, Request, Source};
use omnihost::plugin::config;
use omnihost::plugin::tensors::{Tensor, TensorType};

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "pipeline-processor",
});

const DEFAULT_VOCAB: &str = "/data/vocab.json";
const DEFAULT_VOICES: &str = "/data/voices";

thread_local! {
    // Parsed data files by path. Instances are pooled and reused, so these survive between calls; a swap
    // starts from a fresh instance.
    static VOCABS: RefCell<HashMap<String, Rc<HashMap<char, i64>>>> = RefCell::new(HashMap::new());
    static VOICES: RefCell<HashMap<String, Rc<kokoro::VoiceTable>>> = RefCell::new(HashMap::new());
}

fn internal(message: impl std::fmt::Display) -> PluginError {
    PluginError::Internal(format!("phonemizer: {message}"))
}

fn invalid(message: impl std::fmt::Display) -> PluginError {
    PluginError::InvalidInput(format!("phonemizer: {message}"))
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|e| internal(format!("cannot read the {what} {path}: {e}")))
}

fn vocab(path: &str) -> Result<Rc<HashMap<char, i64>>, PluginError> {
    if let Some(v) = VOCABS.with(|c| c.borrow().get(path).cloned()) {
        return Ok(v);
    }
    let doc = String::from_utf8(read(path, "Kokoro vocab")?).map_err(|_| internal(format!("{path} is not UTF-8")))?;
    let parsed = Rc::new(kokoro::parse_vocab(&doc).map_err(internal)?);
    VOCABS.with(|c| c.borrow_mut().insert(path.to_string(), parsed.clone()));
    Ok(parsed)
}

fn available_voices(folder: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".npy")).map(str::to_string))
        .collect();
    names.sort();
    names
}

fn voice(folder: &str, name: &str) -> Result<Rc<kokoro::VoiceTable>, PluginError> {
    let path = format!("{folder}/{name}.npy");
    if let Some(v) = VOICES.with(|c| c.borrow().get(&path).cloned()) {
        return Ok(v);
    }
    if !kokoro::is_voice_name(name) || !std::path::Path::new(&path).is_file() {
        return Err(invalid(kokoro::unknown_voice(name, &available_voices(folder))));
    }
    let table = Rc::new(kokoro::VoiceTable::parse(read(&path, "voice")?, name).map_err(internal)?);
    VOICES.with(|c| c.borrow_mut().insert(path, table.clone()));
    Ok(table)
}

fn tensor(dims: &[u32], ty: TensorType, data: &[u8]) -> Result<Tensor, PluginError> {
    Tensor::create(dims, ty, data).map_err(|e| internal(format!("cannot create a tensor {dims:?}: {}", e.message)))
}

#[derive(serde::Serialize)]
struct PieceJson<'a> {
    phonemes: &'a str,
    voice: &'a str,
}

struct Speech<'a> {
    voice: &'a str,
    table: &'a kokoro::VoiceTable,
    vocab: &'a HashMap<char, i64>,
    speed: [u8; 4],
}

fn items(text: String, finish_reason: Option<String>, speech: &Speech<'_>) -> Result<Vec<Item>, PluginError> {
    let phonemes = g2p::phonemize(&text);
    let pieces: Vec<String> =
        kokoro::split_phonemes(&phonemes, kokoro::MAX_IDS).into_iter().filter(|p| g2p::speakable(p)).collect();
    let count = pieces.len();
    let mut out = Vec::with_capacity(count);
    for (k, piece) in pieces.iter().enumerate() {
        let ids = kokoro::to_ids(piece, speech.vocab);
        let (dims, data) = kokoro::tokens_tensor(&ids);
        let json = serde_json::to_string(&PieceJson { phonemes: piece, voice: speech.voice })
            .map_err(|e| internal(format!("cannot write the item's json: {e}")))?;
        out.push(Item {
            text: Some(if k == 0 { text.clone() } else { String::new() }),
            token_ids: Vec::new(),
            tensors: vec![
                ("tokens".to_string(), tensor(&dims, TensorType::I64, &data)?),
                ("style".to_string(), tensor(&[1, kokoro::STYLE_DIM as u32], TensorType::Fp32, speech.table.style(ids.len()))?),
                ("speed".to_string(), tensor(&[1], TensorType::Fp32, &speech.speed)?),
            ],
            json: Some(json),
            finish_reason: if k + 1 == count { finish_reason.clone() } else { None },
        });
    }
    Ok(out)
}

struct Component;

impl Guest for Component {
    fn process(request: Request, sources: Vec<Source>) -> Result<Vec<Item>, PluginError> {
        let default_voice = config::get("voice").filter(|v| !v.is_empty());
        let (voice_name, speed) =
            kokoro::parse_params(&request.params, default_voice.as_deref().unwrap_or(kokoro::DEFAULT_VOICE))
                .map_err(invalid)?;
        let texts: Vec<(String, Option<String>)> = if !sources.is_empty() {
            sources
                .into_iter()
                .flat_map(|s| s.outputs)
                .filter_map(|item| item.text.filter(|t| !t.is_empty()).map(|t| (t, item.finish_reason)))
                .collect()
        } else if let Some(prompt) = request.prompt {
            vec![(prompt, None)]
        } else {
            return Err(invalid("this stage needs text: a prompt, or source items with text"));
        };
        let folder = config::get("voices").filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_VOICES.to_string());
        let table = voice(&folder, &voice_name)?;
        let vocab_path = config::get("vocab").filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_VOCAB.to_string());
        let vocab = vocab(&vocab_path)?;
        let speech = Speech { voice: &voice_name, table: &table, vocab: &vocab, speed: (speed as f32).to_le_bytes() };
        let mut out = Vec::new();
        for (text, finish_reason) in texts {
            out.extend(items(text, finish_reason, &speech)?);
        }
        Ok(out)
    }
}

export!(Component);
