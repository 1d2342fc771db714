"""Offline tests of echo-stage's logic: `python -m unittest` in this directory (no WebAssembly needed).

The WIT records are stood in for by plain objects: the logic only moves them around.
"""

import unittest
from types import SimpleNamespace

import echo


class Handle:
    """Stands in for a host tensor handle: the logic must return the very same object, never read it."""

    def read(self):
        raise AssertionError("echo must not read tensors")


def make_item(text, tensors):
    return {"text": text, "tensors": tensors}


class EchoTest(unittest.TestCase):
    def test_first_stage_echoes_prompt_and_inputs(self):
        image = Handle()
        out = echo.echo("hello", [("image", image)], [], make_item)
        self.assertEqual(len(out), 1)
        self.assertEqual(out[0]["text"], "hello")
        self.assertIs(out[0]["tensors"][0][1], image)
        self.assertEqual(out[0]["tensors"][0][0], "image")

    def test_first_stage_without_prompt_passes_inputs(self):
        image = Handle()
        [item] = echo.echo(None, [("image", image)], [], make_item)
        self.assertIsNone(item["text"])
        self.assertIs(item["tensors"][0][1], image)

    def test_empty_prompt_is_still_a_prompt(self):
        [item] = echo.echo("", [], [], make_item)
        self.assertEqual(item["text"], "")

    def test_empty_request_is_invalid_input(self):
        with self.assertRaises(echo.InvalidInput):
            echo.echo(None, [], [], make_item)

    def test_sources_are_returned_unchanged_in_order(self):
        a1, a2, b1 = (SimpleNamespace(text=t) for t in ("a1", "a2", "b1"))
        out = echo.echo("ignored", [("image", Handle())], [[a1, a2], [], [b1]], make_item)
        self.assertEqual(len(out), 3)
        for got, want in zip(out, [a1, a2, b1]):
            self.assertIs(got, want)

    def test_prefix_goes_before_every_text(self):
        [item] = echo.echo("hi", [], [], make_item, prefix="v2:")
        self.assertEqual(item["text"], "v2:hi")
        a, b = SimpleNamespace(text="x", tensors=[]), SimpleNamespace(text=None, tensors=[])
        out = echo.echo(None, [], [[a, b]], make_item, prefix="v2:")
        self.assertIs(out[0], a)
        self.assertEqual([i.text for i in out], ["v2:x", None])

    def test_no_prefix_leaves_items_untouched(self):
        a = SimpleNamespace(text="x", tensors=[])
        self.assertEqual(echo.echo(None, [], [[a]], make_item)[0].text, "x")

    def test_sources_without_outputs_give_no_items(self):
        self.assertEqual(echo.echo("p", [], [[], []], make_item), [])


if __name__ == "__main__":
    unittest.main()
