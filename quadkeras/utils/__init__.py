"""Small shared helpers (argument validation, one-line errors)."""
from quadkeras.utils.validation import check_choice, check_int_range, check_positive_int

__all__ = ["check_choice", "check_int_range", "check_positive_int"]
