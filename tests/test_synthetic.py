import numpy as np

from mammo_utils.prepare.synthetic import LESION_TYPES, generate_image, generate_patient


def test_generator_is_deterministic_per_seed():
    a, b, c = generate_patient(3, 5, 96), generate_patient(3, 5, 96), generate_patient(4, 5, 96)
    for (ida, ia), (idb, ib) in zip(a.images, b.images, strict=True):
        assert ida == idb
        np.testing.assert_array_equal(ia.pixels, ib.pixels)
    assert any(not np.array_equal(x.pixels, y.pixels) for (_, x), (_, y) in zip(a.images, c.images, strict=True))


def test_lesion_masks_sit_inside_the_breast_for_every_type():
    for i, lesion_type in enumerate(LESION_TYPES * 3):
        img = generate_image(np.random.default_rng(i), 128, "MLO" if i % 2 else "CC", "LR"[i % 2], "C", lesion_type)
        (lesion,) = img.lesions
        assert lesion.mask.sum() > 3
        assert (lesion.mask & ~img.breast).sum() == 0
        assert img.breast[int(round(lesion.cy)), int(round(lesion.cx))]


def test_labels_follow_lesion_types_and_images_look_like_mammograms():
    img = generate_image(np.random.default_rng(0), 128, "CC", "L", "B", "spiculated")
    assert img.abnormal == 1 and img.malignant == 1
    benign = generate_image(np.random.default_rng(0), 128, "CC", "L", "B", "circumscribed")
    assert benign.abnormal == 1 and benign.malignant == 0
    normal = generate_image(np.random.default_rng(0), 128, "CC", "L", "B", None)
    assert normal.abnormal == 0 and not normal.lesions
    # bright breast on a dark background, chest wall (left for L) brighter than the far side
    assert normal.pixels[normal.breast].mean() > 0.3 > normal.pixels[~normal.breast].mean() + 0.2
    right = generate_image(np.random.default_rng(0), 128, "CC", "R", "B", None)
    assert right.breast[:, 64:].sum() > right.breast[:, :64].sum()


def test_patients_have_four_views_and_lesions_on_one_breast():
    found = 0
    for index in range(12):
        p = generate_patient(0, index, 96)
        assert [i for i, _ in p.images] == [f"{p.patient_id}_{lat}_{v}" for lat in "LR" for v in ("CC", "MLO")]
        sides = {img.laterality for _, img in p.images if img.lesions}
        assert sides == ({p.lesion_laterality} if p.lesion_type else set())
        found += bool(p.lesion_type)
    assert 0 < found < 12
