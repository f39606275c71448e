"""The `gridbot` command, run in-process: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import inspect

from bot.cli import main
from storage.db import make_engine
from storage.models import Base
from tests.harness import SAMPLE, fresh_database, isolate_env, server_database

SAMPLE_TEXT = SAMPLE.read_text("utf-8")
TOKEN = "123456:TEST-token_for_gridbot"


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no GRIDBOT_ variables but the database, and no .env in reach.

    The path is the SQLite file's; on the server run the database is the server's (see `made`).
    """
    isolate_env(monkeypatch, tmp_path)
    path = tmp_path / "cli.db"
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", asyncio.run(fresh_database(tmp_path, path.name)))
    return path


async def _sql(url: str, statement: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def _has_tables(url: str) -> bool:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        return bool(names & set(Base.metadata.tables))
    finally:
        await engine.dispose()


def made(db_path: Path) -> bool:
    """Whether a command opened the database and made its schema: the SQLite file exists, or
    on the server Gridbot's tables do (the fixture left it empty)."""
    url = server_database()
    return asyncio.run(_has_tables(url)) if url else db_path.exists()


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gridbot: error: "), err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake_server() -> Iterator[tuple[str, list[tuple[int, str, bytes]]]]:
    """A local HTTP server; tests put (status, content type, body) answers into the list."""
    answers: list[tuple[int, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, ctype, body = answers[0]
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()


# --- registry load -------------------------------------------------------------------------


def test_registry_load_prints_a_summary_and_can_be_repeated(
        db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "load", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0] == (f"registry loaded from {SAMPLE}: 9 places, 12 people, 9 roles, "
                        "9 categories, 3 departments")
    assert made(db_path)

    assert main(["registry", "load", str(SAMPLE)]) == 0
    again = capsys.readouterr().out
    assert again.strip() == lines[0]


def test_registry_load_names_what_left_the_file(
        db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "load", str(SAMPLE)]) == 0
    edited = tmp_path / "edited.yaml"
    block = ("            buildings:\n              - code: BSY-02-12\n"
             "                name: 12号楼\n                chat: -1009200000212\n")
    assert block in SAMPLE_TEXT
    edited.write_text(SAMPLE_TEXT.replace(block, ""), encoding="utf-8")
    capsys.readouterr()
    assert main(["registry", "load", str(edited)]) == 0
    out = capsys.readouterr().out.strip()
    assert "8 places" in out
    assert out.endswith("no longer in the file (kept for old cases): BSY-02-12"), out


def test_registry_load_of_a_bad_file(
        db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SAMPLE_TEXT.replace("sla: 4h,", "sla: 4x,", 1)
    text = text.replace("{id: 920002,", "{id: abc,", 1)
    text = text.replace("timezone: Asia/Shanghai", "timezone: Nowhere/Atlantis", 1)
    assert text.count("4x") == 1 and "abc" in text and "Atlantis" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")

    assert main(["registry", "load", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("gridbot: error: registry rejected"), err
    problems = lines[1:]
    assert len(problems) == 3, err
    for problem in problems:
        assert problem.startswith(f"  {bad}: line "), problem
    assert any("categories[2].sla" in p for p in problems)
    assert any("members[0].id" in p for p in problems)
    assert any("timezone" in p and "Nowhere/Atlantis" in p for p in problems)
    # Rejected before the database was even opened.
    assert not made(db_path)


def test_registry_load_of_invalid_yaml(
        db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("timezone: Asia/Shanghai\npolicy: {verify_within: 2h\n", encoding="utf-8")
    assert main(["registry", "load", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("gridbot: error: registry rejected")
    assert lines[1].startswith(f"  {bad}: line 3: not valid YAML"), err


def test_registry_load_of_an_empty_file(
        db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert main(["registry", "load", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[1:] == [f"  {empty}: line 1: the file is empty"]


def test_registry_load_of_a_missing_file(
        db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["registry", "load", str(missing)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot read {missing}" in line
    assert not made(db_path)


def test_registry_load_of_a_file_that_is_not_utf8(
        db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gbk = tmp_path / "gbk.yaml"
    gbk.write_bytes(SAMPLE_TEXT.encode("gb18030"))
    assert main(["registry", "load", str(gbk)]) == 1
    assert "not UTF-8" in one_error_line(capsys.readouterr().err)


# --- run -----------------------------------------------------------------------------------


def test_run_without_a_token(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 1
    assert "GRIDBOT_BOT_TOKEN" in one_error_line(capsys.readouterr().err)


def test_run_with_a_malformed_token(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", "not a token")
    monkeypatch.setenv("GRIDBOT_API_URL", f"http://127.0.0.1:{closed_port()}")
    assert main(["run"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "GRIDBOT_BOT_TOKEN" in line
    assert "not a token" not in line


def test_run_when_the_bot_api_cannot_be_reached(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("GRIDBOT_API_URL", url)
    started = time.monotonic()
    assert main(["run"]) == 1
    assert time.monotonic() - started < 10
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot reach the Bot API at {url}" in line
    assert "Unclosed" not in caplog.text


def test_run_rejects_a_bad_registry_before_connecting(
        db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("GRIDBOT_API_URL", f"http://127.0.0.1:{closed_port()}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(SAMPLE_TEXT.replace("sla: 4h,", "sla: 4x,", 1), encoding="utf-8")
    assert main(["run", "--registry", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot reach" not in err
    assert err.startswith("gridbot: error: registry rejected")


def test_run_when_the_server_is_not_a_bot_api(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
        fake_server: tuple[str, list[tuple[int, str, bytes]]]) -> None:
    url, answers = fake_server
    answers.append((404, "text/html", b"<!DOCTYPE html>\n<html><body>Not here</body></html>\n"))
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("GRIDBOT_API_URL", url)
    assert main(["run"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert url in line and "did not answer like the Bot API" in line
    assert "Unclosed" not in caplog.text


def test_run_when_the_bot_api_refuses_the_token(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
        fake_server: tuple[str, list[tuple[int, str, bytes]]]) -> None:
    url, answers = fake_server
    body = {"ok": False, "error_code": 401, "description": "Unauthorized"}
    answers.append((401, "application/json", json.dumps(body).encode()))
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("GRIDBOT_API_URL", url)
    assert main(["run"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "refused GRIDBOT_BOT_TOKEN" in line
    assert TOKEN not in line
    assert "Unclosed" not in caplog.text


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["run"], ["registry", "load", str(SAMPLE)]])
def test_unknown_locale_is_named(
        argv: list[str], db_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRIDBOT_LOCALE", "fr")
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)
    assert main(argv) == 1
    assert "GRIDBOT_LOCALE" in one_error_line(capsys.readouterr().err)
    assert not made(db_path)


def test_bad_sweep_seconds_is_named(
        db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDBOT_SWEEP_SECONDS", "0")
    assert main(["registry", "load", str(SAMPLE)]) == 1
    assert "GRIDBOT_SWEEP_SECONDS" in one_error_line(capsys.readouterr().err)


def test_a_dotenv_file_in_the_working_directory_is_read(
        db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The reason the other tests chdir into tmp_path: .env is read from the working directory.
    (tmp_path / ".env").write_text("GRIDBOT_LOCALE=fr\n", encoding="utf-8")
    assert main(["registry", "load", str(SAMPLE)]) == 1
    assert "GRIDBOT_LOCALE" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", [["registry", "load", str(SAMPLE)], ["outbox"], ["inbox"],
                                     ["run"]])
def test_a_database_made_by_an_earlier_gridbot_is_refused_in_one_line(
        db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", "123456:" + "A" * 35)
    monkeypatch.setenv("GRIDBOT_API_URL", f"http://127.0.0.1:{closed_port()}")
    # A cases table from before most of its columns.
    asyncio.run(_sql(os.environ["GRIDBOT_DATABASE_URL"],
                     "CREATE TABLE cases (id INTEGER PRIMARY KEY, status VARCHAR(16))"))
    assert main(command) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "earlier Gridbot" in line and "cases.rev" in line


def test_a_database_whose_driver_is_not_installed_is_named_in_one_line(
        db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if `.[postgres]` was not installed
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", "postgresql+asyncpg://gridbot:s3cret@127.0.0.1/g")
    assert main(["outbox"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "asyncpg is not installed" in line and ".[postgres]" in line and "s3cret" not in line
    # The source stays SQLite on the server run too: with asyncpg hidden, only the --to
    # database may be the one whose driver is missing.
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{db_path}")
    assert main(["db", "copy", "--to", "postgresql+asyncpg://u:s3cret@127.0.0.1/x"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "cannot use the database --to" in line and "asyncpg is not installed" in line
