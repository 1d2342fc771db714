"""English text to Kokoro phonemes: the pure grapheme-to-phoneme logic of the `phonemizer` stage.

The output imitates misaki's American English (what Kokoro v1.0 was trained on), restricted to what a
dictionary and a few rules can do without a POS tagger or a neural fallback:

* Text normalisation (`tokenize`): numbers are spelled out (cardinals, negatives, decimals, ordinals, years,
  money, percentages), common symbols and abbreviations become words, quotes become “ ”, `...` becomes `…`,
  and anything Kokoro cannot say is dropped.
* Words are looked up in the CMU pronouncing dictionary (first pronunciation) and converted from ARPAbet the
  misaki way (`arpabet_to_ipa`); all-caps words the dictionary lacks are spelled letter by letter; other
  unknown words go through letter-to-sound rules (`letters_to_sounds`). Nothing ever fails: the worst case is
  a plausible guess.
* Punctuation sticks to the previous word and words are separated by one space ("Hello, world." ->
  "həlˈO, wˈɜɹld."), as misaki writes it.

Choices where misaki depends on things we do not have (documented so the Rust port can match them exactly):
* A few monosyllabic function words are unstressed, with misaki's forms: "a" -> "ɐ", "the" -> "ðə" ("ði"
  before a vowel), "of" -> "ʌv", "to" -> "tə" (see FUNCTION_WORDS). Everything else keeps the dictionary's
  stress, monosyllables included ("world" -> "wˈɜɹld").
* American flapping: T after a vowel or R and before an unstressed vowel is "ɾ" ("water" -> "wˈɔɾəɹ").
  A final unstressed AH + L after a consonant is "ᵊl" ("little" -> "lˈɪɾᵊl"); a final unstressed IH + D/Z after
  a consonant is "ᵻ" ("wanted" -> "wˈɑntᵻd").
* Four-digit numbers from 1100 to 2099 read as years unless they carry a comma, a currency, a sign, a decimal
  part, a percent sign or an ordinal suffix.

Nothing here touches the WIT bindings, so `python -m unittest` runs it natively (see test_g2p.py), and a
benchmark can import it. The Rust port in plugins/phonemizer/src/g2p.rs must produce byte-identical output:
testdata/corpus.tsv is checked by both test suites. Keep the two in step when changing a rule.

The lexicon is loaded once, at import. Inside the component that import happens when componentize-py
pre-initialises the app at build time (the build puts the folder holding cmudict.dict on the python path),
so the parsed dictionary is part of the component's heap snapshot and no instance reads or parses it again.
Natively it is found through $OMNIHOST_LEXICON (the file or its folder), the python path, or the repository's
.setup/lexicon.
"""

from __future__ import annotations

# Every import at the top: componentize-py bundles only the modules imported while it builds the component.
import array
import os
import sys
from typing import Dict, Iterable, List, Optional, Tuple

LEXICON_ENV = "OMNIHOST_LEXICON"
LEXICON_FILE = "cmudict.dict"

# ARPAbet vowels with primary or secondary stress (and unstressed, unless UNSTRESSED says otherwise).
VOWELS: Dict[str, str] = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "W", "AY": "I", "EH": "ɛ", "ER": "ɜɹ", "EY": "A",
    "IH": "ɪ", "IY": "i", "OW": "O", "OY": "Y", "UH": "ʊ", "UW": "u",
}
# Unstressed forms that differ: the schwas.
UNSTRESSED: Dict[str, str] = {"AH": "ə", "ER": "əɹ"}
CONSONANTS: Dict[str, str] = {
    "B": "b", "CH": "ʧ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "ʤ", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "V": "v",
    "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
PRIMARY = "ˈ"
SECONDARY = "ˌ"
FLAP = "ɾ"
SYLLABIC = "ᵊ"  # the reduced vowel of a syllabic L
REDUCED_I = "ᵻ"  # the reduced vowel of the -ed / -es endings

# Monosyllabic function words that misaki leaves unstressed (with its reduced forms). "the" becomes "ði"
# before a word that starts with a vowel sound.
FUNCTION_WORDS: Dict[str, str] = {
    "a": "ɐ", "an": "ən", "the": "ðə", "of": "ʌv", "to": "tə", "and": "ænd", "or": "ɔɹ", "is": "ɪz",
    "are": "ɑɹ", "was": "wʌz", "in": "ɪn", "at": "æt", "for": "fɔɹ", "it": "ɪt", "as": "æz",
}
THE_BEFORE_VOWEL = "ði"

# Letter names for spelled acronyms, in ARPAbet. Every letter but the last of an acronym takes secondary stress.
LETTER_NAMES: Dict[str, str] = {
    "a": "EY1", "b": "B IY1", "c": "S IY1", "d": "D IY1", "e": "IY1", "f": "EH1 F", "g": "JH IY1",
    "h": "EY1 CH", "i": "AY1", "j": "JH EY1", "k": "K EY1", "l": "EH1 L", "m": "EH1 M", "n": "EH1 N",
    "o": "OW1", "p": "P IY1", "q": "K Y UW1", "r": "AA1 R", "s": "EH1 S", "t": "T IY1", "u": "Y UW1",
    "v": "V IY1", "w": "D AH1 B AH0 L Y UW0", "x": "EH1 K S", "y": "W AY1", "z": "Z IY1",
}

# Punctuation Kokoro's vocabulary has and this module emits. Opening marks take a space before them and none
# after; every other mark sticks to what precedes it.
OPENING = "(“"
CLOSING = ";:,.!?—…)”"
PUNCTUATION = OPENING + CLOSING
# Input marks mapped to one of the above (quotes are handled apart: they alternate open/close).
PUNCT_MAP: Dict[str, str] = {
    ";": ";", ":": ":", ",": ",", ".": ".", "!": "!", "?": "?", "…": "…", "—": "—", "–": "—",
    "(": "(", ")": ")", "[": "(", "]": ")", "{": "(", "}": ")",
}
# Symbols read as words.
SYMBOL_WORDS: Dict[str, str] = {
    "&": "and", "+": "plus", "=": "equals", "@": "at", "%": "percent", "°": "degrees", "/": "slash",
    "<": "less than", ">": "greater than", "×": "times",
}
# Accented Latin letters folded to ASCII before anything else (the dictionary is ASCII).
FOLD: Dict[str, str] = {}
for _plain, _accented in (("a", "àáâãäå"), ("c", "ç"), ("e", "èéêë"), ("i", "ìíîï"), ("n", "ñ"),
                          ("o", "òóôõö"), ("u", "ùúûü"), ("y", "ýÿ"),
                          ("A", "ÀÁÂÃÄÅ"), ("C", "Ç"), ("E", "ÈÉÊË"), ("I", "ÌÍÎÏ"), ("N", "Ñ"),
                          ("O", "ÒÓÔÕÖ"), ("U", "ÙÚÛÜ"), ("Y", "Ý")):
    for _c in _accented:
        FOLD[_c] = _plain

# Abbreviations (matched case-insensitively, at a word start, not followed by a letter or digit):
# (abbreviation, words, whether its period may also end the sentence).
ABBREVIATIONS: List[Tuple[str, str, bool]] = [
    ("mrs.", "missus", False), ("mr.", "mister", False), ("ms.", "miz", False), ("dr.", "doctor", False),
    ("prof.", "professor", False), ("jr.", "junior", False), ("sr.", "senior", False), ("mt.", "mount", False),
    ("vs.", "versus", False), ("etc.", "et cetera", True), ("e.g.", "for example", False),
    ("i.e.", "that is", False), ("st.", "", False),  # "st." is "saint" before a capital, else "street"
]

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SCALES = [(10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (10 ** 3, "thousand")]
# Integers from here up are read digit by digit.
TOO_LARGE = 10 ** 15
ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}


class Lexicon:
    """The pronouncing dictionary, compact: one buffer of b"word\tARPABET\n" lines and the offsets of those
    lines sorted by word, searched by bisection (~17 comparisons a lookup).

    Why not a dict: the component snapshots the heap after the load, garbage included, so what the load
    allocates at its peak is what the component carries. A dict of 126k entries adds ~20 MB; reading the file
    line by line into this buffer adds ~4 MB. cmudict.dict is sorted but for a couple of lines, so the offsets
    are appended in order and the rare line out of order is inserted where it belongs.
    """

    def __init__(self) -> None:
        self._blob = bytearray()
        self._offsets = array.array("I")
        self._last = b""  # the largest word so far: a word after it is appended without a search

    @classmethod
    def from_lines(cls, lines: Iterable[bytes]) -> "Lexicon":
        """cmudict.dict's lines -> the first pronunciation of each word. Alternates (`word(2)`) and `#`
        comments are skipped."""
        lexicon = cls()
        for line in lines:
            parts = line.split(b"#", 1)[0].split()
            if len(parts) >= 2 and not parts[0].endswith(b")"):
                lexicon.add(parts[0], b" ".join(parts[1:]))
        return lexicon

    def __len__(self) -> int:
        return len(self._offsets)

    def _search(self, word: bytes) -> Tuple[int, bool]:
        """Where `word` is (index into the offsets, True) or would go (index, False)."""
        blob, offsets = self._blob, self._offsets
        lo, hi = 0, len(offsets)
        while lo < hi:
            mid = (lo + hi) // 2
            start = offsets[mid]
            key = blob[start:blob.index(b"\t", start)]
            if key < word:
                lo = mid + 1
            elif key > word:
                hi = mid
            else:
                return mid, True
        return lo, False

    def add(self, word: bytes, arpabet: bytes) -> None:
        """Adds a word unless it is already there (the first pronunciation wins)."""
        if word > self._last:
            index = len(self._offsets)
            self._last = word
        else:
            index, found = self._search(word)
            if found:
                return
        self._offsets.insert(index, len(self._blob))
        self._blob += word + b"\t" + arpabet + b"\n"

    def get(self, word: str) -> Optional[str]:
        """The ARPAbet of `word` (lowercase), or None."""
        if not word.isascii():
            return None
        key = word.encode("ascii")
        index, found = self._search(key)
        if not found:
            return None
        start = self._offsets[index] + len(key) + 1
        return self._blob[start:self._blob.index(b"\n", start)].decode("ascii")


def parse_lexicon(text: str) -> Lexicon:
    """cmudict.dict's text -> its lexicon (see Lexicon.from_lines)."""
    return Lexicon.from_lines(text.encode("utf-8").split(b"\n"))


def find_lexicon() -> Optional[str]:
    """Where cmudict.dict is: $OMNIHOST_LEXICON (the file or its folder), a folder of the python path (how the
    component build provides it), or the repository's .setup/lexicon."""
    env = os.environ.get(LEXICON_ENV)
    if env:
        return os.path.join(env, LEXICON_FILE) if os.path.isdir(env) else env
    for folder in sys.path:
        candidate = os.path.join(folder or ".", LEXICON_FILE)
        if os.path.isfile(candidate):
            return candidate
    here = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.join(here, "..", "..", "..", ".setup", "lexicon", LEXICON_FILE)
    return candidate if os.path.isfile(candidate) else None


def _load_lexicon() -> Lexicon:
    path = find_lexicon()
    if path is None:
        # No dictionary: every word goes through the letter-to-sound rules. Loud, because that is rarely meant.
        print(f"g2p: {LEXICON_FILE} not found (set ${LEXICON_ENV} or run `cargo xtask setup`); "
              "using letter-to-sound rules only", file=sys.stderr)
        return Lexicon()
    with open(path, "rb") as f:
        return Lexicon.from_lines(f)


LEXICON: Lexicon = _load_lexicon()


# ---------------------------------------------------------------------------------------------- ARPAbet -> IPA

def _base(phone: str) -> str:
    return phone[:-1] if phone[-1:] in ("0", "1", "2") else phone


def _stress(phone: str) -> str:
    return phone[-1] if phone[-1:] in ("0", "1", "2") else "0"


def _is_vowel(phone: str) -> bool:
    return _base(phone) in VOWELS


def arpabet_to_ipa(phones: List[str]) -> str:
    """One word's ARPAbet (with stress digits) -> Kokoro phonemes, misaki style: stress marks right before the
    stressed vowel, American flapping, syllabic L and the reduced -ed/-es vowel (see the module doc)."""
    out: List[str] = []
    n = len(phones)
    for i, phone in enumerate(phones):
        base = _base(phone)
        prev_consonant = i > 0 and not _is_vowel(phones[i - 1])
        if base in VOWELS:
            stress = _stress(phone)
            if stress == "1":
                out.append(PRIMARY + VOWELS[base])
            elif stress == "2":
                out.append(SECONDARY + VOWELS[base])
            elif base == "AH" and i + 2 == n and phones[i + 1] == "L" and prev_consonant:
                out.append(SYLLABIC)
            elif base == "IH" and i + 2 == n and phones[i + 1] in ("D", "Z") and prev_consonant:
                out.append(REDUCED_I)
            else:
                out.append(UNSTRESSED.get(base, VOWELS[base]))
        elif (base == "T" and 0 < i < n - 1 and (_is_vowel(phones[i - 1]) or phones[i - 1] == "R")
              and _is_vowel(phones[i + 1]) and _stress(phones[i + 1]) == "0"):
            out.append(FLAP)
        elif base in CONSONANTS:
            out.append(CONSONANTS[base])
    return "".join(out)


# ----------------------------------------------------------------------------------------- letter-to-sound

# Grapheme rules tried in order at each position (the first that matches wins, so longer ones come first).
# Vowel phones carry no stress here; `letters_to_sounds` assigns it.
LTS_RULES: List[Tuple[str, str]] = [
    ("tch", "CH"), ("sch", "S K"), ("eigh", "EY"), ("augh", "AO"), ("ough", "OW"), ("igh", "AY"),
    ("tion", "SH AH N"), ("sion", "ZH AH N"), ("dge", "JH"),
    ("ch", "CH"), ("sh", "SH"), ("th", "TH"), ("ph", "F"), ("wh", "W"), ("ck", "K"), ("ng", "NG"), ("nk", "NG K"),
    ("qu", "K W"), ("dg", "JH"),
    ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ai", "EY"), ("ay", "EY"), ("oa", "OW"), ("ou", "AW"),
    ("oi", "OY"), ("oy", "OY"), ("au", "AO"), ("aw", "AO"), ("ew", "UW"), ("ie", "IY"), ("ei", "EY"),
    ("ey", "IY"), ("ue", "UW"), ("ui", "UW"),
]
# R-coloured vowels, used when the next letter is not a vowel or another r ("ver-y" is not "ver").
R_VOWELS: Dict[str, str] = {"ar": "AA R", "er": "ER", "ir": "ER", "ur": "ER", "or": "AO R"}
SHORT_VOWELS: Dict[str, str] = {"a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH", "y": "IH"}
LONG_VOWELS: Dict[str, str] = {"a": "EY", "e": "IY", "i": "AY", "o": "OW", "u": "UW", "y": "AY"}
SINGLE_CONSONANTS: Dict[str, str] = {
    "b": "B", "d": "D", "f": "F", "h": "HH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "p": "P",
    "q": "K", "r": "R", "s": "S", "t": "T", "v": "V", "w": "W", "x": "K S", "z": "Z",
}
VOWEL_LETTERS = "aeiou"
SOFTENING = "eiy"  # c and g before these are S and JH
VOICELESS_END = "ptkf"  # a final s after these stays S (otherwise Z)
# What a short vowel from a single letter becomes when unstressed.
REDUCED: Dict[str, str] = {"AE": "AH", "EH": "AH", "AA": "AH"}


def _one_of(c: str, chars: str) -> bool:
    """c is one of chars (and not the empty string, which Python's `in` would find in any string)."""
    return c != "" and c in chars


def letters_to_sounds(word: str) -> List[str]:
    """A lowercase ASCII word (no apostrophes) -> ARPAbet with stress: rule-based graphemes -> phonemes, the
    first vowel stressed. A word with no vowel letter (aeiouy) is spelled. Never fails; empty in, empty out."""
    if not any(c in "aeiouy" for c in word):
        return spell(word)
    n = len(word)
    has_vowel_before = [False] * (n + 1)  # whether word[:i] holds a vowel letter
    for i, c in enumerate(word):
        has_vowel_before[i + 1] = has_vowel_before[i] or c in "aeiouy"
    # (ARPAbet without stress, whether an unstressed occurrence reduces to a schwa)
    phones: List[Tuple[str, bool]] = []

    def emit(arpabet: str, reducible: bool = False) -> None:
        for p in arpabet.split():
            phones.append((p, reducible))

    silent = -1  # the e that makes the vowel before it long
    i = 0
    while i < n:
        c = word[i]
        nxt = word[i + 1] if i + 1 < n else ""
        if i == silent:
            i += 1
            continue
        # Position-bound rules first.
        if i == 0 and word.startswith("kn"):
            emit("N")
            i += 2
            continue
        if i == 0 and word.startswith("wr"):
            emit("R")
            i += 2
            continue
        if i + 2 == n and word.endswith("mb"):
            emit("M")
            i += 2
            continue
        if i + 2 == n and word.endswith("gn"):
            emit("N")
            i += 2
            continue
        if i > 0 and i + 2 == n and word.endswith("le") and word[i - 1] not in VOWEL_LETTERS:
            emit("AH L", True)
            i += 2
            continue
        if c == "e" and i + 1 == n and has_vowel_before[i]:
            i += 1  # silent final e
            continue
        if c == "g" and nxt == "h":
            if i == 0:
                emit("G")
            i += 2
            continue
        matched = False
        for graph, arpabet in LTS_RULES:
            if word.startswith(graph, i):
                emit(arpabet, graph in ("tion", "sion"))
                i += len(graph)
                matched = True
                break
        if matched:
            continue
        if c == "o" and nxt == "w":
            emit("OW" if i + 2 == n else "AW")
            i += 2
            continue
        if c + nxt in R_VOWELS and (i + 2 == n or word[i + 2] not in "aeiouyr"):
            emit(R_VOWELS[c + nxt])
            i += 2
            continue
        if c in "aeiouy" and not (c == "y" and (i == 0 or _one_of(nxt, VOWEL_LETTERS))):
            # Magic e: vowel, one consonant, then a final e (or es): the vowel is long and the e silent.
            magic = (i + 2 < n and word[i + 1] not in "aeiouywx" and word[i + 2] == "e"
                     and (i + 3 == n or (i + 4 == n and word[i + 3] == "s")))
            if magic:
                emit(LONG_VOWELS[c])
                silent = i + 2
            elif c == "y":
                emit("IY" if i + 1 == n and has_vowel_before[i] else ("AY" if i + 1 == n else "IH"), True)
            else:
                emit(SHORT_VOWELS[c], True)
            i += 1
            continue
        if c == "y":
            emit("Y")
            i += 1
            continue
        if c == nxt and c not in VOWEL_LETTERS:
            i += 1  # a doubled consonant sounds once: skip the first
            continue
        if c == "c":
            emit("S" if _one_of(nxt, SOFTENING) else "K")
        elif c == "g":
            emit("JH" if _one_of(nxt, SOFTENING) else "G")
        elif c == "x" and i == 0:
            emit("Z")
        elif c == "h" and i + 1 == n:
            pass  # "ah", "oh": silent
        elif c == "s" and i + 1 == n and i > 0 and word[i - 1] not in VOICELESS_END + "s":
            emit("Z")
        elif c in SINGLE_CONSONANTS:
            emit(SINGLE_CONSONANTS[c])
        i += 1
    out: List[str] = []
    stressed = False
    for phone, reducible in phones:
        if phone not in VOWELS:
            out.append(phone)
        elif not stressed:
            out.append(phone + "1")
            stressed = True
        elif reducible:
            out.append(REDUCED.get(phone, phone) + "0")
        else:
            out.append(phone + "0")
    return out


def spell(letters: str) -> List[str]:
    """Letters -> their names in ARPAbet, as one word: the last letter stressed, the others secondary."""
    out: List[str] = []
    letters = [c for c in letters.lower() if c in LETTER_NAMES]
    for k, c in enumerate(letters):
        for phone in LETTER_NAMES[c].split():
            if k + 1 < len(letters) and phone.endswith("1"):
                phone = phone[:-1] + "2"
            out.append(phone)
    return out


# ------------------------------------------------------------------------------------------------ words

def _is_upper_word(word: str) -> bool:
    return len(word) >= 2 and all("A" <= c <= "Z" for c in word)


def word_phones(word: str) -> List[str]:
    """A word (ASCII letters and inner apostrophes, any case) -> ARPAbet: the dictionary, an acronym spelled,
    a possessive built on its stem, or the letter-to-sound rules."""
    lower = word.lower()
    pron = LEXICON.get(lower)
    if pron is not None:
        return pron.split()
    if _is_upper_word(word):
        return spell(lower)
    if lower.endswith("'s") and len(lower) > 2:
        stem = word_phones(word[:-2])
        last = _base(stem[-1]) if stem else ""
        if last in ("S", "Z", "SH", "ZH", "CH", "JH"):
            return stem + ["IH0", "Z"]
        return stem + (["S"] if last in ("P", "T", "K", "F", "TH") else ["Z"])
    plain = lower.replace("'", "")
    pron = LEXICON.get(plain)
    if pron is not None:
        return pron.split()
    return letters_to_sounds(plain)


def word_to_ipa(word: str) -> str:
    lower = word.lower()
    if lower in FUNCTION_WORDS:
        return FUNCTION_WORDS[lower]
    return arpabet_to_ipa(word_phones(word))


# ---------------------------------------------------------------------------------------------- numbers

def _below_thousand(n: int) -> List[str]:
    words: List[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [ONES[hundreds], "hundred"]
    if rest >= 20:
        words.append(TENS[rest // 10])
        if rest % 10:
            words.append(ONES[rest % 10])
    elif rest:
        words.append(ONES[rest])
    return words


def cardinal(n: int) -> List[str]:
    """0 <= n < 10**15 -> American English words, no "and" ("one hundred twenty three")."""
    if n == 0:
        return ["zero"]
    words: List[str] = []
    for scale, name in SCALES:
        if n >= scale:
            words += _below_thousand(n // scale) + [name]
            n %= scale
    return words + _below_thousand(n)


def year(n: int) -> List[str]:
    """1100..2099 read as a year: "nineteen ninety nine", "nineteen oh five", "two thousand one",
    "twenty twenty six", "nineteen hundred"."""
    if 2000 <= n <= 2009:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return _below_thousand(high) + ["hundred"]
    if low < 10:
        return _below_thousand(high) + ["oh", ONES[low]]
    return _below_thousand(high) + _below_thousand(low)


def ordinal(words: List[str]) -> List[str]:
    last = words[-1]
    if last in ORDINALS:
        last = ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def plural(words: List[str]) -> List[str]:
    last = words[-1]
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith("x"):
        last += "es"
    else:
        last += "s"
    return words[:-1] + [last]


def digits(text: str) -> List[str]:
    return [ONES[ord(c) - ord("0")] for c in text]


def _integer(text: str) -> List[str]:
    """An integer's digits (no sign, no commas) as words: digit by digit when it has a leading zero or is too
    large to name."""
    if len(text) > 1 and text[0] == "0":
        return digits(text)
    if len(text) > 15:
        return digits(text)
    return cardinal(int(text))


# ------------------------------------------------------------------------------------------- tokenizing

SPACES = " \t\n\r\f\v"


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _is_letter(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _is_alnum(c: str) -> bool:
    return _is_digit(c) or _is_letter(c)


def _next_visible(text: str, i: int) -> str:
    """The first non-space character from index i, or ""."""
    while i < len(text) and text[i] in SPACES:
        i += 1
    return text[i] if i < len(text) else ""


def _at_line_start(text: str, i: int) -> bool:
    j = i - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    return j < 0 or text[j] in "\n\r"


def _number(text: str, i: int, tokens: List[Tuple[str, str]]) -> int:
    """Reads a number starting at i (an optional "-", an optional "$", digits with optional thousands commas,
    an optional decimal part, then an optional %, ordinal suffix or plural s), pushes its words and returns
    the index after it."""
    n = len(text)
    negative = False
    money = False
    if text[i] == "-":
        negative = True
        i += 1
    if text[i] == "$":
        money = True
        i += 1
    start = i
    while i < n and _is_digit(text[i]):
        i += 1
    integer = text[start:i]
    grouped = False
    # Thousands groups: a comma followed by exactly three digits.
    while (i + 3 < n and text[i] == "," and all(_is_digit(text[k]) for k in range(i + 1, i + 4))
           and (i + 4 == n or not _is_digit(text[i + 4]))):
        integer += text[i + 1:i + 4]
        grouped = True
        i += 4
    fraction = ""
    if i + 1 < n and text[i] == "." and _is_digit(text[i + 1]):
        j = i + 1
        while j < n and _is_digit(text[j]):
            j += 1
        fraction = text[i + 1:j]
        i = j
    percent = i < n and text[i] == "%"
    if percent:
        i += 1
    suffix = text[i:i + 2].lower()
    after_suffix = text[i + 2] if i + 2 < n else ""
    is_ordinal = (not percent and not money and not fraction and suffix in ("st", "nd", "rd", "th")
                  and not _is_letter(after_suffix))
    if is_ordinal:
        i += 2
    after_s = text[i + 1] if i + 1 < n else ""
    is_plural = (not percent and not money and not fraction and not is_ordinal and i < n and text[i] == "s"
                 and not _is_letter(after_s))
    if is_plural:
        i += 1

    words: List[str] = ["minus"] if negative else []
    if money:
        cents = int((fraction + "00")[:2]) if fraction else 0
        # Compared as text: the integer part may be longer than any machine integer.
        whole = integer.lstrip("0")
        if whole or cents == 0:
            words += _integer(integer) + ["dollar" if whole == "1" else "dollars"]
        if cents > 0:
            if whole:
                words.append("and")
            words += cardinal(cents) + ["cent" if cents == 1 else "cents"]
    else:
        looks_like_year = (not negative and not grouped and not fraction and not percent and not is_ordinal
                           and len(integer) == 4 and 1100 <= int(integer) <= 2099)
        number = year(int(integer)) if looks_like_year else _integer(integer)
        if is_ordinal:
            number = ordinal(number)
        if is_plural:
            number = plural(number)
        words += number
        if fraction:
            words += ["point"] + digits(fraction)
        if percent:
            words.append("percent")
    for w in words:
        tokens.append(("word", w))
    return i


def normalize(text: str) -> str:
    """Character-level clean-up before tokenizing: accents folded, curly apostrophes straightened, "..." and
    "--" turned into the marks Kokoro has."""
    text = "".join(FOLD.get(c, c) for c in text)
    return (text.replace("’", "'").replace("‘", "'").replace("...", "…").replace("--", "—"))


def tokenize(text: str) -> List[Tuple[str, str]]:
    """Normalised text -> ("word", letters) and ("punct", mark) tokens; numbers, symbols and abbreviations come
    out as words, marks as one of PUNCTUATION, everything unsayable is dropped."""
    text = normalize(text)
    tokens: List[Tuple[str, str]] = []
    quote_open = False
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        prev = text[i - 1] if i > 0 else ""
        nxt = text[i + 1] if i + 1 < n else ""
        if _is_letter(c):
            abbreviation = _abbreviation(text, i, tokens)
            if abbreviation:
                i = abbreviation
                continue
            dotted = _dotted_acronym(text, i, tokens)
            if dotted:
                i = dotted
                continue
            j = i
            while j < n and (_is_letter(text[j]) or (text[j] == "'" and j + 1 < n and _is_letter(text[j + 1]))):
                j += 1
            tokens.append(("word", text[i:j]))
            i = j
            continue
        if (_is_digit(c) or (c == "$" and _is_digit(nxt))
                or (c == "-" and not _is_alnum(prev) and (_is_digit(nxt) or (nxt == "$" and i + 2 < n
                                                                             and _is_digit(text[i + 2]))))):
            i = _number(text, i, tokens)
            continue
        if c == "-":
            # Inside a word or a number it only separates; standing alone it is a pause, except as a list
            # bullet at the start of a line.
            if not (_is_alnum(prev) and _is_alnum(nxt)) and not _at_line_start(text, i):
                tokens.append(("punct", "—"))
            i += 1
            continue
        if c == '"':
            tokens.append(("punct", "”" if quote_open else "“"))
            quote_open = not quote_open
        elif c in ("“", "«"):
            tokens.append(("punct", "“"))
            quote_open = True
        elif c in ("”", "»"):
            tokens.append(("punct", "”"))
            quote_open = False
        elif c in PUNCT_MAP:
            tokens.append(("punct", PUNCT_MAP[c]))
        elif c == "#":
            tokens.append(("word", "number" if _is_digit(nxt) else "hash"))
        elif c in SYMBOL_WORDS:
            for w in SYMBOL_WORDS[c].split():
                tokens.append(("word", w))
        # Anything else (spaces, stray apostrophes, markdown's * _ ` ~, emoji, other scripts) is dropped.
        i += 1
    return tokens


def _abbreviation(text: str, i: int, tokens: List[Tuple[str, str]]) -> int:
    """If an abbreviation starts at i (a word start), pushes its words and returns the index after it; else 0."""
    if i > 0 and _is_letter(text[i - 1]):
        return 0
    for abbreviation, words, may_end in ABBREVIATIONS:
        end = i + len(abbreviation)
        if text[i:end].lower() != abbreviation or (end < len(text) and _is_alnum(text[end])):
            continue
        following = _next_visible(text, end)
        if abbreviation == "st.":
            words = "saint" if "A" <= following <= "Z" else "street"
        for w in words.split():
            tokens.append(("word", w))
        if may_end and (following == "" or "A" <= following <= "Z"):
            tokens.append(("punct", "."))
        return end
    return 0


def _dotted_acronym(text: str, i: int, tokens: List[Tuple[str, str]]) -> int:
    """"U.S.", "U.S.A.": single letters each followed by a period (two or more) are spelled as one word. The
    last period also ends the sentence when the text ends or a capital follows."""
    n = len(text)
    j = i
    letters = ""
    while j + 1 < n and _is_letter(text[j]) and text[j + 1] == ".":
        letters += text[j]
        j += 2
    if len(letters) < 2 or (j < n and _is_alnum(text[j])):
        return 0
    tokens.append(("spell", letters))
    following = _next_visible(text, j)
    if following == "" or "A" <= following <= "Z":
        tokens.append(("punct", "."))
    return j


# ------------------------------------------------------------------------------------------------ output

SPOKEN_VOWELS = set("ɑæʌəɔWIɛɜAɪiOYʊuɐᵊᵻ")


def _starts_with_vowel(phonemes: str) -> bool:
    for ch in phonemes:
        if ch in (PRIMARY, SECONDARY):
            continue
        return ch in SPOKEN_VOWELS
    return False


def phonemize(text: str) -> str:
    """English text -> Kokoro phonemes, misaki style: words separated by one space, punctuation attached to the
    word before it, opening marks to the word after. Empty (or punctuation only) when nothing is speakable."""
    tokens = tokenize(text)
    pieces: List[str] = []
    for kind, value in tokens:
        if kind == "word":
            pieces.append(word_to_ipa(value))
        elif kind == "spell":
            pieces.append(arpabet_to_ipa(spell(value)))
        else:
            pieces.append(value)
    for k in range(len(tokens) - 1):
        if (tokens[k][0] == "word" and tokens[k][1].lower() == "the" and tokens[k + 1][0] != "punct"
                and _starts_with_vowel(pieces[k + 1])):
            pieces[k] = THE_BEFORE_VOWEL
    out: List[str] = []
    for (kind, _), phonemes in zip(tokens, pieces):
        if not phonemes:
            continue
        attach = kind == "punct" and phonemes in CLOSING
        if out and not attach and out[-1][-1] not in OPENING:
            out.append(" ")
        out.append(phonemes)
    return "".join(out)


def speakable(phonemes: str) -> bool:
    """Whether a phoneme string says anything (punctuation alone does not)."""
    return any(ch not in PUNCTUATION and ch != " " for ch in phonemes)
