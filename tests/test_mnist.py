"""MNIST IDX loader (synthetic files in tmp_path + the offline copy) and the evaluation maths."""
import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from flows_torch import mnist
from flows_torch.mnist import (
    FILES, MD5, download_mnist, find_data_dir, load_flow_data, load_mnist, load_mnist_uint8,
    missing_files, parse_idx, read_idx,
)
from flows_torch.mnist_eval import (
    MNISTClassifier, evaluate_samples, frechet_distance, gaussian_frechet_distance, save_json, sqrtm_psd,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "mnist"


# ----------------------------------------------------------------------------- helpers
def idx_bytes(arr: np.ndarray, magic=None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def write_split(folder: Path, split: str, n: int = 20, seed: int = 0, gz: bool = True, images=None, labels=None):
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    if labels is None:
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    img_name, lab_name = FILES[split]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in ((img_name, idx_bytes(images)), (lab_name, idx_bytes(labels))):
        if gz:
            (folder / name).write_bytes(gzip.compress(data))
        else:
            (folder / name[:-3]).write_bytes(data)
    return images, labels


# ----------------------------------------------------------------------------- IDX round trips
@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip_synthetic_split(tmp_path, gz):
    images, labels = write_split(tmp_path, "test", n=17, gz=gz)
    # synthetic files cannot match the official MD5s: load without the check
    x, y = load_mnist("test", tmp_path, check_md5=False)
    assert x.shape == (17, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (17,) and y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    expect = torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0
    torch.testing.assert_close(x[:, 0], expect)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_pixel_scaling_endpoints(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    images[1] = 255
    write_split(tmp_path, "test", images=images, labels=np.array([3, 7], np.uint8))
    x, y = load_mnist("test", tmp_path, check_md5=False)
    assert torch.all(x[0] == -1.0) and torch.all(x[1] == 1.0)
    assert y.tolist() == [3, 7]


def test_parse_idx_other_dtypes():
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    raw = bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 3) + arr.tobytes()
    out = parse_idx(raw)
    assert out.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_bad_magic(tmp_path):
    write_split(tmp_path, "test", n=4)
    # labels file with the images' magic number (2051 instead of 2049)
    bad = idx_bytes(np.zeros((4, 1, 1), np.uint8))
    (tmp_path / FILES["test"][1]).write_bytes(gzip.compress(bad))
    with pytest.raises(ValueError, match="magic"):
        load_mnist("test", tmp_path, check_md5=False)
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x00\x00\x42\x01" + struct.pack(">I", 1) + b"\x00")  # unknown type code


def test_truncated_payload(tmp_path):
    write_split(tmp_path, "test", n=5)
    data = idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-10]
    (tmp_path / FILES["test"][0]).write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match="truncated"):
        load_mnist("test", tmp_path, check_md5=False)
    with pytest.raises(ValueError, match="oversized"):
        parse_idx(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="truncated"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00")  # header cut short


def test_count_mismatch_between_images_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    write_split(tmp_path, "test", images=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
                labels=np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="6 images but"):
        load_mnist("test", tmp_path, check_md5=False)


def test_labels_out_of_range(tmp_path):
    write_split(tmp_path, "test", n=3, labels=np.array([1, 2, 12], np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        load_mnist("test", tmp_path, check_md5=False)


def test_wrong_md5(tmp_path):
    write_split(tmp_path, "test", n=4)
    with pytest.raises(ValueError, match="MD5 mismatch"):
        load_mnist("test", tmp_path)  # official MD5 check on by default
    p = tmp_path / FILES["test"][0]
    with pytest.raises(ValueError, match="MD5 mismatch"):
        read_idx(p, expected_md5="0" * 32)
    assert read_idx(p, expected_md5=hashlib.md5(p.read_bytes()).hexdigest()).shape == (4, 28, 28)


def test_missing_files_message_names_folder_and_files(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        load_mnist("train", folder)
    msg = str(e.value)
    assert str(folder) in msg
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    # only one file missing: only that one is named
    write_split(tmp_path, "test", n=2)
    os.remove(tmp_path / FILES["test"][1])
    with pytest.raises(FileNotFoundError) as e:
        load_mnist("test", tmp_path, check_md5=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and "t10k-images" not in str(e.value)
    assert missing_files(tmp_path, ["test"]) == ["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(ValueError, match="unknown MNIST split"):
        load_mnist("validation", tmp_path)


def test_download_offline_names_folder_and_files(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise OSError("network unreachable")
    monkeypatch.setattr(mnist, "_fetch", no_network)
    folder = tmp_path / "dl"
    with pytest.raises(FileNotFoundError) as e:
        download_mnist(folder, ["train"], verbose=False)
    msg = str(e.value)
    assert str(folder) in msg and "train-images-idx3-ubyte.gz" in msg and "network unreachable" in msg
    assert not any(folder.iterdir())  # nothing half-written
    with pytest.raises(FileNotFoundError):
        load_mnist("train", folder, download=True)


def test_download_rejects_corrupt_mirror_and_writes_atomically(tmp_path, monkeypatch):
    """A mirror serving wrong bytes is skipped; a good one is used; only official names remain."""
    good = {n: b"payload-" + n.encode() for n in FILES["test"]}
    monkeypatch.setitem(MD5, FILES["test"][0], hashlib.md5(good[FILES["test"][0]]).hexdigest())
    monkeypatch.setitem(MD5, FILES["test"][1], hashlib.md5(good[FILES["test"][1]]).hexdigest())
    calls = []

    def fake_fetch(url, timeout):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        return b"corrupt" if url.startswith("bad://") else good[name]

    monkeypatch.setattr(mnist, "_fetch", fake_fetch)
    folder = tmp_path / "dl"
    download_mnist(folder, ["test"], mirrors=["bad://m1/", "good://m2/"], verbose=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES["test"])
    for n in FILES["test"]:
        assert (folder / n).read_bytes() == good[n]
    assert len(calls) == 4
    # nothing is fetched again once the files are there
    download_mnist(folder, ["test"], mirrors=["bad://m1/"], verbose=False)
    assert len(calls) == 4


@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_download_from_local_mirror_with_official_md5(tmp_path):
    """The real download path (urllib, MD5, os.replace) against a file:// mirror."""
    folder = tmp_path / "mnist"
    download_mnist(folder, ["test"], mirrors=[SHARED.as_uri() + "/"], verbose=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES["test"])
    x, y = load_mnist("test", folder)
    assert x.shape == (10000, 1, 28, 28)


def test_find_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
    assert find_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert find_data_dir() == tmp_path / "env"
    monkeypatch.delenv(mnist.ENV_VAR)
    expected = SHARED if SHARED.is_dir() else Path(mnist.__file__).resolve().parent.parent / "data" / "mnist"
    assert find_data_dir() == expected


def test_load_flow_data_test_only_split(tmp_path):
    images, labels = write_split(tmp_path, "test", n=50)
    with pytest.raises(ValueError, match="MD5"):
        load_flow_data(tmp_path)
    d = load_flow_data(tmp_path, holdout=10, seed=3, check_md5=False)
    assert d["train_x"].shape == (40, 1, 28, 28) and d["held_x"].shape == (10, 1, 28, 28)
    assert "test split only" in d["description"]
    both = torch.cat([d["train_y"], d["held_y"]]).sort().values
    assert torch.equal(both, torch.from_numpy(labels.astype(np.int64)).sort().values)
    with pytest.raises(ValueError, match="holdout"):
        load_flow_data(tmp_path, holdout=50, check_md5=False)
    with pytest.raises(FileNotFoundError, match="no complete MNIST split"):
        load_flow_data(tmp_path / "empty")


# ----------------------------------------------------------------------------- the offline copy
@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_load_shared_test_split():
    x, y = load_mnist("test", SHARED)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    # the published class counts of the MNIST test split
    assert y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    images, _ = load_mnist_uint8("test", SHARED)
    assert images.dtype == np.uint8 and int(images.sum()) > 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_flow_data_split_is_disjoint_and_documented():
    d = load_flow_data(SHARED, holdout=2000, seed=0)
    if "test split only" not in d["description"]:
        pytest.skip("full MNIST present: the split is train/test")
    assert d["train_x"].shape[0] == 8000 and d["held_x"].shape[0] == 2000
    # disjoint: no held-out image equals a training image at the same pixels
    tr = {hash(r.numpy().tobytes()) for r in d["train_x"][:, 0]}
    he = {hash(r.numpy().tobytes()) for r in d["held_x"][:, 0]}
    assert len(tr & he) < 5  # MNIST has a handful of exact duplicates at most
    d2 = load_flow_data(SHARED, holdout=2000, seed=0)
    assert torch.equal(d["held_y"], d2["held_y"])


# ----------------------------------------------------------------------------- Frechet distance
def test_sqrtm_psd():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    s = a @ a.T
    r = sqrtm_psd(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-10)
    np.testing.assert_allclose(r, r.T, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(r) >= -1e-12)


def test_frechet_commuting_gaussians_closed_form():
    """Same eigenvectors: FD = |dmu|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert gaussian_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_2d_non_commuting_closed_form():
    """2x2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S1 S2 (positive eigenvalues)."""
    s1 = np.array([[2.0, 0.3], [0.3, 0.5]])
    s2 = np.array([[1.0, -0.7], [-0.7, 1.5]])
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 2.0])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert gaussian_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # 1D: (mu1 - mu2)^2 + (s1 - s2)^2 with standard deviations s
    assert gaussian_frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_identical_and_sampled_features():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.from_numpy(f), torch.from_numpy(f.copy())) == pytest.approx(0.0, abs=1e-8)
    # large samples of two known Gaussians approach the closed form
    g1 = rng.normal(size=(200000, 2))
    g2 = rng.normal(size=(200000, 2)) * np.array([2.0, 0.5]) + np.array([1.0, 0.0])
    expected = 1.0 + (1 - 2.0) ** 2 + (1 - 0.5) ** 2
    assert frechet_distance(g1, g2) == pytest.approx(expected, abs=0.05)
    with pytest.raises(ValueError):
        gaussian_frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_evaluate_samples_and_json(tmp_path):
    torch.manual_seed(0)
    clf = MNISTClassifier().eval()
    x = torch.rand(40, 1, 28, 28) * 2 - 1
    y = torch.arange(40) % 10
    m = evaluate_samples(clf, x, y, x, y)
    assert 0.0 <= m["conditional_accuracy"] <= 1.0
    assert set(m["per_class_accuracy"]) == {str(k) for k in range(10)}
    assert m["frechet_distance"] == pytest.approx(0.0, abs=1e-6)  # same images
    p = save_json(tmp_path / "m.json", m)
    import json
    assert json.loads(p.read_text())["n_samples"] == 40
    assert [q.name for q in tmp_path.iterdir()] == ["m.json"]
