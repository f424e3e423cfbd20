"""Exporting a segmenter (kdistill.export.segmentation_parity): SavedModel and TFLite files and a parity report on masks."""

import json
import os

import numpy as np
import pytest

import kdistill
from kdistill.export import export_all, export_segmenter, format_segmentation_report


@pytest.mark.slow
def test_a_segmenter_exports_to_tflite_float_and_int8_with_mask_parity(tmp_path):
    model = kdistill.segmenters.get("conv_segmenter", 4, (16, 16, 3), widths=(8, 8, 8), decoder_channels=8)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (12, 16, 16, 3)).astype("float32")
    masks = np.asarray(model(images)).argmax(-1).astype("uint8")  # the Keras model is right everywhere: its mIoU is 1
    masks[:, 0, 0] = 255
    result = export_segmenter(
        model,
        str(tmp_path),
        formats=["float32", "int8"],
        representative=[(images, masks)],
        test=[(images[:6], masks[:6]), (images[6:], masks[6:])],
        class_names=["a", "b", "c", "d"],
    )
    rows = result["report"]["formats"]
    assert list(rows) == ["keras", "tflite_float32", "tflite_int8"] and result["report"]["examples"] == 12
    assert rows["keras"]["mean_iou"] == pytest.approx(1.0) and rows["keras"]["pixel_agreement"] == 1.0
    assert rows["tflite_float32"]["pixel_agreement"] == 1.0 and rows["tflite_float32"]["max_abs_diff"] < 1e-3
    assert 0.5 < rows["tflite_int8"]["pixel_agreement"] <= 1.0 and rows["tflite_int8"]["mean_iou"] <= 1.0
    assert rows["tflite_int8"]["size_mb"] < rows["tflite_float32"]["size_mb"]
    with open(os.path.join(tmp_path, "report.json")) as handle:
        assert json.load(handle)["formats"]["tflite_float32"]["pixel_agreement"] == 1.0
    table = format_segmentation_report(result["report"])
    assert "| tflite_float32 |" in table and "pixel agreement" in table
    # the classifiers' report would compare top-1 per image: refused for a segmenter with the function to use
    with pytest.raises(ValueError, match="export_segmenter"):
        export_all(model, str(tmp_path / "other"), formats=["float32"], test=[(images, masks)])
