"""The connector contract: the same tests against every connector (model: dex ``storage/conformance``).

For each capability a connector declares (``isinstance`` against the protocols in
``sso.connectors.base``), the tests of that capability run against it.  The
shipped types and the example neighbour gateway run below; a province runs the
contract against its own connector by subclassing ``ConnectorContract`` with its
own ``Harness`` (see docs/connectors.md)::

    class TestMyConnector(ConnectorContract):
        harnesses = (MyHarness(),)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.exc import SQLAlchemyError

from examples.connectors.neighbour_gateway import (
    MemoryPendingStore,
    NeighbourGateway,
    NeighbourLoginFailed,
    PendingLogin,
)
from sso.connectors import CONNECTOR_TYPES, resolve_type
from sso.connectors.base import (
    EnterpriseLookup,
    EnterpriseRecord,
    Identity,
    PasswordLogin,
    PersonLookup,
    PersonRecord,
    RedirectLogin,
    RegistryUnavailable,
    VerifiedAttribute,
)
from sso.connectors.demo_data import DEMO_CITIZEN, DEMO_ENTERPRISE, DEMO_REVOKED_ENTERPRISE
from sso.identifiers import (
    credit_code_check_char,
    organisation_code_check_char,
    resident_id_check_char,
    validate_credit_code,
    validate_resident_id,
)
from tests.connectors import (
    SHIPPED,
    FakeNeighbour,
    Harness,
    NeighbourGatewayHarness,
    closed_port,
    follow_to_callback,
    throwaway_key,
)

CAPABILITIES = (PasswordLogin, RedirectLogin, PersonLookup, EnterpriseLookup)
ASSURANCES = ("self-asserted", "registry-verified")
PRINCIPALS = ("natural", "legal")
# Exceptions that mean "the connector crashed", not "the connector refused".
CRASHES = (KeyError, IndexError, TypeError, AttributeError, UnicodeError, AssertionError, json.JSONDecodeError)

GARBAGE = {
    "empty": "",
    "10kb": "x" * 10 * 1024,
    "nul": "zhang\x00san",
    "surrogates": "\ud800\udfff-\udcff",  # not encodable as UTF-8
}

# Valid by GB 11643 / GB 32100 (region, date, check character) but in no demo registry.
_UNKNOWN_PERSON17 = "11010120000101999"
UNKNOWN_PERSON = _UNKNOWN_PERSON17 + resident_id_check_char(_UNKNOWN_PERSON17)
_UNKNOWN_ORG8 = "MA00XYW1"
_UNKNOWN_CREDIT17 = "91110101" + _UNKNOWN_ORG8 + organisation_code_check_char(_UNKNOWN_ORG8)
UNKNOWN_CREDIT_CODE = _UNKNOWN_CREDIT17 + credit_code_check_char(_UNKNOWN_CREDIT17)


def needs(capability: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run this contract test only against connectors that declare ``capability``."""

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        test.capability = capability  # type: ignore[attr-defined]
        return test

    return mark


def assert_identity(identity: Any, connector: Any) -> None:
    """The Identity every login must return, whatever the connector."""
    assert isinstance(identity, Identity)
    assert identity.connector_id == connector.id
    assert isinstance(identity.subject, str) and 0 < len(identity.subject) <= 255
    assert isinstance(identity.display_name, str) and identity.display_name
    assert identity.principal in PRINCIPALS
    assert identity.assurance in ASSURANCES
    for key, attribute in identity.attributes.items():
        assert isinstance(key, str) and isinstance(attribute, VerifiedAttribute)
        assert isinstance(attribute.source, str) and attribute.source
        assert isinstance(attribute.verified_at, datetime)
        naive_utc = attribute.verified_at.replace(tzinfo=None) - (attribute.verified_at.utcoffset() or timedelta())
        assert naive_utc <= datetime.utcnow() + timedelta(minutes=5)  # noqa: DTZ003 - the project's naive UTC
    # What the gateway copies into sessions and tokens is plain JSON...
    json.dumps([identity.connector_id, identity.subject, identity.display_name, identity.assurance])
    # ...and connector_data never shows, not even in a log line of the Identity.
    shown = repr(identity) + str(identity)
    assert "connector_data" not in shown
    for value in identity.connector_data.values():
        if value:
            assert str(value) not in shown


def assert_clear_failure(call: Callable[[], Any]) -> BaseException:
    """The call refuses with a deliberate, explained exception, not a crash."""
    with pytest.raises(Exception) as info:  # noqa: PT011 - which class is the connector's choice
        call()
    assert not isinstance(info.value, CRASHES), repr(info.value)
    assert str(info.value).strip(), "the error must say what went wrong"
    return info.value


def fastest_seconds(calls: list[Callable[[], Any]], runs: int = 5) -> list[float]:
    """The fastest of ``runs`` timings of each call, the calls interleaved.

    Interleaving lets a busy machine slow every call alike, and noise only ever
    adds time, so the fastest run is the closest to the call's own cost.
    """
    best = [float("inf")] * len(calls)
    for _ in range(runs):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            call()
            best[index] = min(best[index], time.perf_counter() - started)
    return best


class ConnectorContract:
    """The contract.  Not collected itself (no ``Test`` prefix); subclasses set ``harnesses``."""

    harnesses: ClassVar[tuple[Harness, ...]] = ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "harness" not in metafunc.fixturenames:
            return
        capability = getattr(metafunc.function, "capability", None)
        metafunc.parametrize(
            "harness",
            [
                pytest.param(h, id=h.test_id, marks=h.marks)
                for h in self.harnesses
                if capability is None or capability in h.capabilities
            ],
            scope="class",  # one connector per harness for the whole contract: building costs
        )

    @pytest.fixture(autouse=True)
    def _known_gaps(self, request: pytest.FixtureRequest, harness: Harness) -> None:
        params = request.node.callspec.params
        key = request.node.originalname + (f"[{params['label']}]" if "label" in params else "")
        if key in harness.known_gaps:
            raises, reason = harness.known_gaps[key]
            request.applymarker(pytest.mark.xfail(raises=raises, reason=reason, strict=True))

    @pytest.fixture(scope="class")
    @classmethod
    def connector(cls, harness: Harness, tmp_path_factory: pytest.TempPathFactory) -> Any:
        with harness.build(tmp_path_factory.mktemp("connector")) as built:
            yield built

    # ---- every connector -----------------------------------------------------------------

    def test_declares_exactly_its_capabilities(self, harness: Harness, connector: Any) -> None:
        declared = {capability for capability in CAPABILITIES if isinstance(connector, capability)}
        assert declared == set(harness.capabilities)
        assert isinstance(connector.id, str) and connector.id
        assert isinstance(connector.name, str) and connector.name

    def test_its_type_name_resolves_to_its_class(self, harness: Harness, connector: Any) -> None:
        assert resolve_type(harness.type_name) is type(connector)
        assert callable(type(connector).from_config)

    # ---- PasswordLogin -------------------------------------------------------------------

    @needs(PasswordLogin)
    def test_login_valid_credentials(self, harness: Harness, connector: Any) -> None:
        assert_identity(connector.login(harness.username, harness.password), connector)

    @needs(PasswordLogin)
    def test_login_subject_is_stable_and_looks_up(self, harness: Harness, connector: Any) -> None:
        first = connector.login(harness.username, harness.password)
        second = connector.login(harness.username, harness.password)
        assert first is not None and second is not None
        assert first.subject == second.subject
        found = connector.lookup(first.subject)
        assert found is not None and found.subject == first.subject
        assert found.connector_id == first.connector_id

    @needs(PasswordLogin)
    def test_lookup_unknown_subject_is_none(self, harness: Harness, connector: Any) -> None:
        assert connector.lookup("no-such-subject-0000") is None

    @needs(PasswordLogin)
    def test_wrong_password_and_unknown_user_are_none_in_comparable_time(
        self, harness: Harness, connector: Any
    ) -> None:
        def wrong_password() -> None:
            assert connector.login(harness.username, harness.password + "-wrong") is None

        def unknown_user() -> None:
            assert connector.login("nobody-" + harness.username, harness.password) is None

        wrong_password(), unknown_user()  # warm up caches and connections first
        slow, fast = sorted(fastest_seconds([wrong_password, unknown_user]), reverse=True)
        # Loose on purpose (shared CI machines): the same order of magnitude, so an
        # unknown name cannot be told from a wrong password by timing.
        assert slow / max(fast, 1e-4) < 5, (slow, fast)

    @needs(PasswordLogin)
    @pytest.mark.parametrize("label", GARBAGE)
    def test_login_garbage_is_none(self, harness: Harness, connector: Any, label: str) -> None:
        junk = GARBAGE[label]
        assert connector.login(junk, harness.password) is None
        assert connector.login(harness.username, junk) is None
        assert connector.login(junk, junk) is None

    @needs(PasswordLogin)
    @pytest.mark.parametrize("label", GARBAGE)
    def test_lookup_garbage_is_none(self, harness: Harness, connector: Any, label: str) -> None:
        assert connector.lookup(GARBAGE[label]) is None

    # ---- PersonLookup --------------------------------------------------------------------

    @needs(PersonLookup)
    def test_find_known_person(self, connector: Any) -> None:
        record = connector.find_person(DEMO_CITIZEN.id_number)
        assert isinstance(record, PersonRecord)
        assert type(record.birth_date) is date  # a date, not a datetime or a string
        for f in fields(PersonRecord):
            value = getattr(record, f.name)
            if f.name != "birth_date":
                assert value is None or isinstance(value, str), (f.name, value)
        expected = {f.name: getattr(DEMO_CITIZEN, f.name) for f in fields(PersonRecord)}
        expected["birth_date"] = date.fromisoformat(DEMO_CITIZEN.birth_date)
        assert {f.name: getattr(record, f.name) for f in fields(PersonRecord)} == expected
        assert record.is_normal

    @needs(PersonLookup)
    def test_find_unknown_person_is_none(self, connector: Any) -> None:
        assert validate_resident_id(UNKNOWN_PERSON).number == UNKNOWN_PERSON
        assert connector.find_person(UNKNOWN_PERSON) is None

    @needs(PersonLookup)
    def test_person_registry_down_is_registry_unavailable(self, harness: Harness, tmp_path: Path) -> None:
        down = harness.unreachable(tmp_path)
        assert down, "the harness must say how this registry becomes unreachable"
        for label, registry in down:
            with pytest.raises(RegistryUnavailable) as info:
                registry.find_person(DEMO_CITIZEN.id_number)
            assert not isinstance(info.value, SQLAlchemyError), label
            assert "s3cret-pw" not in str(info.value), "credentials leaked into the message"

    # ---- EnterpriseLookup ----------------------------------------------------------------

    @needs(EnterpriseLookup)
    def test_find_known_enterprise(self, connector: Any) -> None:
        record = connector.find_enterprise(DEMO_ENTERPRISE.credit_code)
        assert isinstance(record, EnterpriseRecord)
        assert type(record.registered_on) is date
        expected = {f.name: getattr(DEMO_ENTERPRISE, f.name) for f in fields(EnterpriseRecord)}
        expected["registered_on"] = date.fromisoformat(DEMO_ENTERPRISE.registered_on)
        assert {f.name: getattr(record, f.name) for f in fields(EnterpriseRecord)} == expected
        assert record.is_active

    @needs(EnterpriseLookup)
    def test_find_unknown_enterprise_is_none(self, connector: Any) -> None:
        assert validate_credit_code(UNKNOWN_CREDIT_CODE).number == UNKNOWN_CREDIT_CODE
        assert connector.find_enterprise(UNKNOWN_CREDIT_CODE) is None

    @needs(EnterpriseLookup)
    def test_represented_by_lists_every_enterprise_sorted(self, connector: Any) -> None:
        # Both of 张三's companies, the revoked one too: callers decide what status allows.
        found = connector.represented_by(DEMO_CITIZEN.id_number)
        assert all(isinstance(e, EnterpriseRecord) for e in found)
        expected = sorted([DEMO_ENTERPRISE.credit_code, DEMO_REVOKED_ENTERPRISE.credit_code])
        assert [e.credit_code for e in found] == expected
        assert {e.status for e in found} == {"active", "revoked"}

    @needs(EnterpriseLookup)
    def test_represented_by_unknown_person_is_empty(self, connector: Any) -> None:
        assert connector.represented_by(UNKNOWN_PERSON) == []

    @needs(EnterpriseLookup)
    def test_enterprise_registry_down_is_registry_unavailable(self, harness: Harness, tmp_path: Path) -> None:
        down = harness.unreachable(tmp_path)
        assert down, "the harness must say how this registry becomes unreachable"
        for label, registry in down:
            for call in (
                lambda: registry.find_enterprise(DEMO_ENTERPRISE.credit_code),  # noqa: B023
                lambda: registry.represented_by(DEMO_CITIZEN.id_number),  # noqa: B023
            ):
                with pytest.raises(RegistryUnavailable) as info:
                    call()
                assert "s3cret-pw" not in str(info.value), label

    # ---- RedirectLogin -------------------------------------------------------------------

    @needs(RedirectLogin)
    def test_login_url_carries_state_and_callback(self, harness: Harness, connector: Any) -> None:
        url = connector.login_url(harness.callback_url, "state-abc-123")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["state"] == "state-abc-123"
        assert query["redirect_uri"] == harness.callback_url

    @needs(RedirectLogin)
    def test_callback_yields_identity_with_stable_subject(self, harness: Harness, connector: Any) -> None:
        subjects = []
        for state in ("state-one", "state-two"):
            params = harness.sign_in_upstream(connector, connector.login_url(harness.callback_url, state))
            identity = connector.handle_callback(params, harness.callback_url)
            assert_identity(identity, connector)
            subjects.append(identity.subject)
        assert subjects[0] == subjects[1]

    @needs(RedirectLogin)
    def test_callback_state_is_single_use(self, harness: Harness, connector: Any) -> None:
        params = harness.sign_in_upstream(connector, connector.login_url(harness.callback_url, "state-once"))
        connector.handle_callback(params, harness.callback_url)
        assert_clear_failure(lambda: connector.handle_callback(params, harness.callback_url))

    @needs(RedirectLogin)
    def test_callback_with_unknown_state_fails_clearly(self, harness: Harness, connector: Any) -> None:
        params = harness.sign_in_upstream(connector, connector.login_url(harness.callback_url, "state-real"))
        forged = {**params, "state": "state-forged"}
        assert_clear_failure(lambda: connector.handle_callback(forged, harness.callback_url))

    @needs(RedirectLogin)
    def test_callback_with_an_error_answer_fails_clearly(self, harness: Harness, connector: Any) -> None:
        connector.login_url(harness.callback_url, "state-refused")
        refused = {"state": "state-refused", "error": "access_denied"}  # RFC 6749 §4.1.2.1
        assert_clear_failure(lambda: connector.handle_callback(refused, harness.callback_url))

    @needs(RedirectLogin)
    @pytest.mark.parametrize("label", GARBAGE)
    def test_callback_garbage_fails_clearly(self, harness: Harness, connector: Any, label: str) -> None:
        junk = GARBAGE[label]
        connector.login_url(harness.callback_url, "state-junk")
        for params in ({}, {"state": junk}, {"state": junk, "code": junk}, {"state": "state-junk", "code": junk}):
            assert_clear_failure(lambda: connector.handle_callback(params, harness.callback_url))  # noqa: B023


class TestShippedConnectors(ConnectorContract):
    harnesses = SHIPPED


# ---- conventions around the contract ----------------------------------------------------------------


def test_every_shipped_type_has_a_harness() -> None:
    assert set(CONNECTOR_TYPES) <= {h.type_name for h in SHIPPED}


def test_identity_repr_hides_connector_data() -> None:
    identity = Identity(
        connector_id="neighbour-zj",
        subject="zj-1",
        display_name="李雷",
        connector_data={"id_token": "eyJ.SECRET-TOKEN.sig", "refresh_token": "SECRET-REFRESH"},
    )
    shown = repr(identity) + str(identity) + f"{identity}"
    assert "SECRET" not in shown and "connector_data" not in shown


def test_gateway_code_never_reads_connector_data() -> None:
    """Only connectors use connector_data; the gateway copies named Identity fields instead.

    Sessions, tokens, audit events and pages are built from ``subject``,
    ``connector_id``, ``display_name``, ``assurance`` and ``attributes``; a
    serialiser of a whole Identity (``dataclasses.asdict``) would carry the opaque
    data along, so neither appears outside ``sso/connectors``.
    """
    root = Path(__file__).resolve().parents[2] / "sso"
    offenders = []
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "connectors"):
            continue
        source = path.read_text(encoding="utf-8")
        if "connector_data" in source or "asdict(identity" in source:
            offenders.append(str(path.relative_to(root.parent)))
    assert offenders == []


# ---- the example connector's own checks (beyond the contract) -----------------------------------------

CALLBACK = NeighbourGatewayHarness.callback_url


@pytest.fixture
def neighbour() -> Any:
    with FakeNeighbour().running() as upstream:
        yield upstream


def neighbour_connector(upstream: FakeNeighbour, **overrides: Any) -> NeighbourGateway:
    return NeighbourGateway.from_config("neighbour-zj", "浙江政务服务网", {**upstream.settings(), **overrides}, "")


def sign_in(connector: NeighbourGateway, state: str = "state-1") -> Identity:
    params = follow_to_callback(connector.login_url(CALLBACK, state), CALLBACK)
    return connector.handle_callback(params, CALLBACK)


def test_authorization_request_pins_pkce_s256_and_a_fresh_nonce(neighbour: FakeNeighbour) -> None:
    connector = neighbour_connector(neighbour)
    queries = [{k: v[0] for k, v in parse_qs(urlsplit(connector.login_url(CALLBACK, s)).query).items()} for s in "ab"]
    for query in queries:
        assert query["response_type"] == "code" and query["client_id"] == neighbour.client_id
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert "openid" in query["scope"].split() and query["nonce"]
        assert "code_verifier" not in query
    assert queries[0]["nonce"] != queries[1]["nonce"]
    assert queries[0]["code_challenge"] != queries[1]["code_challenge"]


def test_code_exchange_authenticates_and_proves_pkce(neighbour: FakeNeighbour) -> None:
    sign_in(neighbour_connector(neighbour))  # the fake refuses a wrong secret or verifier
    (request,) = neighbour.token_requests
    assert request["authorization"].startswith("Basic ")
    assert request["form"]["redirect_uri"] == CALLBACK and len(request["form"]["code_verifier"]) >= 43


@pytest.mark.parametrize(
    ("acr", "assurance"),
    [("urn:cn:sso:loa:1", "self-asserted"), ("urn:cn:sso:loa:2", "registry-verified"), ("urn:other", "self-asserted")],
)
def test_assurance_comes_from_their_acr(neighbour: FakeNeighbour, acr: str, assurance: str) -> None:
    neighbour.user["acr"] = acr
    identity = sign_in(neighbour_connector(neighbour))
    assert identity.assurance == assurance and identity.subject == neighbour.user["sub"]
    if assurance == "registry-verified":
        assert set(identity.attributes) == {"name", "birthdate"}
        name = identity.attributes["name"]
        assert (name.value, name.source) == ("李雷", neighbour.issuer)
        # Vouched for as of their login (auth_time = iat - 5 in the fake).
        assert abs((datetime.utcnow() - name.verified_at).total_seconds() - 5) < 60  # noqa: DTZ003
    else:
        assert identity.attributes == {}


def test_assurance_mapping_is_configurable(neighbour: FakeNeighbour) -> None:
    neighbour.user["acr"] = "urn:zj:loa:high"
    connector = neighbour_connector(neighbour, assurance_by_acr={"urn:zj:loa:high": "registry-verified"})
    assert sign_in(connector).assurance == "registry-verified"


ID_TOKEN_FORGERIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "other-issuer": lambda c: {**c, "iss": "https://sso.elsewhere.example.gov.cn"},
    "other-audience": lambda c: {**c, "aud": "another-client"},
    "several-audiences-no-azp": lambda c: {**c, "aud": [c["aud"], "another-client"]},
    "expired": lambda c: {**c, "exp": c["iat"] - 600},
    "issued-in-the-future": lambda c: {**c, "iat": c["iat"] + 3600, "exp": c["exp"] + 3600},
    "replayed-nonce": lambda c: {**c, "nonce": "nonce-of-another-login"},
    "no-nonce": lambda c: {k: v for k, v in c.items() if k != "nonce"},
    "no-sub": lambda c: {k: v for k, v in c.items() if k != "sub"},
}


@pytest.mark.parametrize("forgery", ID_TOKEN_FORGERIES)
def test_id_token_that_is_not_for_us_is_refused(neighbour: FakeNeighbour, forgery: str) -> None:
    neighbour.tamper = ID_TOKEN_FORGERIES[forgery]
    with pytest.raises(NeighbourLoginFailed, match="ID token"):
        sign_in(neighbour_connector(neighbour))


def test_id_token_signed_with_an_unknown_key_is_refused(neighbour: FakeNeighbour) -> None:
    connector = neighbour_connector(neighbour)  # trusts the published key only
    neighbour.signing_key = throwaway_key("rogue-key")
    with pytest.raises(NeighbourLoginFailed, match="does not verify"):
        sign_in(connector)


def test_token_endpoint_refusal_is_reported(neighbour: FakeNeighbour) -> None:
    connector = neighbour_connector(neighbour, client_secret="wrong-secret")
    with pytest.raises(NeighbourLoginFailed, match="401 invalid_client"):
        sign_in(connector)


def test_token_endpoint_unreachable_is_reported(neighbour: FakeNeighbour) -> None:
    connector = neighbour_connector(neighbour, token_endpoint=f"http://127.0.0.1:{closed_port()}/token")
    with pytest.raises(NeighbourLoginFailed, match="unreachable"):
        sign_in(connector)


def test_http_client_is_pluggable(neighbour: FakeNeighbour) -> None:
    seen: list[tuple[str, float]] = []

    def post(url: str, form: Any, headers: Any, timeout: float) -> tuple[int, bytes]:
        seen.append((url, timeout))
        status, answer = neighbour.token(dict(form), headers["Authorization"])  # no socket at all
        return status, json.dumps(answer).encode()

    settings = neighbour.settings()
    connector = NeighbourGateway(
        "neighbour-zj",
        "浙江政务服务网",
        issuer=settings["issuer"],
        authorization_endpoint=settings["authorization_endpoint"],
        token_endpoint=settings["token_endpoint"],
        client_id=settings["client_id"],
        client_secret=settings["client_secret"],
        jwks=settings["jwks"],
        http_post=post,
    )
    assert sign_in(connector).subject == neighbour.user["sub"]
    assert seen == [(settings["token_endpoint"], 5.0)]


def test_callback_must_return_to_the_callback_it_started_with(neighbour: FakeNeighbour) -> None:
    connector = neighbour_connector(neighbour)
    params = follow_to_callback(connector.login_url(CALLBACK, "state-x"), CALLBACK)
    with pytest.raises(NeighbourLoginFailed, match="callback URL"):
        connector.handle_callback(params, "https://gateway.example.gov.cn/other/callback")


def test_callback_naming_another_issuer_is_refused(neighbour: FakeNeighbour) -> None:
    connector = neighbour_connector(neighbour)
    params = follow_to_callback(connector.login_url(CALLBACK, "state-x"), CALLBACK)
    with pytest.raises(NeighbourLoginFailed, match="RFC 9207"):
        connector.handle_callback({**params, "iss": "https://attacker.example"}, CALLBACK)


def test_pending_login_expires() -> None:
    now = [1000.0]
    store = MemoryPendingStore(clock=lambda: now[0])
    store.put("s", PendingLogin("n", "v" * 43, CALLBACK), ttl=600)
    now[0] += 601
    assert store.take("s") is None


def test_pending_logins_are_bounded() -> None:
    store = MemoryPendingStore(max_entries=3)
    for i in range(5):
        store.put(f"s{i}", PendingLogin("n", "v" * 43, CALLBACK), ttl=600)
    assert store.take("s0") is None and store.take("s4") is not None


def test_repr_hides_the_client_secret(neighbour: FakeNeighbour) -> None:
    assert neighbour.client_secret not in repr(neighbour_connector(neighbour))
