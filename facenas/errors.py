"""The single exception hierarchy of facenas.

Every error a user can cause derives from :class:`FacenasError`; the gRPC layer maps each class to one
status code in one place (``InvalidInput`` subclasses become INVALID_ARGUMENT).
"""

from __future__ import annotations


class FacenasError(Exception):
    """Root of every facenas error."""


class InvalidInput(FacenasError):  # noqa: N818 - reads as a category, mapped to INVALID_ARGUMENT
    """The caller supplied something unusable (a file, a config, a request field)."""


class ArchSpecError(InvalidInput):
    """An architecture file or spec is malformed, hostile or outside the search space.

    ``field`` is the dotted path of the offending value (``""`` for the whole document).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        where = field or "<document>"
        super().__init__(f"{where}: {problem}")


class ConfigError(InvalidInput):
    """A configuration is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


class DatasetError(InvalidInput):
    """A dataset directory is missing, empty or not in the Face Synthetics layout."""


class MeasurementError(FacenasError):
    """A latency measurement could not be completed."""


class UnstableMeasurement(MeasurementError):  # noqa: N818 - reads as a state, like NotFound
    """A measurement would not settle (dispersion too high, or the host was busy while it ran); the value
    must not be kept as final. ``reasons`` says why, e.g. ``["cpu_fraction 0.55 < 0.90"]``."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        self.reasons = list(reasons or [])
        super().__init__(message)


class ArchNotEvaluable(FacenasError):  # noqa: N818 - reads as a state, like NotFound
    """The architecture itself cannot be evaluated on this target: export, conversion, quantization or
    measurement of that model failed for a reason that would fail the same way on any replica (mapped to
    FAILED_PRECONDITION; the candidate fails once and no replica is to blame)."""


class ExportError(FacenasError):
    """ONNX export failed, or the exported graph disagrees with the torch model."""


class ModelNotExportable(ExportError, ArchNotEvaluable):  # noqa: N818 - reads as a state
    """The exporter rejected this model, or its ONNX graph is invalid or disagrees with the torch model."""


class NotFound(FacenasError):  # noqa: N818 - mapped to NOT_FOUND
    """The requested record does not exist."""


class Unauthenticated(FacenasError):  # noqa: N818 - mapped to UNAUTHENTICATED
    """The caller did not prove who it is (a missing or wrong API token)."""


class Conflict(InvalidInput):
    """An immutable record was re-written with different data (mapped to ALREADY_EXISTS)."""


class Unavailable(FacenasError):  # noqa: N818 - mapped to UNAVAILABLE
    """A dependency (database, worker, device) cannot be reached right now; retrying may help."""


class Cancelled(FacenasError):  # noqa: N818 - mapped to CANCELLED
    """The work was cancelled (by the caller, a deadline or a shutdown)."""
