"""Procedural synthetic faces with label maps, written in the Face Synthetics layout.

Each frame is drawn from its own generator seeded with ``(seed, index)``, so a frame's bytes depend only on
those two numbers: generating in one run, in several runs (``start``) or with worker processes gives
identical files. Shapes are drawn in a face frame (face half-width 1, y down) and mapped to pixels by a
random similarity transform; inner features get a yaw-like horizontal warp.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from facenas.data.classes import CLASS_NAMES
from facenas.errors import DatasetError

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]

MIN_SIZE: Final[int] = 32
PNG_COMPRESS_LEVEL: Final[int] = 1

_L = {name: index for index, name in enumerate(CLASS_NAMES)}
_SKIN_TONES: Final = np.array(
    [(255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 96), (141, 85, 54), (90, 56, 38)],
    dtype=np.float32,
)
_HAIR_COLOURS: Final = np.array(
    [(30, 25, 22), (70, 45, 30), (115, 80, 50), (205, 170, 110), (150, 65, 35), (165, 165, 165)],
    dtype=np.float32,
)
_IRIS_COLOURS: Final = np.array(
    [(90, 55, 30), (60, 100, 150), (70, 110, 60), (120, 95, 50)], dtype=np.float32
)
_GLASSES_COLOURS: Final = np.array(
    [(20, 20, 20), (120, 90, 40), (170, 170, 175), (110, 20, 20)], dtype=np.float32
)
_LIP_RED: Final = np.array((180, 70, 80), dtype=np.float32)
_MOUTH: Final = np.array((90, 25, 30), dtype=np.float32)
_TEETH_COLOUR: Final = np.array((235, 230, 210), dtype=np.float32)

# Detail ids are drawn into a second map and recolour pixels only where the label allows them.
_IRIS, _PUPIL, _TEETH, _STRAND, _NOSTRIL, _STRIPE, _GLINT = 1, 2, 3, 4, 5, 6, 7
_CLUTTER0: Final[int] = 16
_DETAIL_BASE: Final[int] = 32  # palette slot of detail id 0
_LIGHT_GRID: Final[int] = 16
_DETAIL_LABELS: Final[dict[int, tuple[str, ...]]] = {
    _IRIS: ("right_eye", "left_eye"),
    _PUPIL: ("right_eye", "left_eye"),
    _GLINT: ("right_eye", "left_eye"),
    _TEETH: ("mouth_interior",),
    _STRAND: ("hair", "beard"),
    _NOSTRIL: ("nose",),
    _STRIPE: ("clothing", "headwear"),
}


def _detail_mask() -> npt.NDArray[np.bool_]:
    allowed = np.zeros((256, len(CLASS_NAMES)), dtype=bool)
    for ident, names in _DETAIL_LABELS.items():
        allowed[ident, [_L[name] for name in names]] = True
    allowed[_CLUTTER0:, _L["background"]] = True
    return allowed


_ALLOWED: Final = _detail_mask()


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 28, t0: float = 0.0, t1: float = 2 * math.pi
) -> Points:
    """Points on an ellipse (an arc from ``t0`` to ``t1`` when it is not a full turn)."""
    full = t1 - t0 >= 2 * math.pi - 1e-9
    t = np.linspace(t0, t1, n, endpoint=not full)
    return np.column_stack((cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _pts(*xy: tuple[float, float]) -> Points:
    return np.array(xy, dtype=np.float64)


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


@dataclass(frozen=True)
class _Pose:
    """Face frame -> pixels: rotation ``angle``, scale ``scale`` px per unit, centre ``(cx, cy)``, ``yaw``."""

    cx: float
    cy: float
    scale: float
    angle: float
    yaw: float


class _Canvas:
    """Label map and detail map drawn with shapes given in face coordinates."""

    def __init__(self, size: int, pose: _Pose) -> None:
        self.pose = pose
        self.labels = Image.new("L", (size, size), 0)
        self.details = Image.new("L", (size, size), 0)
        self._draw = {False: ImageDraw.Draw(self.labels), True: ImageDraw.Draw(self.details)}
        self._cos, self._sin = math.cos(pose.angle), math.sin(pose.angle)

    def warp(self, pts: Points) -> Points:
        """Yaw-like warp of inner features: shift towards ``yaw`` and compress the far side."""
        yaw, x = self.pose.yaw, pts[:, 0]
        return np.column_stack((0.3 * yaw + x * (1.0 - 0.45 * yaw * np.sign(x)), pts[:, 1]))

    def _px(self, pts: Points, warp: bool) -> list[float]:
        p = self.pose
        x, y = (self.warp(pts) if warp else pts).T
        px = p.cx + p.scale * (self._cos * x - self._sin * y)
        py = p.cy + p.scale * (self._sin * x + self._cos * y)
        flat: list[float] = np.column_stack((px, py)).ravel().tolist()
        return flat

    def fill(self, pts: Points, value: int, *, warp: bool = False, detail: bool = False) -> None:
        self._draw[detail].polygon(self._px(pts, warp), fill=value)

    def stroke(
        self, pts: Points, value: int, width: float, *, warp: bool = False, detail: bool = False
    ) -> None:
        px = self._px(pts, warp)
        pixels = max(1, round(width * self.pose.scale))
        self._draw[detail].line(px, fill=value, width=pixels, joint="curve")


@dataclass(frozen=True)
class _Layout:
    """Random proportions of one face, in face units."""

    face_ry: float
    jaw: float
    eye_dx: float
    eye_y: float
    eye_rx: float
    eye_ry: float
    brow_gap: float
    mouth_y: float
    mouth_w: float
    mouth_open: float
    neck_w: float
    neck_bottom: float

    @staticmethod
    def sample(rng: np.random.Generator) -> _Layout:
        open_mouth = rng.random() < 0.5
        return _Layout(
            face_ry=_u(rng, 1.2, 1.45),
            jaw=_u(rng, 0.05, 0.3),
            eye_dx=_u(rng, 0.36, 0.46),
            eye_y=_u(rng, -0.22, -0.08),
            eye_rx=_u(rng, 0.15, 0.21),
            eye_ry=_u(rng, 0.06, 0.1),
            brow_gap=_u(rng, 0.17, 0.3),
            mouth_y=_u(rng, 0.58, 0.75),
            mouth_w=_u(rng, 0.28, 0.42),
            mouth_open=_u(rng, 0.05, 0.16) if open_mouth else _u(rng, 0.0, 0.03),
            neck_w=_u(rng, 0.42, 0.6),
            neck_bottom=_u(rng, 1.5, 1.95),
        )


def _face_outline(lay: _Layout, grow: float = 1.0, n: int = 40) -> Points:
    """Egg-shaped head outline: the lower half narrows towards the chin by ``lay.jaw``."""
    pts = _ellipse(0.0, 0.0, grow, lay.face_ry * grow, n)
    lower = np.clip(pts[:, 1] / (lay.face_ry * grow), 0.0, 1.0)
    pts[:, 0] *= 1.0 - lay.jaw * lower**2
    return pts


def _draw_body(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    """Clothing (shoulders, optional V-neck) and the neck over it."""
    nb, nw, sw = lay.neck_bottom, lay.neck_w, _u(rng, 1.8, 2.6)
    shoulders = _pts(
        (-sw - 1.5, nb + 1.3), (-sw, nb + 0.35), (-nw - 0.4, nb), (nw + 0.4, nb), (sw, nb + 0.35),
        (sw + 1.5, nb + 1.3), (sw + 1.5, 9.0), (-sw - 1.5, 9.0),
    )  # fmt: skip
    c.fill(shoulders, _L["clothing"])
    if rng.random() < 0.5:
        c.stroke(_pts((-sw, nb + 0.8), (sw, nb + 0.8)), _STRIPE, _u(rng, 0.08, 0.25), detail=True)
    vneck = _u(rng, 0.0, 0.6)
    neck = _pts((-nw, 0.6), (nw, 0.6), (nw + 0.05, nb), (0.0, nb + vneck), (-nw - 0.05, nb))
    c.fill(neck, _L["neck"])


def _draw_back_hair(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    """Hair behind the head: a volume around the skull, sometimes long down to the shoulders."""
    rx, ry = _u(rng, 1.12, 1.3), lay.face_ry + _u(rng, 0.05, 0.2)
    c.fill(_ellipse(0.0, -0.12, rx, ry), _L["hair"])
    if rng.random() < 0.5:
        length = _u(rng, 1.2, 2.3)
        c.fill(_pts((-rx, -0.1), (rx, -0.1), (rx * 0.95, length), (-rx * 0.95, length)), _L["hair"])


def _draw_ears(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    """Ears at the sides; the one on the far side of the yaw shrinks or hides."""
    ry, ey = lay.face_ry * _u(rng, 0.18, 0.24), _u(rng, -0.15, 0.05)
    for label, side in (("right_ear", -1.0), ("left_ear", 1.0)):
        visible = 1.0 - 2.2 * c.pose.yaw * side
        if visible < 0.3:
            continue
        rx = 0.17 * min(visible, 1.3)
        cx = side * (0.97 + 0.5 * rx)
        c.fill(_ellipse(cx, ey, rx, ry, 20), _L[label])


def _draw_head(c: _Canvas, lay: _Layout, rng: np.random.Generator, hair: str) -> None:
    """Skin, beard and the hair cap with its hairline."""
    c.fill(_face_outline(lay), _L["skin"])
    if rng.random() < 0.3:
        _draw_beard(c, lay, rng)
    if hair != "bald":
        _draw_hair_cap(c, lay, rng)


def _draw_beard(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    """A full beard along the jaw or a goatee; the mouth is drawn over it later."""
    outline = _face_outline(lay, 1.03, 48)
    mouth, w = lay.mouth_y, lay.mouth_w
    if rng.random() < 0.6:  # full beard along the jaw
        lower = outline[outline[:, 1] > _u(rng, 0.0, 0.3)]
        top = _pts((-0.75, 0.25), (-w - 0.05, mouth - 0.15), (0.0, mouth - 0.2), (w + 0.05, mouth - 0.15))
    else:  # goatee around the chin
        lower = outline[(outline[:, 1] > mouth + 0.1) & (np.abs(outline[:, 0]) < w + 0.1)]
        top = _pts((-w, mouth + 0.05), (0.0, mouth - 0.18), (w, mouth + 0.05))
    lower = lower[np.argsort(-lower[:, 0])]  # right to left along the jaw, then back over the top
    c.fill(np.vstack((lower, top)), _L["beard"])
    for _ in range(12):
        x, y = _u(rng, -0.7, 0.7), _u(rng, mouth, lay.face_ry)
        c.stroke(_pts((x, y), (x + _u(rng, -0.1, 0.1), y + 0.15)), _STRAND, 0.02, detail=True)


def _draw_hair_cap(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    """Hair over the skull down to a jittered hairline, with sideburns and strands."""
    grow, line = _u(rng, 1.04, 1.12), _u(rng, -1.0, -0.6)
    side = _u(rng, 0.05, 0.35)
    arc = _ellipse(0.0, 0.0, grow, lay.face_ry * grow, 24, math.pi - 0.2, 2 * math.pi + 0.2)
    jitter = rng.uniform(-0.06, 0.06, 5)
    hairline = _pts(
        (0.98, side), (0.72, line + 0.2 + jitter[0]), (0.35, line + jitter[1]), (0.0, line + jitter[2]),
        (-0.35, line + jitter[3]), (-0.72, line + 0.2 + jitter[4]), (-0.98, side),
    )  # fmt: skip
    c.fill(np.vstack((arc, hairline)), _L["hair"])
    for _ in range(16):
        x = _u(rng, -0.9, 0.9)
        top = -lay.face_ry * grow * math.sqrt(max(0.0, 1 - (x / grow) ** 2))
        c.stroke(_pts((x, top), (x * 1.1, line + 0.1)), _STRAND, 0.025, detail=True)


def _draw_brows(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    y0, thick = lay.eye_y - lay.eye_ry - lay.brow_gap, _u(rng, 0.06, 0.11)
    arch, half, tilt = _u(rng, 0.02, 0.08), _u(rng, 0.22, 0.3), _u(rng, -0.06, 0.06)
    u = np.linspace(-1.0, 1.0, 9)
    for label, side in (("right_brow", -1.0), ("left_brow", 1.0)):
        x = side * lay.eye_dx + half * u
        y = y0 - arch * (1 - u**2) + side * tilt * u
        taper = thick * (1.0 - 0.4 * ((u * side + 1) / 2))
        pts = np.vstack((np.column_stack((x, y - taper)), np.column_stack((x, y))[::-1]))
        c.fill(pts, _L[label], warp=True)


def _draw_eyes(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    gaze_x, gaze_y = _u(rng, -0.4, 0.4) * lay.eye_rx, _u(rng, -0.2, 0.2) * lay.eye_ry
    iris = lay.eye_ry * _u(rng, 1.0, 1.3)
    for label, side in (("right_eye", -1.0), ("left_eye", 1.0)):
        cx = side * lay.eye_dx
        c.fill(_ellipse(cx, lay.eye_y, lay.eye_rx, lay.eye_ry, 24), _L[label], warp=True)
        ix, iy = cx + gaze_x, lay.eye_y + gaze_y
        c.fill(_ellipse(ix, iy, iris, iris, 16), _IRIS, warp=True, detail=True)
        c.fill(_ellipse(ix, iy, iris * 0.45, iris * 0.45, 12), _PUPIL, warp=True, detail=True)
        c.fill(
            _ellipse(ix + iris * 0.3, iy - iris * 0.3, iris * 0.18, iris * 0.18, 8),
            _GLINT,
            warp=True,
            detail=True,
        )


def _draw_nose(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    top, tip = lay.eye_y + _u(rng, -0.02, 0.08), lay.mouth_y - _u(rng, 0.22, 0.32)
    bridge, wing = _u(rng, 0.05, 0.09), _u(rng, 0.13, 0.2)
    shift = 0.15 * c.pose.yaw
    nose = _pts(
        (-bridge, top), (bridge, top), (wing + shift, tip - 0.02), (wing * 0.7 + shift, tip + 0.06),
        (shift, tip + 0.08), (-wing * 0.7 + shift, tip + 0.06), (-wing + shift, tip - 0.02),
    )  # fmt: skip
    c.fill(nose, _L["nose"], warp=True)
    for side in (-1.0, 1.0):
        nx = side * wing * 0.45 + shift
        c.fill(_ellipse(nx, tip + 0.03, wing * 0.22, 0.025, 10), _NOSTRIL, warp=True, detail=True)


def _draw_mouth(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    y, w, o = lay.mouth_y, lay.mouth_w, lay.mouth_open / 2
    tu, tb, smile = _u(rng, 0.05, 0.09), _u(rng, 0.07, 0.12), _u(rng, -0.05, 0.06)
    ends = ((-w, y - smile), (w, y - smile))
    upper_inner = ((0.6 * w, y - o), (0.0, y - o), (-0.6 * w, y - o))
    lower_inner = ((-0.6 * w, y + o), (0.0, y + o), (0.6 * w, y + o))
    c.fill(_pts(ends[0], *lower_inner, ends[1], *upper_inner), _L["mouth_interior"], warp=True)
    if o > 0.03:
        c.fill(_pts((-0.5 * w, y - o), (0.5 * w, y - o), (0.45 * w, y), (-0.45 * w, y)), _TEETH, detail=True)
    top_lip = _pts(
        ends[0], (-0.55 * w, y - o - tu), (-0.15 * w, y - o - tu), (0.0, y - o - 0.75 * tu),
        (0.15 * w, y - o - tu), (0.55 * w, y - o - tu), ends[1], *upper_inner,
    )  # fmt: skip
    c.fill(top_lip, _L["top_lip"], warp=True)
    bottom = ((0.55 * w, y + o + tb), (0.0, y + o + 1.1 * tb), (-0.55 * w, y + o + tb))
    c.fill(_pts(ends[0], *lower_inner, ends[1], *bottom), _L["bottom_lip"], warp=True)


def _draw_glasses(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    rx, ry = lay.eye_rx + _u(rng, 0.08, 0.14), lay.eye_ry + _u(rng, 0.08, 0.14)
    width, sun = _u(rng, 0.03, 0.06), rng.random() < 0.25
    label = _L["glasses"]
    for side in (-1.0, 1.0):
        lens = _ellipse(side * lay.eye_dx, lay.eye_y, rx, ry, 24)
        if sun:
            c.fill(lens, label, warp=True)
        c.stroke(np.vstack((lens, lens[:1])), label, width, warp=True)
        outer = side * (lay.eye_dx + rx)
        c.stroke(_pts((outer, lay.eye_y - 0.02), (side * 0.98, lay.eye_y + 0.02)), label, width, warp=True)
    inner = lay.eye_dx - rx
    c.stroke(_pts((-inner, lay.eye_y - 0.03), (inner, lay.eye_y - 0.03)), label, width, warp=True)


def _draw_headwear(c: _Canvas, lay: _Layout, rng: np.random.Generator) -> None:
    label, brim_y = _L["headwear"], -lay.face_ry * _u(rng, 0.35, 0.6)
    height = lay.face_ry * 1.15 + brim_y + _u(rng, 0.05, 0.3)  # the dome clears the hair
    dome = _ellipse(0.0, brim_y, _u(rng, 1.1, 1.25), height, 24, math.pi, 2 * math.pi)
    c.fill(dome, label)
    if rng.random() < 0.5:  # brimmed hat, otherwise a beanie with a band
        c.fill(_ellipse(_u(rng, -0.2, 0.2), brim_y, _u(rng, 1.4, 1.9), _u(rng, 0.1, 0.22)), label)
    else:
        c.stroke(_pts((-1.1, brim_y - 0.08), (1.1, brim_y - 0.08)), _STRIPE, 0.12, detail=True)


def _draw_clutter(c: _Canvas, rng: np.random.Generator) -> None:
    """Background shapes: they only recolour background pixels."""
    for ident in range(_CLUTTER0, _CLUTTER0 + int(rng.integers(2, 10))):
        cx, cy, r = _u(rng, -4.0, 4.0), _u(rng, -4.0, 4.0), _u(rng, 0.2, 1.5)
        if rng.random() < 0.5:
            c.fill(_ellipse(cx, cy, r, r * _u(rng, 0.3, 1.5), 16), ident, detail=True)
        else:
            c.stroke(_pts((cx, cy), (cx + _u(rng, -3, 3), cy + _u(rng, -3, 3))), ident, r * 0.3, detail=True)


def _sample_pose(rng: np.random.Generator, size: int) -> _Pose:
    return _Pose(
        cx=size * _u(rng, 0.4, 0.6),
        cy=size * _u(rng, 0.4, 0.55),
        scale=size * _u(rng, 0.16, 0.26),
        angle=math.radians(_u(rng, -25.0, 25.0)),
        yaw=_u(rng, -0.35, 0.35),
    )


def _draw_face(c: _Canvas, rng: np.random.Generator) -> None:
    """Draw every part in painter's order."""
    lay = _Layout.sample(rng)
    hair = str(rng.choice(["bald", "short", "long"], p=[0.12, 0.4, 0.48]))
    _draw_clutter(c, rng)
    hidden_ears = hair == "long" and rng.random() < 0.5
    if hidden_ears:
        _draw_ears(c, lay, rng)
    _draw_body(c, lay, rng)
    if hair == "long":
        _draw_back_hair(c, lay, rng)
    _draw_head(c, lay, rng, hair)
    if not hidden_ears:
        _draw_ears(c, lay, rng)
    for part in (_draw_brows, _draw_eyes, _draw_nose, _draw_mouth):
        part(c, lay, rng)
    if rng.random() < 0.3:
        _draw_glasses(c, lay, rng)
    if rng.random() < 0.25:
        _draw_headwear(c, lay, rng)


def _jitter(rng: np.random.Generator, colour: npt.ArrayLike, amount: float) -> FloatArray:
    base = np.asarray(colour, dtype=np.float32)
    return np.clip(base + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _skin_tone(rng: np.random.Generator) -> FloatArray:
    """A random point on the piecewise-linear skin-tone ramp, jittered."""
    t = _u(rng, 0.0, len(_SKIN_TONES) - 1.001)
    low, high = _SKIN_TONES[int(t)], _SKIN_TONES[int(t) + 1]
    return _jitter(rng, low + (t % 1) * (high - low), 8)


def _class_palette(rng: np.random.Generator) -> FloatArray:
    """One RGB colour per class, correlated with the class but varied per face."""
    skin = _skin_tone(rng)
    hair = _jitter(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 15)
    if rng.random() < 0.08:
        hair = rng.uniform(0, 255, 3).astype(np.float32)
    lips = _jitter(rng, skin + _u(rng, 0.35, 0.65) * (_LIP_RED - skin), 10)
    pal = np.zeros((len(CLASS_NAMES), 3), dtype=np.float32)
    for name, colour in (
        ("skin", skin), ("nose", skin * 0.92), ("right_ear", skin * 0.95 + [6, 0, 0]),
        ("left_ear", skin * 0.95 + [6, 0, 0]), ("neck", skin * 0.82), ("right_eye", _jitter(rng, 225, 12)),
        ("left_eye", _jitter(rng, 225, 12)), ("right_brow", hair * 0.8), ("left_brow", hair * 0.8),
        ("mouth_interior", _jitter(rng, _MOUTH, 15)), ("top_lip", lips),
        ("bottom_lip", lips * 1.07), ("hair", hair), ("beard", hair * 0.9),
        ("clothing", rng.uniform(0, 255, 3)), ("headwear", rng.uniform(0, 255, 3)),
        ("glasses", _jitter(rng, _GLASSES_COLOURS[rng.integers(len(_GLASSES_COLOURS))], 10)),
    ):  # fmt: skip
        pal[_L[name]] = np.clip(colour, 0, 255)
    return pal


def _detail_palette(rng: np.random.Generator, pal: FloatArray) -> FloatArray:
    det = rng.uniform(0, 255, (256 - _DETAIL_BASE, 3)).astype(np.float32)  # clutter: ids >= _CLUTTER0
    det[_IRIS] = _jitter(rng, _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 15)
    det[_PUPIL], det[_GLINT] = (15, 10, 10), (250, 250, 250)
    det[_TEETH] = _jitter(rng, _TEETH_COLOUR, 10)
    det[_STRAND] = np.clip(pal[_L["hair"]] * _u(rng, 0.6, 1.4), 0, 255)
    det[_NOSTRIL] = pal[_L["nose"]] * 0.45
    det[_STRIPE] = rng.uniform(0, 255, 3)
    return det


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A four-corner colour gradient."""
    corners = Image.fromarray(rng.uniform(0, 255, (2, 2, 3)).astype(np.uint8))
    return corners.resize((size, size), Image.Resampling.BILINEAR)


def _lighting(rng: np.random.Generator, size: int, pose: _Pose) -> FloatArray:
    """Directional ramp, a soft fall-off around the face and blotches, computed coarse and upsampled."""
    axis = np.linspace(-1.0, 1.0, _LIGHT_GRID, dtype=np.float32)
    x, y = axis[None, :], axis[:, None]
    phi, amp = _u(rng, 0, 2 * math.pi), _u(rng, 0.0, 0.35)
    light = 1.0 + amp * (x * math.cos(phi) + y * math.sin(phi))
    fx, fy, r = (2 * pose.cx / size - 1), (2 * pose.cy / size - 1), 2.8 * pose.scale / size
    light = light * (1.0 - _u(rng, 0.0, 0.25) * np.minimum(((x - fx) ** 2 + (y - fy) ** 2) / (r * r), 1.0))
    light = light * (1.0 + rng.normal(0.0, _u(rng, 0.0, 0.05), light.shape))
    coarse = Image.fromarray(light.astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))


def _palette(rng: np.random.Generator) -> list[int]:
    """PIL palette: class colours at the label values, detail colours at ``_DETAIL_BASE + id``."""
    pal = np.zeros((256, 3), dtype=np.float32)
    pal[: len(CLASS_NAMES)] = _class_palette(rng)
    pal[_DETAIL_BASE:] = _detail_palette(rng, pal[: len(CLASS_NAMES)])
    flat: list[int] = np.clip(pal, 0, 255).astype(np.uint8).ravel().tolist()
    return flat


def _compose(c: _Canvas, rng: np.random.Generator, size: int) -> UInt8Array:
    """Colour the label and detail maps, then light, blur and add noise."""
    lab, det = np.asarray(c.labels), np.asarray(c.details)
    keys = np.where(_ALLOWED[det, lab], det + np.uint8(_DETAIL_BASE), lab).astype(np.uint8)
    flat = Image.fromarray(keys)
    flat.putpalette(_palette(rng))
    image = _background(rng, size)
    image.paste(flat.convert("RGB"), mask=Image.fromarray((keys != 0).astype(np.uint8) * np.uint8(255)))
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    lit = np.asarray(image, dtype=np.float32) * (_lighting(rng, size, c.pose)[..., None] * tint)
    image = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))
    radius = _u(rng, 0.0, 1.5) if rng.random() < 0.7 else 0.0
    if radius > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    amp = int(rng.integers(1, 11))  # luminance noise: one draw per pixel keeps PNG writing fast
    noise = rng.integers(-amp, amp + 1, (size, size, 1), dtype=np.int16)
    noisy: UInt8Array = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return noisy


def render_face(rng: np.random.Generator, size: int) -> tuple[UInt8Array, UInt8Array]:
    """Render one face: an RGB image ``(size, size, 3)`` and its labels ``(size, size)``, both uint8.

    Labels are Face Synthetics classes ``0..NUM_CLASSES - 1`` (facewear is never drawn).
    """
    if size < MIN_SIZE:
        raise DatasetError(f"size must be >= {MIN_SIZE}, got {size}")
    canvas = _Canvas(size, _sample_pose(rng, size))
    _draw_face(canvas, rng)
    image = _compose(canvas, rng, size)
    return image, np.array(canvas.labels, dtype=np.uint8)


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of frame ``index``: it depends on ``(seed, index)`` only."""
    return np.random.default_rng([seed, index])


def _write_frames(out_dir: Path, indices: Sequence[int], size: int, seed: int) -> list[Path]:
    paths = []
    for index in indices:
        image, labels = render_face(frame_rng(seed, index), size)
        path = out_dir / f"{index:06d}.png"
        Image.fromarray(image).save(path, compress_level=PNG_COMPRESS_LEVEL)
        Image.fromarray(labels).save(out_dir / f"{index:06d}_seg.png", compress_level=PNG_COMPRESS_LEVEL)
        paths.append(path)
    return paths


def _check_args(count: int, size: int, seed: int, start: int, workers: int) -> None:
    for name, value, low in (("count", count, 0), ("size", size, MIN_SIZE), ("seed", seed, 0)):
        if value < low:
            raise DatasetError(f"{name} must be >= {low}, got {value}")
    if start < 0 or workers < 1:
        raise DatasetError(f"start must be >= 0 and workers >= 1, got start={start}, workers={workers}")


def generate_dataset(
    out_dir: str | os.PathLike[str],
    count: int,
    size: int = 256,
    seed: int = 0,
    start: int = 0,
    workers: int = 1,
) -> list[Path]:
    """Write frames ``start .. start + count - 1`` into ``out_dir``; return the image paths in order.

    Each frame is ``{i:06d}.png`` (RGB) and ``{i:06d}_seg.png`` (labels), as in Face Synthetics.
    """
    _check_args(count, size, seed, start, workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = list(range(start, start + count))
    workers = min(workers, max(count, 1))
    if workers == 1:
        return _write_frames(out, indices, size, seed)
    chunks = [indices[k::workers] for k in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_frames, [out] * workers, chunks, [size] * workers, [seed] * workers))
    return [out / f"{index:06d}.png" for index in indices]
