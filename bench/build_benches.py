"""Build the extra accuracy benchmarks: datasets unlike hand photos, with known, planted issues.

    python bench/build_benches.py                 # all four into bench/.data/
    python bench/build_benches.py --only digits   # one of: digits, backdrop, signs32, signs_clustered

Each bench is an ImageFolder tree ``bench/.data/<name>/{train,test}/<class>/`` with a truth file
``<name>_truth.csv`` in the format of ``../shared/bench/signs_planted_truth.csv`` (scored by
``../shared/bench/score.py``) and a manifest ``<name>_manifest.csv`` (``path,split,folder_label,
true_label,planted,source``). Files that are in no truth row (neither as path nor as partner)
are the untouched images a false-alarm rate is measured on.

* ``digits``: scikit-learn's bundled ``load_digits`` (1,797 8x8 scans) upscaled to 28x28 px
  (bicubic, then a slight blur and a 1-px jitter), light strokes on black, grayscale PNG.
* ``backdrop``: rendered garment-like objects (ten shape classes, random colour, pattern, pose)
  on one of three fixed backdrops that fill most of each 300x400 frame; about 5% are 400x225
  landscape shots (a second aspect-ratio mode, not an issue). Two different objects on the same
  backdrop are not duplicates; the planted near copies are the same render recompressed,
  cropped, resized or re-lit.
* ``signs32``: ``../shared/bench/signs_planted`` downsampled to 32 px per 100 px (a 100x100 photo
  becomes 32x32; the near copies were made before downsampling). Corrupt files are copied
  byte for byte; the blurry ones get a further 1.0-1.5 px blur, since downsampling hides
  most of the original blur. The truth is the shared one plus the contamination below.
* ``signs_clustered``: the shared bench unchanged, plus the contamination below.

Every bench also gets a *clustered* contamination: a batch of 1-2% foreign images from one
other domain (crops of scikit-learn's two sample photos, or hand photos for ``backdrop``) spread
across the class folders, truth ``outlier`` with ``cluster=batch``; ``digits`` and ``backdrop``
also get single strays (synthetic scenes from the shared builder), ``cluster=single``.

All randomness comes from fixed seeds; a bench is built in ``<name>.partial`` and renamed.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

HERE = Path(__file__).resolve().parent
SHARED_BENCH = HERE.parent.parent / "shared" / "bench"
SIGNS = SHARED_BENCH / "signs_planted"
SIGNS_TRUTH = SHARED_BENCH / "signs_planted_truth.csv"
SIGNS_MANIFEST = SHARED_BENCH / "signs_planted_manifest.csv"
SIGNS_SOURCE = HERE.parent.parent / "shared" / "datasets" / "signs"
OUT = HERE / ".data"
BENCHES = ("digits", "backdrop", "signs32", "signs_clustered")
SEED = 2026
TEST_FRAC = 0.2
# A planted quality/geometry image is also unusual for the dataset: calling it an outlier too
# is fair (neither right nor wrong), as is the duplicate status of a flat image.
QUALITY_ALSO_OK = ("outlier", "label_error")


def shared_builder():
    """The shared signs builder, for its synthetic out-of-domain scene generators."""
    spec = importlib.util.spec_from_file_location(
        "build_signs_planted", SHARED_BENCH / "build_signs_planted.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def encode(im: Image.Image, fmt: str, quality: int = 92) -> bytes:
    b = io.BytesIO()
    if fmt == "JPEG":
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(
            b, "JPEG", quality=quality
        )
    else:
        im.save(b, "PNG", optimize=False)
    return b.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@dataclass
class Item:
    split: str
    cls: str
    data: bytes
    source: str
    true_cls: str = ""
    planted: str = ""


@dataclass
class Bench:
    """A bench in memory: files by relative path, truth rows, and the pool of untouched files."""

    name: str
    ext: str  # ".png" or ".jpg"
    fmt: str  # "PNG" or "JPEG"
    rng: np.random.Generator
    items: dict[str, Item] = field(default_factory=dict)
    truth: list[dict[str, str]] = field(default_factory=list)
    pool: list[str] = field(default_factory=list)
    counter: int = 0

    def name_for(self, split: str, cls: str, ext: str | None = None) -> str:
        self.counter += 1
        stem = f"{int(self.rng.integers(0, 2**40)):010x}{self.counter:05d}"
        return f"{split}/{cls}/{stem}{ext or self.ext}"

    def add(self, split: str, cls: str, data: bytes, source: str, pool: bool = True) -> str:
        rel = self.name_for(split, cls)
        self.items[rel] = Item(split, cls, data, source, cls)
        if pool:
            self.pool.append(rel)
        return rel

    def take(self, n: int, split: str | None = None) -> list[str]:
        cands = [r for r in self.pool if split is None or self.items[r].split == split]
        picked = [cands[i] for i in sorted(self.rng.choice(len(cands), n, replace=False))]
        taken = set(picked)
        self.pool = [r for r in self.pool if r not in taken]
        return picked

    def image(self, rel: str) -> Image.Image:
        return decode(self.items[rel].data)

    def row(self, path: str, issue: str, group: str = "", also_ok=(), **kv) -> None:
        note = {**kv}
        if also_ok:
            note["also_ok"] = ",".join(sorted(set(also_ok) - {issue}))
        self.truth.append({"path": path, "issue": issue, "group": group,
                           "note": ";".join(f"{k}={v}" for k, v in note.items())})  # fmt: skip

    def replace(self, rel: str, im: Image.Image, issue: str, also_ok=(), **kv) -> None:
        self.items[rel].data = encode(im, self.fmt)
        self.items[rel].planted = issue
        self.row(rel, issue, also_ok=(*also_ok, *QUALITY_ALSO_OK), **kv)

    def copy_of(
        self, rel: str, data: bytes, issue: str, split: str | None = None, also_ok=(), **kv
    ):
        it = self.items[rel]
        new = self.add(split or it.split, it.cls, data, f"copy of {it.source}", pool=False)
        self.items[new].planted = issue
        self.row(new, issue, group=rel, also_ok=also_ok, **kv)
        self.pool = [r for r in self.pool if r != rel]  # the partner stays untouched

    def write(self) -> None:
        final = OUT / self.name
        tmp = OUT / f"{self.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, it in sorted(self.items.items()):
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(it.data)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        write_csv(OUT / f"{self.name}_truth.csv", sorted(self.truth, key=lambda r: (r["path"], r["issue"])),
                  ["path", "issue", "group", "note"])  # fmt: skip
        write_csv(OUT / f"{self.name}_manifest.csv",
                  [{"path": rel, "split": it.split, "folder_label": it.cls, "true_label": it.true_cls,
                    "planted": it.planted, "source": it.source} for rel, it in sorted(self.items.items())],
                  ["path", "split", "folder_label", "true_label", "planted", "source"])  # fmt: skip
        counts: dict[str, int] = {}
        for r in self.truth:
            counts[r["issue"]] = counts.get(r["issue"], 0) + 1
        named = {r["path"] for r in self.truth} | {r["group"] for r in self.truth if r["group"]}
        print(f"{self.name}: {len(self.items)} files, {len(self.items) - len(named & set(self.items))} "
              f"untouched; truth {dict(sorted(counts.items()))}")  # fmt: skip


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.rename(path)


# ------------------------------------------------------------------------------ plants
def split_classes(bench: Bench, base: list[tuple[str, Image.Image, str]]) -> None:
    """Add the base images, each class split TEST_FRAC / rest at random."""
    by_cls: dict[str, list] = {}
    for cls, im, src in base:
        by_cls.setdefault(cls, []).append((im, src))
    for cls in sorted(by_cls):
        ims = by_cls[cls]
        order = bench.rng.permutation(len(ims))
        n_test = round(len(ims) * TEST_FRAC)
        for k, i in enumerate(order):
            im, src = ims[i]
            bench.add("test" if k < n_test else "train", cls, encode(im, bench.fmt), src)


def near_copy(bench: Bench, im: Image.Image, small: bool) -> tuple[Image.Image, str]:
    """A re-shot-like copy: shifted, rescaled, cropped or re-lit, then re-encoded."""
    rng = bench.rng
    w, h = im.size
    kind = ["shift", "rescale", "crop", "brightness"][int(rng.integers(4))]
    if kind == "shift" and small:
        dx, dy = (int(v) for v in rng.choice([-2, -1, 1, 2], 2))
        out = Image.new(im.mode, im.size, 0)
        out.paste(im, (dx, dy))
        return out, f"variant=shift;dx={dx};dy={dy}"
    if kind in ("shift", "crop"):
        f = rng.uniform(0.04, 0.08, 4)
        box = (round(w * f[0]), round(h * f[1]), w - round(w * f[2]), h - round(h * f[3]))
        return im.crop(box), "variant=crop;crop_frac=" + "/".join(f"{x:.2f}" for x in f)
    if kind == "rescale":
        s = rng.uniform(0.75, 0.9) if not small else rng.uniform(0.85, 0.95)
        out = im.resize((max(4, round(w * s)), max(4, round(h * s))), Image.Resampling.BICUBIC)
        if small:  # a rescaled digit, re-centred on the same canvas
            canvas = Image.new(im.mode, im.size, 0)
            canvas.paste(out, ((w - out.width) // 2, (h - out.height) // 2))
            out = canvas
        return out, f"variant=rescale;scale={s:.2f}"
    f = float(rng.choice([rng.uniform(0.85, 0.93), rng.uniform(1.07, 1.15)]))
    return ImageEnhance.Brightness(im).enhance(f), f"variant=brightness;factor={f:.2f}"


def plant_common(bench: Bench, k: int, small: bool, colour: bool, side: tuple[int, int]) -> None:
    rng = bench.rng
    for rel in bench.take(k):
        bench.copy_of(rel, bench.items[rel].data, "exact_duplicate", variant="byte_copy",
                      also_ok=("near_duplicate",))  # fmt: skip
    for rel in bench.take(k):
        im, note = near_copy(bench, bench.image(rel), small)
        also = ("odd_size",) if im.size != bench.image(rel).size else ()
        bench.copy_of(rel, encode(im, bench.fmt, int(rng.integers(75, 92))), "near_duplicate",
                      also_ok=also, **dict(kv.split("=") for kv in note.split(";")))  # fmt: skip
    for i, rel in enumerate(bench.take(k, split="train")):
        if i < k // 3:
            data, note = bench.items[rel].data, "variant=byte_copy"
            also = ("exact_duplicate", "near_duplicate")
        else:
            im, note = near_copy(bench, bench.image(rel), small)
            data = encode(im, bench.fmt, int(rng.integers(75, 92)))
            also = (
                ("near_duplicate", "odd_size")
                if im.size != bench.image(rel).size
                else ("near_duplicate",)
            )
        bench.copy_of(rel, data, "leakage", split="test", also_ok=also,
                      **dict(kv.split("=") for kv in note.split(";")))  # fmt: skip
    for i, rel in enumerate(bench.take(k)):
        data = bench.items[rel].data
        kind = ("truncated", "zero_byte", "random_bytes")[i % 3]
        if kind == "truncated":
            data = data[: max(16, int(len(data) * rng.uniform(0.2, 0.6)))]
        elif kind == "zero_byte":
            data = b""
        else:
            data = rng.integers(0, 256, int(rng.integers(800, 3000)), dtype=np.uint8).tobytes()
        bench.items[rel].data, bench.items[rel].planted = data, "corrupt"
        bench.row(rel, "corrupt", variant=kind)
    for rel in bench.take(k):  # the other format's bytes under this extension
        other = "JPEG" if bench.fmt == "PNG" else "PNG"
        bench.items[rel].data = encode(bench.image(rel), other, 92)
        bench.items[rel].planted = "wrong_extension"
        bench.row(rel, "wrong_extension", content=other.lower())
    for rel in bench.take(k):
        f = rng.uniform(0.07, 0.2)
        bench.replace(rel, bench.image(rel).point(lambda v, f=f: v * f), "dark",
                      also_ok=("low_information", "blurry"), factor=f"{f:.2f}")  # fmt: skip
    for rel in bench.take(k):
        f = rng.uniform(0.05, 0.2)
        bench.replace(rel, bench.image(rel).point(lambda v, f=f: 255 - (255 - v) * f), "light",
                      also_ok=("low_information", "blurry"), factor=f"{f:.2f}")  # fmt: skip
    for rel in bench.take(k):
        im = bench.image(rel)
        r = (
            max(1.2, min(im.size) * rng.uniform(0.015, 0.03))
            if not small
            else rng.uniform(1.3, 2.0)
        )
        bench.replace(rel, im.filter(ImageFilter.GaussianBlur(r)), "blurry",
                      also_ok=("low_information",), radius=f"{r:.2f}")  # fmt: skip
    if colour:
        for rel in bench.take(k):
            bench.replace(rel, bench.image(rel).convert("L").convert("RGB"), "grayscale")
    for i, rel in enumerate(bench.take(k)):
        im = bench.image(rel)
        a = np.asarray(im, dtype=np.float32)
        mean = a.reshape(-1, a.shape[-1] if a.ndim == 3 else 1).mean(axis=0)
        kind = ("flat", "noise", "gradient")[i % 3]
        flat = np.broadcast_to(mean, a.shape if a.ndim == 3 else a.shape + (1,)).copy()
        if kind == "noise":
            flat += rng.normal(0, rng.uniform(1.5, 4.0), flat.shape)
        elif kind == "gradient":
            flat += np.linspace(-1, 1, flat.shape[1])[None, :, None] * rng.uniform(3, 8)
        arr = np.clip(flat, 0, 255).round().astype(np.uint8)
        out = Image.fromarray(arr[..., 0] if a.ndim == 2 else arr, im.mode)
        bench.replace(rel, out, "low_information", variant=kind,
                      also_ok=("dark", "light", "blurry", "grayscale", "exact_duplicate", "near_duplicate"))  # fmt: skip
    for i, rel in enumerate(bench.take(k)):
        im = bench.image(rel)
        w, h = im.size
        if i % 2 == 0:  # tiny
            s = int(rng.integers(max(3, side[0] // 5), max(5, side[0] // 3)))
            out = im.resize((s, max(3, round(s * h / w))), Image.Resampling.BICUBIC)
            also = ("blurry", "low_information")
        else:  # several times the usual size
            f = rng.uniform(3.0, 5.0)
            out = im.resize((round(w * f), round(h * f)), Image.Resampling.BICUBIC)
            also = ()
        bench.replace(rel, out, "odd_size", also_ok=also, size=f"{out.width}x{out.height}")
    for i, rel in enumerate(bench.take(k)):
        im = bench.image(rel)
        w, h = im.size
        ratio = rng.uniform(3.0, 6.0)
        if i % 2 == 0:  # full-width strip
            sh = max(2, round(w / ratio))
            y0 = int(rng.integers(0, max(1, h - sh)))
            out = im.crop((0, y0, w, y0 + sh))
        else:
            sw = max(2, round(h / ratio))
            x0 = int(rng.integers(0, max(1, w - sw)))
            out = im.crop((x0, 0, x0 + sw, h))
        bench.replace(
            rel, out, "odd_aspect_ratio", also_ok=("odd_size",), size=f"{out.width}x{out.height}"
        )


def plant_label_errors(bench: Bench, k: int) -> None:
    classes = sorted({it.cls for it in bench.items.values()})
    for rel in bench.take(k):
        it = bench.items.pop(rel)
        wrong = str(bench.rng.choice([c for c in classes if c != it.cls]))
        new = f"{it.split}/{wrong}/{rel.rsplit('/', 1)[1]}"
        it.cls, it.planted = wrong, "label_error"
        bench.items[new] = it
        bench.row(new, "label_error", true_label=it.true_cls, also_ok=("outlier",))


def plant_outliers(bench: Bench, images: list[tuple[Image.Image, str]], cluster: str) -> None:
    """Foreign images spread over the class folders (80/20 train/test). Crops of the same
    photo in one batch may overlap: calling two of them near copies (or leakage) is fair."""
    classes = sorted({it.cls for it in bench.items.values()})
    for i, (im, src) in enumerate(images):
        cls = classes[i % len(classes)]
        split = "test" if bench.rng.random() < TEST_FRAC else "train"
        rel = bench.add(split, cls, encode(im, bench.fmt), src, pool=False)
        bench.items[rel].planted, bench.items[rel].true_cls = "outlier", ""
        also = (
            ("label_error",)
            if cluster == "single"
            else ("label_error", "near_duplicate", "exact_duplicate", "leakage")
        )
        bench.row(rel, "outlier", cluster=cluster, source=src, also_ok=also)


def photo_crops(rng: np.random.Generator, n: int, size: tuple[int, int], mode: str):
    """n crops of scikit-learn's two sample photos (a temple and a flower): one foreign batch."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    out = []
    for i in range(n):
        ph = photos[i % 2]
        cw = int(ph.width * rng.uniform(0.35, 0.7))
        ch = min(ph.height, round(cw * size[1] / size[0]))
        x0, y0 = int(rng.integers(0, ph.width - cw + 1)), int(rng.integers(0, ph.height - ch + 1))
        im = ph.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.LANCZOS)
        out.append(
            (im.convert(mode), f"sklearn-sample:{['china', 'flower'][i % 2]}@{x0},{y0},{cw}")
        )
    return out


def strays(rng: np.random.Generator, n: int, size: tuple[int, int], mode: str):
    """n single out-of-domain images: the shared builder's synthetic scenes, one of each kind."""
    sb = shared_builder()
    out = []
    for i in range(n):
        gen = sb.GENERATORS[i % len(sb.GENERATORS)]
        im = sb.redraw(rng, gen).resize(size, Image.Resampling.BICUBIC).convert(mode)
        out.append((im, f"synthetic:{gen.__name__[4:]}#{i}"))
    return out


# ------------------------------------------------------------------------------ benches
def build_digits() -> Bench:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(SEED)
    d = load_digits()
    base = []
    for i, (a, y) in enumerate(zip(d.images, d.target, strict=True)):
        im = Image.fromarray((a * (255 / 16)).astype(np.uint8), "L").resize(
            (20, 20), Image.Resampling.BICUBIC
        )
        im = im.filter(ImageFilter.GaussianBlur(0.6))
        canvas = Image.new("L", (28, 28), 0)
        canvas.paste(im, (4 + int(rng.integers(-1, 2)), 4 + int(rng.integers(-1, 2))))
        gain = rng.uniform(0.85, 1.0)
        base.append((str(y), canvas.point(lambda v, g=gain: v * g), f"sklearn-digits:{i}"))
    bench = Bench("digits", ".png", "PNG", rng)
    split_classes(bench, base)
    plant_common(bench, 25, small=True, colour=False, side=(28, 28))
    plant_label_errors(bench, 25)
    plant_outliers(bench, strays(rng, 12, (28, 28), "L"), "single")
    plant_outliers(bench, photo_crops(rng, 30, (28, 28), "L"), "batch")
    return bench


BACKDROP_W, BACKDROP_H = 300, 400


def make_backdrops(rng: np.random.Generator) -> list[Image.Image]:
    """Three fixed 400x400 backdrops: a striped bedspread, a wooden floor, a speckled rug."""
    n = 400
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    spread = np.stack([180 + 25 * np.sin(xx / 9.0) * np.sin(yy / 13.0),
                       170 + 20 * np.sin((xx + yy) / 17.0), 150 + 30 * np.cos(yy / 7.0)], -1)  # fmt: skip
    plank = (xx // 55).astype(int)
    floor = np.stack([140 + 12 * (plank % 3) + 10 * np.sin(yy / 4.0 + plank),
                      95 + 8 * (plank % 2) + 8 * np.sin(yy / 4.0 + plank), 60 + 0 * xx], -1)  # fmt: skip
    floor[(xx % 55) < 2] *= 0.5
    rug = np.stack([120 + 0 * xx, 60 + 0 * xx, 70 + 0 * xx], -1) + rng.normal(0, 14, (n, n, 1))
    rug[((xx // 40 + yy // 40) % 2) == 0] += np.array([20, 30, 10])
    out = []
    for a in (spread, floor, rug):
        a = a + rng.normal(0, 4, a.shape)
        out.append(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB"))
    return out


SHAPES = ("shirt", "trousers", "dress", "skirt", "bag", "shoe", "hat", "scarf", "sock", "glove")


def render_object(
    rng: np.random.Generator, cls: int, bg: Image.Image, landscape: bool
) -> Image.Image:
    """One 'garment' of shape class cls on the backdrop; the object covers ~15-25% of the frame."""
    w, h = (400, 225) if landscape else (BACKDROP_W, BACKDROP_H)
    canvas = bg.crop((0, 0, w, h)).copy()
    obj = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    d = ImageDraw.Draw(obj)
    colour = tuple(int(c) for c in rng.integers(20, 236, 3)) + (255,)
    shape = SHAPES[cls]
    polys = {
        "shirt": [(40, 30), (80, 20), (120, 20), (160, 30), (190, 70), (160, 85), (150, 70), (150, 180), (50, 180), (50, 70), (40, 85), (10, 70)],
        "trousers": [(60, 10), (140, 10), (150, 190), (110, 190), (100, 70), (90, 190), (50, 190)],
        "dress": [(80, 10), (120, 10), (125, 60), (170, 190), (30, 190), (75, 60)],
        "skirt": [(70, 40), (130, 40), (170, 160), (30, 160)],
        "bag": [(40, 70), (160, 70), (170, 180), (30, 180)],
        "shoe": [(20, 110), (90, 100), (120, 60), (150, 60), (180, 140), (20, 150)],
        "hat": [(10, 140), (190, 140), (190, 160), (10, 160)],
        "scarf": [(20, 40), (180, 20), (185, 50), (30, 70)],
        "sock": [(80, 10), (120, 10), (120, 130), (170, 150), (160, 190), (80, 170)],
        "glove": [(60, 190), (60, 90), (50, 30), (70, 30), (80, 80), (90, 20), (110, 20), (110, 80), (130, 30), (150, 40), (140, 190)],
    }[shape]  # fmt: skip
    d.polygon(polys, fill=colour)
    if shape == "hat":
        d.ellipse((50, 60, 150, 150), fill=colour)
    if shape == "bag":
        d.arc((60, 20, 140, 100), 180, 360, fill=colour, width=8)
    pattern = int(rng.integers(3))
    arr = np.asarray(obj).astype(np.float32)
    yy, xx = np.mgrid[0:200, 0:200]
    if pattern == 1:
        arr[..., :3] *= (0.75 + 0.25 * ((yy // int(rng.integers(6, 16))) % 2))[..., None]
    elif pattern == 2:
        arr[..., :3] *= (0.8 + 0.2 * (((xx // 12) + (yy // 12)) % 2))[..., None]
    arr[..., :3] += rng.normal(0, 5, (200, 200, 1))
    obj = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")
    scale = rng.uniform(0.5, 0.7) * min(w, h) / 200
    obj = obj.resize((round(200 * scale), round(200 * scale)), Image.Resampling.BICUBIC)
    obj = obj.rotate(float(rng.uniform(-25, 25)), expand=True, resample=Image.Resampling.BICUBIC)
    x0 = int(rng.integers(0, max(1, w - obj.width)))
    y0 = int(rng.integers(0, max(1, h - obj.height)))
    canvas.paste(obj, (x0, y0), obj)
    light = rng.uniform(0.92, 1.08)
    return ImageEnhance.Brightness(canvas).enhance(light)


def build_backdrop() -> Bench:
    rng = np.random.default_rng(SEED + 1)
    backs = make_backdrops(rng)
    base = []
    for i in range(1500):
        cls = i % len(SHAPES)
        landscape = rng.random() < 0.05
        bg = int(rng.integers(len(backs)))
        im = render_object(rng, cls, backs[bg], landscape)
        base.append((SHAPES[cls], im, f"render:{i};backdrop={bg};landscape={int(landscape)}"))
    bench = Bench("backdrop", ".jpg", "JPEG", rng)
    split_classes(bench, base)
    plant_common(bench, 20, small=False, colour=True, side=(BACKDROP_W, BACKDROP_H))
    plant_label_errors(bench, 20)
    plant_outliers(bench, strays(rng, 10, (BACKDROP_W, BACKDROP_H), "RGB"), "single")
    hands = sorted(
        p for p in SIGNS_SOURCE.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    picks = [hands[i] for i in sorted(rng.choice(len(hands), 25, replace=False))]
    batch = []
    for p in picks:
        with Image.open(p) as im:
            hand = im.convert("RGB").resize((BACKDROP_W, BACKDROP_W), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (BACKDROP_W, BACKDROP_H), hand.getpixel((2, 2)))
        canvas.paste(hand, (0, (BACKDROP_H - BACKDROP_W) // 2))
        batch.append((canvas, f"signs:{p.parent.name}/{p.name}"))
    plant_outliers(bench, batch, "batch")
    return bench


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def from_signs(name: str, factor: float | None) -> Bench:
    """The shared signs bench (downsampled by factor, if given) plus a foreign batch."""
    rng = np.random.default_rng(SEED + 2)
    bench = Bench(name, ".jpg", "JPEG", rng)
    truth = read_csv(SIGNS_TRUTH)
    planted = {r["path"]: r["issue"] for r in truth}
    for m in read_csv(SIGNS_MANIFEST):
        data = (SIGNS / m["path"]).read_bytes()
        if factor is not None and m["planted"] != "corrupt":
            im = decode(data)
            fmt = im.format
            small = im.resize((max(1, round(im.width * factor)), max(1, round(im.height * factor))),
                              Image.Resampling.LANCZOS)  # fmt: skip
            if planted.get(m["path"]) == "blurry":
                small = small.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 1.5))))
            data = encode(small, fmt if fmt in ("PNG", "JPEG") else "JPEG", 90)
        bench.items[m["path"]] = Item(m["split"], m["folder_label"], data, m["source"],
                                      m["true_label"], m["planted"])  # fmt: skip
    bench.truth = [dict(r) for r in truth]
    side = 32 if factor is not None else 100
    plant_outliers(bench, photo_crops(rng, 35, (side, side), "RGB"), "batch")
    return bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=BENCHES, action="append", help="build only this bench")
    a = ap.parse_args()
    if not SIGNS.is_dir():
        sys.exit(f"build_benches.py: {SIGNS} does not exist")
    OUT.mkdir(parents=True, exist_ok=True)
    builders = {"digits": build_digits, "backdrop": build_backdrop,
                "signs32": lambda: from_signs("signs32", 0.32),
                "signs_clustered": lambda: from_signs("signs_clustered", None)}  # fmt: skip
    for name in a.only or BENCHES:
        builders[name]().write()
    print(f"wrote to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
