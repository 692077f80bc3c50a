from tests.conftest import Browser, redeem


def test_code_flow_end_to_end(app, client, portal, account):
    browser = Browser(client)
    code, verifier = browser.code_for(portal)
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert {"access_token", "id_token", "refresh_token", "expires_in", "token_type"} <= set(body)
