"""Task identifiers and the image encodings of each task's target (spec §1).

Every UPOCR task is "RGB image in, RGB image out". This module is the single place that names
the tasks and says how their target images are coloured, so data loading, losses,
post-processing and metrics agree.
"""

from __future__ import annotations

TEXT_REMOVAL = "text-removal"
TAMPERED_TEXT_DETECTION = "tampered-text-detection"
TEXT_SEGMENTATION = "text-segmentation"

#: Row order of the task prompts in the authors' released checkpoint.
DEFAULT_TASKS: tuple[str, ...] = (TEXT_REMOVAL, TAMPERED_TEXT_DETECTION, TEXT_SEGMENTATION)

#: Value (in [0, 1]) of "ignored" pixels in segmentation and tampered-text targets: 0.5 gray.
IGNORE_VALUE: float = 128 / 255
#: The same as an 8-bit value, for targets stored as uint8 images.
IGNORE_VALUE_UINT8: int = 128

#: Text segmentation target: white text strokes on black.
SEGMENTATION_BACKGROUND_RGB: tuple[int, int, int] = (0, 0, 0)
SEGMENTATION_TEXT_RGB: tuple[int, int, int] = (255, 255, 255)

#: Tampered text detection classes; the target colour of class ``i`` is ``TAMPER_CLASS_RGB[i]``.
TAMPER_ID2LABEL: dict[int, str] = {0: "background", 1: "real text", 2: "tampered text"}
TAMPER_CLASS_RGB: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))

#: Default probability threshold on the channel mean of a segmentation prediction.
SEGMENTATION_THRESHOLD: float = 0.4
