"""README.txt's API example runs as written, and running it again resumes from its checkpoint."""

import pathlib
import subprocess
import sys
import textwrap

README = pathlib.Path(__file__).resolve().parent.parent / "README.txt"


def _example() -> str:
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "from hf_symbolic import hf_optimizer, BatchDataset" in line)
    end = next(i for i in range(start, len(lines)) if "print(opt.result.status" in lines[i])
    return textwrap.dedent("\n".join(lines[start : end + 1]))


def test_readme_example_runs_and_resumes(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_example())
    first = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    status, rest = first.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "num_updates"
    cost, error = eval(rest)  # a tuple printed by the example
    assert cost < 0.3 and error < 0.15
    assert (tmp_path / "run.ckpt").exists()
    second = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "already_done " + rest
