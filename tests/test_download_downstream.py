"""Downloads against a real HTTP server on 127.0.0.1; downstream labels and probe vs hand-worked values."""

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
from plmscale.download import download
from plmscale.downstream import binary_metrics, fit_logistic, max_window_hydropathy


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "p.fasta").write_bytes(b">a\nMKV\n>b\nMKL\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_verifies_and_renames(server, tmp_path):
    url, root = server
    body = (root / "p.fasta").read_bytes()
    out = tmp_path / "x.fasta"
    info = download(f"{url}/p.fasta", out, sha256=hashlib.sha256(body).hexdigest())
    assert out.read_bytes() == body
    assert info["bytes"] == len(body) and info["md5"] == hashlib.md5(body).hexdigest()


def test_wrong_checksum_fails_and_leaves_nothing(server, tmp_path):
    url, _ = server
    out = tmp_path / "x.fasta"
    with pytest.raises(ValueError, match=r"checksum mismatch .* sha256 is"):
        download(f"{url}/p.fasta", out, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(server, tmp_path):
    url, _ = server
    with pytest.raises(OSError, match="404"):
        download(f"{url}/missing.fasta", tmp_path / "x.fasta", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_file_urls_and_missing_checksum(server, tmp_path):
    _, root = server
    body = (root / "p.fasta").read_bytes()
    download(f"file://{root}/p.fasta", tmp_path / "y.fasta", md5=hashlib.md5(body).hexdigest())
    assert (tmp_path / "y.fasta").read_bytes() == body
    with pytest.raises(ValueError, match="no sha256 or md5"):
        download(f"file://{root}/p.fasta", tmp_path / "z.fasta")
    with pytest.raises(ValueError, match="scheme 'ftp'"):
        download("ftp://example.org/x", tmp_path / "z.fasta", md5="0" * 32)


def test_hydropathy_window_hand_worked():
    # I = 4.5, K = -3.9; window 3 over "KIIIK": windows KII (1.7), III (4.5), IIK (1.7)
    assert max_window_hydropathy("KIIIK", 3) == pytest.approx(4.5)
    assert max_window_hydropathy("KI", 19) == pytest.approx((4.5 - 3.9) / 2)
    # a 19-residue leucine stretch (3.8) is a transmembrane segment; a lysine-rich one is not
    assert max_window_hydropathy("K" * 30 + "L" * 19 + "K" * 30, 19) == pytest.approx(3.8)
    assert max_window_hydropathy("K" * 50, 19) < 1.6


def test_binary_metrics_hand_worked():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([1, 0, 0, 0, 1])
    m = binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx(0.5 * (1 / 2 + 2 / 3))
    # MCC = (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (1*2 - 1*1) / sqrt(2*2*3*3) = 1/6
    assert m["mcc"] == pytest.approx(1 / 6)


def test_logistic_probe_separates_separable_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] > 0).astype(int)
    w, b = fit_logistic(x, y, l2=1e-4)
    assert np.mean(((x @ w + b) > 0) == y) > 0.97
    assert w[0] > 0 > w[1] and abs(w[2]) < abs(w[1])
