//! What the scripted model says for a request: the configured deltas, cut by `max-tokens` and stop strings.
//! Pure, so the rules are tested natively; `lib.rs` only streams the plan into the sink.

/// Why the script ended, in the contract's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The script ran out, or a stop string was reached.
    Stop,
    /// `max-tokens` cut the script short.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The deltas to push, in order, and the finish reason if every push is accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub deltas: Vec<String>,
    pub finish: Finish,
}

/// Parses the `deltas` config value: a JSON array of strings.
pub fn parse_deltas(json: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(json).map_err(|e| format!("`deltas` must be a JSON array of strings: {e}"))
}

/// Whitespace-separated words: the scripted model's notion of a token.
pub fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

/// Each delta counts as one token. A stop string may span deltas; the text is cut at its earliest occurrence
/// and the stop string itself is never emitted.
pub fn plan(deltas: &[String], max_tokens: Option<u32>, stops: &[String]) -> Plan {
    let take = max_tokens.map_or(deltas.len(), |m| deltas.len().min(m as usize));
    let truncated = take < deltas.len();
    let taken = &deltas[..take];
    let text = taken.concat();
    let cut = stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min();
    let Some(cut) = cut else {
        let finish = if truncated { Finish::Length } else { Finish::Stop };
        return Plan { deltas: taken.to_vec(), finish };
    };
    let mut out = Vec::new();
    let mut start = 0;
    for d in taken {
        let end = start + d.len();
        if cut < end {
            // A stop string starts on a character boundary of the whole text, hence of this delta too.
            let head = d.get(..cut - start).unwrap_or_default();
            if !head.is_empty() {
                out.push(head.to_string());
            }
            break;
        }
        out.push(d.clone());
        start = end;
    }
    Plan { deltas: out, finish: Finish::Stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plays_the_whole_script() {
        let d = strings(&["Hello", " world."]);
        assert_eq!(plan(&d, None, &[]), Plan { deltas: d.clone(), finish: Finish::Stop });
        assert_eq!(plan(&d, Some(2), &[]), Plan { deltas: d.clone(), finish: Finish::Stop });
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let d = strings(&["Hello", " world."]);
        assert_eq!(plan(&d, Some(1), &[]), Plan { deltas: strings(&["Hello"]), finish: Finish::Length });
        assert_eq!(plan(&d, Some(0), &[]), Plan { deltas: vec![], finish: Finish::Length });
    }

    #[test]
    fn stop_strings_cut_across_deltas() {
        let d = strings(&["Hello", " world."]);
        assert_eq!(plan(&d, None, &strings(&["o w"])), Plan { deltas: strings(&["Hell"]), finish: Finish::Stop });
        assert_eq!(plan(&d, None, &strings(&["Hello"])), Plan { deltas: vec![], finish: Finish::Stop });
        assert_eq!(plan(&d, None, &strings(&[" w"])), Plan { deltas: strings(&["Hello"]), finish: Finish::Stop });
        assert_eq!(
            plan(&d, None, &strings(&["zzz", "."])),
            Plan { deltas: strings(&["Hello", " world"]), finish: Finish::Stop }
        );
        // A stop string beyond max-tokens is not reached.
        assert_eq!(plan(&d, Some(1), &strings(&["."])), Plan { deltas: strings(&["Hello"]), finish: Finish::Length });
        // Empty stop strings are ignored rather than stopping at once.
        assert_eq!(plan(&d, None, &strings(&[""])).deltas, d);
    }

    #[test]
    fn multibyte_text() {
        let d = strings(&["你好，我是", "张三。"]);
        assert_eq!(plan(&d, None, &strings(&["我"])), Plan { deltas: strings(&["你好，"]), finish: Finish::Stop });
        assert_eq!(plan(&d, None, &strings(&["是张"])), Plan { deltas: strings(&["你好，我"]), finish: Finish::Stop });
    }

    #[test]
    fn parses_deltas_and_counts_words() {
        assert_eq!(parse_deltas(r#"["Hello", " world."]"#).unwrap(), strings(&["Hello", " world."]));
        assert!(parse_deltas(r#"["a", 1]"#).is_err());
        assert!(parse_deltas("Hello").is_err());
        assert_eq!(words("  two words\n"), 2);
        assert_eq!(words(""), 0);
    }
}
