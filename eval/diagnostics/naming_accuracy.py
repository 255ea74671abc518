"""Does the LLM know which object an instruction means? Naming accuracy of a synthetic-trained model, per kind.

    python eval/diagnostics/naming_accuracy.py --model runs/builtin/stage2_model [--videos 40 --seed 2]

On held-out synthetic videos (generated in memory from ``--seed``, never trained on), every instruction is asked
in the template the ``synthetic`` benchmark uses, the model writes its answer (generation mode, greedy,
:meth:`videolisa.VideoLisaPredictor.answer_tracks`), and the answer counts as right when it names the referent's
colour, size and shape ("red small triangle") and no other object of the clip. Stage 2 of the built-in recipe
(``train/configs/builtin_stage2_language.yaml``) answers "Sure, the red small triangle."; a stage-3 model
answers "Sure, [SEG] red small triangle." -- both are read the same way. Chance is about 1 / objects per clip
for the kinds that do not name the referent's looks (motion, temporal, reasoning).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from videolisa.cli import reports_errors


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or name (builtin:synthetic)")
    parser.add_argument("--seed", type=int, default=2, help="seed of the held-out videos (training used 1)")
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    return parser.parse_args(argv)


def names_only(answer: str, objects: list) -> list[int]:
    """Indices of the clip's objects whose "colour size shape" the answer contains."""
    return [index for index, obj in enumerate(objects) if f"{obj.color} {obj.size} {obj.shape}" in answer]


@reports_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from videolisa import VideoLisaPredictor
    from videolisa.benchmarks.mevis import synthetic_query
    from videolisa.generation import GENERATE
    from videolisa.synthetic import SyntheticConfig, generate_videos

    predictor = VideoLisaPredictor.from_pretrained(args.model)
    config = SyntheticConfig(min_frames=16, max_frames=32, min_objects=2, max_objects=3)
    right: dict[str, list[bool]] = defaultdict(list)
    examples = []
    for video in generate_videos(args.seed, args.videos, config):
        expressions = [e for e in video.expressions if e.object_index is not None]
        queries = [synthetic_query(e.text, e.is_sentence) for e in expressions]
        answered = predictor.answer_tracks(video.frames, queries, answer=GENERATE)
        for expression, answer in zip(expressions, answered.answers):
            correct = names_only(answer or "", list(video.objects)) == [expression.object_index]
            right[expression.kind].append(correct)
            if len(examples) < 8:
                examples.append({"instruction": expression.text, "answer": answer, "right": correct})
    result = {kind: round(sum(values) / len(values), 3) for kind, values in sorted(right.items())}
    result["overall"] = round(sum(sum(v) for v in right.values()) / sum(len(v) for v in right.values()), 3)
    report = {"model": args.model, "seed": args.seed, "videos": args.videos, "accuracy": result, "examples": examples}
    print(json.dumps(report, indent=1))
    if args.out is not None:
        from videolisa.atomic import write_atomically

        write_atomically(args.out, (json.dumps(report, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
