"""Synthetic training data for all three UPOCR tasks, written in the real datasets' folder layouts.

One *render* gives every task its sample:

* **text removal**: the text image, the text-free background (byte-identical to the text image outside the
  text mask) and the text-region mask (each word's transformed ink quad, united with every pixel where the
  text image differs from the background);
* **text segmentation**: a TextSeg label -- 100 on glyph pixels (fill alpha >= 0.5), 200 on word effects
  (outline/shadow, counted as background), 255 (ignore) on the anti-aliased glyph rim (0 < alpha < 0.5)
  when ``ignore_soft_edges``; every 100 pixel differs from the background;
* **tampered text detection**: a forged copy in which some words are forged the ways forgers do it, each at a
  random strength down to subtle (:mod:`.forgery`): *edit* (the word's ink erased by inpainting, a new word typed
  in a near-matching style), *copy-move* (a word copied from elsewhere in the same image) or *splice* (a word cut
  from another photograph, with its own background, noise and lighting), then the forger's traces (resampling,
  blur or sharpening, noise, a JPEG save of the edited crop) and, with ``resave_prob``, the whole image saved again
  as JPEG. A forged word's Tampered-IC13 box (label 2) is the tight box of the pixels its forgery changed visibly
  (more than ``FORGERY_CHANGE_THRESHOLD`` in a channel); a word whose forgery changed nothing visible stays real
  (label 1, the tight box of the pixels the word changes). Tampered boxes are written after real ones, so they win
  where boxes overlap (the loader fills boxes in file order).

Rendering: words from a built-in vocabulary plus numbers, prices, dates and codes, in the fonts of
:mod:`.resources` (per-font character coverage is checked, so a font is only given words it can draw); sizes 3-14 %
of the image height; colours contrasting with the local background; outlines and soft shadows; blocks of one to
three lines, rotated (+-30 deg) and perspective-warped as a whole; with ``document_prob``, a page or a screenshot
instead (small, straight, mostly dark-on-light text). Backgrounds: photographs and artwork (:mod:`.resources`),
procedural gradients, noise textures, stripes and flat colours with grain. Text image and background then go
through one simulated camera (:mod:`.camera`: lighting, shadow, blur, noise, grayscale, JPEG).

The fonts, photographs and forgery methods come in two disjoint styles (``--style train`` / ``held-out``): data of
the held-out style measures how a model generalises to fonts, scenes and a forgery method it never saw.

Determinism: sample ``i`` of seed ``k`` depends only on ``(k, i)``, the config and the font/photo lists
(which the parent resolves once and hands to workers), so output is identical for any number of workers.
Fonts and photographs differ between machines: pin ``SyntheticConfig.font_paths`` (``--fonts``) and
``photo_paths`` to reproduce elsewhere.

Layouts written under ``out``::

    out/SCUT-EnsText/train/{image,label,mask}/NAME.png   (mask: black text regions on white, as the release)
    out/TextSeg/{image/NAME.png, semantic_label/NAME_maskfg.png, split.json}
    out/Tampered-IC13/{train_img/NAME.png, train_gt/NAME.txt}

so :mod:`upocr_hf.data.folders` loads them like the real sets. CLI::

    python -m upocr_hf.data.synthetic --num N --size S --out DIR --seed K [--tasks ...] [--workers W]
        [--save-to-disk HF_DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..command_line import module_parser
from ..tasks import (
    DEFAULT_TASKS,
    TAMPERED_TEXT_DETECTION,
    TEXT_REMOVAL,
    TEXT_SEGMENTATION,
    get_task,
    resolve_task,
)
from .camera import CameraConfig, jpeg, photograph, to_gray
from .folders import TEXTSEG_IGNORE, TEXTSEG_TEXT, TEXTSEG_WORD_EFFECT, TamperBox
from .forgery import FORGERY_METHODS, TRACE_REACH, dilate, feather, inpaint, leave_traces, paste
from .resources import (
    FONT_DIRS,
    REQUIRED_CHARS,
    STYLES,
    available_fonts,
    available_photos,
    font_charset,
    font_group,
    load_photo,
    photo_group,
    style_split,
)

__all__ = [
    "SyntheticConfig",
    "SyntheticSample",
    "available_fonts",
    "available_photos",
    "generate_folders",
    "iter_samples",
    "load_synthetic_folders",
    "main",
    "render_sample",
]

#: The forgery methods of each style: the held-out style's method is one that training never sees.
STYLE_FORGERY_METHODS: dict[str, tuple[str, ...]] = {
    "train": ("edit", "copy-move"),
    "held-out": ("splice",),
    "all": FORGERY_METHODS,
}

_VOCABULARY = (
    "the open sale exit road hotel coffee market station city park bank street store police taxi bus stop "
    "welcome entrance parking cafe bakery pizza burger fresh daily news office center north south east west "
    "free menu dinner lunch breakfast garden river bridge museum library school church house home love time "
    "world life water fire light night day sun moon star king queen green blue red black white gold silver "
    "new old big small fast slow hot cold high low left right up down push pull no yes only one way ahead "
    "danger warning caution private public service open24 shop mall cinema theatre music rock jazz club bar "
    "beer wine tea juice milk bread cake fruit fish meat rice noodle soup hair salon beauty spa hospital "
    "pharmacy doctor dental clinic airport train metro platform gate ticket information toilet room floor "
    "level sign board notice limited edition special offer discount price best quality brand original "
    "happy birthday summer winter spring autumn festival party holiday travel tour guide map view point "
    "sports football tennis golf run walk bike car auto motor repair wash fuel oil gas electric power phone "
    "mobile digital online web email call now today tomorrow hello thanks please welcome smile photo studio "
    "design art gallery print copy book paper pen post mail delivery express cargo box package"
).split()


# --------------------------------------------------------------------------------------------------------
# Configuration and resources
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig:
    """How samples look. ``size`` is ``(width, height)``. ``font_paths``/``photo_paths`` ``None``: discover this
    machine's fonts and photographs and keep those of ``style`` ("train", "held-out" or "all", see
    :mod:`upocr_hf.data.resources`); lists given explicitly are used as they are. ``forgery_methods`` ``None``: the
    style's methods (training: edit and copy-move; held-out: splicing)."""

    size: tuple[int, int] = (512, 512)
    style: str = "all"
    min_blocks: int = 1
    max_blocks: int = 4
    max_lines: int = 3
    max_words_per_line: int = 4
    font_size_range: tuple[float, float] = (0.03, 0.14)  # fraction of the image height
    rotate_prob: float = 0.5
    max_rotation: float = 30.0
    perspective_prob: float = 0.3
    perspective_strength: float = 0.12
    outline_prob: float = 0.25
    shadow_prob: float = 0.25
    photo_prob: float = 0.5
    document_prob: float = 0.25  # a page or a screenshot: small, straight, mostly dark-on-light text
    document_font_size_range: tuple[float, float] = (0.025, 0.07)  # of pages and screenshots
    min_text_contrast: float = 90.0  # luma difference between text and its background, of 255
    camera: CameraConfig = field(default_factory=CameraConfig)
    tamper_word_fraction: tuple[float, float] = (0.2, 0.6)
    max_tampered_words: int = 4
    no_tamper_prob: float = 0.1
    forgery_methods: tuple[str, ...] | None = None
    forgery_strength: tuple[float, float] = (0.1, 1.0)
    resave_prob: float = (
        0.6  # the forged image saved again as JPEG: the edits get another compression history
    )
    ignore_soft_edges: bool = True
    font_paths: tuple[str, ...] | None = None
    photo_paths: tuple[str, ...] | None = None

    def resolved(self) -> SyntheticConfig:
        """The same config with the font and photo lists and the forgery methods filled in (do this once, in the
        parent process)."""
        fonts = self.font_paths
        if fonts is None:
            fonts = style_split(available_fonts(), self.style, font_group)
        photos = self.photo_paths
        if photos is None:
            photos = style_split(available_photos(), self.style, photo_group)
        if not fonts:
            raise RuntimeError(
                f"no usable font found (looked in {FONT_DIRS} and Python packages' font folders)"
            )
        methods = (
            self.forgery_methods if self.forgery_methods is not None else STYLE_FORGERY_METHODS[self.style]
        )
        unknown = set(methods) - set(FORGERY_METHODS)
        if unknown:
            raise ValueError(f"unknown forgery method(s) {sorted(unknown)}; choose from {FORGERY_METHODS}")
        return replace(
            self, font_paths=tuple(fonts), photo_paths=tuple(photos), forgery_methods=tuple(methods)
        )


@dataclass
class SyntheticSample:
    """Everything one render produces (arrays are H x W [x 3] uint8 unless said otherwise)."""

    name: str
    image: np.ndarray  # text image (removal and segmentation input)
    background: np.ndarray  # text-free image (removal target)
    text_mask: np.ndarray  # bool, text regions (removal)
    stroke_label: np.ndarray  # TextSeg values 0/100/200/255
    tampered: np.ndarray  # forged copy (tamper input)
    tamper_boxes: list[TamperBox] = field(default_factory=list)
    words: list[dict[str, Any]] = field(default_factory=list)


#: The camera of users' photos: lighter than the training generator's, so clean renders come as often as
#: camera-like ones.
USERS_CAMERA = CameraConfig(
    lighting_prob=0.35,
    shadow_prob=0.1,
    blur_prob=0.2,
    max_blur_sigma=1.0,
    noise_prob=0.35,
    max_noise_sigma=5.0,
    jpeg_prob=0.4,
    jpeg_quality=(60, 95),
)
#: Named looks, as overrides of `SyntheticConfig`'s fields. ``"training"``: the generator's defaults. ``"photos"``:
#: what users bring -- larger text (4-23.5 % of the height: 20-120 px at 512), denser words, more pages and
#: screenshots with larger print, lower text contrast (light text on saturated colours), `USERS_CAMERA`.
#: ``"signs"``: a few large words (12-23.5 %: 60-120 px at 512) on photographs, no pages.
LOOKS: dict[str, dict[str, Any]] = {
    "training": {},
    "photos": {
        "font_size_range": (0.04, 0.235),
        "max_blocks": 6,
        "max_words_per_line": 6,
        "document_prob": 0.35,
        "document_font_size_range": (0.04, 0.09),
        "min_text_contrast": 60.0,
        "camera": USERS_CAMERA,
    },
    "signs": {
        "font_size_range": (0.12, 0.235),
        "max_blocks": 3,
        "max_lines": 2,
        "max_words_per_line": 3,
        "photo_prob": 0.9,
        "document_prob": 0.0,
        "min_text_contrast": 60.0,
        "camera": USERS_CAMERA,
    },
}


@lru_cache(maxsize=4096)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# --------------------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------------------


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _fractal_noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    cells = int(rng.integers(2, 6))
    for _ in range(int(rng.integers(3, 6))):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        layer = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
        out += amp * np.asarray(layer)
        total += amp
        amp *= float(rng.uniform(0.4, 0.65))
        cells *= 2
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _procedural_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.choice(["linear", "radial", "noise", "stripes", "flat"])
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if kind == "linear":
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / (
            abs(w * math.cos(angle)) + abs(h * math.sin(angle)) + 1
        )
        t = t - t.min()
    elif kind == "radial":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.hypot(xx - cx, yy - cy) / math.hypot(w, h)
    elif kind == "noise":
        t = _fractal_noise(rng, w, h)
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(8, max(w, h) / 2)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        t = 0.5 + (t - 0.5) * rng.uniform(0.1, 0.6)
    else:
        t = np.zeros((h, w), np.float32)
    t = np.clip(t, 0, 1)[..., None]
    img = c1 * (1 - t) + c2 * t
    grain = rng.uniform(0, 12)
    if grain > 1:
        img = img + rng.normal(0, grain, (h, w, 1)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _photo_background(rng: np.random.Generator, w: int, h: int, photos: Sequence[str]) -> np.ndarray:
    photo = load_photo(photos[int(rng.integers(len(photos)))])
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.35, 1.0)
    cw, ch = max(16, int(pw * scale)), max(16, int(ph * scale))
    aspect = w / h  # keep the output aspect
    if cw / ch > aspect:
        cw = max(16, int(ch * aspect))
    else:
        ch = max(16, int(cw / aspect))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = Image.fromarray(photo[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = np.asarray(crop).astype(np.float32)
    if rng.random() < 0.5:  # tint / brightness / contrast change
        gain = rng.uniform(0.7, 1.3, 3)
        img = (img - 128) * rng.uniform(0.7, 1.2) + 128
        img = img * gain + rng.uniform(-30, 30)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _document_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A page (paper white to grey, faint texture) or a screenshot (flat theme colour, panels and rules)."""
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.55:
        paper = np.full(3, rng.uniform(205, 255)) + rng.uniform(-12, 6, 3)
        img = paper + (_fractal_noise(rng, w, h)[..., None] - 0.5) * rng.uniform(0, 18)
        return np.clip(np.rint(img + rng.normal(0, rng.uniform(0, 3), (h, w, 1))), 0, 255).astype(np.uint8)
    dark = rng.random() < 0.35
    base = np.full(3, rng.uniform(20, 60) if dark else rng.uniform(225, 255)) + rng.uniform(-8, 8, 3)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    for _ in range(int(rng.integers(1, 6))):  # panels, bars and sidebars
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = min(w, x0 + int(rng.integers(w // 8, w))), min(h, y0 + int(rng.integers(h // 16, h)))
        img[y0:y1, x0:x1] = np.clip(base + rng.uniform(-25, 25) + rng.uniform(-10, 10, 3), 0, 255)
        if rng.random() < 0.4:  # an accent colour: a header or a button
            img[y0 : min(y1, y0 + int(rng.integers(4, max(5, h // 10)))), x0:x1] = rng.uniform(0, 255, 3)
    for _ in range(int(rng.integers(0, 4))):  # rules
        y = int(rng.integers(0, h))
        img[y, (xx[0] >= int(rng.integers(0, w // 2)))] = np.clip(base + (40 if dark else -40), 0, 255)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, cfg: SyntheticConfig, document: bool) -> np.ndarray:
    w, h = cfg.size
    if document:
        return _document_background(rng, w, h)
    if cfg.photo_paths and rng.random() < cfg.photo_prob:
        return _photo_background(rng, w, h, cfg.photo_paths)
    return _procedural_background(rng, w, h)


def _document_layout(cfg: SyntheticConfig) -> SyntheticConfig:
    """The layout of a page or a screenshot: more, smaller, straight lines of plain dark-on-light or UI text."""
    return replace(
        cfg,
        min_blocks=2,
        max_blocks=8,
        max_lines=6,
        max_words_per_line=6,
        font_size_range=cfg.document_font_size_range,
        rotate_prob=0.0,
        perspective_prob=0.1,
        perspective_strength=0.05,
        outline_prob=0.0,
        shadow_prob=0.03,
    )


@lru_cache(maxsize=8)
def _font_families(fonts: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    families: dict[str, list[str]] = {}
    for path in fonts:
        families.setdefault(font_group(path), []).append(path)
    return tuple(tuple(paths) for _name, paths in sorted(families.items()))


def _pick_font(rng: np.random.Generator, fonts: tuple[str, ...]) -> str:
    """A family uniformly, then one of its files: a package with 60 weights is not 60 times as likely."""
    families = _font_families(fonts)
    family = families[int(rng.integers(len(families)))]
    return family[int(rng.integers(len(family)))]


# --------------------------------------------------------------------------------------------------------
# Words and geometry
# --------------------------------------------------------------------------------------------------------


def _random_word(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.7:
        word = _VOCABULARY[int(rng.integers(len(_VOCABULARY)))]
        case = rng.random()
        return word.upper() if case < 0.35 else word.capitalize() if case < 0.7 else word
    if r < 0.8:
        return str(int(rng.integers(0, 10 ** int(rng.integers(1, 6)))))
    if r < 0.87:
        return f"${rng.integers(1, 999)}.{rng.integers(0, 100):02d}"
    if r < 0.93:
        return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}"
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return "".join(letters[int(i)] for i in rng.integers(0, len(letters), int(rng.integers(2, 7))))


def _fit_word(word: str, charset: frozenset[str]) -> str | None:
    if all(c in charset for c in word):
        return word
    upper = word.upper()
    if all(c in charset for c in upper):
        return upper
    return None


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], np.float64)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 homography mapping the 4 ``src`` points onto ``dst``."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    h = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _apply(hmat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ hmat.T
    return p[:, :2] / p[:, 2:3]


@dataclass
class _Style:
    font_path: str
    font_size: int
    fill: np.ndarray
    effect: str  # "none" | "outline" | "shadow"
    effect_colour: np.ndarray
    stroke: int
    shadow_offset: tuple[int, int]
    shadow_blur: float


@dataclass
class _Word:
    text: str
    origin: tuple[float, float]  # anchor ("la") position in block coordinates
    style: _Style
    fill_alpha: np.ndarray | None = None  # float32 patch
    effect_alpha: np.ndarray | None = None
    patch: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 in image coordinates
    quad: np.ndarray | None = None  # ink quad in image coordinates
    block: np.ndarray | None = None  # block -> image homography (kept for re-rendering a replacement)


def _render_word(word: _Word, block_h: np.ndarray, w: int, h: int) -> None:
    """Rasterise ``word`` (alpha of glyph fill and of its effect) and warp it into image coordinates."""
    st = word.style
    font = _font(st.font_path, st.font_size)
    x0, y0, x1, y1 = font.getbbox(word.text, anchor="la", stroke_width=st.stroke)
    pad = st.stroke + 2
    if st.effect == "shadow":
        pad += int(abs(st.shadow_offset[0]) + abs(st.shadow_offset[1]) + 3 * st.shadow_blur) + 2
    cw, ch = int(x1 - x0) + 2 * pad, int(y1 - y0) + 2 * pad
    at = (pad - x0, pad - y0)
    fill_img = Image.new("L", (cw, ch), 0)
    ImageDraw.Draw(fill_img).text(at, word.text, font=font, fill=255, anchor="la")
    effect_img: Image.Image | None = None
    if st.effect == "outline":
        effect_img = Image.new("L", (cw, ch), 0)
        ImageDraw.Draw(effect_img).text(
            at, word.text, font=font, fill=255, anchor="la", stroke_width=st.stroke, stroke_fill=255
        )
    elif st.effect == "shadow":
        effect_img = Image.new("L", (cw, ch), 0)
        dx, dy = st.shadow_offset
        ImageDraw.Draw(effect_img).text((at[0] + dx, at[1] + dy), word.text, font=font, fill=255, anchor="la")
        if st.shadow_blur > 0:
            effect_img = effect_img.filter(ImageFilter.GaussianBlur(st.shadow_blur))
    # canvas -> block: the canvas's (0, 0) sits at origin + (x0 - pad, y0 - pad)
    hw = block_h @ _translate(word.origin[0] + x0 - pad, word.origin[1] + y0 - pad)
    corners = _apply(hw, np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float64))
    px0, py0 = max(0, math.floor(corners[:, 0].min())), max(0, math.floor(corners[:, 1].min()))
    px1, py1 = min(w, math.ceil(corners[:, 0].max())), min(h, math.ceil(corners[:, 1].max()))
    word.patch = (px0, py0, px1, py1)
    if px1 <= px0 or py1 <= py0:
        word.fill_alpha = np.zeros((0, 0), np.float32)
        word.effect_alpha = None
        word.quad = None
        return
    inv = np.linalg.inv(hw) @ _translate(px0, py0)
    inv = inv / inv[2, 2]
    coeffs = tuple(inv.flatten()[:8])
    size = (px1 - px0, py1 - py0)

    def warp(im: Image.Image) -> np.ndarray:
        warped = im.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
        return np.asarray(warped, np.float32) / 255.0

    word.fill_alpha = warp(fill_img)
    word.effect_alpha = warp(effect_img) if effect_img is not None else None
    ink = (
        fill_img
        if effect_img is None
        else Image.fromarray(np.maximum(np.asarray(fill_img), np.asarray(effect_img)))
    )
    bbox = ink.getbbox()
    if bbox is None:
        word.quad = None
    else:
        bx0, by0, bx1, by1 = bbox
        word.quad = _apply(hw, np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]], np.float64))


def _contrasting_colour(
    rng: np.random.Generator, bg_mean: np.ndarray, min_contrast: float = 90.0
) -> np.ndarray:
    lum = float(bg_mean @ np.array([0.299, 0.587, 0.114]))
    for _ in range(20):
        c = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:  # often near-black or near-white text
            c = np.full(3, rng.uniform(0, 50) if lum > 128 else rng.uniform(205, 255)) + rng.uniform(
                -10, 10, 3
            )
            c = np.clip(c, 0, 255)
        if abs(float(c @ np.array([0.299, 0.587, 0.114])) - lum) > min_contrast:
            return c
    return np.full(3, 0.0 if lum > 128 else 255.0)


def _block_style(rng: np.random.Generator, cfg: SyntheticConfig) -> _Style:
    """A text block's font, size and effect (its colours are chosen later, against the background)."""
    font_path = _pick_font(rng, cfg.font_paths)
    lo, hi = cfg.font_size_range
    size = max(8, int(round(cfg.size[1] * float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))))
    effect = "none"
    r = rng.random()
    if r < cfg.outline_prob:
        effect = "outline"
    elif r < cfg.outline_prob + cfg.shadow_prob:
        effect = "shadow"
    stroke = max(1, round(size * rng.uniform(0.04, 0.09))) if effect == "outline" else 0
    off = max(1, round(size * rng.uniform(0.04, 0.1)))
    return _Style(
        font_path=font_path,
        font_size=size,
        fill=np.zeros(3),
        effect=effect,
        effect_colour=np.zeros(3),
        stroke=stroke,
        shadow_offset=(int(off * rng.choice([-1, 1])), off),
        shadow_blur=float(rng.uniform(0, 2.5)),
    )


def _block_lines(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    n_lines: int,
    font: Any,
    charset: frozenset[str],
    stroke: int,
) -> list[list[tuple[str, float]]]:
    """Up to ``n_lines`` lines of random words the font can render, each word with its width in pixels."""
    lines: list[list[tuple[str, float]]] = []
    for _ in range(n_lines):
        line: list[tuple[str, float]] = []
        for _ in range(int(rng.integers(1, cfg.max_words_per_line + 1))):
            for _attempt in range(5):
                word = _fit_word(_random_word(rng), charset)
                if word:
                    break
            if word:
                line.append((word, font.getlength(word) + 2 * stroke))
        if line:
            lines.append(line)
    return lines


def _layout_block(
    rng: np.random.Generator, cfg: SyntheticConfig, charsets: dict[str, frozenset[str]]
) -> tuple[list[_Word], float, float, _Style] | None:
    style = _block_style(rng, cfg)
    stroke = style.stroke
    font = _font(style.font_path, style.font_size)
    ascent, descent = font.getmetrics()
    line_h = (ascent + descent + 2 * stroke) * rng.uniform(1.0, 1.35)
    space = font.getlength(" ") * rng.uniform(1.0, 1.8) + 2 * stroke + 2
    if cfg.max_lines > 3:
        n_lines = int(rng.integers(1, cfg.max_lines + 1))
    else:
        n_lines = min(int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])), cfg.max_lines)
    centred = rng.random() < 0.4
    lines = _block_lines(rng, cfg, n_lines, font, charsets[style.font_path], stroke)
    if not lines:
        return None
    widths = [sum(wd for _, wd in line) + space * (len(line) - 1) for line in lines]
    block_w = max(widths)
    if block_w > 0.95 * cfg.size[0]:
        return None
    words: list[_Word] = []
    for li, (line, lw) in enumerate(zip(lines, widths, strict=True)):
        x = (block_w - lw) / 2 if centred else 0.0
        y = li * line_h
        for text, wd in line:
            words.append(_Word(text=text, origin=(x + stroke, y + stroke), style=style))
            x += wd + space
    block_h = (len(lines) - 1) * line_h + ascent + descent + 2 * stroke
    return words, block_w, block_h, style


def _block_transform(rng: np.random.Generator, cfg: SyntheticConfig, bw: float, bh: float) -> np.ndarray:
    rect = np.array([[0, 0], [bw, 0], [bw, bh], [0, bh]], np.float64)
    hmat = np.eye(3)
    if rng.random() < cfg.perspective_prob:
        jitter = rng.uniform(-cfg.perspective_strength, cfg.perspective_strength, (4, 2)) * [bw, bh]
        jitter *= [1.0, min(1.0, 4 * bh / max(bw, 1))]  # keep wide blocks from folding vertically
        hmat = _homography(rect, rect + jitter)
    if rng.random() < cfg.rotate_prob:
        theta = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    else:
        theta = math.radians(rng.uniform(-3, 3))
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
    centre = _translate(bw / 2, bh / 2)
    return centre @ rot @ np.linalg.inv(centre) @ hmat


def _composite(base: np.ndarray, words: Sequence[_Word]) -> np.ndarray:
    img = base.astype(np.float32)
    for wd in words:
        x0, y0, x1, y1 = wd.patch
        if wd.fill_alpha is None or wd.fill_alpha.size == 0:
            continue
        region = img[y0:y1, x0:x1]
        if wd.effect_alpha is not None:
            a = wd.effect_alpha[..., None]
            region = region * (1 - a) + wd.style.effect_colour.astype(np.float32) * a
        a = wd.fill_alpha[..., None]
        region = region * (1 - a) + wd.style.fill.astype(np.float32) * a
        img[y0:y1, x0:x1] = region
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _paint_max(canvas: np.ndarray, words: Sequence[_Word], attr: str) -> None:
    for wd in words:
        alpha = getattr(wd, attr)
        if alpha is None or alpha.size == 0:
            continue
        x0, y0, x1, y1 = wd.patch
        np.maximum(canvas[y0:y1, x0:x1], alpha, out=canvas[y0:y1, x0:x1])


def _support(words: Sequence[_Word], h: int, w: int) -> np.ndarray:
    sup = np.zeros((h, w), bool)
    for wd in words:
        if wd.fill_alpha is None or wd.fill_alpha.size == 0:
            continue
        x0, y0, x1, y1 = wd.patch
        a = wd.fill_alpha > 0
        if wd.effect_alpha is not None:
            a |= wd.effect_alpha > 0
        sup[y0:y1, x0:x1] |= a
    return sup


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


# --------------------------------------------------------------------------------------------------------
# One render
# --------------------------------------------------------------------------------------------------------


def _place_text(
    rng: np.random.Generator, cfg: SyntheticConfig, charsets: dict[str, frozenset[str]], scene: np.ndarray
) -> list[_Word]:
    """Lay out text blocks and place them on ``scene`` without overlap; returns the rendered words."""
    h, w = scene.shape[:2]
    words: list[_Word] = []
    taken: list[tuple[float, float, float, float]] = []
    n_blocks = int(rng.integers(cfg.min_blocks, cfg.max_blocks + 1))
    for _ in range(n_blocks * 3):
        if len(taken) >= n_blocks:
            break
        laid = _layout_block(rng, cfg, charsets)
        if laid is None:
            continue
        block_words, bw, bh, style = laid
        local = _block_transform(rng, cfg, bw, bh)
        pad = (
            style.stroke
            + 4
            + (abs(style.shadow_offset[0]) + style.shadow_offset[1] + 8 if style.effect == "shadow" else 0)
        )
        corners = _apply(
            local, np.array([[-pad, -pad], [bw + pad, -pad], [bw + pad, bh + pad], [-pad, bh + pad]])
        )
        lo_xy, hi_xy = corners.min(0), corners.max(0)
        span = hi_xy - lo_xy
        if span[0] >= w - 2 or span[1] >= h - 2:
            continue
        placed = None
        for _try in range(10):
            tx = rng.uniform(-lo_xy[0] + 1, w - 1 - hi_xy[0])
            ty = rng.uniform(-lo_xy[1] + 1, h - 1 - hi_xy[1])
            box = (lo_xy[0] + tx, lo_xy[1] + ty, hi_xy[0] + tx, hi_xy[1] + ty)
            if all(box[2] < t[0] or box[0] > t[2] or box[3] < t[1] or box[1] > t[3] for t in taken):
                placed = (tx, ty, box)
                break
        if placed is None:
            continue
        tx, ty, box = placed
        taken.append(box)
        x0, y0, x1, y1 = (int(v) for v in box)
        bg_mean = scene[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1].reshape(-1, 3).mean(0)
        style.fill = _contrasting_colour(rng, bg_mean, cfg.min_text_contrast)
        if style.effect == "outline":
            style.effect_colour = _contrasting_colour(rng, style.fill)
        elif style.effect == "shadow":
            style.effect_colour = np.clip(bg_mean * rng.uniform(0.1, 0.5), 0, 255)
        block_h = _translate(tx, ty) @ local
        for wd in block_words:
            _render_word(wd, block_h, w, h)
            wd.block = block_h
        words.extend(wd for wd in block_words if wd.fill_alpha is not None and wd.fill_alpha.size)
    return words


def render_sample(index: int, seed: int = 0, config: SyntheticConfig | None = None) -> SyntheticSample:
    """Render sample ``index`` of ``seed``: a pure function of ``(seed, index, config)``."""
    cfg = config or SyntheticConfig()
    if cfg.font_paths is None or cfg.photo_paths is None or cfg.forgery_methods is None:
        cfg = cfg.resolved()
    rng = np.random.default_rng([seed, index])
    charsets = {p: font_charset(p) for p in cfg.font_paths}
    document = bool(rng.random() < cfg.document_prob)
    scene = _background(rng, cfg, document)
    words = _place_text(rng, _document_layout(cfg) if document else cfg, charsets, scene)
    # one camera for the text image and its text-free background: the same light, blur and noise
    gray = bool(rng.random() < 0.5) if document else None
    (image, background), _gray = photograph(rng, [_composite(scene, words), scene], cfg.camera, gray=gray)
    fill, effect = _alpha_maps(words, cfg.size)
    _separate_glyphs(image, background, fill >= 0.5)
    changed = (image != background).any(-1)
    tampered, boxes, meta = _tamper(rng, cfg, image, background, words, charsets, changed)
    return SyntheticSample(
        name=f"syn{seed}_{index:07d}",
        image=image,
        background=background,
        text_mask=_removal_mask(words, cfg.size, changed),
        stroke_label=_stroke_label(fill, effect, changed, cfg.ignore_soft_edges),
        tampered=tampered,
        tamper_boxes=boxes,
        words=meta,
    )


def _alpha_maps(words: list[_Word], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The words' glyph-fill and effect (outline, shadow) coverage, float32 ``(h, w)`` in [0, 1]."""
    w, h = size
    fill = np.zeros((h, w), np.float32)
    effect = np.zeros((h, w), np.float32)
    _paint_max(fill, words, "fill_alpha")
    _paint_max(effect, words, "effect_alpha")
    return fill, effect


def _separate_glyphs(image: np.ndarray, background: np.ndarray, glyph: np.ndarray) -> None:
    """Glyph pixels must differ from the background: where the text colour happens to equal it (rare), nudge the
    text pixel visibly (in place)."""
    same = glyph & (image == background).all(-1)
    if same.any():
        bgv = background[same].astype(np.int16)
        image[same] = np.where(bgv > 127, bgv - 24, bgv + 24).astype(np.uint8)


def _removal_mask(words: list[_Word], size: tuple[int, int], changed: np.ndarray) -> np.ndarray:
    """Text removal's region: the ink quads of every word, plus every changed pixel (JPEG blocks around the text
    included)."""
    quad_img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(quad_img)
    for wd in words:
        if wd.quad is not None:
            draw.polygon([tuple(p) for p in wd.quad], fill=255)
    return (np.asarray(quad_img) > 0) | changed


def _stroke_label(
    fill: np.ndarray, effect: np.ndarray, changed: np.ndarray, ignore_soft_edges: bool
) -> np.ndarray:
    """The TextSeg label: text on glyph pixels, word effect on outlines and shadows, ignore on soft glyph rims."""
    stroke_label = np.zeros(fill.shape, np.uint8)
    stroke_label[(effect >= 0.5) & changed] = TEXTSEG_WORD_EFFECT
    if ignore_soft_edges:
        stroke_label[(fill > 0) & (fill < 0.5) & changed] = TEXTSEG_IGNORE
    stroke_label[fill >= 0.5] = TEXTSEG_TEXT
    return stroke_label


#: A forged pixel counts as changed when a channel moved by more than this (finer edits are invisible).
FORGERY_CHANGE_THRESHOLD = 4


def _tamper(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    image: np.ndarray,
    background: np.ndarray,
    words: list[_Word],
    charsets: dict[str, frozenset[str]],
    text_changed: np.ndarray,
) -> tuple[np.ndarray, list[TamperBox], list[dict[str, Any]]]:
    """Forge some words of ``image`` with the config's methods; label each forged word by the box of the pixels it
    changed (a forgery that changed nothing visible leaves the word real). Returns the forged image (saved again as
    JPEG with ``resave_prob``), the Tampered-IC13 boxes (real first) and per-word metadata."""
    h, w = image.shape[:2]
    supports = [_support([wd], h, w) for wd in words]
    ink_boxes = [_bbox(support) for support in supports]
    forged = image.copy()
    edits: dict[
        int, tuple[str, str, np.ndarray]
    ] = {}  # word -> (method, new text, region the forger touched)
    for i in _words_to_forge(rng, cfg, len(words)):
        edit = _forge_word(rng, cfg, forged, image, background, words, i, supports[i], ink_boxes, charsets)
        if edit is not None:
            forged, edits[i] = edit
    boxes, meta = _label_words(forged, image, words, supports, text_changed, edits)
    if (image[..., :1] == image).all():  # a forger editing a grayscale picture saves a grayscale picture
        forged = to_gray(forged)
    if rng.random() < cfg.resave_prob:
        forged = jpeg(forged, int(rng.integers(*cfg.camera.jpeg_quality)))
    return forged, boxes, meta


def _words_to_forge(rng: np.random.Generator, cfg: SyntheticConfig, count: int) -> list[int]:
    """Which of ``count`` words to forge (none with ``no_tamper_prob``), in order."""
    if not count or rng.random() < cfg.no_tamper_prob:
        return []
    k = max(1, int(round(count * rng.uniform(*cfg.tamper_word_fraction))))
    k = min(k, cfg.max_tampered_words)
    return sorted(int(i) for i in rng.choice(count, size=min(k, count), replace=False))


def _forge_word(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    forged: np.ndarray,
    image: np.ndarray,
    background: np.ndarray,
    words: list[_Word],
    index: int,
    support: np.ndarray,
    ink_boxes: list[tuple[int, int, int, int] | None],
    charsets: dict[str, frozenset[str]],
) -> tuple[np.ndarray, tuple[str, str, np.ndarray]] | None:
    """Forge word ``index`` of ``forged`` by a method drawn from the config, at a random strength: its ink erased,
    new text put in its place, the forger's traces left. Returns the new image and ``(method, new text, touched
    region)``, or None when the method found nothing to use."""
    method = cfg.forgery_methods[int(rng.integers(len(cfg.forgery_methods)))]
    strength = float(rng.uniform(*cfg.forgery_strength))
    old = words[index]
    hole = dilate(support, max(1, round(old.style.font_size * 0.06)))
    erased = _erase(rng, forged, background, hole, strength)
    if method == "edit":
        edit = _retype(rng, cfg, erased, old, image, charsets)
    elif method == "copy-move":
        donors = [
            (wd, box) for j, (wd, box) in enumerate(zip(words, ink_boxes)) if j != index and box is not None
        ]
        edit = _copy_move(rng, erased, image, donors, ink_boxes[index])
    else:
        edit = _splice(rng, cfg, erased, old, charsets, strength)
    if edit is None:
        return None
    new_text, edited, touched = edit
    region = hole | touched
    return leave_traces(rng, forged, edited, region, strength), (method, new_text, region)


def _label_words(
    forged: np.ndarray,
    image: np.ndarray,
    words: list[_Word],
    supports: list[np.ndarray],
    text_changed: np.ndarray,
    edits: dict[int, tuple[str, str, np.ndarray]],
) -> tuple[list[TamperBox], list[dict[str, Any]]]:
    """The Tampered-IC13 boxes (real first, so tampered ones win where they overlap) and per-word metadata. A forged
    word's box covers the pixels its forgery changed visibly; a word whose forgery changed none stays real."""
    diff = np.abs(forged.astype(np.int16) - image.astype(np.int16)).max(-1) > FORGERY_CHANGE_THRESHOLD
    real_boxes: list[TamperBox] = []
    fake_boxes: list[TamperBox] = []
    meta: list[dict[str, Any]] = []
    for i, wd in enumerate(words):
        method, new_text, region = edits.get(i, (None, None, None))
        forged_box = _bbox(diff & dilate(region, TRACE_REACH)) if region is not None else None
        if forged_box is not None:
            fake_boxes.append(TamperBox(*forged_box, 2))
        else:
            method = new_text = None
            real_box = _bbox(supports[i] & text_changed)
            if real_box is not None:
                real_boxes.append(TamperBox(*real_box, 1))
        meta.append(
            {
                "text": wd.text,
                "replacement": new_text,
                "method": method,
                "font": os.path.basename(wd.style.font_path),
                "size": wd.style.font_size,
                "effect": wd.style.effect,
            }
        )
    return real_boxes + fake_boxes, meta


def _erase(
    rng: np.random.Generator, image: np.ndarray, background: np.ndarray, hole: np.ndarray, strength: float
) -> np.ndarray:
    """Remove a word: mostly by inpainting (smooth, texture-less), sometimes from a clean plate of the scene with
    some of the old ink left as residue."""
    if rng.random() < 0.65:
        return inpaint(image, hole, rng)
    residue = rng.uniform(0, 0.35) * strength
    plate = background.astype(np.float32) * (1 - residue) + image.astype(np.float32) * residue
    return paste(image, np.clip(np.rint(plate), 0, 255).astype(np.uint8), feather(hole, 1.0) * hole)


def _apparent_colour(image: np.ndarray, word: _Word) -> np.ndarray:
    """The colour a word's fill has in the photographed image (what a forger would pick)."""
    x0, y0, x1, y1 = word.patch
    weights = word.fill_alpha**4  # mostly the stroke cores, where the background does not bleed in
    if weights.sum() < 1e-3:
        return word.style.fill
    return (image[y0:y1, x0:x1].astype(np.float32) * weights[..., None]).sum((0, 1)) / weights.sum()


def _similar_word(
    rng: np.random.Generator,
    font_path: str,
    size: int,
    target_length: float,
    charset: frozenset[str],
    avoid: str,
) -> str | None:
    """A different word that is about ``target_length`` px long in this font (a forger keeps the layout)."""
    font = _font(font_path, size)
    for _attempt in range(24):
        text = _fit_word(_random_word(rng), charset)
        if (
            text
            and text != avoid
            and abs(math.log(max(font.getlength(text), 1.0) / target_length)) < math.log(1.3)
        ):
            return text
    return None


def _retype(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    erased: np.ndarray,
    old: _Word,
    image: np.ndarray,
    charsets: dict[str, frozenset[str]],
) -> tuple[str, np.ndarray, np.ndarray] | None:
    """Edit-network style: a new word in a near-matching style (the same or another font, the apparent colour
    with an error, a size off by a few percent) at the old word's place and geometry, drawn on the erased image."""
    h, w = image.shape[:2]
    font_path = old.style.font_path if rng.random() < 0.6 else _pick_font(rng, cfg.font_paths)
    size = max(8, int(round(old.style.font_size * rng.uniform(0.93, 1.07))))
    old_length = max(_font(old.style.font_path, old.style.font_size).getlength(old.text), 1.0)
    text = _similar_word(rng, font_path, size, old_length, charsets[font_path], old.text)
    if text is None:
        return None
    colour = np.clip(_apparent_colour(image, old) + rng.normal(0, 8, 3), 0, 255)
    new = _Word(
        text=text,
        origin=old.origin,
        style=replace(old.style, font_path=font_path, font_size=size, fill=colour),
    )
    _render_word(new, old.block, w, h)
    if new.fill_alpha is None or not new.fill_alpha.size:
        return None
    return text, _composite(erased, [new]), dilate(_support([new], h, w), 1)


def _rect(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[box[1] : box[3] + 1, box[0] : box[2] + 1] = True
    return mask


def _grown_box(box: tuple[int, int, int, int], margin: int, h: int, w: int) -> tuple[int, int, int, int]:
    """``box`` (inclusive x0, y0, x1, y1) grown by ``margin`` on every side, clipped to the image."""
    return (
        max(0, box[0] - margin),
        max(0, box[1] - margin),
        min(w - 1, box[2] + margin),
        min(h - 1, box[3] + margin),
    )


def _copy_move(
    rng: np.random.Generator,
    erased: np.ndarray,
    image: np.ndarray,
    donors: Sequence[tuple[_Word, tuple[int, int, int, int]]],
    target_box: tuple[int, int, int, int] | None,
) -> tuple[str, np.ndarray, np.ndarray] | None:
    """Copy-move: another word of the same image (given with its ink box), with its surroundings, pasted over the
    erased target word (whose ink box is ``target_box``)."""
    h, w = image.shape[:2]
    if not donors or target_box is None:
        return None
    donor, donor_box = donors[int(rng.integers(len(donors)))]
    sx0, sy0, sx1, sy1 = _grown_box(donor_box, max(2, donor.style.font_size // 6), h, w)
    pw, ph = sx1 - sx0 + 1, sy1 - sy0 + 1
    cx, cy = (target_box[0] + target_box[2]) // 2, (target_box[1] + target_box[3]) // 2
    dx0 = int(np.clip(cx - pw // 2 + rng.integers(-2, 3), 0, w - pw))
    dy0 = int(np.clip(cy - ph // 2 + rng.integers(-2, 3), 0, h - ph))
    moved = erased.copy()
    moved[dy0 : dy0 + ph, dx0 : dx0 + pw] = image[sy0 : sy1 + 1, sx0 : sx1 + 1]
    region = _rect(h, w, (dx0, dy0, dx0 + pw - 1, dy0 + ph - 1))
    return donor.text, paste(erased, moved, feather(region, rng.uniform(0, 1.5)) * region), region


def _splice(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    erased: np.ndarray,
    target: _Word,
    charsets: dict[str, frozenset[str]],
    strength: float,
) -> tuple[str, np.ndarray, np.ndarray] | None:
    """Splicing: a word cut out of another photograph (its own light, noise and compression; its background blended
    toward this one's by less the stronger the forgery) pasted over the erased target word."""
    h, w = erased.shape[:2]
    donor_scene = _background(rng, cfg, document=False).astype(np.float32)
    mix = 0.75 * strength  # how much of the other photograph's background comes along
    donor_scene = erased * (1 - mix) + donor_scene * mix
    donor_scene = np.clip(np.rint(donor_scene), 0, 255).astype(np.uint8)
    font_path = _pick_font(rng, cfg.font_paths)
    size = max(8, int(round(target.style.font_size * rng.uniform(0.85, 1.15))))
    old_length = max(_font(target.style.font_path, target.style.font_size).getlength(target.text), 1.0)
    text = _similar_word(rng, font_path, size, old_length, charsets[font_path], target.text)
    if text is None:
        return None
    x0, y0, x1, y1 = target.patch
    fill = _contrasting_colour(rng, donor_scene[y0:y1, x0:x1].reshape(-1, 3).mean(0))
    word = _Word(
        text=text,
        origin=target.origin,
        style=replace(target.style, font_path=font_path, font_size=size, fill=fill, effect="none"),
    )
    _render_word(word, target.block, w, h)
    box = _bbox(_support([word, target], h, w))
    if box is None:
        return None
    (donor,), _gray = photograph(rng, [_composite(donor_scene, [word])], cfg.camera)
    region = _rect(h, w, _grown_box(box, max(2, size // 5), h, w))
    return text, paste(erased, donor, feather(region, rng.uniform(0, 1.5)) * region), region


def iter_samples(
    num: int, seed: int = 0, config: SyntheticConfig | None = None, start: int = 0
) -> Iterator[SyntheticSample]:
    """Render samples ``start .. start + num - 1`` one after the other in this process."""
    cfg = (config or SyntheticConfig()).resolved()
    for i in range(start, start + num):
        yield render_sample(i, seed, cfg)


# --------------------------------------------------------------------------------------------------------
# Writing the folder layouts
# --------------------------------------------------------------------------------------------------------


def _save_png(array: np.ndarray, path: Path, compress_level: int) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=compress_level)


def _prepare_dirs(out: Path, tasks: Sequence[str], split: str) -> None:
    if TEXT_REMOVAL in tasks:
        for sub in ("image", "label", "mask"):
            (out / get_task(TEXT_REMOVAL).dataset / split / sub).mkdir(parents=True, exist_ok=True)
    if TEXT_SEGMENTATION in tasks:
        for sub in ("image", "semantic_label"):
            (out / get_task(TEXT_SEGMENTATION).dataset / sub).mkdir(parents=True, exist_ok=True)
    if TAMPERED_TEXT_DETECTION in tasks:
        for sub in (f"{split}_img", f"{split}_gt"):
            (out / get_task(TAMPERED_TEXT_DETECTION).dataset / sub).mkdir(parents=True, exist_ok=True)


def _write_sample(
    sample: SyntheticSample, out: Path, tasks: Sequence[str], split: str, compress: int
) -> None:
    name = sample.name
    if TEXT_REMOVAL in tasks:
        base = out / get_task(TEXT_REMOVAL).dataset / split
        _save_png(sample.image, base / "image" / f"{name}.png", compress)
        _save_png(sample.background, base / "label" / f"{name}.png", compress)
        # the preprocessed SCUT-EnsText convention: text regions black on white
        _save_png(
            np.where(sample.text_mask, 0, 255).astype(np.uint8), base / "mask" / f"{name}.png", compress
        )
    if TEXT_SEGMENTATION in tasks:
        base = out / get_task(TEXT_SEGMENTATION).dataset
        _save_png(sample.image, base / "image" / f"{name}.png", compress)
        _save_png(sample.stroke_label, base / "semantic_label" / f"{name}_maskfg.png", compress)
    if TAMPERED_TEXT_DETECTION in tasks:
        base = out / get_task(TAMPERED_TEXT_DETECTION).dataset
        _save_png(sample.tampered, base / f"{split}_img" / f"{name}.png", compress)
        lines = [f"{b.x1},{b.y1},{b.x2},{b.y2},{b.label}" for b in sample.tamper_boxes]
        (base / f"{split}_gt" / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


_WORKER_STATE: dict[str, Any] = {}


def _worker_init(
    cfg: SyntheticConfig, seed: int, out: str, tasks: tuple[str, ...], split: str, compress: int
) -> None:
    _WORKER_STATE.update(cfg=cfg, seed=seed, out=Path(out), tasks=tasks, split=split, compress=compress)


def _worker_render(index: int) -> str:
    st = _WORKER_STATE
    sample = render_sample(index, st["seed"], st["cfg"])
    _write_sample(sample, st["out"], st["tasks"], st["split"], st["compress"])
    return sample.name


def generate_folders(
    out: str | os.PathLike[str],
    num: int,
    *,
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    tasks: Sequence[str] = DEFAULT_TASKS,
    num_workers: int = 1,
    config: SyntheticConfig | None = None,
    split: str = "train",
    start: int = 0,
    png_compress_level: int = 1,
    progress: bool = False,
    look: str | None = None,
) -> dict[str, Path]:
    """Render ``num`` samples (indices ``start ..``) and write them into the real layouts under ``out``.

    Sample names are ``syn{seed}_{index:07d}``, so runs with other seeds or index ranges can share ``out``
    (the TextSeg ``split.json`` is merged). Each layout root's ``SYNTHETIC_RECORD`` lists the runs written into
    it (``look``: the name of the `LOOKS` entry `config` was made from, if any), so that an evaluation on the
    folder says it is synthetic instead of passing for the real dataset whose layout it borrows. ``num_workers > 1`` renders in a process pool; the files are
    identical for any worker count. Returns ``{task: layout root}``.
    """
    unknown = [t for t in tasks if t not in DEFAULT_TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {DEFAULT_TASKS}")
    size_wh = (size, size) if isinstance(size, int) else tuple(size)
    cfg = replace(config or SyntheticConfig(), size=size_wh).resolved()
    out_path = Path(out)
    _prepare_dirs(out_path, tasks, split)
    init_args = (cfg, seed, str(out_path), tuple(tasks), split, png_compress_level)
    indices = range(start, start + num)
    names: list[str] = []
    t0 = time.perf_counter()
    if num_workers <= 1:
        _worker_init(*init_args)
        for k, i in enumerate(indices):
            names.append(_worker_render(i))
            if progress and (k + 1) % 50 == 0:
                print(f"{k + 1}/{num} samples, {(k + 1) / (time.perf_counter() - t0):.2f}/s", file=sys.stderr)
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(num_workers, initializer=_worker_init, initargs=init_args) as pool:
            for k, name in enumerate(pool.imap(_worker_render, indices, chunksize=4)):
                names.append(name)
                if progress and (k + 1) % 50 == 0:
                    print(
                        f"{k + 1}/{num} samples, {(k + 1) / (time.perf_counter() - t0):.2f}/s",
                        file=sys.stderr,
                    )
    roots = {t: out_path / get_task(t).dataset for t in tasks}
    run = {
        "split": split,
        "seed": seed,
        "start": start,
        "num": num,
        "size": list(size_wh),
        "style": cfg.style,
    }
    for root in roots.values():
        record_synthetic_run(root, {**run, **({"look": look} if look else {})})
    if TEXT_SEGMENTATION in tasks:
        split_file = roots[TEXT_SEGMENTATION] / "split.json"
        split_map: dict[str, list[str]] = json.loads(split_file.read_text()) if split_file.is_file() else {}
        merged = sorted(set(split_map.get(split, [])) | set(names))
        split_map[split] = merged
        split_file.write_text(json.dumps(split_map, indent=0))
    return roots


#: The file in a layout root that says the folder is synthetic: ``{"generator": ..., "runs": [{split, seed, ...}]}``.
SYNTHETIC_RECORD = "synthetic.json"


def record_synthetic_run(root: str | os.PathLike[str], run: dict[str, Any]) -> None:
    """Add `run` (split, seed, start, num, size, style, look) to `root`'s `SYNTHETIC_RECORD` (the same run again
    replaces itself)."""
    path = Path(root) / SYNTHETIC_RECORD
    record = (
        json.loads(path.read_text())
        if path.is_file()
        else {"generator": "upocr_hf.data.synthetic", "runs": []}
    )
    record["runs"] = [r for r in record["runs"] if r != run] + [run]
    path.write_text(json.dumps(record, indent=1) + "\n")


def describe_synthetic_split(root: str | os.PathLike[str], split: str) -> str | None:
    """One line naming a synthetic folder's `split` (``None`` for a folder the generator did not write):
    "synthetic (upocr_hf.data.synthetic): 150 images 512×512, look photos, held-out style, seed 11"."""
    path = Path(root) / SYNTHETIC_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    runs = [r for r in record["runs"] if r["split"] == split]
    parts = [
        f"{r['num']} images {r['size'][0]}×{r['size'][1]}"
        + (f", look {r['look']}" if r.get("look") else "")
        + f", {r['style']} style, seed {r['seed']}"
        for r in runs
    ]
    return f"synthetic ({record['generator']}): " + "; ".join(parts or ["no run of this split"])


def load_synthetic_folders(
    out: str | os.PathLike[str],
    tasks: Sequence[str] = DEFAULT_TASKS,
    split: str = "train",
    **loader_kwargs: Any,
) -> dict[str, Any]:
    """Load what :func:`generate_folders` wrote with the real-dataset loaders: ``{task: Dataset}``."""
    from .folders import load_task_dataset

    out_path = Path(out)
    return {
        t: load_task_dataset(t, out_path / get_task(t).dataset, [split], **loader_kwargs)[split]
        for t in tasks
    }


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------


def _parse_tasks(values: Sequence[str]) -> list[str]:
    tasks = []
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "all":
                tasks.extend(DEFAULT_TASKS)
                continue
            try:
                tasks.append(resolve_task(item, DEFAULT_TASKS))
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None
    return list(dict.fromkeys(tasks))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m upocr_hf.data.synthetic``: render synthetic data into the real datasets' layouts."""
    parser = module_parser("upocr_hf.data.synthetic", __doc__)
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument(
        "--size", type=int, nargs="+", default=[512], help="side, or width height (default 512)"
    )
    parser.add_argument("--out", required=True, help="output folder (layouts go in sub-folders)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first sample index (to extend a run)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["all"],
        help="tasks: all, removal, segmentation, tampered (or the task ids), comma/space separated",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--split", default="train")
    parser.add_argument("--fonts", nargs="*", default=None, help="font files or folders (default: discover)")
    parser.add_argument("--no-photos", action="store_true", help="procedural backgrounds only")
    parser.add_argument(
        "--style",
        choices=STYLES,
        default="all",
        help="fonts, photographs and forgery methods: the training style, the held-out one, or all",
    )
    parser.add_argument(
        "--look",
        choices=sorted(LOOKS),
        default="training",
        help="how scenes look: the training generator's defaults, or 'photos' (users' photos: larger text, "
        "denser words, lighter camera)",
    )
    parser.add_argument("--png-compress", type=int, default=1, help="PNG compress level 0-9")
    parser.add_argument(
        "--save-to-disk",
        default=None,
        help="also load the folders and save one datasets DatasetDict per task under this folder",
    )
    args = parser.parse_args(argv)
    try:
        tasks = _parse_tasks(args.tasks)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if len(args.size) not in (1, 2):
        parser.error("--size takes one value (square) or two (width height)")
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    cfg = SyntheticConfig(style=args.style, **LOOKS[args.look])
    if args.fonts is not None:
        paths: list[str] = []
        for f in args.fonts:
            p = Path(f)
            paths.extend(
                sorted(str(x) for x in p.rglob("*") if x.suffix.lower() in (".ttf", ".otf"))
                if p.is_dir()
                else [f]
            )
        cfg = replace(cfg, font_paths=tuple(p for p in paths if len(font_charset(p)) >= len(REQUIRED_CHARS)))
    if args.no_photos:
        cfg = replace(cfg, photo_paths=())
    t0 = time.perf_counter()
    roots = generate_folders(
        args.out,
        args.num,
        size=size,
        seed=args.seed,
        tasks=tasks,
        num_workers=args.workers,
        config=cfg,
        split=args.split,
        start=args.start,
        png_compress_level=args.png_compress,
        progress=True,
        look=args.look,
    )
    dt = time.perf_counter() - t0
    print(f"wrote {args.num} samples ({', '.join(tasks)}) in {dt:.1f} s ({args.num / dt:.2f}/s)")
    for task, root in roots.items():
        print(f"  {task}: {root}")
    if args.save_to_disk:
        import tempfile

        from datasets import DatasetDict

        # convert through a throw-away cache: save_to_disk copies the rows into its own files
        with tempfile.TemporaryDirectory(prefix="upocr_synthetic_") as cache:
            datasets = load_synthetic_folders(args.out, tasks, args.split, cache_dir=cache)
            for task, ds in datasets.items():
                target = Path(args.save_to_disk) / task
                DatasetDict({args.split: ds}).save_to_disk(str(target))
                print(f"  saved {task} ({len(ds)} rows) to {target}")
            del datasets
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
