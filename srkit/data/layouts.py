"""Dataset layouts on disk: find the clips (ground truth and, when present, low-resolution frames).

:func:`discover_clips` turns a folder in one of the common benchmark layouts into a list of
:class:`Clip` objects holding frame paths in temporal (natural) order. Accepted layouts, with the
folder names recognised (``{D}`` is the degradation, e.g. ``BI``/``BD``, ``{s}`` the scale)::

    vid4     root/GT/<seq>/<frames>                  (Vid4, UDM10, SPMCS, ... as BasicSR / MMagic ship them)
             root/{D}x{s}/<seq>/<frames>             e.g. BIx4, BDx4 (any frame naming)
    reds     root/train_sharp/000/00000000.png       ground truth
             root/train_sharp_bicubic/X{s}/000/...   LR for degradation BI (also ``..._bicubic/000`` directly)
             root/train_blur_bicubic/X{s}/...        LR for degradation ``blur_bicubic`` (EDVR's blur+SR track)
             root/train_blur/...                     LR for degradation ``blur`` (deblurring, scale 1)
             root/val_* likewise for the official validation clips.
             split: "reds4"/"test" = clips 000, 011, 015, 020 of train_sharp (EDVR's REDS4 test set);
                    "official_val"/"val" = val_sharp (without val_sharp: train_sharp/240-269, where
                    BasicSR's regroup script puts those 30 clips); "train" = train_sharp minus REDS4 (BasicSR's EDVR
                    training set: after BasicSR's regroup script this includes the merged val clips
                    240-269); "train_official" = train_sharp minus clips 240-269; "all" = every clip of
                    train_sharp (what ``srkit data pack`` packs by default, like BasicSR's LMDB script).
    vimeo    root/sequences/00001/0001/im1.png ... im7.png  (or root/GT/00001/0001, the MMagic layout)
             root/sep_trainlist.txt, root/sep_testlist.txt  (split "train" / "test"; "all" = every sequence)
             LR from the first of: root/sequences_{D}x{s}, root/{D}x{s}, root/sequences_{D} (x4 only,
             BasicVSR's sequences_BD), and BasicSR's MATLAB-script outputs beside root:
             vimeo_septuplet_matlabLRx{s}/sequences (BI), vimeo_septuplet_{D}LRx{s}/sequences (e.g. BD).
             Only the middle frame (im4) is a window centre, as in EDVR / BasicSR.
    images   paired image folders, one clip per image. Ground truth from the first of
             root/DIV2K_{train|valid}_HR (split "train" / "val"|"test"), root/HR, root/GT, root/GTmod12,
             root/hr, root/gt, else root itself. LR from the first of root/DIV2K_{..}_LR_bicubic/X{s},
             root/LR_bicubic/X{s}, root/LRbicx{s}, root/BIx{s}, root/LRx{s}, root/LR/X{s}, root/LR (for BI),
             root/{D}x{s}, root/LR_{d}/X{s} (other degradations). LR files match HR files by stem:
             ``0001.png`` <- ``0001.png`` | ``0001x4.png`` | ``baby_HR.png`` <- ``baby_LR.png``.
    folders  generic: every sub-folder of root is a clip of HR frames (root itself if it holds frames).
    videos   root is a video file, or a folder of video files; each is a clip of HR frames.
    auto     guess one of the above from the folder's contents.

When no LR folder exists for the requested degradation, ``Clip.lr`` is ``None`` and callers
synthesise LR frames with :func:`srkit.data.degrade.make_degradation`. A missing or empty layout is
an :class:`~srkit.errors.InputError` naming the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from srkit.errors import ConfigError, InputError
from srkit.io.images import is_image_file, list_images, natural_key

LAYOUTS = ("vid4", "reds", "vimeo", "images", "folders", "videos", "auto")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".y4m", ".wmv", ".flv")
REDS4 = ("000", "011", "015", "020")
REDS_OFFICIAL_VAL_IN_TRAIN = tuple(f"{i:03d}" for i in range(240, 270))


@dataclass
class Clip:
    """One clip (or one image for the ``images`` layout).

    Attributes:
        name: unique key inside the dataset, e.g. ``"calendar"``, ``"000"``, ``"00001/0001"``.
        gt: ground-truth frame paths in temporal order, or None (LR-only data, or ``video``).
        lr: low-resolution frame paths (same count as ``gt``), or None when they must be synthesised.
        centers: frame indices that serve as window centres for training and evaluation (Vimeo-90K:
            only the middle frame); None means every frame.
        video: a video file holding the ground-truth frames (``videos`` layout) instead of ``gt``.
    """

    name: str
    gt: list[Path] | None
    lr: list[Path] | None
    centers: list[int] | None = None
    video: Path | None = None

    @property
    def num_frames(self) -> int | None:
        """Frame count when it is known without decoding (None for video files)."""
        frames = self.gt if self.gt is not None else self.lr
        return None if frames is None else len(frames)

    def center_list(self) -> list[int]:
        """The window centres (every frame unless ``centers`` restricts them)."""
        if self.centers is not None:
            return list(self.centers)
        n = self.num_frames
        if n is None:
            raise ValueError(f"clip {self.name}: frame count unknown (video); decode it first")
        return list(range(n))


# ----------------------------------------------------------------------------------------- helpers

def _require_dir(path: Path, what: str = "dataset folder") -> Path:
    if not path.exists():
        raise InputError(f"no such {what}", path)
    if not path.is_dir():
        raise InputError(f"{what} is not a folder", path)
    return path


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def _frames(folder: Path) -> list[Path]:
    frames = list_images(folder)
    if not frames:
        raise InputError("empty clip folder: no image files", folder)
    return frames


def _first_dir(candidates: list[Path]) -> Path | None:
    for c in candidates:
        if c.is_dir():
            return c
    return None


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Names from a list file: first token of each non-empty line.

    Reads Vimeo-90K's ``sep_testlist.txt`` (``00001/0001``) and BasicSR's meta-info files
    (``000 100 (720,1280,3)``) alike; ``#`` starts a comment.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such list file", path)
    if path.is_dir():
        raise InputError("list file is a folder", path)
    # Any readable file, not only regular ones: `--subset <(grep ... list.txt)` is a pipe (/dev/fd/N).
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read list file ({exc.strerror or exc})", path) from None
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    if not names:
        raise InputError("list file names no clips", path)
    return names


def _apply_subset(clips: list[Clip], subset: Path | str | list[str] | None, root: Path) -> list[Clip]:
    if subset is None:
        return clips
    names = read_name_list(subset) if isinstance(subset, (str, os.PathLike)) else list(subset)
    by_name = {c.name: c for c in clips}
    missing = [n for n in names if n not in by_name]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise InputError(f"subset names clips not found in the dataset: {', '.join(missing[:3])}{more}", root)
    return [by_name[n] for n in names]


def _check_pair(clip: Clip, lr_dir: Path) -> None:
    if clip.gt is not None and clip.lr is not None and len(clip.gt) != len(clip.lr):
        raise InputError(f"{len(clip.lr)} LR frames but {len(clip.gt)} ground-truth frames for clip {clip.name}", lr_dir)


def _lr_root_with_scale(base: Path, scale: int) -> Path | None:
    """``base/X4`` when present, else ``base`` itself when it exists (some packs omit the X4 level)."""
    if (base / f"X{scale}").is_dir():
        return base / f"X{scale}"
    if (base / f"x{scale}").is_dir():
        return base / f"x{scale}"
    return base if base.is_dir() else None


# ----------------------------------------------------------------------------------------- layouts

def _vid4(root: Path, degradation: str, scale: int) -> list[Clip]:
    gt_root = _first_dir([root / "GT", root / "gt", root / "HR"])
    if gt_root is None:
        raise InputError("no GT folder (vid4 layout expects GT/<sequence>/<frames> and e.g. BIx4/<sequence>/)", root)
    lr_root = _first_dir([root / f"{degradation}x{scale}", root / f"{degradation.lower()}x{scale}",
                          root / f"{degradation}_x{scale}"])
    clips = []
    for seq in _subdirs(gt_root):
        gt = _frames(seq)
        lr = None
        if lr_root is not None:
            lr_dir = lr_root / seq.name
            if not lr_dir.is_dir():
                raise InputError(f"LR folder has no sequence {seq.name!r}", lr_root)
            lr = _frames(lr_dir)
        clip = Clip(seq.name, gt, lr)
        if lr_root is not None:
            _check_pair(clip, lr_root / seq.name)
        clips.append(clip)
    if not clips:
        raise InputError("no sequence folders inside", gt_root)
    return clips


def _reds(root: Path, degradation: str, scale: int, split: str) -> list[Clip]:
    split = {"test": "reds4", "val": "official_val"}.get(split, split)
    if split not in ("reds4", "official_val", "train", "train_official", "all"):
        raise ConfigError(f"unknown REDS split {split!r} (choose reds4/test, official_val/val, train, train_official, all)")
    part = "val" if split == "official_val" else "train"
    regrouped_val = False
    if part == "val" and not (root / "val_sharp").is_dir() and (root / "train_sharp").is_dir() and all(
            (root / "train_sharp" / n).is_dir() for n in REDS_OFFICIAL_VAL_IN_TRAIN):
        # BasicSR's regroup script moved val_sharp/000-029 into train_sharp/240-269: same clips.
        part, regrouped_val = "train", True
    gt_root = root / f"{part}_sharp"
    if not gt_root.is_dir():
        raise InputError(f"no {part}_sharp folder (reds layout expects {part}_sharp/000/00000000.png)", root)
    deg = degradation.lower()
    lr_base = {"bi": f"{part}_sharp_bicubic", "blur_bicubic": f"{part}_blur_bicubic", "blur": f"{part}_blur"}.get(deg)
    lr_root = None
    if lr_base is not None:
        lr_root = (root / lr_base) if deg == "blur" else _lr_root_with_scale(root / lr_base, scale)
        if lr_root is not None and not lr_root.is_dir():
            lr_root = None
    if deg == "blur" and scale != 1:
        raise ConfigError("REDS degradation 'blur' is deblurring at scale 1 (use 'blur_bicubic' for blur + x4)")
    names = [p.name for p in _subdirs(gt_root)]
    if split == "reds4":
        names = [n for n in REDS4 if n in names] if all(n in names for n in REDS4) else None
        if names is None:
            raise InputError(f"REDS4 needs clips {', '.join(REDS4)} in train_sharp", gt_root)
    elif split == "train":
        names = [n for n in names if n not in REDS4]
    elif split == "train_official":
        names = [n for n in names if n not in REDS_OFFICIAL_VAL_IN_TRAIN]
    elif regrouped_val:
        names = list(REDS_OFFICIAL_VAL_IN_TRAIN)
    clips = []
    for name in names:
        gt = _frames(gt_root / name)
        lr = None
        if lr_root is not None:
            if not (lr_root / name).is_dir():
                raise InputError(f"LR folder has no clip {name!r}", lr_root)
            lr = _frames(lr_root / name)
        clip = Clip(name, gt, lr)
        if lr_root is not None:
            _check_pair(clip, lr_root / name)
        clips.append(clip)
    if not clips:
        raise InputError("no clip folders inside", gt_root)
    return clips


def _vimeo(root: Path, degradation: str, scale: int, split: str) -> list[Clip]:
    gt_root = _first_dir([root / "sequences", root / "GT"])
    if gt_root is None:
        raise InputError("no sequences folder (vimeo layout expects sequences/00001/0001/im1.png)", root)
    if split == "all":
        names = [f"{a.name}/{b.name}" for a in _subdirs(gt_root) for b in _subdirs(a)]
        if not names:
            raise InputError("no sequence folders inside", gt_root)
    elif split in ("train", "test"):
        list_file = root / f"sep_{split}list.txt"
        if not list_file.is_file():
            raise InputError(f"no {list_file.name} for split {split!r} (use split 'all', --split all, for every "
                             "sequence, or a subset list)", root)
        names = read_name_list(list_file)
    else:
        raise ConfigError(f"unknown Vimeo-90K split {split!r} (choose train, test or all)")
    d = degradation.upper()
    candidates = [root / f"sequences_{degradation}x{scale}", root / f"{degradation}x{scale}"]
    if scale == 4:  # BasicVSR's README names the x4 BD set just sequences_BD
        candidates.append(root / f"sequences_{degradation}")
    # BasicSR's MATLAB scripts write beside the dataset: vimeo_septuplet_matlabLRx4 (BI),
    # vimeo_septuplet_BDLRx4 (BD), each with a sequences/ folder.
    if d == "BI":
        candidates.append(root.parent / f"vimeo_septuplet_matlabLRx{scale}" / "sequences")
    candidates.append(root.parent / f"vimeo_septuplet_{d}LRx{scale}" / "sequences")
    lr_root = _first_dir(candidates)
    clips = []
    for name in names:
        seq = gt_root / name
        if not seq.is_dir():
            raise InputError(f"sequence {name} listed but missing", gt_root)
        gt = _frames(seq)
        lr = _frames(lr_root / name) if lr_root is not None and (lr_root / name).is_dir() else None
        if lr_root is not None and lr is None:
            raise InputError(f"LR folder has no sequence {name}", lr_root)
        clip = Clip(name, gt, lr, centers=[len(gt) // 2])
        if lr is not None:
            _check_pair(clip, lr_root / name)
        clips.append(clip)
    return clips


def _images(root: Path, degradation: str, scale: int, split: str) -> list[Clip]:
    div2k = {"train": "train", "val": "valid", "valid": "valid", "test": "valid"}.get(split)
    hr_candidates = []
    if div2k is not None:
        hr_candidates.append(root / f"DIV2K_{div2k}_HR")
    hr_candidates += [root / "HR", root / "GT", root / "GTmod12", root / "hr", root / "gt"]
    hr_root = _first_dir(hr_candidates) or root
    s, d = scale, degradation
    if d.upper() == "BI":
        lr_candidates = []
        if div2k is not None:
            lr_candidates.append(root / f"DIV2K_{div2k}_LR_bicubic" / f"X{s}")
        lr_candidates += [root / "LR_bicubic" / f"X{s}", root / f"LRbicx{s}", root / f"BIx{s}", root / f"LRx{s}",
                          root / "LR" / f"X{s}", root / "LR", root / "lr"]
    else:
        lr_candidates = [root / f"{d}x{s}", root / f"LR_{d.lower()}" / f"X{s}"]
    lr_root = _first_dir([c for c in lr_candidates if c != hr_root])
    hr_files = list_images(hr_root)
    if not hr_files:
        raise InputError("no image files (images layout expects HR images in HR/, GT/, DIV2K_*_HR/ or the folder itself)",
                         hr_root)
    lr_by_stem: dict[str, Path] = {}
    if lr_root is not None:
        lr_by_stem = {p.stem: p for p in list_images(lr_root)}
    clips = []
    for hr in hr_files:
        lr = None
        if lr_root is not None:
            for stem in (hr.stem, f"{hr.stem}x{s}", f"{hr.stem}_x{s}", hr.stem.replace("HR", "LR"),
                         hr.stem.replace("hr", "lr")):
                if stem in lr_by_stem:
                    lr = [lr_by_stem[stem]]
                    break
            else:
                raise InputError(f"no LR image for {hr.name} in the LR folder", lr_root)
        clips.append(Clip(hr.stem, [hr], lr))
    return clips


def _folders(root: Path) -> list[Clip]:
    if any(is_image_file(p) for p in root.iterdir() if p.is_file()):
        return [Clip(root.name, _frames(root), None)]
    clips = [Clip(d.name, _frames(d), None) for d in _subdirs(root)]
    if not clips:
        raise InputError("no clip sub-folders and no frames (folders layout expects <clip>/<frames>)", root)
    return clips


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _videos(root: Path) -> list[Clip]:
    if root.is_file():
        if not _is_video(root):
            raise InputError(f"not a video file (expected one of {', '.join(VIDEO_EXTENSIONS)})", root)
        return [Clip(root.stem, None, None, video=root)]
    files = sorted((p for p in root.iterdir() if p.is_file() and _is_video(p) and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise InputError("no video files in folder", root)
    return [Clip(p.stem, None, None, video=p) for p in files]


def detect_layout(root: str | os.PathLike) -> str:
    """Guess the layout of ``root`` from the folders it contains (see the module docstring)."""
    root = Path(root)
    if root.is_file():
        if _is_video(root):
            return "videos"
        raise InputError("not a dataset folder or video file", root)
    _require_dir(root)
    if (root / "train_sharp").is_dir() or (root / "val_sharp").is_dir():
        return "reds"
    if (root / "sequences").is_dir():
        return "vimeo"
    if any((root / n).is_dir() for n in ("GT", "gt")) and any(
            p.is_dir() and any(q.is_dir() for q in p.iterdir()) for p in (root / "GT", root / "gt") if p.is_dir()):
        return "vid4"
    if any(p.name.startswith("DIV2K_") for p in root.iterdir()) or any(
            (root / n).is_dir() for n in ("HR", "GT", "GTmod12", "hr", "gt")):
        return "images"
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() and _is_video(p) for p in entries) and not any(p.is_dir() for p in entries):
        return "videos"
    return "folders"


def discover_clips(root: str | os.PathLike, layout: str, *, degradation: str = "BI", scale: int = 4,
                   subset: Path | str | list[str] | None = None, split: str = "test") -> list[Clip]:
    """List the clips of the dataset at ``root``.

    Args:
        root: dataset folder (or video file for the ``videos`` layout).
        layout: one of :data:`LAYOUTS` (see the module docstring for the folder names accepted).
        degradation: which LR frames to look for (``BI``, ``BD``, REDS ``blur_bicubic``, ...).
        scale: upscaling factor (selects ``X4`` / ``BIx4`` folders).
        subset: clip names (a list, or a list file: first token per line, e.g. a BasicSR meta-info
            file) to keep, in that order; None keeps every clip of the split.
        split: REDS ``reds4|test``, ``official_val|val``, ``train``, ``train_official``, ``all``; Vimeo-90K
            ``train``, ``test``, ``all``; DIV2K ``train``, ``val|test``; ignored by other layouts.

    Returns:
        Clips with frame paths in natural order; ``lr`` is None when no LR frames exist on disk.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown dataset layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if scale < 1:
        raise ConfigError(f"scale must be >= 1, got {scale}")
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "videos":
        if not root.exists():
            raise InputError("no such file or folder", root)
        clips = _videos(root)
    else:
        _require_dir(root)
        if layout == "vid4":
            clips = _vid4(root, degradation, scale)
        elif layout == "reds":
            clips = _reds(root, degradation, scale, split)
        elif layout == "vimeo":
            clips = _vimeo(root, degradation, scale, split)
        elif layout == "images":
            clips = _images(root, degradation, scale, split)
        else:
            clips = _folders(root)
    return _apply_subset(clips, subset, root)
