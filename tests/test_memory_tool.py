"""tools/measure_memory.py: the peak is compared with the run's --mem-mb."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("measure_memory", ROOT / "tools" / "measure_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_over_limit():
    tool = _tool()
    assert tool.over_limit({"peak_total_rss_mb": 2999}, 3000) is None
    assert tool.over_limit({"peak_total_rss_mb": 3000}, 3000) is None  # equal is within
    assert tool.over_limit({"peak_total_rss_mb": 3001}, 3000) == (
        "peak total RSS 3001 MB exceeds --mem-mb 3000 (by 1 MB)"
    )


def _fake_dataset(base: Path) -> None:
    folder = base / "bids" / "sub-01" / "dwi"
    folder.mkdir(parents=True)
    (base / "bids" / "dataset_description.json").write_text("{}")
    img = nb.Nifti1Image(np.zeros((4, 4, 3, 5), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    img.to_filename(folder / "sub-01_dir-AP_dwi.nii.gz")


@pytest.mark.parametrize(
    ("peak", "exit_code", "expected", "line"),
    [
        (1200, 0, 0, "peak total RSS 1200 MB is within --mem-mb 1500"),
        (1600, 0, 1, "peak total RSS 1600 MB exceeds --mem-mb 1500 (by 100 MB)"),
        (100, 1, 1, "the run failed with exit code 1"),
    ],
)
def test_main_exit_code_follows_the_limit(tmp_path, monkeypatch, capsys, peak, exit_code, expected, line):
    """The run itself is replaced by a canned measurement: only the verdict is tested."""
    tool = _tool()
    _fake_dataset(tmp_path)
    seen = {}

    def fake_measure(cmd):
        seen["cmd"] = cmd
        return {"exit_code": exit_code, "wall_s": 1.0, "peak_total_rss_mb": peak,
                "peak_single_process_rss_mb": peak, "max_processes": 1}  # fmt: skip

    monkeypatch.setattr(tool, "measure", fake_measure)
    code = tool.main(["ds", str(tmp_path), "--mem-mb", "1500", "--nprocs", "2", "--", "--passes", "1"])
    assert code == expected
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["mem_mb"] == 1500 and result["within_mem_mb"] == (peak <= 1500)
    assert seen["cmd"][seen["cmd"].index("--mem-mb") + 1] == "1500"
    lines = err.strip().splitlines()
    assert lines[0] == (
        "settings: 5 volumes of 2x2x2 mm (4x4x3), --nprocs 2 --mem-mb 1500, extra arguments: --passes 1"
    )
    assert lines[-1] == line


def test_mem_mb_after_the_separator_is_refused(tmp_path):
    with pytest.raises(SystemExit) as err:
        _tool().main(["ds", str(tmp_path), "--", "--mem-mb", "9000"])
    assert err.value.code == 2
