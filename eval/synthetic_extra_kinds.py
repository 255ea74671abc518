"""How a model handles instructions that name several objects or none, on a held-out synthetic ReVOS split.

Writes ``videolisa synth --layout revos`` data (multi-object and no-target instructions included), evaluates
the model with ``videolisa eval --benchmark revos`` and reports: the official ReVOS numbers (J, F, J&F, A, R per
type), J&F on the multi-object instructions, and the share of no-target instructions whose masks come back
empty on every frame. Results go to ``<results>/synthetic_extra_kinds.{json,md}``.

    python eval/synthetic_extra_kinds.py --model builtin:synthetic --work /tmp/extra_kinds --videos 40
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from videolisa.cli import reports_errors


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


def mean_scores(report, keys: list[str]) -> dict[str, float]:
    """Mean J and F over the items ``keys``; J&F = (J + F) / 2."""
    region = float(np.mean([report.sequences[key]["J"] for key in keys])) if keys else float("nan")
    boundary = float(np.mean([report.sequences[key]["F"] for key in keys])) if keys else float("nan")
    return {"count": len(keys), "J": region, "F": boundary, "JF": (region + boundary) / 2}


def every_shape_baseline(data: Path, meta: dict, keys: list[str]) -> dict[str, float]:
    """Mean J and F of the video's ReVOS foreground (the objects its instructions refer to) as the prediction of
    each item of ``keys``."""
    from videolisa.metrics.frame import compute_jf
    from videolisa.metrics.io import decode_rle

    mask_dict = json.loads((data / "mask_dict.json").read_text())
    region, boundary = [], []
    for key in keys:
        video, exp_id = key.rsplit("/", 1)
        info = meta[video]
        shape = (len(info["frames"]), info["height"], info["width"])

        def union(anno_ids: set | list, shape: tuple[int, int, int] = shape) -> np.ndarray:
            masks = np.zeros(shape, bool)
            for anno_id in anno_ids:
                for frame, rle in enumerate(mask_dict[str(anno_id)]):
                    masks[frame] |= decode_rle(rle).astype(bool) if rle else False
            return masks

        every = {anno for expression in info["expressions"].values() for anno in expression["anno_id"]}
        j, f = compute_jf(union(every), union(info["expressions"][exp_id]["anno_id"]))
        region.append(j.mean())
        boundary.append(f.mean())
    j_mean, f_mean = float(np.mean(region)), float(np.mean(boundary))
    return {"count": len(keys), "J": j_mean, "F": f_mean, "JF": (j_mean + f_mean) / 2}


def empty_share(pred_root: Path, keys: list[str]) -> float:
    """Share of the items whose prediction PNGs are all background."""
    from videolisa.metrics.io import read_mask

    empty = [all(not read_mask(path).any() for path in sorted((pred_root / key).glob("*.png"))) for key in keys]
    return float(np.mean(empty)) if empty else float("nan")


@reports_errors
def main(argv: list[str] | None = None) -> int:
    from videolisa.evaluation import EvaluationConfig, run_evaluation
    from videolisa.metrics import score_benchmark
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

    args = parse_args(argv)
    data = args.work / "ReVOS"
    config = SyntheticConfig(
        min_frames=16, max_frames=32, min_objects=2, max_objects=3, extra_kinds=("multi", "absent")
    )
    write_synthetic_dataset(data, layout="revos", num_videos=args.videos, seed=args.seed, config=config, overwrite=True)
    out = args.work / "eval"
    # A rerun with the same data and model resumes (the evaluation's fingerprint guards against other settings).
    run_evaluation(EvaluationConfig(benchmark="revos", data_root=data, model=args.model, out=out, device=args.device))
    report = score_benchmark("revos", data, out / "predictions", workers=1)
    meta = json.loads((data / "meta_expressions_valid_.json").read_text())["videos"]
    kind_of = {
        f"{video}/{exp_id}": expression["kind"]
        for video, info in meta.items()
        for exp_id, expression in info["expressions"].items()
    }
    text_of = {
        f"{video}/{exp_id}": expression["exp"]
        for video, info in meta.items()
        for exp_id, expression in info["expressions"].items()
    }
    multi = [key for key, kind in kind_of.items() if kind == "multi"]
    absent = [key for key, kind in kind_of.items() if kind == "absent"]
    some = [key for key in multi if text_of[key] != "all the shapes"]
    result = {
        "model": args.model,
        "command": "python " + " ".join(shlex.quote(part) for part in [sys.argv[0], *(argv or sys.argv[1:])]),
        "data": f"videolisa synth --layout revos --videos {args.videos} --seed {args.seed} --min-frames 16 "
        "--max-frames 32 --min-objects 2 --max-objects 3 --extra-kinds multi,absent",
        "revos_official_percent": report.details["official"],
        "revos_types": report.details["types"],
        "multi": mean_scores(report, multi),
        # "all the red shapes" etc.: the instruction names a strict or full subset picked by an attribute or motion.
        "multi_except_all_the_shapes": mean_scores(report, some),
        # What the video's whole ReVOS foreground (every object its instructions refer to) would score on those:
        # a model that segments every shape whatever the words.
        "every_shape_baseline_on_them": every_shape_baseline(data, meta, some),
        "absent": {"count": len(absent), "empty_share": empty_share(out / "predictions", absent)},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "synthetic_extra_kinds.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "synthetic_extra_kinds.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """The result as a short markdown table."""
    types = result["revos_types"]
    lines = [
        f"# Several objects and absent targets — {result['model']}",
        "",
        f"Data: `{result['data']}`; command: `{result['command']}`.",
        "",
        "| ReVOS type | count | J&F | J | F | A | R |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in types.items():
        lines.append(
            f"| {name} | {row['count']} | {100 * row['JF']:.1f} | {100 * row['J']:.1f} | "
            f"{100 * row['F']:.1f} | {100 * row['A']:.1f} | {100 * row['R']:.1f} |"
        )
    overall = result["revos_official_percent"]["overall"]
    lines += [
        f"| overall (official: referring + reasoning) | | {overall['JF']:.1f} | {overall['J']:.1f} | "
        f"{overall['F']:.1f} | {overall['A']:.1f} | {overall['R']:.1f} |",
        "",
        f"- multi-object instructions ({result['multi']['count']}): J&F {100 * result['multi']['JF']:.1f} "
        f'(J {100 * result["multi"]["J"]:.1f} / F {100 * result["multi"]["F"]:.1f}); without "all the shapes" '
        f"({result['multi_except_all_the_shapes']['count']}): J&F "
        f"{100 * result['multi_except_all_the_shapes']['JF']:.1f}, where segmenting every shape (the video's "
        f"foreground) would score {100 * result['every_shape_baseline_on_them']['JF']:.1f}",
        f"- no-target instructions ({result['absent']['count']}): {100 * result['absent']['empty_share']:.1f}% "
        "come back empty on every frame",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
