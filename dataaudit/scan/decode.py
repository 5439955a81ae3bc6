"""Decode one file's bytes with Pillow, recording every failure instead of raising.

A bad file is a row, not an exception: :func:`decode` returns a :class:`Decoded` whose
``status`` says what happened (``ok``, ``empty``, ``not_image``, ``truncated``,
``unreadable``, ``bomb``, ``unsupported``) together with the error class and message.
"""

from __future__ import annotations

import io
import re
import warnings
import zlib
from dataclasses import dataclass, field

from PIL import Image

from dataaudit.scan.pixels import pixel_bytes

# Magic numbers for the formats we name ourselves; Pillow identifies the rest.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"WEBP", 8, "WEBP"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG2000"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypheic", 4, "HEIF"),
    (b"ftypmif1", 4, "HEIF"),
)

# Formats Pillow reads only with an optional plugin or codec.
_NEEDS_PLUGIN = frozenset({"AVIF", "HEIF", "JPEG2000"})

# Which extensions each format may carry; anything else is a wrong extension.
FORMAT_EXTENSIONS: dict[str, frozenset[str]] = {
    "JPEG": frozenset({".jpg", ".jpeg", ".jpe", ".jfif"}),
    "MPO": frozenset({".jpg", ".jpeg", ".mpo"}),
    "PNG": frozenset({".png"}),
    "GIF": frozenset({".gif"}),
    "BMP": frozenset({".bmp", ".dib"}),
    "DIB": frozenset({".bmp", ".dib"}),
    "TIFF": frozenset({".tif", ".tiff"}),
    "WEBP": frozenset({".webp"}),
    "JPEG2000": frozenset({".jp2", ".j2k", ".jpx", ".jpf"}),
    "PPM": frozenset({".ppm", ".pgm", ".pbm", ".pnm"}),
    "ICO": frozenset({".ico"}),
    "TGA": frozenset({".tga"}),
    "PSD": frozenset({".psd"}),
    "AVIF": frozenset({".avif"}),
    "HEIF": frozenset({".heic", ".heif"}),
}

# The only Pillow plugins a file may reach, whatever its name or bytes: everything else
# (EPS, which hands PostScript to Ghostscript; PCX, SGI, FITS, ... which match loosely) is
# recorded as an unsupported format and never decoded. MPO comes through the JPEG plugin.
ALLOWED_FORMATS: tuple[str, ...] = tuple(f for f in FORMAT_EXTENSIONS if f != "MPO")

_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")

# Pillow's own hard limit is twice MAX_IMAGE_PIXELS (about 179 megapixels).
DEFAULT_BOMB_PIXELS = 2 * 89_478_485


def sniff_format(data: bytes) -> str | None:
    """Name the image format from magic bytes, or None when none matches."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


def describe_non_image(data: bytes) -> str:
    """A short human description of bytes that are not an image (HTML page, text, ...)."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "HTML/XML text, not an image (often an error page saved by a downloader)"
    if head.startswith((b"{", b"[")):
        return "JSON text, not an image"
    try:
        head.decode("utf-8")
        return "text, not an image"
    except UnicodeDecodeError:
        return "no known image signature (random or unknown bytes)"


@dataclass
class Decoded:
    """What decoding learned about a file. ``image`` is set only when status is ok."""

    status: str
    error_class: str | None = None
    error_message: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    n_frames: int | None = None
    exif_orientation: int | None = None
    exif: dict[str, str] = field(default_factory=dict)
    transparency: bool = False
    decode_scale: int = 1
    trailing_bytes: bool = False
    image: Image.Image | None = None


_EXIF_KEEP = {
    0x010F: "Make",
    0x0110: "Model",
    0x0131: "Software",
    0x0132: "DateTime",
    0x0112: "Orientation",
    0x011A: "XResolution",
    0x011B: "YResolution",
    0x8298: "Copyright",
    0x013B: "Artist",
}


def decode(
    data: bytes,
    draft_size: int | None = None,
    bomb_pixels: int = DEFAULT_BOMB_PIXELS,
    max_decoded_bytes: int | None = None,
):
    """Decode ``data``; for JPEG, use DCT scaling so the result is at least ``draft_size``.

    An image whose pixels would take more than ``max_decoded_bytes`` in memory (after
    draft scaling) is a ``bomb``, not decoded. Never raises: every failure becomes a
    status with its error class and message.
    """
    try:
        return _decode(data, draft_size, bomb_pixels, max_decoded_bytes)
    except Exception as exc:  # a decoder bug must not stop a scan of a million files
        return Decoded("unreadable", type(exc).__name__, _short(exc))


def _decode(
    data: bytes, draft_size: int | None, bomb_pixels: int, max_decoded_bytes: int | None
) -> Decoded:
    if not data:
        return Decoded("empty", "EmptyFile", "file has zero bytes")
    sniffed = sniff_format(data)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, knowing the size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Exception as exc:
        other = _disallowed_format(data) if sniffed is None else None
        if other is not None:
            return Decoded(
                "unsupported",
                "DisallowedFormat",
                f"{other} is not among the formats dataaudit decodes; not decoded",
                format=other,
            )
        if sniffed is None:
            return Decoded("not_image", "NotAnImage", describe_non_image(data))
        status = "unsupported" if sniffed in _NEEDS_PLUGIN else "unreadable"
        if status == "unreadable" and _ends_early(data, sniffed, exc):
            status = "truncated"  # cut inside the header: the common partial download
        return Decoded(status, type(exc).__name__, _short(exc), format=sniffed)
    finally:
        Image.MAX_IMAGE_PIXELS = limit

    d = Decoded("ok", format=im.format or sniffed, width=im.width, height=im.height, mode=im.mode)
    d.n_frames = int(getattr(im, "n_frames", 1) or 1)
    d.transparency = "transparency" in im.info
    try:
        exif = im.getexif()
        d.exif_orientation = int(exif.get(0x0112)) if exif.get(0x0112) else None
        d.exif = {name: _short_value(exif[tag]) for tag, name in _EXIF_KEEP.items() if tag in exif}
    except Exception:  # a broken EXIF block is not a broken image
        d.exif = {}

    if im.width * im.height > bomb_pixels:
        d.status, d.error_class = "bomb", "DecompressionBombError"
        d.error_message = (
            f"{im.width}x{im.height} = {im.width * im.height:,} pixels exceeds the "
            f"{bomb_pixels:,}-pixel limit; not decoded"
        )
        return d
    if im.width == 0 or im.height == 0:
        d.status, d.error_class, d.error_message = "unreadable", "ZeroSize", "header says 0 pixels"
        return d

    if d.format == "JPEG":
        d.trailing_bytes = not data.rstrip(b"\x00").endswith(b"\xff\xd9")
        if draft_size and min(im.size) >= 2 * draft_size:
            im.draft("RGB" if im.mode == "RGB" else im.mode, (draft_size, draft_size))
            d.decode_scale = max(1, round(d.width / im.width))
    need = im.width * im.height * pixel_bytes(im.mode)
    if max_decoded_bytes is not None and need > max_decoded_bytes:
        d.status, d.error_class = "bomb", "DecodedSizeLimit"
        d.error_message = (
            f"decoding needs {need / 2**20:,.0f} MB ({im.width}x{im.height} {im.mode}), over "
            f"the {max_decoded_bytes / 2**20:,.0f} MB per-image limit; not decoded"
        )
        return d
    if d.format == "PNG":
        bad_chunk = png_crc_error(data)
        if bad_chunk:
            d.status, d.error_class = "corrupt", "PNGChecksumError"
            d.error_message = f"CRC mismatch in chunk {bad_chunk}"
            return d
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except Exception as exc:
        msg = _short(exc)
        truncated = "truncated" in msg.lower() or isinstance(exc, EOFError) or "EOF" in msg
        unsupported = "not available" in msg or "not supported" in msg.lower()
        d.status = "truncated" if truncated else "unsupported" if unsupported else "unreadable"
        d.error_class, d.error_message = type(exc).__name__, msg
        return d
    d.image = im
    if d.trailing_bytes:
        d.error_message = "decodes, but bytes follow the JPEG end-of-image marker"
    return d


def _allowed_formats() -> list[str]:
    """The allow-list, less plugins this Pillow lacks (a HEIF plugin registers on import)."""
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def _disallowed_format(data: bytes) -> str | None:
    """Name a format Pillow knows but we do not decode, from its signature check alone.

    Only the plugins' ``accept`` tests run (byte comparisons on the first 16 bytes); no
    plugin opens the file. Plugins without a signature (they accept anything) are skipped.
    """
    prefix = data[:16]
    for name, (_factory, accept) in Image.OPEN.items():
        if name in ALLOWED_FORMATS or accept is None:
            continue
        try:
            match = accept(prefix)
        except Exception:  # a plugin's check failing on odd bytes is not a match
            continue
        if match and not isinstance(match, str):  # a str is Pillow's "almost, but" warning
            return name
    return None


def _ends_early(data: bytes, sniffed: str, exc: BaseException) -> bool:
    """Whether a header that failed to parse looks cut short rather than malformed."""
    msg = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in msg:
        return True
    if sniffed == "PNG":
        return b"IEND" not in data[-12:]
    if sniffed == "JPEG":
        return b"\xff\xd9" not in data
    return False


def png_crc_error(data: bytes) -> str | None:
    """Return the name of the first PNG chunk whose CRC does not match, else None.

    Pillow skips CRC checks on image data, so a flipped bit in IDAT decodes silently;
    stricter loaders (libpng) then fail at training time.
    """
    pos = 8
    n = len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > n:
            return None  # truncated: the decoder reports that more precisely
        if zlib.crc32(data[pos + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return ctype.decode("latin-1")
        if ctype == b"IEND":
            return None
        pos = end + 4
    return None


def extension_matches(fmt: str | None, ext: str) -> bool | None:
    """Whether the content format may carry this extension (None if unknown format)."""
    if fmt is None:
        return None
    allowed = FORMAT_EXTENSIONS.get(fmt)
    if allowed is None:  # a format we do not decode: only its own extensions fit
        allowed = {e for e, f in Image.registered_extensions().items() if f == fmt}
    return ext.lower() in allowed


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = str(exc) or type(exc).__name__
    msg = _OBJECT_REPR.sub("", msg).strip()  # "<_io.BytesIO object at 0x...>" differs per run
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _short_value(value: object, limit: int = 120) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip("\x00 ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
