"""Faces: detect, align (5 landmarks), embed (128-d dlib ResNet), verify, cluster.

Importing this package does not import dlib; models load on first use.

    >>> pipe = FacePipeline(upsample=1, select="center")
    >>> a = pipe.embed_one("a.jpg"); b = pipe.embed_one("b.jpg")
    >>> verify(a.descriptor, b.descriptor, threshold=0.6)
    {'distance': 0.41, 'threshold': 0.6, 'same': True}

The LFW-measured setting for pre-cropped faces (98.97% on grayscale View 2):
``FacePipeline(fallback=LFW_FALLBACK, mirror=True, normalize=True)`` with its
``default_threshold`` (0.42) or a calibrated one.
"""
from .align import FaceAligner
from .cluster import agglomerative, chinese_whispers
from .collection import FaceCollection, names_from_csv, names_from_folders
from .detect import Detection, FaceDetector
from .embed import DESCRIPTOR_DIM, FaceEmbedder
from .pipeline import LFW_FALLBACK, NORMALIZED_THRESHOLD, Face, FaceNotFound, FacePipeline, parse_fallback, select_face
from .verify import (
    DEFAULT_THRESHOLD,
    LabelledPair,
    calibrate_on_lfw,
    calibrate_threshold,
    face_distance,
    pair_distances,
    read_lfw_pairs,
    verify,
)

__all__ = [
    "DEFAULT_THRESHOLD", "DESCRIPTOR_DIM", "Detection", "Face", "FaceAligner", "FaceCollection", "FaceDetector",
    "FaceEmbedder", "FaceNotFound", "FacePipeline", "LFW_FALLBACK", "LabelledPair", "NORMALIZED_THRESHOLD",
    "agglomerative", "parse_fallback",
    "calibrate_on_lfw", "calibrate_threshold", "chinese_whispers", "face_distance",
    "names_from_csv", "names_from_folders", "pair_distances", "read_lfw_pairs", "select_face", "verify",
]
