"""What a change to one source reruns, by asset name, and how a test makes a file look
changed (test_sensors, test_daemon)."""

import os

ALL_DOWNSTREAM = {
    "projects",
    "tags",
    "stg_mlops_course__projects",
    "stg_mlops_course__tags",
    "labeled_projects",
    "ml_dataset",
    "ml_splits",
    "tag_distribution",
}
TAGS_DOWNSTREAM = {
    "tags",
    "stg_mlops_course__tags",
    "labeled_projects",
    "ml_dataset",
    "ml_splits",
    "tag_distribution",
}


def touch_later(path) -> None:
    """Move the mtime forward even on filesystems with coarse timestamps."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
