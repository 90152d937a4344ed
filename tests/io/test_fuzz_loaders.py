"""Fuzzing ``load_image`` with random, truncated and corrupted bytes: it returns an image or raises the
``ValueError`` it documents, never another exception, a crash or a hang (each example is timed)."""

from __future__ import annotations

import gzip
import io
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from PIL import Image

from monai_cluscam.io import load_image, write_dicom_series, write_nifti

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: One example may take this long (seconds) before the loader counts as hanging.
PATIENCE = 10.0


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, bytes]:
    """Small valid files of every format ``load_image`` reads, by suffix."""
    folder = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    volume = rng.random((6, 5, 4)).astype(np.float32) * 100
    files = {".nii": write_nifti(volume, np.diag([1.0, 2.0, 3.0, 1.0]), folder / "v.nii")}
    files[".nii.gz"] = write_nifti(volume, np.eye(4), folder / "v.nii.gz")
    files[".dcm"] = write_dicom_series(volume[:, :, :1], np.eye(4), folder / "series")[0]
    out = {suffix: path.read_bytes() for suffix, path in files.items()}
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG")):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(buffer, format=fmt)
        out[suffix] = buffer.getvalue()
    return out


def _load_or_value_error(path, data: bytes) -> None:
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        image = load_image(path)
    except ValueError:
        pass  # the documented outcome for an unreadable file
    else:
        assert isinstance(image, MetaTensor) and image.ndim >= 3
    assert time.perf_counter() - start < PATIENCE, f"load_image took over {PATIENCE} s on {len(data)} bytes"


SUFFIXES = [".nii", ".nii.gz", ".png", ".jpg", ".dcm", ".bin"]


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES), magic=st.booleans())
def test_random_bytes(tmp_path, data, suffix, magic):
    if magic:  # get past the first check of each reader: the DICOM preamble, the gzip and PNG signatures
        data = {".dcm": b"\0" * 128 + b"DICM", ".nii.gz": b"\x1f\x8b\x08\x00", ".png": b"\x89PNG\r\n\x1a\n"}.get(
            suffix, b""
        ) + data
    _load_or_value_error(tmp_path / f"fuzz{suffix}", data)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES[:5]), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files(tmp_path, valid, suffix, fraction):
    data = valid[suffix]
    _load_or_value_error(tmp_path / f"cut{suffix}", data[: int(len(data) * fraction)])


@FUZZ
@given(
    suffix=st.sampled_from(SUFFIXES[:5]),
    flips=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_corrupted_headers(tmp_path, valid, suffix, flips):
    if suffix == ".nii.gz":  # corrupt the header, not the compressed stream
        data = bytearray(gzip.decompress(valid[suffix]))
    else:
        data = bytearray(valid[suffix])
    for position, value in flips:
        data[position % len(data)] = value
    payload = gzip.compress(bytes(data)) if suffix == ".nii.gz" else bytes(data)
    _load_or_value_error(tmp_path / f"flip{suffix}", payload)
