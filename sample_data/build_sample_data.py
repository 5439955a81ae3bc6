"""Build the shipped sample dataset: 250 real hand-sign photos with a few known issues planted.

Run from the repository root:

    python sample_data/build_sample_data.py                       # rebuild sample_data/ in place
    python sample_data/build_sample_data.py --source DIR --out DIR

It reads the Sign Language Digits Dataset (default: ../shared/datasets/signs next to the repo)
and writes, under --out (default: the folder holding this script):

    train/{0..9}/*.jpg, test/{0..9}/*.jpg   ImageFolder layout with splits
    truth.csv                               path,issue,group,note: one row per planted issue
    README.md                               what the dataset is, its licence, the planted issues
    LICENSE                                 the source dataset's Apache-2.0 licence

Untouched photos are copied byte for byte. Every planted issue uses its own source photo, so
each file carries one planted issue. The build is deterministic (fixed seed, sorted listings):
with the same Pillow and numpy a rebuild is byte-identical, and the test suite checks that.
After writing, the builder re-opens every file and checks each truth row against its claim.
Needs only the standard library, Pillow and numpy.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

SEED = 20240607
PER_CLASS = 25  # source photos per class
TEST_PER_CLASS = 5  # of those, how many go to test/ (80/20 split)
CLASSES = [str(d) for d in range(10)]
SIDE = 100  # every ordinary source photo is 100x100
JPEG_Q = 90  # one encoder setting for re-encoded files, unless quality is the point
BIG_SOURCE = "7/IMG_5874.JPG"  # a 3024x3024 camera original stored with EXIF orientation 6
BIG_SIDE = 504
SMALL_FILE = 200_000  # bytes; larger source files are camera originals, not 100x100 crops
LOOKALIKE = 0.8  # grey 32x32 correlation above which two distinct photos count as look-alikes
GENERATED = ["train", "test", "truth.csv", "README.md", "LICENSE"]
DEFAULT_SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "signs"
ISSUES = [
    "exact_duplicate",
    "near_duplicate",
    "leakage",
    "corrupt",
    "wrong_extension",
    "dark",
    "light",
    "blurry",
    "grayscale",
    "odd_size",
    "odd_aspect_ratio",
    "low_information",
    "outlier",
    "label_error",
]
DUPLICATE_ISSUES = {"exact_duplicate", "near_duplicate", "leakage"}
# Macintosh Finder metadata: the real file starts with this "Bud1" buddy-allocator header.
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(2036)
NOTES = (
    "Photos from the school session, second batch.\n"
    "Class folders are the digit shown by the hand.\n"
    "TODO: re-check the blurry ones before training.\n"
)


# ----------------------------------------------------------------------------- image helpers
def encode(im: Image.Image, fmt: str = "JPEG", quality: int = JPEG_Q) -> bytes:
    """Encode without metadata, so planted files differ from originals only as intended."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, fmt)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.convert("RGB")


def to_img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(a, np.float64), 0, 255).round().astype(np.uint8))


def stats(im: Image.Image) -> dict[str, float]:
    """The measurements that decide which issue thresholds an image crosses."""
    g = np.asarray(im.convert("L"), np.float64)
    a = np.asarray(im.convert("RGB"), np.int16)
    edges = np.asarray(im.convert("L").filter(ImageFilter.FIND_EDGES), np.float64)
    return {
        "mean": float(g.mean()),
        "std": float(g.std()),
        "edge_var": float(edges[1:-1, 1:-1].var()) if min(g.shape) > 2 else 0.0,
        "chan_diff": float(
            max(np.abs(a[..., 0] - a[..., 1]).max(), np.abs(a[..., 1] - a[..., 2]).max())
        ),
        "w": im.width,
        "h": im.height,
    }


def crossed(s: dict[str, float]) -> set[str]:
    """Issues whose (benchmark) threshold this image crosses; used for also_ok tags."""
    out = set()
    if s["mean"] < 60:
        out.add("dark")
    if s["mean"] > 215:
        out.add("light")
    if s["std"] < 12:
        out.add("low_information")
    if s["chan_diff"] <= 3:
        out.add("grayscale")
    if s["edge_var"] < 250:
        out.add("blurry")
    if (s["w"], s["h"]) != (SIDE, SIDE):
        out.add("odd_size")
    if max(s["w"], s["h"]) / min(s["w"], s["h"]) >= 2:
        out.add("odd_aspect_ratio")
    return out


def grey_thumb(im: Image.Image, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    if box is not None:
        im = im.crop(box)
    t = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float64)
    return (t - t.mean()).ravel()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def truncate_jpeg(data: bytes, keep: float) -> bytes:
    """Keep the headers and the first `keep` share of the entropy-coded scan, as a cut download."""
    sos = data.index(b"\xff\xda")
    return data[: sos + int((len(data) - sos) * keep)]


def random_bytes(rng: np.random.Generator, n: int) -> bytes:
    """Noise that starts with no known image signature."""
    data = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    data[0] = 0x5A  # not 0xFF (JPEG), 0x89 (PNG), 'G' (GIF), 'B' (BMP), 'R' (RIFF), 'I'/'M' (TIFF)
    return bytes(data)


# ----------------------------------------------------------------------------- out-of-domain scenes
def landscape(rng: np.random.Generator) -> Image.Image:
    """Sky gradient, a sun and three ridges of mountains: nothing like a hand on a wall."""
    y = np.linspace(0, 1, SIDE)[:, None, None]
    sky = np.array([40, 110, 215]) * (1 - y) + np.array([250, 185, 120]) * y
    im = to_img(np.broadcast_to(sky, (SIDE, SIDE, 3)))
    d = ImageDraw.Draw(im)
    cx, cy, r = int(rng.integers(20, 80)), int(rng.integers(14, 30)), 10
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 235, 90))
    ridges = [(45, (95, 80, 120)), (62, (50, 95, 60)), (80, (25, 60, 30))]
    for base, colour in ridges:
        walk = base + np.cumsum(rng.normal(0, 2.5, SIDE + 1))
        pts = [(x, float(walk[x])) for x in range(SIDE + 1)] + [(SIDE, SIDE), (0, SIDE)]
        d.polygon(pts, fill=colour)
    return to_img(np.asarray(im, np.float64) + rng.normal(0, 2.0, (SIDE, SIDE, 3)))


def circuit(rng: np.random.Generator) -> Image.Image:
    """A green board with copper stripes, traces, pads and black chips."""
    im = Image.new("RGB", (SIDE, SIDE), (20, 105, 55))
    d = ImageDraw.Draw(im)
    for y0 in range(4, SIDE, 12):  # parallel bus stripes
        d.rectangle((0, y0, SIDE, y0 + 2), fill=(200, 150, 60))
    for _ in range(14):
        x, y = (int(v) for v in rng.integers(0, SIDE, size=2))
        for k in range(3):
            step = int(rng.integers(-35, 36))
            nx, ny = (
                (min(max(x + step, 0), SIDE), y) if k % 2 == 0 else (x, min(max(y + step, 0), SIDE))
            )
            d.line((x, y, nx, ny), fill=(235, 205, 120), width=2)
            x, y = nx, ny
        d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(230, 230, 225))
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(5, 70, size=2))
        w, h = (int(v) for v in rng.integers(14, 28, size=2))
        d.rectangle((x, y, x + w, y + h), fill=(18, 18, 22))
    return to_img(np.asarray(im, np.float64) + rng.normal(0, 2.0, (SIDE, SIDE, 3)))


# ----------------------------------------------------------------------------- the build
@dataclass
class Row:
    path: str
    issue: str
    group: str = ""
    note: dict[str, str] = field(default_factory=dict)
    also_ok: set[str] = field(default_factory=set)


@dataclass
class Sample:
    """Files in memory (relative path -> bytes) plus the truth rows, before anything is written."""

    source: Path
    rng: np.random.Generator
    files: dict[str, bytes] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # untouched sample paths, in random order
    lookalike: dict[str, float] = field(default_factory=dict)  # path -> best correlation

    def take(self, split: str | None = None, distinct: bool = False) -> str:
        """Next untouched photo (optionally from one split); no photo serves two plants.

        distinct: skip photos with a natural look-alike in the sample, so that a planted copy
        is clearly closer to its partner than any unplanted pair is.
        """
        for rel in self.unused:
            if (split is None or rel.startswith(split + "/")) and (
                not distinct or self.lookalike[rel] < LOOKALIKE
            ):
                self.unused.remove(rel)
                return rel
        raise RuntimeError(f"no unused source photo left in split {split}")

    def img(self, rel: str) -> Image.Image:
        return decode(self.files[rel])

    def add(self, rel: str, data: bytes) -> None:
        assert rel not in self.files, rel
        self.files[rel] = data

    def move(self, old: str, new: str) -> None:
        """Rename a file, bytes untouched."""
        assert new not in self.files, new
        self.files[new] = self.files.pop(old)

    def replace(self, rel: str, data: bytes, issue: str, **note: object) -> None:
        self.files[rel] = data
        self.rows.append(Row(rel, issue, note=_note(note)))


def _note(kv: dict[str, object]) -> dict[str, str]:
    return {k: (f"{v:.3g}" if isinstance(v, float) else str(v)) for k, v in kv.items()}


def stem(rel: str) -> str:
    return rel.rsplit("/", 1)[1].rsplit(".", 1)[0]


def folder(rel: str) -> str:
    return rel.rsplit("/", 1)[0]


def select_sources(source: Path, rng: np.random.Generator) -> dict[str, str]:
    """Pick PER_CLASS ordinary 100x100 photos per class and split them 80/20.

    Returns sample path (split/class/name.jpg) -> source path (class/NAME.JPG).
    """
    chosen: dict[str, str] = {}
    for cls in CLASSES:
        names = sorted(p.name for p in (source / cls).iterdir() if p.suffix.lower() == ".jpg")
        # the 100x100 crops are ~12 kB, the camera originals ~1.5 MB: a stat is enough to tell
        names = [n for n in names if (source / cls / n).stat().st_size < SMALL_FILE]
        picked = sorted(rng.choice(names, PER_CLASS, replace=False).tolist())
        test = set(rng.choice(picked, TEST_PER_CLASS, replace=False).tolist())
        for n in picked:
            split = "test" if n in test else "train"
            chosen[f"{split}/{cls}/{Path(n).stem}.jpg"] = f"{cls}/{n}"
    return chosen


def best_lookalike(images: dict[str, Image.Image]) -> dict[str, float]:
    """Each photo's highest grey-thumbnail correlation with any other photo."""
    names = sorted(images)
    m = np.array([grey_thumb(images[n]) for n in names])
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    c = m @ m.T
    np.fill_diagonal(c, -1)
    return dict(zip(names, c.max(axis=1).tolist(), strict=True))


def busiest_band(im: Image.Image, width: int, vertical: bool) -> tuple[int, int, int, int]:
    """The full-height or full-width strip with the most grey variance, i.e. through the hand."""
    g = np.asarray(im.convert("L"), np.float64)
    n = g.shape[1] if vertical else g.shape[0]
    starts = range(15, n - width - 15)  # keep away from the photo's border
    spread = [(g[:, k : k + width] if vertical else g[k : k + width]).std() for k in starts]
    k = starts[int(np.argmax(spread))]
    return (k, 0, k + width, im.height) if vertical else (0, k, im.width, k + width)


def plant(s: Sample) -> None:
    """Plant every issue; each plant consumes one untouched photo (outliers consume none)."""
    rng = s.rng

    # exact_duplicate: byte copy next to the original
    for _ in range(3):
        rel = s.take(distinct=True)
        copy = f"{folder(rel)}/{stem(rel)}_copy.jpg"
        s.add(copy, s.files[rel])
        s.rows.append(Row(copy, "exact_duplicate", rel, {"variant": "byte_copy"}))

    # near_duplicate: three kinds of edited copy next to the original, kept at 100x100
    def resize_recompress(im: Image.Image) -> tuple[Image.Image, int, dict[str, object]]:
        small = im.resize((70, 70), Image.Resampling.LANCZOS)
        return (
            small.resize((SIDE, SIDE), Image.Resampling.BICUBIC),
            35,
            {"scale": 0.7, "jpeg_q": 35},
        )

    def brightness(im: Image.Image) -> tuple[Image.Image, int, dict[str, object]]:
        return to_img(np.asarray(im, np.float64) * 0.88), JPEG_Q, {"brightness": 0.88}

    def crop(im: Image.Image) -> tuple[Image.Image, int, dict[str, object]]:
        m = 8  # 8 % off each side, scaled back up to 100x100
        box = (m, m, SIDE - m, SIDE - m)
        return (
            im.crop(box).resize((SIDE, SIDE), Image.Resampling.LANCZOS),
            JPEG_Q,
            {"crop_frac": 0.08},
        )

    for name, edit in [
        ("resize_recompress", resize_recompress),
        ("brightness", brightness),
        ("crop", crop),
    ]:
        rel = s.take(distinct=True)
        im, q, params = edit(s.img(rel))
        copy = f"{folder(rel)}/{stem(rel)}_v2.jpg"
        s.add(copy, encode(im, quality=q))
        s.rows.append(Row(copy, "near_duplicate", rel, _note({"variant": name, **params})))

    # leakage: a train photo also lands in test/ of the same class, under its own name
    rel = s.take("train", distinct=True)
    leak = rel.replace("train/", "test/", 1)
    s.add(leak, s.files[rel])
    s.rows.append(
        Row(leak, "leakage", rel, {"variant": "byte_copy"}, {"exact_duplicate", "near_duplicate"})
    )
    rel = s.take("train", distinct=True)
    leak = rel.replace("train/", "test/", 1)
    s.add(leak, encode(s.img(rel), quality=40))
    s.rows.append(
        Row(leak, "leakage", rel, {"variant": "recompress", "jpeg_q": "40"}, {"near_duplicate"})
    )

    # corrupt: a cut download, an empty file and noise with a .jpg name
    rel = s.take()
    s.replace(
        rel, truncate_jpeg(s.files[rel], 0.45), "corrupt", subtype="truncated", kept_scan=0.45
    )
    rel = s.take()
    s.replace(rel, b"", "corrupt", subtype="zero_byte")
    rel = s.take()
    s.replace(rel, random_bytes(rng, 3000), "corrupt", subtype="random_bytes", n_bytes=3000)

    # wrong_extension: PNG bytes behind .jpg, and an untouched JPEG renamed to .png
    rel = s.take()
    s.replace(
        rel, encode(s.img(rel), "PNG"), "wrong_extension", actual_format="PNG", extension=".jpg"
    )
    rel = s.take()
    png = f"{folder(rel)}/{stem(rel)}.png"
    s.move(rel, png)
    s.rows.append(Row(png, "wrong_extension", note={"actual_format": "JPEG", "extension": ".png"}))

    # dark, light, blurry, grayscale: the photo is replaced in place
    for f in (0.12, 0.18):
        rel = s.take()
        im = to_img(np.asarray(s.img(rel), np.float64) * f)
        s.replace(rel, encode(im), "dark", factor=f)
    for f in (0.1, 0.16):
        rel = s.take()
        im = to_img(255 - (255 - np.asarray(s.img(rel), np.float64)) * f)
        s.replace(rel, encode(im), "light", factor=f)
    for r in (2.5, 2.8):
        rel = s.take()
        s.replace(rel, encode(s.img(rel).filter(ImageFilter.GaussianBlur(r))), "blurry", radius=r)
    for _ in range(2):
        rel = s.take()
        im = s.img(rel).convert("L").convert("RGB")
        s.replace(rel, encode(im), "grayscale", variant="L_then_RGB")

    # odd_size: a 16x16 thumbnail, and the 3024 px camera original of class 7 at 504x504
    rel = s.take()
    im = s.img(rel).resize((16, 16), Image.Resampling.LANCZOS)
    s.replace(rel, encode(im), "odd_size", size="16x16", orig_size="100x100")
    with Image.open(s.source / BIG_SOURCE) as big:
        orientation = big.getexif().get(0x0112, 1)
        big_im = ImageOps.exif_transpose(big).convert("RGB")
    big_im = big_im.resize((BIG_SIDE, BIG_SIDE), Image.Resampling.LANCZOS)
    big_rel = f"train/7/{Path(BIG_SOURCE).stem}.jpg"
    s.add(big_rel, encode(big_im))
    note = {
        "size": f"{BIG_SIDE}x{BIG_SIDE}",
        "orig_size": "3024x3024",
        "exif_orientation": orientation,
        "source": "preexisting_in_source_dataset",
    }
    s.rows.append(Row(big_rel, "odd_size", note=_note(note)))

    # odd_aspect_ratio: a 100x20 strip and a 25x100 one, each through the hand
    for width, vertical in ((20, False), (25, True)):
        rel = s.take()
        im = s.img(rel)
        im = im.crop(busiest_band(im, width, vertical))
        s.replace(rel, encode(im), "odd_aspect_ratio", size=f"{im.width}x{im.height}")

    # low_information: the photo's mean colour with slight noise
    for sd in (1.5, 3.0):
        rel = s.take()
        a = np.asarray(s.img(rel), np.float64)
        mean = a.reshape(-1, 3).mean(0)
        flat = np.broadcast_to(mean, a.shape) + rng.normal(0, sd, a.shape)
        rgb = "/".join(str(round(v)) for v in mean)
        s.replace(rel, encode(to_img(flat)), "low_information", mean_rgb=rgb, noise_sd=sd)

    # outlier: out-of-domain synthetic scenes dropped into class folders
    for split, make in (("train", landscape), ("test", circuit)):
        cls = CLASSES[int(rng.integers(len(CLASSES)))]
        rel = f"{split}/{cls}/scene_{make.__name__}.jpg"
        s.add(rel, encode(make(rng)))
        s.rows.append(Row(rel, "outlier", note={"source": f"synthetic:{make.__name__}"}))

    # label_error: untouched photos moved to a wrong class folder
    for _ in range(3):
        rel = s.take()
        split, true = rel.split("/")[:2]
        given = CLASSES[(int(true) + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)]
        moved = f"{split}/{given}/{rel.rsplit('/', 1)[1]}"
        s.move(rel, moved)
        s.rows.append(Row(moved, "label_error", note={"true_label": true, "given_label": given}))


def tag_secondary(s: Sample) -> None:
    """Add also_ok tags: a tool that also calls a dark image low in information is not wrong."""
    for r in s.rows:
        if r.issue == "exact_duplicate":
            r.also_ok.add("near_duplicate")
        if r.issue == "outlier":
            r.also_ok.add("label_error")
        if r.issue == "corrupt":
            continue
        r.also_ok |= crossed(stats(decode(s.files[r.path]))) - {r.issue}


def build(source: Path) -> tuple[dict[str, bytes], list[Row]]:
    """Everything the sample holds, in memory: files by relative path, and truth rows."""
    if not (source / "0").is_dir():
        sys.exit(f"error: {source} does not hold the signs dataset (folders 0..9); use --source")
    rng = np.random.default_rng(SEED)
    chosen = select_sources(source, rng)
    s = Sample(source, rng)
    for rel in sorted(chosen):
        s.add(rel, (source / chosen[rel]).read_bytes())
    s.unused = [str(p) for p in rng.permutation(sorted(s.files))]
    images = {rel: s.img(rel) for rel in s.files}
    odd = [rel for rel, im in images.items() if im.size != (SIDE, SIDE)]
    if odd:
        sys.exit(f"error: source photos are not {SIDE}x{SIDE}: {odd}")
    s.lookalike = best_lookalike(images)
    plant(s)
    tag_secondary(s)
    s.files["train/4/.DS_Store"] = DS_STORE
    s.files["train/0/notes.txt"] = NOTES.encode()
    s.rows.sort(key=lambda r: (r.path, r.issue))
    return s.files, s.rows


# ----------------------------------------------------------------------------- checks
def verify(files: dict[str, bytes], rows: list[Row]) -> list[str]:
    """Check every truth row against the bytes; return the failures (empty when all hold)."""
    bad: list[str] = []
    truth = {r.path: r for r in rows}
    if len(truth) != len(rows):
        bad.append("a file has two truth rows")
    for r in rows:
        data = files.get(r.path)
        if data is None or (r.group and r.group not in files):
            bad.append(f"{r.path}: missing file or group")
            continue
        if r.issue == "corrupt":
            try:
                decode(data)
                bad.append(f"{r.path}: decodes but is marked corrupt")
            except Exception:  # noqa: BLE001 - any decode failure is what we want here
                pass
            continue
        im = decode(data)
        st = stats(im)
        if r.issue == "exact_duplicate" or r.note.get("variant") == "byte_copy":
            ok = data == files[r.group]
        elif r.issue in DUPLICATE_ISSUES:
            orig = decode(files[r.group])
            box = (8, 8, SIDE - 8, SIDE - 8) if "crop_frac" in r.note else None
            ok = correlation(grey_thumb(im), grey_thumb(orig, box)) >= 0.95
        elif r.issue == "wrong_extension":
            is_png = data.startswith(b"\x89PNG")
            ok = is_png != r.path.endswith(".png") and (is_png or data.startswith(b"\xff\xd8"))
        elif r.issue == "label_error":
            ok = r.path.split("/")[1] != r.note["true_label"]
        elif r.issue == "outlier":
            ok = not crossed(st)
        else:
            ok = r.issue in crossed(st)
        if r.issue == "leakage":
            ok = ok and r.path.startswith("test/") and r.group.startswith("train/")
            ok = ok and r.path.split("/")[1] == r.group.split("/")[1]
        if not ok:
            bad.append(f"{r.path}: {r.issue} check failed ({st})")
    # no unexplained byte-identical files
    by_hash: dict[str, list[str]] = {}
    for rel, data in files.items():
        by_hash.setdefault(hashlib.sha256(data).hexdigest(), []).append(rel)
    explained = {frozenset((r.path, r.group)) for r in rows if r.group}
    for group in by_hash.values():
        if len(group) > 1 and frozenset(group) not in explained:
            bad.append(f"unexplained identical files: {sorted(group)}")
    return bad


# ----------------------------------------------------------------------------- writing
def truth_csv(rows: list[Row]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "issue", "group", "note"])
    for r in rows:
        note = dict(r.note)
        if r.also_ok:
            note["also_ok"] = ",".join(sorted(r.also_ok))
        w.writerow([r.path, r.issue, r.group, ";".join(f"{k}={v}" for k, v in note.items())])
    return buf.getvalue().encode()


def untouched_stats(files: dict[str, bytes], rows: list[Row]) -> dict[str, tuple[float, float]]:
    """Ranges of the measurements over files with no planted issue, to help pick thresholds."""
    planted = {r.path for r in rows} | {r.group for r in rows}
    found: dict[str, list[float]] = {}
    for rel, data in files.items():
        if rel in planted or not rel.endswith(".jpg"):
            continue
        for k, v in stats(decode(data)).items():
            found.setdefault(k, []).append(v)
    return {k: (min(v), max(v)) for k, v in found.items()}


def readme(files: dict[str, bytes], rows: list[Row], attribution: str, commit: str) -> bytes:
    """README text generated from the truth rows, so the table can never drift from them."""
    images = [p for p in files if p.endswith((".jpg", ".png"))]
    n_train = sum(p.startswith("train/") for p in images)
    table = ["| issue | file | partner (`group`) | how |", "|---|---|---|---|"]
    for issue in ISSUES:
        for r in (r for r in rows if r.issue == issue):
            how = "; ".join(f"{k}={v}" for k, v in r.note.items())
            group = f"`{r.group}`" if r.group else ""
            table.append(f"| `{issue}` | `{r.path}` | {group} | {how} |")
    st = untouched_stats(files, rows)

    def rng_(k: str) -> str:
        return f"{st[k][0]:,.0f}-{st[k][1]:,.0f}"

    text = f"""# sample_data: real photos with known issues

A small, real image dataset for trying `dataaudit` and for its tests: {len(images)} photos of
a hand showing the digits 0-9 (from the Sign Language Digits Dataset) in ImageFolder layout
with a train/test split, `{{train,test}}/{{0..9}}/*.jpg` ({n_train} train, {len(images) - n_train}
test). A few issues of every kind `dataaudit` looks for were planted on purpose, and
`truth.csv` lists each of them ({len(rows)} rows). Point `dataaudit` at this folder and
compare what it reports with the table below.

## How it was built

`build_sample_data.py` (standard library, Pillow and numpy; fixed seed) rebuilds this folder
from the source dataset, byte for byte with the same library versions:

```
python sample_data/build_sample_data.py                      # source: ../shared/datasets/signs
python sample_data/build_sample_data.py --source PATH/TO/signs --out DIR
```

1. **Pick.** {PER_CLASS} of the 100x100 photos of each class, chosen at random, split
   {PER_CLASS - TEST_PER_CLASS}/{TEST_PER_CLASS} into `train/` and `test/`. They keep their
   original names (`IMG_1234.JPG` becomes `IMG_1234.jpg`) and, where untouched, their bytes,
   EXIF metadata included.
2. **Plant.** Each planted issue uses its own source photo, so every file carries one planted
   issue and every duplicate's partner is untouched. Altered images are re-encoded as JPEG
   quality {JPEG_Q} without metadata (unless the quality is part of the issue). Copies are
   named `*_copy.jpg` (byte copy) or `*_v2.jpg` (edited copy); a leaked file keeps its train
   name; out-of-domain images are named `scene_*.jpg`. Duplicates and leaks are made only
   from photos without a natural look-alike in the sample.
3. **Check.** The builder re-opens every file and checks each truth row against its claim:
   corrupt files fail to decode, byte copies are identical and edited copies correlate
   with their partner, the extension and the magic bytes disagree, label errors sit outside
   their true class, the dark/light/blurry/grayscale/size thresholds hold, outliers cross
   none of them, and no two files are byte-identical unless the truth says so.

## Planted issues

{chr(10).join(table)}

`train/7/IMG_5874.jpg` is a real issue of the source dataset: one of three 3024x3024 camera
originals among its 100x100 crops, stored rotated (EXIF orientation 6). Here it is turned
upright and shrunk to 504x504 to save space, still 25 times the usual area.

Real folders also hold files that are not images: `train/4/.DS_Store` (Finder metadata) and
`train/0/notes.txt`. They are not issues; a scan should count them and skip them.

## truth.csv

Columns `path,issue,group,note`, with paths relative to this folder: the same format as the
`signs_planted` benchmark, so its `score.py` can score a run on this sample too.
- `group` is set for `exact_duplicate`, `near_duplicate` and `leakage`: the partner file (the
  original, or the train-side file for leakage). Both files of a pair count as positives.
- `note` holds `key=value` pairs joined by `;`: the parameters of each plant, `true_label=N`
  for label errors, and `also_ok=a,b` for other issue types a tool may fairly report for
  that file (a dark image is also low in information; a leaked byte copy is also an exact
  duplicate).

The files with no planted issue are all 100x100 and measure: grey mean {rng_("mean")}, grey
standard deviation {rng_("std")}, variance of Pillow's FIND_EDGES {rng_("edge_var")}, and
largest |R-G| or |G-B| {rng_("chan_diff")}. Different students took very similar photos, so a
few untouched pairs look alike without being duplicates.

## Licence and attribution

The photos come from the **Sign Language Digits Dataset**,
<https://github.com/ardamavi/Sign-Language-Digits-Dataset> (commit `{commit}`), licensed under
the Apache License 2.0; its licence text is in `LICENSE`. This folder is a modified subset:
files were selected, renamed to a lower-case extension, and some were altered, copied or
moved as listed above.

### ATTRIBUTION

{attribution.strip()}
"""
    return text.encode()


def attribution_text(source: Path) -> tuple[str, str]:
    """Authors, licence and citation lines, and the commit, from the source's ATTRIBUTION.md."""
    text = (source / "ATTRIBUTION.md").read_text()
    m = re.search(r"commit ([0-9a-f]{7,40})", text)
    commit = m.group(1)[:8] if m else "unknown"
    keep, on = [], False
    for line in text.splitlines():
        if line.startswith("- **Authors:**"):
            on = True
        elif on and not line.startswith(("-", " ")):
            break
        if on:
            keep.append(line)
    if not keep:
        sys.exit(f"error: no '- **Authors:**' section in {source / 'ATTRIBUTION.md'}")
    lines = "\n".join(keep)
    return lines.replace(
        "see `LICENSE` (copied from the dataset's repository)", "see `LICENSE`"
    ), commit


def write(out: Path, files: dict[str, bytes], extra: dict[str, bytes]) -> None:
    """Write into a scratch folder, then swap each generated item into place."""
    out.mkdir(parents=True, exist_ok=True)
    scratch, old = out / ".build-new", out / ".build-old"
    for p in (scratch, old):
        shutil.rmtree(p, ignore_errors=True)
    for rel, data in {**files, **extra}.items():
        path = scratch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    old.mkdir()
    for name in GENERATED:
        if (out / name).exists():
            (out / name).rename(old / name)
        (scratch / name).rename(out / name)
    shutil.rmtree(old)
    shutil.rmtree(scratch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="signs dataset (0..9)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    files, rows = build(args.source)
    problems = verify(files, rows)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    extra = {
        "truth.csv": truth_csv(rows),
        "README.md": readme(files, rows, *attribution_text(args.source)),
        "LICENSE": (args.source / "LICENSE").read_bytes(),
    }
    write(args.out, files, extra)
    size = sum(len(d) for d in files.values()) + sum(len(d) for d in extra.values())
    print(
        f"wrote {len(files)} files ({size / 1e6:.2f} MB) and {len(rows)} truth rows to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
