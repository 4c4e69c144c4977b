"""Every DICOM transfer syntax a PACS exports loads to the same film; the ones that cannot are refused in one line.

The film is the synthetic chest radiograph of tests/data/make_dicoms.py (64 x 80, 12 bits stored, MONOCHROME2).
The tests encode it themselves where pydicom or a project dependency can (implicit / explicit VR, deflated, big
endian, RLE, JPEG 2000, JPEG Baseline through Pillow); JPEG Lossless and JPEG-LS come from tests/data, made once
by DCMTK (see make_dicoms.py), since nothing the project installs encodes them.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom import uid  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402

from spcxr_hub.models.spcxr.imaging import ImageDecodeError, load_image  # noqa: E402

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_dicoms", DATA / "make_dicoms.py")
make_dicoms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_dicoms)

REGENERATE = "if spcxr_hub.data.synthetic changed on purpose, rerun tests/data/make_dicoms.py"


# ----------------------------------------------------------------------------------------------------------------------
# The film and its encodings


@pytest.fixture(scope="module")
def film_file(tmp_path_factory):
    """The film, uncompressed (explicit VR little endian): the reference every other encoding is compared with."""
    return make_dicoms.write_film(tmp_path_factory.mktemp("film") / "film.dcm")


@pytest.fixture(scope="module")
def film(film_file):
    return load_image(film_file)


def write_implicit_vr(ds, path):
    ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def write_deflated(ds, path):
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def write_big_endian(ds, path):
    # pydicom writes the header big endian itself but leaves OW values to the caller: swap the pixel bytes.
    ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)  # Dataset.save_as refuses to change the byte order


def write_rle(ds, path):
    ds.compress(uid.RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)


def write_jpeg2000_lossless(ds, path):
    ds.compress(uid.JPEG2000Lossless)  # pylibjpeg-openjpeg
    ds.save_as(path, enforce_file_format=True)


def write_jpeg2000_lossy(ds, path):
    ds.compress(uid.JPEG2000, j2k_psnr=[50])
    ds.save_as(path, enforce_file_format=True)


def fixture_copy(name):
    def write(_ds, path):
        shutil.copyfile(DATA / name, path)

    write.__name__ = name
    return write


def write_as(film_file, path, writer):
    writer(pydicom.dcmread(film_file), path)
    return path


def transfer_syntax(path):
    return pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID


LOSSLESS = [
    (uid.ExplicitVRLittleEndian, lambda ds, path: ds.save_as(path, enforce_file_format=True)),
    (uid.ImplicitVRLittleEndian, write_implicit_vr),
    (uid.DeflatedExplicitVRLittleEndian, write_deflated),
    (uid.ExplicitVRBigEndian, write_big_endian),
    (uid.RLELossless, write_rle),
    (uid.JPEGLosslessSV1, fixture_copy("film-jpeg-lossless-sv1.dcm")),
    (uid.JPEGLossless, fixture_copy("film-jpeg-lossless-p14.dcm")),
    (uid.JPEGLSLossless, fixture_copy("film-jpeg-ls-lossless.dcm")),
    (uid.JPEG2000Lossless, write_jpeg2000_lossless),
]


def error_line(path, **kwargs):
    """The ImageDecodeError of loading `path`, checked to be one line that starts with the path."""
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


# ----------------------------------------------------------------------------------------------------------------------
# Lossless transfer syntaxes: the same array, exactly


def test_dcmtk_fixtures_hold_the_synthetic_film(film_file):
    stored = pydicom.dcmread(film_file).pixel_array
    for name, (syntax, _command) in make_dicoms.FIXTURES.items():
        if syntax == uid.JPEGExtended12Bit:  # lossy
            continue
        ds = pydicom.dcmread(DATA / name)
        assert ds.file_meta.TransferSyntaxUID == syntax, name
        np.testing.assert_array_equal(ds.pixel_array, stored, err_msg=f"{name}: {REGENERATE}")


@pytest.mark.parametrize("syntax, writer", LOSSLESS, ids=[syntax.name for syntax, _ in LOSSLESS])
def test_lossless_transfer_syntax_loads_the_same_array_as_the_uncompressed_film(tmp_path, film_file, film, syntax,
                                                                                writer):
    path = write_as(film_file, tmp_path / "film.dcm", writer)
    assert transfer_syntax(path) == syntax
    array = load_image(path)
    assert array.shape == (64, 80) and array.dtype == np.float32
    np.testing.assert_array_equal(array, film)


def test_jpeg_lossless_file_without_dicom_suffix_or_bytes_loads_the_same_array(tmp_path, film):
    path = tmp_path / "1.2.840.113619.2.1"  # PACS exports are often named by SOP instance UID
    shutil.copyfile(DATA / "film-jpeg-lossless-sv1.dcm", path)
    np.testing.assert_array_equal(load_image(path), film)
    np.testing.assert_array_equal(load_image(path.read_bytes()), film)


def test_bare_dataset_with_uncompressed_pixel_data_loads_with_the_encoding_it_was_parsed_with(tmp_path, film_file,
                                                                                              film):
    for implicit_vr in (True, False):
        ds = pydicom.dcmread(film_file)
        ds.file_meta, ds.preamble = FileMetaDataset(), None  # no preamble, no file meta: no Transfer Syntax UID
        path = tmp_path / f"bare-{implicit_vr}.dcm"
        pydicom.dcmwrite(path, ds, implicit_vr=implicit_vr, little_endian=True)
        np.testing.assert_array_equal(load_image(path), film)


# ----------------------------------------------------------------------------------------------------------------------
# Lossy transfer syntaxes: close, within stated tolerances


def test_lossy_jpeg2000_loads_within_tolerance_of_the_film(tmp_path, film_file, film):
    path = write_as(film_file, tmp_path / "film.dcm", write_jpeg2000_lossy)
    assert transfer_syntax(path) == uid.JPEG2000
    error = np.abs(load_image(path) - film)
    # PSNR 50 dB is an RMS error of 0.3 % of full scale: allow 1 % on average and 3 % at any pixel.
    assert error.mean() < 0.01 and error.max() < 0.03, (error.mean(), error.max())


def test_lossy_jpeg_baseline_8bit_loads_within_tolerance_of_the_8bit_film(tmp_path, film_file):
    ds = pydicom.dcmread(film_file)
    film8 = np.round(make_dicoms.film_image() * 255).astype(np.uint8)
    ds.set_pixel_data(film8, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(tmp_path / "film8.dcm", enforce_file_format=True)
    reference = load_image(tmp_path / "film8.dcm")

    jpeg = io.BytesIO()
    Image.fromarray(film8).save(jpeg, format="JPEG", quality=90)  # a baseline, single-component JPEG
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    path = tmp_path / "film-jpeg.dcm"
    ds.save_as(path, enforce_file_format=True)

    error = np.abs(load_image(path) - reference)
    # Quality 90 on this small, noisy film: about 1 % on average; allow 2 % on average and 10 % at any pixel.
    assert error.mean() < 0.02 and error.max() < 0.1, (error.mean(), error.max())


# ----------------------------------------------------------------------------------------------------------------------
# Refusals: one line naming the file, the transfer syntax and what to install or do


def test_missing_decoder_names_the_file_the_transfer_syntax_and_the_packages_to_install(monkeypatch):
    # Simulate an install without python-gdcm or pylibjpeg-libjpeg: pydicom has no public switch for a plugin's
    # availability, and its decoders are module-level singletons (monkeypatch restores the dict).
    monkeypatch.setattr(get_decoder(uid.JPEGLosslessSV1), "_available", {})
    path = DATA / "film-jpeg-lossless-sv1.dcm"
    message = error_line(path)
    assert "no decoder installed" in message
    assert "1.2.840.10008.1.2.4.70" in message and "JPEG Lossless" in message
    assert "`pip install python-gdcm`" in message and "`pip install pylibjpeg pylibjpeg-libjpeg`" in message


def test_jpeg_extended_12bit_names_the_one_decoder_that_reads_it(monkeypatch):
    # python-gdcm and Pillow decode 8-bit JPEG Extended only; pylibjpeg-libjpeg (GPL, not a dependency) reads 12-bit.
    decoder = get_decoder(uid.JPEGExtended12Bit)
    monkeypatch.setattr(decoder, "_available", {k: v for k, v in decoder._available.items() if k != "pylibjpeg"})
    path = DATA / "film-jpeg-extended-12bit.dcm"
    message = error_line(path)
    assert "1.2.840.10008.1.2.4.51" in message and "JPEG Extended" in message
    assert "`pip install pylibjpeg pylibjpeg-libjpeg`" in message
    assert "12-bit" in message  # gdcm's reason, kept from pydicom's error


def test_missing_transfer_syntax_with_compressed_pixel_data_is_refused(tmp_path):
    ds = pydicom.dcmread(DATA / "film-jpeg-lossless-sv1.dcm")
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    path = tmp_path / "bare.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    message = error_line(path)
    assert "no Transfer Syntax UID (0002,0010)" in message
    assert "compressed (encapsulated)" in message and "re-export" in message


@pytest.mark.parametrize(
    "syntax, name",
    [("1.2.826.0.1.3680043.9.9999.1", "unknown UID"), (uid.MPEG4HP41, "MPEG-4 AVC/H.264 High Profile")],
    ids=["private-uid", "mpeg4-video"],
)
def test_transfer_syntax_without_a_decoder_is_refused_naming_it(tmp_path, syntax, name):
    ds = pydicom.dcmread(DATA / "film-jpeg-lossless-sv1.dcm")
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "odd.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    message = error_line(path)
    assert f"transfer syntax {syntax} ({name}" in message
    assert "has no pixel data decoder" in message and "`pip install -U pydicom`" in message


def test_multiframe_dicom_is_refused_naming_the_frames_and_the_transfer_syntax(tmp_path, film_file):
    ds = pydicom.dcmread(film_file)
    stored = ds.pixel_array
    ds.set_pixel_data(np.stack([stored, stored[::-1]]), "MONOCHROME2", 12, generate_instance_uid=False)
    path = tmp_path / "tomo.dcm"
    ds.save_as(path, enforce_file_format=True)
    message = error_line(path)
    assert "multi-frame DICOM with 2 frames" in message
    assert "1.2.840.10008.1.2.1 (Explicit VR Little Endian)" in message
    assert "single-frame radiograph" in message
