//! Kokoro's side of the stage: phonemes -> token ids, pieces of at most 510 ids, style rows, params. The port
//! of plugins/python/phonemizer/kokoro.py: pieces and rows must match it exactly.

use std::collections::HashMap;
use std::fmt;

/// The most phoneme ids one Kokoro run takes (its context is 512 with the two boundary zeros).
pub const MAX_IDS: usize = 510;
pub const STYLE_DIM: usize = 256;
pub const DEFAULT_VOICE: &str = "jf_alpha";
const MIN_SPEED: f64 = 0.25;
const MAX_SPEED: f64 = 4.0;
const SENTENCE_ENDS: &str = ".!?…";
const CLAUSE_ENDS: &str = ",;:—";
const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Kokoro's data files are not what this stage expects: the operator's fault, never the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KokoroError {
    Vocab(String),
    Voice { name: String, problem: String },
}

impl fmt::Display for KokoroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vocab(problem) => write!(f, "vocab {problem}"),
            Self::Voice { name, problem } => write!(f, "voice `{name}`: {problem}"),
        }
    }
}

impl std::error::Error for KokoroError {}

/// The request's params are wrong: the client's fault (`invalid-input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    NotAnObject,
    VoiceNotAString,
    SpeedNotANumber,
    SpeedOutOfRange,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAnObject => "params are not a JSON object",
            Self::VoiceNotAString => "`voice` must be a string",
            Self::SpeedNotANumber => "`speed` must be a number",
            Self::SpeedOutOfRange => "`speed` must be between 0.25 and 4.0",
        })
    }
}

impl std::error::Error for ParamError {}

/// The request's params (a JSON object; empty means {}) -> (voice, speed), as kokoro.py `parse_params`.
pub fn parse_params(doc: &str, default_voice: &str) -> Result<(String, f64), ParamError> {
    let params: serde_json::Value = if doc.trim().is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(doc).map_err(|_| ParamError::NotAnObject)?
    };
    let params = params.as_object().ok_or(ParamError::NotAnObject)?;
    let voice = match params.get("voice") {
        None | Some(serde_json::Value::Null) => default_voice.to_string(),
        Some(serde_json::Value::String(v)) => v.clone(),
        Some(_) => return Err(ParamError::VoiceNotAString),
    };
    let speed = match params.get("speed") {
        None | Some(serde_json::Value::Null) => 1.0,
        Some(serde_json::Value::Number(n)) => n.as_f64().ok_or(ParamError::SpeedOutOfRange)?,
        Some(_) => return Err(ParamError::SpeedNotANumber),
    };
    if !(speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&speed)) {
        return Err(ParamError::SpeedOutOfRange);
    }
    Ok((voice, speed))
}

/// Whether a client's voice name is a plain file stem: nothing else may reach the file system.
pub fn is_voice_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub fn unknown_voice(name: &str, available: &[String]) -> String {
    let list = if available.is_empty() { "(none)".to_string() } else { available.join(", ") };
    format!("unknown voice `{name}`; available: {list}")
}

/// vocab.json ({"vocab": {symbol: id}}) -> {symbol: id}.
pub fn parse_vocab(doc: &str) -> Result<HashMap<char, i64>, KokoroError> {
    let value: serde_json::Value =
        serde_json::from_str(doc).map_err(|e| KokoroError::Vocab(format!("is not valid JSON: {e}")))?;
    let bad = || KokoroError::Vocab("has no `vocab` object of symbol -> integer id".to_string());
    let vocab = value.get("vocab").and_then(serde_json::Value::as_object).ok_or_else(bad)?;
    let mut out = HashMap::with_capacity(vocab.len());
    for (symbol, id) in vocab {
        let id = id.as_i64().ok_or_else(bad)?;
        let mut chars = symbol.chars();
        // Every symbol the phonemiser emits is one character; a longer key could never match one.
        if let (Some(c), None) = (chars.next(), chars.next()) {
            out.insert(c, id);
        }
    }
    Ok(out)
}

/// Phonemes -> token ids, one per character; a character outside the vocabulary is skipped.
pub fn to_ids(phonemes: &str, vocab: &HashMap<char, i64>) -> Vec<i64> {
    phonemes.chars().filter_map(|c| vocab.get(&c).copied()).collect()
}

fn cut(text: &[char], limit: usize) -> usize {
    for marks in [SENTENCE_ENDS, CLAUSE_ENDS] {
        for k in (1..=limit).rev() {
            if marks.contains(text[k - 1]) && text[k] == ' ' {
                return k;
            }
        }
    }
    (1..=limit).rev().find(|&k| text[k] == ' ').unwrap_or(limit)
}

/// Cuts phonemes into pieces of at most `limit` characters, at sentence or clause punctuation, then at
/// spaces (kokoro.py `split_phonemes`).
pub fn split_phonemes(phonemes: &str, limit: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let all: Vec<char> = phonemes.trim_matches(' ').chars().collect();
    let mut rest: &[char] = &all;
    while rest.len() > limit {
        let k = cut(rest, limit);
        let piece: String = rest[..k].iter().collect();
        let piece = piece.trim_end_matches(' ');
        if !piece.is_empty() {
            pieces.push(piece.to_string());
        }
        rest = &rest[k..];
        while rest.first() == Some(&' ') {
            rest = &rest[1..];
        }
    }
    if !rest.is_empty() {
        pieces.push(rest.iter().collect());
    }
    pieces
}

/// The `tokens` input: dimensions [1, n + 2] and little-endian i64 data (0, ids..., 0).
pub fn tokens_tensor(ids: &[i64]) -> (Vec<u32>, Vec<u8>) {
    let mut data = Vec::with_capacity((ids.len() + 2) * 8);
    data.extend_from_slice(&0i64.to_le_bytes());
    for id in ids {
        data.extend_from_slice(&id.to_le_bytes());
    }
    data.extend_from_slice(&0i64.to_le_bytes());
    (vec![1, (ids.len() + 2) as u32], data)
}

/// One voice's style table from its .npy file: f32 little-endian, C order, [rows, 1, 256].
pub struct VoiceTable {
    blob: Vec<u8>,
    data_start: usize,
    rows: usize,
}

/// The value after `'key':` in a .npy header dict, up to the next top-level comma or the closing brace.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}':"))? + key.len() + 3;
    let rest = header[at..].trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

impl VoiceTable {
    pub fn parse(blob: Vec<u8>, name: &str) -> Result<Self, KokoroError> {
        let err = |problem: String| KokoroError::Voice { name: name.to_string(), problem };
        if blob.len() < 10 || !blob.starts_with(NPY_MAGIC) {
            return Err(err("not a .npy file".to_string()));
        }
        let (header_len, start) = if blob[6] == 1 {
            (usize::from(u16::from_le_bytes([blob[8], blob[9]])), 10)
        } else {
            let b = blob.get(8..12).ok_or_else(|| err("not a .npy file".to_string()))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        };
        let header = blob
            .get(start..start + header_len)
            .map(|h| h.iter().map(|&b| char::from(b)).collect::<String>())
            .ok_or_else(|| err("unreadable .npy header".to_string()))?;
        let shape: Option<Vec<usize>> = header_value(&header, "shape").and_then(|s| {
            s.trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| d.parse().ok())
                .collect()
        });
        let fits = header_value(&header, "descr") == Some("'<f4'")
            && header_value(&header, "fortran_order") == Some("False")
            && shape.as_ref().is_some_and(|s| {
                s.len() >= 2 && s[s.len() - 1] == STYLE_DIM && s[1..s.len() - 1].iter().all(|&d| d == 1) && s[0] >= 1
            });
        let rows = match (fits, shape) {
            (true, Some(s)) => s[0],
            _ => return Err(err(format!("expected a little-endian f32 [rows, 1, {STYLE_DIM}] table, got {header}"))),
        };
        let data_start = start + header_len;
        if blob.len() < data_start + rows * STYLE_DIM * 4 {
            return Err(err(format!("the file is shorter than its [{rows}, 1, {STYLE_DIM}] table")));
        }
        Ok(Self { blob, data_start, rows })
    }

    /// The style row for an input of `n_ids` phoneme ids (row n - 1, clamped), as f32 [1, 256] bytes.
    pub fn style(&self, n_ids: usize) -> &[u8] {
        let row = n_ids.clamp(1, self.rows) - 1;
        let offset = self.data_start + row * STYLE_DIM * 4;
        &self.blob[offset..offset + STYLE_DIM * 4]
    }
}
