"""The population registry connector: natural persons by resident identity number.

A mock of the national population database as a real SQL data set; a real
deployment swaps in a connector calling the national interface, same methods.
"""

from __future__ import annotations

from datetime import date

from .base import PersonRecord
from .sqlregistry import SqlRegistry


class PopulationRegistry(SqlRegistry):
    """The national population database (mock): lookup by resident identity number."""

    def find_person(self, id_number: str) -> PersonRecord | None:
        rows = self._rows(
            "SELECT id_number, name, sex, birth_date, region_code, phone, address, status"
            " FROM people WHERE id_number = :n",
            n=id_number,
        )
        if not rows:
            return None
        r = rows[0]
        return PersonRecord(r[0], r[1], r[2], date.fromisoformat(r[3]), r[4], r[5], r[6], r[7])
