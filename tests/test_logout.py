"""RP-Initiated Logout 1.0: id_token_hint, registered post_logout_redirect_uri only, confirmation."""

from __future__ import annotations

from tests.conftest import csrf_from, pkce_pair, query_of, redeem

BYE = "https://portal.example.gov.cn/bye"


def signed_in(browser, client, portal):
    code, verifier = browser.code_for(portal)
    return redeem(client, portal, code, verifier).get_json()


def test_logout_with_hint_redirects_to_registered_uri_with_state(browser, client, portal, account):
    tokens = signed_in(browser, client, portal)
    response = client.get(
        "/logout", query_string={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": BYE, "state": "bye-1"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == BYE + "?state=bye-1"
    _, challenge = pkce_pair()
    silent = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert query_of(silent.headers["Location"])["error"] == "login_required"


def test_unregistered_post_logout_uri_is_never_followed(browser, client, portal, account):
    tokens = signed_in(browser, client, portal)
    response = client.get(
        "/logout",
        query_string={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert response.status_code == 200 and "Location" not in response.headers
    assert 'id="logged-out"' in response.text


def test_expired_id_token_hint_is_still_accepted(browser, client, portal, account, monkeypatch):
    tokens = signed_in(browser, client, portal)
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    response = client.get(
        "/logout", query_string={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": BYE}
    )
    assert response.status_code == 302 and response.headers["Location"] == BYE


def test_forged_hint_is_an_error_page_without_redirect(browser, client, portal, account):
    tokens = signed_in(browser, client, portal)
    header, payload, signature = tokens["id_token"].split(".")
    forged = ".".join([header, payload, signature[::-1]])
    response = client.get("/logout", query_string={"id_token_hint": forged, "post_logout_redirect_uri": BYE})
    assert response.status_code == 400 and "Location" not in response.headers
    assert '<code id="error-code">invalid_request</code>' in response.text


def test_access_token_is_not_an_id_token_hint(browser, client, portal, account):
    tokens = signed_in(browser, client, portal)
    response = client.get(
        "/logout", query_string={"id_token_hint": tokens["access_token"], "post_logout_redirect_uri": BYE}
    )
    assert response.status_code == 400 and "Location" not in response.headers


def test_logout_without_hint_asks_for_confirmation(browser, client, portal, account):
    signed_in(browser, client, portal)
    page = client.get("/logout")
    assert page.status_code == 200 and 'id="logout-form"' in page.text
    # Still signed in until the user confirms.
    _, challenge = pkce_pair()
    assert "code" in query_of(
        browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256").headers[
            "Location"
        ]
    )
    done = client.post("/logout", data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 200 and 'id="logged-out"' in done.text
    _, challenge = pkce_pair()
    after = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert query_of(after.headers["Location"])["error"] == "login_required"


def test_confirmation_without_csrf_does_not_log_out(browser, client, portal, account):
    signed_in(browser, client, portal)
    client.post("/logout", data={})
    _, challenge = pkce_pair()
    still = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert "code" in query_of(still.headers["Location"])


def test_client_id_must_match_the_hint_audience(browser, client, portal, account):
    tokens = signed_in(browser, client, portal)
    response = client.get(
        "/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "client_id": "someone-else",
            "post_logout_redirect_uri": BYE,
        },
    )
    assert response.status_code == 400 and "Location" not in response.headers
