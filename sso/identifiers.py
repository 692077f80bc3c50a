"""Resident identity numbers (GB 11643-1999) and unified social credit codes (GB 32100-2015).

Pure functions, no Flask: connectors, forms, the CLI and the mock-data
generator all share them.  Validation raises :class:`InvalidIdentifier` with a
machine-readable ``code`` so that callers can choose the message (and language)
they show, and tests can tell the failure modes apart.

Both identifiers are personal or sensitive data: the ``repr`` of the parsed
values is masked so that they do not leak into logs through tracebacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from sso import regions

ErrorCode = Literal["format", "region", "birth_date", "check_char"]

# --- GB 11643-1999 resident identity number ---------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_VALUES = "10X98765432"
# [0-9], not \d: \d also matches full-width and other Unicode digits.
_ID_FIRST17 = re.compile(r"[0-9]{17}")
_ID_PATTERN = re.compile(r"[0-9]{17}[0-9X]")
_EARLIEST_BIRTH = date(1900, 1, 1)

# --- GB 32100-2015 unified social credit code --------------------------------

CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, Z, S, V
_CREDIT_VALUES = {char: value for value, char in enumerate(CREDIT_ALPHABET)}
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CREDIT_FIRST17 = re.compile(r"[0-9A-HJ-NPQRTUWXY]{17}")
_CREDIT_PATTERN = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")
# Central-government bodies are registered under the national code.
_NATIONAL_REGION = "100000"

# Organisation types under registration authority "9" (market regulation).
BUSINESS_ORG_TYPES = {
    "1": "enterprise",
    "2": "individual_business",
    "3": "farmers_cooperative",
}

# --- GB 11714-1997 organisation code (characters 9-17 of a credit code) ------

_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_FIRST8 = re.compile(r"[0-9A-Z]{8}")


class InvalidIdentifier(ValueError):
    """An identifier failed validation; ``code`` says which rule it broke."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def __repr__(self) -> str:
        return f"InvalidIdentifier({self.code!r}, {self.message!r})"


# --- masking ------------------------------------------------------------------


def _mask(value: object, keep_start: int, keep_end: int) -> str:
    # Never raises: masking runs in log and error paths on arbitrary input.
    text = value.strip() if isinstance(value, str) else ""
    # Hide at least four characters, else masking would reveal most of the value.
    if len(text) < keep_start + keep_end + 4:
        return "****"
    hidden = len(text) - keep_start - keep_end
    return text[:keep_start] + "*" * hidden + text[len(text) - keep_end :]


def mask_resident_id(value: object) -> str:
    """First 6 and last 4 characters, e.g. ``110101********1234``."""
    return _mask(value, 6, 4)


def mask_credit_code(value: object) -> str:
    """First 8 and last 4 characters, e.g. ``91110105******123X``."""
    return _mask(value, 8, 4)


def mask_phone(phone: str | None) -> str:
    """``138****8000``: enough for the person to recognise their own number."""
    phone = phone or ""
    return phone[:3] + "****" + phone[-4:] if len(phone) == 11 else "****"


# --- resident identity number -------------------------------------------------


def resident_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    if not isinstance(first17, str) or not _ID_FIRST17.fullmatch(first17):
        raise InvalidIdentifier("format", "expected 17 digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_VALUES[total % 11]


@dataclass(frozen=True, slots=True, repr=False)
class ResidentId:
    """A validated 18-character resident identity number."""

    number: str
    region_code: str
    birth_date: date
    sex: Literal["male", "female"]

    @property
    def masked(self) -> str:
        return mask_resident_id(self.number)

    def __repr__(self) -> str:
        return f"ResidentId({self.masked!r})"


def validate_resident_id(value: str, *, today: date | None = None) -> ResidentId:
    """Parse and validate a GB 11643-1999 number; raise :class:`InvalidIdentifier`.

    Checks run in order format, region, birth_date, check_char, so a number
    that breaks several rules reports the first.  ``region`` accepts only
    *current* county-level codes: holders of numbers with abolished codes, or of
    Hong Kong/Macao/Taiwan residence permits (810000, 820000, 830000), are
    rejected by design of this mock gateway.  ``today`` is injectable for tests.
    """
    if not isinstance(value, str):
        raise InvalidIdentifier("format", "resident identity number must be a string")
    # Users type a lowercase x; the standard character is X.
    number = value.strip().upper()
    if not _ID_PATTERN.fullmatch(number):
        raise InvalidIdentifier("format", "expected 17 digits followed by a digit or X")
    region_code = number[:6]
    if not regions.is_county(region_code):
        raise InvalidIdentifier("region", "unknown county-level region code")
    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdentifier("birth_date", "birth date is not a real date") from None
    if birth < _EARLIEST_BIRTH or birth > (today or date.today()):
        raise InvalidIdentifier("birth_date", "birth date out of range")
    if resident_id_check_char(number[:17]) != number[17]:
        raise InvalidIdentifier("check_char", "check character does not match")
    sex: Literal["male", "female"] = "male" if int(number[16]) % 2 else "female"
    return ResidentId(number=number, region_code=region_code, birth_date=birth, sex=sex)


# --- organisation code ----------------------------------------------------------


def organisation_code_check_char(first8: str) -> str:
    """GB 11714 check character: weights 3 7 9 10 5 8 4 2, 11 - sum % 11 (10 is X, 11 is 0)."""
    if not isinstance(first8, str) or not _ORG_FIRST8.fullmatch(first8):
        raise InvalidIdentifier("format", "expected 8 digits or capital letters")
    # int(char, 36) maps 0-9 to 0-9 and A-Z to 10-35, as the standard does.
    total = sum(int(char, 36) * weight for char, weight in zip(first8, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


# --- unified social credit code -------------------------------------------------


def credit_code_check_char(first17: str) -> str:
    """The GB 32100-2015 MOD 31 check character for the first 17 characters."""
    if not isinstance(first17, str) or not _CREDIT_FIRST17.fullmatch(first17):
        raise InvalidIdentifier("format", "expected 17 credit-code characters")
    total = sum(
        _CREDIT_VALUES[char] * weight for char, weight in zip(first17, _CREDIT_WEIGHTS, strict=True)
    )
    return CREDIT_ALPHABET[(31 - total % 31) % 31]


@dataclass(frozen=True, slots=True, repr=False)
class CreditCode:
    """A validated 18-character unified social credit code."""

    number: str
    registration_authority: str  # "9": market regulation (business registration)
    organisation_type: str  # under "9": "1" enterprise, "2" individual, "3" cooperative
    region_code: str
    organisation_code: str  # nine characters, GB 11714

    @property
    def masked(self) -> str:
        return mask_credit_code(self.number)

    def __repr__(self) -> str:
        return f"CreditCode({self.masked!r})"


def _is_credit_region(code: str) -> bool:
    # Unlike an identity number, the region here is the *registering
    # administration's*: a province (xx0000) or a prefecture (xxxx00) registers
    # many organisations itself.
    return (
        regions.is_county(code)
        or code in regions.higher_level_codes()
        or code == _NATIONAL_REGION
    )


def validate_credit_code(value: str) -> CreditCode:
    """Parse and validate a GB 32100-2015 code; raise :class:`InvalidIdentifier`.

    Checks run in order format, region, check_char.  The embedded
    organisation code's own check character is not verified: the MOD 31 check
    over all 17 characters already catches transcription errors.
    """
    if not isinstance(value, str):
        raise InvalidIdentifier("format", "credit code must be a string")
    number = value.strip().upper()
    if not _CREDIT_PATTERN.fullmatch(number):
        raise InvalidIdentifier("format", "expected 18 characters from the credit-code alphabet")
    region_code = number[2:8]
    if not _is_credit_region(region_code):
        raise InvalidIdentifier("region", "unknown region code")
    if credit_code_check_char(number[:17]) != number[17]:
        raise InvalidIdentifier("check_char", "check character does not match")
    return CreditCode(
        number=number,
        registration_authority=number[0],
        organisation_type=number[1],
        region_code=region_code,
        organisation_code=number[8:17],
    )
