"""Read the regular files of a tar archive in order from a sequential byte stream.

Python's ``tarfile`` parses each 512-byte header through a general object model; reading shards,
where a sample is two or three small members, that parsing cost as much as decoding the JPEGs
(``benchmarks/speed/data_reading.py``). This reader does only what shards need: POSIX ustar
headers (checksum verified), GNU long names (``L``) and pax ``path`` records (``x``); directories,
links and other entries are passed over. Archives written by ``tarfile``, GNU tar, bsdtar and
``webdataset`` read the same as with ``tarfile``.

Example:
    >>> import io, tarfile
    >>> buffer = io.BytesIO()
    >>> with tarfile.open(fileobj=buffer, mode="w") as tar:
    ...     info = tarfile.TarInfo("a.txt"); info.size = 2; tar.addfile(info, io.BytesIO(b"hi"))
    >>> _ = buffer.seek(0); list(tar_files(buffer))
    [('a.txt', b'hi')]
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")


class TarFormatError(ValueError):
    """The stream is not a readable tar archive (damaged header, truncated member)."""


def tar_files(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """``(path, content)`` of each regular file of the archive ``stream``, in archive order."""
    long_name: str | None = None
    offset = 0
    while True:
        header = stream.read(BLOCK)
        if not header or header == b"\0" * BLOCK:  # end of the archive
            return
        if len(header) < BLOCK:
            raise TarFormatError(f"the archive ends inside a header at byte {offset}")
        _check_sum(header, offset)
        size = _number(header[124:136], offset)
        kind = header[156:157]
        data = stream.read(size)
        if len(data) < size:
            raise TarFormatError(f"the archive ends inside the member at byte {offset} ({len(data)} of {size} bytes)")
        padding = -size % BLOCK
        if padding and len(stream.read(padding)) < padding:
            raise TarFormatError(f"the archive ends inside the padding of the member at byte {offset}")
        offset += BLOCK + size + padding
        if kind == b"L":  # GNU: the next member's long name
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif kind == b"x":  # pax: records for the next member
            long_name = _pax_path(data) or long_name
        elif kind in _REGULAR:
            yield long_name or _ustar_name(header), data
            long_name = None
        else:  # directories, links, devices, pax global headers
            long_name = None


def _check_sum(header: bytes, offset: int) -> None:
    stored = header[148:156].replace(b"\0", b" ").strip()
    try:
        expected = int(stored or b"0", 8)
    except ValueError:
        raise TarFormatError(f"the header at byte {offset} is damaged (checksum field {stored!r})") from None
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])  # the checksum field counts as spaces
    if actual != expected:
        raise TarFormatError(f"the header at byte {offset} is damaged (checksum {actual} != stored {expected})")


def _number(field: bytes, offset: int) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise TarFormatError(f"the header at byte {offset} has a damaged size field {text!r}") from None


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header (records are ``"<length> <key>=<value>\\n"``)."""
    position, path = 0, None
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            break
        length = int(data[position:space])
        key, _, value = data[space + 1:position + length - 1].partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        position += length
    return path
