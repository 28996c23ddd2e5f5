"""Front end hosting: deploy/frontend/publish.py against moto's S3 and CloudFront, and the
CloudFront and Vercel header configs compared with what the server itself sends."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.model import OperationModel  # type: ignore[import-untyped]
from botocore.validate import ParamValidator  # type: ignore[import-untyped]
from fastapi import FastAPI

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.settings import Environment, Settings
from tests import support
from tests.commands import run
from tests.s3server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, S3Server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "frontend"
API = "https://chat.example.com"


def _load(name: str) -> ModuleType:
    """A module of deploy/frontend (they import each other by name, as scripts do)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hosting = _load("hosting")
publish = _load("publish")
vercel_site = _load("vercel_site")


@pytest.fixture
def web(tmp_path: Path) -> Path:
    """A copy of web/ that a test may change."""
    copy = tmp_path / "web"
    shutil.copytree(ROOT / "web", copy)
    return copy


def _session() -> Any:
    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )


@pytest.fixture
def cloudfront(s3_server: S3Server) -> Any:
    """A CloudFront client on the moto server."""
    return _session().client("cloudfront", endpoint_url=s3_server.endpoint_url)


@pytest.fixture
def distribution(cloudfront: Any) -> str:
    """A distribution in moto with the test bucket as its origin."""
    config = {
        "CallerReference": secrets.token_hex(8),
        "Comment": "cmschat web",
        "Enabled": True,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "web",
                    "DomainName": f"{BUCKET}.s3.{REGION}.amazonaws.com",
                    "S3OriginConfig": {"OriginAccessIdentity": ""},
                }
            ],
        },
        "DefaultCacheBehavior": {"TargetOriginId": "web", "ViewerProtocolPolicy": "https-only"},
    }
    answer = cloudfront.create_distribution(DistributionConfig=config)
    return str(answer["Distribution"]["Id"])


class Recorder:
    """An S3 client for the script, and the writes it made, in order."""

    def __init__(self, endpoint_url: str) -> None:
        self.client = _session().client("s3", endpoint_url=endpoint_url)
        self.calls: list[tuple[str, str]] = []
        self.client.meta.events.register("before-parameter-build.s3.PutObject", self._put)
        self.client.meta.events.register("before-parameter-build.s3.DeleteObjects", self._delete)

    def _put(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(("put", params["Key"]))

    def _delete(self, params: dict[str, Any], **_: Any) -> None:
        self.calls += [("delete", item["Key"]) for item in params["Delete"]["Objects"]]

    def take(self) -> list[tuple[str, str]]:
        """The writes since the last call."""
        calls, self.calls = self.calls, []
        return calls


def _invalidated_paths(cloudfront: Any, distribution: str, invalidation: str) -> list[str]:
    answer = cloudfront.get_invalidation(DistributionId=distribution, Id=invalidation)
    return sorted(answer["Invalidation"]["InvalidationBatch"]["Paths"]["Items"])


def test_publish_syncs_with_cache_headers_assets_first_and_invalidates_what_changed(
    s3_server: S3Server, cloudfront: Any, distribution: str, web: Path
) -> None:
    prefix = f"site-{secrets.token_hex(4)}"
    s3 = Recorder(s3_server.endpoint_url)
    site = publish.Site(s3.client, cloudfront, BUCKET, prefix, distribution)
    names = sorted(p.relative_to(web).as_posix() for p in web.rglob("*") if p.is_file())
    (web / "js" / ".chat.js.swp").write_bytes(b"an editor's swap file")

    summary = publish.publish(site, publish.local_files(web, API), dry_run=False)

    first = s3.take()
    assert sorted(key for _, key in first) == [f"{prefix}/{name}" for name in names]
    kinds = [publish.is_last(key.removeprefix(f"{prefix}/")) for _, key in first]
    assert kinds == sorted(kinds), "every asset before the first HTML or config.json"
    assert first[-1] == ("put", f"{prefix}/index.html")
    expected = {
        "index.html": ("text/html; charset=utf-8", "no-cache"),
        "console.html": ("text/html; charset=utf-8", "no-cache"),
        "docs/index.html": ("text/html; charset=utf-8", "no-cache"),
        "config.json": ("application/json; charset=utf-8", "no-cache"),
        "js/chat.js": ("text/javascript; charset=utf-8", "public, max-age=300"),
        "css/base.css": ("text/css; charset=utf-8", "public, max-age=300"),
        "favicon.svg": ("image/svg+xml; charset=utf-8", "public, max-age=300"),
        "vendor/swagger-ui/favicon-32x32.png": ("image/png", "public, max-age=300"),
        "vendor/uplot/LICENSE": ("text/plain; charset=utf-8", "public, max-age=300"),
    }
    for name in names:
        head = s3_server.client.head_object(Bucket=BUCKET, Key=f"{prefix}/{name}")
        assert head["CacheControl"] in ("no-cache", "public, max-age=300"), name
        if name in expected:
            assert (head["ContentType"], head["CacheControl"]) == expected[name], name
    config = s3_server.client.get_object(Bucket=BUCKET, Key=f"{prefix}/config.json")
    assert json.loads(config["Body"].read()) == {"apiBase": API}
    assert f"{len(names)} uploaded, 0 unchanged, 0 deleted" in summary
    assert "\n" not in summary

    (web / "js" / "chat.js").write_text((web / "js" / "chat.js").read_text() + "\n// next\n")
    (web / "css" / "dashboard.css").unlink()
    summary = publish.publish(site, publish.local_files(web, API), dry_run=False)

    assert s3.take() == [
        ("put", f"{prefix}/js/chat.js"),
        ("delete", f"{prefix}/css/dashboard.css"),
    ]
    assert f"1 uploaded, {len(names) - 2} unchanged, 1 deleted" in summary
    changed = s3_server.client.get_object(Bucket=BUCKET, Key=f"{prefix}/js/chat.js")
    assert changed["Body"].read().endswith(b"// next\n")
    invalidation = re.search(r"invalidation (\S+) of 2 path", summary)
    assert invalidation, summary
    assert _invalidated_paths(cloudfront, distribution, invalidation[1]) == [
        "/css/dashboard.css",
        "/js/chat.js",
    ]

    summary = publish.publish(site, publish.local_files(web, API), dry_run=False)
    assert s3.take() == []
    assert summary.endswith("nothing to invalidate")


def test_a_dry_run_changes_nothing(
    s3_server: S3Server, cloudfront: Any, distribution: str, web: Path
) -> None:
    s3 = Recorder(s3_server.endpoint_url)
    site = publish.Site(s3.client, cloudfront, BUCKET, f"dry-{secrets.token_hex(4)}", distribution)
    before = cloudfront.list_invalidations(DistributionId=distribution)["InvalidationList"]

    summary = publish.publish(site, publish.local_files(web, API), dry_run=True)

    assert summary.startswith("dry run") and "would be" in summary
    assert s3.take() == []
    after = cloudfront.list_invalidations(DistributionId=distribution)["InvalidationList"]
    assert after.get("Quantity", 0) == before.get("Quantity", 0)


def test_invalidation_covers_directory_urls_and_falls_back_to_everything() -> None:
    assert publish.invalidation_paths(["index.html", "docs/index.html"]) == [
        "/",
        "/docs/",
        "/docs/index.html",
        "/index.html",
    ]
    many = [f"js/{n}.js" for n in range(publish.INVALIDATE_ALL_ABOVE + 1)]
    assert publish.invalidation_paths(many) == ["/*"]


@pytest.mark.parametrize(
    "value",
    ["chat.example.com", "ftp://chat.example.com", "https://chat.example.com/api", "http://x.org"],
)
def test_an_api_origin_is_a_bare_https_origin(value: str) -> None:
    with pytest.raises(hosting.PublishError):
        hosting.check_origin(value)
    assert hosting.check_origin("https://chat.example.com/") == "https://chat.example.com"


def _run(script: str, *args: str, endpoint_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL": endpoint_url,
    }
    return run([sys.executable, str(DEPLOY / script), *args], timeout=60, env=env)


def test_the_command_publishes_and_prints_one_line(
    s3_server: S3Server, distribution: str, web: Path
) -> None:
    prefix = f"cli-{secrets.token_hex(4)}"
    done = _run(
        "publish.py",
        *("--bucket", BUCKET, "--distribution-id", distribution, "--api-origin", API),
        *("--prefix", prefix, "--web-dir", str(web)),
        endpoint_url=s3_server.endpoint_url,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith(f"published s3://{BUCKET}/")
    config = s3_server.client.get_object(Bucket=BUCKET, Key=f"{prefix}/config.json")
    assert json.loads(config["Body"].read()) == {"apiBase": API}


@pytest.mark.parametrize(
    ("bucket", "distribution_id", "web_dir", "message"),
    [
        ("no-such-bucket", None, None, "bucket 'no-such-bucket' does not exist"),
        (BUCKET, "E0000NOSUCHDIST", None, "distribution 'E0000NOSUCHDIST' not found"),
        (BUCKET, None, "missing", "is not the web client"),
    ],
)
def test_bad_input_is_one_line_and_a_failing_status(
    s3_server: S3Server,
    distribution: str,
    tmp_path: Path,
    bucket: str,
    distribution_id: str | None,
    web_dir: str | None,
    message: str,
) -> None:
    prefix = f"bad-{secrets.token_hex(4)}"
    done = _run(
        "publish.py",
        *("--bucket", bucket, "--distribution-id", distribution_id or distribution),
        *("--api-origin", API, "--prefix", prefix),
        *(("--web-dir", str(tmp_path / web_dir)) if web_dir else ()),
        endpoint_url=s3_server.endpoint_url,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("publish: error: ") and message in done.stderr
    assert "Contents" not in s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)


# The server's headers, and the two configs that must repeat them.

# Headers of a static file that are about the response itself, not its security.
NOT_SECURITY = {
    "accept-ranges",
    "cache-control",
    "content-length",
    "content-type",
    "date",
    "etag",
    "last-modified",
    "server",
    "vary",
    "x-request-id",
}


@pytest.fixture(scope="module")
def server_headers(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, str]]:
    """The security headers the real app sends for / and /index.html over HTTPS."""
    where = tmp_path_factory.mktemp("server")
    settings = Settings(
        environment=Environment.test,
        database_url=support.copy_sqlite(sqlite_template, where / "test.db"),
        data_dir=where / "var",
        secret_key=support.TEST_SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    return support.run_sync(_security_headers(create_app(settings, clock=FakeClock())))


async def _security_headers(app: FastAPI) -> dict[str, dict[str, str]]:
    sent: dict[str, dict[str, str]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            for path in ("/", "/index.html"):
                response = await http.get(path)
                assert response.status_code == 200
                assert "<title>cmschat</title>" in response.text
                sent[path] = {
                    name.lower(): value
                    for name, value in response.headers.items()
                    if name.lower() not in NOT_SECURITY
                }
    return sent


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _vercel_headers(config: dict[str, Any], path: str) -> dict[str, str]:
    """The headers Vercel sends for ``path``: every matching rule, a later one winning."""
    headers: dict[str, str] = {}
    for rule in config["headers"]:
        assert ":" not in rule["source"], "only regex sources: this matcher reads no params"
        if re.fullmatch(rule["source"], path):
            for header in rule["headers"]:
                headers[header["key"].lower()] = header["value"]
    return headers


def _without_connect_src(csp: str) -> str:
    return "; ".join(part for part in csp.split("; ") if not part.startswith("connect-src "))


def test_server_sends_the_security_headers_we_expect(
    server_headers: dict[str, dict[str, str]],
) -> None:
    """The comparison below means something only if the server sends a full set."""
    for sent in server_headers.values():
        assert {"content-security-policy", "strict-transport-security"} <= set(sent)
        assert len(sent) >= 7


def test_the_cloudfront_policy_adds_exactly_the_servers_security_headers(
    server_headers: dict[str, dict[str, str]],
) -> None:
    policy = json.loads((DEPLOY / "cloudfront-headers.json").read_text())
    for sent in server_headers.values():
        assert _lower(hosting.policy_headers(policy)) == sent

    rendered = _lower(hosting.policy_headers(hosting.headers_policy(API)))
    csp = rendered.pop("content-security-policy")
    sent = dict(server_headers["/"])
    assert _without_connect_src(csp) == sent.pop("content-security-policy")
    assert "connect-src 'self' https://chat.example.com wss://chat.example.com" in csp
    assert rendered == sent


def test_the_cloudfront_policy_has_the_shape_cloudfront_accepts() -> None:
    policy = json.loads((DEPLOY / "cloudfront-headers.json").read_text())
    client = boto3.session.Session(region_name=REGION).client("cloudfront")
    model: OperationModel = client.meta.service_model.operation_model("CreateResponseHeadersPolicy")
    report = ParamValidator().validate({"ResponseHeadersPolicyConfig": policy}, model.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_vercel_json_sends_the_servers_security_headers_and_cache_headers(
    server_headers: dict[str, dict[str, str]],
) -> None:
    config = json.loads((DEPLOY / "vercel.json").read_text())
    assert config["outputDirectory"] == "web"
    for path, sent in server_headers.items():
        headers = _vercel_headers(config, path)
        assert headers.pop("cache-control") == "no-cache"
        assert headers == sent, path
    assert _vercel_headers(config, "/config.json")["cache-control"] == "no-cache"
    assert _vercel_headers(config, "/docs/")["cache-control"] == "no-cache"
    assert _vercel_headers(config, "/js/chat.js")["cache-control"] == "public, max-age=300"
    assert _vercel_headers(config, "/js/chat.0123abcd.js")["cache-control"] == publish.IMMUTABLE


def test_vercel_site_stages_web_config_and_a_csp_open_to_the_api(
    tmp_path: Path, server_headers: dict[str, dict[str, str]]
) -> None:
    out = tmp_path / "vercel"

    assert vercel_site.main(["--api-origin", API, "--out", str(out)]) == 0

    assert json.loads((out / "web" / "config.json").read_text()) == {"apiBase": API}
    assert (out / "web" / "index.html").read_bytes() == (ROOT / "web" / "index.html").read_bytes()
    assert json.loads((ROOT / "web" / "config.json").read_text()) == {"apiBase": ""}
    headers = _vercel_headers(json.loads((out / "vercel.json").read_text()), "/")
    csp = headers["content-security-policy"]
    assert _without_connect_src(csp) == server_headers["/"]["content-security-policy"]
    assert csp.endswith("; connect-src 'self' https://chat.example.com wss://chat.example.com")
