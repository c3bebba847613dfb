"""Fonts and photographs for the synthetic generator, found on the local disk (nothing is downloaded), and their
split into a training style and a held-out style.

* Fonts: every Latin font under ``/usr/share/fonts`` (Debian's font packages: serif, sans, mono, display,
  handwriting...) plus fonts that installed Python packages ship (e.g. gradio's KaTeX fonts). A font must draw all
  capital letters as distinct glyphs. Families reserved for independent evaluations are never used (see
  :data:`RESERVED_NAME_PARTS`), even where installed.
* Photographs: the wallpapers and artwork of Debian's background packages (``/usr/share/backgrounds``,
  ``/usr/share/wallpapers``; one resolution per picture, pictures with logos or lettering left out) and
  scikit-image's bundled sample photos.
* Style split: fonts are grouped by family folder and photographs by picture; a fixed hash of the group's name puts
  about one group in five into the *held-out* style, which the training style never uses, so that figures measured
  on held-out data say how a model generalises to fonts and scenes it has not seen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFont

__all__ = [
    "FONT_DIRS",
    "RESERVED_NAME_PARTS",
    "STYLES",
    "WALLPAPER_DIRS",
    "available_fonts",
    "available_photos",
    "font_charset",
    "font_group",
    "load_photo",
    "photo_group",
    "style_split",
]

#: Folders searched for font files.
FONT_DIRS: tuple[str, ...] = ("/usr/share/fonts",)
#: Python packages whose shipped fonts are used (only installed ones are looked at).
FONT_PACKAGES: tuple[str, ...] = ("gradio", "matplotlib", "reportlab", "pygame", "kivy", "docutils")
#: Folders of Debian's wallpaper and artwork packages.
WALLPAPER_DIRS: tuple[str, ...] = ("/usr/share/backgrounds", "/usr/share/wallpapers")
#: Lower-case parts of a path that rule a font or picture out: families kept for independent evaluations
#: (URW base35 and its derivatives TeX Gyre and gsfonts, Liberation; the ukui and lomiri wallpapers), and artwork
#: that carries lettering (logos, boot and login screens) which would be unlabelled text.
RESERVED_NAME_PARTS: tuple[str, ...] = (
    "urw",
    "texgyre",
    "tex-gyre",
    "gsfonts",
    "nimbus",
    "c059",
    "p052",
    "z003",
    "d050000l",
    "standardsymbols",
    "liberation",
    "ukui",
    "lomiri",
)
_LETTERED_ARTWORK = ("logo", "lockscreen", "sddm", "plymouth", "grub", "login", "desktop-base")
#: scikit-image sample photos bundled in its wheel that contain no text (read from disk, never via pooch).
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
    "cell.png",
    "chessboard_RGB.png",
)
#: ``"train"``: the training style; ``"held-out"``: fonts, photographs (and a forgery method) training never sees;
#: ``"all"``: both.
STYLES: tuple[str, ...] = ("train", "held-out", "all")

REQUIRED_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CANDIDATE_CHARS = REQUIRED_CHARS + "abcdefghijklmnopqrstuvwxyz0123456789$%&-.,:!?'/()#@+"
_PHOTO_MAX_SIDE = 1024  # photographs are decoded at about this size: the generator's crops never need more


def _is_reserved(path: str | Path) -> bool:
    lowered = str(path).lower()
    return any(part in lowered for part in RESERVED_NAME_PARTS)


def _glyph_key(font: ImageFont.FreeTypeFont, ch: str) -> tuple[Any, ...]:
    mask = font.getmask(ch)
    return (mask.size, bytes(mask))


@lru_cache(maxsize=4096)
def font_charset(path: str) -> frozenset[str]:
    """Characters of ``CANDIDATE_CHARS`` that ``path`` draws as real, distinct glyphs (empty: not a text font)."""
    try:
        font = ImageFont.truetype(path, 24)
        notdef = _glyph_key(font, "\ue000")
        keys = {ch: _glyph_key(font, ch) for ch in CANDIDATE_CHARS}
    except (OSError, ValueError):
        return frozenset()
    good = {ch for ch, k in keys.items() if k != notdef and k[0][0] > 0 and k[0][1] > 0}
    letters = [keys[ch] for ch in REQUIRED_CHARS if ch in good]
    if len(set(letters)) < 20:  # glyphs missing or all alike: a symbol font
        return frozenset()
    return frozenset(good)


def _package_dirs() -> list[Path]:
    dirs = []
    for pkg in FONT_PACKAGES:
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


@lru_cache(maxsize=1)
def available_fonts() -> list[str]:
    """Usable Latin fonts on this machine, de-duplicated by content, sorted by path; reserved families excluded."""
    candidates: set[Path] = set()
    for base in [Path(d) for d in FONT_DIRS] + _package_dirs():
        if not base.is_dir():
            continue
        for root, _dirs, files in os.walk(base):
            candidates.update(Path(root) / f for f in files if f.lower().endswith((".ttf", ".otf")))
    seen: set[str] = set()
    fonts: list[str] = []
    for path in sorted(candidates):
        if _is_reserved(path):
            continue
        try:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
        except OSError:
            continue
        if digest not in seen and len(font_charset(str(path))) >= len(REQUIRED_CHARS):
            seen.add(digest)
            fonts.append(str(path))
    return fonts


def font_group(path: str) -> str:
    """A font's family folder (one Debian package, or one Python package's font folder)."""
    return Path(path).parent.name


_SIZE_SUFFIX = re.compile(r"[_-]?\d+x\d+([_-]portrait)?$", re.IGNORECASE)


def photo_group(path: str) -> str:
    """The picture a file shows: a KDE-style wallpaper folder's name, else the file name without size suffixes."""
    parts = Path(path).parts
    if "wallpapers" in parts and "contents" in parts:
        return parts[parts.index("contents") - 1]
    return _SIZE_SUFFIX.sub("", Path(path).stem)


def _lettered(path: Path) -> bool:
    lowered = str(path.resolve()).lower().replace("no-logo", "").replace("nologo", "")
    return any(part in lowered for part in _LETTERED_ARTWORK)


def _skimage_photos() -> list[str]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [str(data_dir / n) for n in SKIMAGE_PHOTOS if (data_dir / n).is_file()]


@lru_cache(maxsize=1)
def available_photos() -> list[str]:
    """Text-free photographs and artwork on this machine, one file per picture (the resolution nearest to
    1920×1080), sorted by path."""
    best: dict[str, tuple[float, str]] = {}
    for base in WALLPAPER_DIRS:
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base, followlinks=True):
            for name in files:
                path = Path(root) / name
                if (
                    path.suffix.lower() not in (".jpg", ".jpeg", ".png")
                    or _is_reserved(path)
                    or _lettered(path)
                ):
                    continue
                try:
                    with Image.open(path) as img:
                        w, h = img.size
                except OSError:
                    continue
                if min(w, h) < 480:
                    continue
                score = abs(np.log(w * h / (1920 * 1080)))
                group = photo_group(str(path))
                if group not in best or (score, str(path)) < best[group]:
                    best[group] = (score, str(path))
    return sorted({path for _score, path in best.values()} | set(_skimage_photos()))


def _held_out_key(key: str) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 5 == 0


def style_split(items: Sequence[str], style: str, group: Callable[[str], str]) -> tuple[str, ...]:
    """The ``items`` of ``style`` ("train", "held-out" or "all"), whole groups at a time. Where every group falls on
    one side (a machine with few resources), items are split one by one instead, so both styles are non-empty."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    if style == "all" or len(items) < 2:
        return tuple(items)
    held = [_held_out_key(group(item)) for item in items]
    if all(held) or not any(held):
        held = [_held_out_key(item) for item in items]
        if all(held) or not any(held):
            held = [i == 0 for i in range(len(items))]
    return tuple(item for item, h in zip(items, held, strict=True) if h == (style == "held-out"))


@lru_cache(maxsize=96)
def load_photo(path: str) -> np.ndarray:
    """An RGB photograph, decoded at about ``_PHOTO_MAX_SIDE`` px on its longer side."""
    with Image.open(path) as img:
        img.draft("RGB", (_PHOTO_MAX_SIDE, _PHOTO_MAX_SIDE))  # JPEG: decode at a reduced scale, much faster
        img = img.convert("RGB")
        factor = max(img.size) // _PHOTO_MAX_SIDE
        if factor >= 2:
            img = img.reduce(factor)
        return np.asarray(img)
