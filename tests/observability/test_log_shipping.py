"""The log shippers' configurations (Fluent Bit, Fluentd, Filebeat, Logstash) and the
Elasticsearch template agree with each other and with what cmschat writes. The tools are
not installed here: each file is parsed and checked field by field."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import ecs_logging
import httpx
import pytest
import yaml

from tests.observability.tools import REPO
from tests.support import NamedUser

LOGGING = REPO / "deploy" / "logging"
LOG_FILES = "/var/log/cmschat/*.json"
INDEX_PREFIX = "cmschat-logs"
EXTRA_KEY = re.compile(r'"([a-z_]+(?:\.[a-z_]+)+)":')


def template_fields() -> set[str]:
    """Every field the index template maps, dotted."""
    template = json.loads((LOGGING / "elasticsearch" / "cmschat-logs-template.json").read_text())

    def walk(properties: dict[str, Any], prefix: str) -> set[str]:
        found: set[str] = set()
        for name, mapping in properties.items():
            if "properties" in mapping:
                found |= walk(mapping["properties"], prefix + name + ".")
            else:
                found.add(prefix + name)
        return found

    return walk(template["template"]["mappings"]["properties"], "")


def flatten(record: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys of a nested JSON object."""
    keys: set[str] = set()
    for name, value in record.items():
        if isinstance(value, dict) and name != "ecs.version":
            keys |= flatten(value, prefix + name + ".")
        else:
            keys.add(prefix + name)
    return keys


def fluentd_directives(block: str) -> dict[str, str]:
    """``key value`` lines of the first ``<block>`` section of fluentd.conf."""
    text = (LOGGING / "fluentd.conf").read_text()
    section = re.search(rf"<{block}[^>]*>(.*?)</{block.split()[0]}>", text, re.S)
    assert section, block
    own = re.sub(r"<(\w+)[^>]*>.*?</\1>", "", section.group(1), flags=re.S)  # not nested ones
    return dict(
        line.strip().split(None, 1)
        for line in own.splitlines()
        if line.strip() and not line.strip().startswith(("<", "#"))
    )


def test_every_shipper_tails_the_documented_files_as_json() -> None:
    fluent_bit = yaml.safe_load((LOGGING / "fluent-bit.yaml").read_text())
    [tail] = fluent_bit["pipeline"]["inputs"]
    assert (tail["name"], tail["path"]) == ("tail", LOG_FILES)
    parsers = yaml.safe_load((LOGGING / fluent_bit["service"]["parsers_file"]).read_text())
    parser = {p["name"]: p for p in parsers["parsers"]}[tail["parser"]]
    assert (parser["format"], parser["time_key"]) == ("json", "@timestamp")

    source = fluentd_directives("source")
    assert (source["@type"], source["path"]) == ("tail", LOG_FILES)
    parse = fluentd_directives("parse")
    assert (parse["@type"], parse["time_key"]) == ("json", "@timestamp")

    filebeat = yaml.safe_load((LOGGING / "filebeat.yml").read_text())
    [stream] = filebeat["filebeat.inputs"]
    assert stream["paths"] == [LOG_FILES]
    assert any("ndjson" in p for p in stream["parsers"])
    assert LOG_FILES.rsplit("/", 1)[0] in (LOGGING / "README.md").read_text()


def test_every_shipper_writes_to_indices_the_template_covers() -> None:
    template = json.loads((LOGGING / "elasticsearch" / "cmschat-logs-template.json").read_text())
    today = f"{INDEX_PREFIX}-2026.11.30"
    assert any(fnmatch.fnmatch(today, pattern) for pattern in template["index_patterns"])
    fluent_bit = yaml.safe_load((LOGGING / "fluent-bit.yaml").read_text())
    [es] = fluent_bit["pipeline"]["outputs"]
    assert (es["name"], es["logstash_prefix"], es["replace_dots"]) == ("es", INDEX_PREFIX, False)
    assert fluentd_directives("match cmschat")["logstash_prefix"] == INDEX_PREFIX
    logstash = (LOGGING / "logstash" / "cmschat.conf").read_text()
    assert f'index => "{INDEX_PREFIX}-%{{+YYYY.MM.dd}}"' in logstash
    beats_port = re.search(r"beats\s*\{\s*port\s*=>\s*(\d+)", logstash)
    filebeat = yaml.safe_load((LOGGING / "filebeat.yml").read_text())
    assert beats_port and filebeat["output.logstash"]["hosts"] == [f"logstash:{beats_port[1]}"]


def test_the_template_maps_every_field_our_code_logs() -> None:
    mapped = template_fields()
    logged: set[str] = set()
    for path in (REPO / "src" / "cmschat").rglob("*.py"):
        text = path.read_text()
        for extra in re.finditer(r"extra=\{(.*?)\}", text, re.S):
            logged |= set(EXTRA_KEY.findall(extra.group(1)))
    assert logged, "no extra= fields found"
    assert logged - mapped == set()


async def test_the_template_maps_every_field_of_a_real_scenario(
    client: httpx.AsyncClient, alice: NamedUser, all_logs: pytest.LogCaptureFixture
) -> None:
    headers = await alice.login(client)
    await client.get("/api/v1/rooms/999", headers=headers)
    await client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-1"})
    await client.get("/healthz")
    formatter = ecs_logging.StdlibFormatter(
        exclude_fields=["process", "log.original", "color_message"]
    )
    keys: set[str] = set()
    for record in all_logs.records:
        keys |= flatten(json.loads(formatter.format(record)))
    assert {"trace.id", "url.path", "user.id", "event.duration"} <= keys
    assert keys - template_fields() == set()


def test_the_template_is_valid_json_with_the_key_types() -> None:
    template = json.loads(
        Path(LOGGING / "elasticsearch" / "cmschat-logs-template.json").read_text()
    )
    properties = template["template"]["mappings"]["properties"]
    assert properties["@timestamp"]["type"] == "date"
    assert properties["client"]["properties"]["ip"]["type"] == "ip"
    assert properties["event"]["properties"]["duration"]["type"] == "long"
    assert properties["user"]["properties"]["id"]["type"] == "keyword"
