"""``scripts/setup.sh`` picks the right torch build and index (issue 21, item 4).

The script runs with ``--plan`` (print the decision and the commands, install nothing) in a
copy of the repository layout, with a fake ``nvidia-smi`` (GPU present or not) and, for
macOS/Windows, a fake ``uname`` first on PATH. The reachability of the PyTorch CPU index is
controlled without the internet: an ``https_proxy`` that refuses connections makes it
unreachable, and a local HTTP server stands in for a reachable index.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="setup.sh is a bash script")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def repo(tmp_path):
    """An empty checkout layout with the script: it `cd`s to the folder above scripts/."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "repo" / "scripts" / "setup.sh")
    return tmp_path / "repo"


@pytest.fixture
def index(tmp_path):
    """A local wheel index serving ``<url>/torch/`` (the page the script probes)."""
    root = tmp_path / "www"
    (root / "simple" / "torch").mkdir(parents=True)
    (root / "simple" / "torch" / "index.html").write_text("<html><body>torch</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def plan(repo: Path, *, gpu: bool, system: str = "Linux", index: str | None = None,
         cpu_index_reachable: bool = False, args=("--plan",)) -> subprocess.CompletedProcess:
    """Run ``setup.sh --plan`` with a fake GPU/OS; returns the finished process."""
    fake = repo.parent / f"bin-{gpu}-{system}"
    fake.mkdir(exist_ok=True)
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n" if gpu
                   else "#!/bin/sh\necho 'NVIDIA-SMI has failed: no devices were found' >&2\nexit 9\n")
    smi.chmod(0o755)
    if system != "Linux":
        (fake / "uname").write_text(f"#!/bin/sh\necho {system}\n")
        (fake / "uname").chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and k != "EOEMBED_TORCH_INDEX"}
    env.update(PATH=f"{fake}{os.pathsep}{env['PATH']}", PYTHON=sys.executable, no_proxy="127.0.0.1,localhost")
    if not cpu_index_reachable:  # every https request is refused: download.pytorch.org is unreachable
        env["https_proxy"] = f"http://127.0.0.1:{_closed_port()}"
    if index is not None:
        env["EOEMBED_TORCH_INDEX"] = index
    return subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), *args], cwd=repo.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def commands(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, r.stderr
    return [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]


def torch_command(r: subprocess.CompletedProcess) -> str:
    (cmd,) = [c for c in commands(r) if c.startswith("python -m pip install -q torch")]
    return cmd


def summary(r: subprocess.CompletedProcess) -> str:
    first = r.stdout.splitlines()[0]
    assert first.startswith("eoembed setup: torch: ") and "eoembed[all,test]" in first, r.stdout
    assert "timm==1.0.31" in first and "terratorch==1.2.13" in first
    return first


def test_linux_without_gpu_asks_the_pytorch_cpu_index_when_it_answers(repo):
    try:
        urllib.request.urlopen(CPU_INDEX + "/torch/", timeout=3).close()
    except Exception:
        pytest.skip(f"{CPU_INDEX} is not reachable from here (the fallback is tested below)")
    r = plan(repo, gpu=False, cpu_index_reachable=True)
    assert torch_command(r) == f"python -m pip install -q torch==2.13.0 --index-url {CPU_INDEX}"
    assert f"CPU build of torch==2.13.0 (Linux, no GPU) from {CPU_INDEX}" in summary(r)
    assert "note:" not in r.stdout


def test_linux_without_gpu_falls_back_to_pips_index_and_says_so(repo):
    """Today's CI machine: no GPU, download.pytorch.org unreachable, a local mirror serving
    torch 2.13.0+cpu as pip's configured index. The command is the one that works there."""
    r = plan(repo, gpu=False)
    assert torch_command(r) == "python -m pip install -q torch==2.13.0"
    assert "torch==2.13.0 (Linux, no GPU) from pip's configured index" in summary(r)
    note = [line for line in r.stdout.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and f"{CPU_INDEX} was not reachable within 3 s" in note[0]
    assert "EOEMBED_TORCH_INDEX" in note[0] and "CUDA build from PyPI" in note[0]
    # the whole plan, in order; nothing installed, no venv created
    assert commands(r) == [
        f"{sys.executable} -m venv .venv",
        ". .venv/bin/activate",
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q torch==2.13.0",
        "python -m pip install -q -e .[all,test]",
        "python -m pip install -q --no-deps timm==1.0.31 terratorch==1.2.13",
    ]
    assert not (repo / ".venv").exists()


def test_an_index_url_setting_is_used_for_torch(repo, index):
    r = plan(repo, gpu=False, index=index)
    assert torch_command(r) == f"python -m pip install -q torch==2.13.0 --index-url {index}"
    assert f"torch==2.13.0 from {index}, as EOEMBED_TORCH_INDEX asks" in summary(r)
    assert "note:" not in r.stdout


def test_an_unreachable_index_url_setting_stops_with_the_fix(repo):
    url = f"http://127.0.0.1:{_closed_port()}/simple"
    r = plan(repo, gpu=False, index=url)
    assert r.returncode == 1 and "+ " not in r.stdout
    assert f"EOEMBED_TORCH_INDEX={url}" in r.stderr and "cannot be reached within 3 s" in r.stderr
    assert "'pip'" in r.stderr


def test_pip_setting_uses_pips_configured_index_without_probing(repo):
    r = plan(repo, gpu=False, index="pip")
    assert torch_command(r) == "python -m pip install -q torch==2.13.0"
    assert "from pip's configured index" in summary(r) and "EOEMBED_TORCH_INDEX=pip" in summary(r)
    assert "note:" not in r.stdout  # no probe, so nothing to fall back from


def test_gpu_machine_keeps_the_cuda_build_and_faiss_gpu(repo):
    r = plan(repo, gpu=True)
    assert torch_command(r) == "python -m pip install -q torch"
    assert "CUDA build of torch (GPU found by nvidia-smi)" in summary(r) and "faiss-gpu" in summary(r)
    cmds = commands(r)
    gpu = cmds.index("python -m pip install -q -e .[gpu]")
    assert cmds.index("python -m pip install -q -e .[all,test]") < gpu
    assert cmds[gpu + 1] == "python -m pip uninstall -q -y faiss-cpu"
    assert "note:" not in r.stdout


def test_gpu_machine_with_an_index_url_uses_it(repo, index):
    r = plan(repo, gpu=True, index=index)  # e.g. https://download.pytorch.org/whl/cu128
    assert torch_command(r) == f"python -m pip install -q torch --index-url {index}"


@pytest.mark.parametrize("system, name, activate", [("Darwin", "macos", ".venv/bin/activate"),
                                                    ("MINGW64_NT-10.0-19045", "windows", ".venv/Scripts/activate")])
def test_macos_and_windows_get_plain_torch_without_probing(repo, system, name, activate):
    r = plan(repo, gpu=False, system=system)
    assert torch_command(r) == "python -m pip install -q torch==2.13.0"
    assert f"torch==2.13.0 ({name}: a CPU build) from pip's configured index" in summary(r)
    assert f". {activate}" in commands(r)
    assert "note:" not in r.stdout and "faiss-cpu" not in r.stdout


@pytest.mark.parametrize("value, args, message", [
    ("cpu", ("--plan",), "is not 'auto', 'pip' or an index URL"),
    (None, ("--plan", "--dry"), "unknown option '--dry'"),
])
def test_bad_settings_are_refused(repo, value, args, message):
    r = plan(repo, gpu=False, index=value, args=args)
    assert r.returncode == 2 and message in r.stderr and "+ " not in r.stdout


def test_setup_script_documents_its_settings():
    """The script documents each setting it reads at its top."""
    text = SCRIPT.read_text()
    head = text[: text.index("set -euo pipefail")]
    for word in ("EOEMBED_TORCH_INDEX", "PYTHON", "--plan", CPU_INDEX, "auto (default)", "pip ", "<URL>"):
        assert word in head, word


@pytest.mark.parametrize("gpu", [False, True])
def test_the_real_run_executes_the_planned_commands(repo, gpu):
    """Without --plan the script runs exactly the planned pip commands (here in a prepared
    .venv whose `python` only records its arguments), then reports the torch it installed."""
    log = repo.parent / "calls.log"
    fake = repo.parent / "venv-bin"
    fake.mkdir()
    (fake / "python").write_text(
        "#!/bin/sh\n"
        f"echo \"python $*\" >> '{log}'\n"
        "if [ \"$1\" = - ]; then cat > /dev/null; echo 'installed torch 2.13.0+cpu (CPU build)'; fi\n")
    (fake / "python").chmod(0o755)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "activate").write_text(f'PATH="{fake}:$PATH"\n')
    planned = [c for c in commands(plan(repo, gpu=gpu)) if c.startswith("python ")]
    assert not log.exists()
    r = plan(repo, gpu=gpu, args=())
    assert r.returncode == 0, r.stderr
    ran = log.read_text().splitlines()
    assert ran[:-1] == planned and len(planned) == (6 if gpu else 4)
    assert ran[-1] == f"python - {int(gpu)}"  # the closing report of the installed build
    assert "installed torch 2.13.0+cpu (CPU build)" in r.stdout and r.stdout.startswith("eoembed setup: torch: ")
    assert r.stdout.rstrip().endswith(f"eoembed installed in {repo}/.venv")
