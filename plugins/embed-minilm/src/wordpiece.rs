//! Tokenising for BERT-style uncased WordPiece vocabularies: ASCII text takes a direct path, everything else
//! the general `tokenizers` pipeline, with identical results.
//!
//! The general pipeline keeps an alignment entry per character through normalising and splitting and builds a
//! full `Encoding` (tokens as strings, offsets, word ids) that the adapter never reads; for a short sentence
//! that bookkeeping, not the vocabulary lookups, is most of the time. ASCII needs none of it: lowercasing,
//! removing control characters and splitting at whitespace and punctuation are byte operations, and the greedy
//! longest-match-first WordPiece search can look pieces up by slice without building strings.
//!
//! The direct path is only taken for a tokenizer whose pipeline it reproduces (BERT normaliser with cleaning and
//! lowercasing, BERT pre-tokenizer, WordPiece model, no padding, right truncation without stride), and only after
//! it has produced the same ids as the general pipeline on a set of probe texts when loaded. A text holding the
//! first character of an added token (`[CLS]`, `[MASK]`, ...), which the general pipeline matches before
//! normalising, goes the general way.

use std::collections::HashMap;

use foldhash::fast::FixedState;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::utils::truncation::truncate_encodings;
use tokenizers::{Model, PostProcessor, TruncationDirection, TruncationParams};

/// One tokenised text: its ids, special tokens included, cut at the truncation length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Tokens the text has before truncation, special tokens included: more than `ids.len()` when it was cut.
    pub untruncated: usize,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn truncated(&self) -> bool {
        self.untruncated > self.ids.len()
    }
}

/// A tokenizer loaded from `tokenizer.json`, with the direct ASCII path when it applies.
pub struct Tokenizer {
    /// The general pipeline with its truncation taken out: a text is encoded whole once, counted, then cut
    /// (the overflowing pieces of an encoding cut by the pipeline itself do not add up to the whole text).
    general: tokenizers::Tokenizer,
    truncation: Option<TruncationParams>,
    direct: Option<Direct>,
}

impl Tokenizer {
    /// Wraps `general`, set up for single texts: no padding, truncation at the model's input limit if any.
    pub fn new(mut general: tokenizers::Tokenizer) -> Self {
        let truncation = general.get_truncation().cloned();
        // Turning truncation off validates nothing, so it cannot fail.
        let _ = general.with_truncation(None);
        let mut tokenizer = Self { general, truncation, direct: None };
        tokenizer.direct = Direct::for_pipeline(&tokenizer.general, tokenizer.truncation.as_ref())
            .filter(|d| d.agrees_with(&tokenizer));
        tokenizer
    }

    /// Whether ASCII texts take the direct path.
    pub fn direct(&self) -> bool {
        self.direct.is_some()
    }

    pub fn encode(&self, text: &str) -> tokenizers::Result<Encoded> {
        match self.direct.as_ref().and_then(|d| d.encode(text)) {
            Some(encoded) => Ok(encoded),
            None => self.encode_general(text),
        }
    }

    /// The general pipeline's encoding: the text without special tokens, cut to leave room for them as the
    /// pipeline's own truncation does, then post-processed.
    fn encode_general(&self, text: &str) -> tokenizers::Result<Encoded> {
        let encoding = self.general.encode(text, false)?;
        let specials = self.general.get_post_processor().map_or(0, |p| p.added_tokens(false));
        let untruncated = encoding.len() + specials;
        let encoding = match &self.truncation {
            Some(t) => {
                let room = TruncationParams { max_length: t.max_length.saturating_sub(specials), ..*t };
                truncate_encodings(encoding, None, &room)?.0
            }
            None => encoding,
        };
        let encoding = self.general.post_process(encoding, None, true)?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), untruncated })
    }
}

/// The direct path: the vocabulary split into word-initial and continuation pieces, looked up by byte slice.
struct Direct {
    initial: HashMap<Box<[u8]>, u32, FixedState>,
    /// Continuation pieces without their prefix (`##`).
    continuation: HashMap<Box<[u8]>, u32, FixedState>,
    /// Longest piece of each map, in bytes: no longer slice can match.
    longest_initial: usize,
    longest_continuation: usize,
    unk: u32,
    cls: u32,
    sep: u32,
    max_word_chars: usize,
    /// Most ids in one text, special tokens included.
    max_len: usize,
    /// Bytes (in either case) that may start an added token: texts holding one take the general path.
    added_starts: [bool; 256],
}

impl Direct {
    /// The direct path for `general`'s pipeline, if it is the one this path reproduces.
    fn for_pipeline(general: &tokenizers::Tokenizer, truncation: Option<&TruncationParams>) -> Option<Self> {
        match general.get_normalizer() {
            Some(NormalizerWrapper::BertNormalizer(n)) if n.clean_text && n.lowercase => {}
            _ => return None,
        }
        if !matches!(general.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_))) {
            return None;
        }
        if general.get_padding().is_some() {
            return None;
        }
        let max_len = match truncation {
            None => usize::MAX,
            Some(t) if t.stride == 0 && matches!(t.direction, TruncationDirection::Right) => t.max_length,
            Some(_) => return None,
        };
        let ModelWrapper::WordPiece(model) = general.get_model() else { return None };
        let prefix = model.continuing_subword_prefix.as_bytes();
        let unk = model.token_to_id(&model.unk_token)?;
        // `[CLS] [SEP]` is what the post-processor makes of an empty text.
        let ends = general.encode("", true).ok()?;
        let [cls, sep] = ends.get_ids() else { return None };
        let mut added_starts = [false; 256];
        for token in general.get_added_vocabulary().get_vocab().keys() {
            if let Some(&b) = token.as_bytes().first() {
                added_starts[usize::from(b.to_ascii_lowercase())] = true;
                added_starts[usize::from(b.to_ascii_uppercase())] = true;
            }
        }
        let mut initial = HashMap::with_hasher(FixedState::default());
        let mut continuation = HashMap::with_hasher(FixedState::default());
        let (mut longest_initial, mut longest_continuation) = (0, 0);
        for (piece, id) in model.get_vocab() {
            let bytes = piece.as_bytes();
            match bytes.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
                Some(rest) => {
                    longest_continuation = longest_continuation.max(rest.len());
                    continuation.insert(rest.into(), id);
                }
                None => {
                    longest_initial = longest_initial.max(bytes.len());
                    initial.insert(bytes.into(), id);
                }
            }
        }
        Some(Self {
            initial,
            continuation,
            longest_initial,
            longest_continuation,
            unk,
            cls: *cls,
            sep: *sep,
            max_word_chars: model.max_input_chars_per_word,
            max_len,
            added_starts,
        })
    }

    /// Whether this path gives the general pipeline's ids on texts that exercise each of its rules.
    fn agrees_with(&self, tokenizer: &Tokenizer) -> bool {
        let long_word = "pneumonoultramicroscopicsilicovolcanoconiosis".repeat(3);
        let long_text = "the quick brown fox jumps over the lazy dog. ".repeat(60);
        let probes = [
            "",
            "A man is eating food.",
            "Hello, World! It's 3:45pm -- isn't it?",
            "tabs\tnew\nlines\r\nand  double  spaces ",
            "control\u{1}chars\u{7f}vanish\u{0}here \u{b}and\u{c}there",
            "CamelCase UPPER lower MiXeD snake_case kebab-case e.mail@host.org",
            "unknownish qzxjkvw wordpieces: tokenization embeddings unbelievably",
            "~`!@#$%^&*()_+-={}|\\:\";'<>?,./",
            "1234567890 3.14159 1e-9 0x1f",
            long_word.as_str(),
            long_text.as_str(),
        ];
        probes.iter().all(|text| {
            let Some(direct) = self.encode(text) else { return false };
            tokenizer.encode_general(text).is_ok_and(|general| general == direct)
        })
    }

    /// Tokenises `text` if it is ASCII without an added token's first character; `None` sends it the general way.
    fn encode(&self, text: &str) -> Option<Encoded> {
        let bytes = text.as_bytes();
        if !bytes.is_ascii() || bytes.iter().any(|&b| self.added_starts[usize::from(b)]) {
            return None;
        }
        let mut ids = Vec::with_capacity(bytes.len() / 3 + 2);
        ids.push(self.cls);
        let mut word = Vec::with_capacity(32);
        for &b in bytes {
            match b {
                // Cleaning turns these into spaces; the pre-tokenizer splits there.
                b' ' | b'\t' | b'\n' | b'\r' => self.flush(&mut word, &mut ids),
                // Cleaning removes the other control characters (and NUL) without splitting the word.
                0..=0x1f | 0x7f => {}
                _ if b.is_ascii_punctuation() => {
                    self.flush(&mut word, &mut ids);
                    word.push(b);
                    self.flush(&mut word, &mut ids);
                }
                _ => word.push(b.to_ascii_lowercase()),
            }
        }
        self.flush(&mut word, &mut ids);
        let untruncated = ids.len() + 1;
        if untruncated > self.max_len {
            ids.truncate(self.max_len.saturating_sub(1).max(1));
        }
        ids.push(self.sep);
        Some(Encoded { ids, untruncated })
    }

    /// Appends the WordPiece ids of `word` (greedy longest match first; a word with an unmatched rest is one
    /// unknown token) and clears it.
    fn flush(&self, word: &mut Vec<u8>, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        let first = ids.len();
        if word.len() > self.max_word_chars {
            ids.push(self.unk);
            word.clear();
            return;
        }
        let mut start = 0;
        while start < word.len() {
            let (map, longest) = if start == 0 {
                (&self.initial, self.longest_initial)
            } else {
                (&self.continuation, self.longest_continuation)
            };
            let mut end = word.len().min(start + longest);
            let found = loop {
                if end == start {
                    break None;
                }
                if let Some(&id) = map.get(&word[start..end]) {
                    break Some(id);
                }
                end -= 1;
            };
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk);
                    break;
                }
            }
        }
        word.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped all-MiniLM-L6-v2 tokenizer, as `cargo xtask setup` installs it, set up as the adapter does.
    fn minilm(max_length: usize) -> tokenizers::Tokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.setup/models/all-minilm-l6-v2/tokenizer.json");
        let mut t = tokenizers::Tokenizer::from_file(&path)
            .unwrap_or_else(|e| panic!("{} (run `cargo xtask setup` first): {e}", path.display()));
        t.with_padding(None);
        t.with_truncation(Some(tokenizers::TruncationParams { max_length, ..Default::default() })).unwrap();
        t
    }

    /// Texts from a fixed pseudo-random generator over the characters the direct path treats specially.
    fn corpus() -> Vec<String> {
        let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      .,;:!?'\"-_()/\\@#$%&*+=<>{}|~`^\t\n\r\u{1}\u{7f}\u{0}\u{b}"
            .chars()
            .collect();
        let words = ["the", "embedding", "tokenization", "unbelievable", "hyper", "##ing", "qzx", "running", "a"];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        (0..3000)
            .map(|_| {
                let len = next(120);
                (0..len)
                    .map(|_| if next(3) == 0 { format!("{} ", words[next(words.len())]) } else { alphabet[next(alphabet.len())].to_string() })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_direct_path_gives_the_general_pipelines_ids_and_counts() {
        let tokenizer = Tokenizer::new(minilm(256));
        let cut = minilm(256);
        let whole = {
            let mut t = minilm(256);
            t.with_truncation(None).unwrap();
            t
        };
        assert!(tokenizer.direct(), "the MiniLM tokenizer must take the direct path");
        let mut texts = corpus();
        texts.extend([
            "A man is eating food.".to_string(),
            "word ".repeat(400),
            "x".repeat(101),
            "x".repeat(100),
            "Café naïve — unicode goes the general way".to_string(),
            "special [MASK] and [CLS] tokens".to_string(),
            "\u{7f}\u{1}".to_string(),
        ]);
        let mut direct = 0;
        for text in &texts {
            let expected = tokenizer.encode_general(text).unwrap();
            assert_eq!(tokenizer.encode(text).unwrap(), expected, "{text:?}");
            assert_eq!(expected.ids, cut.encode(text.as_str(), true).unwrap().get_ids(), "{text:?}");
            assert_eq!(expected.untruncated, whole.encode(text.as_str(), true).unwrap().len(), "{text:?}");
            direct += usize::from(tokenizer.direct.as_ref().is_some_and(|d| d.encode(text).is_some()));
        }
        assert!(direct > 2900, "most of the corpus is ASCII without brackets: {direct} took the direct path");
        let long = tokenizer.encode(&"word ".repeat(400)).unwrap();
        assert_eq!((long.len(), long.untruncated, long.truncated()), (256, 402, true));
    }

    #[test]
    fn a_pipeline_the_direct_path_does_not_reproduce_goes_the_general_way() {
        let mut general = minilm(256);
        general.with_padding(Some(tokenizers::PaddingParams::default()));
        assert!(!Tokenizer::new(general).direct(), "padding is not reproduced");
        let mut general = minilm(256);
        general
            .with_truncation(Some(tokenizers::TruncationParams { max_length: 16, stride: 4, ..Default::default() }))
            .unwrap();
        assert!(!Tokenizer::new(general).direct(), "a stride is not reproduced");
        let mut general = minilm(256);
        general.with_normalizer(None::<NormalizerWrapper>).unwrap();
        assert!(!Tokenizer::new(general).direct(), "without the BERT normaliser nothing is lowercased");
    }
}
