"""Verified downloads, tested against a file server on 127.0.0.1 (the standard library's http.server in a thread):
a good file, an interrupted transfer, a checksum mismatch, a wrong file already there; offline, one line."""
import dataclasses
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch

from ddim_bench import downloads
from ddim_bench.downloads import Remote, ensure
from ddim_bench.errors import UserError
from ddim_bench.scoring.extractors import features as F
from ddim_bench.scoring import metrics as M
from ddim_bench.models import checkpoint

GOOD = os.urandom(300_000)


class Files(http.server.BaseHTTPRequestHandler):
    """``/good`` the file; ``/cut`` its first third, then the connection closes (Content-Length says all of it);
    ``/flaky`` cut on the first request only; ``/wrong`` other bytes of the same size."""
    routes: dict = {}
    hits: dict = {}

    def do_GET(self):
        name = self.path.lstrip("/")
        n = Files.hits[name] = Files.hits.get(name, 0) + 1
        body = Files.routes.get(name)
        if body is None:
            self.send_error(404)
            return
        cut = name == "cut" or (name == "flaky" and n == 1)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3] if cut else body)
        self.wfile.flush()
        if cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    Files.routes.update(good=GOOD, cut=GOOD, flaky=GOOD, wrong=os.urandom(len(GOOD)))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    Files.hits.clear()
    monkeypatch.setattr(downloads, "_CHECKED", {})


def remote(server, route):
    return Remote("file.bin", f"{server}/{route}", "the test file", sha256_prefix=hashlib.sha256(GOOD).hexdigest())


def listing(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


def test_a_good_file_is_fetched_checked_and_renamed_once(server, tmp_path, capfd):
    path = str(tmp_path / "w" / "file.bin")
    assert ensure(path, remote(server, "good"), True, "missing") == path
    assert open(path, "rb").read() == GOOD and listing(tmp_path / "w") == ["file.bin"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    ensure(path, remote(server, "good"), True, "missing")
    assert Files.hits == {"good": 1}, "a checked file is not fetched again"
    assert "fetching the test file (0 MB) from" in capfd.readouterr().err


def test_an_interrupted_transfer_is_tried_again_and_leaves_nothing_half_written(server, tmp_path):
    path = str(tmp_path / "file.bin")
    ensure(path, remote(server, "flaky"), True, "missing")
    assert open(path, "rb").read() == GOOD and Files.hits == {"flaky": 2} and listing(tmp_path) == ["file.bin"]
    os.remove(path)
    with pytest.raises(UserError) as err:
        ensure(path, remote(server, "cut"), True, "file.bin is missing (download: URL); put it at PATH")
    msg = str(err.value)
    assert msg.startswith("file.bin is missing (download: URL); put it at PATH (download failed: the transfer")
    assert f"stopped after 100,000 of {len(GOOD):,} bytes" in msg and "\n" not in msg
    assert Files.hits["cut"] == downloads.ATTEMPTS and listing(tmp_path) == []


def test_a_checksum_mismatch_is_refused_without_a_trace(server, tmp_path):
    path = str(tmp_path / "file.bin")
    with pytest.raises(UserError, match=r"\(download failed: http://127.0.0.1:\d+/wrong gave a file that is not "
                                        r"the test file: its sha256 starts [0-9a-f]+, not [0-9a-f]+\)$"):
        ensure(path, remote(server, "wrong"), True, "missing")
    assert Files.hits == {"wrong": 1} and listing(tmp_path) == []


def test_a_wrong_or_truncated_file_is_named_moved_aside_and_fetched_again(server, tmp_path, capfd):
    path = tmp_path / "file.bin"
    path.write_bytes(GOOD[:1000])
    ensure(str(path), remote(server, "good"), True, "missing")
    assert path.read_bytes() == GOOD
    (aside,) = (tmp_path / "corrupt").iterdir()
    assert aside.read_bytes() == GOOD[:1000] and aside.name.endswith("-file.bin")
    assert f"warning: {path} is not the test file (its sha256 starts" in capfd.readouterr().err
    path.write_bytes(b"x")
    with pytest.raises(UserError, match=r"the file there was not it: .* moved to .*corrupt.*; or set download=true$"):
        ensure(str(path), remote(server, "good"), False, "missing")
    assert not path.exists() and len(list((tmp_path / "corrupt").iterdir())) == 2


def test_offline_the_line_names_the_file_its_url_and_where_to_put_it(tmp_path):
    cfg = {"extractor": "inception-v3-compat", "weights_path": str(tmp_path / F.INCEPTION_WEIGHTS_FILE)}
    with pytest.raises(M.MissingWeightsError) as err:
        M.check_extractor(cfg, download=False)
    assert str(err.value) == (
        f"metrics.extractor=inception-v3-compat needs torch-fidelity's InceptionV3 weights file "
        f"{F.INCEPTION_WEIGHTS_FILE} (download: {F.INCEPTION_REMOTE.url}); put it at {cfg['weights_path']} "
        f"(metrics.weights_path); or set download=true")
    unreachable = dataclasses.replace(F.INCEPTION_REMOTE, url="http://127.0.0.1:9/none")
    with pytest.raises(UserError, match=r"put it at .* \(download failed: .*refused.*\)$"):
        ensure(cfg["weights_path"], unreachable, True, "put it at PATH")
    assert listing(tmp_path) == []


def test_the_known_files_are_checked_against_their_published_checksums(server, tmp_path, monkeypatch):
    """Inception: the sha256 prefix in its name; the DDPM checkpoint: the DDIM code's MD5; DINOv2: a load check."""
    assert F.INCEPTION_REMOTE.sha256_prefix == "6726825d"
    assert checkpoint.OFFICIAL_CIFAR10.md5 == ("1fa350b952534ae442b1d5235cce5cd3",)
    monkeypatch.setattr(F, "INCEPTION_REMOTE", dataclasses.replace(F.INCEPTION_REMOTE, url=f"{server}/wrong"))
    weights = tmp_path / "weights" / F.INCEPTION_WEIGHTS_FILE
    with pytest.raises(M.MissingWeightsError, match=r"download failed: .* not torch-fidelity's InceptionV3 weights "
                                                     r"file: its sha256 starts [0-9a-f]{8}, not 6726825d"):
        M.check_extractor({"extractor": "inception-v3-compat", "weights_path": str(weights)}, download=True)
    monkeypatch.setattr(checkpoint, "OFFICIAL_CIFAR10", dataclasses.replace(checkpoint.OFFICIAL_CIFAR10,
                                                                            url=f"{server}/good"))
    ckpt = tmp_path / "weights" / "model-790000.ckpt"
    with pytest.raises(UserError, match=r"^checkpoint=.*model-790000.ckpt is missing: it is the official DDPM "
                                        r"CIFAR-10 EMA checkpoint .* its MD5 is [0-9a-f]{32}, not 1fa350b9"):
        checkpoint.load(str(ckpt), download=True)
    Files.routes["vit"] = _saved({"cls_token": torch.zeros(1, 1, 384)})
    dino = dataclasses.replace(F.dinov2_remote("s"), url=f"{server}/vit")
    with pytest.raises(UserError, match=r"not the DINOv2 weights file: its tensors are not those of the ViT-S/14"):
        ensure(str(tmp_path / dino.name), dino, True, "missing")
    assert listing(tmp_path) == []


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_cifar10_is_fetched_md5_checked_and_extracted(server, tmp_path, monkeypatch):
    """torchvision's own layout and MD5 constants, here for a small archive of the same layout."""
    from torchvision.datasets import CIFAR10

    from ddim_bench.data.modules import Cifar10DataModule
    members, lists = {}, {"train_list": [], "test_list": []}
    for name, n in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 2)]:
        data = np.random.default_rng(len(members)).integers(0, 256, (n, 3072), dtype=np.uint8)
        members[name] = pickle.dumps({"data": data, "labels": [0] * n})
        lists["test_list" if name == "test_batch" else "train_list"].append(
            [name, hashlib.md5(members[name]).hexdigest()])
    members["batches.meta"] = pickle.dumps({"label_names": [str(i) for i in range(10)]})
    meta = {**CIFAR10.meta, "md5": hashlib.md5(members["batches.meta"]).hexdigest()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"{CIFAR10.base_folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    Files.routes["cifar.tgz"] = buf.getvalue()
    for key, value in dict(url=f"{server}/cifar.tgz", tgz_md5=hashlib.md5(buf.getvalue()).hexdigest(),
                           meta=meta, **lists).items():
        monkeypatch.setattr(CIFAR10, key, value)
    root = tmp_path / "cifar10"
    with pytest.raises(UserError, match=r"holds no CIFAR-10 .*cifar.tgz.*; or set download=true$"):
        Cifar10DataModule(str(root), download=False).dataset("train")
    dm = Cifar10DataModule(str(root))
    assert len(dm.dataset("train")) == 15 and len(dm.dataset("test")) == 2 and Files.hits == {"cifar.tgz": 1}
    assert dm.dataset("test")[0][0].shape == (3, 32, 32)
