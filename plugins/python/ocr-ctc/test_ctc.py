"""Offline tests of the CTC logic (no WebAssembly, no numpy): `python -m unittest` in this directory.

The tensors are built with `array`/`struct`, and every fast-path result is checked against a plain Python
reference decoder (argmax by `max`/`index`, then collapse) on random inputs, probabilities and logits alike.
"""

import array
import json
import math
import random
import struct
import sys
import unittest

import ctc

CHARSET_META = "a\nb\nc\n\u4e2d\n\U0001f600"  # five characters, as in the model's `character` metadata
CHARSET = ctc.parse_charset(CHARSET_META)  # blank, a, b, c, 中, 😀, space: 7 labels


def f32_bytes(values):
    a = array.array("f", values)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def one_hot_rows(rows, classes, peak=0.9):
    """A probability tensor whose row r, step t puts `peak` on rows[r][t] and spreads the rest evenly."""
    flat = []
    rest = (1.0 - peak) / (classes - 1)
    for labels in rows:
        for label in labels:
            step = [rest] * classes
            step[label] = peak
            flat.extend(step)
    return f32_bytes(flat)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [x / s for x in e]


def reference_decode(values, rows, steps, classes, charset, probabilities):
    """The obvious decoder, one Python loop per element: what the fast path must match."""
    out = []
    for r in range(rows):
        chars, kept, prev = [], [], -1
        for t in range(steps):
            step = values[(r * steps + t) * classes:(r * steps + t + 1) * classes]
            m = max(step)
            idx = step.index(m)
            p = m if probabilities else softmax(step)[idx]
            if idx != prev and idx != 0:
                chars.append(charset[idx])
                kept.append(p)
            prev = idx
        out.append(("".join(chars), sum(kept) / len(kept) if kept else 0.0))
    return out


class CharsetTest(unittest.TestCase):
    def test_blank_first_space_last(self):
        self.assertEqual(CHARSET, ["blank", "a", "b", "c", "\u4e2d", "\U0001f600", " "])

    def test_characters_that_look_like_syntax_stay_characters(self):
        # The real metadata starts with punctuation, including a backslash and a quote.
        self.assertEqual(ctc.parse_charset('!\n"\n\\\n\'')[1:5], ["!", '"', "\\", "'"])

    def test_empty_metadata_is_an_error(self):
        with self.assertRaises(ctc.CtcError):
            ctc.parse_charset("")


class DecodeTest(unittest.TestCase):
    def test_collapse_repeats_and_drop_blank(self):
        # a a _ a b b _ _ c: a run of the same label is one character, a blank separates two a's
        labels = [1, 1, 0, 1, 2, 2, 0, 0, 3]
        data = one_hot_rows([labels], len(CHARSET))
        [(text, score)] = ctc.decode_rows(data, [1, len(labels), len(CHARSET)], CHARSET)
        self.assertEqual(text, "aabc")
        self.assertAlmostEqual(score, 0.9, places=6)

    def test_space_and_multibyte_labels(self):
        labels = [4, 0, 6, 6, 5]
        data = one_hot_rows([labels], len(CHARSET))
        [(text, _)] = ctc.decode_rows(data, [1, len(labels), len(CHARSET)], CHARSET)
        self.assertEqual(text, "\u4e2d \U0001f600")

    def test_all_blank_row_is_empty_with_score_zero(self):
        data = one_hot_rows([[0, 0, 0]], len(CHARSET))
        self.assertEqual(ctc.decode_rows(data, [1, 3, len(CHARSET)], CHARSET), [("", 0.0)])

    def test_several_rows_are_decoded_independently(self):
        rows = [[1, 0, 2], [3, 3, 3], [0, 0, 0]]
        data = one_hot_rows(rows, len(CHARSET))
        texts = [t for t, _ in ctc.decode_rows(data, [3, 3, len(CHARSET)], CHARSET)]
        self.assertEqual(texts, ["ab", "c", ""])

    def test_score_is_mean_of_kept_steps(self):
        # step probabilities 0.6 (a), 0.8 (a, merged: not kept), 1.0 (blank), 0.7 (b)
        c = len(CHARSET)
        steps = []
        for label, p in [(1, 0.6), (1, 0.8), (0, 1.0), (2, 0.7)]:
            s = [(1.0 - p) / (c - 1)] * c
            s[label] = p
            steps.extend(s)
        [(text, score)] = ctc.decode_rows(f32_bytes(steps), [1, 4, c], CHARSET)
        self.assertEqual(text, "ab")
        self.assertAlmostEqual(score, (0.6 + 0.7) / 2, places=6)

    def test_ties_pick_the_first_index_like_numpy(self):
        c = len(CHARSET)
        step = [0.0] * c
        step[2] = step[5] = 0.5
        [(text, _)] = ctc.decode_rows(f32_bytes(step), [1, 1, c], CHARSET)
        self.assertEqual(text, "b")

    def test_close_scores_sharing_a_top_byte(self):
        # 0.26 and 0.27 share their top byte (0x3E): the full comparison must pick 0.27.
        c = len(CHARSET)
        step = [0.26, 0.2, 0.27, 0.1, 0.1, 0.07, 0.0]
        self.assertEqual(struct.pack("<f", 0.26)[3], struct.pack("<f", 0.27)[3])
        [(text, score)] = ctc.decode_rows(f32_bytes(step), [1, 1, c], CHARSET)
        self.assertEqual(text, "b")
        self.assertAlmostEqual(score, 0.27, places=6)

    def test_random_probabilities_match_the_reference(self):
        rng = random.Random(7)
        rows, steps, classes = 3, 40, 300
        charset = ["blank"] + [chr(0x4E00 + i) for i in range(classes - 2)] + [" "]
        values = []
        for _ in range(rows * steps):
            # peaky for some steps, flat for others, so both single and shared top bytes occur
            temp = rng.choice([0.05, 0.5, 3.0])
            values.extend(softmax([rng.gauss(0, 1) / temp for _ in range(classes)]))
        values = list(array.array("f", values))  # round to f32 like the tensor
        got = ctc.decode_rows(f32_bytes(values), [rows, steps, classes], charset)
        want = reference_decode(values, rows, steps, classes, charset, probabilities=True)
        self.assertEqual([t for t, _ in got], [t for t, _ in want])
        for (_, a), (_, b) in zip(got, want):
            self.assertAlmostEqual(a, b, places=6)

    def test_logits_match_the_reference(self):
        # A model without a softmax: mixed-sign and all-negative timesteps; scores become softmax(max).
        rng = random.Random(11)
        rows, steps, classes = 2, 30, 50
        charset = ["blank"] + [chr(0x61 + i % 26) for i in range(classes - 2)] + [" "]
        values = []
        for t in range(rows * steps):
            shift = -40.0 if t % 3 == 0 else 0.0  # every third step entirely negative
            values.extend(rng.gauss(0, 4) + shift for _ in range(classes))
        values = list(array.array("f", values))
        data = f32_bytes(values)
        self.assertFalse(ctc.looks_like_probabilities(data, classes))
        got = ctc.decode_rows(data, [rows, steps, classes], charset)
        want = reference_decode(values, rows, steps, classes, charset, probabilities=False)
        self.assertEqual([t for t, _ in got], [t for t, _ in want])
        for (_, a), (_, b) in zip(got, want):
            self.assertAlmostEqual(a, b, places=5)

    def test_shape_errors(self):
        data = one_hot_rows([[1, 2]], len(CHARSET))
        with self.assertRaisesRegex(ctc.CtcError, "classes"):
            ctc.decode_rows(data, [1, 2, len(CHARSET) + 1], CHARSET)
        with self.assertRaisesRegex(ctc.CtcError, "bytes"):
            ctc.decode_rows(data, [2, 2, len(CHARSET)], CHARSET)
        with self.assertRaisesRegex(ctc.CtcError, "3-D"):
            ctc.decode_rows(data, [2, len(CHARSET)], CHARSET)

    def test_empty_batch(self):
        self.assertEqual(ctc.decode_rows(b"", [0, 25, len(CHARSET)], CHARSET), [])


class ItemTest(unittest.TestCase):
    def test_pick_the_one_f32_3d_tensor_by_shape_not_name(self):
        self.assertEqual(ctc.pick_scores([("x_shape", [4], False), ("fetch_name_0", [2, 40, 7], True)]), 1)
        self.assertIsNone(ctc.pick_scores([]))

    def test_pick_scores_rejects_none_or_several(self):
        with self.assertRaisesRegex(ctc.CtcError, "found 0"):
            ctc.pick_scores([("ids", [2, 40, 7], False)])
        with self.assertRaisesRegex(ctc.CtcError, "found 2"):
            ctc.pick_scores([("a", [1, 2, 3], True), ("b", [1, 2, 3], True)])

    def test_boxes(self):
        self.assertEqual(ctc.parse_boxes('{"boxes": [[1, 2, 3.5, 4]]}'), [[1, 2, 3.5, 4]])
        for bad in [None, "nope", "[]", '{"boxes": 3}', '{"boxes": [[1, 2, 3]]}', '{"boxes": [[1, 2, 3, "4"]]}']:
            with self.assertRaises(ctc.CtcError, msg=bad):
                ctc.parse_boxes(bad)

    def test_rows_and_boxes_must_pair_up(self):
        self.assertEqual(ctc.zip_lines([("ab", 0.5)], [[0, 0, 1, 1]]), [("ab", 0.5, [0, 0, 1, 1])])
        with self.assertRaisesRegex(ctc.CtcError, "2 boxes"):
            ctc.zip_lines([("ab", 0.5)], [[0, 0, 1, 1], [0, 2, 1, 3]])

    def test_lines_json(self):
        doc = json.loads(ctc.lines_json([("\u4e2d a", 0.123456789, [1, 2, 3, 4])]))
        self.assertEqual(doc, {"lines": [{"text": "\u4e2d a", "score": 0.12346, "box": [1, 2, 3, 4]}]})
        self.assertEqual(json.loads(ctc.lines_json([])), {"lines": []})


if __name__ == "__main__":
    unittest.main()
