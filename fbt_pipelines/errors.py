"""Domain errors: each names what was wrong and where (file, row, parameter)."""


class FbtError(Exception):
    """Base class of every error fbt raises on purpose."""


class CatalogError(FbtError):
    """A market or contract specification is missing or invalid."""


class DataError(FbtError):
    """Input data (a bar file, a frame) is malformed."""


class RollError(FbtError):
    """A roll schedule cannot be built or is inconsistent."""


class StrategyError(FbtError):
    """Unknown strategy or invalid strategy parameter."""
