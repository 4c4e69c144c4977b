"""Make the DICOM fixtures of tests/test_dicom_transfer_syntaxes.py that nothing the project installs can encode.

The tests encode most transfer syntaxes themselves (pydicom writes implicit / explicit VR, deflated, big endian and
RLE Lossless; pylibjpeg-openjpeg writes JPEG 2000; Pillow writes the JPEG Baseline bitstream). Nothing installable
from the project's dependencies writes JPEG Lossless (process 14) or JPEG-LS through pydicom 3 (it has no encoder
for them; pylibjpeg-libjpeg decodes only), so those files are made once here with DCMTK, an encoder independent of
the decoders the tests exercise (python-gdcm) -- which is what a PACS export is.

All of them are the same synthetic film, `film_dataset()`: ``spcxr_hub.data.synthetic.generate(7, (64, 80))`` written by
``spcxr_hub.data.synthetic.write_dicom`` (Digital X-Ray, MONOCHROME2, 16 bits allocated, 12 bits stored, explicit VR
little endian). 64 x 80 (rows x columns, non-square so that a swap shows) keeps each file near 6 KB.

Recreate them (Debian 12, DCMTK 3.6.7; the commands are in `FIXTURES` below)::

    apt-get install dcmtk
    .venv/bin/python tests/data/make_dicoms.py

Files written next to this script:

- film-jpeg-lossless-sv1.dcm  1.2.840.10008.1.2.4.70  ``dcmcjpeg +e1``  (JPEG Lossless, process 14, selection value 1)
- film-jpeg-lossless-p14.dcm  1.2.840.10008.1.2.4.57  ``dcmcjpeg +el``  (JPEG Lossless, process 14, selection value 6)
- film-jpeg-ls-lossless.dcm   1.2.840.10008.1.2.4.80  ``dcmcjpls +el``  (JPEG-LS lossless, CharLS inside DCMTK)
- film-jpeg-extended-12bit.dcm 1.2.840.10008.1.2.4.51 ``dcmcjpeg +ee``  (JPEG Extended, lossy, 12-bit samples)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILM_SEED = 7
FILM_SIZE = (64, 80)  # rows, columns
FILM_BITS_STORED = 12

#: file name -> (transfer syntax UID, DCMTK command; "{src}" and "{dst}" are filled in)
FIXTURES = {
    "film-jpeg-lossless-sv1.dcm": ("1.2.840.10008.1.2.4.70", "dcmcjpeg +e1 {src} {dst}"),
    "film-jpeg-lossless-p14.dcm": ("1.2.840.10008.1.2.4.57", "dcmcjpeg +el {src} {dst}"),
    "film-jpeg-ls-lossless.dcm": ("1.2.840.10008.1.2.4.80", "dcmcjpls +el {src} {dst}"),
    "film-jpeg-extended-12bit.dcm": ("1.2.840.10008.1.2.4.51", "dcmcjpeg +ee {src} {dst}"),
}


def film_image():
    """The synthetic film as a float (rows, columns) image in [0, 1]."""
    from spcxr_hub.data import synthetic

    return synthetic.generate(FILM_SEED, FILM_SIZE).image


def write_film(path) -> Path:
    """The film as an uncompressed DICOM file (explicit VR little endian): the source of every fixture."""
    from spcxr_hub.data import synthetic

    return synthetic.write_dicom(path, film_image(), bits_stored=FILM_BITS_STORED)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        src = write_film(Path(tmp) / "film.dcm")
        for name, (_uid, command) in FIXTURES.items():
            dst = HERE / name
            subprocess.run(command.format(src=src, dst=dst).split(), check=True)
            print(f"{dst.relative_to(HERE.parent.parent)}: {dst.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
