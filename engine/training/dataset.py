"""Training data: the built-in synthetic shapes dataset, or any folder of captioned images.

The synthetic images are drawn deterministically from a seed, so a run can be repeated
exactly and the evaluator knows the ground truth of every prompt it tries.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64

# Well separated in RGB so a pixel classifier can name them without doubt.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 130, 0),
    "yellow": (250, 225, 20),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (130, 40, 200),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring")
# The side of the shape's bounding box, in pixels of a 64 px image. A small star's points and a
# small ring's hole still span a few pixels (and four latent pixels) at 18.
SIZES = {"small": 18, "medium": 26, "large": 36}
POSITIONS = ("center", "left", "right", "top", "bottom")
MARGIN = 6  # the shape never comes closer to the edge than this, so the border is background

SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("medium", "modest", ""), "large": ("large", "big")}
POSITION_PHRASES = {
    "center": ("in the center", "in the middle", "centered"),
    "left": ("on the left", "at the left", "to the left"),
    "right": ("on the right", "at the right", "to the right"),
    "top": ("at the top", "near the top", "up top"),
    "bottom": ("at the bottom", "near the bottom", "down low"),
}
BACKGROUND_WORDS = ("background", "backdrop")

# Foreground-first and background-first phrasings, so the text encoder has to learn which
# colour word belongs to which noun rather than relying on word order.
TEMPLATES = (
    "{a} {size}{fg} {shape} on {b} {bg} background",
    "{fg} {shape} on {bg}",
    "{a} {fg} {shape} {pos}, {bg} {bgword}",
    "an image of {a} {size}{fg} {shape} against {b} {bg} {bgword}",
    "{size}{fg} {shape}, {bg} {bgword}",
    "a drawing of {a} {fg} {shape} {pos} on a plain {bg} background",
    "{fg} {shape} {pos}",
    "{b} {bg} {bgword} with {a} {size}{fg} {shape}",
    "{bg} {bgword}, {fg} {shape} {pos}",
    "on {b} {bg} background, {a} {size}{fg} {shape}",
    "a plain {bg} canvas with {a} {fg} {shape} {pos}",
    "{size}{fg} {shape} {pos} over {bg}",
    # what members type first, naming no background: without it "a red circle" read as the start of
    # "a red backdrop with …" and drew a red canvas (MODEL_CARD.md, fifth round)
    "{a} {size}{fg} {shape}",
)


@dataclass(frozen=True)
class Scene:
    shape: str
    fg: str
    bg: str
    size: str
    position: str
    dx: int = 0
    dy: int = 0

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.shape, self.fg, self.bg)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def caption(scene: Scene, rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    size = rng.choice(SIZE_WORDS[scene.size]) if rng.random() < 0.5 else ""
    size = f"{size} " if size else ""
    first = (size or scene.fg).split()[0]
    text = template.format(
        a=_article(first),
        b=_article(scene.bg),
        size=size,
        fg=scene.fg,
        shape=scene.shape,
        bg=scene.bg,
        bgword=rng.choice(BACKGROUND_WORDS),
        pos=rng.choice(POSITION_PHRASES[scene.position]),
    )
    return " ".join(text.split())


def vocabulary() -> list[str]:
    """Every word a synthetic caption can contain, each to become one token."""
    words: set[str] = set()
    parts = [*TEMPLATES, *COLOURS, *SHAPES, *BACKGROUND_WORDS, "a an"]
    parts += [w for ws in SIZE_WORDS.values() for w in ws]
    parts += [p for ps in POSITION_PHRASES.values() for p in ps]
    for part in parts:
        for word in part.replace(",", " ").split():
            if not word.startswith("{"):
                words.add(word.lower())
    return sorted(words)


def all_combos() -> list[tuple[str, str, str]]:
    return [(s, f, b) for s, f, b in itertools.product(SHAPES, COLOURS, COLOURS) if f != b]


def held_out_combos(count: int = 24) -> list[tuple[str, str, str]]:
    """(shape, fg, bg) triples never drawn for training: eval prompts describe unseen scenes.

    Fixed (not tied to the training seed) so every model is judged on the same cases, and
    balanced: each shape is held out in as many triples as the others (four of 24), and each
    colour as foreground three times and as background three times, so no shape or colour is
    judged more often than another and each still appears in many training triples.
    """
    colours = list(COLOURS)
    combos = []
    for k in range(count):
        fg = k % len(colours)
        bg = (fg + 1 + 2 * (k // len(colours))) % len(colours)
        combos.append((SHAPES[k % len(SHAPES)], colours[fg], colours[bg]))
    return sorted(combos)


def trained_combos() -> list[tuple[str, str, str]]:
    """Every triple the synthetic training set draws from."""
    held = set(held_out_combos())
    return [c for c in all_combos() if c not in held]


def trained_sample_combos(count: int = 24) -> list[tuple[str, str, str]]:
    """A fixed sample of trained triples, as many of each shape (four of 24): how well the model
    draws what it saw, judged as evenly as the held-out triples."""
    rng = random.Random("dreamgrid-trained-sample")
    per_shape = count // len(SHAPES)
    combos = trained_combos()
    return sorted(c for shape in SHAPES for c in rng.sample([c for c in combos if c[0] == shape], per_shape))


def _fit(points: list[tuple[float, float]], box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """`points` stretched so their bounding box is `box`: every shape fills its box alike."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / (max(xs) - min(xs)), (y1 - y0) / (max(ys) - min(ys))
    return [(x0 + (x - min(xs)) * sx, y0 + (y - min(ys)) * sy) for x, y in points]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    """A star's outline, one point straight up; `inner`: the notches' radius over the points'."""
    return [
        (
            (1 if k % 2 == 0 else inner) * math.sin(math.pi * k / points),
            -(1 if k % 2 == 0 else inner) * math.cos(math.pi * k / points),
        )
        for k in range(2 * points)
    ]


def _heart(samples: int = 96) -> list[tuple[float, float]]:
    """The classic heart curve, point down."""
    return [
        (16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
        for t in (2 * math.pi * k / samples for k in range(samples))
    ]


OUTLINES = {"star": _star(), "heart": _heart()}
RING_HOLE = 0.5  # the hole's diameter over the ring's


def draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[float, float, float, float],
    fill: tuple[int, int, int] | int,
    hole_fill: tuple[int, int, int] | int,
) -> None:
    """Draw `shape` filling `box` (x0, y0, x1, y1); a ring's hole is painted `hole_fill`."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, fill=fill)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * RING_HOLE / 2, (y1 - y0) * RING_HOLE / 2
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=hole_fill)
    elif shape in OUTLINES:
        draw.polygon(_fit(OUTLINES[shape], box), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; the synthetic world draws {', '.join(SHAPES)}")


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    scale = 4  # draw large and downsample for smooth edges
    big = size * scale
    image = Image.new("RGB", (big, big), COLOURS[scene.bg])
    draw = ImageDraw.Draw(image)
    s = SIZES[scene.size] * size / IMAGE_SIZE
    margin = MARGIN * size / IMAGE_SIZE
    cx = cy = size / 2
    if scene.position == "left":
        cx = margin + s / 2
    elif scene.position == "right":
        cx = size - margin - s / 2
    elif scene.position == "top":
        cy = margin + s / 2
    elif scene.position == "bottom":
        cy = size - margin - s / 2
    cx, cy = cx + scene.dx, cy + scene.dy
    x0, y0, x1, y1 = ((cx - s / 2) * scale, (cy - s / 2) * scale, (cx + s / 2) * scale, (cy + s / 2) * scale)
    draw_shape(draw, scene.shape, (x0, y0, x1, y1), COLOURS[scene.fg], COLOURS[scene.bg])
    return image.resize((size, size), Image.Resampling.BOX)


def random_scene(rng: random.Random, combos: list[tuple[str, str, str]]) -> Scene:
    shape, fg, bg = rng.choice(combos)
    size = rng.choice(list(SIZES))
    position = rng.choice(POSITIONS)
    jitter = 2
    return Scene(shape, fg, bg, size, position, rng.randint(-jitter, jitter), rng.randint(-jitter, jitter))


class SyntheticDataset:
    """`count` scenes drawn from the training combos (or `combos`); each has several phrasings."""

    def __init__(
        self, count: int, seed: int, captions_per_image: int = 4, combos: list[tuple[str, str, str]] | None = None
    ):
        if combos is None:
            combos = trained_combos()
        self.scenes: list[Scene] = []
        self.captions: list[list[str]] = []
        for i in range(count):
            rng = random.Random(f"dreamgrid-synthetic-{seed}-{i}")
            scene = random_scene(rng, combos)
            self.scenes.append(scene)
            self.captions.append([caption(scene, rng) for _ in range(captions_per_image)])

    def __len__(self) -> int:
        return len(self.scenes)

    def image(self, index: int) -> Image.Image:
        return render(self.scenes[index])

    def words(self) -> list[str]:
        return vocabulary()


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class FolderDataset:
    """Images with same-named `.txt` captions; each non-empty line of a `.txt` is one phrasing."""

    def __init__(self, folder: str | Path, size: int = IMAGE_SIZE):
        self.size = size
        self.paths: list[Path] = []
        self.captions: list[list[str]] = []
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            txt = path.with_suffix(".txt")
            if not txt.exists():
                continue
            lines = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
            if lines:
                self.paths.append(path)
                self.captions.append(lines)
        if not self.paths:
            raise ValueError(f"no images with same-named .txt captions in {folder}")

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as opened:
            im = opened.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            square = im.crop((left, top, left + side, top + side))
            return square.resize((self.size, self.size), Image.Resampling.LANCZOS)

    def words(self) -> list[str]:
        counts: dict[str, int] = {}
        for lines in self.captions:
            for line in lines:
                for word in line.lower().replace(",", " ").replace(".", " ").split():
                    counts[word] = counts.get(word, 0) + 1
        # Whole-word tokens for the common words; rare ones fall back to bytes.
        return sorted(w for w, n in counts.items() if n >= 2 and w.isprintable())[:4000]


def to_tensor_array(image: Image.Image) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1]."""
    return (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5) - 1.0
