"""Small BIDS datasets derived from ds-xa30 for the reliability tests (never modifies ds-xa30)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np

from dmriprep_motion.testing.inject import inject_motion

#: Fast settings for tests whose point is not accuracy.
FAST_ARGS = ["--sloppy", "--passes", "1", "--nprocs", "2", "--seed", "7", "--skip-bids-validation"]


def source_run(ds_xa30: Path, n_volumes: int = 11) -> tuple[nb.Nifti1Image, np.ndarray, np.ndarray, dict]:
    """The first ``n_volumes`` volumes of sub-01 dir-AP: image, bvals (N,), FSL bvecs (N, 3), sidecar."""
    base = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    img = nb.load(f"{base}.nii.gz")
    data = np.asanyarray(img.dataobj)[..., :n_volumes]
    out = nb.Nifti1Image(data, img.affine, img.header)
    bvals = np.loadtxt(f"{base}.bval")[:n_volumes]
    bvecs = np.loadtxt(f"{base}.bvec").T[:n_volumes]
    return out, bvals, bvecs, json.loads(Path(f"{base}.json").read_text())


def write_run(
    bids: Path,
    subject: str,
    img: nb.Nifti1Image,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    sidecar: dict,
    entities: str = "dir-AP",
) -> Path:
    """Write one DWI run (+ dataset_description.json if missing); return the NIfTI path."""
    bids.mkdir(parents=True, exist_ok=True)
    desc = bids / "dataset_description.json"
    if not desc.exists():
        desc.write_text(json.dumps({"Name": "reliability test", "BIDSVersion": "1.9.0"}) + "\n")
    folder = bids / f"sub-{subject}" / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"sub-{subject}_{entities}_dwi"
    img.to_filename(f"{stem}.nii.gz")
    Path(f"{stem}.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    np.savetxt(f"{stem}.bvec", np.asarray(bvecs).T, fmt="%.8f")
    Path(f"{stem}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return Path(f"{stem}.nii.gz")


def small_dataset(ds_xa30: Path, bids: Path, subjects=("01",), n_volumes: int = 11) -> Path:
    """A BIDS dataset with one short dir-AP run per subject (identical data)."""
    img, bvals, bvecs, sidecar = source_run(ds_xa30, n_volumes)
    for subject in subjects:
        write_run(bids, subject, img, bvals, bvecs, sidecar)
    return bids


def with_motion(
    img: nb.Nifti1Image, bvecs: np.ndarray, motions: dict[int, np.ndarray]
) -> tuple[nb.Nifti1Image, np.ndarray]:
    """``img`` with known motion injected (see :func:`dmriprep_motion.testing.inject.inject_motion`)."""
    data, moved = inject_motion(img.get_fdata(dtype=np.float32), img.affine, bvecs, motions)
    hdr = img.header.copy()
    hdr.set_data_dtype(np.float32)
    out = nb.Nifti1Image(data, img.affine, hdr)
    out.header.set_qform(img.header.get_qform(), code=int(img.header["qform_code"]))
    out.header.set_sform(img.header.get_sform(), code=int(img.header["sform_code"]))
    return out, moved


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a dataset (for tests that must not touch the original)."""
    shutil.copytree(src, dst)
    return dst
