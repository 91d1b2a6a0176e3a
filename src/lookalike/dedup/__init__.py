"""Near-duplicate detection: exact copies, re-encodes, resizes, crops, flips, rotations.

Two stages, neither comparing all pairs:

1. candidates (:mod:`.candidates`): identical bytes by content hash, then a Hamming
   range search of perceptual hashes (with the hashes of each image's mirror and 90/180/270
   rotations) in a binary FAISS index; the CNN index's nearest neighbours add candidates
   that moved too far in hash space (heavy crops).
2. verification (:mod:`.verify`): CNN cosine similarity with thresholds that
   :mod:`.calibrate` fits on labelled pairs.

Pairs become groups with a suggested keeper (:mod:`.groups`); :mod:`.report` writes
them out; :mod:`.actions` moves, links or deletes duplicates (dry run unless applied,
journaled, undoable). :mod:`.pipeline` ties the stages together.
"""
from .groups import KEEP_POLICIES, Group, Member, build_groups, connected_groups
from .verify import Thresholds

__all__ = ["KEEP_POLICIES", "Group", "Member", "Thresholds", "build_groups", "connected_groups",
           "find_duplicates", "check_new", "prepare_folder"]


def __getattr__(name):
    if name in ("find_duplicates", "check_new", "prepare_folder"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
