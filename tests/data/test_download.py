"""python -m fastgan.data download: a local HTTP server (the `server` fixture,
tests/local_http_server.py) serves archives the tests build."""

from __future__ import annotations

import io
import re
import socket
import tarfile
import zipfile

import pytest

from fastgan.data import DatasetError
from fastgan.data.__main__ import main as cli_main
from fastgan.data.download import download, source


def zip_archive(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for folder in ("trainA", "trainB", "testA", "testB"):
            for i in range(3):
                z.writestr(f"{name}/{folder}/{i}.jpg", bytes(range(256)) * 40 + folder.encode())
    return buf.getvalue()


def tar_archive(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for folder in ("train", "val", "test"):
            data = folder.encode() * 100
            info = tarfile.TarInfo(f"{name}/{folder}/1.jpg")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_published_addresses():
    assert source("horse2zebra") == ("cyclegan", "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip")
    assert source("facades") == ("pix2pix", "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz")
    assert source("facades", "cyclegan")[1].endswith("/cyclegan/datasets/facades.zip")
    assert source("edges2shoes")[1] == "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/edges2shoes.tar.gz"
    with pytest.raises(DatasetError, match="no dataset 'horse2cat'; the cyclegan datasets are apple2orange.*"
                                           "; the pix2pix datasets are facades"):
        source("horse2cat")
    with pytest.raises(DatasetError, match="no pix2pix dataset 'horse2zebra'; the pix2pix datasets are facades"):
        source("horse2zebra", "pix2pix")
    with pytest.raises(DatasetError, match="--host 'notaurl' is not an http"):
        source("facades", host="notaurl")
    for name in ("mini", "mini_pix2pix", "mini_colorization", "grumpifycat"):  # the script takes them too
        assert source(name) == ("cyclegan", f"http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip")


def test_mini_pix2pix_comes_as_a_zip_of_aligned_folders(server, tmp_path):
    handler, host = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for folder in ("train", "test"):
            z.writestr(f"mini_pix2pix/{folder}/1.jpg", folder.encode() * 100)
    handler.files["/cyclegan/datasets/mini_pix2pix.zip"] = buf.getvalue()
    said = []
    target = download("mini_pix2pix", str(tmp_path), host=host, log=said.append)
    assert sorted(p.name for p in (tmp_path / "mini_pix2pix").iterdir()) == [".fastgan_download", "test", "train"]
    assert said == [f"mini_pix2pix (cyclegan) is in {target}: train, test"]
    download("mini_pix2pix", str(tmp_path), host=host, log=said.append)  # no val/, and complete: no request
    assert len(handler.log) == 1 and said[-1] == f"{target} already holds train, test; nothing to download"


def test_a_folder_holding_part_of_the_layout_is_said_and_left_alone(server, tmp_path):
    """trainA alone (put there by hand, a copy cut short, or an archive without the rest) was
    taken for the set without a word; it is now said, with how to download the set again. A
    folder with every folder of the layout (as the reference's script leaves a set) is taken."""
    handler, host = server
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = zip_archive("horse2zebra")
    (tmp_path / "horse2zebra" / "trainA").mkdir(parents=True)
    said = []
    target = download("horse2zebra", str(tmp_path), host=host, log=said.append)
    assert said == [f"note: {target} holds trainA but not trainB, testA, testB (the horse2zebra archive may lack "
                    f"them), and no finished download of it; nothing downloaded: move {target} away to download "
                    "horse2zebra again"]
    assert handler.log == []
    for folder in ("trainA", "trainB", "testA", "testB"):
        (tmp_path / "apple2orange" / folder).mkdir(parents=True)
    download("apple2orange", str(tmp_path), host=host, log=said.append)
    assert handler.log == [] and said[-1].endswith("already holds trainA, trainB, testA, testB; nothing to download")


def test_the_two_forms_of_facades_share_its_folder(server, tmp_path):
    """The marker names the archive unpacked: the pix2pix form there does not stand for the
    cyclegan one (its marker said "complete" for either)."""
    handler, host = server
    handler.files["/pix2pix/datasets/facades.tar.gz"] = tar_archive("facades")
    handler.files["/cyclegan/datasets/facades.zip"] = zip_archive("facades")
    download("facades", str(tmp_path), host=host, log=lambda m: None)
    download("facades", str(tmp_path), arch="cyclegan", host=host, log=lambda m: None)
    assert [path for path, _ in handler.log] == ["/pix2pix/datasets/facades.tar.gz", "/cyclegan/datasets/facades.zip"]
    assert sorted(p.name for p in (tmp_path / "facades").iterdir()) == \
        [".fastgan_download", "test", "testA", "testB", "train", "trainA", "trainB", "val"]
    said = []
    download("facades", str(tmp_path), host=host, log=said.append)  # every pix2pix folder is there
    assert len(handler.log) == 2 and said[-1].endswith("already holds train, val, test; nothing to download")


def test_resumes_a_partial_download_and_unpacks_the_layout(server, tmp_path):
    handler, host = server
    archive = zip_archive("horse2zebra")
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = archive
    half = len(archive) // 2
    (tmp_path / "horse2zebra.zip.part").write_bytes(archive[:half])  # an earlier, interrupted run
    target = download("horse2zebra", str(tmp_path), host=host, log=lambda m: None)
    assert handler.log == [("/cyclegan/datasets/horse2zebra.zip", f"bytes={half}-")]
    assert sorted(p.name for p in (tmp_path / "horse2zebra").iterdir()) == \
        [".fastgan_download", "testA", "testB", "trainA", "trainB"]
    assert (tmp_path / "horse2zebra" / "trainB" / "2.jpg").read_bytes().endswith(b"trainB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["horse2zebra"]  # archive and .part removed
    assert target == str(tmp_path / "horse2zebra")
    said = []
    download("horse2zebra", str(tmp_path), host=host, log=said.append)  # already there: no request
    assert len(handler.log) == 1 and "already holds trainA, trainB, testA, testB" in said[0]


def test_an_unpack_cut_short_is_done_again_from_the_kept_archive(server, tmp_path):
    handler, host = server
    (tmp_path / "horse2zebra.zip").write_bytes(zip_archive("horse2zebra"))  # downloaded in full
    (tmp_path / "horse2zebra" / "trainA").mkdir(parents=True)  # an earlier run stopped moving the folders
    (tmp_path / "horse2zebra" / "trainA" / "0.jpg").write_bytes(b"cut")
    download("horse2zebra", str(tmp_path), host=host, log=lambda m: None)
    assert handler.log == []  # the archive was complete: nothing fetched
    assert sorted(p.name for p in (tmp_path / "horse2zebra").iterdir()) == \
        [".fastgan_download", "testA", "testB", "trainA", "trainB"]
    assert sorted(p.name for p in (tmp_path / "horse2zebra" / "trainA").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert (tmp_path / "horse2zebra" / "trainA" / "0.jpg").read_bytes().endswith(b"trainA")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["horse2zebra"]


def test_a_short_download_is_refused_then_resumed(server, tmp_path):
    handler, host = server
    archive = tar_archive("facades")
    handler.files["/pix2pix/datasets/facades.tar.gz"] = archive
    handler.cut_after = 100  # the connection drops after 100 bytes
    with pytest.raises(DatasetError, match=r"stopped at 100 of \d+ bytes; run the command again to resume"):
        download("facades", str(tmp_path), host=host)
    assert (tmp_path / "facades.tar.gz.part").stat().st_size == 100
    download("facades", str(tmp_path), host=host, log=lambda m: None)
    assert handler.log[-1][1] == "bytes=100-"
    assert sorted(p.name for p in (tmp_path / "facades").iterdir()) == [".fastgan_download", "test", "train", "val"]


def test_complete_part_file_and_bad_archives(server, tmp_path):
    handler, host = server
    archive = zip_archive("maps")
    handler.files["/cyclegan/datasets/maps.zip"] = archive
    (tmp_path / "maps.zip.part").write_bytes(archive)  # downloaded in full, stopped before unpacking
    download("maps", str(tmp_path), arch="cyclegan", host=host, log=lambda m: None)
    assert handler.log[-1][1] == f"bytes={len(archive)}-"  # answered 416: nothing left to fetch
    assert (tmp_path / "maps" / "trainA").is_dir()
    handler.files["/cyclegan/datasets/monet2photo.zip"] = b"not a zip file"
    with pytest.raises(DatasetError, match="cannot unpack .*monet2photo.zip"):
        download("monet2photo", str(tmp_path), host=host)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../escape.txt", "x")
    handler.files["/cyclegan/datasets/vangogh2photo.zip"] = buf.getvalue()
    with pytest.raises(DatasetError, match="member outside its folder"):
        download("vangogh2photo", str(tmp_path), host=host)
    assert not (tmp_path.parent / "escape.txt").exists()
    with pytest.raises(DatasetError, match="HTTP 404"):
        download("apple2orange", str(tmp_path), host=host)


def test_a_part_file_longer_than_the_archive_is_downloaded_again(server, tmp_path):
    """The server answers its Range with 416 and a smaller total: the .part (of an archive since
    replaced, or damaged) cannot be resumed, so it is fetched anew instead of failing every run."""
    handler, host = server
    archive = zip_archive("horse2zebra")
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = archive
    (tmp_path / "horse2zebra.zip.part").write_bytes(archive + b"100 bytes too many" * 6)
    said = []
    download("horse2zebra", str(tmp_path), host=host, log=said.append)
    assert [r for _, r in handler.log] == [f"bytes={len(archive) + 108}-", None]
    assert f"cannot be resumed: it holds {len(archive) + 108} bytes, http" in said[0]
    assert f"has {len(archive)}; downloading it again" in said[0]
    assert sorted(p.name for p in (tmp_path / "horse2zebra").iterdir()) == \
        [".fastgan_download", "testA", "testB", "trainA", "trainB"]


def test_a_chunked_answer_cut_short_or_not_http_is_one_clear_line(server, tmp_path, capsys):
    handler, host = server
    handler.raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 4096
                   + b"x" * 2048)  # a chunk announced, half of it sent, the connection closed
    args = ["download", "horse2zebra", "--root", str(tmp_path), "--host", host]
    with pytest.raises(SystemExit) as e:
        cli_main(args)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the progress bar)
    assert e.value.code == 2 and err.startswith("error: downloading http") and "broke off (IncompleteRead" in err
    assert "run the command again to resume" in err
    handler.raw = b""  # the connection closed before any answer: the network's fault, not the host's
    (tmp_path / "horse2zebra.zip.part").unlink()
    with pytest.raises(SystemExit) as e:
        cli_main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: cannot reach http") and "closed connection" in err
    handler.raw = b"not an HTTP answer\r\n\r\n"
    with pytest.raises(SystemExit) as e:
        cli_main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert "failed: the server's answer is not HTTP (BadStatusLine" in err and err.endswith("check --host")


def test_ctrl_c_keeps_what_arrived_for_the_resume(server, tmp_path, capsys):
    """Ctrl-C while the server is slow: the bytes received are in the .part file (a read waited
    for a whole MiB, and lost what had come), and the command says how to resume, exit 130."""
    import os
    import signal
    import threading

    handler, host = server
    archive = zip_archive("horse2zebra")
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = archive
    handler.stall_after = 100
    part = tmp_path / "horse2zebra.zip.part"
    interrupt = threading.Thread(target=lambda: (_wait_for_size(part, 100), os.kill(os.getpid(), signal.SIGINT)))
    interrupt.start()
    with pytest.raises(SystemExit) as e:
        cli_main(["download", "horse2zebra", "--root", str(tmp_path), "--host", host])
    interrupt.join()
    err = capsys.readouterr().err  # (before the stalled answer ends, into a closed connection)
    handler.resume.set()
    assert e.value.code == 130 and part.stat().st_size == 100
    assert err.strip().endswith("interrupted: run the command again to resume the download")
    download("horse2zebra", str(tmp_path), host=host, log=lambda m: None)
    assert handler.log[-1][1] == "bytes=100-"
    assert (tmp_path / "horse2zebra" / "trainB" / "2.jpg").read_bytes().endswith(b"trainB")


def _wait_for_size(path, size: int, seconds: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (path.exists() and path.stat().st_size >= size):
        time.sleep(0.01)


def test_offline_is_one_clear_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit) as e:
        cli_main(["download", "horse2zebra", "--root", str(tmp_path), "--host", f"http://127.0.0.1:{port}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach http://127.0.0.1:") and "are you offline?" in err
    assert "\n" not in err


@pytest.mark.parametrize("filtered", [True, False], ids=["data_filter", "python_before_it"])
@pytest.mark.parametrize("bad", ["outside", "symlink"])
def test_a_tar_member_leaving_the_folder_or_a_link_is_refused(server, tmp_path, monkeypatch, bad, filtered):
    if not filtered:  # Python 3.10.11 / 3.11.3 and before have no tarfile.data_filter
        monkeypatch.delattr(tarfile, "data_filter")
    handler, host = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("facades/train/1.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"jpg"))
        info = tarfile.TarInfo("../escape.txt" if bad == "outside" else "facades/train/link.jpg")
        if bad == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 1
        t.addfile(info, io.BytesIO(b"x") if bad == "outside" else None)
    handler.files["/pix2pix/datasets/facades.tar.gz"] = buf.getvalue()
    with pytest.raises(DatasetError, match="refused|cannot unpack"):
        download("facades", str(tmp_path / "root"), host=host, log=lambda m: None)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "root" / "facades").exists()


def test_a_second_download_of_a_dataset_says_the_first_is_running(server, tmp_path):
    """Two at once appended to one .part, and the first to finish renamed it away from the
    other: all failed ('stopped at 5666212 of 2883106 bytes'). The lock goes with its end."""
    from tests.test_file_lock import hold_in_another_process

    handler, host = server
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = zip_archive("horse2zebra")
    holder = hold_in_another_process(str(tmp_path / ".horse2zebra.download.lock"))
    try:
        with pytest.raises(DatasetError, match=rf"another download of horse2zebra into {re.escape(str(tmp_path))} is running "
                                               rf"\(pid {holder.pid} on .*\); wait for it to end"):
            download("horse2zebra", str(tmp_path), host=host, log=lambda m: None)
        assert handler.log == []
    finally:
        holder.kill()
        holder.wait()
    download("horse2zebra", str(tmp_path), host=host, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["horse2zebra"]  # no lock file left


def test_what_a_killed_unpack_left_is_removed_by_the_next_download_of_that_dataset(server, tmp_path):
    handler, host = server
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = zip_archive("horse2zebra")
    (tmp_path / ".unpack-horse2zebra-k1ll3d" / "horse2zebra").mkdir(parents=True)  # SIGKILLed mid-unpack
    (tmp_path / ".unpack-maps-l1ve").mkdir()  # another dataset's, under its own lock: left alone
    said = []
    download("horse2zebra", str(tmp_path), host=host, log=said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".unpack-maps-l1ve", "horse2zebra"]
    assert f"removed {tmp_path / '.unpack-horse2zebra-k1ll3d'}, left by an unpack that was stopped" in said


def test_a_set_already_there_takes_no_lock_and_a_lock_file_it_may_not_open_is_passed_over(server, tmp_path,
                                                                                           monkeypatch):
    """On a read-only datasets folder a complete set failed on its lock file ('Read-only file
    system') where it said there was nothing to download; another user's lock file in a shared
    folder (mode 0644) cannot be opened: the download goes on unlocked."""
    import sys

    module = sys.modules["fastgan.data.download"]  # (fastgan.data.download is also the function's name)

    handler, host = server
    handler.files["/cyclegan/datasets/horse2zebra.zip"] = zip_archive("horse2zebra")

    def not_permitted(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(module, "take_lock", not_permitted)
    download("horse2zebra", str(tmp_path), host=host, log=lambda m: None)  # unlocked
    assert len(handler.log) == 1

    monkeypatch.setattr(module, "take_lock", lambda path: pytest.fail("locked with nothing to download"))
    said = []
    download("horse2zebra", str(tmp_path), host=host, log=said.append)
    assert len(handler.log) == 1 and "already holds trainA, trainB, testA, testB; nothing to download" in said[0]


def test_a_resume_after_the_file_changed_on_the_server_downloads_the_new_one_whole(server, tmp_path):
    """A file replaced on the server by one of the same size between a cut and the resume: the
    resume asks with If-Range (the first answer's ETag), gets the whole new file and keeps it
    alone, not the old one's start joined to the new one's rest (which the size check passes)."""
    import sys

    fetch = sys.modules["fastgan.data.download"].fetch
    handler, host = server
    old, new = bytes(range(256)) * 40, bytes(reversed(range(256))) * 40
    handler.files["/f.zip"] = old
    handler.cut_after = 1000
    part = tmp_path / "f.zip.part"
    with pytest.raises(DatasetError, match="stopped at 1000 of 10240 bytes"):
        fetch(f"{host}/f.zip", str(part), log=lambda m: None)
    handler.files["/f.zip"] = new
    said = []
    fetch(f"{host}/f.zip", str(part), log=said.append)
    assert part.read_bytes() == new
    assert handler.log[-1][1] == "bytes=1000-" and "answered with the whole file" in said[0]
    assert not (tmp_path / "f.zip.part.validator").exists()
    handler.files["/f.zip"] = old  # unchanged between the cut and the resume: the rest, resumed
    part.unlink()
    handler.cut_after = 1000
    with pytest.raises(DatasetError):
        fetch(f"{host}/f.zip", str(part), log=lambda m: None)
    fetch(f"{host}/f.zip", str(part), log=said.append)
    assert part.read_bytes() == old and len(said) == 1


def test_a_resume_from_a_server_with_weak_etags_asks_by_date(server, tmp_path):
    """If-Range takes no weak ETag (RFC 9110): a server answers a Range with one in it with the
    whole file, every time. The resume names the Last-Modified date instead, and resumes."""
    import sys

    fetch = sys.modules["fastgan.data.download"].fetch
    handler, host = server
    handler.weak_etag = True
    data = bytes(range(256)) * 40
    handler.files["/f.zip"] = data
    handler.cut_after = 1000
    part = tmp_path / "f.zip.part"
    with pytest.raises(DatasetError, match="stopped at 1000 of 10240 bytes"):
        fetch(f"{host}/f.zip", str(part), log=lambda m: None)
    said = []
    fetch(f"{host}/f.zip", str(part), log=said.append)
    assert part.read_bytes() == data and handler.log[-1][1] == "bytes=1000-"
    assert not any("whole file" in line for line in said), said
