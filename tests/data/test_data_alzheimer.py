"""alzheimer_items on the three published layouts, with the canonical class order."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monai.data import MetaTensor
from PIL import Image

from monai_cluscam.data import CLASS_NAMES, alzheimer_items, class_index
from monai_cluscam.io import load_image

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "alzheimer_mri"


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 6), value, np.uint8)).save(path)
    return path


def _png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 6), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_class_order_and_spellings():
    assert CLASS_NAMES == ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
    for index, names in enumerate(
        [
            ("Mild_Demented", "MildDemented", "mild demented"),
            ("ModerateDemented", "MODERATE_DEMENTED"),
            ("NonDemented", "Non Demented"),
            ("VeryMildDemented", "very-mild-demented"),
        ]
    ):
        assert {class_index(n) for n in names} == {index}
    with pytest.raises(ValueError, match="Unknown class name 'Demented'"):
        class_index("Demented")


def test_csv_layout(tmp_path):
    _png(tmp_path / "slices" / "a.png", 1)
    _png(tmp_path / "slices" / "b.png", 2)
    (tmp_path / "labels.csv").write_text("file,label\nslices/a.png,Very_Mild_Demented\nslices/b.png,Mild_Demented\n")
    items = alzheimer_items(tmp_path)
    assert [(Path(i["image"]).name, i["label"]) for i in items] == [("a.png", 3), ("b.png", 0)]
    assert alzheimer_items(tmp_path / "labels.csv") == items
    assert load_image(items[0]["image"]).max() == 1


def test_csv_errors(tmp_path):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "labels.csv").write_text("file,label\na.png,Severe\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 2: Unknown class name 'Severe'"):
        alzheimer_items(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\nmissing.png,Non_Demented\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        alzheimer_items(tmp_path)
    (tmp_path / "labels.csv").write_text("path,class\na.png,Non_Demented\n")
    with pytest.raises(ValueError, match="file,label"):
        alzheimer_items(tmp_path)


def test_class_in_file_names(tmp_path):
    _png(tmp_path / "000001_Mild_Demented.png", 1)
    _png(tmp_path / "000002_Very_Mild_Demented.png", 2)
    _png(tmp_path / "000003_NonDemented.jpg", 3)
    labels = {Path(i["image"]).name: i["label"] for i in alzheimer_items(tmp_path)}
    assert labels == {"000001_Mild_Demented.png": 0, "000002_Very_Mild_Demented.png": 3, "000003_NonDemented.jpg": 2}
    _png(tmp_path / "000004_Unknown.png", 4)
    with pytest.raises(ValueError, match="000004_Unknown.png"):
        alzheimer_items(tmp_path)


def test_kaggle_class_folders(tmp_path):
    for folder, count in [("MildDemented", 2), ("ModerateDemented", 1), ("NonDemented", 3), ("verymilddemented", 1)]:
        for n in range(count):
            _png(tmp_path / folder / f"{n}.jpg", n)
    items = alzheimer_items(tmp_path)
    assert [i["label"] for i in items] == [0, 0, 1, 2, 2, 2, 3]
    assert items[2]["class_name"] == "Moderate_Demented"
    _png(tmp_path / "Severe" / "x.png", 1)
    with pytest.raises(ValueError, match=r"\['Severe'\] are not class names"):
        alzheimer_items(tmp_path)


def test_parquet_decoded_and_extracted(tmp_path):
    frame = pd.DataFrame({"image": [{"bytes": _png_bytes(v), "path": None} for v in (5, 9)], "label": [1, 3]})
    (tmp_path / "data").mkdir()
    frame.to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    items = alzheimer_items(tmp_path)
    assert [i["label"] for i in items] == [1, 3]
    assert isinstance(items[0]["image"], MetaTensor) and tuple(items[0]["image"].shape) == (1, 6, 8)
    assert items[1]["image"].max() == 9 and load_image(items[1]["image"]) is items[1]["image"]
    assert items[0]["image"].meta["filename_or_obj"] == "train-00000-of-00001_000000_Moderate_Demented"
    extracted = alzheimer_items(tmp_path / "data" / "train-00000-of-00001.parquet", extract_dir=tmp_path / "png")
    assert all(Path(i["image"]).is_file() for i in extracted)
    np.testing.assert_array_equal(load_image(extracted[1]["image"]).numpy(), items[1]["image"].numpy())
    assert alzheimer_items(tmp_path / "data", extract_dir=tmp_path / "png") == extracted  # idempotent


def test_parquet_errors(tmp_path):
    pd.DataFrame({"image": [{"bytes": _png_bytes(1)}], "label": [7]}).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="row 0: label 7 is outside 0..3"):
        alzheimer_items(tmp_path / "a.parquet")
    pd.DataFrame({"image": [{"bytes": b"not a png"}], "label": [0]}).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="row 0.*not a readable PNG/JPEG"):
        alzheimer_items(tmp_path / "a.parquet")
    pd.DataFrame({"pixels": [b""], "label": [0]}).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="'image'"):
        alzheimer_items(tmp_path / "a.parquet")
    (tmp_path / "a.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(ValueError, match="a.parquet"):
        alzheimer_items(tmp_path / "a.parquet")


def test_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        alzheimer_items(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        alzheimer_items(tmp_path / "nowhere")
    (tmp_path / "labels.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match="no images found"):
        alzheimer_items(tmp_path)


def test_real_dataset():
    if not (REAL / "labels.csv").is_file():
        pytest.skip(f"real Alzheimer data not found at {REAL}")
    items = alzheimer_items(REAL)
    assert len(items) == 960
    counts = {name: sum(i["class_name"] == name for i in items) for name in CLASS_NAMES}
    assert counts == {"Mild_Demented": 129, "Moderate_Demented": 11, "Non_Demented": 476, "Very_Mild_Demented": 344}
    assert all(i["class_name"] in Path(i["image"]).name for i in items)  # labels.csv agrees with names
    image = load_image(items[0]["image"])
    assert tuple(image.shape) == (1, 128, 128) and 0 <= image.min() and image.max() <= 255
