"""Links and depth in the archive's tree: judged against the directory that becomes the
version, followed as the kernel follows them, never on disk (issue 20)."""

import tarfile

import pytest

from receiver.config import Limits
from receiver.errors import ArchiveError
from tests.unpack.archives import entry, tar_of, unpack


@pytest.fixture
def staging(tmp_path):
    (tmp_path / "outer" / "staging").mkdir(parents=True)
    return tmp_path / "outer" / "staging"


def model_with(*members: tuple[tarfile.TarInfo, bytes | None], top: str = "00000123") -> bytes:
    return tar_of((entry(f"{top}/saved_model.pb"), b"graph"), *members)


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("00000123/up", ".."),  # the model's directory once installed
        ("00000123/assets/up", "../.."),
        ("00000123/assets/esc", "../../1/up/.."),  # through another version's link
        ("00000123/here", "../00000123/saved_model.pb"),  # out and back in: still out
    ],
    ids=["up", "assets-up", "through-other-version", "out-and-back"],
)
def test_a_link_out_of_the_single_top_level_directory_is_refused(staging, name, target):
    with pytest.raises(ArchiveError, match="outside the model version"):
        unpack(model_with((entry(name, tarfile.SYMTYPE, target), None)), staging, "tar.gz")


def test_a_link_out_of_the_version_through_other_links_is_refused(staging):
    with pytest.raises(ArchiveError, match="through other links"):
        unpack(
            model_with(
                (entry("00000123/assets/d", tarfile.DIRTYPE), None),
                (entry("00000123/assets/d/parent", tarfile.SYMTYPE, ".."), None),
                # lexically 00000123/assets; followed, `parent` is assets, so `../..` is out
                (entry("00000123/esc", tarfile.SYMTYPE, "assets/d/parent/../.."), None),
            ),
            staging,
            "tar.gz",
        )


def test_links_within_the_version_are_kept_through_other_links(staging):
    unpack(
        model_with(
            (entry("00000123/assets/vocab.txt"), b"words"),
            (entry("00000123/assets/d", tarfile.DIRTYPE), None),
            (entry("00000123/assets/d/up", tarfile.SYMTYPE, ".."), None),
            (entry("00000123/vocab", tarfile.SYMTYPE, "assets/d/up/vocab.txt"), None),
            (entry("00000123/dangling", tarfile.SYMTYPE, "assets/missing"), None),
        ),
        staging,
        "tar.gz",
    )
    assert (staging / "00000123/vocab").read_bytes() == b"words"


def link_chain(length: int) -> bytes:
    """`l1 -> saved_model.pb`, `l2 -> l1`, ...: opening the last follows `length` links."""
    links = [(entry("m/l1", tarfile.SYMTYPE, "saved_model.pb"), None)]
    links += [(entry(f"m/l{i}", tarfile.SYMTYPE, f"l{i - 1}"), None) for i in range(2, length + 1)]
    return model_with(*links, top="m")


def test_a_chain_of_as_many_links_as_the_kernel_follows_is_kept(staging):
    unpack(link_chain(40), staging, "tar.gz")
    assert (staging / "m/l40").read_bytes() == b"graph"  # the kernel follows it too


@pytest.mark.parametrize("length", [41, 2000])
def test_a_chain_of_more_links_than_the_kernel_follows_is_refused(staging, length):
    limits = Limits(max_unpacked_bytes=1024**3, max_files=10_000, max_ratio=200)
    with pytest.raises(ArchiveError, match="more than 40 links"):
        unpack(link_chain(length), staging, "tar.gz", limits)


def test_a_link_loop_is_refused(staging):
    with pytest.raises(ArchiveError, match="loop|more than 40 links"):
        unpack(
            model_with(
                (entry("m/a", tarfile.SYMTYPE, "b"), None),
                (entry("m/b", tarfile.SYMTYPE, "a"), None),
                top="m",
            ),
            staging,
            "tar.gz",
        )


def test_entries_deeper_than_the_depth_limit_are_refused(staging):
    deep = "m/" + "d/" * 64 + "f"
    with pytest.raises(ArchiveError, match="more than 64 levels deep"):
        unpack(tar_of((entry(deep), b"x")), staging, "tar.gz")


def test_entries_at_the_depth_limit_unpack(staging):
    deep = "m/" + "d/" * 62 + "f"
    unpack(tar_of((entry(deep), b"x")), staging, "tar.gz")
    assert (staging / deep).read_bytes() == b"x"


@pytest.mark.parametrize("target", ["missing/../..", "saved_model.pb/../.."])
def test_a_link_that_climbs_out_past_a_missing_or_file_step_is_refused(staging, target):
    """The kernel would stop at the missing step; refusing the climb costs nothing real."""
    with pytest.raises(ArchiveError, match="outside the model version"):
        unpack(
            model_with((entry("m/x", tarfile.SYMTYPE, target), None), top="m"), staging, "tar.gz"
        )
