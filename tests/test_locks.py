"""One writer per output folder (`mlreassess.locks`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlreassess.cli import main
from mlreassess.errors import InputError
from mlreassess.locks import LOCK_NAME, folder_lock

HOLD = (
    "import sys, time\nfrom mlreassess.locks import folder_lock\n"
    "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
)


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another process holds (until the test ends)."""
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder
    proc.kill()
    proc.wait()


def test_a_second_writer_stops_at_once_naming_the_holder(held):
    with pytest.raises(InputError, match=r"out: in use by mlreassess \(pid \d+, since .*\); wait for it"):
        with folder_lock(held):
            pass


def test_infer_into_a_folder_in_use_is_one_line(held, tmp_path, capsys):
    manifest = tmp_path / "m.parquet"
    manifest.write_text("x")
    code = main(["infer", "--data", str(manifest), "--model", "resnet18", "--weights", "random",
                 "--device", "cpu", "--out", str(held)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "in use by mlreassess" in err[0]


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(InputError, match="in use"):
        with folder_lock(tmp_path):
            pass
    proc.kill()  # kill -9: no cleanup code runs, the kernel drops the flock
    proc.wait()
    with folder_lock(tmp_path):
        pass


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # `run` holds its folder while its `infer` step takes it again
            pass
    assert (tmp_path / LOCK_NAME).exists()
    proc = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"), str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "held"

