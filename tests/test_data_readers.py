"""Every training dataset reader on a tiny dataset written here in its official layout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videolisa.data.base import DataRoot
from videolisa.data.custom import CustomDataset, read_custom_file
from videolisa.data.mixture import DataConfig, build_dataset_groups
from videolisa.data.reasonseg import ReasonSegDataset
from videolisa.data.referring import ReferSegDataset
from videolisa.data.sample import NoTargetError, SampleConfig
from videolisa.data.semantic import ADE20KDataset, CocoStuffDataset, PacoLvisDataset, PascalPartDataset
from videolisa.data.video import MeViSDataset, ReferFormerDataset, YouTubeVOSDataset
from videolisa.data.vqa import VqaDataset
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.processing.conversation import ANSWER_TEMPLATES, LONG_QUESTION_TEMPLATES, SHORT_QUESTION_TEMPLATES

SETTINGS = SampleConfig(num_frames_sparse=6, num_frames_dense=2, clip_image_size=28, sam_image_size=64)
HEIGHT, WIDTH = 24, 32


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (HEIGHT, WIDTH)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_labels(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([value for index in range(256) for value in (index, 255 - index, index // 2)])
    image.save(path)


def short_phrase(question: str) -> str | None:
    """The phrase inside a SHORT question, or None if the question is not one."""
    for template in SHORT_QUESTION_TEMPLATES:
        prefix, suffix = template.split("{class_name}")
        if question.startswith(prefix) and question.endswith(suffix):
            return question[len(prefix) : len(question) - len(suffix)]
    return None


def check_sample_shapes(sample, num_masks: int, frame_hw=(HEIGHT, WIDTH)) -> None:
    assert sample.pixel_values_clip.shape == (SETTINGS.num_frames_sparse, 3, 28, 28)
    assert sample.pixel_values_sam.shape == (SETTINGS.num_frames_dense, 3, 64, 64)
    assert tuple(sample.target_masks.shape) == (num_masks, SETTINGS.num_frames_dense, *frame_hw)
    assert sample.original_hw == frame_hw
    assert sample.resized_hw == (48, 64)  # 24x32 -> long side 64
    assert len(sample.dense_positions) == SETTINGS.num_frames_dense
    assert sample.conversation[0][0] == "user" and sample.conversation[0][1].startswith("<image>\n")


def check_seg_answer(answer: str) -> None:
    assert answer in ANSWER_TEMPLATES


# ============================================================================================ semantic
def test_ade20k_shifts_labels_ignores_other_and_names_classes(tmp_path):
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    labels[2:10, 3:12] = 5  # class index 4
    labels[12:20, 15:30] = 150  # class index 149
    write_image(tmp_path / "images/training/ADE_1.jpg")
    write_labels(tmp_path / "annotations/training/ADE_1.png", labels)
    write_image(tmp_path / "images/training/ADE_2.jpg")
    write_labels(tmp_path / "annotations/training/ADE_2.png", np.zeros((HEIGHT, WIDTH)))
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i}\t0.1\t1\t1\tname{i}, synonym" for i in range(1, 151)]
    rows[5] = "5\t0.1\t1\t1\tChest Of Drawers, chest"
    (tmp_path / "objectInfo150.txt").write_text("\n".join(rows))
    dataset = ADE20KDataset(SETTINGS, DataRoot("data.roots.ade20k", tmp_path, "ADE"))
    assert len(dataset) == 2
    seen = set()
    for seed in range(12):
        sample = dataset.build_sample(0, rng(seed))
        check_sample_shapes(sample, 1)
        phrase = short_phrase(sample.conversation[0][1])
        check_seg_answer(sample.conversation[1][1])
        expected_value = {"chest of drawers": 5, "name150": 150}[phrase]
        np.testing.assert_array_equal(sample.target_masks[0, 0].numpy(), labels == expected_value)
        np.testing.assert_array_equal(sample.target_masks[0, 1].numpy(), labels == expected_value)
        seen.add(phrase)
    assert seen == {"chest of drawers", "name150"}
    with pytest.raises(NoTargetError):
        dataset.build_sample(1, rng())


def test_ade20k_missing_class_file_names_the_key(tmp_path):
    write_image(tmp_path / "images/training/ADE_1.jpg")
    (tmp_path / "annotations/training").mkdir(parents=True)
    with pytest.raises(MissingFilesError, match="data.roots.ade20k.*data.class_names.ade20k"):
        ADE20KDataset(SETTINGS, DataRoot("data.roots.ade20k", tmp_path, "ADE"))


def test_cocostuff_ignores_hyphenated_classes(tmp_path):
    coco, stuff = tmp_path / "coco", tmp_path / "cocostuff"
    labels = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    labels[:10] = 0  # person
    labels[10:] = 1  # wall-brick: ignored
    write_labels(stuff / "train2017/000000000001.png", labels)
    write_image(coco / "train2017/000000000001.jpg")
    only_ignored = np.where(labels == 0, 255, labels)
    write_labels(stuff / "train2017/000000000002.png", only_ignored)
    write_image(coco / "train2017/000000000002.jpg")
    (stuff / "labels.txt").write_text("0: unlabeled\n1: person\n2: wall-brick\n")
    dataset = CocoStuffDataset(
        SETTINGS, DataRoot("data.roots.cocostuff", stuff, "x"), DataRoot("data.roots.coco", coco, "x")
    )
    for seed in range(5):
        sample = dataset.build_sample(0, rng(seed))
        assert short_phrase(sample.conversation[0][1]) == "person"
        np.testing.assert_array_equal(sample.target_masks[0, 0].numpy(), labels == 0)
    with pytest.raises(NoTargetError):
        dataset.build_sample(1, rng())


def write_coco_json(path: Path, images: list[dict], categories: list[dict], annotations: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))


def polygon_annotation(ann_id: int, image_id: int, category_id: int, box: tuple[int, int, int, int]) -> dict:
    x0, y0, x1, y1 = box
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "area": 1.0,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
    }


def expected_polygon_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    from pycocotools import mask as coco_mask

    x0, y0, x1, y1 = box
    return coco_mask.decode(coco_mask.frPyObjects([[x0, y0, x1, y0, x1, y1, x0, y1]], HEIGHT, WIDTH)).any(axis=2)


def test_pascal_part_renders_parts_both_ways(tmp_path):
    write_image(tmp_path / "VOCdevkit/VOC2010/JPEGImages/2008_000001.jpg")
    box = (4, 3, 20, 15)
    write_coco_json(
        tmp_path / "train.json",
        [
            {"id": 7, "file_name": "2008_000001.jpg", "height": HEIGHT, "width": WIDTH},
            {"id": 8, "file_name": "unannotated.jpg", "height": HEIGHT, "width": WIDTH},
        ],
        [{"id": 1, "name": "dog:leg"}],
        [polygon_annotation(1, 7, 1, box)],
    )
    dataset = PascalPartDataset(SETTINGS, DataRoot("data.roots.pascal_part", tmp_path, "x"))
    assert len(dataset) == 1  # the unannotated image is not an item
    phrases = set()
    for seed in range(10):
        sample = dataset.build_sample(0, rng(seed))
        check_sample_shapes(sample, 1)
        phrases.add(short_phrase(sample.conversation[0][1]))
        np.testing.assert_array_equal(sample.target_masks[0, 1].numpy(), expected_polygon_mask(box))
    assert phrases == {"dog leg", "the leg of the dog"}


def test_paco_lvis_strips_suffixes_and_reads_coco_images(tmp_path):
    coco, paco = tmp_path / "coco", tmp_path / "paco"
    write_image(coco / "train2017/000000000002.jpg")
    write_coco_json(
        paco / "annotations/paco_lvis_v1_train.json",
        [{"id": 2, "file_name": "train2017/000000000002.jpg", "height": HEIGHT, "width": WIDTH}],
        [{"id": 1, "name": "bottle_(drink)"}, {"id": 2, "name": "bottle_(drink):cap_(bottle)"}],
        [polygon_annotation(1, 2, 1, (2, 2, 12, 20)), polygon_annotation(2, 2, 2, (4, 2, 8, 5))],
    )
    dataset = PacoLvisDataset(
        SETTINGS, DataRoot("data.roots.paco_lvis", paco, "x"), DataRoot("data.roots.coco", coco, "x")
    )
    phrases = {short_phrase(dataset.build_sample(0, rng(seed)).conversation[0][1]) for seed in range(20)}
    assert phrases == {"bottle", "bottle cap", "the cap of the bottle"}


# ============================================================================================ referring
def test_refer_seg_uses_train_refs_and_lowercases(tmp_path):
    images = tmp_path / "images/mscoco/images/train2014"
    write_image(images / "COCO_train2014_000000000001.jpg")
    write_image(images / "COCO_train2014_000000000002.jpg", seed=1)
    box = (3, 4, 25, 18)
    write_coco_json(
        tmp_path / "refcoco/instances.json",
        [
            {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": HEIGHT, "width": WIDTH},
            {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "height": HEIGHT, "width": WIDTH},
        ],
        [{"id": 1, "name": "person"}],
        [polygon_annotation(10, 1, 1, box), polygon_annotation(11, 2, 1, (0, 0, 5, 5))],
    )
    refs = [
        {
            "ref_id": 1,
            "ann_id": 10,
            "image_id": 1,
            "split": "train",
            "sentences": [{"sent_id": 1, "sent": "The MAN left"}],
        },
        {"ref_id": 2, "ann_id": 11, "image_id": 2, "split": "val", "sentences": [{"sent_id": 2, "sent": "val only"}]},
    ]
    (tmp_path / "refcoco/refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    dataset = ReferSegDataset(SETTINGS, DataRoot("data.roots.refer_seg", tmp_path, "x"), "refcoco")
    assert len(dataset) == 1
    sample = dataset.build_sample(0, rng())
    check_sample_shapes(sample, 1)
    assert short_phrase(sample.conversation[0][1]) == "the man left"
    np.testing.assert_array_equal(sample.target_masks[0, 0].numpy(), expected_polygon_mask(box))
    with pytest.raises(MissingFilesError, match="data.roots.refer_seg"):
        ReferSegDataset(SETTINGS, DataRoot("data.roots.refer_seg", tmp_path, "x"), "refcocog")


# ============================================================================================ ReasonSeg
def write_reasonseg(root: Path, is_sentence: bool) -> np.ndarray:
    write_image(root / "train/img1.jpg")
    shapes = [
        {"label": "target", "points": [[2, 2], [20, 2], [20, 14], [2, 14]]},
        {"label": "ignore", "points": [[4, 4], [8, 4], [8, 8], [4, 8]]},
        {"label": "flag", "points": [[0, 0], [3, 0], [3, 3]]},
    ]
    texts = ["What holds the books?"] if is_sentence else ["Bookshelf"]
    (root / "train/img1.json").write_text(json.dumps({"text": texts, "is_sentence": is_sentence, "shapes": shapes}))
    (root / "explanatory").mkdir(parents=True, exist_ok=True)
    (root / "explanatory/train.json").write_text(
        json.dumps([{"image": "img1.jpg", "query": texts[0], "outputs": "The shelf holds them."}])
    )
    from videolisa.benchmarks.reasonseg import _parse_shapes, rasterise_labelme_shapes

    labels = rasterise_labelme_shapes(_parse_shapes({"shapes": shapes}, "test"), HEIGHT, WIDTH)
    return labels == 1


def test_reasonseg_sentence_without_explanations(tmp_path):
    target = write_reasonseg(tmp_path, is_sentence=True)
    dataset = ReasonSegDataset(SETTINGS, DataRoot("data.roots.reason_seg", tmp_path, "x"), explanatory=None)
    sample = dataset.build_sample(0, rng())
    check_sample_shapes(sample, 1)
    question = sample.conversation[0][1]
    assert question in [t.format(sent="What holds the books?") for t in LONG_QUESTION_TEMPLATES]
    np.testing.assert_array_equal(sample.target_masks[0, 0].numpy(), target)
    assert not target[5, 5]  # the "ignore" polygon is not a target


def test_reasonseg_explanatory_variants(tmp_path):
    write_reasonseg(tmp_path, is_sentence=False)
    always_text = ReasonSegDataset(SETTINGS, DataRoot("data.roots.reason_seg", tmp_path, "x"), explanatory=1.0)
    sample = always_text.build_sample(0, rng())
    assert sample.conversation == [("user", "<image>\nBookshelf"), ("assistant", "The shelf holds them.")]
    assert sample.target_masks.shape[0] == 0
    never_text = ReasonSegDataset(SETTINGS, DataRoot("data.roots.reason_seg", tmp_path, "x"), explanatory=0.0)
    answers = [never_text.build_sample(0, rng(seed)).conversation for seed in range(16)]
    plain = [c for c in answers if c[1][1] in ANSWER_TEMPLATES]
    explained = [c for c in answers if c[1][1].endswith(" The shelf holds them.")]
    assert plain and explained and len(plain) + len(explained) == 16
    assert all(short_phrase(c[0][1]) == "bookshelf" for c in plain)
    assert all(c[0][1].startswith("<image>\nBookshelf Please output segmentation mask and") for c in explained)


# ============================================================================================ VQA
def test_vqa_moves_the_image_tag_and_has_no_mask(tmp_path):
    write_image(tmp_path / "coco/train2017/000000000009.jpg")
    conversations = [
        {
            "id": "1",
            "image": "000000000009.jpg",
            "conversations": [
                {"from": "human", "value": "What is this?\n<image>"},
                {"from": "gpt", "value": "A cat."},
                {"from": "human", "value": "Color?"},
                {"from": "gpt", "value": "Grey."},
            ],
        }
    ]
    (tmp_path / "llava.json").write_text(json.dumps(conversations))
    dataset = VqaDataset(
        SETTINGS,
        DataRoot("data.roots.vqa", tmp_path / "llava.json", "x"),
        DataRoot("data.roots.coco", tmp_path / "coco", "x"),
    )
    sample = dataset.build_sample(0, rng())
    check_sample_shapes(sample, 0)
    assert sample.conversation == [
        ("user", "<image>\nWhat is this?"),
        ("assistant", "A cat."),
        ("user", "Color?"),
        ("assistant", "Grey."),
    ]
    bad = [{"image": "000000000009.jpg", "conversations": [{"from": "gpt", "value": "<image>hi"}]}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError, match="entry #0"):
        VqaDataset(
            SETTINGS,
            DataRoot("data.roots.vqa", tmp_path / "bad.json", "x"),
            DataRoot("data.roots.coco", tmp_path / "coco", "x"),
        )


# ============================================================================================ videos
def moving_object_labels(num_frames: int) -> list[np.ndarray]:
    """Object 1 (cat) moves right; object 2 (cat) is static; object 3 (dog) appears from frame 2."""
    frames = []
    for t in range(num_frames):
        labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        labels[2:8, t : t + 6] = 1
        labels[14:20, 2:6] = 2
        if t >= 2:
            labels[12:22, 20:28] = 3
        frames.append(labels)
    return frames


def write_video_frames(folder: Path, names: list[str]) -> None:
    for index, name in enumerate(names):
        write_image(folder / f"{name}.jpg", seed=index)


def test_youtube_vos_semantic_level_targets(tmp_path):
    names = [f"{5 * i:05d}" for i in range(8)]
    labels = moving_object_labels(len(names))
    write_video_frames(tmp_path / "train/JPEGImages/vid1", names)
    for name, label in zip(names, labels):
        write_labels(tmp_path / f"train/Annotations/vid1/{name}.png", label, palette=True)
    meta = {
        "videos": {
            "vid1": {
                "objects": {
                    "1": {"category": "cat", "frames": names},
                    "2": {"category": "cat", "frames": names},
                    "3": {"category": "dog", "frames": names[2:]},
                }
            }
        }
    }
    (tmp_path / "train/meta.json").write_text(json.dumps(meta))
    dataset = YouTubeVOSDataset(SETTINGS, DataRoot("data.roots.ytvos", tmp_path, "x"))
    categories = set()
    for seed in range(15):
        sample = dataset.build_sample(0, rng(seed))
        check_sample_shapes(sample, 1)
        category = short_phrase(sample.conversation[0][1])
        categories.add(category)
        first = sample.metadata["frames"][0]
        if first < 2:
            assert category == "cat"  # the dog is not visible in the first sampled frame
        wanted = {"cat": [1, 2], "dog": [3]}[category]
        for row, frame in enumerate(sample.metadata["dense"]):
            np.testing.assert_array_equal(sample.target_masks[0, row].numpy(), np.isin(labels[frame], wanted))
        assert sorted(sample.metadata["frames"]) == sample.metadata["frames"]
        assert [sample.metadata["frames"][p] for p in sample.dense_positions] == sample.metadata["dense"]
    assert categories == {"cat", "dog"}


def write_referformer(root: Path, names: list[str]) -> list[np.ndarray]:
    labels = moving_object_labels(len(names))
    write_video_frames(root / "train/JPEGImages/v1", names)
    for name, label in zip(names, labels):
        write_labels(root / f"train/Annotations/v1/{name}.png", label, palette=True)
    meta = {
        "videos": {
            "v1": {
                "frames": names,
                "expressions": {
                    "0": {"exp": "The  Cat moving RIGHT", "obj_id": "1"},
                    "1": {"exp": "a dog", "obj_id": "3"},
                },
            }
        }
    }
    (root / "meta_expressions/train").mkdir(parents=True)
    (root / "meta_expressions/train/meta_expressions.json").write_text(json.dumps(meta))
    return labels


@pytest.mark.parametrize("name", ["refytvos", "refdavis"])
def test_referformer_layout_clips_and_object_masks(tmp_path, name):
    names = [f"{i:05d}" for i in range(14)]
    labels = write_referformer(tmp_path, names)
    dataset = ReferFormerDataset(SETTINGS, DataRoot(f"data.roots.{name}", tmp_path, "x"), name)
    # 2 expressions x anchors 0, 6, 12 (one every T_s = 6 frames)
    assert len(dataset) == 6
    assert [clip.anchor for clip in dataset.clips] == [0, 6, 12, 0, 6, 12]
    sample = dataset.build_sample(1, rng(3))
    check_sample_shapes(sample, 1)
    assert short_phrase(sample.conversation[0][1]) == "the cat moving right"
    assert 6 in sample.metadata["frames"]  # the anchor is always sampled
    for row, frame in enumerate(sample.metadata["dense"]):
        np.testing.assert_array_equal(sample.target_masks[0, row].numpy(), labels[frame] == 1)


def encode_rle(mask: np.ndarray) -> dict | None:
    from pycocotools import mask as coco_mask

    if not mask.any():
        return None
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def write_mevis_split(root: Path, split: str, num_expressions: int, names: list[str]) -> list[np.ndarray]:
    labels = moving_object_labels(len(names))
    write_video_frames(root / f"{split}/JPEGImages/v1", names)
    mask_dict = {str(obj): [encode_rle(label == obj) for label in labels] for obj in (1, 2, 3)}
    expressions = {str(i): {"exp": f"Cats {i}", "obj_id": [1, 2], "anno_id": [1, 2]} for i in range(num_expressions)}
    (root / f"{split}/meta_expressions.json").write_text(
        json.dumps({"videos": {"v1": {"frames": names, "expressions": expressions}}})
    )
    (root / f"{split}/mask_dict.json").write_text(json.dumps(mask_dict))
    return labels


def test_mevis_train_and_valid_u(tmp_path):
    names = [f"{i:05d}" for i in range(10)]
    labels = write_mevis_split(tmp_path, "train", 2, names)
    write_mevis_split(tmp_path, "valid_u", 9, names)
    root = DataRoot("data.roots.mevis", tmp_path, "x")
    dataset = MeViSDataset(SETTINGS, root, ["train", "valid_u"])
    train_clips = [c for c in dataset.clips if c.target[0] == "train"]
    valid_clips = [c for c in dataset.clips if c.target[0] == "valid_u"]
    assert len(train_clips) == 2 * 2  # anchors 0 and 6
    assert len(valid_clips) == 8 and {c.anchor for c in valid_clips} == {0}  # first 8 expressions, one clip
    sample = dataset.build_sample(0, rng(1))
    check_sample_shapes(sample, 1)
    assert short_phrase(sample.conversation[0][1]) == "cats 0"
    for row, frame in enumerate(sample.metadata["dense"]):
        np.testing.assert_array_equal(sample.target_masks[0, row].numpy(), np.isin(labels[frame], [1, 2]))
    with pytest.raises(MissingFilesError, match="data.roots.mevis"):
        MeViSDataset(SETTINGS, root, ["valid"])


# ============================================================================================ custom JSONL
def write_mp4(path: Path, num_frames: int) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(num_frames):
            frame = np.full((HEIGHT, WIDTH, 3), 20 * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_custom_jsonl_all_mask_kinds(tmp_path):
    labels = moving_object_labels(8)
    write_video_frames(tmp_path / "frames/clip", [f"{i}" for i in range(8)])  # natural order 0..7
    for index in (1, 3, 4, 6):  # sparse annotation
        write_labels(tmp_path / f"masks/clip/{index}.png", labels[index], palette=True)
    write_mp4(tmp_path / "video.mp4", 8)
    write_image(tmp_path / "still.jpg")
    write_labels(tmp_path / "still.png", (labels[0] == 2) * 255)
    records = [
        {"video": "frames/clip", "instruction": "Cat On The Left", "masks": "masks/clip", "mask_value": 1},
        {
            "video": "video.mp4",
            "instruction": "Which animal appears late?",
            "is_sentence": True,
            "masks": {"rle": [encode_rle(label == 3) for label in labels]},
            "answer": "It is [SEG].",
        },
        {"video": "still.jpg", "instruction": "static cat", "masks": "still.png"},
        {"video": "video.mp4", "instruction": "What happens?", "answer": "The screen brightens."},
        {  # two objects: one [SEG] and one mask entry each (a palette folder and RLEs), frames annotated in both
            "video": "frames/clip",
            "instruction": "both cats",
            "masks": ["masks/clip", {"rle": [encode_rle(label == 3) for label in labels]}],
            "mask_value": [1, None],
            "answer": "Sure, [SEG] the left cat, and [SEG] the late one.",
        },
    ]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(record) for record in records) + "\n\n")
    dataset = CustomDataset(SETTINGS, [jsonl])
    assert len(dataset) == 5

    sample = dataset.build_sample(0, rng(2))
    check_sample_shapes(sample, 1)
    assert short_phrase(sample.conversation[0][1]) == "cat on the left"
    assert set(sample.metadata["frames"]) <= {1, 3, 4, 6}  # only annotated frames
    for row, frame in enumerate(sample.metadata["dense"]):
        np.testing.assert_array_equal(sample.target_masks[0, row].numpy(), labels[frame] == 1)

    sample = dataset.build_sample(1, rng(2))
    check_sample_shapes(sample, 1)
    assert sample.conversation[0][1] in [t.format(sent="Which animal appears late?") for t in LONG_QUESTION_TEMPLATES]
    assert sample.conversation[1][1] == "It is [SEG]."
    for row, frame in enumerate(sample.metadata["dense"]):
        np.testing.assert_array_equal(sample.target_masks[0, row].numpy(), labels[frame] == 3)

    sample = dataset.build_sample(2, rng())
    check_sample_shapes(sample, 1)
    assert sample.dense_positions == [0, 1]
    np.testing.assert_array_equal(sample.target_masks[0, 1].numpy(), labels[0] == 2)

    sample = dataset.build_sample(3, rng())
    check_sample_shapes(sample, 0)
    assert sample.conversation[1] == ("assistant", "The screen brightens.")

    sample = dataset.build_sample(4, rng(3))
    check_sample_shapes(sample, 2)
    assert set(sample.metadata["frames"]) <= {1, 3, 4, 6}
    for row, frame in enumerate(sample.metadata["dense"]):
        np.testing.assert_array_equal(sample.target_masks[0, row].numpy(), labels[frame] == 1)
        np.testing.assert_array_equal(sample.target_masks[1, row].numpy(), labels[frame] == 3)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"video": "missing.mp4", "instruction": "x", "masks": "m"}, "does not exist"),
        ({"video": "v", "instruction": "x"}, "needs an 'answer'"),
        ({"video": "v", "instruction": "x", "masks": "m", "answer": "no token"}, r"once per mask \(1\), found 0"),
        ({"video": "v", "instruction": "x", "masks": ["m", "m"], "answer": "[SEG]"}, r"once per mask \(2\), found 1"),
        ({"video": "v", "instruction": "x", "masks": ["m", "m"]}, "needs an 'answer' with one"),
        ({"video": "v", "instruction": "x", "masks": ["m", "m"], "mask_value": [1], "answer": "[SEG][SEG]"}, "as long"),
        ({"video": "v", "instruction": "x", "masks": [], "answer": "a"}, "empty list"),
        ({"video": "v", "instruction": "x", "masks": {"rle": []}, "mask_value": 1}, "not to RLE"),
        ({"video": "v", "instruction": "x", "masks": "m", "colour": 1}, "unknown fields"),
        ({"video": "v", "instruction": " ", "masks": "m"}, "empty"),
    ],
)
def test_custom_jsonl_rejects_bad_records_with_line_numbers(tmp_path, record, message):
    (tmp_path / "v").mkdir()
    (tmp_path / "m").mkdir()
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n" + json.dumps(record) + "\n")
    with pytest.raises((InvalidInputError, MissingFilesError), match=message) as error:
        read_custom_file(jsonl)
    assert f"{jsonl}:2" in str(error.value)


def test_unset_or_missing_roots_name_the_config_key(tmp_path):
    rates = dict.fromkeys(DataConfig().rates, 0)
    config = DataConfig(rates={**rates, "sem_seg": 1}, sem_seg=["cocostuff"])
    with pytest.raises(MissingFilesError, match=r"data.roots.cocostuff is not set"):
        build_dataset_groups(config, SETTINGS)
    config.roots["cocostuff"] = str(tmp_path / "nowhere")
    with pytest.raises(MissingFilesError, match=r"data.roots.cocostuff=.*nowhere does not exist"):
        build_dataset_groups(config, SETTINGS)
