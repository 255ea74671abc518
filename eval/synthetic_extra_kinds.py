"""How a model handles instructions that name several objects or none, on a held-out synthetic ReVOS split.

Writes ``videolisa synth --layout revos`` data (multi-object and no-target instructions included), evaluates
the model with ``videolisa eval --benchmark revos`` and reports: the official ReVOS numbers (J, F, J&F, A, R per
type), J&F on the multi-object instructions, and the share of no-target instructions whose masks come back
empty on every frame. Then the same multi-object and no-target instructions in generation mode
(``answer="generate"``): the answers, how many tracks each gets against how many objects it names, J&F of
the tracks' union and of each named object against its best-matching track, and the share of no-target
instructions with no present frame. Results go to ``<results>/synthetic_extra_kinds.{json,md}``.

    python eval/synthetic_extra_kinds.py --model builtin:synthetic --work /tmp/extra_kinds --videos 40
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videolisa.cli import reports_errors

if TYPE_CHECKING:
    from videolisa.metrics.report import ScoreReport


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:synthetic", help="model to evaluate (default: builtin:synthetic)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the data and the predictions")
    parser.add_argument("--videos", type=int, default=40, help="held-out videos (default: 40)")
    parser.add_argument(
        "--seed", type=int, default=2, help="seed of the held-out split (default: 2, the model card's held-out scenes)"
    )
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results", help="results folder")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def mean_scores(report: ScoreReport, keys: list[str]) -> dict[str, float]:
    """Mean J and F over the items ``keys``; J&F = (J + F) / 2."""
    region = float(np.mean([report.sequences[key]["J"] for key in keys])) if keys else float("nan")
    boundary = float(np.mean([report.sequences[key]["F"] for key in keys])) if keys else float("nan")
    return {"count": len(keys), "J": region, "F": boundary, "JF": (region + boundary) / 2}


def every_shape_baseline(data: Path, meta: dict, keys: list[str]) -> dict[str, float]:
    """Mean J and F of the video's ReVOS foreground (the objects its instructions refer to) as the prediction of
    each item of ``keys``."""
    mask_dict = json.loads((data / "mask_dict.json").read_text())
    region, boundary = [], []
    for key in keys:
        video, exp_id = key.rsplit("/", 1)
        info = meta[video]
        shape = (len(info["frames"]), info["height"], info["width"])
        every = sorted({anno for expression in info["expressions"].values() for anno in expression["anno_id"]})
        j, f = jf_mean(
            union_of(mask_dict, every, shape), union_of(mask_dict, info["expressions"][exp_id]["anno_id"], shape)
        )
        region.append(j)
        boundary.append(f)
    j_mean, f_mean = float(np.mean(region)), float(np.mean(boundary))
    return {"count": len(keys), "J": j_mean, "F": f_mean, "JF": (j_mean + f_mean) / 2}


def union_of(mask_dict: dict, anno_ids: list, shape: tuple[int, int, int]) -> np.ndarray:
    """``[T, H, W]`` bool union of the ReVOS annotations ``anno_ids`` (``mask_dict``: per-frame RLE or None)."""
    from videolisa.metrics.io import decode_rle

    masks = np.zeros(shape, bool)
    for anno_id in anno_ids:
        for frame, rle in enumerate(mask_dict[str(anno_id)]):
            if rle:
                masks[frame] |= decode_rle(rle).astype(bool)
    return masks


def jf_mean(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean J and F over the frames of ``[T, H, W]`` masks."""
    from videolisa.metrics.frame import compute_jf

    region, boundary = compute_jf(prediction, truth)
    return float(region.mean()), float(boundary.mean())


def matched_object_scores(tracks: list[np.ndarray], objects: list[np.ndarray]) -> list[tuple[float, float]]:
    """(J, F) of each named object against a track of its own: pairs taken greedily by IoU over the whole clip,
    an object left without a track scored against an empty mask."""
    empty = np.zeros_like(objects[0])
    iou = np.array([[(t & o).sum() / max(1, (t | o).sum()) for t in tracks] for o in objects]).reshape(len(objects), -1)
    chosen: dict[int, int] = {}
    for flat in np.argsort(-iou, axis=None):
        obj, track = divmod(int(flat), max(1, len(tracks)))
        if tracks and obj not in chosen and track not in chosen.values():
            chosen[obj] = track
    return [jf_mean(tracks[chosen[k]] if k in chosen else empty, objects[k]) for k in range(len(objects))]


def generation_scores(model: str, device: str, data: Path, meta: dict, multi: list[str], absent: list[str]) -> dict:
    """Generation mode on the multi-object and no-target instructions (see the module docstring)."""
    from collections import Counter

    from tqdm import tqdm

    from videolisa.benchmarks import get_benchmark
    from videolisa.predictor import VideoLisaPredictor

    predictor = VideoLisaPredictor.from_pretrained(model, device=device)
    mask_dict = json.loads((data / "mask_dict.json").read_text())
    # The query the benchmark asks (the training templates: "Please segment the {phrase} in this image.").
    query_of = {item.key: item.query for item in get_benchmark("revos", data).items()}
    answers: dict[str, Counter] = {"multi": Counter(), "absent": Counter()}
    counts, union_jf, object_jf, absent_empty = [], [], [], []
    for key in tqdm(multi + absent, desc="generation", unit="instruction"):
        video, exp_id = key.rsplit("/", 1)
        info, expression = meta[video], meta[video]["expressions"][exp_id]
        result = predictor.segment(str(data / "JPEGImages" / video), query_of[key], answer="generate")
        kind = "multi" if key in multi else "absent"
        answers[kind][result.answer] += 1
        if kind == "absent":
            absent_empty.append(not result.present_frames)
            continue
        shape = (len(info["frames"]), info["height"], info["width"])
        objects = [union_of(mask_dict, [anno], shape) for anno in expression["anno_id"]]
        counts.append((len(result.tracks), len(objects)))
        union_jf.append(jf_mean(result.masks, union_of(mask_dict, expression["anno_id"], shape)))
        object_jf += matched_object_scores([track.masks for track in result.tracks], objects)

    def mean_jf(pairs: list[tuple[float, float]]) -> dict[str, float]:
        region, boundary = np.mean(pairs, axis=0).tolist()
        return {"J": region, "F": boundary, "JF": (region + boundary) / 2}

    tracks, objects = np.array(counts).T
    return {
        "multi": {
            "count": len(counts),
            "tracks_per_instruction": float(tracks.mean()),
            "objects_per_instruction": float(objects.mean()),
            "share_with_one_track_per_object": float((tracks == objects).mean()),
            "union": mean_jf(union_jf),
            "per_object": {"count": len(object_jf), **mean_jf(object_jf)},
            "most_common_answers": answers["multi"].most_common(3),
        },
        "absent": {
            "count": len(absent_empty),
            "no_present_frame_share": float(np.mean(absent_empty)),
            "most_common_answers": answers["absent"].most_common(3),
        },
    }


def phrase_form(text: str) -> str | None:
    """The form of an appearance phrase, e.g. "small green circle" -> "size colour shape", "green shape" ->
    "colour 'shape'"; None for other instructions."""
    from videolisa.synthetic import COLORS, OBJECT_SIZES, SHAPES

    *adjectives, noun = text.split()
    if noun not in (*SHAPES, "shape") or not set(adjectives) <= set(COLORS) | set(OBJECT_SIZES):
        return None
    words = ["colour" if word in COLORS else "size" for word in adjectives]
    return " ".join([*words, "shape" if noun in SHAPES else "'shape'"])


def empty_by_form(empty: dict[str, bool], expressions: dict[str, dict]) -> dict[str, dict[str, list[int]]]:
    """Per appearance-phrase form, ``[count, empty]`` of the instructions whose referent is there and of the
    absent ones (``empty``: per item, whether its masks are all background): whether "not there" follows the video
    or the wording."""
    table: dict[str, dict[str, list[int]]] = {}
    for key, expression in expressions.items():
        form = phrase_form(expression["exp"])
        if form is None:
            continue
        side = "absent" if expression["kind"] == "absent" else "present"
        row = table.setdefault(form, {"present": [0, 0], "absent": [0, 0]})
        row[side][0] += 1
        row[side][1] += int(empty[key])
    return dict(sorted(table.items()))


def empty_items(pred_root: Path, keys: list[str]) -> dict[str, bool]:
    """Per item, whether its prediction PNGs are all background."""
    from videolisa.metrics.io import read_mask

    return {key: all(not read_mask(path).any() for path in sorted((pred_root / key).glob("*.png"))) for key in keys}


def empty_share(empty: dict[str, bool], keys: list[str]) -> float:
    """Share of the items ``keys`` whose masks are all background."""
    return float(np.mean([empty[key] for key in keys])) if keys else float("nan")


@reports_errors
def main(argv: list[str] | None = None) -> int:
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

    args = parse_args(argv)
    data = args.work / "ReVOS"
    config = SyntheticConfig(
        min_frames=16, max_frames=32, min_objects=2, max_objects=3, extra_kinds=("multi", "absent")
    )
    write_synthetic_dataset(data, layout="revos", num_videos=args.videos, seed=args.seed, config=config, overwrite=True)
    meta = json.loads((data / "meta_expressions_valid_.json").read_text())["videos"]
    expressions = {
        f"{video}/{exp_id}": expression
        for video, info in meta.items()
        for exp_id, expression in info["expressions"].items()
    }
    multi = [key for key, expression in expressions.items() if expression["kind"] == "multi"]
    absent = [key for key, expression in expressions.items() if expression["kind"] == "absent"]
    present = [key for key in expressions if key not in absent]
    # "all the red shapes" etc.: the instruction names a strict or full subset picked by an attribute or motion.
    some = [key for key in multi if expressions[key]["exp"] != "all the shapes"]
    result = {
        "model": args.model,
        "command": "python " + " ".join(shlex.quote(part) for part in [sys.argv[0], *(argv or sys.argv[1:])]),
        "data": f"videolisa synth --layout revos --videos {args.videos} --seed {args.seed} --min-frames 16 "
        "--max-frames 32 --min-objects 2 --max-objects 3 --extra-kinds multi,absent",
        "modes": {
            mode: evaluate_mode(args, data, mode, multi, absent, some, present, expressions)
            for mode in ("teacher_forced", "generated")
        },
        # What the video's whole ReVOS foreground (every object its instructions refer to) would score on them:
        # a model that segments every shape whatever the words.
        "every_shape_baseline_on_multi_except_all_the_shapes": every_shape_baseline(data, meta, some),
        "generation": generation_scores(args.model, args.device, data, meta, multi, absent),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "synthetic_extra_kinds.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "synthetic_extra_kinds.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def evaluate_mode(
    args: argparse.Namespace,
    data: Path,
    mode: str,
    multi: list[str],
    absent: list[str],
    some: list[str],
    present: list[str],
    expressions: dict[str, dict],
) -> dict:
    """``videolisa eval --benchmark revos`` (``--generate`` for ``generated``) and its scores."""
    from videolisa.evaluation import EvaluationConfig, run_evaluation
    from videolisa.generation import GenerationConfig
    from videolisa.metrics import score_benchmark

    out = args.work / mode
    # A rerun with the same data and model resumes (the evaluation's fingerprint guards against other settings).
    generation = GenerationConfig() if mode == "generated" else None
    settings = EvaluationConfig(
        benchmark="revos", data_root=data, model=args.model, out=out, device=args.device, generation=generation
    )
    run_evaluation(settings)
    report = score_benchmark("revos", data, out / "predictions", workers=1)
    empty = empty_items(out / "predictions", list(expressions))  # each item's PNGs read once
    return {
        "revos_official_percent": report.details["official"],
        "revos_types": report.details["types"],
        "multi": mean_scores(report, multi),
        "multi_except_all_the_shapes": mean_scores(report, some),
        "absent": {"count": len(absent), "empty_share": empty_share(empty, absent)},
        # The other side of "not there": instructions whose referent is in the clip but get no mask at all.
        "present": {"count": len(present), "empty_share": empty_share(empty, present)},
        "empty_by_phrase_form": empty_by_form(empty, expressions),
    }


def markdown(result: dict) -> str:
    """The result as short markdown tables."""
    gen_multi, gen_absent = result["generation"]["multi"], result["generation"]["absent"]
    baseline = result["every_shape_baseline_on_multi_except_all_the_shapes"]
    lines = [
        f"# Several objects and absent targets — {result['model']}",
        "",
        f"Data: `{result['data']}`; command: `{result['command']}`.",
        "",
        "| mode | ReVOS type | count | J&F | J | F | A | R |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, scores in result["modes"].items():
        for name, row in scores["revos_types"].items():
            lines.append(
                f"| {mode} | {name} | {row['count']} | {100 * row['JF']:.1f} | {100 * row['J']:.1f} | "
                f"{100 * row['F']:.1f} | {100 * row['A']:.1f} | {100 * row['R']:.1f} |"
            )
        overall = scores["revos_official_percent"]["overall"]
        lines.append(
            f"| {mode} | overall (official: referring + reasoning) | | {overall['JF']:.1f} | {overall['J']:.1f} | "
            f"{overall['F']:.1f} | {overall['A']:.1f} | {overall['R']:.1f} |"
        )
    lines.append("")
    for mode, scores in result["modes"].items():
        multi, some = scores["multi"], scores["multi_except_all_the_shapes"]
        lines += [
            f"- {mode}, multi-object instructions ({multi['count']}): J&F {100 * multi['JF']:.1f} (J "
            f'{100 * multi["J"]:.1f} / F {100 * multi["F"]:.1f}); without "all the shapes" ({some["count"]}): J&F '
            f"{100 * some['JF']:.1f}, where segmenting every shape (the video's foreground) would score "
            f"{100 * baseline['JF']:.1f}",
            f"- {mode}, no-target instructions ({scores['absent']['count']}): "
            f"{100 * scores['absent']['empty_share']:.1f}% come back empty on every frame; instructions whose "
            f"referent is there ({scores['present']['count']}): {100 * scores['present']['empty_share']:.1f}% "
            "come back empty",
        ]
    lines += [
        "",
        'Appearance phrases that come back empty on every frame, by form: does "not there" follow the clip or the '
        "wording?",
        "",
        "| mode | form | referent there | of them empty | referent absent | of them empty |",
        "|---|---|---|---|---|---|",
    ]
    for mode, scores in result["modes"].items():
        for form, row in scores["empty_by_phrase_form"].items():
            (there, there_empty), (absent, absent_empty) = row["present"], row["absent"]
            lines.append(f"| {mode} | {form} | {there} | {there_empty} | {absent} | {absent_empty} |")
    lines += [
        "",
        'Tracks in generation mode (`answer="generate"`, greedy, default presence threshold):',
        "",
        f"- multi-object ({gen_multi['count']}): {gen_multi['tracks_per_instruction']:.2f} tracks per instruction "
        f"for {gen_multi['objects_per_instruction']:.2f} named objects, one track per object in "
        f"{100 * gen_multi['share_with_one_track_per_object']:.1f}%; J&F of the tracks' union "
        f"{100 * gen_multi['union']['JF']:.1f}, of each object against its best-matching track "
        f"{100 * gen_multi['per_object']['JF']:.1f} ({gen_multi['per_object']['count']} objects)",
        f"- no-target ({gen_absent['count']}): {100 * gen_absent['no_present_frame_share']:.1f}% without a present "
        "frame",
        "",
        "Most common answers:",
        "",
        *(
            f"- {kind}: {count} x `{answer}`"
            for kind in ("multi", "absent")
            for answer, count in result["generation"][kind]["most_common_answers"]
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
