"""Near-duplicate detection: exact copies, re-encodes, resizes, crops, flips, rotations.

Two stages, neither comparing all pairs:

0. scan (:mod:`.scan`): one reduced-size decode per file -> content hash, the hashes of
   the image, its mirror, its 90/180/270-degree rotations and its central 90% / 80%,
   and 64-px thumbnails.
1. candidates (:mod:`.candidates`): identical bytes by content hash, then a Hamming
   range search of every variant hash against every image's hash (FAISS flat scan, or
   exact multi-index hashing, :mod:`.mih`, for large sets).
2. verification (:mod:`.verify`): a linear score of the hash distance and the
   correlations of the aligned thumbnails and their edges, with weights that
   :mod:`.calibrate` fits on labelled pairs. Optional: CNN neighbours as a second
   candidate source, local features + RANSAC for near misses.

Accepted pairs become groups without chaining (:func:`.groups.linked_groups`) with a
suggested keeper (:mod:`.groups`); :mod:`.report` writes them out; :mod:`.actions`
moves, links or deletes duplicates (dry run unless applied, journaled, undoable).
:mod:`.pipeline` ties the stages together.
"""
from .groups import KEEP_POLICIES, Group, Member, build_groups, connected_groups, linked_groups
from .verify import Thresholds

__all__ = ["KEEP_POLICIES", "Group", "Member", "Thresholds", "build_groups", "connected_groups", "linked_groups",
           "find_duplicates", "find_duplicates_in_folder", "check_new", "prepare_folder"]


def __getattr__(name):
    if name in ("find_duplicates", "find_duplicates_in_folder", "check_new", "prepare_folder"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
