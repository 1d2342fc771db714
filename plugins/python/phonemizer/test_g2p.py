"""Offline tests of the phonemizer's logic (no WebAssembly, no numpy): `python -m unittest` in this directory.

They need cmudict.dict ($OMNIHOST_LEXICON, or the repository's .setup/lexicon from `cargo xtask setup`) and,
for the vocabulary and voice checks, Kokoro's files in .setup/models/kokoro. testdata/corpus.tsv is shared
with the Rust port's tests; `python test_g2p.py --write-corpus` rewrites its expectations from this module
(review the diff: every changed line is a change in what Kokoro will say).
"""

import json
import os
import struct
import sys
import unittest

import g2p
import kokoro

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "testdata", "corpus.tsv")
KOKORO_DIR = os.path.join(HERE, "..", "..", "..", ".setup", "models", "kokoro")


def kokoro_vocab():
    with open(os.path.join(KOKORO_DIR, "vocab.json"), encoding="utf-8") as f:
        return kokoro.parse_vocab(f.read())


def read_corpus():
    cases = []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                text, expected = line.split("\t")
                cases.append((text, expected))
    return cases


def npy(rows, dim=kokoro.STYLE_DIM, version=1):
    """A .npy blob of f32 [rows, 1, dim] whose row r holds r + k / 1000 at column k."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 1, {dim}), }}"
    prefix = 10 if version == 1 else 12
    header += " " * ((64 - (prefix + len(header) + 1) % 64) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    data = struct.pack(f"<{rows * dim}f", *[r + k / 1000 for r in range(rows) for k in range(dim)])
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin-1") + data


class Lexicon(unittest.TestCase):
    def test_loaded(self):
        self.assertGreater(len(g2p.LEXICON), 100000, "cmudict.dict was not found")

    def test_first_pronunciation_comments_and_order(self):
        lexicon = g2p.parse_lexicon("b B IY1\na AH0\na(2) EY1\nzed Z EH1 D # a comment\n#x X\nc S IY1\nb B AY1\n")
        self.assertEqual(lexicon.get("a"), "AH0")
        self.assertEqual(lexicon.get("b"), "B IY1")  # the first one wins, also out of order
        self.assertEqual(lexicon.get("zed"), "Z EH1 D")
        self.assertEqual(lexicon.get("c"), "S IY1")
        self.assertIsNone(lexicon.get("a(2)"))
        self.assertIsNone(lexicon.get("#x"))
        self.assertIsNone(lexicon.get("d"))
        self.assertEqual(len(lexicon), 4)


class Words(unittest.TestCase):
    def test_known_words(self):
        self.assertEqual(g2p.phonemize("hello"), "həlˈO")
        self.assertEqual(g2p.phonemize("world"), "wˈɜɹld")
        self.assertEqual(g2p.phonemize("Paris"), "pˈɛɹɪs")
        self.assertEqual(g2p.phonemize("Hello, world."), "həlˈO, wˈɜɹld.")
        self.assertEqual(g2p.phonemize("The capital of France is Paris."), "ðə kˈæpəɾᵊl ʌv fɹˈæns ɪz pˈɛɹɪs.")

    def test_arpabet_mapping(self):
        self.assertEqual(g2p.arpabet_to_ipa("HH AH0 L OW1".split()), "həlˈO")
        self.assertEqual(g2p.arpabet_to_ipa("B AH1 T ER0".split()), "bˈʌɾəɹ")  # flap, unstressed ER
        self.assertEqual(g2p.arpabet_to_ipa("L IH1 T AH0 L".split()), "lˈɪɾᵊl")  # syllabic L
        self.assertEqual(g2p.arpabet_to_ipa("W AA1 N T IH0 D".split()), "wˈɑntᵻd")  # reduced -ed
        self.assertEqual(g2p.arpabet_to_ipa("HH OW0 T EH1 L".split()), "hOtˈɛl")  # no flap before stress
        self.assertEqual(g2p.arpabet_to_ipa("AA2 B ER1".split()), "ˌɑbˈɜɹ")

    def test_function_words_and_the(self):
        self.assertEqual(g2p.phonemize("a cat"), "ɐ kˈæt")
        self.assertEqual(g2p.phonemize("the cat"), "ðə kˈæt")
        self.assertEqual(g2p.phonemize("the owl"), "ði ˈWl")
        self.assertEqual(g2p.phonemize("The end."), "ði ˈɛnd.")

    def test_apostrophes(self):
        self.assertEqual(g2p.phonemize("don't"), "dˈOnt")
        self.assertEqual(g2p.phonemize("it’s"), "ˈɪts")  # a curly apostrophe too
        self.assertEqual(g2p.phonemize("Zorblax's"), g2p.phonemize("Zorblax") + "ᵻz")
        self.assertEqual(g2p.phonemize("Kraxley's"), g2p.phonemize("Kraxley") + "z")

    def test_acronyms(self):
        self.assertEqual(g2p.phonemize("GPU"), "ʤˌipˌijˈu")
        self.assertEqual(g2p.phonemize("the U.S."), "ðə jˌuˈɛs.")
        self.assertEqual(g2p.phonemize("NASA"), "nˈæsə")  # in the dictionary: said as a word
        self.assertEqual(g2p.phonemize("XKCD"), "ˌɛkskˌAsˌidˈi")

    def test_letter_to_sound(self):
        self.assertEqual(g2p.letters_to_sounds("blorptastic"),
                         ["B", "L", "AO1", "R", "P", "T", "AH0", "S", "T", "IH0", "K"])
        self.assertEqual(g2p.phonemize("zorblax"), "zˈɔɹbləks")
        self.assertEqual(g2p.phonemize("shmake"), "ʃmˈAk")  # digraph, magic e
        self.assertEqual(g2p.phonemize("kneeth"), "nˈiθ")  # silent k, vowel team
        self.assertEqual(g2p.phonemize("phroat"), "fɹˈOt")
        self.assertEqual(g2p.phonemize("whizzle"), "wˈɪzᵊl")  # doubled consonant, syllabic L
        self.assertEqual(g2p.phonemize("quonk"), "kwˈɑŋk")
        self.assertEqual(g2p.phonemize("brrr"), "bˌiˌɑɹˌɑɹˈɑɹ")  # no vowel: spelled

    def test_never_fails(self):
        for text in ["", " ", "...", "😀", "\x00\x01", "'''", "ß∂ƒ", "a" * 300, "-", "$", "1" * 40, "#", "e.g.",
                     "St.", "'s", "-$", "$-1", "1.", "1,", "1,00", "3rd4", "x'y'z", "Q"]:
            result = g2p.phonemize(text)
            self.assertIsInstance(result, str)


class Numbers(unittest.TestCase):
    def test_cardinals(self):
        self.assertEqual(g2p.cardinal(0), ["zero"])
        self.assertEqual(" ".join(g2p.cardinal(123)), "one hundred twenty three")
        self.assertEqual(" ".join(g2p.cardinal(1_002_003_004)), "one billion two million three thousand four")

    def test_spoken(self):
        def words(text):
            return " ".join(w for kind, w in g2p.tokenize(text))

        self.assertEqual(words("3.14"), "three point one four")
        self.assertEqual(words("-42"), "minus forty two")
        self.assertEqual(words("1st 2nd 3rd 21st 100th"), "first second third twenty first one hundredth")
        self.assertEqual(words("1999"), "nineteen ninety nine")
        self.assertEqual(words("2026"), "twenty twenty six")
        self.assertEqual(words("2005"), "two thousand five")
        self.assertEqual(words("1905"), "nineteen oh five")
        self.assertEqual(words("1900"), "nineteen hundred")
        self.assertEqual(words("1990s"), "nineteen nineties")
        self.assertEqual(words("3000"), "three thousand")
        self.assertEqual(words("1,999"), "one thousand nine hundred ninety nine")  # a comma: not a year
        self.assertEqual(words("$5"), "five dollars")
        self.assertEqual(words("$1"), "one dollar")
        self.assertEqual(words("$3.50"), "three dollars and fifty cents")
        self.assertEqual(words("$0.01"), "one cent")
        self.assertEqual(words("$2,000,000"), "two million dollars")
        self.assertEqual(words("50%"), "fifty percent")
        self.assertEqual(words("2.5%"), "two point five percent")
        self.assertEqual(words("007"), "zero zero seven")

    def test_phonemes(self):
        self.assertEqual(g2p.phonemize("$5"), "fˈIv dˈɑləɹz")
        self.assertEqual(g2p.phonemize("50%"), "fˈɪfti pəɹsˈɛnt")


class Symbols(unittest.TestCase):
    def words(self, text):
        return " ".join(w for kind, w in g2p.tokenize(text))

    def test_symbols(self):
        self.assertEqual(self.words("A & B"), "A and B")
        self.assertEqual(self.words("1 + 1 = 2"), "one plus one equals two")
        self.assertEqual(self.words("me @ home"), "me at home")
        self.assertEqual(self.words("#1 #tag"), "number one hash tag")
        self.assertEqual(self.words("30°"), "thirty degrees")
        self.assertEqual(self.words("and/or"), "and slash or")

    def test_abbreviations(self):
        self.assertEqual(self.words("Mr. Mrs. Dr. vs. e.g. i.e."),
                         "mister missus doctor versus for example that is")
        self.assertEqual(self.words("St. Louis on Main St. today"), "saint Louis on Main street today")
        self.assertEqual(g2p.tokenize("etc.")[-1], ("punct", "."))  # the period also ends the sentence


class Punctuation(unittest.TestCase):
    def test_kept_and_attached(self):
        self.assertEqual(g2p.phonemize("Wait... what?!"), "wˈAt… wˈʌt?!")
        self.assertEqual(g2p.phonemize('She said "hi" (twice); fine: ok'),
                         "ʃˈi sˈɛd “hˈI” (twˈIs); fˈIn: ˈOkˈA")
        self.assertEqual(g2p.phonemize("“curly” «quotes»"), "“kˈɜɹli” “kwˈOts”")

    def test_dashes(self):
        self.assertEqual(g2p.phonemize("well-known"), "wˈɛl nˈOn")
        self.assertEqual(g2p.phonemize("yes - no -- maybe—fine"), "jˈɛs— nˈO— mˈAbi— fˈIn")
        self.assertEqual(g2p.phonemize("- bullet\n- list"), "bˈʊlət lˈɪst")

    def test_dropped(self):
        self.assertEqual(g2p.phonemize("**bold** _it_ `code` 😀 ~x~"), g2p.phonemize("bold it code x"))
        self.assertEqual(g2p.phonemize("[a] {b}"), "(ɐ) (bˈi)")

    def test_speakable(self):
        self.assertFalse(g2p.speakable(g2p.phonemize("... !?")))
        self.assertFalse(g2p.speakable(""))
        self.assertTrue(g2p.speakable(g2p.phonemize("hi.")))


class Vocabulary(unittest.TestCase):
    """Every symbol the phonemiser can emit is in Kokoro's vocabulary, and each one is reachable."""

    EMITTABLE = (set("".join(g2p.VOWELS.values())) | set("".join(g2p.UNSTRESSED.values()))
                 | set("".join(g2p.CONSONANTS.values())) | set("".join(g2p.FUNCTION_WORDS.values()))
                 | set(g2p.THE_BEFORE_VOWEL) | set(g2p.PUNCTUATION) | set(g2p.PUNCT_MAP.values())
                 | {g2p.PRIMARY, g2p.SECONDARY, g2p.FLAP, g2p.SYLLABIC, g2p.REDUCED_I, " "})

    # One input per symbol that makes it appear.
    WITNESSES = {
        "ɑ": "father", "æ": "cat", "ʌ": "but", "ə": "sofa", "ɔ": "law", "W": "cow", "I": "my", "ɛ": "bed",
        "ɜ": "bird", "A": "day", "ɪ": "sit", "i": "see", "O": "go", "Y": "boy", "ʊ": "book", "u": "blue",
        "ɹ": "red", "ɐ": "a cat", "b": "bee", "ʧ": "church", "d": "dog", "ð": "this", "f": "fun", "ɡ": "go",
        "h": "hat", "ʤ": "jam", "k": "kit", "l": "lip", "m": "map", "n": "no", "ŋ": "sing", "p": "pen",
        "s": "sun", "ʃ": "she", "t": "ten", "θ": "thin", "v": "van", "w": "win", "j": "yes", "z": "zoo",
        "ʒ": "measure", "ˈ": "hello", "ˌ": "understand", "ɾ": "water", "ᵊ": "little", "ᵻ": "wanted",
        " ": "hello world", ";": "a; b", ":": "a: b", ",": "a, b", ".": "a.", "!": "a!", "?": "a?",
        "—": "a - b", "…": "a...", "(": "(a)", ")": "(a)", "“": '"a"', "”": '"a"',
    }

    def test_emittable_symbols_are_in_the_vocabulary(self):
        vocab = kokoro_vocab()
        self.assertEqual(self.EMITTABLE - set(vocab), set())

    def test_every_emittable_symbol_appears(self):
        self.assertEqual(self.EMITTABLE - set(self.WITNESSES), set(), "a symbol without a witness")
        for symbol, text in self.WITNESSES.items():
            self.assertIn(symbol, g2p.phonemize(text), f"{text!r} should say {symbol!r}")

    def test_corpus_output_is_in_the_vocabulary(self):
        vocab = kokoro_vocab()
        for text, _ in read_corpus():
            self.assertEqual(set(g2p.phonemize(text)) - set(vocab), set(), text)


class Corpus(unittest.TestCase):
    def test_corpus(self):
        cases = read_corpus()
        self.assertGreaterEqual(len(cases), 50)
        for text, expected in cases:
            self.assertEqual(g2p.phonemize(text), expected, text)


class Kokoro(unittest.TestCase):
    def test_ids(self):
        vocab = kokoro_vocab()
        ids = kokoro.to_ids(g2p.phonemize("Hello, world."), vocab)
        self.assertEqual(len(ids), len("həlˈO, wˈɜɹld."))
        self.assertEqual(ids[:3], [vocab["h"], vocab["ə"], vocab["l"]])
        dims, data = kokoro.tokens_tensor(ids)
        self.assertEqual(dims, [1, len(ids) + 2])
        self.assertEqual(struct.unpack(f"<{len(ids) + 2}q", data), (0, *ids, 0))

    def test_short_text_is_one_piece(self):
        self.assertEqual(kokoro.split_phonemes("  həlˈO.  "), ["həlˈO."])
        self.assertEqual(kokoro.split_phonemes(""), [])

    def test_long_text_splits_at_sentences_then_clauses_then_spaces(self):
        sentence = g2p.phonemize("The quick brown fox jumps over the lazy dog, again and again.")
        text = " ".join([sentence] * 20)
        pieces = kokoro.split_phonemes(text)
        self.assertGreater(len(pieces), 1)
        self.assertTrue(all(len(p) <= kokoro.MAX_IDS for p in pieces))
        self.assertTrue(all(p.endswith(".") for p in pieces))
        self.assertEqual(" ".join(pieces), text)
        clauses = ", ".join(["wˈʌn tˈu θɹˈi"] * 60)
        pieces = kokoro.split_phonemes(clauses)
        self.assertTrue(all(len(p) <= kokoro.MAX_IDS and p.endswith(",") for p in pieces[:-1]))
        words = " ".join(["wˈʌn"] * 200)
        pieces = kokoro.split_phonemes(words)
        self.assertTrue(all(len(p) <= kokoro.MAX_IDS for p in pieces))
        self.assertEqual(" ".join(pieces), words)
        self.assertEqual(kokoro.split_phonemes("a" * 1200), ["a" * 510, "a" * 510, "a" * 180])

    def test_long_input_end_to_end(self):
        text = " ".join(["In 1999, the quick brown fox jumped over 3 lazy dogs; nobody knew why."] * 30)
        vocab = kokoro_vocab()
        pieces = kokoro.split_phonemes(g2p.phonemize(text))
        self.assertGreater(len(pieces), 3)
        for piece in pieces:
            self.assertLessEqual(len(kokoro.to_ids(piece, vocab)), kokoro.MAX_IDS)

    def test_style_row_is_n_minus_1(self):
        for version in (1, 2):
            table = kokoro.VoiceTable(npy(510, version=version), "test")
            for n, row in ((1, 0), (5, 4), (510, 509), (0, 0), (600, 509)):
                values = struct.unpack("<256f", table.style(n))
                self.assertAlmostEqual(values[0], row, places=3)
                self.assertAlmostEqual(values[7], row + 0.007, places=3)

    def test_real_voice_rows(self):
        with open(os.path.join(KOKORO_DIR, "voices", "jf_alpha.npy"), "rb") as f:
            blob = f.read()
        table = kokoro.VoiceTable(blob, "jf_alpha")
        self.assertEqual(table.rows, 510)
        self.assertEqual(table.style(12), blob[table.data_start + 11 * 1024:table.data_start + 12 * 1024])

    def test_bad_voice_files(self):
        with self.assertRaises(kokoro.KokoroError):
            kokoro.VoiceTable(b"not a npy file", "x")
        with self.assertRaises(kokoro.KokoroError):
            kokoro.VoiceTable(npy(4, dim=128), "x")
        with self.assertRaises(kokoro.KokoroError):
            kokoro.VoiceTable(npy(4)[:-8], "x")

    def test_params(self):
        self.assertEqual(kokoro.parse_params("", "jf_alpha"), ("jf_alpha", 1.0))
        self.assertEqual(kokoro.parse_params("{}", "jm_kumo"), ("jm_kumo", 1.0))
        self.assertEqual(kokoro.parse_params('{"voice": "jf_nezumi", "speed": 1.5, "max_tokens": 9}', "x"),
                         ("jf_nezumi", 1.5))
        self.assertEqual(kokoro.parse_params('{"speed": 4}', "x"), ("x", 4.0))
        for doc in ('{"speed": 0.2}', '{"speed": 4.5}', '{"speed": "fast"}', '{"speed": true}', '{"voice": 3}',
                    "[1]", "not json", '{"speed": NaN}', '{"speed": 1e999}', '{"speed": ' + "9" * 400 + "}"):
            with self.assertRaises(kokoro.ParamError, msg=doc):
                kokoro.parse_params(doc, "x")

    def test_voice_names(self):
        self.assertTrue(kokoro.is_voice_name("jf_alpha"))
        for bad in ("", "../jf_alpha", "a/b", "a.npy", "ä"):
            self.assertFalse(kokoro.is_voice_name(bad), bad)
        self.assertEqual(kokoro.unknown_voice("zz", ["jf_alpha", "jm_kumo"]),
                         "unknown voice `zz`; available: jf_alpha, jm_kumo")
        self.assertEqual(kokoro.unknown_voice("zz", []), "unknown voice `zz`; available: (none)")

    def test_vocab_parsing(self):
        self.assertEqual(kokoro.parse_vocab('{"vocab": {"a": 43}}'), {"a": 43})
        for doc in ("{", '{"vocab": []}', '{"vocab": {"a": "x"}}'):
            with self.assertRaises(kokoro.KokoroError):
                kokoro.parse_vocab(doc)

    def test_item_json(self):
        doc = json.dumps({"phonemes": "həlˈO", "voice": "jf_alpha"}, ensure_ascii=False, separators=(",", ":"))
        self.assertEqual(doc, '{"phonemes":"həlˈO","voice":"jf_alpha"}')


def write_corpus():
    cases = read_corpus()
    with open(CORPUS, encoding="utf-8") as f:
        comments = [line for line in f if line.startswith("#")]
    with open(CORPUS, "w", encoding="utf-8") as f:
        f.writelines(comments)
        for text, _ in cases:
            f.write(f"{text}\t{g2p.phonemize(text)}\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-corpus"]:
        write_corpus()
    else:
        unittest.main()
