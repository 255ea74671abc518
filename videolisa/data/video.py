"""Video segmentation datasets: YouTube-VOS, Ref-YouTube-VOS, Ref-DAVIS17 and MeViS (docs/original.md §2.3, §4.5).

Every sample is a clip of ``T_s`` frames drawn with the training rule (an anchor, two local frames at most
3 frames away, ``T_s - 3`` global frames; :func:`~videolisa.processing.sampling.sample_training_frames`) and
``T_d`` random dense positions among them; only the dense frames get SAM inputs and target masks. The
question is a SHORT one about the expression (or category name).

Layouts:

* YouTube-VOS (``data.roots.ytvos``): ``train/JPEGImages/<video>/<frame>.jpg``, ``train/Annotations/<video>/
  <frame>.png`` (palette PNGs of object ids), ``train/meta.json`` = ``{"videos": {<video>: {"objects":
  {<obj_id>: {"category": str, ...}}}}}``. One item per video, anchor uniform; the category is drawn among
  the objects visible in the first sampled frame and the target is the union of all objects of that
  category (semantic level); the question uses the raw category name (``giant_panda``).
* Ref-YouTube-VOS (``data.roots.refytvos``) and Ref-DAVIS17 (``data.roots.refdavis``) in the ReferFormer
  layout: ``train/JPEGImages/<video>/``, ``train/Annotations/<video>/<frame>.png``,
  ``meta_expressions/train/meta_expressions.json`` = ``{"videos": {<video>: {"frames": [...], "expressions":
  {<exp_id>: {"exp": str, "obj_id": str}}}}}``. One item per (expression, anchor) with anchors every
  ``T_s`` frames (0, 32, 64, ... for the release); the expression is lower-cased with normalised spaces; the
  target is the object's id in the annotation PNGs.
* MeViS (``data.roots.mevis``): ``<split>/JPEGImages/<video>/``, ``<split>/meta_expressions.json``
  (``"anno_id"`` lists per expression) and ``<split>/mask_dict.json`` (anno id -> per-frame COCO RLE or
  null), for the splits in ``data.mevis_splits`` (the original trains on ``train`` and ``valid_u``).
  ``train`` gives one item per (expression, anchor every ``T_s`` frames); ``valid_u`` only its first 8
  expressions per video with one clip each (anchor 0), as the original. The target is the union of the
  expression's annotations (the original summed them, which can exceed 1 where objects overlap).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.benchmarks.layout import (
    image_size,
    list_frame_names,
    read_json,
    require_field,
    require_id_list,
    require_mapping,
    require_string_list,
)
from videolisa.data.base import DataRoot, TrainingDataset, draw_index
from videolisa.data.prompts import long_question, segmentation_conversation, short_question
from videolisa.data.sample import (
    NoTargetError,
    SampleConfig,
    TrainingSample,
    build_video_sample,
    draw_clip_frames,
    read_rgb_frames,
)
from videolisa.errors import InvalidInputError, MissingFilesError

FRAME_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
# MeViS valid_u in the original training set: the first expressions of each video, one clip each.
MEVIS_VALID_U_SPLIT = "valid_u"
MEVIS_VALID_U_EXPRESSIONS = 8


@dataclass(frozen=True)
class VideoClip:
    """One training item of a video dataset.

    ``anchor`` None means uniform at sampling time; ``target`` is what the dataset needs to build masks
    (an object id, MeViS annotation ids, nothing for YouTube-VOS).
    """

    video: str
    frames_dir: Path
    frame_names: tuple[str, ...]
    text: str
    anchor: int | None
    target: tuple[Any, ...]
    is_sentence: bool = False


def normalize_expression(text: str) -> str:
    """Lower-case and collapse whitespace: ``" The  Dog "`` -> ``"the dog"``."""
    return " ".join(text.lower().split())


def anchors_every(num_frames: int, stride: int) -> range:
    """Clip anchors 0, stride, 2 x stride, ... < num_frames (ReferFormer's ``prepare_metas``)."""
    return range(0, num_frames, stride)


def _require_frames_dir(frames_root: Path, video: str) -> Path:
    frames_dir = frames_root / video
    if not frames_dir.is_dir():
        raise MissingFilesError(f"frames folder {frames_dir} of video {video!r} not found")
    return frames_dir


class VideoClipDataset(TrainingDataset):
    """A video dataset whose items are :class:`VideoClip` s; subclasses build the masks."""

    clips: list[VideoClip]

    def __len__(self) -> int:
        return len(self.clips)

    @abc.abstractmethod
    def clip_text_and_masks(
        self, clip: VideoClip, sparse: Sequence[int], dense: Sequence[int], rng: np.random.Generator
    ) -> tuple[str, np.ndarray]:
        """The phrase to ask about and the ``[1, T_d, H, W]`` target of the dense frames ``dense`` (video frame
        indices); ``sparse`` are all sampled frames."""

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        settings = self.settings
        clip = self.clips[index]
        num_frames = len(clip.frame_names)
        anchor = clip.anchor if clip.anchor is not None else draw_index(num_frames, rng)
        sparse, dense_positions = draw_clip_frames(num_frames, anchor, settings, rng)
        dense = [sparse[position] for position in dense_positions]
        text, masks = self.clip_text_and_masks(clip, sparse, dense, rng)
        question = long_question(text, rng) if clip.is_sentence else short_question(text, rng)
        conversation = segmentation_conversation(question, rng, settings.seg_token)
        unique = sorted(set(sparse))
        decoded = read_rgb_frames([clip.frames_dir / f"{clip.frame_names[i]}{FRAME_SUFFIX}" for i in unique])
        metadata = {"dataset": self.name, "video": clip.video, "text": text, "frames": sparse, "dense": dense}
        return build_video_sample(
            dict(zip(unique, decoded)), sparse, dense_positions, masks, conversation, settings, metadata
        )


def read_object_ids(path: Path) -> np.ndarray:
    """``[H, W]`` object ids of a palette / grayscale annotation PNG."""
    from videolisa.metrics.io import read_label_png

    if not path.is_file():
        raise MissingFilesError(f"annotation {path} not found")
    return read_label_png(path)


class ExpressionClipDataset(VideoClipDataset):
    """Clips whose phrase is the item's expression; subclasses read the target of given frames."""

    def clip_text_and_masks(
        self, clip: VideoClip, sparse: Sequence[int], dense: Sequence[int], rng: np.random.Generator
    ) -> tuple[str, np.ndarray]:
        return clip.text, self.target_masks(clip, dense)[None]

    @abc.abstractmethod
    def target_masks(self, clip: VideoClip, frame_indices: Sequence[int]) -> np.ndarray:
        """``[T_d, H, W]`` bool target of the given video frames."""


class ReferFormerDataset(ExpressionClipDataset):
    """Referring video object segmentation in the ReferFormer layout (Ref-YouTube-VOS, Ref-DAVIS17)."""

    def __init__(self, settings: SampleConfig, root: DataRoot, name: str) -> None:
        super().__init__(settings)
        self.name = name
        frames_root = root.dir("train/JPEGImages")
        self.annotations_root = root.dir("train/Annotations")
        meta_path = root.file("meta_expressions/train/meta_expressions.json")
        videos = require_field(read_json(meta_path, f"{name} meta file"), "videos", dict, str(meta_path))
        self.clips = []
        for video, entry in sorted(videos.items()):
            where = f"{meta_path}: video {video!r}"
            frame_names = require_string_list(entry, "frames", where)
            frames_dir = _require_frames_dir(frames_root, video)
            for exp_id, expression in sorted(require_field(entry, "expressions", dict, where).items()):
                exp_where = f"{where}, expression {exp_id!r}"
                text = normalize_expression(require_field(expression, "exp", str, exp_where))
                obj_id = int(require_field(expression, "obj_id", (str, int), exp_where))
                for anchor in anchors_every(len(frame_names), settings.num_frames_sparse):
                    self.clips.append(VideoClip(video, frames_dir, frame_names, text, anchor, (obj_id,)))
        if not self.clips:
            raise InvalidInputError(f"{meta_path} lists no expression")

    def target_masks(self, clip: VideoClip, frame_indices: Sequence[int]) -> np.ndarray:
        (obj_id,) = clip.target
        folder = self.annotations_root / clip.video
        return np.stack(
            [read_object_ids(folder / f"{clip.frame_names[i]}{MASK_SUFFIX}") == obj_id for i in frame_indices]
        )


class YouTubeVOSDataset(VideoClipDataset):
    """YouTube-VOS (train) with category-level targets."""

    name = "ytvos"

    def __init__(self, settings: SampleConfig, root: DataRoot) -> None:
        super().__init__(settings)
        frames_root = root.dir("train/JPEGImages")
        self.annotations_root = root.dir("train/Annotations")
        meta_path = root.file("train/meta.json")
        videos = require_field(read_json(meta_path, "YouTube-VOS meta file"), "videos", dict, str(meta_path))
        self.categories: dict[str, dict[int, str]] = {}
        self.clips = []
        for video, entry in sorted(videos.items()):
            where = f"{meta_path}: video {video!r}"
            objects = require_field(entry, "objects", dict, where)
            self.categories[video] = {
                int(obj_id): require_field(obj, "category", str, f"{where}, object {obj_id}")
                for obj_id, obj in objects.items()
            }
            frames_dir = _require_frames_dir(frames_root, video)
            frame_names = list_frame_names(frames_dir, FRAME_SUFFIX)
            self.clips.append(VideoClip(video, frames_dir, frame_names, "", None, ()))

    def clip_text_and_masks(
        self, clip: VideoClip, sparse: Sequence[int], dense: Sequence[int], rng: np.random.Generator
    ) -> tuple[str, np.ndarray]:
        folder = self.annotations_root / clip.video
        categories = self.categories[clip.video]
        first = read_object_ids(folder / f"{clip.frame_names[sparse[0]]}{MASK_SUFFIX}")
        visible = sorted({categories[int(i)] for i in np.unique(first) if int(i) in categories})
        if not visible:
            raise NoTargetError(
                f"no annotated object is visible in frame {clip.frame_names[sparse[0]]} of {clip.video}"
            )
        category = visible[draw_index(len(visible), rng)]
        object_ids = [obj_id for obj_id, name in categories.items() if name == category]
        masks = np.stack(
            [np.isin(read_object_ids(folder / f"{clip.frame_names[i]}{MASK_SUFFIX}"), object_ids) for i in dense]
        )
        return category, masks[None]


class MeViSDataset(ExpressionClipDataset):
    """MeViS motion expressions (train and valid_u by default)."""

    name = "mevis"

    def __init__(self, settings: SampleConfig, root: DataRoot, splits: Sequence[str]) -> None:
        super().__init__(settings)
        if not splits:
            raise InvalidInputError("data.mevis_splits is empty; list at least one MeViS split (e.g. [train])")
        self.root = root
        self.splits = list(splits)
        self.clips = []
        for split in self.splits:
            self.clips.extend(self._split_clips(split))
        if not self.clips:
            raise InvalidInputError(f"{root.key}={root.path}: the splits {self.splits} list no expression")

    def _split_clips(self, split: str) -> list[VideoClip]:
        frames_root = self.root.dir(f"{split}/JPEGImages")
        self.root.file(f"{split}/mask_dict.json")
        meta_path = self.root.file(f"{split}/meta_expressions.json")
        videos = require_field(read_json(meta_path, "MeViS meta file"), "videos", dict, str(meta_path))
        clips = []
        for video, entry in sorted(videos.items()):
            where = f"{meta_path}: video {video!r}"
            frame_names = require_string_list(entry, "frames", where)
            frames_dir = _require_frames_dir(frames_root, video)
            expressions = list(require_field(entry, "expressions", dict, where).items())
            if split == MEVIS_VALID_U_SPLIT:
                expressions = expressions[:MEVIS_VALID_U_EXPRESSIONS]
            for exp_id, expression in expressions:
                exp_where = f"{where}, expression {exp_id!r}"
                # Official MeViS has phrases only; synthetic MeViS-layout data marks reasoning sentences with
                # "is_sent", which go into a LONG question with their casing kept, as ReasonSeg sentences do.
                is_sentence = bool(expression.get("is_sent", False))
                raw_text = require_field(expression, "exp", str, exp_where)
                text = " ".join(raw_text.split()) if is_sentence else normalize_expression(raw_text)
                anno_ids = require_id_list(expression, "anno_id", exp_where)
                anchors = (
                    [0]
                    if split == MEVIS_VALID_U_SPLIT
                    else anchors_every(len(frame_names), self.settings.num_frames_sparse)
                )
                clips.extend(
                    VideoClip(video, frames_dir, frame_names, text, anchor, (split, anno_ids), is_sentence)
                    for anchor in anchors
                )
        return clips

    @cached_property
    def _mask_dicts(self) -> dict[str, dict[str, Any]]:
        """Split -> anno id -> per-frame RLEs (loaded on first use, once per process)."""
        return {
            split: require_mapping(read_json(self.root.file(f"{split}/mask_dict.json"), "MeViS mask_dict"), split)
            for split in self.splits
        }

    def target_masks(self, clip: VideoClip, frame_indices: Sequence[int]) -> np.ndarray:
        from videolisa.metrics.io import decode_rle

        split, anno_ids = clip.target
        mask_dict = self._mask_dicts[split]
        height, width = image_size(clip.frames_dir / f"{clip.frame_names[frame_indices[0]]}{FRAME_SUFFIX}")
        masks = np.zeros((len(frame_indices), height, width), dtype=bool)
        for anno_id in anno_ids:
            if anno_id not in mask_dict:
                raise InvalidInputError(
                    f"MeViS {split}: anno_id {anno_id} of video {clip.video} is not in mask_dict.json"
                )
            rles = mask_dict[anno_id]
            for row, frame_index in enumerate(frame_indices):
                rle = rles[frame_index]
                if rle:
                    masks[row] |= decode_rle(rle).astype(bool)
        return masks
