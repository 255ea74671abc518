"""The built-in model's whole recipe in one command: data, three training stages, export (issue 19).

    python train/builtin_recipe.py --work runs/builtin --out videolisa/builtin/synthetic
    python train/builtin_recipe.py --work runs/builtin --out videolisa/builtin/synthetic --resume   # continue

``builtin:synthetic`` is this command's output. What it runs, in ``--work``:

1. data: ``videolisa synth --layout custom --extra-kinds multi,absent`` (600 clips, seed 1: masks with naming
   answers, one ``[SEG]`` and mask per object for instructions that name several, "There is none in the
   video." for those that name none, and the same instructions as text-only questions), the held-out clips
   (40, seed 2, never trained on) in the mevis layout (stage 3's validation) and the custom layout (stage 1's
   held-out IoUs), and the tokenizer (BPE over the training texts: one token per word);
2. stage 1, a promptable segmenter (``train/configs/builtin_stage1_sam.yaml``: the preset's SAM with points,
   boxes and semantic prompts) and stage 2, a video-language model (``builtin_stage2_language.yaml``: the
   CLIP-style tower, projector and LLM with the language-model loss on the questions), side by side, one CPU
   thread each (they share nothing: stage 1 writes a SAM, stage 2 a model whose SAM is unused);
3. stage 3, the VideoLISA recipe on top (``builtin_stage3_segmentation.yaml``: stage 2's model with stage 1's
   SAM, image and prompt encoders frozen), the export of its best checkpoint (by held-out J&F) to
   ``<work>/model`` and a copy of its weights, config and tokenizer into ``--out``.

Each stage leaves ``<stage>.done`` in ``--work``; with ``--resume`` finished stages are kept and an interrupted
one continues from its last checkpoint (without it an existing ``--work`` is refused). ``recipe.json`` records
every command and its wall time. Stage-specific settings are ``key=value`` overrides after ``--stage1``,
``--stage2`` or ``--stage3`` (e.g. ``--stage3 train.total_steps=100``), for quick trials.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from videolisa.cli import reports_errors
from videolisa.errors import InvalidInputError, VideoLisaError
from videolisa.synthetic import CUSTOM_FILE, QUESTIONS_FILE

CONFIGS = Path(__file__).resolve().parent / "configs"
STAGE_CONFIGS = {
    "stage1": CONFIGS / "builtin_stage1_sam.yaml",
    "stage2": CONFIGS / "builtin_stage2_language.yaml",
    "stage3": CONFIGS / "builtin_stage3_segmentation.yaml",
}
# Upper bound of the built-in tokenizer's vocabulary; the synthetic corpus runs out of merges well before it.
TOKENIZER_VOCAB_SIZE = 1024
# The generator settings of the training and held-out clips (the built-in model's whole world).
SCENE_ARGS = ["--min-frames", "16", "--max-frames", "32", "--min-objects", "2", "--max-objects", "3"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data, the runs and recipe.json")
    parser.add_argument("--out", type=Path, required=True, help="where the exported model goes (replaced)")
    parser.add_argument("--resume", action="store_true", help="keep finished stages, continue an interrupted one")
    parser.add_argument("--videos", type=int, default=600, help="training clips (default: 600)")
    for stage in STAGE_CONFIGS:
        parser.add_argument(f"--{stage}", nargs="*", default=[], metavar="key=value", help=f"{stage} overrides")
    return parser.parse_args(argv)


def free_port() -> int:
    """A TCP port free right now, for a DeepSpeed launch that must not collide with another job's (29500)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def script(name: str) -> str:
    """A console script installed next to this interpreter (no activated environment needed)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise VideoLisaError(f"{path} not found: install the package with its training extra (pip install -e .[all])")
    return str(path)


class Recipe:
    """Runs the stages as subprocesses and records what ran."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.work.expanduser().resolve()
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def run(self, name: str, command: list[str]) -> None:
        """Run one step (skipped when ``<name>.done`` exists), its output in ``<name>.log``."""
        done = self.work / f"{name}.done"
        if done.exists():
            print(f"{name}: done earlier, kept", flush=True)
            return
        print(f"{name}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        with open(self.work / f"{name}.log", "a", encoding="utf-8") as log:
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=self.env).returncode
        if status != 0:
            raise VideoLisaError(f"{name} failed (exit {status}); see {self.work / f'{name}.log'}")
        seconds = round(time.perf_counter() - start, 1)
        done.write_text(json.dumps({"command": command, "seconds": seconds}) + "\n", encoding="utf-8")
        print(f"{name}: finished in {seconds / 60:.1f} min", flush=True)

    def train(self, stage: str, overrides: list[str]) -> list[str]:
        """The training command of a stage: a new run, or ``--resume`` of its interrupted run."""
        run_dir = self.work / stage
        if (run_dir / "train_config.yaml").exists() and any((run_dir / "checkpoints").glob("step_*")):
            command = ["--resume", str(run_dir)]
        else:
            command = ["--config", str(STAGE_CONFIGS[stage]), f"train.output_dir={run_dir}", *overrides]
        train_py = str(Path(__file__).resolve().parent / "train.py")
        if stage == "stage1":  # not a DeepSpeed run (SAM only, its own loop)
            return [sys.executable, train_py, *command]
        return [script("deepspeed"), "--num_gpus", "1", "--master_port", str(free_port()), train_py, *command]

    def export(self, stage: str, out: Path, tag: str) -> list[str]:
        train_dir = Path(__file__).resolve().parent
        return [sys.executable, str(train_dir / "export.py"), str(self.work / stage), str(out), "--tag", tag]

    def main(self) -> None:
        data = self.work / "data"
        videolisa = script("videolisa")
        self.run(
            "data_train",
            [videolisa, "synth", "--out", str(data / "train"), "--layout", "custom", "--videos", str(self.args.videos)]
            + ["--seed", "1", "--overwrite", *SCENE_ARGS, "--extra-kinds", "multi,absent"],
        )
        self.run(
            "data_heldout",
            [videolisa, "synth", "--out", str(data / "heldout"), "--layout", "mevis", "--split", "valid_u"]
            + ["--videos", "40", "--seed", "2", "--overwrite", *SCENE_ARGS],
        )
        self.run(
            "data_heldout_custom",
            [videolisa, "synth", "--out", str(data / "heldout_custom"), "--layout", "custom"]
            + ["--videos", "40", "--seed", "2", "--overwrite", *SCENE_ARGS],
        )
        tokenizer = self.work / "tokenizer"
        if not (self.work / "tokenizer.done").exists():
            write_corpus_tokenizer([data / "train" / CUSTOM_FILE, data / "train" / QUESTIONS_FILE], tokenizer)
            (self.work / "tokenizer.done").write_text(json.dumps({"command": "write_corpus_tokenizer"}) + "\n")
        stage1 = [
            f"data.custom_files=[{data / 'train' / CUSTOM_FILE}]",
            f"heldout.custom_file={data / 'heldout_custom' / CUSTOM_FILE}",
            *self.args.stage1,
        ]
        stage2 = [
            f"data.custom_files=[{data / 'train' / QUESTIONS_FILE}]",
            f"model.tokenizer={tokenizer}",
            *self.args.stage2,
        ]
        stage2_model = self.work / "stage2_model"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(self.run, "stage1", self.train("stage1", stage1))
            second = pool.submit(self.run_stage2, stage2, stage2_model)
            first.result(), second.result()
        stage3 = [
            f"model.path={stage2_model}",
            f"model.sam_checkpoint={self.work / 'stage1' / 'sam.safetensors'}",
            f"data.custom_files=[{data / 'train' / CUSTOM_FILE}]",
            f"validation.root={data / 'heldout'}",
            *self.args.stage3,
        ]
        self.run("stage3", self.train("stage3", stage3))
        self.run("export", self.export("stage3", self.work / "model", "best") + ["--dtype", "fp32"])
        install_model(self.work / "model", self.args.out)

    def run_stage2(self, overrides: list[str], model_dir: Path) -> None:
        self.run("stage2", self.train("stage2", overrides))
        self.run("stage2_export", self.export("stage2", model_dir, "latest") + ["--dtype", "fp32"])


def write_corpus_tokenizer(jsonl_files: list[Path], out: Path) -> None:
    """The built-in model's tokenizer: byte-level BPE trained on the templates and every instruction and answer
    of the training data, so that each word of the synthetic world is one token (the tiny test tokenizer splits
    "purple" or "small" into pieces, which a from-scratch LLM must first learn to put together)."""
    from videolisa.constants import DEFAULT_SEG_TOKEN
    from videolisa.tokenization import template_corpus, train_bpe_tokenizer

    texts = template_corpus()
    for path in jsonl_files:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts += [record["instruction"], record["answer"].replace(DEFAULT_SEG_TOKEN, "")]
    train_bpe_tokenizer(texts, TOKENIZER_VOCAB_SIZE).save_pretrained(out)


def install_model(model_dir: Path, out: Path) -> None:
    """Copy the exported model's weights, config and tokenizer into ``out`` (each file atomically), leaving the
    files ``out`` has of its own (the built-in model's MODEL_CARD.md) and the export's generic README.md."""
    from videolisa.atomic import write_atomically

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.name != "README.md":
            write_atomically(out / path.name, path.read_bytes())


@reports_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = args.work.expanduser().resolve()
    if work.exists() and any(work.iterdir()) and not args.resume:
        raise InvalidInputError(f"--work {work} is not empty: continue it with --resume or choose another folder")
    work.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(args)
    start = time.perf_counter()
    recipe.main()
    # Every step's command and wall time, also those an earlier (interrupted) invocation ran.
    steps = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(work.glob("*.done"))}
    summary = {"steps": steps, "seconds_this_invocation": round(time.perf_counter() - start, 1), "out": str(args.out)}
    (work / "recipe.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}; recipe.json in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
