"""docs/proxy.md's examples, run exactly as written (code blocks extracted from the page) against a real proxy
process, the admin API, the simulated ComfyUI and Redis, from a folder holding a ``.vastkeep/stack.json`` the
way ``vastkeep up`` leaves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.comfy import png_size
from tests.fixtures.proxy import ADMIN_KEY
from tests.fixtures.proxy_docs import blocks


def setup_block() -> str:
    found = [b for b in blocks("bash") if "stack.json" in b and "export ADMIN_URL" in b]
    assert len(found) == 1
    return found[0]


def example(lang: str) -> str:
    found = [b for b in blocks(lang) if b.startswith("# example:")]
    assert len(found) == 1, f"one {lang} example expected in docs/proxy.md"
    return found[0]


def run_in(folder: Path, rig, script: str) -> subprocess.CompletedProcess:
    (folder / ".vastkeep").mkdir()
    (folder / ".vastkeep" / "stack.json").write_text(json.dumps({"admin_api_url": rig.admin_url,
                                                                 "admin_api_key": ADMIN_KEY,
                                                                 "proxy_url": rig.url}))
    env = {k: v for k, v in rig.env.items() if k not in ("ADMIN_URL", "ADMIN_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # python3 = this venv's
    return subprocess.run(["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("lang", ["python", "bash"])
def test_the_doc_examples_run_as_written(proxy_rig, tmp_path, lang):
    proxy_rig.ready_instance(prompt_s=0.3)
    if lang == "python":
        (tmp_path / "example.py").write_text(example("python"))
        script = setup_block() + "\npython3 example.py\n"
        out_file, size = "doc-python.png", (64, 64)
    else:
        script = setup_block() + "\n" + example("bash")
        out_file, size = "doc-curl.png", (32, 32)
    done = run_in(tmp_path, proxy_rig, script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert png_size((tmp_path / out_file).read_bytes()) == size
    assert "saved " in done.stdout
    if lang == "python":
        assert "ws: execution_start" in done.stdout and "released: True" in done.stdout
    else:
        assert "after release: 404" in done.stdout
    # the example released its lease (the deployment's token key stays)
    left = set(proxy_rig.store.redis.keys("vastkeep:endpoint*")) - {"vastkeep:endpoint-secret"}
    assert left == set()
