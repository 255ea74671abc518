"""Building and loading models: the one module above :mod:`videolisa.modeling` that builds models from configs,
presets, training sources and saved folders (as sam2's ``build_sam.py``).

Layers, bottom up: :mod:`videolisa.config`, :mod:`videolisa.checkpoint` (file formats, key maps, strict loading,
the model-name resolver :func:`~videolisa.checkpoint.resolve_model_dir`), :mod:`videolisa.modeling` (the network;
``VideoLisaForSegmentation.from_pretrained`` loads through the checkpoint layer), then this module; the predictor,
training and the commands get their models here. Every model name (a folder, a Hugging Face id, ``builtin:<name>``)
is resolved by the one resolver.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from videolisa.checkpoint import (
    ORIGINAL_KEY_MAP,
    SAM_CHECKPOINT_KEY_MAP,
    build_empty,
    convert_original_config,
    infer_sam_config,
    is_original_config,
    iter_checkpoint_tensors,
    load_clip_weights,
    load_sam_checkpoint,
    load_state_dict_strict,
    load_tokenizer,
    load_vision_config,
    map_key,
    prepare_tokenizer_and_embeddings,
    read_config_json,
    resolve_model_dir,
    save_model,
    weight_files,
)
from videolisa.config import VideoLisaConfig
from videolisa.constants import DEFAULT_SEG_TOKEN
from videolisa.errors import CheckpointError, InvalidInputError, MissingFilesError
from videolisa.modeling.videolisa import VideoLisaForSegmentation
from videolisa.tokenization import build_tiny_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.training.config import ModelConfig

logger = logging.getLogger(__name__)


def build_model(config: VideoLisaConfig) -> VideoLisaForSegmentation:
    """A model with ``config``'s architecture and freshly initialised weights."""
    return VideoLisaForSegmentation(config)


def build_empty_model(config: VideoLisaConfig) -> VideoLisaForSegmentation:
    """A model with ``config``'s architecture and its parameters on the meta device (buffers real), to be
    filled by ``assign`` loading."""
    return build_empty(VideoLisaForSegmentation, config)


def load_model_and_tokenizer(
    model: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    vision_tower: str | Path | None = None,
) -> tuple[VideoLisaForSegmentation, PreTrainedTokenizerBase]:
    """A saved model (folder, Hugging Face id or ``builtin:<name>``) in eval mode and the tokenizer saved with it.

    Raises MissingFilesError when the folder has no tokenizer files.
    """
    model_dir = resolve_model_dir(model)
    loaded = VideoLisaForSegmentation.from_pretrained(model_dir, dtype=dtype, device=device, vision_tower=vision_tower)
    tokenizer = load_tokenizer(model_dir)
    if tokenizer is None:
        raise MissingFilesError(f"{model_dir} has no tokenizer files (tokenizer.json or tokenizer.model)")
    return loaded, tokenizer


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Floating parameters in ``dtype``, floating buffers in float32: the layout DeepSpeed's bf16 mode
    trains (it casts parameters only). Stock ``segment_anything`` needs it: its positional encoding
    multiplies a float32 grid with its Gaussian-matrix buffer."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            parameter.data = parameter.data.to(dtype)
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.data = buffer.data.float()
    return model


def load_tokenizer_source(source: str, seg_token: str) -> PreTrainedTokenizerBase:
    """``"tiny"`` -> the in-memory test tokenizer; otherwise a tokenizer folder."""
    if source == "tiny":
        return build_tiny_tokenizer(seg_token)
    tokenizer = load_tokenizer(resolve_model_dir(source))
    if tokenizer is None:
        raise MissingFilesError(f"model.tokenizer={source} has no tokenizer files")
    return tokenizer


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Pad with ``<unk>`` (id 0 for Phi-3) as the original does (docs/original.md §4.7, §7.4)."""
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.pad_token is None:
        raise InvalidInputError("the tokenizer has neither an unk nor a pad token to pad batches with")


def allocate_meta_parameters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Give every parameter still on the meta device real (uninitialised) storage; shared parameters stay
    shared. For models whose weights are loaded right after (DeepSpeed checkpoints)."""
    allocated: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is None or not parameter.is_meta:
                continue
            if id(parameter) not in allocated:
                allocated[id(parameter)] = torch.nn.Parameter(
                    torch.empty(parameter.shape, dtype=dtype), requires_grad=parameter.requires_grad
                )
            module._parameters[name] = allocated[id(parameter)]


def initialise_prompt_head(model: VideoLisaForSegmentation) -> None:
    """Random prompt head (PyTorch's Linear init, as the original), also when it was built on meta."""
    model.prompt_head.to_empty(device="cpu")
    for layer in model.prompt_head:
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()


def is_llava_phi3_config(config_dict: dict[str, Any]) -> bool:
    """LLaVA-Phi-3 (``model_type: llava_phi``, ``LlavaPhiForCausalLM``) or an original VideoLISA config."""
    return is_original_config(config_dict) or "LlavaPhiForCausalLM" in (config_dict.get("architectures") or ())


def load_llava_phi3_base(
    path: str | Path, sam_checkpoint: str | Path, vision_tower: str | Path | None, dtype: torch.dtype
) -> tuple[VideoLisaForSegmentation, PreTrainedTokenizerBase]:
    """The original starting point: LLaVA-Phi-3 (LLM + projector) + SAM ``.pth`` + CLIP + ``[SEG]``.

    The LLaVA-Phi-3 keys (``model.embed_tokens``, ``model.layers.*``, ``model.norm``, ``lm_head``,
    ``model.mm_projector.*``) load strictly through :data:`videolisa.checkpoint.ORIGINAL_KEY_MAP`; CLIP comes
    from ``vision_tower`` (default: the config's ``mm_vision_tower``) unless the checkpoint has it; SAM's
    dimensions are read off the ``.pth`` shapes; the prompt head is random; ``[SEG]`` is added and the
    embeddings resized to the tokenizer (docs/original.md §4.2).
    """
    model_dir = resolve_model_dir(path)
    config_dict = read_config_json(model_dir)
    if not is_llava_phi3_config(config_dict):
        raise CheckpointError(
            f"{model_dir}/config.json is not a LLaVA-Phi-3 config (model_type 'llava_phi', LlavaPhiForCausalLM)"
        )
    sam_path = Path(sam_checkpoint)
    if not sam_path.is_file():
        raise MissingFilesError(f"model.sam_checkpoint={sam_path} does not exist")
    sam_shapes = {
        map_key(name, SAM_CHECKPOINT_KEY_MAP): tuple(tensor.shape)
        for name, tensor in iter_checkpoint_tensors([sam_path])
    }
    clip_source = vision_tower or config_dict.get("mm_vision_tower") or config_dict.get("vision_tower")
    if not clip_source:
        raise CheckpointError(f"{model_dir}/config.json names no vision tower; set model.vision_tower")
    tokenizer = load_tokenizer(model_dir)
    if tokenizer is None:
        raise MissingFilesError(f"{model_dir} has no tokenizer files")
    # The id [SEG] has (or will get when prepare_tokenizer_and_embeddings adds it): 32011 for Phi-3.
    seg_id = tokenizer.get_vocab().get(DEFAULT_SEG_TOKEN, len(tokenizer))
    config = convert_original_config(
        config_dict, load_vision_config(clip_source), infer_sam_config(sam_shapes), str(clip_source), seg_id
    )
    model = build_empty_model(config)
    paths = weight_files(model_dir)
    names = [name for name, _ in iter_checkpoint_tensors(paths)]
    has_clip = any((map_key(name, ORIGINAL_KEY_MAP) or "").startswith("vision_tower.") for name in names)
    scope_prefixes = ("llm.", "projector.", "vision_tower.") if has_clip else ("llm.", "projector.")
    load_state_dict_strict(
        model,
        iter_checkpoint_tensors(paths),
        ORIGINAL_KEY_MAP,
        dtype,
        source=f"LLaVA-Phi-3 checkpoint {model_dir}",
        scope=lambda name: name.startswith(scope_prefixes),
    )
    if not has_clip:
        load_clip_weights(model, clip_source, dtype)
    load_sam_checkpoint(model, sam_path)
    initialise_prompt_head(model)
    cast_parameters(model, dtype)
    prepare_tokenizer_and_embeddings(model, tokenizer)
    return model, tokenizer


def build_model_and_tokenizer(
    config: ModelConfig, dtype: torch.dtype
) -> tuple[VideoLisaForSegmentation, PreTrainedTokenizerBase]:
    """The model to train and its tokenizer, from ``model.source`` (weights in ``dtype``)."""

    if config.source == "llava_phi3":
        model, tokenizer = load_llava_phi3_base(config.path, config.sam_checkpoint, config.vision_tower, dtype)
    elif config.source == "pretrained":
        path = resolve_model_dir(config.path)
        model = VideoLisaForSegmentation.from_pretrained(path, dtype=dtype, vision_tower=config.vision_tower)
        if config.sam_checkpoint:  # e.g. the SAM of another stage of a staged recipe
            load_sam_checkpoint(model, config.sam_checkpoint)
        tokenizer = load_tokenizer_source(config.tokenizer or str(path), model.config.seg_token)
        prepare_tokenizer_and_embeddings(model, tokenizer)
    else:
        model_config = VideoLisaConfig.from_preset(config.preset, **config.config_overrides)
        model = build_model(model_config)
        if config.sam_checkpoint:
            load_sam_checkpoint(model, config.sam_checkpoint)
        if config.vision_tower:
            load_clip_weights(model, config.vision_tower)
        tokenizer = load_tokenizer_source(config.tokenizer, model_config.seg_token)
        prepare_tokenizer_and_embeddings(model, tokenizer)
    _ensure_pad_token(tokenizer)
    return cast_parameters(model, dtype).train(), tokenizer


def build_model_skeleton(model_dir: Path, dtype: torch.dtype) -> VideoLisaForSegmentation:
    """A model with the architecture saved in a run's ``model/`` folder and uninitialised weights (to be
    filled from a DeepSpeed checkpoint)."""
    model = build_empty_model(VideoLisaConfig.from_pretrained(model_dir))
    allocate_meta_parameters(model, dtype)
    return cast_parameters(model, dtype)


def convert_original_checkpoint(
    original_dir: str | Path,
    out_dir: str | Path,
    vision_tower: str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Convert an original VideoLISA checkpoint (+ its CLIP) to this package's self-contained format.

    Lossless: with ``dtype`` None every tensor keeps the dtype it is stored in (the release's bf16 LLM, SAM
    and projector stay bf16; the CLIP tower, read from its own float32 checkpoint, stays float32), so the
    converted model gives the same outputs as loading the original directly. ``dtype=torch.float32`` stores
    everything in float32 (also lossless, larger). The tokenizer is copied when the source has one. Returns
    the output directory.
    """
    if dtype is not None and dtype != torch.float32:
        raise CheckpointError(f"convert stores the source dtypes or float32, not {dtype}: other dtypes round weights")
    source = resolve_model_dir(original_dir)
    if not is_original_config(read_config_json(source)):
        raise CheckpointError(f"{source}/config.json is not an original VideoLISA config (model_type llava_phi)")
    model = VideoLisaForSegmentation.from_pretrained(
        source, dtype=dtype, vision_tower=vision_tower, keep_dtypes=dtype is None
    )
    out = Path(out_dir)
    save_model(model, out, tokenizer=load_tokenizer(source))
    logger.info("converted %s -> %s", source, out)
    return out
