"""SAM 2 propagation through transformers (``Sam2VideoModel``), streamed so memory does not grow with the video.

transformers' inference session keeps every preprocessed frame and every frame's outputs. Here the session
reads frames from a :class:`_LazyFrames` mapping (decoded and preprocessed ``frames_per_chunk`` at a time, on
demand) and, after each propagated frame, the outputs that SAM 2 will never read again are dropped: memory
attention reads the ``num_maskmem - 1`` previous frames and ``max_object_pointers_in_encoder - 1`` previous
object pointers, so a frame older than that window is not needed. What the propagation computes is unchanged
(``tests/test_refine.py`` compares it with the official ``sam2`` package).

Order: anchors are added (mask prompts, in frame order), then SAM 2 propagates backward from the first
anchor to frame 0 and forward from the first anchor to the end, as the official predictor's
``propagate_in_video(reverse=True)`` followed by ``propagate_in_video()``. The backward pass comes first so
that frames can be emitted in video order; its frames (first anchor's position, ~11% of the video for the
dense anchors) are held as low-resolution logits until then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from videolisa.errors import MissingFilesError
from videolisa.processing.video_io import VideoReader
from videolisa.refine.settings import RefineConfig

if TYPE_CHECKING:
    from transformers import Sam2VideoInferenceSession, Sam2VideoModel, Sam2VideoProcessor

logger = logging.getLogger(__name__)

_SAM2_FILES = ("config.json", "*.safetensors", "*.json")


def load_sam2(model: str | Path, device: torch.device, dtype: torch.dtype) -> tuple[Sam2VideoModel, Sam2VideoProcessor]:
    """Load a SAM 2 checkpoint (Hub id or directory in transformers' format) and its processor.

    Offline without the files, raises :class:`MissingFilesError` whose one-line message says what to download.
    """
    from transformers import Sam2VideoModel

    from videolisa.checkpoint import resolve_model_dir

    model_dir = resolve_model_dir(model, patterns=_SAM2_FILES)
    if not (model_dir / "config.json").is_file():
        raise MissingFilesError(f"{model_dir} has no config.json: expected a SAM 2 checkpoint in transformers' format")
    sam2 = Sam2VideoModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    return sam2, build_sam2_processor(sam2)


def build_sam2_processor(model: Sam2VideoModel) -> Sam2VideoProcessor:
    """The ``Sam2VideoProcessor`` for ``model``'s input size (SAM 2's published preprocessing: resize to a
    square, ImageNet mean/std)."""
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": model.config.image_size, "width": model.config.image_size}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(
            size=size, mask_size={"height": size["height"] // 4, "width": size["width"] // 4}
        ),
        video_processor=Sam2VideoVideoProcessor(size=size),
        target_size=model.config.image_size,
    )


class _LazyFrames(Mapping):
    """``frame index -> [3, S, S]`` SAM 2 pixels, decoded ``chunk`` frames at a time when the session asks;
    only the current chunk is held (the session caches one frame's features itself)."""

    def __init__(self, reader: VideoReader, processor: Sam2VideoProcessor, chunk: int, dtype: torch.dtype) -> None:
        self._reader, self._processor, self._chunk, self._dtype = reader, processor, chunk, dtype
        self._start, self._pixels = -1, None

    def __len__(self) -> int:
        return self._reader.num_frames

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise KeyError(index)
        start = index - index % self._chunk
        if start != self._start:
            self._pixels = None  # free the previous chunk before decoding the next
            frames = self._reader.get_frames(list(range(start, min(start + self._chunk, len(self)))))
            videos = self._processor.video_processor(videos=[frames], return_tensors="pt")
            self._start, self._pixels = start, videos.pixel_values_videos[0].to(self._dtype)
        return self._pixels[index - start]


class Sam2Refiner:
    """Propagates anchor masks through a video with SAM 2.

    Args:
        model / processor: a loaded ``Sam2VideoModel`` and its ``Sam2VideoProcessor``.
        settings: the refinement settings (anchors, chunking).
        device: where SAM 2 runs; its inference state and the video frames stay on CPU when ``device`` is CUDA
            (transformers' ``inference_state_device`` / ``video_storage_device``), so GPU memory holds one
            chunk and the memory window only.
    """

    def __init__(
        self,
        model: Sam2VideoModel,
        processor: Sam2VideoProcessor,
        settings: RefineConfig,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model, self.processor, self.settings = model.eval(), processor, settings
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        config = model.config
        # Frames behind the current one that memory attention may still read (see the module docstring).
        self.memory_window = max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1, 1)

    @classmethod
    def from_settings(cls, settings: RefineConfig, device: torch.device, dtype: torch.dtype) -> Sam2Refiner:
        """Load ``settings.model`` (Hub id or directory) to ``device``/``dtype``."""
        model, processor = load_sam2(settings.model, device, dtype)
        return cls(model, processor, settings, device)

    def describe(self) -> dict:
        """The settings stored with predictions."""
        return self.settings.describe()

    @torch.inference_mode()
    def propagate(
        self, reader: VideoReader, anchors: dict[int, dict[int, np.ndarray]]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Propagate ``anchors[track][frame] = mask [H, W] bool`` through the video, every track one SAM 2
        object of one session. Yields ``(frame index, logits [K, H, W] float32)`` for every frame in order,
        K = ``len(anchors)`` in the order of ``anchors``; a mask is ``logits > 0``."""
        if not anchors or not all(anchors.values()):
            raise ValueError("every track to propagate needs at least one anchor")
        session = self._session(reader)
        first = self._add_anchors(session, anchors)
        order = list(anchors)
        held: dict[int, torch.Tensor] = {}
        # Backward pass first (see the module docstring); its outputs wait until frame 0..first can go out.
        for frame, low_res in self._propagate(session, first, reverse=True):
            if frame != first:  # the forward pass yields the first anchor again
                held[frame] = low_res
        for frame in range(first):
            yield frame, self._upscale(held.pop(frame), reader, session, order)
        for frame, low_res in self._propagate(session, first, reverse=False):
            yield frame, self._upscale(low_res, reader, session, order)

    # ------------------------------------------------------------------ internals
    def _session(self, reader: VideoReader) -> Sam2VideoInferenceSession:
        from transformers import Sam2VideoInferenceSession

        session = Sam2VideoInferenceSession(
            video_height=reader.height,
            video_width=reader.width,
            inference_device=self.device,
            inference_state_device="cpu",
            video_storage_device="cpu",
            dtype=self.dtype,
        )
        session.processed_frames = _LazyFrames(reader, self.processor, self.settings.frames_per_chunk, self.dtype)
        return session

    def _add_anchors(self, session: Sam2VideoInferenceSession, anchors: dict[int, dict[int, np.ndarray]]) -> int:
        """Mask prompts on every anchor frame, in frame order; returns the first anchor frame.

        transformers runs every registered object on the frame it is given; an object without a prompt on an
        anchor frame would be tracked there before propagation (the official predictor does not do that), so
        that output is removed again.
        """
        frames = sorted({frame for per_track in anchors.values() for frame in per_track})
        for frame in frames:
            tracks = [track for track, per_track in anchors.items() if frame in per_track]
            self.processor.add_inputs_to_inference_session(
                session,
                frame_idx=frame,
                obj_ids=tracks,
                input_masks=[torch.from_numpy(np.ascontiguousarray(anchors[t][frame])) for t in tracks],
            )
            self.model(inference_session=session, frame_idx=frame)
            for obj_idx, obj_id in enumerate(session.obj_ids):
                session.output_dict_per_obj[obj_idx]["cond_frame_outputs"].get(frame, {}).pop("high_res_masks", None)
                if obj_id not in tracks:
                    session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"].pop(frame, None)
                    session.frames_tracked_per_obj[obj_idx].pop(frame, None)
        return frames[0]

    def _propagate(
        self, session: Sam2VideoInferenceSession, start: int, reverse: bool
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(frame, low-res logits [K, 1, h, w] on CPU)`` of one pass; outputs that no later step reads are
        dropped as it goes. The first (backward) pass keeps the window next to ``start``, which the forward pass
        reads."""
        step = -1 if reverse else 1
        window = self.memory_window
        for output in self.model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
            frame = output.frame_idx
            stale = frame - step * window
            for obj_idx in range(session.get_obj_num()):
                outputs = session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
                outputs.get(frame, {}).pop("high_res_masks", None)
                if not reverse or abs(stale - start) >= window:
                    outputs.pop(stale, None)
            yield frame, output.pred_masks.float().cpu()

    def _upscale(
        self, low_res: torch.Tensor, reader: VideoReader, session: Sam2VideoInferenceSession, order: list[int]
    ) -> torch.Tensor:
        """``[K, 1, h, w]`` -> ``[K, H, W]`` float32 logits at the video's size (the objects' session order is
        their first anchor's order; rows are put back in the order of the caller's tracks)."""
        logits = self.processor.post_process_masks(
            [low_res], original_sizes=[(reader.height, reader.width)], binarize=False
        )[0][:, 0]
        rows = [session.obj_ids.index(track) for track in order]
        return logits[rows]
