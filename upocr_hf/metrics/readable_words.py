"""Readable words: how much of the text an OCR engine reads in an input it can still read after text removal.

PSNR and MSSIM reward an output close to the text-free target, yet a faded word that a person (or an OCR engine)
still reads scores well on both. This figure asks the question users ask: for every image, the words an OCR engine
recognises in the input, and how many of those same words it still recognises in the output (as a multiset: a word
read twice in the input and once in the output counts once). The figure is the share over all images,
``100 · Σ words still read / Σ words read in the inputs``; lower is better, the unchanged input scores 100.

Words are the engine's lines split on anything that is not a letter or a digit, lower-cased, two characters or
more (single characters are mostly the recogniser's guesses on texture). The engine is PP-OCRv4 run by
``rapidocr-onnxruntime``, whose models ship inside its wheel (``pip install "upocr_hf[ocr]"``); it never downloads
anything. Its figures depend a little on the CPU (ONNX Runtime's kernels): compare models on one machine.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from PIL import Image

#: A recognised line is split into words on every character that is not a letter or a digit.
WORD_SPLIT = re.compile(r"[^0-9a-z]+")
#: Words shorter than this are dropped.
MIN_WORD_LENGTH: int = 2
#: Lines the recogniser is less sure of than this are dropped (RapidOCR's own default).
MIN_TEXT_SCORE: float = 0.5

#: Reads an RGB image and returns the words recognised in it.
WordReaderFn = Callable[[Image.Image], Counter]


def words_of(lines: Iterable[str]) -> Counter:
    """The words of recognised text lines (see the module docstring for what counts as a word)."""
    words: Counter = Counter()
    for line in lines:
        words.update(w for w in WORD_SPLIT.split(line.lower()) if len(w) >= MIN_WORD_LENGTH)
    return words


class WordReader:
    """PP-OCRv4 (detection, orientation, recognition) through ``rapidocr-onnxruntime``: ``reader(image) -> Counter``
    of the words it reads. Raises `ImportError` naming the extra to install when the package is missing."""

    def __init__(self, min_text_score: float = MIN_TEXT_SCORE) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise ImportError(
                'the readable-words figure needs an OCR engine: pip install "upocr_hf[ocr]" '
                "(rapidocr-onnxruntime, PP-OCRv4 models inside the wheel)"
            ) from error
        self.engine = RapidOCR(text_score=min_text_score)

    def __call__(self, image: Image.Image) -> Counter:
        result, _ = self.engine(np.asarray(image.convert("RGB"))[:, :, ::-1].copy())  # RapidOCR reads BGR
        return words_of(line for _, line, _ in (result or []))


class ReadableWords:
    """Accumulates the readable-words figure over (input, output) pairs; `compute()` returns the figures.

    Args:
        reader: the OCR function (default: a `WordReader`, built on first use).
    """

    def __init__(self, reader: WordReaderFn | None = None) -> None:
        self._reader = reader
        self.input_words = 0
        self.words_still_read = 0

    @property
    def reader(self) -> WordReaderFn:
        if self._reader is None:
            self._reader = WordReader()
        return self._reader

    def add(self, input_image: Image.Image, output_image: Image.Image) -> None:
        """Count the input's words and how many of them are still read in the output."""
        before = self.reader(input_image)
        if not before:
            return
        after = self.reader(output_image)
        self.input_words += sum(before.values())
        self.words_still_read += sum((before & after).values())

    def compute(self) -> dict[str, Any]:
        """``readable_words`` (percent of the inputs' words still read; None when the inputs hold no readable
        word), ``input_words`` and ``words_still_read``."""
        share = 100.0 * self.words_still_read / self.input_words if self.input_words else None
        return {
            "readable_words": share,
            "input_words": self.input_words,
            "words_still_read": self.words_still_read,
        }
