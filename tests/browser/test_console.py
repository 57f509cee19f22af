"""The browser console, tested in a real browser (Debian's chromium, driven by Playwright)
against the real `okta-stream` binary: events posted to the hook appear, filters hide what does
not match and survive a reload through the URL, a server restart is followed by a resume with
no gap and no duplicate, the token prompt works with OKTA_STREAM_GRPC_TOKENS, and with
OKTA_STREAM_PROFILE_VALUES on (against a small fake of Okta's Users API in this file) an update
event shows its old → new values and how far they can be trusted.

Run by scripts/test: `python3 -m pytest tests/browser -v`. OKTA_STREAM_BIN names the binary
(default target/debug/okta-stream); screenshots go to target/console-screenshots/.
"""

import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("OKTA_STREAM_BIN", ROOT / "target" / "debug" / "okta-stream"))
SHOTS = ROOT / "target" / "console-screenshots"
SECRET = "browser-test-hook-secret"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Server:
    """A running `okta-stream serve` on loopback, found by its `listening` lines."""

    def __init__(self, data_dir, env=None, http="127.0.0.1:0", grpc="127.0.0.1:0"):
        self.admin = None
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "OKTA_STREAM_DATA_DIR": str(data_dir),
            "OKTA_STREAM_HTTP_ADDR": http,
            "OKTA_STREAM_GRPC_ADDR": grpc,
            "OKTA_STREAM_ADMIN_ADDR": "127.0.0.1:0",
            "OKTA_STREAM_HOOK_SECRETS": SECRET,
            "OKTA_STREAM_HEARTBEAT_SECS": "1",
            "RUST_LOG": "warn",
        }
        environment.update(env or {})
        self.process = subprocess.Popen(
            [str(BIN), "serve"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.http = self.grpc = None
        deadline = time.monotonic() + 30
        while self.http is None or self.grpc is None or self.admin is None:
            assert time.monotonic() < deadline, "okta-stream did not start within 30 s"
            line = self.process.stdout.readline()
            assert line, "okta-stream exited before listening"
            if line.startswith("listening http="):
                self.http = line.strip().split("=", 1)[1]
            elif line.startswith("listening grpc="):
                self.grpc = line.strip().split("=", 1)[1]
            elif line.startswith("listening admin="):
                self.admin = line.strip().split("=", 1)[1]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for _ in self.process.stdout:
            pass

    @property
    def url(self):
        return f"http://{self.grpc}/"

    def metric(self, name):
        """The value of the unlabelled sample `name` on the admin listener's /metrics, or None."""
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=10)


def okta_time(at):
    """`2026-12-05T13:40:00.123Z`, as Okta writes its times."""
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeUsersApi:
    """A small fake of Okta's Users API (../shared/okta/SPEC.md, section I) on loopback:
    `GET /api/v1/users` (every user on one page), `GET /api/v1/users/{id}` (404 E0000007 for an
    unknown id), SSWS token auth (401 otherwise), rate-limit headers, and an empty System Log for
    the poller, which runs whenever OKTA_ORG_URL is set. Records the paths it was asked."""

    TOKEN = "browser-test-api-token"

    def __init__(self):
        self.users = {}
        self.asked = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.answer(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_user(self, user_id, login, **profile):
        """Creates or changes a user as an admin would; `lastUpdated` moves to now."""
        with self.lock:
            user = self.users.get(user_id)
            now = datetime.now(timezone.utc)
            if user is None:
                user = {"id": user_id, "status": "ACTIVE", "created": okta_time(now), "profile": {"login": login}}
                self.users[user_id] = user
            else:
                # Strictly later than before, at Okta's millisecond precision.
                before = datetime.fromisoformat(user["lastUpdated"].replace("Z", "+00:00"))
                now = max(now, before + timedelta(milliseconds=1))
            user["profile"].update(profile)
            user["lastUpdated"] = okta_time(now)
            return now

    def answer(self, request):
        url = urllib.parse.urlsplit(request.path)
        with self.lock:
            self.asked.append(url.path)
            if request.headers.get("Authorization") != f"SSWS {self.TOKEN}":
                status, body = 401, {"errorCode": "E0000011", "errorSummary": "Invalid token provided"}
            elif url.path == "/api/v1/logs":
                status, body = 200, []
            elif url.path == "/api/v1/users":
                status, body = 200, list(self.users.values())
            elif url.path.startswith("/api/v1/users/"):
                user = self.users.get(urllib.parse.unquote(url.path.rsplit("/", 1)[1]))
                status, body = (200, user) if user else (404, {"errorCode": "E0000007", "errorSummary": "Not found: Resource not found"})
            else:
                status, body = 404, {"errorCode": "E0000022", "errorSummary": "The endpoint does not exist."}
            data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Link", f'<{self.url}{request.path}>; rel="self"')
        request.send_header("X-Rate-Limit-Limit", "600")
        request.send_header("X-Rate-Limit-Remaining", "599")
        request.send_header("X-Rate-Limit-Reset", str(int(time.time()) + 60))
        request.end_headers()
        request.wfile.write(data)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def profile_update(uuid, login, changed, event_type="user.account.update_profile"):
    return {
        "uuid": uuid,
        "published": "2026-11-22T18:07:13.125Z",
        "eventType": event_type,
        "version": "0",
        "displayMessage": "Update user profile for Okta",
        "severity": "INFO",
        "actor": {"id": "00uADMIN", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
        "outcome": {"result": "SUCCESS"},
        "target": [{"id": f"00u-{login}", "type": "User", "alternateId": login, "displayName": "Some User"}],
        "debugContext": {"debugData": {"changedAttributes": changed}},
    }


def post(server, *events):
    body = json.dumps(
        {
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "source": "https://acme.okta.com/api/v1/eventHooks/whoTEST",
            "eventId": f"d-{events[0]['uuid']}",
            "eventTime": "2026-11-22T18:07:15.000Z",
            "data": {"events": list(events)},
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{server.http}/okta/hook",
        data=body,
        headers={"Authorization": SECRET, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204), response.status


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory(prefix="okta-stream-console-") as directory:
        yield Path(directory)


def rows(page):
    return page.locator("#list .row")


def test_an_event_posted_to_the_hook_appears_within_2_s_with_its_user_and_changes(page, data_dir):
    server = Server(data_dir)
    try:
        page.goto(server.url)
        expect(page).to_have_title("okta-stream console")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator("#heartbeat")).to_contain_text("heartbeat", timeout=5_000)

        posted = time.monotonic()
        post(server, profile_update("ev-1", "thor@avengers.org", "lastName,title"))
        row = page.locator('[data-uuid="ev-1"]')
        expect(row).to_be_visible(timeout=2_000)
        assert time.monotonic() - posted < 2.5
        expect(row).to_contain_text("thor@avengers.org")
        expect(row).to_contain_text("by admin@example.com")
        expect(row).to_contain_text("lastName")
        expect(row).to_contain_text("title")
        expect(row).to_contain_text("success")
        expect(row).to_contain_text("hook")
        expect(page.locator("#count-total")).to_have_text("1")

        # A few more so the screenshots show a list, a chart and several kinds of event.
        post(
            server,
            profile_update("ev-2", "natasha@avengers.org", "mobilePhone"),
            profile_update("ev-3", "bruce@avengers.org", "department,costCenter,manager"),
        )
        failed = profile_update("ev-4", "loki@asgard.org", "email", "user.account.update_password")
        failed["outcome"] = {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}
        failed["severity"] = "WARN"
        post(server, failed)
        expect(rows(page)).to_have_count(4, timeout=2_000)
        # Newest on top.
        expect(rows(page).first).to_have_attribute("data-uuid", "ev-4")

        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "console-light.png"))
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(SHOTS / "console-dark.png"))
        page.emulate_media(color_scheme="light")

        # The whole record, as a tree, copied as JSON; the keyboard opens and closes it.
        row.focus()
        page.keyboard.press("Enter")
        detail = page.locator("#detail")
        expect(detail).to_be_visible()
        expect(page.locator("#detail-sub")).to_contain_text("uuid ev-1")
        expect(page.locator("#tree")).to_contain_text("okta_user".replace("okta_user", "oktaUser"))
        expect(page.locator("#tree")).to_contain_text('"thor@avengers.org"')
        page.locator("#copy").click()
        expect(page.locator("#toast")).to_contain_text("Copied")
        page.screenshot(path=str(SHOTS / "console-record.png"))
        page.keyboard.press("Escape")
        expect(detail).to_be_hidden()
    finally:
        server.kill()


def test_a_filter_hides_events_that_do_not_match_and_a_reload_restores_it(page, data_dir):
    server = Server(data_dir)
    try:
        post(
            server,
            profile_update("f-1", "thor@avengers.org", "lastName"),
            profile_update("f-2", "loki@asgard.org", "title"),
        )
        page.goto(server.url)
        expect(rows(page)).to_have_count(2, timeout=5_000)

        page.fill('input[name="user"]', "thor@avengers.org")
        page.click('#filter button[type="submit"]')
        expect(rows(page)).to_have_count(1, timeout=5_000)
        expect(rows(page).first).to_have_attribute("data-uuid", "f-1")
        assert "user=thor%40avengers.org" in page.url, page.url

        # Live events are filtered too.
        post(server, profile_update("f-3", "loki@asgard.org", "lastName"), profile_update("f-4", "thor@avengers.org", "title"))
        expect(page.locator('[data-uuid="f-4"]')).to_be_visible(timeout=2_000)
        expect(page.locator('[data-uuid="f-3"]')).to_have_count(0)

        page.reload()
        expect(page.locator('input[name="user"]')).to_have_value("thor@avengers.org")
        expect(rows(page)).to_have_count(2, timeout=5_000)
        expect(page.locator('[data-uuid="f-2"]')).to_have_count(0)
        expect(page.locator('[data-uuid="f-3"]')).to_have_count(0)

        # A start point and a wrong value: the error names the field and nothing changes.
        page.select_option('select[name="start"]', "after")
        page.fill('input[name="after"]', "soon")
        page.click('#filter button[type="submit"]')
        expect(page.locator("#filter-error")).to_contain_text("after")
        assert "start=after" not in page.url
        expect(rows(page)).to_have_count(2)
        page.fill('input[name="after"]', "1")
        page.fill('input[name="user"]', "")
        page.click('#filter button[type="submit"]')
        expect(rows(page)).to_have_count(3, timeout=5_000)
        expect(page.locator('[data-uuid="f-1"]')).to_have_count(0)
        assert "start=after" in page.url and "after=1" in page.url, page.url
    finally:
        server.kill()


def test_after_a_server_restart_the_console_resumes_with_no_gap_and_no_duplicate(page, data_dir):
    server = Server(data_dir)
    page.goto(server.url)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
    post(server, profile_update("r-1", "thor@avengers.org", "lastName"))
    post(server, profile_update("r-2", "thor@avengers.org", "title"))
    expect(rows(page)).to_have_count(2, timeout=2_000)

    http, grpc = server.http, server.grpc
    server.kill()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=5_000)
    server = Server(data_dir, http=http, grpc=grpc)
    try:
        # One event before the console can have reconnected, one after.
        post(server, profile_update("r-3", "thor@avengers.org", "nickName"))
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
        post(server, profile_update("r-4", "thor@avengers.org", "email"))
        expect(rows(page)).to_have_count(4, timeout=5_000)
        for uuid in ["r-1", "r-2", "r-3", "r-4"]:
            expect(page.locator(f'[data-uuid="{uuid}"]')).to_have_count(1)
        assert [rows(page).nth(i).get_attribute("data-uuid") for i in range(4)] == ["r-4", "r-3", "r-2", "r-1"]
        assert int(page.locator("#count-reconnects").inner_text()) >= 1

        # Pause, miss nothing, resume.
        page.click("#pause")
        expect(page.locator("#conn")).to_have_attribute("data-state", "paused")
        post(server, profile_update("r-5", "thor@avengers.org", "title"))
        page.wait_for_timeout(300)
        expect(page.locator('[data-uuid="r-5"]')).to_have_count(0)
        page.click("#pause")
        expect(page.locator('[data-uuid="r-5"]')).to_have_count(1, timeout=3_000)
        expect(rows(page)).to_have_count(5)
    finally:
        server.kill()


def test_the_token_prompt_works_with_grpc_tokens(page, data_dir):
    server = Server(
        data_dir,
        env={
            "OKTA_STREAM_GRPC_TOKENS": "console-t0ken",
            "OKTA_STREAM_GRPC_ADMIN_TOKENS": "console-admin-t0ken",
        },
    )
    try:
        post(server, profile_update("t-1", "thor@avengers.org", "lastName"))
        page.goto(server.url)
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible(timeout=5_000)
        expect(dialog).to_contain_text("requires a token")
        expect(page.locator("#stream-error")).to_contain_text("UNAUTHENTICATED")

        page.fill("#token-input", "wrong")
        page.click('#token-dialog button[value="save"]')
        expect(dialog).to_be_visible(timeout=5_000)
        expect(dialog).to_contain_text("refused this token")

        page.fill("#token-input", "console-t0ken")
        page.click('#token-dialog button[value="save"]')
        expect(dialog).to_be_hidden()
        expect(page.locator('[data-uuid="t-1"]')).to_be_visible(timeout=5_000)
        expect(page.locator("#stream-error")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('okta-stream.token')") == "console-t0ken"
        assert "console-t0ken" not in page.evaluate("JSON.stringify(localStorage)")
        assert "console-t0ken" not in page.url

        post(server, profile_update("t-2", "thor@avengers.org", "title"))
        expect(page.locator('[data-uuid="t-2"]')).to_be_visible(timeout=2_000)

        # The quarantine tab calls ListQuarantined with the same token: a read token is refused
        # (the raw payloads need an admin token), and the page says which token to use.
        page.click("#tab-quarantine")
        error = page.locator("#quarantine-error")
        expect(error).to_contain_text("PERMISSION_DENIED", timeout=5_000)
        expect(error).to_contain_text("admin token")

        # An admin token reads the quarantine: the tab reloads when the token changes.
        page.click("#token-button")
        expect(dialog).to_be_visible(timeout=5_000)
        page.fill("#token-input", "console-admin-t0ken")
        page.click('#token-dialog button[value="save"]')
        expect(dialog).to_be_hidden()
        expect(page.locator("#quarantine tbody")).to_contain_text("Nothing is quarantined", timeout=5_000)
        expect(error).to_be_hidden()
    finally:
        server.kill()


def test_twenty_thousand_events_replay_into_a_list_that_keeps_only_visible_rows(page, data_dir):
    server = Server(data_dir)
    try:
        total, batch = 20_000, 500
        for start in range(0, total, batch):
            post(server, *[profile_update(f"p-{i}", f"user{i}@example.com", "title") for i in range(start, start + batch)])
        began = time.monotonic()
        page.goto(server.url + "?start=oldest")
        expect(page.locator("#count-total")).to_have_text("20,000", timeout=30_000)
        replay_secs = time.monotonic() - began
        # Virtualised: the DOM holds a screenful of rows, not twenty thousand.
        assert rows(page).count() < 100, rows(page).count()
        expect(rows(page).first).to_have_attribute("data-uuid", f"p-{total - 1}")

        # Scrolling to the end renders the oldest rows; the keyboard walks from there.
        page.evaluate("document.getElementById('list').scrollTop = 1e9")
        expect(page.locator('[data-uuid="p-0"]')).to_be_visible(timeout=2_000)
        page.locator('[data-uuid="p-1"]').focus()
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.activeElement.dataset.uuid") == "p-0"
        page.keyboard.press("Home")
        assert page.evaluate("document.activeElement.dataset.uuid") == f"p-{total - 1}"

        # A live event still lands on top at once.
        posted = time.monotonic()
        post(server, profile_update("p-live", "late@example.com", "title"))
        expect(rows(page).first).to_have_attribute("data-uuid", "p-live", timeout=2_000)
        print(f"replayed {total} events in {replay_secs:.1f} s; live event shown in {time.monotonic() - posted:.2f} s")
    finally:
        server.kill()


def test_the_console_can_be_turned_off(data_dir):
    server = Server(data_dir, env={"OKTA_STREAM_CONSOLE": "false"})
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url, timeout=10)
        assert refused.value.code != 200
    finally:
        server.kill()


def test_with_profile_values_on_an_update_shows_old_and_new_values_and_their_status(page, data_dir):
    okta = FakeUsersApi()
    okta.set_user("00uTHOR", "thor@avengers.org", title="Engineer", department="R&D")
    server = Server(
        data_dir,
        env={
            "OKTA_ORG_URL": okta.url,
            "OKTA_API_TOKEN": FakeUsersApi.TOKEN,
            "OKTA_STREAM_PROFILE_VALUES": "true",
            "OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS": "5",
        },
    )
    try:
        # The seeding sweep reads every user once: Thor's title is known to be Engineer.
        deadline = time.monotonic() + 15
        while (server.metric("okta_stream_profile_sweeps_total") or 0) < 1:
            assert time.monotonic() < deadline, "the seeding sweep did not complete within 15 s"
            time.sleep(0.1)
        assert "/api/v1/users" in okta.asked

        page.goto(server.url)
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)

        # An admin promotes Thor; Okta's event names the attribute, the Users API has the value.
        okta.set_user("00uTHOR", "thor@avengers.org", title="Manager")
        # A user created after the sweep: okta-stream has no earlier reading of her.
        okta.set_user("00uNEW", "jane@example.com", title="Designer")
        published = okta_time(datetime.now(timezone.utc) + timedelta(milliseconds=1))
        promoted = profile_update("pv-1", "thor@avengers.org", "title")
        promoted["target"][0]["id"] = "00uTHOR"
        promoted["published"] = published
        newcomer = profile_update("pv-2", "jane@example.com", "title")
        newcomer["target"][0]["id"] = "00uNEW"
        newcomer["published"] = published
        post(server, promoted, newcomer)

        row = page.locator('[data-uuid="pv-1"]')
        expect(row).to_be_visible(timeout=5_000)
        change = row.locator(".change")
        expect(change).to_have_count(1)
        expect(change).to_have_attribute("title", "title: Engineer → Manager")
        expect(change.locator(".attr")).to_have_text("title")
        expect(change.locator(".old")).to_have_text("Engineer")
        expect(change.locator(".new")).to_have_text("Manager")
        status = row.locator(".badge.values-complete")
        expect(status).to_have_text("values complete")
        expect(status).to_have_attribute("title", "old and new values; the profile was not updated after this event; profile as of " + okta.users["00uTHOR"]["lastUpdated"])

        # No baseline: the new value only, the old one shown as unknown, and the status says so.
        row = page.locator('[data-uuid="pv-2"]')
        expect(row).to_be_visible(timeout=5_000)
        expect(row.locator(".change")).to_have_attribute("title", "title: ∅ → Designer")
        expect(row.locator(".change .old.unknown")).to_have_text("∅")
        expect(row.locator(".badge.values-no_baseline")).to_have_text("values no baseline")
        assert "/api/v1/users/00uTHOR" in okta.asked and "/api/v1/users/00uNEW" in okta.asked

        # The whole record carries the same values (GetEvent), as a subscriber sees them.
        row.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#tree")).to_contain_text("PROFILE_VALUES_STATUS_NO_BASELINE")
        expect(page.locator("#tree")).to_contain_text('"Designer"')
        page.keyboard.press("Escape")

        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "console-profile-values.png"))
    finally:
        server.kill()
        okta.close()
