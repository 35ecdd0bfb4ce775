"""Image and label decoding, and the two rules of every file a command writes.

RGB PNGs are decoded with torchvision's libpng binding, the fastest of PIL, OpenCV and
torchvision measured on 1024x2048 frames (`benchmarks/dataloader.py`: best of three
rounds 75 ms against 104 (OpenCV) and 106 (PIL) on a loaded 2-core machine); JPEGs
with its libjpeg binding, which reports a file that ends before its image does (OpenCV
fills the missing part with grey and only prints libjpeg's unnamed "Premature end of
JPEG file"), at no extra cost (0.43 ms per 360x480 frame either way, one thread, best
of 7 x 30 reads; the same pixels, EXIF orientation applied as OpenCV does); other
formats, 16-bit files and anything torchvision cannot read go through OpenCV, which
refuses truncated PNG, BMP, TIFF and WebP files. The decoder follows the file's first
bytes, not its name. An image that does not decode completely is a `DataError` naming
the file, wherever it is read.

Label maps (single channel, a few ms either way) use OpenCV, except palette PNGs
(PASCAL VOC's masks, and what many labelling tools write): their pixels are class
indices with a colour table for viewers, which OpenCV would expand to colours, so PIL
decodes those to the indices they hold; and JPEGs, which PIL decodes to the same values
as OpenCV but refuses when truncated.

Every file a command writes goes through `replacing` (a temporary file beside it, renamed
over it only when complete: a kill or a full disk leaves the previous file or none), and
no command writes over one of its own inputs (`refuse_overwriting`, called before
anything is written).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from aspp_seg.errors import DataError, UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings read as images (by folder data sets and prediction sources)."""

cv2.setNumThreads(0)  # data workers run in parallel already


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3  # IHDR colour type of an indexed-colour (palette) PNG
_JPEG_SIGNATURE = b"\xff\xd8\xff"  # start-of-image marker, then the first segment's


def _read_bytes(path: str | Path, what: str) -> np.ndarray:
    """The file's bytes as a 1-D uint8 array; DataError naming an unreadable file."""
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"cannot read {what} {path}: {error.strerror or error}") from None


def _truncated(path: str | Path) -> DataError:
    return DataError(
        f"image {path} is truncated: its data ends before the image does (an interrupted "
        "copy or download?); replace the file, or remove it from the data"
    )


def _torchvision_rgb(data: np.ndarray, path: str | Path) -> np.ndarray | None:
    """H x W x 3 uint8 from torchvision's PNG or JPEG decoder, or None to fall back.

    Raises:
        DataError: for a JPEG that ends before its image (libjpeg's "premature end").
    """
    import torch  # here, not at the top: scoring label files (read_label) needs no torch
    from torchvision.io import ImageReadMode, decode_jpeg, decode_png

    head = data[:8].tobytes()
    encoded = torch.from_numpy(data)
    try:
        if head == _PNG_SIGNATURE:
            decoded = decode_png(encoded, mode=ImageReadMode.RGB)
        elif head.startswith(_JPEG_SIGNATURE):
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        else:
            return None
    except RuntimeError as error:
        if "truncated" in str(error):  # JPEG only: OpenCV would return the grey-filled rest
            raise _truncated(path) from None
        return None  # a truncated PNG, or anything unusual: OpenCV decides and names the file
    if decoded.dtype != torch.uint8:
        return None
    return np.ascontiguousarray(decoded.permute(1, 2, 0).numpy())


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB (EXIF orientation applied).

    Raises:
        DataError: naming a file that is unreadable or does not decode completely.
    """
    data = _read_bytes(path, "image")
    img = _torchvision_rgb(data, path) if data.size else None
    if img is not None:
        return img
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _is_palette_png(data: np.ndarray) -> bool:
    """Whether the file's bytes start a palette PNG (the IHDR chunk comes first and
    holds the colour type at byte 25), decided without decoding."""
    head = data[:26].tobytes()
    return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[25] == _PNG_PALETTE


def _pil_array(data: np.ndarray, path: str | Path) -> np.ndarray:
    """The pixels of a palette PNG's bytes (H x W uint8 indices) or a JPEG's (as its
    mode: grey H x W, colour H x W x 3); DataError for a truncated file, which PIL
    refuses (OpenCV would fill a JPEG's missing part with grey)."""
    try:
        with Image.open(io.BytesIO(data.tobytes()), formats=["PNG", "JPEG"]) as image:
            return np.array(image)  # mode "P": the indices; a copy, writable
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read label map {path}: {error}") from None


def read_label(path: str | Path) -> np.ndarray:
    """H x W uint8 single-channel label map: an 8-bit grey image, or a palette PNG read
    as its indices.

    The file is read once; its header decides the decoder (see the module docstring).

    Raises:
        DataError: naming a file that is unreadable or truncated, or holds colours (a
            colour-coded mask) or anything but 8-bit single-channel values.
    """
    data = _read_bytes(path, "label map")
    if _is_palette_png(data) or data[:3].tobytes() == _JPEG_SIGNATURE:
        label = _pil_array(data, path)
    else:
        label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if label is None:
        raise DataError(f"cannot read label map {path}")
    if label.ndim == 3 and label.shape[2] in (3, 4):
        raise DataError(
            f"label map {path} has {label.shape[2]} channels (colour or alpha); a mask "
            "must hold one class index per pixel, as an 8-bit grey or palette PNG "
            "(convert colour-coded masks to indices first)"
        )
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(
            f"label map {path} must be 8-bit single-channel, got shape {label.shape} "
            f"of {label.dtype}"
        )
    return label


@contextmanager
def replacing(path: str | Path, *, keep_suffix: bool = True, sync: bool = False) -> Iterator[Path]:
    """A temporary file beside `path` that replaces `path` only when the block ends without
    an exception; otherwise it is removed and `path` stays as it was. The one way files
    are written here (results, configs, checkpoints, the sweep's records), so that a kill
    or a full disk leaves the previous file or none, never a part of one.

    The folder of `path` is created if missing.

    Args:
        path: the file to write.
        keep_suffix: the temporary file ends as `path` does, so that writers that pick the
            format from the name still do; False: it ends in ``.partial``, so that what a
            kill -9 leaves behind matches no search for ``*.ckpt``.
        sync: the file's bytes reach the disk before the rename, and the rename before
            the block returns (checkpoints: a power cut leaves the old one or the new one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named, not mkstemp'd: the file keeps the permissions a plain new file gets
    pid = os.getpid()
    staged = path.with_name(
        f".{path.stem}.{pid}.partial{path.suffix}" if keep_suffix else f".{path.name}.{pid}.partial"
    )
    try:
        yield staged
        if sync:
            _fsync(staged)
        os.replace(staged, path)
        if sync:
            with contextlib.suppress(OSError):  # not every system lets a folder be synced
                _fsync(path.parent)
    finally:
        staged.unlink(missing_ok=True)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C (SIGINT) that arrives inside the block takes effect when the block ends,
    so that the file written inside is completed first. torch.save turns a
    KeyboardInterrupt raised in the middle of its file into a RuntimeError about a
    damaged archive; deferred, the checkpoint is whole and the interrupt stays one.

    Only the main thread receives signals; elsewhere, and when the handler was set
    outside Python, the block runs unchanged.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # now, through the handler it had before


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file(path: str | Path, content: str | bytes) -> None:
    """`content` into `path` through `replacing`."""
    with replacing(path) as staged:
        if isinstance(content, bytes):
            staged.write_bytes(content)
        else:
            staged.write_text(content)


def refuse_overwriting(
    outputs: Iterable[str | Path], inputs: Iterable[str | Path], setting: str
) -> None:
    """Raises UsageError when a file a command would write is one of the files it reads.

    Paths are compared resolved, so a relative path or a link to an input counts too.
    Call it before anything is written.

    Args:
        outputs: the files the command would write.
        inputs: the files it reads.
        setting: the option that named the outputs, e.g. ``--json`` or ``--out out/``.
    """
    resolved = {Path(path).resolve(): Path(path) for path in inputs}
    for output in outputs:
        found = resolved.get(Path(output).resolve())
        if found is not None:
            same = "" if Path(output) == found else f" (the same file as {output})"
            raise UsageError(
                f"{setting} would overwrite {found}, one of this command's own inputs"
                f"{same}; choose another path"
            )
