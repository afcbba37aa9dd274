"""File-level driver of ``srkit upscale``: videos, frame folders, images and lists of them.

Input kinds: a video file (anything FFmpeg reads), a frame folder (a video model's clip), a single
image or an image folder (single-image models). The output kind follows the output's extension
(video extension -> video file, image extension -> image); any other output path is a folder: a
frame folder of PNGs for clip inputs, a folder of images (same names, PNG) for image inputs. With
``--input-list``/``--output-dir`` each input ``NAME`` goes to ``OUTPUT_DIR/NAME`` keeping its kind.

Safety: every file is written under a temporary name and renamed when complete (videos on close,
frames and images one by one), so an error, Ctrl-C or SIGTERM never leaves a partial file under a
final name; an existing output is refused unless ``overwrite``; the output may not be the input;
``resume`` continues a frame-folder output after its last complete frame, re-reading the context
frames the next windows need so the frames are identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from torch import nn

from srkit.errors import ConfigError, InputError, OutputError, SrkitError
from srkit.io.atomic import check_output_path, remove_stale_temps, remove_stale_temps_in
from srkit.infer.engine import Restorer
from srkit.infer.options import OutputOptions, RestoreOptions
from srkit.io.images import IMAGE_EXTENSIONS, from_float, list_images, read_image, write_image

__all__ = ["UpscaleResult", "upscale", "upscale_many", "read_input_list", "shard", "input_kind",
           "VIDEO_EXTENSIONS"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".flv",
                    ".wmv", ".ogv", ".3gp", ".y4m")
FRAME_PATTERN = "{:08d}.png"


@dataclass
class UpscaleResult:
    """What one input produced."""

    input: Path
    output: Path
    kind: str  # "video", "frames", "image", "images"
    frames: int  # frames (or images) written by this run
    skipped: int  # frames already present (resume)
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- kinds
def input_kind(path: Path) -> str:
    """``video``, ``image`` or ``folder`` (frames or images, decided by the model)."""
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        return "folder"
    if not os.access(path, os.R_OK):
        raise InputError("file is not readable (permission denied)", path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    # Unknown extension: FFmpeg may still read it (its probe raises a one-line InputError otherwise).
    from srkit.io.video import probe_video

    probe_video(path)
    return "video"


def _is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _same_or_inside(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or lies inside folder ``b`` (both resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


# ---------------------------------------------------------------------------------------------- signals
@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` so context managers remove temporary files on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------------------------- helpers
def _progress(total: int | None, quiet: bool, desc: str, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", desc=desc, file=sys.stderr, disable=quiet,
                dynamic_ncols=True, leave=True, smoothing=0.1)


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Restored RGB of a replicated gray input -> one channel (ITU-R BT.601 luma, as cv2's RGB2GRAY)."""
    return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]


def _resize_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """Alpha upscaled with MATLAB-compatible bicubic (as the image itself was degraded in training)."""
    from srkit.data.imresize import imresize

    if alpha.shape == (height, width):
        return alpha
    out = imresize(alpha.astype(np.float32) / np.float32(np.iinfo(alpha.dtype).max), output_shape=(height, width))
    return from_float(out, alpha.dtype)


def _warn_alpha_dropped(path: Path, model: nn.Module) -> None:
    # Video models restore RGB; saying so once beats an output that silently lost its transparency
    # (printed even with --quiet, which only hides the progress bar).
    print(f"srkit: warning: {path}: the alpha channel is dropped: video model {_model_name(model)} restores RGB only "
          "(single-image models keep alpha)", file=sys.stderr)


def _video_has_alpha(pix_fmt: str) -> bool:
    try:
        import av

        return any(getattr(c, "is_alpha", False) for c in av.VideoFormat(pix_fmt).components)
    except Exception:  # noqa: BLE001 - an unknown format name: nothing to warn about
        return False


def _bit_depth_dtype(pix_fmt: str) -> type:
    """uint16 frames for high-bit-depth output pixel formats (yuv420p10le, gbrp12le, rgb48...)."""
    return np.uint16 if re.search(r"(9|10|12|14|16)(le|be)?$|48|64", pix_fmt) else np.uint8


@dataclass
class _Job:
    """What every input of one ``upscale``/``upscale_many`` call shares."""

    restorer: Restorer  # the model, ready once for all inputs
    out: OutputOptions
    condition_factory: Callable[[int, int], np.ndarray] | None

    @property
    def model(self) -> nn.Module:
        return self.restorer.model


def _run_engine(frames: Iterable[np.ndarray], job: _Job, *, start_frame: int = 0) -> Iterator[np.ndarray]:
    return job.restorer.stream(frames, condition=job.condition_factory, start_frame=start_frame)


# ---------------------------------------------------------------------------------------------- per kind
def numbered_pattern(files: Sequence[Path]) -> tuple[str, int] | None:
    """``(pattern, first number)`` when ``files`` are consecutively numbered with one width (``00001.png``
    ... as Set8 / REDS / Vimeo name frames), so that an output frame folder keeps its input's names; else None."""
    stems = [f.stem for f in files]
    if not stems or not all(st.isdigit() for st in stems) or len({len(st) for st in stems}) != 1:
        return None
    first = int(stems[0])
    if [int(st) for st in stems] != list(range(first, first + len(stems))):
        return None
    return f"{{:0{len(stems[0])}d}}.png", first


def _frame_writer(folder: Path, job: _Job, pattern: str = FRAME_PATTERN, start: int = 0):
    """The frame-folder writer (creates the folder; with ``resume`` counts the complete frames there)."""
    from srkit.io.frames import FrameFolderWriter

    if folder.exists() and folder.is_dir() and not os.access(folder, os.W_OK):
        raise OutputError("output folder is not writable", folder)
    parent = folder.parent if str(folder.parent) else Path(".")
    if not folder.exists() and parent.is_dir() and not os.access(parent, os.W_OK):
        raise OutputError("output folder's parent is not writable", parent)
    return FrameFolderWriter(folder, pattern=pattern, resume=job.out.resume, overwrite=job.out.overwrite, start=start)


def _frames_output(writer, out_frames: Iterable[np.ndarray], dtype: type, job: _Job, total: int | None,
                   desc: str, start: int) -> int:
    """Write restored frames ``start, start+1, ...`` (counted from the clip's first frame; named from the
    writer's first number) atomically; returns how many were written."""
    n = 0
    try:
        with writer, _progress(total, job.out.quiet, desc, initial=start) as bar:
            for i, out in enumerate(out_frames, start):
                writer.write(from_float(out, dtype), index=writer.start + i)
                n += 1
                bar.update(1)
    except KeyboardInterrupt:
        # Every frame written is complete (renamed into place whole): nothing is lost but the rest.
        raise KeyboardInterrupt(f"{start + n} frame(s) are complete in {writer.folder}; run the same command "
                                "with --resume to continue") from None
    return n


def _video_input(path: Path, output: Path, out_kind: str, job: _Job) -> UpscaleResult:
    from srkit.io.video import open_video

    t0 = time.perf_counter()
    if out_kind == "video":
        if job.out.resume:
            raise ConfigError("--resume needs a frame-folder output (a video file is written in one piece)")
        check_output_path(output, overwrite=job.out.overwrite)
    with open_video(path) as reader:  # opening checks the input before any output is created
        info = reader.info
        if _video_has_alpha(info.pix_fmt):
            _warn_alpha_dropped(path, job.model)
        frame_writer = _frame_writer(output, job) if out_kind == "frames" else None
        start = frame_writer.completed if (frame_writer is not None and job.out.resume) else 0
        high = getattr(info, "bit_depth", 8) and info.bit_depth > 8
        pts_queue: deque = deque()

        def decoded() -> Iterator[np.ndarray]:
            for frame in reader:
                pts_queue.append(frame.pts)
                yield frame.rgb

        total = info.num_frames or None
        out_frames = _run_engine(decoded(), job, start_frame=start)
        if out_kind == "frames":
            n = _frames_output(frame_writer, _drop_pts(out_frames, pts_queue), np.uint16 if high else np.uint8,
                               job, total, path.name, start)
            return UpscaleResult(path, output, "frames", n, start, time.perf_counter() - t0)
        n = _video_output(out_frames, output, job, high, total, path.name, fps=info.fps, time_base=info.time_base,
                          pts=lambda i: pts_queue.popleft(), copy_streams_from=path)
    return UpscaleResult(path, output, "video", n, 0, time.perf_counter() - t0)


def _video_output(out_frames: Iterable[np.ndarray], output: Path, job: _Job, high: bool, total: int | None,
                  label: str, *, fps, time_base, pts: Callable[[int], int | None],
                  copy_streams_from: Path | None = None) -> int:
    """Encode restored frames (float RGB) into ``output``; returns how many were written.

    The writer opens on the first frame (it takes that frame's size) and writes to a temporary name;
    if anything fails before the end it is aborted, so neither the final nor the temporary file remains.
    ``pts(i)`` gives frame ``i``'s timestamp in ``time_base`` units. 16-bit frames are encoded when the
    source is ``high`` (> 8 bits) or the chosen pixel format is.
    """
    from srkit.io.video import VideoWriter

    dtype = np.uint16 if high or _bit_depth_dtype(job.out.pix_fmt or "") is np.uint16 else np.uint8

    writer = None
    n = 0
    try:
        with _progress(total, job.out.quiet, label) as bar:
            for out in out_frames:
                if writer is None:
                    writer = VideoWriter(output, width=out.shape[1], height=out.shape[0], fps=fps,
                                         time_base=time_base, codec=job.out.codec, crf=job.out.crf, pix_fmt=job.out.pix_fmt,
                                         lossless=job.out.lossless, copy_streams_from=copy_streams_from, rotation=0,
                                         overwrite=job.out.overwrite, bit_depth=16 if dtype is np.uint16 else 8)
                writer.write(from_float(out, dtype), pts=pts(n))
                n += 1
                bar.update(1)
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:  # an exception escaped
            writer.abort()
    return n


def _drop_pts(frames: Iterable[np.ndarray], pts_queue: deque) -> Iterator[np.ndarray]:
    for f in frames:
        if pts_queue:
            pts_queue.popleft()
        yield f


def _folder_clip_input(path: Path, output: Path, out_kind: str, job: _Job) -> UpscaleResult:
    """A frame folder restored as one clip by a video model."""
    from srkit.io.frames import FrameFolderReader

    t0 = time.perf_counter()
    reader = FrameFolderReader(path)  # checks every frame's size up front
    if reader.has_alpha:
        _warn_alpha_dropped(path, job.model)
    high = reader.dtype == np.uint16
    frames = (f.rgb for f in reader)
    if out_kind == "frames":
        # Numbered input frames keep their names (00001.png in -> 00001.png out); others are renumbered.
        writer = _frame_writer(output, job, *(numbered_pattern(reader.files) or (FRAME_PATTERN, 0)))
        start = writer.completed if job.out.resume else 0
        out_frames = _run_engine(frames, job, start_frame=start)
        n = _frames_output(writer, out_frames, np.uint16 if high else np.uint8, job, len(reader), path.name, start)
        return UpscaleResult(path, output, "frames", n, start, time.perf_counter() - t0)
    if out_kind != "video":
        raise ConfigError(f"cannot write a clip of {len(reader)} frames to a single image", output)
    if job.out.resume:
        raise ConfigError("--resume needs a frame-folder output (a video file is written in one piece)")
    check_output_path(output, overwrite=job.out.overwrite)
    n = _video_output(_run_engine(frames, job), output, job, high, len(reader), path.name, fps=job.out.fps,
                      time_base=1 / job.out.fps, pts=lambda i: i)
    return UpscaleResult(path, output, "video", n, 0, time.perf_counter() - t0)


def _restore_image(src: Path, dst: Path, job: _Job) -> None:
    img = read_image(src)
    out = next(iter(_run_engine([img.rgb], job)))
    if img.grayscale:
        out = _gray(out)
    alpha = None if img.alpha is None else _resize_alpha(img.alpha, out.shape[0], out.shape[1])
    try:
        write_image(dst, from_float(out, img.rgb.dtype), alpha)
    except SrkitError:
        raise
    except Exception as exc:  # cv2 cannot encode this combination (e.g. 16-bit JPEG)
        raise OutputError(f"cannot write image ({exc})", dst) from None


def _image_output_name(src: Path) -> str:
    # PNG keeps 16 bits and alpha and is lossless; TIFF inputs stay TIFF; JPEG & co become PNG.
    return src.name if src.suffix.lower() in (".png", ".tif", ".tiff") else src.stem + ".png"


def _images_input(files: Sequence[Path], folder_in: Path | None, output: Path, out_kind: str,
                  job: _Job) -> UpscaleResult:
    t0 = time.perf_counter()
    if out_kind == "image":
        if len(files) != 1:
            raise ConfigError(f"{len(files)} images cannot go to one image file (give a folder)", output)
        check_output_path(output, overwrite=job.out.overwrite)
        remove_stale_temps(output)  # a killed earlier run's leftovers of this output
        _restore_image(files[0], output, job)
        return UpscaleResult(files[0], output, "image", 1, 0, time.perf_counter() - t0)
    if out_kind != "images":
        raise ConfigError("single-image models write images: give an image file or a folder as output", output)
    if output.exists() and not output.is_dir():
        raise OutputError("output exists and is not a folder", output)
    parent = output if output.is_dir() else output.parent
    if not output.exists() and not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise OutputError("output folder's parent does not exist or is not writable", parent)
    if output.is_dir() and not os.access(output, os.W_OK):
        raise OutputError("output folder is not writable", output)
    targets = [(f, output / _image_output_name(f)) for f in files]
    todo = []
    for src, dst in targets:
        if dst.exists() and not job.out.overwrite:
            if job.out.resume:
                continue
            raise OutputError("output exists (use --overwrite to replace it or --resume to skip done images)", dst)
        todo.append((src, dst))
    created = not output.exists()
    output.mkdir(exist_ok=True)
    remove_stale_temps_in(output)  # a killed earlier run's half-written images (their writer is gone)
    try:
        with _progress(len(targets), job.out.quiet, (folder_in or files[0]).name,
                       initial=len(targets) - len(todo)) as bar:
            for src, dst in todo:
                _restore_image(src, dst, job)
                bar.update(1)
    except BaseException as exc:
        if created:  # a run that wrote nothing leaves no empty output folder (rmdir keeps a non-empty one)
            with contextlib.suppress(OSError):
                output.rmdir()
        if isinstance(exc, KeyboardInterrupt) and output.is_dir():
            done = sum(1 for _, dst in targets if dst.exists())
            raise KeyboardInterrupt(f"{done} of {len(targets)} image(s) are done in {output}; run the same command "
                                    "with --resume to skip them") from None
        raise
    kind = "images" if folder_in is not None else "image"
    return UpscaleResult(folder_in or files[0], output if folder_in else targets[0][1], kind, len(todo),
                         len(targets) - len(todo), time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- entry points
def _resolve_output_kind(is_video_model: bool, output: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    if _is_video_name(output):
        return "video"
    if _is_image_name(output):
        return "image"
    return "frames" if is_video_model else "images"


def _model_name(model: nn.Module) -> str:
    return getattr(model, "preset", None) or type(model).__name__


def _upscale_one(path: Path, output: Path, job: _Job) -> UpscaleResult:
    spec = job.model.spec
    video_model = spec.input_kind == "video" and spec.num_frames > 1
    kind = input_kind(path)
    if _same_or_inside(output, path):  # the same file, or a folder output inside the input folder
        raise OutputError("output is the input (or inside the input folder); refusing to write there", output)
    out_kind = _resolve_output_kind(video_model, output, job.out.output_kind)
    if kind == "video":
        if not video_model:
            raise InputError(f"is a video but model {_model_name(job.model)} restores single images "
                             f"(extract the frames to a folder first)", path)
        if out_kind not in ("video", "frames"):
            raise ConfigError(f"a video cannot be written as {out_kind} (use a video or folder output)", output)
        return _video_input(path, output, out_kind, job)
    if kind == "image":
        if video_model:
            raise InputError(f"is a single image but model {_model_name(job.model)} restores video from "
                             f"{spec.num_frames} frames (give a video or a frame folder)", path)
        return _images_input([path], None, output, out_kind, job)
    # a folder
    files = list_images(path)
    if not files:
        raise InputError("folder has no images (png, jpg, bmp, tif...)", path)
    if video_model:
        return _folder_clip_input(path, output, out_kind, job)
    return _images_input(files, path, output, "image" if out_kind == "image" else "images", job)


def _make_job(model: nn.Module | str | None, weights: str | os.PathLike | None, restore: RestoreOptions,
              out: OutputOptions, condition: np.ndarray | Callable[[int, int], np.ndarray] | None) -> _Job:
    out.validate()  # before the model is built: a bad --fps or --crf is refused at once
    restorer = Restorer(model, restore, weights=weights)
    factory = None
    if condition is not None:
        factory = condition if callable(condition) else (lambda h, w, c=np.asarray(condition): c)
    return _Job(restorer, out, factory)


def upscale(input: str | os.PathLike, output: str | os.PathLike, model: nn.Module | str | None = "edvr-s", *,  # noqa: A002
            weights: str | os.PathLike | None = None,
            condition: np.ndarray | Callable[[int, int], np.ndarray] | None = None,
            restore_options: RestoreOptions | None = None,
            output_options: OutputOptions | None = None, **fields: Any) -> UpscaleResult:
    """Restore one video, frame folder, image or image folder into ``output`` (see the module docstring).

    ``model`` / ``weights``: see :func:`srkit.infer.engine.load_model` (a preset name, a module, or
    None with ``weights``). ``restore_options`` (:class:`RestoreOptions`: device, precision, tiles...)
    and ``output_options`` (:class:`OutputOptions`: overwrite, resume, codec, crf, fps...) are the
    options; their fields may also be given as keywords, which override them. ``condition`` gives a conditioned model (UDVD)
    its degradation maps: an array (C, H, W) or (C,), or a function ``(height, width) -> (C, H, W)``
    (used for every image size).
    """
    job = _make_job(model, weights, *_options(restore_options, output_options, fields), condition)
    with terminate_as_exit():
        return _with_path(Path(input), lambda: _upscale_one(Path(input), Path(output), job))


def _options(restore: RestoreOptions | None, out: OutputOptions | None,
             fields: dict[str, Any]) -> tuple[RestoreOptions, OutputOptions]:
    """The two option objects, with keyword ``fields`` applied over them (an unknown name is a TypeError)."""
    restore_names = {f.name for f in dataclasses.fields(RestoreOptions)}
    unknown = sorted(set(fields) - restore_names - {f.name for f in dataclasses.fields(OutputOptions)})
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(unknown)}")
    restore = dataclasses.replace(restore or RestoreOptions(), **{k: v for k, v in fields.items() if k in restore_names})
    out = dataclasses.replace(out or OutputOptions(), **{k: v for k, v in fields.items() if k not in restore_names})
    return restore, out


def _with_path(path: Path, fn: Callable[[], UpscaleResult]) -> UpscaleResult:
    """Name the input in errors raised without a file (e.g. a frame of another size inside the engine)."""
    try:
        return fn()
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path) from None
        raise


def read_input_list(path: str | os.PathLike) -> list[Path]:
    """Inputs listed one per line (blank lines and ``#`` comments skipped; relative to the list's folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read input list ({exc})", path) from None
    items = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        items.append(p if p.is_absolute() else path.parent / p)
    if not items:
        raise InputError("input list is empty", path)
    return items


def shard(items: Sequence[Path], rank: int | None = None, world_size: int | None = None) -> list[Path]:
    """This process's share of ``items``: every ``WORLD_SIZE``-th item from ``RANK`` (torchrun's env vars)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid RANK={rank} / WORLD_SIZE={world_size}")
    return list(items[rank::world_size])


def _output_for(path: Path, output_dir: Path) -> Path:
    if path.is_file() and _is_image_name(path):
        return output_dir / _image_output_name(path)
    return output_dir / path.name


def upscale_many(inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                 model: nn.Module | str | None = "edvr-s", *, weights: str | os.PathLike | None = None,
                 condition: np.ndarray | Callable[[int, int], np.ndarray] | None = None,
                 restore_options: RestoreOptions | None = None, output_options: OutputOptions | None = None,
                 rank: int | None = None, world_size: int | None = None,
                 on_error: Callable[[Path, SrkitError], None] | None = None, **fields: Any) -> list[UpscaleResult]:
    """Restore many inputs into ``output_dir`` (each keeps its name); this rank handles its shard only.

    Options as :func:`upscale`. The model is made ready once (one :class:`Restorer` for every input).
    Inputs with the same name would collide; that is refused up front. A bad input raises, unless
    ``on_error(path, error)`` is given: then it is reported there and the other inputs are still
    processed (a long batch is not lost to one broken file).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise OutputError("output folder does not exist" if not output_dir.exists() else "not a folder", output_dir)
    if not os.access(output_dir, os.W_OK):
        raise OutputError("output folder is not writable", output_dir)
    paths = [Path(p) for p in inputs]
    names: dict[str, Path] = {}
    for p in paths:
        name = _output_for(p, output_dir).name
        if name in names:
            raise ConfigError(f"inputs {names[name]} and {p} would both write {output_dir / name}")
        names[name] = p
    mine = shard(paths, rank, world_size)
    job = _make_job(model, weights, *_options(restore_options, output_options, fields), condition)
    results = []
    with terminate_as_exit():
        for p in mine:
            try:
                results.append(_with_path(p, lambda p=p: _upscale_one(p, _output_for(p, output_dir), job)))
            except SrkitError as exc:
                if on_error is None:
                    raise
                on_error(p, exc)
    return results
