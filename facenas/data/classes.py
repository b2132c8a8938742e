"""Face Synthetics label set (SPEC section 5)."""

from __future__ import annotations

from typing import Final

#: Names of the Face Synthetics labels 0..18, indexed by label value.
CLASS_NAMES: Final[tuple[str, ...]] = (
    "background",
    "skin",
    "nose",
    "right_eye",
    "left_eye",
    "right_brow",
    "left_brow",
    "right_ear",
    "left_ear",
    "mouth_interior",
    "top_lip",
    "bottom_lip",
    "neck",
    "hair",
    "beard",
    "clothing",
    "glasses",
    "headwear",
    "facewear",
)

#: Classes the models predict: facewear (18) never occurs in the data, so it is left out.
NUM_CLASSES: Final[int] = 18

#: Mask value excluded from the loss and the metrics.
IGNORE_INDEX: Final[int] = 255
