"""Errors people can act on: one line that names the file, column, row or config key."""

from __future__ import annotations


class CapForecastError(Exception):
    """Base class: its message is shown to the user as one line, without a traceback."""


class InputDataError(CapForecastError):
    """A raw input file cannot be read or does not follow the expected format."""

    def __init__(
        self,
        file: str,
        problem: str,
        *,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        where = [str(file)]
        if column is not None:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{': '.join([', '.join(where), problem])}")
        self.file = str(file)
        self.column = column
        self.row = row
        self.problem = problem


class ConfigError(CapForecastError):
    """A configuration value is missing or not allowed."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key '{key}': {problem}")
        self.key = key
        self.problem = problem


class ForecastInputError(CapForecastError):
    """Forecasts or risk inputs are unusable (empty, missing metrics, unknown instance type)."""
