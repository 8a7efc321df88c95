"""A drawn avatar for VIDEO sessions: a friendly face whose mouth follows the OVR visemes.

`DrawnAvatar(avatar_id)` draws with Pillow: background, shoulders, head, hair, ears, eyes, brows,
nose, cheeks and a mouth shaped per viseme. Everything that makes one face differ from another
(skin, hair colour and style, background, shirt, eye colour, head width, glasses) comes from a
hash of `avatar_id`, so the same id always shows the same face, in every process. A face has only
15 visemes x 2 eye states = 30 distinct frames: each is drawn once (2x supersampled, then reduced
for smooth edges), encoded as JPEG and cached on the avatar; `drawn_avatar` shares avatars
between sessions.

Mouth shapes: "sil" rests in a slight smile, "PP" presses the lips together, "FF" shows the upper
teeth on the lower lip, "TH" the tongue between the teeth, "DD"/"nn"/"kk" a small to medium opening
with the tongue behind the upper teeth, "SS" and "ih" narrow with the teeth together, "E" wider,
"aa" wide open, "CH" and "RR" pushed forward, "oh" round and "ou" small and round.

`BlinkSchedule(seed)` says which frames show the eyes closed: a 150 ms blink every 3-6 s
(blink k starts at k x 4.5 s +/- 0.75 s, the offset drawn from a hash of the seed and k, so any
frame can be asked in any order).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import threading
from dataclasses import dataclass

from PIL import Image, ImageDraw

from parleyd.engine.visemes import VISEME_SET

SUPERSAMPLE = 2
JPEG_QUALITY = 80

_SKIN = ("#f6d3b3", "#eec19f", "#e0aa7e", "#c98e63", "#a9714c", "#8b5a3c", "#6c4430", "#f3c6a6")
_HAIR = (
    "#2b1d14",
    "#4a2f1d",
    "#7a4b2a",
    "#b5773c",
    "#dbb36f",
    "#9b9b9b",
    "#1f1f2e",
    "#8c2f1b",
    "#5a3e7a",
    "#2f6f6f",
)
_BACKGROUND = (
    "#cfe3f7",
    "#f7e1cf",
    "#dff2d8",
    "#efd9f2",
    "#f9f1c8",
    "#d8eef0",
    "#f2d3d8",
    "#e4e4ec",
)
_SHIRT = ("#3b6ea5", "#a53b3b", "#3ba56a", "#a58a3b", "#6a3ba5", "#3b3b3b", "#d97a2b", "#2b8fd9")
_IRIS = ("#4a3020", "#2f5f8a", "#3f7a4a", "#6b5a3a", "#333333", "#5b4a8a")
_HAIR_STYLES = ("short", "long", "bun", "curly", "bald", "spiky")

_MOUTH_DARK = (70, 22, 30)
_TEETH = (250, 250, 245)
_TONGUE = (214, 96, 110)


@dataclass(frozen=True, slots=True)
class MouthShape:
    """Sizes as fractions of the resting mouth width."""

    width: float  # corner to corner
    top: float = 0.0  # opening above the lip line
    bottom: float = 0.0  # opening below it
    upper_teeth: bool = False
    lower_teeth: bool = False
    tongue: float = 0.0  # 0 none; fraction of the opening height the tongue fills from below
    tongue_out: bool = False  # between the teeth (TH)
    smile: float = 0.0  # corner lift when closed
    pressed: bool = False  # lips pressed together (PP)
    lip_bite: bool = False  # upper teeth on the lower lip (FF)


MOUTHS: dict[str, MouthShape] = {
    "sil": MouthShape(1.0, smile=0.06),
    "PP": MouthShape(0.88, pressed=True),
    "FF": MouthShape(0.95, top=0.07, bottom=0.05, upper_teeth=True, lip_bite=True),
    "TH": MouthShape(0.95, top=0.09, bottom=0.11, upper_teeth=True, tongue=0.6, tongue_out=True),
    "DD": MouthShape(1.0, top=0.09, bottom=0.16, upper_teeth=True, tongue=0.45),
    "kk": MouthShape(1.0, top=0.11, bottom=0.24, upper_teeth=True, tongue=0.35),
    "CH": MouthShape(0.74, top=0.13, bottom=0.16, upper_teeth=True, lower_teeth=True),
    "SS": MouthShape(1.06, top=0.06, bottom=0.07, upper_teeth=True, lower_teeth=True),
    "nn": MouthShape(0.96, top=0.07, bottom=0.13, upper_teeth=True, tongue=0.5),
    "RR": MouthShape(0.7, top=0.12, bottom=0.17, upper_teeth=True, tongue=0.3),
    "aa": MouthShape(1.12, top=0.17, bottom=0.46, upper_teeth=True, tongue=0.3),
    "E": MouthShape(1.16, top=0.13, bottom=0.25, upper_teeth=True, tongue=0.25),
    "ih": MouthShape(1.16, top=0.08, bottom=0.13, upper_teeth=True, lower_teeth=True),
    "oh": MouthShape(0.68, top=0.24, bottom=0.33, tongue=0.25),
    "ou": MouthShape(0.46, top=0.15, bottom=0.18),
}


def _pick(digest: bytes, index: int, options: tuple[str, ...]) -> str:
    return options[digest[index] % len(options)]


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = colour
    return (
        max(0, min(255, round(r * factor))),
        max(0, min(255, round(g * factor))),
        max(0, min(255, round(b * factor))),
    )


@dataclass(frozen=True, slots=True)
class Look:
    """What makes one face differ from another, derived from the avatar id."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    shirt: tuple[int, int, int]
    iris: tuple[int, int, int]
    hair_style: str
    head_width: float  # x the base head width
    eye_spacing: float
    glasses: bool

    @classmethod
    def for_id(cls, avatar_id: str) -> Look:
        d = hashlib.blake2b(avatar_id.encode("utf-8", errors="replace"), digest_size=16).digest()
        return cls(
            skin=_rgb(_pick(d, 0, _SKIN)),
            hair=_rgb(_pick(d, 1, _HAIR)),
            background=_rgb(_pick(d, 2, _BACKGROUND)),
            shirt=_rgb(_pick(d, 3, _SHIRT)),
            iris=_rgb(_pick(d, 4, _IRIS)),
            hair_style=_pick(d, 5, _HAIR_STYLES),
            head_width=0.9 + (d[6] / 255) * 0.16,
            eye_spacing=0.85 + (d[7] / 255) * 0.25,
            glasses=d[8] % 5 == 0,
        )


Box = tuple[int, int, int, int]


class DrawnAvatar:
    """`AvatarRenderer` drawing a face with Pillow; frames are JPEG bytes, cached per
    (viseme, eyes_closed)."""

    def __init__(self, avatar_id: str, width: int = 320, height: int = 240, fps: int = 15) -> None:
        if width < 32 or height < 32:
            raise ValueError("avatar frames must be at least 32x32")
        self.avatar_id = avatar_id
        self.width = width
        self.height = height
        self.fps = fps
        self.look = Look.for_id(avatar_id)
        self._s = min(width / 320, height / 240)  # layout scale at output resolution
        self._cx = width / 2
        self._cy = height * 0.5
        self._frames: dict[tuple[str, bool], bytes] = {}
        self._lock = threading.Lock()
        self._bases: tuple[Image.Image, Image.Image] | None = None

    # Layout, in output pixels.
    @property
    def mouth_box(self) -> Box:
        """Where the mouth is drawn (all shapes fit inside)."""
        s, cx, my = self._s, self._cx, self._mouth_y
        half = 40 * s
        return self._clamp((cx - half, my - 18 * s, cx + half, my + 32 * s))

    @property
    def eye_box(self) -> Box:
        """Where both eyes (and brows) are drawn."""
        s, cx, ey = self._s, self._cx, self._eye_y
        half = (29 * self.look.eye_spacing + 20) * s
        return self._clamp((cx - half, ey - 26 * s, cx + half, ey + 16 * s))

    def _clamp(self, box: tuple[float, float, float, float]) -> Box:
        x0, y0, x1, y1 = box
        return (
            max(0, math.floor(x0)),
            max(0, math.floor(y0)),
            min(self.width, math.ceil(x1)),
            min(self.height, math.ceil(y1)),
        )

    @property
    def _mouth_y(self) -> float:
        return self._cy + 42 * self._s

    @property
    def _eye_y(self) -> float:
        return self._cy - 6 * self._s

    def frame(self, viseme: str, *, eyes_closed: bool) -> bytes:
        key = (viseme if viseme in VISEME_SET else "sil", bool(eyes_closed))
        cached = self._frames.get(key)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._frames.get(key)
            if cached is None:
                cached = self._frames[key] = self._encode(self.image(*key))
        return cached

    def image(self, viseme: str, eyes_closed: bool) -> Image.Image:
        """The face as an RGB image of width x height."""
        k = SUPERSAMPLE
        big_base, small_base = self._base()
        big = big_base.copy()
        self._draw_eyes(ImageDraw.Draw(big), k, eyes_closed)
        self._draw_mouth(big, k, MOUTHS.get(viseme, MOUTHS["sil"]))
        small = small_base.copy()
        # Only the eyes and the mouth change: reduce just those regions of the big drawing.
        for x0, y0, x1, y1 in (self.eye_box, self.mouth_box):
            region = big.crop((x0 * k, y0 * k, x1 * k, y1 * k))
            small.paste(region.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), (x0, y0))
        return small

    def _base(self) -> tuple[Image.Image, Image.Image]:
        """Everything but the eyes and the mouth, supersampled and at output size."""
        if self._bases is None:
            k = SUPERSAMPLE
            big = Image.new("RGB", (self.width * k, self.height * k), self.look.background)
            draw = ImageDraw.Draw(big)
            self._draw_body(draw, k)
            self._draw_hair_back(draw, k)
            self._draw_head(draw, k)
            self._draw_hair_front(draw, k)
            self._draw_nose_and_cheeks(big, k)
            small = big.resize((self.width, self.height), Image.Resampling.LANCZOS)
            self._bases = (big, small)
        return self._bases

    @staticmethod
    def _encode(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()

    # -- parts (coordinates in supersampled pixels: output px x k) ------------------------------

    def _u(self, k: int) -> float:
        return self._s * k

    def _head_box(self, k: int) -> tuple[float, float, float, float]:
        u = self._u(k)
        cx, cy = self._cx * k, self._cy * k
        rx, ry = 60 * u * self.look.head_width, 76 * u
        return (cx - rx, cy - ry, cx + rx, cy + ry)

    def _draw_body(self, draw: ImageDraw.ImageDraw, k: int) -> None:
        u, cx, h = self._u(k), self._cx * k, self.height * k
        skin = self.look.skin
        draw.rectangle(
            (cx - 20 * u, self._cy * k + 50 * u, cx + 20 * u, h), fill=_shade(skin, 0.88)
        )
        draw.ellipse((cx - 130 * u, h - 42 * u, cx + 130 * u, h + 110 * u), fill=self.look.shirt)
        draw.pieslice(
            (cx - 26 * u, h - 60 * u, cx + 26 * u, h - 14 * u),
            0,
            180,
            fill=_shade(skin, 0.88),
        )

    def _draw_hair_back(self, draw: ImageDraw.ImageDraw, k: int) -> None:
        x0, y0, x1, y1 = self._head_box(k)
        u, hair, style = self._u(k), self.look.hair, self.look.hair_style
        if style == "long":
            draw.rounded_rectangle(
                (x0 - 12 * u, y0 - 6 * u, x1 + 12 * u, y1 + 30 * u), radius=60 * u, fill=hair
            )
        elif style == "bun":
            cx = (x0 + x1) / 2
            draw.ellipse((cx - 30 * u, y0 - 36 * u, cx + 30 * u, y0 + 20 * u), fill=hair)
        elif style == "curly":
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            for i in range(9):
                a = math.pi * (i / 8)
                px = cx - math.cos(a) * rx * 1.02
                py = cy - 0.3 * ry - math.sin(a) * ry * 0.72
                draw.ellipse((px - 21 * u, py - 21 * u, px + 21 * u, py + 21 * u), fill=hair)
        # ears sit between the back hair and the head
        ey = (y0 + y1) / 2 + 4 * u
        ear = _shade(self.look.skin, 0.93)
        draw.ellipse((x0 - 12 * u, ey - 16 * u, x0 + 12 * u, ey + 16 * u), fill=ear)
        draw.ellipse((x1 - 12 * u, ey - 16 * u, x1 + 12 * u, ey + 16 * u), fill=ear)

    def _draw_head(self, draw: ImageDraw.ImageDraw, k: int) -> None:
        draw.ellipse(self._head_box(k), fill=self.look.skin)

    def _draw_hair_front(self, draw: ImageDraw.ImageDraw, k: int) -> None:
        x0, y0, x1, y1 = self._head_box(k)
        u, hair, style = self._u(k), self.look.hair, self.look.hair_style
        if style == "bald":
            return
        ry = (y1 - y0) / 2
        hairline = y0 + 0.5 * ry
        draw.chord((x0 - 2 * u, y0 - 6 * u, x1 + 2 * u, 2 * hairline - y0 + 6 * u), 180, 360, hair)
        if style == "spiky":
            for i in range(7):
                px = x0 + (x1 - x0) * (0.15 + 0.7 * i / 6)
                base = y0 + 12 * u
                draw.polygon(
                    [(px - 14 * u, base), (px + 14 * u, base), (px + 4 * u, y0 - 22 * u)], fill=hair
                )
        elif style in ("short", "bun", "long"):
            # a side fringe sweeping down to the left
            cx = (x0 + x1) / 2
            draw.chord((x0 + 2 * u, y0 + 6 * u, cx + 24 * u, hairline + 16 * u), 150, 330, hair)

    def _draw_eyes(self, draw: ImageDraw.ImageDraw, k: int, closed: bool) -> None:
        u = self._u(k)
        cx, ey = self._cx * k, self._eye_y * k
        dx = 29 * u * self.look.eye_spacing
        line = _shade(self.look.hair, 0.8)
        for side in (-1, 1):
            x = cx + side * dx
            brow_y = ey - (17 if not closed else 15) * u
            draw.line(
                [(x - 13 * u, brow_y + 2 * u), (x, brow_y - 2 * u), (x + 13 * u, brow_y + 1 * u)],
                fill=line,
                width=max(1, round(4 * u)),
                joint="curve",
            )
            if closed:
                draw.arc(
                    (x - 12 * u, ey - 8 * u, x + 12 * u, ey + 5 * u),
                    20,
                    160,
                    fill=_shade(self.look.skin, 0.42),
                    width=max(1, round(3 * u)),
                )
            else:
                draw.ellipse((x - 12 * u, ey - 9 * u, x + 12 * u, ey + 9 * u), fill=(255, 255, 255))
                draw.ellipse((x - 7 * u, ey - 7 * u, x + 7 * u, ey + 7 * u), fill=self.look.iris)
                draw.ellipse((x - 3.5 * u, ey - 3.5 * u, x + 3.5 * u, ey + 3.5 * u), (20, 20, 20))
                draw.ellipse((x - 1 * u, ey - 4 * u, x + 2 * u, ey - 1 * u), fill=(255, 255, 255))
                draw.arc(
                    (x - 12 * u, ey - 9 * u, x + 12 * u, ey + 9 * u),
                    190,
                    350,
                    fill=_shade(self.look.skin, 0.42),
                    width=max(1, round(2 * u)),
                )
            if self.look.glasses:
                draw.ellipse(
                    (x - 17 * u, ey - 13 * u, x + 17 * u, ey + 13 * u),
                    outline=(40, 40, 50),
                    width=max(1, round(2.5 * u)),
                )
        if self.look.glasses:
            draw.line(
                [(cx - dx + 17 * u, ey - 2 * u), (cx + dx - 17 * u, ey - 2 * u)],
                fill=(40, 40, 50),
                width=max(1, round(2.5 * u)),
            )

    def _draw_nose_and_cheeks(self, img: Image.Image, k: int) -> None:
        u = self._u(k)
        cx, cy = self._cx * k, self._cy * k
        overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
        od = ImageDraw.Draw(overlay)
        blush = (232, 112, 112, 60)
        for side in (-1, 1):
            x = cx + side * 40 * u * self.look.head_width
            od.ellipse((x - 13 * u, cy + 14 * u, x + 13 * u, cy + 28 * u), fill=blush)
        img.paste(overlay, (0, 0), overlay)
        draw = ImageDraw.Draw(img)
        draw.arc(
            (cx - 8 * u, cy + 6 * u, cx + 8 * u, cy + 22 * u),
            20,
            160,
            fill=_shade(self.look.skin, 0.7),
            width=max(1, round(3 * u)),
        )

    def _draw_mouth(self, img: Image.Image, k: int, shape: MouthShape) -> None:
        u = self._u(k)
        cx, my = self._cx * k, self._mouth_y * k
        base = 52 * u  # resting width
        half = base * shape.width / 2
        lip = _shade(self.look.skin, 0.62)
        lip = (min(255, lip[0] + 45), lip[1], lip[2])
        draw = ImageDraw.Draw(img)
        if shape.top <= 0 and shape.bottom <= 0:
            lift = base * shape.smile
            thick = max(1, round((5.5 if shape.pressed else 4) * u))
            pts = [
                (cx + half * t, my - lift * (abs(t) ** 2) + (0 if shape.pressed else lift * 0.3))
                for t in (i / 10 - 1 for i in range(21))
            ]
            draw.line(pts, fill=lip, width=thick, joint="curve")
            if shape.pressed:  # lips rolled in: a faint bulge above and below
                draw.arc(
                    (cx - half * 0.7, my - 6 * u, cx + half * 0.7, my + 9 * u),
                    20,
                    160,
                    fill=_shade(self.look.skin, 0.85),
                    width=max(1, round(2 * u)),
                )
            return
        top, bottom = base * shape.top, base * shape.bottom
        outline = []
        for i in range(41):
            a = math.pi * i / 40  # upper edge, right to left
            outline.append((cx + half * math.cos(a), my - top * math.sin(a) ** 0.85))
        for i in range(1, 40):
            a = math.pi + math.pi * i / 40  # lower edge, left to right
            outline.append((cx + half * math.cos(a), my + bottom * (-math.sin(a)) ** 0.85))
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).polygon(outline, fill=255)
        inside = Image.new("RGB", img.size, _MOUTH_DARK)
        idraw = ImageDraw.Draw(inside)
        height = top + bottom
        if shape.tongue > 0:
            tongue_top = my + bottom - height * shape.tongue
            if shape.tongue_out:
                tongue_top = my - height * 0.15
            idraw.ellipse(
                (cx - half * 0.6, tongue_top, cx + half * 0.6, my + bottom + height * 0.5),
                fill=_TONGUE,
            )
        if shape.upper_teeth:
            teeth_h = max(3 * u, min(top + 4 * u, height * 0.32))
            idraw.rectangle((cx - half, my - top - 2 * u, cx + half, my - top + teeth_h), _TEETH)
        if shape.lower_teeth:
            teeth_h = max(3 * u, height * 0.28)
            idraw.rectangle(
                (cx - half, my + bottom - teeth_h, cx + half, my + bottom + 2 * u), _TEETH
            )
        if shape.tongue_out:
            idraw.ellipse(
                (cx - half * 0.45, my - height * 0.05, cx + half * 0.45, my + height * 0.6),
                fill=_TONGUE,
            )
        img.paste(inside, (0, 0), mask)
        width = max(1, round(3.5 * u))
        draw.line([*outline, outline[0]], fill=lip, width=width, joint="curve")
        lower = [p for p in outline if p[1] > my + 0.5 * u]
        if len(lower) > 2:  # a fuller lower lip
            draw.line(
                [(x, y + 1.5 * u) for x, y in lower],
                fill=lip,
                width=max(1, round(4.5 * u)),
                joint="curve",
            )
        if shape.lip_bite:
            draw.line(
                [(cx - half * 0.8, my + bottom), (cx + half * 0.8, my + bottom)],
                fill=_TEETH,
                width=max(1, round(3 * u)),
            )


@functools.lru_cache(maxsize=64)
def drawn_avatar(avatar_id: str, width: int = 320, height: int = 240, fps: int = 15) -> DrawnAvatar:
    """A shared `DrawnAvatar` per id and size, so sessions with one avatar share its frames."""
    return DrawnAvatar(avatar_id, width, height, fps)


class BlinkSchedule:
    """Deterministic blinking: blink k (k >= 1) starts at k * PERIOD_MS +/- JITTER_MS and lasts
    BLINK_MS, so blinks are 3-6 s apart. Any frame can be asked, in any order."""

    PERIOD_MS = 4_500
    JITTER_MS = 750
    BLINK_MS = 150

    def __init__(self, seed: int, fps: int = 15) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.seed = seed
        self.fps = fps

    def start_ms(self, k: int) -> float:
        """When blink k starts."""
        d = hashlib.blake2b(f"{self.seed}:{k}".encode(), digest_size=8).digest()
        jitter = (int.from_bytes(d, "big") / 2**64) * 2 - 1
        return k * self.PERIOD_MS + jitter * self.JITTER_MS

    def closed_at(self, t_ms: float) -> bool:
        k = round(t_ms / self.PERIOD_MS)
        for j in (k - 1, k, k + 1):
            if j >= 1:
                start = self.start_ms(j)
                if start <= t_ms < start + self.BLINK_MS:
                    return True
        return False

    def eyes_closed(self, frame_index: int) -> bool:
        """Whether frame `frame_index` (at `fps`) shows the eyes closed."""
        return self.closed_at(frame_index * 1000 / self.fps)

    __call__ = eyes_closed


def blink(seed: int, frame_index: int, fps: int = 15) -> bool:
    """`BlinkSchedule(seed, fps).eyes_closed(frame_index)`: the engine's (seed, frame) hook."""
    return BlinkSchedule(seed, fps).eyes_closed(frame_index)


__all__ = ["MOUTHS", "BlinkSchedule", "DrawnAvatar", "Look", "MouthShape", "blink", "drawn_avatar"]
