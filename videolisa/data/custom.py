"""Your own training data: a JSONL file of (video, instruction, masks) records.

Each line of the file is one JSON object; relative paths are relative to the folder of the JSONL file::

    {"video": "videos/dog.mp4", "instruction": "dog jumping over the fence", "masks": "masks/dog"}
    {"video": "frames/cat", "instruction": "Which animal hides first? Segment it.", "is_sentence": true,
     "masks": {"rle": [{"size": [480, 640], "counts": "..."}, null, ...]}}
    {"video": "images/street.jpg", "instruction": "red car", "masks": "images/street_car.png"}
    {"video": "frames/kitchen", "instruction": "two cups", "masks": "masks/kitchen", "mask_value": 3}
    {"video": "frames/cat", "instruction": "What is the cat doing?", "answer": "It is sleeping on a sofa."}
    {"video": "frames/kitchen", "instruction": "the cups", "masks": ["masks/kitchen", "masks/kitchen"],
     "mask_value": [3, 5], "answer": "Sure, [SEG] the red cup, and [SEG] the blue cup."}

Fields:

* ``video`` (required): a video file (``.mp4 .avi .mov .webm .mkv``), a folder of frames (``.jpg``/``.png``,
  natural order: ``2.jpg`` before ``10.jpg``) or a single image (trained as a pseudo-video, like the image
  datasets).
* ``instruction`` (required): what to segment. A phrase (default) is lower-cased into a SHORT question
  (``"Please segment the {instruction} in this image."`` and the other original templates); with
  ``"is_sentence": true`` it is a reasoning sentence kept as written in a LONG question
  (``"{instruction} Please output segmentation mask."``).
* ``masks``: the target, one of

  - a folder of PNGs named after the frames (``<frame name>.png``; frame names are the file stems of a frame
    folder, ``00000``, ``00001``, ... for a video file). Frames without a PNG are unannotated: training
    clips are drawn among the annotated frames only (as YouTube-VOS is annotated every 5th frame);
  - a PNG file, for a single image;
  - ``{"rle": [...]}``: one COCO RLE (``{"size": [h, w], "counts": str}``, as ``pycocotools`` writes) or
    ``null`` (empty mask) per frame of the video.

  - a list of these, one per object when the instruction names several: the ``answer`` is then required and
    holds one ``[SEG]`` per entry, in the same order (each ``[SEG]`` is trained on its own object's masks;
    several objects as one target are the union in one mask instead). Frames are drawn among those annotated
    in every entry.

  A pixel belongs to the target where the PNG is non-zero, or where it equals ``mask_value`` (an object id
  of a palette or grayscale PNG that holds several objects; with a list of masks, a list of ids or nulls of
  the same length). Without ``masks`` the record is a text-only exchange and needs an ``answer`` (e.g.
  ``"There is none in the video."`` for a referent that is not there: an empty mask under ``[SEG]`` gets almost
  no gradient from the DICE loss alone).
* ``answer`` (optional): the assistant's reply. Default: one of the original answers (``"Sure, [SEG]."``,
  ...). With masks it must contain the segmentation token ``[SEG]`` once per mask entry.

Use it with ``data.custom_files=[/path/a.jsonl, ...]`` and a rate ``data.rates.custom`` (e.g. the only rate
for a custom-only fine-tune). Every record's files are checked when training starts.

With ``data.custom_targets: N`` (default 1) a sample about a video with masks also asks about up to ``N - 1``
other records of the same video with masks on the same frames, as further question/answer turns of one
conversation with one ``[SEG]`` each (the original's ``num_classes_per_sample > 1`` for image data makes
extra conversations instead; turns share one pass over the video); a text-only record likewise brings up to
``N - 1`` other text-only records of its video (several questions about one clip in one conversation).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.benchmarks.layout import require_field
from videolisa.constants import DEFAULT_SEG_TOKEN, VIDEO_PLACEHOLDER
from videolisa.data.base import TrainingDataset, draw_index
from videolisa.data.prompts import long_question, seg_answer, short_question, single_turn
from videolisa.data.sample import (
    SampleConfig,
    TrainingSample,
    build_image_sample,
    build_video_sample,
    draw_clip_frames,
)
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.processing.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

RECORD_FIELDS = ("video", "instruction", "is_sentence", "masks", "mask_value", "answer")


@dataclass(frozen=True)
class MaskSource:
    """Where one target's masks come from: a PNG file or folder of PNGs (pixels equal to ``value``, or non-zero
    when it is None), or one COCO RLE or None per frame."""

    png: Path | None
    rles: tuple[dict[str, Any] | None, ...] | None
    value: int | None = None


@dataclass(frozen=True)
class CustomRecord:
    """One parsed line of a custom JSONL file: ``targets`` holds one :class:`MaskSource` per ``[SEG]`` of the
    answer (none for a text-only record)."""

    where: str  # "<file>:<line>" for error messages
    video: Path
    instruction: str
    is_sentence: bool
    targets: tuple[MaskSource, ...]
    answer: str | None

    @property
    def has_masks(self) -> bool:
        """Whether the record has a target (otherwise it is text-only)."""
        return bool(self.targets)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _parse_mask_source(masks: Any, value: Any, base: Path, where: str) -> MaskSource:
    """One entry of ``masks`` (a PNG path or ``{"rle": [...]}``) with its ``mask_value``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidInputError(f"{where}: 'mask_value' must be an integer object id, got {value!r}")
    if isinstance(masks, str):
        path = _resolve(base, masks)
        if not path.exists():
            raise MissingFilesError(f"{where}: masks {path} does not exist")
        if path.is_file() and path.suffix.lower() != ".png":
            raise InvalidInputError(f"{where}: masks {path} must be a .png file or a folder of .png files")
        return MaskSource(path, None, value)
    if not isinstance(masks, dict):
        raise InvalidInputError(f'{where}: masks must be a PNG path, {{"rle": [...]}} or a list of these')
    if value is not None:
        raise InvalidInputError(f"{where}: 'mask_value' applies to PNG masks, not to RLE masks")
    rles = require_field(masks, "rle", list, f"{where}: masks")
    for index, rle in enumerate(rles):
        if rle is not None:
            require_field(rle, "size", list, f"{where}: masks.rle[{index}]")
            require_field(rle, "counts", (str, list), f"{where}: masks.rle[{index}]")
    return MaskSource(None, tuple(rles), None)


def _parse_targets(record: dict[str, Any], base: Path, where: str) -> tuple[MaskSource, ...]:
    """The record's ``masks`` (one entry or a list) with their ``mask_value`` s."""
    masks, values = record.get("masks"), record.get("mask_value")
    if masks is None:
        if values is not None:
            raise InvalidInputError(f"{where}: 'mask_value' without 'masks'")
        return ()
    if not isinstance(masks, list):
        return (_parse_mask_source(masks, values, base, where),)
    if not masks:
        raise InvalidInputError(f"{where}: 'masks' is an empty list")
    if values is None:
        values = [None] * len(masks)
    if not isinstance(values, list) or len(values) != len(masks):
        raise InvalidInputError(f"{where}: with a list of {len(masks)} masks, 'mask_value' must be a list as long")
    return tuple(
        _parse_mask_source(entry, value, base, f"{where}: masks[{index}]")
        for index, (entry, value) in enumerate(zip(masks, values))
    )


def parse_custom_record(record: Any, base: Path, where: str, seg_token: str = DEFAULT_SEG_TOKEN) -> CustomRecord:
    """Validate one JSON record (see the module docstring) and resolve its paths against ``base``."""
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if unknown:
        raise InvalidInputError(f"{where}: unknown fields {unknown}; allowed: {list(RECORD_FIELDS)}")
    video = _resolve(base, require_field(record, "video", str, where))
    if not video.exists():
        raise MissingFilesError(f"{where}: video {video} does not exist")
    if video.is_file() and video.suffix.lower() not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise InvalidInputError(f"{where}: video {video} is neither a video file nor an image")
    instruction = require_field(record, "instruction", str, where).strip()
    if not instruction:
        raise InvalidInputError(f"{where}: 'instruction' is empty")
    targets = _parse_targets(record, base, where)
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise InvalidInputError(f"{where}: 'answer' must be a string")
    if len(targets) > 1 and answer is None:
        raise InvalidInputError(
            f"{where}: a record with {len(targets)} masks needs an 'answer' with one {seg_token!r} each"
        )
    if targets and answer is not None and answer.count(seg_token) != len(targets):
        raise InvalidInputError(
            f"{where}: the answer must contain {seg_token!r} once per mask ({len(targets)}), "
            f"found {answer.count(seg_token)}"
        )
    if not targets and (answer is None or seg_token in answer):
        raise InvalidInputError(f"{where}: a record without masks needs an 'answer' without {seg_token!r}")
    return CustomRecord(where, video, instruction, bool(record.get("is_sentence", False)), targets, answer)


def read_custom_file(path: Path, seg_token: str = DEFAULT_SEG_TOKEN) -> list[CustomRecord]:
    """All records of a JSONL file; blank lines are allowed, anything else must be a valid record."""
    if not path.is_file():
        raise MissingFilesError(f"custom data file {path} does not exist (data.custom_files)")
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInputError(f"{where}: not valid JSON: {error}") from error
        records.append(parse_custom_record(record, path.parent, where, seg_token))
    if not records:
        raise InvalidInputError(f"custom data file {path} has no record")
    return records


class CustomDataset(TrainingDataset):
    """The records of one or more custom JSONL files, uniformly."""

    name = "custom"

    def __init__(
        self,
        settings: SampleConfig,
        files: Sequence[str | Path],
        targets_per_sample: int = 1,
        keep: Callable[[CustomRecord], bool] | None = None,
    ) -> None:
        """``keep``: only the records it accepts are sampled (also as companions); None keeps all."""
        super().__init__(settings)
        if not files:
            raise InvalidInputError("data.custom_files is empty, but the mixture has a 'custom' rate")
        if targets_per_sample < 1:
            raise InvalidInputError(f"data.custom_targets must be >= 1, got {targets_per_sample}")
        records = [record for file in files for record in read_custom_file(Path(file), settings.seg_token)]
        self.records = records if keep is None else [record for record in records if keep(record)]
        self.num_left_out = len(records) - len(self.records)
        if not self.records:
            raise InvalidInputError(f"no record of {[str(file) for file in files]} is of the kind this training uses")
        self.targets_per_sample = targets_per_sample
        # Companions come from the same video and are of the same sort (with masks / text-only).
        self._records_of_video: dict[tuple[Path, bool], list[int]] = {}
        for index, record in enumerate(self.records):
            self._records_of_video.setdefault((record.video, record.has_masks), []).append(index)

    def __len__(self) -> int:
        return len(self.records)

    def _conversation(self, records: Sequence[CustomRecord], rng: np.random.Generator) -> list[tuple[str, str]]:
        """One question/answer turn per record; only the first question carries the video."""
        turns = []
        for turn, record in enumerate(records):
            if record.is_sentence:
                question = long_question(record.instruction, rng)
            else:
                question = short_question(record.instruction.lower(), rng)
            if turn > 0:
                question = question.removeprefix(f"{VIDEO_PLACEHOLDER}\n")
            answer = record.answer if record.answer is not None else seg_answer(rng, self.settings.seg_token)
            turns += single_turn(question, answer)
        return turns

    def _companions(
        self, index: int, frame_names: Sequence[str], dense: Sequence[int], rng: np.random.Generator
    ) -> list[int]:
        """Up to ``targets_per_sample - 1`` other records of the same video: with masks on every dense frame for a
        record with masks, text-only ones for a text-only record."""
        record = self.records[index]
        if self.targets_per_sample == 1:
            return []
        others = [other for other in self._records_of_video[(record.video, record.has_masks)] if other != index]
        chosen = []
        for other in (others[i] for i in rng.permutation(len(others))):
            if len(chosen) == self.targets_per_sample - 1:
                break
            if not record.has_masks or set(dense) <= set(self._annotated_frames(self.records[other], frame_names)):
                chosen.append(other)
        return chosen

    @staticmethod
    def _read_mask(source: MaskSource, frame_index: int, frame_name: str, frame_hw: tuple[int, int]) -> np.ndarray:
        """``[H, W]`` bool target of one annotated frame."""
        from videolisa.metrics.io import decode_rle, read_label_png, read_mask

        if source.rles is not None:
            rle = source.rles[frame_index]
            return np.zeros(frame_hw, dtype=bool) if rle is None else decode_rle(rle).astype(bool)
        path = source.png if source.png.is_file() else source.png / f"{frame_name}.png"
        if source.value is None:
            return read_mask(path).astype(bool)
        return read_label_png(path) == source.value

    def _annotated_frames(self, record: CustomRecord, frame_names: Sequence[str]) -> list[int]:
        """Video frame indices with a target in every mask entry (all frames for RLEs and single PNG files)."""
        annotated = set(range(len(frame_names)))
        for source in record.targets:
            annotated &= set(self._annotated_frames_of(record, source, frame_names))
        if not annotated:
            raise InvalidInputError(f"{record.where}: no frame is annotated in every entry of 'masks'")
        return sorted(annotated)

    @staticmethod
    def _annotated_frames_of(record: CustomRecord, source: MaskSource, frame_names: Sequence[str]) -> list[int]:
        if source.rles is not None:
            if len(source.rles) != len(frame_names):
                raise InvalidInputError(
                    f"{record.where}: masks.rle has {len(source.rles)} entries for {len(frame_names)} frames"
                )
            return list(range(len(frame_names)))
        if source.png.is_file():
            return list(range(len(frame_names)))
        present = {path.stem for path in source.png.glob("*.png")}
        annotated = [index for index, name in enumerate(frame_names) if name in present]
        if not annotated:
            raise InvalidInputError(
                f"{record.where}: no PNG in {source.png} is named after a frame (frame names: "
                f"{list(frame_names[:3])}...)"
            )
        return annotated

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        from videolisa.processing.video_io import open_video

        record = self.records[index]
        metadata = {"dataset": self.name, "record": record.where}
        with open_video(record.video) as reader:
            frame_names = list(reader.frame_names)
            frame_hw = (reader.height, reader.width)
            single_png = any(source.png is not None and source.png.is_file() for source in record.targets)
            if single_png and reader.num_frames != 1:
                raise InvalidInputError(f"{record.where}: a single mask PNG needs a single image as 'video'")
            annotated = self._annotated_frames(record, frame_names)
            if reader.num_frames == 1:
                conversation = self._conversation([record], rng)
                masks = [self._read_mask(source, 0, frame_names[0], frame_hw) for source in record.targets]
                image = reader.get_frames([0])[0]
                return build_image_sample(
                    image, np.array(masks, dtype=np.uint8).reshape(-1, *frame_hw), conversation, self.settings, metadata
                )
            positions, dense_positions = draw_clip_frames(
                len(annotated), draw_index(len(annotated), rng), self.settings, rng
            )
            sparse = [annotated[position] for position in positions]
            dense = [sparse[position] for position in dense_positions]
            unique = sorted(set(sparse))
            frames = dict(zip(unique, reader.get_frames(unique)))
        targets = [record, *(self.records[other] for other in self._companions(index, frame_names, dense, rng))]
        conversation = self._conversation(targets, rng)
        if record.has_masks:
            sources = [source for target in targets for source in target.targets]  # in the order of the [SEG]s
            masks = np.stack(
                [np.stack([self._read_mask(source, i, frame_names[i], frame_hw) for i in dense]) for source in sources]
            )
        else:
            masks = np.zeros((0, len(dense), *frame_hw), dtype=np.uint8)
        metadata.update(frames=sparse, dense=dense, records=[target.where for target in targets])
        return build_video_sample(frames, sparse, dense_positions, masks, conversation, self.settings, metadata)
