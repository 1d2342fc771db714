//! From token bytes to client deltas: whole UTF-8 characters only, and stop strings held back until they either
//! complete (then cut, never emitted) or cannot complete any more (then released).
//!
//! Both buffers live in the sequence state between steps, so the functions here take them explicitly.

/// Appends `bytes` to `pending` and moves every complete character into `out`. Invalid sequences become U+FFFD
/// exactly where `String::from_utf8_lossy` of the whole stream puts them; an incomplete character at the end
/// stays in `pending` for the next token.
pub fn decode_utf8(pending: &mut Vec<u8>, bytes: &[u8], out: &mut String) {
    pending.extend_from_slice(bytes);
    let mut rest: &[u8] = pending;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good));
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = bad.get(n..).unwrap_or(&[]);
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let consumed = pending.len() - rest.len();
    pending.drain(..consumed);
}

/// Empties `pending` at the end of a sequence: an incomplete character is emitted as U+FFFD, as a one-shot
/// lossy decode of the same tokens would.
pub fn flush_utf8(pending: &mut Vec<u8>, out: &mut String) {
    out.push_str(&String::from_utf8_lossy(pending));
    pending.clear();
}

/// The result of passing text through the stop-string holder.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text that can go to the client now.
    pub text: String,
    /// A stop string completed; `text` ends just before it.
    pub stopped: bool,
}

/// Adds `text` to `held` and releases what can no longer be part of a stop string. When a stop string appears,
/// releases the text before its earliest occurrence and reports `stopped`. Otherwise keeps the longest suffix
/// that is a prefix of some stop string (it may still complete) and releases the rest.
pub fn hold_stops(held: &mut String, text: &str, stops: &[String]) -> Released {
    held.push_str(text);
    let stops = || stops.iter().filter(|s| !s.is_empty());
    if let Some(at) = stops().filter_map(|s| held.find(s.as_str())).min() {
        held.truncate(at);
        return Released { text: std::mem::take(held), stopped: true };
    }
    let keep = stops().map(|s| partial_suffix(held, s)).max().unwrap_or(0);
    let cut = held.len() - keep;
    let rest = held.split_off(cut);
    let text = std::mem::replace(held, rest);
    Released { text, stopped: false }
}

/// Length of the longest proper suffix of `text` that `stop` starts with.
fn partial_suffix(text: &str, stop: &str) -> usize {
    let longest = (stop.len() - 1).min(text.len());
    (1..=longest)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k) && stop.as_bytes().starts_with(&text.as_bytes()[text.len() - k..])
        })
        .unwrap_or(0)
}

/// Releases everything at the end of a sequence: the last partial character, then whatever was held (a stop
/// string can still complete within the flushed text, and is cut as usual).
pub fn finish(pending: &mut Vec<u8>, held: &mut String, stops: &[String]) -> Released {
    let mut tail = String::new();
    flush_utf8(pending, &mut tail);
    let mut released = hold_stops(held, &tail, stops);
    released.text.push_str(held);
    held.clear();
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_character_split_over_tokens_is_never_split() {
        // "你" is E4 BD A0 and "😀" is F0 9F 98 80: feed them a byte or two at a time.
        let bytes = "a你😀b".as_bytes();
        let mut pending = Vec::new();
        let mut deltas = Vec::new();
        for chunk in [&bytes[0..2], &bytes[2..3], &bytes[3..4], &bytes[4..6], &bytes[6..8], &bytes[8..]] {
            let mut out = String::new();
            decode_utf8(&mut pending, chunk, &mut out);
            deltas.push(out);
        }
        assert_eq!(deltas, ["a", "", "你", "", "😀", "b"]);
        assert!(pending.is_empty());
    }

    #[test]
    fn invalid_bytes_match_a_lossy_one_shot_decode() {
        let stream: &[u8] = &[b'x', 0xFF, 0xE4, 0xBD, b'y', 0xF0, 0x9F];
        let mut pending = Vec::new();
        let mut out = String::new();
        for b in stream {
            decode_utf8(&mut pending, std::slice::from_ref(b), &mut out);
        }
        flush_utf8(&mut pending, &mut out);
        assert_eq!(out, String::from_utf8_lossy(stream));
    }

    #[test]
    fn stop_across_deltas_is_held_then_dropped() {
        let s = stops(&["</end>"]);
        let mut held = String::new();
        assert_eq!(hold_stops(&mut held, "Hello </", &s), Released { text: "Hello ".into(), stopped: false });
        assert_eq!(held, "</");
        assert_eq!(hold_stops(&mut held, "en", &s), Released { text: "".into(), stopped: false });
        assert_eq!(hold_stops(&mut held, "d> more", &s), Released { text: "".into(), stopped: true });
    }

    #[test]
    fn a_prefix_that_does_not_complete_is_released() {
        let s = stops(&["STOP"]);
        let mut held = String::new();
        assert_eq!(hold_stops(&mut held, "a ST", &s).text, "a ");
        assert_eq!(hold_stops(&mut held, "O", &s).text, "");
        assert_eq!(hold_stops(&mut held, "P!", &s), Released { text: "".into(), stopped: true });
        let mut held = String::new();
        assert_eq!(hold_stops(&mut held, "a ST", &s).text, "a ");
        assert_eq!(hold_stops(&mut held, "OR", &s).text, "STOR");
        assert!(held.is_empty());
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let s = stops(&["abc", "bd"]);
        let mut held = String::new();
        assert_eq!(hold_stops(&mut held, "xab", &s).text, "x");
        assert_eq!(hold_stops(&mut held, "d", &s), Released { text: "a".into(), stopped: true });
    }

    #[test]
    fn held_text_is_flushed_at_the_end_and_multibyte_stops_work() {
        let s = stops(&["。。"]);
        let mut held = String::new();
        let mut pending = vec![0xE4];
        assert_eq!(hold_stops(&mut held, "好。", &s).text, "好");
        assert_eq!(finish(&mut pending, &mut held, &s), Released { text: "。\u{FFFD}".into(), stopped: false });
        assert!(held.is_empty() && pending.is_empty());
    }

    #[test]
    fn no_stops_releases_everything() {
        let mut held = String::new();
        assert_eq!(hold_stops(&mut held, "abc", &[]).text, "abc");
        assert_eq!(hold_stops(&mut held, "d", &stops(&[""])).text, "d");
    }
}
