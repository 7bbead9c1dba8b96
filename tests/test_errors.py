"""fastgan/errors.py: how the command lines quote a cause in one line."""

from __future__ import annotations

from fastgan.errors import first_line


def test_a_long_cause_ends_at_a_sentence_or_a_word_never_inside_one():
    torch_says = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. "
                              "This is an internal miniz error. If you are seeing this, the file is likely "
                              "truncated or corrupt, please check it.\nmore detail")
    assert first_line(torch_says, limit=100) == ("PytorchStreamReader failed reading zip archive: failed finding "
                                                 "central directory.")
    no_sentence = ValueError("word " * 60)
    quoted = first_line(no_sentence, limit=50)
    assert quoted.endswith("word ...") and len(quoted) <= 50
    assert first_line(ValueError("short\nsecond line")) == "short"
    abbreviated = ValueError("expected a float tensor, e.g. torch.float32, " + "and more words " * 10)
    assert first_line(abbreviated, limit=80).startswith("expected a float tensor, e.g. torch.float32, and more")
    assert first_line(KeyError()) == "KeyError"


def test_a_folder_that_cannot_be_made_is_said_before_anything_is_made(tmp_path):
    from fastgan.errors import folder_problem

    (tmp_path / "afile").write_text("")
    assert folder_problem(str(tmp_path / "afile" / "run")) == f"{tmp_path / 'afile'} is a file, not a folder"
    assert folder_problem(str(tmp_path / "afile")) == f"{tmp_path / 'afile'} is a file, not a folder"
    assert folder_problem(str(tmp_path / "new" / "nested")) is None
    assert not (tmp_path / "new").exists()
    assert folder_problem(str(tmp_path)) is None
    (tmp_path / "gone").symlink_to(tmp_path / "nothing")
    assert folder_problem(str(tmp_path / "gone" / "run")) == f"{tmp_path / 'gone'} is a link to nothing"


def test_a_command_lines_warnings_are_one_line_each():
    import warnings

    from fastgan.cli import warnings_in_one_line

    saved = warnings.formatwarning
    try:
        warnings_in_one_line()
        assert warnings.formatwarning("a.png holds grayscale values", UserWarning, "x.py", 3, "code") == \
            "warning: a.png holds grayscale values\n"
    finally:
        warnings.formatwarning = saved


def test_naming_adds_the_path_only_to_an_error_without_one():
    import errno

    import pytest

    from fastgan.errors import naming

    with pytest.raises(OSError) as e, naming("/run/x.pth"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, "/run/x.pth")
    plain = OSError("a message of its own")  # no strerror: left as it is
    with pytest.raises(OSError) as e, naming("/run/x.pth"):
        raise plain
    assert e.value is plain
