"""One-line argument errors that name the argument and the allowed values.

Example:

>>> check_choice("neuron", "ours", ("ours", "t4"))
'ours'
>>> check_positive_int("filters", 8)
8
"""


def check_choice(name, value, allowed):
    """Return `value` if it is one of `allowed`, else raise a one-line ValueError."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"Invalid {name}={value!r}: expected one of {choices}.")
    return value


def check_positive_int(name, value):
    """Return `value` as int if it is a positive integer, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Invalid {name}={value!r}: expected a positive integer.")
    return value


def check_int_range(name, value, low, high):
    """Return `value` if it is an int in [low, high], else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"Invalid {name}={value!r}: expected an integer in [{low}, {high}].")
    return value


def check_input_rank(layer_name, input_shape, expected_rank):
    """Raise a one-line ValueError if `input_shape` does not have `expected_rank` axes."""
    if len(input_shape) != expected_rank:
        raise ValueError(
            f"Invalid input shape {tuple(input_shape)} for {layer_name}: expected rank "
            f"{expected_rank} (got rank {len(input_shape)})."
        )
