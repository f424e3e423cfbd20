"""Segmentation metrics (kdistill.segmentation_metrics) against a hand-computed example, and on a segmenter."""

import keras
import numpy as np
import pytest

from kdistill.errors import UserError
from kdistill.segmentation_metrics import confusion_matrix, evaluate_segmenter, iou_per_class, segmentation_report

# Two 2x3 masks over 3 classes, with two ignored pixels (255).
MASKS = np.array([[[0, 0, 1], [1, 2, 255]], [[2, 2, 0], [255, 1, 1]]])
PREDICTIONS = np.array([[[0, 1, 1], [1, 2, 0]], [[2, 0, 0], [2, 1, 2]]])


def test_confusion_matrix_skips_the_ignore_label_and_the_metrics_match_the_hand_count():
    confusion = confusion_matrix(MASKS, PREDICTIONS, 3)
    # counted pixels (true -> predicted): 0->0, 0->1, 1->1, 1->1, 2->2 | 2->2, 2->0, 0->0, 1->1, 1->2
    np.testing.assert_array_equal(confusion, [[2, 1, 0], [0, 3, 1], [1, 0, 2]])
    # IoU: class 0: 2 / (3 + 3 - 2) = 0.5; class 1: 3 / (4 + 4 - 3) = 0.6; class 2: 2 / (3 + 3 - 2) = 0.5
    np.testing.assert_allclose(iou_per_class(confusion), [0.5, 0.6, 0.5])
    report = segmentation_report(confusion, ["background", "a", "b"])
    assert report["per_class_iou"] == pytest.approx({"background": 0.5, "a": 0.6, "b": 0.5})
    assert (
        report["mean_iou"] == pytest.approx(1.6 / 3)
        and report["pixel_accuracy"] == pytest.approx(7 / 10)
        and report["pixels"] == 10
    )
    # without the ignore label, 255 is a value outside the classes: refused with the fix
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 3\)"):
        confusion_matrix(MASKS, PREDICTIONS, 3, ignore_label=None)


def test_a_class_neither_present_nor_predicted_is_left_out_of_the_mean():
    confusion = confusion_matrix(np.array([[0, 1]]), np.array([[0, 1]]), 3)
    report = segmentation_report(confusion)
    assert report["per_class_iou"] == {"0": 1.0, "1": 1.0, "2": None} and report["mean_iou"] == 1.0


def test_evaluate_segmenter_counts_at_the_masks_size_and_reads_a_distillers_student():
    # a fixed "segmenter": class 1 where the first channel is bright, else class 0, at half the input size
    inputs = keras.Input((8, 8, 3))
    bright = keras.layers.AveragePooling2D(2)(inputs[..., :1])
    logits = keras.layers.Concatenate()([128.0 - bright, bright - 128.0])
    model = keras.Model(inputs, logits)
    images = np.zeros((3, 8, 8, 3), "float32")
    images[:, :4] = 255.0  # top half bright
    masks = np.zeros((3, 8, 8), "uint8")
    masks[:, :4] = 1
    masks[0, 6:] = 1  # wrong where the model says background: 16 pixels of class 1 predicted 0
    masks[1, 0, 0] = 255
    report = evaluate_segmenter(model, images, masks, ["background", "item"], batch_size=2)
    assert report["examples"] == 3 and report["classes"] == 2 and report["pixels"] == 3 * 64 - 1
    assert report["pixel_accuracy"] == pytest.approx((191 - 16) / 191)
    assert report["per_class_iou"]["item"] == pytest.approx(95 / (95 + 16))
    with pytest.raises(UserError, match=r"evaluate_segmenter measures segmenters: it needs one output, logit maps"):
        evaluate_segmenter(
            keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]), images, masks
        )
