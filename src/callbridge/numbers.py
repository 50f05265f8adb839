"""Indian phone numbers: what the API accepts, how we store them, show them and dial them.

DESIGN.md ("Numbers"): ``to_number``, ``agent_number`` and caller IDs are Indian numbers written
as 10 digits, or with a ``+91``, ``91`` or ``0`` prefix. They are checked with ``phonenumbers``
(region IN) and stored in E.164 (``+919876543210``); the API and the callbacks show them as the
spec's examples do (the 10-digit national number), and the trunk gets them in its configured
``[trunk] number_format``.

The accepted forms are decided by length, before ``phonenumbers`` judges the number:

=============  =================  ====================================================
digits         example            reading
=============  =================  ====================================================
10             ``9876543210``     the national significant number itself
11, leading 0  ``09876543210``    trunk prefix 0 + the 10 digits
12, leading 91 ``919876543210``   country code + the 10 digits (with or without "+")
=============  =================  ====================================================

Spaces and hyphens between digits are allowed (``+91 98765-43210``), as CRMs store them so;
nothing else is. Every Indian mobile and geographic (landline) number has a 10-digit national
significant number, so the table covers both; customers must be mobiles, agents may be
landlines.
"""

import re

import phonenumbers
from phonenumbers import PhoneNumberType

__all__ = ["display_number", "format_for_trunk", "parse_indian_number"]

#: India's country calling code.
COUNTRY_CODE = 91
_PREFIX = "+91"
#: An optional "+", then digits, single spaces or hyphens between them.
_WRITTEN = re.compile(r"\+?[0-9]+(?:[ -][0-9]+)*")
#: The 10-digit national significant number inside each accepted form.
_FORMS = (
    re.compile(r"([0-9]{10})"),
    re.compile(r"0([0-9]{10})"),
    re.compile(r"91([0-9]{10})"),
)
#: A stored Indian number.
_STORED = re.compile(r"\+91[0-9]{10}")
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


def parse_indian_number(text: str, *, mobile_only: bool) -> str:
    """``text`` as an E.164 string (``"+919876543210"``).

    Raises ``ValueError`` whose message says what is wrong, fit to show an API client.
    ``mobile_only`` refuses landlines and other non-mobile numbers (customers must be mobiles).
    """
    nsn = _national_digits(text)
    parsed = phonenumbers.parse(_PREFIX + nsn, None)
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{text!r} is not a valid Indian phone number")
    if mobile_only and phonenumbers.number_type(parsed) not in _MOBILE_TYPES:
        raise ValueError(f"{text!r} is not an Indian mobile number")
    return _PREFIX + nsn


def _national_digits(text: str) -> str:
    written = text.strip()
    if not _WRITTEN.fullmatch(written):
        raise ValueError(
            f"{text!r} is not a phone number: expected 10 digits, optionally prefixed "
            "with +91, 91 or 0"
        )
    digits = re.sub(r"[ -]", "", written)
    plus = digits.startswith("+")
    digits = digits.removeprefix("+")
    for form in _FORMS[2:] if plus else _FORMS:
        match = form.fullmatch(digits)
        if match:
            return match.group(1)
    if plus:
        raise ValueError(f"{text!r} is not an Indian number: expected +91 and 10 digits")
    raise ValueError(
        f"{text!r} has {len(digits)} digits: expected 10, optionally prefixed with +91, 91 or 0"
    )


def display_number(e164: str) -> str:
    """A stored number as the spec's examples show it: an Indian number as its 10 national
    digits (``"9876543210"``). Anything else (a foreign E.164 number, or a softphone leg's
    crm_username) is returned unchanged."""
    return e164[len(_PREFIX) :] if _STORED.fullmatch(e164) else e164


def format_for_trunk(e164: str, number_format: str) -> str:
    """How ``e164`` is written in a Request-URI to the trunk, by ``[trunk] number_format``:
    ``e164`` +919876543210, ``national`` 09876543210, ``plain`` 9876543210,
    ``91`` 919876543210. Raises ``ValueError`` for an unknown format or a number that is not
    a stored Indian E.164 number."""
    nsn = display_number(e164)
    if nsn == e164:
        raise ValueError(f"{e164!r} is not an Indian E.164 number (+91 and 10 digits)")
    formats = {"e164": _PREFIX + nsn, "national": "0" + nsn, "plain": nsn, "91": "91" + nsn}
    if number_format not in formats:
        raise ValueError(
            f"unknown number format {number_format!r}: expected one of {', '.join(formats)}"
        )
    return formats[number_format]
