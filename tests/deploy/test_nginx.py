"""The nginx site in deploy/nginx: ``nginx -t`` accepts it, its limits match cmschat's
settings, and a real nginx in front of a real ``cmschat serve`` behaves as users and
operators expect (TLS, redirects, HSTS, the WebSocket, client addresses, upload limit,
the web client's headers)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect
from websockets.typing import Origin

from cmschat.api.hsts import hsts_value
from cmschat.attachments.api import ENVELOPE_BYTES
from cmschat.observability.middleware import SECURITY_HEADERS
from cmschat.settings import AttachmentSettings, RealtimeSettings, Settings
from tests.deploy.nginx_site import NGINX, SHIPPED, WEB, Ports, check, install_site, running_nginx
from tests.processes import Server, clean_env, cmschat, free_port, random_password, running_server
from tests.support import required_file_missing

SITE = SHIPPED / "cmschat.conf"
TIMEOUT = 30.0
CLIENT = "127.0.0.2"  # another loopback address: the one nginx, not cmschat, sees directly
UPLOAD_LIMIT = (AttachmentSettings().max_file_mib << 20) + ENVELOPE_BYTES
"""The largest upload body cmschat accepts by default: the file plus its multipart framing."""


@pytest.fixture(autouse=True)
def nginx_installed() -> None:
    """Skip locally (fail in CI) without Debian's nginx (scripts/deploy-tools installs it)."""
    if not NGINX.exists():
        required_file_missing(NGINX, "nginx is not installed (scripts/deploy-tools)")


def spare_ports() -> Ports:
    """Three distinct free loopback ports."""
    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    http, https, app = sorted(chosen)
    return Ports(http=http, https=https, app=app)


def directive(name: str, text: str) -> list[str]:
    """Every value of an nginx directive in ``text``."""
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)


def test_the_upload_limit_is_cmschats() -> None:
    (limit,) = directive("client_max_body_size", SITE.read_text())
    assert re.fullmatch(r"\d+k", limit)
    assert int(limit[:-1]) * 1024 == UPLOAD_LIMIT


def test_only_tls_1_2_and_1_3_are_offered() -> None:
    assert directive("ssl_protocols", SITE.read_text()) == ["TLSv1.2 TLSv1.3"]


def test_websocket_timeouts_outlast_cmschats_idle_timeout() -> None:
    """cmschat closes idle sockets itself; nginx must not cut them sooner."""
    text = SITE.read_text()
    block = text[text.index("location = /api/v1/ws {") :].split("}", 1)[0]
    hours = {"h": 3600, "m": 60, "s": 1}
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = directive(name, block)
        seconds = int(value[:-1]) * hours[value[-1]]
        assert seconds > RealtimeSettings().idle_timeout_seconds * 10, name


def seconds(value: str) -> int:
    """An nginx time such as ``60s``, ``2m`` or ``1h`` in seconds."""
    number, unit = re.fullmatch(r"(\d+)([smh]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


UPSTREAM_FILES = sorted(SHIPPED.glob("upstream.*.conf")) + sorted(
    (SHIPPED.parent / "compose" / "nginx").glob("upstream.*.conf")
)


@pytest.mark.parametrize(
    "path", UPSTREAM_FILES, ids=lambda path: f"{path.parent.parent.name}-{path.name}"
)
def test_nginx_lets_idle_upstream_connections_go_before_cmschat_closes_them(path: Path) -> None:
    """Else nginx may send a request on a connection cmschat is closing, and answer 502
    (it retries only idempotent requests: a send would be lost to the user)."""
    (timeout,) = directive("keepalive_timeout", path.read_text())
    assert directive("keepalive", path.read_text()), "idle upstream connections kept"
    assert seconds(timeout) < Settings().http_keep_alive_seconds


def test_the_release_tools_upstream_lets_idle_connections_go_before_cmschat() -> None:
    text = (SHIPPED.parent / "release" / "release.py").read_text()
    (extra,) = re.findall(r'"UPSTREAM_EXTRA": "([^"]+)"', text)
    (timeout,) = directive("keepalive_timeout", extra.replace("; ", ";\n"))
    assert seconds(timeout) < Settings().http_keep_alive_seconds


def test_serve_keeps_idle_connections_as_long_as_the_setting_says() -> None:
    from cmschat.cli_server import uvicorn_config

    settings = Settings(environment="test", http_keep_alive_seconds=90)
    config = uvicorn_config(object(), settings, host="127.0.0.1", port=0)
    assert config.timeout_keep_alive == 90


@pytest.mark.parametrize("colour", ["blue", "green"])
def test_nginx_accepts_the_site_with_either_upstream(tmp_path: Path, colour: str) -> None:
    conf = install_site(tmp_path, spare_ports(), colour)
    result = check(conf)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    # nginx 1.25.1 and later deprecate "listen ... http2" (1.22 knows no other way).
    warned = [line for line in result.stderr.splitlines() if "[warn]" in line]
    assert all('"listen ... http2" directive is deprecated' in line for line in warned), warned


# A real nginx in front of a real cmschat.


@dataclass
class Stack:
    """nginx on spare ports proxying to ``cmschat serve``, with an admin account."""

    ports: Ports
    server: Server
    ca: Path
    password: str

    @property
    def tls(self) -> ssl.SSLContext:
        """A client context trusting the test's certificate."""
        return ssl.create_default_context(cafile=self.ca)

    @property
    def https(self) -> str:
        """nginx's HTTPS base URL."""
        return f"https://127.0.0.1:{self.ports.https}"

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """An HTTPS client of nginx connecting from ``source``."""
        transport = httpx.HTTPTransport(verify=self.tls, local_address=source)
        return httpx.Client(base_url=self.https, transport=transport, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """cmschat trusting nginx (127.0.0.1) for forwarded headers, nginx in front of it."""
    if not NGINX.exists():
        required_file_missing(NGINX, "nginx is not installed (scripts/deploy-tools)")
    directory = tmp_path_factory.mktemp("nginx")
    ports = spare_ports()
    conf = install_site(directory / "nginx", ports)
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATA_DIR=str(directory / "var"),
        CMSCHAT_WEB_DIR=str(WEB),
        CMSCHAT_TRUSTED_PROXIES="127.0.0.1",
        CMSCHAT_LOG_LEVEL="WARNING",
    )
    password = random_password()
    made = cmschat(
        directory, "user", "create", "boss", "--role", "admin", "--password-stdin",
        env=env, stdin=password + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ca = conf.parent / "cmschat" / "tls" / "fullchain.pem"
    with running_server(directory, env, "app", ports.app) as server, running_nginx(conf, ports):
        yield Stack(ports, server, ca, password)


def login(client: httpx.Client, password: str) -> httpx.Response:
    """Sign in as the admin."""
    response = client.post("/api/v1/auth/login", json={"username": "boss", "password": password})
    assert response.status_code == 200, response.text
    return response


@pytest.mark.slow
def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    response = httpx.get(
        f"http://127.0.0.1:{stack.ports.http}/console.html?lang=ko", timeout=TIMEOUT
    )
    assert response.status_code == 301
    assert response.headers["location"] == "https://127.0.0.1/console.html?lang=ko"
    assert "strict-transport-security" not in response.headers


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/", "/healthz", "/api/v1/me", "/no-such-page"])
def test_every_https_answer_carries_cmschats_hsts_once(stack: Stack, path: str) -> None:
    with stack.client() as client:
        response = client.get(path)
    defaults = Settings.model_fields
    expected = hsts_value(
        defaults["hsts_max_age"].default,
        include_subdomains=defaults["hsts_include_subdomains"].default,
    )
    assert response.headers.get_list("strict-transport-security") == [expected]


def handshake(port: int, tls: ssl.SSLContext) -> tuple[str | None, str]:
    """The TLS version and cipher a connection to ``port`` agrees on."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        tls.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
    ):
        cipher = connection.cipher()
        assert cipher is not None
        return connection.version(), cipher[0]


def only(stack: Stack, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    """A client context that offers nothing but ``version`` (and ``ciphers``)."""
    context = ssl.create_default_context(cafile=stack.ca)
    with warnings.catch_warnings():  # Python deprecates offering TLS 1.1; that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    return context


@pytest.mark.slow
def test_tls_1_2_and_1_3_are_accepted_with_forward_secret_aead_ciphers(stack: Stack) -> None:
    version, cipher = handshake(stack.ports.https, only(stack, ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    assert handshake(stack.ports.https, only(stack, ssl.TLSVersion.TLSv1_3))[0] == "TLSv1.3"


@pytest.mark.slow
def test_tls_1_1_is_refused_by_nginx(stack: Stack) -> None:
    # Security level 0, so that OpenSSL lets this client offer TLS 1.1 at all.
    old = only(stack, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack.ports.https, old)
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"  # nginx's alert


@pytest.mark.slow
def test_tls_1_2_without_forward_secrecy_or_aead_is_refused(stack: Stack) -> None:
    weak = only(
        stack, ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256:AES256-SHA256:ECDHE-RSA-AES128-SHA"
    )
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack.ports.https, weak)
    assert refused.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"  # no cipher in common


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_reach_cmschat(stack: Stack, path: str) -> None:
    with stack.client() as client:
        response = client.get(path)
    assert response.status_code == 200
    assert "x-request-id" in response.headers  # cmschat's answer, not one of nginx's


@pytest.mark.slow
def test_a_browser_websocket_through_nginx_signs_in(stack: Stack) -> None:
    with stack.client() as client:
        token = login(client, stack.password).json()["access_token"]
    with connect(
        f"wss://127.0.0.1:{stack.ports.https}/api/v1/ws",
        ssl=stack.tls,
        # What a browser on the client's page sends: cmschat checks it against the Host.
        origin=Origin(f"https://127.0.0.1:{stack.ports.https}"),
        open_timeout=TIMEOUT,
    ) as socket_:
        socket_.send(json.dumps({"type": "auth", "token": token, "resume": {}}))
        ready = json.loads(socket_.recv(timeout=TIMEOUT))
        socket_.send(json.dumps({"type": "ping"}))
        answer = json.loads(socket_.recv(timeout=TIMEOUT))
    assert ready["type"] == "ready"
    assert answer["type"] == "pong"


@pytest.mark.slow
def test_cmschat_records_the_clients_address_not_nginxs_nor_a_forged_one(stack: Stack) -> None:
    with stack.client(source=CLIENT) as client:
        signed_in = client.post(
            "/api/v1/auth/login",
            json={"username": "boss", "password": stack.password},
            headers={"X-Forwarded-For": "203.0.113.7"},  # a client's own claim: not believed
        )
        assert signed_in.status_code == 200, signed_in.text
        token = signed_in.json()["access_token"]
        trail = client.get(
            "/api/v1/admin/audit",
            params={"action": "auth.login"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert trail.status_code == 200, trail.text
    (event,) = [
        item
        for item in trail.json()["items"]
        if item["request_id"] == signed_in.headers["x-request-id"]
    ]
    assert event["client_address"] == CLIENT


def declared_upload(stack: Stack, size: int) -> tuple[int, bytes]:
    """The status and body of the answer to an upload that declares ``size`` bytes and
    sends none of them (read by its length: nginx waits a while for a body nobody read)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", stack.ports.https, context=stack.tls, timeout=TIMEOUT
    )
    try:
        connection.putrequest("POST", "/api/v1/rooms/1/attachments")
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_an_upload_over_cmschats_limit_is_refused_by_nginx_and_one_at_it_is_not(
    stack: Stack,
) -> None:
    status, body = declared_upload(stack, UPLOAD_LIMIT + 1)
    assert status == 413
    assert b"<center>nginx</center>" in body  # before a byte went to cmschat
    status, body = declared_upload(stack, UPLOAD_LIMIT)
    assert status == 401  # cmschat's answer: nobody signed in
    assert json.loads(body)["error"]["code"]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/index.html", "/", "/console.html", "/js/chat.js"])
def test_the_web_clients_files_carry_cmschats_own_headers(stack: Stack, path: str) -> None:
    """nginx serves web/ with exactly the security headers cmschat sends for it (over
    HTTPS from a trusted proxy, so with HSTS), and the same content type."""
    own = httpx.get(
        stack.server.base_url + path, headers={"X-Forwarded-Proto": "https"}, timeout=TIMEOUT
    )
    with stack.client() as client:
        served = client.get(path)
    assert own.status_code == served.status_code == 200
    names = [*SECURITY_HEADERS, "Strict-Transport-Security"]
    assert all(name in own.headers for name in names)
    assert {name: served.headers.get_list(name) for name in names} == {
        name: own.headers.get_list(name) for name in names
    }
    # Debian's mime.types still names JavaScript by its older, equally valid type.
    own_type = own.headers["content-type"].replace("text/javascript", "application/javascript")
    assert served.headers["content-type"] == own_type
    assert served.content == own.content


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "cache"),
    [
        ("/", "no-cache"),
        ("/config.json", "no-cache"),
        ("/js/api.js", "no-cache"),
        ("/vendor/uplot/uPlot.esm.js", "public, max-age=86400"),
    ],
)
def test_the_web_clients_files_are_cached_as_their_names_allow(
    stack: Stack, path: str, cache: str
) -> None:
    with stack.client() as client:
        first = client.get(path)
        again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert first.status_code == 200
    assert first.headers.get_list("cache-control") == [cache]
    assert again.status_code == 304  # revalidation costs no body
