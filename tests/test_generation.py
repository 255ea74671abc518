"""Generation mode (issue 20 item 1), several tracks (item 2) and presence scores (item 3) in the predictor.

A tiny model's greedy answer is made known by fitting its LM head on the hidden states of a chosen answer (the
body stays as seeded), so that "generation equals teacher forcing when the generated answer is the teacher-forced
one" is tested end to end; prompts read from any generated sequence are compared with teacher forcing of the same
ids, which tests the KV-cache path and the read-position rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, make_frames

from videolisa.constants import DEFAULT_ANSWER
from videolisa.errors import InvalidInputError
from videolisa.generation import GENERATE, GenerationConfig, format_answer, generate_answer, number_segments
from videolisa.predictor import VideoLisaPredictor
from videolisa.processing.processor import VideoLisaProcessor
from videolisa.tokenization import build_tiny_tokenizer

QUERY = "Please segment the red square."
NUM_FRAMES, HEIGHT, WIDTH = 6, 40, 56


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=3)


def video_tokens(model, processor: VideoLisaProcessor, frames: np.ndarray) -> torch.Tensor:
    """The Sparse-Dense tokens the predictor builds for ``frames``: ``[1, N_vis, D]``."""
    sparse, dense = processor.sample_frames(len(frames))
    with torch.inference_mode():
        return model.build_video_tokens(processor.clip_pixels(frames[sparse])[None], torch.tensor([dense]))


def sharpened_model(seed: int = 0, factor: float = 30.0):
    """A tiny model whose mask logits are ``factor`` times larger (the seeded ones stay within a logit of 0, where
    every stability-based presence score is 0)."""
    model = build_tiny_model(seed=seed)
    with torch.no_grad():
        for mlp in model.sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight *= factor
            mlp.layers[-1].bias *= factor
    return model


def fit_answers(model, processor: VideoLisaProcessor, frames: np.ndarray, answers: dict[str, list[int]]) -> None:
    """Train only the LM head (on fixed hidden states) until greedy decoding of each query gives its answer ids."""
    from videolisa.modeling.sparse_dense import splice_video_tokens

    tokens = video_tokens(model, processor, frames)
    embedding = model.llm.get_input_embeddings()
    inputs, targets = [], []
    for query, answer_ids in answers.items():
        ids = torch.cat([processor.build_generation_ids(query), torch.tensor(answer_ids)])[None]
        with torch.inference_mode():
            spliced = splice_video_tokens(
                ids, embedding(ids.clamp(min=0)), tokens, model.config.image_token_index
            ).inputs_embeds
            hidden = model.llm.get_decoder()(inputs_embeds=spliced).last_hidden_state[0]
        # The state at position p predicts the token at p + 1: the answer's tokens follow the prompt's last state.
        inputs.append(hidden[hidden.shape[0] - len(answer_ids) - 1 : -1].clone())
        targets.append(torch.tensor(answer_ids))
    inputs, targets = torch.cat(inputs), torch.cat(targets)
    head = model.llm.get_output_embeddings()
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(300):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(inputs), targets)
            loss.backward()
            optimizer.step()
            if bool((head(inputs).argmax(-1) == targets).all()) and loss.item() < 0.05:
                break
    assert bool((head(inputs).argmax(-1) == targets).all()), "the LM head could not be fitted to the answer"


def test_prompts_of_a_generated_sequence_equal_teacher_forcing_of_it(tokenizer, frames):
    """Whatever the model generates (here text and [SEG] mixed, by favouring [SEG]'s LM-head row), the prompt of
    every generated [SEG] equals the one teacher forcing reads from the same ids, and greedy decoding picks the
    argmax of teacher forcing's logits at every answer position."""
    model = build_tiny_model(seed=0)
    seg = model.config.seg_token_id
    with torch.no_grad():
        model.llm.get_output_embeddings().weight[seg] *= 3.0
    processor = VideoLisaProcessor(tokenizer, model.config)
    prompt = processor.build_generation_ids(QUERY)
    tokens = video_tokens(model, processor, frames)
    generated = generate_answer(model, prompt, tokens, processor.stop_token_ids(), GenerationConfig(max_new_tokens=8))
    ids = generated.token_ids.tolist()
    assert len(ids) == 8 and 0 < ids.count(seg) < 8, ids  # both text and [SEG] were generated
    with torch.inference_mode():
        full = torch.cat([prompt, generated.token_ids])[None]
        reference = model.compute_prompts(full, tokens, return_logits=True)
    assert generated.prompt_embeddings.shape[0] == ids.count(seg)
    torch.testing.assert_close(generated.prompt_embeddings, reference.prompt_embeddings, atol=1e-5, rtol=1e-5)
    answer_logits = reference.logits[0, -len(ids) - 1 : -1]
    assert answer_logits.argmax(-1).tolist() == ids


def test_greedy_teacher_forced_answer_equals_the_default_path(tokenizer, frames):
    """A model whose greedy answer is ``Sure, [SEG].``: generation mode returns that answer, one track, and the
    default (teacher-forced) path's prompt and masks."""
    model = build_tiny_model(seed=1)
    processor = VideoLisaProcessor(tokenizer, model.config)
    answer_ids = processor.build_input_ids(QUERY, DEFAULT_ANSWER)[len(processor.build_generation_ids(QUERY)) :]
    assert tokenizer.decode(answer_ids) == "Sure, [SEG].<|end|>"  # the answer and its end of turn
    fit_answers(model, processor, frames, {QUERY: answer_ids.tolist()})
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu")
    generated = predictor.segment(frames, QUERY, answer=GENERATE, presence_threshold=0.0, return_logits=True)
    forced = predictor.segment(frames, QUERY, return_logits=True)
    assert generated.answer == "Sure, [SEG1]." and forced.answer is None
    assert [(track.id, track.phrase) for track in generated.tracks] == [(1, None)]
    np.testing.assert_allclose(generated.prompt_embedding, forced.prompt_embedding, atol=1e-5)
    np.testing.assert_allclose(generated.mask_logits, forced.mask_logits, atol=1e-4)
    decided = np.abs(forced.mask_logits) > 1e-3
    assert np.array_equal(generated.masks[decided], forced.masks[decided])
    assert np.array_equal(generated.tracks[0].masks, generated.masks)


def test_an_answer_without_seg_has_no_track(tokenizer, frames):
    model = build_tiny_model(seed=0)
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu")
    result = predictor.segment(frames, QUERY, answer=GENERATE, generation=GenerationConfig(max_new_tokens=3))
    assert "[SEG" not in result.answer and result.answer  # the seeded model writes 3 tokens of text
    assert result.tracks == [] and result.prompt_embedding.shape == (0, model.config.sam.prompt_embed_dim)
    assert result.masks.shape == (NUM_FRAMES, HEIGHT, WIDTH) and not result.masks.any()
    assert result.present_frames == []


def test_several_seg_make_several_tracks_with_scores(tokenizer, frames):
    """Two [SEG] in a teacher-forced answer: two tracks whose union is the instruction's mask (each as decoded
    with its own prompt), each with a presence score in (0, 1] per frame."""
    predictor = VideoLisaPredictor(sharpened_model(), tokenizer, device="cpu")
    result = predictor.segment(frames, QUERY, answer="Sure, [SEG] and [SEG].", return_logits=True)
    assert [(track.id, track.phrase) for track in result.tracks] == [(1, None), (2, None)]
    assert np.array_equal(result.masks, result.tracks[0].masks | result.tracks[1].masks)
    assert not np.array_equal(result.tracks[0].masks, result.tracks[1].masks)  # the prompts differ
    for track in result.tracks:
        assert track.scores.shape == (NUM_FRAMES,) and ((track.scores > 0) & (track.scores <= 1)).all()
        assert track.present_frames == np.flatnonzero(track.masks.any(axis=(1, 2))).tolist()


def test_presence_threshold_empties_low_scoring_frames(tokenizer, frames):
    predictor = VideoLisaPredictor(sharpened_model(), tokenizer, device="cpu")
    raw = predictor.segment(frames, QUERY)
    scores = raw.tracks[0].scores
    cut = float(np.median(scores[scores > 0]))  # some frames fall below, some stay
    kept = predictor.segment(frames, QUERY, presence_threshold=cut)
    expected = raw.masks & (scores >= cut)[:, None, None]
    assert np.array_equal(kept.masks, expected) and expected.any() and not np.array_equal(expected, raw.masks)
    assert kept.present_frames == np.flatnonzero(scores >= cut).tolist()
    with pytest.raises(InvalidInputError, match="presence_threshold"):
        predictor.segment(frames, QUERY, presence_threshold=1.5)


def test_sampling_is_seeded_and_settings_are_checked(tokenizer, frames):
    model = build_tiny_model(seed=0)
    processor = VideoLisaProcessor(tokenizer, model.config)
    prompt, tokens = processor.build_generation_ids(QUERY), video_tokens(model, processor, frames)
    settings = GenerationConfig(max_new_tokens=6, temperature=5.0, seed=7)
    first = generate_answer(model, prompt, tokens, processor.stop_token_ids(), settings).token_ids
    again = generate_answer(model, prompt, tokens, processor.stop_token_ids(), settings).token_ids
    greedy = generate_answer(model, prompt, tokens, processor.stop_token_ids(), GenerationConfig(6)).token_ids
    assert torch.equal(first, again) and not torch.equal(first, greedy)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(InvalidInputError, match="temperature"):
        GenerationConfig(temperature=-1.0)
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu")
    with pytest.raises(InvalidInputError, match="generate"):
        predictor.segment(frames, QUERY, generation=GenerationConfig())


def test_answers_are_numbered_with_their_phrases(tokenizer):
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    ids = tokenizer("the red circle", add_special_tokens=False).input_ids + [seg]
    ids += tokenizer(" and the blue square", add_special_tokens=False).input_ids + [seg]
    assert format_answer(tokenizer, ids + tokenizer(".", add_special_tokens=False).input_ids, seg) == (
        "the red circle[SEG1] and the blue square[SEG2].",
        ["the red circle", "the blue square"],
    )
    assert number_segments(["Sure, it is ", ", and also the dog ", "."]) == (
        "Sure, it is [SEG1], and also the dog [SEG2].",
        [None, "also the dog"],
    )
    assert number_segments(["There is none."]) == ("There is none.", [])
    assert number_segments(["Sure, ", " blue large star."]) == (  # the built-in model's answers
        "Sure, [SEG1] blue large star.",
        ["blue large star"],
    )
    assert number_segments(["Sure, ", " red triangle, ", " and blue circle."])[1] == ["red triangle", "blue circle"]


def test_instructions_with_and_without_seg_in_one_call(tokenizer, frames):
    """segment_many in generation mode: one answer with a [SEG] (one track, the teacher-forced masks), one without
    (no track, empty masks, NO_OBJECT logits), in one pass."""
    from videolisa.predictor import NO_OBJECT_LOGIT

    model = build_tiny_model(seed=1)
    processor = VideoLisaProcessor(tokenizer, model.config)
    other = "Please segment the dog."
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    answer_ids = processor.build_input_ids(QUERY, DEFAULT_ANSWER)[len(processor.build_generation_ids(QUERY)) :]
    fit_answers(
        model,
        processor,
        frames,
        {QUERY: answer_ids.tolist(), other: tokenizer("No dog.", add_special_tokens=False).input_ids + [end]},
    )
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu")
    found, missing = predictor.segment_many(
        frames, [QUERY, other], answer=GENERATE, presence_threshold=0.0, return_logits=True
    )
    assert (found.answer, missing.answer) == ("Sure, [SEG1].", "No dog.")
    assert len(found.tracks) == 1 and missing.tracks == []
    assert not missing.masks.any() and (missing.mask_logits == NO_OBJECT_LOGIT).all()
    forced = predictor.segment(frames, QUERY)
    decided = np.abs(found.mask_logits) > 1e-3
    assert np.array_equal(found.masks[decided], forced.masks[decided]) and found.masks.any()
