"""The enterprise registry connector: legal persons by unified social credit code."""

from __future__ import annotations

from datetime import date
from typing import Any

from .base import EnterpriseRecord
from .sqlregistry import SqlRegistry


class EnterpriseRegistry(SqlRegistry):
    """The enterprise legal-person registry (mock): lookup by credit code or legal rep."""

    _SELECT = (
        "SELECT credit_code, name, org_type, region_code, legal_rep_name, legal_rep_id_number,"
        " status, registered_on FROM enterprises"
    )

    @staticmethod
    def _record(r: Any) -> EnterpriseRecord:
        return EnterpriseRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], date.fromisoformat(r[7]))

    def find_enterprise(self, credit_code: str) -> EnterpriseRecord | None:
        rows = self._rows(self._SELECT + " WHERE credit_code = :c", c=credit_code)
        return self._record(rows[0]) if rows else None

    def represented_by(self, id_number: str) -> list[EnterpriseRecord]:
        rows = self._rows(
            self._SELECT + " WHERE legal_rep_id_number = :n ORDER BY credit_code",
            n=id_number,
        )
        return [self._record(r) for r in rows]
