"""The web console in a real browser, through the shipped Envoy config on Jira's host.

Everything runs against the local stack (Redis, jira-authz with its console, the stub Jira with
its login page, Envoy): sign-in with Jira, the token life cycle, who may see what, CSRF, XSS,
keyboard use and axe-core's accessibility rules. The list, create and secret pages are
screenshotted into docs/ for docs/console.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest
from console_helpers import DOCS, create_token, sign_in

from authz.stack.local import LocalStack

pytestmark = pytest.mark.e2e

LIMIT = "[get].*/rest/api/2/myself"


def _curl_snippet(page: Any) -> str:
    fig = page.locator("figure.snippet", has=page.get_by_text("curl (Basic)", exact=True))
    code = fig.locator("pre").inner_text().strip()
    # The CLI's snippet (render.snippet_parts): fails with the deny body on a refusal.
    assert code.startswith("curl --fail-with-body ") and " -u " in code, code
    return code


def _run(cmd: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # The snippet is shell text meant to be pasted into a shell: run it exactly so.
    return subprocess.run(cmd + "".join(" " + e for e in extra), shell=True,  # noqa: S602
                          capture_output=True, text=True, timeout=30)


def _status(cmd: str) -> str:
    return _run(cmd, "-s", "-o", "/dev/null", "-w", "'%{http_code}'").stdout.strip()


def _who(page: Any) -> str:
    return page.get_by_test_id("who").inner_text()


def test_sign_in_through_the_stub_jira_login(stack: LocalStack, new_page: Any) -> None:
    """Signed in to Jira on its own login page: the console takes Jira's word for who it is."""
    page = new_page()
    page.goto(stack.envoy_url + "/login.jsp?os_destination=/jira-authz/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(stack.console_url)
    assert _who(page) == "alice"
    assert page.get_by_role("heading", level=1).inner_text() == "Your API tokens"
    cookies = {c["name"]: c for c in page.context.cookies()}
    console = cookies["jira_authz_console"]
    assert console["httpOnly"] and console["sameSite"] == "Strict"
    assert console["path"] == "/jira-authz/"


def test_wrong_jira_password_is_refused(stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice", "not-alices-password")
    assert page.get_by_role("alert").inner_text().startswith("Jira did not accept")
    page.goto(stack.console_url)
    assert page.url == stack.console_url + "login"


def test_token_life_cycle(stack: LocalStack, new_page: Any) -> None:
    """Create with a limit line, secret shown once, its curl snippet reaches Jira as alice,
    revoke in the console and the same call is refused within a second."""
    page = new_page()
    sign_in(page, stack, "alice")
    page.goto(stack.console_url + "new")
    page.get_by_label("Label", exact=True).fill("nightly export")
    page.get_by_label("Restriction lines (one per line)").fill(LIMIT)
    page.get_by_text("Lines look fine.").wait_for()  # live validation answered
    page.screenshot(path=str(DOCS / "console-create.png"), full_page=True)
    page.get_by_role("button", name="Create token").click()
    page.wait_for_url(re.compile(r".*/tokens/[0-9a-f]+/secret$"))
    token_id = page.url.rsplit("/", 2)[-2]
    secret = page.get_by_label(re.compile("Secret of token")).input_value()
    assert secret.startswith("jat_")
    page.screenshot(path=str(DOCS / "console-secret.png"), full_page=True)
    curl = _curl_snippet(page)
    assert secret in curl and stack.envoy_url in curl

    # Run as printed: through Envoy, allowed, reaching the stub Jira with alice as the user.
    res = _run(curl, "-s")
    echo = json.loads(res.stdout)
    assert echo["path"] == "/rest/api/2/myself"
    assert echo["headers"]["contextuser"] == "alice"
    assert "authorization" not in echo["headers"]

    # Shown once: a reload finds it gone, and nowhere on the page.
    page.reload()
    assert page.get_by_role("heading", level=1).inner_text() == "Secret no longer available"
    assert secret not in page.content()

    page.goto(stack.console_url)
    row = page.locator(f'tr[data-token-id="{token_id}"]')
    assert "active" in row.inner_text() and LIMIT in row.inner_text()
    page.screenshot(path=str(DOCS / "console-list.png"), full_page=True)

    # Audit: the call shows on the token's page with who made it.
    page.goto(f"{stack.console_url}tokens/{token_id}")
    page.get_by_text("Code snippets (curl, JavaScript, Python)").click()
    again = _curl_snippet(page)
    assert "<TOKEN-SECRET>" in again and secret not in page.content()
    audit = page.locator("table.audit").inner_text()
    assert "GET /rest/api/2/myself" in audit and "alice" in audit
    page.get_by_role("button", name="Revoke token").click()
    page.get_by_role("status").filter(has_text="Revoked").wait_for()
    revoked = time.monotonic()
    codes = []
    while time.monotonic() - revoked < 1.0:
        codes.append(_status(curl))
        if codes[-1] == "401":
            break
    assert codes[-1] == "401", codes
    assert page.get_by_test_id("state").inner_text() == "revoked"
    page.reload()
    assert "admin: revoke" in page.locator("table.audit").inner_text()
    assert "alice" in page.locator("table.audit").inner_text()


def test_edit_rotate_and_test_a_request(stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")
    token_id = create_token(page, stack, "to edit", LIMIT)
    page.goto(f"{stack.console_url}tokens/{token_id}")
    page.get_by_label("Full URL").fill("https://jira.example.com/rest/api/2/issue/A-1")
    page.get_by_role("button", name="Test", exact=True).click()
    assert page.get_by_test_id("test-result").inner_text().startswith("Denied")
    page.get_by_label("Restriction lines (one per line)").fill("[get].*/rest/api/2/issue/A-1")
    page.get_by_role("button", name="Save label and limits").click()
    page.get_by_role("status").filter(has_text="Saved.").wait_for()
    page.get_by_label("Full URL").fill("https://jira.example.com/rest/api/2/issue/A-1")
    page.get_by_role("button", name="Test", exact=True).click()
    assert page.get_by_test_id("test-result").inner_text().startswith("Allowed")
    # A bad line is refused with its line number, and nothing changes.
    page.get_by_label("Restriction lines (one per line)").fill("[get].*/ok\n[get](unclosed")
    page.get_by_text(re.compile("^Line 2:")).wait_for()  # live validation
    page.get_by_role("button", name="Save label and limits").click()
    assert "limit line 2" in page.get_by_role("alert").inner_text()
    # Rotate: a new secret shown once, the old token revoked.
    page.get_by_role("button", name="Rotate").click()
    page.wait_for_url(re.compile(r".*/tokens/[0-9a-f]+/secret$"))
    new_id = page.url.rsplit("/", 2)[-2]
    assert new_id != token_id
    assert page.get_by_label(re.compile("Secret of token")).input_value().startswith("jat_")
    page.goto(f"{stack.console_url}tokens/{token_id}")
    assert page.get_by_test_id("state").inner_text() == "revoked"


def test_bob_can_neither_see_nor_revoke_alices_token(stack: LocalStack, new_page: Any) -> None:
    alice = new_page()
    sign_in(alice, stack, "alice")
    token_id = create_token(alice, stack, "alice only")
    bob = new_page()
    sign_in(bob, stack, "bob")
    assert _who(bob) == "bob"
    assert token_id not in bob.content()
    resp = bob.goto(f"{stack.console_url}tokens/{token_id}")
    assert resp is not None and resp.status == 404
    # The admin's filter is not bob's: ?user=alice still lists only bob's own tokens.
    bob.goto(stack.console_url + "?user=alice")
    assert token_id not in bob.content()
    # A forged POST from bob's own page, with bob's valid CSRF token and Origin.
    bob.goto(stack.console_url)
    status = bob.evaluate(
        """async (path) => {
             const csrf = document.querySelector('input[name=csrf]').value;
             const r = await fetch(path, {method: 'POST', body: new URLSearchParams({csrf})});
             return r.status; }""",
        f"{stack.console_url}tokens/{token_id}/revoke")
    assert status == 404
    for action in ("edit", "rotate", "test"):
        status = bob.evaluate(
            """async (path) => {
                 const csrf = document.querySelector('input[name=csrf]').value;
                 const r = await fetch(path, {method: 'POST', body: new URLSearchParams(
                   {csrf, label: 'pwned', limits: '', url: 'https://x/rest/', method: 'GET'})});
                 return r.status; }""",
            f"{stack.console_url}tokens/{token_id}/{action}")
        assert status == 404, action
    alice.goto(f"{stack.console_url}tokens/{token_id}")
    assert alice.get_by_test_id("state").inner_text() == "active"
    assert alice.get_by_label("Label", exact=True).input_value() == "alice only"
    # Bob cannot bind a token to alice either.
    bob.goto(stack.console_url + "new")
    assert bob.get_by_label("Bound to user").count() == 0
    status = bob.evaluate(
        """async (path) => {
             const csrf = document.querySelector('input[name=csrf]').value;
             const r = await fetch(path, {method: 'POST', body: new URLSearchParams(
               {csrf, label: 'for alice', user: 'alice'})});
             return r.status; }""", stack.console_url + "new")
    assert status == 400
    # Nor import.
    resp = bob.goto(stack.console_url + "import")
    assert resp is not None and resp.status == 403


def test_admin_sees_all(stack: LocalStack, new_page: Any) -> None:
    alice = new_page()
    sign_in(alice, stack, "alice")
    a_id = create_token(alice, stack, "alice for admin")
    bob = new_page()
    sign_in(bob, stack, "bob")
    b_id = create_token(bob, stack, "bob for admin")
    admin = new_page()
    sign_in(admin, stack, "admin")
    assert "(admin)" in admin.locator("header").inner_text()
    assert admin.get_by_role("heading", level=1).inner_text() == "All API tokens"
    for tid in (a_id, b_id):
        assert admin.locator(f'tr[data-token-id="{tid}"]').count() == 1
    admin.goto(stack.console_url + "?user=bob")
    assert admin.locator(f'tr[data-token-id="{a_id}"]').count() == 0
    assert admin.locator(f'tr[data-token-id="{b_id}"]').count() == 1
    # The admin manages alice's token: revoke it; the audit names the admin as actor.
    admin.goto(f"{stack.console_url}tokens/{a_id}")
    admin.get_by_role("button", name="Revoke token").click()
    admin.get_by_role("status").filter(has_text="Revoked").wait_for()
    assert "admin: revoke" in admin.locator("table.audit").inner_text()
    row = admin.locator("table.audit tr", has_text="admin: revoke")
    assert "admin" in row.inner_text().split()
    # Creates for another user, on behalf of others.
    admin.goto(stack.console_url + "new")
    admin.get_by_label("Label", exact=True).fill("for carol")
    admin.get_by_label("Bound to user").fill("carol")
    admin.get_by_label("May act on behalf of").fill("dave")
    admin.get_by_role("button", name="Create token").click()
    admin.wait_for_url(re.compile(r".*/secret$"))
    admin.get_by_role("link", name="Token details").click()
    assert "carol" in admin.locator("dl.details").inner_text()
    # Extender import: a dry run writes nothing, apply does.
    export = json.dumps([{"token": "ExtenderSecret0123456789", "user": "alice",
                          "label": "from extender"}])
    admin.goto(stack.console_url + "import")
    admin.get_by_label("Extender export (JSON)").fill(export)
    admin.get_by_role("button", name="Dry run").click()
    assert "Dry run" in admin.locator("table.report caption").inner_text()
    admin.get_by_role("button", name="Apply the import").click()
    assert "Imported" in admin.locator("table.report caption").inner_text()


def test_state_changes_need_the_csrf_token_and_same_origin(
        stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")
    token_id = create_token(page, stack, "csrf target")
    page.goto(stack.console_url)
    revoke = f"{stack.console_url}tokens/{token_id}/revoke"
    # Same origin, no CSRF token / a wrong one: refused.
    for body in ("{}", "{csrf: 'forged'}"):
        status = page.evaluate(
            f"""async (path) => (await fetch(path, {{method: 'POST',
                  body: new URLSearchParams({body})}})).status""", revoke)
        assert status == 403, body
    csrf = page.locator('input[name="csrf"]').first.input_value()
    # The right CSRF token from another origin (or none named): refused.
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
        resp = page.request.post(revoke, form={"csrf": csrf}, headers=headers,
                                 max_redirects=0)
        assert resp.status == 403, headers
        assert "Refused" in resp.text()
    resp = page.request.post(stack.console_url + "api/check-limits", data={"limits": "x"},
                             headers={"Origin": stack.envoy_url})
    assert resp.status == 403  # the JSON endpoint too: no CSRF header
    page.goto(f"{stack.console_url}tokens/{token_id}")
    assert page.get_by_test_id("state").inner_text() == "active"


XSS_LABEL = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"\'>'
XSS_LINE = '.*/rest/api/2/issue/X-1</textarea><script>window.__xss=3</script>.*'


def test_xss_payloads_render_inert(stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, stack, "alice")
    token_id = create_token(page, stack, XSS_LABEL, XSS_LINE)
    for path in ("", f"tokens/{token_id}", "?label=" + "%3Cscript%3E"):
        page.goto(stack.console_url + path)
        assert page.evaluate("typeof window.__xss") == "undefined", path
        assert page.locator("script:not([src])").count() == 0, path
        assert page.locator("img").count() == 0, path
    page.goto(stack.console_url)
    assert XSS_LABEL in page.locator(f'tr[data-token-id="{token_id}"] a').inner_text()
    assert XSS_LINE in page.locator(f'tr[data-token-id="{token_id}"]').inner_text()
    page.goto(f"{stack.console_url}tokens/{token_id}")
    assert page.get_by_label("Restriction lines (one per line)").input_value() == XSS_LINE
    # Live validation output is text, never markup.
    area = page.get_by_label("Restriction lines (one per line)")
    area.fill("<img src=x onerror=window.__xss=4>(")
    page.get_by_text(re.compile("^Line 1:")).wait_for()
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert not dialogs


def test_an_api_token_cannot_sign_in(stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    sign_in(page, stack, "alice")
    create_token(page, stack, "not a password")
    secret = page.get_by_label(re.compile("Secret of token")).input_value()
    other = new_page()
    sign_in(other, stack, "alice", secret)
    assert "API token" in other.get_by_role("alert").inner_text()
    other.goto(stack.console_url)
    assert other.url.endswith("/login")
    # An imported (Extender) token has no prefix: the token store is checked as well.
    admin = new_page()
    sign_in(admin, stack, "admin")
    admin.goto(stack.console_url + "import")
    admin.get_by_label("Extender export (JSON)").fill(json.dumps(
        [{"token": "PlainImported0987654321", "user": "bob", "label": "imported"}]))
    admin.get_by_role("button", name="Dry run").click()
    admin.get_by_role("button", name="Apply the import").click()
    assert "Imported" in admin.locator("table.report caption").inner_text()
    sign_in(other, stack, "bob", "PlainImported0987654321")
    assert "API token" in other.get_by_role("alert").inner_text()


def _tab_to(page: Any, predicate: str, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const e = document.activeElement; return {predicate}; }})()"):
            return
    raise AssertionError(f"Tab never reached {predicate}")


def test_create_flow_by_keyboard_alone(stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    page.goto(stack.console_url + "login")
    _tab_to(page, "e.id === 'username'")
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type("alice")
    page.keyboard.press("Enter")
    page.wait_for_url(stack.console_url)
    _tab_to(page, "e.textContent.trim() === 'Create a token'")
    page.keyboard.press("Enter")
    page.wait_for_url(stack.console_url + "new")
    _tab_to(page, "e.id === 'label'")
    page.keyboard.type("keyboard only")
    _tab_to(page, "e.id === 'limits'")
    page.keyboard.type(LIMIT)
    _tab_to(page, "e.textContent.trim() === 'Create token'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/secret$"))
    assert page.get_by_label(re.compile("Secret of token")).input_value().startswith("jat_")
    _tab_to(page, "e.textContent.trim() === 'Copy secret'")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"


def test_axe_reports_no_serious_violations(stack: LocalStack, new_page: Any,
                                           axe_source: str) -> None:
    # axe is injected as a script, which the console's CSP rightly forbids: bypass it here.
    page = new_page(bypass_csp=True)
    pages = []
    page.goto(stack.console_url + "login")
    pages.append("login")
    sign_in(page, stack, "alice")
    token_id = create_token(page, stack, "axe", LIMIT)
    pages.append(page.url)
    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        page.add_script_tag(content=axe_source)
        result = page.evaluate("async () => await axe.run(document)")
        bad = [f"{v['id']} ({v['impact']}): {v['help']}" for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
        if bad:
            found[name] = bad

    check("secret")
    for path in ("", "new", f"tokens/{token_id}"):
        page.goto(stack.console_url + path)
        check(path or "list")
    page.goto(stack.console_url + "new")
    page.get_by_label("Label", exact=True).fill("x")
    page.get_by_role("button", name="Create token").click()
    check("created")
    assert not found, found


def test_console_response_headers(stack: LocalStack, new_page: Any) -> None:
    page = new_page()
    resp = page.goto(stack.console_url + "login")
    assert resp is not None
    h = resp.headers
    assert "script-src 'self'" in h["content-security-policy"]
    assert "unsafe-inline" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["cache-control"] == "no-store"
    # The identity header never reaches the console (stripped on its Envoy route).
    r = page.request.get(stack.console_url + "login", headers={"contextUser": "admin"})
    assert r.status == 200 and "Signed in as" not in r.text()
