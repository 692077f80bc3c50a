"""Resident identity numbers, credit codes, masking and the packaged region list."""

from __future__ import annotations

import dataclasses
import random
from datetime import date

import pytest

from sso import regions
from sso.identifiers import (
    CREDIT_ALPHABET,
    InvalidIdentifier,
    credit_code_check_char,
    mask_credit_code,
    mask_resident_id,
    organisation_code_check_char,
    resident_id_check_char,
    validate_credit_code,
    validate_resident_id,
)

VECTOR = "11010519491231002X"  # public GB 11643 example: 朝阳区, 1949-12-31, female
# Public business registrations (national enterprise credit information system):
# prefecture-level (440300 深圳, 330100 杭州) and province-level (110000) regions.
PUBLIC_CREDIT_CODES = ["914403001922038216", "9144030071526726XG", "91330100799655058B",
                       "91110000802100433B"]


def mod11_2_recursive(first17: str) -> str:
    """ISO 7064 MOD 11-2 the other way (pure recursive), independent of the weights table."""
    p = 0
    for digit in first17:
        p = ((p + int(digit)) * 2) % 11
    check = (12 - p) % 11
    return "X" if check == 10 else str(check)


def mod31_powers(first17: str) -> str:
    """GB 32100 check from first principles: weights are 3**i mod 31, total must be 0 mod 31."""
    total = sum(CREDIT_ALPHABET.index(c) * pow(3, i, 31) for i, c in enumerate(first17))
    return next(c for v, c in enumerate(CREDIT_ALPHABET) if (total + v) % 31 == 0)


def random_resident_id(rng: random.Random) -> str:
    county = rng.choice(regions.counties()).code
    first, last = date(1900, 1, 1).toordinal(), date(2020, 1, 1).toordinal()
    birth = date.fromordinal(rng.randint(first, last))
    first17 = f"{county}{birth:%Y%m%d}{rng.randint(1, 999):03d}"
    return first17 + resident_id_check_char(first17)


def error_code(value: str, **kwargs: date) -> str:
    with pytest.raises(InvalidIdentifier) as info:
        validate_resident_id(value, **kwargs)
    return info.value.code


# --- resident identity number -------------------------------------------------


def test_public_vector() -> None:
    parsed = validate_resident_id(VECTOR)
    assert parsed.number == VECTOR
    assert parsed.region_code == "110105"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.sex == "female"
    assert parsed.masked == "110105********002X"
    assert resident_id_check_char(VECTOR[:17]) == "X"


def test_lowercase_x_and_surrounding_space_are_normalised() -> None:
    assert validate_resident_id(" 11010519491231002x ").number == VECTOR


def test_odd_sequence_is_male() -> None:
    first17 = "11010519491231001"
    assert validate_resident_id(first17 + resident_id_check_char(first17)).sex == "male"


def test_check_char_matches_independent_implementation() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        first17 = "".join(rng.choices("0123456789", k=17))
        assert resident_id_check_char(first17) == mod11_2_recursive(first17)


@pytest.mark.parametrize(
    "value",
    ["", "1101051949123100", "11010519491231002XX", "1101051949123100XX", "X1010519491231002",
     "11010519491231002Y", "１１０１０５１９４９１２３１００２X", "110105 19491231002X"],
)
def test_format_errors(value: str) -> None:
    assert error_code(value) == "format"


def test_non_string_is_a_format_error() -> None:
    assert error_code(110105194912310021) == "format"  # type: ignore[arg-type]
    assert error_code(None) == "format"  # type: ignore[arg-type]


def test_region_error() -> None:
    first17 = "00000019491231002"
    assert error_code(first17 + resident_id_check_char(first17)) == "region"
    # Abolished 崇文区: rejected by design, the list is of current codes.
    first17 = "11010319491231002"
    assert error_code(first17 + resident_id_check_char(first17)) == "region"


@pytest.mark.parametrize("birth", ["19490230", "19491301", "19490000", "18991231"])
def test_birth_date_errors(birth: str) -> None:
    first17 = f"110105{birth}002"
    assert error_code(first17 + resident_id_check_char(first17)) == "birth_date"


def test_future_birth_date() -> None:
    first17 = "11010520240101002"
    number = first17 + resident_id_check_char(first17)
    assert error_code(number, today=date(2023, 12, 31)) == "birth_date"
    assert validate_resident_id(number, today=date(2024, 1, 1)).birth_date == date(2024, 1, 1)


def test_check_char_error() -> None:
    assert error_code("110105194912310021") == "check_char"


def test_parsed_value_is_frozen_and_repr_masked() -> None:
    parsed = validate_resident_id(VECTOR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.number = "x"  # type: ignore[misc]
    assert VECTOR not in repr(parsed)
    assert "110105********002X" in repr(parsed)


def test_every_single_digit_change_is_detected() -> None:
    """MOD 11-2 catches every single substitution; region and date rules come first."""
    rng = random.Random(2260)
    for _ in range(1000):
        number = random_resident_id(rng)
        validate_resident_id(number)
        for position in range(17):
            for digit in "0123456789":
                if digit == number[position]:
                    continue
                changed = number[:position] + digit + number[position + 1 :]
                if not regions.is_county(changed[:6]):
                    expected = "region"
                else:
                    try:
                        birth = date(int(changed[6:10]), int(changed[10:12]), int(changed[12:14]))
                        expected = "check_char" if date(1900, 1, 1) <= birth <= date.today() \
                            else "birth_date"
                    except ValueError:
                        expected = "birth_date"
                assert error_code(changed) == expected, (number, changed)


# --- unified social credit code -------------------------------------------------


@pytest.mark.parametrize("code", PUBLIC_CREDIT_CODES)
def test_public_credit_codes(code: str) -> None:
    parsed = validate_credit_code(code)
    assert parsed.number == code
    assert parsed.registration_authority == "9"
    assert parsed.organisation_type == "1"
    assert parsed.region_code == code[2:8]
    assert parsed.organisation_code == code[8:17]
    # The embedded GB 11714 organisation code carries its own valid check character.
    assert organisation_code_check_char(code[8:16]) == code[16]
    assert parsed.masked == code[:8] + "******" + code[-4:]


def test_credit_check_char_is_the_only_one_of_31() -> None:
    rng = random.Random(32100)
    counties = regions.counties()
    for _ in range(500):
        first17 = (rng.choice("9159") + rng.choice("123") + rng.choice(counties).code
                   + "".join(rng.choices(CREDIT_ALPHABET, k=9)))
        assert credit_code_check_char(first17) == mod31_powers(first17)
        valid = []
        for candidate in CREDIT_ALPHABET:
            try:
                validate_credit_code(first17 + candidate)
                valid.append(candidate)
            except InvalidIdentifier as error:
                assert error.code == "check_char"
        assert valid == [credit_code_check_char(first17)]


def test_credit_code_lowercase_is_normalised() -> None:
    assert validate_credit_code("9144030071526726xg").number == "9144030071526726XG"


@pytest.mark.parametrize(
    "value", ["", "91440300192203821", "9144030019220382166", "9I4403001922038216",
              "91440300192203821O", "9S4403001922038216", None, 914403001922038216],
)
def test_credit_format_errors(value: object) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_credit_code(value)  # type: ignore[arg-type]
    assert info.value.code == "format"


def test_credit_region_and_check_errors() -> None:
    first17 = "91999999MA01AB3CX"
    with pytest.raises(InvalidIdentifier) as info:
        validate_credit_code(first17 + credit_code_check_char(first17))
    assert info.value.code == "region"
    with pytest.raises(InvalidIdentifier) as info:
        validate_credit_code("914403001922038217")
    assert info.value.code == "check_char"


def test_organisation_code_check_char_special_values() -> None:
    assert organisation_code_check_char("71526726") == "X"  # 11 - r == 10
    bodies = ("".join(random.Random(i).choices("0123456789", k=8)) for i in range(2000))
    assert "0" in {organisation_code_check_char(b) for b in bodies}  # 11 - r == 11
    with pytest.raises(InvalidIdentifier):
        organisation_code_check_char("7152672")


def test_check_char_helpers_reject_bad_input() -> None:
    for bad in ("1234", "1101051949123100A", None):
        with pytest.raises(InvalidIdentifier):
            resident_id_check_char(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifier):
        credit_code_check_char("9144030019220382I")


# --- masking ---------------------------------------------------------------------


def test_masking() -> None:
    assert mask_resident_id("110101199003071234") == "110101********1234"
    assert mask_credit_code("91110101MA00DEM14K") == "91110101******M14K"  # length kept
    # Old 15-digit numbers and other lengths: mask what is there.
    assert mask_resident_id("110105491231002") == "110105*****1002"


@pytest.mark.parametrize("garbage", [None, "", "123", "1101051949", 12345, b"110105194912310021",
                                     ["110105194912310021"]])
def test_masking_never_raises(garbage: object) -> None:
    assert mask_resident_id(garbage) == "****"
    assert mask_credit_code(garbage) == "****"


# --- packaged regions --------------------------------------------------------------


def test_regions_lookup() -> None:
    chaoyang = regions.county("110105")
    assert chaoyang is not None
    assert (chaoyang.name, chaoyang.prefecture, chaoyang.province) == ("朝阳区", "", "北京市")
    assert chaoyang.full_name == "北京市朝阳区"
    assert regions.county("441900").full_name == "广东省东莞市"  # type: ignore[union-attr]
    assert regions.county("130102").full_name == "河北省石家庄市长安区"  # type: ignore[union-attr]
    assert regions.county("110000") is None
    assert regions.is_county("110105") and not regions.is_county("999999")
    assert len(regions.counties()) == 2978
    assert regions.counties() is regions.counties()  # cached, loaded once
    assert regions.county("130171").functional_zone  # type: ignore[union-attr]
    assert not chaoyang.functional_zone
