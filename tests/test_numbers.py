"""Indian numbers: accepted forms, mobile-only, display and the trunk's number formats."""

import pytest

from callbridge.config import NUMBER_FORMATS
from callbridge.numbers import display_number, format_for_trunk, parse_indian_number


@pytest.mark.parametrize(
    "text",
    [
        "9876543210",
        "09876543210",
        "919876543210",
        "+919876543210",
        "+91 98765 43210",
        "+91-98765-43210",
        " 9876543210 ",
    ],
)
def test_every_accepted_form_of_a_mobile_gives_the_same_e164(text: str) -> None:
    assert parse_indian_number(text, mobile_only=True) == "+919876543210"


def test_a_ten_digit_number_starting_with_91_is_read_as_ten_digits() -> None:
    assert parse_indian_number("9198765432", mobile_only=True) == "+919198765432"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a phone number"),
        ("98765abcde", "is not a phone number"),
        ("+1 415 555 0100", "is not an Indian number"),
        ("+9109876543210", "is not an Indian number"),
        ("987654321", "has 9 digits"),
        ("98765432101", "has 11 digits"),
        ("0919876543210", "has 13 digits"),
        ("98765\n43210", "is not a phone number"),
        ("98765  43210", "is not a phone number"),
        ("(987) 6543210", "is not a phone number"),
        ("٩٨٧٦٥٤٣٢١٠", "is not a phone number"),  # Arabic-Indic digits are not [0-9]
        ("5012345678", "is not a valid Indian phone number"),  # no Indian range starts with 5
    ],
)
def test_malformed_or_invalid_numbers_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_indian_number(text, mobile_only=False)


def test_a_landline_is_accepted_for_agents_and_refused_where_a_mobile_is_required() -> None:
    delhi = "011-2345-6789"
    assert parse_indian_number(delhi, mobile_only=False) == "+911123456789"
    with pytest.raises(ValueError, match="is not an Indian mobile number"):
        parse_indian_number(delhi, mobile_only=True)


def test_display_shows_indian_numbers_as_ten_digits_and_leaves_the_rest() -> None:
    assert display_number("+919876543210") == "9876543210"
    assert display_number("+14155550100") == "+14155550100"
    assert display_number("agent.017") == "agent.017"
    assert display_number("+9198765") == "+9198765"


@pytest.mark.parametrize(
    ("number_format", "written"),
    [
        ("e164", "+919876543210"),
        ("national", "09876543210"),
        ("plain", "9876543210"),
        ("91", "919876543210"),
    ],
)
def test_format_for_trunk(number_format: str, written: str) -> None:
    assert format_for_trunk("+919876543210", number_format) == written
    # What the trunk is sent reads back as the same number.
    assert parse_indian_number(written, mobile_only=True) == "+919876543210"


def test_format_for_trunk_covers_every_configurable_format() -> None:
    for number_format in NUMBER_FORMATS:
        assert format_for_trunk("+919876543210", number_format).endswith("9876543210")


def test_format_for_trunk_refuses_unknown_formats_and_foreign_numbers() -> None:
    with pytest.raises(ValueError, match="unknown number format 'intl'"):
        format_for_trunk("+919876543210", "intl")
    with pytest.raises(ValueError, match="not an Indian E\\.164 number"):
        format_for_trunk("+14155550100", "plain")
