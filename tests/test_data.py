"""Face data: real-data splits (sizes, disjointness, determinism), synthetic layouts, crops, cache and error messages."""
from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import ssdlib.data.sources as sources
from ssdlib.data import (CELEBA_CROP, CELEBA_EYES_64, LFW_CROP, LFW_FRAME_EYES, FaceDataset, FaceSet, check_disjoint,
                         find_source, fit_crop, load_celeba, load_faces, load_identity_folders, map_to_crop,
                         measure_eye_positions, private_split, public_set)
from ssdlib.utils import data_root


# ---------------------------------------------------------------- real data (../shared/data or $SSD_DATA_ROOT)
@pytest.fixture(scope="session")
def real():
    """Private splits of both data sets and the public set, decoded once (cached in the faces folder of the cache)."""
    try:
        find_source("celeba"), find_source("lfw")
    except FileNotFoundError as err:
        pytest.skip(f"real face data absent at {data_root()}: {err}")
    return {"celeba": private_split("celeba", progress=False), "lfw": private_split("lfw", progress=False),
            "public": public_set(progress=False),
            "full": {d: load_faces(d, progress=False) for d in ("celeba", "lfw")}}


@pytest.mark.parametrize("dataset, n_ids", [("celeba", 181), ("lfw", 62)])
def test_private_sizes_shapes(real, dataset, n_ids):
    data = real[dataset]
    assert data.num_classes == n_ids
    for split in (data.train, data.valid, data.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 64, 64)
        assert split.labels.dtype == torch.int64 and split.classes == data.classes
        assert all(c.startswith(f"{dataset}:") for c in split.classes)
        assert (split.counts() > 0).all()  # every identity in every split
        x = split.subset(range(4)).float_images()
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("dataset", ["celeba", "lfw"])
def test_splits_share_identities_not_images(real, dataset):
    data = real[dataset]
    files = [set(s.files) for s in (data.train, data.valid, data.test)]
    assert all(len(f) == len(s) for f, s in zip(files, (data.train, data.valid, data.test)))
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])


@pytest.mark.parametrize("dataset, cap", [("celeba", None), ("lfw", 60)])
def test_stratified_counts(real, dataset, cap):
    data, full = real[dataset], real["full"][dataset]
    available = dict(zip(full.classes, full.counts().tolist()))
    for k, name in enumerate(data.classes):
        n = available[name] if cap is None else min(cap, available[name])
        n_valid, n_test = int(data.valid.counts()[k]), int(data.test.counts()[k])
        assert n_valid == n_test == max(1, round(0.1 * n))
        assert int(data.train.counts()[k]) == n - n_valid - n_test
    expected_capped = sum(max(0, available[c] - cap) for c in data.classes) if cap else 0
    assert data.n_capped == expected_capped


def test_public_disjoint_from_private(real):
    public = real["public"]
    check_disjoint(public, *(s for d in ("celeba", "lfw") for s in (real[d].train, real[d].valid, real[d].test)))
    full = real["full"]
    n_private = sum(int(c[c >= 20].sum()) for c in (full["celeba"].counts(), full["lfw"].counts()))
    assert len(public) == len(full["celeba"]) + len(full["lfw"]) - n_private  # capped-out images are not public
    assert "lfw:George_W_Bush" not in public.classes
    assert int(public.counts().max()) < 20
    with pytest.raises(ValueError, match="share 1 identities"):
        check_disjoint(public, FaceSet(public.images[:1], torch.zeros(1, dtype=torch.int64), [public.classes[0]], "x"))


def test_split_deterministic_and_seeded(real):
    again = private_split("lfw", progress=False)
    assert again.train.files == real["lfw"].train.files and torch.equal(again.test.images, real["lfw"].test.images)
    other = private_split("lfw", seed=1, progress=False)
    assert other.classes == again.classes and set(other.train.files) != set(again.train.files)
    small = private_split("celeba", max_identities=5, progress=False)
    counts = real["full"]["celeba"].counts()
    assert small.num_classes == 5 and sorted(counts.tolist())[-5] <= min(
        int(counts[real["full"]["celeba"].classes.index(c)]) for c in small.classes)
    sub = public_set(max_images=300, min_images=2, progress=False)
    assert len(sub) == 300 and int(sub.counts().min()) >= 1 and sub.files == public_set(
        max_images=300, min_images=2, progress=False).files


def test_bad_arguments(real):
    with pytest.raises(ValueError, match="private data set"):
        private_split("mnist")
    with pytest.raises(ValueError, match="fractions"):
        private_split("lfw", fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="max_per_identity"):
        private_split("lfw", max_per_identity=0)
    with pytest.raises(ValueError, match="min_images"):
        public_set(min_images=0)


def test_crops_frame_eyes_alike(real):
    """Eyes measured on the 64x64 outputs of both data sets land within 2.5 px of each other (and of the constants)."""
    lfw = measure_eye_positions(real["lfw"].test.images[::8][:12]).pixels(64)
    celeba = measure_eye_positions(real["celeba"].test.images[::25][:12]).pixels(64)
    for side, (ref, want) in zip(("left", "right"), CELEBA_EYES_64):
        for got in (lfw, celeba):
            assert abs(got[side][0] - ref) < 2.5 and abs(got[side][1] - want) < 2.5, (side, got)
    assert abs(lfw["iod"] - celeba["iod"]) < 2.5


def test_face_dataset(real):
    faces = real["lfw"].valid
    x, y = FaceDataset(faces)[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and isinstance(y, int) and y == int(faces.labels[3])
    torch.manual_seed(0)
    aug = torch.stack([FaceDataset(faces, augment=True)[3][0] for _ in range(8)])
    assert aug.shape == (8, 3, 64, 64) and 0 <= aug.min() and aug.max() <= 1
    assert (aug - x).abs().amax(dim=(1, 2, 3)).min() > 0.01  # augmentation changes every draw here
    loader = torch.utils.data.DataLoader(FaceDataset(faces, augment=True), batch_size=16)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 3, 64, 64) and yb.dtype == torch.int64


# ---------------------------------------------------------------- synthetic layouts in tmp_path
def _gradient(width: int, height: int, blue: int = 0) -> Image.Image:
    """Red encodes x, green encodes y (0..255 across the frame): crops can be read back from pixel values."""
    xs = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    ys = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([xs, ys, np.full_like(xs, blue)], -1).astype(np.uint8))


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("SSD_CACHE_DIR", str(path))
    return path


def _identity_root(root, folder="lfw", people=(("Ann_A", 3), ("Bob_B", 2), ("Cy_C", 4))):
    for k, (name, n) in enumerate(people):
        (root / folder / name).mkdir(parents=True)
        for i in range(n):
            _gradient(250, 250, blue=40 * k + 10 * i).save(root / folder / name / f"{name}_{i + 1:04d}.jpg", quality=95)
    return root


def test_identity_folders_load_crop_and_cache(tmp_path, cache, monkeypatch):
    root = _identity_root(tmp_path / "data")
    faces = load_faces("lfw", root, progress=False)
    assert faces.classes == ["lfw:Ann_A", "lfw:Bob_B", "lfw:Cy_C"] and faces.counts().tolist() == [3, 2, 4]
    assert faces.images.shape == (9, 3, 64, 64) and faces.files[0] == "Ann_A/Ann_A_0001.jpg"
    img = faces.images[0].float()
    # top-left / bottom-right output pixels sit at the LFW crop's corners (red = x, green = y of the frame)
    assert abs(img[0, 0, 0] - 255 * LFW_CROP[0]) < 6 and abs(img[1, 0, 0] - 255 * LFW_CROP[1]) < 6
    assert abs(img[0, -1, -1] - 255 * LFW_CROP[2]) < 6 and abs(img[1, -1, -1] - 255 * LFW_CROP[3]) < 6
    assert abs(img[2].mean() - 0) < 6 and abs(faces.images[-1, 2].float().mean() - 110) < 6  # images follow files

    files = list((cache / "faces").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # written atomically: no temporary left behind

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a JPEG although the cache holds this data set")
    monkeypatch.setattr(sources, "decode_crop", no_decoding)
    again = load_faces("lfw", root, progress=False)
    assert torch.equal(again.images, faces.images) and again.classes == faces.classes and again.files == faces.files
    with pytest.raises(AssertionError, match="decoded a JPEG"):
        load_faces("lfw", root, progress=False, cache=False)
    with pytest.raises(AssertionError, match="decoded a JPEG"):  # another crop is another cache entry
        load_faces("lfw", root, crop=(0, 0, 1, 1), progress=False)


def test_identity_archive_matches_folder(tmp_path, cache):
    root = _identity_root(tmp_path / "data", folder="lfw-deepfunneled")
    folder = load_faces("lfw", root, progress=False)
    archive = tmp_path / "packed" / "lfw-deepfunneled.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root / "lfw-deepfunneled", arcname="lfw-deepfunneled")
    packed = load_faces("lfw", archive.parent, progress=False)
    assert torch.equal(packed.images, folder.images) and packed.classes == folder.classes
    scrub = load_identity_folders(root / "lfw-deepfunneled", "facescrub", progress=False)  # full-frame crop
    assert scrub.classes[0] == "facescrub:Ann_A" and abs(scrub.images[0, 0, 0, 0].item() - 0) < 6


@pytest.mark.parametrize("packed", [False, True])
def test_official_celeba_layout(tmp_path, cache, packed):
    base = tmp_path / "celeba"
    ident = base / "Anno" / "identity_CelebA.txt"
    ident.parent.mkdir(parents=True)
    present = {1: "2880", 2: "2937", 3: "2880", 7: "8692"}
    lines = [f"{i:06d}.jpg {present.get(i, 100 + i)}" for i in range(1, 11)]  # files 4-6, 8-10 absent
    ident.write_text("\n".join(lines) + "\n")
    blobs = {f"img_align_celeba/{i:06d}.jpg": _jpeg(_gradient(178, 218, blue=20 * i)) for i in present}
    if packed:
        with zipfile.ZipFile(base / "img_align_celeba.zip", "w") as zf:
            for name, data in blobs.items():
                zf.writestr(name, data)
    else:
        for name, data in blobs.items():
            (base / name).parent.mkdir(exist_ok=True)
            (base / name).write_bytes(data)
    faces = load_faces("celeba", tmp_path, progress=False)
    assert faces.classes == ["celeba:2880", "celeba:2937", "celeba:8692"] and faces.counts().tolist() == [2, 1, 1]
    img = faces.images[0].float()
    assert abs(img[0, 0, 0] - 255 * CELEBA_CROP[0]) < 6 and abs(img[1, 0, 0] - 255 * CELEBA_CROP[1]) < 6
    assert abs(img[0, -1, -1] - 255 * CELEBA_CROP[2]) < 6 and abs(img[1, -1, -1] - 255 * CELEBA_CROP[3]) < 6


def test_missing_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)lfw-deepfunneled\.tgz.*vis-www\.cs\.umass\.edu/lfw"):
        load_faces("lfw", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"(?s)identity_CelebA\.txt.*mmlab\.ie\.cuhk\.edu\.hk"):
        load_faces("celeba", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        load_faces("mnist", tmp_path)


def test_corrupt_data_errors(tmp_path, cache):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    (root / "lfw" / "Ann_A").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8)).save(root / "lfw" / "Ann_A" / f"a{i}.jpg")
    archive = tmp_path / "cut" / "lfw-deepfunneled.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root / "lfw", arcname="lfw-deepfunneled")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_faces("lfw", archive.parent, progress=False)

    bad = root / "lfw" / "Ann_A" / "a3.jpg"
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"cannot decode image Ann_A/a3\.jpg"):
        load_faces("lfw", root, progress=False)
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"cannot decode image Ann_A/a3\.jpg"):
        load_faces("lfw", root, progress=False)


def test_celeba_identity_file_errors(tmp_path, cache):
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    _gradient(178, 218).save(images / "000001.jpg")
    ident = tmp_path / "identity_CelebA.txt"
    ident.write_text("000002.jpg 5\n000003.jpg 7\n")
    with pytest.raises(ValueError, match="names none of the 1 images"):
        load_celeba(images, ident, progress=False)
    ident.write_text("000001.jpg\n")
    with pytest.raises(ValueError, match="line 1"):
        load_celeba(images, ident, progress=False)
    with pytest.raises(FileNotFoundError, match="identity file"):
        load_celeba(images, tmp_path / "absent.txt")


def test_faceset_validation_and_crop_fit():
    with pytest.raises(ValueError, match="uint8"):
        FaceSet(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int64), ["a"], "x")
    with pytest.raises(ValueError, match="labels must lie"):
        FaceSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["a"], "x")
    with pytest.raises(ValueError, match="crop box"):
        load_identity_folders("/nonexistent", "x", crop=(0.5, 0, 0.4, 1))
    box = fit_crop(CELEBA_EYES_64, LFW_FRAME_EYES)
    assert np.allclose(box, LFW_CROP, atol=2e-4)  # the code's constant is the fitted measurement
    for eye, target in zip(LFW_FRAME_EYES, CELEBA_EYES_64):
        assert np.allclose(map_to_crop(eye, box, 64), target, atol=0.3)
    assert np.allclose((box[2] - box[0]) * 250, (box[3] - box[1]) * 250)  # square pixels
