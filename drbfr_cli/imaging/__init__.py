"""The I/O boundary for images.

This package is the only code that sees file paths of images, uint8/uint16 pixels, BGR order,
alpha channels or EXIF orientation. Everything it returns is float32 RGB in [0, 1] (HxWx3
numpy). Its parts:

    codec     decode and encode every format drbfr reads or writes; ImageData
    atomic    atomic writes and their temporaries, names within 255 bytes, output folders
    inputs    command-line arguments, globs, stdin lists and folders -> ImageSource
    tensors   images and face batches <-> the networks' and restorers' NCHW tensors

Callers import the names from here (`from drbfr_cli.imaging import read_image`).
"""

from __future__ import annotations

from drbfr_cli.imaging.atomic import (
    NAME_MAX,
    TEMP_PREFIX,
    TEMP_SESSION,
    TEMP_SUFFIX,
    check_file_target,
    check_folder_target,
    fit_name,
    is_temporary,
    make_output_folder,
    make_temporary_folder,
    open_atomic,
    temporary_session,
    write_bytes_atomic,
)
from drbfr_cli.imaging.codec import (
    ALPHA_EXTENSIONS,
    DEFAULT_MAX_PIXELS,
    FIRST_FRAME_EXTENSIONS,
    GRAY_TOLERANCE,
    IMAGE_EXTENSIONS,
    INPUT_EXTENSIONS,
    ImageData,
    apply_exif_orientation,
    as_written,
    decode_image,
    encode_image,
    exact_gray,
    from_uint8,
    is_gray,
    max_pixels_from_env,
    probe_size,
    read_image,
    special_file,
    to_uint8,
    write_image,
)
from drbfr_cli.imaging.inputs import (
    GLOB_CHARACTERS,
    OUTPUT_MARKERS,
    STDIN_ARGUMENT,
    ImageSource,
    collect_images,
    expand_inputs,
    find_sources,
    is_broken_link,
    is_image_path,
    is_output_folder,
    real_path,
    writable_name,
)
from drbfr_cli.imaging.tensors import (
    faces_to_tensor,
    image_to_tensor,
    tensor_to_faces,
    tensor_to_image,
)

__all__ = [
    "ALPHA_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "FIRST_FRAME_EXTENSIONS",
    "GLOB_CHARACTERS",
    "GRAY_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "INPUT_EXTENSIONS",
    "NAME_MAX",
    "OUTPUT_MARKERS",
    "STDIN_ARGUMENT",
    "TEMP_PREFIX",
    "TEMP_SESSION",
    "TEMP_SUFFIX",
    "ImageData",
    "ImageSource",
    "apply_exif_orientation",
    "as_written",
    "check_file_target",
    "check_folder_target",
    "collect_images",
    "decode_image",
    "encode_image",
    "exact_gray",
    "expand_inputs",
    "faces_to_tensor",
    "find_sources",
    "fit_name",
    "from_uint8",
    "image_to_tensor",
    "is_broken_link",
    "is_gray",
    "is_image_path",
    "is_output_folder",
    "is_temporary",
    "make_output_folder",
    "make_temporary_folder",
    "max_pixels_from_env",
    "open_atomic",
    "probe_size",
    "read_image",
    "real_path",
    "special_file",
    "temporary_session",
    "tensor_to_faces",
    "tensor_to_image",
    "to_uint8",
    "writable_name",
    "write_bytes_atomic",
    "write_image",
]
