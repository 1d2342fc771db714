//! Native tests of the g2p and Kokoro logic: the Python plugin's corpus (testdata/corpus.tsv) proves the two
//! phonemisers agree byte for byte; the rest mirrors test_g2p.py where the port could drift.

use crate::g2p::{arpabet_to_ipa, lexicon, letters_to_sounds, phonemize, speakable, tokenize, Token};
use crate::kokoro::{self, ParamError, VoiceTable, MAX_IDS};

const CORPUS: &str = include_str!("../../python/phonemizer/testdata/corpus.tsv");

fn kokoro_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.setup/models/kokoro")
}

fn npy(rows: usize, dim: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 1, {dim}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut blob = b"\x93NUMPY\x01\x00".to_vec();
    blob.extend_from_slice(&(header.len() as u16).to_le_bytes());
    blob.extend_from_slice(header.as_bytes());
    for r in 0..rows {
        for k in 0..dim {
            blob.extend_from_slice(&(r as f32 + k as f32 / 1000.0).to_le_bytes());
        }
    }
    blob
}

#[test]
fn corpus_matches_the_python_phonemizer() {
    let mut checked = 0;
    for line in CORPUS.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (text, expected) = line.split_once('\t').expect("corpus lines are input<TAB>expected");
        assert_eq!(phonemize(text), expected, "input: {text}");
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} corpus lines");
}

#[test]
fn lexicon_is_embedded() {
    assert!(lexicon().len() > 100_000);
    assert_eq!(lexicon().get("hello"), Some(&"HH AH0 L OW1"));
    let parsed = crate::g2p::parse_lexicon("b B IY1\na AH0\na(2) EY1\nzed Z EH1 D # a comment\n#x X\nb B AY1\n");
    assert_eq!(parsed.get("b"), Some(&"B IY1"));
    assert_eq!(parsed.get("zed"), Some(&"Z EH1 D"));
    assert_eq!(parsed.len(), 3);
}

#[test]
fn known_words() {
    assert_eq!(phonemize("hello"), "həlˈO");
    assert_eq!(phonemize("world"), "wˈɜɹld");
    assert_eq!(phonemize("Paris"), "pˈɛɹɪs");
    assert_eq!(phonemize("Hello, world."), "həlˈO, wˈɜɹld.");
    assert_eq!(phonemize("The capital of France is Paris."), "ðə kˈæpəɾᵊl ʌv fɹˈæns ɪz pˈɛɹɪs.");
    assert_eq!(phonemize("the owl"), "ði ˈWl");
}

#[test]
fn arpabet_rules() {
    let ipa = |s: &str| arpabet_to_ipa(&s.split(' ').collect::<Vec<_>>());
    assert_eq!(ipa("B AH1 T ER0"), "bˈʌɾəɹ");
    assert_eq!(ipa("L IH1 T AH0 L"), "lˈɪɾᵊl");
    assert_eq!(ipa("W AA1 N T IH0 D"), "wˈɑntᵻd");
    assert_eq!(ipa("HH OW0 T EH1 L"), "hOtˈɛl");
}

#[test]
fn letter_to_sound_and_acronyms() {
    assert_eq!(letters_to_sounds("blorptastic"), ["B", "L", "AO1", "R", "P", "T", "AH0", "S", "T", "IH0", "K"]);
    assert_eq!(phonemize("shmake"), "ʃmˈAk");
    assert_eq!(phonemize("quonk"), "kwˈɑŋk");
    assert_eq!(phonemize("brrr"), "bˌiˌɑɹˌɑɹˈɑɹ");
    assert_eq!(phonemize("GPU"), "ʤˌipˌijˈu");
    assert_eq!(phonemize("Zorblax's"), format!("{}ᵻz", phonemize("Zorblax")));
}

#[test]
fn numbers_and_symbols() {
    let words = |t: &str| {
        tokenize(t)
            .into_iter()
            .map(|t| match t {
                Token::Word(w) | Token::Spell(w) => w,
                Token::Punct(p) => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(words("3.14"), "three point one four");
    assert_eq!(words("-42"), "minus forty two");
    assert_eq!(words("1st 2nd 3rd 21st 100th"), "first second third twenty first one hundredth");
    assert_eq!(words("1999 2026 2005 1905 1900 1990s"), "nineteen ninety nine twenty twenty six two thousand five nineteen oh five nineteen hundred nineteen nineties");
    assert_eq!(words("1,999"), "one thousand nine hundred ninety nine");
    assert_eq!(words("$5 $1 $3.50 $0.01"), "five dollars one dollar three dollars and fifty cents one cent");
    assert_eq!(words("50% 2.5%"), "fifty percent two point five percent");
    assert_eq!(words("A & B + C = D @ #1 #x 30° a/b"), "A and B plus C equals D at number one hash x thirty degrees a slash b");
    assert_eq!(words("St. Louis on Main St. today etc."), "saint Louis on Main street today et cetera .");
}

#[test]
fn never_fails() {
    for text in ["", " ", "...", "😀", "\u{0}\u{1}", "'''", "ß∂ƒ", "-", "$", "#", "e.g.", "St.", "'s", "-$", "$-1", "1.", "1,", "1,00", "3rd4", "x'y'z", "Q"] {
        let _ = phonemize(text);
    }
    let _ = phonemize(&"1".repeat(40));
    assert!(!speakable(&phonemize("... !?")));
    assert!(speakable(&phonemize("hi.")));
}

#[test]
fn splitting_matches_the_rules() {
    assert_eq!(kokoro::split_phonemes("  həlˈO.  ", MAX_IDS), ["həlˈO."]);
    assert!(kokoro::split_phonemes("", MAX_IDS).is_empty());
    let sentence = phonemize("The quick brown fox jumps over the lazy dog, again and again.");
    let text = vec![sentence; 20].join(" ");
    let pieces = kokoro::split_phonemes(&text, MAX_IDS);
    assert!(pieces.len() > 1);
    assert!(pieces.iter().all(|p| p.chars().count() <= MAX_IDS && p.ends_with('.')));
    assert_eq!(pieces.join(" "), text);
    let clauses = vec!["wˈʌn tˈu θɹˈi"; 60].join(", ");
    let pieces = kokoro::split_phonemes(&clauses, MAX_IDS);
    assert!(pieces[..pieces.len() - 1].iter().all(|p| p.chars().count() <= MAX_IDS && p.ends_with(',')));
    assert_eq!(kokoro::split_phonemes(&"a".repeat(1200), MAX_IDS), ["a".repeat(510), "a".repeat(510), "a".repeat(180)]);
}

#[test]
fn ids_and_tokens() {
    let doc = std::fs::read_to_string(kokoro_dir().join("vocab.json")).expect("run `cargo xtask setup`");
    let vocab = kokoro::parse_vocab(&doc).expect("vocab");
    for line in CORPUS.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, phonemes)) = line.split_once('\t') {
            assert_eq!(kokoro::to_ids(phonemes, &vocab).len(), phonemes.chars().count(), "{phonemes}");
        }
    }
    let (dims, data) = kokoro::tokens_tensor(&[5, 7]);
    assert_eq!(dims, [1, 4]);
    assert_eq!(data.len(), 32);
    assert_eq!(&data[8..16], &5i64.to_le_bytes());
}

#[test]
fn style_row_is_n_minus_1() {
    let table = VoiceTable::parse(npy(510, 256), "test").expect("table");
    for (n, row) in [(1usize, 0f32), (5, 4.0), (510, 509.0), (0, 0.0), (600, 509.0)] {
        let style = table.style(n);
        assert_eq!(style.len(), 1024);
        let first = f32::from_le_bytes([style[0], style[1], style[2], style[3]]);
        assert!((first - row).abs() < 1e-3, "n={n}: {first}");
    }
    let blob = std::fs::read(kokoro_dir().join("voices/jf_alpha.npy")).expect("run `cargo xtask setup`");
    let real = VoiceTable::parse(blob.clone(), "jf_alpha").expect("jf_alpha");
    let start = blob.len() - 510 * 1024;
    assert_eq!(real.style(12), &blob[start + 11 * 1024..start + 12 * 1024]);
    assert!(VoiceTable::parse(b"not a npy file".to_vec(), "x").is_err());
    assert!(VoiceTable::parse(npy(4, 128), "x").is_err());
    let mut short = npy(4, 256);
    short.truncate(short.len() - 8);
    assert!(VoiceTable::parse(short, "x").is_err());
}

#[test]
fn params() {
    assert_eq!(kokoro::parse_params("", "jf_alpha"), Ok(("jf_alpha".to_string(), 1.0)));
    assert_eq!(kokoro::parse_params(r#"{"voice": "jf_nezumi", "speed": 1.5, "max_tokens": 9}"#, "x"), Ok(("jf_nezumi".to_string(), 1.5)));
    assert_eq!(kokoro::parse_params(r#"{"speed": 4}"#, "x"), Ok(("x".to_string(), 4.0)));
    assert_eq!(kokoro::parse_params(r#"{"speed": 0.2}"#, "x"), Err(ParamError::SpeedOutOfRange));
    assert_eq!(kokoro::parse_params(r#"{"speed": "fast"}"#, "x"), Err(ParamError::SpeedNotANumber));
    assert_eq!(kokoro::parse_params(r#"{"speed": true}"#, "x"), Err(ParamError::SpeedNotANumber));
    assert_eq!(kokoro::parse_params(r#"{"voice": 3}"#, "x"), Err(ParamError::VoiceNotAString));
    assert_eq!(kokoro::parse_params("[1]", "x"), Err(ParamError::NotAnObject));
    assert!(kokoro::is_voice_name("jf_alpha"));
    assert!(!kokoro::is_voice_name("../jf_alpha"));
    assert_eq!(kokoro::unknown_voice("zz", &["jf_alpha".into(), "jm_kumo".into()]), "unknown voice `zz`; available: jf_alpha, jm_kumo");
}
