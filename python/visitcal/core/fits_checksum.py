"""FITS CHECKSUM/DATASUM computed in the byte-swap pass: checksummed writing and verified reading of image HDUs.

The checksum of a byte stream is the 32-bit ones' complement sum (end-around carry) of its bytes read as
big-endian 32-bit words (FITS Standard 4.0, appendix J; Seaman, Pence & Rots, "FITS Checksum Proposal").
``DATASUM`` is the checksum of an HDU's data unit (zero-padded to 2880 bytes, which adds nothing) written as
a decimal string; ``CHECKSUM`` is the 16-character ASCII encoding of the complement of the sum of the header
(with ``CHECKSUM = '0000000000000000'``) and the data, so that a whole intact HDU sums to -0 (``0xFFFFFFFF``).

The pixel kernels are C++ (`visitcal._core`): one pass over an array both converts between the native and
the FITS (big-endian) byte order and accumulates the sum, with the GIL released and no copy of the array.
Astropy computes the same values with numpy after a separate byte swap, which made checksums cost more than
the I/O itself (issue 25: 0.23 s of a 0.35-0.41 s read of two snaps).

`write_hdulist` writes an HDU list with checksums, byte for byte as astropy's ``add_checksum`` followed by
``HDUList.writeto`` would (headers are still built by astropy; only the data sum and the pixel bytes of
plain image HDUs come from the kernel). `read_image_hdu` reads a plain image HDU's data into a native-order
array and verifies its checksums on the bytes as stored.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

from .. import _core

__all__ = ["BLOCK", "CHECKSUM_COMMENT", "checksum_bytes", "encode_checksum", "datasum", "write_array",
           "write_hdulist", "is_plain_image", "read_image_hdu", "HduChecksums"]

#: FITS block size: every header and data unit is padded to a multiple of it.
BLOCK = 2880
#: The comment of the CHECKSUM and DATASUM cards we write (astropy's default is the current time, which would
#: make the same HDUs give different bytes).
CHECKSUM_COMMENT = "checksum of this HDU"
#: Elements per kernel call when streaming an array (a multiple of 4 so every run starts on a 4-byte word):
#: 256 KiB, small enough to stay in a core's L2 cache between the conversion and the write (or the read).
_CHUNK_BYTES = 1 << 18
#: Numpy dtype (kind, itemsize) -> BITPIX written without scaling; other dtypes go through astropy.
_PLAIN = {("u", 1): 8, ("i", 2): 16, ("i", 4): 32, ("i", 8): 64, ("f", 4): -32, ("f", 8): -64}
_BITPIX_DTYPE = {8: "u1", 16: "i2", 32: "i4", 64: "i8", -32: "f4", -64: "f8"}
_SCALING_KEYS = ("BSCALE", "BZERO", "BLANK")


def checksum_bytes(data, initial: int = 0) -> int:
    """Ones' complement sum of ``data`` (bytes-like, starting on a 4-byte word of its HDU; a final partial word
    is zero-padded) added to ``initial``."""
    return _core.fits_checksum_bytes(data, initial)


def encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of a 32-bit checksum (appendix J). The ``CHECKSUM`` card holds the
    encoding of the complement (``~sum & 0xFFFFFFFF``) of the HDU's sum with the card set to zeros."""
    return _core.fits_encode_checksum(int(value) & 0xFFFFFFFF)


def datasum(array: np.ndarray) -> int:
    """``DATASUM`` of an image HDU holding ``array`` (any byte order; written unscaled as its own BITPIX)."""
    flat = _flat(array)
    return _core.fits_encode_big_endian(flat, 0, flat.size, None, 0)


def _flat(array: np.ndarray) -> np.ndarray:
    """A 1-D C-order view of ``array`` (a copy only if it is not C-contiguous)."""
    return np.ascontiguousarray(array).reshape(-1)


def write_array(f, array: np.ndarray, initial: int = 0) -> int:
    """Write ``array``'s FITS (big-endian) bytes and the zero padding to the next 2880-byte block to the binary
    file ``f``; return ``initial`` plus their checksum (the DATASUM when ``initial`` is 0).

    The conversion goes through one reusable 256 KiB buffer: the array is neither copied nor byte-swapped in
    place (astropy swaps the caller's array in place and back, which another thread could observe).
    """
    flat = _flat(array)
    itemsize = flat.dtype.itemsize
    step = max(4, _CHUNK_BYTES // itemsize // 4 * 4)
    buffer = bytearray(min(step, flat.size) * itemsize)
    view = memoryview(buffer)
    s = initial
    for start in range(0, flat.size, step):
        count = min(step, flat.size - start)
        s = _core.fits_encode_big_endian(flat, start, count, buffer, s)
        f.write(view[:count * itemsize])
    pad = -flat.nbytes % BLOCK
    if pad:
        f.write(bytes(pad))
    return s


def is_plain_image(hdu) -> bool:
    """Whether ``hdu`` is a primary or image extension HDU whose data is a non-empty numpy array written as is
    (a native FITS pixel type, no BSCALE/BZERO/BLANK): the HDUs `write_hdulist` streams through the kernel."""
    if type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU):
        return False
    data = hdu.data
    return (isinstance(data, np.ndarray) and data.size > 0 and (data.dtype.kind, data.dtype.itemsize) in _PLAIN
            and not any(key in hdu.header for key in _SCALING_KEYS))


def write_hdulist(hdulist: fits.HDUList, f, *, when: str = CHECKSUM_COMMENT) -> None:
    """Write ``hdulist`` to the seekable binary file ``f`` with CHECKSUM/DATASUM on every HDU.

    The bytes are those of ``hdu.add_checksum(when=when)`` on every HDU followed by
    ``hdulist.writeto(f, checksum=False)`` (the same cards, in the same places, with the same values), but
    every sum is computed by the C++ kernel:

    - plain image HDUs (`is_plain_image`) are streamed: their header is written with placeholder sums, then
      the data (converted and summed in one pass), then the header again with the final sums (its length does
      not depend on them);
    - the other HDUs (headers without data, tables, scaled images: small) are serialised by astropy without
      checksums, each run of consecutive ones in a single ``writeto``; their data units are summed as written
      (a table's character columns included, whose trailing blanks astropy turns into NULs only while
      writing), and their headers re-serialised with the cards.

    ``hdulist``'s headers are modified (the checksum cards), as ``add_checksum`` modifies them.
    """
    plain = [is_plain_image(hdu) for hdu in hdulist]
    for hdu, fast in zip(hdulist, plain):
        if fast:
            _add_checksum_cards(hdu.header, "0", when)
    hdulist.verify(option="exception")  # what HDUList.writeto does before writing
    hdulist.update_extend()
    k = 0
    while k < len(hdulist):
        if plain[k]:
            _write_plain_image(hdulist[k], f, when)
            k += 1
            continue
        stop = k + 1 if k == 0 else next((j for j in range(k, len(hdulist)) if plain[j]), len(hdulist))
        _write_small_hdus(hdulist[k:stop], f, when, primary=k == 0)
        k = stop


def _add_checksum_cards(header: fits.Header, datasum_value: str, when: str) -> None:
    """The cards as ``add_checksum`` places them: DATASUM set (appended if absent), CHECKSUM zeros just before."""
    header["DATASUM"] = (datasum_value, when)
    header.set("CHECKSUM", "0" * 16, when, before="DATASUM")


def _final_header(header: fits.Header, data_sum: int, when: str) -> bytes:
    """``header`` with DATASUM = ``data_sum`` and CHECKSUM making the HDU sum to -0, serialised."""
    header["DATASUM"] = (str(data_sum), when)
    header["CHECKSUM"] = "0" * 16
    header["CHECKSUM"] = encode_checksum(~checksum_bytes(header.tostring().encode("ascii"), data_sum))
    return header.tostring().encode("ascii")


def _write_plain_image(hdu, f, when: str) -> None:
    hdu.update_header()  # as ImageHDU._prewriteto (a no-op for an HDU built from its array)
    start = f.tell()
    placeholder = hdu.header.tostring().encode("ascii")
    f.write(placeholder)
    data_sum = write_array(f, hdu.data)
    end = f.tell()
    final = _final_header(hdu.header, data_sum, when)
    if len(final) != len(placeholder):  # cannot happen: both sums fit their 80-character cards
        raise RuntimeError(f"HDU {hdu.name}: the header changed length ({len(placeholder)} -> {len(final)} bytes) "
                           "when its checksums were filled in")
    f.seek(start)
    f.write(final)
    f.seek(end)


def _write_small_hdus(hdus, f, when: str, *, primary: bool) -> None:
    """Serialise ``hdus`` with astropy (after a default one-block primary HDU unless ``primary``), then write
    each with its checksum cards: the data unit as astropy wrote it, summed by the kernel."""
    buffer = io.BytesIO()
    fits.HDUList(list(hdus) if primary else [fits.PrimaryHDU(), *hdus]).writeto(buffer)
    raw = memoryview(buffer.getvalue())
    pos = 0 if primary else BLOCK
    for hdu in hdus:
        header_bytes = hdu.header.tostring().encode("ascii")  # the header as just written
        size = hdu.size  # data bytes (tables: rows x row width + heap), from the header
        data_end = pos + len(header_bytes) + size + (-size % BLOCK)
        if bytes(raw[pos:pos + len(header_bytes)]) != header_bytes or data_end > len(raw):
            raise RuntimeError(f"HDU {hdu.name}: astropy's serialisation does not match its header")
        data = raw[pos + len(header_bytes):data_end]
        _add_checksum_cards(hdu.header, "0", when)
        f.write(_final_header(hdu.header, checksum_bytes(data), when))
        f.write(data)
        pos = data_end
    if pos != len(raw):
        raise RuntimeError(f"astropy wrote {len(raw)} bytes for HDUs that account for {pos}")


class HduChecksums:
    """What `read_image_hdu` found: the sums computed from the bytes as stored, and the verdicts.

    Attributes
    ----------
    header_sum, data_sum : int
        Ones' complement sums of the header unit and of the data unit (padding included).
    datasum_ok, checksum_ok : bool or None
        Whether DATASUM equals ``data_sum`` and whether the whole HDU sums to -0 (``0xFFFFFFFF``); None when
        the card is absent.
    """

    def __init__(self, header_sum: int, data_sum: int, datasum_ok, checksum_ok):
        self.header_sum, self.data_sum = header_sum, data_sum
        self.datasum_ok, self.checksum_ok = datasum_ok, checksum_ok

    @property
    def ok(self) -> bool:
        """No card present disagrees with the bytes."""
        return self.datasum_ok is not False and self.checksum_ok is not False


def read_image_hdu(raw, header: fits.Header, header_offset: int, data_offset: int,
                   data_span: int, *, add_into: np.ndarray | None = None) -> tuple[np.ndarray | None, HduChecksums]:
    """Read a plain image HDU (no BSCALE/BZERO/BLANK) from the binary file ``raw`` at the given offsets (those
    of ``HDUList.fileinfo``) and verify it.

    Returns the data as a native-order array (None when NAXIS = 0) and its `HduChecksums`. The data are read
    straight into the array and converted in place, one 256 KiB chunk at a time, in the pass that sums them; the
    header is summed as the bytes stored in the file, so the CHECKSUM test is the standard's (the HDU sums
    to -0), and DATASUM covers the padding of the data unit.

    With ``add_into`` (a C-contiguous native array of the HDU's shape and dtype) each converted chunk is added
    into it instead (``add_into += data``, element by element: the same values as adding the returned array)
    and None is returned for the data: no array of the HDU's size is allocated. The checksums are only known
    at the end, so on an error ``add_into`` may hold part of the sum.

    Raises
    ------
    EOFError
        The file ends inside the HDU (the message gives the byte counts).
    ValueError
        BITPIX, NAXISn or DATASUM cannot be read, or the HDU uses scaling cards.
    """
    if any(key in header for key in _SCALING_KEYS):
        raise ValueError("scaled image HDUs (BSCALE/BZERO/BLANK) are read by astropy")
    raw.seek(header_offset)
    header_bytes = raw.read(data_offset - header_offset)
    if len(header_bytes) != data_offset - header_offset:
        raise EOFError(f"the header needs {data_offset - header_offset} bytes, the file holds {len(header_bytes)}")
    header_sum = checksum_bytes(header_bytes)
    try:
        bitpix, naxis = int(header["BITPIX"]), int(header.get("NAXIS", 0))
        shape = tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
        dtype = np.dtype(_BITPIX_DTYPE[bitpix])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"bad BITPIX/NAXISn card: {err}") from None
    data = None
    data_sum = 0
    if add_into is not None and (add_into.shape != shape or add_into.dtype != dtype.newbyteorder("=")
                                 or not add_into.flags.c_contiguous or not add_into.flags.writeable):
        raise ValueError(f"add_into must be a writeable C-contiguous {dtype.newbyteorder('=')} array of shape "
                         f"{shape}, got {add_into.dtype} {add_into.shape}")
    if naxis and min(shape) > 0:
        itemsize = dtype.itemsize
        step = max(4, _CHUNK_BYTES // itemsize // 4 * 4)
        size = int(np.prod(shape))
        if add_into is None:
            data = np.empty(shape, dtype=dtype.newbyteorder("="))
            flat = data.reshape(-1)
        else:
            flat = np.empty(min(step, size), dtype=dtype.newbyteorder("="))  # one chunk, reused
            dest = add_into.reshape(-1)
        target = memoryview(flat.view(np.uint8))
        raw.seek(data_offset)
        for start in range(0, size, step):
            count = min(step, size - start)
            at = start if add_into is None else 0
            got = raw.readinto(target[at * itemsize:(at + count) * itemsize])
            if got != count * itemsize:
                raise EOFError(f"the data unit needs {size * itemsize} bytes, the file ends after "
                               f"{start * itemsize + (got or 0)}")
            data_sum = _core.fits_decode_big_endian_inplace(flat, at, count, data_sum)
            if add_into is not None:
                np.add(dest[start:start + count], flat[:count], out=dest[start:start + count])
        nbytes = size * itemsize
        padding = raw.read(max(0, data_span - nbytes))
        if len(padding) != max(0, data_span - nbytes):
            raise EOFError(f"the data unit's padding needs {data_span - nbytes} bytes, the file holds "
                           f"{len(padding)}")
        data_sum = checksum_bytes(padding, data_sum)
    datasum_ok = checksum_ok = None
    if "DATASUM" in header:
        try:
            datasum_ok = int(str(header["DATASUM"]).strip()) == data_sum
        except ValueError:
            raise ValueError(f"DATASUM = {header['DATASUM']!r} is not a decimal number") from None
    if "CHECKSUM" in header:
        checksum_ok = _fold_add(header_sum, data_sum) == 0xFFFFFFFF
    return data, HduChecksums(header_sum, data_sum, datasum_ok, checksum_ok)


def _fold_add(a: int, b: int) -> int:
    """Ones' complement sum of two 32-bit sums (one end-around carry suffices: a + b < 2^33 - 1)."""
    s = a + b
    return (s & 0xFFFFFFFF) + (s >> 32)
