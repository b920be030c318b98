"""Multi-threaded .nii.gz writing (dmriprep_motion.nifti)."""

from __future__ import annotations

import gzip
import subprocess
import zlib

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion import nifti


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(
    "n_bytes", [0, 1, nifti.BLOCK_BYTES - 1, nifti.BLOCK_BYTES, 2 * nifti.BLOCK_BYTES + 7]
)
def test_gzip_member_inflates_to_the_input(tmp_path, threads, n_bytes):
    """Block boundaries (none, exactly one, a partial last block) make one standard gzip member."""
    data = np.random.default_rng(n_bytes).integers(0, 4, n_bytes, dtype=np.uint8).tobytes()
    path = tmp_path / "out.gz"
    with path.open("wb") as out:
        nifti.write_gzip(data, out, n_threads=threads)
    packed = path.read_bytes()
    assert gzip.decompress(packed) == data
    # a single member: zlib's gzip decoder stops at its end and leaves nothing unread
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflater.decompress(packed) == data and inflater.eof and inflater.unused_data == b""
    assert subprocess.run(["gzip", "-t", str(path)], check=False).returncode == 0


def test_save_gzip_is_what_nibabel_writes(tmp_path):
    """Same bytes once inflated as nibabel's own .nii, so same header, data and dtype."""
    rng = np.random.default_rng(0)
    img = nb.Nifti1Image(rng.random((40, 30, 20, 9)).astype(np.float32), np.diag([2.0, 2.0, 2.5, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.to_filename(tmp_path / "nibabel.nii")
    out = nifti.save_gzip(img, tmp_path / "ours.nii.gz", n_threads=2)
    assert gzip.decompress(out.read_bytes()) == (tmp_path / "nibabel.nii").read_bytes()
    back = nb.load(out)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), img.get_fdata(dtype=np.float32))
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(ValueError, match="nii.gz"):
        nifti.save_gzip(img, tmp_path / "ours.nii", n_threads=2)
