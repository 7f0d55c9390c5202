"""`rag keys create/list/revoke`, the hashed key store, and `rag serve`'s refusal to expose an open API."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.cli import cli


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("WENYUAN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("WENYUAN_API_KEYS", raising=False)
    return tmp_path / "data"


def test_keys_create_list_revoke(data) -> None:
    from rag.api.keys import KeyStore, hash_key

    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--name", "laptop"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("wy-") and len(key) > 40
    stored = (data / "api_keys.json").read_text(encoding="utf-8")
    assert key not in stored and hash_key(key) in stored  # only the hash is kept
    assert (data / "api_keys.json").stat().st_mode & 0o077 == 0
    second = runner.invoke(cli, ["keys", "create"]).stdout.strip()

    listed = runner.invoke(cli, ["keys", "list", "--json"])
    rows = json.loads(listed.output)
    assert [r["name"] for r in rows] == ["laptop", ""] and all(key not in listed.output for key in (key, second))
    assert rows[0]["prefix"] == key[:7]
    text = runner.invoke(cli, ["keys", "list"]).output
    assert "laptop" in text and rows[0]["id"] in text

    store = KeyStore(env_keys="")
    assert store.check(key) == rows[0]["id"] and store.check(second) == rows[1]["id"] and store.check("wy-guess") is None

    revoked = runner.invoke(cli, ["keys", "revoke", "laptop"])
    assert revoked.exit_code == 0 and rows[0]["id"] in revoked.output
    assert store.check(key) is None and store.check(second) == rows[1]["id"]
    assert [r["id"] for r in json.loads(runner.invoke(cli, ["keys", "list", "--json"]).output)] == [rows[1]["id"]]

    missing = runner.invoke(cli, ["keys", "revoke", "laptop"])
    assert missing.exit_code == 1 and "no API key with id or name 'laptop'" in missing.output


def test_env_keys_are_accepted(data) -> None:
    from rag.api.keys import KeyStore

    store = KeyStore(env_keys=" alpha , beta,")
    assert store.has_keys() and store.check("alpha") and store.check("beta") and store.check("gamma") is None
    assert not KeyStore(env_keys="").has_keys()


def test_a_damaged_key_file_says_how_to_fix_it(data) -> None:
    from rag.api.keys import KeyStore
    from rag.errors import ConfigError

    data.mkdir(parents=True)
    (data / "api_keys.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ConfigError, match="delete it and create keys again"):
        KeyStore(env_keys="").has_keys()


@pytest.mark.parametrize("host, exposed", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                           ("127.0.0.2", False), ("0.0.0.0", True), ("192.168.1.5", True), ("::", True)])
def test_check_exposure(data, host, exposed) -> None:
    from rag.api.keys import KeyStore, check_exposure
    from rag.errors import ConfigError

    store = KeyStore(env_keys="")
    if exposed:
        with pytest.raises(ConfigError, match="rag keys create"):
            check_exposure(host, store)
        store.create("server")
    check_exposure(host, store)  # with a key (or on loopback) it may serve


def test_serve_refuses_a_network_host_without_a_key_before_loading(data, tmp_path) -> None:
    pytest.importorskip("gradio")
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--index-dir", str(tmp_path / "no-index")])
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without an API key" in result.output and "rag keys create" in result.output
    assert "index" not in result.output.split("without an API key")[0]  # failed on the key, not on the missing index


def test_serve_help_documents_the_api_options() -> None:
    pytest.importorskip("gradio")
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--concurrency", "--max-queue", "--rate-limit", "--cors-origin", "/v1"):
        assert option in result.output
