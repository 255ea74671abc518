"""VideoLisaForSegmentation: CLIP + projector + causal LM + prompt head + SAM (docs/original.md §1).

Data flow of one conversation about one video:

1. CLIP features of the T_s sparse frames -> projector -> ``[T_s, P, D]``;
2. Sparse-Dense tokens (``T_s`` frame means + ``T_d x P`` dense tokens) replace the video placeholder;
3. one LLM forward; the final normed hidden state before each ``[SEG]`` -> prompt head -> ``[C]`` prompt;
4. SAM: image encoder per frame, mask decoder with the prompt as the only sparse prompt, upscaled logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, CLIPVisionModel, PreTrainedModel

from videolisa.checkpoint import load_pretrained, save_model
from videolisa.config import VideoLisaConfig
from videolisa.errors import InvalidInputError
from videolisa.losses import language_model_loss, mask_losses
from videolisa.modeling.batch import PromptOutput, VideoLisaBatch, VideoLisaOutput
from videolisa.modeling.sam import build_sam, upscale_mask_logits
from videolisa.modeling.sam_fast import decode_low_res_logits_auto
from videolisa.modeling.sparse_dense import assemble_video_tokens, splice_video_tokens
from videolisa.modeling.trk import build_prompt_head, extract_trk_embeddings, find_seg_read_positions
from videolisa.modeling.vision import build_projector, extract_clip_features

# Parameter-name prefixes trained in the original recipe besides LoRA (docs/original.md §1.8, §4.2).
TRAINABLE_PREFIXES = ("llm.model.embed_tokens.", "llm.lm_head.", "sam.mask_decoder.", "prompt_head.")


class VideoLisaForSegmentation(PreTrainedModel):
    """The VideoLISA model. Building it never downloads anything; weights come from
    :meth:`from_pretrained` (this package's format or the original release, see :mod:`videolisa.checkpoint`).

    Sub-modules: ``vision_tower`` (HF ``CLIPVisionModel``), ``projector`` (``mlp2x_gelu``), ``llm`` (any HF
    causal LM, Phi-3 for the release), ``prompt_head`` (hidden -> hidden -> ReLU -> prompt dim), ``sam``
    (``segment_anything.modeling.Sam``).
    """

    config_class = VideoLisaConfig
    base_model_prefix = "videolisa"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config: VideoLisaConfig) -> None:
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.projector = build_projector(
            config.projector_type, config.vision_config.hidden_size, config.llm_hidden_size
        )
        self.llm = AutoModelForCausalLM.from_config(config.text_config)
        self.prompt_head = build_prompt_head(config.llm_hidden_size, config.sam.prompt_embed_dim)
        self.sam = build_sam(config.sam)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Keep construction-time initialisation: the CLIP tower and the LLM initialise themselves (they are
        ``PreTrainedModel``s); SAM, the projector and the prompt head keep PyTorch's defaults like the original."""

    # ------------------------------------------------------------------ video -> LLM
    def encode_frames(self, pixel_values_clip: torch.Tensor) -> torch.Tensor:
        """Projected CLIP tokens: ``[B, T_s, 3, S, S]`` -> ``[B, T_s, P, D]`` (no CLIP graph when it is frozen)."""
        batch, num_frames = pixel_values_clip.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and _is_trainable(self.vision_tower)):
            features = extract_clip_features(
                self.vision_tower,
                pixel_values_clip.flatten(0, 1),
                self.config.vision_feature_layer,
                self.config.vision_feature_select,
            )
        projected = self.projector(features.to(self.projector[0].weight.dtype))
        return projected.reshape(batch, num_frames, *projected.shape[1:])

    def build_video_tokens(self, pixel_values_clip: torch.Tensor, dense_positions: torch.Tensor) -> torch.Tensor:
        """Sparse-Dense tokens: ``[B, T_s, 3, S, S]``, ``[B, T_d]`` -> ``[B, T_s + T_d * P, D]``."""
        return assemble_video_tokens(self.encode_frames(pixel_values_clip), dense_positions)

    def compute_prompts(
        self,
        input_ids: torch.Tensor,
        video_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_logits: bool = False,
    ) -> PromptOutput:
        """One LLM pass; the segmentation prompt of every ``[SEG]`` token.

        Args:
            input_ids: ``[B, L]`` with one ``config.image_token_index`` per row and the answer containing
                ``[SEG]`` (teacher forcing).
            video_tokens: ``[B, N_vis, D]`` from :meth:`build_video_tokens` (N_vis follows the frame counts
                used, which may differ from the config's at inference, as the original allowed).
            attention_mask / labels: ``[B, L]`` or None.
            return_logits: also apply the LM head (training; costs ``L' x vocab`` memory).

        Returns:
            :class:`PromptOutput` with ``prompt_embeddings [K, C]`` in row-major order of the ``[SEG]`` tokens.
        """
        config = self.config
        embedding = self.llm.get_input_embeddings()
        text_ids = input_ids.masked_fill(input_ids == config.image_token_index, 0)
        spliced = splice_video_tokens(
            input_ids,
            embedding(text_ids),
            video_tokens.to(embedding.weight.dtype),
            config.image_token_index,
            attention_mask,
            labels,
        )
        hidden = self.llm.get_decoder()(
            inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=False
        ).last_hidden_state
        batch_index, positions = find_seg_read_positions(
            input_ids,
            config.seg_token_id,
            config.image_token_index,
            video_tokens.shape[1],
            config.seg_hidden_offset,
        )
        seg_hidden = extract_trk_embeddings(hidden, batch_index, positions)
        logits = self.llm.get_output_embeddings()(hidden) if return_logits else None
        return PromptOutput(
            prompt_embeddings=self.prompt_head(seg_hidden),
            seg_hidden_states=seg_hidden,
            batch_index=batch_index,
            logits=logits,
            labels=spliced.labels,
        )

    # ------------------------------------------------------------------ SAM
    def encode_images(self, pixel_values_sam: torch.Tensor) -> torch.Tensor:
        """SAM image embeddings: ``[F, 3, S, S]`` -> ``[F, C, S/patch, S/patch]``.

        No graph is kept when the encoder is frozen (the original recipe); a recipe that trains it from
        scratch gets gradients.
        """
        encoder = self.sam.image_encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and _is_trainable(encoder)):
            return encoder(pixel_values_sam.to(encoder.patch_embed.proj.weight.dtype))

    def decode_masks(
        self,
        image_embeddings: torch.Tensor,
        prompt_embeddings: torch.Tensor,
        resized_hw: tuple[int, int],
        original_hw: tuple[int, int],
    ) -> torch.Tensor:
        """Mask logits at the original frame size for every (frame, prompt) pair.

        Args:
            image_embeddings: ``[F, C, h, w]`` from :meth:`encode_images`.
            prompt_embeddings: ``[K, C]`` from :meth:`compute_prompts`.
            resized_hw: frame size inside the SAM input before padding; original_hw: ``(H, W)``.

        Returns:
            ``[F, K, H, W]`` logits; a pixel belongs to the mask where the logit is > 0.
        """
        low_res = self.decode_low_res_masks(image_embeddings, prompt_embeddings)
        return self.upscale_masks(low_res, resized_hw, original_hw)

    def decode_low_res_masks(self, image_embeddings: torch.Tensor, prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """SAM mask-decoder logits before upscaling: ``[F, C, h, w]`` embeddings and ``[K, C]`` prompts ->
        ``[F, K, 4h, 4w]`` (256x256 for SAM-H)."""
        return decode_low_res_logits_auto(self.sam, image_embeddings, prompt_embeddings)

    def upscale_masks(
        self, low_res_logits: torch.Tensor, resized_hw: tuple[int, int], original_hw: tuple[int, int]
    ) -> torch.Tensor:
        """``Sam.postprocess_masks``: ``[F, K, h, w]`` low-res logits -> ``[F, K, H, W]`` at the original size."""
        return upscale_mask_logits(self.sam, low_res_logits, resized_hw, original_hw)

    # ------------------------------------------------------------------ training
    def forward(self, batch: VideoLisaBatch) -> VideoLisaOutput:
        """Training forward: CE over the answer tokens + BCE and DICE of the dense frames' masks
        (docs/original.md §4.1).

        Returns the losses weighted by ``config.{ce,bce,dice}_loss_weight`` and the dense-frame mask logits.
        """
        config = self.config
        video_tokens = self.build_video_tokens(batch.pixel_values_clip, batch.dense_positions)
        prompts = self.compute_prompts(
            batch.input_ids, video_tokens, batch.attention_mask, batch.labels, return_logits=True
        )
        ce_loss = language_model_loss(prompts.logits, prompts.labels)
        predictions, targets, mask_logits = [], [], []
        for row, target in enumerate(batch.target_masks):
            row_prompts = prompts.prompt_embeddings[prompts.batch_index == row]
            if row_prompts.shape[0] != target.shape[0]:
                raise ValueError(
                    f"batch row {row} has {row_prompts.shape[0]} [SEG] tokens but {target.shape[0]} target masks"
                )
            if target.shape[0] == 0:
                mask_logits.append(target.new_zeros((0, *target.shape[1:]), dtype=torch.float32))
                continue
            image_embeddings = self.encode_images(batch.pixel_values_sam[row])
            logits = self.decode_masks(
                image_embeddings, row_prompts, batch.resized_sizes[row], batch.original_sizes[row]
            ).transpose(0, 1)
            mask_logits.append(logits)
            predictions.append(logits.flatten(0, 1))
            targets.append(target.flatten(0, 1))
        losses = mask_losses(predictions, targets, config.dice_scale, config.dice_eps)
        bce_loss = config.bce_loss_weight * losses.bce.to(ce_loss.device)
        dice_loss = config.dice_loss_weight * losses.dice.to(ce_loss.device)
        mask_loss = bce_loss + dice_loss
        return VideoLisaOutput(
            loss=config.ce_loss_weight * ce_loss + mask_loss,
            ce_loss=ce_loss,
            bce_loss=bce_loss,
            dice_loss=dice_loss,
            mask_loss=mask_loss,
            bce_loss_unweighted=losses.bce,
            dice_loss_unweighted=losses.dice,
            mask_logits=mask_logits,
        )

    # ------------------------------------------------------------------ freezing
    def apply_freezing_policy(self) -> list[str]:
        """Freeze everything except what the original trains fully (docs/original.md §1.8): the token embeddings, the
        LM head, the SAM mask decoder and the prompt head. CLIP, the projector, the SAM image and prompt
        encoders and the LLM body stay frozen (the LLM body gets LoRA adapters in training, which peft makes
        trainable). Returns the names of the trainable parameters."""
        trainable = []
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name.startswith(TRAINABLE_PREFIXES))
            if parameter.requires_grad:
                trainable.append(name)
        return trainable

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path, tokenizer: Any = None, **kwargs: Any) -> None:
        """Write ``config.json``, safetensors weights (sharded with an index when large) and the tokenizer."""
        save_model(self, Path(save_directory), tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, model_id_or_path: str | Path, *args: Any, **kwargs: Any) -> VideoLisaForSegmentation:
        """Load this package's format or the original VideoLISA release (detected from ``config.json``) from a
        directory, a Hugging Face repository id or ``builtin:<name>``.

        See :func:`videolisa.checkpoint.load_pretrained` for the keyword arguments (``dtype``, ``device``,
        ``vision_tower``, ``sam_config``...). ``AutoModel.from_pretrained`` calls this too (see
        :mod:`videolisa.auto`), adding arguments that :func:`_accept_auto_class_arguments` removes.
        """
        _accept_auto_class_arguments(kwargs)
        return load_pretrained(cls, model_id_or_path, *args, **kwargs)


# Hub download arguments AutoModel.from_pretrained forwards (transformers >= 5.2x forwards them even when unset).
_AUTO_HUB_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "proxies", "subfolder", "token")


def _accept_auto_class_arguments(kwargs: dict[str, Any]) -> None:
    """Remove from ``kwargs`` what ``AutoModel.from_pretrained`` adds: ``config`` (read from the same
    ``config.json``, which the model is built from in any case: the saved config is the single source of truth),
    ``trust_remote_code`` (no remote code is involved), an unset ``revision``, unset hub download arguments and the
    hub arguments of a PEFT adapter lookup that found none (``adapter_kwargs``). A config of another class, a
    revision, a set hub argument or a PEFT adapter folder are errors rather than ignored (fine-tuned models are
    exported with LoRA merged)."""
    config = kwargs.pop("config", None)
    if config is not None and not isinstance(config, VideoLisaConfig):
        raise InvalidInputError(f"config must be a VideoLisaConfig, got {type(config).__name__}")
    kwargs.pop("trust_remote_code", None)
    kwargs.pop("_from_auto", None)
    # Newer transformers pass every hub argument, unset ones included: those are dropped, set ones refused.
    for name in _AUTO_HUB_ARGUMENTS:
        if kwargs.pop(name, None):
            raise InvalidInputError(f"{name} is not supported by VideoLisaForSegmentation.from_pretrained")
    if kwargs.pop("revision", None) is not None:
        raise InvalidInputError("revision is not supported by VideoLisaForSegmentation.from_pretrained")
    if "_adapter_model_path" in (kwargs.pop("adapter_kwargs", None) or {}):
        raise InvalidInputError("a PEFT adapter folder is not a VideoLISA model; load the exported (merged) model")


def _is_trainable(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


# AutoModel.from_pretrained(directory) of a videolisa config.json builds this class (see videolisa.auto).
AutoModel.register(VideoLisaConfig, VideoLisaForSegmentation, exist_ok=True)
