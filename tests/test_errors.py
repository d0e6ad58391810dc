from __future__ import annotations

import pytest

from reangle.errors import MAX_MESSAGE_CHARS, MAX_WORD_CHARS, InvalidInput, TooLarge


@pytest.mark.parametrize(
    ("message", "field", "named"),
    [
        (
            "refusing to fetch http://h/x: h is a loopback address",
            "url",
            "input.loras.1.url: refusing to fetch",
        ),
        ("url: must not contain a NUL character", "url", "input.loras.1.url: must not contain a NUL"),
        ("url has an invalid host name 'a_b'", "url", "input.loras.1.url has an invalid host name"),
        ("url has an invalid host name 'a_b'", None, "input.loras.1.url: url has an invalid host name"),
    ],
)
def test_an_error_about_another_field_names_that_field_once_first_in_its_message(
    message: str, field: str | None, named: str
) -> None:
    about = InvalidInput(message, field=field, hint="fix it").about("input.loras.1.url")
    assert about.message.startswith(named)
    assert about.message.count("input.loras.1.url") == 1
    assert (about.field, about.hint, str(about)) == ("input.loras.1.url", "fix it", about.message)


def test_the_error_keeps_its_kind_and_the_original_is_unchanged() -> None:
    original = TooLarge("the file is larger than 10 bytes", field="image")
    about = original.about("input.images.0")
    assert isinstance(about, TooLarge)
    assert about.code == "too_large"
    assert (original.field, original.message) == ("image", "the file is larger than 10 bytes")


def test_a_reworded_error_says_the_new_message_and_keeps_the_rest() -> None:
    original = TooLarge("the file is too large", field="image", hint="send a smaller one")
    reworded = original.reworded("image_1: the file is too large")
    assert isinstance(reworded, TooLarge)
    assert (reworded.message, str(reworded)) == ("image_1: the file is too large",) * 2
    assert (reworded.field, reworded.hint) == ("image", "send a smaller one")
    assert original.message == "the file is too large"


def test_an_error_with_a_hint_says_it_after_the_message() -> None:
    assert InvalidInput("bad size", hint="use 1K or 2K").with_hint() == "bad size (use 1K or 2K)"
    assert InvalidInput("bad size").with_hint() == "bad size"


def test_an_error_repeats_at_most_a_little_of_what_the_request_sent() -> None:
    path = "/home/someone/" + "a" * 200 + "/photo.png"  # a long path is still shown whole
    assert InvalidInput(f"no file {path}").message == f"no file {path}"

    huge = InvalidInput(f"unknown field {'x' * 10**6}: remove it", field="x" * 10**6, hint="y" * 10**6)
    word = "x" * (MAX_WORD_CHARS - 1) + "…"
    assert huge.message == f"unknown field {word} remove it"
    assert huge.field == word
    assert huge.hint == "y" * (MAX_WORD_CHARS - 1) + "…"

    spaced = InvalidInput("word " * 10**5)
    assert len(spaced.message) == MAX_MESSAGE_CHARS
    assert spaced.message.endswith("…")
    assert spaced.reworded("z " * 10**5).message.endswith("…")
