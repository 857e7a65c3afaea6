"""Issue 29 item 7: Redis URLs. A password is masked whatever it holds (unencoded space, `@`,
`/`, `#`, `?`), because masking reads the URL the way a URL parser does (the userinfo ends at
the authority's last `@`); a malformed URL is a one-line settings error at load time (exit 2);
a wrong password is told apart from an unreachable Redis. Real redis-server processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.redaction import mask_secrets

ODD_PASSWORDS = ["pa ss word", "p@ss@word", "pa/ss/word", "pa#ss", "pa?ss=1", "we ird@/#?:x", "pw"]


def cli(args, env):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_any_password_is_masked(password, monkeypatch):
    url = f"redis://:{password}@127.0.0.1:6379/0"
    for text in (f"cannot connect to {url}: refused", f"{url}", f"lost rediss://user:{password}@h/1"):
        assert password not in mask_secrets(text), mask_secrets(text)
    monkeypatch.setenv("CONVSPARSE_REDIS_URL", url)  # a known URL: masked exactly, spaces and all
    assert mask_secrets(f"Redis at {url} failed") == "Redis at redis://:***@127.0.0.1:6379/0 failed"


def test_url_password_reads_the_userinfo_to_the_last_at():
    from convsparse.redaction import mask_url, url_password

    for password in ODD_PASSWORDS:
        url = f"redis://:{password}@127.0.0.1:6379/0"
        assert url_password(url) == password
        assert mask_url(url) == "redis://:***@127.0.0.1:6379/0"
    assert url_password("redis://127.0.0.1:6379/0") is None
    assert url_password("rediss://TOKEN@h:6380/0") == "TOKEN"  # a lone Redis userinfo is secret
    assert url_password("https://admin@h:9200") is None  # a user name elsewhere


@pytest.mark.parametrize("url, reason", [
    ("localhost", "is not a URL"),
    ("http://u:secret-pw@h:6379/0", "has scheme 'http://'"),
    ("redis://h:abc/0", "port 'abc' is not a number from 1 to 65535"),
    ("redis://h:99999/0", "port '99999' is not a number"),
    ("redis://h:6379/zero", "database 'zero' is not a number"),
    ("redis://:secret/pw@h:6379/0", "percent-encode"),
])
def test_malformed_redis_url_is_one_line_exit_2_at_load(url, reason, tmp_path):
    from convsparse.workers.app import WorkerSettings

    with pytest.raises(ValidationError):
        WorkerSettings(redis_url=url)
    code, out = cli(["jobs", "status", "job-x"], {"CONVSPARSE_REDIS_URL": url,
                                                  "CONVSPARSE_DATA_DIR": str(tmp_path)})
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1 and out.startswith("error: invalid setting redis_url"), out
    assert reason in out and "CONVSPARSE_REDIS_URL" in out and "Traceback" not in out, out
    assert "secret" not in out


@pytest.fixture
def redis_with_odd_password(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    password = "s3 cr@t pw"  # a space and an @, unencoded
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", password, "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield port, password
    proc.terminate()
    proc.wait(10)


def test_wrong_password_is_not_unreachable(redis_with_odd_password, tmp_path):
    port, password = redis_with_odd_password
    env = {"CONVSPARSE_DATA_DIR": str(tmp_path)}
    code, out = cli(["jobs", "status", "job-nope"],
                    {**env, "CONVSPARSE_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0"})
    assert code == 1 and "job job-nope: unknown" in out and password not in out, out
    wrong = f"redis://:{password}-wrong@127.0.0.1:{port}/0"
    code, out = cli(["jobs", "status", "job-nope"], {**env, "CONVSPARSE_REDIS_URL": wrong})
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "refused the login (a password given" in out and "unreachable" not in out, out
    assert "s3 cr@t" not in out and "redis://:***@127.0.0.1" in out, out
    code, out = cli(["jobs", "status", "job-nope"],
                    {**env, "CONVSPARSE_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert code == 1 and "refused the login (no password given" in out, out
    code, out = cli(["jobs", "status", "job-nope"],
                    {**env, "CONVSPARSE_REDIS_URL": f"redis://:{password}@127.0.0.1:{free_port()}/0"})
    assert code == 1 and "unreachable" in out and "s3 cr@t" not in out, out
