"""Fixed demo records at the start of every generated mock registry.

Tests, the demo and documentation rely on these exact identities, whatever the
seed and size of the generated data.  All numbers are valid (GB 11643 /
GB 32100, current region codes) but fictional: the names use the textbook
placeholders 张三, 李四, 王五 and the companies are called 示范 ("demo").

Field order matches the columns of the ``people`` and ``enterprises`` tables
written by ``scripts/generate_registries.py``, so ``dataclasses.astuple`` gives
an insertable row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DemoPerson:
    id_number: str
    name: str
    sex: str  # "male" / "female", matching the 17th digit
    birth_date: str  # ISO 8601, matching digits 7-14
    region_code: str  # matching digits 1-6
    phone: str
    address: str
    status: str  # "normal" / "deceased" / "cancelled"


@dataclass(frozen=True, slots=True)
class DemoEnterprise:
    credit_code: str
    name: str
    org_type: str  # label of the type character, see sso.identifiers.BUSINESS_ORG_TYPES
    region_code: str  # matching characters 3-8
    legal_rep_name: str
    legal_rep_id_number: str
    status: str  # "active" / "revoked" / "cancelled"
    registered_on: str  # ISO 8601


# An ordinary living citizen: the account to log in with in the demo.
DEMO_CITIZEN = DemoPerson(
    id_number="110101199003071233",
    name="张三",
    sex="male",
    birth_date="1990-03-07",
    region_code="110101",
    phone="13800138000",
    address="北京市东城区示范路1号",
    status="normal",
)

# Registered as deceased: logins and new authorisations must be refused.
DEMO_DECEASED = DemoPerson(
    id_number="110105193506152017",
    name="李四",
    sex="male",
    birth_date="1935-06-15",
    region_code="110105",
    phone="13900139000",
    address="北京市朝阳区示范路2号",
    status="deceased",
)

# Household registration cancelled (e.g. settled abroad): also refused.
DEMO_CANCELLED = DemoPerson(
    id_number="310104197809224048",
    name="王五",
    sex="female",
    birth_date="1978-09-22",
    region_code="310104",
    phone="13700137000",
    address="上海市徐汇区示范路3号",
    status="cancelled",
)

# A second living citizen: the demo's authorised agent of the demo enterprise.
DEMO_AGENT = DemoPerson(
    id_number="440305198506122029",
    name="赵敏",
    sex="female",
    birth_date="1985-06-12",
    region_code="440305",
    phone="13600136000",
    address="广东省深圳市南山区示范路4号",
    status="normal",
)

DEMO_PEOPLE: tuple[DemoPerson, ...] = (DEMO_CITIZEN, DEMO_DECEASED, DEMO_CANCELLED, DEMO_AGENT)

# Active, represented by the demo citizen: the legal-person login of the demo.
DEMO_ENTERPRISE = DemoEnterprise(
    credit_code="91110101MA00DEM14K",
    name="北京示范科技有限公司",
    org_type="enterprise",
    region_code="110101",
    legal_rep_name=DEMO_CITIZEN.name,
    legal_rep_id_number=DEMO_CITIZEN.id_number,
    status="active",
    registered_on="2016-05-20",
)

# Business licence revoked, same representative: the citizen may act for the
# active company but not for this one.
DEMO_REVOKED_ENTERPRISE = DemoEnterprise(
    credit_code="91110105MA00DEM228",
    name="北京示范贸易有限公司",
    org_type="enterprise",
    region_code="110105",
    legal_rep_name=DEMO_CITIZEN.name,
    legal_rep_id_number=DEMO_CITIZEN.id_number,
    status="revoked",
    registered_on="2017-08-01",
)

# Deregistered after its representative died.
DEMO_CANCELLED_ENTERPRISE = DemoEnterprise(
    credit_code="91310104MA00DEM302",
    name="上海示范餐饮管理有限公司",
    org_type="enterprise",
    region_code="310104",
    legal_rep_name=DEMO_DECEASED.name,
    legal_rep_id_number=DEMO_DECEASED.id_number,
    status="cancelled",
    registered_on="2003-11-12",
)

DEMO_ENTERPRISES: tuple[DemoEnterprise, ...] = (
    DEMO_ENTERPRISE,
    DEMO_REVOKED_ENTERPRISE,
    DEMO_CANCELLED_ENTERPRISE,
)
