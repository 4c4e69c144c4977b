import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from spcxr_hub.data.synthetic import (  # noqa: E402
    FINDINGS,
    Phantom,
    generate,
    sample_findings,
    write_dicom,
    write_mask_png,
    write_png8,
    write_png16,
)

SIZE = 128


def _largest_component_fraction(mask: np.ndarray) -> float:
    """Fraction of ``mask`` in the 4-connected component of its first pixel (flood fill by repeated dilation)."""
    seed = np.argwhere(mask)[0]
    region = np.zeros_like(mask)
    region[tuple(seed)] = True
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= mask
        if grown.sum() == region.sum():
            return float(region.sum() / mask.sum())
        region = grown


def _pair(finding: str, seed: int, size: int = SIZE) -> tuple[Phantom, Phantom]:
    return generate(seed, size, text=False), generate(seed, size, (finding,), text=False)


# ---------------------------------------------------------------------------------------------------------------
# generate(): determinism, shapes, anatomy
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_and_arguments_give_bitwise_identical_phantoms():
    a = generate(7, SIZE, ("pneumonia", "nodule"))
    b = generate(7, SIZE, ("nodule", "pneumonia"))
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.lung_mask, b.lung_mask)
    assert a.findings == b.findings == ("pneumonia", "nodule")


def test_different_seeds_give_different_anatomy():
    a, b = generate(1, SIZE), generate(2, SIZE)
    assert not np.array_equal(a.lung_mask, b.lung_mask)
    assert np.abs(a.image - b.image).mean() > 0.01


@pytest.mark.parametrize("size, shape", [(SIZE, (SIZE, SIZE)), ((160, 112), (160, 112)), (32, (32, 32))])
def test_shapes_dtypes_and_value_range(size, shape):
    p = generate(3, size, ("covid",))
    assert p.image.shape == shape and p.image.dtype == np.float32
    assert 0.0 <= p.image.min() and p.image.max() <= 1.0
    for m in (p.lung_mask, p.left_mask, p.right_mask):
        assert m.shape == shape and m.dtype == np.bool_


def test_lung_mask_is_exact_union_of_disjoint_left_and_right_masks():
    p = generate(4, SIZE)
    assert np.array_equal(p.lung_mask, p.left_mask | p.right_mask)
    assert not (p.left_mask & p.right_mask).any()
    assert 0.1 < p.lung_mask.mean() < 0.45


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_each_lung_is_one_connected_field_on_its_anatomical_side(seed):
    p = generate(seed, SIZE)
    cols = np.arange(SIZE)[None, :]
    # standard PA view: the patient's left lung is on the image right
    assert (np.broadcast_to(cols, p.left_mask.shape)[p.left_mask] > SIZE // 2 - 4).all()
    assert (np.broadcast_to(cols, p.right_mask.shape)[p.right_mask] < SIZE // 2 + 4).all()
    for m in (p.left_mask, p.right_mask):
        assert m.sum() > 0.05 * m.size
        assert _largest_component_fraction(m) > 0.98


def test_lungs_are_darker_than_the_mediastinum_and_brighter_than_the_background():
    p = generate(6, SIZE, noise=0.0, text=False)
    rows = np.where(p.lung_mask.any(axis=1))[0]
    c = SIZE // 2
    mediastinum = p.image[rows[0] : rows[-1], c - 3 : c + 3]
    assert p.image[p.lung_mask].mean() + 0.25 < mediastinum.mean()
    assert p.image[SIZE // 2, :2].mean() < p.image[p.lung_mask].mean()  # air beside the body is darkest


def test_masks_depend_on_the_seed_only():
    base = generate(8, SIZE)
    other = generate(8, SIZE, FINDINGS, text=False, noise=0.05)
    assert np.array_equal(base.lung_mask, other.lung_mask)
    assert np.array_equal(base.left_mask, other.left_mask)


def test_unknown_finding_is_rejected():
    with pytest.raises(ValueError, match="unknown finding"):
        generate(0, SIZE, ("fracture",))


# ---------------------------------------------------------------------------------------------------------------
# findings
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_brightens_the_lungs_and_changes_little_else(finding):
    for seed in range(3):
        a, b = _pair(finding, seed)
        d = b.image - a.image
        assert b.findings == (finding,)
        assert d[a.lung_mask].mean() > 0.001
        # nearly all of the change is inside the lung fields (effusion and cardiomegaly spill just past them)
        assert np.abs(d)[a.lung_mask].sum() > 0.75 * np.abs(d).sum()


def test_pneumonia_is_a_dense_region_in_one_lung():
    for seed in range(4):
        a, b = _pair("pneumonia", seed)
        d = b.image - a.image
        gain = sorted([d[a.left_mask].mean(), d[a.right_mask].mean()])
        assert gain[1] > 0.05  # a sizeable part of one lung turns bright
        assert gain[0] < 0.2 * gain[1]  # the other lung is (nearly) untouched


def test_covid_is_bilateral_and_peripheral():
    for seed in range(4):
        a, b = _pair("covid", seed)
        d = b.image - a.image
        for m in (a.left_mask, a.right_mask):
            cols = np.where(m.any(axis=0))[0]
            mid = (cols[0] + cols[-1]) // 2
            inner, outer = m.copy(), m.copy()
            if cols[0] > SIZE // 2:  # left lung, image right: lateral = larger column
                inner[:, mid:], outer[:, :mid] = False, False
            else:
                inner[:, :mid], outer[:, mid:] = False, False
            assert d[outer].mean() > 0.005
            assert d[outer].mean() > 2 * d[inner].mean()


def test_nodule_is_a_small_bright_spot_in_a_lung():
    for seed in range(4):
        a, b = _pair("nodule", seed)
        d = b.image - a.image
        changed = d > 0.05
        assert changed.any()
        assert changed.mean() < 0.02
        assert (changed & a.lung_mask).sum() > 0.5 * changed.sum()


def test_effusion_fills_the_base_of_one_lung():
    for seed in range(4):
        a, b = _pair("effusion", seed)
        d = b.image - a.image
        gains = []
        for m in (a.left_mask, a.right_mask):
            rows = np.where(m.any(axis=1))[0]
            lower, upper = m.copy(), m.copy()
            cut = rows[0] + (rows[-1] - rows[0]) * 2 // 3
            lower[:cut], upper[cut:] = False, False
            gains.append((d[lower].mean(), d[upper].mean()))
        (lo_a, up_a), (lo_b, up_b) = sorted(gains)
        assert lo_b > 0.05 and up_b < 0.5 * lo_b  # the base of one lung, not its top
        assert lo_a < 0.01  # the other lung is untouched


def test_cardiomegaly_heart_covers_more_of_the_lung_fields():
    for seed in range(3):
        a = generate(seed, SIZE, text=False, noise=0.0)
        b = generate(seed, SIZE, ("cardiomegaly",), text=False, noise=0.0)
        # lung-mask pixels as bright as soft tissue: the (wider) cardiac silhouette over the anatomical lung field
        covered_a = (a.image[a.left_mask] > 0.65).mean()
        covered_b = (b.image[a.left_mask] > 0.65).mean()
        assert covered_b > covered_a + 0.02


def test_sample_findings_maps_labels_to_findings():
    rng = np.random.default_rng(0)
    assert sample_findings(rng, "normal") == ()
    assert sample_findings(rng, "pneumonia") == ("pneumonia",)
    assert sample_findings(rng, "covid") == ("covid",)
    drawn = [sample_findings(rng, "abnormal") for _ in range(50)]
    assert all(1 <= len(f) <= 3 and set(f) <= {"nodule", "effusion", "cardiomegaly"} for f in drawn)
    assert {f for fs in drawn for f in fs} == {"nodule", "effusion", "cardiomegaly"}
    with pytest.raises(ValueError):
        sample_findings(rng, "fracture")


# ---------------------------------------------------------------------------------------------------------------
# text, noise, speed
# ---------------------------------------------------------------------------------------------------------------


def test_burned_in_text_changes_only_a_small_corner_region():
    for seed in range(4):
        plain, marked = generate(seed, SIZE, text=False), generate(seed, SIZE, text=True)
        changed = np.argwhere(plain.image != marked.image)
        assert len(changed) > 0
        assert len(changed) < 0.05 * SIZE * SIZE
        (r0, c0), (r1, c1) = changed.min(axis=0), changed.max(axis=0)
        assert r1 < SIZE // 2 or r0 >= SIZE // 2  # within the top or the bottom half ...
        assert c1 < SIZE // 2 or c0 >= SIZE // 2  # ... and the left or the right half: one corner
        assert np.array_equal(plain.lung_mask, marked.lung_mask)


def test_noise_level_controls_pixel_noise():
    clean, noisy = generate(9, SIZE, noise=0.0), generate(9, SIZE, noise=0.05)
    d = noisy.image - clean.image
    assert 0.02 < d[clean.lung_mask].std() < 0.08


# ---------------------------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate(12, (96, 80), ("effusion",))


def test_png8_round_trip(tmp_path, phantom):
    path = write_png8(tmp_path / "a.png", phantom.image)
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (80, 96)
        back = np.asarray(im, dtype=np.float32) / 255.0
    assert np.abs(back - phantom.image).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("bits", [12, 16])
def test_png16_round_trip(tmp_path, phantom, bits):
    path = write_png16(tmp_path / "a16.png", phantom.image, bits=bits)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")
        raw = np.asarray(im).astype(np.int64)
    top = 2**bits - 1
    assert raw.max() <= top
    assert np.abs(raw / top - phantom.image).max() <= 0.5 / top + 1e-6


def test_dicom_round_trip_monochrome2(tmp_path, phantom):
    path = write_dicom(tmp_path / "a.dcm", phantom.image, window=(2048, 4096))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "DX" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert (ds.SamplesPerPixel, ds.Rows, ds.Columns) == (1, 96, 80)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (2048.0, 4096.0)
    arr = ds.pixel_array
    assert arr.dtype == np.uint16 and arr.shape == (96, 80) and arr.max() <= 4095
    assert np.abs(arr / 4095 - phantom.image).max() <= 0.5 / 4095 + 1e-6


def test_dicom_monochrome1_is_stored_inverted(tmp_path, phantom):
    m2 = pydicom.dcmread(write_dicom(tmp_path / "m2.dcm", phantom.image)).pixel_array.astype(np.int64)
    ds = pydicom.dcmread(write_dicom(tmp_path / "m1.dcm", phantom.image, photometric="MONOCHROME1"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    m1 = ds.pixel_array.astype(np.int64)
    assert np.abs((4095 - m1) - m2).max() <= 1  # a reader that inverts MONOCHROME1 sees the same picture


def test_dicom_rescale_recovers_intended_values(tmp_path, phantom):
    path = write_dicom(tmp_path / "r.dcm", phantom.image, bits_stored=16, rescale_slope=2.0, rescale_intercept=-1024.0)
    ds = pydicom.dcmread(path)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1024.0)
    modality = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert np.abs(modality / 65535 - phantom.image).max() <= 1.0 / 65535 + 1e-6


def test_dicom_rejects_values_that_do_not_fit_bits_stored(tmp_path, phantom):
    with pytest.raises(ValueError, match="bits_stored"):
        write_dicom(tmp_path / "bad.dcm", phantom.image, rescale_intercept=-1024.0)


def test_mask_png_is_8bit_zero_or_255(tmp_path, phantom):
    path = write_mask_png(tmp_path / "sub" / "mask.png", phantom.left_mask)
    with Image.open(path) as im:
        assert im.mode == "L"
        arr = np.asarray(im)
    assert set(np.unique(arr).tolist()) == {0, 255}
    assert np.array_equal(arr == 255, phantom.left_mask)
