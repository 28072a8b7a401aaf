"""The package's user-facing errors. Each message is one actionable line naming the file concerned."""


class CTCInputError(ValueError):
    """A problem with user input (folders, files, shapes, dtypes, too many objects)."""


class ModelError(RuntimeError):
    """A model folder cannot be used (missing files, sha256 mismatch, bad config)."""


class ClusterError(RuntimeError):
    """A Dask cluster cannot be used (scheduler unreachable, bad ``--scheduler``) or a frame failed on it twice."""
