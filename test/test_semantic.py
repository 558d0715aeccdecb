"""The semantic branch (pretrained MobileNetV2 inside RIN) and the labelled-object losses and measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcmif_ros.models.config import DCMIFConfig, SemanticConfig, get_config, layer_shapes
from dcmif_ros.models.dcmif import DCMIFNet
from dcmif_ros.models.semantic import STEM_WEIGHT, SemanticBranch, pretrained_weights_path
from dcmif_ros.training.data import PairDataset, find_pairs
from dcmif_ros.training.objects import (MAX_OBJECTS, box_masks, crop_boxes, objectness_target, read_boxes,
                                        warm_object_terms)
from dcmif_ros.evaluation.warm_objects import STANDS_OUT, ContrastSummary, labelled_objects, object_contrast

TINY = get_config("tiny")


def test_mobilenet_layer_table_gives_its_published_strides_and_widths():
    shapes = layer_shapes()
    assert len(shapes) == 18  # stem + 17 inverted residual blocks
    assert shapes[6] == (32, 8) and shapes[13] == (96, 16) and shapes[17] == (320, 32)
    assert SemanticConfig().deepest_stride == 16
    assert TINY.pad_multiple % 16 == 0  # a frame must divide by the branch's deepest stride


def test_pretrained_weights_load_into_every_kept_layer_with_a_grey_stem():
    branch = SemanticBranch(SemanticConfig(), width=32, entry_stride=4)
    before = {k: v.clone() for k, v in branch.features.state_dict().items()}
    branch.load_pretrained()
    stored = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    after = branch.features.state_dict()
    assert torch.allclose(after[STEM_WEIGHT], stored["features." + STEM_WEIGHT].sum(dim=1, keepdim=True))
    key = "13.conv.6.weight"  # the last kept block's projection
    assert torch.equal(after[key], stored["features." + key]) and not torch.equal(after[key], before[key])


def test_the_guide_has_rins_entry_shape_and_starts_near_zero():
    torch.manual_seed(0)
    net = DCMIFNet(TINY).eval()
    image = torch.rand(1, 1, 64, 96)
    guide = net.rin.guide(image)
    assert guide.shape == (1, TINY.rin.width, 64 // TINY.rin.entry_stride, 96 // TINY.rin.entry_stride)
    coefficients = torch.rand(1, TINY.atoms, 64, 96)
    with torch.no_grad():
        unguided = net.rin.guided(coefficients, None)
        guided = net.rin(coefficients, image)
    assert (guided - unguided).abs().max() < 1e-2 * unguided.abs().max()


def test_batch_statistics_stay_frozen_in_training_mode():
    branch = SemanticBranch(SemanticConfig(), width=8, entry_stride=4).train()
    branch.features.train()  # even set directly
    state = {k: v.clone() for k, v in branch.state_dict().items() if "running" in k}
    image = torch.rand(2, 1, 32, 32)
    trained = branch(image)
    assert state and all(torch.equal(branch.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(trained, branch.eval()(image))  # training and inference normalise alike


def test_configs_without_the_branch_still_load():
    data = TINY.to_dict()
    assert DCMIFConfig.from_dict(data) == TINY
    del data["semantic"]  # a checkpoint written before the branch existed
    old = DCMIFConfig.from_dict(data)
    assert old.semantic is None and DCMIFNet(old).rin.semantic is None


def test_crop_boxes_follow_the_crop_scale_and_flip():
    boxes = np.array([[0, 0.5, 0.5, 0.2, 0.4]], np.float32)  # centred, 0.2 wide, 0.4 tall in a 100x200 frame
    # frame (height 100, width 200): box x 80..120, y 30..70; crop region 100 at left 50, top 0 → 50 px crop
    rows = crop_boxes(boxes, (100, 200), top=0, left=50, region=100, crop=50, flip=False)
    assert rows.shape == (MAX_OBJECTS, 5)
    np.testing.assert_allclose(rows[0], [0, 15, 15, 35, 35], atol=1e-4)
    assert (rows[1:, 0] == -1).all()
    flipped = crop_boxes(boxes, (100, 200), top=0, left=50, region=100, crop=50, flip=True)
    np.testing.assert_allclose(flipped[0], [0, 15, 15, 35, 35], atol=1e-4)  # symmetric about the crop's centre here
    outside = crop_boxes(boxes, (100, 200), top=0, left=150, region=50, crop=50, flip=False)
    assert (outside[:, 0] == -1).all()


def test_read_boxes_refuses_malformed_lines(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("0 0.5 0.5 0.1 0.2\n2 0.1 0.1 0.05 0.05\n")
    assert read_boxes(good).shape == (2, 5)
    assert read_boxes(tmp_path / "missing.txt").shape == (0, 5)
    bad = tmp_path / "b.txt"
    bad.write_text("0 0.5 nan 0.1 0.2\n")
    with pytest.raises(ValueError, match="b.txt"):
        read_boxes(bad)


def scene_with_object(object_level: float, background: float = 0.2) -> torch.Tensor:
    image = torch.full((1, 1, 32, 32), background)
    image[..., 10:20, 12:18] = object_level
    return image


BOXES = torch.tensor([[[0, 12, 10, 18, 20]] + [[-1, 0, 0, 0, 0]] * 3], dtype=torch.float32)


def test_warm_object_terms_vanish_on_the_real_infrared_and_grow_with_a_cold_object():
    infrared = scene_with_object(0.9)
    masks = box_masks(BOXES, 32, 32)
    same = warm_object_terms(infrared, infrared, masks)
    assert same["inside"] == 0 and same["contrast"] == 0
    cold = scene_with_object(0.2).requires_grad_(True)
    terms = warm_object_terms(cold, infrared, masks)
    assert terms["contrast"].item() == pytest.approx(0.7, abs=1e-6) and terms["inside"].item() == pytest.approx(0.7, abs=1e-6)
    terms["contrast"].backward()
    inside, _, _ = masks
    assert inside.shape[1] == 1  # the padding rows are left out
    assert (cold.grad[0, 0][inside[0, 0]] < 0).all()  # raising the object lowers the loss


def test_objectness_target_is_the_covered_share_of_each_cell():
    target = objectness_target(box_masks(BOXES, 32, 32)[0], stride=4)
    assert target.shape == (1, 1, 8, 8)
    assert target[0, 0, 3, 3] == 1.0 and target[0, 0, 0, 0] == 0.0
    assert target[0, 0, 2, 3] == 0.5  # rows 8..11 of which 10, 11 are inside


def test_dataset_yields_boxes_and_whether_the_folder_is_labelled(synthetic_dataset, tmp_path):
    import shutil

    labelled = tmp_path / "labelled"
    shutil.copytree(synthetic_dataset, labelled)
    (labelled / "boxes").mkdir()
    for pair in find_pairs(labelled):
        (labelled / "boxes" / f"{pair.visible_path.stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    item = PairDataset(find_pairs(labelled), crop=32, augment=False)[0]
    assert item["labelled"] and item["boxes"][0, 0] == 0 and (item["boxes"][0, 3:] > item["boxes"][0, 1:3]).all()
    plain = PairDataset(find_pairs(synthetic_dataset), crop=32, augment=False)[0]
    assert not plain["labelled"] and (plain["boxes"][:, 0] == -1).all()


def test_mask_objects_contrast_against_their_ring():
    mask = np.zeros((60, 60), np.uint8)
    mask[10:30, 10:20] = 2  # a person
    mask[40:50, 40:55] = 1  # a car
    mask[0:2, 0:2] = 2  # label noise: below the minimum size
    image = np.full((60, 60), 50, np.uint8)
    image[10:30, 10:20] = 50 + 51  # +0.2 on [0, 1]
    objects = labelled_objects(mask)
    assert sorted(o.kind for o in objects) == ["person", "vehicle"]
    person = next(o for o in objects if o.kind == "person")
    assert not (person.ring & (mask > 0)).any()
    assert object_contrast(image, person) == pytest.approx(0.2)
    summary = ContrastSummary.of([object_contrast(image, o) for o in objects])
    assert summary.count == 2 and summary.share_standing_out == 0.5 and STANDS_OUT == 0.05
