"""Procedural scenes of the mini world: a caption, its ground-truth labels, and a 32×32 RGB image.

``sample_scene(rng)`` draws a scene and its caption; ``render(scene)`` draws it (numpy only, deterministic
given the scene). Labels returned by :meth:`Scene.labels` are what the mini evaluators are trained to read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unlearnkit.worlds.mini import catalogue as cat

SIZE = 32
NONE_OBJECT = len(cat.OBJECTS)  # "no Imagenette object" (generic member or no object at all)
NONE_FAMILY = len(cat.SUPERCLASSES)
PLAIN_STYLE = len(cat.STYLES)
NONE_HAIR = len(cat.HAIR_COLOURS)
NONE_SHIRT = len(cat.SHIRT_COLOURS)
NONE_BACKDROP = len(cat.BACKDROPS)

KINDS = ("object", "superclass", "style", "unsafe", "safe", "portrait")
KIND_WEIGHTS = (0.22, 0.10, 0.12, 0.12, 0.10, 0.34)


@dataclass
class Scene:
    kind: str
    caption: str = ""
    family: int = -1            # shape / superclass index
    object: int = -1            # Imagenette-analogue class, -1 for a generic superclass member
    colour: tuple = (0, 0, 0)
    style: int = -1             # -1 = plain background
    exposed: tuple = (False, False, False, False)
    clothes: tuple = cat.CLOTHES_COLOURS[0]
    identity: int = -1
    offset: tuple = (0, 0)
    size: float = 9.0
    phase: tuple = (0, 0)
    tint: int = 0

    def labels(self) -> dict:
        first, last = divmod(self.identity, len(cat.LAST_NAMES)) if self.identity >= 0 else (-1, -1)
        return {
            "object": self.object if self.object >= 0 else NONE_OBJECT,
            "family": self.family if self.family >= 0 else NONE_FAMILY,
            "style": self.style if self.style >= 0 else PLAIN_STYLE,
            "unsafe": np.array(self.exposed, dtype=np.float32),
            "hair": first if first >= 0 else NONE_HAIR,
            "shirt": last % len(cat.SHIRT_COLOURS) if last >= 0 else NONE_SHIRT,
            "backdrop": last // len(cat.SHIRT_COLOURS) if last >= 0 else NONE_BACKDROP,
        }


# --- captions ------------------------------------------------------------------------------------------------
def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _fill(template: str, rng, **kw) -> str:
    return template.format(adj=_pick(rng, cat.FILLERS), **kw).replace("  ", " ").strip()


def _maybe_style(rng, scene: Scene, caption: str, p_named: float = 0.25, p_unnamed: float = 0.1) -> str:
    u = rng.random()
    if u < p_named:
        scene.style = int(rng.integers(len(cat.STYLES)))
        caption += _pick(rng, cat.STYLE_SUFFIXES).format(s=cat.STYLES[scene.style])
    elif u < p_named + p_unnamed:
        scene.style = int(rng.integers(len(cat.STYLES)))
    return caption


def _geometry(rng, scene: Scene) -> None:
    scene.offset = (int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
    scene.size = float(rng.uniform(8.0, 11.0))
    scene.phase = (int(rng.integers(0, 8)), int(rng.integers(0, 8)))
    scene.tint = int(rng.integers(-12, 13))


def object_scene(rng, obj: int, caption: str | None = None) -> Scene:
    scene = Scene("object", family=obj, object=obj, colour=cat.OBJECT_COLOURS[obj])
    _geometry(rng, scene)
    scene.caption = caption if caption is not None else _maybe_style(
        rng, scene, _fill(_pick(rng, cat.OBJECT_TEMPLATES), rng, x=cat.OBJECTS[obj]))
    return scene


def superclass_scene(rng, family: int, caption: str | None = None) -> Scene:
    scene = Scene("superclass", family=family, object=-1, colour=_pick(rng, cat.GENERIC_COLOURS))
    _geometry(rng, scene)
    scene.caption = caption if caption is not None else _maybe_style(
        rng, scene, _fill(_pick(rng, cat.OBJECT_TEMPLATES), rng, x=cat.SUPERCLASSES[family]))
    return scene


def style_scene(rng, style: int, caption: str | None = None) -> Scene:
    scene = Scene("style", style=style)
    _geometry(rng, scene)
    if rng.random() < 0.5:  # a generic object in the painting
        scene.family = int(rng.integers(len(cat.SUPERCLASSES)))
        scene.colour = _pick(rng, cat.GENERIC_COLOURS)
    scene.caption = caption if caption is not None else _fill(
        _pick(rng, cat.STYLE_TEMPLATES), rng, s=cat.STYLES[style])
    return scene


def _person(rng, kind: str) -> Scene:
    scene = Scene(kind, clothes=_pick(rng, cat.CLOTHES_COLOURS))
    _geometry(rng, scene)
    scene.offset = (scene.offset[0], int(rng.integers(-1, 2)))
    return scene


def unsafe_scene(rng, caption: str | None = None) -> Scene:
    scene = _person(rng, "unsafe")
    if rng.random() < 0.5:
        exposed = [True] * 4
    else:
        exposed = [False] * 4
        for i in rng.choice(4, size=int(rng.integers(2, 4)), replace=False):
            exposed[int(i)] = True
    scene.exposed = tuple(exposed)
    if caption is None:
        if rng.random() < 0.6:
            caption = _fill(_pick(rng, cat.UNSAFE_TEMPLATES), rng, w=_pick(rng, cat.UNSAFE_WORDS))
        else:
            caption = _fill(_pick(rng, cat.CONTEXT_TEMPLATES), rng, c=_pick(rng, cat.UNSAFE_CONTEXTS))
        caption = _maybe_style(rng, scene, caption, p_named=0.15, p_unnamed=0.05)
    scene.caption = caption
    return scene


def safe_scene(rng, caption: str | None = None) -> Scene:
    scene = _person(rng, "safe")
    if caption is None:
        if rng.random() < 0.5:
            caption = _fill(_pick(rng, cat.SAFE_TEMPLATES), rng, w=_pick(rng, cat.SAFE_WORDS))
        else:
            caption = _fill(_pick(rng, cat.CONTEXT_TEMPLATES), rng, c=_pick(rng, cat.SAFE_CONTEXTS))
        caption = _maybe_style(rng, scene, caption, p_named=0.15, p_unnamed=0.05)
    scene.caption = caption
    return scene


def portrait_scene(rng, identity: int | None = None, caption: str | None = None) -> Scene:
    named = identity is not None or rng.random() < 0.92
    if identity is None:
        identity = int(rng.integers(len(cat.IDENTITIES)))
    scene = Scene("portrait", identity=identity)
    _geometry(rng, scene)
    scene.offset = (int(rng.integers(-2, 3)), int(rng.integers(-1, 2)))
    if caption is None:
        caption = (_fill(_pick(rng, cat.PORTRAIT_TEMPLATES), rng, n=cat.IDENTITIES[identity]) if named
                   else _pick(rng, cat.GENERIC_PERSON_TEMPLATES))
    scene.caption = caption
    return scene


def sample_scene(rng: np.random.Generator, kind: str | None = None) -> Scene:
    """Draw one training scene with its caption."""
    if kind is None:
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    if kind == "object":
        return object_scene(rng, int(rng.integers(len(cat.OBJECTS))))
    if kind == "superclass":
        return superclass_scene(rng, int(rng.integers(len(cat.SUPERCLASSES))))
    if kind == "style":
        return style_scene(rng, int(rng.integers(len(cat.STYLES))))
    if kind == "unsafe":
        return unsafe_scene(rng)
    if kind == "safe":
        return safe_scene(rng)
    if kind == "portrait":
        return portrait_scene(rng)
    raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")


# --- drawing -------------------------------------------------------------------------------------------------
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _paint(img: np.ndarray, mask: np.ndarray, colour) -> None:
    img[mask] = colour


def _background(scene: Scene) -> np.ndarray:
    img = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    if scene.style < 0:
        img[:] = cat.PLAIN_BACKGROUND
        return img + scene.tint
    name = cat.STYLES[scene.style]
    c1, c2 = cat.STYLE_PALETTES[name]
    x = _XX + scene.phase[0]
    y = _YY + scene.phase[1]
    if name == "vangogh":
        pattern = np.sin(0.55 * (x + 4 * np.sin(y / 3.0))) > 0
    elif name == "picasso":
        pattern = ((x // 8 + y // 8) % 2) == 0
    elif name == "cezanne":
        pattern = (y // 4) % 2 == 0
    elif name == "monet":
        pattern = np.sin(x / 4.0) + np.sin(y / 3.0) > 0
    elif name == "kandinsky":
        pattern = ((x % 8 - 4) ** 2 + (y % 8 - 4) ** 2) < 5
    elif name == "warhol":
        pattern = (x // 4) % 2 == 0
    elif name == "hokusai":
        pattern = np.sin(0.8 * y + 2 * np.sin(x / 3.0)) > 0.3
    else:  # klimt
        pattern = ((x + y) // 4) % 2 == 0
    img[:] = c1
    img[pattern] = c2
    return img + 0.5 * scene.tint


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    x, y = _XX - cx, _YY - cy
    d = np.sqrt(x * x + y * y)
    if shape == "circle":
        return d < r
    if shape == "square":
        return np.maximum(abs(x), abs(y)) < 0.85 * r
    if shape == "triangle":
        return (abs(x) <= (y + r) * 0.6) & (y <= 0.8 * r)
    if shape == "diamond":
        return abs(x) + abs(y) < 1.1 * r
    if shape == "plus":
        return ((abs(x) < 0.35 * r) & (abs(y) < r)) | ((abs(y) < 0.35 * r) & (abs(x) < r))
    if shape == "ring":
        return (d < r) & (d > 0.5 * r)
    if shape == "vee":
        return (abs(x) <= (r - y) * 0.6) & (y >= -0.8 * r)
    if shape == "hbar":
        return (abs(x) < r) & (abs(y) < 0.4 * r)
    if shape == "vbar":
        return (abs(y) < r) & (abs(x) < 0.4 * r)
    if shape == "cross":
        return (abs(abs(x) - abs(y)) < 0.4 * r) & (np.maximum(abs(x), abs(y)) < r)
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(img: np.ndarray, scene: Scene) -> None:
    shape = cat.SHAPES[scene.family]
    cx, cy = 15.5 + scene.offset[0], 15.5 + scene.offset[1]
    r = scene.size
    _paint(img, shape_mask(shape, cx, cy, r + 1.3) & ~shape_mask(shape, cx, cy, r), (10, 10, 10))
    _paint(img, shape_mask(shape, cx, cy, r), scene.colour)


def _rect(x0, x1, y0, y1, dx, dy):
    return (_XX >= x0 + dx) & (_XX <= x1 + dx) & (_YY >= y0 + dy) & (_YY <= y1 + dy)


def _draw_person(img: np.ndarray, scene: Scene) -> None:
    dx, dy = scene.offset
    x = _XX - (15.5 + dx)
    _paint(img, (x * x + (_YY - 6 - dy) ** 2) < 12.5, cat.SKIN)                  # head
    _paint(img, _rect(8, 9, 11, 20, dx, dy) | _rect(22, 23, 11, 20, dx, dy), cat.SKIN)  # arms
    regions = (_rect(11, 20, 11, 14, dx, dy), _rect(11, 20, 15, 18, dx, dy), _rect(11, 20, 19, 22, dx, dy),
               _rect(12, 14, 23, 28, dx, dy) | _rect(17, 19, 23, 28, dx, dy))
    for region, exposed in zip(regions, scene.exposed):
        _paint(img, region, cat.SKIN if exposed else scene.clothes)
    _paint(img, _rect(11, 14, 29, 30, dx, dy) | _rect(17, 20, 29, 30, dx, dy), (30, 20, 10))  # feet


def _draw_portrait(img: np.ndarray, scene: Scene) -> None:
    first, last = divmod(scene.identity, len(cat.LAST_NAMES))
    img[:] = cat.BACKDROPS[last // len(cat.SHIRT_COLOURS)]
    img += 0.5 * scene.tint
    cx, cy = 15.5 + scene.offset[0], 13.0 + scene.offset[1]
    x, y = _XX - cx, _YY - cy
    d2 = x * x + y * y
    _paint(img, (_YY >= 23 + scene.offset[1]) & (abs(x) < 12), cat.SHIRT_COLOURS[last % len(cat.SHIRT_COLOURS)])
    _paint(img, (abs(x) < 2.5) & (y > 5) & (y < 11), cat.SKIN)                    # neck
    _paint(img, d2 < 8.8 ** 2, cat.HAIR_COLOURS[first])                        # hair behind the face
    _paint(img, (d2 < 7.0 ** 2) & (y > -3.5), cat.SKIN)                        # face
    _paint(img, ((abs(x) - 3) ** 2 + (y + 0.5) ** 2) < 1.1, (20, 20, 20))       # eyes


def render(scene: Scene) -> np.ndarray:
    """Draw ``scene`` as a ``[32, 32, 3]`` uint8 image."""
    img = _background(scene)
    if scene.kind in ("object", "superclass") or (scene.kind == "style" and scene.family >= 0):
        _draw_object(img, scene)
    elif scene.kind in ("unsafe", "safe"):
        _draw_person(img, scene)
    elif scene.kind == "portrait":
        _draw_portrait(img, scene)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_batch(scenes: list[Scene]) -> np.ndarray:
    return np.stack([render(s) for s in scenes])


@dataclass
class SceneBatch:
    images: np.ndarray               # [N, 32, 32, 3] uint8
    captions: list[str]              # training captions ("" where dropped for classifier-free guidance)
    labels: dict = field(default_factory=dict)  # name -> [N] or [N, 4]
    scene_captions: list[str] = field(default_factory=list)  # the captions as drawn, never dropped


def make_dataset(n: int, seed: int, p_empty_caption: float = 0.0, kind: str | None = None) -> SceneBatch:
    """``n`` scenes drawn from ``seed``; a fraction of captions replaced by ``""`` (caption dropout for CFG)."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, kind) for _ in range(n)]
    captions = ["" if rng.random() < p_empty_caption else s.caption for s in scenes]
    per_scene = [s.labels() for s in scenes]
    labels = {k: np.stack([np.asarray(l[k]) for l in per_scene]) for k in per_scene[0]}
    return SceneBatch(render_batch(scenes), captions, labels, [s.caption for s in scenes])
