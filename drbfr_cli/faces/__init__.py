"""The face stages of `drbfr restore`, each a pure function over dataclasses.

detect (image -> Face list) -> align (Face -> AlignedFace: 512 crop + affine) -> restore
(elsewhere) -> paste (background + restored crops + affines -> image). Images are float32 RGB
HxWx3 in [0, 1]; OpenCV's BGR appears only inside these modules at the call into cv2.
"""
