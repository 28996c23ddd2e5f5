"""Restores merge the dump's one-row INSERT lines into multi-row INSERTs, order kept."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import pyrage
import pytest

from cmschat.backup import mariadb
from cmschat.backup.batching import InsertBatcher
from cmschat.backup.crypto import seal
from cmschat.backup.mariadb import MariadbEngine
from tests import support

# Lines as mariadb-dump --skip-extended-insert --hex-blob writes them (checked on 10.11).
DUMP = (
    "/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n"
    "LOCK TABLES `t` WRITE;\n"
    "INSERT INTO `t` VALUES (1,'a);\\nVALUES (b\\\\',0x00FF0A0D,NULL,1.5);\n"
    "INSERT INTO `t` VALUES (2,'ünïcode 한국어 \\'q\\'','',3,-20000000000);\n"
    "INSERT INTO `t` VALUES (3,NULL,NULL,NULL,NULL);\n"
    "UNLOCK TABLES;\n"
    "INSERT INTO `u``v` VALUES (1);\n"
    "INSERT INTO `u``v` VALUES (2);\n"
    "INSERT INTO `t` VALUES (4,'x',NULL,NULL,NULL);\n"
    "COMMIT;\n"
).encode()

MERGED = (
    "/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n"
    "LOCK TABLES `t` WRITE;\n"
    "INSERT INTO `t` VALUES (1,'a);\\nVALUES (b\\\\',0x00FF0A0D,NULL,1.5),"
    "(2,'ünïcode 한국어 \\'q\\'','',3,-20000000000),(3,NULL,NULL,NULL,NULL);\n"
    "UNLOCK TABLES;\n"
    "INSERT INTO `u``v` VALUES (1),(2);\n"
    "INSERT INTO `t` VALUES (4,'x',NULL,NULL,NULL);\n"
    "COMMIT;\n"
).encode()


def batched(data: bytes, sizes: list[int] | None = None, **caps: int) -> bytes:
    """``data`` through a batcher, written in chunks of the given sizes (cycled)."""
    out = io.BytesIO()
    batcher = InsertBatcher(out, **caps)
    sizes = sizes or [len(data) or 1]
    i = k = 0
    while i < len(data):
        step = sizes[k % len(sizes)]
        batcher.write(memoryview(data)[i : i + step])
        i, k = i + step, k + 1
    batcher.finish()
    return out.getvalue()


def test_consecutive_rows_of_a_table_become_one_statement_in_order() -> None:
    assert batched(DUMP) == MERGED


@pytest.mark.parametrize("sizes", [[1], [2], [3], [7], [1, 5, 64], [4096]])
def test_chunks_may_split_anywhere_even_inside_a_character(sizes: list[int]) -> None:
    assert "한".encode()[1:2] in DUMP  # single-byte chunks cut inside UTF-8 characters
    assert batched(DUMP, sizes) == MERGED


def test_every_cut_point_gives_the_same_result() -> None:
    for cut in range(len(DUMP) + 1):
        assert batched(DUMP, [cut or 1, len(DUMP)]) == MERGED


def test_other_lines_and_lookalikes_pass_through_unchanged() -> None:
    lines = [
        b"INSERT INTO `t` (`a`) VALUES (1);",  # column list: not mariadb-dump's row form
        b"INSERT INTO `t` VALUES (1)",  # no ";"
        b"INSERT INTO `t` VALUES (1); -- note",  # not ending in ");"
        b"insert into `t` VALUES (1);",
        b"INSERT INTO t VALUES (1);",
        b"REPLACE INTO `t` VALUES (1);",
        b"-- INSERT INTO `t` VALUES (1);",
    ]
    data = b"\n".join(lines) + b"\n"
    assert batched(data) == data


def test_nothing_is_merged_inside_a_delimiter_block() -> None:
    trigger = (
        b"DELIMITER ;;\n"
        b"/*!50003 CREATE*/ /*!50003 TRIGGER `x` AFTER INSERT ON `t` FOR EACH ROW BEGIN\n"
        b"INSERT INTO `log` VALUES (NEW.id);\n"
        b"INSERT INTO `log` VALUES (NEW.id);\n"
        b"END */;;\n"
        b"DELIMITER ;\n"
    )
    rows = b"INSERT INTO `t` VALUES (1);\nINSERT INTO `t` VALUES (2);\n"
    assert batched(trigger + rows) == trigger + b"INSERT INTO `t` VALUES (1),(2);\n"


def test_a_last_line_without_newline_is_kept() -> None:
    data = b"INSERT INTO `t` VALUES (1);\nINSERT INTO `t` VALUES (2);"
    assert batched(data) == b"INSERT INTO `t` VALUES (1);\nINSERT INTO `t` VALUES (2);"
    assert batched(b"") == b""


def test_statements_are_capped_by_rows() -> None:
    data = b"".join(b"INSERT INTO `t` VALUES (%d);\n" % n for n in range(7))
    assert batched(data, max_rows=3) == (
        b"INSERT INTO `t` VALUES (0),(1),(2);\n"
        b"INSERT INTO `t` VALUES (3),(4),(5);\n"
        b"INSERT INTO `t` VALUES (6);\n"
    )


def test_statements_are_capped_by_bytes() -> None:
    data = b"".join(b"INSERT INTO `t` VALUES ('%s');\n" % (b"x" * 40) for _ in range(50))
    out = batched(data, max_bytes=200, max_rows=10_000)
    statements = out.splitlines()
    assert all(len(line) + 1 <= 200 for line in statements)
    assert len(statements) > 1
    assert out.count(b"'" + b"x" * 40 + b"'") == 50
    # A row bigger than the cap goes alone, as it was.
    big = b"INSERT INTO `t` VALUES ('%s');\n" % (b"y" * 500)
    assert batched(big + big, max_bytes=200) == big + big


def _stream_fed_to_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dump: bytes
) -> tuple[bytes, str]:
    key = pyrage.x25519.Identity.generate()
    artifact = tmp_path / "database.sql.zst.age"
    with artifact.open("wb") as writer:
        sealed = seal(io.BytesIO(dump), writer, [str(key.to_public())])
    fed = io.BytesIO()
    seen: dict[str, Any] = {}

    def fake_client(command: list[str], errors: Path, feed: Any) -> int:
        seen["command"] = command
        feed(fed)
        return 0

    monkeypatch.setattr(mariadb, "feed_client", fake_client)
    engine = MariadbEngine("mysql+asyncmy://root@127.0.0.1:3306/cmschat_x")
    engine._load(artifact, key, sealed, "scratch_db")
    return fed.getvalue(), seen["command"][-1]


def test_restore_feeds_the_client_merged_inserts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fed, database = _stream_fed_to_client(monkeypatch, tmp_path, DUMP)
    assert database == "scratch_db"
    assert fed == MERGED


def test_tricky_rows_survive_a_dump_and_batched_load(tmp_path: Path) -> None:
    support.mariadb_available()
    url = support.run_sync(support.create_mariadb_database())
    source = MariadbEngine(url)
    target = None
    try:
        source.sql(
            "CREATE TABLE `t` (id INT PRIMARY KEY, s TEXT, b BLOB, n INT NULL, d DOUBLE);"
            "CREATE TABLE `u``v` (x INT PRIMARY KEY);"
            "INSERT INTO `t` VALUES (1, 'a);\\nVALUES (b\\\\', 0x00FF0A0D3B29, NULL, 1.5),"
            " (2, 'ünïcode 한국어 \\'q\\' ),( ;', '', 3, -2e10), (3, NULL, NULL, NULL, NULL);"
            "INSERT INTO `u``v` VALUES (1), (2), (3);"
        )
        key = pyrage.x25519.Identity.generate()
        sealed, facts = source.snapshot(tmp_path, [str(key.to_public())])
        assert facts.row_counts["t"] == 3
        target = source.scratch(tmp_path)
        source._load(tmp_path / source.artifact, key, sealed, target.database)
        for query in ("SELECT id, s, HEX(b), n, d FROM `t` ORDER BY id", "SELECT x FROM `u``v`"):
            assert target.sql(query) == source.sql(query)
        assert len(target.sql("SELECT id FROM `t`")) == 3
    finally:
        if target is not None:
            target.drop()
        support.run_sync(support.drop_mariadb_database(url))


def test_write_accepts_what_the_decompressor_hands_over() -> None:
    out: IO[bytes] = io.BytesIO()
    batcher = InsertBatcher(out)
    assert batcher.write(bytearray(b"SELECT 1;\n")) == 10
    batcher.finish()
    assert out.getvalue() == b"SELECT 1;\n"  # type: ignore[attr-defined]
