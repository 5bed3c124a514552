"""`.ci/run` shows the tail of `up.log` when the smoke test fails; that log holds the admin key and the Flower
password `vastkeep up` generated. Issue 7 (k): nothing CI prints may contain them."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

from vastkeep.core.settings import load_settings
from vastkeep.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
CI_RUN = ROOT / ".ci" / "run"
REDACT = ROOT / ".ci" / "redact"


def _banner(tmp_path: Path) -> tuple[str, list[str]]:
    """The real `vastkeep up` banner with generated credentials, and those credentials."""
    settings = load_settings(environ={"VASTKEEP_HOME": str(tmp_path / "home")}, env_file=False)
    out = io.StringIO()
    stack = Stack(settings, {}, out=out)
    admin_key, user, password, redis_pw = ("AdminKey_" + "k" * 24, "admin", "FlowerPw_" + "p" * 24,
                                           "RedisPw_" + "r" * 24)
    stack.info.update(simulated=True, simulator={"vast_api_url": "http://127.0.0.1:9/api/v0"},
                      redis_url=f"redis://:{redis_pw}@127.0.0.1:6390/0", redis_embedded=True,
                      admin_api_url="http://127.0.0.1:3000", flower_url="http://127.0.0.1:5555")
    stack._announce(admin_key, user, password)  # noqa: SLF001 - the exact lines up.log holds
    # lines a crashing child could add to the same log
    text = out.getvalue() + (f"worker: connecting to redis://:{redis_pw}@127.0.0.1:6390/0\n"
                             f"X-Admin-Key: {admin_key}\n")
    return text, [admin_key, password, redis_pw]


def _redact(text: str, stack_json: Path | None = None) -> str:
    argv = [sys.executable, str(REDACT)] + ([str(stack_json)] if stack_json else [])
    done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def test_redact_removes_generated_credentials_and_keeps_the_rest(tmp_path: Path) -> None:
    text, secrets = _banner(tmp_path)
    assert all(s in text for s in secrets)  # the banner really shows them (else this test proves nothing)
    shown = _redact(text)
    for secret in secrets:
        assert secret not in shown
    assert "admin API   http://127.0.0.1:3000" in shown  # the useful lines stay
    assert shown.count("\n") == text.count("\n")


def test_redact_removes_literal_values_from_the_stack_file(tmp_path: Path) -> None:
    secret = "Zq9_" + "x" * 28
    stack_json = tmp_path / "stack.json"
    stack_json.write_text(json.dumps({"admin_api_key": secret, "simulator": {"control_token": "T" * 32}}))
    shown = _redact(f"child said {secret} and {'T' * 32}\n", stack_json)
    assert secret not in shown and "T" * 32 not in shown


def test_ci_run_prints_logs_only_through_the_redactor() -> None:
    lines = CI_RUN.read_text().splitlines()
    show = [ln for ln in lines if ln.lstrip().startswith("show_log()")]
    assert show and "redact" in show[0]
    for ln in lines:
        if ln.lstrip().startswith(("#", "show_log()")):
            continue
        # any other way of printing a log file (tail/cat/head/less of *.log) would bypass the redaction
        assert not re.search(r"\b(tail|cat|head|less|more)\b[^|;]*\.log", ln), ln
