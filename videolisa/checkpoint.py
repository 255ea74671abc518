"""Loading and saving: this package's format, the original VideoLISA release, stock SAM and CLIP weights.

Build, then load: a model is built from its config (random weights, parameters on the meta device when
loading), then filled from checkpoint files with a strict check — any unmapped, missing or mis-shaped
tensor is an error that names it. Key maps are data (the tables below), not code paths.

Formats:

* **videolisa** (this package): ``config.json`` with ``model_type: "videolisa"``, safetensors weights
  (``model.safetensors`` or shards + ``model.safetensors.index.json``) including CLIP, tokenizer files.
* **original** (``ZechenBai/VideoLISA-3.8B``, written by the original merge script): ``config.json`` with
  ``model_type: "llava_phi"`` and the LLaVA/VideoLISA fields, bf16 shards (``.safetensors`` or ``.bin``),
  no CLIP weights (its config names the CLIP model), no SAM dimensions (inferred from the tensors).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from videolisa.builtin import builtin_model_dir
from videolisa.config import SAM_ENCODER_VARIANTS, SamConfig, VideoLisaConfig
from videolisa.errors import CheckpointError, MissingFilesError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.modeling.videolisa import VideoLisaForSegmentation

logger = logging.getLogger(__name__)
# The model class a checkpoint is loaded into (VideoLisaForSegmentation; passed in, since modeling sits above).
ModelT = TypeVar("ModelT", bound=torch.nn.Module)

# Original merged-checkpoint prefixes -> this package's module prefixes (first match wins).
ORIGINAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("model.embed_tokens.", "llm.model.embed_tokens."),
    ("model.layers.", "llm.model.layers."),
    ("model.norm.", "llm.model.norm."),
    ("lm_head.", "llm.lm_head."),
    ("model.mm_projector.", "projector."),
    ("model.visual_model.", "sam."),
    ("model.text_hidden_fcs.0.", "prompt_head."),
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower."),
)
# This package's own format: names are used as they are.
IDENTITY_KEY_MAP: tuple[tuple[str, str], ...] = (("", ""),)
# Stock SAM checkpoints (sam_vit_h_4b8939.pth, ...) hold the bare Sam state dict.
SAM_CHECKPOINT_KEY_MAP: tuple[tuple[str, str], ...] = (("", "sam."),)

# Original config.json fields that are not part of the LLM config -> VideoLisaConfig fields (None: checked
# or implied, not stored).
ORIGINAL_CONFIG_FIELDS: dict[str, str | None] = {
    "vision_tower": "vision_tower_name",
    "mm_vision_tower": "vision_tower_name",
    "mm_vision_select_layer": "vision_feature_layer",
    "mm_vision_select_feature": "vision_feature_select",
    "mm_projector_type": "projector_type",
    "tokenizer_model_max_length": "model_max_length",
    "mm_hidden_size": None,
    "out_dim": None,
    "mm_patch_merge_type": None,
    "mm_use_im_start_end": None,
    "mm_use_im_patch_token": None,
    "use_mm_proj": None,
    "image_aspect_ratio": None,
    "image_grid_pinpoints": None,
    "tune_mm_mlp_adapter": None,
    "freeze_mm_mlp_adapter": None,
    "pretrain_mm_mlp_adapter": None,
    "tokenizer_padding_side": None,
    "train_mask_decoder": None,
    "architectures": None,
    "model_type": None,
    "torch_dtype": None,
    "transformers_version": None,
    "_name_or_path": None,
}
ORIGINAL_MODEL_TYPES = ("llava_phi",)
ORIGINAL_ARCHITECTURES = ("VideoLISAForCausalLM",)

WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
_HUB_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt")
BUILTIN_PREFIX = "builtin:"


# ============================================================================ file access
def resolve_model_dir(model_id_or_path: str | Path, patterns: tuple[str, ...] = _HUB_PATTERNS) -> Path:
    """A local directory for any model name; the one resolver, and the only place that talks to the Hub.

    ``builtin:<name>`` is a model shipped inside the package (:mod:`videolisa.builtin`). A path that exists
    is returned as is. Otherwise it must look like a repository id (``owner/name``) and is downloaded (or
    taken from the local HF cache). Offline (``HF_HUB_OFFLINE=1``) or without network, the error says which
    files are missing and how to pass a local directory instead.
    """
    if isinstance(model_id_or_path, str) and model_id_or_path.startswith(BUILTIN_PREFIX):
        return builtin_model_dir(model_id_or_path.removeprefix(BUILTIN_PREFIX))
    path = Path(model_id_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MissingFilesError(f"{path} is a file; expected a model directory with config.json and weights")
        return path
    name = str(model_id_or_path)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise MissingFilesError(f"model {name!r} is neither an existing directory nor a Hugging Face repository id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=list(patterns)))
    except Exception as error:  # offline mode, no network, gated repo, unknown repo: all the same advice
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        reason = "HF_HUB_OFFLINE is set" if offline else f"{type(error).__name__}: {error}"
        raise MissingFilesError(
            f"cannot get the files of {name!r} ({', '.join(patterns)}) from the Hugging Face Hub and they are "
            f"not in the local cache ({reason}). Download them on a machine with network, e.g. "
            f"`huggingface-cli download {name} --local-dir ./{name.split('/')[-1]}`, and pass that directory "
            f"instead of the repository id."
        ) from error


def read_config_json(model_dir: Path) -> dict[str, Any]:
    """``model_dir/config.json`` as a dict, with a clear error if it is missing or malformed."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise MissingFilesError(f"{config_path} is missing: a model directory needs config.json")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from error


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a model directory: the shards named by an index, or the single file.

    Safetensors are preferred over ``.bin`` when both exist.
    """
    for index_name in WEIGHT_INDEX_FILES:
        index_path = model_dir / index_name
        if index_path.is_file():
            shard_names = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            missing = [name for name in shard_names if not (model_dir / name).is_file()]
            if missing:
                raise MissingFilesError(f"{index_path} names shards that are missing: {missing}")
            return [model_dir / name for name in shard_names]
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise MissingFilesError(f"no weights in {model_dir}: expected one of {list(WEIGHT_FILES + WEIGHT_INDEX_FILES)}")


def iter_checkpoint_tensors(paths: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` from safetensors or pickle shards, one shard in memory at a time.

    Pickle files are loaded with ``weights_only=True`` (no code execution).
    """
    from safetensors import safe_open

    for path in paths:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    yield name, handle.get_tensor(name)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:
                raise CheckpointError(f"cannot read {path} as a weights-only PyTorch checkpoint: {error}") from error
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]
            if not isinstance(state, dict):
                raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
            yield from state.items()


def map_key(name: str, key_map: tuple[tuple[str, str], ...]) -> str | None:
    """Apply the first matching ``(source prefix, target prefix)`` rule; None if no rule matches."""
    for source, target in key_map:
        if name.startswith(source):
            return target + name[len(source) :]
    return None


# ============================================================================ configs
def is_original_config(config_dict: dict[str, Any]) -> bool:
    """True for the original release's ``config.json`` (LLaVA-Phi-3 / VideoLISA fields)."""
    return config_dict.get("model_type") in ORIGINAL_MODEL_TYPES or any(
        arch in ORIGINAL_ARCHITECTURES for arch in config_dict.get("architectures") or ()
    )


def load_vision_config(vision_tower: str | Path) -> dict[str, Any]:
    """The CLIP vision config of an HF id or directory (a full ``CLIPConfig`` or a ``CLIPVisionConfig``)."""
    config_dict = read_config_json(resolve_model_dir(vision_tower, ("*.json",)))
    if "vision_config" in config_dict:
        config_dict = config_dict["vision_config"]
    return {k: v for k, v in config_dict.items() if k not in ("architectures", "torch_dtype", "transformers_version")}


def convert_original_config(
    config_dict: dict[str, Any],
    vision_config: dict[str, Any],
    sam_config: SamConfig,
    vision_tower: str | None = None,
    seg_token_id: int | None = None,
) -> VideoLisaConfig:
    """Map an original ``config.json`` to a :class:`VideoLisaConfig`.

    Phi-3 fields become ``text_config``; LLaVA/VideoLISA fields are mapped by ``ORIGINAL_CONFIG_FIELDS``.
    The sliding window is shifted by one: transformers 4.41 (which the original ran) lets a query attend
    keys ``i - w .. i`` (w + 1 keys), transformers 5 attends ``w`` keys including itself.
    """
    if config_dict.get("mm_use_im_start_end"):
        raise CheckpointError("mm_use_im_start_end=true is not supported (the original VideoLISA raises too)")
    text_values = {k: v for k, v in config_dict.items() if k not in ORIGINAL_CONFIG_FIELDS}
    text_values["model_type"] = "phi3"
    if text_values.get("sliding_window") is not None:
        text_values["sliding_window"] = int(text_values["sliding_window"]) + 1
    rope_scaling = text_values.pop("rope_scaling", None)
    if rope_scaling:
        raise CheckpointError(f"rope_scaling={rope_scaling} is not supported for the original layout")
    mm_hidden = config_dict.get("mm_hidden_size")
    if mm_hidden is not None and mm_hidden != vision_config.get("hidden_size"):
        raise CheckpointError(
            f"config mm_hidden_size={mm_hidden} does not match the CLIP hidden size {vision_config.get('hidden_size')}"
        )
    out_dim = config_dict.get("out_dim", sam_config.prompt_embed_dim)
    if out_dim != sam_config.prompt_embed_dim:
        raise CheckpointError(
            f"config out_dim={out_dim} does not match the SAM prompt dim {sam_config.prompt_embed_dim}"
        )
    values: dict[str, Any] = {}
    for source, target in ORIGINAL_CONFIG_FIELDS.items():
        if target is not None and source in config_dict:
            values[target] = config_dict[source]
    if vision_tower is not None:
        values["vision_tower_name"] = str(vision_tower)
    if seg_token_id is not None:
        values["seg_token_id"] = seg_token_id
    return VideoLisaConfig(
        text_config=text_values, vision_config=vision_config, sam_config=asdict(sam_config), **values
    )


def infer_sam_config(shapes: dict[str, tuple[int, ...]], prefix: str = "sam.") -> SamConfig:
    """SAM dimensions from tensor shapes (the original config does not store them).

    Everything is read off the shapes: patch size and embed dim (patch embedding), depth (block count),
    head dim (relative-position tables), global blocks (tables spanning the whole grid), window size,
    input size (position embedding), decoder sizes. The decoder's head count is not visible in shapes and
    is taken from stock SAM (8).
    """

    def shape(name: str) -> tuple[int, ...]:
        if prefix + name not in shapes:
            raise CheckpointError(f"cannot infer the SAM dimensions: tensor {prefix + name} is missing")
        return shapes[prefix + name]

    embed_dim, _, patch_size, _ = shape("image_encoder.patch_embed.proj.weight")
    grid = shape("image_encoder.pos_embed")[1]
    depth = 1 + max(
        int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"image_encoder\.blocks\.(\d+)\.", k))
    )
    rel_pos = [shape(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    head_dim = rel_pos[0][1]
    global_blocks = [i for i, table in enumerate(rel_pos) if table[0] == 2 * grid - 1]
    window_tables = [table[0] for i, table in enumerate(rel_pos) if i not in global_blocks]
    decoder_depth = 1 + max(
        int(m.group(1))
        for k in shapes
        if (m := re.match(re.escape(prefix) + r"mask_decoder\.transformer\.layers\.(\d+)\.", k))
    )
    iou_depth = 1 + max(
        int(m.group(1))
        for k in shapes
        if (m := re.match(re.escape(prefix) + r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.", k))
    )
    values = dict(
        image_size=grid * patch_size,
        patch_size=patch_size,
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=embed_dim // head_dim,
        encoder_global_attn_indexes=global_blocks,
        encoder_window_size=(window_tables[0] + 1) // 2 if window_tables else SamConfig.encoder_window_size,
        prompt_embed_dim=shape("image_encoder.neck.0.weight")[0],
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=decoder_depth,
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=iou_depth,
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
    )
    for variant, dims in SAM_ENCODER_VARIANTS.items():
        stock = asdict(SamConfig.from_variant(variant))
        if all(stock[k] == v for k, v in values.items()) and all(stock[k] == dims[k] for k in dims):
            return SamConfig.from_variant(variant)
    return SamConfig.from_dict({**values, "variant": "custom"})


# ============================================================================ state dicts
def _format_names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_state_dict_strict(
    module: torch.nn.Module,
    tensors: Iterator[tuple[str, torch.Tensor]],
    key_map: tuple[tuple[str, str], ...] | None = None,
    dtype: torch.dtype | None = None,
    source: str = "checkpoint",
    scope: Callable[[str], bool] | None = None,
    keep_dtypes: bool = False,
) -> None:
    """Fill ``module``'s parameters and persistent buffers (those whose name ``scope`` accepts; all if None)
    from ``tensors``.

    Every incoming name is mapped by ``key_map`` (identity if None); an unmapped name, a name the module
    does not have, a shape mismatch, or an expected tensor that never arrives raises
    :class:`CheckpointError` listing them. Floating tensors are cast to ``dtype`` (default: the
    module's dtype for that tensor) as they are read, so at most one copy is held; with ``keep_dtypes``
    each keeps the dtype it is stored in (``dtype`` is then ignored), for lossless conversion.
    """
    expected = {
        name: tensor for name, tensor in module.state_dict(keep_vars=True).items() if scope is None or scope(name)
    }
    loaded: dict[str, torch.Tensor] = {}
    unmapped, unexpected, mismatched = [], [], []
    for name, tensor in tensors:
        target = map_key(name, key_map) if key_map is not None else name
        if target is None:
            unmapped.append(name)
        elif target not in expected:
            unexpected.append(f"{name} -> {target}" if target != name else name)
        elif tuple(tensor.shape) != tuple(expected[target].shape):
            mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[target].shape)}")
        else:
            target_dtype = tensor.dtype if keep_dtypes else dtype if dtype is not None else expected[target].dtype
            # Always an owned copy: safetensors and mmap'd pickles hand out views into the file at arbitrary
            # offsets, and misaligned weights change CPU matmul results (no bit-identical round trip).
            loaded[target] = tensor.to(target_dtype, copy=True) if tensor.is_floating_point() else tensor.clone()
    missing = sorted(set(expected) - set(loaded))
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} tensors with no mapping: {_format_names(unmapped)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors the model does not have: {_format_names(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensors with the wrong shape: {_format_names(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} model tensors missing from the {source}: {_format_names(missing)}")
    if problems:
        raise CheckpointError(f"cannot load {source}: " + "; ".join(problems))
    module.load_state_dict(loaded, strict=False, assign=True)


def _tensor_shapes(paths: list[Path], key_map: tuple[tuple[str, str], ...]) -> dict[str, tuple[int, ...]]:
    """Mapped tensor names -> shapes, reading only headers for safetensors."""
    from safetensors import safe_open

    shapes = {}
    for path in paths:
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as handle:
                    names = [(name, tuple(handle.get_slice(name).get_shape())) for name in handle.keys()]  # noqa: SIM118
            except Exception as error:  # safetensors raises its own error types for truncated/corrupt files
                raise CheckpointError(f"cannot read {path} as safetensors: {error}") from error
        else:
            names = [(name, tuple(tensor.shape)) for name, tensor in iter_checkpoint_tensors([path])]
        for name, shape in names:
            target = map_key(name, key_map)
            if target is not None:
                shapes[target] = shape
    return shapes


# ============================================================================ model loading
def build_empty(model_class: type[ModelT], config: VideoLisaConfig) -> ModelT:
    """``model_class(config)`` with parameters on the meta device (buffers real), ready for ``assign`` loading."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return model_class(config)


def load_clip_weights(
    model: VideoLisaForSegmentation, vision_tower: str | Path, dtype: torch.dtype | None = None
) -> None:
    """Load CLIP vision weights (HF id or directory of a ``CLIPModel`` or ``CLIPVisionModel``) into
    ``model.vision_tower``, strictly."""
    from transformers import CLIPVisionModel

    clip_dir = resolve_model_dir(vision_tower)
    try:
        clip, info = CLIPVisionModel.from_pretrained(clip_dir, output_loading_info=True, dtype=torch.float32)
    except Exception as error:
        raise CheckpointError(f"cannot load CLIP vision weights from {clip_dir}: {error}") from error
    if info["missing_keys"] or info["mismatched_keys"]:
        raise CheckpointError(
            f"CLIP weights in {clip_dir} do not fit the vision tower: missing {sorted(info['missing_keys'])}, "
            f"mismatched {info['mismatched_keys']}"
        )
    load_state_dict_strict(
        model,
        ((f"vision_tower.{k}", v) for k, v in clip.state_dict().items()),
        dtype=dtype,
        source=f"CLIP weights {clip_dir}",
        scope=_is_clip_key,
    )


def load_sam_checkpoint(model: VideoLisaForSegmentation, checkpoint_path: str | Path) -> None:
    """Load a stock SAM ``.pth`` (``sam_vit_h_4b8939.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_b_01ec64.pth``)
    into ``model.sam`` strictly (the model's SAM variant must match the file)."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise MissingFilesError(f"SAM checkpoint {path} does not exist")
    load_state_dict_strict(
        model,
        iter_checkpoint_tensors([path]),
        SAM_CHECKPOINT_KEY_MAP,
        source=f"SAM checkpoint {path}",
        scope=lambda name: name.startswith("sam."),
    )


def load_pretrained(
    model_class: type[ModelT],
    model_id_or_path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    vision_tower: str | Path | None = None,
    sam_config: SamConfig | dict[str, Any] | None = None,
    keep_dtypes: bool = False,
) -> ModelT:
    """Load a model in this package's format or the original release's (detected from ``config.json``).

    Called by ``VideoLisaForSegmentation.from_pretrained`` (``model_class``: the class to build).

    Args:
        model_class: the model class, built from the (converted) config with ``model_class(config)``.
        model_id_or_path: any model name :func:`resolve_model_dir` accepts: a directory, a Hugging Face
            repository id (e.g. ``ZechenBai/VideoLISA-3.8B``) or ``builtin:<name>``.
        dtype: parameter dtype (default: float32; the checkpoint's dtype is only the storage dtype).
        device: where the model goes.
        vision_tower: CLIP id or directory, for checkpoints without CLIP weights (the original); default
            the one the config names.
        sam_config: SAM dimensions for the original layout; default inferred from the tensor shapes.
        keep_dtypes: every tensor keeps the dtype the checkpoint stores it in (``dtype`` is ignored) and CLIP
            weights read from a separate CLIP model are float32, the dtype they are read in: an exact copy
            to save again (:func:`videolisa.builder.convert_original_checkpoint`), not a model to run.

    Returns:
        The model in eval mode.
    """
    from videolisa.tokenization import seg_token_id

    model_dir = resolve_model_dir(model_id_or_path)
    config_dict = read_config_json(model_dir)
    paths = weight_files(model_dir)
    dtype = dtype or torch.float32
    original = is_original_config(config_dict)
    if not original and config_dict.get("model_type") != VideoLisaConfig.model_type:
        raise CheckpointError(
            f"{model_dir}/config.json has model_type {config_dict.get('model_type')!r}; expected "
            f"'videolisa' (this package) or one of {list(ORIGINAL_MODEL_TYPES)} (original VideoLISA)"
        )
    key_map = ORIGINAL_KEY_MAP if original else IDENTITY_KEY_MAP
    shapes = _tensor_shapes(paths, key_map)  # headers only for safetensors; read once
    if original:
        if sam_config is None:
            sam_config = infer_sam_config(shapes)
        elif isinstance(sam_config, dict):
            sam_config = SamConfig.from_dict(sam_config)
        clip_source = vision_tower or config_dict.get("mm_vision_tower") or config_dict.get("vision_tower")
        if not clip_source:
            raise CheckpointError(f"{model_dir}/config.json names no vision tower; pass vision_tower=ID_OR_DIR")
        tokenizer = load_tokenizer(model_dir)
        token_id = seg_token_id(tokenizer) if tokenizer is not None else None
        config = convert_original_config(
            config_dict, load_vision_config(clip_source), sam_config, str(clip_source), token_id
        )
    else:
        config = VideoLisaConfig.from_pretrained(model_dir)
        clip_source = vision_tower
    model = build_empty(model_class, config)
    has_clip = any(_is_clip_key(name) for name in shapes)
    if not has_clip:
        load_clip_weights(model, clip_source or config.vision_tower_name, None if keep_dtypes else dtype)
    load_state_dict_strict(
        model,
        iter_checkpoint_tensors(paths),
        key_map,
        dtype,
        source=f"checkpoint {model_dir}",
        scope=None if has_clip else (lambda name: not _is_clip_key(name)),
        keep_dtypes=keep_dtypes,
    )
    # Parameters and persistent buffers were cast to ``dtype`` as they were loaded. Non-persistent buffers
    # keep their build dtype: RoPE ``inv_freq`` must stay float32 (the original computed it in float32 in
    # bf16 runs too; rounded to bf16 it shifts the rotary phase by ~0.4 rad at position 2370).
    return model.to(device=device).eval()


def _is_clip_key(name: str) -> bool:
    return name.startswith("vision_tower.")


# ============================================================================ tokenizer
def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in ``model_dir``, or None if the directory has no tokenizer files."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(model_dir, padding_side="right")
    except Exception as error:
        raise CheckpointError(f"cannot load the tokenizer in {model_dir}: {error}") from error


def prepare_tokenizer_and_embeddings(model: VideoLisaForSegmentation, tokenizer: PreTrainedTokenizerBase) -> int:
    """Make the tokenizer and the LLM agree on the segmentation token, the way the original did.

    The released tokenizer already holds ``[SEG]`` (id 32011). For a base LLM without it, the token is added
    as a normal token and the embeddings are resized to ``len(tokenizer)``; for Phi-3 this *shrinks* the
    padded 32064 rows to 32012, so ``[SEG]`` starts from Phi-3's unused row 32011, not from a fresh init
    (docs/original.md §4.2). Updates ``config.seg_token_id`` and the vocabulary size; returns the token id.
    """
    from videolisa.tokenization import add_seg_token

    token_id = add_seg_token(tokenizer, model.config.seg_token)
    if model.llm.get_input_embeddings().weight.shape[0] != len(tokenizer):
        model.llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.text_config.vocab_size = len(tokenizer)
    model.config.seg_token_id = token_id
    return token_id


# ============================================================================ saving
def save_model(
    model: VideoLisaForSegmentation,
    save_directory: Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_shard_size: str | int = "5GB",
) -> None:
    """Write this package's format: ``config.json``, safetensors (sharded with an index past
    ``max_shard_size``), and the tokenizer. Files are written to a temporary directory first and then
    moved in, so an interrupted save never leaves a half-written file under its final name."""
    from huggingface_hub import save_torch_state_dict

    save_directory.mkdir(parents=True, exist_ok=True)
    state_dict = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    with tempfile.TemporaryDirectory(dir=save_directory, prefix=".saving-") as tmp:
        staging = Path(tmp)
        model.config.save_pretrained(staging)
        save_torch_state_dict(state_dict, staging, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        for stale in [*save_directory.glob("model*.safetensors"), *save_directory.glob("model.safetensors.index.json")]:
            stale.unlink()
        for item in staging.iterdir():
            os.replace(item, save_directory / item.name)
