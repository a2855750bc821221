"""The web UI's defences (issue 17): bodies read whole or refused, Host and Origin checked, the action
token, the security headers, and no secret in an answer, a page or a log line. A real UiServer over a
fake nimbus client (the logic under test is the HTTP shell), spoken to in raw HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading

import pytest
from click.testing import CliRunner
from conftest import ROOT, wait_for
from test_ui import Page, browser  # noqa: F401  (browser: the fixture, headless Chromium, skipped when missing)

from streamgale.config import REDACTED, SETTINGS, redact
from streamgale.ui import access
from streamgale.ui.access import UiConfigError, read_token_file
from streamgale.ui.server import MAX_BODY, UiServer, make_server

TOKEN = "s3cret-Token-0123456789abcdef"
STATIC = ROOT / "streamgale" / "ui" / "static"
ROW = {"id": "wc-1", "name": "wc", "status": "ACTIVE", "workers": 1, "executors": 1, "tasks": 1, "uptime": 1}
CLUSTER = {"leader": "n:1", "nimbuses": ["n:1"], "topologies": 1, "supervisors": []}
INFO = {"topology": {"spec": {"components": {
    "words": {"kind": "spout", "parallelism": 1, "tasks": 1, "inputs": [], "outputs": {"default": ["w"]}},
    "count": {"kind": "bolt", "parallelism": 1, "tasks": 1, "outputs": {},
              "inputs": [{"source": "words", "stream": "default", "type": "shuffle"}]}}}},
    "assignment": {"slots": {}}, "errors": {}}


class FakeNimbus:
    """Canned answers; records every action it is asked to run."""

    def __init__(self, calls: list):
        self.calls = calls

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def cluster_info(self):
        return CLUSTER

    def list_topologies(self):
        return [ROW]

    def topology_info(self, name):
        return INFO

    def topology_stats(self, name):
        return None

    def topology_config(self, name):
        return {"config": {"topology.workers": 1}, "topology_keys": []}

    def __getattr__(self, action):
        if action not in ("activate", "deactivate", "rebalance", "kill"):
            raise AttributeError(action)
        return lambda name, **kwargs: self.calls.append((action, name))


class Served:
    def __init__(self, server: UiServer, calls: list):
        self.server, self.calls = server, calls
        self.port = server.server_address[1]

    def raw(self, data: bytes, shut_write: bool = False) -> http.client.HTTPResponse:
        """Sends ``data`` as it is on a new connection; the response, body read (``.data``)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
            response = http.client.HTTPResponse(sock)
            response.begin()
            response.data = response.read()  # type: ignore[attr-defined]
            return response
        finally:
            sock.close()

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                host: str | None = "default") -> http.client.HTTPResponse:
        head = {"Host": f"127.0.0.1:{self.port}" if host == "default" else host,
                "Content-Type": "application/json" if method == "POST" else None,
                "Content-Length": str(len(body)) if method == "POST" else None, "Connection": "close",
                **(headers or {})}
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items() if v is not None)]
        return self.raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def post(self, action: str = "deactivate", body: bytes = b"{}", **kwargs) -> http.client.HTTPResponse:
        return self.request("POST", f"/api/v1/topology/wc/{action}", body, **kwargs)


def answer(response: http.client.HTTPResponse) -> dict:
    assert response.getheader("Content-Type") == "application/json"
    return json.loads(response.data)  # type: ignore[attr-defined]


@pytest.fixture
def serve():
    """serve(**UiServer keywords) -> a running UI on 127.0.0.1; every one is shut down at teardown."""
    started: list[tuple[UiServer, threading.Thread]] = []

    def start(**kwargs) -> Served:
        calls: list = []
        kwargs.setdefault("body_timeout", 0.5)
        server = UiServer(("127.0.0.1", 0), lambda: FakeNimbus(calls), **kwargs)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return Served(server, calls)

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- bodies -----------------------------------------------------------------------------------


def test_a_body_cut_short_is_a_400_and_runs_nothing(serve):
    ui = serve()
    head = (f"POST /api/v1/topology/wc/kill HTTP/1.1\r\nHost: 127.0.0.1:{ui.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    ended = ui.raw(head + b'{"wait": 0', shut_write=True)  # the client sent 10 bytes and ended
    assert ended.status == 400 and "cut short" in answer(ended)["error"] and "after 10" in answer(ended)["error"]
    stalled = ui.raw(head + b'{"wait": 0')  # ... or sent 10 and went quiet: the body deadline ends it
    assert stalled.status == 400 and answer(stalled)["type"] == "Timeout"
    assert "10 arrived within 0.5 s" in answer(stalled)["error"]
    assert ended.getheader("Connection") == "close"
    assert ui.calls == []
    assert ui.post("kill", b'{"wait": 0}').status == 200 and ui.calls == [("kill", "wc")]


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "\u00b2", "+5", ""])
def test_a_bad_content_length_is_a_400_and_the_server_keeps_serving(serve, length):
    ui = serve()
    r = ui.post(body=b"{}", headers={"Content-Length": length})
    assert r.status == 400 and "Content-Length must be a number of bytes" in answer(r)["error"]
    assert ui.calls == [] and ui.request("GET", "/api/v1/cluster/summary").status == 200


def test_conflicting_lengths_chunked_and_oversized_bodies_are_refused(serve):
    ui = serve()
    both = (f"POST /api/v1/topology/wc/kill HTTP/1.1\r\nHost: 127.0.0.1:{ui.port}\r\nContent-Type: application/json"
            "\r\nContent-Length: 2\r\nContent-Length: 12\r\n\r\n{}").encode()
    assert ui.raw(both).status == 400
    r = ui.post(headers={"Content-Length": None, "Transfer-Encoding": "chunked"}, body=b"2\r\n{}\r\n0\r\n\r\n")
    assert r.status == 400 and "chunked" in answer(r)["error"]
    assert ui.post(body=b"[" * (MAX_BODY + 1)).status == 413
    assert ui.calls == []


def test_json_nested_too_deeply_is_a_400(serve):
    ui = serve()
    for body in (b"[" * 60000, b'{"a":' * 10000 + b"1" + b"}" * 10000):
        r = ui.post("rebalance", body)
        assert r.status == 400 and answer(r)["error"] == "the request body is JSON nested too deeply"
    r = ui.post("rebalance", b"[[[1]]]")
    assert r.status == 400 and "JSON object" in answer(r)["error"]
    assert ui.calls == [] and ui.request("GET", "/api/v1/cluster/summary").status == 200


# -- Host, Origin, Content-Type ---------------------------------------------------------------


def test_only_the_ui_s_own_host_names_are_answered(serve):
    ui = serve(hosts=["ui.example"])
    for host in (f"127.0.0.1:{ui.port}", "localhost", f"LOCALHOST.:{ui.port}", "[::1]:80", "ui.example",
                 "UI.example:443"):
        assert ui.request("GET", "/api/v1/cluster/summary", host=host).status == 200, host
    for host in ("evil.example", f"evil.example:{ui.port}", "127.0.0.1.evil.example", "::1", "", None):
        r = ui.request("GET", "/", host=host)
        assert r.status == 421, host
        error = answer(r)["error"]
        assert "127.0.0.1, ::1, localhost, ui.example" in error and "ui.allowed_hosts" in error
    r = ui.post("kill", host="evil.example")
    assert r.status == 421 and answer(r)["type"] == "MisdirectedRequest" and ui.calls == []


def test_actions_from_foreign_origins_or_without_json_are_refused(serve):
    ui = serve()
    for origin in ("http://evil.example", "null", "https://127.0.0.1.evil.example:8080", "file://"):
        r = ui.post(headers={"Origin": origin})
        assert r.status == 403 and "ui.allowed_hosts" in answer(r)["error"], origin
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        r = ui.post(headers={"Content-Type": ctype})
        assert r.status == 415 and "application/json" in answer(r)["error"], ctype
    assert ui.calls == []
    assert ui.post(headers={"Origin": f"http://localhost:{ui.port}"}).status == 200
    assert ui.post(headers={"Content-Type": "application/json; charset=utf-8"}).status == 200
    assert ui.calls == [("deactivate", "wc")] * 2


def test_every_response_carries_the_security_headers(serve):
    ui = serve(token=TOKEN)
    responses = [ui.request("GET", "/"), ui.request("GET", "/static/app.js"), ui.request("GET", "/nope"),
                 ui.request("GET", "/api/v1/cluster/summary"), ui.request("GET", "/", host="evil.example"),
                 ui.post(), ui.post(headers={"Content-Length": "-1"}), ui.request("PUT", "/"),
                 ui.raw(b"GET /a b HTTP/1.1\r\n\r\n")]
    assert [r.status for r in responses] == [200, 200, 404, 200, 421, 401, 400, 501, 400]
    for r in responses:
        assert r.getheader("X-Frame-Options") == "DENY"
        assert r.getheader("X-Content-Type-Options") == "nosniff"
        assert r.getheader("Referrer-Policy") == "no-referrer" and r.getheader("Cache-Control") == "no-store"
        csp = r.getheader("Content-Security-Policy")
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp


def test_the_page_needs_nothing_the_content_security_policy_forbids():
    """No inline script or style (CSP default-src 'self' blocks them), nothing from elsewhere."""
    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page
    assert not re.search(r"\s(style|on[a-z]+)=", page)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    script = (STATIC / "app.js").read_text()
    assert not re.search(r"\bstyle:|innerHTML|eval\(|new Function|javascript:", script)
    assert "sessionStorage" in script and "Authorization" in script and "document.cookie" not in script


@pytest.mark.slow
def test_the_page_works_under_its_policy_and_sends_the_token(serve, browser):  # noqa: F811  (fixture)
    ui = serve(token=TOKEN)
    # a listener injected through the DevTools protocol, which the page's own policy does not govern
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "window.violations = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));")})
    browser.get(f"http://127.0.0.1:{ui.port}/#/topology/wc")

    page = Page(browser)
    find, shown = page.find, page.attempt

    def deactivate():
        find("btn-deactivate").click()
        wait_for(shown(lambda: find("confirm-dialog").is_displayed()), message="the confirmation dialog")
        find("confirm-ok").click()

    wait_for(shown(lambda: find("status").text == "ACTIVE" and find("node-count")), message="the topology page")
    deactivate()
    wait_for(shown(lambda: "needs the UI's token" in find("message").text), message="the 401 in the banner")
    find("token-input").send_keys(TOKEN)
    find("token-save").click()
    assert find("token-input").get_attribute("value") == "" and "Token set" in find("message").text
    deactivate()
    wait_for(lambda: ui.calls == [("deactivate", "wc")], message="the action with the token")
    assert browser.execute_script("return window.violations") == []
    browser.execute_script("document.body.setAttribute('style', 'color: red')")  # the listener listens
    wait_for(lambda: browser.execute_script("return window.violations"), message="a violation reported")
    assert TOKEN not in browser.page_source


# -- the token --------------------------------------------------------------------------------


def test_with_a_token_reads_stay_open_and_actions_need_it(serve, caplog):
    caplog.set_level(logging.DEBUG)
    ui = serve(token=TOKEN)
    seen = []
    for path in ("/", "/static/app.js", "/api/v1/cluster/summary", "/api/v1/topology/summary"):
        r = ui.request("GET", path)
        assert r.status == 200, path
        seen.append(r)
    missing = ui.post()
    assert missing.status == 401 and missing.getheader("WWW-Authenticate") == 'Bearer realm="streamgale-ui"'
    assert "Authorization: Bearer <token>" in answer(missing)["error"] and answer(missing)["type"] == "Unauthorized"
    assert ui.post(headers={"Authorization": f"Basic {TOKEN}"}).status == 401
    wrong = [ui.post(headers={"Authorization": f"Bearer {t}"}) for t in (TOKEN[:-1], TOKEN + "x", "\u00e9")]
    assert [r.status for r in wrong] == [403, 403, 403] and answer(wrong[0])["error"].startswith("the token is wrong")
    assert ui.calls == []
    right = ui.post("kill", b'{"wait": 0}', headers={"Authorization": f"bearer  {TOKEN} "})
    assert right.status == 200 and ui.calls == [("kill", "wc")]
    seen += [missing, *wrong, right]
    for r in seen:
        assert TOKEN not in r.data.decode("latin-1") and TOKEN not in str(r.getheaders())
    assert "kill wc" in caplog.text and TOKEN not in caplog.text  # actions are logged, the token never


def test_open_actions_only_on_loopback():
    with pytest.raises(UiConfigError, match=r"0\.0\.0\.0, which is not loopback.*Set ui\.token_file"):
        UiServer(("0.0.0.0", 0), lambda: None)
    server = UiServer(("0.0.0.0", 0), lambda: None, token=TOKEN)  # with a token: fine
    try:
        assert server.access.hosts == {"localhost", "127.0.0.1", "::1"}  # 0.0.0.0 names no host
    finally:
        server.server_close()
    assert access.is_loopback("127.0.1.1") and access.is_loopback("[::1]") and access.is_loopback("LocalHost")
    assert not access.is_loopback("0.0.0.0") and not access.is_loopback("") and not access.is_loopback("10.0.0.1")


def test_token_files_are_checked_like_ssh_keys(tmp_path):
    file = tmp_path / "token"
    with pytest.raises(UiConfigError, match="does not exist; create one with"):
        read_token_file(file)
    file.write_text(f"  {TOKEN}\n")
    file.chmod(0o640)
    with pytest.raises(UiConfigError, match=r"accessible by group or others \(mode -rw-r-----\).*chmod 600"):
        read_token_file(file)
    file.chmod(0o600)
    assert read_token_file(file) == TOKEN
    for text in ("\n \n", "two words", "caf\u00e9"):
        file.write_text(text)
        with pytest.raises(UiConfigError, match="is empty|printable ASCII"):
            read_token_file(file)
    with pytest.raises(UiConfigError, match="not a regular file"):
        read_token_file(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):  # before listening or asking nimbus
        make_server("127.0.0.1", 0, ["127.0.0.1:1"], token_file=tmp_path / "nope")


def test_header_parsing():
    assert access.host_name("UI.Example.:8080") == "ui.example" and access.host_name("[::1]:80") == "::1"
    for bad in (None, "", "a:b", "a b", "x@y", "[::1", "::1", "h:\u00b2"):
        assert access.host_name(bad) is None, bad
    assert access.origin_host("https://[::1]:9") == "::1" and access.origin_host("http://A.example") == "a.example"
    assert access.origin_host("null") is None and access.origin_host("ftp://a") is None


# -- the command ------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, monkeypatch):
    """run(*args) -> click result of `streamgale --config <empty> ...`, in this process (logging untouched)."""
    from streamgale.cli import main, ui_command

    monkeypatch.setattr(ui_command, "setup_logging", lambda config: None)
    conf = tmp_path / "empty.yaml"
    conf.write_text("{}\n")

    def invoke(*args: str):
        return CliRunner().invoke(main.cli, ["--config", str(conf), *args], catch_exceptions=False)
    return invoke


def test_ui_command_refuses_open_actions_beyond_loopback_and_bad_token_files(run, tmp_path):
    r = run("--nimbus", "127.0.0.1:1", "ui", "--host", "0.0.0.0", "--port", "0")
    assert r.exit_code == 2 and "not loopback" in r.output and "ui.token_file" in r.output
    r = run("--nimbus", "127.0.0.1:1", "ui", "--port", "0", "--token-file", str(tmp_path / "nope"))
    assert r.exit_code == 2 and "does not exist" in r.output
    help_text = run("ui", "--help").output
    assert "--token-file PATH" in help_text and "no authentication" not in help_text


# -- redaction --------------------------------------------------------------------------------


def test_redact_hides_secret_values_but_not_the_files_holding_them():
    assert redact("my.db_password", "hunter2") == REDACTED
    assert redact("api.TOKEN", 12345) == REDACTED and redact("x.client_secret", ["a"]) == REDACTED
    assert redact("aws.credentials", {"id": "a"}) == REDACTED
    assert redact("ui.token_file", "/etc/sg/token") == "/etc/sg/token"
    assert redact("security.zookeeper_credentials", "/etc/sg/zk") == "/etc/sg/zk"
    assert redact("my.password_path", "/p") == "/p" and redact("my.db_password", None) is None
    assert redact("topology.state.redis.url", "redis://:pw@h:6379/0") == f"redis://:{REDACTED}@h:6379/0"
    assert redact("my.url", "amqp://u:p@q@h/v?x=@") == f"amqp://u:{REDACTED}@h/v?x=@"
    assert redact("my.url", "http://u@h/") == "http://u@h/" and redact("workers", 4) == 4
    assert redact("my.db", {"password": "x", "host": "h"}) == {"password": REDACTED, "host": "h"}
    for key, setting in SETTINGS.items():  # no built-in default is hidden
        assert redact(key, setting.default) == setting.default, key


def test_config_command_redacts(run):
    r = run("config", "-c", "my.db_password=hunter2", "-c", "my.url=redis://u:pw@h:1/0", "-c", "ui.token_file=/t")
    assert r.exit_code == 0, r.output
    assert "hunter2" not in r.output and ":pw@" not in r.output
    lines = {line.split()[0]: line for line in r.output.splitlines()}
    assert REDACTED in lines["my.db_password"] and f"redis://u:{REDACTED}@h:1/0" in lines["my.url"]
    assert "/t" in lines["ui.token_file"]


def test_docs_describe_securing_the_ui():
    doc = (ROOT / "docs" / "ui.md").read_text()
    section = doc.split("## Securing the web UI", 1)[1].split("\n## ", 1)[0]
    for word in ("ui.token_file", "ui.allowed_hosts", "Authorization: Bearer", "--token-file",
                 "X-Frame-Options", "Content-Security-Policy", "421", "401", "403", "415"):
        assert word in section, word
