//! English text to Kokoro phonemes: the Rust port of plugins/python/phonemizer/g2p.py, rule for rule.
//!
//! The two must produce byte-identical output (an operator swaps one phonemiser for the other with no audible
//! change), so this file follows the Python one function by function; the rules and the choices behind them
//! (misaki-style American English: dictionary first, acronyms spelled, letter-to-sound rules, flapping, the
//! reduced vowels, numbers and symbols read out) are documented there. `testdata/corpus.tsv` of the Python
//! plugin is checked by both test suites. Text is handled as `char`s, as Python indexes code points.
//!
//! The dictionary is embedded at compile time (see build.rs) and parsed once per instance, on first use.

use std::collections::HashMap;
use std::sync::OnceLock;

static LEXICON_TEXT: &str = include_str!(env!("PHONEMIZER_LEXICON"));
static LEXICON: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();

const PRIMARY: char = 'ˈ';
const SECONDARY: char = 'ˌ';
const FLAP: &str = "ɾ";
const SYLLABIC: &str = "ᵊ";
const REDUCED_I: &str = "ᵻ";
const THE_BEFORE_VOWEL: &str = "ði";
const OPENING: &str = "(“";
const CLOSING: &str = ";:,.!?—…)”";
const SPACES: &str = " \t\n\r\x0c\x0b";
const SPOKEN_VOWELS: &str = "ɑæʌəɔWIɛɜAɪiOYʊuɐᵊᵻ";

/// ARPAbet vowels (stressed form; unstressed too unless `unstressed_vowel` differs).
fn vowel(base: &str) -> Option<&'static str> {
    Some(match base {
        "AA" => "ɑ",
        "AE" => "æ",
        "AH" => "ʌ",
        "AO" => "ɔ",
        "AW" => "W",
        "AY" => "I",
        "EH" => "ɛ",
        "ER" => "ɜɹ",
        "EY" => "A",
        "IH" => "ɪ",
        "IY" => "i",
        "OW" => "O",
        "OY" => "Y",
        "UH" => "ʊ",
        "UW" => "u",
        _ => return None,
    })
}

fn unstressed_vowel(base: &str) -> Option<&'static str> {
    match base {
        "AH" => Some("ə"),
        "ER" => Some("əɹ"),
        _ => vowel(base),
    }
}

fn consonant(base: &str) -> Option<&'static str> {
    Some(match base {
        "B" => "b",
        "CH" => "ʧ",
        "D" => "d",
        "DH" => "ð",
        "F" => "f",
        "G" => "ɡ",
        "HH" => "h",
        "JH" => "ʤ",
        "K" => "k",
        "L" => "l",
        "M" => "m",
        "N" => "n",
        "NG" => "ŋ",
        "P" => "p",
        "R" => "ɹ",
        "S" => "s",
        "SH" => "ʃ",
        "T" => "t",
        "TH" => "θ",
        "V" => "v",
        "W" => "w",
        "Y" => "j",
        "Z" => "z",
        "ZH" => "ʒ",
        _ => return None,
    })
}

fn function_word(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "a" => "ɐ",
        "an" => "ən",
        "the" => "ðə",
        "of" => "ʌv",
        "to" => "tə",
        "and" => "ænd",
        "or" => "ɔɹ",
        "is" => "ɪz",
        "are" => "ɑɹ",
        "was" => "wʌz",
        "in" => "ɪn",
        "at" => "æt",
        "for" => "fɔɹ",
        "it" => "ɪt",
        "as" => "æz",
        _ => return None,
    })
}

fn letter_name(c: char) -> Option<&'static str> {
    Some(match c {
        'a' => "EY1",
        'b' => "B IY1",
        'c' => "S IY1",
        'd' => "D IY1",
        'e' => "IY1",
        'f' => "EH1 F",
        'g' => "JH IY1",
        'h' => "EY1 CH",
        'i' => "AY1",
        'j' => "JH EY1",
        'k' => "K EY1",
        'l' => "EH1 L",
        'm' => "EH1 M",
        'n' => "EH1 N",
        'o' => "OW1",
        'p' => "P IY1",
        'q' => "K Y UW1",
        'r' => "AA1 R",
        's' => "EH1 S",
        't' => "T IY1",
        'u' => "Y UW1",
        'v' => "V IY1",
        'w' => "D AH1 B AH0 L Y UW0",
        'x' => "EH1 K S",
        'y' => "W AY1",
        'z' => "Z IY1",
        _ => return None,
    })
}

fn punct_map(c: char) -> Option<&'static str> {
    Some(match c {
        ';' => ";",
        ':' => ":",
        ',' => ",",
        '.' => ".",
        '!' => "!",
        '?' => "?",
        '…' => "…",
        '—' | '–' => "—",
        '(' | '[' | '{' => "(",
        ')' | ']' | '}' => ")",
        _ => return None,
    })
}

fn symbol_words(c: char) -> Option<&'static str> {
    Some(match c {
        '&' => "and",
        '+' => "plus",
        '=' => "equals",
        '@' => "at",
        '%' => "percent",
        '°' => "degrees",
        '/' => "slash",
        '<' => "less than",
        '>' => "greater than",
        '×' => "times",
        _ => return None,
    })
}

fn fold(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'ý' | 'ÿ' => 'y',
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'A',
        'Ç' => 'C',
        'È' | 'É' | 'Ê' | 'Ë' => 'E',
        'Ì' | 'Í' | 'Î' | 'Ï' => 'I',
        'Ñ' => 'N',
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' => 'O',
        'Ù' | 'Ú' | 'Û' | 'Ü' => 'U',
        'Ý' => 'Y',
        other => other,
    }
}

/// (abbreviation, words, whether its period may also end the sentence); "st." is decided in place.
const ABBREVIATIONS: &[(&str, &str, bool)] = &[
    ("mrs.", "missus", false),
    ("mr.", "mister", false),
    ("ms.", "miz", false),
    ("dr.", "doctor", false),
    ("prof.", "professor", false),
    ("jr.", "junior", false),
    ("sr.", "senior", false),
    ("mt.", "mount", false),
    ("vs.", "versus", false),
    ("etc.", "et cetera", true),
    ("e.g.", "for example", false),
    ("i.e.", "that is", false),
    ("st.", "", false),
];

const ONES: [&str; 20] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
];
const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
const SCALES: [(u64, &str); 4] =
    [(1_000_000_000_000, "trillion"), (1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand")];

/// The dictionary: word -> ARPAbet of its first pronunciation (alternates `word(2)` and `#` comments skipped).
pub fn lexicon() -> &'static HashMap<&'static str, &'static str> {
    LEXICON.get_or_init(|| parse_lexicon(LEXICON_TEXT))
}

pub fn parse_lexicon(text: &str) -> HashMap<&str, &str> {
    let mut map = HashMap::with_capacity(140_000);
    for line in text.split('\n') {
        let line = line.split('#').next().unwrap_or("");
        let mut parts = line.split_ascii_whitespace();
        let (Some(word), Some(_)) = (parts.next(), parts.clone().next()) else { continue };
        if word.ends_with(')') {
            continue;
        }
        // The rest of the line after the word; its phones are split again on lookup.
        let start = word.as_ptr() as usize - line.as_ptr() as usize + word.len();
        map.entry(word).or_insert_with(|| line[start..].trim());
    }
    map
}

// ------------------------------------------------------------------------------------------- ARPAbet -> IPA

fn base(phone: &str) -> &str {
    phone.strip_suffix(['0', '1', '2']).unwrap_or(phone)
}

fn stress(phone: &str) -> char {
    phone.chars().last().filter(|c| matches!(c, '0' | '1' | '2')).unwrap_or('0')
}

fn is_vowel(phone: &str) -> bool {
    vowel(base(phone)).is_some()
}

/// One word's ARPAbet (with stress digits) -> Kokoro phonemes, misaki style.
pub fn arpabet_to_ipa<S: AsRef<str>>(phones: &[S]) -> String {
    let mut out = String::new();
    let n = phones.len();
    for (i, phone) in phones.iter().enumerate() {
        let phone = phone.as_ref();
        let b = base(phone);
        let prev_consonant = i > 0 && !is_vowel(phones[i - 1].as_ref());
        if let Some(v) = vowel(b) {
            match stress(phone) {
                '1' => {
                    out.push(PRIMARY);
                    out.push_str(v);
                }
                '2' => {
                    out.push(SECONDARY);
                    out.push_str(v);
                }
                _ if b == "AH" && i + 2 == n && phones[i + 1].as_ref() == "L" && prev_consonant => out.push_str(SYLLABIC),
                _ if b == "IH" && i + 2 == n && matches!(phones[i + 1].as_ref(), "D" | "Z") && prev_consonant => {
                    out.push_str(REDUCED_I)
                }
                _ => out.push_str(unstressed_vowel(b).unwrap_or(v)),
            }
        } else if b == "T"
            && 0 < i
            && i + 1 < n
            && (is_vowel(phones[i - 1].as_ref()) || phones[i - 1].as_ref() == "R")
            && is_vowel(phones[i + 1].as_ref())
            && stress(phones[i + 1].as_ref()) == '0'
        {
            out.push_str(FLAP);
        } else if let Some(c) = consonant(b) {
            out.push_str(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------- letter-to-sound

const LTS_RULES: &[(&str, &str)] = &[
    ("tch", "CH"),
    ("sch", "S K"),
    ("eigh", "EY"),
    ("augh", "AO"),
    ("ough", "OW"),
    ("igh", "AY"),
    ("tion", "SH AH N"),
    ("sion", "ZH AH N"),
    ("dge", "JH"),
    ("ch", "CH"),
    ("sh", "SH"),
    ("th", "TH"),
    ("ph", "F"),
    ("wh", "W"),
    ("ck", "K"),
    ("ng", "NG"),
    ("nk", "NG K"),
    ("qu", "K W"),
    ("dg", "JH"),
    ("ee", "IY"),
    ("ea", "IY"),
    ("oo", "UW"),
    ("ai", "EY"),
    ("ay", "EY"),
    ("oa", "OW"),
    ("ou", "AW"),
    ("oi", "OY"),
    ("oy", "OY"),
    ("au", "AO"),
    ("aw", "AO"),
    ("ew", "UW"),
    ("ie", "IY"),
    ("ei", "EY"),
    ("ey", "IY"),
    ("ue", "UW"),
    ("ui", "UW"),
];

fn r_vowel(c: char, next: char) -> Option<&'static str> {
    Some(match (c, next) {
        ('a', 'r') => "AA R",
        ('e', 'r') => "ER",
        ('i', 'r') => "ER",
        ('u', 'r') => "ER",
        ('o', 'r') => "AO R",
        _ => return None,
    })
}

fn short_vowel(c: char) -> &'static str {
    match c {
        'a' => "AE",
        'e' => "EH",
        'i' => "IH",
        'o' => "AA",
        'u' => "AH",
        _ => "IH",
    }
}

fn long_vowel(c: char) -> &'static str {
    match c {
        'a' => "EY",
        'e' => "IY",
        'i' => "AY",
        'o' => "OW",
        'u' => "UW",
        _ => "AY",
    }
}

fn single_consonant(c: char) -> Option<&'static str> {
    Some(match c {
        'b' => "B",
        'd' => "D",
        'f' => "F",
        'h' => "HH",
        'j' => "JH",
        'k' => "K",
        'l' => "L",
        'm' => "M",
        'n' => "N",
        'p' => "P",
        'q' => "K",
        'r' => "R",
        's' => "S",
        't' => "T",
        'v' => "V",
        'w' => "W",
        'x' => "K S",
        'z' => "Z",
        _ => return None,
    })
}

fn reduced(phone: &str) -> &str {
    match phone {
        "AE" | "EH" | "AA" => "AH",
        other => other,
    }
}

fn one_of(c: Option<char>, chars: &str) -> bool {
    c.is_some_and(|c| chars.contains(c))
}

fn starts_with_at(word: &[char], i: usize, pattern: &str) -> bool {
    pattern.chars().enumerate().all(|(k, p)| word.get(i + k) == Some(&p))
}

/// A lowercase ASCII word (no apostrophes) -> ARPAbet with stress (see g2p.py `letters_to_sounds`).
pub fn letters_to_sounds(word: &str) -> Vec<String> {
    if !word.chars().any(|c| "aeiouy".contains(c)) {
        return spell(word);
    }
    let w: Vec<char> = word.chars().collect();
    let n = w.len();
    let mut has_vowel_before = vec![false; n + 1];
    for (i, &c) in w.iter().enumerate() {
        has_vowel_before[i + 1] = has_vowel_before[i] || "aeiouy".contains(c);
    }
    let mut phones: Vec<(&'static str, bool)> = Vec::new();
    let emit = |phones: &mut Vec<(&'static str, bool)>, arpabet: &'static str, reducible: bool| {
        phones.extend(arpabet.split(' ').map(|p| (p, reducible)));
    };
    let mut silent = usize::MAX;
    let mut i = 0;
    while i < n {
        let c = w[i];
        let nxt = w.get(i + 1).copied();
        if i == silent {
            i += 1;
            continue;
        }
        if i == 0 && starts_with_at(&w, 0, "kn") {
            emit(&mut phones, "N", false);
            i += 2;
            continue;
        }
        if i == 0 && starts_with_at(&w, 0, "wr") {
            emit(&mut phones, "R", false);
            i += 2;
            continue;
        }
        if i + 2 == n && word.ends_with("mb") {
            emit(&mut phones, "M", false);
            i += 2;
            continue;
        }
        if i + 2 == n && word.ends_with("gn") {
            emit(&mut phones, "N", false);
            i += 2;
            continue;
        }
        if i > 0 && i + 2 == n && word.ends_with("le") && !"aeiou".contains(w[i - 1]) {
            emit(&mut phones, "AH L", true);
            i += 2;
            continue;
        }
        if c == 'e' && i + 1 == n && has_vowel_before[i] {
            i += 1;
            continue;
        }
        if c == 'g' && nxt == Some('h') {
            if i == 0 {
                emit(&mut phones, "G", false);
            }
            i += 2;
            continue;
        }
        if let Some(&(graph, arpabet)) = LTS_RULES.iter().find(|(graph, _)| starts_with_at(&w, i, graph)) {
            emit(&mut phones, arpabet, graph == "tion" || graph == "sion");
            i += graph.chars().count();
            continue;
        }
        if c == 'o' && nxt == Some('w') {
            emit(&mut phones, if i + 2 == n { "OW" } else { "AW" }, false);
            i += 2;
            continue;
        }
        if let Some(r) = nxt.and_then(|x| r_vowel(c, x))
            && (i + 2 == n || !"aeiouyr".contains(w[i + 2]))
        {
            emit(&mut phones, r, false);
            i += 2;
            continue;
        }
        if "aeiouy".contains(c) && !(c == 'y' && (i == 0 || one_of(nxt, "aeiou"))) {
            let magic = i + 2 < n
                && !"aeiouywx".contains(w[i + 1])
                && w[i + 2] == 'e'
                && (i + 3 == n || (i + 4 == n && w[i + 3] == 's'));
            if magic {
                emit(&mut phones, long_vowel(c), false);
                silent = i + 2;
            } else if c == 'y' {
                let p = if i + 1 == n && has_vowel_before[i] {
                    "IY"
                } else if i + 1 == n {
                    "AY"
                } else {
                    "IH"
                };
                emit(&mut phones, p, true);
            } else {
                emit(&mut phones, short_vowel(c), true);
            }
            i += 1;
            continue;
        }
        if c == 'y' {
            emit(&mut phones, "Y", false);
            i += 1;
            continue;
        }
        if Some(c) == nxt && !"aeiou".contains(c) {
            i += 1;
            continue;
        }
        match c {
            'c' => emit(&mut phones, if one_of(nxt, "eiy") { "S" } else { "K" }, false),
            'g' => emit(&mut phones, if one_of(nxt, "eiy") { "JH" } else { "G" }, false),
            'x' if i == 0 => emit(&mut phones, "Z", false),
            'h' if i + 1 == n => {}
            's' if i + 1 == n && i > 0 && !"ptkfs".contains(w[i - 1]) => emit(&mut phones, "Z", false),
            _ => {
                if let Some(p) = single_consonant(c) {
                    emit(&mut phones, p, false);
                }
            }
        }
        i += 1;
    }
    let mut out = Vec::with_capacity(phones.len());
    let mut stressed = false;
    for (phone, reducible) in phones {
        if vowel(phone).is_none() {
            out.push(phone.to_string());
        } else if !stressed {
            out.push(format!("{phone}1"));
            stressed = true;
        } else if reducible {
            out.push(format!("{}0", reduced(phone)));
        } else {
            out.push(format!("{phone}0"));
        }
    }
    out
}

/// Letters -> their names in ARPAbet, as one word: the last letter stressed, the others secondary.
pub fn spell(letters: &str) -> Vec<String> {
    let names: Vec<&str> = letters.chars().filter_map(|c| letter_name(c.to_ascii_lowercase())).collect();
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        for phone in name.split(' ') {
            match phone.strip_suffix('1') {
                Some(stem) if k + 1 < names.len() => out.push(format!("{stem}2")),
                _ => out.push(phone.to_string()),
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------- words

fn is_upper_word(word: &str) -> bool {
    word.chars().count() >= 2 && word.chars().all(|c| c.is_ascii_uppercase())
}

fn split_phones(pron: &str) -> Vec<String> {
    pron.split_ascii_whitespace().map(str::to_string).collect()
}

/// A word (ASCII letters and inner apostrophes, any case) -> ARPAbet (see g2p.py `word_phones`).
pub fn word_phones(word: &str) -> Vec<String> {
    let lower = word.to_ascii_lowercase();
    if let Some(pron) = lexicon().get(lower.as_str()) {
        return split_phones(pron);
    }
    if is_upper_word(word) {
        return spell(&lower);
    }
    if lower.ends_with("'s") && lower.chars().count() > 2 {
        let mut stem = word_phones(&word[..word.len() - 2]);
        let last = stem.last().map(|p| base(p).to_string()).unwrap_or_default();
        if matches!(last.as_str(), "S" | "Z" | "SH" | "ZH" | "CH" | "JH") {
            stem.extend(["IH0".to_string(), "Z".to_string()]);
        } else if matches!(last.as_str(), "P" | "T" | "K" | "F" | "TH") {
            stem.push("S".to_string());
        } else {
            stem.push("Z".to_string());
        }
        return stem;
    }
    let plain = lower.replace('\'', "");
    if let Some(pron) = lexicon().get(plain.as_str()) {
        return split_phones(pron);
    }
    letters_to_sounds(&plain)
}

pub fn word_to_ipa(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if let Some(f) = function_word(&lower) {
        return f.to_string();
    }
    arpabet_to_ipa(&word_phones(word))
}

// ----------------------------------------------------------------------------------------------- numbers

fn below_thousand(n: u64) -> Vec<&'static str> {
    let mut words = Vec::new();
    let (hundreds, rest) = (n / 100, n % 100);
    if hundreds > 0 {
        words.extend([ONES[hundreds as usize], "hundred"]);
    }
    if rest >= 20 {
        words.push(TENS[(rest / 10) as usize]);
        if rest % 10 > 0 {
            words.push(ONES[(rest % 10) as usize]);
        }
    } else if rest > 0 {
        words.push(ONES[rest as usize]);
    }
    words
}

/// 0 <= n < 10^15 -> American English words, no "and".
pub fn cardinal(mut n: u64) -> Vec<String> {
    if n == 0 {
        return vec!["zero".to_string()];
    }
    let mut words = Vec::new();
    for (scale, name) in SCALES {
        if n >= scale {
            words.extend(below_thousand(n / scale));
            words.push(name);
            n %= scale;
        }
    }
    words.extend(below_thousand(n));
    words.into_iter().map(str::to_string).collect()
}

/// 1100..2099 read as a year.
pub fn year(n: u64) -> Vec<String> {
    if (2000..=2009).contains(&n) {
        return cardinal(n);
    }
    let (high, low) = (n / 100, n % 100);
    let mut words = below_thousand(high);
    if low == 0 {
        words.push("hundred");
    } else if low < 10 {
        words.extend(["oh", ONES[low as usize]]);
    } else {
        words.extend(below_thousand(low));
    }
    words.into_iter().map(str::to_string).collect()
}

fn ordinal(mut words: Vec<String>) -> Vec<String> {
    if let Some(last) = words.last_mut() {
        *last = match last.as_str() {
            "one" => "first".to_string(),
            "two" => "second".to_string(),
            "three" => "third".to_string(),
            "five" => "fifth".to_string(),
            "eight" => "eighth".to_string(),
            "nine" => "ninth".to_string(),
            "twelve" => "twelfth".to_string(),
            w => match w.strip_suffix('y') {
                Some(stem) => format!("{stem}ieth"),
                None => format!("{w}th"),
            },
        };
    }
    words
}

fn plural(mut words: Vec<String>) -> Vec<String> {
    if let Some(last) = words.last_mut() {
        *last = match last.strip_suffix('y') {
            Some(stem) => format!("{stem}ies"),
            None if last.ends_with('x') => format!("{last}es"),
            None => format!("{last}s"),
        };
    }
    words
}

fn digits(text: &[char]) -> Vec<String> {
    text.iter().filter_map(|c| c.to_digit(10)).map(|d| ONES[d as usize].to_string()).collect()
}

fn integer(text: &[char]) -> Vec<String> {
    if (text.len() > 1 && text[0] == '0') || text.len() > 15 {
        return digits(text);
    }
    cardinal(to_number(text))
}

/// Up to 15 decimal digits -> their value (the callers never pass more).
fn to_number(text: &[char]) -> u64 {
    text.iter().filter_map(|c| c.to_digit(10)).fold(0u64, |acc, d| acc.saturating_mul(10).saturating_add(u64::from(d)))
}

// -------------------------------------------------------------------------------------------- tokenizing

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Letters (and inner apostrophes) to pronounce.
    Word(String),
    /// Letters to spell as one acronym.
    Spell(String),
    /// One of Kokoro's punctuation marks.
    Punct(&'static str),
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

fn is_letter(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphabetic())
}

fn is_alnum(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric())
}

fn is_capital(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_uppercase())
}

fn next_visible(text: &[char], mut i: usize) -> Option<char> {
    while i < text.len() && SPACES.contains(text[i]) {
        i += 1;
    }
    text.get(i).copied()
}

fn at_line_start(text: &[char], i: usize) -> bool {
    let mut j = i;
    while j > 0 && (text[j - 1] == ' ' || text[j - 1] == '\t') {
        j -= 1;
    }
    j == 0 || text[j - 1] == '\n' || text[j - 1] == '\r'
}

fn push_words(tokens: &mut Vec<Token>, words: &str) {
    tokens.extend(words.split(' ').filter(|w| !w.is_empty()).map(|w| Token::Word(w.to_string())));
}

/// Reads a number at i (see g2p.py `_number`), pushes its words, returns the index after it.
fn number(text: &[char], mut i: usize, tokens: &mut Vec<Token>) -> usize {
    let n = text.len();
    let at = |k: usize| text.get(k).copied();
    let mut negative = false;
    let mut money = false;
    if at(i) == Some('-') {
        negative = true;
        i += 1;
    }
    if at(i) == Some('$') {
        money = true;
        i += 1;
    }
    let start = i;
    while is_digit(at(i)) {
        i += 1;
    }
    let mut int: Vec<char> = text[start..i].to_vec();
    let mut grouped = false;
    while i + 3 < n && text[i] == ',' && text[i + 1..i + 4].iter().all(char::is_ascii_digit) && !is_digit(at(i + 4)) {
        int.extend_from_slice(&text[i + 1..i + 4]);
        grouped = true;
        i += 4;
    }
    let mut fraction: Vec<char> = Vec::new();
    if i + 1 < n && text[i] == '.' && is_digit(at(i + 1)) {
        let mut j = i + 1;
        while is_digit(at(j)) {
            j += 1;
        }
        fraction = text[i + 1..j].to_vec();
        i = j;
    }
    let percent = at(i) == Some('%');
    if percent {
        i += 1;
    }
    let suffix: String = text[i.min(n)..(i + 2).min(n)].iter().map(|c| c.to_ascii_lowercase()).collect();
    let is_ordinal = !percent
        && !money
        && fraction.is_empty()
        && matches!(suffix.as_str(), "st" | "nd" | "rd" | "th")
        && !is_letter(at(i + 2));
    if is_ordinal {
        i += 2;
    }
    let is_plural = !percent && !money && fraction.is_empty() && !is_ordinal && at(i) == Some('s') && !is_letter(at(i + 1));
    if is_plural {
        i += 1;
    }

    let mut words: Vec<String> = if negative { vec!["minus".to_string()] } else { Vec::new() };
    if money {
        let cents = if fraction.is_empty() {
            0
        } else {
            let mut two: Vec<char> = fraction.iter().copied().chain(['0', '0']).take(2).collect();
            two.truncate(2);
            to_number(&two)
        };
        let whole: Vec<char> = int.iter().copied().skip_while(|&c| c == '0').collect();
        if !whole.is_empty() || cents == 0 {
            words.extend(integer(&int));
            words.push(if whole == ['1'] { "dollar" } else { "dollars" }.to_string());
        }
        if cents > 0 {
            if !whole.is_empty() {
                words.push("and".to_string());
            }
            words.extend(cardinal(cents));
            words.push(if cents == 1 { "cent" } else { "cents" }.to_string());
        }
    } else {
        let looks_like_year = !negative
            && !grouped
            && fraction.is_empty()
            && !percent
            && !is_ordinal
            && int.len() == 4
            && (1100..=2099).contains(&to_number(&int));
        let mut spoken = if looks_like_year { year(to_number(&int)) } else { integer(&int) };
        if is_ordinal {
            spoken = ordinal(spoken);
        }
        if is_plural {
            spoken = plural(spoken);
        }
        words.extend(spoken);
        if !fraction.is_empty() {
            words.push("point".to_string());
            words.extend(digits(&fraction));
        }
        if percent {
            words.push("percent".to_string());
        }
    }
    tokens.extend(words.into_iter().map(Token::Word));
    i
}

/// Accents folded, curly apostrophes straightened, "..." -> "…", "--" -> "—".
pub fn normalize(text: &str) -> String {
    let folded: String = text.chars().map(fold).collect();
    folded.replace(['’', '‘'], "'").replace("...", "…").replace("--", "—")
}

/// Text -> word, spell and punctuation tokens (see g2p.py `tokenize`).
pub fn tokenize(text: &str) -> Vec<Token> {
    let text: Vec<char> = normalize(text).chars().collect();
    let n = text.len();
    let at = |k: usize| text.get(k).copied();
    let mut tokens = Vec::new();
    let mut quote_open = false;
    let mut i = 0;
    while i < n {
        let c = text[i];
        let prev = if i > 0 { at(i - 1) } else { None };
        let nxt = at(i + 1);
        if c.is_ascii_alphabetic() {
            if let Some(end) = abbreviation(&text, i, &mut tokens) {
                i = end;
                continue;
            }
            if let Some(end) = dotted_acronym(&text, i, &mut tokens) {
                i = end;
                continue;
            }
            let mut j = i;
            while j < n && (text[j].is_ascii_alphabetic() || (text[j] == '\'' && is_letter(at(j + 1)))) {
                j += 1;
            }
            tokens.push(Token::Word(text[i..j].iter().collect()));
            i = j;
            continue;
        }
        if c.is_ascii_digit()
            || (c == '$' && is_digit(nxt))
            || (c == '-' && !is_alnum(prev) && (is_digit(nxt) || (nxt == Some('$') && is_digit(at(i + 2)))))
        {
            i = number(&text, i, &mut tokens);
            continue;
        }
        if c == '-' {
            let joins = is_alnum(prev) && is_alnum(nxt);
            if !joins && !at_line_start(&text, i) {
                tokens.push(Token::Punct("—"));
            }
            i += 1;
            continue;
        }
        match c {
            '"' => {
                tokens.push(Token::Punct(if quote_open { "”" } else { "“" }));
                quote_open = !quote_open;
            }
            '“' | '«' => {
                tokens.push(Token::Punct("“"));
                quote_open = true;
            }
            '”' | '»' => {
                tokens.push(Token::Punct("”"));
                quote_open = false;
            }
            '#' => tokens.push(Token::Word(if is_digit(nxt) { "number" } else { "hash" }.to_string())),
            _ => {
                if let Some(p) = punct_map(c) {
                    tokens.push(Token::Punct(p));
                } else if let Some(words) = symbol_words(c) {
                    push_words(&mut tokens, words);
                }
            }
        }
        i += 1;
    }
    tokens
}

fn abbreviation(text: &[char], i: usize, tokens: &mut Vec<Token>) -> Option<usize> {
    if i > 0 && text[i - 1].is_ascii_alphabetic() {
        return None;
    }
    for &(abbr, words, may_end) in ABBREVIATIONS {
        let len = abbr.chars().count();
        let end = i + len;
        if end > text.len() || !text[i..end].iter().map(|c| c.to_ascii_lowercase()).eq(abbr.chars()) {
            continue;
        }
        if is_alnum(text.get(end).copied()) {
            continue;
        }
        let following = next_visible(text, end);
        let words = if abbr == "st." {
            if is_capital(following) { "saint" } else { "street" }
        } else {
            words
        };
        push_words(tokens, words);
        if may_end && (following.is_none() || is_capital(following)) {
            tokens.push(Token::Punct("."));
        }
        return Some(end);
    }
    None
}

fn dotted_acronym(text: &[char], i: usize, tokens: &mut Vec<Token>) -> Option<usize> {
    let n = text.len();
    let mut j = i;
    let mut letters = String::new();
    while j + 1 < n && text[j].is_ascii_alphabetic() && text[j + 1] == '.' {
        letters.push(text[j]);
        j += 2;
    }
    if letters.chars().count() < 2 || is_alnum(text.get(j).copied()) {
        return None;
    }
    tokens.push(Token::Spell(letters));
    let following = next_visible(text, j);
    if following.is_none() || is_capital(following) {
        tokens.push(Token::Punct("."));
    }
    Some(j)
}

// -------------------------------------------------------------------------------------------------- output

fn starts_with_vowel(phonemes: &str) -> bool {
    phonemes.chars().find(|&c| c != PRIMARY && c != SECONDARY).is_some_and(|c| SPOKEN_VOWELS.contains(c))
}

/// English text -> Kokoro phonemes, misaki style: words separated by one space, punctuation attached to the
/// word before it, opening marks to the word after. Empty (or punctuation only) when nothing is speakable.
pub fn phonemize(text: &str) -> String {
    let tokens = tokenize(text);
    let mut pieces: Vec<String> = tokens
        .iter()
        .map(|t| match t {
            Token::Word(w) => word_to_ipa(w),
            Token::Spell(s) => arpabet_to_ipa(&spell(s)),
            Token::Punct(p) => (*p).to_string(),
        })
        .collect();
    for k in 0..tokens.len().saturating_sub(1) {
        if let Token::Word(w) = &tokens[k]
            && w.eq_ignore_ascii_case("the")
            && !matches!(tokens[k + 1], Token::Punct(_))
            && starts_with_vowel(&pieces[k + 1])
        {
            pieces[k] = THE_BEFORE_VOWEL.to_string();
        }
    }
    let mut out = String::new();
    for (token, phonemes) in tokens.iter().zip(&pieces) {
        if phonemes.is_empty() {
            continue;
        }
        let attach = matches!(token, Token::Punct(_)) && CLOSING.contains(phonemes.as_str());
        if let Some(last) = out.chars().last()
            && !attach
            && !OPENING.contains(last)
        {
            out.push(' ');
        }
        out.push_str(phonemes);
    }
    out
}

/// Whether a phoneme string says anything (punctuation alone does not).
pub fn speakable(phonemes: &str) -> bool {
    phonemes.chars().any(|c| c != ' ' && !OPENING.contains(c) && !CLOSING.contains(c))
}
