"""Writing generated videos: the MeViS layout, the ReasonVOS layout, a custom-data JSONL
(:mod:`videolisa.data.custom`, with answers that name the referent) and H.264 mp4 files with PNG masks;
:func:`write_synthetic_dataset` writes any of them atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.constants import DEFAULT_SEG_TOKEN
from videolisa.errors import InvalidInputError
from videolisa.synthetic.generate import generate_videos
from videolisa.synthetic.scene import SyntheticConfig, SyntheticExpression, SyntheticObject, SyntheticVideo

LAYOUTS = ("mevis", "reasonvos", "revos", "custom", "mp4")
# Split written by default: the MeViS split folder, the ReVOS meta file's split.
DEFAULT_SPLITS = {"mevis": "valid_u", "revos": "valid"}
# ReasonVOS names an object's mask folder "<source>_<video>_<obj_id>"; this is the source of synthetic videos.
SYNTHETIC_SOURCE = "synthetic"
# Written into every dataset folder; an existing folder is replaced (overwrite) only if it holds this file.
SYNTH_MARKER = ".videolisa-synth.json"
_JPEG_QUALITY = 95


def _write_jpeg_frames(frames: np.ndarray, names: Sequence[str], folder: Path) -> None:
    """``[T, H, W, 3]`` uint8 RGB -> ``<folder>/<name>.jpg`` (quality 95, no chroma subsampling)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for frame, frame_name in zip(frames, names):
        Image.fromarray(frame).save(folder / f"{frame_name}.jpg", format="JPEG", quality=_JPEG_QUALITY, subsampling=0)


def _write_png_masks(masks: np.ndarray, names: Sequence[str], folder: Path) -> None:
    """``[T, H, W]`` bool -> single-channel 0/255 PNGs ``<folder>/<name>.png`` (the prediction writer's format)."""
    from videolisa.mask_io import MaskWriter

    with MaskWriter(names, masks.shape[1], masks.shape[2], png_dir=folder) as writer:
        writer.write(masks)


def _encode_rle(mask: np.ndarray) -> dict[str, Any] | None:
    """``[H, W]`` bool -> COCO RLE ``{"size": [h, w], "counts": str}``, or None for an empty mask (MeViS)."""
    from pycocotools import mask as coco_mask

    if not mask.any():
        return None
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _write_json(data: Any, path: Path) -> None:
    """Compact JSON in insertion order (identical data gives identical bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_mevis_layout(videos: Iterable[SyntheticVideo], root: Path, split: str = "valid_u") -> None:
    """Write videos in the MeViS layout under ``root/<split>/``.

    ``JPEGImages/<video>/<frame>.jpg``; ``meta_expressions.json`` = ``{"videos": {<video>: {"frames": [...],
    "expressions": {<exp_id>: {"exp", "obj_id": [i], "anno_id": [a], "kind", "is_sent"}}}}}`` (``kind`` and
    ``is_sent`` are extra fields); ``mask_dict.json`` = ``{<anno_id>: [per-frame COCO RLE or null]}`` with one
    annotation per object, numbered across the split. A ``multi`` expression lists all its referents; an
    ``absent`` one lists a video's extra annotation whose frames are all null (the MeViS scorers need one id).
    Writes in place; see :func:`write_synthetic_dataset`.
    """
    split_dir = Path(root) / split
    meta: dict[str, Any] = {}
    mask_dict: dict[str, list[dict[str, Any] | None]] = {}
    for video in videos:
        _write_jpeg_frames(video.frames, video.frame_names, split_dir / "JPEGImages" / video.name)
        anno_ids = [len(mask_dict) + index for index in range(len(video.objects))]
        for anno_id, masks in zip(anno_ids, video.masks):
            mask_dict[str(anno_id)] = [_encode_rle(mask) for mask in masks]
        empty_id = None
        if any(not expression.targets for expression in video.expressions):
            empty_id = len(mask_dict)
            mask_dict[str(empty_id)] = [None] * video.num_frames
        meta[video.name] = {
            "frames": list(video.frame_names),
            "expressions": {
                str(exp_id): {
                    "exp": expression.text,
                    "obj_id": list(expression.targets),
                    "anno_id": [anno_ids[index] for index in expression.targets] or [empty_id],
                    "kind": expression.kind,
                    "is_sent": expression.is_sentence,
                }
                for exp_id, expression in enumerate(video.expressions)
            },
        }
    _write_json({"videos": meta}, split_dir / "meta_expressions.json")
    _write_json(mask_dict, split_dir / "mask_dict.json")


CUSTOM_FILE = "annotations.jsonl"
# Text-only questions of the custom layout (see write_custom_layout).
QUESTIONS_FILE = "questions.jsonl"


def _appearance(obj: SyntheticObject) -> str:
    return f"{obj.color} {obj.size} {obj.shape}"


def describing_answer(obj: SyntheticObject, seg_token: str = DEFAULT_SEG_TOKEN) -> str:
    """``"Sure, [SEG] red small triangle."``: the original's ``"Sure, [SEG]."`` followed by what the object looks
    like, colour first.

    A model that reads the hidden state *at* ``[SEG]`` (``seg_hidden_offset=0``) is then taught by the
    language-model loss to put the referent's appearance into exactly the state that prompts SAM, whatever
    the kind of instruction; inference still teacher-forces ``"Sure, [SEG]."`` and a causal model never sees
    the words after ``[SEG]`` there. (On its own this did not make the toy model follow instructions; see
    ``videolisa/builtin/synthetic/MODEL_CARD.md``.)
    """
    return f"Sure, {seg_token} {_appearance(obj)}."


def _enumerate_phrases(phrases: Sequence[str]) -> str:
    """``"a"``, ``"a, and b"``, ``"a, b, and c"``: a comma before every ``and``, so that each phrase of an answer
    with one ``[SEG]`` per object is a clause of its own (how generation attaches phrases to tracks)."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + ", and " + phrases[-1]


def group_answer(objects: Sequence[SyntheticObject], seg_token: str = DEFAULT_SEG_TOKEN) -> str:
    """The answer of a ``multi`` instruction: one ``[SEG]`` per referent, each followed by its appearance like
    :func:`describing_answer` (``"Sure, [SEG] red small triangle, and [SEG] blue large circle."``; the masks
    are the referents' own, in that order)."""
    if not objects:
        raise ValueError("group_answer needs at least one object (an absent referent is answered by naming_answer)")
    return "Sure, " + _enumerate_phrases([f"{seg_token} {_appearance(obj)}" for obj in objects]) + "."


def naming_answer(objects: Sequence[SyntheticObject]) -> str:
    """The text-only answer that names an instruction's referents without segmenting them: ``"Sure, the red small
    triangle."`` (the words of :func:`describing_answer` and :func:`group_answer` with ``the`` where ``[SEG]``
    stands, so the position that later holds ``[SEG]`` learns to announce the referent; several as
    ``"Sure, the red small triangle, and the blue large circle."``), or ``"There is none in the video."``."""
    if not objects:
        return "There is none in the video."
    return "Sure, " + _enumerate_phrases([f"the {_appearance(obj)}" for obj in objects]) + "."


def write_custom_layout(videos: Iterable[SyntheticVideo], root: Path) -> None:
    """Write videos as custom training data (:mod:`videolisa.data.custom`) under ``root``.

    ``JPEGImages/<video>/<frame>.jpg``, ``annotations.jsonl`` with one record per expression:
    ``{"video": "JPEGImages/<video>", "instruction", "is_sentence", "masks": {"rle": [per-frame RLE or
    null]}, "answer": describing_answer(referent)}`` (a ``multi`` instruction has a list of its referents' masks
    and :func:`group_answer` with one ``[SEG]`` each; an ``absent`` one is a text-only record answered
    ``"There is none in the video."``: no ``[SEG]``, so no track in generation mode), and :data:`QUESTIONS_FILE`
    with the same instructions as text-only records answered by :func:`naming_answer` (video question answering
    about the same clips: which object the instruction means, for a language-model-only training stage).
    Writes in place.
    """
    root = Path(root)
    annotations, questions = [], []
    for video in videos:
        _write_jpeg_frames(video.frames, video.frame_names, root / "JPEGImages" / video.name)
        rles = [[_encode_rle(mask) for mask in masks] for masks in video.masks]
        for expression in video.expressions:
            referents = [video.objects[index] for index in expression.targets]
            if expression.object_index is not None:
                masks: Any = {"rle": rles[expression.object_index]}
                answer = describing_answer(referents[0])
            elif referents:
                masks = [{"rle": rles[index]} for index in expression.targets]
                answer = group_answer(referents)
            else:
                masks, answer = None, naming_answer(referents)
            question = {
                "video": f"JPEGImages/{video.name}",
                "instruction": expression.text,
                "is_sentence": expression.is_sentence,
            }
            annotations.append(json.dumps({**question, **({"masks": masks} if masks else {}), "answer": answer}))
            questions.append(json.dumps({**question, "answer": naming_answer(referents)}))
    (root / CUSTOM_FILE).write_text("\n".join(annotations) + "\n", encoding="utf-8")
    (root / QUESTIONS_FILE).write_text("\n".join(questions) + "\n", encoding="utf-8")


def reasonvos_mask_folder(video: str, object_index: int | str) -> str:
    """ReasonVOS mask folder name of an object: ``<source>_<video>_<obj_id>``."""
    return f"{SYNTHETIC_SOURCE}_{video}_{object_index}"


def reasonvos_object_id(expression: SyntheticExpression) -> int | str:
    """The ReasonVOS ``obj_id`` of an expression: its referent's index, ``"0+2"`` for the union of several
    referents, ``"absent"`` for none (mask folders of empty masks)."""
    if expression.object_index is not None:
        return expression.object_index
    return "+".join(str(index) for index in expression.targets) or "absent"


def write_reasonvos_layout(videos: Iterable[SyntheticVideo], root: Path) -> None:
    """Write videos in the ReasonVOS layout under ``root``.

    ``JPEGImages/<video>/<frame>.jpg``; ``Annotations/synthetic_<video>_<obj_id>/<frame>.png`` (0/255, one
    folder per object); ``meta_expressions.json`` = ``{"videos": {<video>: {"source": "synthetic", "frames":
    [...], "expressions": [{"obj_id", "exp_id", "exp_text", "is_sent", "kind"}, ...]}}}``. Extra kinds get a
    folder of their own (:func:`reasonvos_object_id`): the union of their referents' masks. Writes in place.
    """
    root = Path(root)
    meta: dict[str, Any] = {}
    for video in videos:
        _write_jpeg_frames(video.frames, video.frame_names, root / "JPEGImages" / video.name)
        for object_index, masks in enumerate(video.masks):
            mask_folder = root / "Annotations" / reasonvos_mask_folder(video.name, object_index)
            _write_png_masks(masks, video.frame_names, mask_folder)
        for expression in video.expressions:
            if expression.object_index is None:
                mask_folder = root / "Annotations" / reasonvos_mask_folder(video.name, reasonvos_object_id(expression))
                _write_png_masks(expression.target_masks(video.masks), video.frame_names, mask_folder)
        meta[video.name] = {
            "source": SYNTHETIC_SOURCE,
            "frames": list(video.frame_names),
            "expressions": [
                {
                    "obj_id": reasonvos_object_id(expression),
                    "exp_id": str(exp_id),
                    "exp_text": expression.text,
                    "is_sent": expression.is_sentence,
                    "kind": expression.kind,
                }
                for exp_id, expression in enumerate(video.expressions)
            ],
        }
    _write_json({"videos": meta}, root / "meta_expressions.json")


# ReVOS expression types (``type_id``): referring phrases, reasoning sentences, no-target expressions.
REVOS_REFERRING, REVOS_REASONING, REVOS_NO_TARGET = 0, 1, 2


def revos_type(expression: SyntheticExpression) -> int:
    """ReVOS ``type_id`` of an expression: no-target when nothing is referred to, else reasoning for sentences."""
    if not expression.targets:
        return REVOS_NO_TARGET
    return REVOS_REASONING if expression.is_sentence else REVOS_REFERRING


def _encode_foreground(mask: np.ndarray) -> dict[str, Any]:
    """``[H, W]`` bool -> COCO RLE, also for an empty mask (the official ReVOS scorer decodes every entry)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def write_revos_layout(videos: Iterable[SyntheticVideo], root: Path, split: str = "valid") -> None:
    """Write videos in the layout of ReVOS's release under ``root``.

    ``JPEGImages/<video>/<frame>.jpg``; ``meta_expressions_<split>_.json`` = ``{"videos": {<video>: {"vid_id",
    "height", "width", "frames": [...], "expressions": {<exp_id>: {"exp", "obj_id": [...], "anno_id": [...],
    "type_id", "kind"}}}}}`` (``type_id`` 0 referring, 1 reasoning, 2 no-target with empty id lists; ``kind`` is
    an extra field); ``mask_dict.json`` = ``{<anno_id>: [per-frame COCO RLE or null]}``, one annotation per
    object; ``mask_dict_foreground.json`` = ``{<video>: {"masks_rle": [per-frame RLE], "foreground_ratio":
    [...]}}``, the union of the annotations the video's expressions refer to, as VISA's
    ``tools/generate_foreground_mask.py`` builds it. Writes in place.
    """
    root = Path(root)
    meta: dict[str, Any] = {}
    mask_dict: dict[str, list[dict[str, Any] | None]] = {}
    foreground: dict[str, dict[str, list]] = {}
    for vid_id, video in enumerate(videos):
        _write_jpeg_frames(video.frames, video.frame_names, root / "JPEGImages" / video.name)
        anno_ids = [len(mask_dict) + index for index in range(len(video.objects))]
        for anno_id, masks in zip(anno_ids, video.masks):
            mask_dict[str(anno_id)] = [_encode_rle(mask) for mask in masks]
        referred = sorted({index for expression in video.expressions for index in expression.targets})
        union = video.masks[referred].any(axis=0)
        foreground[video.name] = {
            "masks_rle": [_encode_foreground(mask) for mask in union],
            "foreground_ratio": [float(mask.mean()) for mask in union],
        }
        meta[video.name] = {
            "vid_id": vid_id,
            "height": video.height,
            "width": video.width,
            "frames": list(video.frame_names),
            "expressions": {
                str(exp_id): {
                    "exp": expression.text,
                    "obj_id": list(expression.targets),
                    "anno_id": [anno_ids[index] for index in expression.targets],
                    "type_id": revos_type(expression),
                    "kind": expression.kind,
                }
                for exp_id, expression in enumerate(video.expressions)
            },
        }
    _write_json({"videos": meta}, root / f"meta_expressions_{split}_.json")
    _write_json(mask_dict, root / "mask_dict.json")
    _write_json(foreground, root / "mask_dict_foreground.json")


def _require_even_sizes(sizes: Iterable[tuple[int, int]]) -> None:
    """H.264 with 4:2:0 chroma needs even heights and widths."""
    for height, width in sizes:
        if height % 2 or width % 2:
            raise InvalidInputError(f"the mp4 layout (H.264, yuv420p) needs even frame sizes, got {height}x{width}")


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    """``[T, H, W, 3]`` uint8 RGB -> H.264 mp4 (yuv420p, CRF 17) with PyAV."""
    import av

    height, width = frames.shape[1:3]
    _require_even_sizes([(height, width)])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "17"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_mp4_layout(videos: Iterable[SyntheticVideo], root: Path, fps: float = 10.0) -> None:
    """Write each video as ``root/<video>/<video>.mp4`` with ``masks/<obj_id>/<frame>.png`` (0/255) and
    ``instructions.json`` (frames, objects, expressions with kinds; extra kinds have ``"obj_id": null`` and their
    referents in ``obj_ids``). Writes in place."""
    root = Path(root)
    for video in videos:
        folder = root / video.name
        folder.mkdir(parents=True, exist_ok=True)
        _write_mp4(video.frames, folder / f"{video.name}.mp4", fps)
        for object_index, masks in enumerate(video.masks):
            _write_png_masks(masks, video.frame_names, folder / "masks" / str(object_index))
        instructions = {
            "video": f"{video.name}.mp4",
            "fps": fps,
            "height": video.height,
            "width": video.width,
            "frames": list(video.frame_names),
            "objects": [{"obj_id": index, **obj.to_json()} for index, obj in enumerate(video.objects)],
            "expressions": [
                {"text": e.text, "kind": e.kind, "obj_id": e.object_index, "is_sent": e.is_sentence}
                | ({} if e.object_index is not None else {"obj_ids": list(e.targets)})
                for e in video.expressions
            ],
        }
        _write_json(instructions, folder / "instructions.json")


def _require_writable_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, a non-empty folder without ``overwrite``, and (even with it) a non-empty folder that
    lacks the :data:`SYNTH_MARKER` this function's writer leaves: ``overwrite`` replaces only earlier output."""
    if out_dir.is_file():
        raise InvalidInputError(f"output {out_dir} is a file; expected a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / SYNTH_MARKER).is_file():
        raise InvalidInputError(
            f"output folder {out_dir} is not empty and was not written by videolisa synth (it has no {SYNTH_MARKER}); "
            "choose an empty or new folder"
        )
    if not overwrite:
        raise InvalidInputError(f"output folder {out_dir} is not empty; pass overwrite (--overwrite) to replace it")


@contextmanager
def _staged_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a sibling staging folder; on success it replaces ``out_dir`` (renames), on failure it is removed."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:12]}.old")
        os.replace(out_dir, retired)
        os.replace(staging, out_dir)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out_dir)


def write_synthetic_dataset(
    out_dir: Path,
    *,
    layout: str = "mevis",
    num_videos: int = 8,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    split: str | None = None,
    fps: float = 10.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``num_videos`` videos and write them atomically to ``out_dir`` in one of :data:`LAYOUTS`.

    Everything is written to a staging folder next to ``out_dir`` that replaces it only once complete. A
    non-empty ``out_dir`` is refused unless ``overwrite`` and it holds the :data:`SYNTH_MARKER` file that every
    dataset written here carries (so no folder this function did not write is ever deleted). ``split`` is the
    MeViS split folder (default ``valid_u``) or the ReVOS meta file's split (default ``valid``:
    ``meta_expressions_valid_.json``); ``fps`` is the mp4 frame rate. Returns ``out_dir``.
    """
    from tqdm import tqdm

    if layout not in LAYOUTS:
        raise InvalidInputError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    split = split if split is not None else DEFAULT_SPLITS.get(layout, "valid_u")
    if not split or Path(split).name != split:
        raise InvalidInputError(f"split must be a plain folder name, got {split!r}")
    if fps <= 0:
        raise InvalidInputError(f"fps must be positive, got {fps}")
    out_dir = Path(out_dir)
    _require_writable_output(out_dir, overwrite)
    config = config or SyntheticConfig()
    if layout == "mp4":
        _require_even_sizes(config.sizes)
    videos = tqdm(
        generate_videos(seed, num_videos, config),
        total=num_videos,
        desc=f"synth ({layout})",
        unit="video",
        disable=not progress,
    )
    with _staged_directory(out_dir) as staging:
        _write_json(
            {"written_by": "videolisa synth", "layout": layout, "seed": seed, "videos": num_videos},
            staging / SYNTH_MARKER,
        )
        if layout == "mevis":
            write_mevis_layout(videos, staging, split)
        elif layout == "reasonvos":
            write_reasonvos_layout(videos, staging)
        elif layout == "revos":
            write_revos_layout(videos, staging, split)
        elif layout == "custom":
            write_custom_layout(videos, staging)
        else:
            write_mp4_layout(videos, staging, fps)
    return out_dir
