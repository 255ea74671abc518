"""VideoLisaPredictor: the one inference path (CLI, batch evaluation, demo and tests all use it).

A video and an instruction go in; a boolean mask for every frame comes out::

    predictor = VideoLisaPredictor.from_pretrained("ZechenBai/VideoLISA-3.8B")
    result = predictor.segment("video.mp4", "the animal that gets scared and jumps")
    result.masks  # [T, H, W] bool at the video's resolution

Steps (docs/original.md §3.4): sample 32 sparse frames and 4 dense positions; CLIP + projector on the sparse frames
(once per video); one LLM pass per instruction gives the ``[SEG]`` prompt; then every frame, in chunks of
``chunk_size``, goes through the SAM image encoder (once per video, whatever the number of instructions)
and the mask decoder with every prompt. Frames are decoded and SAM-preprocessed for the next chunk in a
background thread while the current chunk runs, so peak memory depends on the chunk size, not on the
video length.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from videolisa.constants import DEFAULT_ANSWER, MASK_LOGIT_THRESHOLD
from videolisa.errors import InvalidInputError
from videolisa.generation import GENERATE, GenerationConfig, format_answer, generate_answer
from videolisa.modeling.sam_fast import configure_fast_sam
from videolisa.modeling.sparse_dense import assemble_video_tokens
from videolisa.processing.processor import VideoLisaProcessor
from videolisa.processing.sampling import dense_frame_indices
from videolisa.processing.video_io import VideoReader, open_video
from videolisa.refine.anchors import presence_scores
from videolisa.tracks import Track, present_frames, resolve_presence_threshold

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.modeling.videolisa import VideoLisaForSegmentation
    from videolisa.refine import RefineConfig, Sam2Refiner

logger = logging.getLogger(__name__)

# The logits of a refined track that has no reliable anchor (SAM 2's own "no object" score).
NO_OBJECT_LOGIT = -1024.0


@dataclass
class FrameMasks:
    """Masks of one frame for every instruction: ``masks [N_instructions, H, W] bool``; ``frame [H, W, 3]
    uint8`` when requested; ``logits [N_instructions, H, W] float32`` when requested (raw: before the presence
    threshold); ``track_masks [K_total, H, W] bool`` and ``scores [K_total] float32`` (presence) of every
    ``[SEG]`` track of every instruction, in order (None with SAM 2 refinement)."""

    index: int
    name: str
    masks: np.ndarray
    frame: np.ndarray | None = None
    logits: np.ndarray | None = None
    track_masks: np.ndarray | None = None
    scores: np.ndarray | None = None


@dataclass
class SegmentationResult:
    """Output of :meth:`VideoLisaPredictor.segment` for one instruction.

    Attributes:
        masks: ``[T, H, W] bool`` for every frame at the original resolution (union over the instruction's
            ``[SEG]`` tokens; the usual answer has one).
        prompt_embedding: ``[K, C] float32`` SAM prompt(s) from the ``[SEG]`` hidden state(s).
        sparse_indices: the T_s video-frame indices read by the LLM (CLIP).
        dense_indices: the T_d video-frame indices seen at full token resolution.
        frame_names / fps: of the video.
        timings: seconds per stage (``decode_clip_llm``, ``sam``, ``total``; with refinement also
            ``refine_anchors``: decoding the anchor frames, ``refine``: SAM 2) and ``frames_per_second``.
        mask_logits: ``[T, H, W] float32`` (max over ``[SEG]`` tokens) when ``return_logits=True``.
        answer: the generated answer with its ``[SEG]`` tokens numbered ``[SEG1]``, ``[SEG2]``... (generation
            mode); None when the answer was teacher-forced.
        tracks: one :class:`~videolisa.tracks.Track` per ``[SEG]`` (masks, phrase, per-frame presence score);
            none when a generated answer has no ``[SEG]`` (``masks`` are then empty).
    """

    instruction: str | None
    masks: np.ndarray
    prompt_embedding: np.ndarray
    sparse_indices: list[int]
    dense_indices: list[int]
    frame_names: list[str]
    fps: float
    timings: dict[str, float] = field(default_factory=dict)
    mask_logits: np.ndarray | None = None
    answer: str | None = None
    tracks: list[Track] = field(default_factory=list)

    @property
    def present_frames(self) -> list[int]:
        """Indices of the frames where the mask (union of the tracks) is not empty."""
        return present_frames(self.masks)


@dataclass
class _Prompts:
    """Prompts of all instructions stacked: ``embeddings [K_total, C]``; ``groups[i]`` are the rows of
    instruction i; ``answers[i]`` / ``phrases[i]`` its generated answer and the phrase of each of its ``[SEG]``
    (None when teacher-forced). ``presence_threshold``: this call's (0: off)."""

    embeddings: torch.Tensor
    groups: list[slice]
    sparse_indices: list[int]
    dense_indices: list[int]
    seconds: float
    answers: list[str | None]
    phrases: list[list[str | None]]
    presence_threshold: float = 0.0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` -> bfloat16 on CUDA, float32 on CPU; accepts ``"bf16"``, ``"fp16"``, ``"fp32"``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise InvalidInputError(f"dtype must be one of {['auto', *names]}, got {dtype!r}")
    return names[dtype]


class AnsweredVideo:
    """A video whose instructions have been answered (:meth:`VideoLisaPredictor.answer_tracks`); the masks follow.

    Attributes:
        reader: the opened video.
        answers: per instruction, the generated answer with ``[SEG1]``, ``[SEG2]``... (None when teacher-forced).
        tracks: per instruction, ``(id, phrase)`` of each of its tracks (ids from 1, as in ``[SEGk]``).
    """

    def __init__(self, predictor: VideoLisaPredictor, reader: VideoReader, prompts: _Prompts) -> None:
        self._predictor, self._prompts, self.reader = predictor, prompts, reader
        self.answers = list(prompts.answers)
        self.tracks = [list(enumerate(phrases, start=1)) for phrases in prompts.phrases]

    def frames(
        self,
        threshold: float = MASK_LOGIT_THRESHOLD,
        return_frames: bool = False,
        return_logits: bool = False,
        progress: bool | Callable[[int, int], None] = False,
        refine: bool | None = None,
    ) -> Iterator[FrameMasks]:
        """Stream the masks frame by frame (arguments as :meth:`VideoLisaPredictor.iter_segment`);
        ``FrameMasks.track_masks`` / ``scores`` hold the tracks of every instruction in order."""
        return self._predictor._stream(
            self.reader, self._prompts, threshold, return_frames, return_logits, progress, refine, {}
        )


class VideoLisaPredictor:
    """Segments videos from text instructions with a loaded VideoLISA model.

    Args:
        model: the model (moved to ``device``/``dtype``, put in eval mode).
        tokenizer: its tokenizer (None: only ``prompt_ids`` can be used, no text instructions).
        device / dtype: where and how to run (``"auto"``: CUDA + bf16 if available, else CPU + fp32).
        chunk_size: frames per SAM batch; results do not depend on it, peak memory does.
        prefetch: decode and preprocess the next chunk in a background thread.
        fast_sam: run SAM on the fast path of :mod:`videolisa.modeling.sam_fast` (fused attention, batched
            mask decoding, autocast to ``dtype`` when it is bf16/fp16); False runs the stock modules. SAM's
            weights are kept in float32 either way.
        refine: temporal refinement with SAM 2 (:mod:`videolisa.refine`, the paper's post-optimization):
            ``"sam2"`` (default settings, SAM 2.1 large from the Hub), a :class:`~videolisa.refine.RefineConfig`,
            or a loaded :class:`~videolisa.refine.Sam2Refiner`. None (default): VideoLISA's masks as decoded.
    """

    def __init__(
        self,
        model: VideoLisaForSegmentation,
        tokenizer: PreTrainedTokenizerBase | None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        chunk_size: int = 8,
        prefetch: bool = True,
        fast_sam: bool = True,
        refine: str | RefineConfig | Sam2Refiner | None = None,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        configure_fast_sam(self.model.sam, fast_sam, self.dtype)
        self.processor = VideoLisaProcessor(tokenizer, model.config)
        self.chunk_size = chunk_size
        self.prefetch = prefetch
        self.refiner = self._build_refiner(refine)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_dir: str | Path,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        vision_tower: str | Path | None = None,
        **kwargs: Any,
    ) -> VideoLisaPredictor:
        """Load a model directory, a Hugging Face id (``ZechenBai/VideoLISA-3.8B``) or a built-in model
        (``builtin:<name>``) together with its tokenizer."""
        from videolisa.builder import load_model_and_tokenizer

        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        model, tokenizer = load_model_and_tokenizer(
            model_id_or_dir, dtype=resolved_dtype, device=resolved_device, vision_tower=vision_tower
        )
        return cls(model, tokenizer, resolved_device, resolved_dtype, **kwargs)

    # ------------------------------------------------------------------ public API
    def segment(
        self,
        video: Any,
        instruction: str | None = None,
        *,
        prompt_ids: Sequence[int] | torch.Tensor | np.ndarray | None = None,
        answer: str = DEFAULT_ANSWER,
        frames_sparse: int | None = None,
        frames_dense: int | None = None,
        threshold: float = MASK_LOGIT_THRESHOLD,
        return_logits: bool = False,
        progress: bool = False,
        refine: bool | None = None,
        generation: GenerationConfig | None = None,
        presence_threshold: float | None = None,
    ) -> SegmentationResult:
        """Segment ``video`` (path, frame folder, image, ``[T, H, W, 3] uint8`` RGB array, or an opened
        reader) from ``instruction`` — or from ``prompt_ids``, an already tokenized conversation (1-D ids in
        which ``config.image_token_index`` (-200) marks the video, the original's convention).

        ``answer``: the teacher-forced answer (default ``"Sure, [SEG]."``, the original), or ``"generate"``: the
        LLM writes the answer (``generation``: :class:`~videolisa.generation.GenerationConfig`, greedy by
        default; ``prompt_ids`` then end where the answer starts) and every ``[SEG]`` in it becomes a track.
        ``presence_threshold``: a track's mask is emptied on frames whose presence score is below it (0: off);
        None: off when teacher-forced, :data:`~videolisa.tracks.DEFAULT_PRESENCE_THRESHOLD` when generating.
        ``refine``: None refines when the predictor has a refiner, False never, True requires one (see
        :meth:`iter_segment` for what refinement does)."""
        mode = self._answer_mode(answer, generation, presence_threshold)
        input_ids = self._input_ids(
            None if instruction is None else [instruction], None if prompt_ids is None else [prompt_ids], answer
        )
        return self._segment_all(
            video,
            [instruction],
            input_ids,
            frames_sparse,
            frames_dense,
            threshold,
            return_logits,
            progress,
            refine,
            *mode,
        )[0]

    def segment_many(
        self,
        video: Any,
        instructions: Sequence[str],
        *,
        answer: str = DEFAULT_ANSWER,
        frames_sparse: int | None = None,
        frames_dense: int | None = None,
        threshold: float = MASK_LOGIT_THRESHOLD,
        return_logits: bool = False,
        progress: bool = False,
        refine: bool | None = None,
        generation: GenerationConfig | None = None,
        presence_threshold: float | None = None,
    ) -> list[SegmentationResult]:
        """Segment one video for several instructions; the video is decoded, CLIP-encoded and SAM-encoded
        once and reused for every instruction. Results equal calling :meth:`segment` for each: the same prompt
        embeddings, and the same masks except for pixels whose logit is within float32 rounding (~1e-7: SAM's
        decoder runs all the prompts as one batch) of the threshold. ``answer``, ``generation``,
        ``presence_threshold``: as for :meth:`segment`."""
        if isinstance(instructions, str) or not instructions:
            raise InvalidInputError("instructions must be a non-empty list of strings")
        mode = self._answer_mode(answer, generation, presence_threshold)
        return self._segment_all(
            video,
            list(instructions),
            self._input_ids(instructions, None, answer),
            frames_sparse,
            frames_dense,
            threshold,
            return_logits,
            progress,
            refine,
            *mode,
        )

    def iter_segment(
        self,
        video: Any,
        instructions: Sequence[str] | None = None,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        answer: str = DEFAULT_ANSWER,
        frames_sparse: int | None = None,
        frames_dense: int | None = None,
        threshold: float = MASK_LOGIT_THRESHOLD,
        return_frames: bool = False,
        return_logits: bool = False,
        progress: bool | Callable[[int, int], None] = False,
        refine: bool | None = None,
        generation: GenerationConfig | None = None,
        presence_threshold: float | None = None,
    ) -> Iterator[FrameMasks]:
        """Stream masks frame by frame for one or more instructions (or tokenized conversations).

        The first item arrives once the LLM pass and the first SAM chunk are done; memory does not grow with
        the video length. ``progress`` is True for a tqdm bar, or a callback ``(frames_done, total)``.

        With refinement (``refine``: None = when the predictor has a refiner), every ``[SEG]`` track is first
        decoded on its anchor frames only (the dense frames, or with ``anchors="top-k"`` every frame to keep the
        best-scoring ones); its reliable anchor masks (non-empty, presence score >= ``min_score``) become SAM 2
        mask prompts, all tracks one SAM 2 session, and SAM 2's propagation replaces the decoded masks on every
        frame (``logits`` are then SAM 2's). A track with no reliable dense anchor falls back to its ``top_k``
        best frames over the whole video; a track with no reliable anchor anywhere gets empty masks.

        ``answer``, ``generation``, ``presence_threshold``: as for :meth:`segment`; :meth:`answer_tracks` gives
        the answers and the tracks' phrases before the first frame.
        """
        yield from self.answer_tracks(
            video,
            instructions,
            prompt_ids=prompt_ids,
            answer=answer,
            frames_sparse=frames_sparse,
            frames_dense=frames_dense,
            generation=generation,
            presence_threshold=presence_threshold,
        ).frames(threshold, return_frames, return_logits, progress, refine)

    def answer_tracks(
        self,
        video: Any,
        instructions: Sequence[str] | None = None,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        answer: str = DEFAULT_ANSWER,
        frames_sparse: int | None = None,
        frames_dense: int | None = None,
        generation: GenerationConfig | None = None,
        presence_threshold: float | None = None,
    ) -> AnsweredVideo:
        """Run the LLM (answer and prompts) and return an :class:`AnsweredVideo`: the answers and every track's
        id and phrase now, the masks frame by frame from :meth:`AnsweredVideo.frames` (as :meth:`iter_segment`)."""
        mode = self._answer_mode(answer, generation, presence_threshold)
        reader = open_video(video)
        input_ids = self._input_ids(instructions, prompt_ids, answer)
        return AnsweredVideo(self, reader, self._compute_prompts(reader, input_ids, frames_sparse, frames_dense, *mode))

    def sample_frames(
        self, num_frames: int, frames_sparse: int | None = None, frames_dense: int | None = None
    ) -> tuple[list[int], list[int]]:
        """Sparse video-frame indices and dense video-frame indices the model would read."""
        sparse, dense_positions = self.processor.sample_frames(num_frames, frames_sparse, frames_dense)
        return sparse, dense_frame_indices(sparse, dense_positions)

    # ------------------------------------------------------------------ internals
    def _input_ids(
        self, instructions: Sequence[str] | None, prompt_ids: Sequence[Sequence[int]] | None, answer: str
    ) -> list[torch.Tensor]:
        if (instructions is None) == (prompt_ids is None):
            raise InvalidInputError("give exactly one of instructions or prompt_ids")
        if prompt_ids is not None:
            return [self.processor.validate_input_ids(ids, require_seg=answer != GENERATE) for ids in prompt_ids]
        if isinstance(instructions, str):
            instructions = [instructions]
        if answer == GENERATE:
            return [self.processor.build_generation_ids(text) for text in instructions]
        return [self.processor.build_input_ids(text, answer) for text in instructions]

    @staticmethod
    def _answer_mode(
        answer: str, generation: GenerationConfig | None, presence_threshold: float | None
    ) -> tuple[GenerationConfig | None, float]:
        """``(generation settings or None when teacher-forced, presence threshold)`` of a call."""
        presence = resolve_presence_threshold(presence_threshold, generating=answer == GENERATE)
        if answer != GENERATE:
            if generation is not None:
                raise InvalidInputError("generation settings need answer='generate'")
            return None, presence
        return generation or GenerationConfig(), presence

    def _segment_all(
        self,
        video: Any,
        instructions: list[str | None],
        input_ids: list[torch.Tensor],
        frames_sparse: int | None,
        frames_dense: int | None,
        threshold: float,
        return_logits: bool,
        progress: bool,
        refine: bool | None,
        generation: GenerationConfig | None = None,
        presence_threshold: float = 0.0,
    ) -> list[SegmentationResult]:
        start = time.perf_counter()
        reader = open_video(video)
        prompts = self._compute_prompts(reader, input_ids, frames_sparse, frames_dense, generation, presence_threshold)
        shape = (len(input_ids), reader.num_frames, reader.height, reader.width)
        # np.empty, not np.zeros: every frame is written below, and calloc'd memory is faulted in 4 KiB
        # pages (numpy's own allocations get huge pages), which made filling the masks 6x slower.
        masks = np.empty(shape, dtype=bool)
        logits = np.empty(shape, dtype=np.float32) if return_logits else None
        # With one [SEG] per instruction (the usual answer) a track's masks are its instruction's.
        num_tracks = prompts.embeddings.shape[0]
        one_each = num_tracks == len(input_ids)
        track_masks = masks if one_each else np.empty((num_tracks, *shape[1:]), dtype=bool)
        scores: np.ndarray | None = np.empty((num_tracks, reader.num_frames), dtype=np.float32)
        refine_timings: dict[str, float] = {}
        for item in self._stream(reader, prompts, threshold, False, return_logits, progress, refine, refine_timings):
            masks[:, item.index] = item.masks
            if logits is not None:
                logits[:, item.index] = item.logits
            if not one_each:
                track_masks[:, item.index] = item.track_masks
            if item.scores is None:
                scores = None
            elif scores is not None:
                scores[:, item.index] = item.scores
        total = time.perf_counter() - start
        timings = {
            "decode_clip_llm": prompts.seconds,
            "sam": total - prompts.seconds - sum(refine_timings.values()),
            **refine_timings,
            "total": total,
            "frames_per_second": reader.num_frames / total if total > 0 else float("inf"),
        }
        return [
            SegmentationResult(
                instruction=instruction,
                masks=masks[i],
                prompt_embedding=prompts.embeddings[group].float().cpu().numpy(),
                sparse_indices=prompts.sparse_indices,
                dense_indices=prompts.dense_indices,
                frame_names=list(reader.frame_names),
                fps=reader.fps,
                timings=dict(timings),
                mask_logits=logits[i] if logits is not None else None,
                answer=prompts.answers[i],
                tracks=[
                    Track(k - group.start + 1, phrase, track_masks[k], None if scores is None else scores[k])
                    for k, phrase in zip(range(group.start, group.stop), prompts.phrases[i])
                ],
            )
            for i, (instruction, group) in enumerate(zip(instructions, prompts.groups))
        ]

    @torch.inference_mode()
    def _compute_prompts(
        self,
        reader: VideoReader,
        input_ids: list[torch.Tensor],
        frames_sparse: int | None,
        frames_dense: int | None,
        generation: GenerationConfig | None = None,
        presence_threshold: float = 0.0,
    ) -> _Prompts:
        """CLIP + projector once for the video, then per conversation one LLM pass (teacher forcing) or, with
        ``generation``, the generation of its answer (:mod:`videolisa.generation`)."""
        start = time.perf_counter()
        sparse, dense_positions = self.processor.sample_frames(reader.num_frames, frames_sparse, frames_dense)
        # CLIP inputs of each distinct sampled frame, decoded a chunk at a time: the 32 sparse frames of a 4K
        # video would hold 800 MB at full resolution, their CLIP inputs hold 43 MB.
        unique, pixels = [], []
        for group, frames in reader.iter_frame_groups(sparse, self.chunk_size):
            unique += group
            pixels.append(self.processor.clip_pixels(frames))
        clip_pixels = torch.cat(pixels)[[unique.index(i) for i in sparse]].to(self.device)[None]
        frame_tokens = self.model.encode_frames(clip_pixels)
        dense = torch.tensor([dense_positions], device=self.device)
        video_tokens = assemble_video_tokens(frame_tokens, dense)
        embeddings, groups, offset = [], [], 0
        answers: list[str | None] = []
        phrases: list[list[str | None]] = []
        for ids in input_ids:
            if generation is None:
                output = self.model.compute_prompts(ids[None].to(self.device), video_tokens)
                answers.append(None)
                phrases.append([None] * output.prompt_embeddings.shape[0])
            else:
                output = generate_answer(self.model, ids, video_tokens, self.processor.stop_token_ids(), generation)
                text, attached = format_answer(
                    self.processor.tokenizer, output.token_ids.tolist(), self.model.config.seg_token_id
                )
                answers.append(text)
                phrases.append(attached)
            embeddings.append(output.prompt_embeddings)
            groups.append(slice(offset, offset + output.prompt_embeddings.shape[0]))
            offset += output.prompt_embeddings.shape[0]
        return _Prompts(
            embeddings=torch.cat(embeddings),
            groups=groups,
            sparse_indices=sparse,
            dense_indices=dense_frame_indices(sparse, dense_positions),
            seconds=time.perf_counter() - start,
            answers=answers,
            phrases=phrases,
            presence_threshold=presence_threshold,
        )

    def _prepare_chunk(self, chunk: tuple[int, np.ndarray]) -> tuple[int, np.ndarray, torch.Tensor, tuple[int, int]]:
        start, frames = chunk
        pixels, resized = self.processor.sam_pixels(frames, device=self.device)
        return start, frames, pixels, resized

    def _prepared_chunks(self, reader: VideoReader) -> Iterator[tuple[int, np.ndarray, torch.Tensor, tuple[int, int]]]:
        """Decoded + SAM-preprocessed chunks; with ``prefetch``, a pipeline of two background threads: while the
        caller runs chunk k, chunk k + 1 is preprocessed and chunk k + 2 decoded, so the slowest of the three
        stages sets the pace, not their sum (errors surface here, in the caller's thread, unchanged)."""
        chunks = reader.iter_chunks(self.chunk_size)
        if not self.prefetch:
            yield from map(self._prepare_chunk, chunks)
            return
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="videolisa-decode") as decoder,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="videolisa-prepare") as preparer,
        ):
            decoded: deque[Future] = deque([decoder.submit(next, chunks, None)])

            def prepare_next() -> tuple[int, np.ndarray, torch.Tensor, tuple[int, int]] | None:
                chunk = decoded.popleft().result()  # only this (one) preparer thread touches the deque
                if chunk is None:
                    return None
                decoded.append(decoder.submit(next, chunks, None))
                return self._prepare_chunk(chunk)

            pending = preparer.submit(prepare_next)
            while (prepared := pending.result()) is not None:
                pending = preparer.submit(prepare_next)
                yield prepared

    def _frame_masks(
        self,
        low_res: torch.Tensor,
        prompts: _Prompts,
        resized_hw: tuple[int, int],
        original_hw: tuple[int, int],
        threshold: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[F, K, h, w]`` low-res logits of every prompt -> at the original size, per instruction ``masks [F, N,
        H, W] bool`` and ``logits [F, N, H, W] float32`` (several ``[SEG]``: their union and maximum; none: empty
        and :data:`NO_OBJECT_LOGIT`), per track ``masks [F, K, H, W] bool`` and presence ``scores [F, K]``.

        A track's mask is emptied on frames whose score is below ``prompts.presence_threshold``."""
        frames = low_res.shape[0]
        if low_res.shape[1]:
            track_logits = self.model.upscale_masks(low_res, resized_hw, original_hw).float()
        else:  # no [SEG] in any answer
            track_logits = low_res.new_empty((frames, 0, *original_hw), dtype=torch.float32)
        scores = presence_scores(low_res, threshold)
        track_masks = track_logits > threshold
        if prompts.presence_threshold > 0:
            track_masks &= (scores >= prompts.presence_threshold)[..., None, None]
        if all(group.stop - group.start == 1 for group in prompts.groups):
            return track_masks, track_logits, track_masks, scores
        absent = track_logits.new_full((frames, *original_hw), NO_OBJECT_LOGIT)
        logits = torch.stack(
            [track_logits[:, group].amax(dim=1) if group.stop > group.start else absent for group in prompts.groups],
            dim=1,
        )
        masks = torch.stack(
            [track_masks[:, group].any(dim=1) if group.stop > group.start else absent > 0 for group in prompts.groups],
            dim=1,
        )
        return masks, logits, track_masks, scores

    @torch.inference_mode()
    def _stream_masks(
        self,
        reader: VideoReader,
        prompts: _Prompts,
        threshold: float,
        return_frames: bool,
        return_logits: bool,
        progress: bool | Callable[[int, int], None],
    ) -> Iterator[FrameMasks]:
        from tqdm.auto import tqdm

        total = reader.num_frames
        bar = tqdm(total=total, unit="frame", desc="segmenting", disable=progress is not True)
        callback = progress if callable(progress) else None
        names = reader.frame_names
        original_hw = (reader.height, reader.width)
        try:
            for start, frames, pixels, resized in self._prepared_chunks(reader):
                if prompts.embeddings.shape[0]:
                    embeddings = self.model.encode_images(pixels.to(self.device, non_blocking=True))
                    low_res = self.model.decode_low_res_masks(embeddings, prompts.embeddings)
                else:  # no track to decode: no SAM
                    low_res = torch.empty((frames.shape[0], 0, 1, 1), device=self.device)
                # On CPU, upscale one frame at a time: a chunk's full-resolution logits (8 frames x 8
                # instructions at 480p: 100 MB) are fresh memory that the kernel must fault in on every
                # chunk, which doubled the cost of each mask; one frame's reuse the allocator's cache.
                step = 1 if self.device.type == "cpu" else frames.shape[0]
                for first in range(0, frames.shape[0], step):
                    masks, logits, tracks, scores = self._frame_masks(
                        low_res[first : first + step], prompts, resized, original_hw, threshold
                    )
                    masks_np, scores_np = masks.cpu().numpy(), scores.cpu().numpy()
                    tracks_np = masks_np if tracks is masks else tracks.cpu().numpy()  # one [SEG] each: the same
                    logits_np = logits.cpu().numpy() if return_logits else None
                    for offset in range(logits.shape[0]):
                        index = start + first + offset
                        yield FrameMasks(
                            index=index,
                            name=names[index],
                            masks=masks_np[offset],
                            frame=frames[first + offset] if return_frames else None,
                            logits=logits_np[offset] if logits_np is not None else None,
                            track_masks=tracks_np[offset],
                            scores=scores_np[offset],
                        )
                bar.update(frames.shape[0])
                if callback is not None:
                    callback(min(start + frames.shape[0], total), total)
        finally:
            bar.close()

    # ------------------------------------------------------------------ refinement (videolisa.refine)
    def _build_refiner(self, refine: str | RefineConfig | Sam2Refiner | None) -> Sam2Refiner | None:
        if refine is None:
            return None
        from videolisa.refine import RefineConfig, Sam2Refiner

        if isinstance(refine, Sam2Refiner):
            return refine
        if refine == "sam2":
            refine = RefineConfig()
        if not isinstance(refine, RefineConfig):
            raise InvalidInputError(f"refine must be None, 'sam2', RefineConfig or Sam2Refiner, got {refine!r}")
        return Sam2Refiner.from_settings(refine, self.device, self.dtype)

    def _stream(
        self,
        reader: VideoReader,
        prompts: _Prompts,
        threshold: float,
        return_frames: bool,
        return_logits: bool,
        progress: bool | Callable[[int, int], None],
        refine: bool | None,
        timings: dict[str, float],
    ) -> Iterator[FrameMasks]:
        """The decoded masks, or with refinement SAM 2's (``timings`` gets the refinement's seconds)."""
        if refine and self.refiner is None:
            raise InvalidInputError("refine=True needs a predictor built with refine='sam2' (or RefineConfig)")
        if refine is False or self.refiner is None or not prompts.embeddings.shape[0]:  # (no track: nothing to refine)
            return self._stream_masks(reader, prompts, threshold, return_frames, return_logits, progress)
        return self._stream_refined(reader, prompts, threshold, return_frames, return_logits, progress, timings)

    @torch.inference_mode()
    def _stream_refined(
        self,
        reader: VideoReader,
        prompts: _Prompts,
        threshold: float,
        return_frames: bool,
        return_logits: bool,
        progress: bool | Callable[[int, int], None],
        timings: dict[str, float],
    ) -> Iterator[FrameMasks]:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        anchors = self._collect_anchors(reader, prompts, threshold)
        timings["refine_anchors"] = time.perf_counter() - start
        tracked = {track: per_frame for track, per_frame in anchors.items() if per_frame}
        logger.info(
            "refine: anchor frames per track %s; SAM 2 propagates %d of %d tracks over %d frames",
            {track: sorted(per_frame) for track, per_frame in anchors.items()},
            len(tracked),
            len(anchors),
            reader.num_frames,
        )
        total = reader.num_frames
        propagated = self.refiner.propagate(reader, tracked) if tracked else None
        frames = reader.iter_chunks(self.chunk_size) if return_frames else None
        chunk: tuple[int, np.ndarray] = (0, np.empty((0,), np.uint8))
        untracked = torch.full((reader.height, reader.width), NO_OBJECT_LOGIT)
        bar = tqdm(total=total, unit="frame", desc="refining", disable=progress is not True)
        timings["refine"] = 0.0
        try:
            for index in range(total):
                resumed = time.perf_counter()
                logits = dict(zip(tracked, next(propagated)[1])) if propagated is not None else {}
                tracks = torch.stack([logits.get(track, untracked) for track in range(len(anchors))])
                instruction_logits = torch.stack(
                    [tracks[group].amax(dim=0) if group.stop > group.start else untracked for group in prompts.groups]
                )
                timings["refine"] += time.perf_counter() - resumed
                if frames is not None and index >= chunk[0] + len(chunk[1]):
                    chunk = next(frames)
                yield FrameMasks(
                    index=index,
                    name=reader.frame_names[index],
                    masks=(instruction_logits > threshold).numpy(),
                    frame=chunk[1][index - chunk[0]] if frames is not None else None,
                    logits=instruction_logits.numpy() if return_logits else None,
                    track_masks=(tracks > threshold).numpy(),
                )
                bar.update(1)
                if callable(progress):
                    progress(index + 1, total)
        finally:
            bar.close()
        logger.info(
            "refine: %.2f s anchors, %.2f s SAM 2 (%.1f frames/s)",
            timings["refine_anchors"],
            timings["refine"],
            total / max(timings["refine"], 1e-9),
        )

    def _collect_anchors(
        self, reader: VideoReader, prompts: _Prompts, threshold: float
    ) -> dict[int, dict[int, np.ndarray]]:
        """``{track: {frame: mask [H, W] bool}}`` of every ``[SEG]`` track's reliable anchors (maybe none)."""
        from videolisa.refine import AnchorCollector

        settings = self.refiner.settings
        num_tracks = prompts.embeddings.shape[0]
        chosen: dict[int, list] = {}
        if settings.anchors == "dense":
            dense = sorted(set(prompts.dense_indices))
            collector = AnchorCollector(num_tracks, len(dense), threshold)
            resized = self._score_frames(reader, prompts, dense, collector)
            chosen = {track: collector.anchors(track, settings.min_score) for track in range(num_tracks)}
        if settings.anchors == "top-k" or not all(chosen.values()):  # or a track without a reliable dense anchor
            collector = AnchorCollector(num_tracks, settings.top_k, threshold)
            resized = self._score_frames(reader, prompts, None, collector)
            chosen = {
                track: chosen.get(track) or collector.anchors(track, settings.min_score) for track in range(num_tracks)
            }
        original_hw = (reader.height, reader.width)
        return {
            track: {
                anchor.frame: (
                    self.model.upscale_masks(anchor.low_res[None, None].to(self.device), resized, original_hw)[0, 0]
                    > threshold
                )
                .cpu()
                .numpy()
                for anchor in anchors
            }
            for track, anchors in chosen.items()
        }

    def _score_frames(
        self, reader: VideoReader, prompts: _Prompts, frames: list[int] | None, collector: Any
    ) -> tuple[int, int]:
        """Decode every track on ``frames`` (None: the whole video, streamed) and show the low-resolution
        logits to ``collector``; returns the SAM input size (resized, before padding)."""
        if frames is None:
            chunks = ((list(range(start, start + len(f))), f) for start, f in reader.iter_chunks(self.chunk_size))
        else:
            chunks = (
                (frames[i : i + self.chunk_size], reader.get_frames(frames[i : i + self.chunk_size]))
                for i in range(0, len(frames), self.chunk_size)
            )
        resized = (0, 0)
        for indices, decoded in chunks:
            pixels, resized = self.processor.sam_pixels(decoded, device=self.device)
            low_res = self.model.decode_low_res_masks(self.model.encode_images(pixels), prompts.embeddings)
            collector.observe(indices, low_res)
        return resized
