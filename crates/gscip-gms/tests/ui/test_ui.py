"""The GMS web UI in headless Chromium (Debian's chromium, driven with Playwright from PyPI).

Run by scripts/ui-test.sh, which starts gmsd and defines a small network first. Screenshots go
to the directory given as SHOTS (the test output, never the repository).
"""
import os
import re
import sys

from playwright.sync_api import sync_playwright

url, password, shots = os.environ["GMS_URL"], os.environ["GMS_PASSWORD"], os.environ["SHOTS"]
os.makedirs(shots, exist_ok=True)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def shot(page, name):
    page.screenshot(path=os.path.join(shots, name + ".png"), full_page=True)


def row_text(page, table, first_cell):
    for row in page.locator(f"table#{table} tr").all():
        cells = row.locator("td").all_inner_texts()
        if cells and cells[0] == first_cell:
            return cells
    return None


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    # The GMS CA is private; TLS itself is tested by the Rust tests.
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()

    page.goto(url + "/ui/")
    check(page.url.endswith("/ui/login"), "not logged in: sent to the login page")
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", "wrong password!")
    page.click("button")
    check("wrong administrator name or password" in page.content(), "a wrong password is refused with a message")
    page.goto(url + "/ui/login")
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", password)
    page.click("button")
    check(page.url.endswith("/ui/"), "logged in")
    cookie = [c for c in ctx.cookies() if c["name"] == "gms_session"]
    check(bool(cookie) and cookie[0]["httpOnly"] and cookie[0]["secure"] and cookie[0]["sameSite"] == "Strict",
          "session cookie is HttpOnly, Secure, SameSite=Strict")
    check("<script" not in page.content(), "no JavaScript")
    check(row_text(page, "groups", "1") is not None and row_text(page, "groups", "2") is not None, "groups listed")
    ges1 = row_text(page, "ges", "ges1")
    check(ges1 is not None and ges1[1:4] == ["ges", "closed", "pending"], f"GE listed with kind, mode, status: {ges1}")
    shot(page, "overview")

    # Changes through the forms.
    page.fill("form[action='/ui/groups'] input[name=id]", "3")
    page.fill("form[action='/ui/groups'] input[name=name]", "ops")
    page.click("form[action='/ui/groups'] button")
    check(row_text(page, "groups", "3") is not None and row_text(page, "groups", "3")[1] == "ops", "group created from the form")
    page.fill("form[action='/ui/ges'] input[name=name]", "ges9")
    page.select_option("form[action='/ui/ges'] select[name=kind]", "ges")
    page.select_option("form[action='/ui/ges'] select[name=mode]", "closed")
    page.fill("form[action='/ui/ges'] input[name=groups]", "3")
    page.click("form[action='/ui/ges'] button")
    check(row_text(page, "ges", "ges9") is not None, "GE defined from the form")
    page.fill("form[action='/ui/ges/ges9/groups'] input[name=groups]", "1,3")
    page.click("form[action='/ui/ges/ges9/groups'] button")
    check("1,3" in page.inner_html("table#ges"), "memberships set from the form")
    page.click("form[action='/ui/groups/1/rotate'] button")
    check(row_text(page, "groups", "1")[2] == "2", "group 1 rotated to key version 2")
    page.click("form[action='/ui/ges/ges9/revoke'] button")
    check(row_text(page, "ges", "ges9")[3] == "revoked", "GE revoked from the form")
    shot(page, "after-changes")

    # A bad form value: a clear error, not a crash.
    page.fill("form[action='/ui/groups'] input[name=id]", "abc")
    page.fill("form[action='/ui/groups'] input[name=name]", "x")
    resp_holder = {}
    page.on("response", lambda r: resp_holder.setdefault("status", r.status))
    page.click("form[action='/ui/groups'] button")
    check("is not a number 1 to 65535" in page.content(), "a bad group id gets a clear message")
    shot(page, "error")

    page.goto(url + "/ui/keys")
    check("Rotation daily at 03:00 UTC" in page.inner_text("#schedule"), "rotation schedule shown")
    check(len(page.locator("table#keys tr").all()) >= 5, "key versions listed")
    check("current" in page.inner_text("table#keys"), "current versions marked")
    shot(page, "keys")

    page.goto(url + "/ui/audit")
    audit = page.inner_text("table#audit")
    check("ge.revoke" in audit and "group.create" in audit and "key.rotate" in audit, "audit log shows the changes")
    check(not re.search(r"[0-9a-f]{64}", audit), "no key material in the audit page")
    shot(page, "audit")

    page.goto(url + "/ui/matrix")
    m = page.inner_html("table#matrix")
    check(re.search(r'<td class="protected">protected \(group 1\)</td>', m) is not None, "matrix shows protected flows with their group")
    check('class="discarded"' in m and 'class="plaintext"' in m, "matrix shows discarded and plaintext flows")
    rows = {r.locator("th").inner_text(): r.locator("td").all_inner_texts() for r in page.locator("table#matrix tr").all()[1:]}
    header = page.locator("table#matrix tr").first.locator("th").all_inner_texts()[1:]
    cell = lambda a, b: rows[a][header.index(b)]
    check(cell("ges1", "ges2") == "protected (group 1)", "ges1 -> ges2: protected with group 1")
    check(cell("gen1", "ges1") == "discarded", "gen1 -> ges1: discarded (closed, no common group)")
    check(cell("ges3", "ges2") == "plaintext", "ges3 -> ges2: plaintext (both open, no common group)")
    shot(page, "matrix")

    page.click("nav form button")
    page.goto(url + "/ui/")
    check(page.url.endswith("/ui/login"), "logged out")
    browser.close()

if failures:
    print(f"{len(failures)} UI check(s) failed", file=sys.stderr)
    sys.exit(1)
print("ui-test: all checks passed")
