"""BIDS input collection, validation and derivatives bookkeeping (no Nipype)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from dmriprep_motion import __version__
from dmriprep_motion.gradients import GradientError, load_gradient_table, shell_bvalues

LOGGER = logging.getLogger("dmriprep_motion")

DERIVATIVE_SUFFIXES = {
    "dwi": "desc-preproc_dwi.nii.gz",
    "bval": "desc-preproc_dwi.bval",
    "bvec": "desc-preproc_dwi.bvec",
    "sidecar": "desc-preproc_dwi.json",
    "dwiref": "dwiref.nii.gz",
    "mask": "desc-brain_mask.nii.gz",
    "confounds": "desc-confounds_timeseries.tsv",
    "confounds_json": "desc-confounds_timeseries.json",
    "xforms": "from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt",
    "qc": "desc-qc_dwi.tsv",
    "qc_json": "desc-qc_dwi.json",
}

#: Files of the derivatives that the BIDS validator does not know.  Folders are given
#: without a trailing slash: bids-validator-deno (3.0) does not match ``dir/`` patterns.
#: The schema lists no ``.bval``/``.bvec`` for preprocessed DWI derivatives (yet).
BIDSIGNORE = """\
*.html
logs
sub-*/log
sub-*/figures
*_dwiref.nii.gz
*_xfm.txt
*_desc-confounds_timeseries.tsv
*_desc-confounds_timeseries.json
*_desc-qc_dwi.tsv
*_desc-qc_dwi.json
*_desc-preproc_dwi.bval
*_desc-preproc_dwi.bvec
"""


class InputError(Exception):
    """A problem with the input that ends the run with a BIDS-Apps exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class DWIRun:
    """One DWI series with its gradients, as found in the BIDS dataset."""

    dwi: Path
    bval: Path
    bvec: Path
    subject: str
    session: str | None
    metadata: dict = field(default_factory=dict)
    shape: tuple[int, ...] = ()
    bvals: np.ndarray | None = None
    bvecs: np.ndarray | None = None

    @property
    def stem(self) -> str:
        """File name without the ``_dwi`` suffix and extension (e.g. ``sub-01_dir-AP``)."""
        name = self.dwi.name
        for ext in (".nii.gz", ".nii"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        return name[: -len("_dwi")] if name.endswith("_dwi") else name

    @property
    def reldir(self) -> Path:
        """Derivatives folder relative to the output root (``sub-X[/ses-Y]/dwi``)."""
        parts = [f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else [])
        return Path(*parts, "dwi")

    @property
    def name(self) -> str:
        """A workflow-safe identifier of the run (entities after ``sub``)."""
        rest = self.stem.split("_")[1:]
        return "_".join(part.replace("-", "_") for part in rest) or "dwi"

    @property
    def mem_gb(self) -> float:
        """Size of one float32 copy of the series (GB)."""
        return float(np.prod(self.shape)) * 4 / 1024**3 if self.shape else 1.0

    def derivative(self, output_dir: Path, key: str) -> Path:
        """Path of derivative ``key`` (see :data:`DERIVATIVE_SUFFIXES`)."""
        return Path(output_dir) / self.reldir / f"{self.stem}_{DERIVATIVE_SUFFIXES[key]}"


def _load_filters(filter_file: Path | None) -> dict:
    if filter_file is None:
        return {}
    try:
        filters = json.loads(Path(filter_file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the BIDS filter file {filter_file}: {err}", 64) from None
    if not isinstance(filters, dict):
        raise InputError(f"the BIDS filter file must hold a JSON object: {filter_file}", 64)
    filters = filters.get("dwi", filters)
    if not isinstance(filters, dict):
        raise InputError(f"the 'dwi' entry of the BIDS filter file must be a JSON object: {filter_file}", 64)
    for entity, value in filters.items():
        values = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
            raise InputError(
                f"invalid BIDS filter: the value of {entity!r} must be a string, number, boolean, "
                f"null or a list of them (got {json.dumps(value)})",
                64,
            )
    return filters


def check_bids_root(bids_dir: Path) -> None:
    """Fail with exit code 66 (missing) or 16 (not BIDS) unless ``bids_dir`` is a BIDS root."""
    if not bids_dir.exists():
        raise InputError(f"BIDS directory not found: {bids_dir}", 66)
    if not bids_dir.is_dir():
        raise InputError(f"BIDS directory is not a directory: {bids_dir}", 66)
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise InputError(f"not a BIDS dataset (no dataset_description.json): {bids_dir}", 16)
    try:
        content = json.loads(description.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"invalid dataset_description.json ({err}): {bids_dir}", 16) from None
    if not isinstance(content, dict):
        raise InputError(f"invalid dataset_description.json (not a JSON object): {bids_dir}", 16)


#: Top-level folders of a BIDS dataset that pybids does not index.
_NOT_INDEXED = {"code", "derivatives", "models", "sourcedata", "stimuli"}


def _first_bad_json(bids_dir: Path) -> tuple[str, str] | None:
    """The first JSON file pybids indexes that is not a readable JSON object, and why."""
    for path in sorted(Path(bids_dir).rglob("*.json")):
        rel = path.relative_to(bids_dir)
        if rel.parts[0] in _NOT_INDEXED or any(part.startswith(".") for part in rel.parts):
            continue
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return rel.as_posix(), str(err)
        if not isinstance(content, dict):
            return rel.as_posix(), "not a JSON object"
    return None


def _layout(bids_dir: Path):
    """Index ``bids_dir`` with pybids; a malformed JSON sidecar is an :class:`InputError` (16)."""
    from bids import BIDSLayout

    try:
        return BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    except (OSError, TypeError, ValueError):
        # pybids reads every sidecar while indexing and raises OSError (bad JSON) or
        # TypeError (JSON that is not an object) without a usable message: find the file.
        bad = _first_bad_json(bids_dir)
        if bad is None:
            raise
        raise InputError(f"invalid JSON sidecar {bad[0]} ({bad[1]})", 16) from None


def collect_runs(
    bids_dir: Path,
    participants: list[str] | None = None,
    sessions: list[str] | None = None,
    filter_file: Path | None = None,
    b0_threshold: float = 50.0,
) -> dict[str, list[DWIRun]]:
    """Find and validate every DWI run to process, grouped by participant.

    Raises
    ------
    InputError
        With the BIDS-Apps exit code: 16 for invalid data, 66 when nothing matches.
    """
    check_bids_root(bids_dir)
    filters = _load_filters(filter_file)
    layout = _layout(bids_dir)
    available = sorted(layout.get_subjects())
    if not available:
        raise InputError(f"no participants (sub-*) found in {bids_dir}", 66)
    wanted = participants or available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise InputError(
            f"participant(s) not found: {', '.join('sub-' + s for s in unknown)} "
            f"(available: {', '.join('sub-' + s for s in available)})",
            66,
        )
    query = {"datatype": "dwi", "suffix": "dwi", "extension": [".nii", ".nii.gz"]}
    query.update(filters)
    if sessions:
        query["session"] = sessions
    runs: dict[str, list[DWIRun]] = {}
    from sqlalchemy.exc import SQLAlchemyError  # pybids' database

    for subject in wanted:
        try:
            files = layout.get(subject=subject, return_type="file", **query)
        except (ValueError, TypeError) as err:
            raise InputError(f"invalid BIDS filter ({err})", 64) from None
        except SQLAlchemyError as err:  # a value the database cannot compare with
            first = str(getattr(err, "orig", None) or err).splitlines()[0]
            raise InputError(f"invalid BIDS filter ({first})", 64) from None
        runs[subject] = [_make_run(layout, Path(f), b0_threshold) for f in sorted(files)]
    empty = [s for s, found in runs.items() if not found]
    if empty:
        what = "matching the filters" if (filters or sessions) else "in the dataset"
        raise InputError(f"no DWI series {what} for {', '.join('sub-' + s for s in empty)}", 66)
    return runs


def _make_run(layout, dwi: Path, b0_threshold: float) -> DWIRun:
    entities = layout.parse_file_entities(str(dwi))
    bval = _sidecar_path(layout, dwi, "bval")
    bvec = _sidecar_path(layout, dwi, "bvec")
    run = DWIRun(
        dwi=dwi,
        bval=bval,
        bvec=bvec,
        subject=entities["subject"],
        session=entities.get("session"),
        metadata=dict(layout.get_metadata(str(dwi))),
    )
    validate_run(run, b0_threshold)
    return run


def _sidecar_path(layout, dwi: Path, ext: str) -> Path:
    try:
        found = layout.get_bval(str(dwi)) if ext == "bval" else layout.get_bvec(str(dwi))
    except Exception:  # noqa: BLE001 - pybids raises several types when nothing is found
        found = None
    if not found:
        raise InputError(f"no .{ext} file for {dwi.name}", 16)
    return Path(found)


#: Bytes read at once when checking that an image is complete (bounds memory).
_SCAN_CHUNK = 1 << 24


def scan_image(path: Path) -> tuple[nb.Nifti1Image, int]:
    """Open a NIfTI image and read its data stream once, in chunks, to the end.

    Detects truncated or corrupted files (including a wrong gzip checksum, which
    NiBabel does not verify) without holding the series in memory.

    Returns
    -------
    img : the (lazily loaded) image
    n_nonfinite : number of NaN/Inf voxel values (0 for integer data)

    Raises
    ------
    InputError
        Code 16 when the file cannot be read in full.
    """
    import gzip
    import zlib

    name = Path(path).name
    try:
        img = nb.load(str(path))
        shape = img.shape
        dtype = img.get_data_dtype()
        offset = int(img.dataobj.offset)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types on bad files
        raise InputError(f"cannot read {name} (corrupted or truncated?): {err}", 16) from None
    if not isinstance(img, nb.Nifti1Image | nb.Nifti2Image):
        raise InputError(f"{name} is not a NIfTI image", 16)
    if dtype.fields is not None or dtype.kind not in "iuf":
        raise InputError(f"{name} has data type {dtype}; a real-valued image is required", 16)
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    n_nonfinite = 0
    read = 0
    remaining = expected - offset  # image bytes not yet taken from the stream
    carry = b""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(str(path), "rb") as fobj:
            while chunk := fobj.read(_SCAN_CHUNK):
                start, read = read, read + len(chunk)
                if dtype.kind != "f" or remaining <= 0 or read <= offset:
                    continue
                new = chunk[max(offset - start, 0) :][:remaining]
                remaining -= len(new)
                buf = carry + new
                whole = len(buf) - len(buf) % dtype.itemsize
                values = np.frombuffer(buf[:whole], dtype=dtype)
                n_nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                carry = buf[whole:]
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"cannot read {name} (corrupted or truncated?): {err}", 16) from None
    if read < expected:
        raise InputError(f"cannot read {name} (truncated: {read} of {expected} bytes of image data)", 16)
    return img, n_nonfinite


def validate_run(run: DWIRun, b0_threshold: float = 50.0) -> None:
    """Read the image and its gradients in full; raise :class:`InputError` (16) if unusable.

    The image is streamed once (constant memory) to detect truncation or
    corruption and count non-finite values; the gradient table is checked
    against the number of volumes.
    """
    img, n_nonfinite = scan_image(run.dwi)
    shape = img.shape
    if len(shape) != 4:
        raise InputError(
            f"{run.dwi.name} is {len(shape)}D (shape {'x'.join(map(str, shape))}), a 4D series is required",
            16,
        )
    if shape[3] < 3:
        raise InputError(f"{run.dwi.name} has only {shape[3]} volumes (at least 3 are required)", 16)
    if n_nonfinite:
        LOGGER.warning("%s: %d non-finite voxel values will be set to 0", run.dwi.name, n_nonfinite)
    hdr = img.header
    if int(hdr["sform_code"]) > 0 and int(hdr["qform_code"]) > 0:
        if not np.allclose(hdr.get_sform(), hdr.get_qform(), atol=1e-3):
            LOGGER.warning(
                "%s: the sform and qform disagree; using the sform (as NiBabel does), "
                "and writing outputs whose qform matches it",
                run.dwi.name,
            )
    try:
        gtab = load_gradient_table(run.bval, run.bvec, shape[3], b0_threshold=b0_threshold)
    except GradientError as err:
        raise InputError(str(err), 16) from None
    run.shape = tuple(int(s) for s in shape)
    run.bvals = gtab.bvals
    run.bvecs = gtab.bvecs
    LOGGER.info(
        "found %s: %d volumes (%d b0), shells %s",
        run.dwi.name,
        shape[3],
        len(gtab.b0_indices),
        ", ".join(f"{b:g}" for b in shell_bvalues(gtab.bvals, b0_threshold)),
    )


# ---------------------------------------------------------------- writing outputs
@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name next to ``path``; on success rename it to ``path`` atomically.

    Whatever writes the temporary file (Python, pandoc, a report generator), readers
    see either the previous ``path`` or the complete new one, never a partial file.
    If the body raises (or is interrupted), the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : path
        Final file name; its folder is created if needed.

    Yields
    ------
    pathlib.Path
        ``.<name>.<random>.tmp`` in the same folder (same file system, so the rename
        is atomic), created empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file and an atomic rename."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def dataset_description(bids_dir: Path) -> dict:
    """The ``dataset_description.json`` of the derivatives."""
    return {
        "Name": "dmriprep_motion: head-motion corrected diffusion MRI",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "dmriprep_motion",
                "Version": __version__,
                "Description": "Leave-one-volume-out head-motion correction for diffusion MRI",
            }
        ],
        "SourceDatasets": [{"URL": Path(bids_dir).absolute().as_uri()}],
    }


def init_output_dir(output_dir: Path, bids_dir: Path) -> None:
    """Create the derivatives root with ``dataset_description.json`` and ``.bidsignore``.

    Safe when several participants start at once into the same folder: each file
    is written whole through an atomic rename, and an existing, equivalent
    description is left untouched.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    desc_file = output_dir / "dataset_description.json"
    wanted = dataset_description(bids_dir)
    try:
        current = json.loads(desc_file.read_text())
    except (OSError, json.JSONDecodeError):
        current = None
    if current != wanted:
        atomic_write_text(desc_file, json.dumps(wanted, indent=2) + "\n")
    ignore = output_dir / ".bidsignore"
    if not ignore.exists() or ignore.read_text() != BIDSIGNORE:
        atomic_write_text(ignore, BIDSIGNORE)
