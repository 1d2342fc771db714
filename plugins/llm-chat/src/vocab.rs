//! Token id -> bytes, built once per instance, so detokenising a step is a table look-up instead of a call into
//! the tokenizer's decoder (which cannot decode one token of a multi-byte character without mangling it).
//!
//! Byte-level BPE vocabularies (GPT-2 and its descendants) spell every byte as a printable character; this
//! undoes that mapping exactly as the tokenizer's `ByteLevel` decoder does, token by token.

use std::collections::HashSet;

use tokenizers::{DecoderWrapper, Tokenizer};

/// Bytes of every token id, flat so the table is two allocations rather than 49k.
#[derive(Debug)]
pub struct Vocab {
    /// `offsets[id]..offsets[id + 1]` is the token's range in `data`.
    offsets: Vec<u32>,
    data: Vec<u8>,
    /// Special tokens are dropped from the text (as `decode(skip_special_tokens = true)` drops them) but keep
    /// their bytes for log-probabilities.
    special: Vec<bool>,
    /// False when the tokenizer's decoder is not `ByteLevel`: tokens then pass through as their UTF-8.
    pub byte_level: bool,
}

/// GPT-2's `bytes_to_unicode`, inverted: the byte a vocabulary character stands for.
fn char_to_byte() -> [Option<u8>; 324] {
    let mut table = [None; 324];
    let mut next = 256usize;
    for b in 0u16..=255 {
        let printable = (u16::from(b'!')..=u16::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            usize::from(b)
        } else {
            next += 1;
            next - 1
        };
        table[c] = Some(b as u8);
    }
    table
}

/// One token string to bytes: every character mapped back, or (as the ByteLevel decoder does when any
/// character is outside the map, e.g. an added token with a space) the string's own UTF-8.
fn token_bytes(token: &str, map: &[Option<u8>; 324], out: &mut Vec<u8>) {
    let start = out.len();
    for c in token.chars() {
        match map.get(c as usize).copied().flatten() {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

impl Vocab {
    /// Builds the table for ids `0..size`; ids the tokenizer does not know (padding rows of the logits) are
    /// empty.
    pub fn from_tokenizer(tokenizer: &Tokenizer, size: usize) -> Self {
        let byte_level = matches!(tokenizer.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        let map = char_to_byte();
        // The tokenizer decides "special" by the token's string, not its id; so does this.
        let specials: HashSet<String> =
            tokenizer.get_added_tokens_decoder().into_values().filter(|t| t.special).map(|t| t.content).collect();
        let size = size.max(tokenizer.get_vocab_size(true));
        let mut offsets = Vec::with_capacity(size + 1);
        let mut data = Vec::with_capacity(size * 6);
        let mut special = Vec::with_capacity(size);
        offsets.push(0);
        for id in 0..size {
            let token = tokenizer.id_to_token(id as u32);
            if let Some(t) = &token {
                if byte_level {
                    token_bytes(t, &map, &mut data);
                } else {
                    data.extend_from_slice(t.as_bytes());
                }
            }
            special.push(token.is_some_and(|t| specials.contains(&t)));
            offsets.push(data.len() as u32);
        }
        Self { offsets, data, special, byte_level }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.special.len()
    }

    /// The token's bytes (a special token's content), empty for an unknown id.
    pub fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.data.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// What the token adds to the generated text: nothing for a special token.
    pub fn text_bytes(&self, id: u32) -> &[u8] {
        if self.special.get(id as usize).copied().unwrap_or(false) { &[] } else { self.bytes(id) }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A byte-level BPE tokenizer shaped like SmolLM2's: ids 0..=2 special, then the 256 byte characters,
    /// then a few merges (so some tokens span several bytes, some split a character).
    pub fn tiny_tokenizer() -> Tokenizer {
        let map = char_to_byte();
        let mut byte_char = ['\0'; 256];
        for (c, b) in map.iter().enumerate() {
            if let Some(b) = b {
                byte_char[*b as usize] = char::from_u32(c as u32).unwrap();
            }
        }
        let mut vocab = serde_json::Map::new();
        for (i, s) in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().enumerate() {
            vocab.insert(s.to_string(), (i as u32).into());
        }
        for (b, c) in byte_char.iter().enumerate() {
            vocab.insert(c.to_string(), (3 + b as u32).into());
        }
        // "he", "ll", "hell", "hello", "Ġw" and the first two bytes of "你" (E4 BD) as one token.
        let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w")];
        let cjk = format!("{}{}", byte_char[0xE4], byte_char[0xBD]);
        let mut merge_list: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
        merge_list.push(format!("{} {}", byte_char[0xE4], byte_char[0xBD]));
        let mut next = 259u32;
        for (a, b) in merges {
            vocab.insert(format!("{a}{b}"), next.into());
            next += 1;
        }
        vocab.insert(cjk, next.into());
        let added: Vec<serde_json::Value> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                                   "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": merge_list}
        });
        Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let map = char_to_byte();
        let mut seen = [false; 256];
        for b in map.iter().flatten() {
            assert!(!seen[*b as usize]);
            seen[*b as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(map['Ġ' as usize], Some(b' '));
        assert_eq!(map['Ċ' as usize], Some(b'\n'));
    }

    #[test]
    fn table_matches_the_tokenizer_decoder() {
        let tok = tiny_tokenizer();
        let vocab = Vocab::from_tokenizer(&tok, 300);
        assert!(vocab.byte_level);
        assert_eq!(vocab.len(), 300);
        assert_eq!(vocab.bytes(1), b"<|im_start|>");
        assert_eq!(vocab.text_bytes(1), b"");
        assert_eq!(vocab.bytes(3 + u32::from(b' ')), b" ");
        assert_eq!(vocab.bytes(299), b"");
        let ids = tok.encode("hello world 你好", false).unwrap().get_ids().to_vec();
        let mut joined = Vec::new();
        for id in &ids {
            joined.extend_from_slice(vocab.text_bytes(*id));
        }
        assert_eq!(String::from_utf8(joined).unwrap(), tok.decode(&ids, true).unwrap());
    }
}
