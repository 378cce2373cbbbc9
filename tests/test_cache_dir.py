"""rsseg.io.cache_dir: the one user cache directory (ONNX exports, dataset statistics)."""

from pathlib import Path

from rsseg.io import cache_dir


def test_cache_dir_order(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RSSEG_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "rsseg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rsseg"
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    # an empty variable counts as unset
    monkeypatch.setenv("RSSEG_CACHE_DIR", "")
    assert cache_dir() == tmp_path / "xdg" / "rsseg"
    assert not (tmp_path / "xdg").exists()  # nothing is created by asking


def test_both_caches_use_it(tmp_path, monkeypatch) -> None:
    from rsseg.data.stats import cache_path
    from rsseg.inference.engines import onnx_cache_paths

    monkeypatch.delenv("RSSEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path(tmp_path / "data", "k").parent == tmp_path / "xdg" / "rsseg"
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights")
    assert onnx_cache_paths(ckpt)[1].parent == Path(tmp_path / "xdg" / "rsseg" / "onnx")
